//! `ringsfu-load impair`: a link impairment relay for tests (issue 19): loss, delay, jitter and
//! reordering on one direction of a link, for kernels without netem.
//!
//! The relay does not forward packets itself: a netfilter rule hands a link direction's UDP
//! packets to an NFQUEUE (`iptables ... -p udp -j NFQUEUE --queue-num N`; nftables' own
//! `queue` expression is not built into these kernels, the xtables target is), and the relay
//! holds each packet's verdict until its release time, then accepts it (or drops it). The packet never leaves the kernel's
//! path, so addresses and ports are untouched end to end and ICE sees the real candidates. The
//! kernel segments GSO trains before queueing (the relay does not ask for `F_GSO`), so loss and
//! delay apply per datagram.
//!
//! Two parts, as everywhere in the crate:
//!
//! 1. [`Impairer`], the sans-IO decision core: [`Impairer::handle_packet`]`(now, item)` either
//!    drops the item (returned) or holds it; [`Impairer::poll_release`]`(now)` hands back held
//!    items whose time has come, earliest first; [`Impairer::next_deadline`] says when to ask.
//!    The caller drains `poll_release` after every input and at every deadline. Bounded: at most
//!    `capacity` items are held; a packet arriving at a full queue is dropped and counted.
//! 2. [`run`], the shell: one NFQUEUE (the `nfq` crate speaks the netlink protocol), a
//!    non-blocking receive and a 1 ms tick (the crate does not expose its socket for `poll`),
//!    SIGINT/SIGTERM to stop; on stop every held packet is accepted and one JSON line of counts
//!    is printed.
//!
//! The model, per packet: lost with probability `loss`; else its delay is `delay` plus a jitter
//! draw (uniform in `[-jitter, +jitter]` or normal with deviation `jitter`, clamped at zero).
//! Jitter keeps the order (a FIFO whose service time varies: a packet is never released before
//! the one held ahead of it) unless `jitter_reorders` is set (netem's behaviour: independent
//! draws, so packets closer than the jitter swap). With probability `reorder` a packet is held
//! `reorder_gap` longer than its own draw and outside the FIFO, so the packets behind it
//! overtake it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// How jitter is drawn around the base delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JitterDist {
    /// Uniform in `[-jitter, +jitter]`.
    Uniform,
    /// Normal with standard deviation `jitter` (Box-Muller).
    Normal,
}

/// One link direction's impairments (shares in `0.0..=1.0`).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct LinkParams {
    pub loss: f64,
    pub delay: Duration,
    pub jitter: Duration,
    pub dist: JitterDist,
    pub jitter_reorders: bool,
    pub reorder: f64,
    pub reorder_gap: Duration,
}

impl Default for LinkParams {
    fn default() -> Self {
        LinkParams {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            dist: JitterDist::Uniform,
            jitter_reorders: false,
            reorder: 0.0,
            reorder_gap: Duration::from_millis(20),
        }
    }
}

/// Why [`LinkParams::check`] refused the parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("loss must be a share in 0..=1 (--loss: 0 to 100 percent)")]
    Loss,
    #[error("reorder must be a share in 0..=1 (--reorder: 0 to 100 percent)")]
    Reorder,
    #[error("delay, jitter and reorder gap must each be at most 10 s")]
    TooLong,
}

impl LinkParams {
    /// Refuses shares outside `0..=1` (NaN included) and times over 10 s.
    pub fn check(&self) -> Result<(), ParamError> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(ParamError::Loss);
        }
        if !(0.0..=1.0).contains(&self.reorder) {
            return Err(ParamError::Reorder);
        }
        let max = Duration::from_secs(10);
        if self.delay > max || self.jitter > max || self.reorder_gap > max {
            return Err(ParamError::TooLong);
        }
        Ok(())
    }
}

/// What happened to the packets so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImpairStats {
    /// Packets handed to [`Impairer::handle_packet`].
    pub packets: u64,
    /// Dropped by the loss draw.
    pub lost: u64,
    /// Dropped because `capacity` packets were already held.
    pub overflow: u64,
    /// Held outside the FIFO by the reorder draw.
    pub reordered: u64,
    /// Handed back by [`Impairer::poll_release`].
    pub released: u64,
    /// The most packets held at once.
    pub max_held: u64,
}

/// The decision core for one link direction: see the module docs. `T` is whatever the caller
/// needs to release the packet later (an NFQUEUE message, an id in tests).
pub struct Impairer<T> {
    params: LinkParams,
    rng: SmallRng,
    capacity: usize,
    /// (release time, arrival number, item): earliest first, ties in arrival order.
    held: BinaryHeap<Reverse<Held<T>>>,
    /// The FIFO's tail: no in-order packet is released before this.
    fifo_tail: Option<Instant>,
    arrivals: u64,
    stats: ImpairStats,
}

struct Held<T> {
    at: Instant,
    n: u64,
    item: T,
}

impl<T> PartialEq for Held<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.n) == (o.at, o.n)
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.n).cmp(&(o.at, o.n))
    }
}

impl<T> Impairer<T> {
    /// A core with `params` (checked), its random draws seeded by `seed`, holding at most
    /// `capacity` packets (at least 1).
    pub fn new(params: LinkParams, seed: u64, capacity: usize) -> Result<Self, ParamError> {
        params.check()?;
        Ok(Impairer {
            params,
            rng: SmallRng::seed_from_u64(seed),
            capacity: capacity.max(1),
            held: BinaryHeap::new(),
            fifo_tail: None,
            arrivals: 0,
            stats: ImpairStats::default(),
        })
    }

    /// A packet arrived at `now`: `Some(item)` back means drop it (lost, or the queue is full);
    /// `None` means it is held until [`Impairer::poll_release`] returns it.
    pub fn handle_packet(&mut self, now: Instant, item: T) -> Option<T> {
        self.stats.packets += 1;
        let p = self.params;
        if p.loss > 0.0 && self.rng.random::<f64>() < p.loss {
            self.stats.lost += 1;
            return Some(item);
        }
        if self.held.len() >= self.capacity {
            self.stats.overflow += 1;
            return Some(item);
        }
        let own = now + self.draw_delay();
        let at = if p.reorder > 0.0 && self.rng.random::<f64>() < p.reorder {
            self.stats.reordered += 1;
            own + p.reorder_gap
        } else if p.jitter_reorders {
            own
        } else {
            let at = self.fifo_tail.map_or(own, |t| t.max(own));
            self.fifo_tail = Some(at);
            at
        };
        self.arrivals += 1;
        self.held.push(Reverse(Held { at, n: self.arrivals, item }));
        self.stats.max_held = self.stats.max_held.max(self.held.len() as u64);
        None
    }

    /// The next held packet due at or before `now`, earliest first.
    pub fn poll_release(&mut self, now: Instant) -> Option<T> {
        if self.held.peek().is_some_and(|h| h.0.at <= now) {
            self.stats.released += 1;
            return self.held.pop().map(|h| h.0.item);
        }
        None
    }

    /// When the earliest held packet is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.held.peek().map(|h| h.0.at)
    }

    /// Empties the queue (at shutdown: the caller accepts them), earliest first.
    pub fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(|| self.held.pop().map(|h| h.0.item))
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }

    pub fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// Base delay plus one jitter draw, never negative.
    fn draw_delay(&mut self) -> Duration {
        let p = self.params;
        let base = p.delay.as_secs_f64();
        let j = p.jitter.as_secs_f64();
        if j == 0.0 {
            return p.delay;
        }
        let offset = match p.dist {
            JitterDist::Uniform => self.rng.random_range(-j..=j),
            JitterDist::Normal => {
                // Box-Muller: u1 in (0, 1] keeps the logarithm finite.
                let u1 = 1.0 - self.rng.random::<f64>();
                let u2 = self.rng.random::<f64>();
                j * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
            }
        };
        Duration::from_secs_f64((base + offset).clamp(0.0, 20.0))
    }
}

/// `ringsfu-load impair`'s command line: one link direction on one NFQUEUE.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "ringsfu-load impair",
    bin_name = "ringsfu-load impair",
    about = "Hold the verdicts of one NFQUEUE: loss, delay, jitter, reordering (root; test tool)"
)]
pub struct ImpairOptions {
    /// The NFQUEUE number a rule sends this direction's packets to (iptables -j NFQUEUE).
    #[arg(long)]
    pub queue: u16,
    /// Loss share in percent.
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Base delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay: u64,
    /// Jitter in milliseconds (half-width for uniform, deviation for normal).
    #[arg(long, default_value_t = 0)]
    pub jitter: u64,
    #[arg(long, value_enum, default_value_t = JitterDist::Uniform)]
    pub dist: JitterDist,
    /// Independent delay draws (netem's way: jitter reorders packets closer than it).
    #[arg(long)]
    pub jitter_reorders: bool,
    /// Share of packets held back `--reorder-gap` ms longer, in percent.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    #[arg(long, default_value_t = 20)]
    pub reorder_gap: u64,
    /// Seed of the random draws (default: from the queue number).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The most packets held at once (the kernel queue is sized to match).
    #[arg(long, default_value_t = 4096)]
    pub capacity: u32,
    /// A label for the final JSON line.
    #[arg(long, default_value = "")]
    pub label: String,
}

impl ImpairOptions {
    pub fn params(&self) -> LinkParams {
        LinkParams {
            loss: self.loss / 100.0,
            delay: Duration::from_millis(self.delay),
            jitter: Duration::from_millis(self.jitter),
            dist: self.dist,
            jitter_reorders: self.jitter_reorders,
            reorder: self.reorder / 100.0,
            reorder_gap: Duration::from_millis(self.reorder_gap),
        }
    }
}

static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// The shell: binds `o.queue`, prints `READY <queue>` once bound, runs until SIGINT/SIGTERM,
/// then accepts whatever it still holds and prints one JSON line of [`ImpairStats`].
pub fn run(o: &ImpairOptions) -> Result<(), String> {
    let params = o.params();
    let mut core: Impairer<nfq::Message> = Impairer::new(
        params,
        o.seed.unwrap_or(0x5eed_0000 + u64::from(o.queue)),
        o.capacity as usize,
    )
    .map_err(|e| e.to_string())?;
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGINT, on_stop as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_stop as *const () as libc::sighandler_t);
    }
    let nf = |e: std::io::Error| format!("nfqueue {}: {e}", o.queue);
    let mut q = nfq::Queue::open().map_err(nf)?;
    q.bind(o.queue).map_err(nf)?;
    // Only the metadata: the verdict needs the packet id, not the bytes.
    q.set_copy_range(o.queue, 0).map_err(nf)?;
    q.set_queue_max_len(o.queue, o.capacity.max(1)).map_err(nf)?;
    q.set_nonblocking(true);
    println!("READY {}", o.queue);
    let mut verdict_errors = 0u64;
    let mut kernel_errors = 0u64;
    while !STOP.load(std::sync::atomic::Ordering::Relaxed) {
        // Bounded turn: at most 4096 receives, then the releases, then a tick.
        for _ in 0..4096 {
            match q.recv() {
                Ok(msg) => {
                    if let Some(mut lost) = core.handle_packet(Instant::now(), msg) {
                        lost.set_verdict(nfq::Verdict::Drop);
                        if q.verdict(lost).is_err() {
                            verdict_errors += 1;
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => break,
                Err(_) => {
                    kernel_errors += 1;
                    break;
                }
            }
        }
        let now = Instant::now();
        while let Some(mut msg) = core.poll_release(now) {
            msg.set_verdict(nfq::Verdict::Accept);
            if q.verdict(msg).is_err() {
                verdict_errors += 1;
            }
        }
        let tick = Duration::from_millis(1);
        let wait = core
            .next_deadline()
            .map_or(tick, |d| d.saturating_duration_since(Instant::now()).min(tick));
        std::thread::sleep(wait);
    }
    let held: Vec<nfq::Message> = core.drain().collect();
    for mut msg in held {
        msg.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(msg);
    }
    let _ = q.unbind(o.queue);
    let out = serde_json::json!({
        "queue": o.queue, "label": o.label, "params": params, "stats": core.stats(),
        "verdict_errors": verdict_errors, "kernel_errors": kernel_errors,
    });
    println!("{out}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Feeds `n` packets 5 ms apart and releases them on a 1 ms virtual clock; returns
    /// (id, arrival, release) of the released ones, in release order, and the core.
    fn drive(p: LinkParams, n: u64, cap: usize) -> (Vec<(u64, Instant, Instant)>, Impairer<u64>) {
        let t0 = Instant::now();
        let mut c = Impairer::new(p, 7, cap).unwrap();
        let mut out = Vec::new();
        let mut arrived = std::collections::HashMap::new();
        let end = n * 5 + 30_000;
        for t in 0..end {
            let now = t0 + ms(t);
            if t % 5 == 0 && t / 5 < n {
                arrived.insert(t / 5, now);
                let _ = c.handle_packet(now, t / 5);
            }
            while let Some(id) = c.poll_release(now) {
                out.push((id, arrived[&id], now));
            }
        }
        (out, c)
    }

    #[test]
    fn delay_only_keeps_order_and_delays_exactly() {
        let p = LinkParams { delay: ms(100), ..Default::default() };
        let (out, c) = drive(p, 200, 4096);
        assert_eq!(out.len(), 200);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(out.iter().all(|(_, a, r)| *r - *a == ms(100)));
        assert_eq!(c.stats().released, 200);
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn fifo_jitter_never_reorders_and_stays_in_bounds() {
        let p = LinkParams { delay: ms(100), jitter: ms(30), ..Default::default() };
        let (out, _) = drive(p, 2000, 4096);
        assert_eq!(out.len(), 2000);
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "in order");
        // In a FIFO a packet can wait for the one ahead (at most the jitter's width more).
        assert!(out.iter().all(|(_, a, r)| *r - *a >= ms(70) && *r - *a <= ms(131)));
        let spread: Vec<u128> = out.iter().map(|(_, a, r)| (*r - *a).as_millis()).collect();
        assert!(spread.iter().min() < spread.iter().max(), "delays vary");
    }

    #[test]
    fn netem_jitter_reorders() {
        let p = LinkParams {
            delay: ms(100),
            jitter: ms(30),
            jitter_reorders: true,
            ..Default::default()
        };
        let (out, _) = drive(p, 2000, 4096);
        assert_eq!(out.len(), 2000);
        let swaps = out.windows(2).filter(|w| w[0].0 > w[1].0).count();
        assert!(swaps > 100, "{swaps} swaps");
        assert!(out.iter().all(|(_, a, r)| *r - *a >= ms(70) && *r - *a <= ms(131)));
    }

    #[test]
    fn normal_jitter_is_never_negative() {
        let p = LinkParams {
            delay: ms(5),
            jitter: ms(30),
            dist: JitterDist::Normal,
            jitter_reorders: true,
            ..Default::default()
        };
        let (out, _) = drive(p, 2000, 4096);
        assert_eq!(out.len(), 2000);
        assert!(out.iter().all(|(_, a, r)| r >= a));
    }

    #[test]
    fn loss_share_is_near_the_parameter() {
        let p = LinkParams { loss: 0.1, ..Default::default() };
        let (out, c) = drive(p, 10_000, 4096);
        let s = c.stats();
        assert_eq!(s.packets, 10_000);
        assert_eq!(s.lost + s.released, 10_000);
        assert_eq!(out.len() as u64, s.released);
        assert!((800..1200).contains(&s.lost), "{} lost", s.lost);
    }

    #[test]
    fn reorder_share_lets_later_packets_overtake() {
        let p = LinkParams { reorder: 0.05, reorder_gap: ms(20), ..Default::default() };
        let (out, c) = drive(p, 10_000, 4096);
        assert_eq!(out.len(), 10_000);
        let s = c.stats();
        assert!((350..650).contains(&s.reordered), "{} reordered", s.reordered);
        // Each held-back packet is overtaken by the ~4 sent in its 20 ms.
        let late = out.windows(2).filter(|w| w[0].0 > w[1].0).count() as u64;
        assert!(late >= s.reordered / 2 && late <= s.reordered, "{late} inversions");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let p = LinkParams { delay: ms(1000), ..Default::default() };
        let (out, c) = drive(p, 500, 100);
        let s = c.stats();
        assert_eq!(s.max_held, 100);
        assert!(s.overflow > 0);
        assert_eq!(out.len() as u64 + s.overflow, 500);
    }

    #[test]
    fn bad_parameters_are_refused() {
        let bad = |p: LinkParams| Impairer::<u8>::new(p, 1, 1).err();
        assert_eq!(bad(LinkParams { loss: 1.5, ..Default::default() }), Some(ParamError::Loss));
        assert_eq!(
            bad(LinkParams { loss: f64::NAN, ..Default::default() }),
            Some(ParamError::Loss)
        );
        assert_eq!(
            bad(LinkParams { reorder: -0.1, ..Default::default() }),
            Some(ParamError::Reorder)
        );
        assert_eq!(
            bad(LinkParams { delay: ms(20_000), ..Default::default() }),
            Some(ParamError::TooLong)
        );
    }
}
