//! The estimator against a simulated bottleneck on a virtual clock: a FIFO draining at C bit/s
//! with a bounded drop-tail buffer and a fixed propagation delay each way, optional random
//! loss, the receiver's real TWCC recorder (`media::feedback::TwccRecorder`) building feedback
//! every 50 ms, written and parsed by the real `wire::rtcp::twcc` codec.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::*;
use crate::media::feedback::TwccRecorder;
use crate::wire::rtcp::twcc::{self, TwccHeader};
use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

const PACKET: usize = 1_200;
const TICK: Duration = Duration::from_millis(1);

/// Deterministic xorshift, so a run is the same every time.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Link {
    rate: f64,
    buffer_bytes: f64,
    busy_until: Instant,
    random_loss: f64,
    rng: Rng,
    prop: Duration,
}

impl Link {
    fn new(t0: Instant, rate: f64) -> Link {
        let mut l = Link {
            rate,
            buffer_bytes: 0.0,
            busy_until: t0,
            random_loss: 0.0,
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            prop: Duration::from_millis(25),
        };
        l.set_rate(rate);
        l
    }

    /// A 250 ms buffer, and never less than ten packets.
    fn set_rate(&mut self, rate: f64) {
        self.rate = rate;
        self.buffer_bytes = (rate * 0.25 / 8.0).max(10.0 * PACKET as f64);
    }

    /// When the packet reaches the receiver, or `None` if dropped.
    fn send(&mut self, now: Instant, size: usize) -> Option<Instant> {
        let backlog =
            self.busy_until.saturating_duration_since(now).as_secs_f64() * self.rate / 8.0;
        if backlog + size as f64 > self.buffer_bytes {
            return None;
        }
        let start = self.busy_until.max(now);
        self.busy_until = start + Duration::from_secs_f64(size as f64 * 8.0 / self.rate);
        if self.random_loss > 0.0 && self.rng.unit() < self.random_loss {
            return None;
        }
        Some(self.busy_until + self.prop)
    }
}

struct Sim {
    t0: Instant,
    now: Instant,
    bwe: SendSideBwe,
    link: Link,
    demand: f64,
    next_send: Instant,
    twcc_seq: u16,
    probe: Option<(ClusterId, u32, f64)>,
    in_flight: VecDeque<(Instant, u16)>,
    recorder: TwccRecorder,
    next_feedback: Instant,
    feedback_every: Duration,
    feedback: VecDeque<(Instant, Vec<u8>)>,
    sent: u64,
    dropped: u64,
    /// (seconds since start, estimate bit/s) every 100 ms.
    trace: Vec<(f64, f64)>,
}

impl Sim {
    fn new(capacity: f64, start: u64, demand: f64) -> Sim {
        let t0 = Instant::now();
        let cfg = BweConfig { start: Bitrate(start), ..BweConfig::default() };
        let mut bwe = SendSideBwe::new(cfg);
        bwe.set_demand(Bitrate(demand as u64));
        Sim {
            t0,
            now: t0,
            bwe,
            link: Link::new(t0, capacity),
            demand,
            next_send: t0,
            twcc_seq: 0,
            probe: None,
            in_flight: VecDeque::new(),
            recorder: TwccRecorder::default(),
            next_feedback: t0 + Duration::from_millis(50),
            feedback_every: Duration::from_millis(50),
            feedback: VecDeque::new(),
            sent: 0,
            dropped: 0,
            trace: Vec::new(),
        }
    }

    fn secs(&self) -> f64 {
        self.now.duration_since(self.t0).as_secs_f64()
    }

    fn send_one(&mut self, at: Instant, cluster: Option<ClusterId>) {
        let seq = self.twcc_seq;
        self.twcc_seq = seq.wrapping_add(1);
        self.bwe.handle_sent(at, Some(seq), PACKET, cluster, false);
        self.sent += 1;
        match self.link.send(at, PACKET) {
            Some(arrive) => self.in_flight.push_back((arrive, seq)),
            None => self.dropped += 1,
        }
    }

    fn step(&mut self) {
        self.now += TICK;
        let now = self.now;
        // Sender: a paced sender at min(estimate, demand); a probe cluster replaces media at
        // its own rate until its minimums are sent.
        if self.probe.is_none()
            && let Some(c) = self.bwe.poll_probe(now)
        {
            let n = c.min_packets.max(c.min_bytes.div_ceil(PACKET as u32));
            self.probe = Some((c.id, n, c.bitrate.as_f64()));
        }
        while self.next_send <= now {
            let at = self.next_send;
            let (cluster, rate) = match &mut self.probe {
                Some((id, left, rate)) => {
                    let r = (Some(*id), *rate);
                    *left -= 1;
                    if *left == 0 {
                        self.probe = None;
                    }
                    r
                }
                None => (None, self.bwe.estimate().as_f64().min(self.demand)),
            };
            self.send_one(at, cluster);
            self.next_send = at + Duration::from_secs_f64(PACKET as f64 * 8.0 / rate.max(1_000.0));
        }
        // Receiver.
        while self.in_flight.front().is_some_and(|(t, _)| *t <= now) {
            let Some((t, seq)) = self.in_flight.pop_front() else { break };
            self.recorder.on_packet(seq, t.duration_since(self.t0));
        }
        if now >= self.next_feedback {
            self.next_feedback += self.feedback_every;
            if let Some(fb) = self.recorder.build() {
                let h = TwccHeader {
                    sender_ssrc: 1,
                    media_ssrc: 2,
                    base_seq: fb.base_seq,
                    reference_time: fb.reference_time,
                    fb_pkt_count: fb.fb_pkt_count,
                };
                let mut buf = vec![0u8; 64 + 4 * self.recorder.deltas().len()];
                let n = twcc::write(&mut buf, &h, self.recorder.deltas()).expect("fits");
                buf.truncate(n);
                self.feedback.push_back((now + self.link.prop, buf));
            }
        }
        // Feedback reaches the sender.
        while self.feedback.front().is_some_and(|(t, _)| *t <= now) {
            let Some((_, buf)) = self.feedback.pop_front() else { break };
            let c = RtcpCompound::parse(&buf).expect("our own feedback parses");
            for p in c.packets() {
                if let Ok(RtcpPacket::TransportCc(t)) = p {
                    self.bwe.handle_twcc(now, &t);
                }
            }
        }
        if self.bwe.poll_timeout().is_some_and(|t| t <= now) {
            self.bwe.handle_timeout(now);
        }
        if (now - self.t0).as_millis().is_multiple_of(100) {
            let s = self.secs();
            self.trace.push((s, self.bwe.estimate().as_f64()));
        }
    }

    fn run_until(&mut self, secs: f64) {
        while self.secs() < secs {
            self.step();
        }
    }

    fn estimates(&self, from: f64, to: f64) -> impl Iterator<Item = f64> + '_ {
        self.trace.iter().filter(move |(t, _)| *t >= from && *t <= to).map(|(_, e)| *e)
    }

    fn show(&self) -> String {
        self.trace
            .iter()
            .step_by(5)
            .map(|(t, e)| format!("{t:.1}s:{:.0}k", e / 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A simulation over link `capacity` with `prop` one-way delay and feedback every `fb` ms,
/// starting at 300 kbit/s.
fn sim(capacity: f64, demand: f64, prop: u64, fb: u64) -> Sim {
    let mut sim = Sim::new(capacity, 300_000, demand);
    sim.link.prop = Duration::from_millis(prop);
    sim.feedback_every = Duration::from_millis(fb);
    sim
}

/// (a) A 300 kbit/s (and a 1 Mbit/s) bottleneck, 2.5 Mbit/s demand: within 10 s the estimate
/// sits in [0.6, 1.1] × C and stays there for the next 15 s, with little loss, for one-way
/// delays of 5 to 100 ms and feedback every 50 or 100 ms.
#[test]
fn converges_to_a_narrow_bottleneck() {
    for c in [300e3, 1e6] {
        for (prop, fb) in [(5, 50), (25, 50), (25, 100), (100, 50), (100, 100)] {
            let mut sim = sim(c, 2.5e6, prop, fb);
            sim.run_until(10.0);
            let (sent0, dropped0) = (sim.sent, sim.dropped);
            sim.run_until(25.0);
            let (lo, hi) =
                sim.estimates(10.0, 25.0).fold((f64::MAX, 0f64), |(l, h), e| (l.min(e), h.max(e)));
            let case = format!("C {c}, {prop} ms, feedback {fb} ms");
            assert!(lo >= 0.6 * c && hi <= 1.1 * c, "{case}: in [{lo}, {hi}]: {}", sim.show());
            let loss = (sim.dropped - dropped0) as f64 / (sim.sent - sent0) as f64;
            assert!(loss < 0.03, "{case}: loss {loss:.3} once converged: {}", sim.show());
        }
    }
}

/// (b) The 300 kbit/s bottleneck lifted to 5 Mbit/s at various points of the periodic probe
/// cycle: probing takes the estimate past 1.5 Mbit/s within 15 s (about 5.5 s at worst here).
#[test]
fn climbs_when_the_bottleneck_lifts() {
    for (prop, fb) in [(25, 50), (100, 100)] {
        for lift in [10.0, 10.6, 12.3] {
            let mut sim = sim(300e3, 2.5e6, prop, fb);
            sim.run_until(lift);
            assert!(sim.bwe.estimate().as_f64() < 400e3, "{}", sim.show());
            sim.link.set_rate(5e6);
            let mut reached = None;
            while sim.secs() < lift + 15.0 && reached.is_none() {
                sim.step();
                if sim.bwe.estimate().as_f64() >= 1.5e6 {
                    reached = Some(sim.secs() - lift);
                }
            }
            assert!(reached.is_some(), "{prop} ms, lift at {lift} s: {}", sim.show());
        }
    }
}

/// (c) 5 % random loss on an uncongested 4 Mbit/s link with 1.5 Mbit/s demand: the estimate
/// does not collapse (stays above 1 Mbit/s once it got there).
#[test]
fn random_loss_does_not_collapse_the_estimate() {
    for (prop, fb) in [(25, 50), (100, 100)] {
        let mut sim = sim(4e6, 1.5e6, prop, fb);
        sim.link.random_loss = 0.05;
        sim.run_until(30.0);
        let lo = sim.estimates(10.0, 30.0).fold(f64::MAX, f64::min);
        assert!(lo >= 1e6, "{prop} ms: low point {lo}: {}", sim.show());
        assert!(sim.bwe.loss_fraction() > 0.0, "the loss was seen");
    }
}

/// (d) A NACK storm: every millisecond ten 1,200-byte packets are requested. Retransmissions
/// stay within the budget (20 % of the estimate, and not past the estimate with the media),
/// and packets first sent over a second ago are never resent.
#[test]
fn nack_storm_stays_within_the_budget() {
    let t0 = Instant::now();
    let mut bwe = SendSideBwe::new(BweConfig::default());
    let mut buf = [0u8; 64];
    let n = crate::wire::rtcp::remb::write(&mut buf, 1, 500_000, &[2]).unwrap();
    let c = RtcpCompound::parse(&buf[..n]).unwrap();
    let Some(Ok(RtcpPacket::Remb(r))) = c.packets().next() else { panic!("remb") };
    bwe.handle_remb(t0, r.bitrate());
    let est = bwe.estimate().as_f64();
    assert!((est - 500e3).abs() < 1e3, "{est}");
    let media_rate = 420e3;
    let mut next_media = t0;
    let (mut resent, mut too_old, mut granted) = (0u64, 0u64, 0u64);
    let mut worst = 0f64;
    let secs = 10u64;
    for ms in 0..secs * 1_000 {
        let now = t0 + Duration::from_millis(ms);
        while next_media <= now {
            bwe.handle_sent(next_media, None, PACKET, None, false);
            next_media += Duration::from_secs_f64(PACKET as f64 * 8.0 / media_rate);
        }
        for k in 0..10u64 {
            // Half the requests are for recent packets, half for packets 1.5 s old.
            let first_sent = if k % 2 == 0 {
                now.checked_sub(Duration::from_millis(60))
            } else {
                now.checked_sub(Duration::from_millis(1_500))
            };
            let Some(first_sent) = first_sent else { continue };
            match bwe.allow_retransmit(now, PACKET, first_sent) {
                Retransmit::Send => {
                    assert_eq!(k % 2, 0, "an old packet was granted");
                    granted += 1;
                    resent += PACKET as u64;
                    bwe.handle_sent(now, None, PACKET, None, true);
                }
                Retransmit::TooOld => too_old += 1,
                Retransmit::OverBudget => {}
            }
        }
        if ms >= 1_000 && ms % 100 == 0 {
            let total = bwe.media_rate(now).as_f64() + bwe.rtx_rate(now).as_f64();
            worst = worst.max(total);
        }
    }
    // Budget: min(20 % × 500k, 500k - 420k) = 80 kbit/s, plus the bucket's depth.
    let budget = 80e3 * secs as f64 / 8.0 + 80e3 * 0.25 / 8.0 + 1_500.0;
    assert!(granted > 0 && too_old > 0);
    assert!(resent as f64 <= budget, "resent {resent} > budget {budget}");
    assert!(resent as f64 >= 0.8 * 80e3 * (secs - 1) as f64 / 8.0, "budget unused: {resent}");
    assert!(worst <= est * 1.05, "media + rtx reached {worst} over {est}");
    assert_eq!(bwe.retransmit_budget().spent(), resent);
}

/// (e) REMB only (no TWCC): the estimate follows REMB, falls with RR-reported loss, recovers
/// without it, and follows REMB down.
#[test]
fn remb_only_receiver() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut bwe = SendSideBwe::new(BweConfig::default());
    assert_eq!(bwe.estimate(), Bitrate::kbps(300));
    bwe.handle_sent(t0, None, PACKET, None, false);
    assert!(bwe.poll_probe(t0).is_none(), "no probing without TWCC to measure it");
    bwe.handle_remb(at(1_000), 800_000);
    assert_eq!(bwe.estimate(), Bitrate::kbps(800));
    // 25 % loss (64/256) reported twice, 1 s apart: two decreases.
    bwe.handle_receiver_report(at(2_000), 64, Some(Duration::from_millis(80)));
    let e1 = bwe.estimate().as_f64();
    assert!((e1 - 700e3).abs() < 1e3, "{e1}");
    bwe.handle_receiver_report(at(3_000), 64, None);
    let e2 = bwe.estimate().as_f64();
    assert!(e2 < e1, "{e1} -> {e2}");
    // 5 % loss holds; no loss climbs back to REMB.
    bwe.handle_receiver_report(at(4_000), 13, None);
    assert_eq!(bwe.estimate().as_f64(), e2);
    for s in 5..20 {
        bwe.handle_receiver_report(at(s * 1_000), 0, None);
    }
    assert_eq!(bwe.estimate(), Bitrate::kbps(800));
    bwe.handle_remb(at(20_000), 400_000);
    assert_eq!(bwe.estimate(), Bitrate::kbps(400));
    bwe.handle_remb(at(21_000), 1);
    assert_eq!(bwe.estimate(), BweConfig::default().min, "clamped to the minimum");
}

/// The link goes dark for 4 s (every packet dropped, so no feedback at all): the estimate is
/// cut while it is dark, and climbs again once feedback returns.
#[test]
fn feedback_timeout_cuts_the_estimate() {
    let mut sim = sim(2e6, 1.5e6, 25, 50);
    sim.run_until(8.0);
    let before = sim.bwe.estimate().as_f64();
    assert!(before >= 1e6, "{}", sim.show());
    sim.link.random_loss = 1.0;
    sim.run_until(12.0);
    let dark = sim.bwe.estimate().as_f64();
    assert!(dark <= 0.8 * 0.8 * before, "{before} -> {dark}: {}", sim.show());
    assert!(sim.bwe.stats().loss_bound.is_some());
    sim.link.random_loss = 0.0;
    sim.run_until(30.0);
    let after = sim.bwe.estimate().as_f64();
    assert!(after >= 1e6, "{dark} -> {after}: {}", sim.show());
}

/// A receiver that negotiated transport-cc but never sends feedback: the start probes go out,
/// then no periodic probe is queued, and the timer never reports a past deadline.
#[test]
fn no_periodic_probes_without_feedback() {
    let t0 = Instant::now();
    let mut bwe = SendSideBwe::new(BweConfig::default());
    bwe.set_demand(Bitrate::kbps(2_500));
    let mut probes = 0;
    for ms in 0..20_000u64 {
        let now = t0 + Duration::from_millis(ms);
        if ms % 10 == 0 {
            bwe.handle_sent(now, Some(ms as u16), PACKET, None, false);
        }
        while bwe.poll_probe(now).is_some() {
            probes += 1;
        }
        if bwe.poll_timeout().is_some_and(|t| t <= now) {
            bwe.handle_timeout(now);
            assert!(bwe.poll_timeout().is_none_or(|t| t > now), "a past deadline at {ms} ms");
        }
    }
    assert_eq!(probes, 2, "only the two start clusters");
    assert_eq!(bwe.estimate(), Bitrate::kbps(300));
}
