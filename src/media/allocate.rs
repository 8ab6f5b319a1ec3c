//! What each subscriber receives of a layered source (simulcast, VP9 SVC), from its
//! transport's bandwidth estimate ([`super::bwe`]), and the padding that probes for more.
//!
//! Every [`ALLOCATE_EVERY`], per subscriber transport:
//! 1. its estimator's timers run;
//! 2. the budget is the estimate less what its other tracks (audio) take;
//! 3. each consumer choosing layers gets a target ([`choose`]): the highest simulcast
//!    encoding whose whole measured bitrate fits ([`crate::router::LayerMeter`]), then within
//!    it the highest spatial and temporal layers that fit; climbing needs 15 % headroom, so a
//!    budget at the edge of a layer does not flap. Nothing fits: the lowest encoding's lowest
//!    layers (a subscriber always gets something);
//! 4. the estimator is told the demand (what the top layers would take) and sends probe
//!    clusters as padding-only packets on the consumer's RTX stream (RFC 4588 padding: the
//!    receiver drops them after counting them in its transport-wide feedback), so a link that
//!    grew is found without waiting for the AIMD climb.
//!
//! A switch follows from the target: the selector switches encoding at the next keyframe of
//! the target encoding (which it asks for), and temporal / spatial layers at the next picture
//! ([`super::layers`]). Once a second the shard publishes each consumer's estimate, layers,
//! switches and retransmission budget ([`ConsumerBoard`], shown in `/metrics`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bwe::{Bitrate, ClusterId, Usage};
use super::consumer::write_padding;
use super::core::{MediaCore, Peer, Role};
use super::egress::Egress;
use super::layers::LayerTarget;
use super::stats::stat;
use crate::router::{LayerMeter, LegId, METER_LAYERS, Router};
use crate::sdp::MediaKind;

/// How often a subscriber's layers are chosen again.
pub(super) const ALLOCATE_EVERY: Duration = Duration::from_millis(250);
/// What an audio track is assumed to take from the budget (Opus as browsers send it, with
/// its headers).
const AUDIO_BPS: u64 = 48_000;
/// Climbing to a layer needs its rate times this.
const UP_MARGIN: f64 = 1.15;
/// Padding bytes per probe packet (the RTP padding length is one byte).
const PROBE_PAYLOAD: usize = 240;
/// Probe packets sent for one cluster at most.
const PROBE_MAX_PACKETS: u32 = 64;

/// The target for one consumer: `meters[e]` is encoding `e`'s meter (lowest first),
/// `current` what it forwards now, `budget` what its link leaves for it (bit/s). `None`: no
/// encoding is sending (keep the target).
pub(super) fn choose(
    now: Instant,
    budget: u64,
    meters: &[&LayerMeter],
    current: Option<LayerTarget>,
) -> Option<LayerTarget> {
    let fits = |rate: u64, up: bool| {
        let need = if up { rate as f64 * UP_MARGIN } else { rate as f64 };
        need <= budget as f64
    };
    let above = |t: LayerTarget| {
        current.is_none_or(|c| {
            (t.encoding, t.spatial, t.temporal) > (c.encoding, c.spatial, c.temporal)
        })
    };
    let active: Vec<(u8, &LayerMeter)> = meters
        .iter()
        .enumerate()
        .filter(|(_, m)| m.active(now) && m.rate_upto(now, 3, 3) > 0)
        .map(|(e, m)| (e as u8, *m))
        .collect();
    let &(lowest, _) = active.first()?;
    // Simulcast: the highest encoding whose every layer fits.
    if active.len() > 1 {
        for &(e, m) in active.iter().rev() {
            let (s, t) = m.top();
            let target = LayerTarget { encoding: e, spatial: s, temporal: t };
            if fits(m.rate_upto(now, s, t), above(target)) {
                return Some(LayerTarget { encoding: e, spatial: 3, temporal: 3 });
            }
        }
    }
    // Within one encoding (the only one, or the lowest when none fits whole): the full frame
    // rate at the highest spatial layer that fits it (a small picture moving beats a large
    // one stuttering); when not even the lowest fits at full rate, the lowest spatial layer
    // at the highest frame rate that fits.
    let e = if active.len() > 1 { lowest } else { active[0].0 };
    let m = active.iter().find(|(x, _)| *x == e).map(|(_, m)| *m)?;
    let (top_s, top_t) = m.top();
    let full = METER_LAYERS as u8 - 1;
    let whole = |x: u8, top: u8| if x == top { full } else { x };
    for s in (0..=top_s).rev() {
        let target = LayerTarget { encoding: e, spatial: whole(s, top_s), temporal: full };
        if fits(m.rate_upto(now, s, top_t), above(target)) {
            return Some(target);
        }
    }
    for t in (0..top_t).rev() {
        let target = LayerTarget { encoding: e, spatial: 0, temporal: t };
        if fits(m.rate_upto(now, 0, t), above(target)) {
            return Some(target);
        }
    }
    Some(LayerTarget { encoding: e, spatial: 0, temporal: 0 })
}

/// One consumer as `/metrics` shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConsumerRow {
    /// The subscriber transport (peer id) and the publisher it receives.
    pub transport: u64,
    pub publisher: u64,
    pub estimate_bps: u64,
    /// Simulcast encoding, spatial and temporal layer forwarded now and aimed at (`None`:
    /// not a layered source, or nothing forwarded yet).
    pub current: Option<LayerTarget>,
    pub target: Option<LayerTarget>,
    pub switches: u64,
    /// Retransmission bytes granted by the budget, and NACKed packets refused for budget or
    /// age.
    pub rtx_bytes: u64,
    pub rtx_over_budget: u64,
    pub rtx_too_old: u64,
    pub rtt_ms: Option<u64>,
}

/// The consumers of one shard, published once a second for `/metrics` (a lock taken once a
/// second by the shard, and by a scrape).
#[derive(Debug, Default)]
pub struct ConsumerBoard(Mutex<Vec<ConsumerRow>>);

impl ConsumerBoard {
    pub fn rows(&self) -> Vec<ConsumerRow> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, rows: Vec<ConsumerRow>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    }
}

impl MediaCore {
    /// Subscriber `slot`'s estimator timers, a climb under way, layer targets and probes,
    /// when due.
    pub(super) fn allocate(&mut self, slot: u32, now: Instant, tx: &mut Egress<'_>) {
        let MediaCore { router, peers, stats, .. } = self;
        let Some(Some(Peer { transport: t, role: Role::Subscriber(c), .. })) =
            peers.get_mut(slot as usize)
        else {
            return;
        };
        let Some(bwe) = t.bwe.as_deref_mut() else { return };
        if bwe.poll_timeout().is_some_and(|d| d <= now) {
            bwe.handle_timeout(now);
        }
        climb_step(router, t, c, slot, now, tx, stats);
        if c.next_allocation.is_some_and(|d| d > now) {
            return;
        }
        c.next_allocation = Some(now + ALLOCATE_EVERY);
        let Some(bwe) = t.bwe.as_deref_mut() else { return };
        // Until the subscriber's first feedback this is the estimator's start value: a link
        // not heard from yet gets the middle encoding, not the top one.
        let estimate = bwe.estimate().0;
        let base_loss = bwe.loss_fraction();
        let audio = c.tracks.iter().filter(|o| o.cfg.kind == MediaKind::Audio).count() as u64;
        let mut budget = estimate.saturating_sub(audio * AUDIO_BPS);
        let mut demand = audio * AUDIO_BPS;
        let mut probe_on = None;
        let retry_ok = c.climb_retry_at.is_none_or(|r| now >= r);
        for (i, o) in c.tracks.iter_mut().enumerate() {
            let Some(l) = o.layers.as_deref_mut() else { continue };
            let meters: Vec<&LayerMeter> =
                l.tracks.iter().filter_map(|&t| router.track(t).map(|r| &r.meter)).collect();
            if let Some(top) = meters.iter().rev().find(|m| m.active(now)) {
                let (s, tt) = top.top();
                demand += top.rate_upto(now, s, tt);
            }
            let rate_of = |x: LayerTarget| {
                meters
                    .get(usize::from(x.encoding))
                    .map_or(0, |m| m.rate_upto(now, x.spatial, x.temporal))
            };
            if let Some(target) = choose(now, budget, &meters, l.selector.current()) {
                let before = l.selector.target();
                let up = (target.encoding, target.spatial, target.temporal)
                    > (before.encoding, before.spatial, before.temporal);
                let climbing = c.climb.as_ref().filter(|k| k.track == i);
                if !up {
                    // Down (or staying): at once, and a climb of this track ends.
                    if target != before {
                        l.selector.set_target(target);
                        stat!(stats, layer_switches);
                        // The link carries less than it did: the next climb waits as after
                        // a failed one.
                        c.climb_backoff = (c.climb_backoff * 2).clamp(FIRST_RETRY, MAX_RETRY);
                        c.climb_retry_at = Some(now + c.climb_backoff);
                    }
                    if climbing.is_some() && target != before {
                        c.climb = None;
                    }
                } else if o.cfg.rtx.is_none() {
                    // No RTX stream to pad on: the estimate alone decides.
                    l.selector.set_target(target);
                    stat!(stats, layer_switches);
                } else if climbing.is_none_or(|k| k.target != target) && retry_ok {
                    let rates = (rate_of(target), rate_of(before));
                    c.climb = Some(Climb::new(i, target, rates, None, base_loss, now));
                    tracing::debug!(slot, ?target, "climb");
                }
                // The estimate allows no more: try the next layer up once in a while.
                // (Not right after a switch down: that set the next try's time.)
                if !up
                    && c.climb.is_none()
                    && c.climb_retry_at.is_none_or(|r| now >= r)
                    && o.cfg.rtx.is_some()
                    && let Some(next) = next_up(now, &meters, before)
                {
                    let rates = (rate_of(next), rate_of(before));
                    c.climb = Some(Climb::new(i, next, rates, Some(estimate), base_loss, now));
                    tracing::debug!(slot, target = ?next, "climb (speculative)");
                }
                // What this one takes is not left for the next.
                budget = budget.saturating_sub(rate_of(l.selector.target()));
            }
            if probe_on.is_none() {
                probe_on = o.cfg.rtx.is_some().then_some(o.track);
            }
        }
        bwe.set_demand(Bitrate(demand));
        let Some(track) = probe_on else { return };
        let mut clusters = [None; 4];
        for c in clusters.iter_mut() {
            *c = bwe.poll_probe(now);
        }
        for cluster in clusters.into_iter().flatten() {
            let per = PROBE_PAYLOAD + 40;
            let by_bytes = (cluster.min_bytes as usize).div_ceil(per) as u32;
            let n = cluster.min_packets.max(by_bytes).min(PROBE_MAX_PACKETS);
            for _ in 0..n {
                if !send_probe(router, t, c, slot, track, Some(cluster.id), now, tx, stats) {
                    break;
                }
            }
        }
    }

    /// Publishes every consumer's row ([`ConsumerBoard`]).
    pub(super) fn publish_consumers(&mut self) {
        let mut rows = Vec::new();
        for p in self.peers.iter_mut().flatten() {
            let (id, t) = (p.id, &mut p.transport);
            let Role::Subscriber(c) = &p.role else { continue };
            let Some(bwe) = t.bwe.as_deref() else { continue };
            let s = bwe.stats();
            let l = c.tracks.iter().find_map(|o| o.layers.as_deref());
            tracing::debug!(
                transport = id.0,
                estimate = s.estimate.0,
                delay = s.delay_estimate.0,
                loss_bound = ?s.loss_bound,
                remb = ?s.remb,
                usage = ?s.usage,
                loss = s.loss_fraction,
                rtx = s.rtx_bytes,
                rtx_budget = s.rtx_over_budget,
                rtx_old = s.rtx_too_old,
                current = ?l.and_then(|l| l.selector.current()),
                target = ?l.map(|l| l.selector.target()),
                "consumer"
            );
            rows.push(ConsumerRow {
                transport: id.0,
                publisher: c.publisher.0,
                estimate_bps: s.estimate.0,
                current: l.and_then(|l| l.selector.current()),
                target: l.map(|l| l.selector.target()),
                switches: l.map_or(0, |l| l.switches()),
                rtx_bytes: s.rtx_bytes,
                rtx_over_budget: s.rtx_over_budget,
                rtx_too_old: s.rtx_too_old,
                rtt_ms: s.rtt.map(|r| r.as_millis() as u64),
            });
        }
        self.board.publish(rows);
    }
}

/// A consumer climbing to a higher layer: before its target is raised, padding at the rate
/// the higher layer adds goes out on its RTX stream for [`PROBATION`] (paced by the timer).
/// Overuse or an estimate below the layer's rate on the way ends it (and the next attempt waits
/// twice as long, up to [`MAX_RETRY`]); the link carrying it raises the target. A shaper's
/// burst allowance fools a short probe, not a second of the extra rate; a failed attempt costs
/// some delay and padding loss, never a layer the link cannot carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Climb {
    /// Index of the consumer track.
    pub track: usize,
    pub target: LayerTarget,
    /// The estimate below which the climb fails: the target's rate with the climbing margin
    /// when the estimate called for it; for a speculative climb (the estimate did not), 85% of
    /// the estimate at its start.
    pub floor: u64,
    /// The rate the target needs (its rate with the climbing margin), confirmed on success.
    pub need: u64,
    pub pad_bps: u64,
    /// The loss fraction the estimator judged when the climb started.
    pub base_loss: f64,
    pub started: Instant,
    /// Padding bytes sent so far.
    pub sent: u64,
}

impl Climb {
    fn new(
        track: usize,
        target: LayerTarget,
        (rate, now_rate): (u64, u64),
        estimate: Option<u64>,
        base_loss: f64,
        now: Instant,
    ) -> Climb {
        let pad = (rate as f64 * PAD_FACTOR) as u64;
        let need = (rate as f64 * UP_MARGIN) as u64;
        Climb {
            track,
            target,
            floor: estimate.map_or(need, |e| e * 85 / 100),
            need,
            pad_bps: pad.saturating_sub(now_rate).max(MIN_PAD_BPS),
            base_loss,
            started: now,
            sent: 0,
        }
    }
}

/// The next layer above `current` that is sending: the next simulcast encoding (whole), or
/// within one encoding the next temporal, then spatial, layer.
fn next_up(now: Instant, meters: &[&LayerMeter], current: LayerTarget) -> Option<LayerTarget> {
    let m = meters.get(usize::from(current.encoding))?;
    let (top_s, top_t) = m.top();
    let full = METER_LAYERS as u8 - 1;
    if current.temporal < top_t && current.temporal < full {
        return Some(LayerTarget { temporal: current.temporal + 1, ..current });
    }
    if current.spatial < top_s && current.spatial < full {
        let spatial = if current.spatial + 1 == top_s { full } else { current.spatial + 1 };
        return Some(LayerTarget { spatial, temporal: full, ..current });
    }
    let e = current.encoding + 1;
    let next = meters.get(usize::from(e))?;
    (next.active(now) && next.rate_upto(now, 3, 3) > 0).then_some(LayerTarget {
        encoding: e,
        spatial: full,
        temporal: full,
    })
}

/// How long a climb pads before the target is raised.
pub(super) const PROBATION: Duration = Duration::from_millis(1_500);
/// The least padding rate of a climb.
const MIN_PAD_BPS: u64 = 100_000;
/// Padding of a climb: the higher layer's rate times this (RTP/SRTP overhead over the
/// payload rate the meter counts, and a margin), less what is forwarded now.
const PAD_FACTOR: f64 = 1.25;
/// After a change of target (or at the start), a climb the estimate does not call for is
/// tried once this long has passed: the estimate of a link used below its capacity cannot
/// grow past what it carries (GCC limits it to 1.5 x the acknowledged rate), so climbing
/// needs a test.
const SPECULATE_AFTER: Duration = Duration::from_secs(2);
/// Wait after the first failed climb, doubled per failure up to [`MAX_RETRY`].
pub(super) const FIRST_RETRY: Duration = Duration::from_secs(2);
const MAX_RETRY: Duration = Duration::from_secs(8);
/// Loss the link may add while a climb pads, over what it showed before (the last loss the
/// estimator judged): a link with random loss can still climb.
const CLIMB_MAX_LOSS: f64 = 0.02;
/// Padding packets one timer run sends for a climb, at most.
const CLIMB_BURST: u64 = 16;

/// One timer run of subscriber `c`'s climb, if any: padding due, or the verdict.
#[allow(clippy::too_many_arguments)]
fn climb_step(
    router: &mut Router,
    t: &mut super::transport::Transport,
    c: &mut super::consumer::Consumer,
    slot: u32,
    now: Instant,
    tx: &mut Egress<'_>,
    stats: &super::stats::MediaStats,
) {
    let Some(k) = c.climb else { return };
    let Some(bwe) = t.bwe.as_deref() else { return };
    let s = bwe.stats();
    // A shaper that drops rather than queues shows no delay: loss ends a climb too.
    let lossy = s.loss_fraction > k.base_loss + CLIMB_MAX_LOSS
        && now.saturating_duration_since(k.started) >= Duration::from_millis(100);
    if s.usage == Usage::Overusing || s.estimate.0 < k.floor || lossy {
        tracing::debug!(slot, target = ?k.target, usage = ?s.usage, estimate = s.estimate.0, floor = k.floor, "climb failed");
        c.climb = None;
        c.climb_backoff = (c.climb_backoff * 2).clamp(FIRST_RETRY, MAX_RETRY);
        c.climb_retry_at = Some(now + c.climb_backoff);
        return;
    }
    let elapsed = now.saturating_duration_since(k.started);
    if elapsed >= PROBATION {
        tracing::debug!(slot, target = ?k.target, padded = k.sent, "climb done");
        c.climb = None;
        c.climb_backoff = Duration::ZERO;
        c.climb_retry_at = Some(now + SPECULATE_AFTER);
        if let Some(b) = t.bwe.as_deref_mut() {
            b.confirm(now, k.need);
        }
        if let Some(l) = c.tracks.get_mut(k.track).and_then(|o| o.layers.as_deref_mut()) {
            l.selector.set_target(k.target);
            stat!(stats, layer_switches);
        }
        return;
    }
    let due = (k.pad_bps as u128 * elapsed.as_micros() / 8_000_000) as u64;
    let per = (PROBE_PAYLOAD + 40) as u64;
    let n = (due.saturating_sub(k.sent) / per).min(CLIMB_BURST);
    let Some(track) = c.tracks.get(k.track).map(|o| o.track) else { return };
    let mut sent = 0;
    for _ in 0..n {
        if !send_probe(router, t, c, slot, track, None, now, tx, stats) {
            break;
        }
        sent += per;
    }
    if let Some(k) = c.climb.as_mut() {
        k.sent += sent;
    }
}

/// One padding-only packet of probe `cluster` on the RTX stream of `track`'s leg.
#[allow(clippy::too_many_arguments)]
fn send_probe(
    router: &mut Router,
    t: &mut super::transport::Transport,
    c: &super::consumer::Consumer,
    slot: u32,
    track: crate::router::TrackId,
    cluster: Option<ClusterId>,
    now: Instant,
    tx: &mut Egress<'_>,
    stats: &super::stats::MediaStats,
) -> bool {
    let Some(out) = c.tracks.iter().find(|o| o.track == track) else { return false };
    if t.remote.is_none() || t.srtp_out.is_none() {
        return false;
    }
    let Some((pt, ssrc, seq)) = router.next_rtx(track, LegId(slot)) else { return false };
    let ts = out.layers.as_deref().and_then(|l| l.rewriter.last_timestamp()).unwrap_or(0);
    let Some(leg) = t.leg(&out.cfg, now) else { return false };
    let sent = write_padding(tx, leg, (pt, ssrc, seq, ts), PROBE_PAYLOAD, cluster, stats);
    if sent {
        stat!(stats, probe_packets);
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meter(now: Instant, layers: &[(u8, u8, u64)]) -> LayerMeter {
        // Two windows: the second closes the first, whose rates are then read.
        let mut m = LayerMeter::default();
        for &(s, t, bps) in layers {
            m.note(now, s, t, (bps / 8) as usize);
        }
        let later = now + Duration::from_secs(1);
        m.note(later, 0, 0, 0);
        m
    }

    #[test]
    fn simulcast_takes_the_highest_encoding_that_fits() {
        let now = Instant::now();
        let lo = meter(now, &[(0, 0, 150_000)]);
        let mid = meter(now, &[(0, 0, 500_000)]);
        let hi = meter(now, &[(0, 0, 1_500_000)]);
        let later = now + Duration::from_secs(1);
        let m = [&lo, &mid, &hi];
        assert_eq!(choose(later, 3_000_000, &m, None).unwrap().encoding, 2);
        assert_eq!(choose(later, 1_000_000, &m, None).unwrap().encoding, 1);
        // 520 k is enough to stay on encoding 1, not to climb to it.
        let on_mid = Some(LayerTarget { encoding: 1, spatial: 0, temporal: 0 });
        assert_eq!(choose(later, 520_000, &m, on_mid).unwrap().encoding, 1);
        let on_lo = Some(LayerTarget { encoding: 0, spatial: 0, temporal: 0 });
        assert_eq!(choose(later, 520_000, &m, on_lo).unwrap().encoding, 0);
        // Nothing fits: the lowest, at its lowest layers.
        let t = choose(later, 50_000, &m, None).unwrap();
        assert_eq!((t.encoding, t.spatial, t.temporal), (0, 0, 0));
    }

    #[test]
    fn an_svc_stream_drops_spatial_then_temporal_layers() {
        let now = Instant::now();
        // L3T3: spatial 0/1/2 at 100/300/900 k, each split over three temporal layers.
        let mut layers = Vec::new();
        for (s, r) in [(0u8, 100_000u64), (1, 300_000), (2, 900_000)] {
            for t in 0..3u8 {
                layers.push((s, t, r / 3));
            }
        }
        let m = meter(now, &layers);
        let later = now + Duration::from_secs(1);
        let all = choose(later, 5_000_000, &[&m], None).unwrap();
        assert_eq!((all.spatial, all.temporal), (3, 3));
        // 450 k: spatial 1 at every frame rate (400 k with the margin, 460 k, does not fit
        // from nothing; from spatial 1 it does).
        let t = choose(later, 450_000, &[&m], None).unwrap();
        assert_eq!((t.encoding, t.spatial, t.temporal), (0, 0, 3));
        let on_s1 = Some(LayerTarget { encoding: 0, spatial: 1, temporal: 3 });
        let t = choose(later, 450_000, &[&m], on_s1).unwrap();
        assert_eq!((t.spatial, t.temporal), (1, 3));
        // 80 k: not even spatial 0 at full rate (100 k): spatial 0 at two thirds of it.
        let t = choose(later, 80_000, &[&m], None).unwrap();
        assert_eq!((t.spatial, t.temporal), (0, 1));
    }

    #[test]
    fn nothing_sending_keeps_the_target() {
        let now = Instant::now();
        let m = LayerMeter::default();
        assert_eq!(choose(now, 1_000_000, &[&m], None), None);
    }
}
