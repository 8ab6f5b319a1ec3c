//! READY=1 means every listener is up: a media shard's own TURN port (`turn.shard_ports`)
//! that another socket holds stops the binary at start-up with an error naming the port, and
//! systemd never hears READY=1; with the port free the same configuration gets READY=1.

mod common;
mod ops_common;

use std::time::Duration;

use ops_common::{NotifySocket, Server, TempDir, free_port};

fn is_ready(m: &str) -> bool {
    m.lines().any(|l| l == "READY=1")
}

/// The binary with two media shards from `port_base` (their own TURN ports follow) on
/// `backend`, notifying `notify`.
fn spawn(port_base: u16, backend: &str, notify: &NotifySocket) -> Server {
    let base = format!("media.port_base={port_base}");
    let path = notify.path.to_str().expect("utf-8 path");
    let args = ["--set", "media.shards=2", "--set", &base, "--io-backend", backend];
    Server::spawn(free_port(), &args, &[("NOTIFY_SOCKET", path)])
}

#[tokio::test]
async fn a_taken_shard_turn_port_fails_start_up_and_ready_waits_for_every_listener() {
    let dir = TempDir::new("startup-listeners");
    for backend in ["uring", "epoll"] {
        // Shard 1's own TURN port is port_base + 2 (shards) + 1.
        let (held, base) = common::hold_port_in_free_run("127.0.0.1", 4, 3);
        let taken = base + 3;
        let mut notify = NotifySocket::bind(&dir.path(&format!("{backend}-taken.sock")));
        let mut server = spawn(base, backend, &notify);
        let code = server.exit_code().await;
        let log = server.stderr_lines().join("\n");
        assert!(code.is_some_and(|c| c != 0), "{backend}: exit code {code:?}; stderr:\n{log}");
        assert!(
            log.contains(&format!("cannot listen on 127.0.0.1:{taken}")),
            "{backend}: the error names the port; stderr:\n{log}"
        );
        let sent = notify.collect_for(Duration::from_millis(200)).await;
        assert!(!sent.iter().any(|m| is_ready(m)), "{backend}: {sent:?}");

        // The same configuration with the port free: ready.
        drop(held);
        let mut notify = NotifySocket::bind(&dir.path(&format!("{backend}-free.sock")));
        let _server = spawn(base, backend, &notify);
        notify.wait("READY=1", is_ready).await;
    }
}
