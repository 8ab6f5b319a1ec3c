//! The cost of a relay leg against a local consumer: one publisher packet delivered to one
//! subscriber, inside media cores (`MediaCore::handle_datagram`, no socket).
//!
//! `cargo bench --bench relay -- --measurement-time 3 --warm-up-time 1`
//!
//! - `relay/local`: a connected publisher and one connected subscriber of it on the same core
//!   (what a subscriber on the publisher's node costs).
//! - `relay/out`: the publisher's core with a relay out and no subscriber: decrypt, rewrite,
//!   encrypt into a relay slot (node A's share of a relay leg).
//! - `relay/out+in`: as `out`, then the relay datagram handed to a second core (node B) with
//!   a relay in and one connected subscriber: route by (source, SSRC), decrypt, fan out,
//!   encrypt (what a subscriber on another node costs both nodes together, the kernel apart).
//!
//! The protected input packet is made in the (untimed) setup of each iteration; the queues are
//! drained after each packet, as the shell does once per turn. AEAD_AES_128_GCM everywhere.
//!
//! Measured once (2026-12-06, the 2-core machine NOT quiet: load average ~11 from other
//! builds): local 0.89 µs, out 0.90 µs, out+in 1.77 µs per packet, i.e. a subscriber on another
//! node costs ~2x a local one in the cores (A's relay out about one local consumer, B's relay
//! in plus its consumer another), before the kernel's send and receive of the relay datagram.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringsfu::dtls::Fingerprint;
use ringsfu::media::{CoreSettings, MediaCore, MediaStats, PeerId, RelayPlan};
use ringsfu::shard::{ShardCore, TxQueue};
use ringsfu::srtp::SrtpContext;

#[path = "../tests/core_peer/mod.rs"]
mod core_peer;
use core_peer::{meta, peer_addr};

const PUB_SSRC: u32 = 0x1000_0000;
const PAYLOAD: usize = 1000;

fn node(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)), 40000)
}

fn core(n: u8, ctx: &ringsfu::dtls::DtlsContext) -> (MediaCore, TxQueue) {
    let stats = Arc::new(MediaStats::default());
    (
        MediaCore::new(node(n), ctx.clone(), CoreSettings::default(), stats, Instant::now()),
        TxQueue::new(256),
    )
}

/// Subscriber `id` of `publisher`, one video leg.
fn subscribe(core: &mut MediaCore, tx: &mut TxQueue, id: u64, publisher: u64, fp: Fingerprint) {
    let leg = vec![core_peer::video_leg(0x2000_0000 + id as u32)];
    core_peer::add_subscriber(core, Instant::now(), tx, id, publisher, fp, leg, None);
}

/// Node A (a connected publisher, plus a local subscriber or a relay out to node B) and node B
/// (a relay in with one connected subscriber) when `relay`.
struct Setup {
    a: (MediaCore, TxQueue),
    b: (MediaCore, TxQueue),
    pub_out: SrtpContext,
}

fn setup(local_subscriber: bool, relay: bool) -> Setup {
    let ((server_ctx, server_fp), (client_ctx, client_fp)) = core_peer::contexts();
    let (mut a, mut tx_a) = core(1, &server_ctx);
    let (mut b, mut tx_b) = core(2, &server_ctx);
    let tracks = vec![core_peer::video_track(PUB_SSRC)];
    let now = Instant::now();
    core_peer::add_publisher(&mut a, now, &mut tx_a, 1, client_fp, tracks.clone());
    let (pub_out, _) = core_peer::connect(&mut a, node(1), &mut tx_a, &client_ctx, server_fp, 1);
    if local_subscriber {
        subscribe(&mut a, &mut tx_a, 2, 1, client_fp);
        drop(core_peer::connect(&mut a, node(1), &mut tx_a, &client_ctx, server_fp, 2));
    }
    if relay {
        let plan = RelayPlan::new(&tracks);
        a.handle_command(now, plan.command(PeerId(10), PeerId(1), node(2), None), &mut tx_a);
        b.handle_command(now, plan.offer().command(PeerId(20), node(1)), &mut tx_b);
        subscribe(&mut b, &mut tx_b, 3, 20, client_fp);
        drop(core_peer::connect(&mut b, node(2), &mut tx_b, &client_ctx, server_fp, 3));
    }
    while tx_a.pop_pending(|_, _| ()).is_some() {}
    while tx_b.pop_pending(|_, _| ()).is_some() {}
    Setup { a: (a, tx_a), b: (b, tx_b), pub_out }
}

fn plain(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 12 + PAYLOAD + 32];
    p[0] = 0x80;
    p[1] = 96;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p[8..12].copy_from_slice(&PUB_SSRC.to_be_bytes());
    p
}

fn relay(c: &mut Criterion) {
    let mut g = c.benchmark_group("relay");
    // Elements: packets delivered (to the subscriber, or onto the relay for `out`).
    g.throughput(Throughput::Elements(1));
    for (name, local, relay, to_b) in
        [("local", true, false, false), ("out", false, true, false), ("out+in", false, true, true)]
    {
        let mut s = setup(local, relay);
        let now = Instant::now();
        let mut seq = 0u16;
        let mut buf = vec![0u8; 2048];
        g.bench_function(name, |bench| {
            bench.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = plain(seq);
                    let len = s.pub_out.protect_rtp(&mut p, 12 + PAYLOAD, 12).expect("protect");
                    p.truncate(len);
                    p
                },
                |pkt| {
                    let (a, tx_a) = (&mut s.a.0, &mut s.a.1);
                    let (b, tx_b) = (&mut s.b.0, &mut s.b.1);
                    let len = pkt.len();
                    a.handle_datagram(now, meta(peer_addr(1), node(1), len), pkt, tx_a);
                    while let Some(n) = tx_a.pop_pending(|m, p| {
                        buf[..p.len()].copy_from_slice(p);
                        (m.dst == node(2)).then_some(p.len())
                    }) {
                        if let (Some(n), true) = (n, to_b) {
                            b.handle_datagram(now, meta(node(1), node(2), n), &mut buf[..n], tx_b);
                        }
                    }
                    while tx_b.pop_pending(|_, p| black_box(p.len())).is_some() {}
                },
                BatchSize::SmallInput,
            )
        });
        let delivered = if to_b { s.b.0.peer_count() } else { s.a.0.peer_count() };
        assert!(delivered >= 2, "{name}: the peers are there");
    }
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
