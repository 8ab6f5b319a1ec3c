//! Probing: short clusters of packets sent at a bitrate above the estimate, whose delivery
//! rate (measured from TWCC feedback) lets the estimate climb faster than AIMD would.
//!
//! The controller decides when to probe and at what rate:
//! - at the start: two clusters at 3× and 6× the start bitrate;
//! - after a cluster whose result reached 70 % of its target, while the application wants
//!   more: another at 2× the result (exponential probing);
//! - periodically (every 5 s) while the application wants more than the estimate (our sender
//!   is application-limited below the estimate by layer granularity, like libwebrtc's ALR);
//! - once, 1 s after a drop of the estimate below 66 % of what it was, if the application
//!   still wants more: at 85 % of the pre-drop estimate (fast recovery after a transient).
//!
//! Every target is capped by the configured maximum and the application's demand.
//!
//! The caller drains [`ProbeController::poll_probe`], sends the cluster at its bitrate (media
//! packets count, padding or RTX of recent packets fills) until both `min_packets` and
//! `min_bytes` are reached, tagging each packet with the cluster id in `handle_sent`.
//! [`ProbeController::on_result_packet`] takes the feedback of tagged packets; a cluster is
//! judged once every packet sent in it was reported or 1 s after it started. Its result is
//! the smaller of the rate it was sent at and the rate it arrived at (minus the first
//! arrival's and last send's sizes); if it arrived markedly slower than sent (< 90 %), 95 %
//! of the arrival rate.

use std::time::{Duration, Instant};

use super::Bitrate;
use super::sent::PacketResult;

/// A probe cluster's id (tags the packets sent for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u32);

/// What the caller should send for one probe: packets at `bitrate` (media first, padding or
/// RTX of recent packets to fill) until at least `min_packets` and `min_bytes` went out, each
/// reported to `handle_sent` with `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeCluster {
    pub id: ClusterId,
    pub bitrate: Bitrate,
    pub min_packets: u32,
    pub min_bytes: u32,
}

const MIN_PACKETS: u32 = 5;
const MIN_DURATION: Duration = Duration::from_millis(15);
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(1);
const PERIODIC: Duration = Duration::from_secs(5);
const SLOTS: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Active {
    cluster: ProbeCluster,
    started: Instant,
    sent_packets: u32,
    sent_bytes: u64,
    reported: u32,
    received: u32,
    bytes: u64,
    first_send: Option<Instant>,
    last_send: Option<(Instant, u32)>,
    first_recv: Option<(i64, u32)>,
    last_recv: Option<i64>,
}

impl Active {
    fn result(&self) -> Option<f64> {
        if self.received < self.cluster.min_packets * 4 / 5
            || self.bytes < self.cluster.min_bytes as u64 * 4 / 5
        {
            return None;
        }
        let (first_send, (last_send, last_size)) = (self.first_send?, self.last_send?);
        let ((first_recv, first_size), last_recv) = (self.first_recv?, self.last_recv?);
        let send_s = last_send.saturating_duration_since(first_send).as_secs_f64().max(1e-3);
        let recv_s = ((last_recv - first_recv) as f64 / 1e6).max(1e-3);
        let send_rate = (self.bytes.saturating_sub(last_size as u64)) as f64 * 8.0 / send_s;
        let recv_rate = (self.bytes.saturating_sub(first_size as u64)) as f64 * 8.0 / recv_s;
        let r =
            if recv_rate < 0.9 * send_rate { 0.95 * recv_rate } else { send_rate.min(recv_rate) };
        // A probe proves at most the rate it was sent for: a cluster sent as a burst through a
        // token bucket (a shaper's burst allowance) arrives as fast as it left.
        Some(r.min(self.cluster.bitrate.0 as f64))
    }
}

/// Decides when to probe and measures the clusters.
#[derive(Debug, Clone)]
pub struct ProbeController {
    max: f64,
    demand: f64,
    next_id: u32,
    pending: [Option<ProbeCluster>; SLOTS],
    active: [Option<Active>; SLOTS],
    started: bool,
    next_periodic: Option<Instant>,
    /// (estimate before the drop, when the recovery probe is due).
    recovery: Option<(f64, Instant)>,
    last_estimate: f64,
}

impl ProbeController {
    pub fn new(max: f64) -> ProbeController {
        ProbeController {
            max,
            demand: f64::MAX,
            next_id: 1,
            pending: [None; SLOTS],
            active: [None; SLOTS],
            started: false,
            next_periodic: None,
            recovery: None,
            last_estimate: 0.0,
        }
    }

    /// What the application would send if it could (sum of its preferred layers).
    pub fn set_demand(&mut self, bps: f64) {
        self.demand = bps.max(0.0);
    }

    fn busy(&self) -> bool {
        self.pending.iter().any(Option::is_some) || self.active.iter().any(Option::is_some)
    }

    fn cap(&self) -> f64 {
        self.max.min(self.demand)
    }

    fn queue(&mut self, now: Instant, bps: f64) {
        let bps = bps.min(self.max);
        let Some(free) = self.pending.iter().position(Option::is_none) else { return };
        let id = ClusterId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let min_bytes = (bps * MIN_DURATION.as_secs_f64() / 8.0).ceil() as u32;
        let c =
            ProbeCluster { id, bitrate: Bitrate(bps as u64), min_packets: MIN_PACKETS, min_bytes };
        if let Some(p) = self.pending.get_mut(free) {
            *p = Some(c);
        }
        self.next_periodic = Some(now + PERIODIC);
    }

    /// The first packet goes out: the initial clusters.
    pub fn start(&mut self, now: Instant, estimate: f64) {
        if self.started {
            return;
        }
        self.started = true;
        self.last_estimate = estimate;
        for k in [3.0, 6.0] {
            let target = (estimate * k).min(self.max);
            if target > estimate {
                self.queue(now, target);
            }
        }
        self.next_periodic = Some(now + PERIODIC);
    }

    /// The next cluster to send.
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeCluster> {
        let i = self.pending.iter().position(Option::is_some)?;
        let free = self.active.iter().position(Option::is_none)?;
        let c = self.pending.get_mut(i)?.take()?;
        if let Some(a) = self.active.get_mut(free) {
            *a = Some(Active {
                cluster: c,
                started: now,
                sent_packets: 0,
                sent_bytes: 0,
                reported: 0,
                received: 0,
                bytes: 0,
                first_send: None,
                last_send: None,
                first_recv: None,
                last_recv: None,
            });
        }
        Some(c)
    }

    /// A packet was sent for `id`.
    pub fn on_sent(&mut self, id: ClusterId, size: usize) {
        if let Some(a) = self.active.iter_mut().flatten().find(|a| a.cluster.id == id) {
            a.sent_packets += 1;
            a.sent_bytes += size as u64;
        }
    }

    /// Feedback of a packet of a cluster.
    pub fn on_result_packet(&mut self, r: &PacketResult) {
        let Some(id) = r.cluster else { return };
        let Some(a) = self.active.iter_mut().flatten().find(|a| a.cluster.id == id) else { return };
        a.reported += 1;
        let Some(recv) = r.recv_us else { return };
        a.received += 1;
        a.bytes += r.size as u64;
        a.first_send = Some(a.first_send.map_or(r.sent_at, |f| f.min(r.sent_at)));
        if a.last_send.is_none_or(|(t, _)| r.sent_at >= t) {
            a.last_send = Some((r.sent_at, r.size));
        }
        if a.first_recv.is_none_or(|(t, _)| recv < t) {
            a.first_recv = Some((recv, r.size));
        }
        a.last_recv = Some(a.last_recv.map_or(recv, |l| l.max(recv)));
    }

    /// Judges finished clusters; returns the best result (bit/s) of this round, if any.
    /// `estimate` is the estimate before the result is applied.
    pub fn take_result(&mut self, now: Instant, estimate: f64) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut follow_up: Option<f64> = None;
        for slot in self.active.iter_mut() {
            let Some(a) = slot else { continue };
            let complete = a.sent_packets >= a.cluster.min_packets
                && a.sent_bytes >= a.cluster.min_bytes as u64
                && a.reported >= a.sent_packets;
            let expired = now.saturating_duration_since(a.started) >= CLUSTER_TIMEOUT;
            if !complete && !expired {
                continue;
            }
            if let Some(r) = a.result() {
                best = Some(best.map_or(r, |b: f64| b.max(r)));
                if r >= 0.7 * a.cluster.bitrate.0 as f64 {
                    follow_up = Some(follow_up.map_or(r, |f: f64| f.max(r)));
                }
            }
            *slot = None;
        }
        if let Some(r) = follow_up {
            let target = (2.0 * r).min(self.cap());
            if target > estimate.max(r) * 1.1 && !self.pending.iter().any(Option::is_some) {
                self.queue(now, target);
            }
        }
        best
    }

    /// The estimate moved (after every update): notes drops for the recovery probe.
    pub fn on_estimate(&mut self, now: Instant, estimate: f64) {
        if estimate < 0.66 * self.last_estimate {
            self.recovery = Some((self.last_estimate, now + Duration::from_secs(1)));
        }
        self.last_estimate = estimate;
    }

    /// Timers: periodic and recovery probes. `measurable`: feedback has shown that probes
    /// can be measured (without it the timers run but nothing is queued).
    pub fn handle_timeout(&mut self, now: Instant, estimate: f64, measurable: bool) {
        if !self.started || self.busy() {
            return;
        }
        let wants_more = measurable && self.cap() > estimate * 1.05;
        if let Some((before, at)) = self.recovery
            && now >= at
        {
            self.recovery = None;
            let target = (0.85 * before).min(self.cap());
            // Stale (a probe was under way for long): the moment has passed.
            let fresh = now.saturating_duration_since(at) < Duration::from_secs(4);
            if fresh && wants_more && target > estimate * 1.1 {
                self.queue(now, target);
                return;
            }
        }
        if self.next_periodic.is_some_and(|t| now >= t) {
            self.next_periodic = Some(now + PERIODIC);
            if wants_more {
                let target = (2.0 * estimate).min(self.cap());
                if target > estimate * 1.05 {
                    self.queue(now, target);
                }
            }
        }
    }

    /// The next time [`Self::handle_timeout`] has something to do.
    /// While a probe is under way only its expiry counts (the other timers wait for it).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let expiry = self.active.iter().flatten().map(|a| a.started + CLUSTER_TIMEOUT * 2).min();
        if self.busy() {
            return expiry;
        }
        [self.next_periodic, self.recovery.map(|r| r.1)].into_iter().flatten().min()
    }

    /// Drops clusters that timed out with no feedback at all.
    pub fn expire(&mut self, now: Instant) {
        for slot in self.active.iter_mut() {
            if slot.is_some_and(|a| now.saturating_duration_since(a.started) >= CLUSTER_TIMEOUT * 2)
            {
                *slot = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(seq: u64, c: ClusterId, sent_at: Instant, recv_us: Option<i64>) -> PacketResult {
        PacketResult { seq, sent_at, size: 1_000, cluster: Some(c), rtx: false, recv_us }
    }

    #[test]
    fn start_clusters_and_result_is_the_arrival_rate() {
        let t0 = Instant::now();
        let mut p = ProbeController::new(10e6);
        p.start(t0, 300e3);
        let a = p.poll_probe(t0).unwrap();
        let b = p.poll_probe(t0).unwrap();
        assert_eq!((a.bitrate.0, b.bitrate.0), (900_000, 1_800_000));
        assert_eq!(a.min_packets, 5);
        assert!(p.poll_probe(t0).is_none());
        // Cluster a: 6 packets of 1,000 bytes sent every 8.9 ms (900 kbit/s), arriving every
        // 20 ms (400 kbit/s: a bottleneck).
        for i in 0..6u64 {
            p.on_sent(a.id, 1_000);
            let r = result(i, a.id, t0 + Duration::from_micros(8_889 * i), Some(20_000 * i as i64));
            p.on_result_packet(&r);
        }
        let got = p.take_result(t0 + Duration::from_millis(200), 300e3).unwrap();
        assert!((got - 0.95 * 400e3).abs() < 1e3, "{got}");
        // Not 70 % of 900 kbit/s: no follow-up.
        assert!(p.poll_probe(t0).is_none());
    }

    #[test]
    fn a_good_result_probes_further_and_periodic_probes_need_demand() {
        let t0 = Instant::now();
        let mut p = ProbeController::new(10e6);
        p.set_demand(5e6);
        p.start(t0, 1e6);
        let a = p.poll_probe(t0).unwrap();
        let _ = p.poll_probe(t0).unwrap();
        for i in 0..8u64 {
            p.on_sent(a.id, 1_000);
            // 3 Mbit/s in and out.
            let at = 2_667 * i;
            p.on_result_packet(&result(i, a.id, t0 + Duration::from_micros(at), Some(at as i64)));
        }
        let got = p.take_result(t0 + Duration::from_millis(100), 1e6).unwrap();
        assert!((got - 3e6).abs() < 0.05e6, "{got}");
        // Next: 2 × 3 Mbit/s, capped at the 5 Mbit/s demand.
        let c = p.poll_probe(t0).unwrap();
        assert_eq!(c.bitrate.0, 5_000_000);
        // Clusters with no feedback go; then the periodic probe comes when demand exceeds.
        p.expire(t0 + Duration::from_secs(3));
        p.set_demand(1e6);
        p.handle_timeout(t0 + Duration::from_secs(10), 1e6, true);
        assert!(p.poll_probe(t0 + Duration::from_secs(10)).is_none());
        p.set_demand(3e6);
        p.handle_timeout(t0 + Duration::from_secs(16), 1e6, true);
        assert_eq!(p.poll_probe(t0).unwrap().bitrate.0, 2_000_000);
    }
}
