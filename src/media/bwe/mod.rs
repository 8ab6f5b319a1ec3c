//! Send-side bandwidth estimation for one subscriber transport, sans-IO: what the link to a
//! subscriber can carry, from its transport-wide CC feedback (TWCC), REMB and receiver
//! reports, in the manner of Google congestion control (draft-ietf-rmcat-gcc-02).
//!
//! Parts: `sent.rs` (send history by transport-wide sequence number, feedback matching),
//! `delay.rs` (packet groups, trendline, overuse detector, AIMD), `loss.rs` (loss-based
//! bound), `probe.rs` (when and how high to probe, probe results), `budget.rs`
//! (retransmission budget and age limit).
//!
//! The estimate is the delay-based rate (once TWCC feedback has arrived), bounded by the loss
//! bound and by the last REMB, clamped to `[min, max]`. A receiver without TWCC (REMB only)
//! gets REMB bounded by loss from its receiver reports.
//!
//! Driving it, per transport:
//! 1. For every RTP packet sent (media, RTX, padding), [`SendSideBwe::handle_sent`] with the
//!    transport-wide sequence number stamped on it (`None` if the subscriber did not
//!    negotiate transport-cc) and the probe cluster it was sent for.
//! 2. RTCP from the subscriber: [`SendSideBwe::handle_twcc`], [`SendSideBwe::handle_remb`],
//!    [`SendSideBwe::handle_receiver_report`].
//! 3. Before answering a NACK: [`SendSideBwe::allow_retransmit`]; send only on
//!    [`Retransmit::Send`] (then report the RTX packet through `handle_sent` too).
//! 4. [`SendSideBwe::handle_timeout`] at [`SendSideBwe::poll_timeout`] (probe timers, and
//!    the feedback timeout: TWCC silence while sending cuts the estimate); after any input,
//!    drain [`SendSideBwe::poll_probe`] and send each cluster as `probe.rs` says; read
//!    [`SendSideBwe::estimate`] to choose layers, and tell [`SendSideBwe::set_demand`] what
//!    the consumers would send with their preferred layers.
//!
//! [`SendSideBwe::stats`] gives what `/metrics` shows per transport. Everything is sized at
//! construction; no call allocates.

mod budget;
mod delay;
mod loss;
mod probe;
mod sent;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

pub use budget::{MAX_AGE, RetransmitBudget, too_old};
pub use delay::{AimdRateControl, DelayBasedBwe, RateWindow, Trendline, Usage};
pub use loss::LossController;
pub use probe::{ClusterId, ProbeCluster, ProbeController};
pub use sent::{FeedbackSummary, PacketResult, SendHistory};

use crate::wire::rtcp::twcc::TransportCc;

/// A bitrate in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bitrate(pub u64);

impl Bitrate {
    pub const fn kbps(k: u64) -> Bitrate {
        Bitrate(k * 1_000)
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64
    }
}

impl std::fmt::Display for Bitrate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} kbit/s", self.0 / 1_000)
    }
}

/// Settings of one estimator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BweConfig {
    pub start: Bitrate,
    pub min: Bitrate,
    pub max: Bitrate,
    /// Packets remembered for feedback matching.
    pub history: usize,
    /// Share of the estimate retransmissions may use (0..=1).
    pub rtx_share: f64,
}

impl Default for BweConfig {
    fn default() -> Self {
        BweConfig {
            start: Bitrate::kbps(300),
            min: Bitrate::kbps(30),
            max: Bitrate::kbps(10_000),
            history: sent::DEFAULT_HISTORY,
            rtx_share: 0.2,
        }
    }
}

/// No TWCC feedback for this long while sending cuts the estimate (see
/// [`SendSideBwe::handle_timeout`]).
pub const FEEDBACK_TIMEOUT: Duration = Duration::from_millis(1_500);

/// What the estimator holds, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BweStats {
    pub estimate: Bitrate,
    /// The delay-based part (AIMD), before the loss and REMB bounds.
    pub delay_estimate: Bitrate,
    pub loss_bound: Option<Bitrate>,
    pub remb: Option<Bitrate>,
    pub rtt: Option<Duration>,
    pub loss_fraction: f64,
    pub usage: Usage,
    /// Retransmission bytes granted, requests refused for budget, and for age.
    pub rtx_bytes: u64,
    pub rtx_over_budget: u64,
    pub rtx_too_old: u64,
}

/// The answer to "may I resend this packet?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retransmit {
    Send,
    /// First sent too long ago to arrive in time ([`too_old`]).
    TooOld,
    /// The retransmission budget is spent.
    OverBudget,
}

/// The estimator of one transport.
#[derive(Debug)]
pub struct SendSideBwe {
    cfg: BweConfig,
    history: SendHistory,
    delay: DelayBasedBwe,
    loss: LossController,
    probe: ProbeController,
    budget: RetransmitBudget,
    remb: Option<f64>,
    twcc_seen: bool,
    last_feedback: Option<Instant>,
    sent_since_feedback: bool,
    last_silence_cut: Option<Instant>,
    too_old: u64,
    rr_rtt: Option<Duration>,
    fb_rtt: Option<Duration>,
    epoch: Option<Instant>,
    /// Media (and probe) bytes sent, by send time; RTX apart.
    media_rate: RateWindow,
    rtx_rate: RateWindow,
    estimate: f64,
}

impl SendSideBwe {
    pub fn new(cfg: BweConfig) -> SendSideBwe {
        let (min, max) = (cfg.min.as_f64(), cfg.max.as_f64().max(cfg.min.as_f64()));
        let start = cfg.start.as_f64().clamp(min, max);
        SendSideBwe {
            cfg,
            history: SendHistory::new(cfg.history),
            delay: DelayBasedBwe::new(start, min, max),
            loss: LossController::new(max),
            probe: ProbeController::new(max),
            budget: RetransmitBudget::default(),
            remb: None,
            twcc_seen: false,
            last_feedback: None,
            sent_since_feedback: false,
            last_silence_cut: None,
            too_old: 0,
            rr_rtt: None,
            fb_rtt: None,
            epoch: None,
            media_rate: RateWindow::default(),
            rtx_rate: RateWindow::default(),
            estimate: start,
        }
    }

    fn us(&mut self, now: Instant) -> i64 {
        let epoch = *self.epoch.get_or_insert(now);
        match now.checked_duration_since(epoch) {
            Some(d) => d.as_micros() as i64,
            None => -(epoch.saturating_duration_since(now).as_micros() as i64),
        }
    }

    /// The current estimate.
    pub fn estimate(&self) -> Bitrate {
        Bitrate(self.estimate as u64)
    }

    /// The round-trip time: from receiver reports when there are any, else from TWCC
    /// feedback (which includes the receiver's feedback delay).
    pub fn rtt(&self) -> Option<Duration> {
        self.rr_rtt.or(self.fb_rtt)
    }

    /// Last loss fraction the loss controller judged (0..=1).
    pub fn loss_fraction(&self) -> f64 {
        self.loss.fraction()
    }

    /// Media bitrate sent over the last 500 ms (RTX apart).
    pub fn media_rate(&mut self, now: Instant) -> Bitrate {
        let t = self.us(now);
        Bitrate(self.media_rate.rate(t).unwrap_or(0.0) as u64)
    }

    /// Retransmission bitrate sent over the last 500 ms.
    pub fn rtx_rate(&mut self, now: Instant) -> Bitrate {
        let t = self.us(now);
        Bitrate(self.rtx_rate.rate(t).unwrap_or(0.0) as u64)
    }

    /// The retransmission budget (counters).
    pub fn retransmit_budget(&self) -> &RetransmitBudget {
        &self.budget
    }

    /// What the consumers of this transport would send with their preferred layers (probing
    /// is for climbing towards it, never past it).
    pub fn set_demand(&mut self, demand: Bitrate) {
        self.probe.set_demand(demand.as_f64());
    }

    /// One RTP packet left on this transport.
    pub fn handle_sent(
        &mut self,
        now: Instant,
        twcc_seq: Option<u16>,
        size_bytes: usize,
        cluster: Option<ClusterId>,
        is_rtx: bool,
    ) {
        let t = self.us(now);
        if is_rtx && cluster.is_none() {
            self.rtx_rate.add(t, size_bytes as u64);
        } else {
            self.media_rate.add(t, size_bytes as u64);
        }
        if let Some(id) = cluster {
            self.probe.on_sent(id, size_bytes);
        }
        if let Some(seq) = twcc_seq {
            self.history.on_sent(now, seq, size_bytes, cluster, is_rtx);
            self.sent_since_feedback = true;
            self.probe.start(now, self.estimate);
        }
    }

    /// A transport-wide CC feedback from the subscriber.
    pub fn handle_twcc(&mut self, now: Instant, fb: &TransportCc<'_>) {
        self.last_feedback = Some(now);
        self.sent_since_feedback = false;
        let (summary, results) = self.history.on_feedback(fb);
        for r in results {
            self.probe.on_result_packet(r);
            if let Some(recv) = r.recv_us {
                self.delay.on_packet(r.sent_at, recv, r.size);
            }
        }
        if summary.received == 0 && summary.lost == 0 {
            return;
        }
        self.twcc_seen = true;
        if let Some(sent_at) = summary.newest_received_sent_at {
            let sample = now.saturating_duration_since(sent_at);
            self.fb_rtt = Some(match self.fb_rtt {
                None => sample,
                Some(r) => (r * 7 + sample) / 8,
            });
        }
        let rtt = self.rtt().unwrap_or(budget::DEFAULT_RTT);
        self.delay.rate.set_rtt(rtt);
        let lost = summary.lost.saturating_sub(summary.recovered);
        self.loss.on_counts(now, lost, summary.received, self.estimate, rtt);
        let before = self.estimate;
        let delay_estimate = self.delay.on_feedback_end(now);
        if let Some(p) = self.probe.take_result(now, before) {
            let usage = self.delay.usage();
            tracing::debug!(result = p as u64, delay_estimate, ?usage, "probe result");
            if usage != Usage::Overusing && p > delay_estimate {
                self.delay.rate.set_estimate(now, p);
            }
        }
        self.update(now);
    }

    /// A REMB from the subscriber (bit/s).
    pub fn handle_remb(&mut self, now: Instant, bps: u64) {
        self.remb = Some(bps as f64);
        self.update(now);
    }

    /// A report block about our stream: `fraction_lost` as on the wire (/256) and the RTT it
    /// gives (LSR/DLSR), when it gives one. With TWCC its loss is not used (the feedback
    /// counts the same losses sooner).
    pub fn handle_receiver_report(
        &mut self,
        now: Instant,
        fraction_lost: u8,
        rtt: Option<Duration>,
    ) {
        if let Some(r) = rtt {
            self.rr_rtt = Some(r);
            self.delay.rate.set_rtt(r);
        }
        if !self.twcc_seen {
            let rtt = self.rtt().unwrap_or(budget::DEFAULT_RTT);
            self.loss.evaluate(now, fraction_lost as f64 / 256.0, self.estimate, rtt);
            self.update(now);
        }
    }

    /// Timers: probing, and the feedback timeout (TWCC feedback stopped while we kept
    /// sending: the link may be gone or saturated beyond any feedback; the estimate is cut to
    /// 80 % once [`FEEDBACK_TIMEOUT`] (or 3 RTTs) after the last feedback and every second
    /// after that, until feedback returns).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.probe.expire(now);
        self.probe.handle_timeout(now, self.estimate, self.twcc_seen);
        if self.silence_deadline().is_some_and(|t| now >= t) {
            self.last_silence_cut = Some(now);
            self.loss.cap(0.8 * self.estimate);
            self.update(now);
        }
    }

    fn silence_deadline(&self) -> Option<Instant> {
        if !self.twcc_seen || !self.sent_since_feedback {
            return None;
        }
        let last = self.last_feedback?;
        let timeout = (self.rtt().unwrap_or(budget::DEFAULT_RTT) * 3).max(FEEDBACK_TIMEOUT);
        Some(match self.last_silence_cut {
            Some(c) if c > last => c + Duration::from_secs(1),
            _ => last + timeout,
        })
    }

    /// When [`Self::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.probe.poll_timeout(), self.silence_deadline()].into_iter().flatten().min()
    }

    /// A snapshot for metrics.
    pub fn stats(&self) -> BweStats {
        BweStats {
            estimate: self.estimate(),
            delay_estimate: Bitrate(self.delay.rate.estimate() as u64),
            loss_bound: self.loss.bound().map(|b| Bitrate(b as u64)),
            remb: self.remb.map(|r| Bitrate(r as u64)),
            rtt: self.rtt(),
            loss_fraction: self.loss.fraction(),
            usage: self.delay.usage(),
            rtx_bytes: self.budget.spent(),
            rtx_over_budget: self.budget.refused(),
            rtx_too_old: self.too_old,
        }
    }

    /// The link carried `bps` for a while without overuse (a consumer's climb padded up to
    /// it, [`crate::media`]'s `allocate.rs`): a probe that lasted seconds, so the estimate
    /// rises to it (never lowered here).
    pub fn confirm(&mut self, now: Instant, bps: u64) {
        let bps = bps as f64;
        if self.delay.usage() == Usage::Overusing || bps <= self.estimate {
            return;
        }
        if self.delay.rate.estimate() < bps {
            self.delay.rate.set_estimate(now, bps);
        }
        self.loss.raise_to(bps);
        self.update(now);
    }

    /// The next probe cluster to send, if any.
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeCluster> {
        self.probe.poll_probe(now)
    }

    /// May a NACKed packet of `size_bytes`, first sent at `first_sent_at`, be resent now?
    /// Grants it against a bucket filled at `rtx_share` × the estimate, and never more than
    /// what the estimate leaves beside the media sent over the last 500 ms.
    pub fn allow_retransmit(
        &mut self,
        now: Instant,
        size_bytes: usize,
        first_sent_at: Instant,
    ) -> Retransmit {
        if too_old(now, first_sent_at, self.rtt()) {
            self.too_old += 1;
            return Retransmit::TooOld;
        }
        // Nothing known of the link yet (no TWCC feedback, no REMB): no budget to enforce.
        if !self.twcc_seen && self.remb.is_none() {
            return Retransmit::Send;
        }
        // The budget follows what the link carries: the delay-based estimate, or what the
        // receiver acknowledged when that is more (an estimate still climbing from its start
        // value), bounded by REMB; not the loss bound: random loss without congestion lowers
        // it exactly when repairs are needed, while a congested link shows in the delay.
        // Without congestion the repairs get `rtx_share` of the link; while the link is
        // overused, or when only REMB says what it carries, they only get what the media
        // leaves of the estimate (often nothing).
        let overusing = self.twcc_seen && self.delay.usage() == Usage::Overusing;
        let mut link = if !self.twcc_seen {
            self.estimate
        } else if overusing {
            self.delay.rate.estimate()
        } else {
            self.delay.rate.estimate().max(self.delay.acked_bitrate().unwrap_or(0.0))
        };
        if let Some(r) = self.remb {
            link = link.min(r);
        }
        let share = self.cfg.rtx_share.clamp(0.0, 1.0) * link;
        let rate = if overusing || !self.twcc_seen {
            let media = self.media_rate(now).as_f64();
            share.min((link - media).max(0.0))
        } else {
            share
        };
        if self.budget.try_spend(now, rate, size_bytes) {
            Retransmit::Send
        } else {
            Retransmit::OverBudget
        }
    }

    fn update(&mut self, now: Instant) {
        let (min, max) = (self.cfg.min.as_f64(), self.cfg.max.as_f64().max(self.cfg.min.as_f64()));
        let base =
            if !self.twcc_seen && self.remb.is_some() { max } else { self.delay.rate.estimate() };
        let mut e = base;
        if let Some(b) = self.loss.bound() {
            e = e.min(b);
        }
        if let Some(r) = self.remb {
            e = e.min(r);
        }
        self.estimate = e.clamp(min, max);
        self.probe.on_estimate(now, self.estimate);
    }
}
