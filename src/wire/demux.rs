//! First-byte demultiplexing of a datagram (RFC 7983, with RFC 5761 for RTP vs RTCP).
//!
//! | first byte | protocol |
//! |---|---|
//! | 0..=3 | STUN |
//! | 16..=19 | ZRTP (recognised, not supported) |
//! | 20..=63 | DTLS (1.2 records and DTLS 1.3 unified headers) |
//! | 64..=79 | TURN ChannelData |
//! | 128..=191 | RTP or RTCP |
//!
//! RTP vs RTCP (RFC 5761 §4): the second byte of RTCP is the packet type, 192..=223 for every
//! RTCP type that may share a port with RTP (SR 200, RR 201, SDES 202, BYE 203, APP 204,
//! RTPFB 205, PSFB 206, XR 207). In RTP that byte is the marker bit plus the 7-bit payload type,
//! so it reads 192..=223 exactly when M=1 and PT is 64..=95, the payload types RFC 5761 forbids
//! for RTP. The test is therefore on the whole second byte: 192..=223 is RTCP, anything else
//! (including M=0 with PT 64..=95) is RTP.
//!
//! Only the class and a minimal length are checked here; the full parse is the next layer's.

use super::error::{WireError, WireResult};

/// A datagram classified by its first byte, borrowing the whole datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// STUN message (first byte 0..=3), at least the 20-byte header long.
    Stun(&'a [u8]),
    /// DTLS records (first byte 20..=63), at least one byte.
    Dtls(&'a [u8]),
    /// TURN ChannelData (first byte 64..=79), at least the 4-byte header long.
    ChannelData(&'a [u8]),
    /// RTP packet (first byte 128..=191), at least the 12-byte fixed header long.
    Rtp(&'a [u8]),
    /// RTCP packet or compound (first byte 128..=191, second byte 192..=223), at least 4 bytes.
    Rtcp(&'a [u8]),
}

impl<'a> Datagram<'a> {
    /// The datagram bytes, whatever the class.
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Datagram::Stun(b)
            | Datagram::Dtls(b)
            | Datagram::ChannelData(b)
            | Datagram::Rtp(b)
            | Datagram::Rtcp(b) => b,
        }
    }
}

/// True if the second byte of an RTP/RTCP datagram marks RTCP (RFC 5761 §4).
#[inline]
pub fn is_rtcp_packet_type(second_byte: u8) -> bool {
    (192..=223).contains(&second_byte)
}

/// Classifies `buf` by its first byte (RFC 7983) and checks the minimal header length.
#[inline]
pub fn demux(buf: &[u8]) -> WireResult<Datagram<'_>> {
    let Some(&first) = buf.first() else {
        return Err(WireError::Truncated("demux: empty datagram"));
    };
    match first {
        0..=3 => {
            if buf.len() < 20 {
                return Err(WireError::Truncated("demux: STUN header"));
            }
            Ok(Datagram::Stun(buf))
        }
        16..=19 => Err(WireError::Unsupported("demux: ZRTP")),
        20..=63 => Ok(Datagram::Dtls(buf)),
        64..=79 => {
            if buf.len() < 4 {
                return Err(WireError::Truncated("demux: ChannelData header"));
            }
            Ok(Datagram::ChannelData(buf))
        }
        128..=191 => {
            let Some(&second) = buf.get(1) else {
                return Err(WireError::Truncated("demux: RTP/RTCP second byte"));
            };
            if is_rtcp_packet_type(second) {
                if buf.len() < 4 {
                    return Err(WireError::Truncated("demux: RTCP header"));
                }
                Ok(Datagram::Rtcp(buf))
            } else {
                if buf.len() < 12 {
                    return Err(WireError::Truncated("demux: RTP header"));
                }
                Ok(Datagram::Rtp(buf))
            }
        }
        _ => Err(WireError::Malformed("demux: first byte outside RFC 7983 ranges")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut b = [0u8; 32];
        for first in 0..=255u8 {
            b[0] = first;
            b[1] = 0;
            let r = demux(&b);
            match first {
                0..=3 => assert!(matches!(r, Ok(Datagram::Stun(_)))),
                20..=63 => assert!(matches!(r, Ok(Datagram::Dtls(_)))),
                64..=79 => assert!(matches!(r, Ok(Datagram::ChannelData(_)))),
                128..=191 => assert!(matches!(r, Ok(Datagram::Rtp(_)))),
                _ => assert!(r.is_err()),
            }
        }
    }

    #[test]
    fn rtp_vs_rtcp() {
        let mut b = [0x80u8; 12];
        for second in 0..=255u8 {
            b[1] = second;
            let rtcp = matches!(demux(&b), Ok(Datagram::Rtcp(_)));
            assert_eq!(rtcp, (192..=223).contains(&second), "second byte {second}");
        }
        // M=1, PT=96 (VP8 with marker) is RTP: 0xE0 = 224.
        b[1] = 0xE0;
        assert!(matches!(demux(&b), Ok(Datagram::Rtp(_))));
        // M=0, PT=72 stays RTP (RFC 5761 forbids it, but it is not RTCP).
        b[1] = 72;
        assert!(matches!(demux(&b), Ok(Datagram::Rtp(_))));
        b[1] = 200;
        assert!(matches!(demux(&b[..4]), Ok(Datagram::Rtcp(_))));
        b[1] = 96;
        assert_eq!(demux(&b[..11]), Err(WireError::Truncated("demux: RTP header")));
        assert!(demux(&[]).is_err());
    }
}
