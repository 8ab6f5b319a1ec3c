//! Relay legs between two media cores in memory (node A and node B, sans-IO, a virtual clock):
//! a connected publisher on A relayed to a relay producer on B with a connected subscriber.
//! - Once warmed up, every relayed packet (A: decrypt, rewrite, encrypt into a relay slot;
//!   B: route by (source, SSRC), decrypt, fan out to the subscriber) runs with zero heap
//!   allocations, counted by a global allocator, and what the subscriber gets decrypts to the
//!   publisher's payload.
//! - A packet lost on the relay is NACKed by B and retransmitted by A from its ring.
//! - An unknown SSRC from A's relay address is dropped and counted (`unknown_relay_ssrc`); a
//!   relay in reusing taken SSRCs is refused.
//! - A relay leg's packets are marked as a train: gathered, they leave the send queue side by
//!   side behind a local subscriber's, where the fanout interleaved them.
//! - Without media the legs keep each other alive (the relay in's receiver reports with an
//!   RRTR one way, the relay out's DLRR answers the other); silent for `RELAY_TIMEOUT`, the relay in vanishes and the relay out fails.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringsfu::media::{
    CoreSettings, InTrack, MediaCore, MediaDrop, MediaStats, PeerId, RELAY_TIMEOUT, RelayPlan,
    ShardEvent,
};
use ringsfu::shard::{ShardCore, TxQueue};
use ringsfu::srtp::SrtpContext;
use ringsfu::wire::RtpView;

mod counting_alloc;

use counting_alloc::allocs;

mod core_peer;

use core_peer::{connect, meta, peer_addr};

const PUB_SSRC: u32 = 0x1111_0000;
const OUT_SSRC: u32 = 0x2222_0000;
const PAYLOAD: usize = 1000;

fn node(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), 40000)
}

/// The publisher's track: VP8 with RTX and NACK (the relay carries RTX too).
fn video_in() -> InTrack {
    let mut t = core_peer::video_track(PUB_SSRC);
    t.rtx_pt = Some(97);
    t.nack = true;
    t
}

/// A protected video packet of the publisher (`PAYLOAD` bytes, seq-stamped).
fn packet(seq: u16, out: &mut SrtpContext, buf: &mut [u8]) -> usize {
    core_peer::video_packet(seq, PUB_SSRC, PAYLOAD, out, buf)
}

/// Moves every datagram `from` queued for `to_addr` into core `to` (as from `from_addr`);
/// the rest (to clients) is handed to `other`. Returns how many crossed.
fn deliver(
    from: &mut TxQueue,
    (from_addr, to_addr): (SocketAddr, SocketAddr),
    to: &mut MediaCore,
    to_tx: &mut TxQueue,
    now: Instant,
    mut other: impl FnMut(SocketAddr, &[u8]),
) -> usize {
    let mut buf = [0u8; 2048];
    let mut crossed = 0;
    while let Some((dst, n)) = from.pop_pending(|m, p| {
        buf[..p.len()].copy_from_slice(p);
        (m.dst, p.len())
    }) {
        if dst == to_addr {
            to.handle_datagram(now, meta(from_addr, to_addr, n), &mut buf[..n], to_tx);
            crossed += 1;
        } else {
            other(dst, &buf[..n]);
        }
    }
    crossed
}

/// Publisher packet `seq` into A, and what A relays into B; how many crossed.
fn relay(
    seq: u16,
    pub_out: &mut SrtpContext,
    (a, tx_a): (&mut MediaCore, &mut TxQueue),
    (b, tx_b): (&mut MediaCore, &mut TxQueue),
    now: Instant,
) -> usize {
    let mut buf = [0u8; 2048];
    let n = packet(seq, pub_out, &mut buf);
    a.handle_datagram(now, meta(peer_addr(1), node(1), n), &mut buf[..n], tx_a);
    deliver(tx_a, (node(1), node(2)), b, tx_b, now, |_, _| ())
}

fn drain(tx: &mut TxQueue) {
    while tx.pop_pending(|_, _| ()).is_some() {}
}

/// The allocation count is process-wide: the tests of this binary run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_relay_between_two_cores() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut now = Instant::now();
    let ((server_ctx, server_fp), (client_ctx, client_fp)) = core_peer::contexts();
    let (stats_a, stats_b) = (Arc::new(MediaStats::default()), Arc::new(MediaStats::default()));
    let settings = CoreSettings::default();
    let mut a = MediaCore::new(node(1), server_ctx.clone(), settings.clone(), stats_a.clone(), now);
    let mut b = MediaCore::new(node(2), server_ctx, settings, stats_b.clone(), now);
    let (mut tx_a, mut tx_b) = (TxQueue::new(256), TxQueue::new(256));

    let tracks = vec![video_in()];
    core_peer::add_publisher(&mut a, now, &mut tx_a, 1, client_fp, tracks.clone());
    let (mut pub_out, _) = connect(&mut a, node(1), &mut tx_a, &client_ctx, server_fp, 1);
    let plan = RelayPlan::new(&tracks);
    let offer = plan.offer();
    a.handle_command(now, plan.command(PeerId(10), PeerId(1), node(2), None), &mut tx_a);
    b.handle_command(now, offer.command(PeerId(20), node(1)), &mut tx_b);
    // The same SSRCs again from the same node: refused.
    b.handle_command(now, offer.command(PeerId(21), node(1)), &mut tx_b);
    let rejected = std::iter::from_fn(|| b.poll_event()).collect::<Vec<_>>();
    assert_eq!(
        rejected,
        vec![ShardEvent::Rejected { id: PeerId(21), reason: "duplicate relay SSRC" }]
    );
    let leg = vec![core_peer::video_leg(OUT_SSRC)];
    core_peer::add_subscriber(&mut b, now, &mut tx_b, 2, 20, client_fp, leg, None);
    let (_, mut sub_in) = connect(&mut b, node(2), &mut tx_b, &client_ctx, server_fp, 2);
    deliver(&mut tx_b, (node(2), node(1)), &mut a, &mut tx_a, now, |_, _| ());
    drain(&mut tx_a);
    drain(&mut tx_b);
    assert_eq!((stats_a.snapshot().relay_legs, stats_b.snapshot().relay_legs), (1, 1));

    let mut buf = vec![0u8; 2048];
    let mut got = vec![0u8; 2048];
    let mut check = |dst: SocketAddr, p: &[u8], seq: u16| {
        assert_eq!(dst, peer_addr(2));
        got[..p.len()].copy_from_slice(p);
        let len = sub_in.unprotect_rtp(&mut got[..p.len()], 12).expect("subscriber decrypts");
        let v = RtpView::parse(&got[..len]).expect("rtp");
        assert_eq!(v.ssrc(), OUT_SSRC);
        let body = v.payload();
        assert_eq!(body.len(), PAYLOAD);
        assert!(body.iter().enumerate().all(|(i, &x)| x == (i as u16 ^ seq) as u8), "{seq}");
    };
    // Warm up: send pools, rings, SRTP stream state.
    for seq in 1..=50u16 {
        assert_eq!(relay(seq, &mut pub_out, (&mut a, &mut tx_a), (&mut b, &mut tx_b), now), 1);
        drain(&mut tx_b);
    }
    let before = allocs();
    let mut received = 0;
    for seq in 51..=1050u16 {
        assert_eq!(relay(seq, &mut pub_out, (&mut a, &mut tx_a), (&mut b, &mut tx_b), now), 1);
        while let Some(()) = tx_b.pop_pending(|m, p| check(m.dst, p, seq)) {
            received += 1;
        }
    }
    assert_eq!(allocs() - before, 0, "allocations on the relay path");
    assert_eq!(received, 1000);
    assert_eq!(stats_a.snapshot().relay_out, 1050);
    assert_eq!(stats_b.snapshot().relay_in, 1050);
    assert_eq!((stats_a.snapshot().subscribers, stats_b.snapshot().publishers), (0, 0));

    // 1051 lost on the relay: B NACKs it when 1052 arrives (or on its timer), A resends it
    // from its ring, B forwards it.
    let n = packet(1051, &mut pub_out, &mut buf);
    a.handle_datagram(now, meta(peer_addr(1), node(1), n), &mut buf[..n], &mut tx_a);
    drain(&mut tx_a);
    relay(1052, &mut pub_out, (&mut a, &mut tx_a), (&mut b, &mut tx_b), now);
    now += Duration::from_millis(30);
    b.handle_timeout(now, &mut tx_b);
    let mut to_sub = Vec::new();
    let nacks =
        deliver(&mut tx_b, (node(2), node(1)), &mut a, &mut tx_a, now, |_, p| to_sub.push(p.len()));
    assert!(nacks >= 1 && stats_b.snapshot().nacks_out >= 1, "{:?}", stats_b.snapshot());
    assert_eq!(stats_a.snapshot().rtx_out, 1, "{:?}", stats_a.snapshot());
    let crossed = deliver(&mut tx_a, (node(1), node(2)), &mut b, &mut tx_b, now, |_, _| ());
    assert_eq!(crossed, 1, "the retransmission");
    let mut repaired = false;
    while let Some(seq_ok) = tx_b.pop_pending(|m, p| {
        if m.dst != peer_addr(2) {
            return false;
        }
        got[..p.len()].copy_from_slice(p);
        let len = sub_in.unprotect_rtp(&mut got[..p.len()], 12).expect("decrypts");
        let v = RtpView::parse(&got[..len]).expect("rtp");
        v.payload().iter().enumerate().all(|(i, &x)| x == (i as u16 ^ 1051) as u8)
    }) {
        repaired |= seq_ok;
    }
    assert!(repaired, "1051 reached the subscriber");

    // An SSRC no relay leg has, from A's relay address: dropped and counted.
    let mut junk = [0u8; 64];
    junk[0] = 0x80;
    junk[1] = 96;
    junk[8..12].copy_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
    b.handle_datagram(now, meta(node(1), node(2), 64), &mut junk, &mut tx_b);
    assert_eq!(stats_b.snapshot().drops(MediaDrop::UnknownRelaySsrc), 1);

    // No media for longer than the timeout, but both nodes there: the relay in's receiver
    // reports (with an RRTR) and the relay out's DLRR answers keep both legs.
    for _ in 0..45 {
        now += Duration::from_secs(1);
        a.handle_timeout(now, &mut tx_a);
        b.handle_timeout(now, &mut tx_b);
        deliver(&mut tx_a, (node(1), node(2)), &mut b, &mut tx_b, now, |_, _| ());
        deliver(&mut tx_b, (node(2), node(1)), &mut a, &mut tx_a, now, |_, _| ());
    }
    let ended = |e: &ShardEvent| {
        matches!(
            e,
            ShardEvent::Failed { id: PeerId(10), .. } | ShardEvent::Vanished { id: PeerId(20), .. }
        )
    };
    assert!(!std::iter::from_fn(|| a.poll_event()).any(|e| ended(&e)));
    assert!(!std::iter::from_fn(|| b.poll_event()).any(|e| ended(&e)));
    assert_eq!((stats_a.snapshot().relay_legs, stats_b.snapshot().relay_legs), (1, 1));

    // Silence: both legs end (B's relay in vanishes, A's relay out fails).
    drain(&mut tx_a);
    drain(&mut tx_b);
    let later = now + RELAY_TIMEOUT + Duration::from_secs(1);
    a.handle_timeout(later, &mut tx_a);
    b.handle_timeout(later, &mut tx_b);
    let ev_a: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
    let ev_b: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
    assert!(
        ev_a.contains(&ShardEvent::Failed { id: PeerId(10), reason: "relay silent" }),
        "{ev_a:?}"
    );
    assert!(
        ev_b.contains(&ShardEvent::Vanished { id: PeerId(20), reason: "relay silent" }),
        "{ev_b:?}"
    );
    assert_eq!((stats_a.snapshot().relay_legs, stats_b.snapshot().relay_legs), (0, 0));
}

/// A fanout on A to a local subscriber and a relay leg: the relay's packets are the train
/// (`TxQueue::gather_trains` moves them behind the local leg's, in order), the local leg's
/// are not.
#[test]
fn relay_packets_are_sent_as_trains() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let ((server_ctx, server_fp), (client_ctx, client_fp)) = core_peer::contexts();
    let stats = Arc::new(MediaStats::default());
    let mut a = MediaCore::new(node(1), server_ctx, CoreSettings::default(), stats, now);
    let mut tx = TxQueue::new(256);
    let tracks = vec![video_in()];
    core_peer::add_publisher(&mut a, now, &mut tx, 1, client_fp, tracks.clone());
    let (mut pub_out, _) = connect(&mut a, node(1), &mut tx, &client_ctx, server_fp, 1);
    let leg = vec![core_peer::video_leg(OUT_SSRC)];
    core_peer::add_subscriber(&mut a, now, &mut tx, 2, 1, client_fp, leg, None);
    let _ = connect(&mut a, node(1), &mut tx, &client_ctx, server_fp, 2);
    let plan = RelayPlan::new(&tracks);
    a.handle_command(now, plan.command(PeerId(10), PeerId(1), node(2), None), &mut tx);
    drain(&mut tx);
    let mut buf = [0u8; 2048];
    for seq in 1..=6u16 {
        let n = packet(seq, &mut pub_out, &mut buf);
        a.handle_datagram(now, meta(peer_addr(1), node(1), n), &mut buf[..n], &mut tx);
    }
    let queued = tx.pending_len();
    tx.gather_trains();
    let order: Vec<(SocketAddr, usize)> =
        std::iter::from_fn(|| tx.pop_pending(|m, p| (m.dst, p.len()))).collect();
    assert_eq!(order.len(), queued);
    let to = |d: SocketAddr| order.iter().filter(|o| o.0 == d).count();
    assert_eq!((to(peer_addr(2)), to(node(2))), (6, 6), "{order:?}");
    assert!(order[..6].iter().all(|o| o.0 == peer_addr(2)), "local leg first: {order:?}");
    assert!(order[6..].iter().all(|o| o.0 == node(2)), "then the relay's train: {order:?}");
    assert!(order[6..].iter().all(|o| o.1 == order[6].1), "of one size: {order:?}");
}
