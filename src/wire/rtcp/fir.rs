//! Full Intra Request (RFC 5104 §4.3.1): PSFB FMT 4, entries of (SSRC, sequence number).

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// Feedback message type of FIR.
pub const FMT: u8 = 4;

/// A FIR view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fir<'a> {
    pub sender_ssrc: u32,
    /// Unused in FIR (0), kept as sent.
    pub media_ssrc: u32,
    fci: &'a [u8],
}

impl<'a> Fir<'a> {
    /// Parses the body of a FIR.
    pub fn parse(_h: RtcpHeader, body: &'a [u8]) -> WireResult<Fir<'a>> {
        if body.len() < 8 {
            return Err(WireError::Truncated("rtcp fir: ssrcs"));
        }
        let fci = &body[8..];
        if !fci.len().is_multiple_of(8) {
            return Err(WireError::Malformed("rtcp fir: FCI not a multiple of 8"));
        }
        Ok(Fir { sender_ssrc: u32_at(body, 0), media_ssrc: u32_at(body, 4), fci })
    }

    /// (SSRC, command sequence number) entries.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (u32, u8)> + 'a {
        self.fci.chunks_exact(8).map(|c| (u32::from_be_bytes([c[0], c[1], c[2], c[3]]), c[4]))
    }
}

/// Writes a FIR with `entries` and returns its length.
pub fn write(buf: &mut [u8], sender_ssrc: u32, entries: &[(u32, u8)]) -> WireResult<usize> {
    let len = HEADER_LEN + 8 + entries.len() * 8;
    need(buf, len, "rtcp fir")?;
    write_header(buf, FMT, packet_type::PSFB, len)?;
    buf[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    buf[8..12].fill(0);
    for (i, (ssrc, seq)) in entries.iter().enumerate() {
        let p = 12 + i * 8;
        buf[p..p + 4].copy_from_slice(&ssrc.to_be_bytes());
        buf[p + 4..p + 8].copy_from_slice(&[*seq, 0, 0, 0]);
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    #[test]
    fn round_trip() {
        let mut b = [0u8; 64];
        let n = write(&mut b, 7, &[(0x1234, 9), (0x5678, 10)]).unwrap();
        assert_eq!(n, 28);
        let c = RtcpCompound::parse(&b[..n]).unwrap();
        let Some(Ok(RtcpPacket::Fir(f))) = c.packets().next() else { panic!() };
        assert_eq!(f.sender_ssrc, 7);
        assert_eq!(f.entries().collect::<Vec<_>>(), vec![(0x1234, 9), (0x5678, 10)]);
    }
}
