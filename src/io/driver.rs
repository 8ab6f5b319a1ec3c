//! The part of the run loop both backends share: the core, its queues, counters and the
//! per-turn order (commands, timers, datagrams, events). See `crate::shard` for the steps.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::io::IoOptions;
use crate::io::socket::SocketInfo;
use crate::shard::stats::Tally;
use crate::shard::{
    CommandQueue, DropReason, EventQueue, RecvMeta, ShardCore, ShardStats, SocketId, SocketOp,
    TxQueue,
};

/// Commands handled per turn before datagrams get their share.
const COMMAND_BUDGET: usize = 64;
/// Longest sleep: keeps the turn counter (the stuck-loop indicator) moving while idle.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(1);
/// A turn longer than this is counted as an overrun and logged (rate-limited).
const OVERRUN: Duration = Duration::from_millis(50);
/// How long a turn handles received datagrams before it yields to commands and timers; what is
/// left waits for the next turn (the backends keep it). One datagram's fanout is never cut, so a
/// turn may end up to one fanout past this.
pub(crate) const TURN_WORK: Duration = Duration::from_millis(10);

/// Everything a backend needs besides its kernel interface.
pub(crate) struct ShardCtx<C: ShardCore> {
    pub index: usize,
    pub socket: std::net::UdpSocket,
    pub sock: SocketInfo,
    pub core: C,
    pub commands: CommandQueue<C::Command>,
    pub events: EventQueue<C::Event>,
    pub stats: Arc<ShardStats>,
    pub shutdown: Arc<AtomicBool>,
    pub opts: IoOptions,
}

pub(crate) struct Driver<C: ShardCore> {
    pub index: usize,
    pub core: C,
    pub commands: CommandQueue<C::Command>,
    pub events: EventQueue<C::Event>,
    pub stats: Arc<ShardStats>,
    pub shutdown: Arc<AtomicBool>,
    pub tx: TxQueue,
    pub tally: Tally,
    /// GSO in use (socket supports it, enabled in options, not stepped down).
    pub gso: bool,
    pub budget: usize,
    /// Test hook (see `IoOptions::inject_gso_error`).
    pub gso_fault: Option<i32>,
    /// Socket requests of the core, carried out by the backend before the turn's sends.
    pub socket_ops: std::collections::VecDeque<SocketOp>,
    /// Receive/send buffer size of the sockets the core opens.
    pub extra_socket_buffer: usize,
    /// The same for listeners the core opens (`SocketOp::Listen`): the shard's own size.
    pub socket_buffer: usize,
    /// Listeners the core opens send with DF (`IoOptions::dont_fragment`).
    pub dont_fragment: bool,
    /// The first listener (`SocketOp::Listen`) that would not bind, for
    /// [`Driver::startup_result`].
    pub listen_failed: Option<std::io::Error>,
    last_overrun_log: Option<Instant>,
    /// Where this turn's time went, for the overrun log: commands (count, time) and the core's
    /// timer; the rest is datagrams and sends.
    turn_commands: (u32, Duration),
    turn_timer: Duration,
    /// When this turn's datagram work is spent ([`Driver::start_receiving`]).
    work_until: Instant,
}

impl<C: ShardCore> Driver<C> {
    /// Split a context into the driver and the socket parts the backend keeps.
    pub fn new(ctx: ShardCtx<C>) -> (Self, std::net::UdpSocket, SocketInfo, IoOptions) {
        let gso = ctx.opts.gso && ctx.sock.gso;
        ctx.stats.set_gso(gso);
        let mut tx = TxQueue::new(ctx.opts.tx_slots);
        tx.set_headroom(ctx.core.tx_headroom());
        let d = Driver {
            index: ctx.index,
            core: ctx.core,
            commands: ctx.commands,
            events: ctx.events,
            stats: ctx.stats,
            shutdown: ctx.shutdown,
            tx,
            tally: Tally::default(),
            gso,
            budget: ctx.opts.budget.max(1),
            gso_fault: ctx.opts.inject_gso_error,
            socket_ops: std::collections::VecDeque::with_capacity(64),
            extra_socket_buffer: ctx.opts.extra_socket_buffer,
            socket_buffer: ctx.opts.socket_buffer,
            dont_fragment: ctx.opts.dont_fragment,
            listen_failed: None,
            last_overrun_log: None,
            turn_commands: (0, Duration::ZERO),
            turn_timer: Duration::ZERO,
            work_until: Instant::now(),
        };
        (d, ctx.socket, ctx.sock, ctx.opts)
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    fn drain_events(&mut self) {
        while let Some(e) = self.core.poll_event() {
            if !self.events.push(e) {
                self.tally.drop(DropReason::EventQueueFull, 1);
            }
        }
        while let Some(op) = self.core.poll_socket_op() {
            self.socket_ops.push_back(op);
        }
    }

    /// Binds a socket the core asked for (`listen`: `Some(shared)` for `SocketOp::Listen`, the
    /// shard's buffer size, SO_REUSEPORT when shared);
    /// its error goes back to the core.
    pub fn open_socket(
        &mut self,
        now: Instant,
        id: SocketId,
        addr: SocketAddr,
        listen: Option<bool>,
    ) -> Option<(std::net::UdpSocket, SocketInfo)> {
        let res = if id == SocketId::MAIN || id.0 >= SocketId::LIMIT {
            Err(std::io::Error::from(std::io::ErrorKind::InvalidInput))
        } else if let Some(shared) = listen {
            crate::io::bind_udp(addr, shared, self.socket_buffer, false).inspect(|(s, info)| {
                if self.dont_fragment {
                    crate::io::set_dont_fragment(s, info.v6);
                }
            })
        } else {
            crate::io::bind_udp(addr, false, self.extra_socket_buffer, false)
        };
        match res {
            Ok(s) => Some(s),
            Err(e) => {
                if listen.is_some() {
                    tracing::error!(shard = self.index, %addr, error = %e, "cannot listen");
                    if self.listen_failed.is_none() {
                        self.listen_failed = Some(std::io::Error::new(
                            e.kind(),
                            format!("cannot listen on {addr}: {e}"),
                        ));
                    }
                } else {
                    tracing::debug!(shard = self.index, %addr, error = %e, "cannot open socket");
                }
                self.socket_result(now, id, Err(e.kind()));
                None
            }
        }
    }

    /// Takes the socket requests the core made while it was built (the listeners a media
    /// shard hosting TURN opens), for the backend to carry out before the shard reports
    /// ready.
    pub fn take_initial_socket_ops(&mut self) {
        self.drain_events();
    }

    /// After the initial socket requests ran: an error when a listener would not bind, so
    /// the shard fails to start instead of reporting ready without it.
    pub fn startup_result(&mut self) -> std::io::Result<()> {
        self.listen_failed.take().map_or(Ok(()), Err)
    }

    /// Tells the core how its `SocketOp::Open` or `Listen` ended.
    pub fn socket_result(&mut self, now: Instant, id: SocketId, r: Result<(), std::io::ErrorKind>) {
        self.core.handle_socket_result(now, id, r, &mut self.tx);
        self.drain_events();
    }

    /// Step 2: commands, bounded.
    pub fn run_commands(&mut self, now: Instant) {
        if self.commands.is_empty() {
            return;
        }
        let started = Instant::now();
        for _ in 0..COMMAND_BUDGET {
            let Some(cmd) = self.commands.pop() else {
                break;
            };
            self.turn_commands.0 += 1;
            self.core.handle_command(now, cmd, &mut self.tx);
            self.drain_events();
            if !self.socket_ops.is_empty() {
                // The backend carries the socket requests out before the next command (which
                // then sees their failures reported in order); the rest waits a turn.
                break;
            }
        }
        self.turn_commands.1 += started.elapsed();
    }

    /// Step 3: the core's timer, when due.
    pub fn run_timer(&mut self, now: Instant) {
        if self.core.poll_timeout().is_some_and(|d| d <= now) {
            let started = Instant::now();
            self.core.handle_timeout(now, &mut self.tx);
            self.drain_events();
            self.turn_timer += started.elapsed();
        }
    }

    /// Step 4 begins: the turn's datagrams may take [`TURN_WORK`] from `now`.
    pub fn start_receiving(&mut self, now: Instant) {
        self.work_until = now + TURN_WORK;
    }

    /// Asked before each datagram after the first `handled` of this turn: whether its work is
    /// spent, so the backend keeps the rest for the next turn and commands, timers and the
    /// watchdog's turn counter are never held up by a backlog. The clock is read every 8
    /// datagrams, or before each one while they fan out (more than 4 sends each so far: one
    /// such datagram can take milliseconds).
    pub fn turn_spent(&self, handled: usize) -> bool {
        let fanning_out = self.tally.tx_packets + self.tx.pending_len() as u64 > 4 * handled as u64;
        handled > 0 && (handled.is_multiple_of(8) || fanning_out) && self.work_spent()
    }

    /// This turn's datagram work is spent (one clock read).
    pub fn work_spent(&self) -> bool {
        Instant::now() >= self.work_until
    }

    /// Step 4: one received buffer (split when GRO coalesced it).
    pub fn datagram(
        &mut self,
        now: Instant,
        (socket, local_port): (SocketId, u16),
        src: SocketAddr,
        dst_ip: Option<IpAddr>,
        gro_segment: Option<usize>,
        buf: &mut [u8],
    ) {
        let stride = match gro_segment {
            Some(s) if s > 0 && s < buf.len() => s,
            _ => buf.len().max(1),
        };
        for chunk in buf.chunks_mut(stride) {
            let meta =
                RecvMeta { src, dst_ip, dst_port: local_port, socket, len: chunk.len(), stride };
            self.tally.rx_packets += 1;
            self.tally.rx_bytes += chunk.len() as u64;
            self.core.handle_datagram(now, meta, chunk, &mut self.tx);
            self.drain_events();
        }
    }

    /// Step 4b: one message from another shard's core, unless the turn's work is spent
    /// (`handled`: datagrams and messages so far this turn). False when nothing was handled.
    pub fn mesh_message(&mut self, now: Instant, handled: usize) -> bool {
        if handled > 0 && self.turn_spent(handled) {
            return false;
        }
        let done = self.core.handle_mesh(now, &mut self.tx);
        if done {
            self.drain_events();
        }
        done
    }

    /// Before sleeping: the core wakes the shards it wrote to.
    pub fn flush_mesh(&mut self) {
        self.core.flush_mesh();
    }

    /// The transmit pool is below half its capacity: the backend flushes mid-turn (a relief)
    /// before handing the core the next datagram, so one turn of a large fanout does not run
    /// the pool dry. Half: one packet to up to `capacity / 2` subscribers always finds slots.
    pub fn tx_low(&self) -> bool {
        self.tx.available() < self.tx.capacity() / 2
    }

    /// How long the backend may sleep in the kernel: zero when work is already waiting.
    pub fn wait_timeout(&self, now: Instant) -> Duration {
        if !self.commands.is_empty() || self.stopping() || self.core.has_mesh_input() {
            return Duration::ZERO;
        }
        match self.core.poll_timeout() {
            Some(d) => d.saturating_duration_since(now).min(MAX_WAIT),
            None => MAX_WAIT,
        }
    }

    /// Step 6: publish counters, wake the control plane, count the turn.
    pub fn end_turn(&mut self, started: Instant, slept: Duration) {
        let dropped = self.tx.take_dropped();
        self.tally.drop(DropReason::TxQueueFull, dropped);
        let (rx, tx, reliefs) =
            (self.tally.rx_packets, self.tally.tx_packets, self.tally.tx_reliefs);
        self.stats.publish(&mut self.tally);
        self.events.flush_wake();
        let took = started.elapsed().saturating_sub(slept);
        let overrun = took > OVERRUN;
        self.stats.turn(took.as_micros() as u64, overrun);
        let ((commands, commands_time), timer) =
            (std::mem::take(&mut self.turn_commands), std::mem::take(&mut self.turn_timer));
        if overrun && self.last_overrun_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            self.last_overrun_log = Some(Instant::now());
            tracing::warn!(
                shard = self.index,
                took_ms = took.as_millis() as u64,
                commands,
                commands_ms = commands_time.as_millis() as u64,
                timer_ms = timer.as_millis() as u64,
                rx_datagrams = rx,
                tx_datagrams = tx,
                tx_reliefs = reliefs,
                "shard loop turn overran (ringsfu_shard_loop_turn_seconds counts every turn)"
            );
        }
    }

    /// A GSO send failed with `err` (not transient). The datagrams are resent one by one: the
    /// whole socket steps down when the kernel cannot segment at all (EIO: no checksum offload;
    /// EINVAL, EOPNOTSUPP); otherwise (EMSGSIZE: segment above the path MTU...) only these
    /// datagrams are marked to go alone.
    pub fn gso_refused(&mut self, err: i32, slots: impl Iterator<Item = u32>) {
        if crate::io::sys::is_gso_error(err) {
            self.step_down_gso(err);
        } else {
            for s in slots {
                self.tx.mark_solo(s);
            }
        }
    }

    /// The kernel refused GSO: continue with one datagram per send.
    pub fn step_down_gso(&mut self, err: i32) {
        if self.gso {
            self.gso = false;
            self.stats.set_gso(false);
            tracing::warn!(
                shard = self.index,
                error = %std::io::Error::from_raw_os_error(err),
                "UDP GSO send failed; continuing without GSO"
            );
        }
    }
}
