//! The TURN server as a shard core: [`TurnShard`] drives one [`TurnServer`] inside a data-plane
//! shard (sans-IO: the shell lends buffers and passes `now`).
//!
//! Sockets: the listener (UDP `[turn] port`, SO_REUSEPORT in every shard, so the kernel keeps
//! each client 5-tuple on one shard) is [`SocketId::MAIN`] on a TURN shard of its own, or
//! [`HOSTED_LISTENER`] when a media shard hosts the core ([`TurnShard::hosted`], opened with
//! [`SocketOp::Listen`]; the media port is then `MAIN`, see `crate::media::MediaShard`), with
//! the shard's own TURN port beside it as [`SHARD_LISTENER`] (`[turn] shard_ports`); an
//! allocation's relayed address is one more socket of the same shard, opened and closed through
//! [`SocketOp`] when the server reports [`TurnEvent::RelayOpened`] / `RelayClosed` (hosted with
//! in-process delivery, only once a peer needs it: its port is checked at Allocate with
//! `SocketOp::Probe` on [`TurnEvent::RelayProbe`]). Socket ids
//! are recycled through a free list, so the per-id tables stay as large as the peak allocation
//! count. Each shard relays from its own slice of the relay port range (see
//! [`crate::turn::serve`]), so shards never compete for a port.
//!
//! Per datagram:
//! 1. on the listener: [`TurnServer::handle_client`] writes a reply straight into a lent
//!    [`TxQueue`] slot (sent from the address the request came to), or names the payload range
//!    to relay, which is copied once into the slot and sent from the relay socket;
//! 2. on a relay socket: the payload is copied once into a slot at [`PEER_HEADROOM`],
//!    [`TurnServer::handle_peer`] writes the ChannelData or Data-indication header in front of
//!    it in the slot, and the slot's byte range goes to the client from the listener.
//!
//! Hosted, a datagram relayed to the shard's own media port skips both copies and the kernel:
//! [`TurnShard::handle_datagram_hosted`] returns its range ([`LocalRelay`]) for the media core,
//! and [`TurnShard::relay_from_media`] turns the media core's answer into the client's
//! ChannelData in its send slot.
//!
//! Drops are counted by reason ([`TurnShardStats`]); nothing on this path allocates.

use std::collections::{HashMap, VecDeque};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::server::{DropReason, FromClient, FromPeer, PEER_HEADROOM, TurnCounters};
use super::{FiveTuple, Now, Transport, TurnEvent, TurnServer};
use crate::shard::{RecvMeta, ShardCore, SocketId, SocketOp, TX_SLOT_SIZE, TxQueue};

/// A control-plane request to a TURN shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnCommand {
    /// Report [`TurnShardStats`] as a [`TurnReport`].
    Report,
}

/// A TURN shard's answer to [`TurnCommand::Report`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnReport(pub TurnShardStats);

/// Counters of one TURN shard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TurnShardStats {
    pub allocations: u64,
    pub allocations_created: u64,
    pub allocations_expired: u64,
    pub auth_failures: u64,
    pub relayed_to_peer: u64,
    pub relayed_to_client: u64,
    /// Drops by reason, in [`DROP_LABELS`] order.
    pub drops: [u64; DROP_LABELS.len()],
    /// Relay sockets the kernel refused to open (the allocation was then removed).
    pub relay_open_failed: u64,
    /// Relayed packets handed to the media core of the same shard without a kernel round trip
    /// (client -> ringsfu's media port), and taken from it (media -> client); included in
    /// `relayed_to_peer` / `relayed_to_client`.
    pub in_process_to_media: u64,
    pub in_process_to_client: u64,
    /// Of `in_process_to_client`: datagrams the media core wrote without room in front, moved
    /// in their send slot to make room for the header (0 while the media shard's send queue
    /// keeps its headroom).
    pub moved_for_header: u64,
    /// Relay sockets open (gauge): with in-process delivery, allocations that only reach the
    /// shard's media port hold none.
    pub relay_sockets: u64,
}

impl TurnShardStats {
    /// The counters a [`TurnServer`] keeps itself (no shell drops).
    pub fn from_server(server: &TurnServer) -> Self {
        let c: TurnCounters = server.counters;
        TurnShardStats {
            allocations: server.allocation_count() as u64,
            allocations_created: c.allocations_created,
            allocations_expired: c.allocations_expired,
            auth_failures: c.auth_failures,
            relayed_to_peer: c.relayed_to_peer,
            relayed_to_client: c.relayed_to_client,
            relay_sockets: server.relay_socket_count() as u64,
            relay_open_failed: c.relay_open_failed,
            ..Default::default()
        }
    }

    /// Adds `o`'s counters to these (the allocation gauge too).
    pub fn add(&mut self, o: &TurnShardStats) {
        self.allocations += o.allocations;
        self.allocations_created += o.allocations_created;
        self.allocations_expired += o.allocations_expired;
        self.auth_failures += o.auth_failures;
        self.relayed_to_peer += o.relayed_to_peer;
        self.relayed_to_client += o.relayed_to_client;
        for (d, s) in self.drops.iter_mut().zip(o.drops) {
            *d += s;
        }
        self.relay_open_failed += o.relay_open_failed;
        self.in_process_to_media += o.in_process_to_media;
        self.in_process_to_client += o.in_process_to_client;
        self.moved_for_header += o.moved_for_header;
        self.relay_sockets += o.relay_sockets;
    }
}

/// A TURN shard's [`TurnShardStats`] as atomics, republished by the shard once a second and read
/// by `/metrics` from any thread (one writer: Relaxed stores and loads are enough).
#[derive(Debug, Default)]
pub struct TurnStatsCell {
    allocations: AtomicU64,
    allocations_created: AtomicU64,
    allocations_expired: AtomicU64,
    auth_failures: AtomicU64,
    relayed_to_peer: AtomicU64,
    relayed_to_client: AtomicU64,
    drops: [AtomicU64; DROP_LABELS.len()],
    relay_open_failed: AtomicU64,
    in_process_to_media: AtomicU64,
    in_process_to_client: AtomicU64,
    moved_for_header: AtomicU64,
    relay_sockets: AtomicU64,
}

impl TurnStatsCell {
    /// Replaces the published counters (the shard's thread).
    pub fn store(&self, s: &TurnShardStats) {
        self.allocations.store(s.allocations, Relaxed);
        self.allocations_created.store(s.allocations_created, Relaxed);
        self.allocations_expired.store(s.allocations_expired, Relaxed);
        self.auth_failures.store(s.auth_failures, Relaxed);
        self.relayed_to_peer.store(s.relayed_to_peer, Relaxed);
        self.relayed_to_client.store(s.relayed_to_client, Relaxed);
        for (c, v) in self.drops.iter().zip(s.drops) {
            c.store(v, Relaxed);
        }
        self.relay_open_failed.store(s.relay_open_failed, Relaxed);
        self.in_process_to_media.store(s.in_process_to_media, Relaxed);
        self.in_process_to_client.store(s.in_process_to_client, Relaxed);
        self.moved_for_header.store(s.moved_for_header, Relaxed);
        self.relay_sockets.store(s.relay_sockets, Relaxed);
    }

    /// The last published counters.
    pub fn load(&self) -> TurnShardStats {
        TurnShardStats {
            allocations: self.allocations.load(Relaxed),
            allocations_created: self.allocations_created.load(Relaxed),
            allocations_expired: self.allocations_expired.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            relayed_to_peer: self.relayed_to_peer.load(Relaxed),
            relayed_to_client: self.relayed_to_client.load(Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Relaxed)),
            relay_open_failed: self.relay_open_failed.load(Relaxed),
            in_process_to_media: self.in_process_to_media.load(Relaxed),
            in_process_to_client: self.in_process_to_client.load(Relaxed),
            moved_for_header: self.moved_for_header.load(Relaxed),
            relay_sockets: self.relay_sockets.load(Relaxed),
        }
    }
}

/// Labels of [`TurnShardStats::drops`].
pub const DROP_LABELS: [&str; 12] = [
    "turn_malformed",
    "turn_not_a_request",
    "turn_no_allocation",
    "turn_no_permission",
    "turn_no_channel",
    "turn_amplification",
    "turn_bandwidth",
    "turn_buffer_too_small",
    "turn_peer_denied",
    "turn_tx_full",
    "turn_unknown_socket",
    "turn_no_relay_socket",
];

fn drop_index(r: DropReason) -> usize {
    match r {
        DropReason::Malformed => 0,
        DropReason::NotARequest => 1,
        DropReason::NoAllocation => 2,
        DropReason::NoPermission => 3,
        DropReason::NoChannel => 4,
        DropReason::Amplification => 5,
        DropReason::BandwidthExceeded => 6,
        DropReason::BufferTooSmall => 7,
        DropReason::PeerDenied(_) => 8,
        DropReason::NoRelaySocket => 11,
    }
}
const DROP_TX_FULL: usize = 9;
const DROP_UNKNOWN_SOCKET: usize = 10;

/// An Allocate success held until its relay socket is open.
/// (Also a CreatePermission or ChannelBind success whose peer made an allocation open its
/// socket lazily.)
struct Held {
    dst: SocketAddr,
    src: Option<std::net::IpAddr>,
    socket: SocketId,
    len: usize,
    bytes: [u8; HELD_MAX],
}

/// Largest held answer: an Allocate success (IPv6 addresses, RESERVATION-TOKEN, integrity and
/// fingerprint) is about 120 bytes.
const HELD_MAX: usize = 256;

/// One shard's TURN endpoint.
pub struct TurnShard {
    server: TurnServer,
    /// The clock anchor: Unix seconds at `anchor`.
    anchor: Instant,
    anchor_unix: u64,
    /// The listener's address (its IP may be unspecified: replies then leave from the address
    /// the request arrived on, `RecvMeta::dst_ip`).
    listen: SocketAddr,
    relay_ids: HashMap<SocketAddr, SocketId>,
    /// By socket id: the relayed address it serves.
    relay_of: Vec<Option<SocketAddr>>,
    free_ids: Vec<u32>,
    socket_ops: VecDeque<SocketOp>,
    /// Allocate answers waiting for their relay socket to open or their port to be checked
    /// (by socket id).
    held: HashMap<u32, Held>,
    /// Socket ids lent to `SocketOp::Probe`, with the relayed address checked.
    probing: HashMap<u32, SocketAddr>,
    report: Option<TurnReport>,
    drops: [u64; DROP_LABELS.len()],
    next_compact: Option<Instant>,
    reload: Option<super::serve::ReloadHook>,
    /// Where the counters are published for `/metrics`.
    cell: Option<Arc<TurnStatsCell>>,
    /// The once-a-second housekeeping (credential reload, counters published); `None` when
    /// neither is attached.
    next_tick: Option<Instant>,
    /// The socket client datagrams arrive on: [`SocketId::MAIN`], or the listener a media shard
    /// hosting this core opened for it ([`TurnShard::hosted`]).
    listener: SocketId,
    /// The port of this shard's own TURN listener ([`SHARD_LISTENER`], the TURN server
    /// joinRoom offers first to the sessions of this shard), if it has one: answers to a client
    /// go back out of the socket its 5-tuple names.
    shard_port: Option<u16>,
    in_process_to_media: u64,
    in_process_to_client: u64,
    moved_for_header: u64,
}

/// A client's datagram the TURN core relays to the hosting shard's media port: `range` of the
/// received buffer is the payload, to be handled by the media core as if it had arrived from
/// `relay` (the allocation's relayed address) on `peer` (the media address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRelay {
    pub relay: SocketAddr,
    pub peer: SocketAddr,
    pub range: std::ops::Range<usize>,
}

/// The socket id of the TURN listener in a media shard that hosts the TURN core (the media
/// core uses only [`SocketId::MAIN`]; relay sockets take the ids after [`SHARD_LISTENER`]).
pub const HOSTED_LISTENER: SocketId = SocketId(1);

/// The socket id of a hosting media shard's own TURN port (`[turn] shard_ports`).
pub const SHARD_LISTENER: SocketId = SocketId(2);

impl TurnShard {
    /// A shard core around `server`, listening on `listen`. `anchor` and `anchor_unix` are the
    /// same moment on the monotonic and the Unix clock (read once by the shell).
    pub fn new(server: TurnServer, listen: SocketAddr, anchor: Instant, anchor_unix: u64) -> Self {
        TurnShard {
            server,
            anchor,
            anchor_unix,
            listen,
            relay_ids: HashMap::new(),
            relay_of: vec![None],
            free_ids: Vec::new(),
            socket_ops: VecDeque::new(),
            held: HashMap::new(),
            probing: HashMap::new(),
            report: None,
            drops: [0; DROP_LABELS.len()],
            next_compact: None,
            reload: None,
            cell: None,
            next_tick: None,
            listener: SocketId::MAIN,
            shard_port: None,
            in_process_to_media: 0,
            in_process_to_client: 0,
            moved_for_header: 0,
        }
    }

    /// Runs inside a media shard: the TURN listener is opened as [`HOSTED_LISTENER`] on the
    /// shared `listen` address (SO_REUSEPORT, so the kernel spreads clients over the shards),
    /// and `shard_listen`, if any, as [`SHARD_LISTENER`]: a port of this shard alone, which
    /// joinRoom offers to the participants of this shard's sessions so their allocations land
    /// here. Relayed datagrams to `local_media` (the shard's media port at each candidate
    /// address; empty: always through the kernel) are handed to the media core in-process, and
    /// then relay sockets open lazily ([`TurnServer::set_in_process`]).
    pub fn hosted(
        mut self,
        shard_listen: Option<SocketAddr>,
        local_media: Vec<SocketAddr>,
    ) -> Self {
        self.listener = HOSTED_LISTENER;
        self.relay_of = vec![None; SHARD_LISTENER.0 as usize + 1];
        self.server.set_in_process(local_media);
        self.socket_ops.push_back(SocketOp::Listen {
            id: HOSTED_LISTENER,
            addr: self.listen,
            shared: true,
        });
        if let Some(addr) = shard_listen {
            self.shard_port = Some(addr.port());
            self.socket_ops.push_back(SocketOp::Listen { id: SHARD_LISTENER, addr, shared: false });
        }
        self
    }

    /// Whether packets the media core queues may be for a relayed address of this shard that
    /// is served in-process (they need a look: [`TurnShard::relay_from_media`]).
    pub fn delivers_in_process(&self) -> bool {
        !self.server.in_process().is_empty() && self.server.allocation_count() > 0
    }

    /// The socket a client's 5-tuple names on this side: the shard's own TURN port or the
    /// shared listener.
    fn client_socket(&self, server: SocketAddr) -> SocketId {
        if self.shard_port == Some(server.port()) { SHARD_LISTENER } else { self.listener }
    }

    /// The hosting media shard removed a transport that was reached through relayed address
    /// `relay`: its allocation ends if it served only in-process peers
    /// ([`TurnServer::remove_in_process_relay`]).
    pub fn release_in_process(&mut self, relay: SocketAddr) -> bool {
        self.server.remove_in_process_relay(relay)
    }

    /// Ends the allocations of the TURN users whose name ends with `suffix`
    /// ([`TurnServer::remove_user_allocations`]); their relay sockets close.
    pub fn end_user_allocations(&mut self, suffix: &str) -> usize {
        let n = self.server.remove_user_allocations(suffix);
        let _ = self.drain_server_events();
        n
    }

    /// A datagram on the listener or a relay socket, as [`ShardCore::handle_datagram`]; a
    /// client datagram relayed to the hosting shard's media port is returned instead of sent.
    pub fn handle_datagram_hosted(
        &mut self,
        now: Instant,
        meta: RecvMeta,
        buf: &[u8],
        tx: &mut TxQueue,
    ) -> Option<LocalRelay> {
        let now = self.now(now);
        if meta.socket == self.listener
            || (self.shard_port.is_some() && meta.socket == SHARD_LISTENER)
        {
            self.client_datagram(now, meta, buf, tx)
        } else {
            self.peer_datagram(now, meta, buf, tx);
            None
        }
    }

    /// A packet the media core queued (`meta`, `slot`: the whole send slot) to one of this
    /// shard's relayed addresses: rewritten in place into a ChannelData message or Data
    /// indication to the client, sent from the listener, as if it had come from the media port
    /// through the relay socket. `None`: not for a relay of this shard (untouched); `Some(false)`:
    /// refused (no permission, too big...; counted), drop it.
    pub fn relay_from_media(
        &mut self,
        now: Instant,
        meta: &mut crate::shard::TxMeta,
        slot: &mut [u8],
    ) -> Option<bool> {
        // In-process delivery off (or standalone): through the kernel like any peer's packet.
        let &first = self.server.in_process().first()?;
        if !self.server.has_relay(meta.dst) {
            return None;
        }
        let relay = meta.dst;
        let (off, len) = (meta.offset as usize, meta.len as usize);
        // Room for the header in front and stream padding behind (RFC 8656 §12.5).
        if PEER_HEADROOM + len + 3 > TX_SLOT_SIZE || off + len > slot.len() {
            self.count(DropReason::BufferTooSmall);
            return Some(false);
        }
        // The media address the client's permission names: the candidate the media core
        // answered from, else the first one.
        let ip = meta.src.unwrap_or(first.ip());
        // The media core writes behind the queue's headroom (`MediaShard::tx_headroom`): the
        // header goes in front of the datagram where it lies. Anything written at the slot's
        // start is moved behind the headroom first.
        let at = if off >= PEER_HEADROOM && off + len + 3 <= slot.len() {
            off
        } else {
            slot.copy_within(off..off + len, PEER_HEADROOM);
            self.moved_for_header += 1;
            PEER_HEADROOM
        };
        let now = self.now(now);
        let payload = at..at + len;
        match self.server.handle_peer(now, relay, SocketAddr::new(ip, first.port()), slot, payload)
        {
            FromPeer::ToClient { five, range } => {
                meta.dst = five.client;
                meta.src = Some(five.server.ip()).filter(|ip| !ip.is_unspecified());
                meta.socket = self.client_socket(five.server);
                meta.offset = range.start as u16;
                meta.len = range.len() as u16;
                self.in_process_to_client += 1;
                Some(true)
            }
            FromPeer::Drop(r) => {
                self.count(r);
                Some(false)
            }
        }
    }

    /// Calls `hook` about once a second (credential reloads).
    pub(crate) fn with_reload(mut self, hook: super::serve::ReloadHook) -> Self {
        self.reload = Some(hook);
        // Armed from the start: a shard that has seen no datagram yet must still reload.
        self.next_tick = Some(self.anchor);
        self
    }

    /// Publishes the counters into `cell` about once a second (read by `/metrics`).
    pub fn with_stats_cell(mut self, cell: Arc<TurnStatsCell>) -> Self {
        cell.store(&self.stats());
        self.cell = Some(cell);
        self.next_tick = Some(self.anchor);
        self
    }

    fn now(&self, t: Instant) -> Now {
        Now { mono: t, unix: self.anchor_unix + t.saturating_duration_since(self.anchor).as_secs() }
    }

    /// The counters.
    pub fn stats(&self) -> TurnShardStats {
        TurnShardStats {
            drops: self.drops,
            in_process_to_media: self.in_process_to_media,
            in_process_to_client: self.in_process_to_client,
            moved_for_header: self.moved_for_header,
            ..TurnShardStats::from_server(&self.server)
        }
    }

    /// The server (tests, reports).
    pub fn server(&self) -> &TurnServer {
        &self.server
    }

    /// A free socket id (recycled, else one past the table).
    fn take_id(&mut self) -> u32 {
        self.free_ids.pop().unwrap_or_else(|| {
            self.relay_of.push(None);
            (self.relay_of.len() - 1) as u32
        })
    }

    /// Relayed addresses opened or closed by the server -> socket requests; the id of the last
    /// socket asked to open, if any.
    fn drain_server_events(&mut self) -> Option<SocketId> {
        let mut opened = None;
        while let Some(ev) = self.server.poll_event() {
            match ev {
                TurnEvent::RelayOpened(addr) => {
                    let id = self.take_id();
                    self.relay_of[id as usize] = Some(addr);
                    self.relay_ids.insert(addr, SocketId(id));
                    self.socket_ops.push_back(SocketOp::Open { id: SocketId(id), addr });
                    opened = Some(SocketId(id));
                }
                TurnEvent::RelayProbe(addr) => {
                    let id = self.take_id();
                    self.probing.insert(id, addr);
                    self.socket_ops.push_back(SocketOp::Probe { id: SocketId(id), addr });
                    opened = Some(SocketId(id));
                }
                TurnEvent::RelayClosed(addr) => {
                    if let Some(id) = self.relay_ids.remove(&addr) {
                        self.relay_of[id.0 as usize] = None;
                        self.free_ids.push(id.0);
                        self.socket_ops.push_back(SocketOp::Close { id });
                    }
                }
            }
        }
        opened
    }

    fn count(&mut self, r: DropReason) {
        tracing::trace!(reason = r.reason(), "TURN datagram dropped");
        self.drops[drop_index(r)] += 1;
    }

    fn client_datagram(
        &mut self,
        now: Now,
        meta: RecvMeta,
        buf: &[u8],
        tx: &mut TxQueue,
    ) -> Option<LocalRelay> {
        let server_ip = meta.dst_ip.unwrap_or(self.listen.ip());
        let five = FiveTuple {
            client: meta.src,
            server: SocketAddr::new(server_ip, meta.dst_port),
            transport: Transport::Udp,
        };
        let Some(mut slot) = tx.push(meta.src) else {
            self.drops[DROP_TX_FULL] += 1;
            return None;
        };
        let r = self.server.handle_client(now, five, buf, slot.buf());
        let opened = self.drain_server_events();
        match r {
            FromClient::Reply { len } => match opened {
                // A new allocation, or a permission that made one open its socket: the answer
                // waits until the relay socket is open.
                Some(id) if len <= HELD_MAX => {
                    let mut h = Held {
                        dst: meta.src,
                        src: meta.dst_ip,
                        socket: meta.socket,
                        len,
                        bytes: [0; HELD_MAX],
                    };
                    h.bytes[..len].copy_from_slice(&slot.buf()[..len]);
                    self.held.insert(id.0, h);
                }
                _ => {
                    slot.set_source(meta.dst_ip);
                    slot.set_socket(meta.socket);
                    slot.commit(len);
                }
            },
            FromClient::Relay { relay, peer, range } => {
                if self.server.is_in_process(peer) {
                    // The hosting media core takes the payload where it lies (the slot goes
                    // back to the pool unused).
                    self.in_process_to_media += 1;
                    return Some(LocalRelay { relay, peer, range });
                }
                let Some(&id) = self.relay_ids.get(&relay) else {
                    self.drops[DROP_UNKNOWN_SOCKET] += 1;
                    return None;
                };
                let len = range.len();
                slot.buf()[..len].copy_from_slice(&buf[range]);
                slot.set_destination(peer);
                slot.set_socket(id);
                slot.commit(len);
            }
            FromClient::Drop(r) => self.count(r),
        }
        None
    }

    fn peer_datagram(&mut self, now: Now, meta: RecvMeta, buf: &[u8], tx: &mut TxQueue) {
        let Some(Some(relay)) = self.relay_of.get(meta.socket.0 as usize).copied() else {
            self.drops[DROP_UNKNOWN_SOCKET] += 1;
            return;
        };
        let len = buf.len();
        // Room for the header in front and stream padding behind (RFC 8656 §12.5).
        if PEER_HEADROOM + len + 3 > TX_SLOT_SIZE {
            self.count(DropReason::BufferTooSmall);
            return;
        }
        let Some(mut slot) = tx.push(meta.src) else {
            self.drops[DROP_TX_FULL] += 1;
            return;
        };
        let payload = PEER_HEADROOM..PEER_HEADROOM + len;
        slot.buf()[payload.clone()].copy_from_slice(buf);
        match self.server.handle_peer(now, relay, meta.src, slot.buf(), payload) {
            FromPeer::ToClient { five, range } => {
                slot.set_destination(five.client);
                slot.set_source(Some(five.server.ip()).filter(|ip| !ip.is_unspecified()));
                slot.set_socket(self.client_socket(five.server));
                slot.commit_range(range);
            }
            FromPeer::Drop(r) => self.count(r),
        }
    }
}

impl ShardCore for TurnShard {
    type Command = TurnCommand;
    type Event = TurnReport;

    fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        // Standalone (`local_media` empty): nothing is delivered in-process.
        let _ = self.handle_datagram_hosted(now, meta, buf, tx);
    }

    fn handle_command(&mut self, _now: Instant, cmd: TurnCommand, _tx: &mut TxQueue) {
        match cmd {
            TurnCommand::Report => self.report = Some(TurnReport(self.stats())),
        }
    }

    fn handle_timeout(&mut self, now: Instant, _tx: &mut TxQueue) {
        let t = self.now(now);
        if self.server.poll_timeout().is_some_and(|d| d <= now) {
            self.server.handle_timeout(t);
            let _ = self.drain_server_events();
        }
        if self.next_compact.is_none_or(|d| d <= now) {
            self.server.compact_users();
            self.next_compact = Some(now + Duration::from_secs(60));
        }
        if self.next_tick.is_some_and(|d| d <= now) {
            if let Some(hook) = self.reload.as_mut() {
                hook(&mut self.server);
            }
            if let Some(cell) = &self.cell {
                cell.store(&self.stats());
            }
            self.next_tick = Some(now + Duration::from_secs(1));
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.server.poll_timeout(), self.next_compact, self.next_tick].into_iter().flatten().min()
    }

    fn poll_event(&mut self) -> Option<TurnReport> {
        self.report.take()
    }

    fn poll_socket_op(&mut self) -> Option<SocketOp> {
        self.socket_ops.pop_front()
    }

    fn handle_socket_result(
        &mut self,
        _now: Instant,
        id: SocketId,
        result: Result<(), ErrorKind>,
        tx: &mut TxQueue,
    ) {
        let held = self.held.remove(&id.0);
        if let Some(addr) = self.probing.remove(&id.0) {
            // The id was only lent to the port check.
            self.free_ids.push(id.0);
            if result.is_err() {
                tracing::debug!(relay = %addr, "TURN relayed port taken: allocation dropped");
                self.server.relay_port_taken(addr);
                self.drain_server_events();
                return;
            }
        }
        match result {
            Ok(()) => {
                if let Some(h) = held {
                    let Some(mut slot) = tx.push(h.dst) else {
                        self.drops[DROP_TX_FULL] += 1;
                        return;
                    };
                    slot.buf()[..h.len].copy_from_slice(&h.bytes[..h.len]);
                    slot.set_source(h.src);
                    slot.set_socket(h.socket);
                    slot.commit(h.len);
                }
            }
            Err(err) => {
                // The relayed address cannot be served (its port is taken: a reservation
                // redeemed on another shard, another process): end the allocation and say
                // nothing, the client retransmits its Allocate and gets another port; or, for
                // a socket opened lazily, keep the allocation in-process only (see
                // `TurnServer::relay_open_failed`).
                let Some(Some(addr)) = self.relay_of.get(id.0 as usize).copied() else { return };
                tracing::debug!(relay = %addr, error = ?err, "cannot open a TURN relay socket");
                if !self.server.relay_open_failed(addr) {
                    // Opened lazily: the allocation lives on without a socket; forget the id
                    // (nothing is open under it) and drop the held answer.
                    self.relay_ids.remove(&addr);
                    self.relay_of[id.0 as usize] = None;
                    self.free_ids.push(id.0);
                }
                self.drain_server_events();
            }
        }
    }
}
