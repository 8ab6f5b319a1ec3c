//! The results of a run: a table, a JSON document and an SVG plot (hand-written).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::saturate::{Saturation, Step};
use super::shardmedia::{self, ShardMedia};
use super::simulcast::{self, ClassSummary, SimOutcome};
use super::{Options, PhaseResult};

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The median of the per-second p50 latencies and the worst per-second p99 while the ramp ran
/// (seconds that had samples), microseconds.
pub fn ramp_latency(p: &PhaseResult) -> Option<(u64, u64)> {
    let (from, to) = p.ramp_s?;
    let mut p50s: Vec<u64> = Vec::new();
    let mut worst = 0;
    for (sec, _) in &p.seconds {
        if sec.t > from && sec.t <= to + 1.0 && sec.samples > 0 {
            p50s.push(sec.p50_us);
            worst = worst.max(sec.p99_us);
        }
    }
    if p50s.is_empty() {
        return None;
    }
    p50s.sort_unstable();
    Some((p50s[p50s.len() / 2], worst))
}

/// Each data-plane thread's CPU in the window: its own, its io_uring workers', how busy it was
/// (both together, over the window) and its share of the data plane.
fn per_shard_cpu(p: &PhaseResult) -> Vec<Value> {
    let all = p.data_plane_cpu();
    p.shard_cpu
        .iter()
        .map(|(n, c)| {
            let total = p.shard_total_cpu(n);
            json!({
                "thread": n,
                "cpu_s": c,
                "iou_wrk_cpu_s": total - c,
                "busy": total / p.window_s.max(1e-9),
                "share_of_data_plane": if all > 0.0 { Some(total / all) } else { None },
            })
        })
        .collect()
}

/// Window totals of the shard mesh (`None`: the server exported no per-shard media metrics).
fn cross_shard(window: &[ShardMedia]) -> Value {
    if window.is_empty() {
        return Value::Null;
    }
    let t = shardmedia::total(window);
    json!({
        "mesh_out": t.mesh_out, "mesh_in": t.mesh_in, "mesh_full_drops": t.mesh_full,
        "tx_full_drops": t.tx_full, "media_drops": t.media_drops,
    })
}

/// Per shard: where the consumers were at the end of the ramp, and the window's mesh traffic.
fn shards_json(p: &PhaseResult) -> Value {
    let mut ids: Vec<u32> =
        p.shards_after_ramp.iter().chain(&p.shards_window).map(|m| m.shard).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.iter()
        .map(|&i| {
            let ramp = p.shards_after_ramp.iter().find(|m| m.shard == i);
            let win = p.shards_window.iter().find(|m| m.shard == i);
            json!({
                "shard": i,
                "consumers_after_ramp": ramp.map(|m| m.subscribers),
                "publishers_after_ramp": ramp.map(|m| m.publishers),
                "mirror_producers_after_ramp": ramp.map(|m| m.mirror_producers),
                "window": win.map(|m| json!({
                    "rtp_out": m.rtp_out, "mesh_out": m.mesh_out, "mesh_in": m.mesh_in,
                    "mesh_full_drops": m.mesh_full, "tx_full_drops": m.tx_full,
                    "media_drops": m.media_drops,
                })),
            })
        })
        .collect()
}

fn step_json(s: &Step) -> Value {
    let p = &s.result;
    json!({
        "index": s.index,
        "refine": s.refine,
        "verdict": s.verdict.as_str(),
        "note": s.note,
        "video_bitrate": p.video_bitrate,
        "offered_egress_pps": p.offered_egress_pps,
        "server_egress_pps": p.egress_pps(),
        "expected": p.expected,
        "delivered": p.delivered,
        "loss": p.loss(),
        "worst_subscriber_loss": p.worst_subscriber_loss,
        "window_s": p.window_s,
        "data_plane_cpu_s": p.data_plane_cpu(),
        "egress_pps_per_core": p.pps_per_core(),
        "data_plane_cpu": per_shard_cpu(p),
        "iou_wrk_threads": p.iou_wrk_threads,
        "latency_ms": {
            "p50": ms(p.latency.quantile(0.5)),
            "p99": ms(p.latency.quantile(0.99)),
        },
        "cross_shard": cross_shard(&p.shards_window),
        "load_generator_busy": p.load_cpu,
        "generator_tx_full": p.generator_tx_full,
        "generator_late_frames": p.generator_late_frames,
        "kernel_udp_rcvbuf_drops": p.udp_buffer_drops.map(|d| d.0),
        "kernel_udp_sndbuf_drops": p.udp_buffer_drops.map(|d| d.1),
        "recorder_cpu_s": p.recorder_cpu,
        "recorded_bytes": p.recorded_bytes,
    })
}

fn saturation_json(s: &Saturation) -> Value {
    let best = s.best_step().map(|b| {
        let p = &b.result;
        json!({
            "step": b.index,
            "video_bitrate": p.video_bitrate,
            "egress_pps": p.egress_pps(),
            "egress_pps_per_core": p.pps_per_core(),
            "loss": p.loss(),
            "data_plane_cpu": per_shard_cpu(p),
        })
    });
    json!({
        "knob": "video_bitrate",
        "factor": s.factor,
        "loss_limit": s.loss_limit,
        "stop": s.stop,
        "best": best,
        "steps": s.steps.iter().map(step_json).collect::<Vec<_>>(),
    })
}

fn layer_json(l: Option<u8>) -> Value {
    l.map_or(Value::Null, |l| {
        let i = usize::from(l.min(2));
        json!({"index": i, "rid": simulcast::RIDS[i], "width": simulcast::LAYER_SIZES[i].0,
               "height": simulcast::LAYER_SIZES[i].1})
    })
}

fn class_json(c: &ClassSummary) -> Value {
    json!({
        "legs": c.legs,
        "legs_on_layer": c.on_layer,
        "legs_without_video": c.no_video,
        "video_loss": c.video_loss,
        "worst_video_loss": c.worst_video_loss,
        "freezes": c.freezes,
        "freeze_total_ms": c.freeze_total.as_secs_f64() * 1000.0,
        "longest_freeze_ms": c.longest_freeze.as_secs_f64() * 1000.0,
        "legs_with_freezes": c.legs_with_freezes,
        "layer_switches": c.switches,
        "cap_drops": c.cap_drops,
        "mean_video_bps": c.mean_video_bps,
    })
}

/// `--simulcast`: per leg and per class (capped, uncapped); `null` without.
fn simulcast_json(p: &PhaseResult) -> Value {
    if p.sim_legs.is_empty() {
        return Value::Null;
    }
    let legs: Vec<Value> = p
        .sim_legs
        .iter()
        .map(|l| {
            json!({
                "client": l.index,
                "capped": l.cap_bps.is_some(),
                "cap_bps": l.cap_bps,
                "layer": layer_json(l.layer),
                "last_layer": layer_json(l.last_layer),
                "layer_packets": l.layer_packets,
                "layer_switches": l.switches,
                "temporal_ids": (0..8u8).filter(|t| l.tids & (1 << t) != 0).collect::<Vec<_>>(),
                "video_expected": l.video_expected,
                "video_delivered": l.video_delivered,
                "video_loss": l.video_loss(),
                "video_bps": l.video_bps,
                "frames": l.frames,
                "freezes": l.freezes,
                "freeze_total_ms": l.freeze_total.as_secs_f64() * 1000.0,
                "longest_freeze_ms": l.longest_freeze.as_secs_f64() * 1000.0,
                "cap_drops": l.cap_drops,
                "twcc_feedback_sent": l.twcc_feedback,
                "remb_sent": l.remb,
                "padding_packets": l.padding,
            })
        })
        .collect();
    let class = |capped: bool| {
        class_json(&simulcast::summarize(
            p.sim_legs.iter().filter(|l| l.cap_bps.is_some() == capped),
        ))
    };
    json!({
        "publisher_keyframe_requests": p.publisher_keyframe_requests,
        "publisher_retransmissions": p.publisher_retransmissions,
        "capped": class(true),
        "uncapped": class(false),
        "legs": legs,
    })
}

/// `--simulcast` lines of the table: each class, then up to 12 legs.
fn simulcast_lines(s: &mut String, p: &PhaseResult) {
    if p.sim_legs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "    simulcast: publishers got {} keyframe requests and answered NACKs with {} \
         retransmissions in the window",
        p.publisher_keyframe_requests, p.publisher_retransmissions
    );
    for capped in [false, true] {
        let legs: Vec<&SimOutcome> =
            p.sim_legs.iter().filter(|l| l.cap_bps.is_some() == capped).collect();
        if legs.is_empty() {
            continue;
        }
        let c = simulcast::summarize(legs.iter().copied());
        let cap = legs.iter().find_map(|l| l.cap_bps).map(|b| format!(" at {} kbit/s", b / 1000));
        let _ = writeln!(
            s,
            "    {}{}: {} legs, on layer q/h/f {}/{}/{} (no video {}), video loss {:.2}% (worst {:.2}%), {:.0} kbit/s each, freezes {} on {} legs ({:.0} ms, longest {:.0} ms), switches {}, policer drops {}",
            if capped { "capped" } else { "uncapped" },
            cap.unwrap_or_default(),
            c.legs,
            c.on_layer[0],
            c.on_layer[1],
            c.on_layer[2],
            c.no_video,
            c.video_loss * 100.0,
            c.worst_video_loss * 100.0,
            c.mean_video_bps / 1000.0,
            c.freezes,
            c.legs_with_freezes,
            c.freeze_total.as_secs_f64() * 1000.0,
            c.longest_freeze.as_secs_f64() * 1000.0,
            c.switches,
            c.cap_drops
        );
    }
    for l in p.sim_legs.iter().take(12) {
        let _ = writeln!(
            s,
            "      leg {:>5}{:<9} layer {:<17} loss {:>6.2}%  {:>6.0} kbit/s  frames {:>5}  freezes {} ({:.0} ms)  switches {}  twcc {}",
            l.index,
            l.cap_bps.map(|b| format!(" cap {}k", b / 1000)).unwrap_or_default(),
            l.layer.map(simulcast::layer_name).unwrap_or_else(|| "-".into()),
            l.video_loss() * 100.0,
            l.video_bps / 1000.0,
            l.frames,
            l.freezes,
            l.freeze_total.as_secs_f64() * 1000.0,
            l.switches,
            l.twcc_feedback
        );
    }
    if p.sim_legs.len() > 12 {
        let _ = writeln!(s, "      ({} more legs in the JSON)", p.sim_legs.len() - 12);
    }
}

fn phase_json(p: &PhaseResult) -> Value {
    let per_shard = per_shard_cpu(p);
    let iou: f64 = p.iou_wrk_cpu.iter().map(|(_, c)| c).sum();
    let mut v = json!({
        "label": p.label,
        "kind": p.kind,
        "backend": p.backend,
        "server_shards": p.server_shards,
        "valid": p.refused.is_none(),
        "refused": p.refused,
        "window_s": p.window_s,
        "clients": p.clients,
        "connected": p.connected,
        "failures": p.failures,
        "server_ingress_pps": p.ingress_pps(),
        "server_ingress_bps": p.sent_bytes as f64 * 8.0 / p.window_s.max(1e-9),
        "server_egress_pps": p.egress_pps(),
        "server_egress_bps": p.recv_bytes as f64 * 8.0 / p.window_s.max(1e-9),
        "sent_packets": p.sent_packets,
        "expected": p.expected,
        "delivered": p.delivered,
        "loss": p.loss(),
        "worst_subscriber_loss": p.worst_subscriber_loss,
        "latency_ms": {
            "samples": p.latency.count(),
            "p50": ms(p.latency.quantile(0.5)),
            "p99": ms(p.latency.quantile(0.99)),
            "p999": ms(p.latency.quantile(0.999)),
            "max": ms(p.latency.max()),
        },
        "join_to_first_packet_ms": {
            "samples": p.join_to_first.count(),
            "p50": ms(p.join_to_first.quantile(0.5)),
            "p99": ms(p.join_to_first.quantile(0.99)),
            "max": ms(p.join_to_first.max()),
        },
        "verified": p.verified,
        "verify_failures": p.verify_failures,
        "srtp_failures": p.srtp_failures,
        "data_plane_cpu": per_shard,
        "data_plane_cpu_s": p.data_plane_cpu(),
        "iou_wrk": {
            "threads": p.iou_wrk_threads,
            "cpu_s": iou,
            "by_thread": p
                .iou_wrk_cpu
                .iter()
                .map(|(n, c)| json!({"thread": n, "cpu_s": c}))
                .collect::<Vec<_>>(),
        },
        "max_shard_share_of_data_plane": p.max_shard_share(),
        "egress_pps_per_core": p.pps_per_core(),
        "egress_pps_per_process_cpu": p.pps_per_process_cpu(),
        "video_bitrate": p.video_bitrate,
        "offered_egress_pps": p.offered_egress_pps,
        "generator_tx_full": p.generator_tx_full,
        "generator_late_frames": p.generator_late_frames,
        "server_process_cpu_s": p.server_cpu_total,
        "server_rss_bytes": p.server_rss,
        "memory_per_subscriber_leg_bytes": p.mem_per_leg,
        "load_generator_busy": p.load_cpu,
        "kernel_udp_rcvbuf_drops": p.udp_buffer_drops.map(|d| d.0),
        "kernel_udp_sndbuf_drops": p.udp_buffer_drops.map(|d| d.1),
    });
    v["loop_turns"] = p
        .loop_turns
        .iter()
        .map(|(part, t)| {
            json!({"part": part, "turns": t.turns, "over_20ms": t.over_20ms,
                   "longest_le_ms": t.longest_le_s.map(|s| if s.is_finite() { json!(s * 1000.0) } else { json!("inf") })})
        })
        .collect();
    v["shards"] = shards_json(p);
    v["simulcast"] = simulcast_json(p);
    v["cross_shard"] = cross_shard(&p.shards_window);
    v["saturation"] = p.saturation.as_ref().map_or(Value::Null, saturation_json);
    v["ramp_latency_ms"] = match ramp_latency(p) {
        Some((p50, p99)) => json!({"median_p50": ms(p50), "worst_p99": ms(p99)}),
        None => Value::Null,
    };
    v["seconds"] = p
        .seconds
        .iter()
        .map(|(s, cpu)| {
            json!({
                "t": s.t, "tx_pps": s.sent_packets, "rx_pps": s.recv_packets,
                "rx_bps": s.recv_bytes * 8, "tx_bps": s.sent_bytes * 8,
                "p50_ms": ms(s.p50_us), "p99_ms": ms(s.p99_us), "server_cpu": cpu,
            })
        })
        .collect();
    v
}

/// Ratios: each ringsfu phase to the raw phase; io_uring to epoll (per shard count when the run
/// had several); each shard count N to 1 shard, same backend (`"N shards/1 shard (backend)"`:
/// egress per data-plane CPU-second and egress pps; with `--saturate` those of the best steps).
pub fn ratios(phases: &[PhaseResult]) -> Value {
    let raw = phases.iter().find(|p| p.kind == "raw");
    let mut out = serde_json::Map::new();
    for p in phases.iter().filter(|p| p.kind == "ringsfu") {
        if let Some(raw) = raw {
            let per_core = match (p.pps_per_core(), raw.pps_per_core()) {
                (Some(a), Some(b)) if b > 0.0 => Some(a / b),
                _ => None,
            };
            let delivered =
                if raw.egress_pps() > 0.0 { Some(p.egress_pps() / raw.egress_pps()) } else { None };
            out.insert(
                format!("{}/raw", p.label),
                json!({"egress_pps_per_core": per_core, "egress_pps": delivered}),
            );
        }
    }
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let ringsfu: Vec<&PhaseResult> = phases.iter().filter(|p| p.kind == "ringsfu").collect();
    let mut counts: Vec<Option<usize>> = Vec::new();
    for p in &ringsfu {
        if !counts.contains(&p.server_shards) {
            counts.push(p.server_shards);
        }
    }
    // io_uring against epoll, at each shard count: the medians of each backend's phases when
    // `--backends` lists them more than once (alternating runs against this machine's noise).
    for n in &counts {
        let median = |b: &str| {
            let mut v: Vec<f64> = ringsfu
                .iter()
                .filter(|p| p.backend.as_deref() == Some(b) && p.server_shards == *n)
                .filter_map(|p| p.pps_per_core())
                .collect();
            v.sort_by(f64::total_cmp);
            let runs = v.len();
            (runs > 0).then(|| (v[runs / 2] + v[(runs - 1) / 2]) / 2.0).map(|m| (m, runs))
        };
        if let (Some((u, ur)), Some((e, er))) = (median("uring"), median("epoll")) {
            let key = match n {
                Some(1) if counts.len() > 1 => "uring/epoll (1 shard)".to_string(),
                Some(n) if counts.len() > 1 => format!("uring/epoll ({n} shards)"),
                _ => "uring/epoll".to_string(),
            };
            out.insert(
                key,
                json!({"egress_pps_per_core": ratio(Some(u), Some(e)), "runs": [ur, er]}),
            );
        }
    }
    // N shards against 1 shard, same backend: egress per data-plane CPU-second and egress.
    for p in &ringsfu {
        let Some(n) = p.server_shards.filter(|&n| n != 1) else { continue };
        let Some(one) =
            ringsfu.iter().find(|q| q.backend == p.backend && q.server_shards == Some(1))
        else {
            continue;
        };
        let b = p.backend.as_deref().unwrap_or("server");
        out.insert(
            format!("{n} shards/1 shard ({b})"),
            json!({
                "egress_pps_per_core": ratio(p.pps_per_core(), one.pps_per_core()),
                "egress_pps": ratio(Some(p.egress_pps()), Some(one.egress_pps())),
                "saturation": p.saturation.is_some(),
            }),
        );
    }
    // Every ringsfu phase against Janus, like for like: egress per CPU-second of the whole
    // server process; loss and latency side by side.
    if let Some(j) = phases.iter().find(|p| p.kind == "janus") {
        for p in &ringsfu {
            out.insert(
                format!("{}/janus", p.label),
                json!({
                    "egress_pps_per_process_cpu":
                        ratio(p.pps_per_process_cpu(), j.pps_per_process_cpu()),
                    "process_cpu_s": [p.server_cpu_total, j.server_cpu_total],
                    "egress_pps": [p.egress_pps(), j.egress_pps()],
                    "loss": [p.loss(), j.loss()],
                    "latency_p50_ms": [ms(p.latency.quantile(0.5)), ms(j.latency.quantile(0.5))],
                    "latency_p99_ms": [ms(p.latency.quantile(0.99)), ms(j.latency.quantile(0.99))],
                }),
            );
        }
    }
    Value::Object(out)
}

/// The side-by-side block of a run with a Janus phase: per phase the whole server process's CPU
/// and egress per CPU-second of it, loss and latency (empty without Janus).
pub fn peer_lines(phases: &[PhaseResult]) -> String {
    let mut s = String::new();
    if !phases.iter().any(|p| p.kind == "janus") {
        return s;
    }
    let _ = writeln!(
        s,
        "{:<16} {:>13} {:>16} {:>12} {:>14} {:>9} {:>8} {:>8}",
        "server",
        "process cpu s",
        "pps/process cpu",
        "dp cpu s",
        "pps/dp core",
        "loss %",
        "p50 ms",
        "p99 ms"
    );
    for p in phases.iter().filter(|p| p.kind == "ringsfu" || p.kind == "janus") {
        let dp = p.kind == "ringsfu";
        let _ = writeln!(
            s,
            "{:<16} {:>13} {:>16} {:>12} {:>14} {:>9.4} {:>8.2} {:>8.2}",
            p.label,
            opt(p.server_cpu_total, 1.0, 2),
            opt(p.pps_per_process_cpu(), 1.0, 0),
            if dp { format!("{:.2}", p.data_plane_cpu()) } else { "-".into() },
            if dp { opt(p.pps_per_core(), 1.0, 0) } else { "-".into() },
            p.loss() * 100.0,
            ms(p.latency.quantile(0.5)),
            ms(p.latency.quantile(0.99)),
        );
    }
    if let Value::Object(r) = ratios(phases) {
        for (k, v) in r.iter().filter(|(k, _)| k.ends_with("/janus")) {
            let _ = writeln!(
                s,
                "ratio {k}: egress per process CPU-second {}",
                opt(v["egress_pps_per_process_cpu"].as_f64(), 1.0, 3)
            );
        }
    }
    s
}

/// The JSON document of a run.
pub fn json(o: &Options, phases: &[PhaseResult]) -> Value {
    let m = o.media();
    json!({
        "tool": "ringsfu-load",
        "version": env!("CARGO_PKG_VERSION"),
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        },
        "topology": {
            "publishers_per_session": o.publishers,
            "subscribers_per_session": o.subscribers,
            "sessions": o.sessions,
            "subscriber_legs": o.legs(),
            "ramp_per_s": o.ramp,
            "duration_s": o.duration,
        },
        "media": {
            "video_bitrate": m.video_bitrate, "packet_size": m.video_packet, "fps": m.fps,
            "keyframe_every_frames": m.keyframe_every, "keyframe_factor": m.keyframe_factor,
            "audio_packet": m.audio_packet, "pps_per_publisher": m.packets_per_second(),
            "expected_egress_pps": o.expected_egress_pps(),
        },
        "verify_ratio": o.verify_ratio,
        "simulcast": if o.simulcast {
            json!({
                "rids": simulcast::RIDS,
                "layer_bitrates": (0..3).map(|l| simulcast::layer_bitrate(m.video_bitrate, l)).collect::<Vec<_>>(),
                "layer_sizes": simulcast::LAYER_SIZES,
                "pps_per_publisher": simulcast::publisher_pps(&m),
                "leg_cap_kbps": o.leg_cap,
                "capped_share": o.capped_share,
                "remb": o.remb,
                "twcc_interval_ms": 50,
                "freeze_gap_ms": simulcast::FREEZE_GAP.as_millis() as u64,
            })
        } else {
            Value::Null
        },
        "server_shards": o.server_shards,
        "server_env": o.server_env,
        "targets": o.targets,
        "janus_event_loops": o.janus_event_loops,
        "saturate": if o.saturate {
            json!({
                "knob": "video_bitrate", "factor": o.saturate_factor, "steps": o.saturate_steps,
                "refine": o.saturate_refine, "loss_limit": o.saturate_loss,
                "settle_s": o.saturate_settle, "max_time_s": o.saturate_max_time,
            })
        } else {
            Value::Null
        },
        "valid": phases.iter().all(|p| p.refused.is_none()),
        "phases": phases.iter().map(phase_json).collect::<Vec<_>>(),
        "ratios": ratios(phases),
    })
}

fn opt(v: Option<f64>, scale: f64, prec: usize) -> String {
    v.map(|x| format!("{:.*}", prec, x * scale)).unwrap_or_else(|| "-".into())
}

/// The end-of-run table.
pub fn table(phases: &[PhaseResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>10} {:>10} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10} {:>11} {:>9} {:>6}",
        "phase",
        "in pps",
        "out pps",
        "out Mbit/s",
        "loss %",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "join p50",
        "dp cpu s",
        "pps/core",
        "B/leg",
        "gen %"
    );
    for p in phases {
        let _ = writeln!(
            s,
            "{:<16} {:>9.0} {:>10.0} {:>10.1} {:>9.4} {:>8.2} {:>8.2} {:>8.2} {:>9} {:>10.2} {:>11} {:>9} {:>6.0}",
            p.label,
            p.ingress_pps(),
            p.egress_pps(),
            p.recv_bytes as f64 * 8.0 / p.window_s.max(1e-9) / 1e6,
            p.loss() * 100.0,
            ms(p.latency.quantile(0.5)),
            ms(p.latency.quantile(0.99)),
            ms(p.latency.quantile(0.999)),
            if p.join_to_first.count() > 0 {
                format!("{:.0}ms", ms(p.join_to_first.quantile(0.5)))
            } else {
                "-".into()
            },
            p.data_plane_cpu(),
            opt(p.pps_per_core(), 1.0, 0),
            opt(p.mem_per_leg, 1.0, 0),
            p.load_cpu * 100.0,
        );
        shard_lines(&mut s, p);
        simulcast_lines(&mut s, p);
        if let Some(sat) = &p.saturation {
            saturation_lines(&mut s, sat);
        }
        if !p.loop_turns.is_empty() {
            let parts: Vec<String> =
                p.loop_turns.iter().map(|(part, t)| format!("{part}: {t}")).collect();
            let _ = writeln!(s, "    server loop turns: {}", parts.join("; "));
        }
        if let Some((p50, p99)) = ramp_latency(p) {
            let _ = writeln!(
                s,
                "    latency while the room filled: median 1-s p50 {:.2} ms, worst 1-s p99 {:.2} ms",
                ms(p50),
                ms(p99)
            );
        }
        if let Some((rcv, snd)) = p.udp_buffer_drops
            && rcv + snd > 0
        {
            let _ = writeln!(s, "    kernel UDP buffer drops: {rcv} receive, {snd} send");
        }
        if let Some(r) = &p.refused {
            let _ = writeln!(s, "    REFUSED: {r}");
        }
        for f in p.failures.iter().take(5) {
            let _ = writeln!(s, "    failure: {f}");
        }
    }
    if let Value::Object(r) = ratios(phases) {
        for (k, v) in r.iter().filter(|(k, _)| !k.ends_with("/janus")) {
            let _ = writeln!(
                s,
                "ratio {k}: egress pps per core {}{}",
                opt(v["egress_pps_per_core"].as_f64(), 1.0, 3),
                v["egress_pps"]
                    .as_f64()
                    .map(|x| format!(", egress pps {x:.3}"))
                    .or_else(|| {
                        let runs = v["runs"].as_array().filter(|r| r.iter().any(|n| n != 1))?;
                        Some(format!(" (medians of {} and {} runs)", runs[0], runs[1]))
                    })
                    .unwrap_or_default()
            );
        }
    }
    s.push_str(&peer_lines(phases));
    s
}

/// Each shard thread's CPU (with its io_uring workers' and its share of the data plane), where
/// the consumers were at the end of the ramp and the window's cross-shard traffic.
fn shard_lines(s: &mut String, p: &PhaseResult) {
    let all = p.data_plane_cpu();
    for (n, c) in &p.shard_cpu {
        let total = p.shard_total_cpu(n);
        let _ =
            write!(s, "    {n}: {c:.2} s CPU ({:.0}% busy", total / p.window_s.max(1e-9) * 100.0);
        if total > *c {
            let _ = write!(s, ", with {:.2} s of its io_uring workers", total - c);
        }
        if p.shard_cpu.len() > 1 && all > 0.0 {
            let _ = write!(s, ", {:.0}% of the data plane", total / all * 100.0);
        }
        let _ = writeln!(s, ")");
    }
    if let Some(rec) = p.recorder_cpu {
        let _ = write!(s, "    recorder threads: {rec:.2} s CPU");
        if all > 0.0 {
            let _ = write!(s, " ({:.2} x the data plane's)", rec / all);
        }
        if let Some(b) = p.recorded_bytes {
            let _ = write!(s, ", {b} bytes recorded");
        }
        let _ = writeln!(s);
    }
    if p.iou_wrk_threads > 0 {
        let iou: f64 = p.iou_wrk_cpu.iter().map(|(_, c)| c).sum();
        let _ = writeln!(
            s,
            "    io_uring workers: {} threads, {iou:.2} s CPU (in dp cpu s)",
            p.iou_wrk_threads
        );
    }
    if !p.shards_after_ramp.is_empty() {
        let list = |f: fn(&ShardMedia) -> u64| {
            p.shards_after_ramp
                .iter()
                .map(|m| format!("{}: {}", m.shard, f(m)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "    consumers per shard at the end of the ramp: {}; mirror producers: {}",
            list(|m| m.subscribers),
            list(|m| m.mirror_producers)
        );
    }
    if !p.shards_window.is_empty() {
        let t = shardmedia::total(&p.shards_window);
        let _ = writeln!(
            s,
            "    cross-shard in the window: {} mesh messages out, {} in; mesh_full drops {} \
             (server media drops: {} in all, {} tx_full)",
            t.mesh_out, t.mesh_in, t.mesh_full, t.media_drops, t.tx_full
        );
    }
}

fn saturation_lines(s: &mut String, sat: &Saturation) {
    let _ = writeln!(
        s,
        "    saturation (video bitrate x{} per step, loss limit {}%): {} step(s); stopped: {}",
        sat.factor,
        sat.loss_limit * 100.0,
        sat.steps.len(),
        sat.stop
    );
    for st in &sat.steps {
        let p = &st.result;
        let shards: Vec<String> = p
            .shard_cpu
            .iter()
            .map(|(n, _)| {
                format!("{n} {:.0}%", p.shard_total_cpu(n) / p.window_s.max(1e-9) * 100.0)
            })
            .collect();
        let _ = writeln!(
            s,
            "      step {:>2}{} {:>7.2} Mbit/s  offered {:>9.0} pps  out {:>9.0} pps  \
             loss {:>8.4}%  {:>8} pps/core  gen {:>3.0}%  [{}]  {}",
            st.index,
            if st.refine { "r" } else { " " },
            p.video_bitrate as f64 / 1e6,
            p.offered_egress_pps,
            p.egress_pps(),
            p.loss() * 100.0,
            opt(p.pps_per_core(), 1.0, 0),
            p.load_cpu * 100.0,
            shards.join(", "),
            st.verdict.as_str()
        );
        let t = shardmedia::total(&p.shards_window);
        if t.media_drops > 0 {
            let _ = writeln!(
                s,
                "               server media drops {} (tx_full {}, mesh_full {})",
                t.media_drops, t.tx_full, t.mesh_full
            );
        }
        if let Some(n) = &st.note {
            let _ = writeln!(s, "               {n}");
        }
    }
    match sat.best_step() {
        Some(b) => {
            let p = &b.result;
            let _ = writeln!(
                s,
                "    highest sustained: {:.0} egress pps, {} per data-plane CPU-second (step {}, \
                 {:.2} Mbit/s per publisher, loss {:.4}%); the row above is that step",
                p.egress_pps(),
                opt(p.pps_per_core(), 1.0, 0),
                b.index,
                p.video_bitrate as f64 / 1e6,
                p.loss() * 100.0
            );
        }
        None => {
            let _ = writeln!(
                s,
                "    no step sustained the loss limit (the row above is the first step): start \
                 lower (--video-bitrate) or with fewer subscribers"
            );
        }
    }
}

/// An SVG plot per phase: received pps (left axis) and p50/p99 latency (right axis) per second.
pub fn svg(phases: &[PhaseResult]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 220.0;
    const PAD: f64 = 50.0;
    let mut s = String::new();
    let total_h = (H + 30.0) * phases.len().max(1) as f64;
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{total_h}" font-family="sans-serif" font-size="11">"#
    );
    for (i, p) in phases.iter().enumerate() {
        let y0 = i as f64 * (H + 30.0);
        let pts = &p.seconds;
        let t_max = pts.iter().map(|(s, _)| s.t).fold(1.0, f64::max);
        let pps_max =
            pts.iter().map(|(s, _)| s.recv_packets.max(s.sent_packets) as f64).fold(1.0, f64::max);
        let lat_max = pts.iter().map(|(s, _)| s.p99_us as f64 / 1000.0).fold(1.0, f64::max);
        let x = |t: f64| PAD + t / t_max * (W - 2.0 * PAD);
        let y = |v: f64, max: f64| y0 + 20.0 + (1.0 - v / max) * (H - 40.0);
        let _ = writeln!(
            s,
            r##"<g><text x="{PAD}" y="{}" font-weight="bold">{} — rx pps (blue, max {:.0}), tx pps (grey), latency p50 (green) / p99 (red), max {:.2} ms</text>"##,
            y0 + 12.0,
            p.label,
            pps_max,
            lat_max
        );
        let _ = writeln!(
            s,
            r##"<rect x="{PAD}" y="{}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            y0 + 20.0,
            W - 2.0 * PAD,
            H - 40.0
        );
        let line =
            |s: &mut String, color: &str, f: &dyn Fn(&super::core::Second) -> f64, max: f64| {
                let d: Vec<String> =
                    pts.iter().map(|(p, _)| format!("{:.1},{:.1}", x(p.t), y(f(p), max))).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                    d.join(" ")
                );
            };
        line(&mut s, "#888", &|p| p.sent_packets as f64, pps_max);
        line(&mut s, "#1f5fbf", &|p| p.recv_packets as f64, pps_max);
        line(&mut s, "#2a9d3a", &|p| p.p50_us as f64 / 1000.0, lat_max);
        line(&mut s, "#c0392b", &|p| p.p99_us as f64 / 1000.0, lat_max);
        let _ = writeln!(
            s,
            r#"<text x="{PAD}" y="{}">0 s</text><text x="{}" y="{}" text-anchor="end">{:.0} s</text></g>"#,
            y0 + H - 8.0,
            W - PAD,
            y0 + H - 8.0,
            t_max
        );
    }
    s.push_str("</svg>\n");
    s
}
