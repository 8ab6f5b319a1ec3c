//! TURN relay per datagram through the sans-IO `TurnServer` (no socket): ChannelData from a
//! client to its peer (`handle_client` answers the byte range of the receive buffer to send,
//! no copy) and a peer's datagram back to the client (`handle_peer` writes the ChannelData
//! header in front of the payload, in place). The allocation and channel are set up the real
//! way first: an Allocate with long-term credentials, then a ChannelBind.
//!
//! `cargo bench --bench turn -- --measurement-time 3 --warm-up-time 1`
//!
//! There is no webrtc-rs equivalent to put beside it: the `turn` crate's server is tokio-bound
//! (its relay runs inside per-allocation tasks over sockets), so it cannot be driven per
//! datagram like this.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringsfu::config::TurnConfig;
use ringsfu::turn::server::{FromClient, FromPeer, PEER_HEADROOM};
use ringsfu::turn::{Credentials, FiveTuple, Now, PeerPolicy, Transport, TurnServer, TurnSettings};
use ringsfu::wire::stun::{Class, Method, StunView, StunWriter};
use ringsfu::wire::stun_integrity::IntegrityKey;
use ringsfu::wire::turn_attr::TRANSPORT_UDP;

const REALM: &str = "ringsfu";
const NONCE_KEY: [u8; 32] = [9; 32];
const PAYLOAD: usize = 1200;
const CHANNEL: u16 = 0x4001;

fn peer() -> SocketAddr {
    "198.51.100.7:9000".parse().expect("addr")
}

fn request(
    method: Method,
    txid: u8,
    now: Now,
    five: &FiveTuple,
    add: impl FnOnce(&mut StunWriter<'_>),
) -> Vec<u8> {
    let nonce = Credentials::new(REALM, &[], None, NONCE_KEY).nonce(now.unix, five.client);
    let mut buf = vec![0u8; 1024];
    let mut w = StunWriter::new(&mut buf, Class::Request, method, &[txid; 12]).expect("stun");
    add(&mut w);
    w.username("alice").expect("username");
    w.realm(REALM).expect("realm");
    w.nonce(&nonce).expect("nonce");
    w.message_integrity(&IntegrityKey::long_term(b"alice", REALM.as_bytes(), b"pw"))
        .expect("integrity");
    w.fingerprint().expect("fingerprint");
    let n = w.finish();
    buf.truncate(n);
    buf
}

fn success(server: &mut TurnServer, now: Now, five: FiveTuple, req: &[u8]) {
    let mut out = vec![0u8; 1024];
    match server.handle_client(now, five, req, &mut out) {
        FromClient::Reply { len } => {
            let v = StunView::parse(&out[..len]).expect("reply parses");
            assert_eq!(v.class(), Class::SuccessResponse, "{:?}", v.error_code());
        }
        other => panic!("{other:?}"),
    }
}

/// A server with one allocation and channel 0x4001 bound to `peer()`; its relayed address.
fn setup(now: Now, five: FiveTuple) -> (TurnServer, SocketAddr) {
    let settings = TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().expect("ip")],
        relay_ports: 50000..50010,
        ..TurnSettings::default()
    };
    let creds = Credentials::new(REALM, &["alice:pw".into()], None, NONCE_KEY);
    let policy =
        PeerPolicy::from_config(&TurnConfig::default(), vec!["192.0.2.1".parse().expect("ip")]);
    let mut server = TurnServer::new(settings, creds, policy);
    let req = request(Method::ALLOCATE, 1, now, &five, |w| {
        w.requested_transport(TRANSPORT_UDP).expect("transport");
    });
    success(&mut server, now, five, &req);
    let relay = server.relayed_address(&five).expect("allocated");
    let req = request(Method::CHANNEL_BIND, 2, now, &five, |w| {
        w.channel_number(CHANNEL).expect("channel");
        w.xor_peer_address(peer()).expect("peer");
    });
    success(&mut server, now, five, &req);
    (server, relay)
}

fn relay(c: &mut Criterion) {
    let now = Now { mono: Instant::now(), unix: 1_800_000_000 };
    let five = FiveTuple {
        client: "203.0.113.9:5000".parse().expect("addr"),
        server: "192.0.2.1:3478".parse().expect("addr"),
        transport: Transport::Udp,
    };
    let (mut server, relayed) = setup(now, five);
    let mut g = c.benchmark_group("turn_relay");
    g.throughput(Throughput::Elements(1));

    let mut cd = vec![0u8; 4 + PAYLOAD];
    cd[..2].copy_from_slice(&CHANNEL.to_be_bytes());
    cd[2..4].copy_from_slice(&(PAYLOAD as u16).to_be_bytes());
    let mut out = vec![0u8; 1024];
    g.bench_function("channel_data_client_to_peer", |b| {
        b.iter(|| {
            let r = server.handle_client(now, five, black_box(&cd), &mut out);
            debug_assert!(matches!(r, FromClient::Relay { .. }));
            black_box(r)
        })
    });

    let mut buf = vec![0x55u8; PEER_HEADROOM + PAYLOAD + 4];
    let payload = PEER_HEADROOM..PEER_HEADROOM + PAYLOAD;
    g.bench_function("peer_to_client_channel_data", |b| {
        b.iter(|| {
            let r = server.handle_peer(now, relayed, peer(), &mut buf, payload.clone());
            debug_assert!(matches!(r, FromPeer::ToClient { .. }));
            black_box(r)
        })
    });
    // What a media shard hosting TURN asks for every packet its media core sends (in-process
    // delivery on, `TurnShard::relay_from_media`): is the destination one of our relayed
    // addresses? Nearly always not: a subscriber's own address.
    let subscriber: SocketAddr = "198.51.100.20:50003".parse().expect("addr");
    g.bench_function("media_egress_not_a_relay", |b| {
        b.iter(|| black_box(server.has_relay(black_box(subscriber))))
    });
    g.finish();
}

criterion_group!(benches, relay);
criterion_main!(benches);
