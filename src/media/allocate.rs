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

use super::bwe::{Bitrate, ClusterId, SendSideBwe};
use super::consumer::{LegOut, write_padding};
use super::core::{MediaCore, Peer, Role};
use super::egress::Egress;
use super::layers::LayerTarget;
use super::stats::stat;
use crate::router::{LayerMeter, LegId, METER_LAYERS, Router};
use crate::sdp::MediaKind;

/// How often a subscriber's layers are chosen again.
pub(super) const ALLOCATE_EVERY: Duration = Duration::from_millis(250);
/// What an audio track is assumed to take from the budget.
const AUDIO_BPS: u64 = 64_000;
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
        .filter(|(_, m)| m.active(now))
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
    // Within one encoding (the only one, or the lowest when none fits whole): the highest
    // spatial, then temporal, layers that fit.
    let e = if active.len() > 1 { lowest } else { active[0].0 };
    let m = active.iter().find(|(x, _)| *x == e).map(|(_, m)| *m)?;
    let (top_s, top_t) = m.top();
    for s in (0..=top_s).rev() {
        for t in (0..=top_t).rev() {
            let target = LayerTarget { encoding: e, spatial: s, temporal: t };
            if fits(m.rate_upto(now, s, t), above(target)) {
                let full = |x: u8, top: u8| if x == top { METER_LAYERS as u8 - 1 } else { x };
                return Some(LayerTarget {
                    encoding: e,
                    spatial: full(s, top_s),
                    temporal: full(t, top_t),
                });
            }
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
    /// Subscriber `slot`'s estimator timers, layer targets and probes, when due.
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
        if c.next_allocation.is_some_and(|d| d > now) {
            return;
        }
        c.next_allocation = Some(now + ALLOCATE_EVERY);
        // Until the subscriber's first feedback this is the estimator's start value: a link
        // not heard from yet gets the middle encoding, not the top one.
        let estimate = bwe.estimate().0;
        let audio = c.tracks.iter().filter(|o| o.cfg.kind == MediaKind::Audio).count() as u64;
        let mut budget = estimate.saturating_sub(audio * AUDIO_BPS);
        let mut demand = audio * AUDIO_BPS;
        let mut probe_on = None;
        for o in c.tracks.iter_mut() {
            let Some(l) = o.layers.as_deref_mut() else { continue };
            let meters: Vec<&LayerMeter> =
                l.tracks.iter().filter_map(|&t| router.track(t).map(|r| &r.meter)).collect();
            if let Some(top) = meters.iter().rev().find(|m| m.active(now)) {
                let (s, tt) = top.top();
                demand += top.rate_upto(now, s, tt);
            }
            if let Some(target) = choose(now, budget, &meters, l.selector.current()) {
                let before = l.selector.target();
                l.selector.set_target(target);
                if target != before {
                    stat!(stats, layer_switches);
                }
                // What this one takes is not left for the next.
                let e = meters.get(usize::from(target.encoding));
                let used = e.map_or(0, |m| m.rate_upto(now, target.spatial, target.temporal));
                budget = budget.saturating_sub(used);
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
                if !send_probe(router, t, c, slot, track, cluster.id, now, tx, stats) {
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

/// One padding-only packet of probe `cluster` on the RTX stream of `track`'s leg.
#[allow(clippy::too_many_arguments)]
fn send_probe(
    router: &mut Router,
    t: &mut super::transport::Transport,
    c: &super::consumer::Consumer,
    slot: u32,
    track: crate::router::TrackId,
    cluster: ClusterId,
    now: Instant,
    tx: &mut Egress<'_>,
    stats: &super::stats::MediaStats,
) -> bool {
    let (Some(dst), Some(srtp)) = (t.remote, t.srtp_out.as_mut()) else { return false };
    let Some(out) = c.tracks.iter().find(|o| o.track == track) else { return false };
    let Some((pt, ssrc, seq)) = router.next_rtx(track, LegId(slot)) else { return false };
    let ts = out.layers.as_deref().and_then(|l| l.rewriter.last_timestamp()).unwrap_or(0);
    let bwe: Option<&mut SendSideBwe> = t.bwe.as_deref_mut();
    let leg = LegOut {
        dst,
        hosted: t.relayed == Some(dst),
        local_ip: t.local_ip,
        srtp,
        twcc_seq: &mut t.twcc_seq,
        cfg: &out.cfg,
        bwe,
        now,
    };
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
        let t = choose(later, 450_000, &[&m], None).unwrap();
        assert_eq!((t.encoding, t.spatial), (0, 1));
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
