//! The data-plane I/O shells: one per backend, one behaviour.
//!
//! Each shard runs one loop over its UDP socket (plus the sockets its core opens through
//! [`crate::shard::SocketOp`]) and drives one [`crate::shard::ShardCore`]:
//!
//! - [`uring`]: one io_uring per shard. Multishot RECVMSG into a provided buffer ring, SENDMSG
//!   SQEs from the [`crate::shard::TxQueue`] slots submitted once per turn, the command eventfd
//!   polled in the same ring, the core's next deadline as the wait timeout.
//! - [`epoll`]: `mio::Poll` + `recvmmsg`/`sendmmsg` batches over preallocated buffers, the same
//!   eventfd, the deadline as the poll timeout.
//!
//! Both coalesce consecutive equal-size datagrams to one destination into a UDP GSO send
//! (`UDP_SEGMENT`) and step down to plain sends if the kernel refuses GSO at run time.
//! [`probe::choose_backend`] picks the backend at start-up (`[media] io_backend`) and logs it.
//!
//! Kernel features relied on: io_uring with IORING_FEAT_EXT_ARG (5.11), provided buffer rings
//! (5.19), multishot RECVMSG (6.0), multishot POLL_ADD, ASYNC_CANCEL with CANCEL_ANY (5.19);
//! SINGLE_ISSUER + DEFER_TASKRUN (6.1) when available, else COOP_TASKRUN, else a plain ring.
//! UDP_SEGMENT (GSO, 4.18) and UDP_GRO (5.0) when the socket accepts them; IP_PKTINFO and
//! IPV6_RECVPKTINFO always. The epoll backend needs only recvmmsg/sendmmsg and eventfd.

pub mod epoll;
pub mod probe;
pub mod socket;
pub(crate) mod sys;
pub mod uring;

mod batch;
pub(crate) mod driver;
mod runner;

pub use probe::{UringSupport, choose_backend, probe_uring};
pub use runner::{
    ShardHandle, ShardHandles, ShardInfo, ShardOptions, SpawnError, spawn_shards, spawn_shards_with,
};
pub use socket::{SocketInfo, bind_udp, set_dont_fragment};

/// Tunables of one shard's I/O loop (defaults suit a media shard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoOptions {
    /// Send slots in the [`crate::shard::TxQueue`] pool.
    pub tx_slots: usize,
    /// Receive buffers (io_uring: provided-buffer ring entries, a power of two; epoll: the
    /// `recvmmsg` batch is `min(this, 64)`).
    pub rx_buffers: usize,
    /// Command queue capacity (control plane -> shard).
    pub command_capacity: usize,
    /// Event queue capacity (shard -> control plane).
    pub event_capacity: usize,
    /// Enable UDP_GRO on the socket (receive buffers grow to 64 KiB each).
    pub gro: bool,
    /// Use UDP GSO for runs of equal-size datagrams to one destination (when the kernel has it).
    pub gso: bool,
    /// Socket buffer sizes requested (the kernel may cap them at `net.core.[rw]mem_max`).
    pub socket_buffer: usize,
    /// Buffer sizes of the sockets a core opens ([`crate::shard::SocketOp`], e.g. TURN relayed
    /// addresses: many sockets, each with little traffic).
    pub extra_socket_buffer: usize,
    /// Max datagrams handled per loop turn before sends are flushed.
    pub budget: usize,
    /// Send with the don't-fragment bit from the shard's own socket and the listeners its core
    /// opens ([`socket::set_dont_fragment`]); not from the sockets opened with
    /// `SocketOp::Open` (TURN relays carry whatever their clients send). Off by default (the
    /// kernel fragments an IPv4 datagram above the path MTU); `[media] dont_fragment`.
    pub dont_fragment: bool,
    /// Test hook, not API: the first GSO send fails with this errno without reaching the kernel
    /// (to exercise the run-time step-down, which real hardware triggers with EIO).
    #[doc(hidden)]
    pub inject_gso_error: Option<i32>,
}

impl Default for IoOptions {
    fn default() -> Self {
        IoOptions {
            tx_slots: 2048,
            rx_buffers: 1024,
            command_capacity: 1024,
            event_capacity: 4096,
            gro: false,
            gso: true,
            socket_buffer: 8 << 20,
            extra_socket_buffer: 256 << 10,
            budget: 512,
            dont_fragment: false,
            inject_gso_error: None,
        }
    }
}

/// Payload bytes per receive buffer without GRO.
pub(crate) const RX_PAYLOAD: usize = 2048;
/// Payload bytes per receive buffer with GRO (the largest coalesced buffer).
pub(crate) const RX_PAYLOAD_GRO: usize = 65536;
/// Upper bound on segments per GSO send (the kernel's UDP_MAX_SEGMENTS is 64, or 128 since 6.9).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;
/// Upper bound on bytes per GSO send (IPv4 payload limit, with margin).
pub(crate) const GSO_MAX_BYTES: usize = 65000;
