//! coturn's own clients (Debian's `coturn` package: `turnutils_stunclient`, `turnutils_uclient`,
//! `turnutils_peer`) against the real `ringsfu` binary on loopback: Binding, allocations over UDP,
//! TCP and TLS, ChannelData and Send indications, static users and TURN REST credentials, and a
//! wrong password refused. Every tool run is bounded by `timeout`; nothing asserts on timing.
//! Without the tools the tests skip loudly, or fail when `RINGSFU_REQUIRE_TOOLS` is set
//! (`tools/test.sh` installs them and sets it).

mod common;

use common::Proc;

use std::cell::Cell;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

const SECRET: &str = "REST_SECRET_FOR_TESTS";

fn tools_present() -> bool {
    common::tools_present(
        &["turnutils_uclient", "turnutils_peer", "turnutils_stunclient", "timeout", "stdbuf"],
        "apt-get install coturn",
    )
}

/// One ringsfu (TURN on UDP/TCP `turn`, TLS `tls`) and one echo peer per test; both are
/// killed when it drops.
struct Setup {
    turn: u16,
    /// The first media shard's port (with the media engine on, shard `i`'s own TURN port is
    /// `media + 2 + i`).
    media: u16,
    tls: u16,
    peer: u16,
    http: u16,
    /// The server's last log lines, shown when a client run fails.
    log: common::LogTail,
    /// Client runs so far: each binds its sockets to a loopback address of its own
    /// (`127.0.0.<runs + 1>`), so no run can send from a 5-tuple that holds a former run's
    /// allocation (uclient leaves its probe allocations behind when it exits; a request for
    /// another user on such a 5-tuple is rightly refused with 441).
    runs: Cell<u8>,
    _server: Proc,
    _peer: Proc,
}

fn setup() -> Setup {
    setup_with(false)
}

/// `media`: the media engine runs, and its shards host TURN over UDP (the binary's default);
/// otherwise TURN runs on shards of its own.
fn setup_with(media: bool) -> Setup {
    setup_relay(media, None)
}

/// [`setup_with`], relaying from `relay` (first and last port) when given.
fn setup_relay(media: bool, relay: Option<(u16, u16)>) -> Setup {
    // Disjoint relay port ranges for the servers of tests running side by side.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    {
        let (turn, tls, http, peer) =
            (common::free_port(), common::free_port(), common::free_port(), common::free_port());
        let media_port = common::free_udp_run();
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        // Below the kernel's ephemeral range (32768-60999), where the test's other ports come
        // from: a relay range on the media address must not hold them (a configuration error).
        let own = 1100 + (std::process::id() % 9) as u16 * 3200 + (k % 16) * 200;
        let (relay_min, relay_max) = relay.unwrap_or((own, own + 199));
        let cfg = common::write_config(
            &format!("turn-{k}"),
            &format!(
                "[server]\nport = {http}\nsecret = \"S\"\n\
                 [tls]\nself_signed = true\n\
                 [media]\nenabled = {media}\nport_base = {media_port}\nshards = 2\npin_threads = false\n\
                 [turn]\nport = {turn}\ntls_port = {tls}\nusers = [\"alice:wonderland\"]\n\
                 static_auth_secret = \"{SECRET}\"\nallow_loopback_peers = true\n\
                 relay_port_min = {relay_min}\nrelay_port_max = {relay_max}\n",
            ),
        );
        let mut server = Command::new(env!("CARGO_BIN_EXE_ringsfu"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("--config")
            .arg(&cfg)
            // Debug: the relay sockets that cannot open are logged (shown when a run fails).
            .args(["--log-level", "debug"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ringsfu");
        // Ready when it logs the TURN listener (bounded by lines and by the process ending).
        let log = common::await_log_line(&mut server, "TURN server listening", 200);
        let peer_proc = Command::new("turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnutils_peer");
        let (server, peer_proc) = (Proc(server), Proc(peer_proc));
        wait_udp_echo(peer);
        Setup {
            turn,
            media: media_port,
            tls,
            peer,
            http,
            log,
            runs: Cell::new(0),
            _server: server,
            _peer: peer_proc,
        }
    }
}

impl Setup {
    /// The server's shard and TURN counters that moved, and its last log lines, for a failure
    /// message.
    fn diagnosis(&self) -> String {
        let metrics = common::metrics_text(self.http, "S").unwrap_or_else(|e| format!("({e})"));
        // The shards' and the TURN servers' counters that moved.
        let turn: Vec<&str> = metrics
            .lines()
            .filter(|l| l.starts_with("ringsfu_turn") || l.starts_with("ringsfu_shard_"))
            .filter(|l| !l.ends_with(" 0"))
            .collect();
        format!(
            "ringsfu's shard and TURN metrics (those not 0):\n{}\nringsfu's last log lines:\n{}",
            turn.join("\n"),
            self.log.text()
        )
    }
}

/// turnutils_peer echoes; wait (bounded) until it does.
fn wait_udp_echo(port: u16) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut b = [0u8; 16];
    for _ in 0..100 {
        s.send_to(b"ping", ("127.0.0.1", port)).unwrap();
        if s.recv_from(&mut b).is_ok() {
            return;
        }
    }
    panic!("turnutils_peer on {port} does not echo");
}

/// Runs a tool under `timeout`, its output line-buffered (`stdbuf`) so that a run cut short
/// still shows how far it got; (exit code, stdout + stderr).
fn run(tool: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["120", "stdbuf", "-oL", "-eL", tool])
        .args(args)
        .output()
        .expect("run tool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `turnutils_uclient` with `args` plus the peer and server; asserts everything sent came back
/// and 0% loss. Returns the number of messages echoed.
fn uclient_no_loss(s: &Setup, args: &[&str]) -> u64 {
    let peer = s.peer.to_string();
    s.runs.set(s.runs.get() + 1);
    let local = format!("127.0.0.{}", s.runs.get());
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-e", "127.0.0.1", "-r", &peer, "-n", "200", "-l", "120", "-z", "5"]);
    // Four clients unless `args` says how many.
    let clients: u64 = match args.iter().position(|a| *a == "-m") {
        Some(i) => args[i + 1].parse().unwrap(),
        None => {
            all.extend(["-m", "4"]);
            4
        }
    };
    all.extend(["-L", &local, "127.0.0.1"]);
    let (code, out) = run("turnutils_uclient", &all);
    assert_eq!(code, 0, "uclient {all:?} failed:\n{out}\n{}", s.diagnosis());
    let lost = out
        .lines()
        .find_map(|l| l.split("Total lost packets ").nth(1))
        .unwrap_or_else(|| panic!("no loss report from uclient {args:?}:\n{out}"));
    assert!(
        lost.starts_with("0 (0.000000%)"),
        "uclient {all:?} lost packets: {lost}\n{out}\n{}",
        s.diagnosis()
    );
    // "tot_send_msgs=N, tot_recv_msgs=M" of the final report.
    let totals = out
        .lines()
        .rev()
        .find(|l| l.contains("start_mclient: tot_send_msgs="))
        .unwrap_or_else(|| panic!("no totals from uclient {args:?}:\n{out}"));
    let num = |key: &str| -> u64 {
        let v = totals.split(key).nth(1).unwrap_or("");
        v.chars().take_while(|c| c.is_ascii_digit()).collect::<String>().parse().unwrap_or(0)
    };
    let (sent, recv) = (num("tot_send_msgs="), num("tot_recv_msgs="));
    assert!(sent >= 200 * clients, "uclient {args:?} sent {sent}:\n{out}");
    assert_eq!(
        sent,
        recv,
        "uclient {all:?}: every message echoed through the relay\n{out}\n{}",
        s.diagnosis()
    );
    recv
}

fn port_arg(p: u16) -> String {
    p.to_string()
}

#[test]
fn stunclient_binding() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let (code, out) = run("turnutils_stunclient", &["-p", &port_arg(s.turn), "127.0.0.1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
}

#[test]
fn udp_channel_data_static_user() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = port_arg(s.turn);
    uclient_no_loss(&s, &["-c", "-p", &p, "-u", "alice", "-w", "wonderland"]);
}

#[test]
fn udp_send_indications_rest_secret() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = port_arg(s.turn);
    uclient_no_loss(&s, &["-c", "-s", "-p", &p, "-W", SECRET]);
}

#[test]
fn udp_channel_data_rest_secret() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = port_arg(s.turn);
    uclient_no_loss(&s, &["-c", "-p", &p, "-W", SECRET]);
}

#[test]
fn udp_rtp_rtcp_pair_with_even_port_reservation() {
    if !tools_present() {
        return;
    }
    // Without -c every client allocates an RTP/RTCP pair: EVEN-PORT with the R bit, then an
    // Allocate with the RESERVATION-TOKEN.
    let s = setup();
    let p = port_arg(s.turn);
    uclient_no_loss(&s, &["-p", &p, "-u", "alice", "-w", "wonderland"]);
}

#[test]
fn shard_ports_serve_turn_clients() {
    if !tools_present() {
        return;
    }
    // Each media shard also serves TURN on a port of its own (what joinRoom offers first). The
    // peer here is outside the SFU (turnutils_peer, loopback peers allowed), so every
    // allocation opens its relay socket when its permission or channel is installed, and the
    // echo comes back through it and out of the shard's TURN port.
    let s = setup_with(true);
    for port in [s.media + 2, s.media + 3] {
        let p = port_arg(port);
        uclient_no_loss(&s, &["-c", "-p", &p, "-u", "alice", "-w", "wonderland"]);
        uclient_no_loss(&s, &["-c", "-s", "-p", &p, "-W", SECRET]);
    }
}

#[test]
fn hosted_by_media_shards_binding_channels_and_indications() {
    if !tools_present() {
        return;
    }
    // The same clients against TURN hosted by the two media shards (SO_REUSEPORT listener in
    // each; an RTP/RTCP pair's reservation may be redeemed on the other shard).
    let s = setup_with(true);
    let p = port_arg(s.turn);
    let (code, out) = run("turnutils_stunclient", &["-p", &p, "127.0.0.1"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("UDP reflexive addr: 127.0.0.1:"), "{out}");
    uclient_no_loss(&s, &["-c", "-p", &p, "-u", "alice", "-w", "wonderland"]);
    uclient_no_loss(&s, &["-c", "-s", "-p", &p, "-W", SECRET]);
    uclient_no_loss(&s, &["-p", &p, "-u", "alice", "-w", "wonderland"]);
}

#[test]
fn tcp_channel_data_static_user() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = port_arg(s.turn);
    uclient_no_loss(&s, &["-c", "-t", "-p", &p, "-u", "alice", "-w", "wonderland"]);
}

#[test]
fn tcp_send_indications_rest_secret() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = port_arg(s.turn);
    uclient_no_loss(&s, &["-c", "-t", "-s", "-p", &p, "-W", SECRET]);
}

#[test]
fn tcp_allocate_skips_a_relayed_port_another_socket_holds() {
    if !tools_present() {
        return;
    }
    // Thirty relay ports, cut into three slices of ten: the two UDP shards' and, last, the
    // TCP/TLS thread's. A socket of this test holds the first port of that last slice. Over TCP
    // a client never retransmits, so the server itself must retry the Allocate on another port
    // (before, the request went unanswered and the client waited for ever). The held port is
    // even: uclient's Allocate may ask for an even port (EVEN-PORT), which skips odd ones.
    let (held, base) = (0..100)
        .map(|_| common::hold_port_in_free_run("0.0.0.0", 30, 20))
        .find(|(_, base)| base % 2 == 0)
        .expect("an even held port within 100 tries");
    let s = setup_relay(false, Some((base, base + 29)));
    let p = port_arg(s.turn);
    uclient_no_loss(&s, &["-c", "-t", "-m", "1", "-p", &p, "-u", "alice", "-w", "wonderland"]);
    common::await_metric(s.http, "S", "ringsfu_turn_relay_open_failed_total{shard=\"stream\"}", 1);
    drop(held);
}

#[test]
fn tls_channel_data_static_user() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let p = port_arg(s.tls);
    uclient_no_loss(&s, &["-c", "-t", "-S", "-p", &p, "-u", "alice", "-w", "wonderland"]);
}

#[test]
fn wrong_password_and_wrong_secret_are_refused() {
    if !tools_present() {
        return;
    }
    let s = setup();
    let (p, peer) = (port_arg(s.turn), port_arg(s.peer));
    let cases: [(Option<&str>, &[&str]); 3] = [
        (None, &["-u", "alice", "-w", "wonderlanD"]),
        (Some("-t"), &["-u", "alice", "-w", "wonderlanD"]),
        (None, &["-W", "not-the-secret"]),
    ];
    for (transport, creds) in cases {
        let mut args: Vec<&str> = vec!["-c", "-p", &p, "-e", "127.0.0.1", "-r", &peer, "-n", "5"];
        args.extend(transport);
        args.extend(creds);
        args.push("127.0.0.1");
        let (code, out) = run("turnutils_uclient", &args);
        assert_ne!(code, 0, "{args:?} was accepted:\n{out}");
        assert!(out.contains("Cannot complete Allocation"), "{args:?}:\n{out}");
        assert!(!out.contains("Total lost packets"), "{args:?} relayed:\n{out}");
    }
}
