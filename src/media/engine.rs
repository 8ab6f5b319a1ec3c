//! [`MediaEngine`]: the control-plane half of the media engine.
//!
//! It starts the media shards, answers the media JSON-RPC methods (publish, the two subscribe
//! flows, unpublish, unsubscribe, reconnect) by negotiating SDP here and telling the session's
//! shard what to do, and turns the shards' events into notifications. Its own state (which peer
//! is whose, which shard a session lives on) sits behind one short-held mutex that is never
//! held while calling into the registry, so registry outputs can reach
//! [`MediaEngine::on_registry_command`] from inside a registry operation.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use super::core::{CoreSettings, MediaCore};
use super::shard::MediaShard;
use super::stats::{MediaStats, MediaStatsSnapshot};
use super::{IceParams, InTrack, Origin, OutTrack, PeerId, ShardCommand, ShardEvent};
use crate::config::Config;
use crate::control::media::{Caller, ControlHandle, MediaCommand, MediaEvent};
use crate::control::registry::Role;
use crate::dtls::{DtlsCert, DtlsConfig, DtlsContext, DtlsRole, Fingerprint};
use crate::io::{ShardHandles, SpawnError, spawn_shards};
use crate::sdp::{
    self, LocalTransport, Negotiated, NegotiatedMedia, OutgoingTrack, SdpError, VideoCodecPolicy,
};
use crate::shard::ShardStats;
use crate::shard::mesh::{MeshPort, mesh};

/// Messages per ring between two shards (packets of mirrored publishers, ~1.5 KiB a slot,
/// memory touched only as it is used): ~20 ms of a 10k packets/s stream of publishers.
const MESH_RING: usize = 256;
use crate::signaling::{Params, RpcError, code};

/// Why the media engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum MediaEngineError {
    #[error("media: DTLS certificate: {0}")]
    Certificate(String),
    #[error("media: {0}")]
    Shards(#[from] SpawnError),
}

/// Who a peer belongs to (for events and cleanup).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    session: String,
    connection: String,
    /// The stream it publishes or receives.
    stream: String,
    publisher: bool,
    /// The shard its transport is on.
    shard: usize,
}

#[derive(Debug, Clone)]
struct Published {
    id: PeerId,
    shard: usize,
    connection: String,
    /// What was agreed with the publisher, in track order.
    media: Vec<NegotiatedMedia>,
    policy: VideoCodecPolicy,
    /// The publisher's peer connection: its certificate and SDP session (`o=` sess-id).
    connection_of: (Fingerprint, u64),
}

/// The transport of a new subscriber leg.
struct Link {
    id: PeerId,
    /// The shard it is placed on.
    shard: usize,
    ice: IceParams,
    fp: Fingerprint,
    dtls_role: DtlsRole,
}

/// A server offer waiting for the subscriber's answer (`prepareReceiveVideoFrom`).
#[derive(Debug, Clone)]
struct PendingOffer {
    offer: Negotiated,
    ice_ufrag: String,
    ice_pwd: String,
    /// Publisher track index of each offered m-line.
    sources: Vec<usize>,
    /// The shard the offer's candidates name (where the leg will be).
    shard: usize,
}

#[derive(Default)]
struct State {
    next_peer: u64,
    session_shard: HashMap<String, usize>,
    /// (session, stream id) → publisher.
    published: HashMap<(String, String), Published>,
    /// (session, subscriber connection, stream id) → subscriber peer.
    subscribed: HashMap<(String, String, String), PeerId>,
    pending: HashMap<(String, String, String), PendingOffer>,
    owners: HashMap<PeerId, Owner>,
    sessions_created: u64,
    /// `iceCandidate` notifications waiting for the next [`MediaEngine::poll_events`], so they
    /// reach the browser after the answer or offer that created the peer.
    trickle: Vec<MediaEvent>,
    /// What a client-offer subscriber leg was answered with, for a renegotiation of its
    /// transport ([`MediaEngine::resubscribe`]).
    legs: HashMap<PeerId, AnsweredLeg>,
    /// Peers (publishers and subscriber legs) per shard: the load subscribers are placed by.
    shard_peers: Vec<usize>,
    /// Subscriber legs of each session on its home shard (`[media] spread_threshold`).
    home_legs: HashMap<String, usize>,
}

impl State {
    /// Records a peer's owner and counts it on its shard.
    fn adopt(&mut self, id: PeerId, owner: Owner) {
        if let Some(n) = self.shard_peers.get_mut(owner.shard) {
            *n += 1;
        }
        if !owner.publisher && self.session_shard.get(&owner.session) == Some(&owner.shard) {
            *self.home_legs.entry(owner.session.clone()).or_default() += 1;
        }
        if let Some(old) = self.owners.insert(id, owner) {
            self.uncount(&old);
        }
    }

    fn uncount(&mut self, o: &Owner) {
        if let Some(n) = self.shard_peers.get_mut(o.shard) {
            *n = n.saturating_sub(1);
        }
        if !o.publisher
            && self.session_shard.get(&o.session) == Some(&o.shard)
            && let Some(n) = self.home_legs.get_mut(&o.session)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Forgets a peer's owner (and what its leg was answered with).
    fn forget(&mut self, id: &PeerId) -> Option<Owner> {
        self.legs.remove(id);
        let o = self.owners.remove(id)?;
        self.uncount(&o);
        Some(o)
    }

    /// The shard of a peer (0 when unknown: a single-shard engine).
    fn shard_of_peer(&self, id: &PeerId) -> usize {
        self.owners.get(id).map_or(0, |o| o.shard)
    }
}

/// A subscriber leg's peer connection and the tracks (SSRCs) its answer announced.
#[derive(Debug, Clone)]
struct AnsweredLeg {
    /// Its certificate and SDP session (`o=` sess-id), as [`Published::connection_of`].
    connection_of: (Fingerprint, u64),
    outgoing: Vec<OutgoingTrack>,
}

/// The media engine. See the module docs.
pub struct MediaEngine {
    cfg: Arc<Config>,
    fingerprint: String,
    shards: Mutex<ShardHandles<MediaShard>>,
    /// Host candidates of each shard (public addresses × the shard's port).
    candidates: Vec<Vec<SocketAddr>>,
    stats: Vec<Arc<MediaStats>>,
    shard_stats: Vec<Arc<ShardStats>>,
    state: Mutex<State>,
    /// The shards host the TURN server (each with a TURN port of its own, `[turn] shard_ports`).
    hosts_turn: bool,
    /// Woken when `iceCandidate` notifications wait in `State::trickle` (the event task wakes
    /// on this and on the shards' eventfds).
    trickle_ready: tokio::sync::Notify,
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

fn random_string(n: usize) -> String {
    rand::rng().sample_iter(&Alphanumeric).take(n).map(char::from).collect()
}

fn sdp_error(e: SdpError) -> RpcError {
    RpcError::new(code::MEDIA_SDP_ERROR, e.to_string())
}

/// The browser's DTLS certificate fingerprint from its SDP (SHA-256, what browsers send).
fn remote_fingerprint(d: &sdp::RemoteDescription) -> Result<Fingerprint, RpcError> {
    Fingerprint::sha256(&d.fingerprint)
        .ok_or_else(|| sdp_error(SdpError::Missing("a=fingerprint:sha-256")))
}

fn no_stream(stream: &str) -> RpcError {
    RpcError::new(code::USER_NOT_STREAMING, format!("Stream {stream} is not published"))
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
            );
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
            shard_stats,
            state: Mutex::new(State { shard_peers: vec![0; n], ..State::default() }),
            hosts_turn,
            trickle_ready: tokio::sync::Notify::new(),
        }))
    }

    /// The TURN port of `session`'s shard (`[turn] shard_ports`), offered to its participants
    /// as their first TURN server when the shards host TURN (assigns the session its shard if
    /// it has none yet).
    pub fn turn_port_for(&self, session: &str) -> Option<u16> {
        if !self.hosts_turn {
            return None;
        }
        self.cfg.turn_shard_port(0)?;
        let shard = Self::shard_of(&mut lock(&self.state), self.candidates.len(), session);
        self.cfg.turn_shard_port(shard)
    }

    /// Wakers on every shard's event eventfd, for the task that turns events into
    /// notifications ([`MediaEngine::wait_events`]).
    pub fn event_wakers(&self) -> Vec<crate::shard::EventWaker> {
        lock(&self.shards).iter_mut().map(|s| s.events().waker()).collect()
    }

    /// Until a shard has queued events (its eventfd, one of `wakers`) or `iceCandidate`
    /// notifications wait: awaited, not polled. Trickled candidates wait one more turn of the
    /// runtime, so the answer or offer that created their transport goes out first.
    pub async fn wait_events(&self, wakers: &mut [crate::shard::EventWaker]) {
        tokio::select! {
            () = crate::shard::any_wake(wakers) => {}
            () = self.trickle_ready.notified() => tokio::task::yield_now().await,
        }
    }

    /// Media counters of every shard.
    pub fn stats(&self) -> Vec<MediaStatsSnapshot> {
        self.stats.iter().map(|s| s.snapshot()).collect()
    }

    /// The I/O counters (and loop-turn counters) of every shard.
    pub fn shard_stats(&self) -> Vec<Arc<ShardStats>> {
        self.shard_stats.clone()
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

    fn send(&self, shard: usize, cmd: ShardCommand) -> Result<(), RpcError> {
        let mut shards = lock(&self.shards);
        let Some(s) = shards.get_mut(shard) else {
            return Err(RpcError::new(code::GENERIC, "media shard missing"));
        };
        s.commands().send(cmd).map_err(|_| {
            tracing::warn!(shard, "media shard command queue full");
            RpcError::new(code::GENERIC, "media server busy, try again")
        })
    }

    /// The shard of a session (chosen at its first peer, least loaded first).
    fn shard_of(st: &mut State, shards: usize, session: &str) -> usize {
        if let Some(&s) = st.session_shard.get(session) {
            return s;
        }
        let mut load = vec![0usize; shards.max(1)];
        for s in st.session_shard.values() {
            if let Some(l) = load.get_mut(*s) {
                *l += 1;
            }
        }
        let start = (st.sessions_created as usize) % load.len();
        let s =
            (0..load.len()).map(|i| (start + i) % load.len()).min_by_key(|&i| load[i]).unwrap_or(0);
        st.sessions_created += 1;
        st.session_shard.insert(session.to_string(), s);
        s
    }

    /// The shard of a new subscriber leg of `session`: its home shard while the session has
    /// fewer than `[media] spread_threshold` legs there, then the shard with the fewest peers
    /// (the home shard on a tie).
    fn place_subscriber(&self, st: &mut State, session: &str) -> usize {
        let n = self.candidates.len().max(1);
        let home = Self::shard_of(st, n, session);
        let at_home = st.home_legs.get(session).copied().unwrap_or(0);
        if n == 1 || at_home < self.cfg.media.spread_threshold {
            return home;
        }
        (0..n)
            .min_by_key(|&i| (st.shard_peers.get(i).copied().unwrap_or(0), i != home))
            .unwrap_or(home)
    }

    fn local_transport(&self, shard: usize, ufrag: &str, pwd: &str) -> LocalTransport {
        LocalTransport {
            ice_ufrag: ufrag.to_string(),
            ice_pwd: pwd.to_string(),
            fingerprint_sha256: self.fingerprint.clone(),
            candidates: self.candidates.get(shard).cloned().unwrap_or_default(),
            session_id: rand::random::<u64>() >> 2,
            session_version: 2,
        }
    }

    fn next_id(st: &mut State) -> PeerId {
        st.next_peer += 1;
        PeerId(st.next_peer)
    }

    /// Allocates a peer id, ICE credentials and its shard: the session's home shard for a
    /// publisher, [`MediaEngine::place_subscriber`]'s choice for a subscriber leg.
    fn new_peer(&self, session: &str, publisher: bool) -> (PeerId, usize, String, String) {
        let n = self.candidates.len();
        let mut st = lock(&self.state);
        let id = Self::next_id(&mut st);
        let shard = if publisher {
            Self::shard_of(&mut st, n, session)
        } else {
            self.place_subscriber(&mut st, session)
        };
        (id, shard, random_string(8), random_string(24))
    }

    // ------------------------------------------------------------------ JSON-RPC

    /// Answers one media JSON-RPC method of a joined participant.
    pub(crate) fn dispatch(
        &self,
        control: &ControlHandle,
        caller: &Caller,
        method: &str,
        params: &Map<String, Value>,
    ) -> Result<Value, RpcError> {
        let p = Params(params);
        match method {
            // Spec §4.3: an error here makes the browser raise ICE_CANDIDATE_ERROR. ringsfu is
            // ICE-lite: it learns the browser's addresses from its authenticated checks.
            "onIceCandidate" => Ok(json!({})),
            "publishVideo" => self.publish(control, caller, params, p.str("sdpOffer")?),
            "prepareReceiveVideoFrom" => self.prepare_receive(control, caller, p.str("sender")?),
            "receiveVideoFrom" => {
                let sender = p.str("sender")?;
                if let Some(offer) = p.opt_str("sdpOffer")? {
                    self.subscribe_client_offer(control, caller, sender, offer)
                } else if let Some(answer) = p.opt_str("sdpAnswer")? {
                    self.subscribe_client_answer(control, caller, sender, answer)
                } else {
                    Err(RpcError::new(
                        code::INVALID_PARAMS,
                        "Request element 'sdpOffer' is missing",
                    ))
                }
            }
            "unpublishVideo" => control.remove_stream(caller, "unpublish").map(|()| json!({})),
            "unsubscribeFromVideo" => {
                let sender = p.str("sender")?;
                // `sender` is the publisher's connection id (a stream id is accepted too).
                let stream = if sender.starts_with("str_") {
                    Some(sender.to_string())
                } else {
                    control.stream_of(&caller.session_id, sender)
                };
                let Some(stream) = stream else {
                    return Err(RpcError::new(
                        code::USER_NOT_FOUND,
                        format!("Participant {sender} is not publishing"),
                    ));
                };
                control.remove_subscriber(caller, &stream).map(|()| json!({}))
            }
            "reconnectStream" => {
                let stream = p.str("stream")?;
                let own = control.stream_of(&caller.session_id, &caller.connection_id);
                if own.as_deref() == Some(stream) {
                    let offer = match p.opt_str("sdpString")? {
                        Some(s) => s,
                        None => p.str("sdpOffer")?,
                    };
                    self.republish(control, caller, stream, offer)
                } else if let Some(offer) = p.opt_str("sdpOffer")? {
                    self.subscribe_client_offer(control, caller, stream, offer)
                } else {
                    let answer = p.str("sdpString")?;
                    self.subscribe_client_answer(control, caller, stream, answer).map(|_| json!({}))
                }
            }
            other => {
                Err(RpcError::new(code::METHOD_NOT_FOUND, format!("{other}: not a media method")))
            }
        }
    }

    /// Trickles the server's candidates of a new transport as `iceCandidate` notifications to
    /// the caller (spec §4.3: the browser adds them to the peer of `owner`'s stream), besides
    /// the same candidates in the SDP, as OpenVidu with Kurento does: a browser that dropped
    /// the SDP's candidates, or a client that only reads trickled ones, still gets them. The
    /// candidates of the first m-section that has any (BUNDLE: one transport).
    fn trickle_candidates(&self, caller: &Caller, owner: &str, endpoint_name: &str, sdp: &str) {
        let mut found = Vec::new();
        let (mut mline, mut mid) = (None::<u32>, String::new());
        for line in sdp.lines() {
            if line.starts_with("m=") {
                if !found.is_empty() {
                    break;
                }
                mline = Some(mline.map_or(0, |i| i + 1));
                mid.clear();
            } else if let Some(m) = line.strip_prefix("a=mid:") {
                m.trim().clone_into(&mut mid);
            } else if let (Some(c), Some(i)) = (line.strip_prefix("a="), mline)
                && c.starts_with("candidate:")
            {
                found.push((c.trim().to_string(), i));
            }
        }
        if found.is_empty() {
            return;
        }
        let mut st = lock(&self.state);
        self.trickle_ready.notify_one();
        for (candidate, index) in found {
            st.trickle.push(MediaEvent::IceCandidate {
                session_id: caller.session_id.clone(),
                to_connection: caller.connection_id.clone(),
                sender_connection_id: owner.to_string(),
                endpoint_name: endpoint_name.to_string(),
                candidate,
                sdp_mid: mid.clone(),
                sdp_mline_index: index,
            });
        }
    }

    fn policy(&self, control: &ControlHandle, session: &str) -> VideoCodecPolicy {
        let name = control
            .forced_video_codec(session)
            .unwrap_or_else(|| self.cfg.sessions.forced_video_codec.clone());
        VideoCodecPolicy::from_openvidu(&name).unwrap_or(VideoCodecPolicy::MediaServerPreferred)
    }

    fn publish(
        &self,
        control: &ControlHandle,
        caller: &Caller,
        params: &Map<String, Value>,
        offer_sdp: &str,
    ) -> Result<Value, RpcError> {
        match control.role(caller) {
            Some(Role::Subscriber) => {
                return Err(RpcError::new(
                    code::USER_UNAUTHORIZED,
                    "Unable to publish video. The user does not have a valid token",
                ));
            }
            None => {
                return Err(RpcError::new(code::USER_NOT_FOUND, "Participant not found"));
            }
            _ => {}
        }
        if control.stream_of(&caller.session_id, &caller.connection_id).is_some() {
            return Err(RpcError::new(
                code::USER_ALREADY_STREAMING,
                "The user is already publishing",
            ));
        }
        let media_opts = crate::control::ws::media_options_from_params(params)?;
        let offer = sdp::parse(offer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&offer)?;
        let policy = self.policy(control, &caller.session_id);
        let (id, shard, ufrag, pwd) = self.new_peer(&caller.session_id, true);
        let local = self.local_transport(shard, &ufrag, &pwd);
        let neg = sdp::answer_publish(&offer, &local, policy).map_err(sdp_error)?;
        let tracks: Vec<InTrack> = neg.media.iter().map(in_track).collect();
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        self.send(shard, ShardCommand::AddPublisher { id, ice, remote_fingerprint: fp, tracks })?;
        let stream_id = match control.add_stream(caller, media_opts) {
            Ok(s) => s,
            Err(e) => {
                let _ = self.send(shard, ShardCommand::RemovePeer { id });
                return Err(e);
            }
        };
        {
            let mut st = lock(&self.state);
            st.adopt(
                id,
                Owner {
                    session: caller.session_id.clone(),
                    connection: caller.connection_id.clone(),
                    stream: stream_id.clone(),
                    publisher: true,
                    shard,
                },
            );
            st.published.insert(
                (caller.session_id.clone(), stream_id.clone()),
                Published {
                    id,
                    shard,
                    connection: caller.connection_id.clone(),
                    media: neg.media,
                    policy,
                    connection_of: (fp, offer.origin_session),
                },
            );
        }
        let created_at = control.stream_created_at(&caller.session_id, &stream_id);
        self.trickle_candidates(caller, &caller.connection_id, &stream_id, &neg.sdp);
        tracing::info!(session = %caller.session_id, stream = %stream_id, peer = id.0, shard, "publishing");
        Ok(json!({"id": stream_id, "createdAt": created_at, "sdpAnswer": neg.sdp}))
    }

    /// `reconnectStream` of the caller's own stream: a new transport behind the same tracks.
    fn republish(
        &self,
        control: &ControlHandle,
        caller: &Caller,
        stream: &str,
        offer_sdp: &str,
    ) -> Result<Value, RpcError> {
        let key = (caller.session_id.clone(), stream.to_string());
        let Some(p) = lock(&self.state).published.get(&key).cloned() else {
            return Err(no_stream(stream));
        };
        let offer = sdp::parse(offer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&offer)?;
        let (ufrag, pwd) = (random_string(8), random_string(24));
        let local = self.local_transport(p.shard, &ufrag, &pwd);
        let neg = sdp::answer_publish(&offer, &local, p.policy).map_err(sdp_error)?;
        let same_shape = neg.media.len() == p.media.len()
            && neg
                .media
                .iter()
                .zip(&p.media)
                .all(|(a, b)| a.kind == b.kind && a.codec.same_format(&b.codec));
        if !same_shape {
            return Err(sdp_error(SdpError::Unacceptable(
                "a reconnection must publish the same tracks with the same codecs".into(),
            )));
        }
        let tracks: Vec<InTrack> = neg.media.iter().map(in_track).collect();
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        let connection_of = (fp, offer.origin_session);
        let same_connection = p.connection_of == connection_of;
        self.send(
            p.shard,
            ShardCommand::RestartPublisher {
                id: p.id,
                ice,
                remote_fingerprint: fp,
                same_connection,
                tracks,
            },
        )?;
        if let Some(entry) = lock(&self.state).published.get_mut(&key) {
            entry.media = neg.media;
            entry.connection_of = connection_of;
        }
        let created_at = control.stream_created_at(&caller.session_id, stream);
        self.trickle_candidates(caller, &caller.connection_id, stream, &neg.sdp);
        Ok(json!({"id": stream, "createdAt": created_at, "sdpAnswer": neg.sdp}))
    }

    /// What a subscriber of `stream` will receive: one outgoing track per published track,
    /// with fresh SSRCs for this leg.
    fn outgoing(
        &self,
        caller: &Caller,
        stream: &str,
    ) -> Result<(Published, Vec<OutgoingTrack>), RpcError> {
        let key = (caller.session_id.clone(), stream.to_string());
        let Some(p) = lock(&self.state).published.get(&key).cloned() else {
            return Err(no_stream(stream));
        };
        let cname = random_string(16);
        let tracks = p
            .media
            .iter()
            .map(|m| OutgoingTrack {
                kind: m.kind,
                codec: m.codec.clone(),
                ssrc: rand::random::<u32>() | 1,
                rtx_ssrc: rand::random::<u32>() | 1,
                cname: cname.clone(),
                stream_id: stream.to_string(),
                track_id: format!("{}_{}", m.kind.as_str(), stream),
            })
            .collect();
        Ok((p, tracks))
    }

    fn subscribe_client_offer(
        &self,
        control: &ControlHandle,
        caller: &Caller,
        stream: &str,
        offer_sdp: &str,
    ) -> Result<Value, RpcError> {
        let offer = sdp::parse(offer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&offer)?;
        if let Some(answer) = self.resubscribe(caller, stream, &offer, fp)? {
            return Ok(answer);
        }
        let (publisher, outgoing) = self.outgoing(caller, stream)?;
        let (id, shard, ufrag, pwd) = self.new_peer(&caller.session_id, false);
        let local = self.local_transport(shard, &ufrag, &pwd);
        let neg = sdp::answer_subscribe(&offer, &local, &outgoing).map_err(sdp_error)?;
        let tracks = out_tracks(&neg.media, &outgoing);
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        let link = Link { id, shard, ice, fp, dtls_role: DtlsRole::Server };
        self.attach_subscriber(control, caller, stream, &publisher, link, tracks)?;
        let connection_of = (fp, offer.origin_session);
        lock(&self.state).legs.insert(id, AnsweredLeg { connection_of, outgoing });
        let endpoint = format!("{}_{stream}", caller.connection_id);
        self.trickle_candidates(caller, &publisher.connection, &endpoint, &neg.sdp);
        Ok(json!({"sdpAnswer": neg.sdp}))
    }

    /// A client offer for a stream the caller already receives, from the certificate of that
    /// leg: the same peer connection renegotiating (an ICE restart, `restartIce()`). The leg
    /// stays, with its SSRCs and sequence numbers; the answer announces the same tracks with
    /// new ICE credentials. `None`: not such an offer (openvidu-browser reconnects with a new
    /// peer connection, whose certificate is new), so a new leg replaces the old one.
    fn resubscribe(
        &self,
        caller: &Caller,
        stream: &str,
        offer: &sdp::RemoteDescription,
        fp: Fingerprint,
    ) -> Result<Option<Value>, RpcError> {
        let key = (caller.session_id.clone(), caller.connection_id.clone(), stream.to_string());
        let (id, leg, shard, owner) = {
            let st = lock(&self.state);
            let Some(&id) = st.subscribed.get(&key) else { return Ok(None) };
            let same = |l: &&AnsweredLeg| l.connection_of == (fp, offer.origin_session);
            let Some(leg) = st.legs.get(&id).filter(same).cloned() else {
                return Ok(None);
            };
            let published = st.published.get(&(caller.session_id.clone(), stream.to_string()));
            let Some(p) = published else { return Ok(None) };
            (id, leg, st.shard_of_peer(&id), p.connection.clone())
        };
        let (ufrag, pwd) = (random_string(8), random_string(24));
        let local = self.local_transport(shard, &ufrag, &pwd);
        let neg = sdp::answer_subscribe(offer, &local, &leg.outgoing).map_err(sdp_error)?;
        let ice =
            IceParams { local_ufrag: ufrag, local_pwd: pwd, remote_ufrag: offer.ice_ufrag.clone() };
        self.send(shard, ShardCommand::RestartSubscriber { id, ice, remote_fingerprint: fp })?;
        let endpoint = format!("{}_{stream}", caller.connection_id);
        self.trickle_candidates(caller, &owner, &endpoint, &neg.sdp);
        tracing::info!(session = %caller.session_id, stream, subscriber = %caller.connection_id, peer = id.0, "subscriber renegotiated its transport");
        Ok(Some(json!({"sdpAnswer": neg.sdp})))
    }

    fn prepare_receive(
        &self,
        _control: &ControlHandle,
        caller: &Caller,
        stream: &str,
    ) -> Result<Value, RpcError> {
        let (publisher, outgoing) = self.outgoing(caller, stream)?;
        let (ufrag, pwd) = (random_string(8), random_string(24));
        let shard = self.place_subscriber(&mut lock(&self.state), &caller.session_id);
        let local = self.local_transport(shard, &ufrag, &pwd);
        let offer = sdp::offer_subscribe(&local, &outgoing);
        let sdp_offer = offer.sdp.clone();
        let sources = (0..outgoing.len()).collect();
        lock(&self.state).pending.insert(
            (caller.session_id.clone(), caller.connection_id.clone(), stream.to_string()),
            PendingOffer { offer, ice_ufrag: ufrag, ice_pwd: pwd, sources, shard },
        );
        let endpoint = format!("{}_{stream}", caller.connection_id);
        self.trickle_candidates(caller, &publisher.connection, &endpoint, &sdp_offer);
        Ok(json!({"sdpOffer": sdp_offer}))
    }

    fn subscribe_client_answer(
        &self,
        control: &ControlHandle,
        caller: &Caller,
        stream: &str,
        answer_sdp: &str,
    ) -> Result<Value, RpcError> {
        let key = (caller.session_id.clone(), caller.connection_id.clone(), stream.to_string());
        let Some(pending) = lock(&self.state).pending.remove(&key) else {
            return Err(RpcError::new(
                code::MEDIA_SDP_ERROR,
                format!(
                    "No offer was made for stream {stream}: call prepareReceiveVideoFrom first"
                ),
            ));
        };
        let publisher = {
            let st = lock(&self.state);
            st.published.get(&(caller.session_id.clone(), stream.to_string())).cloned()
        };
        let Some(publisher) = publisher else { return Err(no_stream(stream)) };
        let answer = sdp::parse(answer_sdp).map_err(sdp_error)?;
        let fp = remote_fingerprint(&answer)?;
        let agreed = sdp::accept_subscribe_answer(&pending.offer, &answer).map_err(sdp_error)?;
        let tracks = agreed
            .iter()
            .filter_map(|m| {
                let i = pending.offer.media.iter().position(|o| o.mid == m.mid)?;
                Some(out_track(m, *pending.sources.get(i)?))
            })
            .collect();
        let id = Self::next_id(&mut lock(&self.state));
        let ice = IceParams {
            local_ufrag: pending.ice_ufrag,
            local_pwd: pending.ice_pwd,
            remote_ufrag: answer.ice_ufrag.clone(),
        };
        // `accept_subscribe_answer` allowed only active or passive.
        let dtls_role =
            if answer.setup == sdp::Setup::Passive { DtlsRole::Client } else { DtlsRole::Server };
        let link = Link { id, shard: pending.shard, ice, fp, dtls_role };
        self.attach_subscriber(control, caller, stream, &publisher, link, tracks)?;
        Ok(json!({}))
    }

    fn attach_subscriber(
        &self,
        control: &ControlHandle,
        caller: &Caller,
        stream: &str,
        publisher: &Published,
        link: Link,
        tracks: Vec<OutTrack>,
    ) -> Result<(), RpcError> {
        let Link { id, shard, ice, fp, dtls_role } = link;
        let key = (caller.session_id.clone(), caller.connection_id.clone(), stream.to_string());
        // A new subscription to the same stream replaces the old one (re-subscribe, reconnect).
        // (Taken out first: in an `if let` scrutinee the guard would live through the block.)
        let old = {
            let mut st = lock(&self.state);
            st.subscribed.remove(&key).map(|old| (st.shard_of_peer(&old), old))
        };
        if let Some((old_shard, old)) = old {
            let _ = self.send(old_shard, ShardCommand::RemovePeer { id: old });
            lock(&self.state).forget(&old);
        }
        // A leg on another shard than its publisher's gets it through the shard mesh.
        let origin = (shard != publisher.shard).then(|| Origin {
            shard: publisher.shard,
            tracks: publisher.media.iter().map(in_track).collect(),
        });
        self.send(
            shard,
            ShardCommand::AddSubscriber {
                id,
                publisher: publisher.id,
                ice,
                remote_fingerprint: fp,
                dtls_role,
                tracks,
                origin,
            },
        )?;
        if let Err(e) = control.add_subscriber(caller, stream) {
            let _ = self.send(shard, ShardCommand::RemovePeer { id });
            return Err(e);
        }
        let mut st = lock(&self.state);
        st.subscribed.insert(key, id);
        st.adopt(
            id,
            Owner {
                session: caller.session_id.clone(),
                connection: caller.connection_id.clone(),
                stream: stream.to_string(),
                publisher: false,
                shard,
            },
        );
        tracing::info!(session = %caller.session_id, stream, subscriber = %caller.connection_id, peer = id.0, shard, publisher_shard = publisher.shard, "subscribing");
        Ok(())
    }

    // ------------------------------------------------------------------ registry and shards

    /// Carries out a teardown the registry decided (unpublish, unsubscribe, eviction, session
    /// close). Called from inside registry operations: takes only the engine's own lock.
    pub(crate) fn on_registry_command(&self, cmd: MediaCommand) {
        let mut doomed: Vec<(usize, PeerId)> = Vec::new();
        {
            let mut st = lock(&self.state);
            let st = &mut *st;
            match &cmd {
                MediaCommand::ReleasePublisher { session_id, stream_id, .. } => {
                    if let Some(p) = st.published.remove(&(session_id.clone(), stream_id.clone())) {
                        doomed.push((p.shard, p.id));
                    }
                    let subs: Vec<_> = st
                        .subscribed
                        .keys()
                        .filter(|(s, _, st_id)| s == session_id && st_id == stream_id)
                        .cloned()
                        .collect();
                    for k in subs {
                        if let Some(id) = st.subscribed.remove(&k) {
                            doomed.push((st.shard_of_peer(&id), id));
                        }
                    }
                    st.pending.retain(|(s, _, st_id), _| !(s == session_id && st_id == stream_id));
                }
                MediaCommand::ReleaseSubscriber { session_id, subscriber, stream_id } => {
                    let key = (session_id.clone(), subscriber.clone(), stream_id.clone());
                    if let Some(id) = st.subscribed.remove(&key) {
                        doomed.push((st.shard_of_peer(&id), id));
                    }
                }
                MediaCommand::ReleaseConnection { session_id, connection_id } => {
                    let streams: Vec<_> = st
                        .published
                        .iter()
                        .filter(|((s, _), p)| s == session_id && &p.connection == connection_id)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for k in &streams {
                        if let Some(p) = st.published.remove(k) {
                            doomed.push((p.shard, p.id));
                        }
                    }
                    let subs: Vec<_> = st
                        .subscribed
                        .keys()
                        .filter(|(s, sub, stream)| {
                            s == session_id
                                && (sub == connection_id
                                    || streams.iter().any(|(_, x)| x == stream))
                        })
                        .cloned()
                        .collect();
                    for k in subs {
                        if let Some(id) = st.subscribed.remove(&k) {
                            doomed.push((st.shard_of_peer(&id), id));
                        }
                    }
                    st.pending.retain(|(s, sub, _), _| !(s == session_id && sub == connection_id));
                }
                MediaCommand::CloseSession { session_id } => {
                    let pubs: Vec<_> =
                        st.published.keys().filter(|(s, _)| s == session_id).cloned().collect();
                    for k in pubs {
                        if let Some(p) = st.published.remove(&k) {
                            doomed.push((p.shard, p.id));
                        }
                    }
                    let subs: Vec<_> =
                        st.subscribed.keys().filter(|(s, _, _)| s == session_id).cloned().collect();
                    for k in subs {
                        if let Some(id) = st.subscribed.remove(&k) {
                            doomed.push((st.shard_of_peer(&id), id));
                        }
                    }
                    st.pending.retain(|(s, _, _), _| s != session_id);
                }
            }
            for (_, id) in &doomed {
                st.forget(id);
            }
            if let MediaCommand::CloseSession { session_id } = &cmd {
                // After the legs were uncounted against it.
                st.session_shard.remove(session_id);
                st.home_legs.remove(session_id);
            }
        }
        for (shard, id) in doomed {
            if self.send(shard, ShardCommand::RemovePeer { id }).is_err() {
                tracing::warn!(peer = id.0, "could not release a media peer (queue full)");
            }
        }
    }

    /// Drains every shard's events into what the control plane must do.
    pub(crate) fn poll_events(&self) -> Vec<MediaEvent> {
        let mut raw = Vec::new();
        {
            let mut shards = lock(&self.shards);
            for s in shards.iter_mut() {
                while let Some(ev) = s.events().try_recv() {
                    raw.push(ev);
                }
            }
        }
        let mut st = lock(&self.state);
        let mut out = std::mem::take(&mut st.trickle);
        for ev in raw {
            match ev {
                ShardEvent::Connected { id } => {
                    if let Some(o) = st.owners.get(&id) {
                        tracing::info!(session = %o.session, connection = %o.connection, stream = %o.stream, publisher = o.publisher, peer = id.0, "media connected");
                    }
                }
                ShardEvent::Failed { id, reason } => {
                    let Some(o) = st.owners.get(&id).cloned() else { continue };
                    tracing::info!(session = %o.session, connection = %o.connection, stream = %o.stream, peer = id.0, reason, "media transport failed");
                    if !o.publisher {
                        // The shard removed the subscriber leg; the browser reconnects it.
                        st.forget(&id);
                        st.subscribed.retain(|_, v| *v != id);
                    }
                    out.push(MediaEvent::TransportFailed {
                        session_id: o.session,
                        connection_id: o.connection,
                        description: format!("{reason} (stream {})", o.stream),
                    });
                }
                ShardEvent::Closed { id } => {
                    if let Some(o) = st.owners.get(&id).cloned()
                        && !o.publisher
                    {
                        st.forget(&id);
                        st.subscribed.retain(|_, v| *v != id);
                    }
                }
                ShardEvent::Rejected { id, reason } => {
                    tracing::warn!(peer = id.0, reason, "media shard rejected a peer");
                    st.forget(&id);
                    st.subscribed.retain(|_, v| *v != id);
                }
            }
        }
        out
    }
}

/// A publisher track from what was agreed for one m-line.
fn in_track(m: &NegotiatedMedia) -> InTrack {
    InTrack {
        kind: m.kind,
        mid: m.mid.clone(),
        pt: m.codec.pt,
        clock_rate: m.codec.clock_rate,
        rtx_pt: m.rtx_pt,
        ssrc: m.ssrc,
        rtx_ssrc: m.rtx_ssrc,
        ext: m.ext,
        nack: m.nack,
        pli: m.pli,
        fir: m.fir,
        remb: m.remb,
        transport_cc: m.transport_cc,
    }
}

fn out_track(m: &NegotiatedMedia, source: usize) -> OutTrack {
    OutTrack {
        source,
        kind: m.kind,
        mid: m.mid.clone(),
        pt: m.codec.pt,
        ssrc: m.ssrc.unwrap_or(0),
        rtx: m.rtx_pt.zip(m.rtx_ssrc),
        ext: m.ext,
    }
}

/// The legs of a client-offer subscription: each agreed m-line carries the outgoing track
/// with its SSRC.
fn out_tracks(agreed: &[NegotiatedMedia], outgoing: &[OutgoingTrack]) -> Vec<OutTrack> {
    agreed
        .iter()
        .filter_map(|m| {
            let source = outgoing.iter().position(|t| Some(t.ssrc) == m.ssrc)?;
            Some(out_track(m, source))
        })
        .collect()
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
