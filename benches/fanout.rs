//! One publisher packet fanned out to 1, 10 and 100 subscribers inside a media shard core
//! (`MediaCore::handle_datagram`, no socket), beside the same work done with the webrtc-rs
//! crates.
//!
//! `cargo bench --bench fanout -- --measurement-time 3 --warm-up-time 1`
//!
//! - `fanout/<n>/ringsfu`: an SRTP video packet (12-byte header, 1000-byte payload) from a
//!   connected publisher into `MediaCore::handle_datagram`: demux, address lookup, SRTP
//!   unprotect in place, track lookup, receive statistics, then per subscriber a rewritten
//!   header and the payload encrypted into a `TxQueue` slot; the queue is drained after each
//!   packet, as the shell does once per turn. The peers are brought up the real way, through
//!   the core's public API: an authenticated ICE check with USE-CANDIDATE and a full DTLS
//!   handshake against a client `DtlsEndpoint`, in memory. The profile is what the server
//!   selects from a client offering all three: AEAD_AES_128_GCM.
//! - `fanout/<n>/webrtc_rs`: the same steps with `webrtc-srtp` and `rtp`: `decrypt_rtp`, then
//!   per subscriber `Packet::unmarshal`, header rewrite, `marshal` and `encrypt_rtp` with that
//!   subscriber's context (no ICE/address lookup and no statistics: a lower bound for a
//!   webrtc-rs based SFU).
//!
//! The protected input packet is produced in the (untimed) setup of each iteration.
//!
//! Before the 100-subscriber group it prints the heap bytes the core keeps per connected
//! subscriber leg (live bytes after adding and connecting 100 subscribers, minus before,
//! divided by 100; the client-side objects of the benchmark are excluded).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringsfu::media::{CoreSettings, InTrack, MediaCore};
use ringsfu::shard::{ShardCore, TxQueue};
use ringsfu::srtp::SrtpContext;
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;
use webrtc_util::marshal::{Marshal, Unmarshal};

/// Live heap bytes, to report the core's memory per subscriber leg.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        // SAFETY: same layout, forwarded.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as i64 - l.size() as i64, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[path = "../tests/core_peer/mod.rs"]
mod core_peer;
use core_peer::peer_addr;

const PAYLOAD: usize = 1000;
const PUB_SSRC: u32 = 0x1111_0000;
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

fn video_in() -> InTrack {
    core_peer::video_track(PUB_SSRC)
}

/// A core with one connected publisher and `n` connected subscribers; the publisher's
/// client-side outbound SRTP context.
fn setup(n: u32) -> (MediaCore, TxQueue, SrtpContext) {
    let now = Instant::now();
    let ((server_ctx, server_fp), (client_ctx, client_fp)) = core_peer::contexts();
    let mut core = MediaCore::new(
        SERVER,
        server_ctx,
        CoreSettings::default(),
        Arc::new(Default::default()),
        now,
    );
    let mut tx = TxQueue::new(n as usize + 64);
    core_peer::add_publisher(&mut core, now, &mut tx, 0, client_fp, vec![video_in()]);
    let (pub_out, _) = core_peer::connect(&mut core, SERVER, &mut tx, &client_ctx, server_fp, 0);
    let live0 = LIVE.load(Ordering::Relaxed);
    for i in 1..=n {
        let leg = vec![core_peer::video_leg(0x2000_0000 + i)];
        core_peer::add_subscriber(&mut core, now, &mut tx, u64::from(i), 0, client_fp, leg, None);
        // The client's SRTP contexts are dropped here; only the core's state stays.
        drop(core_peer::connect(&mut core, SERVER, &mut tx, &client_ctx, server_fp, i));
    }
    while core.poll_event().is_some() {}
    let per_leg = (LIVE.load(Ordering::Relaxed) - live0) / i64::from(n.max(1));
    if n >= 100 {
        println!("fanout/{n}: MediaCore keeps {per_leg} heap bytes per connected subscriber leg");
    }
    while tx.pop_pending(|_, _| ()).is_some() {}
    (core, tx, pub_out)
}

fn plain(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; 12 + PAYLOAD];
    p[0] = 0x80;
    p[1] = 96;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p[8..12].copy_from_slice(&PUB_SSRC.to_be_bytes());
    for (i, b) in p[12..].iter_mut().enumerate() {
        *b = (i * 13) as u8;
    }
    p
}

fn theirs(k: u8) -> Context {
    let key: Vec<u8> = (k..k + 16).collect();
    let salt: Vec<u8> = (k..k + 12).collect();
    Context::new(&key, &salt, ProtectionProfile::AeadAes128Gcm, None, None).expect("context")
}

fn fanout(c: &mut Criterion) {
    for n in [1u32, 10, 100] {
        let mut g = c.benchmark_group(format!("fanout/{n}"));
        // Elements: packets sent (one in, n out).
        g.throughput(Throughput::Elements(u64::from(n)));

        let (mut core, mut tx, mut pub_out) = setup(n);
        let now = Instant::now();
        let src = peer_addr(0);
        let mut seq = 0u16;
        g.bench_function("ringsfu", |b| {
            b.iter_batched_ref(
                || {
                    seq = seq.wrapping_add(1);
                    let mut p = plain(seq);
                    p.resize(12 + PAYLOAD + 32, 0);
                    let len = pub_out.protect_rtp(&mut p, 12 + PAYLOAD, 12).expect("protect");
                    p.truncate(len);
                    p
                },
                |pkt| {
                    let len = pkt.len();
                    core.handle_datagram(now, core_peer::meta(src, SERVER, len), pkt, &mut tx);
                    while tx.pop_pending(|_, b| black_box(b.len())).is_some() {}
                },
                BatchSize::SmallInput,
            )
        });
        let st = core.peer_count();
        assert_eq!(st, n as usize + 1);

        let mut pub_tx = theirs(1);
        let mut pub_rx = theirs(1);
        let mut subs: Vec<Context> = (0..n).map(|i| theirs(2 + (i % 100) as u8)).collect();
        let mut seq = 0u16;
        g.bench_function("webrtc_rs", |b| {
            b.iter_batched(
                || {
                    seq = seq.wrapping_add(1);
                    pub_tx.encrypt_rtp(&plain(seq)).expect("encrypt")
                },
                |pkt: Bytes| {
                    let dec = pub_rx.decrypt_rtp(&pkt).expect("decrypt");
                    for (i, s) in subs.iter_mut().enumerate() {
                        let mut r = dec.clone();
                        let mut p = rtp::packet::Packet::unmarshal(&mut r).expect("rtp");
                        p.header.ssrc = 0x2000_0000 + i as u32;
                        p.header.sequence_number = p.header.sequence_number.wrapping_add(17);
                        p.header.timestamp = p.header.timestamp.wrapping_add(99);
                        let out = p.marshal().expect("marshal");
                        black_box(s.encrypt_rtp(&out).expect("encrypt"));
                    }
                },
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
