//! The TURN server as a shard core: [`TurnShard`] drives one [`TurnServer`] inside a data-plane
//! shard (sans-IO: the shell lends buffers and passes `now`).
//!
//! Sockets: [`SocketId::MAIN`] is the shard's TURN listener (UDP `[turn] port`, SO_REUSEPORT in
//! every shard, so the kernel keeps each client 5-tuple on one shard); every allocation's
//! relayed address is one more socket of the same shard, opened and closed through
//! [`SocketOp`] when the server reports [`TurnEvent::RelayOpened`] / `RelayClosed`. Socket ids
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
        }
    }
}

/// Labels of [`TurnShardStats::drops`].
pub const DROP_LABELS: [&str; 11] = [
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
    }
}
const DROP_TX_FULL: usize = 9;
const DROP_UNKNOWN_SOCKET: usize = 10;

/// An Allocate success held until its relay socket is open.
struct Held {
    dst: SocketAddr,
    src: Option<std::net::IpAddr>,
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
    /// Allocate answers waiting for their relay socket to open (by socket id).
    held: HashMap<u32, Held>,
    report: Option<TurnReport>,
    drops: [u64; DROP_LABELS.len()],
    relay_open_failed: u64,
    next_compact: Option<Instant>,
    reload: Option<super::serve::ReloadHook>,
    /// Where the counters are published for `/metrics`.
    cell: Option<Arc<TurnStatsCell>>,
    /// The once-a-second housekeeping (credential reload, counters published); `None` when
    /// neither is attached.
    next_tick: Option<Instant>,
}

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
            report: None,
            drops: [0; DROP_LABELS.len()],
            relay_open_failed: 0,
            next_compact: None,
            reload: None,
            cell: None,
            next_tick: None,
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
            relay_open_failed: self.relay_open_failed,
            ..TurnShardStats::from_server(&self.server)
        }
    }

    /// The server (tests, reports).
    pub fn server(&self) -> &TurnServer {
        &self.server
    }

    /// Relayed addresses opened or closed by the server -> socket requests; the id of the last
    /// socket asked to open, if any.
    fn drain_server_events(&mut self) -> Option<SocketId> {
        let mut opened = None;
        while let Some(ev) = self.server.poll_event() {
            match ev {
                TurnEvent::RelayOpened(addr) => {
                    let id = match self.free_ids.pop() {
                        Some(id) => id,
                        None => {
                            self.relay_of.push(None);
                            (self.relay_of.len() - 1) as u32
                        }
                    };
                    self.relay_of[id as usize] = Some(addr);
                    self.relay_ids.insert(addr, SocketId(id));
                    self.socket_ops.push_back(SocketOp::Open { id: SocketId(id), addr });
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

    fn client_datagram(&mut self, now: Now, meta: RecvMeta, buf: &[u8], tx: &mut TxQueue) {
        let server_ip = meta.dst_ip.unwrap_or(self.listen.ip());
        let five = FiveTuple {
            client: meta.src,
            server: SocketAddr::new(server_ip, meta.dst_port),
            transport: Transport::Udp,
        };
        let Some(mut slot) = tx.push(meta.src) else {
            self.drops[DROP_TX_FULL] += 1;
            return;
        };
        let r = self.server.handle_client(now, five, buf, slot.buf());
        let opened = self.drain_server_events();
        match r {
            FromClient::Reply { len } => match opened {
                // A new allocation: its answer waits until the relay socket is open.
                Some(id) if len <= HELD_MAX => {
                    let mut h = Held { dst: meta.src, src: meta.dst_ip, len, bytes: [0; HELD_MAX] };
                    h.bytes[..len].copy_from_slice(&slot.buf()[..len]);
                    self.held.insert(id.0, h);
                }
                _ => {
                    slot.set_source(meta.dst_ip);
                    slot.commit(len);
                }
            },
            FromClient::Relay { relay, peer, range } => {
                let Some(&id) = self.relay_ids.get(&relay) else {
                    self.drops[DROP_UNKNOWN_SOCKET] += 1;
                    return;
                };
                let len = range.len();
                slot.buf()[..len].copy_from_slice(&buf[range]);
                slot.set_destination(peer);
                slot.set_socket(id);
                slot.commit(len);
            }
            FromClient::Drop(r) => self.count(r),
        }
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
        let now = self.now(now);
        if meta.socket == SocketId::MAIN {
            self.client_datagram(now, meta, buf, tx);
        } else {
            self.peer_datagram(now, meta, buf, tx);
        }
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
        match result {
            Ok(()) => {
                if let Some(h) = held
                    && tx.send(h.dst, h.src, &h.bytes[..h.len]).is_err()
                {
                    self.drops[DROP_TX_FULL] += 1;
                }
            }
            Err(err) => {
                // The relayed address cannot be served (its port is taken: a reservation
                // redeemed on another shard, another process): end the allocation and say
                // nothing; the client retransmits its Allocate and gets another port.
                self.relay_open_failed += 1;
                let Some(Some(addr)) = self.relay_of.get(id.0 as usize).copied() else { return };
                tracing::debug!(relay = %addr, error = ?err, "cannot open a TURN relay socket");
                self.server.remove_relay(addr);
                self.drain_server_events();
            }
        }
    }
}
