//! Delay-based estimate, in the manner of Google congestion control
//! (draft-ietf-rmcat-gcc-02 §5 and libwebrtc's trendline estimator), written from their
//! descriptions:
//!
//! 1. [`InterArrival`] groups packets sent within 5 ms of a group's first packet (and bursts
//!    that arrive back to back) and yields, per completed group, the send-time and
//!    arrival-time deltas to the previous group.
//! 2. [`Trendline`] accumulates the delay variation (arrival delta minus send delta),
//!    smooths it, fits a least-squares slope over the last 20 groups and compares the slope,
//!    scaled by the number of deltas seen (≤ 60) and a gain of 4, with an adaptive threshold
//!    (starts at 12.5, moves towards |trend| at 0.0087/ms when above it, 0.039/ms when below,
//!    clamped to 6..600): overuse (held for more than 10 ms and still rising), underuse or
//!    normal.
//! 3. [`AimdRateControl`] turns the signal into a rate: increase while normal (×1.08 per second
//!    far from the last congestion point, about one packet per response time near it),
//!    hold on underuse, decrease to 0.85 × the acknowledged bitrate on overuse. The increase
//!    is capped at 1.5 × acknowledged + 10 kbit/s so an application-limited sender does not
//!    run the estimate up unseen.
//! 4. [`RateWindow`] measures a bitrate over a sliding 500 ms window in fixed buckets (used
//!    for the acknowledged bitrate on the receiver's clock, and for the send rate).
//!
//! Written by hand: no maintained crate offers GCC as a sans-IO component we could feed from
//! our own TWCC parser (str0m's lives inside its `Rtc`, webrtc-rs's interceptor is async).

use std::time::{Duration, Instant};

/// Packets sent within this time of a group's first packet form one group.
const BURST: f64 = 5.0;
/// A group never spans more than this (ms) by the burst rule.
const MAX_BURST_GROUP: f64 = 100.0;
const WINDOW: usize = 20;
const SMOOTHING: f64 = 0.9;
const THRESHOLD_GAIN: f64 = 4.0;
const MAX_DELTAS: f64 = 60.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
const OVERUSE_TIME_MS: f64 = 10.0;
const BETA: f64 = 0.85;

/// Bitrate over a sliding window of fixed buckets keyed by a µs clock.
#[derive(Debug, Clone)]
pub struct RateWindow {
    buckets: [u64; RateWindow::BUCKETS],
    /// Bucket index (time / bucket length) of the newest sample.
    head: Option<i64>,
    first_us: Option<i64>,
}

impl Default for RateWindow {
    fn default() -> Self {
        RateWindow { buckets: [0; RateWindow::BUCKETS], head: None, first_us: None }
    }
}

impl RateWindow {
    const BUCKETS: usize = 20;
    const BUCKET_US: i64 = 25_000;
    /// Window length in µs.
    pub const WINDOW_US: i64 = Self::BUCKETS as i64 * Self::BUCKET_US;

    fn advance(&mut self, idx: i64) {
        match self.head {
            None => self.head = Some(idx),
            Some(h) if idx > h => {
                let clear = (idx - h).min(Self::BUCKETS as i64);
                for k in 1..=clear {
                    let b = (h + k).rem_euclid(Self::BUCKETS as i64) as usize;
                    if let Some(v) = self.buckets.get_mut(b) {
                        *v = 0;
                    }
                }
                self.head = Some(idx);
            }
            _ => {}
        }
    }

    /// Adds `bytes` at time `t_us` (samples older than the window are dropped).
    pub fn add(&mut self, t_us: i64, bytes: u64) {
        let idx = t_us.div_euclid(Self::BUCKET_US);
        self.advance(idx);
        self.first_us = Some(self.first_us.map_or(t_us, |f| f.min(t_us)));
        let Some(h) = self.head else { return };
        if h - idx >= Self::BUCKETS as i64 {
            return;
        }
        let b = idx.rem_euclid(Self::BUCKETS as i64) as usize;
        if let Some(v) = self.buckets.get_mut(b) {
            *v = v.saturating_add(bytes);
        }
    }

    /// Bits per second at time `now_us`, or `None` before 150 ms of samples.
    pub fn rate(&mut self, now_us: i64) -> Option<f64> {
        let first = self.first_us?;
        let idx = now_us.div_euclid(Self::BUCKET_US);
        self.advance(idx);
        // The buckets cover the current one up to `now` and the 19 before it.
        let covered =
            (Self::BUCKETS as i64 - 1) * Self::BUCKET_US + (now_us - idx * Self::BUCKET_US);
        let span = (now_us - first).min(covered);
        if span < 150_000 {
            return None;
        }
        let bytes: u64 = self.buckets.iter().sum();
        Some(bytes as f64 * 8.0 * 1e6 / span as f64)
    }
}

#[derive(Debug, Clone, Copy)]
struct Group {
    first_send: Instant,
    last_send: Instant,
    first_arrival: i64,
    last_arrival: i64,
}

/// Deltas between two consecutive packet groups.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupDeltas {
    /// ms between the groups' last send times.
    pub send_ms: f64,
    /// ms between the groups' last arrival times.
    pub arrival_ms: f64,
    /// Arrival time (µs, receiver clock) of the completed group's last packet.
    pub arrival_us: i64,
}

/// Packet grouping (draft-ietf-rmcat-gcc-02 §5.2).
#[derive(Debug, Clone, Default)]
pub struct InterArrival {
    current: Option<Group>,
    previous: Option<Group>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl InterArrival {
    /// Adds one received packet (in send order); returns the deltas when it completes a group.
    pub fn add(&mut self, sent_at: Instant, arrival_us: i64) -> Option<GroupDeltas> {
        let Some(mut cur) = self.current else {
            self.current = Some(Group {
                first_send: sent_at,
                last_send: sent_at,
                first_arrival: arrival_us,
                last_arrival: arrival_us,
            });
            return None;
        };
        if sent_at < cur.first_send {
            // Reordered into an older group: ignored.
            return None;
        }
        let since_first = ms(sent_at.saturating_duration_since(cur.first_send));
        let arrival_gap = (arrival_us - cur.last_arrival) as f64 / 1e3;
        let send_gap = ms(sent_at.saturating_duration_since(cur.last_send));
        let burst = (0.0..=BURST).contains(&arrival_gap)
            && arrival_gap - send_gap < 0.0
            && (arrival_us - cur.first_arrival) as f64 / 1e3 < MAX_BURST_GROUP;
        if since_first <= BURST || burst {
            cur.last_send = cur.last_send.max(sent_at);
            cur.last_arrival = cur.last_arrival.max(arrival_us);
            self.current = Some(cur);
            return None;
        }
        let out = self.previous.and_then(|prev| {
            let arrival_ms = (cur.last_arrival - prev.last_arrival) as f64 / 1e3;
            let send_ms = ms(cur.last_send.saturating_duration_since(prev.last_send));
            // Arrivals going backwards (receiver clock reset, heavy reordering): skip.
            (0.0..3_000.0).contains(&arrival_ms).then_some(GroupDeltas {
                send_ms,
                arrival_ms,
                arrival_us: cur.last_arrival,
            })
        });
        self.previous = Some(cur);
        self.current = Some(Group {
            first_send: sent_at,
            last_send: sent_at,
            first_arrival: arrival_us,
            last_arrival: arrival_us,
        });
        out
    }
}

/// What the detector makes of the delay trend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Normal,
    Overusing,
    Underusing,
}

/// Trendline filter, adaptive threshold and overuse detector (draft §5.3-5.4, libwebrtc's
/// trendline variant of the filter).
#[derive(Debug, Clone)]
pub struct Trendline {
    /// (arrival ms since the first group, smoothed accumulated delay ms).
    window: [(f64, f64); WINDOW],
    len: usize,
    pos: usize,
    first_arrival_us: Option<i64>,
    accumulated: f64,
    smoothed: f64,
    deltas: f64,
    threshold: f64,
    last_threshold_us: Option<i64>,
    /// ms spent above the threshold (`None`: not over it).
    over_time: Option<f64>,
    over_count: u32,
    prev_trend: f64,
    usage: Usage,
}

impl Default for Trendline {
    fn default() -> Self {
        Trendline {
            window: [(0.0, 0.0); WINDOW],
            len: 0,
            pos: 0,
            first_arrival_us: None,
            accumulated: 0.0,
            smoothed: 0.0,
            deltas: 0.0,
            threshold: 12.5,
            last_threshold_us: None,
            over_time: None,
            over_count: 0,
            prev_trend: 0.0,
            usage: Usage::Normal,
        }
    }
}

impl Trendline {
    /// The current signal.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    /// The adaptive threshold (ms), for tests and metrics.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// One pair of group deltas.
    pub fn update(&mut self, d: GroupDeltas) -> Usage {
        let variation = d.arrival_ms - d.send_ms;
        self.deltas = (self.deltas + 1.0).min(1_000.0);
        self.accumulated += variation;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival_us.get_or_insert(d.arrival_us);
        let x = (d.arrival_us - first) as f64 / 1e3;
        if let Some(slot) = self.window.get_mut(self.pos) {
            *slot = (x, self.smoothed);
        }
        self.pos = (self.pos + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        let trend = if self.len == WINDOW { self.slope().unwrap_or(self.prev_trend) } else { 0.0 };
        self.detect(trend, d.send_ms, d.arrival_us);
        self.usage
    }

    fn slope(&self) -> Option<f64> {
        let n = self.len as f64;
        let pts = self.window.get(..self.len)?;
        let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let (num, den) = pts
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + (x - mx) * (y - my), b + (x - mx) * (x - mx)));
        (den > 0.0).then(|| num / den)
    }

    fn detect(&mut self, trend: f64, send_ms: f64, now_us: i64) {
        let modified = self.deltas.min(MAX_DELTAS) * trend * THRESHOLD_GAIN;
        if modified > self.threshold {
            let t = match self.over_time {
                None => send_ms / 2.0,
                Some(t) => t + send_ms,
            };
            self.over_time = Some(t);
            self.over_count += 1;
            if t > OVERUSE_TIME_MS && self.over_count > 1 && trend >= self.prev_trend {
                self.over_time = Some(0.0);
                self.over_count = 0;
                self.usage = Usage::Overusing;
            }
        } else if modified < -self.threshold {
            self.over_time = None;
            self.over_count = 0;
            self.usage = Usage::Underusing;
        } else {
            self.over_time = None;
            self.over_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = trend;
        self.adapt_threshold(modified, now_us);
    }

    fn adapt_threshold(&mut self, modified: f64, now_us: i64) {
        let last = *self.last_threshold_us.get_or_insert(now_us);
        // A sudden spike (a route change, a burst) does not drag the threshold up.
        if modified.abs() > self.threshold + 15.0 {
            self.last_threshold_us = Some(now_us);
            return;
        }
        let k = if modified.abs() < self.threshold { K_DOWN } else { K_UP };
        let dt = ((now_us - last) as f64 / 1e3).clamp(0.0, 100.0);
        self.threshold =
            (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(6.0, 600.0);
        self.last_threshold_us = Some(now_us);
    }
}

/// The rate controller's state (draft §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateState {
    Hold,
    Increase,
    Decrease,
}

/// Additive-increase / multiplicative-decrease rate control on the detector's signal.
#[derive(Debug, Clone)]
pub struct AimdRateControl {
    estimate: f64,
    min: f64,
    max: f64,
    state: RateState,
    /// Mean and normalised variance of the acknowledged bitrate at past decreases.
    capacity: Option<(f64, f64)>,
    last_update: Option<Instant>,
    rtt: Duration,
}

impl AimdRateControl {
    pub fn new(start: f64, min: f64, max: f64) -> AimdRateControl {
        AimdRateControl {
            estimate: start.clamp(min, max),
            min,
            max,
            state: RateState::Hold,
            capacity: None,
            last_update: None,
            rtt: Duration::from_millis(200),
        }
    }

    pub fn estimate(&self) -> f64 {
        self.estimate
    }

    pub fn state(&self) -> RateState {
        self.state
    }

    pub fn set_rtt(&mut self, rtt: Duration) {
        self.rtt = rtt;
    }

    /// Sets the estimate outright (a probe's result).
    pub fn set_estimate(&mut self, now: Instant, bps: f64) {
        self.estimate = bps.clamp(self.min, self.max);
        self.last_update = Some(now);
    }

    /// Standard deviation (bit/s) of the capacity estimate; the variance is normalised by
    /// the mean in kbit/s, as the draft's filter keeps it.
    fn capacity_std(mean: f64, var: f64) -> f64 {
        (var * mean / 1e3).sqrt() * 1e3
    }

    fn near_convergence(&self) -> bool {
        self.capacity.is_some()
    }

    fn record_capacity(&mut self, acked: f64) {
        let (mean, var) = match self.capacity {
            None => (acked, 0.4),
            Some((mean, var)) => {
                let mean = 0.95 * mean + 0.05 * acked;
                let (m, a) = (mean / 1e3, acked / 1e3);
                let var = 0.95 * var + 0.05 * (m - a).powi(2) / m.max(1.0);
                (mean, var.clamp(0.4, 2.5))
            }
        };
        self.capacity = Some((mean, var));
    }

    /// One detector signal with the acknowledged bitrate; returns the new estimate.
    pub fn update(&mut self, now: Instant, usage: Usage, acked: Option<f64>) -> f64 {
        self.state = match (usage, self.state) {
            (Usage::Normal, RateState::Hold) => {
                self.last_update = Some(now);
                RateState::Increase
            }
            (Usage::Normal, s) => s,
            (Usage::Overusing, _) => RateState::Decrease,
            (Usage::Underusing, _) => RateState::Hold,
        };
        let dt = self
            .last_update
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1));
        // The capacity estimate no longer holds once the acked rate leaves its band.
        if let (Some(a), Some((mean, var))) = (acked, self.capacity)
            && a > mean + 3.0 * Self::capacity_std(mean, var)
        {
            self.capacity = None;
        }
        match self.state {
            RateState::Hold => {}
            RateState::Increase => {
                let inc = if self.near_convergence() {
                    // About one packet per response time: bits per frame at 30 fps, split
                    // into packets of at most 1,200 bytes.
                    let response = self.rtt.as_secs_f64() + 0.1;
                    let per_frame = self.estimate / 30.0;
                    let packets = (per_frame / 9_600.0).ceil().max(1.0);
                    ((per_frame / packets) / response).max(4_000.0) * dt.as_secs_f64()
                } else {
                    (self.estimate * (1.08f64.powf(dt.as_secs_f64()) - 1.0))
                        .max(1_000.0 * dt.as_secs_f64())
                };
                let mut next = self.estimate + inc;
                if let Some(a) = acked {
                    next = next.min((1.5 * a + 10_000.0).max(self.estimate));
                }
                self.estimate = next;
            }
            RateState::Decrease => {
                let target = acked.map_or(self.estimate * BETA, |a| a * BETA);
                if let Some(a) = acked {
                    if let Some((mean, var)) = self.capacity
                        && a < mean - 3.0 * Self::capacity_std(mean, var)
                    {
                        self.capacity = None;
                    }
                    self.record_capacity(a);
                }
                self.estimate = target.min(self.estimate);
                self.state = RateState::Hold;
            }
        }
        self.estimate = self.estimate.clamp(self.min, self.max);
        self.last_update = Some(now);
        self.estimate
    }
}

/// The delay-based half of the estimator: grouping, trendline and AIMD over TWCC results.
#[derive(Debug, Clone)]
pub struct DelayBasedBwe {
    arrivals: InterArrival,
    trend: Trendline,
    pub(super) rate: AimdRateControl,
    acked: RateWindow,
    newest_recv_us: Option<i64>,
}

impl DelayBasedBwe {
    pub fn new(start: f64, min: f64, max: f64) -> DelayBasedBwe {
        DelayBasedBwe {
            arrivals: InterArrival::default(),
            trend: Trendline::default(),
            rate: AimdRateControl::new(start, min, max),
            acked: RateWindow::default(),
            newest_recv_us: None,
        }
    }

    /// One received packet (in send order).
    pub fn on_packet(&mut self, sent_at: Instant, recv_us: i64, size: u32) {
        self.acked.add(recv_us, size as u64);
        self.newest_recv_us = Some(self.newest_recv_us.map_or(recv_us, |n| n.max(recv_us)));
        if let Some(d) = self.arrivals.add(sent_at, recv_us) {
            self.trend.update(d);
        }
    }

    /// The acknowledged bitrate (receiver clock), once there is enough of it.
    pub fn acked_bitrate(&mut self) -> Option<f64> {
        let now = self.newest_recv_us?;
        self.acked.rate(now)
    }

    pub fn usage(&self) -> Usage {
        self.trend.usage()
    }

    /// Ends one feedback: the rate controller acts on the detector's signal.
    pub fn on_feedback_end(&mut self, now: Instant) -> f64 {
        let acked = self.acked_bitrate();
        self.rate.update(now, self.trend.usage(), acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_window_measures_and_forgets() {
        let mut w = RateWindow::default();
        assert_eq!(w.rate(0), None);
        // 1,250 bytes every 10 ms = 1 Mbit/s.
        for i in 0..100 {
            w.add(i * 10_000, 1_250);
        }
        let r = w.rate(1_000_000).unwrap();
        assert!((r - 1e6).abs() < 0.06e6, "{r}");
        // Two seconds of silence: the window is empty.
        assert_eq!(w.rate(3_000_000), Some(0.0));
    }

    #[test]
    fn groups_by_five_ms_of_send_time() {
        let t0 = Instant::now();
        let mut ia = InterArrival::default();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Groups at 0-4 ms, 10-14 ms, 20 ms: the third group's first packet completes the second.
        assert_eq!(ia.add(at(0), 50_000), None);
        assert_eq!(ia.add(at(4), 54_000), None);
        assert_eq!(ia.add(at(10), 61_000), None);
        assert_eq!(ia.add(at(14), 66_000), None);
        // (Arriving 5 ms after the previous one with a 6 ms send gap would be a burst.)
        let d = ia.add(at(20), 73_000).unwrap();
        assert_eq!(d.send_ms, 10.0);
        assert_eq!(d.arrival_ms, 12.0);
        assert_eq!(d.arrival_us, 66_000);
    }

    /// A queue that grows steadily is overuse; a steady one is normal.
    #[test]
    fn detector_sees_a_growing_queue() {
        let t0 = Instant::now();
        for (growth_us, want) in [(0, Usage::Normal), (2_000, Usage::Overusing)] {
            let mut t = Trendline::default();
            let mut seen = Usage::Normal;
            for i in 0..60i64 {
                let d = GroupDeltas {
                    send_ms: 20.0,
                    arrival_ms: 20.0 + growth_us as f64 / 1e3,
                    arrival_us: i * (20_000 + growth_us),
                };
                if t.update(d) == Usage::Overusing {
                    seen = Usage::Overusing;
                }
            }
            assert_eq!(seen, want, "growth {growth_us} µs per group");
            let _ = t0;
        }
    }

    #[test]
    fn aimd_increases_multiplicatively_and_decreases_to_acked() {
        let t0 = Instant::now();
        let mut a = AimdRateControl::new(1e6, 30e3, 10e6);
        a.update(t0, Usage::Normal, None);
        let e = a.update(t0 + Duration::from_secs(1), Usage::Normal, None);
        assert!((e - 1.08e6).abs() < 1e3, "{e}");
        let e = a.update(t0 + Duration::from_millis(1100), Usage::Overusing, Some(800e3));
        assert!((e - 680e3).abs() < 1.0, "{e}");
        assert_eq!(a.state(), RateState::Hold);
        // Near the congestion point now: one second of increase is additive, small.
        a.update(t0 + Duration::from_millis(1200), Usage::Normal, Some(680e3));
        let e2 = a.update(t0 + Duration::from_millis(2200), Usage::Normal, Some(680e3));
        assert!(e2 > e && e2 < e * 1.05, "{e} -> {e2}");
        // The increase is capped by what was acknowledged.
        let e3 = a.update(t0 + Duration::from_millis(3200), Usage::Normal, Some(100e3));
        assert_eq!(e3, e2);
    }
}
