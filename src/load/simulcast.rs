//! `--simulcast`: the pure parts of a simulcast run (issue 15 item 4), used by [`super::core`].
//!
//! Publishers offer three VP8 encodings as openvidu-browser 2.32 makes Chromium send them
//! against a "mediasoup" server (rids `rdiv4`, `rdiv2`, `rdiv1`, low to high; `a=simulcast`,
//! the `mid`, `rid` and `repaired-rid` header extensions, RTX offered) and send all three:
//! [`layer_bitrate`] of `--video-bitrate` each, every frame's size stamped in a VP8 keyframe
//! header ([`LAYER_SIZES`]) and its layer in the payload stamp, three temporal layers in the
//! payload descriptor (L1T3: TID 0,2,1,2, TL0PICIDX, Y), a keyframe of one layer on a PLI
//! naming it. Subscribers receive through a [`TokenBucket`] when their leg is capped (a
//! policer in front of the client: what exceeds the rate is dropped, as a narrow link would),
//! send transport-wide congestion control feedback, and follow each leg's frames
//! ([`FrameTracker`]: complete frames, freezes) and layers ([`SimLeg`]).
//!
//! Written here rather than taken from a crate: the descriptor is a handful of fixed bytes of
//! our own synthetic stream, and the policer and freeze counter are the tool's definitions
//! (what the report promises), not general-purpose components.

use std::time::{Duration, Instant};

/// RIDs of the three encodings, lowest first (openvidu-browser's).
pub const RIDS: [&str; 3] = ["rdiv4", "rdiv2", "rdiv1"];
/// Frame size of each layer, stamped in its keyframes.
pub const LAYER_SIZES: [(u16, u16); 3] = [(320, 180), (640, 360), (1280, 720)];
/// Header extension ids of our offers (Chromium's).
pub const EXT_TWCC: u8 = 3;
pub const EXT_MID: u8 = 4;
pub const EXT_RID: u8 = 10;
pub const EXT_REPAIRED_RID: u8 = 11;
/// RTX payload type of VP8 in our simulcast offers (Chromium's).
pub const RTX_PT: u8 = 97;
/// Codec header bytes before the stamp of a simulcast video packet: the VP8 payload
/// descriptor (6 bytes: X, I with a 15-bit picture id, L, T) and, on a frame's first packet,
/// the frame tag (3), and for a keyframe the start code (3) and size (4); zeros otherwise.
pub const SIM_STAMP_OFFSET: usize = 16;
/// A gap longer than this between two complete frames is a freeze.
pub const FREEZE_GAP: Duration = Duration::from_millis(500);

/// Bits per second of layer `layer` when the top layer has `top` (1/10, 1/3, 1).
pub fn layer_bitrate(top: u64, layer: usize) -> u64 {
    match layer {
        0 => top / 10,
        1 => top / 3,
        _ => top,
    }
}

/// Payload bytes of a frame of `layer` (a keyframe: `keyframe_factor` times), the payload
/// bytes per packet, and its packets (at most 255: the stamp's count is a byte).
pub fn layer_frame(m: &super::MediaProfile, layer: usize, key: bool) -> (usize, usize, usize) {
    let fps = u64::from(m.fps.max(1));
    let pkt =
        m.video_packet.clamp(SIM_STAMP_OFFSET + super::core::STAMP_LEN, super::core::MAX_PAYLOAD);
    let mut bytes = (layer_bitrate(m.video_bitrate, layer) / 8 / fps).max(1) as usize;
    if key {
        bytes *= m.keyframe_factor.max(1) as usize;
    }
    (bytes, pkt, bytes.div_ceil(pkt).clamp(1, 255))
}

/// Packets per second a simulcast publisher sends (every layer, and audio).
pub fn publisher_pps(m: &super::MediaProfile) -> f64 {
    let mut pps = if m.audio_packet > 0 { 50.0 } else { 0.0 };
    if m.fps > 0 && m.video_bitrate > 0 {
        let every = u64::from(m.keyframe_every.max(1));
        for layer in 0..3 {
            let total: u64 =
                (0..every).map(|n| layer_frame(m, layer, m.is_keyframe(n + 1)).2 as u64).sum();
            pps += total as f64 / every as f64 * f64::from(m.fps);
        }
    }
    pps
}

/// Temporal layer of frame `n` in the L1T3 pattern (0, 2, 1, 2), and whether it is a layer
/// sync point (depends on the base layer only).
pub fn temporal_of(n: u64) -> (u8, bool) {
    match n % 4 {
        0 => (0, false),
        1 => (2, true),
        2 => (1, true),
        _ => (2, false),
    }
}

/// One packet's VP8 codec header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vp8Header {
    /// First packet of the frame (S bit, frame tag follows).
    pub first: bool,
    pub key: bool,
    /// 15-bit picture id.
    pub picture_id: u16,
    pub tl0picidx: u8,
    pub tid: u8,
    pub sync: bool,
    /// The layer's frame size, written in a keyframe's header.
    pub size: (u16, u16),
}

/// Writes the codec header of a simulcast video packet (RFC 7741 descriptor; RFC 6386 frame
/// tag, start code and size on a frame's first packet).
pub fn write_vp8_header(h: &Vp8Header) -> [u8; SIM_STAMP_OFFSET] {
    let mut b = [0u8; SIM_STAMP_OFFSET];
    b[0] = 0x80 | if h.first { 0x10 } else { 0 };
    b[1] = 0xE0; // I, L, T
    let pid = h.picture_id & 0x7FFF;
    b[2] = 0x80 | (pid >> 8) as u8;
    b[3] = pid as u8;
    b[4] = h.tl0picidx;
    b[5] = ((h.tid & 3) << 6) | if h.sync { 0x20 } else { 0 };
    if h.first {
        // Frame tag: P bit clear on a keyframe; version 0, shown, partition size 0.
        b[6] = if h.key { 0x10 } else { 0x11 };
        if h.key {
            b[9..12].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            b[12..14].copy_from_slice(&(h.size.0 & 0x3FFF).to_le_bytes());
            b[14..16].copy_from_slice(&(h.size.1 & 0x3FFF).to_le_bytes());
        }
    }
    b
}

/// The frame size a keyframe's first packet carries after its descriptor ends at `at`
/// (`None`: not a keyframe header).
pub fn keyframe_size(payload: &[u8], at: usize) -> Option<(u16, u16)> {
    let h = payload.get(at..at.checked_add(10)?)?;
    if h[0] & 1 != 0 || h[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    Some((u16::from_le_bytes([h[6], h[7]]) & 0x3FFF, u16::from_le_bytes([h[8], h[9]]) & 0x3FFF))
}

/// A policer: tokens at `rate` bits per second up to a depth of 100 ms of them (at least
/// three full packets); a packet that finds too few tokens is dropped.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_bps: u64,
    depth: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(rate_bps: u64) -> TokenBucket {
        let depth = (rate_bps as f64 / 8.0 * 0.1).max(3.0 * 1500.0);
        TokenBucket { rate_bps, depth, tokens: depth, last: None }
    }

    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Whether `bytes` arriving at `now` pass.
    pub fn admit(&mut self, now: Instant, bytes: usize) -> bool {
        if let Some(last) = self.last {
            let dt = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate_bps as f64 / 8.0).min(self.depth);
        }
        self.last = Some(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

/// Complete frames and freezes of one video leg. A frame (one RTP timestamp) is complete when
/// every one of its packets arrived (the stamp says how many it has); a freeze is a gap longer
/// than [`FREEZE_GAP`] between two complete frames after the first, counted when it ends in
/// the window (or, still open, when the window closes).
#[derive(Debug, Clone, Default)]
pub struct FrameTracker {
    ts: Option<u32>,
    got: [u64; 4],
    need: u16,
    done: bool,
    last_complete: Option<Instant>,
    /// Complete frames in the window.
    pub frames: u64,
    pub freezes: u32,
    pub freeze_total: Duration,
    pub longest_freeze: Duration,
}

impl FrameTracker {
    /// Packet `index` of `count` of the frame with timestamp `ts` arrived at `now`.
    pub fn on_packet(&mut self, now: Instant, ts: u32, index: u8, count: u8, in_window: bool) {
        if self.ts != Some(ts) {
            self.ts = Some(ts);
            self.got = [0; 4];
            self.need = u16::from(count.max(1));
            self.done = false;
        }
        if self.done {
            return;
        }
        let i = usize::from(index);
        if let Some(w) = self.got.get_mut(i / 64) {
            *w |= 1 << (i % 64);
        }
        let have: u32 = self.got.iter().map(|w| w.count_ones()).sum();
        if have >= u32::from(self.need) {
            self.done = true;
            if let Some(last) = self.last_complete {
                let gap = now.saturating_duration_since(last);
                if in_window {
                    self.note_gap(gap);
                }
            }
            self.last_complete = Some(now);
            if in_window {
                self.frames += 1;
            }
        }
    }

    fn note_gap(&mut self, gap: Duration) {
        if gap > FREEZE_GAP {
            self.freezes += 1;
            self.freeze_total += gap;
            self.longest_freeze = self.longest_freeze.max(gap);
        }
    }

    /// The window starts: its counters from zero.
    pub fn start_window(&mut self) {
        (self.frames, self.freezes) = (0, 0);
        (self.freeze_total, self.longest_freeze) = (Duration::ZERO, Duration::ZERO);
    }

    /// The window ends at `now`: a freeze still open counts up to here.
    pub fn end_window(&mut self, now: Instant) {
        if let Some(last) = self.last_complete {
            self.note_gap(now.saturating_duration_since(last));
        }
    }
}

/// What one subscriber video leg saw of the layers.
#[derive(Debug, Clone, Default)]
pub struct SimLeg {
    /// Video packets of each layer in the window.
    pub layer_packets: [u64; 3],
    pub layer_bytes: [u64; 3],
    /// The layer of the last packet (`None`: none yet).
    pub last_layer: Option<u8>,
    /// Layer changes between consecutive packets in the window.
    pub switches: u32,
    /// Temporal ids seen in the window (bit `tid`).
    pub tids: u8,
    /// Extended (SFU-rewritten) sequence numbers of the window's first and last video packet.
    pub seq_span: Option<(u64, u64)>,
    /// Padding-only packets in the window (an SFU probing): in the span, not media.
    pub padding: u64,
    pub frames: FrameTracker,
}

impl SimLeg {
    pub fn start_window(&mut self) {
        let frames = std::mem::take(&mut self.frames);
        *self = SimLeg { last_layer: self.last_layer, frames, ..SimLeg::default() };
        self.frames.start_window();
    }

    /// A video packet of `layer` (extended sequence `ext`, `bytes` long) arrived.
    pub fn on_packet(&mut self, layer: u8, ext: u64, bytes: usize, tid: Option<u8>, window: bool) {
        let l = usize::from(layer.min(2));
        if window {
            self.layer_packets[l] += 1;
            self.layer_bytes[l] += bytes as u64;
            if self.last_layer.is_some_and(|p| p != layer) {
                self.switches += 1;
            }
            if let Some(t) = tid {
                self.tids |= 1 << (t & 7);
            }
            self.widen(ext);
        }
        self.last_layer = Some(layer);
    }

    /// A padding-only packet (extended sequence `ext`) arrived.
    pub fn on_padding(&mut self, ext: u64, window: bool) {
        if window {
            self.padding += 1;
            self.widen(ext);
        }
    }

    fn widen(&mut self, ext: u64) {
        self.seq_span = Some(match self.seq_span {
            None => (ext, ext),
            Some((a, b)) => (a.min(ext), b.max(ext)),
        });
    }

    /// The layer most of the window's packets were of.
    pub fn main_layer(&self) -> Option<u8> {
        let (i, n) = self.layer_packets.iter().enumerate().max_by_key(|(i, n)| (**n, *i))?;
        (*n > 0).then_some(i as u8)
    }

    /// Video packets the window's sequence span asked for, padding aside (holes are losses:
    /// the policer's, the network's or the SFU's).
    pub fn expected(&self) -> u64 {
        self.seq_span.map_or(0, |(a, b)| (b - a + 1).saturating_sub(self.padding))
    }

    pub fn delivered(&self) -> u64 {
        self.layer_packets.iter().sum()
    }
}

/// One subscriber leg's simulcast outcome in the window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimOutcome {
    pub index: u32,
    /// The leg's cap (bits/s), `None` when uncapped.
    pub cap_bps: Option<u64>,
    /// The layer most of its video was of, and the layer of its last packet.
    pub layer: Option<u8>,
    pub last_layer: Option<u8>,
    pub layer_packets: [u64; 3],
    pub switches: u32,
    pub tids: u8,
    /// Video packets: delivered and the span's expected (see [`SimLeg::expected`]).
    pub video_expected: u64,
    pub video_delivered: u64,
    /// Video bits per second received in the window.
    pub video_bps: f64,
    pub frames: u64,
    pub freezes: u32,
    pub freeze_total: Duration,
    pub longest_freeze: Duration,
    /// Datagrams the policer dropped in the window (audio and video).
    pub cap_drops: u64,
    pub twcc_feedback: u64,
    pub remb: u64,
    /// Padding-only packets received in the window (not in the video counts).
    pub padding: u64,
}

impl SimOutcome {
    pub fn video_loss(&self) -> f64 {
        if self.video_expected == 0 {
            0.0
        } else {
            1.0 - self.video_delivered as f64 / self.video_expected as f64
        }
    }
}

/// Layer name: `rdiv4 320x180`.
pub fn layer_name(l: u8) -> String {
    let i = usize::from(l.min(2));
    format!("{} {}x{}", RIDS[i], LAYER_SIZES[i].0, LAYER_SIZES[i].1)
}

/// The legs of one class (capped or not) summed up.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassSummary {
    pub legs: u32,
    /// Legs whose main layer was 0, 1, 2; legs that got no video.
    pub on_layer: [u32; 3],
    pub no_video: u32,
    pub video_loss: f64,
    pub worst_video_loss: f64,
    pub freezes: u32,
    pub freeze_total: Duration,
    pub longest_freeze: Duration,
    pub legs_with_freezes: u32,
    pub switches: u32,
    pub cap_drops: u64,
    pub mean_video_bps: f64,
}

/// Sums `legs` (one class).
pub fn summarize<'a>(legs: impl Iterator<Item = &'a SimOutcome>) -> ClassSummary {
    let mut s = ClassSummary::default();
    let (mut exp, mut del, mut bps) = (0u64, 0u64, 0.0);
    for l in legs {
        s.legs += 1;
        match l.layer {
            Some(i) => s.on_layer[usize::from(i.min(2))] += 1,
            None => s.no_video += 1,
        }
        exp += l.video_expected;
        del += l.video_delivered;
        s.worst_video_loss = s.worst_video_loss.max(l.video_loss());
        s.freezes += l.freezes;
        s.freeze_total += l.freeze_total;
        s.longest_freeze = s.longest_freeze.max(l.longest_freeze);
        s.legs_with_freezes += u32::from(l.freezes > 0);
        s.switches += l.switches;
        s.cap_drops += l.cap_drops;
        bps += l.video_bps;
    }
    if exp > 0 {
        s.video_loss = 1.0 - del as f64 / exp as f64;
    }
    if s.legs > 0 {
        s.mean_video_bps = bps / f64::from(s.legs);
    }
    s
}

/// Whether leg `k` (0-based, in join order) is capped when a `share` of the legs is: spread
/// evenly (0.5 caps every second leg: the second, the fourth...).
pub fn is_capped(k: u64, share: f64) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((k + 1) as f64 * share).floor() > (k as f64 * share).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_reads_back_with_the_codec_inspector() {
        use crate::wire::codec::{Codec, inspect};
        for (n, key) in [(0u64, true), (1, false), (2, false), (3, false), (4, false)] {
            let (tid, sync) = temporal_of(n);
            let h = Vp8Header {
                first: true,
                key,
                picture_id: 32_760 + n as u16,
                tl0picidx: 9,
                tid,
                sync,
                size: LAYER_SIZES[2],
            };
            let b = write_vp8_header(&h);
            let info = inspect(Codec::Vp8, &b, false).expect("parses");
            assert!(info.frame_start);
            assert_eq!(info.keyframe, key, "{n}");
            assert_eq!(info.temporal_id, Some(tid));
            assert_eq!(info.layer_sync, sync);
            assert_eq!(info.tl0picidx, Some(9));
            assert_eq!(info.picture_id.map(|p| p.value), Some((32_760 + n as u16) & 0x7FFF));
            assert_eq!(info.payload_offset, 6);
            let size = keyframe_size(&b, info.payload_offset);
            assert_eq!(size, key.then_some((1280, 720)));
            let later = write_vp8_header(&Vp8Header { first: false, ..h });
            let info = inspect(Codec::Vp8, &later, true).expect("parses");
            assert!(!info.frame_start && !info.keyframe);
        }
        assert_eq!(keyframe_size(&[0u8; 3], 0), None);
        assert_eq!(keyframe_size(&[0u8; 30], usize::MAX), None);
    }

    #[test]
    fn policer_passes_its_rate_and_drops_the_rest() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(300_000);
        let (mut ok, mut n) = (0u64, 0u64);
        // 10 s of 1000-byte packets at 1 Mbit/s (every 8 ms).
        for i in 0..1250u64 {
            n += 1;
            ok += u64::from(b.admit(t0 + Duration::from_millis(8 * i), 1000));
        }
        let passed_bps = ok as f64 * 8000.0 / 10.0;
        assert!(ok < n, "some dropped");
        // The rate, plus at most the initial depth over 10 s.
        assert!(passed_bps > 280_000.0 && passed_bps < 310_000.0, "{passed_bps}");
    }

    #[test]
    fn frames_and_freezes() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut f = FrameTracker::default();
        f.start_window();
        // Frame 1: three packets; frame 2 misses one (never complete); frame 3 after 900 ms.
        for i in 0..3 {
            f.on_packet(at(0), 100, i, 3, true);
        }
        f.on_packet(at(33), 200, 0, 2, true);
        f.on_packet(at(900), 300, 0, 1, true);
        assert_eq!((f.frames, f.freezes), (2, 1));
        assert_eq!(f.freeze_total, Duration::from_millis(900));
        // A duplicate of a complete frame's packet changes nothing.
        f.on_packet(at(901), 300, 0, 1, true);
        assert_eq!(f.frames, 2);
        // Regular frames: no freeze; then the window ends 600 ms after the last one.
        for k in 1..10u64 {
            f.on_packet(at(900 + 33 * k), 300 + k as u32, 0, 1, true);
        }
        assert_eq!(f.freezes, 1);
        f.end_window(at(900 + 33 * 9 + 600));
        assert_eq!(f.freezes, 2);
        assert_eq!(f.longest_freeze, Duration::from_millis(900));
        // A new window starts from zero.
        f.start_window();
        assert_eq!((f.frames, f.freezes, f.freeze_total), (0, 0, Duration::ZERO));
    }

    #[test]
    fn legs_and_classes() {
        let mut l = SimLeg::default();
        l.start_window();
        for (i, layer) in [0u8, 0, 0, 2, 2].iter().enumerate() {
            l.on_packet(*layer, 10 + 2 * i as u64, 100, Some(0), true);
        }
        assert_eq!(l.main_layer(), Some(0));
        assert_eq!(l.switches, 1);
        assert_eq!((l.expected(), l.delivered()), (9, 5));
        let a = SimOutcome {
            layer: l.main_layer(),
            video_expected: l.expected(),
            video_delivered: l.delivered(),
            freezes: 1,
            ..Default::default()
        };
        let b = SimOutcome { layer: Some(2), video_expected: 10, video_delivered: 10, ..a.clone() };
        let c = SimOutcome { layer: None, ..SimOutcome::default() };
        let s = summarize([&a, &b, &c].into_iter());
        assert_eq!(s.legs, 3);
        assert_eq!(s.on_layer, [1, 0, 1]);
        assert_eq!(s.no_video, 1);
        assert!((s.video_loss - 4.0 / 19.0).abs() < 1e-9);
        assert!((s.worst_video_loss - 4.0 / 9.0).abs() < 1e-9);
        assert_eq!((s.freezes, s.legs_with_freezes), (2, 2));
    }

    #[test]
    fn capped_share_spreads_evenly() {
        let capped = |share: f64| (0..10u64).filter(|&k| is_capped(k, share)).count();
        assert_eq!(capped(0.0), 0);
        assert_eq!(capped(0.5), 5);
        assert_eq!(capped(1.0), 10);
        assert_eq!(capped(0.3), 3);
        assert!(is_capped(0, 1.0) && !is_capped(0, 0.5) && is_capped(1, 0.5));
    }
}
