//! VP8 RTP payload descriptor (RFC 7741 §4.2) and the VP8 payload header's P bit (§4.3).
//!
//! ```text
//! X R N S R PID(3) | [I L T K RSV(4)] | [M PictureID(7|15)] | [TL0PICIDX] | [TID(2) Y KEYIDX(5)]
//! ```
//! A keyframe starts where S = 1, PID = 0 and the first byte of the VP8 payload header has
//! P = 0. The picture id is rewritten in place keeping its length (7 or 15 bits).

use super::{CodecError, PacketInfo, PictureId};
use crate::wire::cursor::Reader;

/// Where the optional fields sit, for the parse and the rewriter.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    picture_id_at: Option<usize>,
    tl0_at: Option<usize>,
}

fn parse(payload: &[u8], marker: bool) -> Result<(PacketInfo, Layout), CodecError> {
    let mut r = Reader::new(payload);
    let b0 = r.u8("vp8: descriptor first byte")?;
    let x = b0 & 0x80 != 0;
    let s = b0 & 0x10 != 0;
    let pid = b0 & 0x07;
    let mut info =
        PacketInfo { frame_start: s && pid == 0, frame_end: marker, ..Default::default() };
    let mut lay = Layout::default();
    if x {
        let b1 = r.u8("vp8: extension byte (X)")?;
        let (i, l, t, k) = (b1 & 0x80 != 0, b1 & 0x40 != 0, b1 & 0x20 != 0, b1 & 0x10 != 0);
        if l && !t {
            return Err(CodecError::Malformed("vp8: L set without T (RFC 7741 4.2)"));
        }
        if i {
            lay.picture_id_at = Some(r.pos());
            let m = r.u8("vp8: picture id (I)")?;
            let value = if m & 0x80 != 0 {
                let lo = r.u8("vp8: 15-bit picture id (M)")?;
                (u16::from(m & 0x7F) << 8) | u16::from(lo)
            } else {
                u16::from(m)
            };
            info.picture_id = Some(PictureId { value, long: m & 0x80 != 0 });
        }
        if l {
            lay.tl0_at = Some(r.pos());
            info.tl0picidx = Some(r.u8("vp8: TL0PICIDX (L)")?);
        }
        if t || k {
            let b = r.u8("vp8: TID/Y/KEYIDX (T|K)")?;
            if t {
                info.temporal_id = Some(b >> 6);
                info.layer_sync = b & 0x20 != 0;
            }
        }
    }
    info.payload_offset = r.pos();
    if info.frame_start {
        let h = r.u8("vp8: payload header at frame start")?;
        info.keyframe = h & 0x01 == 0;
        info.inter_predicted = !info.keyframe;
    }
    Ok((info, lay))
}

/// Reads the descriptor (see the module doc); `marker` is the RTP marker (end of frame).
pub fn inspect(payload: &[u8], marker: bool) -> Result<PacketInfo, CodecError> {
    parse(payload, marker).map(|(i, _)| i)
}

/// Rewrites the picture id (and TL0PICIDX when `Some` and the descriptor has one) in place,
/// keeping the descriptor's length: a 7-bit id gets `picture_id % 128`, a 15-bit one
/// `picture_id % 32768`. Fails when the payload does not parse or carries no picture id.
pub fn rewrite_picture_id(
    payload: &mut [u8],
    picture_id: u16,
    tl0picidx: Option<u8>,
) -> Result<(), CodecError> {
    let (info, lay) = parse(payload, false)?;
    let (Some(at), Some(pic)) = (lay.picture_id_at, info.picture_id) else {
        return Err(CodecError::InvalidArgument("vp8: no picture id to rewrite (I clear)"));
    };
    write_picture_id(payload, at, pic.long, picture_id)?;
    if let (Some(at), Some(v)) = (lay.tl0_at, tl0picidx) {
        *payload.get_mut(at).ok_or(CodecError::Truncated("vp8: TL0PICIDX"))? = v;
    }
    Ok(())
}

/// Writes a 7- or 15-bit picture id (with its M bit) at `at`; shared with VP9.
pub(super) fn write_picture_id(
    payload: &mut [u8],
    at: usize,
    long: bool,
    id: u16,
) -> Result<(), CodecError> {
    if long {
        let v = id & 0x7FFF;
        let dst =
            payload.get_mut(at..at.saturating_add(2)).ok_or(CodecError::Truncated("picture id"))?;
        dst[0] = 0x80 | (v >> 8) as u8;
        dst[1] = v as u8;
    } else {
        *payload.get_mut(at).ok_or(CodecError::Truncated("picture id"))? = (id & 0x7F) as u8;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_with_all_fields() {
        // X S PID0 | I L T K | M 0x1234 | TL0 7 | TID 2 Y KEYIDX 3 | payload header P=0
        let p = [0x90, 0xF0, 0x92, 0x34, 7, 0b1010_0011, 0x10, 0x02];
        let i = inspect(&p, true).unwrap();
        assert_eq!(i.payload_offset, 6);
        assert!(i.frame_start && i.frame_end && i.keyframe && i.layer_sync);
        assert_eq!(i.picture_id, Some(PictureId { value: 0x1234, long: true }));
        assert_eq!(i.tl0picidx, Some(7));
        assert_eq!(i.temporal_id, Some(2));
    }

    #[test]
    fn delta_and_continuation() {
        // Delta frame start: P bit set in the payload header.
        let p = [0x90, 0x80, 0x05, 0x01];
        let i = inspect(&p, false).unwrap();
        assert!(i.frame_start && !i.keyframe && i.inter_predicted);
        assert_eq!(i.picture_id, Some(PictureId { value: 5, long: false }));
        // Continuation (S clear): no keyframe even if the byte looks like one.
        let p = [0x80, 0x80, 0x05, 0x00];
        let i = inspect(&p, false).unwrap();
        assert!(!i.frame_start && !i.keyframe);
        // S set but PID 1: not a frame start.
        assert!(!inspect(&[0x11, 0x00], false).unwrap().frame_start);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(inspect(&[], false), Err(CodecError::Truncated("vp8: descriptor first byte")));
        assert_eq!(inspect(&[0x80], false), Err(CodecError::Truncated("vp8: extension byte (X)")));
        assert_eq!(
            inspect(&[0x80, 0x80, 0x80], false),
            Err(CodecError::Truncated("vp8: 15-bit picture id (M)"))
        );
        assert_eq!(
            inspect(&[0x10], false),
            Err(CodecError::Truncated("vp8: payload header at frame start"))
        );
        assert!(matches!(inspect(&[0x80, 0x40, 0], false), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn rewrite_keeps_length() {
        let mut p = [0x90, 0xE0, 0x05, 9, 0x40, 0x00];
        rewrite_picture_id(&mut p, 300, Some(42)).unwrap();
        let i = inspect(&p, false).unwrap();
        assert_eq!(i.picture_id, Some(PictureId { value: 300 % 128, long: false }));
        assert_eq!(i.tl0picidx, Some(42));
        assert_eq!(i.payload_offset, 5);
        let mut p = [0x90, 0x80, 0x80, 0x01, 0x00];
        rewrite_picture_id(&mut p, 0xFFFF, None).unwrap();
        assert_eq!(
            inspect(&p, false).unwrap().picture_id,
            Some(PictureId { value: 0x7FFF, long: true })
        );
        let mut p = [0x10, 0x00];
        assert!(rewrite_picture_id(&mut p, 1, None).is_err());
    }
}
