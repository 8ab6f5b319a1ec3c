//! AV1 RTP payloads (AV1 RTP specification §4.4): the one-byte aggregation header and a
//! bounded walk of the OBU elements it announces.
//!
//! ```text
//! Z Y W(2) N RES(3) | ([leb128 length] OBU element)*
//! ```
//! Z: the first element continues an OBU of the previous packet; Y: the last one continues in
//! the next; W: element count (0 = every element has a length); N: first packet of a coded
//! video sequence. Keyframe: N, or a sequence header OBU as the first (whole) element.
//! Frame start: the first element starts a sequence header, temporal delimiter, frame
//! header, metadata or frame OBU. Frame end: the marker with Y clear. Temporal and spatial ids
//! come from the first OBU extension header seen; SVC streams carry them in the Dependency
//! Descriptor ([`super::av1_dd`] when present), which the caller should prefer.

use super::{CodecError, PacketInfo};
use crate::wire::cursor::Reader;

const OBU_SEQUENCE_HEADER: u8 = 1;

/// An unsigned LEB128 of at most 8 bytes (AV1 §4.10.5), as a `usize` length.
fn leb128(r: &mut Reader<'_>) -> Result<usize, CodecError> {
    let mut v: u64 = 0;
    for i in 0..8 {
        let b = r.u8("av1: leb128 element length")?;
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return usize::try_from(v).map_err(|_| CodecError::Malformed("av1: leb128 too large"));
        }
    }
    Err(CodecError::Malformed("av1: leb128 longer than 8 bytes"))
}

/// Reads the aggregation header and walks the elements (see the module doc).
pub fn inspect(payload: &[u8], marker: bool) -> Result<PacketInfo, CodecError> {
    let mut r = Reader::new(payload);
    let agg = r.u8("av1: aggregation header")?;
    let z = agg & 0x80 != 0;
    let y = agg & 0x40 != 0;
    let w = (agg >> 4) & 0x03;
    let n = agg & 0x08 != 0;
    let mut info = PacketInfo {
        payload_offset: 1,
        frame_end: marker && !y,
        keyframe: n,
        ..Default::default()
    };
    if z && n {
        return Err(CodecError::Malformed("av1: N set on a continuation (Z)"));
    }
    let mut idx: u8 = 0;
    let mut seen_ids = false;
    while !r.is_empty() {
        idx = idx.saturating_add(1);
        let last_without_len = w != 0 && idx == w;
        let len = if last_without_len { r.remaining() } else { leb128(&mut r)? };
        if len == 0 {
            return Err(CodecError::Malformed("av1: empty OBU element"));
        }
        let elem = r.bytes(len, "av1: OBU element")?;
        let continuation = idx == 1 && z;
        if !continuation {
            let h = elem[0]; // len >= 1 checked above
            if h & 0x80 != 0 {
                return Err(CodecError::Malformed("av1: OBU forbidden bit set"));
            }
            let typ = (h >> 3) & 0x0F;
            if idx == 1 {
                info.frame_start = matches!(typ, 1 | 2 | 3 | 5 | 6);
                info.keyframe |= typ == OBU_SEQUENCE_HEADER;
            }
            if h & 0x04 != 0 && !seen_ids {
                let ext = *elem.get(1).ok_or(CodecError::Truncated("av1: OBU extension header"))?;
                info.temporal_id = Some(ext >> 5);
                info.spatial_id = Some((ext >> 3) & 0x03);
                seen_ids = true;
            }
        }
        if w != 0 && idx > w {
            return Err(CodecError::Malformed("av1: more OBU elements than W"));
        }
    }
    if idx == 0 && payload.len() > 1 {
        return Err(CodecError::Malformed("av1: no OBU element"));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_sequence_with_ids() {
        // N, W=2: sequence header (len 3) then a frame OBU with extension (tid 1 sid 2).
        let p = [0x28, 3, 0x08, 0x00, 0x00, 0x34, 0b0011_0000, 0xAA];
        let i = inspect(&p, true).unwrap();
        assert!(i.keyframe && i.frame_start && i.frame_end);
        assert_eq!((i.temporal_id, i.spatial_id), (Some(1), Some(2)));
        assert_eq!(i.payload_offset, 1);
        // Sequence header at the start without N is still a keyframe.
        assert!(inspect(&[0x10, 0x08, 0, 0], false).unwrap().keyframe);
    }

    #[test]
    fn continuation_and_errors() {
        // Z Y W=1: middle of a fragmented OBU.
        let i = inspect(&[0xD0, 0xFF, 0xFF], true).unwrap();
        assert!(!i.frame_start && !i.keyframe && !i.frame_end);
        assert_eq!(inspect(&[0x00, 5, 1], false), Err(CodecError::Truncated("av1: OBU element")));
        assert!(matches!(inspect(&[0x10, 0x88], false), Err(CodecError::Malformed(_))));
        assert!(matches!(inspect(&[0x88, 1], false), Err(CodecError::Malformed(_))));
        assert!(matches!(inspect(&[0x00, 0], false), Err(CodecError::Malformed(_))));
        assert!(matches!(
            inspect(&[0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 1], false),
            Err(CodecError::Malformed(_))
        ));
    }
}
