//! The media core without sockets: a virtual clock, datagrams built here, the `TxQueue` read
//! back. Covers routing by ICE ufrag and authenticated address, the drop counters, and what a
//! failed transport frees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::dtls::{DtlsCert, DtlsConfig, DtlsContext};
use crate::ice::CONSENT_TIMEOUT;
use crate::sdp::{ExtIds, MediaKind};
use crate::shard::{RecvMeta, ShardCore, SocketId, TxQueue};
use crate::wire::stun::{Class, Method, StunView, StunWriter};
use crate::wire::stun_integrity::IntegrityKey;

const SHARD: &str = "127.0.0.1:40000";

fn core() -> (MediaCore, Arc<MediaStats>, Instant) {
    let ctx = DtlsContext::new(DtlsCert::generate().expect("cert"), &DtlsConfig::default())
        .expect("dtls");
    let stats = Arc::new(MediaStats::default());
    let t0 = Instant::now();
    let core =
        MediaCore::new(SHARD.parse().unwrap(), ctx, CoreSettings::default(), stats.clone(), t0);
    (core, stats, t0)
}

fn ice(ufrag: &str) -> IceParams {
    IceParams {
        local_ufrag: ufrag.into(),
        local_pwd: format!("{ufrag}-password-0123456789"),
        remote_ufrag: "brws".into(),
    }
}

fn fp() -> crate::dtls::Fingerprint {
    crate::dtls::Fingerprint::sha256(&[7u8; 32]).expect("fingerprint")
}

fn video_track() -> InTrack {
    InTrack {
        kind: MediaKind::Video,
        mid: "1".into(),
        pt: 96,
        clock_rate: 90_000,
        rtx_pt: Some(97),
        ssrc: Some(1111),
        rtx_ssrc: Some(2222),
        ext: ExtIds::default(),
        nack: true,
        pli: true,
        fir: false,
        remb: true,
        transport_cc: false,
        codec: crate::wire::codec::Codec::Vp8,
        rids: Vec::new(),
    }
}

fn meta(src: SocketAddr, len: usize) -> RecvMeta {
    RecvMeta { src, dst_ip: None, dst_port: 40000, socket: SocketId::MAIN, len, stride: len }
}

/// A nominating Binding request from the browser, signed with `pwd`.
fn binding(ufrag: &str, pwd: &str, txid: u8) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &[txid; 12]).unwrap();
    w.username(&format!("{ufrag}:brws")).unwrap();
    w.priority(0x6e7f_1eff).unwrap();
    w.ice_controlling(7).unwrap();
    w.use_candidate().unwrap();
    w.message_integrity(&IntegrityKey::short_term(pwd.as_bytes())).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn deliver(
    core: &mut MediaCore,
    now: Instant,
    from: SocketAddr,
    mut pkt: Vec<u8>,
    tx: &mut TxQueue,
) {
    let m = meta(from, pkt.len());
    core.handle_datagram(now, m, &mut pkt, tx);
}

fn rtp(ssrc: u32, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0u8; 40]);
    p
}

#[test]
fn checks_route_by_ufrag_and_bad_input_is_counted() {
    let (mut core, stats, t0) = core();
    let mut tx = TxQueue::new(64);
    let p = ice("pubA");
    core.handle_command(
        t0,
        ShardCommand::AddPublisher {
            id: PeerId(1),
            ice: p.clone(),
            remote_fingerprint: fp(),
            tracks: vec![video_track()],
        },
        &mut tx,
    );
    let browser: SocketAddr = "127.0.0.1:50000".parse().unwrap();

    // RTP from an address no check came from: dropped.
    deliver(&mut core, t0, browser, rtp(1111, 1), &mut tx);
    assert_eq!(stats.drops(MediaDrop::UnknownSource), 1);

    // A check for an unknown ufrag, and one with a wrong password.
    deliver(&mut core, t0, browser, binding("nope", &p.local_pwd, 1), &mut tx);
    assert_eq!(stats.drops(MediaDrop::StunUnknown), 1);
    deliver(&mut core, t0, browser, binding("pubA", "wrong-password-0123456789", 2), &mut tx);
    assert_eq!(stats.drops(MediaDrop::StunRejected), 1);
    // The wrong password got a 401 (no integrity), nothing was registered.
    let reply = tx.pop_pending(|m, b| (m.dst, b.to_vec())).expect("401 reply");
    assert_eq!(reply.0, browser);
    assert_eq!(StunView::parse(&reply.1).unwrap().class(), Class::ErrorResponse);

    // The good check is answered with success and registers the address...
    deliver(&mut core, t0, browser, binding("pubA", &p.local_pwd, 3), &mut tx);
    let reply = tx.pop_pending(|m, b| (m.dst, b.to_vec())).expect("success reply");
    assert_eq!(StunView::parse(&reply.1).unwrap().class(), Class::SuccessResponse);
    assert_eq!(stats.snapshot().stun_checks, 1);
    // ...so its RTP now gets as far as "no keys yet".
    deliver(&mut core, t0, browser, rtp(1111, 2), &mut tx);
    assert_eq!(stats.drops(MediaDrop::NotConnected), 1);

    // Garbage of every class: counted, never a panic.
    for g in [vec![], vec![0xFF; 3], vec![0x00; 10], vec![22, 254, 253, 0], vec![0x80, 200, 0, 1]] {
        deliver(&mut core, t0, browser, g, &mut tx);
    }
    let snap = stats.snapshot();
    assert!(snap.drops.iter().sum::<u64>() >= 8, "{snap:?}");
    assert_eq!(snap.publishers, 1);
}

#[test]
fn consent_expiry_removes_a_subscriber_and_a_vanished_publisher() {
    let (mut core, stats, t0) = core();
    let mut tx = TxQueue::new(64);
    let (pi, si) = (ice("pubB"), ice("subB"));
    core.handle_command(
        t0,
        ShardCommand::AddPublisher {
            id: PeerId(1),
            ice: pi.clone(),
            remote_fingerprint: fp(),
            tracks: vec![video_track()],
        },
        &mut tx,
    );
    core.handle_command(
        t0,
        ShardCommand::AddSubscriber {
            id: PeerId(2),
            publisher: PeerId(1),
            ice: si.clone(),
            remote_fingerprint: fp(),
            dtls_role: crate::dtls::DtlsRole::Server,
            tracks: vec![OutTrack {
                source: 0,
                kind: MediaKind::Video,
                mid: "0".into(),
                pt: 96,
                ssrc: 5555,
                rtx: Some((97, 6666)),
                ext: ExtIds::default(),
            }],
            origin: None,
        },
        &mut tx,
    );
    assert_eq!(core.peer_count(), 2);
    // A subscriber of an unknown publisher is refused.
    core.handle_command(
        t0,
        ShardCommand::AddSubscriber {
            id: PeerId(3),
            publisher: PeerId(99),
            ice: ice("subC"),
            remote_fingerprint: fp(),
            dtls_role: crate::dtls::DtlsRole::Server,
            tracks: vec![],
            origin: None,
        },
        &mut tx,
    );
    assert_eq!(
        core.poll_event(),
        Some(ShardEvent::Rejected { id: PeerId(3), reason: "publisher not found" })
    );

    let (pa, sa): (SocketAddr, SocketAddr) =
        ("127.0.0.1:50001".parse().unwrap(), "127.0.0.1:50002".parse().unwrap());
    deliver(&mut core, t0, pa, binding("pubB", &pi.local_pwd, 1), &mut tx);
    deliver(&mut core, t0, sa, binding("subB", &si.local_pwd, 2), &mut tx);
    assert_eq!(stats.snapshot().stun_checks, 2);

    // No consent refresh for 30 s: both transports fail, driven only by the timer.
    let mut now = t0;
    let end = t0 + CONSENT_TIMEOUT + Duration::from_secs(2);
    while now < end {
        // No timer once every peer is gone.
        let Some(at) = core.poll_timeout() else { break };
        now = at.max(now + Duration::from_millis(20));
        core.handle_timeout(now, &mut tx);
        while tx.pop_pending(|_, _| ()).is_some() {}
    }
    let mut evs = Vec::new();
    while let Some(e) = core.poll_event() {
        evs.push(e);
    }
    assert!(
        evs.contains(&ShardEvent::Failed { id: PeerId(2), reason: "ICE consent expired" }),
        "{evs:?}"
    );
    // The subscriber leg is gone, and so is the publisher that vanished, with its tracks.
    assert!(
        evs.contains(&ShardEvent::Vanished { id: PeerId(1), reason: "ICE consent expired" }),
        "{evs:?}"
    );
    assert_eq!(core.peer_count(), 0);
    assert_eq!(stats.snapshot().subscribers, 0);
    assert_eq!(stats.snapshot().publishers, 0);
    deliver(&mut core, now, pa, rtp(1111, 3), &mut tx);
    assert_eq!(stats.drops(MediaDrop::UnknownSource), 1);
    // Its old credentials no longer route.
    deliver(&mut core, now, pa, binding("pubB", &pi.local_pwd, 3), &mut tx);
    assert_eq!(stats.drops(MediaDrop::StunUnknown), 1);

    // A late reconnectStream finds no publisher.
    core.handle_command(
        now,
        ShardCommand::RestartPublisher {
            id: PeerId(1),
            ice: ice("pubR"),
            remote_fingerprint: fp(),
            same_connection: false,
            tracks: vec![video_track()],
        },
        &mut tx,
    );
    assert_eq!(
        core.poll_event(),
        Some(ShardEvent::Rejected { id: PeerId(1), reason: "publisher not found" })
    );
    assert_eq!(core.poll_timeout(), None, "no timer without peers");
}
