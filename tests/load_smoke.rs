//! Short runs of `ringsfu-load` in each mode against the built `ringsfu` binary on loopback:
//! the run completes, every packet sent in the window is delivered (low rate), and the JSON has
//! the fields BENCHMARKS.md relies on. No timing is asserted.

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
    let json = tmp(&format!("{name}.json"));
    let svg = tmp(&format!("{name}.svg"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringsfu-load"))
        .args(args)
        .args(["--json", json.to_str().expect("path"), "--svg", svg.to_str().expect("path")])
        .args(["--duration", "2", "--video-bitrate", "300000", "--packet-size", "600"])
        .args(["--fps", "15", "--ramp", "50", "--quiet", "--secret", SECRET])
        .stdout(Stdio::inherit())
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
    assert_eq!(status.code(), Some(code), "ringsfu-load exit status: {status}");
    let text = std::fs::read_to_string(&json).expect("json written");
    let svg_text = std::fs::read_to_string(&svg).expect("svg written");
    assert!(svg_text.starts_with("<svg") && svg_text.trim_end().ends_with("</svg>"));
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
    serde_json::from_str(&text).expect("valid JSON")
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
