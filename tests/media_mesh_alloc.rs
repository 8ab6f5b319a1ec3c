//! The cross-shard path does not allocate: two media cores joined by a shard mesh, a connected
//! publisher on the first and a connected subscriber of it on the second (brought up the real
//! way: an authenticated ICE check and a DTLS handshake each, in memory). Once the mirror is
//! attached, every publisher packet (decrypt on the origin, copy into the ring, fan-out on the
//! destination, encrypt into a send slot) and every NACK answered from the destination's
//! retransmission ring runs with zero heap allocations, counted by a global allocator (per
//! thread); and what the subscriber receives decrypts to the publisher's payload. A NACK of a
//! packet the origin never received goes back to it through the mesh and renews its NACK to
//! the publisher, also without allocating.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringsfu::media::{CoreSettings, InTrack, MediaCore, MediaStats, Origin};
use ringsfu::shard::mesh::mesh;
use ringsfu::shard::{ShardCore, TxQueue};
use ringsfu::srtp::SrtpContext;
use ringsfu::wire::RtpView;
use ringsfu::wire::rtcp::nack;

mod counting_alloc;

use counting_alloc::allocs;

const PUB_SSRC: u32 = 0x1111_0000;
const OUT_SSRC: u32 = 0x2222_0000;
const PAYLOAD: usize = 1000;

mod core_peer;

use core_peer::{connect, meta, peer_addr};

fn server(i: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000 + i)
}

fn video_in() -> InTrack {
    core_peer::video_track(PUB_SSRC)
}

/// A protected video packet of the publisher (`PAYLOAD` bytes, seq-stamped).
fn packet(seq: u16, out: &mut SrtpContext, buf: &mut [u8]) -> usize {
    core_peer::video_packet(seq, PUB_SSRC, PAYLOAD, out, buf)
}

/// Two cores joined by a mesh: a connected publisher of `video` on `a` (shard 0), a connected
/// subscriber of it on `b` (shard 1), the mirror attached, every queue emptied.
struct Pair {
    a: MediaCore,
    b: MediaCore,
    tx_a: TxQueue,
    tx_b: TxQueue,
    stats_a: Arc<MediaStats>,
    stats_b: Arc<MediaStats>,
    pub_out: SrtpContext,
    pub_in: SrtpContext,
    sub_out: SrtpContext,
    sub_in: SrtpContext,
}

fn pair(now: Instant, video: InTrack) -> Pair {
    let ((server_ctx, server_fp), (client_ctx, client_fp)) = core_peer::contexts();
    let mut ports = mesh(2, 64);
    let (stats_a, stats_b) = (Arc::new(MediaStats::default()), Arc::new(MediaStats::default()));
    let settings = CoreSettings::default();
    let port_b = ports.pop().expect("port 1");
    let port_a = ports.pop().expect("port 0");
    let mut a =
        MediaCore::new(server(0), server_ctx.clone(), settings.clone(), stats_a.clone(), now)
            .with_mesh(port_a);
    let mut b =
        MediaCore::new(server(1), server_ctx, settings, stats_b.clone(), now).with_mesh(port_b);
    let (mut tx_a, mut tx_b) = (TxQueue::new(256), TxQueue::new(256));

    core_peer::add_publisher(&mut a, now, &mut tx_a, 1, client_fp, vec![video.clone()]);
    let (pub_out, pub_in) = connect(&mut a, server(0), &mut tx_a, &client_ctx, server_fp, 1);
    let origin = Some(Origin { shard: 0, tracks: vec![video] });
    let leg = vec![core_peer::video_leg(OUT_SSRC)];
    core_peer::add_subscriber(&mut b, now, &mut tx_b, 2, 1, client_fp, leg, origin);
    let (sub_out, sub_in) = connect(&mut b, server(1), &mut tx_b, &client_ctx, server_fp, 2);
    // The attach request crosses to the origin, its acknowledgement comes back; the keyframe
    // request of the new subscriber goes to the origin, which sends the publisher a PLI.
    assert!(a.handle_mesh(now, &mut tx_a), "attach request");
    assert!(a.has_mesh_input(), "keyframe request");
    while a.handle_mesh(now, &mut tx_a) {}
    while b.handle_mesh(now, &mut tx_b) {}
    assert_eq!(stats_b.snapshot().mirrors, 1);
    assert!(stats_a.snapshot().pli_out >= 1, "{:?}", stats_a.snapshot());
    while tx_a.pop_pending(|_, _| ()).is_some() {}
    while tx_b.pop_pending(|_, _| ()).is_some() {}
    Pair { a, b, tx_a, tx_b, stats_a, stats_b, pub_out, pub_in, sub_out, sub_in }
}

#[test]
fn the_cross_shard_path_does_not_allocate() {
    let now = Instant::now();
    let Pair {
        mut a,
        mut b,
        mut tx_a,
        mut tx_b,
        stats_a,
        stats_b,
        mut pub_out,
        pub_in: _,
        mut sub_out,
        mut sub_in,
    } = pair(now, video_in());

    let mut buf = vec![0u8; 2048];
    let mut got = vec![0u8; 2048];
    let mut forward = |seq: u16,
                       a: &mut MediaCore,
                       b: &mut MediaCore,
                       tx_a: &mut TxQueue,
                       tx_b: &mut TxQueue,
                       buf: &mut [u8]| {
        let n = packet(seq, &mut pub_out, buf);
        a.handle_datagram(now, meta(peer_addr(1), server(0), n), &mut buf[..n], tx_a);
        assert!(b.handle_mesh(now, tx_b), "packet {seq} crossed");
    };
    // Warm up: the rings, send pools and the mirror's retransmission ring see their first use.
    for seq in 1..=50u16 {
        forward(seq, &mut a, &mut b, &mut tx_a, &mut tx_b, &mut buf);
        while tx_b.pop_pending(|_, _| ()).is_some() {}
    }
    let before = allocs();
    let mut received = 0usize;
    for seq in 51..=1050u16 {
        forward(seq, &mut a, &mut b, &mut tx_a, &mut tx_b, &mut buf);
        while let Some(n) = tx_b.pop_pending(|m, p| {
            assert_eq!(m.dst, peer_addr(2));
            got[..p.len()].copy_from_slice(p);
            p.len()
        }) {
            let len = sub_in.unprotect_rtp(&mut got[..n], 12).expect("subscriber decrypts");
            let v = RtpView::parse(&got[..len]).expect("rtp");
            assert_eq!(v.ssrc(), OUT_SSRC);
            let p = v.payload();
            assert_eq!(p.len(), PAYLOAD);
            assert!(p.iter().enumerate().all(|(i, &x)| x == (i as u16 ^ seq) as u8));
            received += 1;
        }
        while tx_a.pop_pending(|_, _| ()).is_some() {}
    }
    let during = allocs() - before;
    assert_eq!(received, 1000);
    assert_eq!(during, 0, "allocations on the cross-shard packet path");

    // A NACK from the subscriber for recent packets, answered from the mirror's ring on its
    // own shard, also without allocating.
    let mut rtcp = [0u8; 256];
    let first_out = {
        // The sequence numbers the subscriber saw: learn the last one.
        let n = packet(1051, &mut pub_out, &mut buf);
        a.handle_datagram(now, meta(peer_addr(1), server(0), n), &mut buf[..n], &mut tx_a);
        assert!(b.handle_mesh(now, &mut tx_b));
        let n = tx_b.pop_pending(|_, p| {
            got[..p.len()].copy_from_slice(p);
            p.len()
        });
        let len = sub_in.unprotect_rtp(&mut got[..n.expect("sent")], 12).expect("decrypts");
        RtpView::parse(&got[..len]).expect("rtp").sequence_number()
    };
    let before = allocs();
    let n = nack::write_lost(
        &mut rtcp[..200],
        0x5555,
        OUT_SSRC,
        [first_out.wrapping_sub(3), first_out.wrapping_sub(1)],
    )
    .expect("nack");
    let n = sub_out.protect_rtcp(&mut rtcp, n).expect("protect rtcp");
    b.handle_datagram(
        now + Duration::from_millis(5),
        meta(peer_addr(2), server(1), n),
        &mut rtcp[..n],
        &mut tx_b,
    );
    let mut answered = 0;
    while tx_b.pop_pending(|_, _| ()).is_some() {
        answered += 1;
    }
    assert_eq!(allocs() - before, 0, "allocations answering a NACK");
    assert_eq!(answered, 2, "two retransmissions from the destination's ring");
    assert_eq!(stats_b.snapshot().rtx_out, 2);
    assert!(stats_a.snapshot().mesh_out >= 1001);
}

/// Packet 3 of the publisher on shard 0 never arrives; shard 0's own NACKs of it (three, 40 ms
/// apart) bring nothing. The subscriber on shard 1 NACKs it: its mirror never had it, so shard
/// 1 tells the origin through the mesh (once, however many of its consumers ask at once), and
/// shard 0 NACKs the publisher once more. No allocation on that path either.
#[test]
fn a_nack_for_a_packet_the_origin_never_got_renews_its_nack_without_allocating() {
    let mut now = Instant::now();
    let mut video = video_in();
    video.nack = true;
    let mut p = pair(now, video);
    let mut buf = vec![0u8; 2048];
    let nacked_to_publisher = |pub_in: &mut SrtpContext, tx_a: &mut TxQueue, buf: &mut [u8]| {
        let mut seqs = Vec::new();
        while let Some(n) = tx_a.pop_pending(|m, p| {
            assert_eq!(m.dst, peer_addr(1));
            buf[..p.len()].copy_from_slice(p);
            p.len()
        }) {
            let Ok(n) = pub_in.unprotect_rtcp(&mut buf[..n]) else { continue };
            let c = ringsfu::wire::rtcp::RtcpCompound::parse_relaxed(&buf[..n]).expect("rtcp");
            for x in c.packets() {
                if let Ok(ringsfu::wire::rtcp::RtcpPacket::Nack(x)) = x {
                    seqs.extend(x.lost());
                }
            }
        }
        seqs
    };
    let mut first_out = None;
    for seq in [1u16, 2, 4] {
        let n = packet(seq, &mut p.pub_out, &mut buf);
        p.a.handle_datagram(now, meta(peer_addr(1), server(0), n), &mut buf[..n], &mut p.tx_a);
        assert!(p.b.handle_mesh(now, &mut p.tx_b));
        while let Some(s) = p.tx_b.pop_pending(|_, p| u16::from_be_bytes([p[2], p[3]])) {
            first_out.get_or_insert(s);
        }
    }
    let out3 = first_out.expect("forwarded").wrapping_add(2);
    let mut spent = nacked_to_publisher(&mut p.pub_in, &mut p.tx_a, &mut buf);
    for _ in 0..40 {
        now += Duration::from_millis(5);
        if p.a.poll_timeout().is_some_and(|t| t <= now) {
            p.a.handle_timeout(now, &mut p.tx_a);
        }
        spent.extend(nacked_to_publisher(&mut p.pub_in, &mut p.tx_a, &mut buf));
    }
    assert_eq!(spent, [3, 3, 3], "shard 0's own tries");

    let mut rtcp = [0u8; 256];
    let nack_3 = |sub_out: &mut SrtpContext, rtcp: &mut [u8]| {
        let n = nack::write_lost(&mut rtcp[..200], 0x5555, OUT_SSRC, [out3]).expect("nack");
        sub_out.protect_rtcp(rtcp, n).expect("protect rtcp")
    };
    // Warm up once (the mesh message's first use), then count.
    let n = nack_3(&mut p.sub_out, &mut rtcp);
    p.b.handle_datagram(now, meta(peer_addr(2), server(1), n), &mut rtcp[..n], &mut p.tx_b);
    assert!(p.a.handle_mesh(now, &mut p.tx_a), "the NACK crossed to the origin");
    assert_eq!(nacked_to_publisher(&mut p.pub_in, &mut p.tx_a, &mut buf), [3]);
    // The same again at once (another consumer of this shard): not passed on.
    let n = nack_3(&mut p.sub_out, &mut rtcp);
    p.b.handle_datagram(now, meta(peer_addr(2), server(1), n), &mut rtcp[..n], &mut p.tx_b);
    assert!(!p.a.has_mesh_input(), "told the origin once");
    now += Duration::from_millis(40);
    let n = nack_3(&mut p.sub_out, &mut rtcp);
    let before = allocs();
    p.b.handle_datagram(now, meta(peer_addr(2), server(1), n), &mut rtcp[..n], &mut p.tx_b);
    assert!(p.a.handle_mesh(now, &mut p.tx_a));
    assert_eq!(allocs() - before, 0, "allocations renewing a NACK");
    assert_eq!(nacked_to_publisher(&mut p.pub_in, &mut p.tx_a, &mut buf), [3]);
    assert_eq!(p.stats_a.snapshot().nacks_renewed, 2);
    assert_eq!(p.stats_b.snapshot().rtx_missing, 3);
}
