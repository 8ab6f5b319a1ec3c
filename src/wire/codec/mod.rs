//! Video payload formats (sans-IO, allocation-free): what an SFU needs to know about one RTP
//! payload to forward, drop or depacketize it, and in-place rewriters for the ids it changes.
//!
//! [`inspect`] reads the payload descriptor of VP8 (RFC 7741), VP9 (RFC 9628), H.264
//! (RFC 6184: single NAL, STAP-A, FU-A) or AV1 (AV1 RTP spec, aggregation header) and returns a
//! [`PacketInfo`]: where the codec bitstream starts, frame start/end, keyframe, temporal and
//! spatial ids, picture id and TL0PICIDX. AV1 layer ids come from the Dependency Descriptor
//! header extension ([`av1_dd`]) when the publisher sends it, not from the payload.
//!
//! Written by hand: no maintained crate parses these descriptors without owning the packet
//! (the `rtp` and `str0m` depacketizers allocate frames and hide the descriptor fields).
//! Reads go through the bounded wire cursor; errors are [`CodecError`] naming the rule.

pub mod av1;
pub mod av1_dd;
pub mod h264;
pub mod vp8;
pub mod vp9;

/// Why a payload was refused: the wire error enum (peer garbage vs caller misuse), whose
/// context string names the descriptor field or rule that failed.
pub type CodecError = crate::wire::WireError;

/// The payload format of an RTP stream, from the SDP `a=rtpmap` encoding name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Codec {
    Vp8,
    Vp9,
    H264,
    Av1,
    Opus,
    /// Anything else (audio codecs, RTX, RED, ulpfec): opaque payload.
    Other,
}

impl Codec {
    /// From the `a=rtpmap` encoding name, case-insensitively (`VP8`, `vp9`, `H264`, `AV1`,
    /// `opus`); unknown names are [`Codec::Other`].
    pub fn from_sdp_name(name: &str) -> Codec {
        let n = name.trim();
        if n.eq_ignore_ascii_case("vp8") {
            Codec::Vp8
        } else if n.eq_ignore_ascii_case("vp9") {
            Codec::Vp9
        } else if n.eq_ignore_ascii_case("h264") {
            Codec::H264
        } else if n.eq_ignore_ascii_case("av1") || n.eq_ignore_ascii_case("av1x") {
            Codec::Av1
        } else if n.eq_ignore_ascii_case("opus") {
            Codec::Opus
        } else {
            Codec::Other
        }
    }

    /// True for the video codecs [`inspect`] parses.
    pub fn is_video(self) -> bool {
        matches!(self, Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1)
    }
}

/// A VP8 or VP9 picture id as carried: 7-bit (`long == false`) or 15-bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PictureId {
    pub value: u16,
    pub long: bool,
}

impl PictureId {
    /// The modulus of the id's field: 128 or 32768.
    pub fn modulus(self) -> u16 {
        if self.long { 0x8000 } else { 0x80 }
    }
}

/// The VP9 scalability structure (SS, RFC 9628 §4.2.1): spatial layer count and resolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vp9Scalability {
    /// Number of spatial layers (N_S + 1, 1..=8).
    pub spatial_layers: u8,
    /// `(width, height)` per spatial layer when the Y bit is set, else zeros.
    pub resolutions: [(u16, u16); 8],
    pub has_resolutions: bool,
    /// Number of pictures in the picture group (N_G) when the G bit is set.
    pub picture_group_len: Option<u8>,
}

/// What [`inspect`] learnt about one RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketInfo {
    /// Start of the codec bitstream after the payload descriptor (`<= payload.len()`).
    pub payload_offset: usize,
    /// First packet of a frame (VP8 S && PID 0; VP9 B: of a layer frame; H.264 first slice
    /// of a picture or a parameter set / SEI / AUD ahead of it; AV1 see [`av1`]).
    pub frame_start: bool,
    /// Last packet of a frame (VP8/H.264/AV1: the RTP marker; VP9: the E bit of the layer
    /// frame, while the marker ends the whole picture).
    pub frame_end: bool,
    /// This packet starts a keyframe / IDR / key picture (VP9: of the base spatial layer).
    pub keyframe: bool,
    pub temporal_id: Option<u8>,
    pub spatial_id: Option<u8>,
    /// Layer sync / switching-up point: VP8 Y bit, VP9 U bit.
    pub layer_sync: bool,
    /// AV1 Dependency Descriptor: the highest temporal id of a decode target this frame is a
    /// switch point for (DTI `Switch`): from here on that target's frames decode. Set by
    /// [`av1_dd::DdPacket::switch_temporal`]'s caller; `None` for other codecs.
    pub switch_temporal: Option<u8>,
    pub picture_id: Option<PictureId>,
    pub tl0picidx: Option<u8>,
    /// The frame uses inter-picture prediction (VP9 P bit; VP8 a non-key frame start).
    pub inter_predicted: bool,
    /// VP9: the layer frame depends on the spatial layer below (D bit).
    pub inter_layer_dependent: bool,
    /// VP9 flexible mode (F bit).
    pub flexible: bool,
    /// VP9 scalability structure when the packet carries one (V bit).
    pub scalability: Option<Vp9Scalability>,
}

/// Reads the payload descriptor of `payload` for `codec`; `marker` is the RTP marker bit.
/// Opus is always a whole, independently decodable frame; `Other` says nothing but the marker.
pub fn inspect(codec: Codec, payload: &[u8], marker: bool) -> Result<PacketInfo, CodecError> {
    let info = match codec {
        Codec::Vp8 => vp8::inspect(payload, marker)?,
        Codec::Vp9 => vp9::inspect(payload, marker)?,
        Codec::H264 => h264::inspect(payload, marker)?,
        Codec::Av1 => av1::inspect(payload, marker)?,
        Codec::Opus => PacketInfo {
            frame_start: true,
            frame_end: true,
            keyframe: true,
            ..PacketInfo::default()
        },
        Codec::Other => PacketInfo { frame_end: marker, ..PacketInfo::default() },
    };
    debug_assert!(info.payload_offset <= payload.len());
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Codec::from_sdp_name("VP8"), Codec::Vp8);
        assert_eq!(Codec::from_sdp_name("vp9"), Codec::Vp9);
        assert_eq!(Codec::from_sdp_name("H264"), Codec::H264);
        assert_eq!(Codec::from_sdp_name("AV1"), Codec::Av1);
        assert_eq!(Codec::from_sdp_name("opus"), Codec::Opus);
        assert_eq!(Codec::from_sdp_name("rtx"), Codec::Other);
    }

    #[test]
    fn opus_and_other() {
        let i = inspect(Codec::Opus, &[1, 2], false).unwrap();
        assert!(i.keyframe && i.frame_start && i.frame_end);
        let i = inspect(Codec::Other, &[], true).unwrap();
        assert!(!i.keyframe && i.frame_end && i.payload_offset == 0);
    }
}
