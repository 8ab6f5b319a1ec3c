//! The real `ringsfu` binary with real media: a str0m publisher and a str0m subscriber (the
//! shared peer of `tests/str0m_common`) exchange video through it while the test plays systemd
//! (`NOTIFY_SOCKET`) and a webhook endpoint (a small HTTP listener answering 200).
//!
//! - `/metrics` moves with the traffic: the shard's packet and byte counters in both directions
//!   by at least the media that went through, the DTLS handshakes, the webhook deliveries.
//! - A real `SIGTERM` drains: `STOPPING=1`, both participants get `participantEvicted` (reason
//!   `openviduServerStopped`), media still reaches the subscriber late in the drain, and the
//!   process exits by itself with status 0 when `[server] drain_timeout` is up.
//!
//! Every wait is bounded; nothing asserts a duration.

mod common;
mod ops_common;
mod str0m_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Ws, join_params};
use ops_common::{NotifySocket, Server, TempDir};
use serde_json::{Value, json};
use str0m::media::{Direction, MediaKind};
use str0m_common::{Peer, frame, pump_for, send_frames};

const SECRET: &str = "MEDIA_OPS_SECRET";
const VIDEO: &[MediaKind] = &[MediaKind::Video];
/// Frames sent once both peers are connected, before anything else is checked.
const FIRST_FRAMES: u64 = 20;

/// The value of one series (`name{labels}` exactly as exported); panics when it is absent.
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `GET /metrics` (blocking; fine inside `block_in_place` and between awaits).
fn scrape(port: u16) -> String {
    let text = common::metrics_text(port, SECRET).expect("scrape /metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The frame number `str0m_common::frame` writes into bytes 1..9.
fn frame_number(data: &[u8]) -> u64 {
    u64::from_be_bytes(data[1..9].try_into().expect("a frame of at least 9 bytes"))
}

/// A webhook endpoint: answers 200 to every request and keeps the JSON bodies. Its thread
/// stops when dropped (and after five minutes at most).
struct Hooks {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Hooks {
    fn start() -> Hooks {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind webhook listener");
        l.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (bodies.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(300);
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                match l.accept() {
                    Ok((sock, _)) => {
                        if let Some(body) = answer(sock) {
                            b.lock().unwrap().push(body);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("webhook accept: {e}"),
                }
            }
        });
        Hooks { url, bodies, stop, thread: Some(thread) }
    }

    /// The `event` of every body received so far.
    fn events(&self) -> Vec<String> {
        let bodies = self.bodies.lock().unwrap();
        bodies.iter().map(|b| b["event"].as_str().unwrap_or("?").to_string()).collect()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request (head, then `Content-Length` bytes), answers 200 and closes;
/// the body as JSON.
fn answer(mut s: TcpStream) -> Option<Value> {
    s.set_nonblocking(false).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Bounded: at most 256 reads (1 MiB) per request.
    for _ in 0..256 {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= p + 4 + len {
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .ok()?;
                return serde_json::from_slice(&buf[p + 4..p + 4 + len]).ok();
            }
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    None
}

async fn rest(port: u16, path: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{path}"))
        .basic_auth("OPENVIDUAPP", Some(SECRET))
        .json(&body)
        .send()
        .await
        .expect("request");
    let (st, v) = common::status_json(r).await;
    assert_eq!(st, 200, "{path}: {v}");
    v
}

/// The binary serving a publisher and a subscriber whose first frames have arrived.
struct Call {
    server: Server,
    notify: NotifySocket,
    hooks: Hooks,
    port: u16,
    ws_pub: Ws,
    ws_sub: Ws,
    joined_pub: Value,
    joined_sub: Value,
    publisher: Peer,
    subscriber: Peer,
    /// `/metrics` at READY=1, before anyone joined.
    idle: String,
    _dir: TempDir,
}

impl Call {
    async fn start(tag: &str, extra: &[&str]) -> Call {
        let dir = TempDir::new(tag);
        let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
        let hooks = Hooks::start();
        let port = ops_common::free_port();
        let endpoint = format!("webhook.endpoint={}", hooks.url);
        let mut args =
            vec!["--secret", SECRET, "--set", "webhook.enabled=true", "--set", &endpoint];
        args.extend_from_slice(extra);
        let server =
            Server::spawn(port, &args, &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())]);
        notify.wait("READY=1", |m| m.contains("READY=1")).await;
        let idle = scrape(port);

        let sid = "opsmedia";
        rest(port, "/openvidu/api/sessions", json!({"customSessionId": sid})).await;
        let connection = format!("/openvidu/api/sessions/{sid}/connection");
        let tok_pub = rest(port, &connection, json!({"role": "PUBLISHER"})).await;
        let tok_sub = rest(port, &connection, json!({"role": "SUBSCRIBER"})).await;
        let ws_url = format!("ws://127.0.0.1:{port}/openvidu?sessionId={sid}");
        let mut ws_pub = Ws::open(&ws_url).await;
        let mut ws_sub = Ws::open(&ws_url).await;
        let mut joined = Vec::new();
        for (ws, tok, name) in [(&mut ws_pub, &tok_pub, "pub"), (&mut ws_sub, &tok_sub, "sub")] {
            let token = tok["token"].as_str().expect("token");
            let r = ws.call("joinRoom", Some(join_params(sid, token, name))).await;
            assert!(r.get("result").is_some(), "join {name}: {r}");
            joined.push(r["result"].clone());
        }
        let joined_sub = joined.pop().unwrap();
        let joined_pub = joined.pop().unwrap();

        let mut publisher = Peer::new();
        let (offer, pending) = publisher.offer(Direction::SendOnly, VIDEO);
        let r = ws_pub.call("publishVideo", Some(common::publish_params(&offer, false))).await;
        let stream_id =
            r["result"]["id"].as_str().unwrap_or_else(|| panic!("publish: {r}")).to_string();
        publisher.accept(pending, r["result"]["sdpAnswer"].as_str().expect("sdpAnswer"));
        ws_sub.notification("participantPublished").await;
        let mut subscriber = Peer::new();
        let (offer, pending) = subscriber.offer(Direction::RecvOnly, VIDEO);
        let r = ws_sub
            .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpOffer": offer})))
            .await;
        let answer = r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("{r}"));
        subscriber.accept(pending, answer);
        tokio::task::block_in_place(|| {
            str0m_common::connect(&mut [&mut publisher, &mut subscriber]);
            send_frames(&mut publisher, &mut subscriber, 0..FIRST_FRAMES, FIRST_FRAMES as usize);
        });
        Call {
            server,
            notify,
            hooks,
            port,
            ws_pub,
            ws_sub,
            joined_pub,
            joined_sub,
            publisher,
            subscriber,
            idle,
            _dir: dir,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_media_and_webhook_deliveries() {
    let c = Call::start("ops-media-metrics", &[]).await;
    let (idle, port) = (&c.idle, c.port);
    let now = scrape(port);
    // The shard carried at least the video that went through, both ways: every frame reached
    // the subscriber (send_frames waits for them), each in one or more RTP packets.
    let video: u64 = (0..FIRST_FRAMES).map(|n| frame(MediaKind::Video, n).len() as u64).sum();
    for (series, at_least) in [
        ("ringsfu_shard_rx_packets_total{shard=\"0\"}", FIRST_FRAMES),
        ("ringsfu_shard_tx_packets_total{shard=\"0\"}", FIRST_FRAMES),
        ("ringsfu_shard_rx_bytes_total{shard=\"0\"}", video),
        ("ringsfu_shard_tx_bytes_total{shard=\"0\"}", video),
    ] {
        let moved = value(&now, series) - value(idle, series);
        assert!(moved >= at_least, "{series} moved by {moved}, want at least {at_least}\n{now}");
    }
    // One DTLS handshake per peer connection, none before.
    let dtls = "ringsfu_shard_dtls_handshakes_total{shard=\"0\"}";
    assert_eq!(value(idle, dtls), 0, "{idle}");
    assert_eq!(value(&now, dtls), 2, "{now}");
    assert_eq!(value(&now, "ringsfu_shard_dtls_failures_total{shard=\"0\"}"), 0, "{now}");
    assert_eq!(value(&now, "ringsfu_shard_ice_legs{shard=\"0\"}"), 2, "{now}");

    // Webhook deliveries (sessionCreated, participantJoined, webrtcConnectionCreated...) count
    // on /metrics as the endpoint receives them.
    let delivered = "ringsfu_webhook_events_total{result=\"delivered\"}";
    let queued = "ringsfu_webhook_events_total{result=\"queued\"}";
    assert_eq!(value(idle, delivered), 0, "{idle}");
    assert_eq!(value(idle, queued), 0, "{idle}");
    let mut text = now;
    // Bounded: 100 scrapes 50 ms apart.
    for _ in 0..100 {
        if value(&text, delivered) >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        text = scrape(port);
    }
    let got = value(&text, delivered);
    let events = c.hooks.events();
    assert!(got >= 5, "{got} webhook deliveries counted; the endpoint got {events:?}\n{text}");
    assert!(value(&text, queued) >= got, "{text}");
    assert!(events.len() as u64 >= got, "counted {got}, the endpoint got {events:?}");
    for e in ["sessionCreated", "participantJoined", "webrtcConnectionCreated"] {
        assert!(events.iter().any(|x| x == e), "no {e} webhook in {events:?}");
    }
    assert_eq!(value(&text, "ringsfu_webhook_events_total{result=\"dropped_failed\"}"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_keeps_media_flowing_until_the_timeout_then_exits_0() {
    let mut c = Call::start("ops-media-drain", &["--set", "server.drain_timeout=4"]).await;
    let port = c.port;

    // A real SIGTERM: STOPPING=1, both participants told.
    c.notify.forget();
    c.server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let stopping = c.notify.wait("STOPPING=1", |m| m.contains("STOPPING=1")).await;
    assert!(stopping.contains("EXTEND_TIMEOUT_USEC="), "{stopping}");
    for (ws, joined) in [(&mut c.ws_pub, &c.joined_pub), (&mut c.ws_sub, &c.joined_sub)] {
        let ev = ws.notification("participantEvicted").await;
        assert_eq!(ev["connectionId"], joined["id"], "{ev}");
        assert_eq!(ev["reason"], "openviduServerStopped", "{ev}");
    }

    // Media keeps flowing: frames go on until 2.5 s into the 4 s drain, then ten more must
    // still reach the subscriber, and the shard's counters move in between.
    let (publisher, subscriber, server) = (&mut c.publisher, &mut c.subscriber, &mut c.server);
    let (late, before, after) = tokio::task::block_in_place(|| {
        let mut n = FIRST_FRAMES;
        // Bounded: until 2.5 s after the signal, and 1000 frames at most.
        while signalled.elapsed() < Duration::from_millis(2500) && n < FIRST_FRAMES + 1000 {
            assert!(server.running(), "ringsfu exited before the end of its drain");
            assert!(publisher.rtc.is_alive(), "the publisher's connection closed in the drain");
            publisher.write(MediaKind::Video, n, &frame(MediaKind::Video, n));
            pump_for(&mut [&mut *publisher, &mut *subscriber], Duration::from_millis(10));
            n += 1;
        }
        let before = scrape(port);
        let had = subscriber.frames.len();
        send_frames(publisher, subscriber, n..n + 10, had + 10);
        (n, before, scrape(port))
    });
    let newest = c.subscriber.frames.iter().map(|(_, d)| frame_number(d)).max().unwrap_or(0);
    assert!(newest >= late, "frame {newest} is the newest received; frames from {late} were sent");
    for series in [
        "ringsfu_shard_rx_packets_total{shard=\"0\"}",
        "ringsfu_shard_tx_packets_total{shard=\"0\"}",
        "ringsfu_shard_tx_bytes_total{shard=\"0\"}",
        "ringsfu_shard_rtp_out_total{shard=\"0\"}",
    ] {
        assert!(value(&after, series) > value(&before, series), "{series} stuck late in the drain");
    }
    assert_eq!(value(&after, "ringsfu_draining"), 1, "{after}");
    assert_eq!(value(&after, "ringsfu_participants"), 2, "nobody left: {after}");
    assert!(c.server.running(), "the server stays up during the drain");

    // Nobody leaves: the drain ends at its timeout, the sockets close, the process exits 0.
    assert!(c.ws_pub.closed_by_server().await, "publisher's socket closed at the end");
    assert!(c.ws_sub.closed_by_server().await, "subscriber's socket closed at the end");
    assert_eq!(c.server.exit_code().await, Some(0), "{:#?}", c.server.stderr_lines());
    let lines = c.server.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("drain timeout; evicting the rest")),
        "the drain lasted until its timeout: {lines:#?}"
    );
}
