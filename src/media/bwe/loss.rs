//! Loss-based bound (draft-ietf-rmcat-gcc-02 §6, libwebrtc's send-side estimation), from
//! loss fractions measured over intervals:
//!
//! - below 2 %: the bound may rise (8 % per second plus 1 kbit/s per second, from at least
//!   the current estimate); once it passes the configured maximum it stops binding at all;
//! - 2-10 %: hold;
//! - above 10 %: the bound becomes `estimate × (1 - 0.5 × loss)`, at most once per
//!   RTT + 300 ms (so one loss burst is not counted twice).
//!
//! Loss comes from TWCC feedback (packets reported lost over packets reported, accumulated
//! until an interval holds at least 20 packets and 200 ms, or 1 s) or, for a receiver without
//! TWCC, from the fraction-lost field of its receiver reports.

use std::time::{Duration, Instant};

const LOW: f64 = 0.02;
const HIGH: f64 = 0.10;
const DECREASE_INTERVAL: Duration = Duration::from_millis(300);

/// The loss-based bound on the estimate.
#[derive(Debug, Clone)]
pub struct LossController {
    /// `None`: loss does not bind.
    bound: Option<f64>,
    max: f64,
    last_eval: Option<Instant>,
    last_decrease: Option<Instant>,
    lost: u64,
    total: u64,
    since: Option<Instant>,
    last_fraction: f64,
}

impl LossController {
    pub fn new(max: f64) -> LossController {
        LossController {
            bound: None,
            max,
            last_eval: None,
            last_decrease: None,
            lost: 0,
            total: 0,
            since: None,
            last_fraction: 0.0,
        }
    }

    /// The bound, when loss binds.
    pub fn bound(&self) -> Option<f64> {
        self.bound
    }

    /// The last loss fraction evaluated (0..=1).
    pub fn fraction(&self) -> f64 {
        self.last_fraction
    }

    /// Counts from one TWCC feedback; evaluates once the interval is long enough.
    pub fn on_counts(
        &mut self,
        now: Instant,
        lost: u32,
        received: u32,
        estimate: f64,
        rtt: Duration,
    ) {
        self.lost += lost as u64;
        self.total += lost as u64 + received as u64;
        let since = *self.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        let enough = (self.total >= 20 && elapsed >= Duration::from_millis(200))
            || (self.total > 0 && elapsed >= Duration::from_secs(1));
        if enough {
            let fraction = self.lost as f64 / self.total as f64;
            self.lost = 0;
            self.total = 0;
            self.since = Some(now);
            self.evaluate(now, fraction, estimate, rtt);
        }
    }

    /// Caps the bound at `bps` (the feedback timeout: no news is treated as loss).
    pub fn cap(&mut self, bps: f64) {
        self.bound = Some(self.bound.map_or(bps, |b| b.min(bps)));
    }

    /// The link carried `bps` without loss: a bound below it rises to it.
    pub fn raise_to(&mut self, bps: f64) {
        if let Some(b) = self.bound.as_mut() {
            *b = b.max(bps);
        }
    }

    /// A loss fraction measured by the receiver (RR `fraction lost` / 256).
    pub fn evaluate(&mut self, now: Instant, fraction: f64, estimate: f64, rtt: Duration) {
        let fraction = fraction.clamp(0.0, 1.0);
        self.last_fraction = fraction;
        let dt = self
            .last_eval
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
            .min(Duration::from_secs(1))
            .as_secs_f64();
        self.last_eval = Some(now);
        if fraction < LOW {
            if let Some(b) = self.bound {
                let next = b.max(estimate) * 1.08f64.powf(dt) + 1_000.0 * dt;
                self.bound = (next < self.max).then_some(next);
            }
        } else if fraction > HIGH {
            let due = self
                .last_decrease
                .is_none_or(|t| now.saturating_duration_since(t) >= rtt + DECREASE_INTERVAL);
            if due {
                let from = self.bound.map_or(estimate, |b| b.min(estimate));
                self.bound = Some(from * (1.0 - 0.5 * fraction));
                self.last_decrease = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let mut l = LossController::new(5e6);
        // 5 % loss: hold, nothing binds.
        l.evaluate(t0, 0.05, 1e6, rtt);
        assert_eq!(l.bound(), None);
        // 20 %: 1 Mbit/s × 0.9.
        l.evaluate(t0, 0.2, 1e6, rtt);
        assert_eq!(l.bound(), Some(0.9e6));
        // Again within RTT + 300 ms: no second decrease.
        l.evaluate(t0 + Duration::from_millis(200), 0.2, 0.9e6, rtt);
        assert_eq!(l.bound(), Some(0.9e6));
        l.evaluate(t0 + Duration::from_millis(400), 0.3, 0.9e6, rtt);
        assert_eq!(l.bound(), Some(0.9e6 * 0.85));
        // Low loss: climbs about 8 %/s, and stops binding past the maximum.
        let b = l.bound().unwrap();
        l.evaluate(t0 + Duration::from_millis(1400), 0.0, b, rtt);
        let b2 = l.bound().unwrap();
        assert!(b2 > b * 1.07 && b2 < b * 1.09 + 2e3, "{b} -> {b2}");
        for s in 2..60 {
            l.evaluate(t0 + Duration::from_secs(s), 0.0, b2, rtt);
        }
        assert_eq!(l.bound(), None);
    }

    #[test]
    fn twcc_counts_are_accumulated() {
        let t0 = Instant::now();
        let rtt = Duration::from_millis(50);
        let mut l = LossController::new(5e6);
        // 5 packets, 3 lost: too few to judge.
        l.on_counts(t0, 3, 2, 1e6, rtt);
        l.on_counts(t0 + Duration::from_millis(100), 0, 5, 1e6, rtt);
        assert_eq!(l.bound(), None);
        // 20 packets over 300 ms with 5 lost: 25 % → bound 0.875 Mbit/s.
        l.on_counts(t0 + Duration::from_millis(300), 2, 8, 1e6, rtt);
        assert_eq!(l.fraction(), 0.25);
        assert_eq!(l.bound(), Some(0.875e6));
    }
}
