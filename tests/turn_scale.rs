//! Allocations beyond the open-file limit: the real `ringsfu` binary, started with a hard limit
//! of 1024 descriptors, and `tools/turn_alloc_flood.py` playing thousands of TURN clients on
//! loopback (one socket, a source address each) that allocate through a media shard's own TURN
//! port and create a permission for that shard's media port, as browsers reaching the SFU through its
//! TURN do. With in-process delivery those allocations hold no relay socket, so more of them are
//! granted than the process has descriptors; without it each holds one and the server refuses
//! the rest with 486 once its socket budget is spent. Every wait is bounded; nothing asserts on
//! timing.

mod common;

use common::Proc;

use std::net::UdpSocket;
use std::process::{Command, Stdio};

fn python_present() -> bool {
    common::tools_present(&["python3"], "apt-get install python3")
}

struct Server {
    http: u16,
    media: u16,
    _proc: Proc,
}

/// ringsfu with media on two shards and TURN, under `ulimit -n 1024`.
fn start(tag: &str, deliver_in_process: bool) -> Server {
    start_with(tag, deliver_in_process, "relay_port_min = 10000\nrelay_port_max = 60000\n")
}

/// As [`start`], with `turn_extra` appended to the `[turn]` section.
fn start_with(tag: &str, deliver_in_process: bool, turn_extra: &str) -> Server {
    let (http, turn, tls) = (common::free_port(), common::free_port(), common::free_port());
    let media = common::free_udp_run();
    // Relayed ports are checked (bound and closed) at Allocate and opened only for peers other
    // than the media ports; nothing else uses 127.0.5.1. The range must hold more addresses than
    // the allocations asked.
    let cfg = common::write_config(
        &format!("scale-{tag}"),
        &format!(
            "[server]\nport = {http}\nsecret = \"S\"\n\
             [tls]\nself_signed = true\n\
             [media]\nport_base = {media}\nshards = 2\npin_threads = false\n\
             public_ips = [\"127.0.0.1\"]\n\
             [turn]\nport = {turn}\ntls_port = {tls}\nusers = [\"alice:wonderland\"]\n\
             relay_ips = [\"127.0.5.1\"]\n{turn_extra}\
             max_allocations_per_user = 1000000\ndeliver_in_process = {deliver_in_process}\n"
        ),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_ringsfu"))
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringsfu");
    common::await_log_line(&mut child, "TURN server listening", 300);
    Server { http, media, _proc: Proc(child) }
}

fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in /metrics"))
}

/// Runs the flood against `port` with a permission for `peer`; (granted, failed, first error).
fn flood(port: u16, peer: &str, count: usize) -> (u64, u64, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/turn_alloc_flood.py");
    let out = Command::new("timeout")
        .args(["120", "python3", script, "127.0.0.1", &port.to_string()])
        .args(["alice", "wonderland", "ringsfu", &count.to_string()])
        .args(["--batch", "500", "--hold", "0", "--peer", peer])
        .output()
        .expect("run turn_alloc_flood.py");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let last = text.lines().find(|l| l.starts_with("allocations=")).unwrap_or_else(|| {
        panic!("no result from the flood:\n{text}{}", String::from_utf8_lossy(&out.stderr))
    });
    let field =
        |k: &str| last.split(k).nth(1).unwrap_or("").split(' ').next().unwrap_or("").to_string();
    (
        field("allocations=").parse().unwrap(),
        field("failed=").parse().unwrap(),
        field("first_error="),
    )
}

const COUNT: usize = 3000;

#[test]
fn allocations_to_the_sfu_outnumber_the_open_file_limit() {
    if !python_present() {
        return;
    }
    let s = start("lazy", true);
    let peer = format!("127.0.0.1:{}", s.media);
    // Shard 0's own TURN port: the media ports, then one TURN port per shard.
    let (granted, failed, err) = flood(s.media + 2, &peer, COUNT);
    assert_eq!((granted, failed), (COUNT as u64, 0), "first error: {err}");
    // All on the first shard (its TURN port is the server they used), none with a socket.
    let m =
        common::await_metric(s.http, "S", "ringsfu_turn_allocations{shard=\"0\"}", COUNT as u64);
    assert_eq!(sample(&m, "ringsfu_turn_relay_sockets{shard=\"0\"}"), 0);
    assert_eq!(sample(&m, "ringsfu_turn_allocations{shard=\"1\"}"), 0);
}

#[test]
fn without_in_process_delivery_each_allocation_holds_a_socket() {
    if !python_present() {
        return;
    }
    let s = start("sockets", false);
    let peer = format!("127.0.0.1:{}", s.media);
    let (granted, failed, err) = flood(s.media + 2, &peer, COUNT);
    // The socket budget is a share of 1024 - 512 descriptors: the rest get 486 (the flood
    // stops after 1000 refusals).
    assert!(granted > 0 && granted <= 512, "granted {granted}");
    assert!(failed >= 1000, "failed {failed}");
    assert_eq!(err, "486");
    let m = common::await_metric(s.http, "S", "ringsfu_turn_allocations{shard=\"0\"}", granted);
    assert_eq!(sample(&m, "ringsfu_turn_relay_sockets{shard=\"0\"}"), granted);
}

#[test]
fn a_relayed_port_another_socket_holds_is_skipped_at_allocate() {
    if !python_present() {
        return;
    }
    // Six relay ports: shard 0's slice is the first two, and a socket of this test holds the
    // first. The allocation's port is checked when it is made (its socket opens only later): the
    // taken one is given up silently and the client's retransmission gets the next, whose
    // socket then opens for an outside peer (loopback peers allowed).
    let (held, base) = common::hold_port_in_free_run("127.0.5.1", 6, 0);
    let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
    let s = start_with(
        "taken",
        true,
        &format!(
            "relay_port_min = {base}\nrelay_port_max = {}\nallow_loopback_peers = true\n",
            base + 5
        ),
    );
    let peer = echo.local_addr().unwrap().to_string();
    let (granted, failed, err) = flood(s.media + 2, &peer, 1);
    assert_eq!((granted, failed), (1, 0), "first error: {err}");
    let m = common::await_metric(s.http, "S", "ringsfu_turn_relay_sockets{shard=\"0\"}", 1);
    assert_eq!(sample(&m, "ringsfu_turn_relay_open_failed_total{shard=\"0\"}"), 1);
    drop(held);
}
