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
use ringsfu::dtls::{DtlsCert, DtlsConfig, DtlsContext, DtlsEndpoint, DtlsEvent, DtlsRole};
use ringsfu::media::{CoreSettings, IceParams, InTrack, MediaCore, OutTrack, PeerId, ShardCommand};
use ringsfu::sdp::{ExtIds, MediaKind};
use ringsfu::shard::{RecvMeta, ShardCore, TxQueue};
use ringsfu::srtp::SrtpContext;
use ringsfu::wire::{Class, IntegrityKey, StunWriter, stun::Method};
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

const PAYLOAD: usize = 1000;
const PUB_SSRC: u32 = 0x1111_0000;
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);

fn peer_addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 20, (i / 250) as u8, (i % 250 + 1) as u8)), 5000)
}

fn meta(src: SocketAddr, len: usize) -> RecvMeta {
    RecvMeta {
        src,
        dst_ip: Some(SERVER.ip()),
        dst_port: SERVER.port(),
        socket: ringsfu::shard::SocketId::MAIN,
        len,
        stride: len,
    }
}

fn ice(i: u32) -> IceParams {
    IceParams {
        local_ufrag: format!("srv{i}"),
        local_pwd: format!("server-password-{i:08}"),
        remote_ufrag: format!("cli{i}"),
    }
}

/// ICE check + DTLS handshake of peer `i` through the core; returns the client's SRTP
/// `(outbound, inbound)` contexts.
fn connect(
    core: &mut MediaCore,
    tx: &mut TxQueue,
    client_ctx: &DtlsContext,
    server_fp: ringsfu::dtls::Fingerprint,
    i: u32,
) -> (SrtpContext, SrtpContext) {
    let now = Instant::now();
    let addr = peer_addr(i);
    let p = ice(i);
    let mut buf = [0u8; 512];
    let key = IntegrityKey::short_term(p.local_pwd.as_bytes());
    let txid = [i as u8; 12];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &txid).expect("stun");
    w.username(&format!("{}:{}", p.local_ufrag, p.remote_ufrag))
        .and_then(|w| w.priority(1))
        .and_then(|w| w.ice_controlling(7))
        .and_then(|w| w.use_candidate())
        .and_then(|w| w.message_integrity(&key))
        .and_then(|w| w.fingerprint())
        .expect("stun attributes");
    let n = w.finish();
    core.handle_datagram(now, meta(addr, n), &mut buf[..n], tx);
    while tx.pop_pending(|_, _| ()).is_some() {}
    let mut client = DtlsEndpoint::new(client_ctx, DtlsRole::Client, now, server_fp);
    let mut out = vec![0u8; 2048];
    for _ in 0..50 {
        while let Some(n) = client.poll_transmit(&mut out) {
            core.handle_datagram(now, meta(addr, n), &mut out[..n], tx);
        }
        let mut replies = Vec::new();
        while let Some(r) = tx.pop_pending(|m, b| (m.dst == addr).then(|| b.to_vec())) {
            replies.extend(r);
        }
        for r in replies {
            client.handle_packet(now, &r);
        }
        while let Some(ev) = client.poll_event() {
            if let DtlsEvent::Connected { keying_material, .. } = ev {
                return SrtpContext::from_dtls_keys(&keying_material, DtlsRole::Client)
                    .expect("srtp keys");
            }
        }
    }
    panic!("peer {i} did not connect");
}

fn video_in() -> InTrack {
    InTrack {
        kind: MediaKind::Video,
        mid: "1".into(),
        pt: 96,
        clock_rate: 90_000,
        rtx_pt: None,
        ssrc: Some(PUB_SSRC),
        rtx_ssrc: None,
        ext: ExtIds::default(),
        nack: false,
        pli: true,
        fir: false,
        remb: false,
        transport_cc: false,
    }
}

/// A core with one connected publisher and `n` connected subscribers; the publisher's
/// client-side outbound SRTP context.
fn setup(n: u32) -> (MediaCore, TxQueue, SrtpContext) {
    let now = Instant::now();
    let server_ctx =
        DtlsContext::new(DtlsCert::generate().expect("cert"), &DtlsConfig::default()).expect("ctx");
    let server_fp = *server_ctx.cert().fingerprint();
    let client_ctx =
        DtlsContext::new(DtlsCert::generate().expect("cert"), &DtlsConfig::default()).expect("ctx");
    let client_fp = *client_ctx.cert().fingerprint();
    let mut core = MediaCore::new(
        SERVER,
        server_ctx,
        CoreSettings::default(),
        Arc::new(Default::default()),
        now,
    );
    let mut tx = TxQueue::new(n as usize + 64);
    core.handle_command(
        now,
        ShardCommand::AddPublisher {
            id: PeerId(0),
            ice: ice(0),
            remote_fingerprint: client_fp,
            tracks: vec![video_in()],
        },
        &mut tx,
    );
    let (pub_out, _) = connect(&mut core, &mut tx, &client_ctx, server_fp, 0);
    let live0 = LIVE.load(Ordering::Relaxed);
    for i in 1..=n {
        core.handle_command(
            now,
            ShardCommand::AddSubscriber {
                id: PeerId(u64::from(i)),
                publisher: PeerId(0),
                ice: ice(i),
                remote_fingerprint: client_fp,
                dtls_role: DtlsRole::Server,
                tracks: vec![OutTrack {
                    source: 0,
                    kind: MediaKind::Video,
                    mid: "1".into(),
                    pt: 96,
                    ssrc: 0x2000_0000 + i,
                    rtx: None,
                    ext: ExtIds::default(),
                }],
                origin: None,
            },
            &mut tx,
        );
        // The client's SRTP contexts are dropped here; only the core's state stays.
        drop(connect(&mut core, &mut tx, &client_ctx, server_fp, i));
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
                    core.handle_datagram(now, meta(src, len), pkt, &mut tx);
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
