//! Sender Report (RFC 3550 §6.4.1).

use super::rr::{REPORT_BLOCK_LEN, ReportBlock, ReportBlocks, split_blocks, write_blocks};
use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// The sender information of an SR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SenderInfo {
    pub ssrc: u32,
    /// 64-bit NTP timestamp.
    pub ntp_time: u64,
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// A Sender Report view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReport<'a> {
    pub info: SenderInfo,
    blocks: &'a [u8],
    /// Profile-specific extension after the blocks.
    pub extension: &'a [u8],
}

impl<'a> SenderReport<'a> {
    /// Parses the body of an SR.
    pub fn parse(h: RtcpHeader, body: &'a [u8]) -> WireResult<SenderReport<'a>> {
        if body.len() < 24 {
            return Err(WireError::Truncated("rtcp sr: sender info"));
        }
        let info = SenderInfo {
            ssrc: u32_at(body, 0),
            ntp_time: (u32_at(body, 4) as u64) << 32 | u32_at(body, 8) as u64,
            rtp_timestamp: u32_at(body, 12),
            packet_count: u32_at(body, 16),
            octet_count: u32_at(body, 20),
        };
        let (blocks, extension) = split_blocks(&body[24..], h.count, "rtcp sr: report blocks")?;
        Ok(SenderReport { info, blocks, extension })
    }

    /// The report blocks.
    pub fn report_blocks(&self) -> ReportBlocks<'a> {
        ReportBlocks { chunks: self.blocks.chunks_exact(REPORT_BLOCK_LEN) }
    }
}

/// Writes an SR with `blocks` (at most 31) and returns its length.
pub fn write(buf: &mut [u8], info: &SenderInfo, blocks: &[ReportBlock]) -> WireResult<usize> {
    if blocks.len() > 31 {
        return Err(WireError::InvalidArgument("rtcp sr: more than 31 blocks"));
    }
    let len = HEADER_LEN + 24 + blocks.len() * REPORT_BLOCK_LEN;
    need(buf, len, "rtcp sr")?;
    write_header(buf, blocks.len() as u8, packet_type::SR, len)?;
    buf[4..8].copy_from_slice(&info.ssrc.to_be_bytes());
    buf[8..16].copy_from_slice(&info.ntp_time.to_be_bytes());
    buf[16..20].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
    buf[20..24].copy_from_slice(&info.packet_count.to_be_bytes());
    buf[24..28].copy_from_slice(&info.octet_count.to_be_bytes());
    write_blocks(&mut buf[28..len], blocks);
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    /// An SR from RFC 3550-conformant senders (bytes as in the `rtcp` crate's test vector).
    #[test]
    fn parse_vector() {
        let d = [
            0x81u8, 0xc8, 0x0, 0xc, // v=2, p=0, count=1, SR, len=12
            0x90, 0x2f, 0x9e, 0x2e, // ssrc
            0xda, 0x8b, 0xd1, 0xfc, 0xdd, 0xdd, 0xa0, 0x5a, // ntp
            0xaa, 0xf4, 0xed, 0xd5, // rtp ts
            0x00, 0x00, 0x00, 0x01, // packets
            0x00, 0x00, 0x00, 0x02, // octets
            0xbc, 0x5e, 0x9a, 0x40, // block ssrc
            0x0, 0x0, 0x0, 0x0, // lost
            0x0, 0x0, 0x46, 0xe1, // last seq
            0x0, 0x0, 0x1, 0x11, // jitter
            0x09, 0xf3, 0x64, 0x32, // lsr
            0x0, 0x2, 0x4a, 0x79, // dlsr
        ];
        let c = RtcpCompound::parse(&d).unwrap();
        let Some(Ok(RtcpPacket::SenderReport(sr))) = c.packets().next() else { panic!() };
        assert_eq!(sr.info.ssrc, 0x902f9e2e);
        assert_eq!(sr.info.ntp_time, 0xda8bd1fcdddda05a);
        assert_eq!(sr.info.rtp_timestamp, 0xaaf4edd5);
        assert_eq!((sr.info.packet_count, sr.info.octet_count), (1, 2));
        let b: Vec<_> = sr.report_blocks().collect();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].ssrc, 0xbc5e9a40);
        assert_eq!(b[0].extended_highest_seq, 0x46e1);
        assert_eq!(b[0].jitter, 273);
        assert_eq!(b[0].last_sr, 0x9f36432);
        assert_eq!(b[0].delay_since_last_sr, 150137);
        let mut out = [0u8; 64];
        let n = write(&mut out, &sr.info, &b).unwrap();
        assert_eq!(&out[..n], &d[..]);
    }
}
