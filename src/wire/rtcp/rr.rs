//! Receiver Report (RFC 3550 §6.4.2) and the report block shared with SR.

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// Size of one report block.
pub const REPORT_BLOCK_LEN: usize = 24;

/// One reception report block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// Cumulative number of packets lost (24-bit signed).
    pub cumulative_lost: i32,
    pub extended_highest_seq: u32,
    pub jitter: u32,
    pub last_sr: u32,
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    /// Reads a block from exactly 24 bytes.
    pub fn read(b: &[u8; REPORT_BLOCK_LEN]) -> ReportBlock {
        let raw = u32::from_be_bytes([0, b[5], b[6], b[7]]);
        // Sign-extend the 24-bit value.
        let cumulative_lost = ((raw << 8) as i32) >> 8;
        ReportBlock {
            ssrc: u32_at(b, 0),
            fraction_lost: b[4],
            cumulative_lost,
            extended_highest_seq: u32_at(b, 8),
            jitter: u32_at(b, 12),
            last_sr: u32_at(b, 16),
            delay_since_last_sr: u32_at(b, 20),
        }
    }

    /// Writes the block; `cumulative_lost` is clamped to the 24-bit signed range.
    pub fn write(&self, b: &mut [u8; REPORT_BLOCK_LEN]) {
        let lost = self.cumulative_lost.clamp(-(1 << 23), (1 << 23) - 1) as u32;
        b[0..4].copy_from_slice(&self.ssrc.to_be_bytes());
        b[4] = self.fraction_lost;
        b[5..8].copy_from_slice(&lost.to_be_bytes()[1..]);
        b[8..12].copy_from_slice(&self.extended_highest_seq.to_be_bytes());
        b[12..16].copy_from_slice(&self.jitter.to_be_bytes());
        b[16..20].copy_from_slice(&self.last_sr.to_be_bytes());
        b[20..24].copy_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// Iterator over report blocks.
#[derive(Debug, Clone)]
pub struct ReportBlocks<'a> {
    pub(crate) chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for ReportBlocks<'_> {
    type Item = ReportBlock;

    fn next(&mut self) -> Option<ReportBlock> {
        let c = self.chunks.next()?;
        c.try_into().ok().map(ReportBlock::read)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for ReportBlocks<'_> {}

/// Checks that `blocks` holds `count` report blocks and returns them and the rest.
pub(crate) fn split_blocks<'a>(
    body: &'a [u8],
    count: u8,
    ctx: &'static str,
) -> WireResult<(&'a [u8], &'a [u8])> {
    let n = count as usize * REPORT_BLOCK_LEN;
    if body.len() < n {
        return Err(WireError::Truncated(ctx));
    }
    Ok(body.split_at(n))
}

/// A Receiver Report view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReport<'a> {
    pub sender_ssrc: u32,
    blocks: &'a [u8],
    /// Profile-specific extension after the blocks.
    pub extension: &'a [u8],
}

impl<'a> ReceiverReport<'a> {
    /// Parses the body of an RR.
    pub fn parse(h: RtcpHeader, body: &'a [u8]) -> WireResult<ReceiverReport<'a>> {
        if body.len() < 4 {
            return Err(WireError::Truncated("rtcp rr: sender ssrc"));
        }
        let (blocks, extension) = split_blocks(&body[4..], h.count, "rtcp rr: report blocks")?;
        Ok(ReceiverReport { sender_ssrc: u32_at(body, 0), blocks, extension })
    }

    /// The report blocks.
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks { chunks: self.blocks.chunks_exact(REPORT_BLOCK_LEN) }
    }
}

/// Writes an RR with `blocks` (at most 31) and returns its length.
pub fn write(buf: &mut [u8], sender_ssrc: u32, blocks: &[ReportBlock]) -> WireResult<usize> {
    if blocks.len() > 31 {
        return Err(WireError::InvalidArgument("rtcp rr: more than 31 blocks"));
    }
    let len = HEADER_LEN + 4 + blocks.len() * REPORT_BLOCK_LEN;
    need(buf, len, "rtcp rr")?;
    write_header(buf, blocks.len() as u8, packet_type::RR, len)?;
    buf[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    write_blocks(&mut buf[8..len], blocks);
    Ok(len)
}

pub(crate) fn write_blocks(out: &mut [u8], blocks: &[ReportBlock]) {
    for (b, chunk) in blocks.iter().zip(out.chunks_exact_mut(REPORT_BLOCK_LEN)) {
        // chunks_exact_mut yields exactly 24-byte chunks.
        if let Ok(c) = <&mut [u8; REPORT_BLOCK_LEN]>::try_from(chunk) {
            b.write(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    #[test]
    fn round_trip() {
        let blocks = [
            ReportBlock {
                ssrc: 0x902f9e2e,
                fraction_lost: 0x10,
                cumulative_lost: -3,
                extended_highest_seq: 0x1_0005,
                jitter: 273,
                last_sr: 0x9f36432,
                delay_since_last_sr: 150137,
            },
            ReportBlock::default(),
        ];
        let mut buf = [0u8; 128];
        let n = write(&mut buf, 0x12345678, &blocks).unwrap();
        assert_eq!(n, 56);
        let c = RtcpCompound::parse(&buf[..n]).unwrap();
        let Some(Ok(RtcpPacket::ReceiverReport(rr))) = c.packets().next() else { panic!() };
        assert_eq!(rr.sender_ssrc, 0x12345678);
        assert_eq!(rr.report_blocks().collect::<Vec<_>>(), blocks.to_vec());
    }
}
