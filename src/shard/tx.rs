//! The transmit queue: a fixed pool of send slots lent to the core, and the ordered list of
//! committed packets the shell turns into kernel sends.
//!
//! Slot life cycle: free -> lent to the core ([`TxSlot`]) -> pending (committed, waiting for the
//! shell) -> in flight (owned by the kernel until its completion) -> free. Nothing allocates
//! after [`TxQueue::new`].

use std::collections::VecDeque;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use super::SocketId;

/// Bytes per send slot: one MTU-sized datagram plus TURN/SRTP headroom.
pub const TX_SLOT_SIZE: usize = 2048;

/// The descriptor of one committed packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxMeta {
    /// Where the datagram goes.
    pub dst: SocketAddr,
    /// Source address to send from (IP_PKTINFO), `None`: let routing decide.
    pub src: Option<IpAddr>,
    /// Datagram length in the slot.
    pub len: u16,
    /// Where the datagram starts in the slot ([`TxSlot::commit_range`]).
    pub offset: u16,
    /// The socket to send from.
    pub socket: SocketId,
}

const UNSET: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// The pool is exhausted; the packet was not queued (and was counted as dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFull;

impl fmt::Display for TxFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("transmit pool exhausted")
    }
}

impl std::error::Error for TxFull {}

/// A bounded pool of preallocated send slots (see the module docs).
pub struct TxQueue {
    buf: Box<[u8]>,
    meta: Box<[TxMeta]>,
    /// Per slot: never coalesce into a GSO send (a GSO send of it was refused for its path).
    solo: Box<[bool]>,
    /// Per slot: part of a stream to one destination that is worth a GSO train
    /// ([`TxSlot::set_train`]); [`TxQueue::gather_trains`] puts such packets side by side.
    train: Box<[bool]>,
    /// Train packets committed since the last [`TxQueue::gather_trains`].
    trains_new: usize,
    /// [`TxQueue::gather_trains`]'s working list (capacity: every slot; never grows).
    scratch: Vec<u32>,
    free: Vec<u32>,
    pending: VecDeque<u32>,
    dropped_full: u64,
    dropped_oversize: u64,
    /// Bytes left free in front of what [`TxSlot::room`] lends (see [`TxQueue::set_headroom`]).
    headroom: usize,
}

/// Largest headroom a queue keeps in front of its datagrams.
pub const MAX_HEADROOM: usize = 128;

impl fmt::Debug for TxQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxQueue")
            .field("capacity", &self.capacity())
            .field("free", &self.free.len())
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl TxQueue {
    /// A pool of `slots` slots of [`TX_SLOT_SIZE`] bytes (at least 1, at most 65536).
    pub fn new(slots: usize) -> Self {
        let slots = slots.clamp(1, 1 << 16);
        TxQueue {
            buf: vec![0u8; slots * TX_SLOT_SIZE].into_boxed_slice(),
            meta: vec![
                TxMeta { dst: UNSET, src: None, len: 0, offset: 0, socket: SocketId::MAIN };
                slots
            ]
            .into_boxed_slice(),
            solo: vec![false; slots].into_boxed_slice(),
            train: vec![false; slots].into_boxed_slice(),
            trains_new: 0,
            scratch: Vec::with_capacity(slots),
            // Reversed so that slot 0 is lent first (cache-friendly, deterministic in tests).
            free: (0..slots as u32).rev().collect(),
            pending: VecDeque::with_capacity(slots),
            dropped_full: 0,
            dropped_oversize: 0,
            headroom: 0,
        }
    }

    /// Leave `bytes` (at most [`MAX_HEADROOM`]) free in front of every datagram written through
    /// [`TxSlot::room`], so a header can be put in front of it later in the same slot without
    /// moving it (a media shard's packets to a client of its own TURN server: the ChannelData or
    /// Data-indication header).
    pub fn set_headroom(&mut self, bytes: usize) {
        self.headroom = bytes.min(MAX_HEADROOM);
    }

    /// See [`TxQueue::set_headroom`].
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// Total number of slots.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Slots that can be lent right now.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Committed packets the shell has not yet handed to the kernel.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Lend a free slot for a datagram to `dst`. Write into [`TxSlot::buf`], then
    /// [`TxSlot::commit`]. `None` (counted as a drop) when every slot is in use.
    pub fn push(&mut self, dst: SocketAddr) -> Option<TxSlot<'_>> {
        match self.free.pop() {
            Some(idx) => {
                self.solo[idx as usize] = false;
                self.train[idx as usize] = false;
                self.meta[idx as usize] =
                    TxMeta { dst, src: None, len: 0, offset: 0, socket: SocketId::MAIN };
                Some(TxSlot { q: self, idx })
            }
            None => {
                self.dropped_full += 1;
                None
            }
        }
    }

    /// Copy `data` into a slot and commit it. For cores that already hold the bytes.
    pub fn send(
        &mut self,
        dst: SocketAddr,
        src: Option<IpAddr>,
        data: &[u8],
    ) -> Result<(), TxFull> {
        if data.len() > TX_SLOT_SIZE {
            self.dropped_oversize += 1;
            return Err(TxFull);
        }
        let mut slot = self.push(dst).ok_or(TxFull)?;
        slot.buf()[..data.len()].copy_from_slice(data);
        slot.set_source(src);
        slot.commit(data.len());
        Ok(())
    }

    /// Take the oldest committed packet out of the queue and free its slot; the closure sees
    /// the descriptor and the bytes. For sans-IO tests and simulators (the shells use the
    /// crate-internal in-flight API instead).
    pub fn pop_pending<R>(&mut self, f: impl FnOnce(&TxMeta, &[u8]) -> R) -> Option<R> {
        let idx = self.pending.pop_front()?;
        let m = self.meta[idx as usize];
        let (o, l) = (m.offset as usize, m.len as usize);
        let r = f(&m, &self.slot(idx)[o..o + l]);
        self.free.push(idx);
        Some(r)
    }

    /// Packets refused because the pool was exhausted (or the data did not fit), since the last
    /// call. The shell moves this into the shard counters.
    pub fn take_dropped(&mut self) -> u64 {
        let n = self.dropped_full + self.dropped_oversize;
        self.dropped_full = 0;
        self.dropped_oversize = 0;
        n
    }

    fn slot(&self, idx: u32) -> &[u8] {
        let start = idx as usize * TX_SLOT_SIZE;
        &self.buf[start..start + TX_SLOT_SIZE]
    }

    /// Walks the packets committed at pending positions `from..` (those a core queued during
    /// one call, `from` being [`TxQueue::pending_len`] before it): `f` sees each one's
    /// descriptor and whole slot and may change both, e.g. to hand a packet from one core of a
    /// composed shard to the other in place; `false` drops the packet (its slot is freed).
    /// Order is kept.
    pub(crate) fn rewrite_pending(
        &mut self,
        from: usize,
        mut f: impl FnMut(&mut TxMeta, &mut [u8]) -> bool,
    ) {
        let mut k = from;
        // Bounded: every step advances `k` or shortens the queue.
        while k < self.pending.len() {
            let idx = self.pending[k];
            let start = idx as usize * TX_SLOT_SIZE;
            if f(&mut self.meta[idx as usize], &mut self.buf[start..start + TX_SLOT_SIZE]) {
                k += 1;
            } else {
                self.pending.remove(k);
                self.free.push(idx);
            }
        }
    }

    /// Puts the pending train packets ([`TxSlot::set_train`]) side by side, behind the other
    /// pending packets: grouped by socket, source and destination (groups in the order of their
    /// first packet), each group in the order it was committed, so that [`next_run`] finds
    /// them as runs for GSO. The other packets keep their order; order between different
    /// destinations carries no meaning. The shells call it before they turn the queue into
    /// sends. No allocation: the working list was sized for every slot.
    ///
    /// A relay leg to another node is one destination fed by every packet of a publisher's
    /// tracks, but a fanout writes each input packet to every leg before the next one, so its
    /// packets are interleaved with the local legs' in the queue and never form runs by
    /// themselves.
    ///
    /// [`next_run`]: crate::io::batch
    pub fn gather_trains(&mut self) {
        if std::mem::take(&mut self.trains_new) < 2 {
            return;
        }
        const TAKEN: u32 = u32::MAX;
        let (train, scratch) = (&self.train, &mut self.scratch);
        scratch.clear();
        self.pending.retain(|&i| {
            if train[i as usize] {
                scratch.push(i);
                false
            } else {
                true
            }
        });
        // Few destinations (one per other node): a pass per group is cheaper than a sort.
        let n = self.scratch.len();
        for i in 0..n {
            let a = self.scratch[i];
            if a == TAKEN {
                continue;
            }
            let k = self.meta[a as usize];
            for j in i..n {
                let b = self.scratch[j];
                if b == TAKEN {
                    continue;
                }
                let m = &self.meta[b as usize];
                if m.dst == k.dst && m.src == k.src && m.socket == k.socket {
                    self.pending.push_back(b);
                    self.scratch[j] = TAKEN;
                }
            }
        }
    }

    // ---- shell side (crate-internal) ----

    /// The `n`-th pending slot index from the front.
    pub(crate) fn pending_at(&self, n: usize) -> Option<u32> {
        self.pending.get(n).copied()
    }

    /// Remove the `n` oldest pending packets (they are now in flight; the shell owns them until
    /// it calls [`TxQueue::release`]).
    pub(crate) fn take_pending(&mut self, n: usize) {
        self.pending.drain(..n);
    }

    /// Put in-flight slots back at the front of the pending queue (resend, e.g. after GSO was
    /// disabled), keeping their order.
    pub(crate) fn requeue_front(&mut self, slots: &[u32]) {
        for &idx in slots.iter().rev() {
            self.pending.push_front(idx);
        }
    }

    /// The kernel is done with an in-flight slot.
    pub(crate) fn release(&mut self, idx: u32) {
        debug_assert!(self.free.len() < self.capacity());
        self.free.push(idx);
    }

    pub(crate) fn mark_solo(&mut self, idx: u32) {
        self.solo[idx as usize] = true;
    }

    pub(crate) fn is_solo(&self, idx: u32) -> bool {
        self.solo[idx as usize]
    }

    pub(crate) fn meta(&self, idx: u32) -> &TxMeta {
        &self.meta[idx as usize]
    }

    /// Pointer to the first byte of the datagram in slot `idx` (the slot start plus its
    /// offset); stable for the life of the queue (the pool is a boxed slice that never moves or
    /// grows).
    pub(crate) fn slot_ptr(&mut self, idx: u32) -> *mut u8 {
        let start = idx as usize * TX_SLOT_SIZE + self.meta[idx as usize].offset as usize;
        self.buf[start..].as_mut_ptr()
    }
}

/// A slot lent to the core. Dropping it without [`TxSlot::commit`] returns it to the pool.
pub struct TxSlot<'a> {
    q: &'a mut TxQueue,
    idx: u32,
}

impl TxSlot<'_> {
    /// The whole slot ([`TX_SLOT_SIZE`] bytes) to write the datagram into.
    pub fn buf(&mut self) -> &mut [u8] {
        let start = self.idx as usize * TX_SLOT_SIZE;
        &mut self.q.buf[start..start + TX_SLOT_SIZE]
    }

    /// The slot after the queue's headroom, to write the datagram into; then
    /// [`TxSlot::commit_room`].
    pub fn room(&mut self) -> &mut [u8] {
        let h = self.q.headroom;
        &mut self.buf()[h..]
    }

    /// Queue the first `len` bytes of [`TxSlot::room`] for sending.
    pub fn commit_room(self, len: usize) {
        let h = self.q.headroom;
        self.commit_range(h..h + len);
    }

    /// Send from this local address (IP_PKTINFO); `None`: routing decides.
    pub fn set_source(&mut self, src: Option<IpAddr>) {
        self.q.meta[self.idx as usize].src = src;
    }

    /// Change the destination.
    pub fn set_destination(&mut self, dst: SocketAddr) {
        self.q.meta[self.idx as usize].dst = dst;
    }

    /// One of a stream of packets to this destination worth a GSO train (a relay leg to another
    /// node): the shell sends it side by side with the others of its destination
    /// ([`TxQueue::gather_trains`]) instead of in commit order.
    pub fn set_train(&mut self) {
        self.q.train[self.idx as usize] = true;
    }

    /// Send from socket `id` of the shard (default [`SocketId::MAIN`]).
    pub fn set_socket(&mut self, id: SocketId) {
        self.q.meta[self.idx as usize].socket = id;
    }

    /// Queue the bytes `range` of the slot for sending (a header was written in front of a
    /// payload copied at an offset). `range` is clamped to the slot.
    pub fn commit_range(self, range: Range<usize>) {
        let start = range.start.min(TX_SLOT_SIZE);
        let end = range.end.clamp(start, TX_SLOT_SIZE);
        self.q.meta[self.idx as usize].offset = start as u16;
        self.commit_inner(end - start);
    }

    /// Queue the first `len` bytes of the slot for sending. `len` is clamped to the slot size;
    /// a zero-length commit sends an empty datagram.
    pub fn commit(self, len: usize) {
        self.q.meta[self.idx as usize].offset = 0;
        self.commit_inner(len);
    }

    fn commit_inner(self, len: usize) {
        let idx = self.idx;
        let q = &mut *self.q;
        q.meta[idx as usize].len = len.min(TX_SLOT_SIZE) as u16;
        q.trains_new += q.train[idx as usize] as usize;
        q.pending.push_back(idx);
        std::mem::forget(self);
    }
}

impl Drop for TxSlot<'_> {
    fn drop(&mut self) {
        self.q.free.push(self.idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_behind_the_headroom_and_commits_there() {
        let mut q = TxQueue::new(2);
        q.set_headroom(48);
        let mut s = q.push(addr(1)).expect("slot");
        assert_eq!(s.room().len(), TX_SLOT_SIZE - 48);
        s.room()[..3].copy_from_slice(b"abc");
        s.commit_room(3);
        let got = q.pop_pending(|m, b| (m.offset, b.to_vec())).expect("pending");
        assert_eq!(got, (48, b"abc".to_vec()));
        q.set_headroom(10_000);
        assert_eq!(q.headroom(), MAX_HEADROOM);
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn lend_commit_pop_and_exhaustion() {
        let mut q = TxQueue::new(2);
        let mut s = q.push(addr(1)).expect("slot");
        s.buf()[..3].copy_from_slice(b"abc");
        s.commit(3);
        q.send(addr(2), None, b"xy").expect("slot");
        assert!(q.push(addr(3)).is_none());
        assert_eq!(q.take_dropped(), 1);
        assert_eq!(q.pending_len(), 2);
        let got = q.pop_pending(|m, b| (m.dst, b.to_vec())).expect("pending");
        assert_eq!(got, (addr(1), b"abc".to_vec()));
        assert_eq!(q.available(), 1);
    }

    #[test]
    fn commit_range_and_socket() {
        let mut q = TxQueue::new(1);
        let mut s = q.push(addr(1)).expect("slot");
        s.buf()[10..14].copy_from_slice(b"abcd");
        s.set_socket(SocketId(7));
        s.commit_range(10..14);
        let got = q.pop_pending(|m, b| (m.socket, m.offset, b.to_vec())).expect("pending");
        assert_eq!(got, (SocketId(7), 10, b"abcd".to_vec()));
        // The next user of the slot starts again at offset 0 on the main socket.
        q.send(addr(2), None, b"xy").expect("slot");
        let got = q.pop_pending(|m, b| (m.socket, m.offset, b.to_vec())).expect("pending");
        assert_eq!(got, (SocketId::MAIN, 0, b"xy".to_vec()));
    }

    #[test]
    fn dropped_slot_returns_to_pool() {
        let mut q = TxQueue::new(1);
        drop(q.push(addr(1)));
        assert_eq!(q.available(), 1);
        assert_eq!(q.pending_len(), 0);
    }

    #[test]
    fn rewrite_pending_changes_and_drops_in_order() {
        let mut q = TxQueue::new(4);
        for p in 1..=4 {
            q.send(addr(p), None, &[p as u8]).expect("slot");
        }
        q.rewrite_pending(1, |m, slot| match m.dst.port() {
            2 => {
                slot[100] = 0xee;
                m.offset = 100;
                m.dst = addr(20);
                true
            }
            3 => false,
            _ => true,
        });
        assert_eq!(q.available(), 1, "the dropped slot is free");
        let got: Vec<(u16, Vec<u8>)> =
            std::iter::from_fn(|| q.pop_pending(|m, b| (m.dst.port(), b.to_vec()))).collect();
        assert_eq!(got, vec![(1, vec![1]), (20, vec![0xee]), (4, vec![4])]);
    }

    #[test]
    fn trains_are_gathered_behind_the_rest_in_order() {
        let mut q = TxQueue::new(16);
        // A fanout of three input packets: local legs 1 and 2, relay legs to 8 and 9.
        let push = |q: &mut TxQueue, p: u16, tag: u8, train: bool| {
            let mut s = q.push(addr(p)).expect("slot");
            s.buf()[0] = tag;
            if train {
                s.set_train();
            }
            s.commit(1);
        };
        for tag in 0..3u8 {
            push(&mut q, 1, tag, false);
            push(&mut q, 8, tag, true);
            push(&mut q, 2, tag, false);
            push(&mut q, 9, tag, true);
        }
        q.gather_trains();
        let got: Vec<(u16, u8)> =
            std::iter::from_fn(|| q.pop_pending(|m, b| (m.dst.port(), b[0]))).collect();
        assert_eq!(
            got,
            vec![
                (1, 0),
                (2, 0),
                (1, 1),
                (2, 1),
                (1, 2),
                (2, 2),
                (8, 0),
                (8, 1),
                (8, 2),
                (9, 0),
                (9, 1),
                (9, 2),
            ]
        );
        // A reused slot is no train until told; a lone train packet is left where it is.
        push(&mut q, 8, 7, true);
        push(&mut q, 1, 7, false);
        q.gather_trains();
        let got: Vec<u16> = std::iter::from_fn(|| q.pop_pending(|m, _| m.dst.port())).collect();
        assert_eq!(got, vec![8, 1]);
        assert_eq!(q.available(), 16);
    }

    #[test]
    fn requeue_keeps_order() {
        let mut q = TxQueue::new(4);
        for p in 1..=3 {
            q.send(addr(p), None, &[p as u8]).expect("slot");
        }
        let a = q.pending_at(0).expect("a");
        let b = q.pending_at(1).expect("b");
        q.take_pending(2);
        q.requeue_front(&[a, b]);
        let order: Vec<u16> = std::iter::from_fn(|| q.pop_pending(|m, _| m.dst.port())).collect();
        assert_eq!(order, vec![1, 2, 3]);
    }
}
