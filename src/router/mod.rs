//! The SFU router, sans-IO: publisher tracks, subscriber legs, per-subscriber RTP rewriting,
//! the retransmission ring and keyframe-request throttling.
//!
//! What the shard does with it, per packet:
//! 1. SRTP-unprotect the publisher's packet in the receive buffer and parse its header.
//! 2. [`Router::on_publisher_rtp`] stores the plaintext in the track's [`RtxRing`] and yields,
//!    for every subscriber of the track, a [`Forward`]: the subscriber's SSRC, sequence number,
//!    timestamp and payload type for this packet.
//! 3. The shard copies the packet into that subscriber's send slot, patches those header fields
//!    and SRTP-protects it there (the copy is fused with encryption; see `srtp`).
//!
//! Feedback from subscribers: a NACK is mapped back to publisher sequence numbers and answered
//! from the ring ([`Router::on_nack`]); PLI/FIR go to the publisher through
//! [`KeyframeLimiter`] so a crowd of subscribers asks for at most one keyframe per interval.
//!
//! Sequence numbers and timestamps stay continuous for a subscriber when the publisher restarts
//! (new SSRC, new random sequence and timestamp bases): the [`StreamRewriter`] re-anchors so the
//! next packet follows the last one sent. Worked example: last sent seq 5000, ts 90000; the new
//! source starts at seq 17 ts 123456, 40 ms later. Seq offset = 5001 - 17 = 4984 (mod 2^16);
//! ts offset = 90000 + 40 ms × 90 kHz (3600) - 123456 (mod 2^32), so the first packet of the new
//! source goes out as seq 5001, ts 93600.
//!
//! Nothing here allocates per packet: rings and subscriber lists are sized when tracks and legs
//! are added.

use std::time::{Duration, Instant};

#[cfg(test)]
mod tests;

/// Index of a subscriber leg in the shard's leg table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u32);

/// Index of a publisher track in the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(pub u32);

/// Extends 16-bit RTP sequence numbers to 64 bits (RFC 3550 A.1 style, without probation).
#[derive(Debug, Clone, Copy, Default)]
pub struct SeqExtender {
    highest: Option<u64>,
}

impl SeqExtender {
    /// The extended value of `seq` relative to the highest seen so far; updates the highest.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(h) = self.highest else {
            // Start one cycle up so that slightly older packets still map to non-negative values.
            let v = (1u64 << 16) + seq as u64;
            self.highest = Some(v);
            return v;
        };
        let v = Self::nearest(h, seq);
        if v > h {
            self.highest = Some(v);
        }
        v
    }

    /// The extended value of `seq` nearest to `h` (within ±2^15), without updating anything.
    pub fn nearest(h: u64, seq: u16) -> u64 {
        let delta = seq.wrapping_sub(h as u16) as i16;
        h.saturating_add_signed(delta as i64)
    }

    pub fn highest(&self) -> Option<u64> {
        self.highest
    }
}

/// Per (subscriber, track) rewriting of SSRC, sequence number and timestamp, continuous across
/// publisher restarts and layer switches.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    /// The SSRC this subscriber sees.
    pub out_ssrc: u32,
    clock_rate: u32,
    source_ssrc: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    last_out_seq: u16,
    last_out_ts: u32,
    last_sent_at: Option<Instant>,
    in_seq: SeqExtender,
}

/// What one packet becomes for one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
}

impl StreamRewriter {
    pub fn new(
        out_ssrc: u32,
        clock_rate: u32,
        initial_seq: u16,
        initial_ts: u32,
    ) -> StreamRewriter {
        StreamRewriter {
            out_ssrc,
            clock_rate: clock_rate.max(1),
            source_ssrc: None,
            seq_offset: 0,
            ts_offset: 0,
            // The first packet goes out as (initial_seq, initial_ts): as if the previous one
            // had been (initial_seq - 1, initial_ts) with no time elapsed since.
            last_out_seq: initial_seq.wrapping_sub(1),
            last_out_ts: initial_ts,
            last_sent_at: None,
            in_seq: SeqExtender::default(),
        }
    }

    /// Rewrites a packet of `source_ssrc` with sequence `seq` and timestamp `ts` sent at `now`.
    /// Returns None for a packet too old to forward (it arrived after the source switched).
    pub fn rewrite(
        &mut self,
        now: Instant,
        source_ssrc: u32,
        seq: u16,
        ts: u32,
    ) -> Option<Rewritten> {
        if self.source_ssrc != Some(source_ssrc) {
            self.switch_source(now, source_ssrc, seq, ts);
        }
        let ext = self.in_seq.extend(seq);
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        if self.in_seq.highest() == Some(ext) {
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_sent_at = Some(now);
        }
        Some(Rewritten { ssrc: self.out_ssrc, seq: out_seq, ts: out_ts })
    }

    fn switch_source(&mut self, now: Instant, source_ssrc: u32, seq: u16, ts: u32) {
        let next_seq = self.last_out_seq.wrapping_add(1);
        self.seq_offset = next_seq.wrapping_sub(seq);
        let elapsed =
            self.last_sent_at.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let ticks = (elapsed.as_micros() as u64 * self.clock_rate as u64 / 1_000_000).max(1) as u32;
        let next_ts = match self.last_sent_at {
            Some(_) => self.last_out_ts.wrapping_add(ticks),
            None => self.last_out_ts,
        };
        self.ts_offset = next_ts.wrapping_sub(ts);
        self.source_ssrc = Some(source_ssrc);
        self.in_seq = SeqExtender::default();
    }

    /// Maps a sequence number this subscriber saw back to the current source's, for NACKs.
    pub fn source_seq(&self, out_seq: u16) -> u16 {
        out_seq.wrapping_sub(self.seq_offset)
    }

    /// The current source SSRC, if a packet was forwarded.
    pub fn source_ssrc(&self) -> Option<u32> {
        self.source_ssrc
    }

    /// What is added to the current source's RTP timestamps (for translating its sender
    /// reports); meaningful once [`StreamRewriter::source_ssrc`] is set.
    pub fn ts_offset(&self) -> u32 {
        self.ts_offset
    }
}

/// A fixed ring of recent plaintext packets of one track, for answering NACKs without the
/// publisher. Slots are allocated once when the track is created.
pub struct RtxRing {
    slots: Box<[Slot]>,
    slot_size: usize,
    data: Box<[u8]>,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    seq: u16,
    ssrc: u32,
    len: u16,
    valid: bool,
    stored_at: Option<Instant>,
}

impl RtxRing {
    /// `capacity` packets of up to `slot_size` bytes (packets larger are not kept).
    pub fn new(capacity: usize, slot_size: usize) -> RtxRing {
        let capacity = capacity.max(1);
        RtxRing {
            slots: vec![Slot::default(); capacity].into_boxed_slice(),
            slot_size,
            data: vec![0u8; capacity * slot_size].into_boxed_slice(),
        }
    }

    fn index(&self, seq: u16) -> usize {
        seq as usize % self.slots.len()
    }

    /// Keeps a copy of `packet` (the whole plaintext RTP packet) under `(ssrc, seq)`.
    pub fn store(&mut self, now: Instant, ssrc: u32, seq: u16, packet: &[u8]) -> bool {
        if packet.len() > self.slot_size || packet.len() > u16::MAX as usize {
            return false;
        }
        let i = self.index(seq);
        let start = i * self.slot_size;
        self.data[start..start + packet.len()].copy_from_slice(packet);
        self.slots[i] =
            Slot { seq, ssrc, len: packet.len() as u16, valid: true, stored_at: Some(now) };
        true
    }

    /// The stored packet `(ssrc, seq)` if still in the ring and younger than `max_age`.
    pub fn get(&self, now: Instant, ssrc: u32, seq: u16, max_age: Duration) -> Option<&[u8]> {
        self.get_with_time(now, ssrc, seq, max_age).map(|(p, _)| p)
    }

    /// [`RtxRing::get`] with the time the packet was stored (when it was first forwarded).
    pub fn get_with_time(
        &self,
        now: Instant,
        ssrc: u32,
        seq: u16,
        max_age: Duration,
    ) -> Option<(&[u8], Instant)> {
        let i = self.index(seq);
        let s = self.slots[i];
        let at = s.stored_at?;
        let fresh = now.saturating_duration_since(at) <= max_age;
        if s.valid && s.seq == seq && s.ssrc == ssrc && fresh {
            let start = i * self.slot_size;
            Some((&self.data[start..start + s.len as usize], at))
        } else {
            None
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// Limits keyframe requests (PLI/FIR) towards a publisher to one per interval.
#[derive(Debug, Clone)]
pub struct KeyframeLimiter {
    interval: Duration,
    last: Option<Instant>,
    /// Requests swallowed because one was sent recently.
    pub suppressed: u64,
    fir_seq: u8,
}

impl KeyframeLimiter {
    pub fn new(interval: Duration) -> KeyframeLimiter {
        KeyframeLimiter { interval, last: None, suppressed: 0, fir_seq: 0 }
    }

    /// Whether a request arriving at `now` should be forwarded.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => {
                self.suppressed += 1;
                false
            }
            _ => {
                self.last = Some(now);
                true
            }
        }
    }

    /// The next FIR command sequence number (RFC 5104 §4.3.1.1: incremented per new request).
    pub fn next_fir_seq(&mut self) -> u8 {
        self.fir_seq = self.fir_seq.wrapping_add(1);
        self.fir_seq
    }
}

/// Settings of the router.
#[derive(Debug, Clone, Copy)]
pub struct RouterConfig {
    /// Packets kept per video track for retransmission.
    pub rtx_capacity: usize,
    /// Largest packet kept in the ring.
    pub rtx_slot_size: usize,
    /// Oldest packet answered from the ring.
    pub rtx_max_age: Duration,
    /// One keyframe request per publisher track per this interval.
    pub keyframe_interval: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            rtx_capacity: 1024,
            rtx_slot_size: 1500,
            rtx_max_age: Duration::from_millis(1500),
            keyframe_interval: Duration::from_millis(500),
        }
    }
}

/// A publisher's track.
pub struct Track {
    pub clock_rate: u32,
    /// The publisher's current media SSRC.
    pub source_ssrc: u32,
    ring: Option<RtxRing>,
    pub keyframes: KeyframeLimiter,
    subscribers: Vec<Subscription>,
    pub packets: u64,
    /// Bitrate per spatial and temporal layer (the caller notes what it inspected).
    pub meter: LayerMeter,
}

/// Spatial / temporal layers a [`LayerMeter`] tells apart.
pub const METER_LAYERS: usize = 4;

/// A track's received bitrate per (spatial, temporal) layer over the last whole second:
/// what a consumer's layer choice weighs against its bandwidth estimate. Fixed arrays, no
/// allocation.
#[derive(Debug, Clone, Default)]
pub struct LayerMeter {
    window_start: Option<Instant>,
    bytes: [[u64; METER_LAYERS]; METER_LAYERS],
    /// Bits per second per layer over the last closed window.
    rate: [[u64; METER_LAYERS]; METER_LAYERS],
    last_packet: Option<Instant>,
}

/// A layer counts as sending while its packets are younger than this.
pub const METER_ACTIVE: Duration = Duration::from_secs(1);

impl LayerMeter {
    /// `bytes` of layer (`spatial`, `temporal`) arrived at `now` (ids above the last layer
    /// count in the last).
    pub fn note(&mut self, now: Instant, spatial: u8, temporal: u8, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            let us = elapsed.as_micros().max(1) as u64;
            for (r, b) in self.rate.iter_mut().flatten().zip(self.bytes.iter_mut().flatten()) {
                *r = *b * 8 * 1_000_000 / us;
                *b = 0;
            }
            self.window_start = Some(now);
        }
        let s = usize::from(spatial).min(METER_LAYERS - 1);
        let t = usize::from(temporal).min(METER_LAYERS - 1);
        self.bytes[s][t] += bytes as u64;
        self.last_packet = Some(now);
    }

    /// Whether packets arrived within [`METER_ACTIVE`] of `now`.
    pub fn active(&self, now: Instant) -> bool {
        self.last_packet.is_some_and(|t| now.saturating_duration_since(t) < METER_ACTIVE)
    }

    /// Bits per second of every layer up to (`spatial`, `temporal`) inclusive (0 when the
    /// track is not sending).
    pub fn rate_upto(&self, now: Instant, spatial: u8, temporal: u8) -> u64 {
        if !self.active(now) {
            return 0;
        }
        let (s, t) = (usize::from(spatial), usize::from(temporal));
        self.rate.iter().take(s + 1).flat_map(|row| row.iter().take(t + 1)).sum()
    }

    /// The highest spatial and temporal ids that carried anything in the last window.
    pub fn top(&self) -> (u8, u8) {
        let mut top = (0u8, 0u8);
        for (s, row) in self.rate.iter().enumerate() {
            for (t, r) in row.iter().enumerate() {
                if *r > 0 {
                    top.0 = top.0.max(s as u8);
                    top.1 = top.1.max(t as u8);
                }
            }
        }
        top
    }
}

/// One subscriber leg receiving a track.
pub struct Subscription {
    pub leg: LegId,
    pub rewriter: StreamRewriter,
    /// The payload type negotiated on this leg for the track's codec.
    pub pt: u8,
    /// RTX on this leg: (payload type, SSRC, next RTX sequence number).
    pub rtx: Option<(u8, u32, u16)>,
    pub paused: bool,
}

/// What a subscriber leg negotiated for one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeParams {
    /// The SSRC the subscriber sees.
    pub out_ssrc: u32,
    /// The leg's payload type for the track's codec.
    pub pt: u8,
    /// The leg's RTX payload type and SSRC, if negotiated.
    pub rtx: Option<(u8, u32)>,
    /// Sequence number and timestamp of the first packet sent (random, RFC 3550 §5.1).
    pub initial_seq: u16,
    pub initial_ts: u32,
}

/// The header fields of a publisher packet the router needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpFields {
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
}

/// A packet to send to one subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub leg: LegId,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
}

/// A retransmission to send to a subscriber in answer to its NACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit<'a> {
    pub leg: LegId,
    /// The stored plaintext packet (header as the publisher sent it).
    pub packet: &'a [u8],
    /// Header values for the retransmission. With RTX (RFC 4588) the payload must be prefixed
    /// with `osn`, the original (subscriber-side) sequence number.
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub pt: u8,
    pub osn: Option<u16>,
    /// When the packet was stored (first forwarded).
    pub stored_at: Instant,
}

/// Why the router refused something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    #[error("unknown track")]
    UnknownTrack,
    #[error("the leg already subscribes to the track")]
    AlreadySubscribed,
    #[error("the leg does not subscribe to the track")]
    NotSubscribed,
}

/// Tracks and their subscribers on one shard.
#[derive(Default)]
pub struct Router {
    cfg: RouterConfig,
    tracks: Vec<Option<Track>>,
    free: Vec<u32>,
}

impl Router {
    pub fn new(cfg: RouterConfig) -> Router {
        Router { cfg, tracks: Vec::new(), free: Vec::new() }
    }

    /// Adds a publisher track. Video tracks get a retransmission ring.
    pub fn add_track(&mut self, clock_rate: u32, source_ssrc: u32, video: bool) -> TrackId {
        let track = Track {
            clock_rate,
            source_ssrc,
            ring: video.then(|| RtxRing::new(self.cfg.rtx_capacity, self.cfg.rtx_slot_size)),
            keyframes: KeyframeLimiter::new(self.cfg.keyframe_interval),
            subscribers: Vec::new(),
            packets: 0,
            meter: LayerMeter::default(),
        };
        if let Some(i) = self.free.pop() {
            self.tracks[i as usize] = Some(track);
            TrackId(i)
        } else {
            self.tracks.push(Some(track));
            TrackId(self.tracks.len() as u32 - 1)
        }
    }

    /// Removes a track; returns the legs that subscribed to it.
    pub fn remove_track(&mut self, id: TrackId) -> Vec<LegId> {
        match self.tracks.get_mut(id.0 as usize).and_then(Option::take) {
            Some(t) => {
                self.free.push(id.0);
                t.subscribers.into_iter().map(|s| s.leg).collect()
            }
            None => Vec::new(),
        }
    }

    pub fn track(&self, id: TrackId) -> Option<&Track> {
        self.tracks.get(id.0 as usize)?.as_ref()
    }

    pub fn track_mut(&mut self, id: TrackId) -> Option<&mut Track> {
        self.tracks.get_mut(id.0 as usize)?.as_mut()
    }

    /// Subscribes `leg` to `track` with what was negotiated on that leg.
    pub fn subscribe(
        &mut self,
        track: TrackId,
        leg: LegId,
        p: SubscribeParams,
    ) -> Result<(), RouterError> {
        let SubscribeParams { out_ssrc, pt, rtx, initial_seq, initial_ts } = p;
        let t = self.track_mut(track).ok_or(RouterError::UnknownTrack)?;
        if t.subscribers.iter().any(|s| s.leg == leg) {
            return Err(RouterError::AlreadySubscribed);
        }
        t.subscribers.push(Subscription {
            leg,
            rewriter: StreamRewriter::new(out_ssrc, t.clock_rate, initial_seq, initial_ts),
            pt,
            rtx: rtx.map(|(pt, ssrc)| (pt, ssrc, initial_seq.wrapping_add(0x4000))),
            paused: false,
        });
        Ok(())
    }

    pub fn unsubscribe(&mut self, track: TrackId, leg: LegId) -> Result<(), RouterError> {
        let t = self.track_mut(track).ok_or(RouterError::UnknownTrack)?;
        let before = t.subscribers.len();
        t.subscribers.retain(|s| s.leg != leg);
        if t.subscribers.len() == before { Err(RouterError::NotSubscribed) } else { Ok(()) }
    }

    /// Re-points a track at a new source SSRC (publisher restart or `reconnectStream`);
    /// subscribers keep continuous sequence numbers and timestamps.
    pub fn set_source(&mut self, track: TrackId, ssrc: u32) -> Result<(), RouterError> {
        self.track_mut(track).ok_or(RouterError::UnknownTrack)?.source_ssrc = ssrc;
        Ok(())
    }

    /// A publisher packet (already decrypted) of `track`: stores it for retransmission and
    /// calls `emit` with the rewrite for each subscriber.
    pub fn on_publisher_rtp(
        &mut self,
        now: Instant,
        track: TrackId,
        hdr: RtpFields,
        packet: &[u8],
        mut emit: impl FnMut(Forward),
    ) -> Result<usize, RouterError> {
        let RtpFields { ssrc, seq, ts } = hdr;
        let t = self.track_mut(track).ok_or(RouterError::UnknownTrack)?;
        t.packets += 1;
        if let Some(ring) = t.ring.as_mut() {
            ring.store(now, ssrc, seq, packet);
        }
        let mut n = 0;
        for s in t.subscribers.iter_mut().filter(|s| !s.paused) {
            if let Some(r) = s.rewriter.rewrite(now, ssrc, seq, ts) {
                emit(Forward { leg: s.leg, ssrc: r.ssrc, seq: r.seq, ts: r.ts, pt: s.pt });
                n += 1;
            }
        }
        Ok(n)
    }

    /// A subscriber's NACK for its sequence numbers `lost` on `track`: calls `emit` for each
    /// packet still in the ring, and `not_stored` with the publisher's sequence number of each
    /// one that is not. Returns how many could not be answered.
    pub fn on_nack(
        &mut self,
        now: Instant,
        track: TrackId,
        leg: LegId,
        lost: impl IntoIterator<Item = u16>,
        mut emit: impl FnMut(Retransmit<'_>),
        mut not_stored: impl FnMut(u16),
    ) -> Result<usize, RouterError> {
        let max_age = self.cfg.rtx_max_age;
        let t = self
            .tracks
            .get_mut(track.0 as usize)
            .and_then(Option::as_mut)
            .ok_or(RouterError::UnknownTrack)?;
        let Some(sub) = t.subscribers.iter_mut().find(|s| s.leg == leg) else {
            return Err(RouterError::NotSubscribed);
        };
        let Some(ring) = t.ring.as_ref() else {
            return Ok(0);
        };
        let Some(source) = sub.rewriter.source_ssrc() else {
            return Ok(0);
        };
        let mut missing = 0;
        for out_seq in lost {
            let src_seq = sub.rewriter.source_seq(out_seq);
            let Some((packet, stored_at)) = ring.get_with_time(now, source, src_seq, max_age)
            else {
                missing += 1;
                not_stored(src_seq);
                continue;
            };
            let ts = read_ts(packet).map(|ts| ts.wrapping_add(sub.rewriter.ts_offset)).unwrap_or(0);
            match sub.rtx.as_mut() {
                Some((pt, ssrc, next)) => {
                    let seq = *next;
                    *next = next.wrapping_add(1);
                    emit(Retransmit {
                        leg,
                        packet,
                        ssrc: *ssrc,
                        seq,
                        ts,
                        pt: *pt,
                        osn: Some(out_seq),
                        stored_at,
                    });
                }
                None => emit(Retransmit {
                    leg,
                    packet,
                    ssrc: sub.rewriter.out_ssrc,
                    seq: out_seq,
                    ts,
                    pt: sub.pt,
                    osn: None,
                    stored_at,
                }),
            }
        }
        Ok(missing)
    }

    /// The stored packet `(ssrc, seq)` of `track`, with when it was stored, for a
    /// retransmission the caller maps itself (a consumer choosing layers).
    pub fn stored(
        &self,
        now: Instant,
        track: TrackId,
        ssrc: u32,
        seq: u16,
    ) -> Option<(&[u8], Instant)> {
        let t = self.track(track)?;
        t.ring.as_ref()?.get_with_time(now, ssrc, seq, self.cfg.rtx_max_age)
    }

    /// The next RTX packet header of `leg` on `track`: (payload type, SSRC, sequence number),
    /// if the leg negotiated RTX (the one RTX sequence of that leg's stream).
    pub fn next_rtx(&mut self, track: TrackId, leg: LegId) -> Option<(u8, u32, u16)> {
        let sub = self.track_mut(track)?.subscribers.iter_mut().find(|s| s.leg == leg)?;
        let (pt, ssrc, next) = sub.rtx.as_mut()?;
        let seq = *next;
        *next = next.wrapping_add(1);
        Some((*pt, *ssrc, seq))
    }

    /// A subscriber asked for a keyframe: whether to forward the request to the publisher now.
    pub fn on_keyframe_request(
        &mut self,
        now: Instant,
        track: TrackId,
    ) -> Result<bool, RouterError> {
        Ok(self.track_mut(track).ok_or(RouterError::UnknownTrack)?.keyframes.allow(now))
    }

    pub fn subscribers(&self, track: TrackId) -> impl Iterator<Item = &Subscription> {
        self.track(track).into_iter().flat_map(|t| t.subscribers.iter())
    }
}

/// RTP timestamp of a stored plaintext packet (bytes 4..8).
fn read_ts(packet: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(4..8)?.try_into().ok()?))
}
