//! Short runs of `ringsfu-load` in each mode against the built `ringsfu` binary on loopback:
//! the run completes, every packet sent in the window is delivered (low rate), and the JSON has
//! the fields BENCHMARKS.md relies on: per backend, per shard count (`--server-shards 1,2`,
//! consumers on both shards, cross-shard counters), and the saturation search (`--saturate`).
//! No timing is asserted.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SECRET: &str = "LOAD_SMOKE";

fn free_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("tcp port").port()
}

fn free_udp() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("udp port").port()
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_ringsfu"))
        .args(["--port", &port.to_string(), "--secret", SECRET, "--log-level", "warn"])
        .args(["--set", "media.shards=1", "--set", "turn.enabled=false"])
        .args(["--set", &format!("media.port_base={}", free_udp())])
        .stdout(Stdio::null())
        .spawn()
        .expect("ringsfu starts");
    let s = Server(child);
    let end = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "ringsfu did not listen within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringsfu-load-smoke-{}-{name}", std::process::id()))
}

/// Runs the load tool (bounded in time); returns the JSON it wrote.
fn run_load(args: &[String], name: &str) -> Value {
    run_load_expecting(args, name, 0)
}

fn run_load_expecting(args: &[String], name: &str, code: i32) -> Value {
    run_load_with_table(args, name, code).0
}

/// Runs the load tool (bounded in time); returns the JSON it wrote and what it printed.
fn run_load_with_table(args: &[String], name: &str, code: i32) -> (Value, String) {
    let json = tmp(&format!("{name}.json"));
    let svg = tmp(&format!("{name}.svg"));
    let out = tmp(&format!("{name}.out"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringsfu-load"))
        .args(args)
        .args(["--json", json.to_str().expect("path"), "--svg", svg.to_str().expect("path")])
        .args(["--duration", "2", "--video-bitrate", "300000", "--packet-size", "600"])
        .args(["--fps", "15", "--ramp", "50", "--quiet", "--secret", SECRET])
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .spawn()
        .expect("ringsfu-load starts");
    let end = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            panic!("ringsfu-load did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let table = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    print!("{table}");
    assert_eq!(status.code(), Some(code), "ringsfu-load exit status: {status}");
    let text = std::fs::read_to_string(&json).expect("json written");
    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg_text.starts_with("<svg") && svg_text.trim_end().ends_with("</svg>"));
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    (serde_json::from_str(&text).expect("valid JSON"), table)
}

fn check_phase(p: &Value) {
    let label = p["label"].as_str().expect("label");
    assert_eq!(p["valid"], true, "{label}: {p}");
    assert_eq!(p["failures"].as_array().map(Vec::len), Some(0), "{label}: {}", p["failures"]);
    let expected = p["expected"].as_u64().expect("expected");
    assert!(expected > 0, "{label}: nothing expected");
    assert_eq!(p["delivered"].as_u64(), Some(expected), "{label}: every packet delivered");
    assert_eq!(p["loss"].as_f64(), Some(0.0), "{label}");
    assert_eq!(p["verify_failures"].as_u64(), Some(0), "{label}");
    assert_eq!(p["srtp_failures"].as_u64(), Some(0), "{label}");
    assert!(p["verified"].as_u64().unwrap_or(0) > 0, "{label}: some packets verified");
    for key in [
        "server_ingress_pps",
        "server_egress_pps",
        "server_egress_bps",
        "worst_subscriber_loss",
        "data_plane_cpu_s",
        "load_generator_busy",
    ] {
        assert!(p[key].is_number(), "{label}: {key} missing: {p}");
    }
    for q in ["p50", "p99", "p999"] {
        assert!(p["latency_ms"][q].is_number(), "{label}: latency {q}");
    }
    assert!(p["seconds"].as_array().is_some_and(|s| !s.is_empty()), "{label}: time series");
}

#[test]
fn load_against_running_server_with_raw_ceiling() {
    let port = free_tcp();
    let server = start_server(port);
    let pid = server.0.id();
    let args: Vec<String> = [
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--server-pid",
        &pid.to_string(),
        "--publishers",
        "2",
        "--subscribers",
        "2",
        "--sessions",
        "2",
        "--raw",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = run_load(&args, "running");
    assert_eq!(v["valid"], true);
    assert_eq!(v["topology"]["subscriber_legs"], 8);
    let phases = v["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[0]["kind"], "ringsfu");
    assert_eq!(phases[1]["kind"], "raw");
    for p in phases {
        check_phase(p);
    }
    let ringsfu = &phases[0];
    assert!(ringsfu["join_to_first_packet_ms"]["samples"].as_u64() == Some(8), "{ringsfu}");
    assert!(ringsfu["server_rss_bytes"].is_number());
    assert!(ringsfu["memory_per_subscriber_leg_bytes"].is_number());
    assert_eq!(
        ringsfu["data_plane_cpu"].as_array().map(Vec::len),
        Some(1),
        "one shard thread: {ringsfu}"
    );
    assert!(v["ratios"]["ringsfu/raw"].is_object(), "{}", v["ratios"]);
    // The server's loop turns of each part, from its /metrics: every part turned, and the
    // teardown (every participant's leaveRoom) left no participant behind.
    let parts = ringsfu["loop_turns"].as_array().expect("loop_turns");
    let names: Vec<&str> = parts.iter().filter_map(|p| p["part"].as_str()).collect();
    assert_eq!(names, ["ramp", "window", "teardown"], "{ringsfu}");
    for p in parts {
        assert!(p["turns"].as_u64().is_some_and(|n| n > 0), "{p}");
        assert!(p["over_20ms"].is_u64() && !p["longest_le_ms"].is_null(), "{p}");
    }
    assert!(ringsfu["ramp_latency_ms"]["worst_p99"].is_number(), "{ringsfu}");
    assert!(phases[1]["loop_turns"].as_array().is_some_and(|a| a.is_empty()), "raw: no server");
    drop(server);
}

#[test]
fn load_starts_server_per_backend_with_sampled_verification() {
    let uring = ringsfu::io::choose_backend(ringsfu::config::IoBackend::Uring).is_ok();
    let backends = if uring { "uring,epoll" } else { "epoll" };
    if !uring {
        eprintln!("io_uring unavailable here: only the epoll backend runs");
    }
    let args: Vec<String> = [
        "--server-bin",
        env!("CARGO_BIN_EXE_ringsfu"),
        "--backends",
        backends,
        "--publishers",
        "1",
        "--subscribers",
        "3",
        "--verify-ratio",
        "0.25",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = run_load(&args, "backends");
    let phases = v["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), backends.split(',').count());
    for p in phases {
        check_phase(p);
        assert!(p["backend"].is_string());
    }
    if uring {
        assert!(v["ratios"]["uring/epoll"].is_object(), "{}", v["ratios"]);
    }
}

#[test]
fn load_refuses_figures_when_its_own_thread_is_the_bottleneck() {
    // A limit of 0% busy cannot be met: the run completes, writes its JSON marked invalid and
    // exits with status 3 instead of printing the table.
    let args: Vec<String> = [
        "--server-bin",
        env!("CARGO_BIN_EXE_ringsfu"),
        "--backends",
        "epoll",
        "--max-load-cpu",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = run_load_expecting(&args, "refused", 3);
    assert_eq!(v["valid"], false);
    let p = &v["phases"][0];
    assert_eq!(p["valid"], false);
    assert!(p["refused"].as_str().is_some_and(|r| r.contains("bottleneck")), "{p}");
}

/// The backend the shard-count runs use: io_uring where the kernel has it (its worker threads
/// are then looked for), else epoll.
fn one_backend() -> &'static str {
    if ringsfu::io::choose_backend(ringsfu::config::IoBackend::Uring).is_ok() {
        "uring"
    } else {
        "epoll"
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The per-shard fields of a phase on `shards` shards with `legs` subscriber legs: one CPU
/// figure per shard thread, the consumers of every shard at the end of the ramp adding up to
/// the legs, the window's cross-shard counters; with 2 shards and a spread threshold of 0 both
/// shards carry consumers and packets cross the mesh; with 1 none do.
fn check_shards(p: &Value, shards: usize, legs: u64) {
    let label = p["label"].as_str().expect("label");
    assert_eq!(p["server_shards"].as_u64(), Some(shards as u64), "{label}");
    let cpu = p["data_plane_cpu"].as_array().expect("data_plane_cpu");
    assert_eq!(cpu.len(), shards, "{label}: one CPU figure per shard thread: {cpu:?}");
    for c in cpu {
        assert!(c["cpu_s"].is_number() && c["iou_wrk_cpu_s"].is_number(), "{label}: {c}");
        assert!(c["share_of_data_plane"].is_number(), "{label}: {c}");
    }
    assert!(p["iou_wrk"]["threads"].is_u64() && p["iou_wrk"]["cpu_s"].is_number(), "{label}");
    assert!(p["max_shard_share_of_data_plane"].is_number(), "{label}");
    assert!(p["egress_pps_per_core"].is_number(), "{label}");
    let per_shard = p["shards"].as_array().expect("shards");
    assert_eq!(per_shard.len(), shards, "{label}: {per_shard:?}");
    let consumers: Vec<u64> =
        per_shard.iter().map(|s| s["consumers_after_ramp"].as_u64().expect("consumers")).collect();
    assert_eq!(consumers.iter().sum::<u64>(), legs, "{label}: {consumers:?}");
    let mesh = &p["cross_shard"];
    let (out, into) = (mesh["mesh_out"].as_u64(), mesh["mesh_in"].as_u64());
    assert!(mesh["mesh_full_drops"].is_u64(), "{label}: {mesh}");
    if shards == 1 {
        assert_eq!((out, into), (Some(0), Some(0)), "{label}: one shard, no mesh");
    } else {
        assert!(consumers.iter().all(|&c| c > 0), "{label}: every shard has consumers");
        assert!(out.is_some_and(|n| n > 0) && into.is_some_and(|n| n > 0), "{label}: {mesh}");
    }
}

/// 1 -> 4 on a 1-shard and a 2-shard server of backend `b`, every leg spread, then `extra`.
fn shard_args(b: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--server-bin",
        env!("CARGO_BIN_EXE_ringsfu"),
        "--backends",
        b,
        "--server-shards",
        "1,2",
        "--server-env",
        "RINGSFU_MEDIA_SPREAD_THRESHOLD=0",
        "--publishers",
        "1",
        "--subscribers",
        "4",
    ];
    args.extend_from_slice(extra);
    strings(&args)
}

#[test]
fn load_compares_shard_counts_with_consumers_on_every_shard() {
    let b = one_backend();
    let args = shard_args(b, &[]);
    let (v, table) = run_load_with_table(&args, "shards", 0);
    assert_eq!(v["server_shards"], serde_json::json!([1, 2]));
    assert_eq!(v["server_env"][0], "RINGSFU_MEDIA_SPREAD_THRESHOLD=0");
    let phases = v["phases"].as_array().expect("phases");
    let labels: Vec<&str> = phases.iter().filter_map(|p| p["label"].as_str()).collect();
    assert_eq!(labels, [format!("ringsfu-{b}-1sh"), format!("ringsfu-{b}-2sh")]);
    for (p, shards) in phases.iter().zip([1, 2]) {
        check_phase(p);
        check_shards(p, shards, 4);
        assert!(p["saturation"].is_null());
    }
    let ratio = &v["ratios"][format!("2 shards/1 shard ({b})")];
    assert!(ratio["egress_pps_per_core"].is_number() && ratio["egress_pps"].is_number(), "{v}");
    for line in ["consumers per shard at the end of the ramp", "cross-shard in the window"] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
    assert!(table.contains(&format!("ratio 2 shards/1 shard ({b})")), "{table}");
}

#[test]
fn load_saturation_search_on_one_and_two_shards() {
    let b = one_backend();
    let args = shard_args(
        b,
        &[
            "--saturate",
            "--saturate-steps",
            "2",
            "--saturate-factor",
            "2",
            "--saturate-refine",
            "1",
            "--saturate-settle",
            "0.5",
        ],
    );
    let (v, table) = run_load_with_table(&args, "saturate", 0);
    assert_eq!(v["saturate"]["knob"], "video_bitrate");
    let phases = v["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 2);
    for (p, shards) in phases.iter().zip([1usize, 2]) {
        let label = p["label"].as_str().expect("label");
        let sat = &p["saturation"];
        let steps = sat["steps"].as_array().expect("steps");
        // Two rising steps at most, one refinement at most.
        assert!((1..=3).contains(&steps.len()), "{label}: {sat}");
        assert!(sat["stop"].as_str().is_some_and(|s| !s.is_empty()), "{label}");
        let mut last_rising = 0;
        for (i, st) in steps.iter().enumerate() {
            assert_eq!(st["index"].as_u64(), Some(i as u64));
            let verdict = st["verdict"].as_str().expect("verdict");
            assert!(["sustained", "lossy", "generator-limited"].contains(&verdict), "{st}");
            let rate = st["video_bitrate"].as_u64().expect("bitrate");
            if st["refine"] == false {
                // Rising steps: the first at --video-bitrate, each next twice the last.
                let want = if i == 0 { 300_000 } else { last_rising * 2 };
                assert_eq!(rate, want, "{label}: {st}");
                last_rising = rate;
            }
            assert!(st["offered_egress_pps"].as_f64().is_some_and(|x| x > 0.0), "{st}");
            assert!(st["loss"].is_number() && st["server_egress_pps"].is_number(), "{st}");
            assert_eq!(st["data_plane_cpu"].as_array().map(Vec::len), Some(shards), "{st}");
        }
        // At these rates a step is far from saturating: some step sustained, and the phase's
        // figures are the best step's.
        let best = &sat["best"];
        assert!(best.is_object(), "{label}: no sustained step: {sat}");
        assert!(best["egress_pps"].as_f64().is_some_and(|x| x > 0.0), "{best}");
        assert!(best["egress_pps_per_core"].is_number(), "{best}");
        assert!(best["loss"].as_f64().is_some_and(|l| l <= 0.001), "{best}");
        assert_eq!(best["data_plane_cpu"].as_array().map(Vec::len), Some(shards), "{best}");
        assert_eq!(p["video_bitrate"], best["video_bitrate"], "{label}");
        assert_eq!(p["server_egress_pps"], best["egress_pps"], "{label}");
        check_phase(p);
        check_shards(p, shards, 4);
    }
    assert!(v["ratios"][format!("2 shards/1 shard ({b})")]["egress_pps_per_core"].is_number());
    assert!(table.contains("highest sustained:"), "{table}");
}

/// `--simulcast`: one publisher sending three layers, two subscribers, the second capped at
/// 300 kbit/s. Whatever the server forwards (before simulcast lands it forwards one encoding),
/// the report has every field per leg and per class and they agree with each other; no
/// figure that depends on timing is asserted.
#[test]
fn load_simulcast_reports_layers_loss_and_freezes_per_leg() {
    let args = strings(&[
        "--server-bin",
        env!("CARGO_BIN_EXE_ringsfu"),
        "--backends",
        "epoll",
        "--server-env",
        "OPENVIDU_WEBRTC_SIMULCAST=true",
        "--publishers",
        "1",
        "--subscribers",
        "2",
        "--simulcast",
        "--leg-cap",
        "300",
        "--capped-share",
        "0.5",
        "--remb",
    ]);
    let (v, table) = run_load_with_table(&args, "simulcast", 0);
    let cfg = &v["simulcast"];
    assert_eq!(cfg["rids"], serde_json::json!(["rdiv4", "rdiv2", "rdiv1"]), "{cfg}");
    assert_eq!(cfg["layer_bitrates"], serde_json::json!([30_000, 100_000, 300_000]), "{cfg}");
    assert_eq!(cfg["leg_cap_kbps"], 300);
    let p = &v["phases"][0];
    let label = p["label"].as_str().expect("label");
    assert_eq!(p["valid"], true, "{label}: {p}");
    assert_eq!(p["failures"].as_array().map(Vec::len), Some(0), "{label}: {}", p["failures"]);
    assert_eq!(p["srtp_failures"].as_u64(), Some(0), "{label}");
    assert_eq!(p["verify_failures"].as_u64(), Some(0), "{label}: stamps and keyframe sizes");
    let (expected, delivered) = (p["expected"].as_u64(), p["delivered"].as_u64());
    assert!(delivered.is_some_and(|d| d > 0 && Some(d) <= expected), "{label}: {p}");
    let sim = &p["simulcast"];
    assert!(sim["publisher_keyframe_requests"].is_u64(), "{sim}");
    assert!(sim["publisher_retransmissions"].is_u64(), "{sim}");
    let legs = sim["legs"].as_array().expect("legs");
    assert_eq!(legs.len(), 2, "{sim}");
    assert_eq!(legs.iter().filter(|l| l["capped"] == true).count(), 1, "{sim}");
    let mut video = 0;
    for l in legs {
        let capped = l["capped"] == true;
        assert_eq!(l["cap_bps"].as_u64(), capped.then_some(300_000), "{l}");
        let exp = l["video_expected"].as_u64().expect("video_expected");
        let del = l["video_delivered"].as_u64().expect("video_delivered");
        assert!(del <= exp, "{l}");
        let per_layer: u64 = l["layer_packets"]
            .as_array()
            .expect("layer_packets")
            .iter()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(per_layer, del, "{l}");
        let loss = l["video_loss"].as_f64().expect("video_loss");
        assert!((0.0..=1.0).contains(&loss), "{l}");
        // Every leg got video, and its layer is one of the three with its stamped size.
        let layer = &l["layer"];
        let i = layer["index"].as_u64().expect("a layer") as usize;
        let sizes = [(320, 180), (640, 360), (1280, 720)];
        assert_eq!(
            (layer["width"].as_u64(), layer["height"].as_u64()),
            (Some(sizes[i].0), Some(sizes[i].1))
        );
        assert_eq!(layer["rid"], ["rdiv4", "rdiv2", "rdiv1"][i], "{l}");
        assert!(l["last_layer"].is_object(), "{l}");
        assert!(l["frames"].as_u64().is_some_and(|f| f > 0), "{l}");
        let freezes = l["freezes"].as_u64().expect("freezes");
        let total = l["freeze_total_ms"].as_f64().expect("freeze_total_ms");
        let longest = l["longest_freeze_ms"].as_f64().expect("longest_freeze_ms");
        assert_eq!(freezes == 0, total == 0.0, "{l}");
        assert!(longest <= total && (freezes == 0 || longest > 500.0), "{l}");
        if !capped {
            assert_eq!(l["cap_drops"].as_u64(), Some(0), "{l}");
        }
        assert!(l["layer_switches"].is_u64() && l["temporal_ids"].is_array(), "{l}");
        // The server's answer agreed on transport-wide sequence numbers: feedback went out.
        assert!(l["twcc_feedback_sent"].as_u64().is_some_and(|n| n > 0), "{l}");
        assert!(l["remb_sent"].is_u64(), "{l}");
        video += del;
    }
    assert!(video > 0);
    for (class, n) in [("capped", 1), ("uncapped", 1)] {
        let c = &sim[class];
        assert_eq!(c["legs"].as_u64(), Some(n), "{class}: {c}");
        let on: u64 =
            c["legs_on_layer"].as_array().expect("on layer").iter().filter_map(Value::as_u64).sum();
        assert_eq!(on + c["legs_without_video"].as_u64().expect("no video"), n, "{c}");
        assert!(c["freezes"].as_u64() >= c["legs_with_freezes"].as_u64(), "{c}");
        for k in ["video_loss", "worst_video_loss", "freeze_total_ms", "mean_video_bps"] {
            assert!(c[k].is_number(), "{class}: {k}: {c}");
        }
    }
    assert!(table.contains("capped at 300 kbit/s: 1 legs"), "{table}");
    assert!(table.contains("uncapped: 1 legs"), "{table}");
}

#[test]
fn load_simulcast_options_are_checked() {
    for bad in [
        &["--leg-cap", "300"][..],
        &["--remb"],
        &["--simulcast", "--raw"],
        &["--simulcast", "--saturate"],
        &["--simulcast", "--capped-share", "1.5"],
        &["--simulcast", "--leg-cap", "0"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ringsfu-load"))
            .args(bad)
            .args(["--url", "http://127.0.0.1:9"])
            .output()
            .expect("ringsfu-load runs");
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}");
    }
}
