//! The cross-shard path does not allocate: two media cores joined by a shard mesh, a connected
//! publisher on the first and a connected subscriber of it on the second (brought up the real
//! way: an authenticated ICE check and a DTLS handshake each, in memory). Once the mirror is
//! attached, every publisher packet (decrypt on the origin, copy into the ring, fan-out on the
//! destination, encrypt into a send slot) and every NACK answered from the destination's
//! retransmission ring runs with zero heap allocations, counted by a global allocator; and what
//! the subscriber receives decrypts to the publisher's payload.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ringsfu::media::{CoreSettings, InTrack, MediaCore, MediaStats, Origin};
use ringsfu::shard::mesh::mesh;
use ringsfu::shard::{ShardCore, TxQueue};
use ringsfu::srtp::SrtpContext;
use ringsfu::wire::RtpView;
use ringsfu::wire::rtcp::nack;

mod counting_alloc;

use counting_alloc::ALLOCS;

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

#[test]
fn the_cross_shard_path_does_not_allocate() {
    let now = Instant::now();
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

    core_peer::add_publisher(&mut a, now, &mut tx_a, 1, client_fp, vec![video_in()]);
    let (mut pub_out, _) = connect(&mut a, server(0), &mut tx_a, &client_ctx, server_fp, 1);
    let origin = Some(Origin { shard: 0, tracks: vec![video_in()] });
    let leg = vec![core_peer::video_leg(OUT_SSRC)];
    core_peer::add_subscriber(&mut b, now, &mut tx_b, 2, 1, client_fp, leg, origin);
    let (mut sub_out, mut sub_in) =
        connect(&mut b, server(1), &mut tx_b, &client_ctx, server_fp, 2);
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
    let before = ALLOCS.load(Ordering::Relaxed);
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
    let during = ALLOCS.load(Ordering::Relaxed) - before;
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
    let before = ALLOCS.load(Ordering::Relaxed);
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
    assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0, "allocations answering a NACK");
    assert_eq!(answered, 2, "two retransmissions from the destination's ring");
    assert_eq!(stats_b.snapshot().rtx_out, 2);
    assert!(stats_a.snapshot().mesh_out >= 1001);
}
