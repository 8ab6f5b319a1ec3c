//! Extended Reports (RFC 3611): packet type 207, the sender's SSRC, then report blocks, each
//! `BT (8) | type-specific (8) | block length (16, 32-bit words after this header)`.
//!
//! Implemented: the two blocks that let a receiver-only endpoint measure its round-trip time
//! (§4.4, §4.5), which Chromium asks for with `a=rtcp-xr:rcvr-rtt=all`:
//! - **RRTR** (BT 4, length 2): the receiver's NTP timestamp.
//! - **DLRR** (BT 5, length 3·n): per source, the middle 32 bits of the last RRTR's timestamp
//!   (LRR) and the delay since it arrived (DLRR), both in 1/65536 s.
//!
//! The receiver of a DLRR gets its RTT as `arrival - LRR - DLRR` ([`rtt_from_dlrr`]). Every
//! other block type is kept opaque ([`XrBlock::Other`]) and written back unchanged. Framing of
//! every block is checked by [`Xr::parse`], so iterating never fails afterwards.

use std::time::Duration;

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// Block type of a Receiver Reference Time block.
pub const BT_RRTR: u8 = 4;
/// Block type of a DLRR block.
pub const BT_DLRR: u8 = 5;

/// One DLRR sub-block: the source whose RRTR is answered, LRR and DLRR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DlrrItem {
    pub ssrc: u32,
    /// Middle 32 bits of the NTP timestamp of the last RRTR from `ssrc` (0: none yet).
    pub last_rr: u32,
    /// Delay between that RRTR's arrival and this packet, in 1/65536 s.
    pub delay: u32,
}

/// A report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrBlock<'a> {
    /// Receiver Reference Time: a 64-bit NTP timestamp.
    Rrtr { ntp: u64 },
    /// DLRR sub-blocks (12 bytes each; iterate with [`dlrr_items`]).
    Dlrr(&'a [u8]),
    /// Any other block type: its type-specific byte and body, opaque.
    Other { block_type: u8, specific: u8, body: &'a [u8] },
}

/// The sub-blocks of a DLRR block body.
pub fn dlrr_items(body: &[u8]) -> impl Iterator<Item = DlrrItem> + '_ {
    body.chunks_exact(12).map(|c| DlrrItem {
        ssrc: u32_at(c, 0),
        last_rr: u32_at(c, 4),
        delay: u32_at(c, 8),
    })
}

/// A parsed XR packet: the sender and its framed blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xr<'a> {
    pub sender_ssrc: u32,
    blocks: &'a [u8],
}

impl<'a> Xr<'a> {
    /// Parses an XR body (after the common header), checking the framing of every block and
    /// the fixed lengths of RRTR and DLRR.
    pub fn parse(h: RtcpHeader, body: &'a [u8]) -> WireResult<Xr<'a>> {
        if h.packet_type != packet_type::XR {
            return Err(WireError::InvalidArgument("rtcp xr: not packet type 207"));
        }
        if body.len() < 4 {
            return Err(WireError::Truncated("rtcp xr: sender ssrc"));
        }
        let blocks = &body[4..];
        let mut rest = blocks;
        while !rest.is_empty() {
            let (_, next) = next_block(rest)?;
            rest = next;
        }
        Ok(Xr { sender_ssrc: u32_at(body, 0), blocks })
    }

    /// The report blocks, in order.
    pub fn blocks(&self) -> XrBlocks<'a> {
        XrBlocks { rest: self.blocks }
    }
}

/// Frames and types the block at the start of `buf`.
fn next_block(buf: &[u8]) -> WireResult<(XrBlock<'_>, &[u8])> {
    let &[bt, specific, l0, l1] =
        buf.first_chunk::<4>().ok_or(WireError::Truncated("rtcp xr: block header"))?;
    let len = u16::from_be_bytes([l0, l1]) as usize * 4;
    let body = buf.get(4..4 + len).ok_or(WireError::Truncated("rtcp xr: block length"))?;
    let block = match bt {
        BT_RRTR => {
            if len != 8 {
                return Err(WireError::Malformed("rtcp xr: rrtr block length not 2"));
            }
            XrBlock::Rrtr { ntp: ((u32_at(body, 0) as u64) << 32) | u32_at(body, 4) as u64 }
        }
        BT_DLRR => {
            if !len.is_multiple_of(12) {
                return Err(WireError::Malformed("rtcp xr: dlrr block length not 3n"));
            }
            XrBlock::Dlrr(body)
        }
        _ => XrBlock::Other { block_type: bt, specific, body },
    };
    Ok((block, &buf[4 + len..]))
}

/// Iterator over the blocks of an [`Xr`] (framing checked by [`Xr::parse`]).
#[derive(Debug, Clone)]
pub struct XrBlocks<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for XrBlocks<'a> {
    type Item = XrBlock<'a>;

    fn next(&mut self) -> Option<XrBlock<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        match next_block(self.rest) {
            Ok((b, rest)) => {
                self.rest = rest;
                Some(b)
            }
            Err(_) => {
                // Unreachable after a successful parse; end the walk rather than panic.
                self.rest = &[];
                None
            }
        }
    }
}

/// Bytes a block takes on the wire.
fn block_len(b: &XrBlock<'_>) -> usize {
    4 + match b {
        XrBlock::Rrtr { .. } => 8,
        XrBlock::Dlrr(body) | XrBlock::Other { body, .. } => body.len(),
    }
}

/// Writes an XR packet from `sender_ssrc` with `blocks`. Block bodies must be multiples of 4
/// bytes (a DLRR body of 12 bytes per item), at most 65535 words each.
pub fn write(buf: &mut [u8], sender_ssrc: u32, blocks: &[XrBlock<'_>]) -> WireResult<usize> {
    let total = HEADER_LEN + 4 + blocks.iter().map(block_len).sum::<usize>();
    need(buf, total, "rtcp xr")?;
    for b in blocks {
        let body_len = block_len(b) - 4;
        if !body_len.is_multiple_of(4) || body_len / 4 > u16::MAX as usize {
            return Err(WireError::InvalidArgument("rtcp xr: block body length"));
        }
        if matches!(b, XrBlock::Dlrr(d) if !d.len().is_multiple_of(12)) {
            return Err(WireError::InvalidArgument("rtcp xr: dlrr body not 12n bytes"));
        }
    }
    write_header(buf, 0, packet_type::XR, total)?;
    buf[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    let mut at = 8;
    for b in blocks {
        let n = block_len(b);
        let (bt, specific) = match b {
            XrBlock::Rrtr { .. } => (BT_RRTR, 0),
            XrBlock::Dlrr(_) => (BT_DLRR, 0),
            XrBlock::Other { block_type, specific, .. } => (*block_type, *specific),
        };
        let out = &mut buf[at..at + n];
        out[0] = bt;
        out[1] = specific;
        out[2..4].copy_from_slice(&(((n - 4) / 4) as u16).to_be_bytes());
        match b {
            XrBlock::Rrtr { ntp } => out[4..12].copy_from_slice(&ntp.to_be_bytes()),
            XrBlock::Dlrr(body) | XrBlock::Other { body, .. } => out[4..].copy_from_slice(body),
        }
        at += n;
    }
    Ok(total)
}

/// Writes an XR packet holding one RRTR block (20 bytes).
pub fn write_rrtr(buf: &mut [u8], sender_ssrc: u32, ntp: u64) -> WireResult<usize> {
    write(buf, sender_ssrc, &[XrBlock::Rrtr { ntp }])
}

/// Writes an XR packet holding one DLRR block with `items` (at most 16 here: 12 + 12·16 bytes
/// of block, no allocation).
pub fn write_dlrr(buf: &mut [u8], sender_ssrc: u32, items: &[DlrrItem]) -> WireResult<usize> {
    const MAX: usize = 16;
    if items.len() > MAX {
        return Err(WireError::InvalidArgument("rtcp xr: more than 16 dlrr items"));
    }
    let mut body = [0u8; 12 * MAX];
    for (i, it) in items.iter().enumerate() {
        let c = &mut body[i * 12..i * 12 + 12];
        c[0..4].copy_from_slice(&it.ssrc.to_be_bytes());
        c[4..8].copy_from_slice(&it.last_rr.to_be_bytes());
        c[8..12].copy_from_slice(&it.delay.to_be_bytes());
    }
    write(buf, sender_ssrc, &[XrBlock::Dlrr(&body[..items.len() * 12])])
}

/// The middle 32 bits of a 64-bit NTP timestamp (the compact form LRR and DLRR use).
pub fn compact_ntp(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// A duration in 1/65536 s units (saturating at `u32::MAX`, about 18 hours).
pub fn to_compact(d: Duration) -> u32 {
    ((d.as_micros() * 65536) / 1_000_000).min(u32::MAX as u128) as u32
}

/// The round-trip time a DLRR gives: `arrival` (compact NTP of when it arrived at the RRTR's
/// sender) minus the LRR and DLRR it carries (RFC 3611 §4.5). `None` when no RRTR was answered
/// (LRR 0) or the result would be negative (clock steps, a forged packet).
pub fn rtt_from_dlrr(arrival: u32, item: &DlrrItem) -> Option<Duration> {
    if item.last_rr == 0 {
        return None;
    }
    let rtt = arrival.wrapping_sub(item.last_rr).wrapping_sub(item.delay);
    if rtt > 0x8000_0000 {
        return None;
    }
    Some(Duration::from_micros(rtt as u64 * 1_000_000 / 65536))
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    fn parse_one(d: &[u8]) -> Xr<'_> {
        let c = RtcpCompound::parse(d).unwrap();
        let Some(Ok(RtcpPacket::Other(p))) = c.packets().next() else { panic!() };
        Xr::parse(p.header, p.body).unwrap()
    }

    #[test]
    fn rrtr_vector() {
        // RFC 3611 §4.4 layout: V=2, PT=207, length 4; SSRC; BT=4, reserved, length 2; NTP.
        let d = [
            0x80, 0xCF, 0x00, 0x04, 0x11, 0x22, 0x33, 0x44, 0x04, 0x00, 0x00, 0x02, 0xE8, 0x00,
            0x00, 0x01, 0x80, 0x00, 0x00, 0x00,
        ];
        let x = parse_one(&d);
        assert_eq!(x.sender_ssrc, 0x1122_3344);
        let blocks: Vec<_> = x.blocks().collect();
        assert_eq!(blocks, vec![XrBlock::Rrtr { ntp: 0xE800_0001_8000_0000 }]);
        let mut b = [0u8; 20];
        assert_eq!(write_rrtr(&mut b, 0x1122_3344, 0xE800_0001_8000_0000).unwrap(), 20);
        assert_eq!(b, d);
        assert_eq!(compact_ntp(0xE800_0001_8000_0000), 0x0001_8000);
    }

    #[test]
    fn dlrr_roundtrip_and_rtt() {
        let items = [
            DlrrItem { ssrc: 7, last_rr: 0x0001_8000, delay: 0x0000_8000 },
            DlrrItem { ssrc: 9, last_rr: 0, delay: 0 },
        ];
        let mut b = [0u8; 64];
        let n = write_dlrr(&mut b, 5, &items).unwrap();
        assert_eq!(n, 4 + 4 + 4 + 24);
        assert_eq!(&b[..4], &[0x80, 0xCF, 0x00, 0x08]);
        let x = parse_one(&b[..n]);
        let Some(XrBlock::Dlrr(body)) = x.blocks().next() else { panic!() };
        assert_eq!(dlrr_items(body).collect::<Vec<_>>(), items);
        // Sent at 1.5 s, answered after 0.5 s, back at 2.1 s: RTT 100 ms.
        let arrival = 0x0002_0000 + 6554; // 2.1 s in 1/65536 s
        let rtt = rtt_from_dlrr(arrival, &items[0]).unwrap();
        assert!((99..=101).contains(&rtt.as_millis()), "{rtt:?}");
        assert_eq!(rtt_from_dlrr(arrival, &items[1]), None, "no RRTR answered");
        // A DLRR claiming more delay than elapsed: no RTT.
        assert_eq!(rtt_from_dlrr(0x0001_8000, &items[0]), None);
    }

    #[test]
    fn bad_blocks_are_refused() {
        // An RRTR of length 1, a DLRR of length 2, a block running past the packet.
        for (bt, len) in [(BT_RRTR, 1u8), (BT_DLRR, 2), (9, 3)] {
            let d = [0x80, 0xCF, 0x00, 0x03, 0, 0, 0, 1, bt, 0, 0, len, 0, 0, 0, 0];
            let c = RtcpCompound::parse(&d).unwrap();
            let p = c.raw_packets().next().unwrap();
            assert!(Xr::parse(p.header, p.body).is_err(), "bt {bt} len {len}");
        }
        // Unknown blocks are kept and written back as they were.
        let d = [0x80, 0xCF, 0x00, 0x03, 0, 0, 0, 1, 9, 0xAB, 0, 1, 1, 2, 3, 4];
        let x = parse_one(&d);
        let blocks: Vec<_> = x.blocks().collect();
        let mut b = [0u8; 16];
        assert_eq!(write(&mut b, 1, &blocks).unwrap(), 16);
        assert_eq!(b, d);
    }
}
