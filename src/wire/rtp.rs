//! RTP packets (RFC 3550 §5.1) with header extensions (RFC 8285): a zero-copy view and an
//! in-place rewriter for the fields an SFU changes per subscriber.
//!
//! Layout: 12-byte fixed header, CC CSRCs, then if X=1 a 4-byte extension header (profile,
//! length in 32-bit words) and the extension data, then the payload, then if P=1 padding whose
//! last byte counts the padding bytes (at least 1, at most the bytes after the header).
//!
//! Extension profiles: 0xBEDE one-byte elements (ID 1..=14, 1..=16 bytes; ID 0 is a padding
//! byte whatever its length nibble; ID 15 stops the walk), 0x1000..=0x100F two-byte elements (ID 1..=255, 0..=255 bytes;
//! ID 0 is a padding byte). Other profiles are opaque (see [`RtpView::extension_data`]). An
//! element that overruns the extension block ends the walk; the packet itself stays valid.
//!
//! Worked rewrite trace (one subscriber, sequence offset 1000, timestamp offset 90000):
//! publisher seq 65535 -> 1000u16.wrapping_add(65535) = 999; ts 4294967000 ->
//! 4294967000u32.wrapping_add(90000) = 89704. Offsets are the router's; the rewriter only writes.

use super::cursor::{Reader, be16};
use super::error::{WireError, WireResult};

/// Size of the fixed RTP header.
pub const FIXED_HEADER_LEN: usize = 12;
/// Profile of one-byte header extensions.
pub const PROFILE_ONE_BYTE: u16 = 0xBEDE;

/// Cheap check: version 2 and a full fixed header.
#[inline]
pub fn is_rtp(buf: &[u8]) -> bool {
    buf.len() >= FIXED_HEADER_LEN && buf[0] >> 6 == 2
}

/// Where things are in an RTP packet, computed once by the parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// Start of the extension data (after the 4-byte extension header), or `ext_end` if none.
    ext_start: usize,
    ext_end: usize,
    header_len: usize,
    payload_end: usize,
}

fn layout(buf: &[u8]) -> WireResult<Layout> {
    let mut r = Reader::new(buf);
    let b0 = r.u8("rtp: fixed header")?;
    r.skip(FIXED_HEADER_LEN - 1, "rtp: fixed header")?;
    if b0 >> 6 != 2 {
        return Err(WireError::Unsupported("rtp: version not 2"));
    }
    let cc = (b0 & 0x0F) as usize;
    r.skip(cc * 4, "rtp: CSRC list")?;
    let (ext_start, ext_end) = if b0 & 0x10 != 0 {
        let _profile = r.u16("rtp: extension header")?;
        let words = r.u16("rtp: extension header")? as usize;
        let start = r.pos();
        r.skip(words * 4, "rtp: extension data")?;
        (start, r.pos())
    } else {
        (r.pos(), r.pos())
    };
    let header_len = r.pos();
    let mut payload_end = buf.len();
    if b0 & 0x20 != 0 {
        let pad = *buf.last().ok_or(WireError::Truncated("rtp: padding"))? as usize;
        if pad == 0 {
            return Err(WireError::Malformed("rtp: padding count zero"));
        }
        if pad > buf.len() - header_len {
            return Err(WireError::Malformed("rtp: padding longer than payload"));
        }
        payload_end = buf.len() - pad;
    }
    Ok(Layout { ext_start, ext_end, header_len, payload_end })
}

/// A validated RTP packet borrowing its buffer.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    buf: &'a [u8],
    l: Layout,
}

impl<'a> RtpView<'a> {
    /// Parses an RTP packet (header, CSRCs, extension block, padding).
    pub fn parse(buf: &'a [u8]) -> WireResult<RtpView<'a>> {
        Ok(RtpView { buf, l: layout(buf)? })
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// Version (always 2 after parse).
    pub fn version(&self) -> u8 {
        self.buf[0] >> 6
    }

    /// P bit.
    pub fn has_padding(&self) -> bool {
        self.buf[0] & 0x20 != 0
    }

    /// X bit.
    pub fn has_extension(&self) -> bool {
        self.buf[0] & 0x10 != 0
    }

    /// CSRC count.
    pub fn csrc_count(&self) -> u8 {
        self.buf[0] & 0x0F
    }

    /// Marker bit.
    pub fn marker(&self) -> bool {
        self.buf[1] & 0x80 != 0
    }

    /// Payload type (7 bits).
    pub fn payload_type(&self) -> u8 {
        self.buf[1] & 0x7F
    }

    /// Sequence number.
    pub fn sequence_number(&self) -> u16 {
        u16::from_be_bytes([self.buf[2], self.buf[3]])
    }

    /// RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]])
    }

    /// SSRC.
    pub fn ssrc(&self) -> u32 {
        u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]])
    }

    /// The CSRCs.
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        let end = FIXED_HEADER_LEN + 4 * self.csrc_count() as usize;
        self.buf[FIXED_HEADER_LEN..end]
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }

    /// Header length: fixed header, CSRCs and extension block; the payload starts here.
    pub fn header_len(&self) -> usize {
        self.l.header_len
    }

    /// The payload (without padding).
    pub fn payload(&self) -> &'a [u8] {
        &self.buf[self.l.header_len..self.l.payload_end]
    }

    /// Number of padding bytes (0 if P=0).
    pub fn padding_len(&self) -> usize {
        self.buf.len() - self.l.payload_end
    }

    /// The extension profile, if X=1.
    pub fn extension_profile(&self) -> Option<u16> {
        if self.has_extension() { be16(self.buf, self.l.ext_start - 4) } else { None }
    }

    /// The raw extension data block (without its 4-byte header), if X=1.
    pub fn extension_data(&self) -> Option<&'a [u8]> {
        self.has_extension().then(|| &self.buf[self.l.ext_start..self.l.ext_end])
    }

    /// Iterates RFC 8285 extension elements as (id, value); empty for other profiles.
    pub fn extensions(&self) -> ExtIter<'a> {
        let kind = match self.extension_profile() {
            Some(PROFILE_ONE_BYTE) => ExtKind::OneByte,
            Some(p) if p & 0xFFF0 == 0x1000 => ExtKind::TwoByte,
            _ => ExtKind::None,
        };
        ExtIter {
            buf: &self.buf[self.l.ext_start..self.l.ext_end],
            pos: 0,
            kind,
            base: self.l.ext_start,
        }
    }

    /// The value of extension element `id`, if present.
    pub fn extension(&self, id: u8) -> Option<&'a [u8]> {
        self.extensions().find(|e| e.id == id).map(|e| e.value)
    }

    /// Transport-wide sequence number (2-byte extension) under `id`.
    pub fn transport_cc(&self, id: u8) -> Option<u16> {
        match self.extension(id)? {
            &[a, b] => Some(u16::from_be_bytes([a, b])),
            _ => None,
        }
    }

    /// abs-send-time (3-byte, 6.18 fixed-point seconds) under `id`.
    pub fn abs_send_time(&self, id: u8) -> Option<u32> {
        match self.extension(id)? {
            &[a, b, c] => Some(u32::from_be_bytes([0, a, b, c])),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExtKind {
    None,
    OneByte,
    TwoByte,
}

/// One header extension element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtElement<'a> {
    /// Local identifier (1..=14 one-byte, 1..=255 two-byte).
    pub id: u8,
    /// The element data.
    pub value: &'a [u8],
    /// Offset of the data from the start of the packet (for in-place writes).
    pub offset: usize,
}

/// Iterator over RFC 8285 elements.
#[derive(Debug, Clone)]
pub struct ExtIter<'a> {
    buf: &'a [u8],
    pos: usize,
    kind: ExtKind,
    base: usize,
}

impl<'a> Iterator for ExtIter<'a> {
    type Item = ExtElement<'a>;

    fn next(&mut self) -> Option<ExtElement<'a>> {
        loop {
            let b = *self.buf.get(self.pos)?;
            match self.kind {
                ExtKind::None => return None,
                ExtKind::OneByte => {
                    let id = b >> 4;
                    if id == 0 {
                        // Padding byte; as libwebrtc does, a nonzero length nibble is ignored.
                        self.pos += 1;
                        continue;
                    }
                    if id == 15 {
                        self.pos = self.buf.len();
                        return None;
                    }
                    let len = (b & 0x0F) as usize + 1;
                    let start = self.pos + 1;
                    let Some(value) = self.buf.get(start..start + len) else {
                        self.pos = self.buf.len();
                        return None;
                    };
                    self.pos = start + len;
                    return Some(ExtElement { id, value, offset: self.base + start });
                }
                ExtKind::TwoByte => {
                    if b == 0 {
                        self.pos += 1;
                        continue;
                    }
                    let Some(&len) = self.buf.get(self.pos + 1) else {
                        self.pos = self.buf.len();
                        return None;
                    };
                    let start = self.pos + 2;
                    let Some(value) = self.buf.get(start..start + len as usize) else {
                        self.pos = self.buf.len();
                        return None;
                    };
                    self.pos = start + len as usize;
                    return Some(ExtElement { id: b, value, offset: self.base + start });
                }
            }
        }
    }
}

/// Rewrites header fields of an RTP packet in place (the per-subscriber step of the router).
///
/// Only fields that exist are written: SSRC, sequence number, timestamp, payload type, marker,
/// and the value of an extension element already present with the same length. Nothing moves,
/// so the payload and any SRTP tag room stay where they are.
#[derive(Debug)]
pub struct RtpRewriter<'a> {
    buf: &'a mut [u8],
    l: Layout,
}

impl<'a> RtpRewriter<'a> {
    /// Validates `buf` as an RTP packet and wraps it for rewriting.
    pub fn new(buf: &'a mut [u8]) -> WireResult<RtpRewriter<'a>> {
        let l = layout(buf)?;
        Ok(RtpRewriter { buf, l })
    }

    /// A view of the current bytes.
    pub fn view(&self) -> RtpView<'_> {
        RtpView { buf: self.buf, l: self.l }
    }

    /// Header length (where the payload starts).
    pub fn header_len(&self) -> usize {
        self.l.header_len
    }

    /// Sets the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) -> &mut Self {
        self.buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
        self
    }

    /// Sets the sequence number.
    pub fn set_sequence_number(&mut self, seq: u16) -> &mut Self {
        self.buf[2..4].copy_from_slice(&seq.to_be_bytes());
        self
    }

    /// Sets the timestamp.
    pub fn set_timestamp(&mut self, ts: u32) -> &mut Self {
        self.buf[4..8].copy_from_slice(&ts.to_be_bytes());
        self
    }

    /// Sets the payload type (0..=127).
    pub fn set_payload_type(&mut self, pt: u8) -> WireResult<&mut Self> {
        if pt > 127 {
            return Err(WireError::InvalidArgument("rtp: payload type over 127"));
        }
        self.buf[1] = (self.buf[1] & 0x80) | pt;
        Ok(self)
    }

    /// Sets the marker bit.
    pub fn set_marker(&mut self, marker: bool) -> &mut Self {
        self.buf[1] = (self.buf[1] & 0x7F) | if marker { 0x80 } else { 0 };
        self
    }

    /// Overwrites the value of extension element `id`; it must exist with `value.len()` bytes.
    pub fn set_extension(&mut self, id: u8, value: &[u8]) -> WireResult<&mut Self> {
        let e = self
            .view()
            .extensions()
            .find(|e| e.id == id)
            .ok_or(WireError::InvalidArgument("rtp: extension id not present"))?;
        if e.value.len() != value.len() {
            return Err(WireError::InvalidArgument("rtp: extension length differs"));
        }
        let at = e.offset;
        self.buf[at..at + value.len()].copy_from_slice(value);
        Ok(self)
    }

    /// Writes a transport-wide sequence number into the 2-byte element `id`.
    pub fn set_transport_cc(&mut self, id: u8, seq: u16) -> WireResult<&mut Self> {
        self.set_extension(id, &seq.to_be_bytes())
    }

    /// Writes abs-send-time (24-bit 6.18 fixed point) into the 3-byte element `id`.
    pub fn set_abs_send_time(&mut self, id: u8, t: u32) -> WireResult<&mut Self> {
        if t > 0x00FF_FFFF {
            return Err(WireError::InvalidArgument("rtp: abs-send-time over 24 bits"));
        }
        self.set_extension(id, &t.to_be_bytes()[1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RTP with a one-byte extension block: abs-send-time id 3 (3 bytes), transport-cc id 5
    /// (2 bytes), one padding byte; then 4 payload bytes and 2 bytes of RTP padding.
    pub(crate) fn one_byte_sample() -> Vec<u8> {
        vec![
            0xB0, 0xE0, 0x12, 0x34, 0x00, 0x01, 0x02, 0x03, 0xDE, 0xAD, 0xBE, 0xEF, // fixed
            0xBE, 0xDE, 0x00, 0x02, // profile, 2 words
            0x32, 0xAA, 0xBB, 0xCC, 0x51, 0x01, 0x02, 0x00, // elements + pad
            0x01, 0x02, 0x03, 0x04, // payload
            0x00, 0x02, // padding
        ]
    }

    #[test]
    fn view_one_byte() {
        let p = one_byte_sample();
        let v = RtpView::parse(&p).unwrap();
        assert_eq!(v.version(), 2);
        assert!(v.marker());
        assert_eq!(v.payload_type(), 96);
        assert_eq!(v.sequence_number(), 0x1234);
        assert_eq!(v.timestamp(), 0x00010203);
        assert_eq!(v.ssrc(), 0xDEADBEEF);
        assert_eq!(v.header_len(), 24);
        assert_eq!(v.payload(), &[1, 2, 3, 4]);
        assert_eq!(v.padding_len(), 2);
        assert_eq!(v.abs_send_time(3), Some(0xAABBCC));
        assert_eq!(v.transport_cc(5), Some(0x0102));
        assert_eq!(v.extensions().count(), 2);
    }

    #[test]
    fn view_two_byte_and_csrc() {
        let p = vec![
            0x92, 0x6F, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, // fixed, CC=2
            0, 0, 0, 0xAA, 0, 0, 0, 0xBB, // CSRCs
            0x10, 0x00, 0x00, 0x02, // two-byte profile, 2 words
            0x07, 0x00, 0x09, 0x03, 0x01, 0x02, 0x03, 0x00, // id 7 empty, id 9 3 bytes, pad
            0xFF,
        ];
        let v = RtpView::parse(&p).unwrap();
        assert_eq!(v.csrcs().collect::<Vec<_>>(), vec![0xAA, 0xBB]);
        assert_eq!(v.extension(7), Some(&[][..]));
        assert_eq!(v.extension(9), Some(&[1, 2, 3][..]));
        assert_eq!(v.payload(), &[0xFF]);
    }

    #[test]
    fn rewrite_in_place() {
        let mut p = one_byte_sample();
        let mut w = RtpRewriter::new(&mut p).unwrap();
        w.set_ssrc(0x01020304)
            .set_sequence_number(1000u16.wrapping_add(65535))
            .set_timestamp(4_294_967_000u32.wrapping_add(90_000))
            .set_marker(false);
        w.set_payload_type(100).unwrap();
        w.set_transport_cc(5, 0xBEEF).unwrap();
        w.set_abs_send_time(3, 0x123456).unwrap();
        assert!(w.set_transport_cc(3, 1).is_err());
        assert!(w.set_transport_cc(9, 1).is_err());
        let v = RtpView::parse(&p).unwrap();
        assert_eq!(v.ssrc(), 0x01020304);
        assert_eq!(v.sequence_number(), 999);
        assert_eq!(v.timestamp(), 89_704);
        assert!(!v.marker());
        assert_eq!(v.payload_type(), 100);
        assert_eq!(v.transport_cc(5), Some(0xBEEF));
        assert_eq!(v.abs_send_time(3), Some(0x123456));
        assert_eq!(v.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn rejects() {
        assert!(RtpView::parse(&[0x80; 11]).is_err());
        assert!(RtpView::parse(&[0x40; 12]).is_err());
        let mut p = [0u8; 12];
        p[0] = 0xA0; // P=1, last byte 0
        assert!(RtpView::parse(&p).is_err());
        p[11] = 1; // padding eats the SSRC byte: longer than payload
        assert!(RtpView::parse(&p).is_err());
        p[0] = 0x81; // CC=1 but no room
        assert!(RtpView::parse(&p).is_err());
    }
}
