//! IP cameras (connections of type `IPCAM`): media pulled from an RTSP server and published as
//! a stream, without transcoding.
//!
//! - `h264.rs` (sans-IO): access units into WebRTC RTP payloads (packetization-mode 1) and the
//!   SPS's `profile-level-id`.
//! - this file (sans-IO): the RTP packets of a camera track ([`TrackWriter`]: SSRC, sequence
//!   numbers and timestamps continuous across RTSP sessions), the reconnection back-off
//!   ([`Backoff`]) and what a camera offers ([`CameraLayout`]).
//! - `rtsp.rs` (the shell): one thread, `ringsfu-ingest`, running a tokio current_thread
//!   runtime with one task per camera (the `retina` crate: RTSP over TCP interleaved, UDP as a
//!   fallback, digest auth, keep-alives). It feeds each camera's producer on its session's
//!   home shard through a ring ([`crate::media::IngestFeed`]).
//!
//! The control plane's side (the registry's camera streams, subscriber demand, webhooks) is
//! `control/ipcam.rs`.

pub mod h264;
pub mod rtsp;

use std::time::{Duration, Instant};

use crate::sdp::MediaKind;

/// Payload types of the packets in a camera's ring (subscribers get their own, the router
/// rewrites them).
pub mod pt {
    pub const PCMU: u8 = 0;
    pub const PCMA: u8 = 8;
    pub const H264: u8 = 102;
    pub const OPUS: u8 = 111;
}

/// An audio format browsers decode, passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Pcmu,
    Pcma,
    Opus,
}

impl AudioCodec {
    /// From an SDP encoding name (`PCMU`, `PCMA`, `opus`, any case).
    pub fn from_encoding(name: &str) -> Option<AudioCodec> {
        match name.to_ascii_lowercase().as_str() {
            "pcmu" => Some(AudioCodec::Pcmu),
            "pcma" => Some(AudioCodec::Pcma),
            "opus" => Some(AudioCodec::Opus),
            _ => None,
        }
    }

    pub fn pt(self) -> u8 {
        match self {
            AudioCodec::Pcmu => pt::PCMU,
            AudioCodec::Pcma => pt::PCMA,
            AudioCodec::Opus => pt::OPUS,
        }
    }

    /// SDP encoding name, clock rate and channels.
    pub fn rtpmap(self) -> (&'static str, u32, Option<u32>) {
        match self {
            AudioCodec::Pcmu => ("PCMU", 8000, None),
            AudioCodec::Pcma => ("PCMA", 8000, None),
            AudioCodec::Opus => ("opus", 48000, Some(2)),
        }
    }
}

/// What a camera's DESCRIBE offered that ringsfu forwards: its H.264 video (with the SPS's
/// `profile-level-id`) and its audio when browsers decode it, plus notes on what was left out
/// or may not play (named in the connection's JSON and the log).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CameraLayout {
    /// `profile-level-id` of the H.264 track (browsers' spelling), `None`: no video.
    pub video: Option<String>,
    /// The H.264 profile's name.
    pub video_profile: Option<String>,
    pub audio: Option<AudioCodec>,
    pub notes: Vec<String>,
}

impl CameraLayout {
    /// The tracks in ring order (the index is a packet's track byte): video first.
    pub fn kinds(&self) -> Vec<MediaKind> {
        let mut v = Vec::new();
        if self.video.is_some() {
            v.push(MediaKind::Video);
        }
        if self.audio.is_some() {
            v.push(MediaKind::Audio);
        }
        v
    }
}

/// Writes the RTP packets of one camera track: a fixed SSRC, sequence numbers that continue
/// across RTSP sessions, and timestamps re-based so a new PLAY continues where the last one
/// left off (plus the wall time in between), whatever the camera's own stamps.
#[derive(Debug)]
pub struct TrackWriter {
    pub ssrc: u32,
    pub pt: u8,
    clock_rate: u32,
    seq: u16,
    /// (camera timestamp, our timestamp) of the first frame of this RTSP session.
    anchor: Option<(u32, u32)>,
    /// Our last timestamp and when it was written.
    last: Option<(u32, Instant)>,
}

/// An RTP header (12 bytes, no CSRC or extension).
pub const RTP_HEADER: usize = 12;

impl TrackWriter {
    pub fn new(ssrc: u32, pt: u8, clock_rate: u32, first_seq: u16) -> TrackWriter {
        TrackWriter { ssrc, pt, clock_rate, seq: first_seq, anchor: None, last: None }
    }

    /// A new RTSP session starts: its timestamps are re-anchored at its first frame.
    pub fn restart(&mut self) {
        self.anchor = None;
    }

    /// Our RTP timestamp for a frame the camera stamped `camera_ts`, seen at `now`.
    pub fn timestamp(&mut self, camera_ts: u32, now: Instant) -> u32 {
        let (cam0, ours0) = *self.anchor.get_or_insert_with(|| {
            let ours = match self.last {
                // Continue from the last frame, plus the time that passed since it.
                Some((ts, at)) => {
                    let gap = now.saturating_duration_since(at).max(Duration::from_millis(1));
                    let ticks = gap.as_micros() * u128::from(self.clock_rate) / 1_000_000;
                    ts.wrapping_add(ticks as u32)
                }
                None => rand::random(),
            };
            (camera_ts, ours)
        });
        let ts = ours0.wrapping_add(camera_ts.wrapping_sub(cam0));
        self.last = Some((ts, now));
        ts
    }

    /// Writes one packet (`payload` after a 12-byte header) into `out`; its length, `None`
    /// when `out` is too small.
    pub fn write(
        &mut self,
        out: &mut [u8],
        ts: u32,
        marker: bool,
        payload: &[u8],
    ) -> Option<usize> {
        let len = RTP_HEADER + payload.len();
        let out = out.get_mut(..len)?;
        let (h, body) = out.split_at_mut(RTP_HEADER);
        h[0] = 0x80;
        h[1] = (u8::from(marker) << 7) | (self.pt & 0x7F);
        h[2..4].copy_from_slice(&self.seq.to_be_bytes());
        h[4..8].copy_from_slice(&ts.to_be_bytes());
        h[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        body.copy_from_slice(payload);
        self.seq = self.seq.wrapping_add(1);
        Some(len)
    }
}

/// Reconnection delays: 1 s, doubling up to 30 s; back to 1 s after a connection that worked.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Backoff::FIRST }
    }
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_secs(1);
    pub const MAX: Duration = Duration::from_secs(30);

    /// The delay before the next attempt (each call doubles the following one).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Backoff::MAX);
        d
    }

    /// The camera answered: the next failure waits the first delay again.
    pub fn reset(&mut self) {
        self.next = Backoff::FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtp::RtpView;

    #[test]
    fn packets_continue_across_rtsp_sessions() {
        let t0 = Instant::now();
        let mut w = TrackWriter::new(0x1234, pt::H264, 90_000, 65_535);
        let a = w.timestamp(1_000_000, t0);
        let b = w.timestamp(1_003_000, t0 + Duration::from_millis(33));
        assert_eq!(b.wrapping_sub(a), 3000);
        let mut buf = [0u8; 64];
        let n = w.write(&mut buf, b, true, &[1, 2, 3]).unwrap();
        let v = RtpView::parse(&buf[..n]).unwrap();
        assert_eq!((v.ssrc(), v.sequence_number(), v.timestamp()), (0x1234, 65_535, b));
        assert!(v.marker());
        assert_eq!(v.payload(), &[1, 2, 3]);
        // A new session two seconds later, the camera's clock starting elsewhere.
        w.restart();
        let c = w.timestamp(5, t0 + Duration::from_millis(2033));
        assert_eq!(c.wrapping_sub(b), 180_000);
        let n = w.write(&mut buf, c, false, &[]).unwrap();
        assert_eq!(RtpView::parse(&buf[..n]).unwrap().sequence_number(), 0);
        assert!(w.write(&mut [0u8; 12], c, false, &[1]).is_none());
    }

    #[test]
    fn back_off_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let d: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Backoff::FIRST);
    }
}
