//! The TURN server state machine (RFC 8656), sans-IO.
//!
//! Drive it like the other cores:
//! 1. a datagram (or, on TCP/TLS, one framed message — see `wire::channel_data::stream_frame_len`)
//!    from a client goes to [`TurnServer::handle_client`], which answers [`FromClient`]: a reply
//!    written into the lent `out` buffer, or a relay instruction naming a byte range of the
//!    *receive buffer itself* (ChannelData payload or the DATA of a Send indication: no copy);
//! 2. a datagram that arrived on a relayed address goes to [`TurnServer::handle_peer`], which
//!    writes the ChannelData header or the Data-indication header **in front of the payload in
//!    the same buffer** (the shell receives at offset [`PEER_HEADROOM`]) and answers which byte
//!    range to send to which client 5-tuple;
//! 3. drain [`TurnServer::poll_event`] for relayed addresses to open or close, and call
//!    [`TurnServer::handle_timeout`] at [`TurnServer::poll_timeout`].
//!
//! Time comes in as [`Now`]: a monotonic instant for lifetimes and Unix seconds for nonces and
//! TURN REST credential expiry.
//!
//! Implemented: Allocate (REQUESTED-TRANSPORT UDP, REQUESTED-ADDRESS-FAMILY, EVEN-PORT with and
//! without the R bit — the next port is held for [`RESERVATION_LIFETIME`] under a
//! RESERVATION-TOKEN —, DONT-FRAGMENT accepted), Refresh, CreatePermission, ChannelBind, Send and Data
//! indications, ChannelData; lifetimes (allocation default 600 s, at most 3600 s; permissions
//! 300 s; channels 600 s); retransmitted Allocate answered again; 437/438/440/441/442/443/486/508
//! errors; quotas per user and in total; a per-user relayed-bandwidth bucket; the peer policy.
//! Not implemented: TCP relaying (RFC 6062 Connect),
//! ADDITIONAL-ADDRESS-FAMILY (dual allocations).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::auth::{AuthError, Credentials};
use super::policy::{Denied, PeerPolicy};
use crate::wire::channel_data::{ChannelDataView, is_channel_data};
use crate::wire::stun::{Class, Method, StunView, StunWriter, TransactionId, attr};
use crate::wire::stun_integrity::IntegrityKey;
use crate::wire::turn_attr::{AddressFamily, TRANSPORT_UDP};

/// Bytes the shell leaves free in front of a datagram received on a relayed address, so the
/// Data-indication header (at most 48 bytes for IPv6) can be written in place.
pub const PEER_HEADROOM: usize = 48;

/// How long a port reserved by EVEN-PORT's R bit waits for its RESERVATION-TOKEN (RFC 8656
/// §7.2 suggests about 30 seconds).
pub const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

/// Wall and monotonic time, passed in by the shell.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub unix: u64,
}

/// Client-side transport of a 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    fn stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// The client's 5-tuple (client address, server address, transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FiveTuple {
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub transport: Transport,
}

/// Limits and lifetimes of one TURN server.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
    pub permission_lifetime: Duration,
    pub channel_lifetime: Duration,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    /// Relayed bytes per second per user, 0 = unlimited.
    pub max_user_bandwidth: u64,
    /// Addresses relayed transport addresses are taken from: each brings `relay_ports`, so
    /// more addresses give more allocations (ports of the first address of a family are used
    /// up before the next one's).
    pub relay_ips: Vec<IpAddr>,
    /// Ports of relayed transport addresses.
    pub relay_ports: Range<u16>,
    pub max_permissions: usize,
    pub max_channels: usize,
    /// Key of the RESERVATION-TOKEN MAC (random, the same for every instance of one server so
    /// a token issued by one shard is redeemable on another).
    pub token_key: u64,
    /// Relay sockets open at once (the open-file budget). Without in-process delivery every
    /// allocation holds one, so `max_allocations` is capped to it as well; with it
    /// ([`TurnServer::set_in_process`]) an allocation opens its socket only when a peer needs
    /// one, and a permission or channel that would exceed this gets 508.
    pub max_relay_sockets: usize,
}

impl Default for TurnSettings {
    fn default() -> Self {
        TurnSettings {
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_allocations: 100_000,
            max_allocations_per_user: 100,
            max_user_bandwidth: 0,
            relay_ips: Vec::new(),
            relay_ports: 49152..65535,
            max_permissions: 64,
            max_channels: 64,
            token_key: 0,
            max_relay_sockets: usize::MAX,
        }
    }
}

/// Why a datagram was dropped without an answer (each is a counter label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    NotARequest,
    NoAllocation,
    NoPermission,
    NoChannel,
    /// An unauthenticated request would get an answer larger than itself.
    Amplification,
    BandwidthExceeded,
    BufferTooSmall,
    PeerDenied(Denied),
    /// A datagram for a peer that needs the allocation's relay socket, which could not be
    /// opened (`max_relay_sockets` reached).
    NoRelaySocket,
}

impl DropReason {
    pub fn reason(self) -> &'static str {
        match self {
            DropReason::Malformed => "turn_malformed",
            DropReason::NotARequest => "turn_not_a_request",
            DropReason::NoAllocation => "turn_no_allocation",
            DropReason::NoPermission => "turn_no_permission",
            DropReason::NoChannel => "turn_no_channel",
            DropReason::Amplification => "turn_amplification",
            DropReason::BandwidthExceeded => "turn_bandwidth",
            DropReason::BufferTooSmall => "turn_buffer_too_small",
            DropReason::PeerDenied(d) => d.reason(),
            DropReason::NoRelaySocket => "turn_no_relay_socket",
        }
    }
}

/// What to do with a client's datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromClient {
    /// Send `out[..len]` back to the client on its 5-tuple.
    Reply {
        len: usize,
    },
    /// Send `buf[range]` from the relayed address `relay` to `peer`.
    Relay {
        relay: SocketAddr,
        peer: SocketAddr,
        range: Range<usize>,
    },
    Drop(DropReason),
}

/// What to do with a datagram that arrived on a relayed address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromPeer {
    /// Send `buf[range]` to the client of `five`.
    ToClient {
        five: FiveTuple,
        range: Range<usize>,
    },
    Drop(DropReason),
}

/// A relayed address the shell must start or stop receiving on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnEvent {
    RelayOpened(SocketAddr),
    RelayClosed(SocketAddr),
    /// A new allocation whose socket opens lazily: check that its port can be bound (the
    /// Allocate answer waits for it; if not, [`TurnServer::relay_port_taken`] and say nothing, so
    /// the client's retransmission gets another port).
    RelayProbe(SocketAddr),
}

/// Counters of one TURN server (read by the metrics scrape).
#[derive(Debug, Clone, Copy, Default)]
pub struct TurnCounters {
    pub allocations_created: u64,
    pub allocations_expired: u64,
    pub auth_failures: u64,
    pub relayed_to_peer: u64,
    pub relayed_to_client: u64,
    pub dropped: u64,
    /// Relayed ports the shell found taken by another socket (a port check or a bind failed).
    pub relay_open_failed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Permission {
    ip: IpAddr,
    expires: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    number: u16,
    peer: SocketAddr,
    expires: Instant,
}

struct Allocation {
    five: FiveTuple,
    relay: SocketAddr,
    user: usize,
    username: String,
    key: IntegrityKey,
    expires: Instant,
    created_by: TransactionId,
    permissions: Vec<Permission>,
    channels: Vec<Channel>,
    /// The relayed address has its kernel socket (asked for with `RelayOpened`).
    socket: bool,
    /// Its lazy socket could not be bound (the port is taken by another process): it stays
    /// in-process only, and what needs the socket gets 508 or a counted drop.
    socket_failed: bool,
    /// Its port was found taken by another socket: when the allocation ends the port sits out
    /// [`PORT_QUARANTINE_SWEEPS`] sweeps before it is handed out again.
    port_taken: bool,
    /// The reservation (EVEN-PORT with the R bit) its Allocate made, if any.
    reserved: Option<[u8; 8]>,
}

/// Sweeps (about a second each) a relayed port found taken stays out of the pool: handed out
/// again at once, it would fail every next Allocate of a nearly empty pool.
const PORT_QUARANTINE_SWEEPS: u16 = 60;

impl Allocation {
    /// Installs or refreshes (never shortens) the permission for `ip`, within `max` entries.
    fn permit(&mut self, ip: IpAddr, expires: Instant, max: usize) -> Result<(), Fail> {
        if let Some(p) = self.permissions.iter_mut().find(|p| p.ip == ip) {
            p.expires = p.expires.max(expires);
        } else if self.permissions.len() < max {
            self.permissions.push(Permission { ip, expires });
        } else {
            return Err(CAPACITY);
        }
        Ok(())
    }

    fn permitted(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions.iter().any(|p| p.ip == ip && p.expires > now)
    }
    fn channel_by_number(&self, now: Instant, n: u16) -> Option<&Channel> {
        self.channels.iter().find(|c| c.number == n && c.expires > now)
    }
    fn channel_by_peer(&self, now: Instant, peer: SocketAddr) -> Option<&Channel> {
        self.channels.iter().find(|c| c.peer == peer && c.expires > now)
    }
}

struct User {
    name: String,
    allocations: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

struct PortPool {
    ip: IpAddr,
    free: VecDeque<u16>,
}

/// A TURN server's state: allocations, their permissions and channels.
pub struct TurnServer {
    settings: TurnSettings,
    creds: Credentials,
    policy: PeerPolicy,
    allocations: Vec<Option<Allocation>>,
    free_slots: Vec<usize>,
    by_client: HashMap<FiveTuple, usize>,
    by_relay: HashMap<SocketAddr, usize>,
    users: Vec<User>,
    user_index: HashMap<String, usize>,
    pools: Vec<PortPool>,
    events: VecDeque<TurnEvent>,
    /// Ports held by EVEN-PORT's R bit: token -> (relayed address, expiry).
    reservations: HashMap<[u8; 8], (SocketAddr, Instant)>,
    /// Relayed ports found taken by another socket, with the sweeps left before they return
    /// to the pool.
    quarantine: VecDeque<(SocketAddr, u16)>,
    next_sweep: Option<Instant>,
    /// Peer addresses served inside the process (the hosting media shard's own port); when
    /// set, relay sockets open lazily (see [`TurnServer::set_in_process`]).
    in_process: Vec<SocketAddr>,
    /// Allocations holding a relay socket.
    relay_sockets: usize,
    pub counters: TurnCounters,
}

/// A STUN error to send: code and reason phrase.
#[derive(Debug, Clone, Copy)]
struct Fail(u16, &'static str);

const BAD_REQUEST: Fail = Fail(400, "Bad Request");
const UNAUTHORIZED: Fail = Fail(401, "Unauthorized");
const FORBIDDEN: Fail = Fail(403, "Forbidden");
const MISMATCH: Fail = Fail(437, "Allocation Mismatch");
const STALE_NONCE: Fail = Fail(438, "Stale Nonce");
const FAMILY_UNSUPPORTED: Fail = Fail(440, "Address Family not Supported");
const WRONG_CREDENTIALS: Fail = Fail(441, "Wrong Credentials");
const UNSUPPORTED_TRANSPORT: Fail = Fail(442, "Unsupported Transport Protocol");
const FAMILY_MISMATCH: Fail = Fail(443, "Peer Address Family Mismatch");
const QUOTA: Fail = Fail(486, "Allocation Quota Reached");
const CAPACITY: Fail = Fail(508, "Insufficient Capacity");

impl TurnServer {
    pub fn new(settings: TurnSettings, creds: Credentials, policy: PeerPolicy) -> TurnServer {
        let mut pools: Vec<PortPool> = Vec::new();
        for ip in &settings.relay_ips {
            if pools.iter().any(|p| p.ip == *ip) {
                continue;
            }
            pools.push(PortPool { ip: *ip, free: settings.relay_ports.clone().collect() });
        }
        TurnServer {
            settings,
            creds,
            policy,
            allocations: Vec::new(),
            free_slots: Vec::new(),
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            users: Vec::new(),
            user_index: HashMap::new(),
            pools,
            events: VecDeque::new(),
            reservations: HashMap::new(),
            quarantine: VecDeque::new(),
            next_sweep: None,
            in_process: Vec::new(),
            relay_sockets: 0,
            counters: TurnCounters::default(),
        }
    }

    /// Replaces the credential store (a reload): new allocations and requests without an
    /// allocation use it; existing allocations keep the key they were made with.
    pub fn set_credentials(&mut self, creds: Credentials) {
        self.creds = creds;
    }

    /// Replaces the peer policy (existing permissions stay until they expire).
    pub fn set_policy(&mut self, policy: PeerPolicy) {
        self.policy = policy;
    }

    /// Peers at `addrs` (the hosting media shard's port at each candidate address) are served
    /// inside the process, without the relay socket. From then on an allocation gets its
    /// relay socket (`RelayOpened`) only when something needs it: a permission for an address
    /// where more than ringsfu's media ports are allowed, a channel to a peer other than
    /// `addrs`, or a datagram to one. An allocation that only ever talks to the media port of
    /// its shard (a browser reaching the SFU through its TURN) costs no socket, so allocations
    /// are no longer bounded by the open-file limit. Empty: every allocation opens its socket
    /// at once (the default).
    pub fn set_in_process(&mut self, addrs: Vec<SocketAddr>) {
        self.in_process = addrs;
    }

    /// The addresses given to [`TurnServer::set_in_process`].
    pub fn in_process(&self) -> &[SocketAddr] {
        &self.in_process
    }

    /// Whether `peer` is served inside the process.
    pub fn is_in_process(&self, peer: SocketAddr) -> bool {
        self.in_process
            .iter()
            .any(|m| m.port() == peer.port() && super::policy::same_ip(m.ip(), peer.ip()))
    }

    /// Whether `relay` is the relayed address of a live allocation.
    pub fn has_relay(&self, relay: SocketAddr) -> bool {
        // Asked for every packet a media core sends, whose destination is nearly never a
        // relayed address: the relay IPs (every relayed address has one; usually one or two)
        // are compared before the hash.
        self.settings.relay_ips.contains(&relay.ip()) && self.by_relay.contains_key(&relay)
    }

    /// Allocations holding a relay socket.
    pub fn relay_socket_count(&self) -> usize {
        self.relay_sockets
    }

    /// Gives allocation `i` its relay socket if it has none (508 at `max_relay_sockets`).
    fn ensure_socket(&mut self, i: usize) -> Result<(), Fail> {
        let cap = self.settings.max_relay_sockets;
        let open = self.relay_sockets;
        let a = self.allocations[i].as_mut().ok_or(MISMATCH)?;
        if a.socket {
            return Ok(());
        }
        if open >= cap || a.socket_failed {
            return Err(CAPACITY);
        }
        a.socket = true;
        self.relay_sockets += 1;
        self.events.push_back(TurnEvent::RelayOpened(a.relay));
        Ok(())
    }

    /// Whether a permission for `ip` lets peers reach the relayed address that only the relay
    /// socket can receive: anything but an in-process media address whose policy opens only
    /// the media ports.
    fn permission_needs_socket(&self, ip: IpAddr) -> bool {
        !(self.in_process.iter().any(|m| super::policy::same_ip(m.ip(), ip))
            && self.policy.reaches_only_media(ip))
    }

    /// A client datagram of allocation `i` goes to `peer`: through the relay socket unless
    /// in-process; opens the socket first if need be.
    fn relay_via(&mut self, i: usize, peer: SocketAddr) -> Result<(), DropReason> {
        if self.is_in_process(peer) {
            return Ok(());
        }
        self.ensure_socket(i).map_err(|_| DropReason::NoRelaySocket)
    }

    pub fn settings(&self) -> &TurnSettings {
        &self.settings
    }

    /// Number of live allocations.
    pub fn allocation_count(&self) -> usize {
        self.by_client.len()
    }

    /// The relayed address of the allocation of `five`, if any.
    pub fn relayed_address(&self, five: &FiveTuple) -> Option<SocketAddr> {
        self.by_client.get(five).and_then(|&i| self.allocations[i].as_ref()).map(|a| a.relay)
    }

    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// When [`TurnServer::handle_timeout`] should run next (a coarse one-second sweep while
    /// allocations exist).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.by_client.is_empty() && self.reservations.is_empty() && self.quarantine.is_empty() {
            None
        } else {
            self.next_sweep
        }
    }

    /// Expires allocations, permissions and channels.
    pub fn handle_timeout(&mut self, now: Now) {
        let t = now.mono;
        let mut dead = Vec::new();
        for (i, slot) in self.allocations.iter_mut().enumerate() {
            if let Some(a) = slot {
                if a.expires <= t {
                    dead.push(i);
                } else {
                    a.permissions.retain(|p| p.expires > t);
                    a.channels.retain(|c| c.expires > t);
                }
            }
        }
        for i in dead {
            self.counters.allocations_expired += 1;
            self.remove(i);
        }
        let pools = &mut self.pools;
        self.reservations.retain(|_, (relay, expires)| {
            if *expires > t {
                return true;
            }
            if let Some(pool) = pools.iter_mut().find(|p| p.ip == relay.ip()) {
                pool.free.push_back(relay.port());
            }
            false
        });
        for _ in 0..self.quarantine.len() {
            let Some((relay, left)) = self.quarantine.pop_front() else { break };
            if left > 1 {
                self.quarantine.push_back((relay, left - 1));
            } else if let Some(pool) = self.pools.iter_mut().find(|p| p.ip == relay.ip()) {
                pool.free.push_back(relay.port());
            }
        }
        self.next_sweep = Some(t + Duration::from_secs(1));
    }

    /// The shell could not open the socket of `relay`. Without in-process delivery the
    /// allocation ends (its Allocate was not answered: the client's retransmission gets another
    /// port). With it the socket was opened lazily and the client already uses the address: the
    /// allocation stays for its in-process peers and never asks for the socket again (the
    /// request that asked, retransmitted by the client, then gets 508). True if it ended.
    /// Either way the port sits out a while once the allocation ends (it is held elsewhere).
    pub fn relay_open_failed(&mut self, relay: SocketAddr) -> bool {
        self.counters.relay_open_failed += 1;
        let Some(&i) = self.by_relay.get(&relay) else { return false };
        if self.in_process.is_empty() {
            self.end_taken(relay);
            return true;
        }
        if let Some(a) = self.allocations[i].as_mut() {
            a.port_taken = true;
            if a.socket {
                a.socket = false;
                a.socket_failed = true;
                self.relay_sockets -= 1;
            }
        }
        false
    }

    /// The port check of a new allocation's relayed address failed (`RelayProbe`): the
    /// allocation ends unanswered (the client's retransmission gets another port) and the port
    /// sits out a while.
    pub fn relay_port_taken(&mut self, relay: SocketAddr) {
        self.counters.relay_open_failed += 1;
        self.end_taken(relay);
    }

    /// Ends the allocation on `relay`, whose Allocate was not answered: its port sits out a
    /// while, and the port it reserved (its token never reached the client) goes back to the
    /// pool at once.
    fn end_taken(&mut self, relay: SocketAddr) {
        let Some(&i) = self.by_relay.get(&relay) else { return };
        let mut reserved = None;
        if let Some(a) = self.allocations[i].as_mut() {
            a.port_taken = true;
            reserved = a.reserved.take();
        }
        self.remove(i);
        if let Some((held, _)) = reserved.and_then(|t| self.reservations.remove(&t))
            && self.settings.relay_ports.contains(&held.port())
            && let Some(pool) = self.pools.iter_mut().find(|p| p.ip == held.ip())
        {
            pool.free.push_back(held.port());
        }
    }

    /// Ends the allocation of `five` (its TCP or TLS connection closed: over a stream an
    /// allocation lives as long as the connection, RFC 8656 §3.1).
    pub fn remove_allocation(&mut self, five: &FiveTuple) {
        if let Some(&i) = self.by_client.get(five) {
            self.remove(i);
        }
    }

    /// Ends the allocation relayed at `relay` when it holds no relay socket, i.e. it served
    /// only the hosting media shard's own port in-process: that shard removed the transport
    /// that used it because its browser vanished (consent expired), so nothing else uses it.
    /// A client that refreshes it later gets 437 and allocates again. True: removed.
    pub fn remove_in_process_relay(&mut self, relay: SocketAddr) -> bool {
        let Some(&i) = self.by_relay.get(&relay) else { return false };
        if self.allocations[i].as_ref().is_none_or(|a| a.socket) {
            return false;
        }
        self.remove(i);
        true
    }

    /// Ends every allocation whose username ends with `suffix` (joinRoom mints a participant's
    /// TURN REST username as `<expiry>:<connectionId>`: the participant left or was evicted, so
    /// what its browser allocated goes with it, even when the browser vanished without a
    /// Refresh of lifetime 0). Returns how many ended.
    pub fn remove_user_allocations(&mut self, suffix: &str) -> usize {
        let users: Vec<usize> = self
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| u.name.ends_with(suffix))
            .map(|(i, _)| i)
            .collect();
        if users.is_empty() {
            return 0;
        }
        let doomed: Vec<usize> = self
            .allocations
            .iter()
            .enumerate()
            .filter(|(_, a)| a.as_ref().is_some_and(|a| users.contains(&a.user)))
            .map(|(i, _)| i)
            .collect();
        for &i in &doomed {
            self.remove(i);
        }
        doomed.len()
    }

    fn remove(&mut self, i: usize) {
        let Some(a) = self.allocations[i].take() else { return };
        self.by_client.remove(&a.five);
        self.by_relay.remove(&a.relay);
        if a.socket {
            self.relay_sockets -= 1;
            self.events.push_back(TurnEvent::RelayClosed(a.relay));
        }
        // A port redeemed from another instance's reservation is not ours to hand out again.
        if self.settings.relay_ports.contains(&a.relay.port()) {
            if a.port_taken {
                self.quarantine.push_back((a.relay, PORT_QUARANTINE_SWEEPS));
            } else if let Some(pool) = self.pools.iter_mut().find(|p| p.ip == a.relay.ip()) {
                pool.free.push_back(a.relay.port());
            }
        }
        if let Some(u) = self.users.get_mut(a.user) {
            u.allocations = u.allocations.saturating_sub(1);
        }
        self.free_slots.push(i);
    }

    /// A datagram (or one stream frame) from a client.
    pub fn handle_client(
        &mut self,
        now: Now,
        five: FiveTuple,
        buf: &[u8],
        out: &mut [u8],
    ) -> FromClient {
        if self.next_sweep.is_none() {
            self.next_sweep = Some(now.mono + Duration::from_secs(1));
        }
        if is_channel_data(buf) {
            return self.client_channel_data(now, five, buf);
        }
        let Ok(msg) = StunView::parse(buf) else {
            return self.drop(DropReason::Malformed);
        };
        match (msg.class(), msg.method()) {
            (Class::Request, Method::BINDING) => self.binding(&msg, five, buf.len(), out),
            (Class::Indication, Method::SEND) => self.send_indication(now, five, buf, &msg),
            (Class::Request, m)
                if m == Method::ALLOCATE
                    || m == Method::REFRESH
                    || m == Method::CREATE_PERMISSION
                    || m == Method::CHANNEL_BIND =>
            {
                self.authenticated_request(now, five, &msg, buf.len(), out)
            }
            (Class::Request, m) => {
                self.unauth_error(&msg, m, BAD_REQUEST, None, five, now, buf.len(), out)
            }
            _ => self.drop(DropReason::NotARequest),
        }
    }

    fn drop(&mut self, r: DropReason) -> FromClient {
        self.counters.dropped += 1;
        FromClient::Drop(r)
    }

    fn binding(
        &mut self,
        msg: &StunView<'_>,
        five: FiveTuple,
        req_len: usize,
        out: &mut [u8],
    ) -> FromClient {
        let written = (|| {
            let mut w =
                StunWriter::new(out, Class::SuccessResponse, Method::BINDING, msg.transaction_id())
                    .ok()?;
            w.xor_mapped_address(five.client).ok()?;
            if msg.has_fingerprint() {
                w.fingerprint().ok()?;
            }
            Some(w.finish())
        })();
        // A Binding answer carries the XOR-MAPPED-ADDRESS the request asked for (12 bytes for
        // IPv4, 24 for IPv6) and nothing else: a bare 20-byte request (turnutils_stunclient,
        // browsers' STUN checks) must be answered, so Binding alone may exceed the request by
        // exactly that attribute; every other unauthenticated answer stays within the request.
        let mapped = if five.client.is_ipv4() { 12 } else { 24 };
        match written {
            Some(len) if len <= req_len + mapped => FromClient::Reply { len },
            Some(_) => self.drop(DropReason::Amplification),
            None => self.drop(DropReason::BufferTooSmall),
        }
    }

    fn client_channel_data(&mut self, now: Now, five: FiveTuple, buf: &[u8]) -> FromClient {
        let Ok(cd) = ChannelDataView::parse(buf) else {
            return self.drop(DropReason::Malformed);
        };
        let Some(&i) = self.by_client.get(&five) else {
            return self.drop(DropReason::NoAllocation);
        };
        let Some(a) = self.allocations[i].as_ref() else {
            return self.drop(DropReason::NoAllocation);
        };
        let Some(ch) = a.channel_by_number(now.mono, cd.channel()) else {
            return self.drop(DropReason::NoChannel);
        };
        let (relay, peer, user) = (a.relay, ch.peer, a.user);
        if !a.permitted(now.mono, peer.ip()) {
            return self.drop(DropReason::NoPermission);
        }
        let len = cd.data().len();
        if !self.spend(user, now.mono, len) {
            return self.drop(DropReason::BandwidthExceeded);
        }
        if let Err(r) = self.relay_via(i, peer) {
            return self.drop(r);
        }
        self.counters.relayed_to_peer += 1;
        FromClient::Relay { relay, peer, range: 4..4 + len }
    }

    fn send_indication(
        &mut self,
        now: Now,
        five: FiveTuple,
        buf: &[u8],
        msg: &StunView<'_>,
    ) -> FromClient {
        let Some(&i) = self.by_client.get(&five) else {
            return self.drop(DropReason::NoAllocation);
        };
        let Some(a) = self.allocations[i].as_ref() else {
            return self.drop(DropReason::NoAllocation);
        };
        let (Ok(Some(peer)), Some(data)) = (msg.xor_peer_address(), msg.data()) else {
            return self.drop(DropReason::Malformed);
        };
        if !a.permitted(now.mono, peer.ip()) {
            return self.drop(DropReason::NoPermission);
        }
        // A permission for one of ringsfu's media addresses opens only its media ports.
        if self.policy.is_media_ip(peer.ip())
            && let Err(d) = self.policy.check_addr(peer)
        {
            return self.drop(DropReason::PeerDenied(d));
        }
        let (relay, user) = (a.relay, a.user);
        // `data` borrows `buf`: its offset is the distance between the two starts.
        let start = data.as_ptr() as usize - buf.as_ptr() as usize;
        if !self.spend(user, now.mono, data.len()) {
            return self.drop(DropReason::BandwidthExceeded);
        }
        if let Err(r) = self.relay_via(i, peer) {
            return self.drop(r);
        }
        self.counters.relayed_to_peer += 1;
        FromClient::Relay { relay, peer, range: start..start + data.len() }
    }

    /// Token bucket per user; true if `len` bytes may pass.
    fn spend(&mut self, user: usize, now: Instant, len: usize) -> bool {
        let rate = self.settings.max_user_bandwidth as f64;
        if rate == 0.0 {
            return true;
        }
        let Some(u) = self.users.get_mut(user) else { return true };
        let elapsed = u.refilled.map_or(1.0, |t| now.saturating_duration_since(t).as_secs_f64());
        u.tokens = (u.tokens + elapsed * rate).min(rate);
        u.refilled = Some(now);
        if u.tokens >= len as f64 {
            u.tokens -= len as f64;
            true
        } else {
            false
        }
    }

    /// A datagram that arrived on relayed address `relay` from `peer`, its payload at
    /// `buf[payload]` with at least [`PEER_HEADROOM`] bytes free before it (and 3 after it, for
    /// stream padding).
    pub fn handle_peer(
        &mut self,
        now: Now,
        relay: SocketAddr,
        peer: SocketAddr,
        buf: &mut [u8],
        payload: Range<usize>,
    ) -> FromPeer {
        let Some(&i) = self.by_relay.get(&relay) else {
            self.counters.dropped += 1;
            return FromPeer::Drop(DropReason::NoAllocation);
        };
        let Some(a) = self.allocations[i].as_ref() else {
            return FromPeer::Drop(DropReason::NoAllocation);
        };
        if a.expires <= now.mono || !a.permitted(now.mono, peer.ip()) {
            self.counters.dropped += 1;
            return FromPeer::Drop(DropReason::NoPermission);
        }
        let five = a.five;
        let user = a.user;
        let channel = a.channel_by_peer(now.mono, peer).map(|c| c.number);
        let len = payload.len();
        if payload.end > buf.len() || len > u16::MAX as usize - 64 {
            return FromPeer::Drop(DropReason::BufferTooSmall);
        }
        if !self.spend(user, now.mono, len) {
            self.counters.dropped += 1;
            return FromPeer::Drop(DropReason::BandwidthExceeded);
        }
        let pad = if five.transport.stream() { (4 - len % 4) % 4 } else { 0 };
        let range = match channel {
            Some(number) => {
                if payload.start < 4 || payload.end + pad > buf.len() {
                    return FromPeer::Drop(DropReason::BufferTooSmall);
                }
                let start = payload.start - 4;
                buf[start..start + 2].copy_from_slice(&number.to_be_bytes());
                buf[start + 2..start + 4].copy_from_slice(&(len as u16).to_be_bytes());
                buf[payload.end..payload.end + pad].fill(0);
                start..payload.end + pad
            }
            None => match write_data_indication(buf, payload.clone(), peer) {
                Some(r) => r,
                None => return FromPeer::Drop(DropReason::BufferTooSmall),
            },
        };
        self.counters.relayed_to_client += 1;
        FromPeer::ToClient { five, range }
    }

    fn authenticated_request(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &StunView<'_>,
        req_len: usize,
        out: &mut [u8],
    ) -> FromClient {
        let method = msg.method();
        let existing = self.by_client.get(&five).copied();
        // Credentials present?
        let (Ok(Some(username)), Ok(Some(_realm)), Ok(Some(nonce)), true) = (
            msg.username(),
            msg.realm(),
            msg.nonce(),
            msg.has_integrity() || msg.has_integrity_sha256(),
        ) else {
            return self.unauth_error(msg, method, UNAUTHORIZED, Some(()), five, now, req_len, out);
        };
        if let Err(AuthError::StaleNonce) = self.creds.check_nonce(nonce, now.unix, five.client) {
            return self.unauth_error(msg, method, STALE_NONCE, Some(()), five, now, req_len, out);
        }
        let key = match existing.and_then(|i| self.allocations[i].as_ref()) {
            Some(a) if a.username != username => {
                self.counters.auth_failures += 1;
                return self.unauth_error(
                    msg,
                    method,
                    WRONG_CREDENTIALS,
                    None,
                    five,
                    now,
                    req_len,
                    out,
                );
            }
            Some(a) => a.key.clone(),
            None => match self.creds.key_for(username, now.unix) {
                Some(k) => k,
                None => {
                    self.counters.auth_failures += 1;
                    return self.unauth_error(
                        msg,
                        method,
                        UNAUTHORIZED,
                        Some(()),
                        five,
                        now,
                        req_len,
                        out,
                    );
                }
            },
        };
        if msg.verify_any_integrity(&key).is_err() {
            self.counters.auth_failures += 1;
            return self.unauth_error(msg, method, UNAUTHORIZED, Some(()), five, now, req_len, out);
        }
        let username = username.to_string();
        let txid = *msg.transaction_id();
        let result = match method {
            Method::ALLOCATE => self.allocate(now, five, msg, &username, &key, existing),
            Method::REFRESH => self.refresh(now, msg, existing),
            Method::CREATE_PERMISSION => self.create_permission(now, msg, existing),
            _ => self.channel_bind(now, msg, existing),
        };
        let written = match result {
            Ok(attrs) => write_response(out, Class::SuccessResponse, method, &txid, &attrs, &key),
            Err(f) => write_error(out, method, &txid, f, None, Some(&key)),
        };
        match written {
            Some(len) => FromClient::Reply { len },
            None => self.drop(DropReason::BufferTooSmall),
        }
    }

    /// An error to a request that did not authenticate: never larger than the request, except
    /// that a 401/438 challenge may always be as large as the smallest challenge possible
    /// (header, ERROR-CODE without reason phrase, REALM, NONCE: 52 bytes with the default
    /// realm). Without that floor the first Allocate of most clients (36 bytes from webrtc-rs,
    /// about 44 from browsers, 52 from coturn's `turnutils_uclient -c`) could never learn the
    /// realm and nonce. The floor is a constant, so a spoofed request still buys at most a
    /// few dozen bytes.
    #[allow(clippy::too_many_arguments)]
    fn unauth_error(
        &mut self,
        msg: &StunView<'_>,
        method: Method,
        fail: Fail,
        with_nonce: Option<()>,
        five: FiveTuple,
        now: Now,
        req_len: usize,
        out: &mut [u8],
    ) -> FromClient {
        let nonce = with_nonce.map(|()| self.creds.nonce(now.unix, five.client));
        let realm = self.creds.realm().to_string();
        let challenge = nonce.as_deref().map(|n| (realm.as_str(), n));
        let txid = *msg.transaction_id();
        // Full reason phrase when it fits, else none: the size rule wins over politeness.
        let mut written = write_error(out, method, &txid, fail, challenge, None);
        if written.is_some_and(|n| n > req_len) {
            written = write_error(out, method, &txid, Fail(fail.0, ""), challenge, None);
        }
        let pad = |n: usize| n.next_multiple_of(4);
        let floor = challenge
            .map_or(0, |(realm, nonce)| 20 + 8 + 4 + pad(realm.len()) + 4 + pad(nonce.len()));
        match written {
            Some(len) if len <= req_len.max(floor) => FromClient::Reply { len },
            Some(_) => self.drop(DropReason::Amplification),
            None => self.drop(DropReason::BufferTooSmall),
        }
    }

    /// RFC 8656 §7.2: max(default, min(requested, maximum)).
    fn lifetime(&self, requested: Option<u32>) -> Duration {
        let asked =
            requested.map_or(self.settings.default_lifetime, |s| Duration::from_secs(s as u64));
        asked.min(self.settings.max_lifetime).max(self.settings.default_lifetime)
    }

    fn allocate(
        &mut self,
        now: Now,
        five: FiveTuple,
        msg: &StunView<'_>,
        username: &str,
        key: &IntegrityKey,
        existing: Option<usize>,
    ) -> Result<Vec<Attr>, Fail> {
        if let Some(i) = existing {
            let a = self.allocations[i].as_ref().ok_or(MISMATCH)?;
            if a.created_by == *msg.transaction_id() {
                // A retransmitted Allocate: answer it again.
                let left = a.expires.saturating_duration_since(now.mono).as_secs() as u32;
                return Ok(vec![
                    Attr::Relayed(a.relay),
                    Attr::Lifetime(left),
                    Attr::Mapped(five.client),
                ]);
            }
            return Err(MISMATCH);
        }
        match msg.requested_transport() {
            Ok(Some(TRANSPORT_UDP)) => {}
            Ok(Some(_)) => return Err(UNSUPPORTED_TRANSPORT),
            _ => return Err(BAD_REQUEST),
        }
        if msg.attribute(attr::RESERVATION_TOKEN).is_some()
            && msg.attribute(attr::EVEN_PORT).is_some()
        {
            return Err(BAD_REQUEST);
        }
        let even = msg.even_port().map_err(|_| BAD_REQUEST)?;
        let token = msg.reservation_token().map_err(|_| BAD_REQUEST)?;
        let family = match msg.requested_address_family() {
            Ok(Some(f)) => f,
            Ok(None) => AddressFamily::V4,
            Err(_) => return Err(FAMILY_UNSUPPORTED),
        };
        if self.by_client.len() >= self.settings.max_allocations
            || (self.in_process.is_empty() && self.relay_sockets >= self.settings.max_relay_sockets)
        {
            return Err(QUOTA);
        }
        let user = self.user(username);
        if self.users[user].allocations >= self.settings.max_allocations_per_user {
            return Err(QUOTA);
        }
        let want_v4 = family == AddressFamily::V4;
        if token.is_none() && !self.pools.iter().any(|p| p.ip.is_ipv4() == want_v4) {
            return Err(FAMILY_UNSUPPORTED);
        }
        let mut issued = None;
        let (ip, port) = match (token, even) {
            (Some(t), _) => {
                // The port held for this token (unknown or expired: 508, RFC 8656 §7.2). The
                // token may come from another instance (the RTCP socket of a pair can hash to
                // another shard): it carries the address, authenticated.
                let relay = match self.reservations.remove(&t) {
                    Some((relay, _)) => relay,
                    // Another instance's: its port lies outside this instance's slice. One of
                    // ours without its reservation was redeemed or released already.
                    None => self
                        .token_address(&t, now.unix)
                        .filter(|r| !self.settings.relay_ports.contains(&r.port()))
                        .ok_or(CAPACITY)?,
                };
                if self.by_relay.contains_key(&relay) {
                    return Err(CAPACITY);
                }
                (relay.ip(), relay.port())
            }
            (None, Some(true)) => {
                let (ip, port) = self.take_even_pair(want_v4).ok_or(CAPACITY)?;
                let held = SocketAddr::new(ip, port + 1);
                let t = self.token_for(held, now.unix).ok_or(CAPACITY)?;
                self.reservations.insert(t, (held, now.mono + RESERVATION_LIFETIME));
                issued = Some(t);
                (ip, port)
            }
            (None, even) => {
                let even = even == Some(false);
                let mut taken = None;
                for pool in self.pools.iter_mut().filter(|p| p.ip.is_ipv4() == want_v4) {
                    let port = if even {
                        pool.free
                            .iter()
                            .position(|p| p % 2 == 0)
                            .and_then(|pos| pool.free.remove(pos))
                    } else {
                        pool.free.pop_front()
                    };
                    if let Some(port) = port {
                        taken = Some((pool.ip, port));
                        break;
                    }
                }
                taken.ok_or(CAPACITY)?
            }
        };
        let relay = SocketAddr::new(ip, port);
        let lifetime = self.lifetime(msg.lifetime().ok().flatten());
        let alloc = Allocation {
            five,
            relay,
            user,
            username: username.to_string(),
            key: key.clone(),
            expires: now.mono + lifetime,
            created_by: *msg.transaction_id(),
            permissions: Vec::new(),
            channels: Vec::new(),
            socket: false,
            socket_failed: false,
            port_taken: false,
            reserved: issued,
        };
        let i = match self.free_slots.pop() {
            Some(i) => {
                self.allocations[i] = Some(alloc);
                i
            }
            None => {
                self.allocations.push(Some(alloc));
                self.allocations.len() - 1
            }
        };
        self.users[user].allocations += 1;
        self.by_client.insert(five, i);
        self.by_relay.insert(relay, i);
        if self.in_process.is_empty() {
            // Checked against the cap above.
            let _ = self.ensure_socket(i);
        } else {
            self.events.push_back(TurnEvent::RelayProbe(relay));
        }
        self.counters.allocations_created += 1;
        let mut attrs = vec![
            Attr::Relayed(relay),
            Attr::Lifetime(lifetime.as_secs() as u32),
            Attr::Mapped(five.client),
        ];
        if let Some(t) = issued {
            attrs.push(Attr::Token(t));
        }
        Ok(attrs)
    }

    /// An even port whose successor is free too, both taken out of the pool.
    fn take_even_pair(&mut self, want_v4: bool) -> Option<(IpAddr, u16)> {
        for pool in self.pools.iter_mut().filter(|p| p.ip.is_ipv4() == want_v4) {
            let mut free = vec![0u64; 1024];
            for &p in &pool.free {
                free[p as usize / 64] |= 1 << (p % 64);
            }
            let has = |p: u16| free[p as usize / 64] & (1 << (p % 64)) != 0;
            let Some(&port) = pool.free.iter().find(|&&p| p % 2 == 0 && p < u16::MAX && has(p + 1))
            else {
                continue;
            };
            pool.free.retain(|&p| p != port && p != port + 1);
            return Some((pool.ip, port));
        }
        None
    }

    /// A RESERVATION-TOKEN naming `held`: relay-address index, port, issue time (seconds
    /// modulo 2^16) and 3 bytes of HMAC-SHA256 under `token_key`, so any instance sharing the
    /// settings can redeem it without shared state.
    fn token_for(&self, held: SocketAddr, unix: u64) -> Option<[u8; 8]> {
        let idx = self.settings.relay_ips.iter().position(|ip| *ip == held.ip())?;
        let mut t = [0u8; 8];
        t[0] = u8::try_from(idx).ok()?;
        t[1..3].copy_from_slice(&held.port().to_be_bytes());
        t[3..5].copy_from_slice(&(unix as u16).to_be_bytes());
        let mac = self.token_mac(&t[..5]);
        t[5..].copy_from_slice(&mac);
        Some(t)
    }

    /// The address an authentic, fresh token (see [`TurnServer::token_for`]) names.
    fn token_address(&self, t: &[u8; 8], unix: u64) -> Option<SocketAddr> {
        if self.token_mac(&t[..5]) != t[5..] {
            return None;
        }
        let issued = u16::from_be_bytes([t[3], t[4]]);
        if (unix as u16).wrapping_sub(issued) as u64 > RESERVATION_LIFETIME.as_secs() {
            return None;
        }
        let ip = *self.settings.relay_ips.get(t[0] as usize)?;
        Some(SocketAddr::new(ip, u16::from_be_bytes([t[1], t[2]])))
    }

    fn token_mac(&self, fields: &[u8]) -> [u8; 3] {
        use hmac::{Hmac, Mac};
        // Invariant: HMAC accepts keys of any length.
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.settings.token_key.to_be_bytes())
            .expect("hmac key");
        mac.update(fields);
        let full = mac.finalize().into_bytes();
        [full[0], full[1], full[2]]
    }

    fn user(&mut self, name: &str) -> usize {
        if let Some(&i) = self.user_index.get(name) {
            return i;
        }
        let rate = self.settings.max_user_bandwidth as f64;
        self.users.push(User {
            name: name.to_string(),
            allocations: 0,
            tokens: rate,
            refilled: None,
        });
        self.user_index.insert(name.to_string(), self.users.len() - 1);
        self.users.len() - 1
    }

    /// Users with no allocation left are forgotten at most this often (bounded memory).
    pub fn compact_users(&mut self) {
        if self.users.iter().all(|u| u.allocations > 0) {
            return;
        }
        let mut remap = vec![usize::MAX; self.users.len()];
        let mut kept = Vec::new();
        for (i, u) in std::mem::take(&mut self.users).into_iter().enumerate() {
            if u.allocations > 0 {
                remap[i] = kept.len();
                kept.push(u);
            }
        }
        self.users = kept;
        self.user_index = self.users.iter().enumerate().map(|(i, u)| (u.name.clone(), i)).collect();
        for a in self.allocations.iter_mut().flatten() {
            a.user = remap[a.user];
        }
    }

    fn refresh(
        &mut self,
        now: Now,
        msg: &StunView<'_>,
        existing: Option<usize>,
    ) -> Result<Vec<Attr>, Fail> {
        let i = existing.ok_or(MISMATCH)?;
        let requested = msg.lifetime().map_err(|_| BAD_REQUEST)?;
        if msg.requested_address_family().map_err(|_| BAD_REQUEST)?.is_some_and(|f| {
            let relay_v4 = self.allocations[i].as_ref().is_some_and(|a| a.relay.is_ipv4());
            (f == AddressFamily::V4) != relay_v4
        }) {
            return Err(FAMILY_MISMATCH);
        }
        if requested == Some(0) {
            self.remove(i);
            return Ok(vec![Attr::Lifetime(0)]);
        }
        let lifetime = self.lifetime(requested);
        let a = self.allocations[i].as_mut().ok_or(MISMATCH)?;
        a.expires = now.mono + lifetime;
        Ok(vec![Attr::Lifetime(lifetime.as_secs() as u32)])
    }

    /// `port`: the peer's port matters (ChannelBind); permissions are per IP.
    fn check_peer(&self, relay: SocketAddr, peer: SocketAddr, port: bool) -> Result<(), Fail> {
        if peer.is_ipv4() != relay.is_ipv4() {
            return Err(FAMILY_MISMATCH);
        }
        let r = if port { self.policy.check_addr(peer) } else { self.policy.check(peer.ip()) };
        r.map_err(|_| FORBIDDEN)
    }

    fn create_permission(
        &mut self,
        now: Now,
        msg: &StunView<'_>,
        existing: Option<usize>,
    ) -> Result<Vec<Attr>, Fail> {
        let i = existing.ok_or(MISMATCH)?;
        let relay = self.allocations[i].as_ref().ok_or(MISMATCH)?.relay;
        let mut peers: Vec<IpAddr> = Vec::new();
        for p in msg.xor_peer_addresses() {
            let p = p.map_err(|_| BAD_REQUEST)?;
            self.check_peer(relay, p, false)?;
            peers.push(p.ip());
        }
        if peers.is_empty() {
            return Err(BAD_REQUEST);
        }
        if peers.iter().any(|ip| self.permission_needs_socket(*ip)) {
            self.ensure_socket(i)?;
        }
        let expires = now.mono + self.settings.permission_lifetime;
        let max = self.settings.max_permissions;
        let a = self.allocations[i].as_mut().ok_or(MISMATCH)?;
        a.permissions.retain(|p| p.expires > now.mono);
        for ip in peers {
            a.permit(ip, expires, max)?;
        }
        Ok(Vec::new())
    }

    fn channel_bind(
        &mut self,
        now: Now,
        msg: &StunView<'_>,
        existing: Option<usize>,
    ) -> Result<Vec<Attr>, Fail> {
        let i = existing.ok_or(MISMATCH)?;
        let number = msg.channel_number().map_err(|_| BAD_REQUEST)?.ok_or(BAD_REQUEST)?;
        if !crate::wire::channel_data::CHANNELS.contains(&number) {
            return Err(BAD_REQUEST);
        }
        let peer = msg.xor_peer_address().map_err(|_| BAD_REQUEST)?.ok_or(BAD_REQUEST)?;
        let relay = self.allocations[i].as_ref().ok_or(MISMATCH)?.relay;
        self.check_peer(relay, peer, true)?;
        if !self.is_in_process(peer) || self.permission_needs_socket(peer.ip()) {
            self.ensure_socket(i)?;
        }
        let (perm_life, chan_life) =
            (self.settings.permission_lifetime, self.settings.channel_lifetime);
        let max = self.settings.max_channels;
        let max_perm = self.settings.max_permissions;
        let a = self.allocations[i].as_mut().ok_or(MISMATCH)?;
        let t = now.mono;
        a.channels.retain(|c| c.expires > t);
        // A channel number is bound to one peer and a peer to one channel (RFC 8656 §12.2).
        if a.channels.iter().any(|c| (c.number == number) != (c.peer == peer)) {
            return Err(BAD_REQUEST);
        }
        match a.channels.iter().position(|c| c.number == number) {
            Some(k) => a.channels[k].expires = t + chan_life,
            None if a.channels.len() < max => {
                a.channels.push(Channel { number, peer, expires: t + chan_life })
            }
            None => return Err(CAPACITY),
        }
        a.permit(peer.ip(), t + perm_life, max_perm)?;
        Ok(Vec::new())
    }
}

/// Attributes of a success response.
#[derive(Debug, Clone, Copy)]
enum Attr {
    Relayed(SocketAddr),
    Mapped(SocketAddr),
    Lifetime(u32),
    Token([u8; 8]),
}

fn write_response(
    out: &mut [u8],
    class: Class,
    method: Method,
    txid: &TransactionId,
    attrs: &[Attr],
    key: &IntegrityKey,
) -> Option<usize> {
    let mut w = StunWriter::new(out, class, method, txid).ok()?;
    for a in attrs {
        match *a {
            Attr::Relayed(addr) => w.xor_relayed_address(addr).ok()?,
            Attr::Mapped(addr) => w.xor_mapped_address(addr).ok()?,
            Attr::Lifetime(s) => w.lifetime(s).ok()?,
            Attr::Token(t) => w.reservation_token(&t).ok()?,
        };
    }
    w.message_integrity(key).ok()?;
    w.fingerprint().ok()?;
    Some(w.finish())
}

fn write_error(
    out: &mut [u8],
    method: Method,
    txid: &TransactionId,
    fail: Fail,
    challenge: Option<(&str, &str)>,
    key: Option<&IntegrityKey>,
) -> Option<usize> {
    let mut w = StunWriter::new(out, Class::ErrorResponse, method, txid).ok()?;
    w.error_code(fail.0, fail.1).ok()?;
    if let Some((realm, nonce)) = challenge {
        w.realm(realm).ok()?;
        w.nonce(nonce).ok()?;
    }
    if let Some(k) = key {
        w.message_integrity(k).ok()?;
        w.fingerprint().ok()?;
    }
    Some(w.finish())
}

/// Writes a Data indication around `buf[payload]` in place; returns its byte range.
fn write_data_indication(
    buf: &mut [u8],
    payload: Range<usize>,
    peer: SocketAddr,
) -> Option<Range<usize>> {
    let len = payload.len();
    let pad = (4 - len % 4) % 4;
    // Header + XOR-PEER-ADDRESS built in a scratch buffer (the txid must be random-looking but
    // indications need no matching; derive it from the payload length and peer).
    let mut head = [0u8; PEER_HEADROOM];
    let txid: TransactionId = {
        let mut t = [0u8; 12];
        t[..2].copy_from_slice(&(len as u16).to_be_bytes());
        t[2..4].copy_from_slice(&peer.port().to_be_bytes());
        t
    };
    let mut w = StunWriter::new(&mut head, Class::Indication, Method::DATA, &txid).ok()?;
    w.xor_peer_address(peer).ok()?;
    let hlen = w.finish();
    let total_head = hlen + 4; // plus the DATA attribute header
    if payload.start < total_head || payload.end + pad > buf.len() {
        return None;
    }
    let start = payload.start - total_head;
    buf[start..start + hlen].copy_from_slice(&head[..hlen]);
    buf[start + hlen..start + hlen + 2].copy_from_slice(&attr::DATA.to_be_bytes());
    buf[start + hlen + 2..start + hlen + 4].copy_from_slice(&(len as u16).to_be_bytes());
    buf[payload.end..payload.end + pad].fill(0);
    let msg_len = (hlen - 20) + 4 + len + pad;
    buf[start + 2..start + 4].copy_from_slice(&(msg_len as u16).to_be_bytes());
    Some(start..payload.end + pad)
}
