//! The TURN core on a virtual clock: every request type, errors, expiry, quotas and policy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::server::{DropReason, PEER_HEADROOM};
use super::*;
use crate::config::TurnConfig;
use crate::wire::channel_data::ChannelDataView;
use crate::wire::stun::{Class, Method, StunView, StunWriter, attr};
use crate::wire::stun_integrity::IntegrityKey;
use crate::wire::turn_attr::TRANSPORT_UDP;

const REALM: &str = "ringsfu";

struct Fx {
    server: TurnServer,
    t0: Instant,
    unix: u64,
    elapsed: Duration,
    five: FiveTuple,
    txid: u8,
}

fn peer() -> SocketAddr {
    "198.51.100.7:9000".parse().unwrap()
}

impl Fx {
    fn new(settings: TurnSettings) -> Fx {
        let creds = Credentials::new(
            REALM,
            &["alice:pw".into(), "bob:pw2".into()],
            Some("rest-secret"),
            [3; 32],
        );
        let policy =
            PeerPolicy::from_config(&TurnConfig::default(), vec!["192.0.2.1".parse().unwrap()]);
        Fx {
            server: TurnServer::new(settings, creds, policy),
            t0: Instant::now(),
            unix: 1_800_000_000,
            elapsed: Duration::ZERO,
            five: FiveTuple {
                client: "203.0.113.9:5000".parse().unwrap(),
                server: "192.0.2.1:3478".parse().unwrap(),
                transport: Transport::Udp,
            },
            txid: 0,
        }
    }

    /// A server relaying from 192.0.2.1 on `ports`, other settings at their defaults.
    fn with_ports(ports: std::ops::Range<u16>) -> Fx {
        Fx::new(TurnSettings {
            relay_ips: vec!["192.0.2.1".parse().unwrap()],
            relay_ports: ports,
            ..TurnSettings::default()
        })
    }

    fn default() -> Fx {
        Fx::with_ports(50000..50010)
    }

    fn now(&self) -> Now {
        Now { mono: self.t0 + self.elapsed, unix: self.unix + self.elapsed.as_secs() }
    }

    fn advance(&mut self, d: Duration) {
        self.elapsed += d;
        let now = self.now();
        self.server.handle_timeout(now);
    }

    /// Builds a request; `auth` = (username, password, nonce).
    fn request(
        &mut self,
        method: Method,
        auth: Option<(&str, &str, &str)>,
        add: impl FnOnce(&mut StunWriter<'_>),
    ) -> Vec<u8> {
        self.txid = self.txid.wrapping_add(1);
        let mut buf = vec![0u8; 1024];
        let mut w = StunWriter::new(&mut buf, Class::Request, method, &[self.txid; 12]).unwrap();
        add(&mut w);
        w.software("test client with a reasonably long software name").unwrap();
        if let Some((u, p, n)) = auth {
            w.username(u).unwrap();
            w.realm(REALM).unwrap();
            w.nonce(n).unwrap();
            w.message_integrity(&IntegrityKey::long_term(
                u.as_bytes(),
                REALM.as_bytes(),
                p.as_bytes(),
            ))
            .unwrap();
        }
        w.fingerprint().unwrap();
        let n = w.finish();
        buf.truncate(n);
        buf
    }

    fn send(&mut self, bytes: &[u8]) -> (FromClient, Vec<u8>) {
        let mut out = vec![0u8; 1024];
        let now = self.now();
        let five = self.five;
        let r = self.server.handle_client(now, five, bytes, &mut out);
        if let FromClient::Reply { len } = r {
            out.truncate(len);
        } else {
            out.clear();
        }
        (r, out)
    }

    /// The nonce from an unauthenticated Allocate.
    fn nonce(&mut self) -> String {
        let req = self.request(Method::ALLOCATE, None, |w| {
            w.requested_transport(TRANSPORT_UDP).unwrap();
        });
        let (_, resp) = self.send(&req);
        let v = StunView::parse(&resp).unwrap();
        assert_eq!(v.error_code().unwrap().unwrap().0, 401);
        assert_eq!(v.realm().unwrap(), Some(REALM));
        v.nonce().unwrap().unwrap().to_string()
    }

    fn allocate(&mut self, user: &str, pass: &str) -> SocketAddr {
        let nonce = self.nonce();
        let req = self.request(Method::ALLOCATE, Some((user, pass, &nonce)), |w| {
            w.requested_transport(TRANSPORT_UDP).unwrap();
        });
        let (r, resp) = self.send(&req);
        assert!(matches!(r, FromClient::Reply { .. }), "{r:?}");
        let v = StunView::parse(&resp).unwrap();
        assert_eq!(v.class(), Class::SuccessResponse, "{:?}", v.error_code());
        v.verify_integrity(&IntegrityKey::long_term(
            user.as_bytes(),
            REALM.as_bytes(),
            pass.as_bytes(),
        ))
        .unwrap();
        assert_eq!(v.xor_mapped_address().unwrap(), Some(self.five.client));
        assert_eq!(v.lifetime().unwrap(), Some(600));
        v.xor_relayed_address().unwrap().unwrap()
    }

    fn authed(&mut self, method: Method, add: impl FnOnce(&mut StunWriter<'_>)) -> StunViewOwned {
        let nonce = self.nonce_for_existing();
        let req = self.request(method, Some(("alice", "pw", &nonce)), add);
        let (r, resp) = self.send(&req);
        assert!(matches!(r, FromClient::Reply { .. }), "{r:?}");
        StunViewOwned(resp)
    }

    /// An authenticated CreatePermission for `peer`; the response.
    fn permit(&mut self, peer: SocketAddr) -> StunViewOwned {
        self.authed(Method::CREATE_PERMISSION, |w| {
            w.xor_peer_address(peer).unwrap();
        })
    }

    /// An Allocate asking for an even port and the next one held (EVEN-PORT with the R bit),
    /// with a fresh nonce; the response.
    fn allocate_even_pair(&mut self) -> StunViewOwned {
        let nonce = self.nonce();
        let req = self.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
            w.requested_transport(TRANSPORT_UDP).unwrap();
            w.even_port(true).unwrap();
        });
        StunViewOwned(self.send(&req).1)
    }

    /// An Allocate redeeming the RESERVATION-TOKEN `token`, with a fresh nonce; the response.
    fn redeem(&mut self, token: &[u8; 8]) -> StunViewOwned {
        let nonce = self.nonce();
        let req = self.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
            w.requested_transport(TRANSPORT_UDP).unwrap();
            w.reservation_token(token).unwrap();
        });
        StunViewOwned(self.send(&req).1)
    }

    fn nonce_for_existing(&mut self) -> String {
        // Any fresh nonce of ours works for this client.
        let now = self.now();
        Credentials::new(REALM, &[], None, [3; 32]).nonce(now.unix, self.five.client)
    }
}

/// A Send indication to `to` carrying `data`.
fn send_indication(to: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let mut w = StunWriter::new(&mut buf, Class::Indication, Method::SEND, &[9; 12]).unwrap();
    w.xor_peer_address(to).unwrap();
    w.data(data).unwrap();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// The media address of the `with_media` fixtures (a private address, as on a LAN deployment).
const MEDIA_IP: &str = "10.0.0.5";

impl Fx {
    /// The server's own addresses are 192.0.2.1 and [`MEDIA_IP`], whose `ports` are ringsfu's
    /// media ports (the default policy otherwise).
    fn with_media(&mut self, ports: std::ops::RangeInclusive<u16>) {
        let media_ip = MEDIA_IP.parse().unwrap();
        let own = vec!["192.0.2.1".parse().unwrap(), media_ip];
        self.server.set_policy(
            PeerPolicy::from_config(&TurnConfig::default(), own).with_media(vec![media_ip], ports),
        );
    }
}

struct StunViewOwned(Vec<u8>);
impl StunViewOwned {
    fn view(&self) -> StunView<'_> {
        StunView::parse(&self.0).unwrap()
    }
    fn code(&self) -> Option<u16> {
        self.view().error_code().unwrap().map(|(c, _)| c)
    }
}

#[test]
fn allocate_permission_send_and_data() {
    let mut fx = Fx::default();
    let relay = fx.allocate("alice", "pw");
    assert_eq!(relay.ip().to_string(), "192.0.2.1");
    assert!((50000..50010).contains(&relay.port()));
    assert_eq!(fx.server.poll_event(), Some(TurnEvent::RelayOpened(relay)));
    assert_eq!(fx.server.allocation_count(), 1);

    // Without a permission a Send indication is dropped.
    let ind = send_indication(peer(), b"hello peer");
    assert_eq!(fx.send(&ind).0, FromClient::Drop(DropReason::NoPermission));

    let r = fx.permit(peer());
    assert_eq!(r.view().class(), Class::SuccessResponse);
    let (r, _) = fx.send(&ind);
    let FromClient::Relay { relay: from, peer: to, range } = r else { panic!("{r:?}") };
    assert_eq!((from, to), (relay, peer()));
    assert_eq!(&ind[range], b"hello peer");

    // The peer answers: a Data indication written in place around the payload.
    let payload = b"hi client";
    let mut buf = vec![0u8; PEER_HEADROOM + payload.len() + 3];
    buf[PEER_HEADROOM..PEER_HEADROOM + payload.len()].copy_from_slice(payload);
    let now = fx.now();
    let r = fx.server.handle_peer(
        now,
        relay,
        peer(),
        &mut buf,
        PEER_HEADROOM..PEER_HEADROOM + payload.len(),
    );
    let FromPeer::ToClient { five, range } = r else { panic!("{r:?}") };
    assert_eq!(five, fx.five);
    let v = StunView::parse(&buf[range]).unwrap();
    assert_eq!((v.class(), v.method()), (Class::Indication, Method::DATA));
    assert_eq!(v.xor_peer_address().unwrap(), Some(peer()));
    assert_eq!(v.data(), Some(&payload[..]));

    // A peer without permission is dropped.
    let stranger: SocketAddr = "198.51.100.8:9000".parse().unwrap();
    let mut buf2 = buf.clone();
    let r =
        fx.server.handle_peer(now, relay, stranger, &mut buf2, PEER_HEADROOM..PEER_HEADROOM + 4);
    assert_eq!(r, FromPeer::Drop(DropReason::NoPermission));
}

#[test]
fn channels_both_ways_and_tcp_padding() {
    let mut fx = Fx::default();
    fx.five.transport = Transport::Tcp;
    let relay = fx.allocate("alice", "pw");
    let r = fx.authed(Method::CHANNEL_BIND, |w| {
        w.channel_number(0x4001).unwrap();
        w.xor_peer_address(peer()).unwrap();
    });
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    // Client -> peer.
    let mut cd = vec![0x40, 0x01, 0x00, 0x05];
    cd.extend_from_slice(b"abcde\0\0\0");
    let (r, _) = fx.send(&cd);
    assert_eq!(r, FromClient::Relay { relay, peer: peer(), range: 4..9 });
    // Peer -> client: ChannelData header in place, padded to 4 on TCP.
    let mut buf = vec![0xEEu8; PEER_HEADROOM + 8];
    buf[PEER_HEADROOM..PEER_HEADROOM + 5].copy_from_slice(b"vwxyz");
    let now = fx.now();
    let FromPeer::ToClient { range, .. } =
        fx.server.handle_peer(now, relay, peer(), &mut buf, PEER_HEADROOM..PEER_HEADROOM + 5)
    else {
        panic!()
    };
    assert_eq!(range.len(), 12);
    let v = ChannelDataView::parse(&buf[range.clone()]).unwrap();
    assert_eq!((v.channel(), v.data()), (0x4001, &b"vwxyz"[..]));
    assert_eq!(&buf[range.end - 3..range.end], &[0, 0, 0]);
    // Unknown channel, and rebinding the number to another peer.
    let (r, _) = fx.send(&[0x40, 0x02, 0x00, 0x00]);
    assert_eq!(r, FromClient::Drop(DropReason::NoChannel));
    let r = fx.authed(Method::CHANNEL_BIND, |w| {
        w.channel_number(0x4001).unwrap();
        w.xor_peer_address("198.51.100.9:1".parse().unwrap()).unwrap();
    });
    assert_eq!(r.code(), Some(400));
    let r = fx.authed(Method::CHANNEL_BIND, |w| {
        w.attribute(attr::CHANNEL_NUMBER, &[0x3f, 0xff, 0, 0]).unwrap();
        w.xor_peer_address(peer()).unwrap();
    });
    assert_eq!(r.code(), Some(400));
}

#[test]
fn authentication_failures() {
    let mut fx = Fx::default();
    let nonce = fx.nonce();
    let req = fx.request(Method::ALLOCATE, Some(("alice", "wrong", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    let (_, resp) = fx.send(&req);
    assert_eq!(StunViewOwned(resp).code(), Some(401));
    let req = fx.request(Method::ALLOCATE, Some(("mallory", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    let (_, resp) = fx.send(&req);
    assert_eq!(StunViewOwned(resp).code(), Some(401));
    assert_eq!(fx.server.counters.auth_failures, 2);
    // A nonce from long ago is stale: 438 with a new one.
    fx.elapsed += Duration::from_secs(601);
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    let (_, resp) = fx.send(&req);
    let v = StunViewOwned(resp);
    assert_eq!(v.code(), Some(438));
    assert!(v.view().nonce().unwrap().is_some());
    // A tiny Allocate gets the smallest challenge possible (no reason phrase): 52 bytes, the
    // constant floor of an unauthenticated answer.
    let mut tiny = vec![0u8; 28];
    let mut w = StunWriter::new(&mut tiny, Class::Request, Method::ALLOCATE, &[1; 12]).unwrap();
    w.requested_transport(TRANSPORT_UDP).unwrap();
    let n = w.finish();
    let (r, resp) = fx.send(&tiny[..n]);
    assert_eq!(r, FromClient::Reply { len: 52 });
    let v = StunViewOwned(resp);
    assert_eq!(v.code(), Some(401));
    assert!(v.view().nonce().unwrap().is_some());
    assert_eq!(fx.server.allocation_count(), 0);
    // Any other unauthenticated answer stays within its request: a bare request of an unknown
    // method (400 would be 28 bytes for 20) is dropped, never amplified.
    let mut bare = vec![0u8; 20];
    let n = StunWriter::new(&mut bare, Class::Request, Method(0x0fe), &[2; 12]).unwrap().finish();
    let (r, _) = fx.send(&bare[..n]);
    assert_eq!(r, FromClient::Drop(DropReason::Amplification));
}

#[test]
fn rest_api_credentials() {
    let mut fx = Fx::default();
    let unix = fx.now().unix;
    let (user, pass) = rest_credentials("rest-secret", "con_Abc", unix, 3600);
    fx.allocate(&user, &pass);
    let mut fx = Fx::default();
    let (user, pass) = rest_credentials("rest-secret", "con_Abc", unix - 7200, 3600);
    let nonce = fx.nonce();
    let req = fx.request(Method::ALLOCATE, Some((&user, &pass, &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(401), "expired REST credential");
}

#[test]
fn allocate_errors_retransmission_and_mismatch() {
    let mut fx = Fx::default();
    let nonce = fx.nonce();
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(6).unwrap();
    });
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(442));
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |_| {});
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(400));
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
        w.requested_address_family(crate::wire::turn_attr::AddressFamily::V6).unwrap();
    });
    assert_eq!(
        StunViewOwned(fx.send(&req).1).code(),
        Some(440),
        "no IPv6 relay address configured"
    );
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
        w.even_port(false).unwrap();
    });
    let (_, first) = fx.send(&req);
    let relay = StunViewOwned(first.clone()).view().xor_relayed_address().unwrap().unwrap();
    assert_eq!(relay.port() % 2, 0, "EVEN-PORT honoured");
    // The same request again (a retransmission) gets the same allocation.
    let (_, again) = fx.send(&req);
    assert_eq!(StunViewOwned(again).view().xor_relayed_address().unwrap(), Some(relay));
    // A new Allocate on the same 5-tuple is a mismatch.
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(437));
    // Refresh / CreatePermission from a tuple without allocation.
    fx.five.client = "203.0.113.9:5001".parse().unwrap();
    let r = fx.authed(Method::REFRESH, |_| {});
    assert_eq!(r.code(), Some(437));
}

#[test]
fn lifetimes_refresh_and_expiry() {
    let mut fx = Fx::default();
    let relay = fx.allocate("alice", "pw");
    fx.server.poll_event();
    fx.permit(peer());
    // Permissions last 300 s.
    fx.advance(Duration::from_secs(301));
    let mut buf = vec![0u8; PEER_HEADROOM + 4];
    let now = fx.now();
    assert_eq!(
        fx.server.handle_peer(now, relay, peer(), &mut buf, PEER_HEADROOM..PEER_HEADROOM + 4),
        FromPeer::Drop(DropReason::NoPermission)
    );
    // Refresh extends the allocation (asking for less than the default gets the default).
    let r = fx.authed(Method::REFRESH, |w| {
        w.lifetime(60).unwrap();
    });
    assert_eq!(r.view().lifetime().unwrap(), Some(600));
    let r = fx.authed(Method::REFRESH, |w| {
        w.lifetime(100_000).unwrap();
    });
    assert_eq!(r.view().lifetime().unwrap(), Some(3600), "capped at the maximum");
    fx.advance(Duration::from_secs(3599));
    assert_eq!(fx.server.allocation_count(), 1);
    fx.advance(Duration::from_secs(2));
    assert_eq!(fx.server.allocation_count(), 0);
    assert_eq!(fx.server.poll_event(), Some(TurnEvent::RelayClosed(relay)));
    assert_eq!(fx.server.counters.allocations_expired, 1);
    // Refresh with lifetime 0 deletes at once and frees the port.
    let relay = fx.allocate("alice", "pw");
    let r = fx.authed(Method::REFRESH, |w| {
        w.lifetime(0).unwrap();
    });
    assert_eq!(r.view().lifetime().unwrap(), Some(0));
    assert_eq!(fx.server.allocation_count(), 0);
    assert!(fx.server.poll_event().is_some());
    assert_eq!(fx.server.poll_event(), Some(TurnEvent::RelayClosed(relay)));
}

#[test]
fn policy_and_quotas() {
    let mut fx = Fx::new(TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().unwrap()],
        relay_ports: 50000..50003,
        max_allocations_per_user: 1,
        max_allocations: 2,
        ..TurnSettings::default()
    });
    fx.allocate("alice", "pw");
    for bad in ["127.0.0.1:1", "10.0.0.1:1", "192.0.2.1:1", "[2001:db8::1]:1"] {
        let r = fx.permit(bad.parse().unwrap());
        let want = if bad.starts_with('[') { 443 } else { 403 };
        assert_eq!(r.code(), Some(want), "{bad}");
    }
    // Per-user quota.
    fx.five.client = "203.0.113.9:6000".parse().unwrap();
    let nonce = fx.nonce();
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(486));
    fx.allocate("bob", "pw2");
    // Total quota.
    fx.five.client = "203.0.113.9:7000".parse().unwrap();
    let nonce = fx.nonce();
    let (user, pass) = rest_credentials("rest-secret", "x", fx.now().unix, 60);
    let req = fx.request(Method::ALLOCATE, Some((&user, &pass, &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(486));
}

/// The SFU's own media port (a private address here, as on a LAN deployment) is a legal peer:
/// permission, channel and Send indication; the same address's other ports are not.
#[test]
fn own_media_port_is_a_peer_and_only_it() {
    let mut fx = Fx::default();
    fx.with_media(40000..=40001);
    fx.allocate("alice", "pw");
    let media: SocketAddr = "10.0.0.5:40001".parse().unwrap();
    let api: SocketAddr = "10.0.0.5:4443".parse().unwrap();
    let r = fx.permit(media);
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    let r = fx.authed(Method::CHANNEL_BIND, |w| {
        w.channel_number(0x4001).unwrap();
        w.xor_peer_address(api).unwrap();
    });
    assert_eq!(r.code(), Some(403), "a channel to another port of the server");
    let r = fx.authed(Method::CHANNEL_BIND, |w| {
        w.channel_number(0x4001).unwrap();
        w.xor_peer_address(media).unwrap();
    });
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    let send = |to: SocketAddr| send_indication(to, b"stun check");
    assert!(matches!(fx.send(&send(media)).0, FromClient::Relay { peer, .. } if peer == media));
    assert!(matches!(
        fx.send(&send(api)).0,
        FromClient::Drop(DropReason::PeerDenied(policy::Denied::ServerAddress))
    ));
    // Other private addresses stay denied.
    let r = fx.permit("10.0.0.6:40001".parse().unwrap());
    assert_eq!(r.code(), Some(403));
}

#[test]
fn bandwidth_limit_per_user() {
    let mut fx = Fx::new(TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().unwrap()],
        relay_ports: 50000..50003,
        max_user_bandwidth: 1000,
        ..TurnSettings::default()
    });
    fx.allocate("alice", "pw");
    fx.authed(Method::CHANNEL_BIND, |w| {
        w.channel_number(0x4000).unwrap();
        w.xor_peer_address(peer()).unwrap();
    });
    let mut cd = vec![0x40, 0x00, 0x01, 0x90];
    cd.extend_from_slice(&[0u8; 400]);
    let mut passed = 0;
    for _ in 0..5 {
        if matches!(fx.send(&cd).0, FromClient::Relay { .. }) {
            passed += 1;
        }
    }
    assert_eq!(passed, 2, "1000 bytes/s lets two 400-byte packets through at once");
    fx.elapsed += Duration::from_secs(1);
    assert!(matches!(fx.send(&cd).0, FromClient::Relay { .. }));
}

#[test]
fn binding_on_the_turn_port_and_hostile_input() {
    let mut fx = Fx::default();
    let req = fx.request(Method::BINDING, None, |_| {});
    let (r, resp) = fx.send(&req);
    assert!(matches!(r, FromClient::Reply { .. }));
    let v = StunView::parse(&resp).unwrap();
    assert_eq!(v.xor_mapped_address().unwrap(), Some(fx.five.client));
    assert!(resp.len() <= req.len());
    let mut seed = 0xdead_beefu32;
    let base = fx.request(Method::ALLOCATE, Some(("alice", "pw", "AAAAAAAAAAAAAAAA")), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
        w.attribute(attr::EVEN_PORT, &[0]).unwrap();
    });
    for i in 0..20_000 {
        let mut b = base.clone();
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let cut = (seed as usize) % (b.len() + 1);
        b[(seed as usize >> 8) % base.len()] ^= seed as u8;
        b.truncate(if i % 3 == 0 { cut } else { b.len() });
        let _ = fx.send(&b);
        let mut pbuf = b.clone();
        pbuf.resize(pbuf.len().max(PEER_HEADROOM + 8), 0);
        let now = fx.now();
        let _ = fx.server.handle_peer(
            now,
            "192.0.2.1:50000".parse().unwrap(),
            peer(),
            &mut pbuf,
            PEER_HEADROOM..PEER_HEADROOM + 8,
        );
    }
}

#[test]
fn more_relay_addresses_give_more_allocations() {
    let mut fx = Fx::new(TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
        relay_ports: 50000..50002,
        ..TurnSettings::default()
    });
    let mut relays = Vec::new();
    for port in 6000..6004 {
        fx.five.client = SocketAddr::new(fx.five.client.ip(), port);
        relays.push(fx.allocate("alice", "pw"));
    }
    relays.sort();
    let want: Vec<SocketAddr> =
        ["192.0.2.1:50000", "192.0.2.1:50001", "192.0.2.2:50000", "192.0.2.2:50001"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
    assert_eq!(relays, want);
    // Every port of every address is taken: 508.
    fx.five.client = SocketAddr::new(fx.five.client.ip(), 6004);
    let nonce = fx.nonce();
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(508));
}

#[test]
fn bare_binding_is_answered_with_the_mapped_address_only() {
    let mut fx = Fx::default();
    let mut bare = vec![0u8; 20];
    let n = StunWriter::new(&mut bare, Class::Request, Method::BINDING, &[5; 12]).unwrap().finish();
    assert_eq!(n, 20);
    let (r, resp) = fx.send(&bare);
    assert_eq!(r, FromClient::Reply { len: 32 }, "20-byte request, 12-byte XOR-MAPPED-ADDRESS");
    let v = StunView::parse(&resp).unwrap();
    assert_eq!(v.class(), Class::SuccessResponse);
    assert_eq!(v.xor_mapped_address().unwrap(), Some(fx.five.client));
    // IPv6 client: 24 bytes of attribute.
    fx.five.client = "[2001:db8::9]:5000".parse().unwrap();
    let (r, _) = fx.send(&bare);
    assert_eq!(r, FromClient::Reply { len: 44 });
}

#[test]
fn smallest_coturn_allocate_gets_its_challenge() {
    // turnutils_uclient -c: REQUESTED-TRANSPORT, LIFETIME, REQUESTED-ADDRESS-FAMILY, FINGERPRINT.
    let mut fx = Fx::default();
    let mut buf = vec![0u8; 64];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &[8; 12]).unwrap();
    w.requested_transport(TRANSPORT_UDP).unwrap();
    w.lifetime(777).unwrap();
    w.attribute(attr::REQUESTED_ADDRESS_FAMILY, &[1, 0, 0, 0]).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    assert_eq!(n, 52);
    let (r, resp) = fx.send(&buf[..n]);
    assert!(matches!(r, FromClient::Reply { len } if len <= 52), "{r:?}");
    let v = StunView::parse(&resp).unwrap();
    assert_eq!(v.error_code().unwrap().unwrap().0, 401);
    assert!(v.nonce().unwrap().is_some() && v.realm().unwrap() == Some(REALM));
}

#[test]
fn even_port_reservation_token_and_its_expiry() {
    let mut fx = Fx::new(TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().unwrap()],
        relay_ports: 50001..50005, // 50001 is odd: the pair is 50002/50003
        token_key: 42,
        ..TurnSettings::default()
    });
    let r = fx.allocate_even_pair();
    let relay = r.view().xor_relayed_address().unwrap().unwrap();
    assert_eq!(relay.port(), 50002);
    let token = r.view().reservation_token().unwrap().expect("RESERVATION-TOKEN");
    // Another client redeems the token: it gets the held port 50003.
    fx.five.client = "203.0.113.9:5002".parse().unwrap();
    let r = fx.redeem(&token);
    assert_eq!(r.view().xor_relayed_address().unwrap().unwrap().port(), 50003);
    // A token is good once.
    fx.five.client = "203.0.113.9:5003".parse().unwrap();
    assert_eq!(fx.redeem(&token).code(), Some(508));
    // No even/odd pair left (50001, 50004): R bit -> 508.
    assert_eq!(fx.allocate_even_pair().code(), Some(508));
    // An unredeemed reservation returns its port to the pool after 30 s.
    let mut fx = Fx::with_ports(50002..50004);
    assert!(fx.allocate_even_pair().view().reservation_token().unwrap().is_some());
    fx.advance(Duration::from_secs(31));
    fx.five.client = "203.0.113.9:5009".parse().unwrap();
    let relay = fx.allocate("alice", "pw");
    assert_eq!(relay.port(), 50003, "the expired reservation's port is free again");
}

#[test]
fn an_unanswered_even_port_allocate_releases_its_reservation() {
    let mut fx = Fx::with_ports(50002..50006);
    let r = fx.allocate_even_pair();
    assert_eq!(r.view().xor_relayed_address().unwrap().unwrap().port(), 50002);
    let token = r.view().reservation_token().unwrap().expect("RESERVATION-TOKEN");
    // The shell found 50002 taken: the Allocate goes unanswered, so its token never reaches
    // the client, and the port it held (50003) is free again at once; 50002 sits out.
    fx.server.relay_port_taken("192.0.2.1:50002".parse().unwrap());
    let mut got = Vec::new();
    for k in 0..3 {
        fx.five.client = format!("203.0.113.9:{}", 7000 + k).parse().unwrap();
        got.push(fx.allocate("alice", "pw").port());
    }
    assert_eq!(got, vec![50004, 50005, 50003]);
    // The token names a port of this instance that is no longer reserved: refused, never a
    // second hand-out of a port in use or in the pool.
    fx.five.client = "203.0.113.9:7009".parse().unwrap();
    assert_eq!(fx.redeem(&token).code(), Some(508));
}

#[test]
fn a_redeemed_token_is_not_good_again_after_its_allocation_ends() {
    let mut fx = Fx::with_ports(50002..50004);
    let token = fx.allocate_even_pair().view().reservation_token().unwrap().unwrap();
    fx.five.client = "203.0.113.9:7100".parse().unwrap();
    let r = fx.redeem(&token);
    assert_eq!(r.view().xor_relayed_address().unwrap().unwrap().port(), 50003);
    // That allocation ends (Refresh 0): 50003 is back in the pool, so the token is spent.
    let refresh = fx.authed(Method::REFRESH, |w| {
        w.lifetime(0).unwrap();
    });
    assert_eq!(refresh.view().class(), Class::SuccessResponse);
    fx.five.client = "203.0.113.9:7101".parse().unwrap();
    assert_eq!(fx.redeem(&token).code(), Some(508));
}

#[test]
fn reservation_token_redeemed_on_another_instance() {
    // Two shards: same relay IP and token key, disjoint port slices.
    let settings = |ports: std::ops::Range<u16>| TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().unwrap()],
        relay_ports: ports,
        token_key: 7,
        ..TurnSettings::default()
    };
    let mut a = Fx::new(settings(50000..50004));
    let mut b = Fx::new(settings(50004..50008));
    let token = a.allocate_even_pair().view().reservation_token().unwrap().unwrap();
    // The RTCP socket of the pair hashed to shard b.
    b.five.client = "203.0.113.9:5001".parse().unwrap();
    let relay = b.redeem(&token).view().xor_relayed_address().unwrap().unwrap();
    assert_eq!(relay, "192.0.2.1:50001".parse().unwrap());
    // A forged token (one bit flipped) or a stale one is refused.
    for (t, wait) in [
        ([token[0], token[1], token[2] ^ 1, token[3], token[4], token[5], token[6], token[7]], 0),
        (token, 31),
    ] {
        b.five.client = SocketAddr::new(b.five.client.ip(), 5100 + wait);
        b.elapsed += Duration::from_secs(wait as u64);
        assert_eq!(b.redeem(&t).code(), Some(508));
    }
    // Ending b's allocation does not give shard a's port to b's pool.
    b.five.client = "203.0.113.9:5001".parse().unwrap();
    let r = b.authed(Method::REFRESH, |w| {
        w.lifetime(0).unwrap();
    });
    assert_eq!(r.view().lifetime().unwrap(), Some(0));
    for port in 6000..6004 {
        b.five.client = SocketAddr::new(b.five.client.ip(), port);
        assert!((50004..50008).contains(&b.allocate("alice", "pw").port()));
    }
}

/// The events the server queued, drained.
fn events(server: &mut TurnServer) -> Vec<TurnEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

#[test]
fn relay_sockets_open_lazily_with_in_process_delivery() {
    let mut fx = Fx::new(TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().unwrap()],
        relay_ports: 50000..50010,
        max_relay_sockets: 1,
        ..TurnSettings::default()
    });
    fx.with_media(40000..=40001);
    // This shard's media port is 40000; 40001 is another shard's.
    let here: SocketAddr = "10.0.0.5:40000".parse().unwrap();
    let there: SocketAddr = "10.0.0.5:40001".parse().unwrap();
    fx.server.set_in_process(vec![here]);
    let send = |to: SocketAddr| send_indication(to, b"stun check");

    // An allocation that only reaches this shard's media port never needs a socket, even
    // beyond `max_relay_sockets`.
    let relay = fx.allocate("alice", "pw");
    assert_eq!(
        events(&mut fx.server),
        vec![TurnEvent::RelayProbe(relay)],
        "no socket at Allocate, only a check of its port"
    );
    let r = fx.permit(here);
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    let r = fx.authed(Method::CHANNEL_BIND, |w| {
        w.channel_number(0x4001).unwrap();
        w.xor_peer_address(here).unwrap();
    });
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    assert!(matches!(fx.send(&send(here)).0, FromClient::Relay { peer, .. } if peer == here));
    assert_eq!(events(&mut fx.server), vec![], "in-process peers need no socket");
    assert_eq!(fx.server.relay_socket_count(), 0);
    let second = FiveTuple { client: "203.0.113.9:5001".parse().unwrap(), ..fx.five };
    let first = std::mem::replace(&mut fx.five, second);
    let relay2 = fx.allocate("alice", "pw");
    assert_eq!(fx.server.allocation_count(), 2);
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayProbe(relay2)]);

    // A datagram to another shard's media port goes through the kernel: the first one opens
    // the socket, and it is relayed (the shell binds before the turn's sends leave).
    fx.five = first;
    assert!(matches!(fx.send(&send(there)).0, FromClient::Relay { peer, .. } if peer == there));
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayOpened(relay)]);
    assert_eq!(fx.server.relay_socket_count(), 1);
    assert!(matches!(fx.send(&send(there)).0, FromClient::Relay { .. }));
    assert_eq!(events(&mut fx.server), vec![], "opened once");

    // The second allocation: a permission for an outside peer needs a socket, and the one
    // socket allowed is taken: 508, and no permission installed.
    fx.five = second;
    let r = fx.permit(peer());
    assert_eq!(r.code(), Some(508));
    assert_eq!(events(&mut fx.server), vec![]);
    // ...and a datagram to the other shard's media port is dropped, counted by reason.
    fx.permit(here);
    assert!(matches!(fx.send(&send(there)).0, FromClient::Drop(DropReason::NoRelaySocket)));

    // The first allocation's end frees its socket; the second may then open one for its
    // outside peer.
    fx.five = first;
    let r = fx.authed(Method::REFRESH, |w| {
        w.lifetime(0).unwrap();
    });
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayClosed(relay)]);
    assert_eq!(fx.server.relay_socket_count(), 0);
    fx.five = second;
    let r = fx.permit(peer());
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayOpened(relay2)]);
    // Its expiry closes the socket.
    fx.advance(Duration::from_secs(601));
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayClosed(relay2)]);
    assert_eq!(fx.server.relay_socket_count(), 0);
}

#[test]
fn without_in_process_delivery_every_allocation_holds_a_socket() {
    let mut fx = Fx::new(TurnSettings {
        relay_ips: vec!["192.0.2.1".parse().unwrap()],
        relay_ports: 50000..50010,
        max_relay_sockets: 1,
        ..TurnSettings::default()
    });
    let relay = fx.allocate("alice", "pw");
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayOpened(relay)]);
    fx.five.client = "203.0.113.9:5001".parse().unwrap();
    let nonce = fx.nonce_for_existing();
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    let (_, resp) = fx.send(&req);
    assert_eq!(StunViewOwned(resp).code(), Some(486), "over the socket budget");
}

#[test]
fn a_lazy_socket_that_cannot_bind_leaves_the_allocation_in_process_only() {
    let mut fx = Fx::default();
    fx.with_media(40000..=40000);
    let here: SocketAddr = "10.0.0.5:40000".parse().unwrap();
    fx.server.set_in_process(vec![here]);
    let relay = fx.allocate("alice", "pw");
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayProbe(relay)]);
    let r = fx.permit(peer());
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    assert_eq!(events(&mut fx.server), vec![TurnEvent::RelayOpened(relay)]);
    // The shell reports the port taken (another process): the allocation stays.
    assert!(!fx.server.relay_open_failed(relay));
    assert_eq!(fx.server.allocation_count(), 1);
    assert_eq!(fx.server.relay_socket_count(), 0);
    // The client's retransmission (and any later request needing the socket) gets 508; no
    // second attempt to open it.
    let r = fx.permit(peer());
    assert_eq!(r.code(), Some(508));
    assert_eq!(events(&mut fx.server), vec![]);
    // In-process peers still work.
    fx.permit(here);
    let ind = send_indication(here, b"stun check");
    assert!(matches!(fx.send(&ind).0, FromClient::Relay { peer, .. } if peer == here));
    // Its end emits no RelayClosed (no socket was open).
    fx.advance(Duration::from_secs(601));
    assert_eq!(fx.server.allocation_count(), 0);
    assert_eq!(events(&mut fx.server), vec![]);
}

#[test]
fn a_relayed_port_found_taken_sits_out_before_it_is_handed_out_again() {
    let mut fx = Fx::with_ports(50000..50002);
    let clients: Vec<SocketAddr> =
        (0..3).map(|k| format!("203.0.113.9:{}", 6000 + k).parse().unwrap()).collect();
    let relay = fx.allocate("alice", "pw");
    assert_eq!(relay.port(), 50000);
    // The shell could not bind it: the allocation ends and the port is not reused at once.
    assert!(fx.server.relay_open_failed(relay));
    assert_eq!(fx.server.allocation_count(), 0);
    fx.five.client = clients[0];
    assert_eq!(fx.allocate("alice", "pw").port(), 50001);
    fx.five.client = clients[1];
    let nonce = fx.nonce_for_existing();
    let req = fx.request(Method::ALLOCATE, Some(("alice", "pw", &nonce)), |w| {
        w.requested_transport(TRANSPORT_UDP).unwrap();
    });
    assert_eq!(StunViewOwned(fx.send(&req).1).code(), Some(508), "the taken port sits out");
    // A minute of sweeps later it is back.
    for _ in 0..61 {
        fx.advance(Duration::from_secs(1));
    }
    fx.five.client = clients[2];
    assert_eq!(fx.allocate("alice", "pw").port(), 50000);
}

#[test]
fn a_participants_allocations_end_with_it() {
    let mut fx = Fx::with_ports(50000..50010);
    let unix = fx.now().unix;
    let (ann, ann_pw) = rest_credentials("rest-secret", "con_Ann", unix, 3600);
    let (bob, bob_pw) = rest_credentials("rest-secret", "con_Bob", unix, 3600);
    let a1 = fx.allocate(&ann, &ann_pw);
    let base = fx.five;
    fx.five = FiveTuple { client: "203.0.113.9:5001".parse().unwrap(), ..base };
    let a2 = fx.allocate(&ann, &ann_pw);
    fx.five = FiveTuple { client: "203.0.113.9:5002".parse().unwrap(), ..base };
    let b1 = fx.allocate(&bob, &bob_pw);
    assert_eq!(fx.server.allocation_count(), 3);
    // Ann is gone: both of hers end, Bob's stays; a name that is only a suffix of hers
    // (`:con_An`) matches nothing.
    assert_eq!(fx.server.remove_user_allocations(":con_An"), 0);
    assert_eq!(fx.server.remove_user_allocations(":con_Ann"), 2);
    assert_eq!(fx.server.allocation_count(), 1);
    assert!(!fx.server.has_relay(a1) && !fx.server.has_relay(a2) && fx.server.has_relay(b1));
    assert_eq!(fx.server.remove_user_allocations(":con_Ann"), 0);
}

#[test]
fn an_in_process_relay_ends_with_its_transport_unless_it_has_a_socket() {
    let mut fx = Fx::with_ports(50000..50010);
    fx.with_media(40000..=40000);
    let here: SocketAddr = "10.0.0.5:40000".parse().unwrap();
    fx.server.set_in_process(vec![here]);
    let relay = fx.allocate("alice", "pw");
    assert!(fx.server.remove_in_process_relay(relay), "no socket: it served only the media port");
    assert_eq!(fx.server.allocation_count(), 0);
    assert!(!fx.server.remove_in_process_relay(relay), "already gone");
    // One that opened a socket (a permission for an outside peer) serves others: kept.
    let relay = fx.allocate("alice", "pw");
    let r = fx.permit(peer());
    assert_eq!(r.view().class(), Class::SuccessResponse, "{:?}", r.code());
    assert_eq!(fx.server.relay_socket_count(), 1);
    assert!(!fx.server.remove_in_process_relay(relay));
    assert_eq!(fx.server.allocation_count(), 1);
}
