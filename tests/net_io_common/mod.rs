//! Shared fixtures for the loopback shard tests: an echo core and a bounded client.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ringsfu::config::IoBackend;
use ringsfu::io::{IoOptions, UringSupport, probe_uring};
use ringsfu::io::{ShardHandles, ShardOptions, spawn_shards_with};
use ringsfu::shard::{RecvMeta, ShardCore, SocketId, SocketOp, TxQueue};

#[derive(Debug)]
pub enum Cmd {
    Ping(u32),
    SetTimer(Duration),
    /// Send `count` datagrams of `size` bytes to `dst`: `[i as u32 BE][byte i; size - 4]`.
    Burst {
        dst: SocketAddr,
        count: u32,
        size: usize,
    },
    /// Like a fanout to two local legs and a relay leg: `count` times a datagram to each of
    /// `local`, then one to `relay` marked as a train (`TxSlot::set_train`), all as in `Burst`.
    Interleaved {
        local: [SocketAddr; 2],
        relay: SocketAddr,
        count: u32,
        size: usize,
    },
    /// Open (or close) a socket of the shard.
    Socket(SocketOp),
    /// From now on every datagram received is sent to each of these instead of echoed (an SFU's
    /// fanout); acknowledged with `Pong(u32::MAX)`.
    Fanout(Vec<SocketAddr>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Ev {
    Pong(u32),
    TimerFired,
    BurstQueued(u32),
    SocketFailed(SocketId, std::io::ErrorKind),
}

/// Datagram `i` of a burst: `[i as u32 BE][byte i; size - 4]`, committed.
fn numbered(mut slot: ringsfu::shard::TxSlot<'_>, i: u32, size: usize) {
    let b = slot.buf();
    b[..4].copy_from_slice(&i.to_be_bytes());
    b[4..size].fill(i as u8);
    slot.commit(size);
}

/// Reflects every datagram to its source, from the socket and address it arrived on.
#[derive(Default)]
pub struct EchoCore {
    fanout: Vec<SocketAddr>,
    deadline: Option<Instant>,
    events: std::collections::VecDeque<Ev>,
    sockets: std::collections::VecDeque<SocketOp>,
}

impl ShardCore for EchoCore {
    type Command = Cmd;
    type Event = Ev;

    fn handle_datagram(&mut self, _now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        assert_eq!(meta.len, buf.len());
        for &dst in &self.fanout {
            // Refusals (pool exhausted) are counted by the queue as TxQueueFull.
            if let Some(mut slot) = tx.push(dst) {
                slot.buf()[..buf.len()].copy_from_slice(buf);
                slot.commit(buf.len());
            }
        }
        if !self.fanout.is_empty() {
            return;
        }
        if let Some(mut slot) = tx.push(meta.src) {
            slot.buf()[..buf.len()].copy_from_slice(buf);
            slot.set_source(meta.dst_ip);
            slot.set_socket(meta.socket);
            slot.commit(buf.len());
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: Cmd, tx: &mut TxQueue) {
        match cmd {
            Cmd::Ping(n) => self.events.push_back(Ev::Pong(n)),
            Cmd::SetTimer(d) => self.deadline = Some(now + d),
            Cmd::Burst { dst, count, size } => {
                let mut queued = 0;
                for i in 0..count {
                    let Some(slot) = tx.push(dst) else { break };
                    numbered(slot, i, size);
                    queued += 1;
                }
                self.events.push_back(Ev::BurstQueued(queued));
            }
            Cmd::Interleaved { local, relay, count, size } => {
                let mut queued = 0;
                for i in 0..count {
                    for (dst, train) in [(local[0], false), (local[1], false), (relay, true)] {
                        let Some(mut slot) = tx.push(dst) else { break };
                        if train {
                            slot.set_train();
                        }
                        numbered(slot, i, size);
                    }
                    queued += 1;
                }
                self.events.push_back(Ev::BurstQueued(queued));
            }
            Cmd::Socket(op) => self.sockets.push_back(op),
            Cmd::Fanout(to) => {
                self.fanout = to;
                self.events.push_back(Ev::Pong(u32::MAX));
            }
        }
    }

    fn poll_socket_op(&mut self) -> Option<SocketOp> {
        self.sockets.pop_front()
    }

    fn handle_socket_result(
        &mut self,
        _now: Instant,
        id: SocketId,
        r: Result<(), std::io::ErrorKind>,
        _tx: &mut TxQueue,
    ) {
        if let Err(err) = r {
            self.events.push_back(Ev::SocketFailed(id, err));
        }
    }

    fn handle_timeout(&mut self, now: Instant, _tx: &mut TxQueue) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.events.push_back(Ev::TimerFired);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn poll_event(&mut self) -> Option<Ev> {
        self.events.pop_front()
    }
}

/// `true` when the backend can run here; io_uring tests skip loudly otherwise.
pub fn backend_available(b: IoBackend) -> bool {
    if b == IoBackend::Uring
        && let UringSupport::Unavailable(why) = probe_uring()
    {
        eprintln!("SKIPPED: io_uring unavailable: {why}");
        return false;
    }
    true
}

pub fn options(backend: IoBackend, bind: &str, shards: usize) -> ShardOptions {
    ShardOptions {
        shards,
        bind_address: bind.parse().unwrap(),
        port_base: 0,
        backend,
        pin_threads: false,
        reuse_port: false,
        io: IoOptions::default(),
    }
}

pub fn spawn(opts: &ShardOptions) -> ShardHandles<EchoCore> {
    let h = spawn_shards_with(opts, |_| EchoCore::default()).expect("spawn shards");
    assert_eq!(h.backend(), opts.backend);
    h
}

pub fn client(bind: &str) -> UdpSocket {
    let c = UdpSocket::bind(bind).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    c
}

fn payload(seq: u32, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    v[..4].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in v[4..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    v
}

/// Send `n` datagrams (sizes vary, 4..=1200 bytes) in windows of `window`, expect each one
/// back intact. Bounded: every receive has a timeout and the loop a deadline.
pub fn echo_round_trip(c: &UdpSocket, server: SocketAddr, n: u32, window: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = vec![false; n as usize];
    let mut received = 0u32;
    let mut buf = [0u8; 2048];
    let mut next = 0u32;
    while received < n {
        assert!(Instant::now() < deadline, "echo: only {received}/{n} back before the deadline");
        let end = (next + window).min(n);
        for seq in next..end {
            let len = 4 + (seq as usize * 37) % 1197;
            c.send_to(&payload(seq, len), server).unwrap();
        }
        next = end;
        // Collect this window (or whatever arrives before a timeout; then resend the missing).
        loop {
            match c.recv_from(&mut buf) {
                Ok((len, from)) => {
                    assert_eq!(from, server, "reply from the shard's address");
                    let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
                    assert!(seq < n);
                    assert_eq!(&buf[..len], &payload(seq, len)[..], "contents of {seq}");
                    assert_eq!(len, 4 + (seq as usize * 37) % 1197);
                    if !got[seq as usize] {
                        got[seq as usize] = true;
                        received += 1;
                    }
                    if received == next {
                        break;
                    }
                }
                Err(_) => {
                    // Loopback loss under load: resend what is missing of this window.
                    for seq in 0..next {
                        if !got[seq as usize] {
                            let len = 4 + (seq as usize * 37) % 1197;
                            c.send_to(&payload(seq, len), server).unwrap();
                        }
                    }
                    break;
                }
            }
        }
    }
}

/// Counters are published at the end of a loop turn, possibly after the client saw the data:
/// poll (bounded) until `cond` holds, then return the snapshot.
pub fn settle(
    stats: &ringsfu::shard::ShardStats,
    cond: impl Fn(&ringsfu::shard::ShardStatsSnapshot) -> bool,
) -> ringsfu::shard::ShardStatsSnapshot {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = stats.snapshot();
        if cond(&s) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
