//! A tiny `ringsfu-load` run with a Janus target beside a ringsfu one (1 publisher, 2
//! subscribers, 2 s): Debian's `janus` started by the tool in a network namespace of the run's
//! own, both servers forward every packet of the window, and the report and the JSON compare
//! them by egress per CPU-second of the whole server process. Skips (printing why) without
//! `janus` on PATH or without root (the namespace). No timing is asserted.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ringsfu-load-janus-test-{}-{name}", std::process::id()))
}

/// Why this machine cannot run the test, if it cannot.
fn skip_reason() -> Option<String> {
    // `janus --version` prints and exits 1: found is what counts.
    let janus = Command::new("janus").arg("--version").stdout(Stdio::null()).status();
    if janus.is_err() {
        return Some("no `janus` on PATH (Debian: apt-get install janus)".into());
    }
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: the Janus target needs a network namespace".into());
    }
    let ip = Command::new("ip").arg("-V").stdout(Stdio::null()).status();
    if !ip.is_ok_and(|s| s.success()) {
        return Some("no `ip` (iproute2)".into());
    }
    None
}

#[test]
fn janus_and_ringsfu_in_one_run() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIPPED janus_and_ringsfu_in_one_run: {why}");
        return;
    }
    let json = tmp("run.json");
    let out = tmp("run.out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringsfu-load"))
        .args(["--server-bin", env!("CARGO_BIN_EXE_ringsfu"), "--targets", "ringsfu-epoll,janus"])
        .args(["-p", "1", "-s", "2", "-k", "1", "--duration", "2", "--quiet"])
        .args(["--video-bitrate", "300000", "--packet-size", "600", "--fps", "15"])
        .args(["--json", json.to_str().expect("path")])
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .spawn()
        .expect("ringsfu-load starts");
    let end = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            panic!("ringsfu-load did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let table = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    print!("{table}");
    assert_eq!(status.code(), Some(0), "ringsfu-load exit status: {status}");
    let text = std::fs::read_to_string(&json).expect("json written");
    let _ = std::fs::remove_file(&json);
    let v: Value = serde_json::from_str(&text).expect("valid JSON");
    let phases = v["phases"].as_array().expect("phases");
    let kinds: Vec<&str> = phases.iter().filter_map(|p| p["kind"].as_str()).collect();
    assert_eq!(kinds, ["ringsfu", "janus"]);
    for p in phases {
        let label = p["label"].as_str().expect("label");
        assert_eq!(p["failures"].as_array().map(Vec::len), Some(0), "{label}: {}", p["failures"]);
        assert_eq!(p["connected"], 3, "{label}: every client connected");
        let expected = p["expected"].as_u64().expect("expected");
        assert!(expected > 0, "{label}: nothing expected");
        assert_eq!(p["delivered"].as_u64(), Some(expected), "{label}: every packet delivered");
        assert_eq!(p["verify_failures"].as_u64(), Some(0), "{label}");
        assert_eq!(p["srtp_failures"].as_u64(), Some(0), "{label}");
        assert!(p["verified"].as_u64().unwrap_or(0) > 0, "{label}: some packets verified");
        assert!(p["egress_pps_per_process_cpu"].as_f64().is_some_and(|x| x > 0.0), "{label}");
        assert!(p["server_process_cpu_s"].as_f64().is_some_and(|x| x > 0.0), "{label}");
    }
    // Janus's every thread is its data plane.
    let janus = &phases[1];
    assert!(janus["data_plane_cpu"].as_array().is_some_and(|a| !a.is_empty()), "{janus}");
    let r = &v["ratios"]["ringsfu-epoll/janus"];
    assert!(r["egress_pps_per_process_cpu"].as_f64().is_some_and(|x| x > 0.0), "{r}");
    assert!(table.contains("ratio ringsfu-epoll/janus: egress per process CPU-second"), "{table}");
}
