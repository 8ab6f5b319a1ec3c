//! A str0m peer (an independent WebRTC stack, sans-IO) driven over a std UDP socket, for the
//! tests that publish and subscribe through ringsfu: offers and answers, the run loop, frames
//! with known contents.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

pub struct Peer {
    pub rtc: Rtc,
    sock: UdpSocket,
    addr: SocketAddr,
    next_timeout: Instant,
    pub connected: bool,
    /// (kind, payload) of every frame received.
    pub frames: Vec<(MediaKind, Vec<u8>)>,
    pub mids: BTreeMap<Mid, MediaKind>,
    /// SRTP and SRTCP datagrams received (first byte 128..=191, RFC 7983), whatever str0m
    /// made of them.
    pub rtp_datagrams: u64,
    /// Loss on the way in: every `n`-th SRTP (not SRTCP) datagram is thrown away before str0m
    /// sees it (0: none), so str0m NACKs the gap.
    pub drop_every: u64,
    /// SRTP datagrams thrown away by `drop_every`.
    pub dropped: u64,
    /// Only datagrams of this payload type count for `drop_every` (e.g. the media's, so that
    /// retransmissions on the RTX payload type always arrive).
    pub drop_pt: Option<u8>,
    /// Datagrams counted for `drop_every`.
    lossy_seen: u64,
    /// Keyframe requests (PLI/FIR) str0m received as a sender.
    pub keyframe_requests: u64,
}

impl Peer {
    pub fn new() -> Peer {
        Peer::bound("127.0.0.1:0")
    }

    /// A peer whose socket and only host candidate are on `addr` (e.g. `[::1]:0`).
    pub fn bound(addr: &str) -> Peer {
        let sock = UdpSocket::bind(addr).expect("bind");
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
            rtp_datagrams: 0,
            drop_every: 0,
            dropped: 0,
            drop_pt: None,
            lossy_seen: 0,
            keyframe_requests: 0,
        }
    }

    /// Offer with one m-line per kind in `kinds`, in `dir`.
    pub fn offer(&mut self, dir: Direction, kinds: &[MediaKind]) -> (String, SdpPendingOffer) {
        let mut change = self.rtc.sdp_api();
        for &kind in kinds {
            let mid = change.add_media(kind, dir, None, None, None);
            self.mids.insert(mid, kind);
        }
        let (offer, pending) = change.apply().expect("offer");
        (offer.to_sdp_string(), pending)
    }

    pub fn accept(&mut self, pending: SdpPendingOffer, answer: &str) {
        let answer = SdpAnswer::from_sdp_string(answer).expect("answer parses");
        self.rtc.sdp_api().accept_answer(pending, answer).expect("answer accepted");
        self.drain();
    }

    /// Drains output until the next timeout.
    pub fn drain(&mut self) {
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
                Output::Event(Event::KeyframeRequest(_)) => self.keyframe_requests += 1,
                Output::Event(_) => {}
            }
        }
    }

    /// Feeds whatever arrived and the timeout when due.
    pub fn pump(&mut self) {
        let mut buf = [0u8; 2000];
        for _ in 0..64 {
            match self.sock.recv_from(&mut buf) {
                Ok((n, source)) => {
                    if (128..=191).contains(&buf[0]) {
                        self.rtp_datagrams += 1;
                        // RTCP packet types 192..=223 in the second byte (RFC 5761).
                        let rtcp = n > 1 && (192..=223).contains(&buf[1]);
                        let counted = self.drop_pt.is_none_or(|pt| n > 1 && buf[1] & 0x7F == pt);
                        if !rtcp && counted && self.drop_every > 0 {
                            self.lossy_seen += 1;
                            if self.lossy_seen.is_multiple_of(self.drop_every) {
                                self.dropped += 1;
                                continue;
                            }
                        }
                    }
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
    pub fn answer(&mut self, offer: &str) -> String {
        let offer = SdpOffer::from_sdp_string(offer).expect("offer parses");
        let answer = self.rtc.sdp_api().accept_offer(offer).expect("offer accepted");
        self.drain();
        answer.to_sdp_string()
    }

    /// Asks the sender of our `kind` media for a keyframe (a PLI).
    pub fn request_keyframe(&mut self, kind: MediaKind) {
        let mid = *self.mids.iter().find(|(_, k)| **k == kind).expect("mid").0;
        let mut writer = self.rtc.writer(mid).expect("writer");
        writer
            .request_keyframe(None, str0m::media::KeyframeRequestKind::Pli)
            .expect("keyframe request");
        self.drain();
    }

    pub fn write(&mut self, kind: MediaKind, n: u64, data: &[u8]) {
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
pub fn frame(kind: MediaKind, n: u64) -> Vec<u8> {
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

pub fn run_until(
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

/// Runs `peers` until each is connected (ICE, DTLS), within 10 s.
pub fn connect(peers: &mut [&mut Peer]) {
    run_until(peers, "peers connected", Duration::from_secs(10), |p| p.iter().all(|p| p.connected));
}

/// Keeps both peers running for `d` (pacing between frames).
pub fn pump_for(peers: &mut [&mut Peer], d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for p in peers.iter_mut() {
            p.pump();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends frames `range` of every kind `from` has, paced, and waits until `to` has received
/// `want` frames in all.
pub fn send_frames(from: &mut Peer, to: &mut Peer, range: std::ops::Range<u64>, want: usize) {
    let kinds: Vec<MediaKind> = from.mids.values().copied().collect();
    for n in range {
        for &kind in &kinds {
            from.write(kind, n, &frame(kind, n));
        }
        pump_for(&mut [&mut *from, &mut *to], Duration::from_millis(10));
    }
    run_until(&mut [from, to], "frames received", Duration::from_secs(10), |p| {
        p[1].frames.len() >= want
    });
}

/// Asserts that `peer` received exactly frames `range` of every kind it has a mid for, intact
/// and in order per kind (nothing else, nothing missing).
pub fn assert_frames(peer: &Peer, range: std::ops::Range<u64>) {
    let kinds = [MediaKind::Audio, MediaKind::Video];
    let kinds: Vec<MediaKind> =
        kinds.into_iter().filter(|k| peer.mids.values().any(|m| m == k)).collect();
    assert!(!kinds.is_empty(), "no media");
    for kind in kinds {
        let got: Vec<&Vec<u8>> =
            peer.frames.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f).collect();
        let want: Vec<Vec<u8>> = range.clone().map(|n| frame(kind, n)).collect();
        assert_eq!(got.len(), want.len(), "{kind:?} frame count");
        for (n, (g, w)) in range.clone().zip(got.iter().zip(&want)) {
            assert!(*g == w, "{kind:?} frame {n} differs");
        }
    }
}

/// Aborts the whole test process when a test still runs `limit` after it made this (a
/// deadlocked server in the test's own runtime would otherwise hang it for good: the awaited
/// timeouts need a runtime worker that is no longer free). Dropping it, at the test's end,
/// stops the watch.
pub struct Watchdog(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Watchdog {
    pub fn new(what: &'static str, limit: Duration) -> Watchdog {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = done.clone();
        let step = Duration::from_millis(100);
        std::thread::spawn(move || {
            // Bounded: limit / 100 ms checks.
            for _ in 0..limit.as_millis() / step.as_millis() {
                if seen.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(step);
            }
            if !seen.load(Ordering::Relaxed) {
                // Straight to stderr: the test harness's capture dies with the process.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "{what}: still running after {limit:?} (a hang): aborting"
                );
                std::process::abort();
            }
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `publishVideo` over `ws` with `peer`'s sendonly offer of `kinds`; the answer is accepted.
/// Returns (stream id, answer).
pub async fn publish(
    ws: &mut crate::common::Ws,
    peer: &mut Peer,
    kinds: &[MediaKind],
) -> (String, String) {
    let (offer, pending) = peer.offer(Direction::SendOnly, kinds);
    let audio = kinds.contains(&MediaKind::Audio);
    let r = ws.call("publishVideo", Some(crate::common::publish_params(&offer, audio))).await;
    let stream = r["result"]["id"].as_str().unwrap_or_else(|| panic!("publish: {r}")).to_string();
    let answer = r["result"]["sdpAnswer"].as_str().expect("sdpAnswer").to_string();
    peer.accept(pending, &answer);
    (stream, answer)
}

/// `receiveVideoFrom` (client offer) of `stream` over `ws` with `peer`'s recvonly offer of
/// `kinds`; the answer is accepted and returned.
pub async fn subscribe(
    ws: &mut crate::common::Ws,
    peer: &mut Peer,
    stream: &str,
    kinds: &[MediaKind],
) -> String {
    let (offer, pending) = peer.offer(Direction::RecvOnly, kinds);
    let params = serde_json::json!({"sender": stream, "sdpOffer": offer});
    let r = ws.call("receiveVideoFrom", Some(params)).await;
    let answer = r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("subscribe: {r}"));
    peer.accept(pending, answer);
    answer.to_string()
}
