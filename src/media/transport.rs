//! [`Transport`]: one peer connection's transport on a shard — its ICE-lite agent, DTLS
//! endpoint, the two SRTP contexts the handshake keys, and the selected path (remote address
//! and the local address it was nominated on). Everything a packet to or from the peer needs
//! besides its media: producers and consumers use a transport, they do not own one.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::IceParams;
use super::bwe::SendSideBwe;
use super::egress::Egress;
use crate::dtls::{DtlsContext, DtlsEndpoint, DtlsEvent, DtlsRole, DtlsState, Fingerprint};
use crate::ice::{IceEvent, IceLiteAgent};
use crate::srtp::SrtpContext;

/// Source addresses remembered per transport (one per candidate pair the browser checked).
const MAX_ADDRS: usize = 8;

/// The routes of a shard's transports: USERNAME ufrag and authenticated source address → slot;
/// relay legs (`super::relay`) by (source address, SSRC).
pub(super) struct Routes {
    pub by_ufrag: HashMap<Box<str>, u32>,
    pub by_addr: HashMap<SocketAddr, u32>,
    pub relays: HashMap<(SocketAddr, u32), u32>,
    /// The source addresses of relay legs, with how many routes each has (a few: one per
    /// shard of each other node).
    pub relay_sources: Vec<(SocketAddr, usize)>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes {
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            relays: HashMap::new(),
            relay_sources: Vec::new(),
        }
    }

    /// Whether datagrams from `src` are relay traffic (routed by SSRC).
    #[inline]
    pub fn is_relay_source(&self, src: SocketAddr) -> bool {
        !self.relay_sources.is_empty() && self.relay_sources.iter().any(|(a, _)| *a == src)
    }

    /// Routes `(remote, ssrc)` to `slot` for each of `ssrcs` (the caller checked they are
    /// free).
    pub fn add_relay(&mut self, remote: SocketAddr, ssrcs: &[u32], slot: u32) {
        for &s in ssrcs {
            self.relays.insert((remote, s), slot);
        }
        match self.relay_sources.iter_mut().find(|(a, _)| *a == remote) {
            Some((_, n)) => *n += ssrcs.len(),
            None => self.relay_sources.push((remote, ssrcs.len())),
        }
    }

    fn remove_relay(&mut self, remote: SocketAddr, ssrcs: &[u32], slot: u32) {
        let mut removed = 0;
        for &s in ssrcs {
            if self.relays.get(&(remote, s)) == Some(&slot) {
                self.relays.remove(&(remote, s));
                removed += 1;
            }
        }
        if let Some(i) = self.relay_sources.iter().position(|(a, _)| *a == remote) {
            let n = &mut self.relay_sources[i].1;
            *n = n.saturating_sub(removed);
            if *n == 0 {
                self.relay_sources.swap_remove(i);
            }
        }
    }
}

/// The fixed path of a relay leg (`super::relay`): no ICE, no DTLS.
pub(super) struct RelayPath {
    /// The SSRCs routed to this leg from its remote address.
    pub ssrcs: Vec<u32>,
    /// When an authenticated packet last came from the other node.
    pub last_heard: Instant,
}

pub(super) struct Transport {
    pub ice: IceLiteAgent,
    pub dtls: DtlsEndpoint,
    /// `Client` only for a subscriber that answered a server offer with `a=setup:passive`:
    /// its ClientHello goes out once ICE selected a pair.
    pub dtls_role: DtlsRole,
    pub srtp_out: Option<SrtpContext>,
    pub srtp_in: Option<SrtpContext>,
    /// The nominated remote address and the local address it was nominated on.
    pub remote: Option<SocketAddr>,
    pub local_ip: Option<IpAddr>,
    /// Every address an authenticated check came from (keys of `Routes::by_addr`).
    addrs: Vec<SocketAddr>,
    /// The last of those that came through this shard's own TURN server (one of its relayed
    /// addresses): sends there are a hosted route ([`super::egress`]).
    pub relayed: Option<SocketAddr>,
    /// Every relayed address of this shard's TURN server a check came through, with when the
    /// last one did (at most [`MAX_ADDRS`]; kept across `unroute`): when the browser vanishes,
    /// the allocations that carried its recent checks end with the transport.
    pub hosted: Vec<(SocketAddr, Instant)>,
    pub ufrag: Box<str>,
    /// Sender SSRC of the RTCP we originate on this transport.
    pub rtcp_ssrc: u32,
    /// Transport-wide sequence number of the next packet we send.
    pub twcc_seq: u16,
    /// A publisher's transport that failed or was closed: since when it waits for
    /// `reconnectStream` (no timers run but the core's grace deadline).
    pub failed: Option<Instant>,
    /// A subscriber's bandwidth estimate (send side, from its TWCC / REMB / reports).
    pub bwe: Option<Box<SendSideBwe>>,
    /// Never routed: a camera producer's stand-in (`super::ingest`); no timers run.
    pub placeholder: bool,
    /// A relay leg to or from another node: a fixed path and keys, no ICE or DTLS.
    pub relay: Option<RelayPath>,
}

/// What the ICE agent's events asked for ([`Transport::poll_ice`]).
pub(super) struct IceOutcome {
    /// A DTLS client's path was just selected: its ClientHello can go to this address.
    pub start_client: Option<SocketAddr>,
    pub consent_expired: bool,
}

/// How a DTLS handshake ended, if it did ([`Transport::drain_dtls`]).
pub(super) enum DtlsOutcome {
    Connected,
    /// Failed for good, with the reason.
    Failed(&'static str),
    /// The peer closed the association.
    Closed,
}

impl Transport {
    pub fn new(
        ctx: &DtlsContext,
        now: Instant,
        ice: &IceParams,
        fp: Fingerprint,
        dtls_role: DtlsRole,
    ) -> Transport {
        Transport {
            ice: IceLiteAgent::new(&ice.local_ufrag, &ice.local_pwd, &ice.remote_ufrag),
            dtls: DtlsEndpoint::new(ctx, dtls_role, now, fp),
            dtls_role,
            srtp_out: None,
            srtp_in: None,
            remote: None,
            local_ip: None,
            addrs: Vec::with_capacity(MAX_ADDRS),
            relayed: None,
            hosted: Vec::new(),
            ufrag: ice.local_ufrag.as_str().into(),
            rtcp_ssrc: rand::random::<u32>() | 1,
            twcc_seq: rand::random(),
            failed: None,
            bwe: None,
            placeholder: false,
            relay: None,
        }
    }

    /// A relay leg's transport: `remote` fixed, keyed with `srtp` (out, in), RTCP sent as
    /// `rtcp_ssrc`. Its ICE agent and DTLS endpoint are never used (nothing routes to them).
    pub fn relay(
        ctx: &DtlsContext,
        now: Instant,
        remote: SocketAddr,
        (srtp_out, srtp_in): (SrtpContext, SrtpContext),
        rtcp_ssrc: u32,
        path: RelayPath,
    ) -> Transport {
        let ice = IceParams {
            local_ufrag: String::new(),
            local_pwd: String::new(),
            remote_ufrag: String::new(),
        };
        let fp = Fingerprint::of_der(crate::dtls::FingerprintAlg::Sha256, &[]);
        let mut t = Transport::new(ctx, now, &ice, fp, DtlsRole::Server);
        t.remote = Some(remote);
        t.srtp_out = Some(srtp_out);
        t.srtp_in = Some(srtp_in);
        t.rtcp_ssrc = rtcp_ssrc;
        t.relay = Some(path);
        t
    }

    /// Forgets the keys and the nominated pair and removes the routes (source addresses,
    /// ufrag) that still lead to `slot`.
    pub fn unroute(&mut self, slot: u32, routes: &mut Routes) {
        if let (Some(r), Some(remote)) = (self.relay.as_mut(), self.remote) {
            routes.remove_relay(remote, &r.ssrcs, slot);
            r.ssrcs.clear();
        }
        for a in self.addrs.drain(..) {
            if routes.by_addr.get(&a) == Some(&slot) {
                routes.by_addr.remove(&a);
            }
        }
        if routes.by_ufrag.get(&self.ufrag) == Some(&slot) {
            routes.by_ufrag.remove(&self.ufrag);
        }
        self.srtp_in = None;
        self.srtp_out = None;
        self.remote = None;
        self.local_ip = None;
        self.relayed = None;
    }

    /// An authenticated check came from `src`: it routes to `slot` from now on (the oldest of
    /// [`MAX_ADDRS`] addresses makes room).
    /// `hosted`: it came through this shard's own TURN server.
    pub fn remember_source(
        &mut self,
        now: Instant,
        src: SocketAddr,
        hosted: bool,
        slot: u32,
        routes: &mut Routes,
    ) {
        if hosted {
            self.relayed = Some(src);
            match self.hosted.iter_mut().find(|(a, _)| *a == src) {
                Some(seen) => seen.1 = now,
                None => {
                    if self.hosted.len() == MAX_ADDRS {
                        self.hosted.remove(0);
                    }
                    self.hosted.push((src, now));
                }
            }
        }
        if self.addrs.contains(&src) {
            return;
        }
        if self.addrs.len() == MAX_ADDRS {
            let old = self.addrs.remove(0);
            if routes.by_addr.get(&old) == Some(&slot) {
                routes.by_addr.remove(&old);
            }
        }
        self.addrs.push(src);
        routes.by_addr.insert(src, slot);
    }

    /// Whether sends to `dst` go through this shard's own TURN server.
    pub fn is_hosted(&self, dst: SocketAddr) -> bool {
        self.relayed == Some(dst)
    }

    /// The address to send to before a pair is nominated: the last one a check came from.
    pub fn last_source(&self) -> Option<SocketAddr> {
        self.remote.or(self.addrs.last().copied())
    }

    /// New ICE credentials; true when that was an ICE restart. From the same peer connection
    /// (`same_connection`: same certificate and SDP session) whose DTLS association is up or
    /// under way, it is a renegotiation of that connection (RFC 8445 §2.4, `restartIce()`):
    /// the DTLS endpoint, the keys, the SRTP contexts and the nominated pair stay, and media
    /// keeps flowing on that pair until the browser nominates one with the new credentials.
    /// Otherwise a new transport (openvidu-browser reconnects with a new peer connection,
    /// which also handshakes anew): new ICE agent and DTLS endpoint. The caller routes the
    /// new ufrag to `slot`.
    #[allow(clippy::too_many_arguments)]
    pub fn restart(
        &mut self,
        ctx: &DtlsContext,
        now: Instant,
        ice: &IceParams,
        fp: Fingerprint,
        same_connection: bool,
        slot: u32,
        routes: &mut Routes,
    ) -> bool {
        let alive = matches!(self.dtls.state(), DtlsState::Connected | DtlsState::Handshaking);
        let ice_restart = same_connection && alive && *self.dtls.remote_fingerprint() == fp;
        if ice_restart {
            if routes.by_ufrag.get(&self.ufrag) == Some(&slot) {
                routes.by_ufrag.remove(&self.ufrag);
            }
            self.ice.restart(&ice.local_ufrag, &ice.local_pwd, &ice.remote_ufrag);
        } else {
            self.unroute(slot, routes);
            self.ice = IceLiteAgent::new(&ice.local_ufrag, &ice.local_pwd, &ice.remote_ufrag);
            self.dtls = match self.dtls_role {
                DtlsRole::Server => ctx.server(now, fp),
                DtlsRole::Client => DtlsEndpoint::new(ctx, DtlsRole::Client, now, fp),
            };
        }
        self.ufrag = ice.local_ufrag.as_str().into();
        self.failed = None;
        ice_restart
    }

    /// When the ICE agent (consent) or the DTLS endpoint (retransmission) needs its timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(r) = &self.relay {
            return Some(r.last_heard + super::relay::RELAY_TIMEOUT);
        }
        match (self.ice.poll_timeout(), self.dtls.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the ICE agent's events into the selected path.
    pub fn poll_ice(&mut self) -> IceOutcome {
        let mut out = IceOutcome { start_client: None, consent_expired: false };
        while let Some(ev) = self.ice.poll_event() {
            match ev {
                IceEvent::Selected { remote, local } => {
                    if self.remote.is_none() && self.dtls_role == DtlsRole::Client {
                        out.start_client = Some(remote);
                    }
                    self.remote = Some(remote);
                    self.local_ip = Some(local.ip());
                }
                IceEvent::ConsentExpired => out.consent_expired = true,
            }
        }
        out
    }

    /// Sends what the DTLS endpoint wrote (to the selected path, else `fallback`) and takes its
    /// events: a completed handshake keys the SRTP contexts.
    pub fn drain_dtls(&mut self, fallback: SocketAddr, tx: &mut Egress<'_>) -> Option<DtlsOutcome> {
        let dst = self.remote.unwrap_or(fallback);
        self.drain_dtls_output(dst, tx);
        let mut outcome = None;
        while let Some(ev) = self.dtls.poll_event() {
            outcome = Some(match ev {
                DtlsEvent::Connected { keying_material, .. } => {
                    match SrtpContext::from_dtls_keys(&keying_material, self.dtls_role) {
                        Ok((out, inb)) => {
                            self.srtp_out = Some(out);
                            self.srtp_in = Some(inb);
                            if self.remote.is_none() {
                                self.remote = Some(fallback);
                            }
                            DtlsOutcome::Connected
                        }
                        Err(_) => DtlsOutcome::Failed("SRTP keys rejected"),
                    }
                }
                DtlsEvent::Failed(f) => DtlsOutcome::Failed(f.as_str()),
                DtlsEvent::Closed => DtlsOutcome::Closed,
            });
        }
        outcome
    }

    /// Queues every datagram the DTLS endpoint has to send.
    pub fn drain_dtls_output(&mut self, dst: SocketAddr, tx: &mut Egress<'_>) {
        let mark = tx.pending_len();
        while let Some(mut s) = tx.push(dst) {
            s.set_source(self.local_ip);
            match self.dtls.poll_transmit(s.room()) {
                Some(n) => s.commit_room(n),
                None => break,
            }
        }
        tx.route_from(mark, self.is_hosted(dst));
    }

    /// Tells the peer we are going (DTLS close_notify), when it is still there to hear it.
    pub fn close(&mut self, tx: &mut Egress<'_>) {
        if self.relay.is_some() {
            return;
        }
        if let Some(dst) = self.remote {
            self.dtls.close();
            self.drain_dtls_output(dst, tx);
        }
    }

    /// The connected path and its sending context (`None` before DTLS keyed it).
    pub fn link(&mut self) -> Option<Link<'_>> {
        let (Some(dst), Some(srtp)) = (self.remote, self.srtp_out.as_mut()) else { return None };
        Some(Link { dst, src: self.local_ip, hosted: self.relayed == Some(dst), srtp })
    }

    /// Writes one RTCP packet (or compound) with `build`, protects and queues it.
    pub fn send_rtcp(
        &mut self,
        tx: &mut Egress<'_>,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        self.link().is_some_and(|l| l.send_rtcp(tx, build))
    }
}

/// Where packets to one peer go and the context that protects them.
pub(super) struct Link<'a> {
    pub dst: SocketAddr,
    pub src: Option<IpAddr>,
    /// Through this shard's own TURN server ([`super::egress`]).
    pub hosted: bool,
    pub srtp: &'a mut SrtpContext,
}

impl Link<'_> {
    /// Writes one RTCP packet (or compound) with `build` into a send slot, protects and queues
    /// it. False when nothing was sent.
    pub fn send_rtcp(
        self,
        tx: &mut Egress<'_>,
        build: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> bool {
        let mark = tx.pending_len();
        let Some(mut s) = tx.push(self.dst) else { return false };
        s.set_source(self.src);
        let b = s.room();
        // Leave room for the SRTCP trailer and tag.
        let room = b.len().saturating_sub(64);
        let Some(n) = build(&mut b[..room]) else { return false };
        match self.srtp.protect_rtcp(b, n) {
            Ok(n) => {
                s.commit_room(n);
                tx.route_from(mark, self.hosted);
                true
            }
            Err(_) => false,
        }
    }
}
