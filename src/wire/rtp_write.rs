//! Writing RTP for a receiver: a fresh header in a send slot (the receiver's own stream fields,
//! the source's CSRCs and padding flag, extension elements chosen by the caller, in RFC 8285's
//! one-byte form, or its two-byte form when an element needs it), and
//! RFC 4588 retransmission payloads both ways: [`rtx_unwrap`] turns a received RTX packet back
//! into the original in place, [`write_rtx_payload`] writes the original sequence number before
//! a payload we retransmit.
//!
//! The header is written, not copied and patched: a forwarded packet's header is rebuilt for
//! each subscriber straight into its send slot, and its payload is then encrypted from the
//! receive buffer behind it (the one copy of the fanout).

use super::error::{WireError, WireResult};
use super::rtp::{FIXED_HEADER_LEN, PROFILE_ONE_BYTE, RtpView};

/// RFC 8285 §4.3: the two-byte form's profile (`0x100` and four application bits, zero here).
pub const PROFILE_TWO_BYTE: u16 = 0x1000;

/// The fixed-header fields of a packet to one receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFields {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
}

/// Largest header [`write_header`] can produce with `n` extension elements: fixed header, 15
/// CSRCs, the extension block header, `n` two-byte-form elements of at most 257 bytes and 3
/// bytes of padding.
pub const fn max_header_len(n: usize) -> usize {
    FIXED_HEADER_LEN + 4 * 15 + 4 + 257 * n + 3
}

/// Whether extension element `(id, v)` is written at all: id 0 means "not negotiated", and an
/// empty value or one over 255 bytes fits neither form.
#[inline]
fn kept(id: u8, v: &[u8]) -> bool {
    id != 0 && (1..=255).contains(&v.len())
}

/// Writes the header of a packet derived from `src` into `b`: version 2, `src`'s padding flag
/// and CSRCs, the fields `h`, and an RFC 8285 extension block with the elements `exts` in order
/// (an element with id 0, or a value empty or over 255 bytes, is left out; no block at all when
/// none is left). The block uses the one-byte form when every element fits it (id 1..=14,
/// 1..=16 bytes), else the two-byte form for all of them (one form per packet; the receiver
/// must have agreed to it, `a=extmap-allow-mixed`). Returns the header length, or `None` when
/// `b` is shorter than the header.
pub fn write_header(
    b: &mut [u8],
    h: &HeaderFields,
    src: &RtpView<'_>,
    exts: &[(u8, &[u8])],
) -> Option<usize> {
    let cc = src.csrc_count() as usize;
    let start = FIXED_HEADER_LEN + 4 * cc;
    let fits = |id: u8, v: &[u8]| (1..=14).contains(&id) && (1..=16).contains(&v.len());
    // An element that is kept but does not fit the one-byte form: the two-byte form (cold).
    if exts.iter().any(|&(id, v)| kept(id, v) && !fits(id, v)) {
        let body = exts.iter().filter(|(id, v)| kept(*id, v)).map(|(_, v)| 2 + v.len()).sum();
        return write_two_byte(b, h, src, exts, start, body);
    }
    let ext_bytes: usize =
        exts.iter().filter(|(id, v)| fits(*id, v)).map(|(_, v)| 1 + v.len()).sum();
    let ext_len = if ext_bytes == 0 { 0 } else { 4 + ext_bytes.next_multiple_of(4) };
    let end = start + ext_len;
    if b.len() < end {
        return None;
    }
    b[1] = (u8::from(h.marker) << 7) | (h.pt & 0x7F);
    b[2..4].copy_from_slice(&h.seq.to_be_bytes());
    b[4..8].copy_from_slice(&h.ts.to_be_bytes());
    b[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    b[FIXED_HEADER_LEN..start].copy_from_slice(&src.as_bytes()[FIXED_HEADER_LEN..start]);
    if ext_len > 0 {
        b[start..start + 2].copy_from_slice(&PROFILE_ONE_BYTE.to_be_bytes());
        b[start + 2..start + 4].copy_from_slice(&(((ext_len - 4) / 4) as u16).to_be_bytes());
        let mut q = start + 4;
        for &(id, v) in exts.iter().filter(|(id, v)| fits(*id, v)) {
            b[q] = (id << 4) | (v.len() as u8 - 1);
            b[q + 1..q + 1 + v.len()].copy_from_slice(v);
            q += 1 + v.len();
        }
        b[q..end].fill(0);
    }
    b[0] = 0x80 | (u8::from(src.has_padding()) << 5) | (u8::from(ext_len > 0) << 4) | cc as u8;
    Some(end)
}

/// The fixed header and CSRCs (`b` holds at least `12 + 4 * cc` bytes).
#[inline]
fn write_fixed(b: &mut [u8], h: &HeaderFields, src: &RtpView<'_>, cc: usize, ext: bool) {
    let start = FIXED_HEADER_LEN + 4 * cc;
    b[1] = (u8::from(h.marker) << 7) | (h.pt & 0x7F);
    b[2..4].copy_from_slice(&h.seq.to_be_bytes());
    b[4..8].copy_from_slice(&h.ts.to_be_bytes());
    b[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    b[FIXED_HEADER_LEN..start].copy_from_slice(&src.as_bytes()[FIXED_HEADER_LEN..start]);
    b[0] = 0x80 | (u8::from(src.has_padding()) << 5) | (u8::from(ext) << 4) | cc as u8;
}

/// [`write_header`] with the two-byte form (RFC 8285 §4.3): `body` bytes of elements (an id
/// byte, a length byte, the value), padded to a word.
#[cold]
fn write_two_byte(
    b: &mut [u8],
    h: &HeaderFields,
    src: &RtpView<'_>,
    exts: &[(u8, &[u8])],
    start: usize,
    body: usize,
) -> Option<usize> {
    let cc = src.csrc_count() as usize;
    let ext_len = 4 + body.next_multiple_of(4);
    let end = start + ext_len;
    if b.len() < end {
        return None;
    }
    b[start..start + 2].copy_from_slice(&PROFILE_TWO_BYTE.to_be_bytes());
    b[start + 2..start + 4].copy_from_slice(&(((ext_len - 4) / 4) as u16).to_be_bytes());
    let mut q = start + 4;
    for &(id, v) in exts.iter().filter(|(id, v)| kept(*id, v)) {
        b[q] = id;
        b[q + 1] = v.len() as u8;
        b[q + 2..q + 2 + v.len()].copy_from_slice(v);
        q += 2 + v.len();
    }
    b[q..end].fill(0);
    write_fixed(b, h, src, cc, true);
    Some(end)
}

/// RFC 4588 §4: the payload of a retransmission, written at `at` in `b`: the original sequence
/// number `osn`, then `payload`. Returns the end offset, or `None` when it does not fit.
pub fn write_rtx_payload(b: &mut [u8], at: usize, osn: u16, payload: &[u8]) -> Option<usize> {
    let end = at.checked_add(2 + payload.len())?;
    if end > b.len() {
        return None;
    }
    b[at..at + 2].copy_from_slice(&osn.to_be_bytes());
    b[at + 2..end].copy_from_slice(payload);
    Some(end)
}

/// RFC 4588: `buf[..len]` is a decrypted packet of an RTX stream; puts the original back
/// together in place: the original sequence number (the payload's first two bytes) removed
/// and written into the header, with the media stream's SSRC and payload type. Returns the
/// new length, or `None` for a packet whose payload is shorter than an OSN (a padding-only
/// bandwidth probe: nothing to forward).
pub fn rtx_unwrap(
    buf: &mut [u8],
    len: usize,
    media_ssrc: u32,
    media_pt: u8,
) -> WireResult<Option<usize>> {
    let buf = buf.get_mut(..len).ok_or(WireError::Truncated("rtx packet"))?;
    let v = RtpView::parse(buf)?;
    if v.payload().len() < 2 {
        return Ok(None);
    }
    let hl = v.header_len();
    let osn = u16::from_be_bytes([buf[hl], buf[hl + 1]]);
    buf.copy_within(hl + 2..len, hl);
    let len = len - 2;
    buf[1] = (buf[1] & 0x80) | (media_pt & 0x7F);
    buf[2..4].copy_from_slice(&osn.to_be_bytes());
    buf[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Vec<u8> {
        // V=2, CC=1, PT 96, seq 7, ts 9, ssrc 0x11, one CSRC, then a 3-byte payload.
        let mut p = vec![0x81, 96, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0x11, 0xC, 0xC, 0xC, 0xC];
        p.extend_from_slice(b"abc");
        p
    }

    #[test]
    fn a_header_with_extensions_parses_back() {
        let src = source();
        let v = RtpView::parse(&src).unwrap();
        let mut b = [0u8; 128];
        let h = HeaderFields { marker: true, pt: 100, seq: 0xABCD, ts: 0x0102_0304, ssrc: 0x55 };
        let exts: [(u8, &[u8]); 4] = [(1, b"0"), (3, &[1, 2, 3]), (0, b"no"), (2, b"")];
        let n = write_header(&mut b, &h, &v, &exts).unwrap();
        b[n..n + 3].copy_from_slice(b"xyz");
        let w = RtpView::parse(&b[..n + 3]).unwrap();
        assert_eq!((w.marker(), w.payload_type(), w.sequence_number()), (true, 100, 0xABCD));
        assert_eq!((w.timestamp(), w.ssrc()), (0x0102_0304, 0x55));
        assert_eq!(w.csrcs().collect::<Vec<_>>(), vec![0x0C0C_0C0C]);
        assert_eq!(w.extension(1), Some(&b"0"[..]));
        assert_eq!(w.extension(3), Some(&[1, 2, 3][..]));
        assert_eq!(w.payload(), b"xyz");
        assert!(n.is_multiple_of(4));
        // No element left: no extension block.
        let n = write_header(&mut b, &h, &v, &[(0, b"x")]).unwrap();
        assert_eq!(n, 16);
        assert!(!RtpView::parse(&b[..n]).unwrap().has_extension());
        // Too short a buffer: nothing written past it, no panic.
        assert_eq!(write_header(&mut b[..15], &h, &v, &[]), None);
    }

    /// An element over 16 bytes (a Dependency Descriptor with its structure) or with an id over
    /// 14 puts every element of the packet in the two-byte form; the rest stays one-byte.
    #[test]
    fn two_byte_form_when_an_element_needs_it() {
        let src = source();
        let v = RtpView::parse(&src).unwrap();
        let h = HeaderFields { marker: false, pt: 45, seq: 1, ts: 2, ssrc: 3 };
        let dd: Vec<u8> = (0..40).collect();
        let long = [0xAAu8; 300];
        let exts: [(u8, &[u8]); 5] =
            [(4, b"1"), (3, &[0, 9]), (0, b"no"), (11, &dd), (12, &long[..])];
        let mut b = [0u8; 256];
        let n = write_header(&mut b, &h, &v, &exts).unwrap();
        // 12 + 4 (CSRC) + 4 + elements (2+1) + (2+2) + (2+40) = 49, padded to 52: 72; the
        // 300-byte value fits neither form and is left out.
        assert_eq!(n, 72);
        assert_eq!(&b[16..18], &PROFILE_TWO_BYTE.to_be_bytes());
        b[n..n + 3].copy_from_slice(b"xyz");
        let w = RtpView::parse(&b[..n + 3]).unwrap();
        assert_eq!(w.extension_profile(), Some(PROFILE_TWO_BYTE));
        assert_eq!(w.extension(4), Some(&b"1"[..]));
        assert_eq!(w.extension(3), Some(&[0, 9][..]));
        assert_eq!(w.extension(11), Some(&dd[..]));
        assert_eq!(w.extension(12), None);
        assert_eq!((w.payload(), w.csrcs().count(), w.payload_type()), (&b"xyz"[..], 1, 45));
        // An id over 14 needs it too, even with a short value.
        let n = write_header(&mut b, &h, &v, &[(1, b"a"), (20, b"b")]).unwrap();
        let w = RtpView::parse(&b[..n]).unwrap();
        assert_eq!(w.extension_profile(), Some(PROFILE_TWO_BYTE));
        assert_eq!((w.extension(1), w.extension(20)), (Some(&b"a"[..]), Some(&b"b"[..])));
        // Exactly 16 bytes still fits the one-byte form.
        let n = write_header(&mut b, &h, &v, &[(11, &dd[..16])]).unwrap();
        let w = RtpView::parse(&b[..n]).unwrap();
        assert_eq!(w.extension_profile(), Some(PROFILE_ONE_BYTE));
        assert_eq!(w.extension(11), Some(&dd[..16]));
        // Too short a buffer for the two-byte block: refused, no panic.
        assert_eq!(write_header(&mut b[..60], &h, &v, &exts), None);
    }

    #[test]
    fn rtx_round_trip() {
        let src = source();
        let v = RtpView::parse(&src).unwrap();
        let mut b = [0u8; 64];
        let h = HeaderFields { marker: false, pt: 97, seq: 500, ts: 9, ssrc: 0x99 };
        let hl = write_header(&mut b, &h, &v, &[]).unwrap();
        let end = write_rtx_payload(&mut b, hl, 7, v.payload()).unwrap();
        assert_eq!(write_rtx_payload(&mut b, 60, 7, b"toolong"), None);
        let n = rtx_unwrap(&mut b, end, 0x11, 96).unwrap().unwrap();
        let w = RtpView::parse(&b[..n]).unwrap();
        assert_eq!((w.ssrc(), w.sequence_number(), w.payload_type()), (0x11, 7, 96));
        assert_eq!(w.payload(), b"abc");
        // A padding-only probe has no OSN; a short buffer is an error, not a panic.
        let mut probe = [0x80u8, 97, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x99];
        assert_eq!(rtx_unwrap(&mut probe, 12, 1, 96).unwrap(), None);
        assert!(rtx_unwrap(&mut probe, 40, 1, 96).is_err());
    }
}
