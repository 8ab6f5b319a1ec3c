//! Starting shard threads and talking to them: [`spawn_shards`] and [`ShardHandles`].

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use super::driver::ShardCtx;
use super::epoll::EpollShard;
use super::uring::UringShard;
use super::{IoOptions, bind_udp, choose_backend};
use crate::config::{Config, IoBackend};
use crate::shard::{
    CommandSender, EventReceiver, ShardCore, ShardStats, ShardStatsSnapshot, channel_pair,
};

/// Where and how shards run. [`ShardOptions::from_config`] reads `[media]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardOptions {
    /// Number of shards; 0 = one per available core.
    pub shards: usize,
    /// Address every shard socket binds.
    pub bind_address: IpAddr,
    /// Shard `i` binds `port_base + i`; 0 = kernel-chosen ports (tests).
    pub port_base: u16,
    pub backend: IoBackend,
    /// Pin shard `i` to the `i`-th CPU of the process's affinity mask (modulo its size).
    pub pin_threads: bool,
    /// SO_REUSEPORT on the sockets, and every shard binds the **same** port (`port_base`; with
    /// `port_base` 0 the port the kernel chose for shard 0): the kernel spreads client 5-tuples
    /// over the shards. Off for media ports (one socket per port: a second process binding the
    /// same port would otherwise silently take half the traffic); the shared TURN listener is
    /// the socket that wants it.
    pub reuse_port: bool,
    pub io: IoOptions,
}

impl ShardOptions {
    /// The `[media]` section of the configuration.
    pub fn from_config(cfg: &Config) -> Self {
        ShardOptions {
            shards: cfg.effective_shards(),
            bind_address: cfg.media.bind_address,
            port_base: cfg.media.port_base,
            backend: cfg.media.io_backend,
            pin_threads: cfg.media.pin_threads,
            reuse_port: false,
            io: IoOptions { dont_fragment: cfg.media.dont_fragment, ..IoOptions::default() },
        }
    }
}

/// What a shard is, given to the core factory and kept in its handle.
#[derive(Clone, Debug)]
pub struct ShardInfo {
    pub index: usize,
    /// The shard's bound socket address (the media port for its ICE candidates).
    pub local_addr: SocketAddr,
    /// `Uring` or `Epoll`.
    pub backend: IoBackend,
    /// Every shard's wake-up, by index (a core hands them to its
    /// [`MeshPort`](crate::shard::mesh::MeshPort) so what it writes to another shard wakes it).
    pub wakes: Vec<crate::shard::mesh::ShardWake>,
}

/// Why the shards could not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("{0}")]
    Backend(String),
    #[error("cannot bind UDP {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("shard {index}: {source}")]
    Setup { index: usize, source: io::Error },
}

/// One running shard: its command queue, event queue, counters and thread.
pub struct ShardHandle<C: ShardCore> {
    info: ShardInfo,
    commands: CommandSender<C::Command>,
    events: EventReceiver<C::Event>,
    stats: Arc<ShardStats>,
    shutdown: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl<C: ShardCore> std::fmt::Debug for ShardHandle<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHandle").field("info", &self.info).finish()
    }
}

impl<C: ShardCore> ShardHandle<C> {
    pub fn info(&self) -> &ShardInfo {
        &self.info
    }

    /// Send commands to this shard's core.
    pub fn commands(&mut self) -> &mut CommandSender<C::Command> {
        &mut self.commands
    }

    /// Receive this shard's events.
    pub fn events(&mut self) -> &mut EventReceiver<C::Event> {
        &mut self.events
    }

    /// The live counters (cheap to clone and read from any thread).
    pub fn stats(&self) -> &Arc<ShardStats> {
        &self.stats
    }

    /// Ask the shard to stop (it finishes its turn, cancels its kernel ops and exits).
    pub fn signal_shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.commands.wake();
    }

    /// Wait for the thread; its I/O error if it failed.
    pub fn join(&mut self) -> io::Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(io::Error::other("shard thread panicked"))),
            None => Ok(()),
        }
    }
}

impl<C: ShardCore> Drop for ShardHandle<C> {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.signal_shutdown();
            let _ = self.join();
        }
    }
}

/// All shards. Dropping it shuts them down and joins them.
pub struct ShardHandles<C: ShardCore> {
    shards: Vec<ShardHandle<C>>,
}

impl<C: ShardCore> std::fmt::Debug for ShardHandles<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.shards.iter().map(|s| (s.info.index, s.info.local_addr)))
            .finish()
    }
}

impl<C: ShardCore> ShardHandles<C> {
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&ShardHandle<C>> {
        self.shards.get(i)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut ShardHandle<C>> {
        self.shards.get_mut(i)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ShardHandle<C>> {
        self.shards.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, ShardHandle<C>> {
        self.shards.iter_mut()
    }

    /// The backend every shard runs on.
    pub fn backend(&self) -> IoBackend {
        self.shards.first().map_or(IoBackend::Auto, |s| s.info.backend)
    }

    /// Counters of every shard.
    pub fn snapshot(&self) -> Vec<ShardStatsSnapshot> {
        self.shards.iter().map(|s| s.stats.snapshot()).collect()
    }

    /// Stop every shard and join the threads; the first thread error, if any.
    pub fn shutdown(mut self) -> io::Result<()> {
        for s in &self.shards {
            s.signal_shutdown();
        }
        let mut res = Ok(());
        for s in &mut self.shards {
            if let Err(e) = s.join()
                && res.is_ok()
            {
                res = Err(e);
            }
        }
        res
    }
}

fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all-zero is a valid cpu_set_t; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer and size.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

fn pin_to(cpu: usize) -> io::Result<()> {
    // SAFETY: all-zero is a valid cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` comes from the affinity mask, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid pointer and size; 0 = the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Start `[media] shards` shard threads from the configuration.
pub fn spawn_shards<C, F>(cfg: &Config, factory: F) -> Result<ShardHandles<C>, SpawnError>
where
    C: ShardCore,
    F: Fn(&ShardInfo) -> C + Send + Sync + 'static,
{
    spawn_shards_with(&ShardOptions::from_config(cfg), factory)
}

/// Start shards with explicit options. Sockets are bound here (a bind error is returned, not
/// logged by a thread); each thread builds its core with `factory`, pins itself, sets up its
/// backend and reports readiness before this returns.
pub fn spawn_shards_with<C, F>(
    opts: &ShardOptions,
    factory: F,
) -> Result<ShardHandles<C>, SpawnError>
where
    C: ShardCore,
    F: Fn(&ShardInfo) -> C + Send + Sync + 'static,
{
    let backend = choose_backend(opts.backend).map_err(SpawnError::Backend)?;
    let n = if opts.shards == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        opts.shards
    };
    let cpus = if opts.pin_threads { allowed_cpus() } else { Vec::new() };
    let factory = Arc::new(factory);
    let mut shards: Vec<ShardHandle<C>> = Vec::with_capacity(n);
    // Every shard's queues first, so each core learns every shard's wake-up.
    let mut channels = Vec::with_capacity(n);
    for index in 0..n {
        channels.push(Some(
            channel_pair::<C::Command, C::Event>(opts.io.command_capacity, opts.io.event_capacity)
                .map_err(|source| SpawnError::Setup { index, source })?,
        ));
    }
    let wakes: Vec<_> = channels.iter().flatten().map(|(_, rx, _, _)| rx.shard_wake()).collect();
    for index in 0..n {
        let port = match shards.first() {
            Some(first) if opts.reuse_port => first.info.local_addr.port(),
            _ if opts.reuse_port || opts.port_base == 0 => opts.port_base,
            _ => opts.port_base.saturating_add(index as u16),
        };
        let addr = SocketAddr::new(opts.bind_address, port);
        let (socket, sock) = bind_udp(addr, opts.reuse_port, opts.io.socket_buffer, opts.io.gro)
            .map_err(|source| SpawnError::Bind { addr, source })?;
        if opts.io.dont_fragment {
            super::set_dont_fragment(&socket, sock.v6);
        }
        let (cmd_tx, cmd_rx, ev_tx, ev_rx) = channels[index].take().ok_or_else(|| {
            SpawnError::Setup { index, source: io::Error::other("shard queues missing") }
        })?;
        let info = ShardInfo { index, local_addr: sock.local_addr, backend, wakes: wakes.clone() };
        let kept = info.clone();
        let stats = Arc::new(ShardStats::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<io::Result<()>>(1);
        let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
        let f = factory.clone();
        let (st, sd, io_opts) = (stats.clone(), shutdown.clone(), opts.io.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || -> io::Result<()> {
                if let Some(cpu) = cpu
                    && let Err(e) = pin_to(cpu)
                {
                    tracing::warn!(shard = index, cpu, error = %e, "cannot pin shard thread");
                }
                let core = f(&info);
                let ctx = ShardCtx {
                    index,
                    socket,
                    sock,
                    core,
                    commands: cmd_rx,
                    events: ev_tx,
                    stats: st,
                    shutdown: sd,
                    opts: io_opts,
                };
                match backend {
                    IoBackend::Uring => match UringShard::new(ctx)
                        .and_then(|mut s| s.open_initial_sockets().map(|()| s))
                    {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s.run()
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(io::Error::new(
                                e.kind(),
                                format!("io_uring setup: {e}"),
                            )));
                            Err(e)
                        }
                    },
                    _ => match EpollShard::new(ctx)
                        .and_then(|mut s| s.open_initial_sockets().map(|()| s))
                    {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s.run()
                        }
                        Err(e) => {
                            let _ = ready_tx
                                .send(Err(io::Error::new(e.kind(), format!("epoll setup: {e}"))));
                            Err(e)
                        }
                    },
                }
            })
            .map_err(|source| SpawnError::Setup { index, source })?;
        let mut handle = ShardHandle {
            info: kept,
            commands: cmd_tx,
            events: ev_rx,
            stats,
            shutdown,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(source)) => {
                let _ = handle.join();
                return Err(SpawnError::Setup { index, source });
            }
            Err(_) => {
                let source =
                    handle.join().err().unwrap_or_else(|| io::Error::other("shard thread exited"));
                return Err(SpawnError::Setup { index, source });
            }
        }
        shards.push(handle);
    }
    tracing::info!(shards = n, backend = ?backend, "data-plane shards running");
    Ok(ShardHandles { shards })
}
