//! Running the TURN server: [`start`] reads `[turn]`, starts the UDP shards (one [`TurnShard`]
//! per shard, all bound to `[turn] port` with SO_REUSEPORT) and the TCP/TLS listener thread
//! ([`super::stream`]), and returns the [`TurnService`] that stops them. With the media engine
//! running, the binary uses [`TurnSetup`] instead: the media shards host the UDP side (one
//! [`TurnShard`] inside each, [`TurnSetup::hosted`]), so a datagram relayed to ringsfu's own
//! media port on the same shard never leaves the process.
//!
//! Relayed transport addresses: every relay IP brings the port range
//! `relay_port_min..=relay_port_max`, cut into `shards + 1` disjoint slices: shard `i` relays
//! from slice `i`, the stream thread from the last one. A slice is a shard's own, so no two
//! threads ever bind the same port and no relayed packet crosses threads.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::shard::{TurnCommand, TurnReport, TurnShard, TurnShardStats, TurnStatsCell};
use super::stream::StreamServer;
use super::{Credentials, PeerPolicy, TurnServer, TurnSettings};
use crate::config::Config;
use crate::io::IoOptions;
use crate::io::{ShardHandles, ShardOptions, SpawnError, spawn_shards_with};
use crate::secrets::{TurnSecrets, TurnSecretsHandle};

/// Why the TURN server could not start.
#[derive(Debug, thiserror::Error)]
pub enum TurnStartError {
    #[error("TURN UDP shards: {0}")]
    Shards(#[from] SpawnError),
    #[error("TURN TCP/TLS listener on {addr}: {source}")]
    Stream { addr: SocketAddr, source: std::io::Error },
    #[error("TURN: {0}")]
    Config(String),
}

/// The running TURN server.
pub struct TurnService {
    /// `None` when the media shards host the UDP side.
    shards: Option<ShardHandles<TurnShard>>,
    stream: Option<StreamServer>,
    udp: SocketAddr,
    /// Published counters: one per UDP shard, then the TCP/TLS thread's.
    cells: Vec<Arc<TurnStatsCell>>,
    /// The TCP/TLS thread's turn counter (one a second), for the watchdog.
    stream_turns: Arc<crate::shard::ShardStats>,
}

impl std::fmt::Debug for TurnService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnService").field("udp", &self.udp).field("shards", &self.shards).finish()
    }
}

impl TurnService {
    /// The UDP listener's address (every shard's).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp
    }

    /// The TCP and TLS listeners' addresses.
    pub fn stream_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        self.stream.as_ref().map_or((None, None), |s| (Some(s.tcp_addr()), s.tls_addr()))
    }

    /// Counters of every UDP shard (asks each shard; waits at most `timeout` per shard). When
    /// the media shards host the UDP side: their last published counters.
    pub fn reports(&mut self, timeout: Duration) -> Vec<TurnShardStats> {
        let Some(shards) = self.shards.as_mut() else {
            let n = self.cells.len().saturating_sub(1);
            return self.cells[..n].iter().map(|c| c.load()).collect();
        };
        let mut out = Vec::new();
        for s in shards.iter_mut() {
            if s.commands().send(TurnCommand::Report).is_err() {
                continue;
            }
            if let Some(TurnReport(st)) = s.events().recv_timeout(timeout) {
                out.push(st);
            }
        }
        out
    }

    /// The counters each UDP shard and then the TCP/TLS thread publish once a second, for
    /// `/metrics` (labels: the shard index, `stream` for the last).
    pub fn stats_cells(&self) -> Vec<Arc<TurnStatsCell>> {
        self.cells.clone()
    }

    /// The UDP shards' loop counters (exported with the shards' metrics).
    pub fn shard_stats(&self) -> Vec<Arc<crate::shard::ShardStats>> {
        self.shards.iter().flat_map(|h| h.iter()).map(|s| s.stats().clone()).collect()
    }

    /// What the watchdog watches: the UDP shards' loop counters and the TCP/TLS thread's
    /// (its one-second timer counts a turn).
    pub fn watched(&self) -> Vec<Arc<crate::shard::ShardStats>> {
        let mut all = self.shard_stats();
        all.push(self.stream_turns.clone());
        all
    }

    /// Stops the shards and the stream thread and waits for them.
    pub fn shutdown(self) {
        if let Some(s) = self.stream {
            s.shutdown();
        }
        if let Some(shards) = self.shards
            && let Err(e) = shards.shutdown()
        {
            tracing::warn!(error = %e, "TURN shard ended with an error");
        }
        tracing::info!("TURN server stopped");
    }
}

/// Everything one TURN server instance needs, derived from the configuration once.
#[derive(Clone)]
pub(crate) struct TurnPlan {
    pub listen: SocketAddr,
    pub shards: usize,
    pub relay_ips: Vec<IpAddr>,
    /// The addresses browsers reach the media ports on (`media::candidate_ips`), resolved once
    /// here: the cores are built inside the shard threads, which must not ask the machine or
    /// the DNS again.
    pub media_ips: Vec<IpAddr>,
    /// The media ports ([`Config::port_plan`]), when the media engine runs.
    pub media_ports: Option<std::ops::RangeInclusive<u16>>,
    /// Per shard, then the stream thread's slice last.
    pub slices: Vec<Range<u16>>,
    /// Allocation limit of each UDP shard and of the stream thread.
    pub max_allocations_per_shard: usize,
    pub max_allocations_stream: usize,
    /// Relay sockets each UDP shard and the stream thread may hold (the open-file budget).
    /// Without in-process delivery every allocation holds one, so these cap allocations too.
    pub max_relay_sockets_per_shard: usize,
    pub max_relay_sockets_stream: usize,
    pub nonce_key: [u8; 32],
    pub token_key: u64,
    /// The reloadable credentials (shared with the control plane, which mints joinRoom's).
    pub secrets: TurnSecretsHandle,
}

impl TurnPlan {
    pub fn new(cfg: &Config, secrets: TurnSecretsHandle) -> Result<TurnPlan, TurnStartError> {
        let mut relay_ips = cfg.turn_relay_ips();
        if relay_ips.is_empty() {
            // Bound to the wildcard: the interface addresses (not `media.public_ips` nor what
            // `server.public_host` resolves to, which may be NAT addresses this host cannot
            // bind), loopback only if nothing else.
            let mut local = cfg.clone();
            local.media.public_ips.clear();
            local.server.public_host.clear();
            relay_ips = crate::media::candidate_ips(&local);
            if relay_ips.iter().any(|ip| !ip.is_loopback()) {
                relay_ips.retain(|ip| !ip.is_loopback());
            }
        }
        if relay_ips.is_empty() {
            return Err(TurnStartError::Config("no relay address (turn.relay_ips)".into()));
        }
        let shards = cfg.effective_shards();
        let (lo, hi) = (cfg.turn.relay_port_min as u32, cfg.turn.relay_port_max as u32 + 1);
        let parts = shards as u32 + 1;
        let per = (hi - lo) / parts;
        if per == 0 {
            return Err(TurnStartError::Config(format!(
                "turn.relay_port_min..=relay_port_max holds fewer ports than shards + 1 ({parts})"
            )));
        }
        let slices = (0..parts)
            .map(|i| {
                let start = lo + i * per;
                let end = if i + 1 == parts { hi } else { start + per };
                // `Range<u16>` cannot end past 65535: port 65535 itself is not used.
                start as u16..end.min(u16::MAX as u32) as u16
            })
            .collect();
        let mut nonce_key = [0u8; 32];
        rand::fill(&mut nonce_key);
        Ok(TurnPlan {
            listen: SocketAddr::new(cfg.media.bind_address, cfg.turn.port),
            shards,
            relay_ips,
            media_ips: crate::media::candidate_ips(cfg),
            media_ports: cfg.port_plan().ok().and_then(|p| p.media()),
            slices,
            max_allocations_per_shard: cfg.turn.max_allocations.div_ceil(shards).max(1),
            max_allocations_stream: cfg.turn.max_allocations.div_ceil(8).max(1),
            max_relay_sockets_per_shard: usize::MAX,
            max_relay_sockets_stream: usize::MAX,
            nonce_key,
            token_key: rand::random(),
            secrets,
        })
    }

    /// The credential store for `secrets` (rebuilt on every reload).
    pub fn credentials(&self, secrets: &TurnSecrets) -> Credentials {
        Credentials::new(
            &secrets.realm,
            &secrets.user_strings(),
            Some(&secrets.rest_secret),
            self.nonce_key,
        )
    }

    /// Relay sockets stay within the open-file limit (with `reserve` descriptors left for
    /// everything else), 7/8 of it for the UDP shards.
    pub fn cap_by_fd_limit(&mut self, fds: u64, reserve: u64) {
        let budget = fds.saturating_sub(reserve) as usize;
        self.max_relay_sockets_per_shard = (budget * 7 / 8 / self.shards).max(1);
        self.max_relay_sockets_stream = (budget / 8).max(1);
    }

    /// A TURN server core for slice `slice` (the last one is the stream thread's).
    pub fn server(&self, cfg: &Config, slice: usize) -> TurnServer {
        let t = &cfg.turn;
        let (max, sockets) = if slice == self.shards {
            (self.max_allocations_stream, self.max_relay_sockets_stream)
        } else {
            (self.max_allocations_per_shard, self.max_relay_sockets_per_shard)
        };
        let settings = TurnSettings {
            max_allocations: max,
            max_allocations_per_user: t.max_allocations_per_user,
            max_user_bandwidth: t.max_user_bandwidth,
            relay_ips: self.relay_ips.clone(),
            relay_ports: self.slices[slice].clone(),
            token_key: self.token_key,
            max_relay_sockets: sockets,
            ..TurnSettings::default()
        };
        let creds = self.credentials(&self.secrets.load());
        let mut own = self.relay_ips.clone();
        own.push(cfg.media.bind_address);
        own.extend(cfg.media_public_ips());
        own.retain(|ip| !ip.is_unspecified());
        let mut policy = PeerPolicy::from_config(t, own);
        // The SFU's own media ports are what browsers relay to: reachable whatever the
        // defaults say about the server's addresses (known when the ports are configured).
        if let Some(ports) = &self.media_ports {
            policy = policy.with_media(self.media_ips.clone(), ports.clone());
        }
        TurnServer::new(settings, creds, policy)
    }
}

/// Descriptors kept for everything but relay sockets (listeners, rings, the control plane).
const FD_RESERVE: u64 = 512;

/// Raises the soft open-file limit to the hard one (every allocation may hold a socket), from
/// the `(soft, hard)` limits the configuration read ([`crate::config::Machine::open_files`]);
/// the soft limit in force after it, 0 when unknown.
fn raise_fd_limit(limits: Option<(u64, u64)>) -> u64 {
    let Some((soft, hard)) = limits else { return 0 };
    if soft < hard {
        let want = libc::rlimit { rlim_cur: hard as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: valid pointer; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            return hard;
        }
    }
    soft
}

/// Picks up reloaded credentials (one atomic load per call; called about once a second).
struct Reload {
    plan: TurnPlan,
    seen: u64,
}

impl Reload {
    fn poll(&mut self, server: &mut TurnServer) {
        let g = self.plan.secrets.generation();
        if g != self.seen {
            self.seen = g;
            server.set_credentials(self.plan.credentials(&self.plan.secrets.load()));
        }
    }
}

/// Checks for reloaded credentials, given to the cores (`TurnShard`, the stream thread).
pub(crate) type ReloadHook = Box<dyn FnMut(&mut TurnServer) + Send>;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Starts the TURN server when `[turn] enabled` (`Ok(None)` otherwise), on UDP shards of its
/// own. `tls` serves TURN over TLS on `[turn] tls_port` (required when that port is set).
/// `secrets`: the credentials the control plane reloads on SIGHUP (the shards pick a change up
/// within a second); `None`: fixed ones from `cfg`.
pub fn start(
    cfg: &Arc<Config>,
    tls: Option<Arc<rustls::ServerConfig>>,
    secrets: Option<TurnSecretsHandle>,
) -> Result<Option<TurnService>, TurnStartError> {
    match TurnSetup::new(cfg, secrets)? {
        Some(setup) => setup.start(tls, false).map(Some),
        None => Ok(None),
    }
}

/// Builds the TURN core of one media shard (index, the shard's media socket address).
pub type HostedTurnFactory = Box<dyn Fn(usize, SocketAddr) -> TurnShard + Send + Sync>;

/// The TURN server between reading its configuration and running: [`TurnSetup::hosted`] gives
/// the media engine the TURN cores its shards host (UDP: listener, relays, in-process delivery
/// to the media port), then [`TurnSetup::start`] starts what remains (the TCP/TLS thread, and
/// the UDP shards when no media shard hosts them).
pub struct TurnSetup {
    cfg: Arc<Config>,
    plan: TurnPlan,
    cells: Vec<Arc<TurnStatsCell>>,
    anchor: Instant,
    anchor_unix: u64,
    fds: u64,
    wanted: usize,
}

impl std::fmt::Debug for TurnSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnSetup").field("listen", &self.plan.listen).finish_non_exhaustive()
    }
}

impl TurnSetup {
    /// Reads `[turn]` (`Ok(None)` when disabled) and raises the open-file limit.
    pub fn new(
        cfg: &Arc<Config>,
        secrets: Option<TurnSecretsHandle>,
    ) -> Result<Option<TurnSetup>, TurnStartError> {
        if !cfg.turn.enabled {
            return Ok(None);
        }
        let secrets = secrets.unwrap_or_else(|| TurnSecretsHandle::from_config(cfg));
        let mut plan = TurnPlan::new(cfg, secrets)?;
        let fds = raise_fd_limit(cfg.machine.open_files);
        if let Some((lo, hi)) = cfg.machine.ephemeral_ports
            && lo <= cfg.turn.relay_port_max
            && cfg.turn.relay_port_min <= hi
        {
            tracing::warn!(
                relay_ports = format!("{}-{}", cfg.turn.relay_port_min, cfg.turn.relay_port_max),
                ephemeral_ports = format!("{lo}-{hi}"),
                "TURN relay ports overlap the kernel's ephemeral port range \
                 (net.ipv4.ip_local_port_range): a relayed port another socket took cannot be \
                 opened; move one of the two ranges"
            );
        }
        let wanted = plan.max_allocations_per_shard * plan.shards;
        plan.cap_by_fd_limit(fds, FD_RESERVE);
        let cells = (0..=plan.shards).map(|_| Arc::new(TurnStatsCell::default())).collect();
        let (anchor, anchor_unix) = (Instant::now(), unix_now());
        Ok(Some(TurnSetup { cfg: cfg.clone(), plan, cells, anchor, anchor_unix, fds, wanted }))
    }

    /// The TURN cores for the media shards to host: each opens the shared UDP listener
    /// (SO_REUSEPORT) in its shard and delivers relayed datagrams to that shard's own media port
    /// in-process (unless `[turn] deliver_in_process = false`). Checks first that the listener
    /// address can be bound (and picks the port when `[turn] port` is 0).
    pub fn hosted(&mut self) -> Result<HostedTurnFactory, TurnStartError> {
        let probe = crate::io::bind_udp(self.plan.listen, true, 0, false)
            .map_err(|source| TurnStartError::Stream { addr: self.plan.listen, source })?;
        self.plan.listen = probe.1.local_addr;
        drop(probe);
        let (cfg, plan, cells) = (self.cfg.clone(), self.plan.clone(), self.cells.clone());
        let (anchor, anchor_unix) = (self.anchor, self.anchor_unix);
        let media_ips = self.plan.media_ips.clone();
        Ok(Box::new(move |index, media: SocketAddr| {
            let mut reload = Reload { plan: plan.clone(), seen: plan.secrets.generation() };
            let local = if cfg.turn.deliver_in_process {
                media_ips.iter().map(|ip| SocketAddr::new(*ip, media.port())).collect()
            } else {
                Vec::new()
            };
            let own = cfg
                .turn_shard_port(index)
                .map(|port| SocketAddr::new(cfg.media.bind_address, port));
            TurnShard::new(plan.server(&cfg, index % plan.shards), plan.listen, anchor, anchor_unix)
                .with_reload(Box::new(move |server: &mut TurnServer| reload.poll(server)))
                .with_stats_cell(cells[index % plan.shards].clone())
                .hosted(own, local)
        }))
    }

    /// Starts the TCP/TLS thread and, unless the media shards host UDP (`hosted`, after
    /// [`TurnSetup::hosted`]), the UDP shards.
    pub fn start(
        self,
        tls: Option<Arc<rustls::ServerConfig>>,
        hosted: bool,
    ) -> Result<TurnService, TurnStartError> {
        let TurnSetup { cfg, plan, cells, anchor, anchor_unix, fds, wanted } = self;
        let cfg = &cfg;
        let ports: usize =
            plan.slices.iter().map(|r| r.len()).sum::<usize>() * plan.relay_ips.len();
        let shards = if hosted {
            None
        } else {
            let opts = ShardOptions {
                shards: plan.shards,
                bind_address: plan.listen.ip(),
                port_base: plan.listen.port(),
                backend: cfg.media.io_backend,
                pin_threads: cfg.media.pin_threads,
                reuse_port: true,
                io: IoOptions::default(),
            };
            let (c, p, cs) = (cfg.clone(), plan.clone(), cells.clone());
            Some(spawn_shards_with(&opts, move |info| {
                let mut reload = Reload { plan: p.clone(), seen: p.secrets.generation() };
                TurnShard::new(p.server(&c, info.index), info.local_addr, anchor, anchor_unix)
                    .with_reload(Box::new(move |server: &mut TurnServer| reload.poll(server)))
                    .with_stats_cell(cs[info.index].clone())
            })?)
        };
        let udp =
            shards.as_ref().and_then(|s| s.get(0)).map_or(plan.listen, |s| s.info().local_addr);
        let tcp_addr = SocketAddr::new(plan.listen.ip(), udp.port());
        let tls_addr =
            (cfg.turn.tls_port != 0).then(|| SocketAddr::new(plan.listen.ip(), cfg.turn.tls_port));
        if tls_addr.is_some() && tls.is_none() {
            return Err(TurnStartError::Config("turn.tls_port needs a [tls] certificate".into()));
        }
        let server = plan.server(cfg, plan.shards);
        let mut reload = Reload { plan: plan.clone(), seen: plan.secrets.generation() };
        let stream_cell = cells[plan.shards].clone();
        // Called once a second by the stream thread: reload, then publish its counters.
        let reload = Box::new(move |server: &mut TurnServer| {
            reload.poll(server);
            stream_cell.store(&TurnShardStats::from_server(server));
        });
        let stream_turns = Arc::new(crate::shard::ShardStats::default());
        let stream = StreamServer::start(
            server,
            reload,
            tcp_addr,
            tls_addr.zip(tls),
            anchor,
            anchor_unix,
            stream_turns.clone(),
        )
        .map_err(|(addr, source)| TurnStartError::Stream { addr, source })?;
        tracing::info!(
            udp = %udp,
            tcp = %stream.tcp_addr(),
            tls = ?stream.tls_addr(),
            shards = plan.shards,
            udp_in = if hosted { "media shards" } else { "TURN shards" },
            shard_ports = ?hosted
                .then(|| cfg.turn_shard_port(0))
                .flatten()
                .map(|p| format!("{p}-{}", p as usize + plan.shards - 1)),
            in_process = hosted && cfg.turn.deliver_in_process,
            relay_ips = ?plan.relay_ips,
            relay_ports = ports,
            open_file_limit = fds,
            "TURN server listening"
        );
        let sockets = plan.max_relay_sockets_per_shard.saturating_mul(plan.shards);
        if sockets < wanted.min(ports) {
            if hosted && cfg.turn.deliver_in_process {
                tracing::info!(
                    open_file_limit = fds,
                    relay_sockets = sockets,
                    "TURN allocations that relay only to ringsfu's own media port need no socket; \
                     the others are capped by the open-file limit (raise LimitNOFILE for more)"
                );
            } else {
                tracing::warn!(
                    open_file_limit = fds,
                    allocations = sockets,
                    wanted = wanted.min(ports),
                    "the open-file limit caps TURN allocations (one socket each) below \
                     turn.max_allocations: raise LimitNOFILE"
                );
            }
        }
        Ok(TurnService { shards, stream: Some(stream), udp, cells, stream_turns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_slices_are_disjoint_and_allocations_fit_the_fd_limit() {
        let mut cfg = Config::default();
        cfg.media.shards = 2;
        cfg.turn.relay_port_min = 1024;
        cfg.turn.relay_port_max = 65535;
        let mut plan = TurnPlan::new(&cfg, TurnSecretsHandle::from_config(&cfg)).unwrap();
        assert_eq!(plan.slices.len(), 3);
        assert_eq!(plan.slices[0].start, 1024);
        assert_eq!(plan.slices[2].end, 65535, "the last slice ends at the last port");
        assert!(plan.slices.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(plan.max_allocations_per_shard, 50_000);
        plan.cap_by_fd_limit(20_000, 512);
        assert_eq!(plan.max_relay_sockets_per_shard, 19_488 * 7 / 8 / 2);
        assert_eq!(plan.max_relay_sockets_stream, 19_488 / 8);
        assert_eq!(plan.max_allocations_per_shard, 50_000, "allocations are capped by sockets");
        let server = plan.server(&cfg, 0);
        assert_eq!(server.settings().max_relay_sockets, 19_488 * 7 / 8 / 2);
        cfg.turn.relay_port_max = 1025;
        assert!(
            TurnPlan::new(&cfg, TurnSecretsHandle::from_config(&cfg)).is_err(),
            "fewer ports than threads"
        );
    }
}
