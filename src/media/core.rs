//! [`MediaCore`]: the media [`ShardCore`] of one shard — a dispatcher over slabs. It owns the
//! peers of this shard (each a [`Transport`] plus a [`Producer`] or a [`Consumer`]), the
//! routes to them (ICE ufrag, authenticated source address), the shard's [`Router`] and the
//! mirrors of publishers of other shards (`mirror.rs`), and sends each datagram, command,
//! mesh message and timer to the owner that handles it. The packet flows between producers and
//! consumers (the RTP and RTCP bullets below) are in `flow.rs`, the mesh side in `mirror.rs`.
//!
//! Per datagram (first byte, RFC 7983):
//! - **STUN**: the USERNAME's local ufrag names the transport; its ICE-lite agent checks and
//!   answers. An authenticated check routes the source address to that transport: only such
//!   addresses get past the next steps.
//! - **DTLS**: into the transport's DTLS endpoint; the handshake's keys become its two SRTP
//!   contexts.
//! - **RTP** from a publisher: unprotected once in the receive buffer, then the producer binds
//!   it to its track (RTX unwrapped in place, statistics, NACK tracker, TWCC); it is copied once
//!   per shard mirroring the publisher (`mirror.rs`) and [`MediaCore::forward`]ed to the
//!   track's consumers here: for each, [`write_rtp`] writes a fresh header (the leg's SSRC,
//!   sequence number, timestamp, payload type and extension ids) straight into a send slot and
//!   encrypts the payload from the receive buffer behind it (one copy, fused with encryption).
//! - **RTCP**: from a subscriber, NACKs are answered from the track's retransmission ring
//!   ([`write_rtp`] again) and PLI/FIR go to the publisher through the keyframe limiter (across
//!   the mesh for a mirrored one); from a publisher, sender reports feed its reception
//!   statistics and are translated for each consumer (here and on mirroring shards).
//!
//! On the timer: ICE consent and DTLS retransmissions of each transport, NACKs of missing
//! packets and feedback (RR + REMB every `rtcp_interval`, TWCC every `twcc_interval`) for each
//! producer, and the mirrors' attach retries.
//!
//! Nothing on the packet path allocates: the maps are looked up with borrowed keys, the peer
//! tables and rings are sized when peers are added.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::consumer::{Consumer, ConsumerTrack};
use super::egress::{Egress, FROM_HOSTED_RELAY};
use super::mirror::{MESH_BACKLOG, Mirror};
use super::producer::{NACK_CAP, Producer};
use super::stats::{MediaDrop, MediaStats, stat};
use super::transport::{DtlsOutcome, Routes, Transport};
use super::{IceParams, InTrack, Origin, OutTrack, PeerId, ShardCommand, ShardEvent};
use crate::dtls::{DtlsContext, DtlsRole, Fingerprint};
use crate::ice::{IceLiteAgent, Reply};
use crate::router::{LegId, Router, RouterConfig, SubscribeParams, TrackId};
use crate::shard::mesh::MeshPort;
use crate::shard::{RecvMeta, ShardCore, TxQueue};
use crate::wire::{Datagram, StunView, demux};

/// Tunables of a media core.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Estimated bitrate announced to publishers in REMB (bits/s); 0 = no REMB.
    pub remb_bitrate: u64,
    /// Receiver reports (and REMB) to publishers.
    pub rtcp_interval: Duration,
    /// Transport-wide congestion feedback to publishers.
    pub twcc_interval: Duration,
    /// Shortest time between two timer runs (NACK retries and attach requests are checked at
    /// this granularity); the timer otherwise runs when a transport or producer deadline
    /// falls due.
    pub tick: Duration,
    pub router: RouterConfig,
}

impl Default for CoreSettings {
    fn default() -> Self {
        CoreSettings {
            remb_bitrate: 1_000_000,
            rtcp_interval: Duration::from_secs(1),
            twcc_interval: Duration::from_millis(100),
            tick: Duration::from_millis(20),
            router: RouterConfig::default(),
        }
    }
}

pub(super) enum Role {
    Publisher(Producer),
    Subscriber(Consumer),
}

/// One peer connection: its transport and what it sends or receives.
pub(super) struct Peer {
    pub id: PeerId,
    pub transport: Transport,
    pub role: Role,
}

impl Peer {
    /// The publisher a subscriber receives from.
    pub(super) fn publisher(&self) -> Option<PeerId> {
        match &self.role {
            Role::Subscriber(c) => Some(c.publisher),
            Role::Publisher(_) => None,
        }
    }
}

/// The media core of one shard. See the module docs.
pub struct MediaCore {
    pub(super) local: SocketAddr,
    pub(super) settings: CoreSettings,
    dtls: DtlsContext,
    pub(super) router: Router,
    pub(super) peers: Vec<Option<Peer>>,
    free: Vec<u32>,
    pub(super) by_id: HashMap<PeerId, u32>,
    pub(super) routes: Routes,
    events: VecDeque<ShardEvent>,
    pub(super) stats: Arc<MediaStats>,
    pub(super) epoch: Instant,
    /// When [`MediaCore::on_tick`] runs next: the earliest deadline of any transport,
    /// producer or mirror (lowered as they change between runs).
    next_tick: Instant,
    pub(super) scratch_seqs: Vec<u16>,
    /// This shard's end of the shard mesh (`None`: a single shard, or a core in a unit test).
    pub(super) mesh: Option<MeshPort>,
    pub(super) mirrors: HashMap<PeerId, Mirror>,
    /// Control messages for the mesh (to, kind, index, key, byte) waiting for room.
    pub(super) mesh_backlog: VecDeque<(usize, u8, u8, u64, u8)>,
    /// Recorder consumers ([`super::recorder`]).
    pub(super) recorders: Vec<super::recorder::Tap>,
    /// Camera producers' rings ([`super::ingest`]).
    pub(super) ingests: super::ingest::Ingests,
}

impl MediaCore {
    /// A core for the shard bound to `local`; `stats` is read by the control plane.
    pub fn new(
        local: SocketAddr,
        dtls: DtlsContext,
        settings: CoreSettings,
        stats: Arc<MediaStats>,
        now: Instant,
    ) -> MediaCore {
        MediaCore {
            local,
            router: Router::new(settings.router),
            settings,
            dtls,
            peers: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            routes: Routes { by_ufrag: HashMap::new(), by_addr: HashMap::new() },
            events: VecDeque::new(),
            stats,
            epoch: now,
            next_tick: now,
            scratch_seqs: Vec::with_capacity(NACK_CAP),
            mesh: None,
            mirrors: HashMap::new(),
            mesh_backlog: VecDeque::with_capacity(MESH_BACKLOG),
            recorders: Vec::new(),
            ingests: Default::default(),
        }
    }

    /// Connects the core to the shard mesh (its shard's port), so subscribers here can
    /// receive publishers of other shards and the other way round.
    pub fn with_mesh(mut self, port: MeshPort) -> MediaCore {
        self.mesh = Some(port);
        self
    }

    /// Number of peers (publishers and subscribers).
    pub fn peer_count(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn update_gauges(&self) {
        let (mut p, mut s) = (0, 0);
        for peer in self.peers.iter().flatten() {
            match peer.role {
                Role::Publisher(_) => p += 1,
                Role::Subscriber(_) => s += 1,
            }
        }
        self.stats.set_peers(p, s);
        super::stats::set(&self.stats.mirrors, self.mirrors.len() as u64);
        super::stats::set(&self.stats.recorders, self.recorder_count() as u64);
    }

    /// An owner's deadline moved earlier than the next timer run.
    pub(super) fn lower_deadline(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next_tick = self.next_tick.min(at);
        }
    }

    /// The producer of publisher `id`, when it is on this shard.
    pub(super) fn producer_mut(&mut self, id: PeerId) -> Option<&mut Producer> {
        let slot = *self.by_id.get(&id)?;
        match &mut self.peers.get_mut(slot as usize)?.as_mut()?.role {
            Role::Publisher(p) => Some(p),
            Role::Subscriber(_) => None,
        }
    }

    // ------------------------------------------------------------------ commands

    /// A new peer in a free slot, routed by its ufrag; `None` (and a `Rejected` event) when
    /// its id or ufrag is taken.
    pub(super) fn insert_peer(
        &mut self,
        now: Instant,
        id: PeerId,
        ice: &IceParams,
        fp: Fingerprint,
        dtls_role: DtlsRole,
    ) -> Option<u32> {
        if self.by_id.contains_key(&id)
            || self.routes.by_ufrag.contains_key(ice.local_ufrag.as_str())
        {
            self.events.push_back(ShardEvent::Rejected { id, reason: "duplicate peer" });
            return None;
        }
        let transport = Transport::new(&self.dtls, now, ice, fp, dtls_role);
        // A placeholder role until the caller puts the real one in.
        let role = Role::Subscriber(Consumer { publisher: id, tracks: Vec::new() });
        let peer = Peer { id, transport, role };
        let slot = match self.free.pop() {
            Some(s) => {
                self.peers[s as usize] = Some(peer);
                s
            }
            None => {
                self.peers.push(Some(peer));
                self.peers.len() as u32 - 1
            }
        };
        self.by_id.insert(id, slot);
        self.routes.by_ufrag.insert(ice.local_ufrag.as_str().into(), slot);
        Some(slot)
    }

    fn add_publisher(
        &mut self,
        now: Instant,
        id: PeerId,
        ice: IceParams,
        fp: Fingerprint,
        tracks: Vec<InTrack>,
    ) {
        let Some(slot) = self.insert_peer(now, id, &ice, fp, DtlsRole::Server) else { return };
        let producer = Producer::new(&mut self.router, tracks, now, &self.settings);
        if let Some(peer) = self.peers[slot as usize].as_mut() {
            peer.role = Role::Publisher(producer);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_subscriber(
        &mut self,
        now: Instant,
        id: PeerId,
        publisher: PeerId,
        ice: IceParams,
        fp: Fingerprint,
        dtls_role: DtlsRole,
        tracks: Vec<OutTrack>,
        origin: Option<Origin>,
    ) {
        // The publisher's tracks: on this shard, already mirrored here, or of another shard
        // (mirrored here with this first consumer).
        let here = self.mesh.as_ref().map(MeshPort::index);
        let local: Option<Vec<TrackId>> = match self.producer_mut(publisher) {
            Some(p) => Some(p.tracks.iter().map(|t| t.track).collect()),
            None => {
                self.mirrors.get(&publisher).map(|m| m.tracks.iter().map(|t| t.track).collect())
            }
        };
        let remote = origin.filter(|o| local.is_none() && here.is_some_and(|h| h != o.shard));
        let available =
            local.as_ref().map(Vec::len).or_else(|| remote.as_ref().map(|o| o.tracks.len()));
        let Some(available) = available else {
            self.events.push_back(ShardEvent::Rejected { id, reason: "publisher not found" });
            return;
        };
        if tracks.iter().any(|cfg| cfg.source >= available) {
            self.events.push_back(ShardEvent::Rejected { id, reason: "no such track" });
            return;
        }
        let Some(slot) = self.insert_peer(now, id, &ice, fp, dtls_role) else { return };
        let mirrored = self.mirror_for(publisher, remote);
        let Some(sources) = mirrored.or(local) else { return };
        let tracks: Vec<ConsumerTrack> = tracks
            .into_iter()
            .map(|cfg| ConsumerTrack { track: sources[cfg.source], cfg, packets: 0, octets: 0 })
            .collect();
        for t in &tracks {
            let params = SubscribeParams {
                out_ssrc: t.cfg.ssrc,
                pt: t.cfg.pt,
                rtx: t.cfg.rtx,
                initial_seq: rand::random(),
                initial_ts: rand::random(),
            };
            // The leg is new, so it cannot be subscribed already; the track was just looked up.
            let _ = self.router.subscribe(t.track, LegId(slot), params);
        }
        if let Some(peer) = self.peers[slot as usize].as_mut() {
            peer.role = Role::Subscriber(Consumer { publisher, tracks });
        }
    }

    /// The slot of peer `id` for a renegotiation with `ice`; `None` (and a `Rejected` event,
    /// `missing` or a ufrag another peer has) when it cannot be.
    fn slot_to_restart(
        &mut self,
        id: PeerId,
        ice: &IceParams,
        missing: &'static str,
    ) -> Option<u32> {
        let Some(&slot) = self.by_id.get(&id) else {
            self.events.push_back(ShardEvent::Rejected { id, reason: missing });
            return None;
        };
        if self.routes.by_ufrag.get(ice.local_ufrag.as_str()).is_some_and(|&s| s != slot) {
            self.events.push_back(ShardEvent::Rejected { id, reason: "duplicate ufrag" });
            return None;
        }
        Some(slot)
    }

    /// New ICE credentials (and, unless an ICE restart, a new DTLS association) for the
    /// transport of peer `id`; `tracks` renegotiated for a publisher. True: an ICE restart.
    #[allow(clippy::too_many_arguments)]
    fn restart(
        &mut self,
        now: Instant,
        id: PeerId,
        ice: IceParams,
        fp: Fingerprint,
        same_connection: bool,
        tracks: Option<Vec<InTrack>>,
        missing: &'static str,
    ) {
        let Some(slot) = self.slot_to_restart(id, &ice, missing) else { return };
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let t = &mut peer.transport;
        let ice_restart =
            t.restart(&self.dtls, now, &ice, fp, same_connection, slot, &mut self.routes);
        if ice_restart {
            stat!(self.stats, ice_restarts);
        }
        let publisher = matches!(peer.role, Role::Publisher(_));
        if let (Role::Publisher(p), Some(tracks)) = (&mut peer.role, tracks) {
            p.renegotiated(tracks, ice_restart);
        }
        self.routes.by_ufrag.insert(ice.local_ufrag.into(), slot);
        // A new peer connection starts its streams over; an ICE restart keeps them.
        if publisher && !ice_restart {
            self.restart_recorders_of(slot);
        }
    }

    fn remove_peer(&mut self, slot: u32, tx: &mut Egress<'_>) {
        let Some(mut peer) = self.peers.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        peer.transport.close(tx);
        peer.transport.unroute(slot, &mut self.routes);
        self.by_id.remove(&peer.id);
        match peer.role {
            Role::Publisher(p) => {
                self.drop_recorders_of(slot);
                self.drop_ingest(slot);
                for t in p.tracks {
                    for leg in self.router.remove_track(t.track) {
                        if let Some(Some(Peer { role: Role::Subscriber(c), .. })) =
                            self.peers.get_mut(leg.0 as usize)
                        {
                            c.tracks.retain(|o| o.track != t.track);
                        }
                    }
                }
            }
            Role::Subscriber(c) => {
                for o in c.tracks {
                    let _ = self.router.unsubscribe(o.track, LegId(slot));
                }
                self.release_mirror(c.publisher);
            }
        }
        self.free.push(slot);
    }

    // ------------------------------------------------------------------ transports

    fn on_stun(&mut self, now: Instant, meta: RecvMeta, buf: &[u8], tx: &mut Egress<'_>) {
        let Ok(msg) = StunView::parse(buf) else {
            return self.stats.count_drop(MediaDrop::StunUnknown);
        };
        let slot = match msg.username() {
            Ok(Some(u)) => {
                IceLiteAgent::local_ufrag_of(u).and_then(|l| self.routes.by_ufrag.get(l))
            }
            _ => None,
        };
        let Some(&slot) = slot else {
            return self.stats.count_drop(MediaDrop::StunUnknown);
        };
        let local = SocketAddr::new(meta.dst_ip.unwrap_or(self.local.ip()), meta.dst_port);
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let hosted = meta.socket == FROM_HOSTED_RELAY;
        let mark = tx.pending_len();
        let Some(mut out) = tx.push(meta.src) else {
            return self.stats.count_drop(MediaDrop::TxFull);
        };
        out.set_source(meta.dst_ip);
        match peer.transport.ice.handle_stun(now, meta.src, local, &msg, out.room()) {
            Reply::Success(n) => {
                out.commit_room(n);
                tx.route_from(mark, hosted);
                stat!(self.stats, stun_checks);
                peer.transport.remember_source(meta.src, hosted, slot, &mut self.routes);
                let next = peer.transport.next_deadline();
                self.lower_deadline(next);
            }
            Reply::Error(n, _) => {
                out.commit_room(n);
                tx.route_from(mark, hosted);
                self.stats.count_drop(MediaDrop::StunRejected);
            }
            Reply::Drop(_) => {
                drop(out);
                self.stats.count_drop(MediaDrop::StunRejected);
            }
        }
        self.after_ice(slot, tx);
    }

    /// Acts on the ICE agent's events; a peer whose consent expired fails.
    fn after_ice(&mut self, slot: u32, tx: &mut Egress<'_>) {
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let ice = peer.transport.poll_ice();
        if let Some(remote) = ice.start_client {
            // The ClientHello has waited in the endpoint for a path: send it now.
            self.after_dtls(slot, remote, tx);
        }
        if ice.consent_expired {
            stat!(self.stats, ice_consent_expired);
            self.fail_peer(slot, Some("ICE consent expired"), tx);
        }
    }

    /// A peer's transport is gone for good (`reason`), or the browser closed it (`None`).
    /// A subscriber leg is removed. A publisher keeps its tracks and their subscribers, so
    /// `reconnectStream` ([`ShardCommand::RestartPublisher`]) can put a new transport behind
    /// them; until then it has no address, keys or credentials.
    fn fail_peer(&mut self, slot: u32, reason: Option<&'static str>, tx: &mut Egress<'_>) {
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let id = peer.id;
        if matches!(peer.role, Role::Publisher(_)) {
            peer.transport.unroute(slot, &mut self.routes);
            peer.transport.failed = true;
        } else {
            self.remove_peer(slot, tx);
        }
        self.events.push_back(match reason {
            Some(reason) => ShardEvent::Failed { id, reason },
            None => ShardEvent::Closed { id },
        });
    }

    fn on_dtls(&mut self, now: Instant, meta: RecvMeta, buf: &[u8], tx: &mut Egress<'_>) {
        let Some(&slot) = self.routes.by_addr.get(&meta.src) else {
            return self.stats.count_drop(MediaDrop::UnknownSource);
        };
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        peer.transport.dtls.handle_packet(now, buf);
        let next = peer.transport.next_deadline();
        self.lower_deadline(next);
        self.after_dtls(slot, meta.src, tx);
    }

    /// Sends what the DTLS endpoint wrote and acts on how the handshake ended.
    fn after_dtls(&mut self, slot: u32, fallback: SocketAddr, tx: &mut Egress<'_>) {
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let id = peer.id;
        match peer.transport.drain_dtls(fallback, tx) {
            None => {}
            Some(DtlsOutcome::Connected) => {
                stat!(self.stats, dtls_handshakes);
                self.events.push_back(ShardEvent::Connected { id });
                self.request_keyframes_for(slot, tx);
            }
            Some(DtlsOutcome::Failed(reason)) => {
                stat!(self.stats, dtls_failures);
                self.fail_peer(slot, Some(reason), tx);
            }
            Some(DtlsOutcome::Closed) => self.fail_peer(slot, None, tx),
        }
    }

    // ------------------------------------------------------------------ timers

    /// Every owner's timers that are due; then the next run at the earliest deadline (at least
    /// one `tick` away, at most a second: consent and feedback deadlines are seconds apart).
    fn on_tick(&mut self, now: Instant, tx: &mut Egress<'_>) {
        let mut next = now + Duration::from_secs(1);
        for slot in 0..self.peers.len() as u32 {
            let Some(peer) = self.peers[slot as usize].as_mut() else { continue };
            if peer.transport.failed {
                continue;
            }
            if peer.transport.ice.poll_timeout().is_some_and(|t| t <= now) {
                peer.transport.ice.handle_timeout(now);
            }
            // Consent expiry fails the peer here (a subscriber leg is removed).
            self.after_ice(slot, tx);
            let Some(peer) = self.peers[slot as usize].as_mut().filter(|p| !p.transport.failed)
            else {
                continue;
            };
            if peer.transport.dtls.poll_timeout().is_some_and(|t| t <= now) {
                peer.transport.dtls.handle_timeout(now);
                if let Some(f) = peer.transport.last_source() {
                    self.after_dtls(slot, f, tx);
                }
            }
            let MediaCore { peers, stats, scratch_seqs, settings, .. } = self;
            let Some(Some(peer)) = peers.get_mut(slot as usize) else { continue };
            if let Role::Publisher(p) = &mut peer.role {
                p.send_nacks(&mut peer.transport, now, scratch_seqs, tx, stats);
                p.send_feedback(&mut peer.transport, now, settings, tx, stats);
                next = next.min(p.next_deadline(now));
            }
            if let Some(t) = peer.transport.next_deadline() {
                next = next.min(t);
            }
        }
        if self.mesh_tick() {
            next = now;
        }
        // Running recorders: their keyframe requests are drained every tick.
        if self.recorder_tick(tx) {
            next = next.min(now + self.settings.tick);
        }
        self.next_tick = next.max(now + self.settings.tick);
    }
}

/// The shard entry points with the egress the caller built ([`super::shard::MediaShard`] adds
/// its TURN relay; the [`ShardCore`] impl below has none).
impl MediaCore {
    pub(crate) fn on_datagram(
        &mut self,
        now: Instant,
        meta: RecvMeta,
        buf: &mut [u8],
        tx: &mut Egress<'_>,
    ) {
        match demux(buf) {
            Ok(Datagram::Stun(_)) => self.on_stun(now, meta, buf, tx),
            Ok(Datagram::Dtls(_)) => self.on_dtls(now, meta, buf, tx),
            Ok(Datagram::Rtp(_)) => self.on_rtp(now, meta, buf, tx),
            Ok(Datagram::Rtcp(_)) => self.on_rtcp(now, meta, buf, tx),
            Ok(Datagram::ChannelData(_)) | Err(_) => self.stats.count_drop(MediaDrop::Unclassified),
        }
    }

    pub(crate) fn on_command(&mut self, now: Instant, cmd: ShardCommand, tx: &mut Egress<'_>) {
        match cmd {
            ShardCommand::AddPublisher { id, ice, remote_fingerprint, tracks } => {
                self.add_publisher(now, id, ice, remote_fingerprint, tracks)
            }
            ShardCommand::AddSubscriber {
                id,
                publisher,
                ice,
                remote_fingerprint,
                dtls_role,
                tracks,
                origin,
            } => self.add_subscriber(
                now,
                id,
                publisher,
                ice,
                remote_fingerprint,
                dtls_role,
                tracks,
                origin,
            ),
            ShardCommand::RestartPublisher {
                id,
                ice,
                remote_fingerprint,
                same_connection,
                tracks,
            } => self.restart(
                now,
                id,
                ice,
                remote_fingerprint,
                same_connection,
                Some(tracks),
                "publisher not found",
            ),
            ShardCommand::RestartSubscriber { id, ice, remote_fingerprint } => {
                self.restart(now, id, ice, remote_fingerprint, true, None, "subscriber not found")
            }
            ShardCommand::RemovePeer { id } => {
                if let Some(&slot) = self.by_id.get(&id) {
                    self.remove_peer(slot, tx);
                }
            }
            ShardCommand::AttachRecorder { publisher, recorder, feed } => {
                self.attach_recorder(publisher, recorder, feed, tx)
            }
            ShardCommand::DetachRecorder { recorder } => self.detach_recorder(recorder),
            ShardCommand::AddIngest { id, tracks, feed } => self.add_ingest(now, id, tracks, feed),
        }
        // New or renegotiated owners bring deadlines of their own (a producer's first report,
        // a mirror's attach request): the timer looks at them within a tick.
        self.next_tick = self.next_tick.min(now + self.settings.tick);
        self.update_gauges();
    }

    pub(crate) fn on_timeout(&mut self, now: Instant, tx: &mut Egress<'_>) {
        self.on_tick(now, tx);
        self.update_gauges();
    }
}

impl ShardCore for MediaCore {
    type Command = ShardCommand;
    type Event = ShardEvent;

    fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        self.on_datagram(now, meta, buf, &mut Egress::direct(tx, now))
    }

    fn handle_command(&mut self, now: Instant, cmd: ShardCommand, tx: &mut TxQueue) {
        self.on_command(now, cmd, &mut Egress::direct(tx, now))
    }

    fn handle_timeout(&mut self, now: Instant, tx: &mut TxQueue) {
        self.on_timeout(now, &mut Egress::direct(tx, now))
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.by_id.is_empty() || !self.mirrors.is_empty()).then_some(self.next_tick)
    }

    fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    fn has_mesh_input(&self) -> bool {
        MediaCore::has_mesh_input(self)
    }

    fn handle_mesh(&mut self, now: Instant, tx: &mut TxQueue) -> bool {
        self.drain_mesh(now, &mut Egress::direct(tx, now))
    }

    fn flush_mesh(&mut self) {
        MediaCore::flush_mesh(self)
    }
}
