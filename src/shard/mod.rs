//! The per-core data-plane endpoint contract (sans-IO): what a core implements and what the
//! shells in `crate::io` give it (they also start the shard threads: `crate::io::spawn_shards`).
//! Nothing here imports `crate::io`.
//!
//! A shard is one pinned OS thread that owns one UDP socket (`[media] port_base + index`, its
//! [`SocketId::MAIN`]) plus any sockets its core opens ([`SocketOp`]: TURN relayed addresses), one
//! I/O backend (`crate::io::uring` or `crate::io::epoll`) and one protocol core implementing
//! [`ShardCore`]. The core never sees a socket, a thread or a clock: the shell hands it `now`,
//! the received bytes and a [`TxQueue`] to write its answers into.
//!
//! # The run loop every backend implements (one "turn")
//!
//! 1. Take `now` once. If the shutdown flag is set, stop.
//! 2. Control commands first (bounded per turn): for each [`ShardCore::Command`] popped from
//!    the SPSC command queue call [`ShardCore::handle_command`], then drain
//!    [`ShardCore::poll_event`].
//! 3. Timers: when [`ShardCore::poll_timeout`] is due (`<= now`) call
//!    [`ShardCore::handle_timeout`], then drain [`ShardCore::poll_event`].
//! 4. Datagrams (bounded per turn): for each received datagram call
//!    [`ShardCore::handle_datagram`] with a [`RecvMeta`] and the receive buffer lent *mutably*
//!    (decrypt in place). A GRO-coalesced buffer is split by the shell: the core always gets one
//!    datagram per call. The buffer goes back to the kernel as soon as the call returns; a core
//!    that wants to keep bytes copies them. Drain [`ShardCore::poll_event`] after each call.
//!    Then (4b) messages other shards' cores wrote to this one through the shard mesh
//!    ([`ShardCore::handle_mesh`], one at a time, bounded by the same per-turn work and with
//!    the same mid-turn transmit relief).
//! 5. Transmit: everything the core committed to the [`TxQueue`] during steps 2-4 is turned into
//!    kernel sends once per turn (io_uring SENDMSG SQEs or one `sendmmsg`), consecutive packets
//!    of equal size to one destination coalesced into one UDP GSO send. A slot lent to the kernel
//!    returns to the pool only when the kernel is done with it. When the pool falls below half
//!    its capacity during step 4 (a packet fanned out to hundreds of subscribers takes a slot
//!    each), the shell flushes right away and takes the completed slots back before the next
//!    datagram (a *relief*, counted in `tx_reliefs`).
//!    Socket requests ([`ShardCore::poll_socket_op`]) are drained with the events and carried
//!    out before the turn's sends: a socket opened while handling a datagram is bound before
//!    the answer to that datagram leaves.
//! 6. Wake the shards this core wrote to ([`ShardCore::flush_mesh`]), publish counters, wake
//!    the control plane if events were queued, ask
//!    [`ShardCore::poll_timeout`] for the next deadline and sleep in the kernel until a datagram,
//!    a command wake or that deadline (capped at one second so the turn counter, the stuck-loop
//!    indicator, keeps moving).
//!
//! # How a protocol core plugs in
//!
//! 1. Implement [`ShardCore`] for the per-shard endpoint (ICE/DTLS/SRTP/router, TURN...). Pick a
//!    `Command` type (what the control plane asks: add a transport, a subscriber...) and an
//!    `Event` type (what it reports back: ICE connected, DTLS failed, stats...).
//! 2. Write outputs with [`TxQueue::push`] (write into the lent slot, then
//!    [`TxSlot::commit`]) or [`TxQueue::send`] (copy). When the pool is exhausted `push` returns
//!    `None`: drop the packet (the queue counts it), never block or allocate.
//! 3. Keep a deadline table and report its minimum from `poll_timeout` (no timer objects).
//! 4. Start the shards with [`spawn_shards`](crate::io::spawn_shards), giving a factory that builds one core per shard
//!    inside that shard's thread; talk to each shard through its [`ShardHandle`](crate::io::ShardHandle).
//! 5. Unit-test the core without sockets: build a [`TxQueue`] with [`TxQueue::new`], call the
//!    `handle_*` methods with a virtual clock and read what it sent with
//!    [`TxQueue::pop_pending`].
//!
//! # Rules
//!
//! No allocation, lock or syscall per packet in the core or the shells; every queue is bounded
//! and a full queue means a counted drop ([`DropReason`]); a malformed datagram is dropped and
//! counted by the core, never a panic.

mod channel;
mod eventfd;
pub mod mesh;
pub(crate) mod stats;
mod tx;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

pub use channel::{CommandSender, EventReceiver, EventWaker, SendError, any_wake};
pub use stats::{DropReason, ShardStats, ShardStatsSnapshot, TURN_BUCKETS_US};
pub use tx::{MAX_HEADROOM, TX_SLOT_SIZE, TxFull, TxMeta, TxQueue, TxSlot};

/// Which socket of a shard a datagram arrived on or leaves from: [`SocketId::MAIN`] is the
/// socket the shard was started with; the others are opened by the core ([`SocketOp`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u32);

impl SocketId {
    /// The shard's own socket.
    pub const MAIN: SocketId = SocketId(0);
    /// Ids are below this (the shells keep the id in 24 bits of a completion token).
    pub const LIMIT: u32 = 1 << 24;
}

/// A socket the core wants opened or closed (drained with [`ShardCore::poll_socket_op`]).
///
/// The core chooses the ids (small integers, reused freely: the shells tell an old socket's
/// late completions from a new one's). An id must not be [`SocketId::MAIN`] and must be below
/// [`SocketId::LIMIT`]. Sends on a closed or never-opened id are dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketOp {
    /// Bind a UDP socket on `addr` (no SO_REUSEPORT, the I/O options' `extra_socket_buffer`)
    /// and receive on it. The outcome comes back through [`ShardCore::handle_socket_result`]
    /// before any datagram the core queued after asking is sent.
    Open { id: SocketId, addr: SocketAddr },
    /// As `Open`, but with the shard's own buffer size (the I/O options' `socket_buffer`):
    /// a busy listener, e.g. TURN hosted by the media shards. `shared`: with SO_REUSEPORT, a
    /// port every shard binds (the kernel spreads client 5-tuples over them); without it, a
    /// port of this shard alone.
    Listen { id: SocketId, addr: SocketAddr, shared: bool },
    /// Stop receiving and close. Datagrams still queued for it are dropped.
    Close { id: SocketId },
    /// Check that `addr` can be bound: bind a socket as `Open` would and close it at once. The
    /// outcome comes back through [`ShardCore::handle_socket_result`] for `id` (which names no
    /// socket afterwards). For addresses a core will only open later, if at all (TURN's lazy
    /// relay sockets), so that a port another process holds is found while it can still be
    /// given up.
    Probe { id: SocketId, addr: SocketAddr },
}

pub(crate) use channel::{CommandQueue, EventQueue, channel_pair};

/// What the shell knows about one received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    /// The peer's address (IPv4-mapped IPv6 addresses are reported as IPv4).
    pub src: SocketAddr,
    /// The local address the datagram was sent to (IP_PKTINFO / IPV6_PKTINFO), when known.
    /// Answer from this address (set it as the source of the reply) on multi-homed hosts.
    pub dst_ip: Option<IpAddr>,
    /// The local port of the socket it arrived on.
    pub dst_port: u16,
    /// The socket it arrived on ([`SocketId::MAIN`] unless the core opened others).
    pub socket: SocketId,
    /// Length of this datagram (`buf.len()`).
    pub len: usize,
    /// GRO segment size of the coalesced buffer this datagram was cut from; equal to `len` when
    /// the kernel did not coalesce.
    pub stride: usize,
}

/// A sans-IO per-shard protocol endpoint, driven by an I/O shell (see the module docs for the
/// run loop). All methods run on the shard's thread; the core is not shared.
pub trait ShardCore: 'static {
    /// A control-plane request, delivered through a bounded SPSC queue.
    type Command: Send + 'static;
    /// A report to the control plane, drained with [`ShardCore::poll_event`].
    type Event: Send + 'static;

    /// One received datagram. `buf` is lent mutably for in-place processing (SRTP decrypt,
    /// header rewrite) and reclaimed when the call returns.
    fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue);

    /// One control command.
    fn handle_command(&mut self, now: Instant, cmd: Self::Command, tx: &mut TxQueue);

    /// Called when the deadline returned by [`ShardCore::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Instant, tx: &mut TxQueue);

    /// The earliest instant the core wants [`ShardCore::handle_timeout`] called; `None`: no timer.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next event for the control plane, if any. The shell drains this after every
    /// `handle_*` call. When the event queue is full the event is dropped and counted
    /// ([`DropReason::EventQueueFull`]).
    fn poll_event(&mut self) -> Option<Self::Event> {
        None
    }

    /// Whether messages from other shards wait in this core's mesh rings
    /// ([`mesh::MeshPort`]); the shell does not sleep while they do.
    fn has_mesh_input(&self) -> bool {
        false
    }

    /// One message from another shard's core (the mesh), if one waits: handled like a
    /// datagram (step 4b of the run loop, bounded by the same per-turn work). False when none
    /// waited.
    fn handle_mesh(&mut self, _now: Instant, _tx: &mut TxQueue) -> bool {
        false
    }

    /// Before the shell sleeps (step 6): wake the shards this core wrote to this turn.
    fn flush_mesh(&mut self) {}

    /// Bytes the shell's [`TxQueue`] keeps free in front of what [`TxSlot::room`] lends
    /// ([`TxQueue::set_headroom`]), asked once when the shard starts.
    fn tx_headroom(&self) -> usize {
        0
    }

    /// The next socket to open or close, if any; drained with the events.
    fn poll_socket_op(&mut self) -> Option<SocketOp> {
        None
    }

    /// The outcome of `SocketOp::Open` (or `Listen`) for `id`: `Ok` once it is bound and receiving, `Err` if
    /// it could not be opened (the id is free again). Called in the turn of the request, before
    /// that turn's sends leave.
    fn handle_socket_result(
        &mut self,
        _now: Instant,
        _id: SocketId,
        _result: Result<(), std::io::ErrorKind>,
        _tx: &mut TxQueue,
    ) {
    }
}
