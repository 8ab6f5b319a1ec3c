//! The epoll shard backend (fallback when io_uring is unavailable): `mio::Poll` over the socket
//! and the command eventfd, `recvmmsg` into preallocated buffers, `sendmmsg` from the
//! [`crate::shard::TxQueue`] slots (GSO runs as one message with several iovecs and
//! `UDP_SEGMENT`), the core's deadline as the poll timeout.
//!
//! mio registers edge-triggered: the socket is read until a short batch (the queue was empty at
//! that moment; a later arrival raises a new edge) or until the turn's budget is spent (then the
//! next turn does not sleep). A send that hits EAGAIN leaves the rest in the TxQueue until the
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
use crate::shard::{DropReason, ShardCore};

const SOCK: Token = Token(0);
const WAKE: Token = Token(1);
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

/// A shard running on epoll.
pub(crate) struct EpollShard<C: ShardCore> {
    poll: Poll,
    events: Events,
    rx: RxBatch,
    txb: TxBatch,
    fd: i32,
    v6: bool,
    rx_ready: bool,
    tx_blocked: bool,
    _socket: std::net::UdpSocket,
    drv: Driver<C>,
}

impl<C: ShardCore> EpollShard<C> {
    pub fn new(ctx: ShardCtx<C>) -> io::Result<Self> {
        let (drv, socket, sock, opts) = Driver::new(ctx);
        let poll = Poll::new()?;
        let fd = socket.as_raw_fd();
        poll.registry().register(
            &mut SourceFd(&fd),
            SOCK,
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
        Ok(EpollShard {
            poll,
            events: Events::with_capacity(16),
            rx,
            txb,
            fd,
            v6: sock.v6,
            rx_ready: true,
            tx_blocked: false,
            _socket: socket,
            drv,
        })
    }

    /// Step 4: recvmmsg batches until drained or the budget is spent.
    fn receive(&mut self, now: Instant) {
        let n = self.rx.hdrs.len();
        let mut done = 0;
        while self.rx_ready && done < self.drv.budget {
            for h in self.rx.hdrs.iter_mut() {
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_controllen = RX_CMSG_SPACE as _;
                h.msg_hdr.msg_flags = 0;
                h.msg_len = 0;
            }
            // SAFETY: `hdrs` point into buffers owned by `self.rx`, sized as declared.
            let r = unsafe {
                libc::recvmmsg(
                    self.fd,
                    self.rx.hdrs.as_mut_ptr(),
                    n as u32,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => self.rx_ready = false,
                    Some(libc::EINTR) => continue,
                    _ => {
                        // ICMP-reported errors and the like: the read consumed them; go on.
                        tracing::debug!(shard = self.drv.index, error = %e, "recvmmsg failed");
                    }
                }
                break;
            }
            let got = r as usize;
            for i in 0..got {
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
                self.drv.datagram(now, src, cm.dst_ip, cm.gro_segment, payload);
            }
            done += got;
            if got < n {
                self.rx_ready = false;
            }
        }
    }

    /// Step 5: pending transmits -> sendmmsg batches.
    fn flush_sends(&mut self) {
        // Bounded: each iteration sends, drops or requeues at least one message, or stops.
        for _ in 0..self.drv.tx.capacity() {
            if self.tx_blocked || self.drv.tx.pending_len() == 0 {
                return;
            }
            let mut msgs = 0;
            let mut pos = 0;
            let tx = &mut self.drv.tx;
            while msgs < BATCH && pos < tx.pending_len() {
                let (n, seg) = next_run(tx, pos, self.drv.gso);
                let first = *tx.meta(tx.pending_at(pos).unwrap_or(0));
                for k in 0..n {
                    let idx = tx.pending_at(pos + k).unwrap_or(0);
                    self.txb.iovs[pos + k] = libc::iovec {
                        iov_base: tx.slot_ptr(idx).cast(),
                        iov_len: tx.meta(idx).len as usize,
                    };
                }
                let namelen = encode_sockaddr(first.dst, self.v6, &mut self.txb.names[msgs]);
                let clen = build_tx_cmsgs(&mut self.txb.cmsgs[msgs].0, seg, first.src, self.v6);
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
                None => unsafe {
                    libc::sendmmsg(self.fd, self.txb.hdrs.as_mut_ptr(), msgs as u32, 0)
                },
            };
            if r > 0 {
                let mut datagrams = 0;
                for m in 0..r as usize {
                    let n = self.txb.counts[m];
                    self.drv.tally.tx_packets += n as u64;
                    self.drv.tally.tx_bytes += self.txb.hdrs[m].msg_len as u64;
                    if self.txb.gso[m] {
                        self.drv.tally.tx_gso_sends += 1;
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
            self.receive(started);
            self.flush_sends();

            let wait = if self.rx_ready {
                std::time::Duration::ZERO
            } else {
                self.drv.wait_timeout(Instant::now())
            };
            match self.poll.poll(&mut self.events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
            for ev in self.events.iter() {
                match ev.token() {
                    SOCK => {
                        if ev.is_readable() || ev.is_error() {
                            self.rx_ready = true;
                        }
                        if ev.is_writable() {
                            self.tx_blocked = false;
                        }
                    }
                    WAKE => self.drv.commands.clear_wake(),
                    _ => {}
                }
            }
            self.drv.end_turn(started);
        }
        self.drv.stats.publish(&mut self.drv.tally);
        Ok(())
    }
}
