//! A publisher relayed between two nodes, end to end with str0m (an independent WebRTC stack):
//! two media engines in one process, node A on 127.0.0.1 and node B on 127.0.0.2, each with two
//! shards. A str0m publisher on A; a relay out on A's publisher shard sends to a relay in on B
//! through a small UDP proxy on 127.0.0.3 (the link between the nodes) that drops every 7th
//! relayed media packet; two str0m subscribers on B, one on the relay in's shard and one on
//! the other shard (mirrored there through B's shard mesh). Checked on the wire and on the
//! counters:
//! - both subscribers get every video frame intact: the relay's loss is repaired by NACKs
//!   across the relay (B's relay producer NACKs, A answers from its ring);
//! - the relay carries each publisher packet once, whatever the number of subscribers on B;
//! - a keyframe request (PLI) of a subscriber on B reaches the publisher on A;
//! - releasing the relay legs and subscribers brings the relay gauges back to 0.
//!
//! Run once per I/O backend, with the relay out on the publisher's shard of A and on A's
//! other shard (a mirror of the publisher).

mod common;
mod str0m_common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ringsfu::config::{Config, IoBackend};
use ringsfu::dtls::{DtlsRole, Fingerprint};
use ringsfu::media::{
    IceParams, InTrack, MediaEngine, MediaStatsSnapshot, Origin, OutTrack, PeerId, RelayOffer,
    RelayPlan, ShardCommand,
};
use ringsfu::sdp::{self, OutgoingTrack, VideoCodecPolicy};
use str0m::media::{Direction, MediaKind};
use str0m_common::{Peer, Watchdog, assert_frames, frame, pump_for, run_until};

const VIDEO: &[MediaKind] = &[MediaKind::Video];

fn engine(ip: &str, backend: IoBackend) -> Arc<MediaEngine> {
    let mut c = Config::default();
    c.media.io_backend = backend;
    c.media.shards = 2;
    c.media.port_base = 0;
    c.media.pin_threads = false;
    c.media.bind_address = ip.parse().expect("ip");
    MediaEngine::start(Arc::new(c)).expect("media engine starts")
}

fn stats(e: &MediaEngine) -> Vec<MediaStatsSnapshot> {
    e.stats()
}

/// Ice parameters and the remote fingerprint of an offer, with fresh local credentials.
fn transport_of(
    e: &MediaEngine,
    shard: usize,
    offer: &sdp::RemoteDescription,
) -> (IceParams, Fingerprint, sdp::LocalTransport) {
    let (ufrag, pwd) = e.ice_credentials();
    let local = e.local_transport(shard, &ufrag, &pwd);
    let fp = Fingerprint::sha256(&offer.fingerprint).expect("sha-256 fingerprint");
    let ice =
        IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
    (ice, fp, local)
}

/// Publishes `peer`'s sendonly video on `e`'s `shard`: (peer id, tracks, negotiated media).
fn publish(e: &MediaEngine, shard: usize, peer: &mut Peer) -> (PeerId, Vec<sdp::NegotiatedMedia>) {
    let (offer_sdp, pending) = peer.offer(Direction::SendOnly, VIDEO);
    let offer = sdp::parse(&offer_sdp).expect("offer parses");
    let (ice, fp, local) = transport_of(e, shard, &offer);
    let neg = sdp::answer_publish(&offer, &local, VideoCodecPolicy::MediaServerPreferred)
        .expect("publish answer");
    let tracks: Vec<InTrack> = neg.media.iter().map(InTrack::from_negotiated).collect();
    let id = e.new_peer_id();
    e.send(shard, ShardCommand::AddPublisher { id, ice, remote_fingerprint: fp, tracks })
        .expect("sent");
    peer.accept(pending, &neg.sdp);
    (id, neg.media)
}

/// Subscribes `peer` on `e`'s `shard` to `publisher` (whose media `published` negotiated).
fn subscribe(
    e: &MediaEngine,
    shard: usize,
    peer: &mut Peer,
    publisher: PeerId,
    published: &[sdp::NegotiatedMedia],
    origin: Option<Origin>,
) -> PeerId {
    let (offer_sdp, pending) = peer.offer(Direction::RecvOnly, VIDEO);
    let offer = sdp::parse(&offer_sdp).expect("offer parses");
    let (ice, fp, local) = transport_of(e, shard, &offer);
    let outgoing: Vec<OutgoingTrack> = published
        .iter()
        .map(|m| OutgoingTrack {
            kind: m.kind,
            codec: m.codec.clone(),
            ssrc: rand_ssrc(),
            rtx_ssrc: rand_ssrc(),
            cname: "relay-test".into(),
            stream_id: "relayed".into(),
            track_id: "video_relayed".into(),
        })
        .collect();
    let neg = sdp::answer_subscribe(&offer, &local, &outgoing).expect("subscribe answer");
    let tracks = OutTrack::for_answer(&neg.media, &outgoing);
    let id = e.new_peer_id();
    let cmd = ShardCommand::AddSubscriber {
        id,
        publisher,
        ice,
        remote_fingerprint: fp,
        dtls_role: DtlsRole::Server,
        tracks,
        origin,
    };
    e.send(shard, cmd).expect("sent");
    peer.accept(pending, &neg.sdp);
    id
}

fn rand_ssrc() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    (RandomState::new().hash_one(0u8) as u32) | 1
}

/// The link between the nodes: A's relay out sends to `toward_b`'s facing socket, which sends
/// on to B from its other socket (and the other way round). Drops every `drop_every`-th
/// relayed RTP packet of payload type `drop_pt` from A to B (0: none) and counts them.
struct Link {
    /// The address A sends to (and hears B from).
    facing_a: SocketAddr,
    /// The address B sends to (and hears A from).
    facing_b: SocketAddr,
    drop_every: Arc<AtomicU64>,
    /// RTP packets of `drop_pt` from A (dropped or not), and those dropped.
    media_seen: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    fn new(a: SocketAddr, b: SocketAddr, drop_pt: u8) -> Link {
        let sa = UdpSocket::bind("127.0.0.3:0").expect("bind link");
        let sb = UdpSocket::bind("127.0.0.3:0").expect("bind link");
        for s in [&sa, &sb] {
            s.set_read_timeout(Some(Duration::from_millis(1))).expect("timeout");
        }
        let (facing_a, facing_b) = (sa.local_addr().expect("addr"), sb.local_addr().expect("addr"));
        let drop_every = Arc::new(AtomicU64::new(0));
        let media_seen = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (de, ms, dr, st) =
            (drop_every.clone(), media_seen.clone(), dropped.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            // Bounded by `stop`, set when the link is dropped.
            while !st.load(Ordering::Relaxed) {
                while let Ok((n, from)) = sa.recv_from(&mut buf) {
                    if from != a {
                        continue;
                    }
                    let rtp =
                        n > 1 && (128..=191).contains(&buf[0]) && !(192..=223).contains(&buf[1]);
                    if rtp && buf[1] & 0x7F == drop_pt {
                        let seen = ms.fetch_add(1, Ordering::Relaxed) + 1;
                        let every = de.load(Ordering::Relaxed);
                        if every > 0 && seen.is_multiple_of(every) {
                            dr.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                    }
                    let _ = sb.send_to(&buf[..n], b);
                }
                while let Ok((n, from)) = sb.recv_from(&mut buf) {
                    if from == b {
                        let _ = sa.send_to(&buf[..n], a);
                    }
                }
            }
        });
        Link { facing_a, facing_b, drop_every, media_seen, dropped, stop, thread: Some(thread) }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `out_shard`: the shard of A the relay out is on (0: the publisher's; 1: a mirror of it,
/// fed through A's shard mesh).
fn relayed(backend: IoBackend, out_shard: usize) {
    let _watchdog = Watchdog::new("relay test", Duration::from_secs(120));
    let node_a = engine("127.0.0.1", backend);
    let node_b = engine("127.0.0.2", backend);
    let (a_addr, b_addr) = (
        node_a.relay_address(out_shard).expect("A's relay address"),
        node_b.relay_address(0).expect("B's relay address"),
    );
    assert_eq!(a_addr.ip().to_string(), "127.0.0.1");
    assert_eq!(b_addr.ip().to_string(), "127.0.0.2");

    // The publisher on A, shard 0.
    let mut publisher = Peer::bound("127.0.0.1:0");
    let (pub_id, published) = publish(&node_a, 0, &mut publisher);
    let tracks: Vec<InTrack> = published.iter().map(InTrack::from_negotiated).collect();
    let video_pt = tracks[0].pt;

    // The relay: planned on A, the offer crossing as JSON to B.
    let plan = RelayPlan::new(&tracks);
    let link = Link::new(a_addr, b_addr, video_pt);
    let json = serde_json::to_string(&plan.offer()).expect("offer serialises");
    let offer: RelayOffer = serde_json::from_str(&json).expect("offer parses");
    let (out_id, in_id) = (node_a.new_peer_id(), node_b.new_peer_id());
    let a_origin = (out_shard != 0).then(|| Origin { shard: 0, tracks: tracks.clone() });
    let out_cmd = plan.command(out_id, pub_id, link.facing_a, a_origin);
    node_a.send(out_shard, out_cmd).expect("relay out");
    node_b.send(0, offer.command(in_id, link.facing_b)).expect("relay in");

    // Two subscribers on B: on the relay in's shard, and on the other (mirrored there).
    let mut sub_0 = Peer::bound("127.0.0.1:0");
    let id_0 = subscribe(&node_b, 0, &mut sub_0, in_id, &published, None);
    let mut sub_1 = Peer::bound("127.0.0.1:0");
    let origin = Origin { shard: 0, tracks: offer.in_tracks() };
    let id_1 = subscribe(&node_b, 1, &mut sub_1, in_id, &published, Some(origin));

    link.drop_every.store(7, Ordering::Relaxed);
    const N: u64 = 100;
    run_until(
        &mut [&mut publisher, &mut sub_0, &mut sub_1],
        "three peers connected",
        Duration::from_secs(10),
        |p| p.iter().all(|p| p.connected),
    );
    let before = stats(&node_a)[0].rtp_in;
    let rtx_before = stats(&node_a)[out_shard].rtx_out;
    let seen_before = link.media_seen.load(Ordering::Relaxed);
    for n in 0..N + 3 {
        if n == N {
            // A loss in the last frame is only seen when something follows it.
            link.drop_every.store(0, Ordering::Relaxed);
        }
        publisher.write(MediaKind::Video, n, &frame(MediaKind::Video, n));
        pump_for(&mut [&mut publisher, &mut sub_0, &mut sub_1], Duration::from_millis(10));
    }
    let all = (N + 3) as usize;
    run_until(
        &mut [&mut publisher, &mut sub_0, &mut sub_1],
        "every frame at both subscribers on B",
        Duration::from_secs(15),
        |p| {
            let done = p[1].frames.len() >= all && p[2].frames.len() >= all;
            if !done && std::env::var_os("RELAY_DEBUG").is_some() {
                eprintln!(
                    "frames {} {}; A {:?}; B {:?}",
                    p[1].frames.len(),
                    p[2].frames.len(),
                    stats(&node_a),
                    stats(&node_b)
                );
            }
            done
        },
    );
    assert!(link.dropped.load(Ordering::Relaxed) > 10, "loss was applied on the relay");
    assert_frames(&sub_0, 0..N + 3);
    assert_frames(&sub_1, 0..N + 3);

    let (sa, sb) = (stats(&node_a), stats(&node_b));
    // Each publisher packet crossed once (two subscribers on B), retransmissions apart.
    let published_packets = sa[0].rtp_in - before;
    let relayed_packets = link.media_seen.load(Ordering::Relaxed) - seen_before;
    assert!(published_packets >= N, "{sa:?}");
    assert_eq!(relayed_packets, published_packets, "one copy per packet on the relay");
    let out = &sa[out_shard];
    assert!(out.relay_out >= published_packets, "{sa:?}");
    assert!(out.rtx_out > rtx_before, "NACKs answered across the relay: {sa:?}");
    assert!(sb[0].nacks_out > 0, "B's relay producer NACKed: {sb:?}");
    assert!(sb[0].relay_in >= published_packets - link.dropped.load(Ordering::Relaxed), "{sb:?}");
    assert_eq!((out.relay_legs, sb[0].relay_legs), (1, 1), "{sa:?} {sb:?}");
    assert_eq!(sa[1].mirrors, out_shard as u64, "a relay out on another shard mirrors");
    assert_eq!((sa[0].publishers, sa[0].subscribers), (1, 0), "a relay out is no subscriber");
    assert_eq!((sb[0].publishers, sb[0].subscribers, sb[1].subscribers), (0, 1, 1));
    assert_eq!(sb[1].mirrors, 1, "B's other shard mirrors the relay producer");

    // A keyframe request on B reaches the publisher on A (past both limiters' intervals).
    pump_for(&mut [&mut publisher, &mut sub_0, &mut sub_1], Duration::from_millis(1100));
    let (asked, pli_a) = (publisher.keyframe_requests, stats(&node_a)[0].pli_out);
    sub_1.request_keyframe(MediaKind::Video);
    run_until(
        &mut [&mut publisher, &mut sub_0, &mut sub_1],
        "the publisher on A asked for a keyframe",
        Duration::from_secs(5),
        |p| p[0].keyframe_requests > asked,
    );
    assert!(stats(&node_a)[0].pli_out > pli_a);

    // Released like any peer: nothing left.
    node_b.release(&[(id_0, 0), (id_1, 1), (in_id, 0)]);
    node_a.release(&[(out_id, out_shard)]);
    run_until(&mut [&mut publisher], "relay legs gone", Duration::from_secs(5), |_| {
        let (sa, sb) = (stats(&node_a), stats(&node_b));
        sa.iter().chain(&sb).all(|s| s.relay_legs == 0 && s.subscribers == 0 && s.mirrors == 0)
    });
    let sent = stats(&node_a)[out_shard].relay_out;
    for n in N + 3..N + 13 {
        publisher.write(MediaKind::Video, n, &frame(MediaKind::Video, n));
        pump_for(&mut [&mut publisher], Duration::from_millis(10));
    }
    assert_eq!(stats(&node_a)[out_shard].relay_out, sent, "nothing relayed after the release");
    drop(link);
    node_a.shutdown();
    node_b.shutdown();
}

#[test]
fn a_publisher_is_relayed_to_another_node_uring() {
    if !common::uring_or_skip() {
        return;
    }
    relayed(IoBackend::Uring, 0);
}

#[test]
fn a_publisher_is_relayed_to_another_node_epoll() {
    relayed(IoBackend::Epoll, 0);
}

#[test]
fn a_mirrored_publisher_is_relayed_to_another_node_uring() {
    if !common::uring_or_skip() {
        return;
    }
    relayed(IoBackend::Uring, 1);
}

#[test]
fn a_mirrored_publisher_is_relayed_to_another_node_epoll() {
    relayed(IoBackend::Epoll, 1);
}
