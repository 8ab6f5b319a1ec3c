//! Two DTLS endpoints (our server, a dimpl client through the same wrapper) over an
//! in-memory network with a virtual clock: always step the earliest event.

mod dtls_common;

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ringsfu::dtls::{
    DropReason, DtlsCert, DtlsConfig, DtlsContext, DtlsEndpoint, DtlsEvent, DtlsFailure, DtlsRole,
    DtlsState, Fingerprint, FingerprintAlg, SrtpProfile,
};

fn certs() -> &'static (DtlsCert, DtlsCert) {
    static CERTS: OnceLock<(DtlsCert, DtlsCert)> = OnceLock::new();
    CERTS.get_or_init(|| {
        (DtlsCert::generate().expect("server cert"), DtlsCert::generate().expect("client cert"))
    })
}

fn ctx(cert: &DtlsCert) -> DtlsContext {
    DtlsContext::new(cert.clone(), &DtlsConfig::default()).expect("config")
}

/// Which datagrams the network loses: (sender is server, index of its datagram) -> drop?
type LossFn = Box<dyn FnMut(bool, usize) -> bool>;

struct Peer {
    ep: DtlsEndpoint,
    sent: usize,
    events: Vec<DtlsEvent>,
}

struct Net {
    now: Instant,
    server: Peer,
    client: Peer,
    /// (deliver at, to server?, datagram)
    flight: VecDeque<(Instant, bool, Vec<u8>)>,
    latency: Duration,
    loss: LossFn,
}

impl Net {
    fn new(server_fp: Fingerprint, client_fp: Fingerprint) -> Self {
        let (scert, ccert) = certs();
        let now = Instant::now();
        let server = ctx(scert).server(now, server_fp);
        let client = DtlsEndpoint::new(&ctx(ccert), DtlsRole::Client, now, client_fp);
        let mut net = Net {
            now,
            server: Peer { ep: server, sent: 0, events: Vec::new() },
            client: Peer { ep: client, sent: 0, events: Vec::new() },
            flight: VecDeque::new(),
            latency: Duration::from_millis(10),
            loss: Box::new(|_, _| false),
        };
        net.drain(true);
        net.drain(false);
        net
    }

    fn honest() -> Self {
        let (scert, ccert) = certs();
        Net::new(*ccert.fingerprint(), *scert.fingerprint())
    }

    fn peer(&mut self, server: bool) -> &mut Peer {
        if server { &mut self.server } else { &mut self.client }
    }

    fn drain(&mut self, server: bool) {
        let mut buf = [0u8; 1500];
        let at = self.now + self.latency;
        loop {
            let p = self.peer(server);
            let Some(n) = p.ep.poll_transmit(&mut buf) else {
                break;
            };
            let idx = p.sent;
            p.sent += 1;
            if !(self.loss)(server, idx) {
                self.flight.push_back((at, !server, buf[..n].to_vec()));
            }
        }
        let p = self.peer(server);
        while let Some(e) = p.ep.poll_event() {
            p.events.push(e);
        }
    }

    /// Runs the earliest event (delivery or timer). Returns false when nothing is left.
    fn step(&mut self) -> bool {
        let next_delivery = self.flight.front().map(|f| f.0);
        let timers =
            [(self.server.ep.poll_timeout(), true), (self.client.ep.poll_timeout(), false)];
        let next_timer =
            timers.iter().filter_map(|(t, s)| t.map(|t| (t, *s))).min_by_key(|(t, _)| *t);
        match (next_delivery, next_timer) {
            (Some(d), t) if t.is_none_or(|(t, _)| d <= t) => {
                let (at, to_server, data) = self.flight.pop_front().expect("front exists");
                self.now = self.now.max(at);
                let now = self.now;
                self.peer(to_server).ep.handle_packet(now, &data);
                self.drain(to_server);
            }
            (Some(_), None) => unreachable!("covered by the first arm"),
            (_, Some((t, server))) => {
                self.now = self.now.max(t);
                let now = self.now;
                self.peer(server).ep.handle_timeout(now);
                self.drain(server);
            }
            (None, None) => return false,
        }
        true
    }

    /// Steps until both sides are terminal/connected and the network is quiet, or `limit`.
    fn run(&mut self, limit: Duration) -> Duration {
        let start = self.now;
        while self.now - start < limit {
            let settled = |p: &Peer| !matches!(p.ep.state(), DtlsState::Handshaking);
            if settled(&self.server) && settled(&self.client) && self.flight.is_empty() {
                break;
            }
            if !self.step() {
                break;
            }
        }
        self.now - start
    }
}

fn connected_keys(events: &[DtlsEvent]) -> &ringsfu::dtls::SrtpKeyMaterial {
    match events.first() {
        Some(DtlsEvent::Connected { profile, keying_material }) => {
            assert_eq!(*profile, keying_material.profile);
            keying_material
        }
        other => panic!("expected Connected, got {other:?}"),
    }
}

#[test]
fn handshake_exports_matching_keys() {
    let mut net = Net::honest();
    let took = net.run(Duration::from_secs(60));
    assert!(took < Duration::from_millis(100), "took {took:?}");
    assert!(net.server.ep.is_connected() && net.client.ep.is_connected());
    let s = connected_keys(&net.server.events).clone();
    let c = connected_keys(&net.client.events).clone();
    assert_eq!(s, c);
    // dimpl's client offers every profile, AES-256-GCM first; ringsfu's server prefers
    // AES-128-GCM.
    assert_eq!(s.profile, SrtpProfile::AeadAes128Gcm);
    assert_eq!(s.inbound(DtlsRole::Server), c.outbound(DtlsRole::Client));
    assert_eq!(s.outbound(DtlsRole::Server), c.inbound(DtlsRole::Client));
    assert_ne!(s.client_key(), s.server_key());
    // Exactly one event each, and no timer left once connected and idle.
    assert_eq!(net.server.events.len(), 1);
    assert_eq!(net.client.events.len(), 1);
    assert_eq!(net.server.ep.poll_timeout(), None);
    assert_eq!(net.server.ep.stats().dropped, [0; DropReason::COUNT]);
}

/// The DTLS -> SRTP hand-off after a real handshake: each side builds its SRTP contexts
/// with `SrtpContext::from_dtls_keys` from its own export (AES-128-GCM, the profile the server
/// prefers; `tests/dtls_webrtc.rs` runs the same check for all three profiles).
#[test]
fn srtp_contexts_from_both_exports_interoperate() {
    let mut net = Net::honest();
    net.run(Duration::from_secs(60));
    let s = connected_keys(&net.server.events).clone();
    let c = connected_keys(&net.client.events).clone();
    assert_eq!(s.profile, SrtpProfile::AeadAes128Gcm);
    dtls_common::check_srtp_handoff(&s, &c);
}

#[test]
fn lost_server_flight_is_retransmitted_on_timeout() {
    let mut net = Net::honest();
    // Lose the server's first flight (ServerHello .. ServerHelloDone, possibly several
    // datagrams): everything the server sends before the client retransmits.
    net.loss = Box::new(|server, _| server);
    net.step(); // client hello reaches the server, its answer is lost
    assert!(net.flight.is_empty());
    let server_first = net.server.sent;
    assert!(server_first >= 1);
    net.loss = Box::new(|_, _| false);
    let took = net.run(Duration::from_secs(60));
    assert!(net.server.ep.is_connected(), "{:?}", net.server.events);
    assert!(net.client.ep.is_connected(), "{:?}", net.client.events);
    // The client's retransmission timer (1 s +-25%) had to fire.
    assert!(took >= Duration::from_millis(700), "took {took:?}");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(connected_keys(&net.server.events), connected_keys(&net.client.events));
}

#[test]
fn lost_client_final_flight_is_retransmitted() {
    let mut net = Net::honest();
    // Client datagrams: 0 = ClientHello, then the final flight
    // (Certificate, ClientKeyExchange, CertificateVerify, ChangeCipherSpec, Finished).
    net.loss = Box::new(|server, idx| !server && idx >= 1);
    while net.client.sent < 2 {
        assert!(net.step());
    }
    let lost = net.client.sent - 1;
    net.loss = Box::new(|_, _| false);
    let took = net.run(Duration::from_secs(60));
    assert!(net.server.ep.is_connected(), "{:?}", net.server.events);
    assert!(net.client.ep.is_connected(), "{:?}", net.client.events);
    assert!(net.client.sent > 1 + lost, "client retransmitted");
    assert!(took >= Duration::from_millis(700), "took {took:?}");
}

#[test]
fn fingerprint_mismatch_fails_server() {
    let (scert, _) = certs();
    let wrong = Fingerprint::of_der(FingerprintAlg::Sha256, b"not the client's certificate");
    let mut net = Net::new(wrong, *scert.fingerprint());
    net.run(Duration::from_secs(120));
    assert_eq!(net.server.events, vec![DtlsEvent::Failed(DtlsFailure::FingerprintMismatch)]);
    assert_eq!(net.server.ep.state(), DtlsState::Failed(DtlsFailure::FingerprintMismatch));
    assert!(net.server.ep.keying_material().is_none());
    assert_eq!(net.server.ep.poll_timeout(), None);
    // The client never hears back and gives up on its own timers.
    assert_eq!(net.client.events, vec![DtlsEvent::Failed(DtlsFailure::HandshakeTimeout)]);
    // The client's retransmissions, and any further input, are counted, not processed.
    let before = net.server.ep.stats().dropped(DropReason::AfterClose);
    assert!(before >= 1);
    let now = net.now;
    net.server.ep.handle_packet(now, &[22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(net.server.ep.stats().dropped(DropReason::AfterClose), before + 1);
}

#[test]
fn client_detects_wrong_server_fingerprint() {
    let (_, ccert) = certs();
    let wrong = Fingerprint::of_der(FingerprintAlg::Sha256, b"not the server's certificate");
    let mut net = Net::new(*ccert.fingerprint(), wrong);
    net.run(Duration::from_secs(120));
    assert_eq!(net.client.events, vec![DtlsEvent::Failed(DtlsFailure::FingerprintMismatch)]);
    assert!(!net.server.ep.is_connected());
}

#[test]
fn silent_client_times_out_server() {
    let mut net = Net::honest();
    // Only the ClientHello ever arrives; the client then vanishes.
    net.loss = Box::new(|server, idx| server || idx > 0);
    assert_eq!(net.server.ep.poll_timeout(), None, "no timer before a ClientHello");
    let took = net.run(Duration::from_secs(120));
    assert!(net.server.events.contains(&DtlsEvent::Failed(DtlsFailure::HandshakeTimeout)));
    // 4 retries with doubling from 1 s (+-25%), or the 30 s handshake deadline.
    assert!(took >= Duration::from_secs(10), "took {took:?}");
    assert!(took <= Duration::from_secs(40), "took {took:?}");
    assert!(net.server.sent >= 5, "initial flight + retransmissions");
}

#[test]
fn hostile_datagrams_are_dropped_and_counted() {
    let mut net = Net::honest();
    let now = net.now;
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![22],
        vec![0x80; 100],                                    // RTP, not DTLS
        vec![0x00, 0x01, 0x00, 0x00],                       // STUN-ish
        vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF], // short header
        vec![22, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 1, 2], // length overrun
        vec![30, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // unknown content type
    ];
    // Well-framed records with hostile bodies: dimpl must discard them without failing.
    let mut seed = 0x1234_5678_u32;
    for ct in [20u8, 21, 22, 23] {
        for len in [0usize, 1, 12, 13, 60, 300] {
            let mut d = vec![ct, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0];
            d.extend_from_slice(&(len as u16).to_be_bytes());
            for _ in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                d.push((seed >> 16) as u8);
            }
            if ct == 22 && len >= 12 {
                d[13] = 1; // a "ClientHello" handshake header with garbage inside
            }
            junk.push(d);
        }
    }
    for d in &junk {
        net.server.ep.handle_packet(now, d);
        net.drain(true);
    }
    let stats = *net.server.ep.stats();
    assert_eq!(stats.datagrams_in, junk.len() as u64);
    assert_eq!(stats.dropped(DropReason::NotDtls), 5);
    assert_eq!(stats.dropped(DropReason::Truncated), 1);
    assert_eq!(stats.dropped(DropReason::BadRecordHeader), 1);
    assert!(net.server.events.is_empty(), "{:?}", net.server.events);
    // The real handshake still succeeds afterwards.
    net.run(Duration::from_secs(60));
    assert!(net.server.ep.is_connected(), "{:?}", net.server.events);
    assert!(net.client.ep.is_connected());
}

#[test]
fn peer_close_notify_reports_closed() {
    let mut net = Net::honest();
    net.run(Duration::from_secs(60));
    assert!(net.server.ep.is_connected());
    net.client.ep.close();
    net.drain(false);
    assert_eq!(net.client.ep.state(), DtlsState::Closed);
    while net.step() {}
    assert_eq!(net.server.events.last(), Some(&DtlsEvent::Closed));
    assert_eq!(net.server.ep.state(), DtlsState::Closed);
    assert_eq!(net.server.ep.poll_timeout(), None);
}

/// The server selects the first profile of its list that the client offers: the list is an
/// order of preference and a filter.
#[test]
fn srtp_profiles_are_the_servers_order_of_preference() {
    let (scert, ccert) = certs();
    let server_with = |profiles: Vec<SrtpProfile>| {
        let cfg = DtlsConfig { srtp_profiles: profiles, ..DtlsConfig::default() };
        let mut net = Net::honest();
        net.server.ep = DtlsContext::new(scert.clone(), &cfg)
            .expect("config")
            .server(net.now, *ccert.fingerprint());
        net.run(Duration::from_secs(60));
        connected_keys(&net.server.events).profile
    };
    // dimpl's client offers all three, AES-256-GCM first.
    for order in [
        vec![SrtpProfile::Aes128CmSha1_80, SrtpProfile::AeadAes128Gcm],
        vec![SrtpProfile::AeadAes256Gcm, SrtpProfile::AeadAes128Gcm],
        vec![SrtpProfile::AeadAes128Gcm],
    ] {
        assert_eq!(server_with(order.clone()), order[0], "{order:?}");
    }
}

/// Where the server chooses (a client-role endpoint), a profile outside the list fails the
/// handshake.
#[test]
fn srtp_profile_filter_rejects() {
    let (scert, ccert) = certs();
    let only = |p: SrtpProfile| DtlsConfig { srtp_profiles: vec![p], ..DtlsConfig::default() };
    let mut net = Net::honest();
    let server_ctx = DtlsContext::new(scert.clone(), &only(SrtpProfile::AeadAes256Gcm));
    net.server.ep = server_ctx.expect("config").server(net.now, *ccert.fingerprint());
    let client_ctx = DtlsContext::new(ccert.clone(), &only(SrtpProfile::AeadAes128Gcm));
    net.client.ep = DtlsEndpoint::new(
        &client_ctx.expect("config"),
        DtlsRole::Client,
        net.now,
        *scert.fingerprint(),
    );
    net.flight.clear(); // the replaced client's ClientHello
    net.drain(false);
    net.run(Duration::from_secs(60));
    assert_eq!(
        net.client.events,
        vec![DtlsEvent::Failed(DtlsFailure::SrtpProfileNotAccepted(SrtpProfile::AeadAes256Gcm))]
    );
    assert!(
        DtlsContext::new(
            scert.clone(),
            &DtlsConfig { srtp_profiles: vec![], ..DtlsConfig::default() }
        )
        .is_err()
    );
}

#[test]
fn hostile_datagrams_mid_handshake_do_not_panic() {
    // Junk injected after every real delivery, at both ends, throughout the handshake.
    let mut net = Net::honest();
    let mut seed = 0xdead_beef_u32;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let mut rounds = 0;
    while rounds < 200 && net.step() {
        rounds += 1;
        for server in [true, false] {
            let len = 13 + (rnd() % 200) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
            d[0] = 20 + (rnd() % 4) as u8;
            d[1] = 0xFE;
            d[2] = 0xFD;
            d[3] = 0;
            d[4] = (rnd() % 2) as u8; // epoch 0 or 1
            let body = (len - 13) as u16;
            d[11..13].copy_from_slice(&body.to_be_bytes());
            let now = net.now;
            net.peer(server).ep.handle_packet(now, &d);
            net.drain(server);
        }
        let settled = |p: &Peer| !matches!(p.ep.state(), DtlsState::Handshaking);
        if settled(&net.server) && settled(&net.client) && net.flight.is_empty() {
            break;
        }
    }
    // dimpl discards well-framed junk (bad epoch-1 MACs, unparsable handshake bodies) and the
    // handshake completes anyway.
    assert!(net.server.ep.is_connected(), "{:?}", net.server.events);
    assert!(net.client.ep.is_connected(), "{:?}", net.client.events);
    assert_eq!(connected_keys(&net.server.events), connected_keys(&net.client.events));
}

#[test]
fn lost_server_final_flight_is_resent_after_connected() {
    let mut net = Net::honest();
    // Lose everything the server sends once it is connected (its ChangeCipherSpec+Finished).
    let mut server_connected_at = None;
    while net.server.events.is_empty() {
        assert!(net.step());
        if net.server.ep.is_connected() && server_connected_at.is_none() {
            server_connected_at = Some(net.server.sent);
        }
    }
    let final_flight_start = server_connected_at.expect("server connected");
    // The final flight was just queued in the network; drop it.
    let before = net.flight.len();
    net.flight.retain(|(_, to_server, _)| *to_server);
    assert!(net.flight.len() < before, "final flight was in flight");
    assert!(net.server.sent >= final_flight_start);
    let took = net.run(Duration::from_secs(60));
    assert!(net.client.ep.is_connected(), "{:?}", net.client.events);
    assert!(took >= Duration::from_millis(700), "client timer had to fire: {took:?}");
    assert_eq!(net.server.events.len(), 1, "one Connected only");
    assert_eq!(connected_keys(&net.server.events), connected_keys(&net.client.events));
}
