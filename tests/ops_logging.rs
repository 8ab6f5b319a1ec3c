//! The binary's log lines fit their destination: under the systemd journal (`JOURNAL_STREAM`
//! names stderr) no timestamp and each line led by its syslog priority; elsewhere (a file, a
//! pipe) timestamps and no colour escape codes.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
mod ops_common;

use ops_common::{free_port, free_udp_port};

/// Runs the server with stderr into a file until it listens, then SIGTERM; its stderr lines.
/// `journal`: set JOURNAL_STREAM to the file's device and inode (as systemd does for a unit
/// whose stderr is the journal); `stream`: a JOURNAL_STREAM value of its own.
fn run(tag: &str, journal: bool, stream: Option<&str>, args: &[&str]) -> Vec<String> {
    let path = std::env::temp_dir().join(format!("ringsfu-log-{tag}-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    let meta = file.metadata().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringsfu"));
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    if journal {
        c.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    if let Some(s) = stream {
        c.env("JOURNAL_STREAM", s);
    }
    let (port, media, turn) = (free_port(), free_udp_port(), free_port());
    c.args(["--port", &port.to_string(), "--shards", "1"])
        .args(["--set", &format!("media.port_base={media}"), "--set", &format!("turn.port={turn}")])
        .args(["--set", "turn.shard_ports=false"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file);
    let mut child = c.spawn().expect("spawn ringsfu");
    let text = || std::fs::read_to_string(&path).unwrap_or_default();
    // Bounded: 400 polls, 50 ms apart.
    let start = Instant::now();
    for _ in 0..400 {
        if text().contains("control plane listening") || child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut status = None;
    for _ in 0..400 {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if status.is_none() {
        let _ = child.kill();
    }
    let out = text();
    let _ = std::fs::remove_file(&path);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "after {:?}:\n{out}", start.elapsed());
    assert!(out.contains("control plane listening"), "{out}");
    out.lines().map(str::to_string).collect()
}

fn starts_with_timestamp(line: &str) -> bool {
    // 2026-12-06T00:43:10.563024Z
    let b = line.as_bytes();
    b.len() > 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[..4].iter().all(u8::is_ascii_digit)
}

#[test]
fn journal_lines_carry_priorities_and_no_timestamps() {
    // media off: a WARN line at start (media methods answer errors), INFO lines after it.
    let lines = run("journal", true, None, &["--set", "media.enabled=false"]);
    for l in &lines {
        assert!(!l.contains('\x1b'), "colour escape in {l:?}");
        let (prefix, rest) = l.split_at(3.min(l.len()));
        assert!(["<3>", "<4>", "<6>", "<7>"].contains(&prefix), "no priority: {l:?}");
        assert!(!starts_with_timestamp(rest), "timestamp under the journal: {l:?}");
    }
    let has = |p: &str, what: &str| lines.iter().any(|l| l.starts_with(p) && l.contains(what));
    assert!(has("<4>", "media disabled"), "{lines:#?}");
    assert!(has("<6>", "control plane listening"), "{lines:#?}");
    // JSON under the journal: the same prefix, then one JSON object the journal keeps whole.
    let lines = run("journal-json", true, None, &["--log-format", "json"]);
    for l in &lines {
        let json = l.strip_prefix("<6>").or_else(|| l.strip_prefix("<4>")).unwrap_or_else(|| {
            panic!("no priority: {l:?}");
        });
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert!(v.get("timestamp").is_none(), "{l}");
    }
}

#[test]
fn a_file_gets_timestamps_and_no_colour() {
    // No JOURNAL_STREAM, and one that names another file (inherited, not ours): plain lines.
    for stream in [None, Some("1:1")] {
        let lines = run("plain", false, stream, &[]);
        for l in &lines {
            assert!(!l.contains('\x1b'), "colour escape in {l:?}");
            assert!(starts_with_timestamp(l), "no timestamp: {l:?}");
            assert!(!l.contains("WARN"), "a clean start warns: {l:?}");
        }
    }
}
