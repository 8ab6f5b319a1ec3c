//! The epoll shard backend (fallback when io_uring is unavailable): `mio::Poll` over the sockets
//! (the shard's own and those its core opened, token = socket id) and the command eventfd, `recvmmsg` into preallocated buffers, `sendmmsg` from the
//! [`crate::shard::TxQueue`] slots (GSO runs as one message with several iovecs and
//! `UDP_SEGMENT`), the core's deadline as the poll timeout.
//!
//! mio registers edge-triggered: a readable socket joins the ready list and is read until a short
//! batch (the queue was empty at that moment; a later arrival raises a new edge) or until the
//! turn's budget is spent (then it stays listed and the next turn does not sleep). One `sendmmsg`
//! carries datagrams of one socket. A send that hits EAGAIN leaves the rest in the TxQueue until the
//! WRITABLE edge.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::io::batch::next_run;
use crate::io::driver::{Driver, ShardCtx};
use crate::io::sys::{
    CmsgBuf, RX_CMSG_SPACE, TX_CMSG_SPACE, build_tx_cmsgs, decode_sockaddr, encode_sockaddr,
    parse_rx_cmsgs,
};
use crate::io::{RX_PAYLOAD, RX_PAYLOAD_GRO};
use crate::shard::{DropReason, ShardCore, SocketId, SocketOp};

/// Sockets use their id as token.
const WAKE: Token = Token(usize::MAX);
/// Messages per recvmmsg/sendmmsg call.
const BATCH: usize = 64;

struct RxBatch {
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf<RX_CMSG_SPACE>]>,
    mem: Box<[u8]>,
    buf_size: usize,
}

struct TxBatch {
    hdrs: Box<[libc::mmsghdr]>,
    names: Box<[libc::sockaddr_storage]>,
    cmsgs: Box<[CmsgBuf<TX_CMSG_SPACE>]>,
    /// One iovec per pending datagram of the batch (flat; a GSO message spans several).
    iovs: Box<[libc::iovec]>,
    /// Datagrams in each message.
    counts: [usize; BATCH],
    gso: [bool; BATCH],
}

/// One socket of the shard.
struct Sock {
    _socket: std::net::UdpSocket,
    fd: i32,
    v6: bool,
    port: u16,
    /// Listed in `ready`.
    ready: bool,
}

/// A shard running on epoll.
pub(crate) struct EpollShard<C: ShardCore> {
    poll: Poll,
    events: Events,
    rx: RxBatch,
    txb: TxBatch,
    /// Sockets by id (0: the shard's own).
    socks: Vec<Option<Sock>>,
    /// Ids of sockets that may have datagrams waiting.
    ready: Vec<u32>,
    /// A received batch a turn left half handled (its work was spent): the next datagram, the
    /// batch's count and its socket. `rx` holds it until it is finished, before any new read.
    rx_carry: Option<(usize, usize, (SocketId, u16))>,
    tx_blocked: bool,
    drv: Driver<C>,
}

impl<C: ShardCore> EpollShard<C> {
    pub fn new(ctx: ShardCtx<C>) -> io::Result<Self> {
        let (drv, socket, sock, opts) = Driver::new(ctx);
        let poll = Poll::new()?;
        let fd = socket.as_raw_fd();
        poll.registry().register(
            &mut SourceFd(&fd),
            Token(0),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let wfd = drv.commands.wake_fd();
        poll.registry().register(&mut SourceFd(&wfd), WAKE, Interest::READABLE)?;

        let n = opts.rx_buffers.clamp(1, BATCH);
        let buf_size = if sock.gro { RX_PAYLOAD_GRO } else { RX_PAYLOAD };
        // SAFETY (zeroed): all-zero is valid for these plain C structs; pointers are set below.
        let mut rx = RxBatch {
            hdrs: (0..n).map(|_| unsafe { zeroed() }).collect(),
            iovs: (0..n).map(|_| unsafe { zeroed() }).collect(),
            names: (0..n).map(|_| unsafe { zeroed() }).collect(),
            cmsgs: vec![CmsgBuf::new(); n].into_boxed_slice(),
            mem: vec![0u8; n * buf_size].into_boxed_slice(),
            buf_size,
        };
        for i in 0..n {
            rx.iovs[i] = libc::iovec {
                iov_base: rx.mem[i * buf_size..].as_mut_ptr().cast(),
                iov_len: buf_size,
            };
            let h = &mut rx.hdrs[i].msg_hdr;
            h.msg_name = (&mut rx.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut rx.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = rx.cmsgs[i].0.as_mut_ptr().cast();
        }
        let tx_slots = drv.tx.capacity();
        let txb = TxBatch {
            hdrs: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            names: (0..BATCH).map(|_| unsafe { zeroed() }).collect(),
            cmsgs: vec![CmsgBuf::new(); BATCH].into_boxed_slice(),
            iovs: (0..tx_slots).map(|_| unsafe { zeroed() }).collect(),
            counts: [0; BATCH],
            gso: [false; BATCH],
        };
        let main =
            Sock { fd, v6: sock.v6, port: sock.local_addr.port(), _socket: socket, ready: true };
        Ok(EpollShard {
            poll,
            events: Events::with_capacity(256),
            rx,
            txb,
            socks: vec![Some(main)],
            ready: vec![0],
            rx_carry: None,
            tx_blocked: false,
            drv,
        })
    }

    /// Carries out the socket requests the core made while it was built (listeners), before
    /// the shard reports ready; fails when a listener would not bind.
    pub fn open_initial_sockets(&mut self) -> io::Result<()> {
        self.drv.take_initial_socket_ops();
        self.socket_ops(Instant::now());
        self.drv.startup_result()
    }

    /// The core's socket requests: bind and register, or deregister and close.
    fn socket_ops(&mut self, now: Instant) {
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
                    let fd = socket.as_raw_fd();
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&fd),
                        Token(id.0 as usize),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.drv.socket_result(now, id, Err(e.kind()));
                        continue;
                    }
                    let i = id.0 as usize;
                    if self.socks.len() <= i {
                        self.socks.resize_with(i + 1, || None);
                    }
                    let port = info.local_addr.port();
                    self.socks[i] =
                        Some(Sock { _socket: socket, fd, v6: info.v6, port, ready: true });
                    self.ready.push(id.0);
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
        let _ = self.poll.registry().deregister(&mut SourceFd(&sk.fd));
        if sk.ready {
            self.ready.retain(|&i| i != id.0);
        }
        // Dropping `sk` closes the socket.
    }

    /// Step 4: the batch an earlier turn left, then recvmmsg batches from the ready sockets,
    /// until drained, the budget is spent or the turn's work is ([`Driver::work_spent`]).
    /// Then (step 4b) the messages other shards handed over, within the same work budget.
    fn receive(&mut self, now: Instant) {
        self.drv.start_receiving(now);
        let mut done = 0;
        self.receive_datagrams(now, &mut done);
        let limit = done + self.drv.budget;
        while done < limit && self.drv.mesh_message(now, done) {
            done += 1;
            if self.drv.tx_low() {
                self.drv.tally.tx_reliefs += 1;
                self.flush_sends();
            }
        }
    }

    fn receive_datagrams(&mut self, now: Instant, done: &mut usize) {
        if let Some((next, got, at)) = self.rx_carry.take()
            && !self.handle_batch(now, at, next, got, done)
        {
            return;
        }
        let mut k = 0;
        while k < self.ready.len() && *done < self.drv.budget && !self.drv.work_spent() {
            let id = self.ready[k];
            let Some(Some(sk)) = self.socks.get(id as usize) else {
                self.ready.swap_remove(k);
                continue;
            };
            let (fd, port) = (sk.fd, sk.port);
            let drained = self.receive_from(now, fd, (SocketId(id), port), done);
            if drained {
                if let Some(Some(sk)) = self.socks.get_mut(id as usize) {
                    sk.ready = false;
                }
                self.ready.swap_remove(k);
            } else {
                k += 1;
            }
        }
    }

    /// Reads one socket until a short batch (true: drained) or the budget or the turn's work is
    /// spent.
    fn receive_from(
        &mut self,
        now: Instant,
        fd: i32,
        at: (SocketId, u16),
        done: &mut usize,
    ) -> bool {
        let n = self.rx.hdrs.len();
        while *done < self.drv.budget && !self.drv.work_spent() {
            for h in self.rx.hdrs.iter_mut() {
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_controllen = RX_CMSG_SPACE as _;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: `hdrs` point into buffers owned by `self.rx`, sized as declared.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.rx.hdrs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return true,
                    Some(libc::EINTR) => continue,
                    _ => {
                        // ICMP-reported errors and the like: the read consumed them; go on.
                        tracing::debug!(shard = self.drv.index, error = %e, "recvmmsg failed");
                        return false;
                    }
                }
            }
            let got = r as usize;
            if !self.handle_batch(now, at, 0, got, done) {
                return false;
            }
            if got < n {
                return true;
            }
        }
        false
    }

    /// Hands datagrams `from..got` of the batch in `rx` (read from `at`) to the core; false when
    /// the turn's work was spent first (the rest is kept in `rx_carry`).
    fn handle_batch(
        &mut self,
        now: Instant,
        at: (SocketId, u16),
        from: usize,
        got: usize,
        done: &mut usize,
    ) -> bool {
        for i in from..got {
            if self.drv.turn_spent(*done) {
                self.rx_carry = Some((i, got, at));
                return false;
            }
            *done += 1;
            let h = &self.rx.hdrs[i];
            let len = h.msg_len as usize;
            let flags = h.msg_hdr.msg_flags;
            let namelen = h.msg_hdr.msg_namelen as usize;
            #[allow(clippy::unnecessary_cast)] // size_t on glibc, socklen_t on musl
            let clen = h.msg_hdr.msg_controllen as usize;
            if flags & libc::MSG_TRUNC != 0 {
                self.drv.tally.drop(DropReason::RxTruncated, 1);
                continue;
            }
            // SAFETY: the kernel wrote `namelen` bytes (bounded by the storage size).
            let name = unsafe {
                std::slice::from_raw_parts(
                    (&self.rx.names[i] as *const libc::sockaddr_storage).cast::<u8>(),
                    namelen.min(size_of::<libc::sockaddr_storage>()),
                )
            };
            let Some(src) = decode_sockaddr(name) else {
                self.drv.tally.drop(DropReason::RxMalformed, 1);
                continue;
            };
            let cm = parse_rx_cmsgs(&self.rx.cmsgs[i].0[..clen.min(RX_CMSG_SPACE)]);
            let start = i * self.rx.buf_size;
            let payload = &mut self.rx.mem[start..start + len.min(self.rx.buf_size)];
            self.drv.datagram(now, at, src, cm.dst_ip, cm.gro_segment, payload);
            if self.drv.tx_low() {
                // Mid-turn relief (see `Driver::tx_low`): sendmmsg now frees the slots.
                self.drv.tally.tx_reliefs += 1;
                self.flush_sends();
            }
        }
        true
    }

    /// Step 5: pending transmits -> sendmmsg batches.
    fn flush_sends(&mut self) {
        // Relay legs' packets side by side, so that they leave as GSO trains.
        self.drv.tx.gather_trains();
        // Bounded: each iteration sends, drops or requeues at least one message, or stops.
        for _ in 0..self.drv.tx.capacity() {
            if self.tx_blocked || self.drv.tx.pending_len() == 0 {
                return;
            }
            let mut msgs = 0;
            let mut pos = 0;
            let tx = &mut self.drv.tx;
            let sock = tx.meta(tx.pending_at(0).unwrap_or(0)).socket;
            let Some(Some(sk)) = self.socks.get(sock.0 as usize) else {
                // The socket is gone: the datagram cannot leave.
                self.drv.tally.drop(DropReason::TxNoSocket, 1);
                self.complete(1);
                continue;
            };
            let (fd, v6) = (sk.fd, sk.v6);
            while msgs < BATCH && pos < tx.pending_len() {
                let first = *tx.meta(tx.pending_at(pos).unwrap_or(0));
                if first.socket != sock {
                    break; // one sendmmsg, one socket
                }
                let (n, seg) = next_run(tx, pos, self.drv.gso);
                for k in 0..n {
                    let idx = tx.pending_at(pos + k).unwrap_or(0);
                    self.txb.iovs[pos + k] = libc::iovec {
                        iov_base: tx.slot_ptr(idx).cast(),
                        iov_len: tx.meta(idx).len as usize,
                    };
                }
                let namelen = encode_sockaddr(first.dst, v6, &mut self.txb.names[msgs]);
                let clen = build_tx_cmsgs(&mut self.txb.cmsgs[msgs].0, seg, first.src, v6);
                let h = &mut self.txb.hdrs[msgs];
                h.msg_len = 0;
                h.msg_hdr.msg_name =
                    (&mut self.txb.names[msgs] as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = namelen;
                h.msg_hdr.msg_iov = &mut self.txb.iovs[pos];
                h.msg_hdr.msg_iovlen = n as _;
                h.msg_hdr.msg_control = if clen > 0 {
                    self.txb.cmsgs[msgs].0.as_mut_ptr().cast()
                } else {
                    std::ptr::null_mut()
                };
                h.msg_hdr.msg_controllen = clen as _;
                h.msg_hdr.msg_flags = 0;
                self.txb.counts[msgs] = n;
                self.txb.gso[msgs] = seg.is_some();
                msgs += 1;
                pos += n;
            }
            let fault = if self.txb.gso[0] { self.drv.gso_fault.take() } else { None };
            let r = match fault {
                Some(e) => {
                    // SAFETY: sets this thread's errno, read right below.
                    unsafe { *libc::__errno_location() = e };
                    -1
                }
                // SAFETY: `hdrs[..msgs]` point at live names, cmsgs, iovecs and TxQueue slots.
                None => unsafe { libc::sendmmsg(fd, self.txb.hdrs.as_mut_ptr(), msgs as u32, 0) },
            };
            if r > 0 {
                let mut datagrams = 0;
                for m in 0..r as usize {
                    let n = self.txb.counts[m];
                    self.drv.tally.tx_packets += n as u64;
                    self.drv.tally.tx_bytes += self.txb.hdrs[m].msg_len as u64;
                    if self.txb.gso[m] {
                        self.drv.tally.tx_gso_sends += 1;
                        self.drv.tally.tx_gso_datagrams += n as u64;
                    }
                    datagrams += n;
                }
                self.complete(datagrams);
                continue;
            }
            let err = io::Error::last_os_error().raw_os_error().unwrap_or(0);
            match err {
                libc::EAGAIN => {
                    self.tx_blocked = true;
                    return;
                }
                libc::EINTR => continue,
                e if self.txb.gso[0] => {
                    let n = self.txb.counts[0];
                    let slots: [u32; crate::io::GSO_MAX_SEGMENTS] =
                        std::array::from_fn(|k| self.drv.tx.pending_at(k).unwrap_or(0));
                    self.drv.gso_refused(e, slots.into_iter().take(n));
                }
                _ => {
                    // The first message is refused (unreachable, too big...): drop it.
                    let n = self.txb.counts[0];
                    self.drv.tally.drop(DropReason::TxError, n as u64);
                    self.complete(n);
                }
            }
        }
    }

    /// The first `n` pending datagrams are done (sent or dropped): free their slots.
    fn complete(&mut self, n: usize) {
        let tx = &mut self.drv.tx;
        for k in 0..n {
            if let Some(idx) = tx.pending_at(k) {
                tx.release(idx);
            }
        }
        tx.take_pending(n);
    }

    /// The loop (see `crate::shard` for the steps). Returns at shutdown.
    pub fn run(mut self) -> io::Result<()> {
        self.drv.stats.set_backend(crate::config::IoBackend::Epoll);
        loop {
            let started = Instant::now();
            if self.drv.stopping() {
                break;
            }
            self.drv.run_commands(started);
            self.drv.run_timer(started);
            self.socket_ops(started);
            self.receive(started);
            self.socket_ops(started);
            self.flush_sends();

            self.drv.flush_mesh();
            let wait = if !self.ready.is_empty() || self.rx_carry.is_some() {
                std::time::Duration::ZERO
            } else {
                self.drv.wait_timeout(Instant::now())
            };
            let before_wait = Instant::now();
            let polled = self.poll.poll(&mut self.events, Some(wait));
            // Time asleep in the kernel is not work: it does not count towards an overrun.
            let slept = before_wait.elapsed();
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in self.events.iter() {
                match ev.token() {
                    WAKE => self.drv.commands.clear_wake(),
                    Token(id) => {
                        if ev.is_writable() {
                            self.tx_blocked = false;
                        }
                        if (ev.is_readable() || ev.is_error())
                            && let Some(Some(sk)) = self.socks.get_mut(id)
                            && !sk.ready
                        {
                            sk.ready = true;
                            self.ready.push(id as u32);
                        }
                    }
                }
            }
            self.drv.end_turn(started, slept);
        }
        self.drv.stats.publish(&mut self.drv.tally);
        Ok(())
    }
}
