//! What a NACK may cost: a token bucket for retransmissions, filled at a share of the
//! estimate (never more than the estimate leaves beside the media), and the age past which a
//! packet is not worth resending.

use std::time::{Duration, Instant};

/// A packet this young is always worth resending: a receiver's jitter buffer waits for
/// retransmissions about this long and longer on slow links (libwebrtc's senders keep a packet
/// for resending max(1 s, 3 RTT) for the same reason).
pub const MIN_AGE: Duration = Duration::from_secs(1);
/// RTTs a packet stays worth resending on a slow link.
pub const AGE_RTTS: u32 = 3;
/// No packet older than this is resent, whatever the RTT.
pub const MAX_AGE: Duration = Duration::from_secs(3);
/// RTT assumed before any measurement.
pub const DEFAULT_RTT: Duration = Duration::from_millis(200);

/// True if a packet first sent at `sent_at` would arrive too late to help if resent `now`:
/// older than max([`MIN_AGE`], [`AGE_RTTS`] RTTs), capped at [`MAX_AGE`]. (Before: RTT + 450
/// ms, at most 1 s, which refused resends Chromium was still waiting for once each link had
/// 100 ms of delay: BENCHMARKS.md "Loss, delay and reordering".)
pub fn too_old(now: Instant, sent_at: Instant, rtt: Option<Duration>) -> bool {
    let limit = (rtt.unwrap_or(DEFAULT_RTT) * AGE_RTTS).max(MIN_AGE).min(MAX_AGE);
    now.saturating_duration_since(sent_at) > limit
}

/// A token bucket (bytes) refilled at a rate the caller gives on each call.
#[derive(Debug, Clone)]
pub struct RetransmitBudget {
    tokens: f64,
    last: Option<Instant>,
    /// The bucket holds at most this long a time of the rate.
    depth: Duration,
    spent: u64,
    refused: u64,
}

impl Default for RetransmitBudget {
    fn default() -> Self {
        RetransmitBudget::new(Duration::from_millis(250))
    }
}

/// The bucket never holds less than one full-size packet (else nothing could ever pass).
const MIN_DEPTH_BYTES: f64 = 1_500.0;

impl RetransmitBudget {
    pub fn new(depth: Duration) -> RetransmitBudget {
        RetransmitBudget { tokens: 0.0, last: None, depth, spent: 0, refused: 0 }
    }

    fn refill(&mut self, now: Instant, rate_bps: f64) {
        let cap = (rate_bps * self.depth.as_secs_f64() / 8.0).max(MIN_DEPTH_BYTES);
        // The bucket starts full. It used to start empty, counting from the first request, so a
        // transport's first retransmission was always refused, and a burst of NACKs in the
        // first moments after congestion feedback began lost packets for good (str0m
        // subscribers in tests/media_cross_shard.rs: 3 of 6 runs ended with a frame missing).
        if self.last.is_none() {
            self.tokens = cap;
        }
        let dt = self.last.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        self.last = Some(now);
        self.tokens = (self.tokens + rate_bps.max(0.0) * dt.as_secs_f64() / 8.0).min(cap);
    }

    /// Takes `bytes` if the bucket (refilled at `rate_bps` since the last call) holds them.
    pub fn try_spend(&mut self, now: Instant, rate_bps: f64, bytes: usize) -> bool {
        self.refill(now, rate_bps);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            self.spent += bytes as u64;
            true
        } else {
            self.refused += 1;
            false
        }
    }

    /// Bytes granted so far.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// Requests refused for lack of budget so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_limit() {
        let t0 = Instant::now();
        let rtt = Some(Duration::from_millis(100));
        assert!(!too_old(t0 + Duration::from_millis(1000), t0, rtt));
        assert!(too_old(t0 + Duration::from_millis(1001), t0, rtt));
        let slow = Some(Duration::from_millis(500));
        assert!(!too_old(t0 + Duration::from_millis(1500), t0, slow), "3 RTTs on a slow link");
        assert!(too_old(t0 + Duration::from_millis(1501), t0, slow));
        assert!(too_old(t0 + Duration::from_millis(3001), t0, Some(Duration::from_secs(3))));
        assert!(!too_old(t0, t0 + Duration::from_secs(1), None), "a clock going back is not age");
    }

    #[test]
    fn bucket_fills_at_the_rate_up_to_its_depth() {
        let t0 = Instant::now();
        let mut b = RetransmitBudget::new(Duration::from_millis(100));
        // 96 kbit/s = 12,000 bytes/s; depth 1,200 bytes, but at least 1,500. It starts full:
        // a transport's first repair is not refused for want of elapsed time.
        assert!(b.try_spend(t0, 96e3, 1_000));
        assert!(!b.try_spend(t0, 96e3, 1_000), "500 bytes left");
        assert!(b.try_spend(t0 + Duration::from_millis(50), 96e3, 1_000));
        assert!(!b.try_spend(t0 + Duration::from_millis(50), 96e3, 1_000));
        // A long pause does not bank more than the depth.
        assert!(b.try_spend(t0 + Duration::from_secs(10), 96e3, 1_500));
        assert!(!b.try_spend(t0 + Duration::from_secs(10), 96e3, 1));
        assert_eq!(b.spent(), 3_500);
    }
}
