//! H.264 RTP payloads (RFC 6184, packetization modes 0 and 1): single NAL unit packets,
//! STAP-A (24) and FU-A (28). STAP-B, MTAP and FU-B (interleaved mode) are refused.
//!
//! Keyframe: the packet carries (or, for FU-A, starts) an IDR slice (5) or an SPS (7).
//! Frame start: a parameter set, SEI or AUD (they lead an access unit), or a slice whose
//! `first_mb_in_slice` is 0 (its ue(v) code is a lone `1` bit, the top bit after the header).
//! `payload_offset` is 0 for single NAL packets (the NAL header is part of the bitstream),
//! 1 for STAP-A and 2 for FU-A (the reconstructed NAL header is in the FU indicator/header).

use super::{CodecError, PacketInfo};
use crate::wire::cursor::Reader;

const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// Does a NAL of `typ` whose first byte after the header is `next` start an access unit?
fn starts_frame(typ: u8, next: Option<u8>) -> bool {
    match typ {
        1 | 5 => next.is_some_and(|b| b & 0x80 != 0),
        6..=9 => true,
        _ => false,
    }
}

fn is_key(typ: u8) -> bool {
    typ == 5 || typ == 7
}

/// Reads the NAL structure (see the module doc); `marker` ends the access unit.
pub fn inspect(payload: &[u8], marker: bool) -> Result<PacketInfo, CodecError> {
    let mut r = Reader::new(payload);
    let hdr = r.u8("h264: NAL header")?;
    if hdr & 0x80 != 0 {
        return Err(CodecError::Malformed("h264: forbidden_zero_bit set"));
    }
    let typ = hdr & 0x1F;
    let mut info = PacketInfo { frame_end: marker, ..Default::default() };
    match typ {
        1..=23 => {
            let next = payload.get(1).copied();
            info.frame_start = starts_frame(typ, next);
            info.keyframe = is_key(typ);
        }
        STAP_A => {
            info.payload_offset = 1;
            let mut first = true;
            while !r.is_empty() {
                let len = r.u16("h264: STAP-A NALU size")? as usize;
                if len == 0 {
                    return Err(CodecError::Malformed("h264: STAP-A empty NAL unit"));
                }
                let nal = r.bytes(len, "h264: STAP-A NAL unit")?;
                let t = nal[0] & 0x1F; // len >= 1 checked above
                if first {
                    info.frame_start = starts_frame(t, nal.get(1).copied());
                    first = false;
                }
                info.keyframe |= is_key(t);
            }
            if first {
                return Err(CodecError::Truncated("h264: STAP-A without NAL units"));
            }
        }
        FU_A => {
            let fu = r.u8("h264: FU header")?;
            info.payload_offset = 2;
            let (s, e) = (fu & 0x80 != 0, fu & 0x40 != 0);
            if s && e {
                return Err(CodecError::Malformed("h264: FU-A with both S and E"));
            }
            let t = fu & 0x1F;
            if s {
                info.frame_start = starts_frame(t, payload.get(2).copied());
                info.keyframe = is_key(t);
            }
        }
        25..=27 | 29 => return Err(CodecError::Unsupported("h264: interleaved packetization")),
        _ => return Err(CodecError::Malformed("h264: NAL unit type 0, 30 or 31")),
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_stap_fu() {
        let sps = [0x67, 0x42, 0xC0, 0x1F];
        let i = inspect(&sps, false).unwrap();
        assert!(i.keyframe && i.frame_start && i.payload_offset == 0);
        // Non-IDR slice, first_mb_in_slice 0, then one that is not first.
        assert!(inspect(&[0x41, 0x9A], true).unwrap().frame_start);
        assert!(!inspect(&[0x41, 0x40], true).unwrap().frame_start);
        // STAP-A: SPS + PPS
        let p = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xCE];
        let i = inspect(&p, false).unwrap();
        assert!(i.keyframe && i.frame_start && i.payload_offset == 1);
        // FU-A start of IDR, then middle.
        let i = inspect(&[0x7C, 0x85, 0x88, 0x84], false).unwrap();
        assert!(i.keyframe && i.frame_start && i.payload_offset == 2);
        let i = inspect(&[0x7C, 0x05, 0x11], false).unwrap();
        assert!(!i.keyframe && !i.frame_start);
    }

    #[test]
    fn refused() {
        assert_eq!(
            inspect(&[0x78, 0, 5, 0x67], false),
            Err(CodecError::Truncated("h264: STAP-A NAL unit"))
        );
        assert!(matches!(inspect(&[0x79], false), Err(CodecError::Unsupported(_))));
        assert!(matches!(inspect(&[0x00], false), Err(CodecError::Malformed(_))));
        assert!(matches!(inspect(&[0xE7], false), Err(CodecError::Malformed(_))));
        assert!(matches!(inspect(&[0x7C, 0xC5], false), Err(CodecError::Malformed(_))));
        assert!(matches!(inspect(&[0x78], false), Err(CodecError::Truncated(_))));
    }
}
