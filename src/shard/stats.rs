//! Per-shard counters, written by the owning shard thread only and read by anyone.
//!
//! The owner updates with a Relaxed load + Relaxed store (a plain `mov` on x86, no locked
//! instruction, no contention: one writer); readers use Relaxed loads. Counters are published
//! once per loop turn from the shell's local tallies.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::config::IoBackend;

/// Why a packet (or event) was dropped by the shell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Received datagram larger than the receive buffer.
    RxTruncated = 0,
    /// The kernel's receive metadata could not be parsed (address family, header).
    RxMalformed,
    /// The kernel had no receive buffer left (io_uring ENOBUFS); datagrams waited in the socket
    /// or were dropped by it.
    RxNoBuffer,
    /// The core asked for a send slot while the pool was exhausted.
    TxQueueFull,
    /// The kernel refused a send (unreachable, message too long, ...).
    TxError,
    /// The event queue to the control plane was full.
    EventQueueFull,
    /// A send named a socket the shard does not have (closed, or never opened).
    TxNoSocket,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 7] = [
        DropReason::RxTruncated,
        DropReason::RxMalformed,
        DropReason::RxNoBuffer,
        DropReason::TxQueueFull,
        DropReason::TxError,
        DropReason::EventQueueFull,
        DropReason::TxNoSocket,
    ];

    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::RxTruncated => "rx_truncated",
            DropReason::RxMalformed => "rx_malformed",
            DropReason::RxNoBuffer => "rx_no_buffer",
            DropReason::TxQueueFull => "tx_queue_full",
            DropReason::TxError => "tx_error",
            DropReason::EventQueueFull => "event_queue_full",
            DropReason::TxNoSocket => "tx_no_socket",
        }
    }
}

const NREASONS: usize = DropReason::ALL.len();

/// Upper bounds, in microseconds, of the loop-turn histogram's buckets (the work of a turn,
/// its sleep in the kernel excluded); a last bucket holds the longer turns. 20 ms is what a
/// turn may take while a room fills or empties without anyone's media noticing.
pub const TURN_BUCKETS_US: [u64; 7] = [1_000, 5_000, 20_000, 50_000, 100_000, 500_000, 1_000_000];

const NBUCKETS: usize = TURN_BUCKETS_US.len() + 1;

/// The shared counters of one shard. Cache-line aligned so two shards never share a line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    /// Sends carrying more than one datagram (UDP GSO).
    tx_gso_sends: AtomicU64,
    /// Datagrams those GSO sends carried.
    tx_gso_datagrams: AtomicU64,
    /// Mid-turn flushes because the transmit pool ran low (large fanouts).
    tx_reliefs: AtomicU64,
    /// Loop turns: the stuck-loop indicator (advances at least once per second while healthy).
    turns: AtomicU64,
    /// Turns that exceeded the overrun threshold.
    overruns: AtomicU64,
    /// Turns by how long their work took ([`TURN_BUCKETS_US`], then the rest).
    turn_hist: [AtomicU64; NBUCKETS],
    /// The work of every turn, microseconds.
    turn_us: AtomicU64,
    /// The longest turn so far, microseconds.
    turn_max_us: AtomicU64,
    drops: [AtomicU64; NREASONS],
    backend: AtomicU8,
    gso: AtomicU8,
}

/// A point-in-time copy of [`ShardStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardStatsSnapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_gso_sends: u64,
    pub tx_gso_datagrams: u64,
    pub tx_reliefs: u64,
    pub turns: u64,
    pub overruns: u64,
    /// Turns per bucket of [`TURN_BUCKETS_US`] (not cumulative; the last: longer ones).
    pub turn_hist: [u64; NBUCKETS],
    /// The work of every turn, microseconds.
    pub turn_us: u64,
    /// The longest turn so far, microseconds.
    pub turn_max_us: u64,
    /// Indexed by `DropReason as usize`.
    pub drops: [u64; NREASONS],
    /// `Uring` or `Epoll` once the shard runs (`Auto` before).
    pub backend: IoBackend,
    /// Whether UDP GSO is in use (false after a run-time step-down).
    pub gso: bool,
}

impl ShardStatsSnapshot {
    /// Drops for one reason.
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

/// Local tallies of one loop turn, published with [`ShardStats::publish`].
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_gso_sends: u64,
    pub tx_gso_datagrams: u64,
    pub tx_reliefs: u64,
    pub drops: [u64; NREASONS],
}

impl Tally {
    pub fn drop(&mut self, r: DropReason, n: u64) {
        self.drops[r as usize] += n;
    }
}

#[inline]
pub(crate) fn bump(c: &AtomicU64, n: u64) {
    if n != 0 {
        // Single writer: load + store is enough and avoids a locked instruction.
        c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
    }
}

impl ShardStats {
    /// Read every counter.
    pub fn snapshot(&self) -> ShardStatsSnapshot {
        let mut drops = [0; NREASONS];
        for (d, c) in drops.iter_mut().zip(&self.drops) {
            *d = c.load(Relaxed);
        }
        let mut turn_hist = [0; NBUCKETS];
        for (d, c) in turn_hist.iter_mut().zip(&self.turn_hist) {
            *d = c.load(Relaxed);
        }
        ShardStatsSnapshot {
            rx_packets: self.rx_packets.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_packets: self.tx_packets.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_gso_sends: self.tx_gso_sends.load(Relaxed),
            tx_gso_datagrams: self.tx_gso_datagrams.load(Relaxed),
            tx_reliefs: self.tx_reliefs.load(Relaxed),
            turns: self.turns.load(Relaxed),
            overruns: self.overruns.load(Relaxed),
            turn_hist,
            turn_us: self.turn_us.load(Relaxed),
            turn_max_us: self.turn_max_us.load(Relaxed),
            drops,
            backend: match self.backend.load(Relaxed) {
                1 => IoBackend::Uring,
                2 => IoBackend::Epoll,
                _ => IoBackend::Auto,
            },
            gso: self.gso.load(Relaxed) != 0,
        }
    }

    /// The loop-turn counter alone (for a watchdog).
    pub fn turns(&self) -> u64 {
        self.turns.load(Relaxed)
    }

    // ---- owner side ----

    pub(crate) fn publish(&self, t: &mut Tally) {
        bump(&self.rx_packets, t.rx_packets);
        bump(&self.rx_bytes, t.rx_bytes);
        bump(&self.tx_packets, t.tx_packets);
        bump(&self.tx_bytes, t.tx_bytes);
        bump(&self.tx_gso_sends, t.tx_gso_sends);
        bump(&self.tx_gso_datagrams, t.tx_gso_datagrams);
        bump(&self.tx_reliefs, t.tx_reliefs);
        for (c, n) in self.drops.iter().zip(t.drops) {
            bump(c, n);
        }
        *t = Tally::default();
    }

    /// One loop turn whose work took `us` microseconds.
    pub(crate) fn turn(&self, us: u64, overrun: bool) {
        bump(&self.turns, 1);
        if overrun {
            bump(&self.overruns, 1);
        }
        let b = TURN_BUCKETS_US.iter().position(|&bound| us <= bound).unwrap_or(NBUCKETS - 1);
        bump(&self.turn_hist[b], 1);
        bump(&self.turn_us, us);
        // Single writer: a plain compare and store.
        if us > self.turn_max_us.load(Relaxed) {
            self.turn_max_us.store(us, Relaxed);
        }
    }

    pub(crate) fn set_backend(&self, b: IoBackend) {
        let v = match b {
            IoBackend::Auto => 0,
            IoBackend::Uring => 1,
            IoBackend::Epoll => 2,
        };
        self.backend.store(v, Relaxed);
    }

    pub(crate) fn set_gso(&self, on: bool) {
        self.gso.store(on as u8, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_land_in_their_buckets_with_sum_and_max() {
        let s = ShardStats::default();
        for us in [0, 1_000, 1_001, 20_000, 20_001, 2_000_000] {
            s.turn(us, us > 50_000);
        }
        let snap = s.snapshot();
        assert_eq!(snap.turn_hist, [2, 1, 1, 1, 0, 0, 0, 1]);
        assert_eq!((snap.turns, snap.overruns), (6, 1));
        assert_eq!(snap.turn_us, 1_000 + 1_001 + 20_000 + 20_001 + 2_000_000);
        assert_eq!(snap.turn_max_us, 2_000_000);
    }
}
