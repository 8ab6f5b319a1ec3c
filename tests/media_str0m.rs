//! End to end through the real signaling and media path with an independent WebRTC stack:
//! str0m (sans-IO; its own ICE agent, SRTP, RTP packetizers, SDP) publishes audio (Opus) and
//! video (VP8) frames with known contents over `publishVideo`; a second str0m peer subscribes
//! with `receiveVideoFrom` (client offer) and must get every frame back intact, payload for
//! payload. Run once per I/O backend (io_uring and epoll).

mod common;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ringsfu::config::IoBackend;
use serde_json::json;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

struct Peer {
    rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    next_timeout: Instant,
    connected: bool,
    /// (kind, payload) of every frame received.
    frames: Vec<(MediaKind, Vec<u8>)>,
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
            frames: Vec::new(),
            mids: BTreeMap::new(),
        }
    }

    /// Offer with one audio and one video m-line in `dir`.
    fn offer(&mut self, dir: Direction) -> (String, SdpPendingOffer) {
        let mut change = self.rtc.sdp_api();
        let a = change.add_media(MediaKind::Audio, dir, None, None, None);
        let v = change.add_media(MediaKind::Video, dir, None, None, None);
        self.mids.insert(a, MediaKind::Audio);
        self.mids.insert(v, MediaKind::Video);
        let (offer, pending) = change.apply().expect("offer");
        (offer.to_sdp_string(), pending)
    }

    fn accept(&mut self, pending: SdpPendingOffer, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("answer parses");
        self.rtc.sdp_api().accept_answer(pending, answer).expect("answer accepted");
        self.drain();
    }

    /// Drains output until the next timeout.
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
                Output::Event(Event::MediaAdded(m)) => {
                    self.mids.insert(m.mid, m.kind);
                }
                Output::Event(Event::MediaData(d)) => {
                    let kind = self.mids.get(&d.mid).copied().unwrap_or(MediaKind::Audio);
                    self.frames.push((kind, d.data.to_vec()));
                }
                Output::Event(_) => {}
            }
        }
    }

    /// Feeds whatever arrived and the timeout when due.
    fn pump(&mut self) {
        let mut buf = [0u8; 2000];
        for _ in 0..64 {
            match self.sock.recv_from(&mut buf) {
                Ok((n, source)) => {
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
                Err(_) => break,
            }
        }
        if Instant::now() >= self.next_timeout {
            self.rtc.handle_input(Input::Timeout(Instant::now())).expect("timeout");
            self.drain();
        }
    }

    /// Answers a server offer.
    fn answer(&mut self, offer: &str) -> String {
        let offer = SdpOffer::from_sdp_string(offer).expect("offer parses");
        let answer = self.rtc.sdp_api().accept_offer(offer).expect("offer accepted");
        self.drain();
        answer.to_sdp_string()
    }

    fn write(&mut self, kind: MediaKind, n: u64, data: &[u8]) {
        let mid = *self.mids.iter().find(|(_, k)| **k == kind).expect("mid").0;
        let writer = self.rtc.writer(mid).expect("writer");
        let pt = writer.payload_params().next().expect("negotiated codec").pt();
        let time = match kind {
            MediaKind::Audio => MediaTime::new(n * 960, Frequency::FORTY_EIGHT_KHZ),
            MediaKind::Video => MediaTime::new(n * 3000, Frequency::NINETY_KHZ),
        };
        writer.write(pt, Instant::now(), time, data.to_vec()).expect("write");
        self.drain();
    }
}

/// Frame `n` of `kind`: recognisable contents. Video frames are VP8 keyframe-shaped (first byte
/// even: P=0) and span several RTP packets.
fn frame(kind: MediaKind, n: u64) -> Vec<u8> {
    let len = match kind {
        MediaKind::Audio => 120,
        MediaKind::Video => 2500 + (n as usize % 7) * 300,
    };
    let mut f: Vec<u8> =
        (0..len).map(|i| (i as u64).wrapping_mul(31).wrapping_add(n) as u8).collect();
    f[0] = if kind == MediaKind::Video { 0x10 } else { 0x78 };
    f[1..9].copy_from_slice(&n.to_be_bytes());
    f
}

fn run_until(
    peers: &mut [&mut Peer],
    what: &str,
    deadline: Duration,
    mut done: impl FnMut(&[&mut Peer]) -> bool,
) {
    let end = Instant::now() + deadline;
    // Bounded: at most `deadline` of 1 ms turns.
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.pump();
        }
        if done(peers) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out: {what}");
}

async fn publish_and_subscribe(backend: IoBackend) {
    let s = common::start_with_media(|c| c.media.io_backend = backend).await;
    let sid = s.session(Some("str0m")).await;
    let (_, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, _) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, _) = s.join(&sid, &tok_sub, "sub").await;

    // Publish: str0m offers sendonly audio + video.
    let mut publisher = Peer::new();
    let (offer, pending) = publisher.offer(Direction::SendOnly);
    let r = ws_pub
        .call(
            "publishVideo",
            Some(
                json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": true, "hasVideo": true,
                "audioActive": true, "videoActive": true, "typeOfVideo": "CAMERA", "frameRate": 30,
                "videoDimensions": "{\"width\":640,\"height\":480}"}),
            ),
        )
        .await;
    let stream_id =
        r["result"]["id"].as_str().unwrap_or_else(|| panic!("publish failed: {r}")).to_string();
    publisher.accept(pending, r["result"]["sdpAnswer"].as_str().expect("sdpAnswer"));
    let published = ws_sub.notification("participantPublished").await;
    assert_eq!(published["streams"][0]["id"], stream_id);

    // Subscribe: str0m offers recvonly audio + video (openvidu-browser's default flow).
    let mut subscriber = Peer::new();
    let (offer, pending) = subscriber.offer(Direction::RecvOnly);
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpOffer": offer})))
        .await;
    let answer =
        r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("subscribe failed: {r}"));
    assert!(answer.contains("a=ice-lite"), "{answer}");
    subscriber.accept(pending, answer);

    const N: u64 = 100;
    // The media part is synchronous (str0m is sans-IO, driven here over std sockets); keep the
    // runtime's other worker free for the server.
    tokio::task::block_in_place(|| {
        // Both connect (ICE with ringsfu's lite agent, DTLS, SRTP) within 10 s.
        run_until(
            &mut [&mut publisher, &mut subscriber],
            "both peers connected",
            Duration::from_secs(10),
            |p| p.iter().all(|p| p.connected),
        );

        // 100 audio and 100 video frames, paced at 10 ms, then wait for them to arrive.
        let mut sent = Vec::new();
        for n in 0..N {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let f = frame(kind, n);
                publisher.write(kind, n, &f);
                sent.push((kind, f));
            }
            pump_for(&mut [&mut publisher, &mut subscriber], Duration::from_millis(10));
        }
        run_until(
            &mut [&mut publisher, &mut subscriber],
            "every frame received",
            Duration::from_secs(10),
            |p| p[1].frames.len() >= sent.len(),
        );
        // Every frame intact and in order per kind.
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let want: Vec<&Vec<u8>> =
                sent.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f).collect();
            let got: Vec<&Vec<u8>> =
                subscriber.frames.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f).collect();
            assert_eq!(got.len(), want.len(), "{kind:?} frame count");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{kind:?} frame {i} differs");
            }
        }
    });

    // The REST view shows the stream and the subscription.
    let (st, v) = s.get(&format!("/openvidu/api/sessions/{sid}")).await;
    assert_eq!(st, 200);
    let conns = v["connections"]["content"].as_array().expect("connections");
    assert!(conns.iter().any(|c| c["publishers"][0]["streamId"] == stream_id.as_str()), "{v}");
    assert!(conns.iter().any(|c| c["subscribers"][0]["streamId"] == stream_id.as_str()), "{v}");

    // Counters moved: handshakes, forwarded packets, no SRTP failure.
    let engine = s.control.media_engine().expect("engine");
    let st = engine.stats()[0];
    assert_eq!(st.dtls_handshakes, 2);
    assert!(st.rtp_out >= 2 * N, "{st:?}");
    assert_eq!(st.drops(ringsfu::media::MediaDrop::SrtpFailed), 0, "{st:?}");
    assert_eq!(engine.shard_stats()[0].snapshot().backend, backend);
}

/// Keeps both peers running for `d` (pacing between frames).
fn pump_for(peers: &mut [&mut Peer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.pump();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_publishes_and_subscribes_epoll() {
    publish_and_subscribe(IoBackend::Epoll).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_publishes_and_subscribes_uring() {
    if ringsfu::io::choose_backend(IoBackend::Uring).is_err() {
        eprintln!("io_uring unavailable here; the uring run is skipped");
        return;
    }
    publish_and_subscribe(IoBackend::Uring).await;
}

/// Sends frames `range` of both kinds from `from`, paced, and waits until `to` has `want` frames.
fn send_frames(from: &mut Peer, to: &mut Peer, range: std::ops::Range<u64>, want: usize) {
    for n in range {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            from.write(kind, n, &frame(kind, n));
        }
        pump_for(&mut [&mut *from, &mut *to], Duration::from_millis(10));
    }
    run_until(&mut [from, to], "frames received", Duration::from_secs(10), |p| {
        p[1].frames.len() >= want
    });
}

/// The mediasoup-style flow (`prepareReceiveVideoFrom` then `receiveVideoFrom` with the
/// answer), then the publisher reconnects (`reconnectStream` with a new offer from a new peer
/// connection): the subscriber keeps receiving on its untouched transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_server_offer_and_publisher_reconnect() {
    let s = common::start_with_media(|c| c.media.io_backend = IoBackend::Epoll).await;
    let sid = s.session(Some("str0m-offer")).await;
    let (_, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, _) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, _) = s.join(&sid, &tok_sub, "sub").await;
    let publish = |offer: String| {
        json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": true, "hasVideo": true,
               "audioActive": true, "videoActive": true, "typeOfVideo": "CAMERA", "frameRate": 30})
    };

    let mut p1 = Peer::new();
    let (offer, pending) = p1.offer(Direction::SendOnly);
    let r = ws_pub.call("publishVideo", Some(publish(offer))).await;
    let stream_id = r["result"]["id"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    p1.accept(pending, r["result"]["sdpAnswer"].as_str().expect("answer"));

    // A SUBSCRIBER cannot publish.
    let mut nope = Peer::new();
    let (offer, _) = nope.offer(Direction::SendOnly);
    let r = ws_sub.call("publishVideo", Some(publish(offer))).await;
    assert_eq!(r["error"]["code"], 401, "{r}");

    // Server offer, client answer.
    let r = ws_sub
        .call("prepareReceiveVideoFrom", Some(json!({"sender": stream_id, "reconnect": false})))
        .await;
    let offer = r["result"]["sdpOffer"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    assert!(offer.contains("a=setup:actpass") && offer.contains("a=sendonly"), "{offer}");
    let mut sub = Peer::new();
    let answer = sub.answer(&offer);
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpAnswer": answer})))
        .await;
    assert!(r.get("result").is_some(), "{r}");
    // An answer without an offer is refused with an SDP error.
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpAnswer": "v=0"})))
        .await;
    assert_eq!(r["error"]["code"], 302, "{r}");

    tokio::task::block_in_place(|| {
        run_until(&mut [&mut p1, &mut sub], "connected", Duration::from_secs(10), |p| {
            p.iter().all(|p| p.connected)
        });
        send_frames(&mut p1, &mut sub, 0..20, 40);
    });

    // The publisher's browser rebuilds its peer connection: reconnectStream with a new offer.
    let mut p2 = Peer::new();
    let (offer, pending) = p2.offer(Direction::SendOnly);
    let r = ws_pub
        .call("reconnectStream", Some(json!({"stream": stream_id, "sdpString": offer})))
        .await;
    assert_eq!(r["result"]["id"], stream_id.as_str(), "{r}");
    p2.accept(pending, r["result"]["sdpAnswer"].as_str().expect("answer"));
    drop(p1);
    tokio::task::block_in_place(|| {
        run_until(
            &mut [&mut p2, &mut sub],
            "publisher reconnected",
            Duration::from_secs(10),
            |p| p[0].connected,
        );
        send_frames(&mut p2, &mut sub, 100..120, 80);
    });
    // The subscriber got the new source's frames intact on its old transport.
    let video: Vec<&Vec<u8>> =
        sub.frames.iter().filter(|(k, _)| *k == MediaKind::Video).map(|(_, f)| f).collect();
    for n in 100..120u64 {
        assert!(
            video.contains(&&frame(MediaKind::Video, n)),
            "video frame {n} after reconnect missing"
        );
    }
}
