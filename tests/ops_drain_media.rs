//! Media keeps flowing while the server drains: a str0m publisher and subscriber exchange
//! frames through ringsfu, the drain starts (both are told with `participantEvicted`, reason
//! `openviduServerStopped`), and frames sent afterwards still arrive; `/metrics` shows the
//! media counters moving. The drain's end (eviction, exit) is covered by `ops_service.rs`.
//!
//! `Peer` is a trimmed copy of the str0m driver in `tests/media_str0m.rs`.

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde_json::json;
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Peer {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    next_timeout: Instant,
    connected: bool,
    frames: usize,
    mids: BTreeMap<Mid, MediaKind>,
}

impl Peer {
    fn new() -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sock.set_nonblocking(true).expect("nonblocking");
        let addr = sock.local_addr().expect("addr");
        let mut rtc = Rtc::builder().build(Instant::now());
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
        Peer {
            rtc,
            sock,
            addr,
            next_timeout: Instant::now(),
            connected: false,
            frames: 0,
            mids: BTreeMap::new(),
        }
    }

    /// Offer with one video m-line in `dir`.
    fn offer(&mut self, dir: Direction) -> (String, SdpPendingOffer) {
        let mut change = self.rtc.sdp_api();
        let v = change.add_media(MediaKind::Video, dir, None, None, None);
        self.mids.insert(v, MediaKind::Video);
        let (offer, pending) = change.apply().expect("offer");
        (offer.to_sdp_string(), pending)
    }

    fn accept(&mut self, pending: SdpPendingOffer, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("answer parses");
        self.rtc.sdp_api().accept_answer(pending, answer).expect("answer accepted");
        self.drain();
    }

    fn drain(&mut self) {
        loop {
            match self.rtc.poll_output().expect("poll_output") {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    let _ = self.sock.send_to(&t.contents, t.destination);
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(_)) => self.frames += 1,
                Output::Event(_) => {}
            }
        }
    }

    fn pump(&mut self) {
        let mut buf = [0u8; 2000];
        for _ in 0..64 {
            let Ok((n, source)) = self.sock.recv_from(&mut buf) else { break };
            let input = Input::Receive(
                Instant::now(),
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: self.addr,
                    contents: (&buf[..n]).try_into().expect("datagram"),
                },
            );
            self.rtc.handle_input(input).expect("handle_input");
            self.drain();
        }
        if Instant::now() >= self.next_timeout {
            self.rtc.handle_input(Input::Timeout(Instant::now())).expect("timeout");
            self.drain();
        }
    }

    fn write_video(&mut self, n: u64) {
        let mid = *self.mids.keys().next().expect("mid");
        let writer = self.rtc.writer(mid).expect("writer");
        let pt = writer.payload_params().next().expect("negotiated codec").pt();
        let mut f = vec![0x10u8; 1200];
        f[1..9].copy_from_slice(&n.to_be_bytes());
        let time = MediaTime::new(n * 3000, Frequency::NINETY_KHZ);
        writer.write(pt, Instant::now(), time, f).expect("write");
        self.drain();
    }
}

/// Pumps both peers (1 ms turns) until `done`, at most `limit`; panics naming `what`.
fn run_until(
    p: &mut Peer,
    s: &mut Peer,
    what: &str,
    limit: Duration,
    done: impl Fn(&Peer, &Peer) -> bool,
) {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        p.pump();
        s.pump();
        if done(p, s) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out: {what}");
}

/// Sends `count` video frames from `n0`, pacing with pumps.
fn send_frames(p: &mut Peer, s: &mut Peer, n0: u64, count: u64) {
    for n in n0..n0 + count {
        p.write_video(n);
        for _ in 0..5 {
            p.pump();
            s.pump();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_keeps_flowing_while_draining() {
    let s =
        common::start_with_media(|c| c.media.io_backend = ringsfu::config::IoBackend::Epoll).await;
    let sid = s.session(Some("drainmedia")).await;
    let (_, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, joined_pub) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, joined_sub) = s.join(&sid, &tok_sub, "sub").await;

    let mut publisher = Peer::new();
    let (offer, pending) = publisher.offer(Direction::SendOnly);
    let r = ws_pub
        .call(
            "publishVideo",
            Some(json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": false,
                "hasVideo": true, "audioActive": false, "videoActive": true,
                "typeOfVideo": "CAMERA", "frameRate": 30, "videoDimensions": "{\"width\":640,\"height\":480}"})),
        )
        .await;
    let stream_id =
        r["result"]["id"].as_str().unwrap_or_else(|| panic!("publish: {r}")).to_string();
    publisher.accept(pending, r["result"]["sdpAnswer"].as_str().expect("sdpAnswer"));
    ws_sub.notification("participantPublished").await;
    let mut subscriber = Peer::new();
    let (offer, pending) = subscriber.offer(Direction::RecvOnly);
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpOffer": offer})))
        .await;
    subscriber.accept(pending, r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("{r}")));

    tokio::task::block_in_place(|| {
        run_until(
            &mut publisher,
            &mut subscriber,
            "both connected",
            Duration::from_secs(10),
            |p, s| p.connected && s.connected,
        );
        send_frames(&mut publisher, &mut subscriber, 0, 20);
        run_until(&mut publisher, &mut subscriber, "20 frames", Duration::from_secs(10), |_, s| {
            s.frames >= 20
        });
    });
    let before =
        s.req(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();

    // The drain starts: both participants are told, and stay in the session.
    assert_eq!(s.control.begin_drain(), 2);
    for (ws, joined) in [(&mut ws_pub, &joined_pub), (&mut ws_sub, &joined_sub)] {
        let ev = ws.notification("participantEvicted").await;
        assert_eq!(ev["connectionId"], joined["id"], "{ev}");
        assert_eq!(ev["reason"], "openviduServerStopped");
    }

    // Frames sent during the drain still reach the subscriber.
    tokio::task::block_in_place(|| {
        let had = subscriber.frames;
        send_frames(&mut publisher, &mut subscriber, 20, 20);
        run_until(
            &mut publisher,
            &mut subscriber,
            "20 more frames while draining",
            Duration::from_secs(10),
            |_, s| s.frames >= had + 20,
        );
    });
    assert_eq!(s.control.gauges().participants, 2);
    let during =
        s.req(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let out = "ringsfu_shard_rtp_out_total{shard=\"0\"}";
    assert!(series(&during, out) > series(&before, out), "{during}");
    assert!(series(&before, out) > 0, "{before}");
    assert_eq!(series(&during, "ringsfu_shard_dtls_handshakes_total{shard=\"0\"}"), 2);
    assert_eq!(series(&during, "ringsfu_shard_ice_legs{shard=\"0\"}"), 2);
    assert!(
        series(&during, "ringsfu_shard_rx_packets_total{shard=\"0\"}")
            > series(&before, "ringsfu_shard_rx_packets_total{shard=\"0\"}")
    );
    assert_eq!(
        series(&during, "ringsfu_shard_media_drops_total{shard=\"0\",reason=\"srtp_failed\"}"),
        0
    );
    assert_eq!(series(&during, "ringsfu_draining"), 1);

    // The end of the drain evicts them.
    s.control.shutdown().await;
    assert_eq!(s.control.gauges().participants, 0);
}
