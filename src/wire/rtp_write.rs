//! Writing RTP for a receiver: a fresh header in a send slot (the receiver's own stream fields,
//! the source's CSRCs and padding flag, one-byte extension elements chosen by the caller), and
//! RFC 4588 retransmission payloads both ways: [`rtx_unwrap`] turns a received RTX packet back
//! into the original in place, [`write_rtx_payload`] writes the original sequence number before
//! a payload we retransmit.
//!
//! The header is written, not copied and patched: a forwarded packet's header is rebuilt for
//! each subscriber straight into its send slot, and its payload is then encrypted from the
//! receive buffer behind it (the one copy of the fanout).

use super::error::{WireError, WireResult};
use super::rtp::{FIXED_HEADER_LEN, PROFILE_ONE_BYTE, RtpView};

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
/// CSRCs, the extension block header, `n` elements of at most 17 bytes and 3 bytes of padding.
pub const fn max_header_len(n: usize) -> usize {
    FIXED_HEADER_LEN + 4 * 15 + 4 + 17 * n + 3
}

/// Writes the header of a packet derived from `src` into `b`: version 2, `src`'s padding flag
/// and CSRCs, the fields `h`, and a one-byte-form (RFC 8285) extension block with the elements
/// `exts` in order (an element whose id is outside 1..=14 or whose value is not 1..=16 bytes is
/// left out; no block at all when none is left). Returns the header length, or `None` when `b`
/// is shorter than the header.
pub fn write_header(
    b: &mut [u8],
    h: &HeaderFields,
    src: &RtpView<'_>,
    exts: &[(u8, &[u8])],
) -> Option<usize> {
    let cc = src.csrc_count() as usize;
    let start = FIXED_HEADER_LEN + 4 * cc;
    let fits = |id: u8, v: &[u8]| (1..=14).contains(&id) && (1..=16).contains(&v.len());
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
        let exts: [(u8, &[u8]); 4] = [(1, b"0"), (3, &[1, 2, 3]), (0, b"no"), (15, b"no")];
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
