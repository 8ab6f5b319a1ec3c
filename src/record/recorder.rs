//! [`RecorderCore`]: one INDIVIDUAL recording (one published stream: a video track and/or an
//! Opus track) from RTP packets to the bytes of a WebM / Matroska file. Sans-IO: `now` is an
//! argument, the file is the caller's.
//!
//! Run loop (the recorder thread in [`super::writer`] does this):
//! 1. feed every packet with [`RecorderCore::handle_rtp`] (and sender reports, when known,
//!    with [`RecorderCore::handle_sender_report`]);
//! 2. drain [`RecorderCore::poll_output`] after every call: append [`Output::Append`] bytes
//!    to the file, apply [`Output::Patch`] at its offset, pass [`Output::Nack`] /
//!    [`Output::Pli`] to the shard, note [`Output::Note`];
//! 3. call [`RecorderCore::handle_timeout`] at [`RecorderCore::poll_timeout`];
//!    when the publisher reconnects (new SSRC), call [`RecorderCore::restart_track`] for each
//!    track before its first packet: the same file goes on;
//! 4. on stop, [`RecorderCore::close`], then drain again: the last bytes, the final patches,
//!    and [`Output::Finished`].
//!
//! Rules: nothing is written before the first video keyframe (a PLI is asked for every
//! [`RecorderConfig::pli_interval`] until one arrives); a lost video frame asks for a PLI and
//! drops frames until the next keyframe; if no keyframe arrives within
//! [`RecorderConfig::keyframe_wait`] and there is audio, the file is started audio only and
//! the video of this recording is dropped (a [`Note::NoVideo`]).
//!
//! Timeline: each track's RTP timestamps are unwrapped and mapped to milliseconds since the
//! core was created, anchored at the arrival of the track's first packet; once a track has a
//! sender report (RTP timestamp ↔ NTP), its mapping goes through the NTP clock instead, which
//! aligns audio and video as the sender captured them. File time 0 is the first frame written.
//! Frames are held [`RecorderConfig::interleave`] behind the newest one so the two tracks are
//! written in time order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::bits::{avcc, h264_sps, vp8_keyframe_size, vp9_keyframe_size};
use super::depack::{Codec, DepackNote, Depacketizer, Frame, clock_rate};
use super::mkv::{MkvMuxer, OpusTrack, Patch, TrackKind, VideoCodec, VideoTrack};
use super::reorder::ReorderBuffer;

/// Frames held for interleaving at most (a timestamp that stands still cannot grow it).
const MAX_QUEUED: usize = 512;

/// Settings of one recording.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The video codec, if the stream has video.
    pub video: Option<Codec>,
    /// Whether the stream has (Opus) audio.
    pub audio: bool,
    /// Packets a reorder buffer holds at most.
    pub reorder_capacity: usize,
    /// How long a gap is waited for (a NACK's round trip).
    pub reorder_wait: Duration,
    /// How long the first keyframe is waited for before recording audio only.
    pub keyframe_wait: Duration,
    /// Time between PLIs while a keyframe is awaited.
    pub pli_interval: Duration,
    /// How far frames are held behind the newest to write the tracks in time order.
    pub interleave: Duration,
}

impl RecorderConfig {
    /// Defaults for a stream with this video codec (or none) and audio.
    pub fn new(video: Option<Codec>, audio: bool) -> Self {
        RecorderConfig {
            video: video.filter(|c| c.is_video()),
            audio,
            reorder_capacity: 512,
            reorder_wait: Duration::from_millis(400),
            keyframe_wait: Duration::from_secs(10),
            pli_interval: Duration::from_millis(1000),
            interleave: Duration::from_millis(300),
        }
    }
}

/// Something the recording noticed; none of them stops it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// No video keyframe arrived in time: the file holds audio only.
    NoVideo,
    /// The H.264 SPS changed mid-stream (kept in-band; `avcC` keeps the first).
    SpsChanged,
}

/// What a closed recording holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// File Duration, ms.
    pub duration_ms: u64,
    /// When the file's time 0 was, in ms since the core was created.
    pub start_offset_ms: u64,
    /// `start_offset_ms + duration_ms`.
    pub end_offset_ms: u64,
    /// Video width (0 without video).
    pub width: u32,
    /// Video height (0 without video).
    pub height: u32,
    /// File size in bytes.
    pub size: u64,
    /// Whether the file has a video track.
    pub has_video: bool,
    /// Whether the file has an audio track.
    pub has_audio: bool,
    /// Video frames written.
    pub video_frames: u64,
    /// Audio frames written.
    pub audio_frames: u64,
    /// Why the file has no video although the stream had, if so.
    pub no_video_reason: Option<&'static str>,
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Append these bytes to the file.
    Append(Vec<u8>),
    /// Overwrite bytes already appended.
    Patch(Patch),
    /// Ask the publisher to retransmit these packets of a track.
    Nack {
        /// The track.
        track: TrackKind,
        /// RTP sequence numbers.
        seqs: Vec<u16>,
    },
    /// Ask the publisher for a video keyframe.
    Pli,
    /// Something worth logging or reporting.
    Note(Note),
    /// The recording is closed; nothing follows.
    Finished(Summary),
}

#[derive(Debug)]
struct TrackIn {
    rate: f64,
    reorder: ReorderBuffer,
    depack: Depacketizer,
    unwrap: Option<(u32, i64)>,
    anchor: Option<(f64, i64)>,
    sr: Option<(f64, i64)>,
    frames: u64,
}

impl TrackIn {
    fn new(codec: Codec, cfg: &RecorderConfig) -> Self {
        TrackIn {
            rate: f64::from(clock_rate(codec)),
            reorder: ReorderBuffer::new(cfg.reorder_capacity, cfg.reorder_wait),
            depack: Depacketizer::new(codec),
            unwrap: None,
            anchor: None,
            sr: None,
            frames: 0,
        }
    }

    fn extend(&mut self, ts: u32) -> i64 {
        let ext = match self.unwrap {
            None => i64::from(ts),
            Some((last, ext)) => ext + i64::from(ts.wrapping_sub(last) as i32),
        };
        // Only move the reference forward, so a late packet does not pull it back.
        if self.unwrap.is_none_or(|(_, e)| ext > e) {
            self.unwrap = Some((ts, ext));
        }
        ext
    }
}

#[derive(Debug)]
struct Queued {
    time: f64,
    kind: TrackKind,
    keyframe: bool,
    data: Vec<u8>,
}

/// One recording; see the module docs.
#[derive(Debug)]
pub struct RecorderCore {
    cfg: RecorderConfig,
    created: Instant,
    video: Option<TrackIn>,
    audio: Option<TrackIn>,
    muxer: Option<MkvMuxer>,
    dims: (u32, u32),
    origin: Option<f64>,
    need_keyframe: bool,
    video_dropped: bool,
    next_pli: Option<Instant>,
    ntp_offset: Option<f64>,
    queue: VecDeque<Queued>,
    newest: f64,
    out: Vec<u8>,
    outputs: VecDeque<Output>,
    closed: bool,
}

fn ms_since(now: Instant, since: Instant) -> f64 {
    now.saturating_duration_since(since).as_secs_f64() * 1000.0
}

fn ntp_ms(ntp: u64) -> f64 {
    (ntp >> 32) as f64 * 1000.0 + (ntp & 0xFFFF_FFFF) as f64 * 1000.0 / 4_294_967_296.0
}

impl RecorderCore {
    /// A recording starting at `now`.
    pub fn new(now: Instant, cfg: RecorderConfig) -> Self {
        let video = cfg.video.map(|c| TrackIn::new(c, &cfg));
        let audio = cfg.audio.then(|| TrackIn::new(Codec::Opus, &cfg));
        RecorderCore {
            need_keyframe: video.is_some(),
            video,
            audio,
            cfg,
            created: now,
            muxer: None,
            dims: (0, 0),
            origin: None,
            video_dropped: false,
            next_pli: None,
            ntp_offset: None,
            queue: VecDeque::new(),
            newest: 0.0,
            out: Vec::new(),
            outputs: VecDeque::new(),
            closed: false,
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// True once [`RecorderCore::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn track_mut(&mut self, kind: TrackKind) -> Option<&mut TrackIn> {
        match kind {
            TrackKind::Video => self.video.as_mut(),
            TrackKind::Audio => self.audio.as_mut(),
        }
    }

    /// A sender report of a track: its RTP timestamp `rtp_ts` was NTP time `ntp` (64-bit
    /// fixed point) at the sender. From then on the track's timeline goes through it.
    pub fn handle_sender_report(&mut self, now: Instant, track: TrackKind, ntp: u64, rtp_ts: u32) {
        let now_ms = ms_since(now, self.created);
        let ntp = ntp_ms(ntp);
        self.ntp_offset.get_or_insert(now_ms - ntp);
        if let Some(t) = self.track_mut(track) {
            let ext = t.extend(rtp_ts);
            t.sr = Some((ntp, ext));
        }
    }

    /// One RTP packet of a track (after SRTP), in arrival order.
    pub fn handle_rtp(
        &mut self,
        now: Instant,
        track: TrackKind,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) {
        if self.closed {
            return;
        }
        let now_ms = ms_since(now, self.created);
        let Some(t) = self.track_mut(track) else { return };
        t.reorder.insert(now, seq, timestamp, marker, payload);
        if t.reorder.take_restarted() {
            // Another sequence (a sender that restarted without `restart_track`): a new
            // timestamp space too, anchored here.
            t.unwrap = None;
            t.anchor = None;
            t.sr = None;
        }
        if t.anchor.is_none() {
            let ext = t.extend(timestamp);
            t.anchor = Some((now_ms, ext));
        }
        self.drain_track(now, track);
    }

    fn drain_track(&mut self, now: Instant, kind: TrackKind) {
        let mut frames: Vec<(f64, Frame)> = Vec::new();
        let mut notes = Vec::new();
        let ntp_offset = self.ntp_offset;
        let Some(t) = self.track_mut(kind) else { return };
        while let Some(p) = t.reorder.pop() {
            t.depack.push(p.timestamp, p.marker, p.payload, p.lost_before);
        }
        t.reorder.after_pop(now);
        let missing = t.reorder.take_missing();
        while let Some(n) = t.depack.poll_note() {
            notes.push(n);
        }
        while let Some(f) = t.depack.poll_frame() {
            let ext = t.extend(f.timestamp);
            let ms = match (t.sr, ntp_offset, t.anchor) {
                (Some((ntp, sr_ext)), Some(off), _) => {
                    ntp + (ext - sr_ext) as f64 * 1000.0 / t.rate + off
                }
                (_, _, Some((a_ms, a_ext))) => a_ms + (ext - a_ext) as f64 * 1000.0 / t.rate,
                _ => 0.0,
            };
            frames.push((ms, f));
        }
        if kind == TrackKind::Video && !missing.is_empty() {
            self.outputs.push_back(Output::Nack { track: kind, seqs: missing });
        }
        for n in notes {
            match n {
                DepackNote::FrameLost if kind == TrackKind::Video => {
                    self.need_keyframe = true;
                    self.ask_pli(now);
                }
                DepackNote::SpsChanged => self.outputs.push_back(Output::Note(Note::SpsChanged)),
                DepackNote::FrameLost => {}
            }
        }
        for (ms, f) in frames {
            self.on_frame(now, kind, ms, f);
        }
        self.flush_queue(false);
        self.emit();
    }

    fn ask_pli(&mut self, now: Instant) {
        if self.video_dropped || self.video.is_none() {
            return;
        }
        if self.next_pli.is_none_or(|t| now >= t) {
            self.outputs.push_back(Output::Pli);
            self.next_pli = Some(now + self.cfg.pli_interval);
        }
    }

    fn video_track(&self, frame: &Frame) -> Option<VideoTrack> {
        let v = self.video.as_ref()?;
        let codec = v.depack.codec();
        Some(match codec {
            Codec::H264 => {
                let (sps, pps) = v.depack.h264_parameter_sets()?;
                let info = h264_sps(sps).ok()?;
                VideoTrack {
                    codec: VideoCodec::H264,
                    width: info.width,
                    height: info.height,
                    codec_private: avcc(sps, pps).ok()?,
                }
            }
            Codec::Av1 => {
                let (obu, info) = v.depack.av1_sequence_header()?;
                let mut cp = info.av1c.to_vec();
                cp.extend_from_slice(obu);
                VideoTrack {
                    codec: VideoCodec::Av1,
                    width: info.width,
                    height: info.height,
                    codec_private: cp,
                }
            }
            Codec::Vp8 => {
                let (w, h) = vp8_keyframe_size(&frame.data).ok()??;
                VideoTrack {
                    codec: VideoCodec::Vp8,
                    width: w,
                    height: h,
                    codec_private: Vec::new(),
                }
            }
            Codec::Vp9 => {
                let (w, h) = vp9_keyframe_size(&frame.data).ok()??;
                VideoTrack {
                    codec: VideoCodec::Vp9,
                    width: w,
                    height: h,
                    codec_private: Vec::new(),
                }
            }
            Codec::Opus | Codec::Other => return None,
        })
    }

    fn start_file(&mut self, video: Option<&VideoTrack>, origin: f64) {
        let audio = self.audio.is_some().then_some(OpusTrack::WEBRTC);
        self.muxer = Some(MkvMuxer::new(video, audio, &mut self.out));
        if let Some(v) = video {
            self.dims = (v.width, v.height);
        }
        self.origin = Some(origin);
    }

    fn on_frame(&mut self, now: Instant, kind: TrackKind, ms: f64, frame: Frame) {
        match kind {
            TrackKind::Video => {
                if self.video_dropped {
                    return;
                }
                if self.need_keyframe {
                    if !frame.keyframe {
                        self.ask_pli(now);
                        return;
                    }
                    if self.muxer.is_none() {
                        let Some(track) = self.video_track(&frame) else {
                            self.ask_pli(now);
                            return;
                        };
                        self.start_file(Some(&track), ms);
                    }
                    self.need_keyframe = false;
                }
            }
            TrackKind::Audio => {
                if self.muxer.is_none() {
                    if self.video.is_some() && !self.video_dropped {
                        return;
                    }
                    self.start_file(None, ms);
                }
            }
        }
        let Some(origin) = self.origin else { return };
        if ms < origin - 0.5 {
            return;
        }
        if let Some(t) = self.track_mut(kind) {
            t.frames += 1;
        }
        self.newest = self.newest.max(ms);
        // Clamped at 0 before it is queued: a frame up to 0.5 ms before the first keyframe
        // (rounding between the tracks' clocks) must not be written ahead of it, where it
        // would open a cluster that does not start with the keyframe.
        let time = (ms - origin).max(0.0);
        let q = Queued { time, kind, keyframe: frame.keyframe, data: frame.data };
        let pos = self.queue.iter().rposition(|e| e.time <= q.time).map_or(0, |p| p + 1);
        self.queue.insert(pos, q);
        // Bounded whatever the timestamps say: the oldest goes out first.
        while self.queue.len() > MAX_QUEUED {
            let Some(q) = self.queue.pop_front() else { break };
            self.write_queued(q);
        }
    }

    /// Writes one queued frame into the file (once the muxer exists).
    fn write_queued(&mut self, q: Queued) {
        if let Some(m) = self.muxer.as_mut() {
            let _ = m.write_frame(
                q.kind,
                q.time.max(0.0).round() as u64,
                q.keyframe,
                &q.data,
                &mut self.out,
            );
        }
    }

    fn flush_queue(&mut self, all: bool) {
        let Some(origin) = self.origin else { return };
        let limit = self.newest - origin - self.cfg.interleave.as_secs_f64() * 1000.0;
        while let Some(front) = self.queue.front() {
            if !all && front.time > limit {
                break;
            }
            let Some(q) = self.queue.pop_front() else { break };
            self.write_queued(q);
        }
    }

    fn emit(&mut self) {
        if !self.out.is_empty() {
            self.outputs.push_back(Output::Append(std::mem::take(&mut self.out)));
        }
        if let Some(m) = self.muxer.as_mut() {
            while let Some(p) = m.poll_patch() {
                self.outputs.push_back(Output::Patch(p));
            }
        }
    }

    /// Runs what is due at `now`: gaps given up on, PLIs repeated, the keyframe wait.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        for kind in [TrackKind::Video, TrackKind::Audio] {
            let due = self
                .track_mut(kind)
                .and_then(|t| t.reorder.poll_timeout())
                .is_some_and(|d| now >= d);
            if due {
                if let Some(t) = self.track_mut(kind) {
                    t.reorder.handle_timeout(now);
                }
                self.drain_track(now, kind);
            }
        }
        if self.need_keyframe && !self.video_dropped && self.video.is_some() {
            if self.muxer.is_none()
                && self.audio.is_some()
                && now >= self.created + self.cfg.keyframe_wait
            {
                self.drop_video();
            } else {
                self.ask_pli(now);
            }
        }
        self.emit();
    }

    /// The publisher of a track started over (it reconnected: a new SSRC, new sequence
    /// numbers and timestamps): the track's buffers are reset and its timeline re-anchored at
    /// the next packet's arrival, so the file goes on where it was; video waits for a keyframe.
    pub fn restart_track(&mut self, now: Instant, track: TrackKind) {
        if self.closed {
            return;
        }
        let cfg = self.cfg.clone();
        let Some(t) = self.track_mut(track) else { return };
        let frames = t.frames;
        let codec = t.depack.codec();
        *t = TrackIn::new(codec, &cfg);
        t.frames = frames;
        if track == TrackKind::Video {
            self.need_keyframe = true;
            self.ask_pli(now);
        }
        self.emit();
    }

    fn drop_video(&mut self) {
        self.video_dropped = true;
        self.outputs.push_back(Output::Note(Note::NoVideo));
    }

    /// When [`RecorderCore::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut take = |d: Option<Instant>| {
            if let Some(d) = d {
                t = Some(t.map_or(d, |t| t.min(d)));
            }
        };
        take(self.video.as_ref().and_then(|v| v.reorder.poll_timeout()));
        take(self.audio.as_ref().and_then(|v| v.reorder.poll_timeout()));
        if self.need_keyframe && !self.video_dropped && self.video.is_some() {
            take(self.next_pli);
            if self.muxer.is_none() && self.audio.is_some() {
                take(Some(self.created + self.cfg.keyframe_wait));
            }
        }
        t
    }

    /// Ends the recording: writes what is held, the Cues and the final patches, then
    /// [`Output::Finished`]. Packets after this are ignored.
    pub fn close(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let _ = now;
        let mut no_video_reason = None;
        if self.video.is_some() && (self.video_dropped || self.muxer.is_none()) {
            no_video_reason = Some("no video keyframe arrived from the publisher");
        }
        if self.muxer.is_none() {
            self.start_file(None, 0.0);
        }
        self.flush_queue(true);
        let mut summary = Summary { no_video_reason, ..Summary::default() };
        if let Some(m) = self.muxer.as_mut() {
            m.finish(&mut self.out);
            summary.duration_ms = m.duration_ms();
            summary.size = m.written();
            summary.has_video = m.has_track(TrackKind::Video);
            summary.has_audio = m.has_track(TrackKind::Audio);
        }
        summary.start_offset_ms = self.origin.unwrap_or(0.0).max(0.0).round() as u64;
        summary.end_offset_ms = summary.start_offset_ms + summary.duration_ms;
        if summary.has_video {
            (summary.width, summary.height) = self.dims;
            summary.video_frames = self.video.as_ref().map_or(0, |t| t.frames);
        }
        summary.audio_frames = self.audio.as_ref().map_or(0, |t| t.frames);
        self.emit();
        self.closed = true;
        self.outputs.push_back(Output::Finished(summary));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: [u8; 24] = [
        0x67, 0x42, 0xC0, 0x0D, 0xD9, 0x01, 0x41, 0xFB, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xC0, 0xF1, 0x42, 0xA4, 0x80,
    ];

    fn keyframe() -> Vec<u8> {
        let mut stap = vec![0x18, 0, SPS.len() as u8];
        stap.extend_from_slice(&SPS);
        stap.extend_from_slice(&[0, 4, 0x68, 0xCE, 0x3C, 0x80, 0, 3, 0x65, 0x88, 0x84]);
        stap
    }

    struct Run {
        core: RecorderCore,
        now: Instant,
        plis: usize,
        notes: Vec<Note>,
        file: Vec<u8>,
        summary: Option<Summary>,
        vseq: u16,
        aseq: u16,
    }

    impl Run {
        fn new(cfg: RecorderConfig) -> Run {
            let now = Instant::now();
            let core = RecorderCore::new(now, cfg);
            Run { core, now, plis: 0, notes: vec![], file: vec![], summary: None, vseq: 0, aseq: 0 }
        }

        fn drain(&mut self) {
            while let Some(o) = self.core.poll_output() {
                match o {
                    Output::Append(b) => self.file.extend_from_slice(&b),
                    Output::Patch(p) => assert!(p.apply(&mut self.file)),
                    Output::Pli => self.plis += 1,
                    Output::Note(n) => self.notes.push(n),
                    Output::Finished(s) => self.summary = Some(s),
                    Output::Nack { .. } => {}
                }
            }
        }

        /// 20 ms of media at `ms`: an Opus frame, and a video frame every other turn.
        fn step(&mut self, ms: u32, video: Option<&[u8]>) {
            let at = self.core.created + Duration::from_millis(u64::from(ms));
            while let Some(t) = self.core.poll_timeout().filter(|&t| t <= at) {
                self.core.handle_timeout(t);
                self.drain();
            }
            self.now = at;
            self.aseq = self.aseq.wrapping_add(1);
            self.core.handle_rtp(at, TrackKind::Audio, self.aseq, ms * 48, true, &[0xFC, 1, 2]);
            if let Some(v) = video {
                self.vseq = self.vseq.wrapping_add(1);
                self.core.handle_rtp(at, TrackKind::Video, self.vseq, ms * 90, true, v);
            }
            self.drain();
        }

        fn close(&mut self) -> Summary {
            self.core.close(self.now);
            self.drain();
            self.summary.expect("Finished")
        }
    }

    #[test]
    fn no_keyframe_asks_for_plis_then_records_audio_only() {
        let mut cfg = RecorderConfig::new(Some(Codec::H264), true);
        cfg.keyframe_wait = Duration::from_secs(2);
        cfg.pli_interval = Duration::from_millis(500);
        let mut r = Run::new(cfg);
        for i in 0..150u32 {
            let delta = [0x41, 0x9A, 0x01];
            r.step(i * 20, (i % 2 == 0).then_some(&delta[..]));
        }
        assert!(r.plis >= 4, "{} PLIs in 2 s at 500 ms", r.plis);
        assert!(r.plis <= 6, "{} PLIs: rate-limited", r.plis);
        assert_eq!(r.notes, vec![Note::NoVideo]);
        let s = r.close();
        assert!(!s.has_video && s.has_audio);
        assert!(s.no_video_reason.is_some());
        // Audio from the 2 s mark on: about 50 frames of 20 ms.
        assert!((45..=52).contains(&s.audio_frames), "{} audio frames", s.audio_frames);
        assert_eq!(s.size, r.file.len() as u64);
    }

    /// Two seconds at 20 ms steps: audio every step, video every other one, a keyframe at
    /// 400 ms and delta frames around it.
    fn feed_key_at_400ms(r: &mut Run) {
        let delta = [0x41, 0x9A, 0x01];
        let key = keyframe();
        for i in 0..100u32 {
            let v = match i {
                _ if i % 2 == 1 => None,
                20 => Some(&key[..]),
                _ => Some(&delta[..]),
            };
            r.step(i * 20, v);
        }
    }

    #[test]
    fn the_file_starts_at_the_first_keyframe() {
        let mut r = Run::new(RecorderConfig::new(Some(Codec::H264), true));
        feed_key_at_400ms(&mut r);
        assert!(r.plis >= 1, "a PLI before the keyframe");
        let s = r.close();
        assert!(s.has_video && s.has_audio && s.no_video_reason.is_none());
        assert_eq!((s.width, s.height), (320, 240));
        // Video frames 20, 22, ..., 98 (40), from the keyframe at 400 ms on.
        assert_eq!(s.video_frames, 40);
        assert_eq!(s.start_offset_ms, 400);
        assert!((1560..=1620).contains(&s.duration_ms), "{} ms", s.duration_ms);
        assert_eq!(s.size, r.file.len() as u64);
    }

    #[test]
    fn sender_reports_align_the_tracks() {
        let mut r = Run::new(RecorderConfig::new(Some(Codec::H264), true));
        // Video timestamp 0 was captured 100 ms after audio timestamp 0.
        let ntp = |ms: u64| ((1000 + ms / 1000) << 32) | (((ms % 1000) << 32) / 1000);
        let t = r.core.created;
        r.core.handle_sender_report(t, TrackKind::Audio, ntp(0), 0);
        r.core.handle_sender_report(t, TrackKind::Video, ntp(100), 0);
        feed_key_at_400ms(&mut r);
        let s = r.close();
        // The keyframe (video timestamp of 400 ms) was captured at 500 ms on the audio clock.
        assert_eq!(s.start_offset_ms, 500);
        assert_eq!(s.video_frames, 40);
    }

    #[test]
    fn audio_just_before_the_first_keyframe_comes_after_it() {
        use matroska_demuxer::{Frame as MkvFrame, MatroskaFile};
        let mut r = Run::new(RecorderConfig::new(Some(Codec::H264), true));
        let key = keyframe();
        r.step(0, None);
        r.step(20, Some(&key[..]));
        // An Opus frame 0.25 ms before the keyframe (12 ticks at 48 kHz), arriving after it.
        r.aseq = r.aseq.wrapping_add(1);
        r.core.handle_rtp(r.now, TrackKind::Audio, r.aseq, 20 * 48 - 12, true, &[0xFC, 1, 2]);
        r.drain();
        for i in 2..20u32 {
            r.step(i * 20, None);
        }
        let s = r.close();
        assert_eq!(s.start_offset_ms, 20);
        let mut mkv = MatroskaFile::open(std::io::Cursor::new(r.file)).expect("readable");
        let mut f = MkvFrame::default();
        assert!(mkv.next_frame(&mut f).expect("a frame"));
        assert_eq!(
            (f.track, f.timestamp, f.is_keyframe),
            (1, 0, Some(true)),
            "video keyframe first"
        );
        assert!(mkv.next_frame(&mut f).expect("a frame"));
        assert_eq!((f.track, f.timestamp), (2, 0), "then the early audio, at 0");
    }
}
