//! READY=1 means every listener is up: a media shard's own TURN port (`turn.shard_ports`)
//! that another socket holds stops the binary at start-up with an error naming the port, and
//! systemd never hears READY=1; with the port free the same configuration gets READY=1.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for the binary to get ready or to exit (never asserted as a duration).
const WAIT: Duration = Duration::from_secs(30);

struct Run {
    /// The process's exit status, or None when it was still running at READY=1 (then killed).
    status: Option<std::process::ExitStatus>,
    notifications: Vec<String>,
    stderr: String,
}

/// Runs the binary with two media shards from `port_base` (their TURN ports follow) until it
/// sends READY=1 or exits, whichever comes first.
fn run(port_base: u16, tag: &str, backend: &str) -> Run {
    let dir = std::env::temp_dir().join(format!("ringsfu-startup-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut child = common::Proc(
        Command::new(env!("CARGO_BIN_EXE_ringsfu"))
            .args(["--port", &common::free_port().to_string(), "--shards", "2"])
            .args(["--io-backend", backend])
            .args(["--set", &format!("media.port_base={port_base}")])
            .args(["--set", &format!("turn.port={}", common::free_port())])
            .args(["--set", "turn.tls_port=0", "--set", "media.public_ips=127.0.0.1"])
            .env("NOTIFY_SOCKET", &path)
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringsfu"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + WAIT;
    let mut notifications = Vec::new();
    let mut buf = [0u8; 4096];
    let status = loop {
        if let Ok(n) = notify.recv(&mut buf) {
            notifications.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if notifications.last().unwrap().lines().any(|l| l == "READY=1") {
                break None;
            }
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            break Some(status);
        }
        assert!(Instant::now() < deadline, "neither READY=1 nor an exit: {notifications:?}");
    };
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    Run { status, notifications, stderr: reader.join().unwrap() }
}

#[test]
fn a_taken_shard_turn_port_fails_start_up_and_ready_waits_for_every_listener() {
    for backend in ["uring", "epoll"] {
        // Shard 1's own TURN port is port_base + 2 (shards) + 1.
        let (held, base) = common::hold_port_in_free_run("127.0.0.1", 4, 3);
        let taken = base + 3;
        let r = run(base, "taken", backend);
        let status = r.status.unwrap_or_else(|| {
            panic!(
                "{backend}: READY=1 with shard 1's TURN port {taken} held: {:?}",
                r.notifications
            )
        });
        assert!(!status.success(), "{backend}: exit status {status}; stderr:\n{}", r.stderr);
        assert!(
            r.stderr.contains(&format!("cannot listen on 127.0.0.1:{taken}")),
            "{backend}: the error names the port; stderr:\n{}",
            r.stderr
        );
        assert!(
            r.notifications.iter().all(|m| !m.lines().any(|l| l == "READY=1")),
            "{backend}: {:?}",
            r.notifications
        );

        // The same configuration with the port free: ready.
        drop(held);
        let r = run(base, "free", backend);
        assert!(
            r.status.is_none(),
            "{backend}: exited ({:?}) instead of READY=1; stderr:\n{}",
            r.status,
            r.stderr
        );
    }
}
