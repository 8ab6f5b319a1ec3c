//! Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb-03): PSFB FMT 15 with the
//! "REMB" identifier, SSRC count, 6-bit exponent and 18-bit mantissa, then the SSRC list.

use super::{HEADER_LEN, RtcpHeader, need, packet_type, u32_at, write_header};
use crate::wire::error::{WireError, WireResult};

/// Feedback message type of application-layer feedback (REMB).
pub const FMT: u8 = 15;

/// True if an AFB body carries the "REMB" identifier.
pub fn is_remb(body: &[u8]) -> bool {
    body.get(8..12) == Some(b"REMB")
}

/// A REMB view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remb<'a> {
    pub sender_ssrc: u32,
    pub media_ssrc: u32,
    pub exponent: u8,
    pub mantissa: u32,
    ssrcs: &'a [u8],
}

impl<'a> Remb<'a> {
    /// Parses the body of a REMB packet.
    pub fn parse(_h: RtcpHeader, body: &'a [u8]) -> WireResult<Remb<'a>> {
        if body.len() < 16 {
            return Err(WireError::Truncated("rtcp remb: fixed part"));
        }
        if !is_remb(body) {
            return Err(WireError::Malformed("rtcp remb: identifier"));
        }
        let n = body[12] as usize;
        let ssrcs = body.get(16..16 + 4 * n).ok_or(WireError::Truncated("rtcp remb: ssrc list"))?;
        Ok(Remb {
            sender_ssrc: u32_at(body, 0),
            media_ssrc: u32_at(body, 4),
            exponent: body[13] >> 2,
            mantissa: u32::from_be_bytes([0, body[13] & 3, body[14], body[15]]),
            ssrcs,
        })
    }

    /// Bitrate in bits per second (mantissa << exponent, saturating at u64::MAX).
    pub fn bitrate(&self) -> u64 {
        let m = self.mantissa as u64;
        if m == 0 {
            0
        } else if m.leading_zeros() < self.exponent as u32 {
            u64::MAX
        } else {
            m << self.exponent
        }
    }

    /// The SSRCs the estimate applies to.
    pub fn ssrcs(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
    }
}

/// Splits a bitrate into (exponent, 18-bit mantissa), rounding down.
pub fn encode_bitrate(bitrate: u64) -> (u8, u32) {
    let bits = 64 - bitrate.leading_zeros();
    let exp = bits.saturating_sub(18);
    (exp as u8, (bitrate >> exp) as u32)
}

/// Writes a REMB and returns its length.
pub fn write(buf: &mut [u8], sender_ssrc: u32, bitrate: u64, ssrcs: &[u32]) -> WireResult<usize> {
    if ssrcs.len() > 255 {
        return Err(WireError::InvalidArgument("rtcp remb: more than 255 ssrcs"));
    }
    let len = HEADER_LEN + 16 + 4 * ssrcs.len();
    need(buf, len, "rtcp remb")?;
    write_header(buf, FMT, packet_type::PSFB, len)?;
    let (exp, mant) = encode_bitrate(bitrate);
    buf[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    buf[8..12].fill(0);
    buf[12..16].copy_from_slice(b"REMB");
    buf[16] = ssrcs.len() as u8;
    buf[17] = (exp << 2) | ((mant >> 16) as u8 & 3);
    buf[18..20].copy_from_slice(&(mant as u16).to_be_bytes());
    for (i, s) in ssrcs.iter().enumerate() {
        buf[20 + 4 * i..24 + 4 * i].copy_from_slice(&s.to_be_bytes());
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::super::{RtcpCompound, RtcpPacket};
    use super::*;

    #[test]
    fn vector_and_round_trip() {
        // From the draft's layout, as libwebrtc sends it: 0x8F 0xCE, len 5, ..., "REMB",
        // 1 ssrc, exp 3, mantissa 0x0C4D0 -> 403,072 bps... computed below.
        let d = [
            0x8f, 0xce, 0x00, 0x05, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, b'R', b'E',
            b'M', b'B', 0x01, 0x0e, 0xc4, 0xd0, 0x12, 0x34, 0x56, 0x78,
        ];
        let c = RtcpCompound::parse(&d).unwrap();
        let Some(Ok(RtcpPacket::Remb(r))) = c.packets().next() else { panic!() };
        assert_eq!(r.exponent, 3);
        assert_eq!(r.mantissa, 0x2c4d0);
        assert_eq!(r.bitrate(), 0x2c4d0 << 3);
        assert_eq!(r.ssrcs().collect::<Vec<_>>(), vec![0x12345678]);
        let mut b = [0u8; 32];
        let n = write(&mut b, 1, r.bitrate(), &[0x12345678]).unwrap();
        assert_eq!(&b[..n], &d[..]);
        assert_eq!(encode_bitrate(0), (0, 0));
        assert_eq!(encode_bitrate((1 << 18) - 1), (0, (1 << 18) - 1));
        let (e, m) = encode_bitrate(u64::MAX);
        assert_eq!((e, m), (46, (1 << 18) - 1));
    }
}
