//! `--saturate`: the highest egress packet rate a server sustains for one topology.
//!
//! **The knob is every publisher's video bitrate, the topology stays.** Every client joins once
//! (the ramp as in any run); then the search runs windows one after the other on the same
//! peers, each at a higher bitrate: the first at `--video-bitrate`, each next one
//! `--saturate-factor` times the last (1.25: +25% per step). A step sets the publishers' media
//! (`LoadCommand::SetMedia`), lets `--saturate-settle` seconds pass, then counts one window of
//! `--duration` seconds exactly as a plain run does (loss from the sequence numbers of the
//! packets sent in the window, latency from the verified sample). Why the bitrate and not more
//! subscribers per step:
//!
//! - A step changes one thing, the packet rate. The legs, their placement over the shards
//!   (with `[media] spread_threshold`, where the mesh is used), the control-plane state and
//!   the fanout per packet are those of the topology at every step, so the steps are comparable
//!   and the result names the topology it holds for.
//! - Joining more subscribers costs DTLS handshakes, keyframe requests and one notification to
//!   every participant per join (O(N^2) over a room) on the same two cores; measuring right
//!   after such a burst mixes the join's cost into the forwarding figure, and each step would
//!   take longer than the last.
//! - Egress pps is legs x packets per publisher: with a fixed topology it rises with the
//!   bitrate at a constant packet size (`--packet-size`), so "pps per data-plane core" keeps
//!   the meaning it has in a plain run.
//!
//! What it does not cover: a frame of a high bitrate is a longer burst of packets (every frame
//! of one publisher leaves together, 30 times a second); the server sees the same burst shape
//! at every fanout, so the figure is for the given `--fps` and `--packet-size`.
//!
//! **Stop rules (every loop bounded in steps and in time).** The rising steps stop at the first
//! window whose loss is above `--saturate-loss` (0.1%), when the load generator limited the
//! step (its thread busier than `--max-load-cpu`, its send queue full, or frames sent over a
//! second late: then the loss, if any, is not the server's), after `--saturate-steps` steps, at
//! a video bitrate above [`MAX_VIDEO_BITRATE`], or when the next step would end after
//! `--saturate-max-time` seconds of steps. After a lossy step, `--saturate-refine` steps bisect
//! (geometric mean) between the last sustained and the first lossy bitrate, under the same time
//! limit. The result is the sustained step (loss at most the limit) with the highest egress
//! pps: its total, its pps per data-plane CPU-second, each shard thread's CPU. The phase's
//! figures in the table and the JSON are that step's (the first step's when none sustained),
//! and every step is listed.
//!
//! The server's loop turns of the `window` part (`ringsfu_shard_loop_turn_seconds`) cover every
//! step together; the per-second series covers the whole search.
//!
//! One window per step: on a shared 2-core machine a step near the limit may pass once and fail
//! the next time. The figure is "sustained for one window of `--duration` seconds"; a longer
//! `--duration` makes it stricter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{LoadCommand, MediaProfile, Options, Phase, PhaseResult};

/// The highest video bitrate per publisher a step asks for (bits per second).
pub const MAX_VIDEO_BITRATE: u64 = 200_000_000;

/// Seconds a step takes on top of its settle time and window: 0.5 s before the window, 0.5 s
/// after it, the server's counters and the load core's report.
const STEP_OVERHEAD_S: f64 = 1.5;

/// What a step's window showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Loss at most the limit.
    Sustained,
    /// Loss above the limit.
    Lossy,
    /// The load generator, not the server, may have been the bottleneck.
    GeneratorLimited,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Sustained => "sustained",
            Verdict::Lossy => "lossy",
            Verdict::GeneratorLimited => "generator-limited",
        }
    }
}

/// One step of the search.
#[derive(Debug, Clone)]
pub struct Step {
    pub index: u32,
    /// A bisection step (after the first lossy one) rather than a rising one.
    pub refine: bool,
    pub verdict: Verdict,
    /// Why the step was not the server's (generator-limited) or had nothing to count.
    pub note: Option<String>,
    /// The window's figures at this step (`video_bitrate`, `offered_egress_pps` give the load).
    pub result: PhaseResult,
}

/// The whole search of one phase.
#[derive(Debug, Clone, Default)]
pub struct Saturation {
    pub loss_limit: f64,
    pub factor: f64,
    pub steps: Vec<Step>,
    /// Index in `steps` of the sustained step with the highest egress pps.
    pub best: Option<usize>,
    /// Why the rising steps ended.
    pub stop: String,
}

impl Saturation {
    pub fn best_step(&self) -> Option<&Step> {
        self.best.and_then(|i| self.steps.get(i))
    }
}

fn step_seconds(o: &Options) -> f64 {
    o.saturate_settle + o.duration + STEP_OVERHEAD_S
}

/// Checks the `--saturate-*` options.
pub fn validate(o: &Options) -> Result<(), String> {
    if !(o.saturate_factor > 1.0 && o.saturate_factor <= 4.0) {
        return Err("--saturate-factor must be above 1 and at most 4".into());
    }
    if !(1..=40).contains(&o.saturate_steps) {
        return Err("--saturate-steps must be 1 to 40".into());
    }
    if o.saturate_refine > 6 {
        return Err("--saturate-refine must be 0 to 6".into());
    }
    if !(o.saturate_loss >= 0.0 && o.saturate_loss < 0.5) {
        return Err("--saturate-loss must be in [0, 0.5)".into());
    }
    if !(o.saturate_settle >= 0.0 && o.saturate_settle <= 60.0) {
        return Err("--saturate-settle must be in [0, 60] seconds".into());
    }
    if o.video_bitrate == 0 || o.fps == 0 {
        return Err("--saturate raises the video bitrate: --video-bitrate and --fps above 0".into());
    }
    if o.video_bitrate > MAX_VIDEO_BITRATE {
        return Err(format!("--saturate: --video-bitrate at most {MAX_VIDEO_BITRATE}"));
    }
    let one = step_seconds(o);
    if !(o.saturate_max_time >= one && o.saturate_max_time <= 86_400.0) {
        return Err(format!(
            "--saturate-max-time must be at least one step ({one:.1} s: settle + duration + \
             {STEP_OVERHEAD_S} s) and at most 86400 s"
        ));
    }
    Ok(())
}

/// The verdict on a step's window.
pub fn verdict(s: &PhaseResult, loss_limit: f64) -> (Verdict, Option<String>) {
    if let Some(r) = &s.refused {
        return (Verdict::GeneratorLimited, Some(r.clone()));
    }
    if s.generator_tx_full > 0 {
        let n = s.generator_tx_full;
        let note = format!("the load generator could not send {n} packets (send queue full)");
        return (Verdict::GeneratorLimited, Some(note));
    }
    if s.generator_late_frames > 0 {
        let n = s.generator_late_frames;
        let note = format!("the load generator sent {n} frames over a second late");
        return (Verdict::GeneratorLimited, Some(note));
    }
    if s.expected == 0 {
        return (Verdict::Lossy, Some("no packet expected: no subscriber was counted".into()));
    }
    // Lost over expected, in this order: `1 - delivered / expected` rounds 10 of 10 000 above
    // 0.001.
    let lost = s.expected.saturating_sub(s.delivered) as f64 / s.expected as f64;
    if lost > loss_limit { (Verdict::Lossy, None) } else { (Verdict::Sustained, None) }
}

/// Runs the search on a phase whose clients are all ready (see the module docs); leaves the
/// best step's figures in `r` and the search in `r.saturation`. The publishers are stopped at
/// the end.
pub(super) async fn run(
    ph: &mut Phase<'_>,
    r: &mut PhaseResult,
    subs: &[u32],
    join_start: &HashMap<u32, Instant>,
) -> Result<(), String> {
    let o = ph.o;
    let base = o.media();
    let began = Instant::now();
    let limit = Duration::from_secs_f64(o.saturate_max_time);
    let one = Duration::from_secs_f64(step_seconds(o));
    let fits = |began: Instant| began.elapsed() + one <= limit;
    let mut sat =
        Saturation { loss_limit: o.saturate_loss, factor: o.saturate_factor, ..Default::default() };
    let mut sustained: Option<u64> = None;
    let mut lossy: Option<u64> = None;
    let mut stop = None;
    for k in 0..o.saturate_steps {
        let rate = (base.video_bitrate as f64 * o.saturate_factor.powi(k as i32)).round() as u64;
        if rate > MAX_VIDEO_BITRATE {
            stop = Some(format!(
                "the next bitrate ({:.2} Mbit/s) is above the limit ({} Mbit/s)",
                rate as f64 / 1e6,
                MAX_VIDEO_BITRATE / 1_000_000
            ));
            break;
        }
        if !fits(began) {
            stop = Some(format!("time limit ({} s of steps)", o.saturate_max_time));
            break;
        }
        let s = step(ph, r, subs, join_start, rate, sat.steps.len() as u32, false).await?;
        let (v, note) = (s.verdict, s.note.clone());
        sat.steps.push(s);
        match v {
            Verdict::Sustained => sustained = Some(rate),
            Verdict::Lossy => {
                lossy = Some(rate);
                stop = Some(format!(
                    "loss above {}% at {:.2} Mbit/s per publisher{}",
                    o.saturate_loss * 100.0,
                    rate as f64 / 1e6,
                    note.map(|n| format!(" ({n})")).unwrap_or_default()
                ));
                break;
            }
            Verdict::GeneratorLimited => {
                stop = Some(format!(
                    "the load generator limited the step at {:.2} Mbit/s: {}",
                    rate as f64 / 1e6,
                    note.unwrap_or_default()
                ));
                break;
            }
        }
    }
    sat.stop = stop.unwrap_or_else(|| {
        format!("step limit ({} rising steps) reached within the loss limit", o.saturate_steps)
    });
    if let (Some(mut lo), Some(mut hi)) = (sustained, lossy) {
        for _ in 0..o.saturate_refine {
            let mid = ((lo as f64) * (hi as f64)).sqrt().round() as u64;
            if mid <= lo || mid >= hi || !fits(began) {
                break;
            }
            let s = step(ph, r, subs, join_start, mid, sat.steps.len() as u32, true).await?;
            let v = s.verdict;
            sat.steps.push(s);
            match v {
                Verdict::Sustained => lo = mid,
                Verdict::Lossy => hi = mid,
                Verdict::GeneratorLimited => break,
            }
        }
    }
    ph.command(LoadCommand::StopMedia).await?;
    sat.best = sat
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.verdict == Verdict::Sustained)
        .max_by(|a, b| a.1.result.egress_pps().total_cmp(&b.1.result.egress_pps()))
        .map(|(i, _)| i);
    // The phase's figures: the best step's, else the first (lowest) step's.
    if let Some(s) =
        sat.best.or((!sat.steps.is_empty()).then_some(0)).and_then(|i| sat.steps.get(i))
    {
        *r = s.result.clone();
    }
    r.saturation = Some(sat);
    Ok(())
}

/// One step at `rate` bits per second of video per publisher.
async fn step(
    ph: &mut Phase<'_>,
    r: &PhaseResult,
    subs: &[u32],
    join_start: &HashMap<u32, Instant>,
    rate: u64,
    index: u32,
    refine: bool,
) -> Result<Step, String> {
    let o = ph.o;
    let media = MediaProfile { video_bitrate: rate, ..o.media() };
    ph.command(LoadCommand::SetMedia(media)).await?;
    ph.idle(Duration::from_secs_f64(o.saturate_settle)).await;
    let mut s = r.clone();
    s.saturation = None;
    s.seconds.clear();
    s.video_bitrate = rate;
    s.offered_egress_pps = o.legs() as f64 * media.packets_per_second();
    ph.window(&mut s, subs, join_start, true).await?;
    let (verdict, note) = verdict(&s, o.saturate_loss);
    if !o.quiet {
        println!(
            "[{}] saturation step {index}{}: video {:.2} Mbit/s, offered {:.0} pps -> out {:.0} \
             pps, loss {:.4}%, data plane {:.2} CPU s ({}), {}{}",
            ph.label,
            if refine { " (refine)" } else { "" },
            rate as f64 / 1e6,
            s.offered_egress_pps,
            s.egress_pps(),
            s.loss() * 100.0,
            s.data_plane_cpu(),
            s.shard_cpu
                .iter()
                .map(|(n, _)| format!(
                    "{n} {:.0}%",
                    s.shard_total_cpu(n) / s.window_s.max(1e-9) * 100.0
                ))
                .collect::<Vec<_>>()
                .join(", "),
            verdict.as_str(),
            note.as_deref().map(|n| format!(": {n}")).unwrap_or_default()
        );
    }
    Ok(Step { index, refine, verdict, note, result: s })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(expected: u64, delivered: u64) -> PhaseResult {
        PhaseResult { expected, delivered, window_s: 1.0, ..Default::default() }
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(&window(10_000, 10_000), 0.001).0, Verdict::Sustained);
        assert_eq!(verdict(&window(10_000, 9_990), 0.001).0, Verdict::Sustained);
        assert_eq!(verdict(&window(10_000, 9_989), 0.001).0, Verdict::Lossy);
        assert_eq!(verdict(&window(0, 0), 0.001).0, Verdict::Lossy);
        let mut w = window(10_000, 10_000);
        w.generator_tx_full = 3;
        assert_eq!(verdict(&w, 0.001).0, Verdict::GeneratorLimited);
        let mut w = window(10_000, 5_000);
        w.generator_late_frames = 1;
        assert_eq!(verdict(&w, 0.001).0, Verdict::GeneratorLimited);
        let mut w = window(10_000, 10_000);
        w.refused = Some("busy".into());
        assert_eq!(verdict(&w, 0.001), (Verdict::GeneratorLimited, Some("busy".into())));
    }
}
