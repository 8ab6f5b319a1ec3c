//! What a receiver of a publisher's RTP reports back, sans-IO: RFC 3550 reception statistics
//! for receiver reports, the sequence-gap tracker that drives NACKs, and the transport-wide
//! congestion-control recorder whose feedback lets the browser's send-side estimator ramp up.
//!
//! NACK timing: a missing packet is NACKed at once, then again each retry interval until it
//! arrives, its tries are spent or it is too old. Until the round-trip time to the publisher is
//! known the interval is a fixed 40 ms and the tries 3; once measured (RFC 3611 RRTR/DLRR,
//! [`NackTracker::set_rtt`]) the interval is one RTT plus a quarter and 5 ms for the sender's
//! pacing (10 ms to 500 ms), and the tries as many as fit in 400 ms (3 to 10): on a short path a
//! lost retransmission is asked for again sooner and more often, on a long one the sender is
//! not asked twice for a packet that is still on its way.
//!
//! A packet whose tries are spent is kept, silent, for [`GIVE_UP_AFTER`] after its last NACK:
//! a retransmission that comes late is still known as one (not dropped as a duplicate), and a
//! subscriber asking ringsfu for it ([`NackTracker::renack`]) gets it asked for once more, at
//! most once per retry interval and [`MAX_RENACKS`] times. Under heavy loss on the
//! publisher's link a few tries are not enough (at 20% each way, a NACK and its
//! retransmission both arrive 64% of the time, so three tries leave one such packet in 20
//! missing); the subscriber's own NACKs, which go on while its jitter buffer still waits for
//! the packet, keep the repair going as long as it is still of use.
//!
//! Everything here is sized once when a track is added; the per-packet calls never allocate.

use std::time::{Duration, Instant};

use crate::router::SeqExtender;
use crate::wire::rtcp::rr::ReportBlock;

/// RFC 3550 A.1/A.3/A.8 reception statistics of one source.
#[derive(Debug, Clone)]
pub struct ReceiveStats {
    seq: SeqExtender,
    base: Option<u64>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    clock_rate: u32,
    /// Interarrival jitter in timestamp units, scaled by 16 (RFC 3550 A.8).
    jitter_q4: u64,
    last_transit: Option<i64>,
    /// Middle 32 bits of the last sender report's NTP time and when it arrived.
    last_sr: Option<(u32, Instant)>,
}

impl ReceiveStats {
    pub fn new(clock_rate: u32) -> ReceiveStats {
        ReceiveStats {
            seq: SeqExtender::default(),
            base: None,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            clock_rate: clock_rate.max(1),
            jitter_q4: 0,
            last_transit: None,
            last_sr: None,
        }
    }

    /// One packet arrived; returns its extended sequence number and the highest one seen
    /// before it (`None` for the first packet).
    pub fn on_packet(&mut self, arrival: Duration, seq: u16, ts: u32) -> (u64, Option<u64>) {
        let before = self.seq.highest();
        let ext = self.seq.extend(seq);
        if self.base.is_none() {
            self.base = Some(ext);
        }
        self.received += 1;
        // Arrival in timestamp units; wrapping arithmetic keeps the difference meaningful.
        let arrival_ts =
            (arrival.as_micros() as u64).wrapping_mul(self.clock_rate as u64) / 1_000_000;
        let transit = arrival_ts as i64 - ts as i64;
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs() & 0xFFFF_FFFF;
            // J += (|D| - J) / 16, kept scaled by 16.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
        (ext, before)
    }

    /// The highest extended sequence number received.
    pub fn highest(&self) -> Option<u64> {
        self.seq.highest()
    }

    /// A sender report of this source arrived (`ntp` = its 64-bit NTP time).
    pub fn on_sender_report(&mut self, now: Instant, ntp: u64) {
        self.last_sr = Some(((ntp >> 16) as u32, now));
    }

    /// The report block for `ssrc`, and the interval counters reset (RFC 3550 A.3).
    pub fn report(&mut self, now: Instant, ssrc: u32) -> Option<ReportBlock> {
        let base = self.base?;
        let highest = self.seq.highest()?;
        let expected = highest + 1 - base;
        let lost = expected as i64 - self.received as i64;
        let expected_interval = expected - self.expected_prior;
        let received_interval = self.received - self.received_prior;
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval as i64 - received_interval as i64;
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval as i64).min(255) as u8
        };
        let (last_sr, delay_since_last_sr) = match self.last_sr {
            Some((mid, at)) => {
                let d = now.saturating_duration_since(at);
                // 1/65536 s units.
                (mid, ((d.as_micros() as u64 * 65536) / 1_000_000).min(u32::MAX as u64) as u32)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: lost.clamp(-(1 << 23), (1 << 23) - 1) as i32,
            extended_highest_seq: highest as u32,
            jitter: (self.jitter_q4 >> 4) as u32,
            last_sr,
            delay_since_last_sr,
        })
    }

    /// Packets received so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

/// Sequence numbers missing from a publisher's stream, NACKed until they arrive, a few tries
/// or a deadline pass.
#[derive(Debug, Clone)]
pub struct NackTracker {
    /// Bounded by `cap`.
    missing: Vec<Missing>,
    cap: usize,
    /// Time between NACKs of one packet ([`RETRY_AFTER`] until an RTT is known).
    retry: Duration,
    /// NACKs per missing packet ([`MAX_TRIES`] until an RTT is known).
    max_tries: u8,
}

/// One packet not received yet.
#[derive(Debug, Clone, Copy)]
struct Missing {
    /// Extended sequence number.
    ext: u64,
    /// When it was last NACKed (`None`: due at once).
    last: Option<Instant>,
    /// NACKs sent since it went missing or was last asked for again.
    tries: u8,
    /// Times a subscriber's NACK had it asked for again ([`NackTracker::renack`]).
    renacked: u8,
}

/// Gaps larger than this are a source restart or a long outage, not loss to repair.
const MAX_GAP: u64 = 256;
/// NACKs per missing packet while the RTT is unknown.
const MAX_TRIES: u8 = 3;
/// Time between NACKs of one packet while the RTT is unknown (about one round trip on a LAN
/// plus the sender's pacing).
const RETRY_AFTER: Duration = Duration::from_millis(40);
/// Bounds of the retry interval derived from a measured RTT.
const RETRY_MIN: Duration = Duration::from_millis(10);
const RETRY_MAX: Duration = Duration::from_millis(500);
/// With a measured RTT, the tries are as many as fit in this (3 to [`TRIES_MAX`]).
const TRY_SPAN: Duration = Duration::from_millis(400);
const TRIES_MAX: u8 = 10;
/// A packet whose tries are spent is forgotten this long after its last NACK.
const GIVE_UP_AFTER: Duration = Duration::from_millis(1000);
/// Subscribers' NACKs have one packet asked for again at most this many times.
pub const MAX_RENACKS: u8 = 10;

impl NackTracker {
    pub fn new(cap: usize) -> NackTracker {
        NackTracker {
            missing: Vec::with_capacity(cap),
            cap,
            retry: RETRY_AFTER,
            max_tries: MAX_TRIES,
        }
    }

    /// The round-trip time to the sender was measured: NACK retries are timed by it (see the
    /// module docs).
    pub fn set_rtt(&mut self, rtt: Duration) {
        let retry = (rtt + rtt / 4 + Duration::from_millis(5)).clamp(RETRY_MIN, RETRY_MAX);
        self.retry = retry;
        let fit = TRY_SPAN.as_micros() / retry.as_micros().max(1);
        self.max_tries = fit.clamp(MAX_TRIES as u128, TRIES_MAX as u128) as u8;
    }

    /// The current retry interval and tries per packet.
    pub fn timing(&self) -> (Duration, u8) {
        (self.retry, self.max_tries)
    }

    /// Records an arrival with extended sequence `ext` given the highest seen before it.
    pub fn on_packet(&mut self, ext: u64, highest_before: Option<u64>) {
        if let Some(i) = self.missing.iter().position(|m| m.ext == ext) {
            self.missing.swap_remove(i);
            return;
        }
        let Some(h) = highest_before else { return };
        if ext <= h + 1 {
            return;
        }
        if ext - h > MAX_GAP {
            self.missing.clear();
            return;
        }
        for s in h + 1..ext {
            if self.missing.len() == self.cap {
                // Drop the oldest: the newest losses are the ones still worth repairing.
                if let Some((i, _)) = self.missing.iter().enumerate().min_by_key(|(_, m)| m.ext) {
                    self.missing.swap_remove(i);
                }
            }
            self.missing.push(Missing { ext: s, last: None, tries: 0, renacked: 0 });
        }
    }

    /// Whether extended sequence number `ext` is tracked as missing (its tries spent or not).
    pub fn is_missing(&self, ext: u64) -> bool {
        self.missing.iter().any(|m| m.ext == ext)
    }

    /// A subscriber asked for `ext`, which never arrived: if its tries are spent, it is not
    /// forgotten yet, a retry interval has passed since its last NACK and it was not asked for
    /// again [`MAX_RENACKS`] times already, it is due once more now. True when it was.
    pub fn renack(&mut self, ext: u64, now: Instant) -> bool {
        let (retry, tries) = (self.retry, self.max_tries);
        let Some(m) = self.missing.iter_mut().find(|m| m.ext == ext) else { return false };
        let Some(last) = m.last else { return false };
        let since = now.saturating_duration_since(last);
        if m.tries < tries || since < retry || since >= GIVE_UP_AFTER || m.renacked >= MAX_RENACKS {
            return false;
        }
        m.renacked += 1;
        m.tries = tries - 1;
        m.last = None;
        true
    }

    /// The sequence numbers (16-bit, ascending) to NACK now; updates tries.
    pub fn due(&mut self, now: Instant, out: &mut Vec<u16>) {
        out.clear();
        let (retry, tries) = (self.retry, self.max_tries);
        // Packets whose tries are spent are forgotten a while after their last NACK.
        self.missing.retain(|m| {
            m.tries < tries
                || m.last.is_some_and(|t| now.saturating_duration_since(t) < GIVE_UP_AFTER)
        });
        self.missing.sort_unstable_by_key(|m| m.ext);
        for m in self.missing.iter_mut().filter(|m| m.tries < tries) {
            let ready = match m.last {
                None => true,
                Some(t) => now.saturating_duration_since(t) >= retry,
            };
            if ready {
                m.last = Some(now);
                m.tries += 1;
                out.push(m.ext as u16);
            }
        }
    }

    /// When [`NackTracker::due`] has something to NACK next (`now` for a gap never NACKed).
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        self.missing
            .iter()
            .filter(|m| m.tries < self.max_tries)
            .map(|m| m.last.map_or(now, |t| t + self.retry))
            .min()
    }

    /// Whether any packet is still to be NACKed (its tries not spent).
    pub fn pending(&self) -> bool {
        self.missing.iter().any(|m| m.tries < self.max_tries)
    }
}

/// Arrival times of transport-wide sequence numbers between two feedback packets.
#[derive(Debug, Clone)]
pub struct TwccRecorder {
    seq: SeqExtender,
    /// Next sequence number to report (extended).
    next: Option<u64>,
    highest: u64,
    /// Arrival offsets from the shard epoch, indexed by extended seq modulo the ring size.
    ring: Box<[Option<Duration>]>,
    deltas: Vec<Option<i16>>,
    fb_count: u8,
}

/// Sequence numbers covered by the ring (and at most by one feedback packet).
const TWCC_RING: usize = 1024;

impl Default for TwccRecorder {
    fn default() -> Self {
        TwccRecorder {
            seq: SeqExtender::default(),
            next: None,
            highest: 0,
            ring: vec![None; TWCC_RING].into_boxed_slice(),
            deltas: Vec::with_capacity(TWCC_RING),
            fb_count: 0,
        }
    }
}

/// One feedback's fixed fields, ready for `wire::rtcp::twcc::write` with
/// [`TwccRecorder::deltas`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TwccFeedback {
    pub base_seq: u16,
    pub reference_time: i32,
    pub fb_pkt_count: u8,
}

impl TwccRecorder {
    /// A packet with transport-wide sequence `seq` arrived `arrival` after the epoch.
    pub fn on_packet(&mut self, seq: u16, arrival: Duration) {
        let ext = self.seq.extend(seq);
        match self.next {
            None => self.next = Some(ext),
            // Older than what was already reported: too late to tell.
            Some(n) if ext < n => return,
            Some(n) if ext >= n + TWCC_RING as u64 => {
                // A jump past the ring: report from the new packet on.
                self.ring.iter_mut().for_each(|r| *r = None);
                self.next = Some(ext);
            }
            _ => {}
        }
        self.ring[(ext % TWCC_RING as u64) as usize] = Some(arrival);
        self.highest = self.highest.max(ext);
    }

    /// Builds the next feedback (header fields; the deltas are in [`Self::deltas`]) covering
    /// every sequence number since the previous one, or `None` when nothing new arrived.
    pub fn build(&mut self) -> Option<TwccFeedback> {
        let next = self.next?;
        if self.highest < next {
            return None;
        }
        let first = (next..=self.highest).find_map(|s| self.ring[(s % TWCC_RING as u64) as usize]);
        let first = first?;
        // Reference time in 64 ms units; deltas count from it in 250 µs units.
        let reference_64ms = (first.as_micros() / 64_000) as i64;
        let mut prev_us = reference_64ms * 64_000;
        self.deltas.clear();
        let mut end = next;
        for s in next..=self.highest {
            let slot = &mut self.ring[(s % TWCC_RING as u64) as usize];
            let d = match slot.take() {
                Some(t) => {
                    let us = t.as_micros() as i64;
                    let q = (us - prev_us).div_euclid(250);
                    let Ok(q16) = i16::try_from(q) else {
                        // Too large a gap for one feedback: put it back, report it next time.
                        *slot = Some(t);
                        break;
                    };
                    prev_us += q * 250;
                    Some(q16)
                }
                None => None,
            };
            self.deltas.push(d);
            end = s + 1;
        }
        // Trailing "not received" entries carry no information; keep them for next time.
        while self.deltas.last() == Some(&None) {
            self.deltas.pop();
            end -= 1;
        }
        if self.deltas.is_empty() {
            return None;
        }
        self.next = Some(end);
        let fb = TwccFeedback {
            base_seq: next as u16,
            reference_time: (reference_64ms & 0x7F_FFFF) as i32,
            fb_pkt_count: self.fb_count,
        };
        self.fb_count = self.fb_count.wrapping_add(1);
        Some(fb)
    }

    /// The receive deltas of the last [`Self::build`].
    pub fn deltas(&self) -> &[Option<i16>] {
        &self.deltas
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts_loss_and_fraction() {
        let mut s = ReceiveStats::new(90_000);
        let t0 = Instant::now();
        for (i, seq) in [10u16, 11, 13, 14].iter().enumerate() {
            s.on_packet(Duration::from_millis(i as u64 * 33), *seq, i as u32 * 3000);
        }
        let b = s.report(t0, 7).expect("block");
        assert_eq!(b.ssrc, 7);
        assert_eq!(b.cumulative_lost, 1);
        // 1 of 5 lost = 51/256.
        assert_eq!(b.fraction_lost, 51);
        assert_eq!(b.extended_highest_seq as u16, 14);
        // Next interval without loss.
        s.on_packet(Duration::from_millis(200), 15, 15_000);
        assert_eq!(s.report(t0, 7).expect("block").fraction_lost, 0);
    }

    #[test]
    fn report_echoes_last_sender_report() {
        let mut s = ReceiveStats::new(48_000);
        let t0 = Instant::now();
        s.on_packet(Duration::ZERO, 1, 0);
        s.on_sender_report(t0, 0x1122_3344_5566_7788);
        let b = s.report(t0 + Duration::from_millis(500), 1).expect("block");
        assert_eq!(b.last_sr, 0x3344_5566);
        assert_eq!(b.delay_since_last_sr, 32768);
    }

    #[test]
    fn nack_gap_then_recovery() {
        let mut n = NackTracker::new(64);
        let t0 = Instant::now();
        n.on_packet(100, None);
        n.on_packet(101, Some(100));
        n.on_packet(105, Some(101));
        let mut out = Vec::new();
        n.due(t0, &mut out);
        assert_eq!(out, vec![102, 103, 104]);
        // Not again before the retry interval.
        n.due(t0 + Duration::from_millis(10), &mut out);
        assert!(out.is_empty());
        n.on_packet(103, Some(105));
        n.due(t0 + RETRY_AFTER, &mut out);
        assert_eq!(out, vec![102, 104]);
        n.due(t0 + RETRY_AFTER * 2, &mut out);
        n.due(t0 + RETRY_AFTER * 3, &mut out);
        assert!(out.is_empty(), "three tries at most");
        assert!(!n.pending());
        // Kept a while, silent: a late retransmission is still known as one.
        assert!(n.is_missing(102));
        n.due(t0 + RETRY_AFTER * 2 + GIVE_UP_AFTER, &mut out);
        assert!(!n.is_missing(102), "forgotten a second after its last NACK");
    }

    #[test]
    fn a_subscribers_nack_renews_a_spent_packet() {
        let mut n = NackTracker::new(64);
        let t0 = Instant::now();
        n.on_packet(10, Some(8));
        let mut out = Vec::new();
        assert!(!n.renack(9, t0), "tries not spent: nothing to renew");
        for i in 0..3 {
            n.due(t0 + RETRY_AFTER * i, &mut out);
            assert_eq!(out, vec![9]);
        }
        let last = t0 + RETRY_AFTER * 2;
        assert!(!n.renack(9, last + RETRY_AFTER / 2), "not before a retry interval");
        assert!(!n.renack(8, last + RETRY_AFTER), "never missing");
        let mut at = last + RETRY_AFTER;
        for _ in 0..MAX_RENACKS {
            assert!(n.renack(9, at));
            assert!(n.pending());
            assert_eq!(n.next_due(at), Some(at));
            n.due(at, &mut out);
            assert_eq!(out, vec![9], "one NACK per renewal");
            n.due(at + RETRY_AFTER, &mut out);
            assert!(out.is_empty());
            at += RETRY_AFTER;
        }
        assert!(!n.renack(9, at), "renewed {MAX_RENACKS} times at most");
        // Another packet, spent and forgotten: not renewed.
        n.on_packet(13, Some(11));
        for i in 0..3 {
            n.due(at + RETRY_AFTER * i, &mut out);
        }
        assert!(!n.renack(12, at + RETRY_AFTER * 2 + GIVE_UP_AFTER));
    }

    #[test]
    fn nack_retries_follow_the_measured_rtt() {
        let t0 = Instant::now();
        // A short path (loopback, 2 ms): retries every 10 ms, ten tries.
        let mut n = NackTracker::new(64);
        assert_eq!(n.timing(), (RETRY_AFTER, MAX_TRIES));
        n.set_rtt(Duration::from_millis(2));
        assert_eq!(n.timing(), (RETRY_MIN, TRIES_MAX));
        n.on_packet(10, Some(8));
        let mut out = Vec::new();
        let mut sent = Vec::new();
        let mut now = t0;
        // Every millisecond for a second: when each NACK of packet 9 goes out.
        for _ in 0..1000 {
            n.due(now, &mut out);
            if !out.is_empty() {
                assert_eq!(out, vec![9]);
                sent.push(now.duration_since(t0).as_millis());
            }
            assert!(n.next_due(now).is_none_or(|d| d >= now));
            now += Duration::from_millis(1);
        }
        assert_eq!(sent, (0..10).map(|i| i * 10).collect::<Vec<u128>>());
        // A long path (200 ms): one retry per 255 ms, the three tries kept.
        let mut n = NackTracker::new(64);
        n.set_rtt(Duration::from_millis(200));
        assert_eq!(n.timing(), (Duration::from_millis(255), 3));
        n.on_packet(10, Some(8));
        n.due(t0, &mut out);
        assert_eq!(out, vec![9]);
        assert_eq!(n.next_due(t0), Some(t0 + Duration::from_millis(255)));
        n.due(t0 + Duration::from_millis(254), &mut out);
        assert!(out.is_empty(), "not while the first retransmission may still come");
        n.due(t0 + Duration::from_millis(255), &mut out);
        assert_eq!(out, vec![9]);
        // Far paths are capped.
        n.set_rtt(Duration::from_secs(3));
        assert_eq!(n.timing(), (RETRY_MAX, 3));
    }

    #[test]
    fn nack_ignores_restarts_and_is_bounded() {
        let mut n = NackTracker::new(8);
        let t0 = Instant::now();
        n.on_packet(10, Some(9));
        n.on_packet(10_000, Some(10));
        assert!(!n.pending());
        n.on_packet(10_100, Some(10_000));
        let mut out = Vec::new();
        n.due(t0, &mut out);
        assert_eq!(out.len(), 8);
        assert_eq!(*out.last().expect("one"), 10_099u64 as u16);
    }

    #[test]
    fn twcc_feedback_deltas() {
        let mut r = TwccRecorder::default();
        r.on_packet(5, Duration::from_micros(64_000 * 3 + 1000));
        r.on_packet(6, Duration::from_micros(64_000 * 3 + 1500));
        r.on_packet(8, Duration::from_micros(64_000 * 3 + 2500));
        let fb = r.build().expect("feedback");
        assert_eq!(fb.base_seq, 5);
        assert_eq!(fb.reference_time, 3);
        assert_eq!(r.deltas(), &[Some(4), Some(2), None, Some(4)]);
        assert!(r.build().is_none());
        r.on_packet(7, Duration::from_micros(64_000 * 3 + 2000));
        assert!(r.build().is_none(), "already reported as lost");
        r.on_packet(9, Duration::from_micros(64_000 * 4));
        let fb = r.build().expect("feedback");
        assert_eq!((fb.base_seq, fb.fb_pkt_count), (9, 1));
        assert_eq!(r.deltas(), &[Some(0)]);
    }
}
