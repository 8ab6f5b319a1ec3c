//! The io_uring shard backend: one ring per shard thread.
//!
//! Operations in flight and who owns what (`user_data` = op kind << 32 | index):
//!
//! - `RECV`: one multishot RECVMSG per socket (the shard's own and those the core opened,
//!   index = generation << 24 | socket id) selecting buffers from one provided buffer ring
//!   (group 0) shared by all of them. Each completion names the buffer id; the buffer is lent to
//!   the core, then pushed back on the ring (tail published once per batch). When the kernel ends
//!   a multishot (no `MORE` flag, e.g. ENOBUFS) it is re-armed in the same turn. Closing a socket
//!   cancels its op; the socket stays open in `closing` until the op's last completion, and
//!   completions of an older generation of a reused id only give their buffer back.
//! - `WAKE`: one multishot POLL_ADD on the command eventfd.
//! - `SEND`: SENDMSG from a preallocated [`SendOp`] (msghdr, address, iovecs pointing at
//!   [`crate::shard::TxQueue`] slots, control messages). Op and slots belong to the kernel until
//!   the completion; runs of equal-size datagrams to one destination carry `UDP_SEGMENT` (GSO).
//!   When the op pool or the SQ is full, packets wait in the TxQueue (the bounded backlog).
//!   A queue of two or more single datagrams (not GSO runs) is sent with `sendmmsg` from the
//!   shell instead, 64 per call (`send_direct`): cheaper per datagram than a SENDMSG op each.
//!
//! One `io_uring_enter` per turn submits everything and waits for the next completion, bounded
//! by the core's deadline (EXT_ARG timeout). At shutdown every op is cancelled and its
//! completion awaited before memory is released; memory whose completion never came is leaked
//! rather than freed under the kernel.

use std::io;
use std::mem::{ManuallyDrop, size_of, zeroed};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};

use crate::io::batch::next_run;
use crate::io::driver::{Driver, ShardCtx};
use crate::io::sys::{
    CmsgBuf, RX_CMSG_SPACE, TX_CMSG_SPACE, build_tx_cmsgs, decode_sockaddr, encode_sockaddr,
    parse_rx_cmsgs,
};
use crate::io::{GSO_MAX_SEGMENTS, RX_PAYLOAD, RX_PAYLOAD_GRO};
use crate::shard::{DropReason, ShardCore, SocketId, SocketOp};

const OP_RECV: u64 = 1;
const OP_WAKE: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CANCEL: u64 = 4;
const BGID: u16 = 0;
/// Submission queue entries; the completion queue is four times as large.
const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = SQ_ENTRIES * 4;
/// Longest wait for send completions in a mid-turn relief (the sends are normally complete by the
/// time `io_uring_enter` returns; this only bounds the turn when the socket buffer is full).
const RELIEF_WAIT: Duration = Duration::from_millis(2);

fn token(kind: u64, idx: u32) -> u64 {
    (kind << 32) | idx as u64
}

/// The RECV token index of socket `id` in generation `generation`.
fn recv_index(id: u32, generation: u8) -> u32 {
    ((generation as u32) << 24) | (id & 0x00ff_ffff)
}

/// One socket of the shard.
struct Sock {
    socket: std::net::UdpSocket,
    fd: i32,
    v6: bool,
    port: u16,
    generation: u8,
    armed: bool,
}

/// Page-aligned anonymous memory (the provided-buffer ring must be page aligned).
pub(crate) struct PageBuf {
    ptr: *mut u8,
    len: usize,
}

impl PageBuf {
    pub fn new(len: usize) -> io::Result<Self> {
        // SAFETY: anonymous private mapping, no file; checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PageBuf { ptr: p.cast(), len })
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The provided-buffer ring and the buffers it hands out.
struct BufRing {
    ring: PageBuf,
    mem: Box<[u8]>,
    entries: u16,
    buf_size: usize,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16, buf_size: usize) -> io::Result<Self> {
        let ring_bytes = (entries as usize * size_of::<BufRingEntry>()).max(4096);
        let mut r = BufRing {
            ring: PageBuf::new(ring_bytes)?,
            mem: vec![0u8; entries as usize * buf_size].into_boxed_slice(),
            entries,
            buf_size,
            tail: 0,
        };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Hand buffer `bid` back to the kernel (visible after [`BufRing::publish`]).
    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `slot < entries` and the ring mapping holds `entries` entries.
        let e = unsafe { &mut *self.ring.ptr.cast::<BufRingEntry>().add(slot) };
        let start = bid as usize * self.buf_size;
        e.set_addr(self.mem[start..].as_mut_ptr() as u64);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field lives inside the first entry of our mapping; the kernel reads it
        // with acquire semantics.
        let tail = unsafe { BufRingEntry::tail(self.ring.ptr.cast::<BufRingEntry>()) };
        // SAFETY: u16 and AtomicU16 share layout; the field is 2-byte aligned.
        let tail = unsafe { &*(tail as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
    }
}

/// One SENDMSG in flight: everything the kernel reads, at a stable address.
#[repr(C)]
struct SendOp {
    msg: libc::msghdr,
    name: libc::sockaddr_storage,
    iov: [libc::iovec; GSO_MAX_SEGMENTS],
    cmsg: CmsgBuf<TX_CMSG_SPACE>,
    slots: [u32; GSO_MAX_SEGMENTS],
    n: usize,
    gso: bool,
    /// Test hook: complete as if the kernel returned this errno (the SQE is a NOP).
    fault: Option<i32>,
}

/// Datagrams per `sendmmsg` of the direct send path (see [`UringShard::send_direct`]).
const DIRECT_BATCH: usize = 64;
/// Pending datagrams from which the direct path is used. `benches/io_fanout.rs` (the shells
/// alone, each datagram copied to N distinct destinations, io_uring and epoll in alternating
/// rounds of one run, data-plane CPU per datagram sent), uring/epoll: SQEs only 0.97 (N=10),
/// 0.98 (30), 0.89 (100), 0.95 (1000); direct from 64 pending 1.04, 1.02, 1.00, 1.00; from 8
/// 1.04, 1.04, 1.01, 1.16; from 2: 1.05 (N=3), 1.04 (N=10). A SENDMSG SQE costs more in the kernel
/// than a datagram of a `sendmmsg` (an op, its async header copy, a completion), which the one
/// `io_uring_enter` per turn only pays back for a lone datagram; 64 per call against 256 made
/// no difference.
const DIRECT_MIN: usize = 2;

/// What one attempt of the direct send path did.
enum Direct {
    Sent,
    /// The front of the queue is not a long run of single datagrams from one socket.
    NotSuitable,
    /// The socket takes no more now.
    Blocked,
}

/// The preallocated `sendmmsg` batch of the direct send path.
struct DirectBatch {
    hdrs: Box<[libc::mmsghdr]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf<TX_CMSG_SPACE>]>,
    iovs: Box<[libc::iovec]>,
}

/// A shard running on io_uring.
pub(crate) struct UringShard<C: ShardCore> {
    // Declared first: dropped (ring fd closed) before the memory the kernel may reference.
    ring: IoUring,
    bufs: ManuallyDrop<BufRing>,
    sends: ManuallyDrop<Box<[SendOp]>>,
    recv_msg: ManuallyDrop<Box<libc::msghdr>>,
    free_sends: Vec<u32>,
    /// Sockets by id (0: the shard's own).
    socks: Vec<Option<Sock>>,
    /// Generation of the next socket opened under each id.
    generations: Vec<u8>,
    /// (id, generation) whose multishot RECV must be (re-)armed.
    to_arm: Vec<(u32, u8)>,
    /// Closed sockets whose RECV was cancelled but has not completed yet, by RECV index.
    closing: Vec<(u32, std::net::UdpSocket)>,
    wake_armed: bool,
    inflight_sends: usize,
    registered: bool,
    leak: bool,
    direct: DirectBatch,
    /// A relief this turn waited and freed nothing (the kernel is not taking sends: receivers'
    /// buffers full): later reliefs of the turn only submit, so the turn stays short.
    relief_stalled: bool,
    /// Receive completions waiting to be handled, oldest first, from `cq_head` on (sends and
    /// wakes are handled as soon as they are reaped). A turn whose work is spent leaves the rest
    /// for the next one.
    cqes: Vec<cqueue::Entry>,
    cq_head: usize,
    drv: Driver<C>,
}

fn build_ring(entries: u32) -> io::Result<IoUring> {
    // Best first: single issuer + deferred task work (6.1), then cooperative task run (5.19),
    // then a plain ring.
    let mut b = IoUring::builder();
    b.setup_cqsize(entries * 4).setup_single_issuer().setup_defer_taskrun().setup_submit_all();
    if let Ok(r) = b.build(entries) {
        return Ok(r);
    }
    let mut b = IoUring::builder();
    b.setup_cqsize(entries * 4).setup_coop_taskrun();
    if let Ok(r) = b.build(entries) {
        return Ok(r);
    }
    IoUring::builder().setup_cqsize(entries * 4).build(entries)
}

impl<C: ShardCore> UringShard<C> {
    pub fn new(ctx: ShardCtx<C>) -> io::Result<Self> {
        let (drv, socket, sock, opts) = Driver::new(ctx);
        let ring = build_ring(SQ_ENTRIES)?;
        // With GRO every buffer is 64 KiB: cap the ring at 64 of them (4 MiB per shard).
        let max_entries = if sock.gro { 64 } else { 32768 };
        let entries = opts.rx_buffers.clamp(8, max_entries).next_power_of_two() as u16;
        let payload = if sock.gro { RX_PAYLOAD_GRO } else { RX_PAYLOAD };
        let name_len = size_of::<libc::sockaddr_in6>();
        // io_uring_recvmsg_out header + name + control + payload, rounded to 64 bytes.
        let buf_size = (16 + name_len + RX_CMSG_SPACE + payload).next_multiple_of(64);
        let bufs = BufRing::new(entries, buf_size)?;
        // SAFETY: the ring memory stays mapped until after the registration is dropped with the
        // ring (or leaked with it).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(bufs.ring.addr(), entries, BGID, 0)?;
        }
        // SAFETY: all-zero is a valid msghdr; multishot RECVMSG reads only the two lengths.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        recv_msg.msg_namelen = name_len as libc::socklen_t;
        recv_msg.msg_controllen = RX_CMSG_SPACE as _;
        let nsends = opts.tx_slots.clamp(1, 1024);
        let sends: Box<[SendOp]> = (0..nsends)
            // SAFETY: all-zero is a valid SendOp (plain C data, null pointers, zero counts).
            .map(|_| unsafe { zeroed::<SendOp>() })
            .collect();
        let fd = socket.as_raw_fd();
        let budget = drv.budget;
        let main = Sock {
            fd,
            v6: sock.v6,
            port: sock.local_addr.port(),
            socket,
            generation: 0,
            armed: false,
        };
        Ok(UringShard {
            ring,
            bufs: ManuallyDrop::new(bufs),
            sends: ManuallyDrop::new(sends),
            recv_msg: ManuallyDrop::new(recv_msg),
            free_sends: (0..nsends as u32).rev().collect(),
            socks: vec![Some(main)],
            generations: vec![1],
            to_arm: vec![(0, 0)],
            closing: Vec::new(),
            wake_armed: false,
            inflight_sends: 0,
            registered: true,
            leak: false,
            relief_stalled: false,
            // SAFETY (zeroed): all-zero is valid for these plain C structs; pointers are set
            // before each use.
            direct: DirectBatch {
                hdrs: (0..DIRECT_BATCH).map(|_| unsafe { zeroed() }).collect(),
                names: (0..DIRECT_BATCH).map(|_| unsafe { zeroed() }).collect(),
                cmsgs: vec![CmsgBuf::new(); DIRECT_BATCH].into_boxed_slice(),
                iovs: (0..DIRECT_BATCH).map(|_| unsafe { zeroed() }).collect(),
            },
            // Receive completions hold a provided buffer each (or end a multishot), so those
            // waiting never pass the buffer count plus a few; room for a whole CQ beyond that.
            cqes: Vec::with_capacity(budget + 64 + CQ_ENTRIES as usize),
            cq_head: 0,
            drv,
        })
    }

    /// Push an SQE, submitting first if the SQ is full. False: still no room.
    fn push_sqe(&mut self, e: &squeue::Entry) -> bool {
        // SAFETY (all pushes): every pointer in the SQEs built here refers to memory owned by
        // `self` that stays valid until the op's completion (see the module docs).
        if unsafe { self.ring.submission().push(e) }.is_ok() {
            return true;
        }
        let _ = self.ring.submit();
        unsafe { self.ring.submission().push(e) }.is_ok()
    }

    fn arm(&mut self) {
        while let Some(&(id, generation)) = self.to_arm.last() {
            let Some(Some(sk)) = self.socks.get(id as usize) else {
                self.to_arm.pop();
                continue;
            };
            if sk.generation != generation || sk.armed {
                self.to_arm.pop();
                continue;
            }
            let e = opcode::RecvMsgMulti::new(Fd(sk.fd), &**self.recv_msg as *const _, BGID)
                .build()
                .user_data(token(OP_RECV, recv_index(id, generation)));
            if !self.push_sqe(&e) {
                break; // SQ full: the rest is armed next turn.
            }
            self.to_arm.pop();
            if let Some(Some(sk)) = self.socks.get_mut(id as usize) {
                sk.armed = true;
            }
        }
        if !self.wake_armed {
            let e = opcode::PollAdd::new(Fd(self.drv.commands.wake_fd()), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(token(OP_WAKE, 0));
            self.wake_armed = self.push_sqe(&e);
        }
    }

    /// Carries out the socket requests the core made while it was built (listeners), before
    /// the shard reports ready; fails when a listener would not bind.
    pub fn open_initial_sockets(&mut self) -> io::Result<()> {
        self.drv.take_initial_socket_ops();
        self.socket_ops(Instant::now());
        self.drv.startup_result()
    }

    /// The core's socket requests: bind and arm, or cancel and close.
    fn socket_ops(&mut self, now: Instant) {
        // Bounded: every op is taken out of the queue; an open failing may queue more, which
        // the next turn carries out.
        for _ in 0..self.drv.socket_ops.len() {
            let Some(op) = self.drv.socket_ops.pop_front() else { break };
            match op {
                SocketOp::Open { id, addr } | SocketOp::Listen { id, addr, .. } => {
                    if id != SocketId::MAIN {
                        self.close_socket(id);
                    }
                    let listen = match op {
                        SocketOp::Listen { shared, .. } => Some(shared),
                        _ => None,
                    };
                    let Some((socket, info)) = self.drv.open_socket(now, id, addr, listen) else {
                        continue;
                    };
                    let i = id.0 as usize;
                    if self.socks.len() <= i {
                        self.socks.resize_with(i + 1, || None);
                        self.generations.resize(i + 1, 0);
                    }
                    let generation = self.generations[i];
                    self.generations[i] = generation.wrapping_add(1);
                    self.socks[i] = Some(Sock {
                        fd: socket.as_raw_fd(),
                        v6: info.v6,
                        port: info.local_addr.port(),
                        socket,
                        generation,
                        armed: false,
                    });
                    self.to_arm.push((id.0, generation));
                    self.drv.socket_result(now, id, Ok(()));
                }
                SocketOp::Close { id } if id != SocketId::MAIN => self.close_socket(id),
                SocketOp::Close { .. } => {}
                SocketOp::Probe { id, addr } => {
                    // Bound, then closed when dropped; a failure is reported by open_socket.
                    if self.drv.open_socket(now, id, addr, None).is_some() {
                        self.drv.socket_result(now, id, Ok(()));
                    }
                }
            }
        }
    }

    fn close_socket(&mut self, id: SocketId) {
        let Some(sk) = self.socks.get_mut(id.0 as usize).and_then(Option::take) else {
            return;
        };
        if sk.armed {
            let idx = recv_index(id.0, sk.generation);
            let cancel = opcode::AsyncCancel::new(token(OP_RECV, idx))
                .build()
                .user_data(token(OP_CANCEL, 0));
            let _ = self.push_sqe(&cancel);
            self.closing.push((idx, sk.socket));
        }
        // Not armed: no op references the fd; dropping `sk` closes it.
    }

    /// Direct send path: single datagrams to different destinations (a packet fanned out to its
    /// subscribers) cost a SENDMSG SQE and a completion each, where one `sendmmsg` takes 64 (see
    /// [`DIRECT_MIN`] for the figures). Sends the leading run of up to 64 pending datagrams that
    /// are not GSO runs and leave from one socket, synchronously and non-blocking; their slots
    /// are free when it returns. The SQEs queued so far are submitted first, so a destination
    /// never sees a later datagram before an earlier one the kernel already took. When nothing
    /// is sent ([`Direct::NotSuitable`], [`Direct::Blocked`]) the SQE path carries on, with its
    /// own backpressure.
    fn send_direct(&mut self) -> Direct {
        let tx = &self.drv.tx;
        let Some(first_idx) = tx.pending_at(0) else { return Direct::NotSuitable };
        let socket = tx.meta(first_idx).socket;
        let Some(Some(sk)) = self.socks.get(socket.0 as usize) else {
            return Direct::NotSuitable;
        };
        let (fd, v6) = (sk.fd, sk.v6);
        let mut n = 0;
        while n < DIRECT_BATCH {
            let Some(idx) = tx.pending_at(n) else { break };
            let m = *tx.meta(idx);
            if m.socket != socket || next_run(tx, n, self.drv.gso).1.is_some() {
                break;
            }
            n += 1;
        }
        if n < DIRECT_MIN.min(DIRECT_BATCH) {
            return Direct::NotSuitable;
        }
        if !self.ring.submission().is_empty() {
            let _ = self.ring.submit();
        }
        let tx = &mut self.drv.tx;
        let d = &mut self.direct;
        for k in 0..n {
            let idx = tx.pending_at(k).unwrap_or(0);
            let m = *tx.meta(idx);
            d.iovs[k] = libc::iovec { iov_base: tx.slot_ptr(idx).cast(), iov_len: m.len as usize };
            let namelen = encode_sockaddr(m.dst, v6, &mut d.names[k]);
            let clen = build_tx_cmsgs(&mut d.cmsgs[k].0, None, m.src, v6);
            let h = &mut d.hdrs[k];
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut d.names[k] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = &mut d.iovs[k];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control =
                if clen > 0 { d.cmsgs[k].0.as_mut_ptr().cast() } else { std::ptr::null_mut() };
            h.msg_hdr.msg_controllen = clen as _;
            h.msg_hdr.msg_flags = 0;
        }
        // SAFETY: `hdrs[..n]` point at live names, cmsgs, iovecs and TxQueue slots.
        let r = unsafe { libc::sendmmsg(fd, d.hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
        let done = if r > 0 {
            let r = r as usize;
            self.drv.tally.tx_packets += r as u64;
            self.drv.tally.tx_bytes += d.hdrs[..r].iter().map(|h| h.msg_len as u64).sum::<u64>();
            r
        } else {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENOBUFS) => {
                    return Direct::Blocked;
                }
                _ => {
                    // The first datagram is refused (unreachable, too big...): drop it.
                    self.drv.tally.drop(DropReason::TxError, 1);
                    1
                }
            }
        };
        for k in 0..done {
            let idx = tx.pending_at(k).unwrap_or(0);
            tx.release(idx);
        }
        tx.take_pending(done);
        Direct::Sent
    }

    /// Step 5: pending transmits -> SENDMSG SQEs (GSO runs coalesced), or `sendmmsg` for long
    /// queues of single datagrams ([`UringShard::send_direct`]).
    fn flush_sends(&mut self) {
        // Relay legs' packets side by side, so that they leave as GSO trains.
        self.drv.tx.gather_trains();
        // Once the direct path sent nothing (socket buffer full), the SQEs take the rest.
        let mut direct = true;
        while self.drv.tx.pending_len() > 0 {
            if direct && self.drv.tx.pending_len() >= DIRECT_MIN {
                match self.send_direct() {
                    Direct::Sent => continue,
                    Direct::Blocked => direct = false,
                    Direct::NotSuitable => {}
                }
            }
            let Some(op_idx) = self.free_sends.last().copied() else {
                break;
            };
            let (n, seg) = next_run(&self.drv.tx, 0, self.drv.gso);
            let tx = &mut self.drv.tx;
            let first = *tx.meta(tx.pending_at(0).unwrap_or(0));
            let Some(Some(sk)) = self.socks.get(first.socket.0 as usize) else {
                // The socket is gone: these datagrams cannot leave.
                for k in 0..n {
                    let idx = tx.pending_at(k).unwrap_or(0);
                    tx.release(idx);
                }
                tx.take_pending(n);
                self.drv.tally.drop(DropReason::TxNoSocket, n as u64);
                continue;
            };
            let (fd, v6) = (sk.fd, sk.v6);
            let op = &mut self.sends[op_idx as usize];
            for k in 0..n {
                // `k < n <= pending_len` by construction of `next_run`.
                let idx = tx.pending_at(k).unwrap_or(0);
                op.iov[k] = libc::iovec {
                    iov_base: tx.slot_ptr(idx).cast(),
                    iov_len: tx.meta(idx).len as usize,
                };
                op.slots[k] = idx;
            }
            op.n = n;
            op.gso = seg.is_some();
            let namelen = encode_sockaddr(first.dst, v6, &mut op.name);
            let clen = build_tx_cmsgs(&mut op.cmsg.0, seg, first.src, v6);
            op.msg.msg_name = (&mut op.name as *mut libc::sockaddr_storage).cast();
            op.msg.msg_namelen = namelen;
            op.msg.msg_iov = op.iov.as_mut_ptr();
            op.msg.msg_iovlen = n as _;
            op.msg.msg_control =
                if clen > 0 { op.cmsg.0.as_mut_ptr().cast() } else { std::ptr::null_mut() };
            op.msg.msg_controllen = clen as _;
            op.msg.msg_flags = 0;
            op.fault = if op.gso { self.drv.gso_fault.take() } else { None };
            let e = if op.fault.is_some() {
                opcode::Nop::new().build()
            } else {
                opcode::SendMsg::new(Fd(fd), &op.msg as *const _).build()
            }
            .user_data(token(OP_SEND, op_idx));
            if !self.push_sqe(&e) {
                break; // SQ full even after a submit: the rest waits in the TxQueue.
            }
            self.free_sends.pop();
            self.drv.tx.take_pending(n);
            self.inflight_sends += 1;
        }
    }

    fn on_recv(&mut self, now: Instant, idx: u32, res: i32, flags: u32) {
        let (id, generation) = (idx & 0x00ff_ffff, (idx >> 24) as u8);
        let live = match self.socks.get_mut(id as usize) {
            Some(Some(sk)) if sk.generation == generation => {
                if !cqueue::more(flags) {
                    sk.armed = false;
                    self.to_arm.push((id, generation));
                }
                Some(sk.port)
            }
            _ => None,
        };
        let Some(port) = live else {
            // A closed socket's op: give the buffer back; its last completion closes it.
            if let Some(bid) = cqueue::buffer_select(flags)
                && bid < self.bufs.entries
            {
                self.bufs.push(bid);
            }
            if !cqueue::more(flags) {
                self.closing.retain(|(i, _)| *i != idx);
            }
            return;
        };
        if res < 0 {
            match -res {
                libc::ENOBUFS => self.drv.tally.drop(DropReason::RxNoBuffer, 1),
                libc::ECANCELED | libc::EINTR | libc::EAGAIN => {}
                e => {
                    tracing::warn!(shard = self.drv.index, error = %io::Error::from_raw_os_error(e), "multishot recvmsg failed")
                }
            }
            return;
        }
        let Some(bid) = cqueue::buffer_select(flags) else {
            self.drv.tally.drop(DropReason::RxMalformed, 1);
            return;
        };
        if bid >= self.bufs.entries {
            self.drv.tally.drop(DropReason::RxMalformed, 1);
            return;
        }
        let start = bid as usize * self.bufs.buf_size;
        let len = (res as usize).min(self.bufs.buf_size);
        let parsed = {
            let buf = &self.bufs.mem[start..start + len];
            match RecvMsgOut::parse(buf, &self.recv_msg) {
                Ok(out) if out.is_payload_truncated() => Err(DropReason::RxTruncated),
                Ok(out) => match decode_sockaddr(out.name_data()) {
                    Some(src) => {
                        let cm = parse_rx_cmsgs(out.control_data());
                        #[allow(clippy::unnecessary_cast)] // size_t on glibc, socklen_t on musl
                        let off = 16
                            + self.recv_msg.msg_namelen as usize
                            + self.recv_msg.msg_controllen as usize;
                        Ok((src, cm, off, out.payload_data().len()))
                    }
                    None => Err(DropReason::RxMalformed),
                },
                Err(()) => Err(DropReason::RxMalformed),
            }
        };
        match parsed {
            Ok((src, cm, off, plen)) => {
                let payload = &mut self.bufs.mem[start + off..start + off + plen];
                let at = (SocketId(id), port);
                self.drv.datagram(now, at, src, cm.dst_ip, cm.gro_segment, payload);
            }
            Err(r) => self.drv.tally.drop(r, 1),
        }
        self.bufs.push(bid);
    }

    fn on_send(&mut self, idx: u32, res: i32) {
        let Some(op) = self.sends.get_mut(idx as usize) else {
            return;
        };
        let res = op.fault.take().map_or(res, |e| -e);
        let (n, gso) = (op.n, op.gso);
        let slots = op.slots;
        self.inflight_sends -= 1;
        self.free_sends.push(idx);
        if res >= 0 {
            self.drv.tally.tx_packets += n as u64;
            self.drv.tally.tx_bytes += res as u64;
            if gso {
                self.drv.tally.tx_gso_sends += 1;
                self.drv.tally.tx_gso_datagrams += n as u64;
            }
        } else {
            let err = -res;
            if err == libc::EAGAIN || err == libc::ENOBUFS || err == libc::EINTR {
                self.drv.tx.requeue_front(&slots[..n]);
                return;
            }
            if gso && err != libc::ECANCELED {
                self.drv.gso_refused(err, slots[..n].iter().copied());
                self.drv.tx.requeue_front(&slots[..n]);
                return;
            }
            self.drv.tally.drop(DropReason::TxError, n as u64);
        }
        for &s in &slots[..n] {
            self.drv.tx.release(s);
        }
    }

    /// The loop (see `crate::shard` for the steps). Returns at shutdown.
    pub fn run(mut self) -> io::Result<()> {
        self.drv.stats.set_backend(crate::config::IoBackend::Uring);
        let budget = self.drv.budget;
        let result = loop {
            let started = Instant::now();
            if self.drv.stopping() {
                break Ok(());
            }
            self.drv.run_commands(started);
            self.drv.run_timer(started);
            self.socket_ops(started);
            self.flush_sends();
            self.bufs.publish();
            self.arm();

            self.drv.flush_mesh();
            let ready = !self.ring.completion().is_empty() || self.cq_head < self.cqes.len();
            let wait = if ready { Duration::ZERO } else { self.drv.wait_timeout(started) };
            let before_wait = Instant::now();
            let r = if wait.is_zero() {
                self.ring.submit()
            } else {
                let ts = Timespec::new().sec(wait.as_secs()).nsec(wait.subsec_nanos());
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            };
            // Time asleep in the kernel is not work: it does not count towards an overrun.
            let slept = if wait.is_zero() { Duration::ZERO } else { before_wait.elapsed() };
            if let Err(e) = r {
                match e.raw_os_error() {
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                    | Some(libc::EAGAIN) => {}
                    _ => break Err(e),
                }
            }

            // What an earlier turn left comes first, then what the kernel completed since.
            self.cqes.drain(..self.cq_head);
            self.cq_head = 0;
            self.reap();
            self.relief_stalled = false;
            let now = Instant::now();
            self.drv.start_receiving(now);
            // Up to `budget` datagrams, and no more once the turn's work is spent; reliefs reap
            // more completions onto the end of the queue.
            let mut handled = 0;
            while self.cq_head < self.cqes.len() && handled < budget {
                if self.drv.turn_spent(handled) {
                    break;
                }
                let c = &self.cqes[self.cq_head];
                let (ud, res, flags) = (c.user_data(), c.result(), c.flags());
                self.cq_head += 1;
                handled += 1;
                self.on_recv(now, ud as u32, res, flags);
                if self.drv.tx_low() {
                    self.relieve_tx();
                }
            }
            // Step 4b: what other shards handed over, within the same work budget.
            let mut from_mesh = 0;
            while handled + from_mesh < 2 * budget
                && self.drv.mesh_message(now, handled + from_mesh)
            {
                from_mesh += 1;
                if self.drv.tx_low() {
                    self.relieve_tx();
                }
            }
            self.socket_ops(now);
            self.drv.end_turn(started, slept);
        };
        self.shutdown_ops();
        result
    }

    fn on_wake(&mut self, flags: u32) {
        if !cqueue::more(flags) {
            self.wake_armed = false;
        }
        self.drv.commands.clear_wake();
    }

    /// Mid-turn relief: the transmit pool ran low while this turn's datagrams were handled (a
    /// packet fanned out to hundreds of subscribers takes a slot per subscriber, and a turn
    /// handles up to `budget` packets). Hand what is pending to the kernel now, wait briefly for
    /// the send completions and take their slots back, so the rest of the turn's datagrams are
    /// not dropped for want of a slot. Receive completions reaped on the way queue at the end of
    /// `cqes`, for this turn if its work is not spent, else for the next.
    fn relieve_tx(&mut self) {
        self.drv.tally.tx_reliefs += 1;
        // Buffers the handled datagrams gave back, for the kernel's next receives.
        self.bufs.publish();
        self.flush_sends();
        let r = if self.inflight_sends > 0 && !self.relief_stalled {
            let ts = Timespec::new().nsec(RELIEF_WAIT.subsec_nanos());
            let args = SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        } else {
            self.ring.submit()
        };
        if let Err(e) = r
            && !matches!(
                e.raw_os_error(),
                Some(libc::ETIME | libc::EINTR | libc::EBUSY | libc::EAGAIN)
            )
        {
            tracing::debug!(shard = self.drv.index, error = %e, "io_uring_enter in relief failed");
        }
        self.reap();
        // Completed sends may have made room for more of what is pending.
        self.flush_sends();
        if self.drv.tx_low() {
            self.relief_stalled = true;
        }
    }

    /// Takes completions off the ring: sends and wakes are handled at once, receive completions
    /// queue in `cqes` (never beyond its capacity: no allocation; what does not fit stays in the
    /// ring for the next reap).
    fn reap(&mut self) {
        while self.cqes.len() < self.cqes.capacity() {
            let Some(c) = self.ring.completion().next() else { break };
            let (ud, res, flags) = (c.user_data(), c.result(), c.flags());
            match ud >> 32 {
                OP_SEND => self.on_send(ud as u32, res),
                OP_WAKE => self.on_wake(flags),
                OP_RECV => self.cqes.push(c),
                _ => {}
            }
        }
    }

    fn any_recv_armed(&self) -> bool {
        !self.closing.is_empty() || self.socks.iter().flatten().any(|s| s.armed)
    }

    /// The last completion of RECV op `idx` (at shutdown).
    fn recv_ended(&mut self, idx: u32) {
        let (id, generation) = (idx & 0x00ff_ffff, (idx >> 24) as u8);
        if let Some(Some(sk)) = self.socks.get_mut(id as usize)
            && sk.generation == generation
        {
            sk.armed = false;
        }
        self.closing.retain(|(i, _)| *i != idx);
    }

    /// Cancel every op and wait (bounded) for their completions so no memory is freed while
    /// the kernel may still use it.
    fn shutdown_ops(&mut self) {
        // Receive completions left unhandled: only whether they ended their multishot counts.
        for i in self.cq_head..self.cqes.len() {
            let (ud, flags) = (self.cqes[i].user_data(), self.cqes[i].flags());
            if !cqueue::more(flags) {
                self.recv_ended(ud as u32);
            }
        }
        self.cq_head = 0;
        let deadline = Instant::now() + Duration::from_secs(2);
        while (self.any_recv_armed() || self.wake_armed || self.inflight_sends > 0)
            && Instant::now() < deadline
        {
            let cancel = opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
                .build()
                .user_data(token(OP_CANCEL, 0));
            let _ = self.push_sqe(&cancel);
            let ts = Timespec::new().nsec(50_000_000);
            let args = SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.cqes.clear();
            self.cqes.extend(self.ring.completion());
            for i in 0..self.cqes.len() {
                let c = &self.cqes[i];
                let (ud, res, flags) = (c.user_data(), c.result(), c.flags());
                match ud >> 32 {
                    OP_RECV if !cqueue::more(flags) => self.recv_ended(ud as u32),
                    OP_WAKE if !cqueue::more(flags) => self.wake_armed = false,
                    OP_SEND => {
                        // Completed or cancelled: the op's memory is ours again.
                        self.on_send(ud as u32, res);
                    }
                    _ => {}
                }
            }
        }
        self.leak = self.any_recv_armed() || self.wake_armed || self.inflight_sends > 0;
        if self.leak {
            tracing::error!(
                shard = self.drv.index,
                "io_uring ops still in flight at shutdown; leaking their buffers"
            );
        } else if self.registered {
            let _ = self.ring.submitter().unregister_buf_ring(BGID);
            self.registered = false;
        }
        self.drv.stats.publish(&mut self.drv.tally);
    }
}

impl<C: ShardCore> Drop for UringShard<C> {
    fn drop(&mut self) {
        if self.leak || self.any_recv_armed() || self.wake_armed || self.inflight_sends > 0 {
            // The kernel may still write into these: never free them. (The ring fd itself is
            // closed when `ring` drops after this.)
            return;
        }
        // SAFETY: every op has completed; the kernel holds no reference into this memory.
        unsafe {
            ManuallyDrop::drop(&mut self.bufs);
            ManuallyDrop::drop(&mut self.sends);
            ManuallyDrop::drop(&mut self.recv_msg);
        }
    }
}

impl<C: ShardCore> std::fmt::Debug for UringShard<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringShard").field("sockets", &self.socks.len()).finish()
    }
}
