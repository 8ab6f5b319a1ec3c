//! [`MediaEngine`]: the media shards as the control plane sees them.
//!
//! It starts the shards (with the shard mesh between them), knows their candidates and
//! certificate, places transports (a session's home shard for publishers, the least-loaded
//! shard for spread subscriber legs), sends [`ShardCommand`]s and hands the shards' events up.
//! It keeps no model of sessions, streams or subscriptions: the control plane's registry is
//! the one source of truth and names every transport by its [`PeerId`] and shard. Nothing here
//! imports the control plane; the JSON-RPC media methods live in `control::media_rpc`.
//!
//! Its only lock is around the shards' command senders (held for one send, never with another
//! lock); placement load is a counter per shard.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rand::Rng;
use rand::distr::Alphanumeric;

use super::allocate::{ConsumerBoard, ConsumerRow};
use super::core::{CoreSettings, MediaCore};
use super::shard::MediaShard;
use super::stats::{MediaStats, MediaStatsSnapshot};
use super::{PeerId, ShardCommand, ShardEvent};
use crate::config::Config;
use crate::dtls::{DtlsCert, DtlsConfig, DtlsContext};
use crate::io::{ShardHandles, SpawnError, spawn_shards};
use crate::sdp::LocalTransport;
use crate::shard::ShardStats;
use crate::shard::mesh::{MeshPort, mesh};

/// Messages per ring between two shards (packets of mirrored publishers, ~1.5 KiB a slot,
/// memory touched only as it is used): ~20 ms of a 10k packets/s stream of publishers.
const MESH_RING: usize = 256;

/// Why the media engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaEngineError {
    #[error("media: DTLS certificate: {0}")]
    Certificate(String),
    #[error("media: {0}")]
    Shards(#[from] SpawnError),
}

/// Why a command did not reach its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The shard's command queue is full (it is behind): shed the request.
    #[error("media server busy, try again")]
    Busy,
    #[error("media shard missing")]
    NoShard,
}

/// The media engine. See the module docs.
pub struct MediaEngine {
    cfg: Arc<Config>,
    fingerprint: String,
    shards: Mutex<ShardHandles<MediaShard>>,
    /// Host candidates of each shard (public addresses × the shard's port).
    candidates: Vec<Vec<SocketAddr>>,
    stats: Vec<Arc<MediaStats>>,
    /// Each shard's consumers, published once a second.
    boards: Vec<Arc<ConsumerBoard>>,
    shard_stats: Vec<Arc<ShardStats>>,
    /// The shards host the TURN server (each with a TURN port of its own, `[turn] shard_ports`).
    hosts_turn: bool,
    next_peer: AtomicU64,
    /// Transports placed on each shard and not released yet.
    load: Vec<AtomicUsize>,
    /// Home shards chosen so far (where the round robin of ties starts).
    homes_chosen: AtomicUsize,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine").field("candidates", &self.candidates).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock is a bug; keep serving with the state as it was left.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The addresses browsers can reach the media ports on: `[media] public_ips`, else the bind
/// address, else (bound to the wildcard) every configured interface address of that family;
/// in the last two cases led by the addresses `[server] public_host` resolves to when it is a
/// host name (OpenVidu's `DOMAIN_OR_PUBLIC_IP` is often the domain whose A record is the
/// public address of a host behind 1:1 NAT, which no interface carries).
pub(crate) fn candidate_ips(cfg: &Config) -> Vec<IpAddr> {
    candidate_ips_with(cfg, |host| {
        use std::net::ToSocketAddrs;
        match (host, 0u16).to_socket_addrs() {
            Ok(addrs) => addrs.map(|a| a.ip()).collect(),
            Err(e) => {
                tracing::warn!(host, error = %e, "cannot resolve server.public_host for media candidates");
                Vec::new()
            }
        }
    })
}

/// [`candidate_ips`] with `resolve` for the host name.
fn candidate_ips_with(cfg: &Config, resolve: impl Fn(&str) -> Vec<IpAddr>) -> Vec<IpAddr> {
    if !cfg.media.public_ips.is_empty() {
        return cfg.media.public_ips.clone();
    }
    let bind = cfg.media.bind_address;
    let host = cfg.server.public_host.trim();
    let mut named: Vec<IpAddr> = Vec::new();
    if !host.is_empty() && host.parse::<IpAddr>().is_err() {
        // A socket bound to an IPv4 address (or the IPv4 wildcard) cannot serve IPv6 peers.
        for ip in resolve(host) {
            if (bind.is_ipv6() || ip.is_ipv4()) && !named.contains(&ip) {
                named.push(ip);
            }
        }
    }
    if !bind.is_unspecified() {
        if !named.contains(&bind) {
            named.push(bind);
        }
        return named;
    }
    // Read when the configuration loaded (loopback last: only useful when nothing else exists).
    let mut ips = cfg.machine.interface_ips(bind.is_ipv6());
    if let Err(e) = &cfg.machine.interfaces {
        // glibc lists interfaces over a netlink socket: a sandbox without AF_NETLINK (systemd's
        // RestrictAddressFamilies) lands here, and the wildcard bind would silently offer
        // loopback candidates only.
        tracing::warn!(
            error = %e,
            "cannot list the interface addresses (getifaddrs; needs AF_NETLINK): set \
             media.public_ips, or allow AF_NETLINK"
        );
    }
    if ips.is_empty() && named.is_empty() {
        ips.push(if bind.is_ipv6() {
            IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])
        } else {
            IpAddr::from([127, 0, 0, 1])
        });
    }
    ips.retain(|ip| !named.contains(ip));
    named.extend(ips);
    named
}

impl MediaEngine {
    /// Generates the DTLS certificate and starts `[media] shards` media shards.
    pub fn start(cfg: Arc<Config>) -> Result<Arc<MediaEngine>, MediaEngineError> {
        MediaEngine::start_with_turn(cfg, None)
    }

    /// As [`MediaEngine::start`], each shard also hosting the TURN core `turn` builds for it
    /// (from [`crate::turn::serve::TurnSetup::hosted`]).
    pub fn start_with_turn(
        cfg: Arc<Config>,
        turn: Option<crate::turn::serve::HostedTurnFactory>,
    ) -> Result<Arc<MediaEngine>, MediaEngineError> {
        let cert =
            DtlsCert::generate().map_err(|e| MediaEngineError::Certificate(e.to_string()))?;
        // `sha-256 AB:CD:…`; the SDP writer adds the algorithm itself.
        let sdp_fp = cert.sdp_fingerprint();
        let fingerprint =
            sdp_fp.split_once(' ').map_or(sdp_fp.as_str(), |(_, hex)| hex).to_string();
        let ctx = DtlsContext::new(cert, &DtlsConfig::default())
            .map_err(|e| MediaEngineError::Certificate(e.to_string()))?;
        let n = cfg.effective_shards();
        let stats: Vec<Arc<MediaStats>> = (0..n).map(|_| Arc::new(MediaStats::default())).collect();
        let settings = CoreSettings {
            remb_bitrate: u64::from(cfg.sessions.video_max_recv_bandwidth) * 1000,
            ..CoreSettings::default()
        };
        let core_stats = stats.clone();
        let boards: Vec<Arc<ConsumerBoard>> = (0..n).map(|_| Arc::default()).collect();
        let core_boards = boards.clone();
        let hosts_turn = turn.is_some();
        // The shard mesh: each shard's thread takes its own port when it builds its core.
        let ports: Mutex<Vec<Option<MeshPort>>> =
            Mutex::new(mesh(n, MESH_RING).into_iter().map(Some).collect());
        let shards = spawn_shards(&cfg, move |info| {
            let mut media = MediaCore::new(
                info.local_addr,
                ctx.clone(),
                settings.clone(),
                core_stats[info.index % core_stats.len()].clone(),
                Instant::now(),
            )
            .with_board(core_boards[info.index % core_boards.len()].clone());
            if let Some(mut port) = lock(&ports).get_mut(info.index).and_then(Option::take) {
                port.set_wakes(info.wakes.clone());
                media = media.with_mesh(port);
            }
            MediaShard::new(media, turn.as_ref().map(|f| f(info.index, info.local_addr)))
        })?;
        let ips = candidate_ips(&cfg);
        let candidates = shards
            .iter()
            .map(|s| {
                ips.iter().map(|ip| SocketAddr::new(*ip, s.info().local_addr.port())).collect()
            })
            .collect();
        let shard_stats = shards.iter().map(|s| s.stats().clone()).collect();
        tracing::info!(
            shards = shards.len(),
            backend = ?shards.backend(),
            candidates = ?ips,
            "media engine running"
        );
        Ok(Arc::new(MediaEngine {
            cfg,
            fingerprint,
            shards: Mutex::new(shards),
            candidates,
            stats,
            boards,
            shard_stats,
            hosts_turn,
            next_peer: AtomicU64::new(0),
            load: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            homes_chosen: AtomicUsize::new(0),
        }))
    }

    /// The TURN port of `shard` (`[turn] shard_ports`), offered to a session's participants as
    /// their first TURN server when the shards host TURN.
    pub fn turn_port(&self, shard: usize) -> Option<u16> {
        if !self.hosts_turn {
            return None;
        }
        self.cfg.turn_shard_port(shard)
    }

    /// Wakers on every shard's event eventfd, for the task that turns events into
    /// notifications.
    pub fn event_wakers(&self) -> Vec<crate::shard::EventWaker> {
        lock(&self.shards).iter_mut().map(|s| s.events().waker()).collect()
    }

    /// Every shard's consumers (estimate, layers, retransmission budget), as published in the
    /// last second.
    pub fn consumers(&self) -> Vec<(usize, ConsumerRow)> {
        let mut v = Vec::new();
        for (i, b) in self.boards.iter().enumerate() {
            v.extend(b.rows().into_iter().map(|r| (i, r)));
        }
        v
    }

    /// Media counters of every shard.
    pub fn stats(&self) -> Vec<MediaStatsSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// The I/O counters (and loop-turn counters) of every shard.
    pub fn shard_stats(&self) -> Vec<Arc<ShardStats>> {
        self.shard_stats.clone()
    }

    /// The address other nodes send `shard`'s relay traffic to (and that its relay traffic
    /// comes from): its media socket on the first candidate address (the bind address when
    /// it is not the wildcard). `None` for a shard that does not exist. Relay legs are routed
    /// by this source address: with a wildcard bind, or `[media] public_ips` naming an address
    /// the kernel does not send from, the other node sees another source and drops the relay
    /// (`unknown_source`): bind the media ports to the address the nodes reach each other on.
    pub fn relay_address(&self, shard: usize) -> Option<SocketAddr> {
        self.candidates.get(shard)?.first().copied()
    }

    /// The UDP addresses the shards are bound to.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        lock(&self.shards).iter().map(|s| s.info().local_addr).collect()
    }

    /// Stops the shards (joins their threads) and logs their final counters.
    pub fn shutdown(&self) {
        let mut total = MediaStatsSnapshot::default();
        for s in self.stats() {
            total.add(&s);
        }
        tracing::info!(stats = ?total, "media totals");
        let mut shards = lock(&self.shards);
        for s in shards.iter() {
            s.signal_shutdown();
        }
        for s in shards.iter_mut() {
            if let Err(e) = s.join() {
                tracing::warn!(error = %e, "media shard stopped with an error");
            }
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.candidates.len().max(1)
    }

    /// `[media] spread_threshold`.
    pub fn spread_threshold(&self) -> usize {
        self.cfg.media.spread_threshold
    }

    /// A process-unique id for a new transport.
    pub fn new_peer_id(&self) -> PeerId {
        PeerId(self.next_peer.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Fresh ICE-lite credentials (ufrag, password).
    pub fn ice_credentials(&self) -> (String, String) {
        let s = |n| rand::rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect();
        (s(8), s(24))
    }

    fn least_loaded(&self, prefer: usize) -> usize {
        let n = self.shard_count();
        (0..n)
            .map(|k| (prefer + k) % n)
            .min_by_key(|&i| self.load.get(i).map_or(0, |l| l.load(Ordering::Relaxed)))
            .unwrap_or(0)
    }

    /// The home shard of a new session: the least-loaded one (ties taken in turn).
    pub fn choose_home(&self) -> usize {
        let start = self.homes_chosen.fetch_add(1, Ordering::Relaxed) % self.shard_count();
        self.least_loaded(start)
    }

    /// The shard of a new subscriber leg of a session whose publishers are on `home`, which
    /// already has `legs_at_home` subscriber legs there: `home` below `[media]
    /// spread_threshold`, then the shard with the fewest transports (`home` on a tie).
    pub fn place_subscriber(&self, home: usize, legs_at_home: usize) -> usize {
        if self.shard_count() == 1 || legs_at_home < self.spread_threshold() {
            return home;
        }
        self.least_loaded(home)
    }

    /// The local half of a transport on `shard`: ICE credentials, certificate, candidates.
    pub fn local_transport(&self, shard: usize, ufrag: &str, pwd: &str) -> LocalTransport {
        LocalTransport {
            ice_ufrag: ufrag.to_string(),
            ice_pwd: pwd.to_string(),
            fingerprint_sha256: self.fingerprint.clone(),
            candidates: self.candidates.get(shard).cloned().unwrap_or_default(),
            session_id: rand::random::<u64>() >> 2,
            session_version: 2,
        }
    }

    /// Sends `cmd` to `shard`; a new peer (`AddPublisher`, `AddSubscriber`, `AddIngest`, the
    /// relay legs `AddRelayOut` / `AddRelayIn`) counts
    /// towards its load until [`MediaEngine::release`] or [`MediaEngine::gone`].
    pub fn send(&self, shard: usize, cmd: ShardCommand) -> Result<(), SendError> {
        let adds = matches!(
            cmd,
            ShardCommand::AddPublisher { .. }
                | ShardCommand::AddSubscriber { .. }
                | ShardCommand::AddIngest { .. }
                | ShardCommand::AddRelayOut { .. }
                | ShardCommand::AddRelayIn { .. }
        );
        let mut shards = lock(&self.shards);
        let s = shards.get_mut(shard).ok_or(SendError::NoShard)?;
        s.commands().send(cmd).map_err(|_| {
            tracing::warn!(shard, "media shard command queue full");
            SendError::Busy
        })?;
        if adds && let Some(l) = self.load.get(shard) {
            l.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The wake-up of `shard` (its command eventfd), for a writer of a ring it drains
    /// ([`super::IngestWriter`]).
    pub fn shard_wake(&self, shard: usize) -> Option<crate::shard::mesh::ShardWake> {
        lock(&self.shards).iter().next().and_then(|s| s.info().wakes.get(shard).cloned())
    }

    /// Tears transports down (each `(peer, shard)`): a publisher's removal also ends the
    /// subscriber legs of it on its shard.
    pub fn release(&self, transports: &[(PeerId, usize)]) {
        for &(id, shard) in transports {
            self.gone(shard);
            if let Err(e) = self.send(shard, ShardCommand::RemovePeer { id }) {
                tracing::warn!(peer = id.0, error = %e, "could not release a media peer");
            }
        }
    }

    /// Participant `connection` is gone: every shard's TURN server ends the allocations its
    /// browser made with the credentials joinRoom gave it (`<expiry>:<connection>`).
    pub fn participant_gone(&self, connection: &str) {
        let suffix: Box<str> = format!(":{connection}").into();
        for shard in 0..self.shard_count() {
            let cmd = ShardCommand::EndTurnUser { suffix: suffix.clone() };
            if let Err(e) = self.send(shard, cmd) {
                tracing::warn!(connection, error = %e, "could not end a participant's TURN allocations");
            }
        }
    }

    /// A transport on `shard` ended on its own (its shard removed it): no longer counted.
    pub fn gone(&self, shard: usize) {
        if let Some(l) = self.load.get(shard) {
            let _ = l.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
        }
    }

    /// Every shard's queued events.
    pub fn poll_events(&self) -> Vec<ShardEvent> {
        let mut out = Vec::new();
        for s in lock(&self.shards).iter_mut() {
            while let Some(ev) = s.events().try_recv() {
                out.push(ev);
            }
        }
        out
    }
}

#[cfg(test)]
mod candidate_tests {
    use super::*;

    fn cfg(bind: &str, host: &str) -> Config {
        let mut c = Config::default();
        c.media.bind_address = bind.parse().unwrap();
        c.server.public_host = host.into();
        c
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    /// A resolver that knows one name.
    fn dns(name: &str) -> Vec<IpAddr> {
        match name {
            "media.example.org" => ips(&["203.0.113.7", "2001:db8::7"]),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_public_host_name_leads_the_candidates() {
        // Behind 1:1 NAT: the public address the name resolves to, then the bound address.
        assert_eq!(
            candidate_ips_with(&cfg("10.0.0.5", "media.example.org"), dns),
            ips(&["203.0.113.7", "10.0.0.5"]),
            "an IPv4 socket serves no IPv6 peer"
        );
        // Dual-stack wildcard: both families, then the interfaces (loopback at least).
        let all = candidate_ips_with(&cfg("::", "media.example.org"), dns);
        assert_eq!(all[..2], ips(&["203.0.113.7", "2001:db8::7"]));
        assert!(all.len() > 2, "{all:?}");
        // An address, an empty host or an unknown name change nothing.
        for host in ["198.51.100.1", "", "nowhere.invalid"] {
            assert_eq!(candidate_ips_with(&cfg("10.0.0.5", host), dns), ips(&["10.0.0.5"]));
        }
        // public_ips wins over everything.
        let mut c = cfg("10.0.0.5", "media.example.org");
        c.media.public_ips = ips(&["192.0.2.1"]);
        assert_eq!(candidate_ips_with(&c, dns), ips(&["192.0.2.1"]));
    }
}
