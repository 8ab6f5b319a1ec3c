//! Depacketizers: RTP payloads of one track, in sequence order, into whole frames (samples)
//! as Matroska stores them.
//!
//! - H.264 (RFC 6184): single NAL units, STAP-A, FU-A into length-prefixed (4-byte, AVCC)
//!   samples; SPS and PPS are kept for `avcC` (and stay in the samples, so a mid-stream SPS
//!   change still decodes); a frame with an IDR slice is a keyframe. STAP-B, MTAP, FU-B
//!   (interleaved mode, never used by WebRTC) make the frame broken.
//! - AV1 (the AOM "RTP Payload Format for AV1"): the aggregation header (Z, Y, W, N), OBU
//!   elements reassembled across packets, each OBU written back with its `obu_size` field
//!   (low-overhead bitstream format); temporal delimiters, tile lists and padding dropped;
//!   the sequence header kept for `av1C`. A keyframe is a temporal unit with a sequence header
//!   whose first frame header says KEY_FRAME.
//! - Opus (RFC 7587): one packet is one frame.
//! - VP8 (RFC 7741) and VP9 (RFC 9628): the payload descriptor is read by
//!   [`crate::wire::codec::inspect`] (payload offset, frame start, keyframe); the bitstream
//!   after it is concatenated. A VP9 picture of several spatial layers becomes one superframe
//!   (the layer frames plus a superframe index), as WebM stores VP9 SVC.
//!
//! A frame ends at the marker bit or when the timestamp changes. After a gap
//! (`lost_before`) the frame being assembled and the one the next packet belongs to are
//! dropped and counted ([`Depacketizer::frames_lost`]); for video the recorder then waits for
//! a keyframe. Frames are capped at [`MAX_FRAME`] bytes.

use super::bits::{Av1SeqInfo, HeaderError, av1_sequence_header, h264_sps, vp9_keyframe_size};

/// Largest frame assembled; a bigger one is dropped as broken.
pub const MAX_FRAME: usize = 8 << 20;

pub use crate::wire::codec::Codec;
use crate::wire::codec::inspect;

/// The RTP clock rate of a codec (48 kHz for Opus, 90 kHz for video).
pub fn clock_rate(codec: Codec) -> u32 {
    match codec {
        Codec::Opus => 48_000,
        _ => 90_000,
    }
}

/// One whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// RTP timestamp.
    pub timestamp: u32,
    /// A keyframe (always true for audio).
    pub keyframe: bool,
    /// The sample as Matroska stores it.
    pub data: Vec<u8>,
}

/// Something of note the depacketizer saw (drained by the recorder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepackNote {
    /// A frame was dropped (a gap, a broken or unsupported packet).
    FrameLost,
    /// A new SPS differing from the first one (H.264): kept in-band, `avcC` keeps the first.
    SpsChanged,
}

#[derive(Debug, Default)]
struct H264State {
    sps: Option<Vec<u8>>,
    pps: Option<Vec<u8>>,
    /// Offset of the length prefix of a FU-A NAL being reassembled.
    fu_at: Option<usize>,
}

#[derive(Debug, Default)]
struct VpxState {
    /// Start offsets of the VP9 layer frames of the picture being assembled.
    layer_starts: Vec<usize>,
    /// The first packet of the frame was seen (S / B bit).
    started: bool,
}

#[derive(Debug, Default)]
struct Av1State {
    seq: Option<(Vec<u8>, Av1SeqInfo)>,
    /// An OBU element continued in the next packet.
    partial: Vec<u8>,
    in_partial: bool,
    seen_seq_in_tu: bool,
    first_frame_key: Option<bool>,
}

/// Frame assembly for one track.
#[derive(Debug)]
pub struct Depacketizer {
    codec: Codec,
    cur: Option<u32>,
    buf: Vec<u8>,
    broken: bool,
    keyframe: bool,
    h264: H264State,
    av1: Av1State,
    vpx: VpxState,
    frames: Vec<Frame>,
    notes: Vec<DepackNote>,
    frames_lost: u64,
}

/// Appends `v` as LEB128 (AV1 OBU sizes).
pub fn write_leb128(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Reads a LEB128 (at most 8 bytes) from the front of `data`: (value, bytes used).
pub fn read_leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut v: u64 = 0;
    for (i, &b) in data.iter().take(8).enumerate() {
        v |= u64::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return usize::try_from(v).ok().map(|v| (v, i + 1));
        }
    }
    None
}

impl Depacketizer {
    /// A depacketizer for `codec`.
    pub fn new(codec: Codec) -> Self {
        Depacketizer {
            codec,
            cur: None,
            buf: Vec::new(),
            broken: false,
            keyframe: false,
            h264: H264State::default(),
            av1: Av1State::default(),
            vpx: VpxState::default(),
            frames: Vec::new(),
            notes: Vec::new(),
            frames_lost: 0,
        }
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Frames dropped so far.
    pub fn frames_lost(&self) -> u64 {
        self.frames_lost
    }

    /// The first SPS and the latest PPS (H.264).
    pub fn h264_parameter_sets(&self) -> Option<(&[u8], &[u8])> {
        Some((self.h264.sps.as_deref()?, self.h264.pps.as_deref()?))
    }

    /// The sequence header OBU (with its header and size field) and what it says (AV1).
    pub fn av1_sequence_header(&self) -> Option<(&[u8], Av1SeqInfo)> {
        self.av1.seq.as_ref().map(|(b, i)| (b.as_slice(), *i))
    }

    /// The next whole frame.
    pub fn poll_frame(&mut self) -> Option<Frame> {
        if self.frames.is_empty() { None } else { Some(self.frames.remove(0)) }
    }

    /// The next note.
    pub fn poll_note(&mut self) -> Option<DepackNote> {
        self.notes.pop()
    }

    fn start(&mut self, ts: u32) {
        self.cur = Some(ts);
        self.buf.clear();
        self.broken = false;
        self.keyframe = self.codec == Codec::Opus;
        self.h264.fu_at = None;
        self.av1.partial.clear();
        self.av1.in_partial = false;
        self.av1.seen_seq_in_tu = false;
        self.av1.first_frame_key = None;
        self.vpx.layer_starts.clear();
        self.vpx.started = false;
    }

    fn finish(&mut self) {
        let Some(ts) = self.cur.take() else { return };
        if self.h264.fu_at.is_some() || self.av1.in_partial {
            self.broken = true;
        }
        if self.codec == Codec::Av1 {
            self.keyframe = self.av1.seen_seq_in_tu && self.av1.first_frame_key == Some(true);
        }
        if self.codec == Codec::Vp9 && self.vpx.layer_starts.len() > 1 && !self.broken {
            self.broken = !self.vp9_superframe();
        }
        // Frames not drained (at most 64 held) count as lost.
        if self.broken || (!self.buf.is_empty() && self.frames.len() >= 64) {
            self.frames_lost += 1;
            if self.notes.len() < 64 {
                self.notes.push(DepackNote::FrameLost);
            }
        } else if !self.buf.is_empty() {
            self.frames.push(Frame {
                timestamp: ts,
                keyframe: self.keyframe,
                data: std::mem::take(&mut self.buf),
            });
        }
        self.buf.clear();
    }

    /// Takes the next packet of the track in sequence order; `lost_before` when packets
    /// before it were given up on.
    pub fn push(&mut self, timestamp: u32, marker: bool, payload: &[u8], lost_before: bool) {
        if self.cur != Some(timestamp) {
            if lost_before && self.cur.is_some() {
                self.broken = true;
            }
            self.finish();
            self.start(timestamp);
            if lost_before && self.codec != Codec::Opus {
                // The lost packets may have been this frame's first ones.
                self.broken = true;
            }
        } else if lost_before {
            self.broken = true;
        }
        if !self.broken {
            let r = match self.codec {
                Codec::H264 => self.push_h264(payload),
                Codec::Av1 => self.push_av1(payload),
                Codec::Opus => {
                    self.buf.extend_from_slice(payload);
                    Ok(())
                }
                Codec::Vp8 | Codec::Vp9 => self.push_vpx(payload, marker),
                Codec::Other => Err(HeaderError::Malformed("not a recordable codec")),
            };
            if r.is_err() || self.buf.len() > MAX_FRAME {
                self.broken = true;
            }
        }
        if marker || self.codec == Codec::Opus {
            self.finish();
        }
    }

    fn push_vpx(&mut self, p: &[u8], marker: bool) -> Result<(), HeaderError> {
        let info =
            inspect(self.codec, p, marker).map_err(|e| HeaderError::Malformed(e.context()))?;
        let data = p.get(info.payload_offset..).ok_or(HeaderError::Truncated("payload"))?;
        if info.frame_start {
            if !self.vpx.started {
                // VP9: the descriptor's P bit is not always set by senders (ffmpeg leaves it
                // 0); the uncompressed header's frame_type decides.
                self.keyframe = info.keyframe
                    && (self.codec != Codec::Vp9 || matches!(vp9_keyframe_size(data), Ok(Some(_))));
            }
            self.vpx.started = true;
            if self.codec == Codec::Vp9 {
                if self.vpx.layer_starts.len() >= 8 {
                    return Err(HeaderError::Malformed("vp9: more than 8 layer frames"));
                }
                self.vpx.layer_starts.push(self.buf.len());
            }
        } else if !self.vpx.started {
            return Err(HeaderError::Malformed("frame without its first packet"));
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Appends the VP9 superframe index (VP9 bitstream spec, Annex B) over the layer frames.
    fn vp9_superframe(&mut self) -> bool {
        let n = self.vpx.layer_starts.len();
        let mut sizes = [0usize; 8];
        for (i, &start) in self.vpx.layer_starts.iter().enumerate() {
            let end = self.vpx.layer_starts.get(i + 1).copied().unwrap_or(self.buf.len());
            sizes[i] = end.saturating_sub(start);
        }
        let max = sizes[..n].iter().copied().max().unwrap_or(0);
        let mag = match max {
            0..=0xFF => 1,
            0x100..=0xFFFF => 2,
            0x1_0000..=0xFF_FFFF => 3,
            _ => 4,
        };
        let marker = 0xC0 | ((mag as u8 - 1) << 3) | (n as u8 - 1);
        self.buf.push(marker);
        for &sz in &sizes[..n] {
            self.buf.extend_from_slice(&(sz as u32).to_le_bytes()[..mag]);
        }
        self.buf.push(marker);
        true
    }

    fn h264_nal_done(&mut self, start: usize) {
        let Some(nal) = self.buf.get(start..) else { return };
        let Some(&h) = nal.first() else { return };
        match h & 0x1F {
            5 => self.keyframe = true,
            7 => match &self.h264.sps {
                None => {
                    if h264_sps(nal).is_ok() {
                        self.h264.sps = Some(nal.to_vec());
                    }
                }
                Some(s) if s.as_slice() != nal => self.notes.push(DepackNote::SpsChanged),
                Some(_) => {}
            },
            8 => self.h264.pps = Some(nal.to_vec()),
            _ => {}
        }
    }

    fn put_nal(&mut self, nal: &[u8]) -> Result<(), HeaderError> {
        if nal.is_empty() || nal[0] & 0x80 != 0 {
            return Err(HeaderError::Malformed("NAL header"));
        }
        self.buf.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        let start = self.buf.len();
        self.buf.extend_from_slice(nal);
        self.h264_nal_done(start);
        Ok(())
    }

    fn push_h264(&mut self, p: &[u8]) -> Result<(), HeaderError> {
        let &ind = p.first().ok_or(HeaderError::Truncated("NAL header"))?;
        if ind & 0x80 != 0 {
            return Err(HeaderError::Malformed("forbidden_zero_bit"));
        }
        let ty = ind & 0x1F;
        if ty != 28 && self.h264.fu_at.is_some() {
            return Err(HeaderError::Malformed("FU-A not ended"));
        }
        match ty {
            1..=23 => self.put_nal(p),
            24 => {
                let mut rest = &p[1..];
                while !rest.is_empty() {
                    let len = rest.get(..2).ok_or(HeaderError::Truncated("STAP-A size"))?;
                    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                    let nal = rest.get(2..2 + len).ok_or(HeaderError::Truncated("STAP-A NAL"))?;
                    self.put_nal(nal)?;
                    rest = &rest[2 + len..];
                }
                Ok(())
            }
            28 => {
                let &fu = p.get(1).ok_or(HeaderError::Truncated("FU header"))?;
                let (s, e) = (fu & 0x80 != 0, fu & 0x40 != 0);
                if s && e {
                    return Err(HeaderError::Malformed("FU-A start and end"));
                }
                let data = &p[2..];
                if s {
                    if self.h264.fu_at.is_some() {
                        return Err(HeaderError::Malformed("FU-A restarted"));
                    }
                    self.h264.fu_at = Some(self.buf.len());
                    self.buf.extend_from_slice(&[0; 4]);
                    self.buf.push((ind & 0xE0) | (fu & 0x1F));
                } else if self.h264.fu_at.is_none() {
                    return Err(HeaderError::Malformed("FU-A without start"));
                }
                self.buf.extend_from_slice(data);
                if e {
                    let at = self.h264.fu_at.take().unwrap_or(0);
                    let len = (self.buf.len() - at - 4) as u32;
                    if let Some(dst) = self.buf.get_mut(at..at + 4) {
                        dst.copy_from_slice(&len.to_be_bytes());
                    }
                    self.h264_nal_done(at + 4);
                }
                Ok(())
            }
            _ => Err(HeaderError::Malformed("unsupported NAL unit type")),
        }
    }

    fn av1_obu(&mut self, el: &[u8]) -> Result<(), HeaderError> {
        let &h = el.first().ok_or(HeaderError::Truncated("OBU header"))?;
        if h & 0x80 != 0 {
            return Err(HeaderError::Malformed("obu_forbidden_bit"));
        }
        let ty = (h >> 3) & 0xF;
        let hdr_len = 1 + usize::from((h >> 2) & 1);
        let hdr = el.get(..hdr_len).ok_or(HeaderError::Truncated("OBU extension"))?;
        let mut payload = &el[hdr_len..];
        if h & 0x02 != 0 {
            let (size, used) = read_leb128(payload).ok_or(HeaderError::Malformed("obu_size"))?;
            payload =
                payload.get(used..used + size).ok_or(HeaderError::Truncated("OBU payload"))?;
        }
        match ty {
            2 | 8 | 15 => return Ok(()),
            0 | 9..=14 => return Err(HeaderError::Malformed("reserved OBU type")),
            _ => {}
        }
        let start = self.buf.len();
        self.buf.push(hdr[0] | 0x02);
        self.buf.extend_from_slice(&hdr[1..]);
        write_leb128(payload.len(), &mut self.buf);
        self.buf.extend_from_slice(payload);
        match ty {
            1 => {
                let info = av1_sequence_header(payload)?;
                if self.av1.seq.is_none() {
                    self.av1.seq = Some((self.buf[start..].to_vec(), info));
                }
                self.av1.seen_seq_in_tu = true;
            }
            3 | 6 if self.av1.first_frame_key.is_none() => {
                let reduced =
                    self.av1.seq.as_ref().is_some_and(|s| s.1.reduced_still_picture_header);
                let key =
                    reduced || payload.first().is_some_and(|b| b & 0x80 == 0 && (b >> 5) & 3 == 0);
                self.av1.first_frame_key = Some(key);
            }
            _ => {}
        }
        Ok(())
    }

    fn push_av1(&mut self, p: &[u8]) -> Result<(), HeaderError> {
        let &agg = p.first().ok_or(HeaderError::Truncated("aggregation header"))?;
        let (z, y, w) = (agg & 0x80 != 0, agg & 0x40 != 0, (agg >> 4) & 3);
        if z != self.av1.in_partial {
            return Err(HeaderError::Malformed("Z bit does not match the previous Y bit"));
        }
        let mut rest = &p[1..];
        let mut n = 0u8;
        while !rest.is_empty() {
            n += 1;
            let last_unsized = w != 0 && n == w;
            let el = if last_unsized {
                let el = rest;
                rest = &[];
                el
            } else {
                let (len, used) =
                    read_leb128(rest).ok_or(HeaderError::Malformed("OBU element length"))?;
                let el = rest.get(used..used + len).ok_or(HeaderError::Truncated("OBU element"))?;
                rest = &rest[used + len..];
                el
            };
            let first = n == 1;
            let last = rest.is_empty();
            if first && z {
                self.av1.partial.extend_from_slice(el);
                if last && y {
                    if self.av1.partial.len() > MAX_FRAME {
                        return Err(HeaderError::Malformed("OBU too large"));
                    }
                    return Ok(());
                }
                let whole = std::mem::take(&mut self.av1.partial);
                self.av1.in_partial = false;
                self.av1_obu(&whole)?;
                continue;
            }
            if last && y {
                self.av1.partial.clear();
                self.av1.partial.extend_from_slice(el);
                self.av1.in_partial = true;
                return Ok(());
            }
            self.av1_obu(el)?;
            if w != 0 && n > w {
                return Err(HeaderError::Malformed("more OBU elements than W"));
            }
        }
        if y {
            return Err(HeaderError::Malformed("Y bit without an element"));
        }
        self.av1.in_partial = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h264_stap_a_and_fu_a() {
        let mut d = Depacketizer::new(Codec::H264);
        let sps = [
            0x67, 0x42, 0xC0, 0x0D, 0xD9, 0x01, 0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00,
            0x10, 0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x42, 0xA4, 0x80,
        ];
        let mut stap = vec![0x18, 0, sps.len() as u8];
        stap.extend_from_slice(&sps);
        stap.extend_from_slice(&[0, 2, 0x68, 0xCE]);
        d.push(100, false, &stap, false);
        d.push(100, false, &[0x7C, 0x85, 1, 2], false);
        d.push(100, true, &[0x7C, 0x45, 3], false);
        let f = d.poll_frame().unwrap();
        assert!(f.keyframe);
        let tail = [0, 0, 0, 4, 0x65, 1, 2, 3];
        assert!(f.data.ends_with(&tail));
        assert!(d.h264_parameter_sets().is_some());
        // A FU-A missing its start is broken.
        d.push(200, true, &[0x7C, 0x41, 3], false);
        assert!(d.poll_frame().is_none());
        assert_eq!(d.frames_lost(), 1);
    }

    #[test]
    fn av1_fragments_and_size_fields() {
        let mut d = Depacketizer::new(Codec::Av1);
        // W=1: one element (a temporal delimiter is dropped), then an OBU_FRAME split in two.
        d.push(1, false, &[0x10, 0x10], false);
        d.push(1, false, &[0x50, 0x30, 0x10, 0x20], false);
        d.push(1, true, &[0x90, 0x30], false);
        let f = d.poll_frame().unwrap();
        assert_eq!(f.data, vec![0x32, 3, 0x10, 0x20, 0x30]);
        assert!(!f.keyframe, "no sequence header");
    }
}
