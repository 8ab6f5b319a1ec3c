//! VP9 RTP payload descriptor (RFC 9628 §4.2), flexible and non-flexible modes, with the
//! scalability structure (SS, §4.2.1).
//!
//! ```text
//! I P L F B E V Z | [M PictureID(7|15)] | [TID(3) U SID(3) D] [TL0PICIDX if F=0]
//! | [P_DIFF(7) N]{1..3 if F=1 and P=1} | [SS if V=1]
//! ```
//! B / E mark the first / last packet of a layer frame; the RTP marker ends the picture. A key
//! picture starts where B = 1, P = 0, the spatial id is 0 (or absent) and the VP9 frame header
//! that follows, if it is one, says KEY_FRAME.

use super::{CodecError, PacketInfo, PictureId, Vp9Scalability};
use crate::wire::cursor::Reader;

#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    picture_id_at: Option<usize>,
    tl0_at: Option<usize>,
}

fn parse(payload: &[u8]) -> Result<(PacketInfo, Layout), CodecError> {
    let mut r = Reader::new(payload);
    let b0 = r.u8("vp9: descriptor first byte")?;
    let bit = |n: u8| b0 & (0x80 >> n) != 0;
    let (i, p, l, f, b, e, v) = (bit(0), bit(1), bit(2), bit(3), bit(4), bit(5), bit(6));
    let mut info = PacketInfo {
        frame_start: b,
        frame_end: e,
        inter_predicted: p,
        flexible: f,
        ..Default::default()
    };
    let mut lay = Layout::default();
    if i {
        lay.picture_id_at = Some(r.pos());
        let m = r.u8("vp9: picture id (I)")?;
        let value = if m & 0x80 != 0 {
            let lo = r.u8("vp9: 15-bit picture id (M)")?;
            (u16::from(m & 0x7F) << 8) | u16::from(lo)
        } else {
            u16::from(m)
        };
        info.picture_id = Some(PictureId { value, long: m & 0x80 != 0 });
    } else if f {
        return Err(CodecError::Malformed("vp9: flexible mode without picture id (F without I)"));
    }
    if l {
        let li = r.u8("vp9: layer indices (L)")?;
        info.temporal_id = Some(li >> 5);
        info.layer_sync = li & 0x10 != 0;
        info.spatial_id = Some((li >> 1) & 0x07);
        info.inter_layer_dependent = li & 0x01 != 0;
        if !f {
            lay.tl0_at = Some(r.pos());
            info.tl0picidx = Some(r.u8("vp9: TL0PICIDX (L, F=0)")?);
        }
    }
    if f && p {
        let mut n = 0;
        loop {
            let d = r.u8("vp9: P_DIFF (F, P)")?;
            n += 1;
            if d & 0x01 == 0 {
                break;
            }
            if n == 3 {
                return Err(CodecError::Malformed("vp9: more than 3 reference indices"));
            }
        }
    }
    if v {
        info.scalability = Some(scalability(&mut r)?);
    }
    info.payload_offset = r.pos();
    info.keyframe = b
        && !p
        && info.spatial_id.unwrap_or(0) == 0
        && bitstream_keyframe(payload.get(info.payload_offset).copied()) != Some(false);
    Ok((info, lay))
}

/// The VP9 uncompressed header's first byte (VP9 bitstream §6.2): frame_marker (2 bits, 0b10),
/// profile (2 bits, a reserved zero bit for profile 3), show_existing_frame, frame_type (0 =
/// KEY_FRAME). `Some(true)` for a key frame, `Some(false)` for anything else, `None` when the
/// byte is missing or is no frame header (then the descriptor's P bit decides alone). Some
/// packetizers (ffmpeg's) never set P, so the header is what tells their delta frames apart.
fn bitstream_keyframe(b: Option<u8>) -> Option<bool> {
    let b = b?;
    if b >> 6 != 0b10 {
        return None;
    }
    let profile = ((b >> 4) & 1) << 1 | ((b >> 5) & 1);
    let (show_existing, frame_type) =
        if profile == 3 { ((b >> 2) & 1, (b >> 1) & 1) } else { ((b >> 3) & 1, (b >> 2) & 1) };
    Some(show_existing == 0 && frame_type == 0)
}

fn scalability(r: &mut Reader<'_>) -> Result<Vp9Scalability, CodecError> {
    let h = r.u8("vp9: SS header (V)")?;
    let n_s = (h >> 5) + 1;
    let y = h & 0x10 != 0;
    let g = h & 0x08 != 0;
    let mut ss = Vp9Scalability { spatial_layers: n_s, has_resolutions: y, ..Default::default() };
    if y {
        for res in ss.resolutions.iter_mut().take(n_s as usize) {
            let w = r.u16("vp9: SS width")?;
            let hgt = r.u16("vp9: SS height")?;
            *res = (w, hgt);
        }
    }
    if g {
        let n_g = r.u8("vp9: SS N_G")?;
        ss.picture_group_len = Some(n_g);
        for _ in 0..n_g {
            let pg = r.u8("vp9: SS picture group entry")?;
            let refs = (pg >> 2) & 0x03;
            r.skip(refs as usize, "vp9: SS picture group P_DIFF")?;
        }
    }
    Ok(ss)
}

/// Reads the descriptor (see the module doc). `marker` ends the picture, not the layer frame:
/// `frame_end` is the E bit.
pub fn inspect(payload: &[u8], _marker: bool) -> Result<PacketInfo, CodecError> {
    parse(payload).map(|(i, _)| i)
}

/// Rewrites the picture id (and TL0PICIDX when `Some` and the descriptor carries one, i.e.
/// non-flexible mode with L) in place, keeping the id's length (7 or 15 bits, wrapping).
pub fn rewrite_picture_id(
    payload: &mut [u8],
    picture_id: u16,
    tl0picidx: Option<u8>,
) -> Result<(), CodecError> {
    let (info, lay) = parse(payload)?;
    let (Some(at), Some(pic)) = (lay.picture_id_at, info.picture_id) else {
        return Err(CodecError::InvalidArgument("vp9: no picture id to rewrite (I clear)"));
    };
    super::vp8::write_picture_id(payload, at, pic.long, picture_id)?;
    if let (Some(at), Some(v)) = (lay.tl0_at, tl0picidx) {
        *payload.get_mut(at).ok_or(CodecError::Truncated("vp9: TL0PICIDX"))? = v;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_flexible_key_picture_with_ss() {
        // I L B V | M id 0x0102 | TID0 U SID0 D0 | TL0 5 | SS: N_S=2 (3 layers) Y G, 3 sizes,
        // N_G 1: TID0 U R1, P_DIFF 1
        let mut p = vec![0b1010_1010, 0x81, 0x02, 0b0001_0000, 5, 0b0101_1000];
        for (w, h) in [(320u16, 180u16), (640, 360), (1280, 720)] {
            p.extend_from_slice(&w.to_be_bytes());
            p.extend_from_slice(&h.to_be_bytes());
        }
        // Then the frame: an uncompressed header of a profile 0 key frame (0b10_0_0_0_0_..).
        p.extend_from_slice(&[1, 0b0001_0100, 1, 0x82]);
        let i = inspect(&p, false).unwrap();
        assert!(i.keyframe && i.frame_start && !i.frame_end && i.layer_sync);
        assert_eq!(i.picture_id, Some(PictureId { value: 0x0102, long: true }));
        assert_eq!((i.temporal_id, i.spatial_id, i.tl0picidx), (Some(0), Some(0), Some(5)));
        let ss = i.scalability.unwrap();
        assert_eq!(ss.spatial_layers, 3);
        assert_eq!(ss.resolutions[2], (1280, 720));
        assert_eq!(ss.picture_group_len, Some(1));
        assert_eq!(i.payload_offset, p.len() - 1);
    }

    #[test]
    fn flexible_delta_upper_layer() {
        // I P L F B E | id 7 | TID2 SID1 D | P_DIFF 1 N, P_DIFF 2
        let p = [0b1111_1100, 7, 0b0100_0011, 0x03, 0x04, 0xAB];
        let i = inspect(&p, true).unwrap();
        assert!(!i.keyframe && i.inter_predicted && i.flexible && i.inter_layer_dependent);
        assert_eq!((i.temporal_id, i.spatial_id, i.tl0picidx), (Some(2), Some(1), None));
        assert_eq!(i.payload_offset, 5);
        // Intra-only upper spatial layer frame is not a keyframe.
        let p = [0b1010_1100, 7, 0b0000_0011, 0, 0xAB];
        assert!(!inspect(&p, true).unwrap().keyframe);
        // Four reference indices are one too many.
        let p = [0b1101_1000, 7, 0x03, 0x03, 0x03, 0x02];
        assert!(matches!(inspect(&p, true), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn the_frame_header_overrules_a_missing_p_bit() {
        // B set, P clear (as ffmpeg writes every frame), then a delta frame's header
        // (frame_type 1), then a key frame's, then no frame marker (descriptor decides).
        assert!(!inspect(&[0x08, 0x86, 0x00], false).unwrap().keyframe);
        assert!(inspect(&[0x08, 0x82, 0x49], false).unwrap().keyframe);
        assert!(inspect(&[0x08, 0x00], false).unwrap().keyframe);
        assert!(inspect(&[0x08], false).unwrap().keyframe);
        // Profile 3: frame_type is one bit further.
        assert!(!inspect(&[0x08, 0xB2], false).unwrap().keyframe);
        assert!(inspect(&[0x08, 0xB0], false).unwrap().keyframe);
        // show_existing_frame: a repeat, not a key frame.
        assert!(!inspect(&[0x08, 0x88], false).unwrap().keyframe);
    }

    #[test]
    fn rewrite() {
        let mut p = [0b1010_1000, 0x05, 0x00, 9, 0xAA];
        rewrite_picture_id(&mut p, 131, Some(10)).unwrap();
        let i = inspect(&p, false).unwrap();
        assert_eq!(i.picture_id, Some(PictureId { value: 3, long: false }));
        assert_eq!(i.tl0picidx, Some(10));
        assert!(rewrite_picture_id(&mut [0x08, 0], 1, None).is_err());
        assert_eq!(inspect(&[0xA0], false), Err(CodecError::Truncated("vp9: picture id (I)")));
    }
}
