//! A peer brought up against a `MediaCore` in memory, the real way, through the core's public
//! API: an authenticated ICE check with USE-CANDIDATE, then a full DTLS handshake against a
//! client `DtlsEndpoint`. Shared by `tests/media_mesh_alloc.rs` and `benches/fanout.rs`.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use ringsfu::dtls::{
    DtlsCert, DtlsConfig, DtlsContext, DtlsEndpoint, DtlsEvent, DtlsRole, Fingerprint,
};
use ringsfu::media::{IceParams, InTrack, MediaCore, OutTrack};
use ringsfu::sdp::{ExtIds, MediaKind};
use ringsfu::shard::{RecvMeta, ShardCore, SocketId, TxQueue};
use ringsfu::srtp::SrtpContext;
use ringsfu::wire::{Class, IntegrityKey, StunWriter, stun::Method};

/// The address of client `i` (distinct loopback addresses, one port).
pub fn peer_addr(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 20, (i / 250) as u8, (i % 250 + 1) as u8)), 5000)
}

/// What the shell would say about a datagram from `src` to the core's socket `dst`.
pub fn meta(src: SocketAddr, dst: SocketAddr, len: usize) -> RecvMeta {
    RecvMeta {
        src,
        dst_ip: Some(dst.ip()),
        dst_port: dst.port(),
        socket: SocketId::MAIN,
        len,
        stride: len,
    }
}

/// The ICE credentials of client `i`'s transport.
pub fn ice(i: u32) -> IceParams {
    IceParams {
        local_ufrag: format!("srv{i}"),
        local_pwd: format!("server-password-{i:08}"),
        remote_ufrag: format!("cli{i}"),
    }
}

/// ICE check + DTLS handshake of client `i` through `core` (bound to `server`); returns the
/// client's SRTP `(outbound, inbound)` contexts.
pub fn connect(
    core: &mut MediaCore,
    server: SocketAddr,
    tx: &mut TxQueue,
    client_ctx: &DtlsContext,
    server_fp: Fingerprint,
    i: u32,
) -> (SrtpContext, SrtpContext) {
    let (out, inb, _) = connect_keeping_dtls(core, server, tx, client_ctx, server_fp, i);
    (out, inb)
}

/// As [`connect`], also returning the client's DTLS endpoint (to close it later).
pub fn connect_keeping_dtls(
    core: &mut MediaCore,
    server: SocketAddr,
    tx: &mut TxQueue,
    client_ctx: &DtlsContext,
    server_fp: Fingerprint,
    i: u32,
) -> (SrtpContext, SrtpContext, DtlsEndpoint) {
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
    core.handle_datagram(now, meta(addr, server, n), &mut buf[..n], tx);
    while tx.pop_pending(|_, _| ()).is_some() {}
    let mut client = DtlsEndpoint::new(client_ctx, DtlsRole::Client, now, server_fp);
    let mut out = vec![0u8; 2048];
    for _ in 0..50 {
        while let Some(n) = client.poll_transmit(&mut out) {
            core.handle_datagram(now, meta(addr, server, n), &mut out[..n], tx);
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
                let (out, inb) = SrtpContext::from_dtls_keys(&keying_material, DtlsRole::Client)
                    .expect("srtp keys");
                return (out, inb, client);
            }
        }
    }
    panic!("peer {i} did not connect");
}

/// A VP8 video track sent as `ssrc` (payload type 96, PLI, no RTX, no NACK or TWCC asked).
pub fn video_track(ssrc: u32) -> InTrack {
    InTrack {
        kind: MediaKind::Video,
        mid: "1".into(),
        pt: 96,
        clock_rate: 90_000,
        rtx_pt: None,
        ssrc: Some(ssrc),
        rtx_ssrc: None,
        ext: ExtIds::default(),
        nack: false,
        pli: true,
        fir: false,
        remb: false,
        transport_cc: false,
        codec: ringsfu::wire::codec::Codec::Vp8,
        rids: Vec::new(),
    }
}

/// The leg of `video_track` a subscriber receives as `ssrc`.
pub fn video_leg(ssrc: u32) -> OutTrack {
    OutTrack {
        source: 0,
        kind: MediaKind::Video,
        mid: "1".into(),
        pt: 96,
        ssrc,
        rtx: None,
        ext: ExtIds::default(),
    }
}

/// A server and a client DTLS context, each with its certificate's fingerprint.
pub fn contexts() -> ((DtlsContext, Fingerprint), (DtlsContext, Fingerprint)) {
    let ctx = || {
        let c = DtlsContext::new(DtlsCert::generate().expect("cert"), &DtlsConfig::default())
            .expect("ctx");
        let fp = *c.cert().fingerprint();
        (c, fp)
    };
    (ctx(), ctx())
}

/// Writes a protected video RTP packet (PT 96, 3000 ticks per seq, a payload of `payload` bytes
/// stamped with `seq`) into `buf`; its length.
pub fn video_packet(
    seq: u16,
    ssrc: u32,
    payload: usize,
    out: &mut ringsfu::srtp::SrtpContext,
    buf: &mut [u8],
) -> usize {
    buf[0] = 0x80;
    buf[1] = 96;
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    buf[8..12].copy_from_slice(&ssrc.to_be_bytes());
    for (i, b) in buf[12..12 + payload].iter_mut().enumerate() {
        *b = (i as u16 ^ seq) as u8;
    }
    out.protect_rtp(buf, 12 + payload, 12).expect("protect")
}

/// Adds publisher `id` (ICE as [`ice`]`(id)`, the client's certificate `fp`) with `tracks`.
pub fn add_publisher(
    core: &mut MediaCore,
    now: Instant,
    tx: &mut TxQueue,
    id: u64,
    fp: ringsfu::dtls::Fingerprint,
    tracks: Vec<InTrack>,
) {
    let cmd = ringsfu::media::ShardCommand::AddPublisher {
        id: ringsfu::media::PeerId(id),
        ice: ice(id as u32),
        remote_fingerprint: fp,
        tracks,
    };
    core.handle_command(now, cmd, tx);
}

/// Adds subscriber `id` of `publisher` (ICE as [`ice`]`(id)`, the client's certificate `fp`,
/// DTLS server) with `tracks`; `origin` when the publisher is on another shard.
#[allow(clippy::too_many_arguments)]
pub fn add_subscriber(
    core: &mut MediaCore,
    now: Instant,
    tx: &mut TxQueue,
    id: u64,
    publisher: u64,
    fp: ringsfu::dtls::Fingerprint,
    tracks: Vec<OutTrack>,
    origin: Option<ringsfu::media::Origin>,
) {
    let cmd = ringsfu::media::ShardCommand::AddSubscriber {
        id: ringsfu::media::PeerId(id),
        publisher: ringsfu::media::PeerId(publisher),
        ice: ice(id as u32),
        remote_fingerprint: fp,
        dtls_role: ringsfu::dtls::DtlsRole::Server,
        tracks,
        origin,
    };
    core.handle_command(now, cmd, tx);
}
