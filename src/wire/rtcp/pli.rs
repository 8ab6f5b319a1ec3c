//! Picture Loss Indication (RFC 4585 §6.3.1): PSFB FMT 1, sender and media SSRC, no FCI.

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// Feedback message type of PLI.
pub const FMT: u8 = 1;

/// A PLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pli {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
}

impl Pli {
    /// Parses the body of a PLI (extra FCI bytes are ignored).
    pub fn parse(_h: RtcpHeader, body: &[u8]) -> WireResult<Pli> {
        if body.len() < 8 {
            return Err(WireError::Truncated("rtcp pli: ssrcs"));
        }
        Ok(Pli { sender_ssrc: u32_at(body, 0), media_ssrc: u32_at(body, 4) })
    }
}

/// Writes a PLI (12 bytes).
pub fn write(buf: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> WireResult<usize> {
    let len = HEADER_LEN + 8;
    need(buf, len, "rtcp pli")?;
    write_header(buf, FMT, packet_type::PSFB, len)?;
    buf[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    buf[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    #[test]
    fn vector() {
        // RFC 4585 layout: 0x81 0xCE length 2.
        let d = [0x81, 0xCE, 0x00, 0x02, 0, 0, 0, 1, 0x4b, 0xc4, 0xfc, 0xb4];
        let c = RtcpCompound::parse(&d).unwrap();
        let Some(Ok(RtcpPacket::Pli(p))) = c.packets().next() else { panic!() };
        assert_eq!((p.sender_ssrc, p.media_ssrc), (1, 0x4bc4fcb4));
        let mut b = [0u8; 12];
        assert_eq!(write(&mut b, 1, 0x4bc4fcb4).unwrap(), 12);
        assert_eq!(b, d);
    }
}
