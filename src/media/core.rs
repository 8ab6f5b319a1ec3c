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
//! Vanished peers: a transport whose consent expires (RFC 7675: nothing authenticated from the
//! browser for 30 s, e.g. killed with -9) is removed with what it carries: a subscriber leg
//! (`ShardEvent::Failed`), or a publisher with its tracks (`ShardEvent::Vanished`: the control
//! plane unpublishes the stream). A publisher whose DTLS failed or closed (openvidu-browser
//! closes its old peer connection just before `reconnectStream`) keeps its tracks for
//! [`PUBLISHER_GRACE`]; without a restart by then it vanishes too.
//!
//! Nothing on the packet path allocates: the maps are looked up with borrowed keys, the peer
//! tables and rings are sized when peers are added.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::allocate::ConsumerBoard;
use super::bwe::{Bitrate, BweConfig, SendSideBwe};
use super::consumer::{Consumer, ConsumerLayers, ConsumerTrack};
use super::egress::{Egress, FROM_HOSTED_RELAY};
use super::mirror::{MESH_BACKLOG, Mirror};
use super::producer::{NACK_CAP, Producer};
use super::stats::{MediaDrop, MediaStats, stat};
use super::transport::{DtlsOutcome, Routes, Transport};
use super::{IceParams, InTrack, Origin, OutTrack, PeerId, ShardCommand, ShardEvent};
use crate::dtls::{DtlsContext, DtlsRole, Fingerprint};
use crate::ice::{CONSENT_TIMEOUT, IceLiteAgent, Reply};
use crate::router::{LegId, Router, RouterConfig, SubscribeParams, TrackId};
use crate::shard::mesh::MeshPort;
use crate::shard::{RecvMeta, ShardCore, TxQueue};
use crate::wire::codec::Codec;
use crate::wire::{Datagram, StunView, demux};

/// How long a publisher whose transport failed or closed keeps its tracks for
/// `reconnectStream` before it is removed ([`ShardEvent::Vanished`]): the consent timeout, so
/// a vanished publisher is freed within it whichever way its transport ended.
pub const PUBLISHER_GRACE: Duration = CONSENT_TIMEOUT;

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
/// One router track of a publisher as a new consumer sees it ([`MediaCore::publisher_sources`]).
pub(super) struct SourceTrack {
    /// The publisher's track (m-line) index.
    pub source: usize,
    pub track: TrackId,
    clock_rate: u32,
    /// Encoding and codec when consumers choose its layers.
    pub layer: Option<(u8, Codec)>,
}

/// The bandwidth estimator of a subscriber transport: it starts at 800 kbit/s (a simulcast
/// consumer starts on the lowest encoding and climbs as feedback and probes allow) and keeps
/// 512 packets of send history (half a second of a 10 Mbit/s leg, several feedback
/// intervals; 24 KiB).
fn subscriber_bwe() -> BweConfig {
    BweConfig {
        start: Bitrate::kbps(800),
        min: Bitrate::kbps(50),
        max: Bitrate::kbps(20_000),
        history: 512,
        rtx_share: 0.25,
    }
}

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
    pub(super) dtls: DtlsContext,
    pub(super) router: Router,
    pub(super) peers: Vec<Option<Peer>>,
    free: Vec<u32>,
    pub(super) by_id: HashMap<PeerId, u32>,
    pub(super) routes: Routes,
    pub(super) events: VecDeque<ShardEvent>,
    pub(super) stats: Arc<MediaStats>,
    pub(super) epoch: Instant,
    /// When [`MediaCore::on_tick`] runs next: the earliest deadline of any transport,
    /// producer or mirror (lowered as they change between runs).
    next_tick: Instant,
    pub(super) scratch_seqs: Vec<u16>,
    /// A subscriber's NACKed packets that never reached the ring here: (the publisher's
    /// router track, its sequence number), asked of the publisher again (`flow.rs`).
    pub(super) scratch_renacks: Vec<(TrackId, u16)>,
    /// This shard's end of the shard mesh (`None`: a single shard, or a core in a unit test).
    pub(super) mesh: Option<MeshPort>,
    pub(super) mirrors: HashMap<PeerId, Mirror>,
    /// Control messages for the mesh (to, kind, index, key, byte) waiting for room.
    pub(super) mesh_backlog: VecDeque<(usize, u8, u8, u64, u8)>,
    /// Recorder consumers ([`super::recorder`]).
    pub(super) recorders: Vec<super::recorder::Tap>,
    /// Consumers as `/metrics` shows them, published once a second.
    pub(super) board: Arc<ConsumerBoard>,
    /// AV1 Dependency Descriptor structures per router track ([`super::layers::DdStructures`]).
    pub(super) dd_structures: super::layers::DdStructures,
    next_publish: Instant,
    /// Relayed addresses of this shard's TURN server that vanished transports were reached
    /// through: their allocations can go ([`MediaCore::take_released_relay`]).
    released_relays: Vec<SocketAddr>,
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
            routes: Routes::new(),
            events: VecDeque::new(),
            stats,
            epoch: now,
            next_tick: now,
            scratch_seqs: Vec::with_capacity(NACK_CAP),
            scratch_renacks: Vec::with_capacity(NACK_CAP),
            mesh: None,
            mirrors: HashMap::new(),
            mesh_backlog: VecDeque::with_capacity(MESH_BACKLOG),
            recorders: Vec::new(),
            board: Arc::default(),
            dd_structures: Default::default(),
            next_publish: now,
            released_relays: Vec::new(),
            ingests: Default::default(),
        }
    }

    /// Publishes the consumers' rows (estimate, layers, retransmission budget) on `board`.
    pub fn with_board(mut self, board: Arc<ConsumerBoard>) -> MediaCore {
        self.board = board;
        self
    }

    /// Connects the core to the shard mesh (its shard's port), so subscribers here can
    /// receive publishers of other shards and the other way round.
    pub fn with_mesh(mut self, port: MeshPort) -> MediaCore {
        self.mesh = Some(port);
        self
    }

    /// Peer `slot` vanished (consent expired, or no restart within the grace): the relayed
    /// addresses of this shard's TURN server its checks came through lately (within the
    /// consent timeout and a margin: an allocation the browser ended itself long ago may have
    /// been handed to another client since) are released with it.
    fn release_hosted(&mut self, slot: u32, now: Instant) {
        let Some(Some(peer)) = self.peers.get_mut(slot as usize) else { return };
        let recent = CONSENT_TIMEOUT + Duration::from_secs(5);
        for (relay, seen) in peer.transport.hosted.drain(..) {
            if now.saturating_duration_since(seen) <= recent {
                self.released_relays.push(relay);
            }
        }
    }

    /// A relayed address (of the hosting shard's TURN server) a vanished transport was reached
    /// through; the shard frees its allocation (`super::shard`).
    pub(crate) fn take_released_relay(&mut self) -> Option<SocketAddr> {
        self.released_relays.pop()
    }

    /// Number of peers (publishers and subscribers).
    pub fn peer_count(&self) -> usize {
        self.by_id.len()
    }

    pub(super) fn update_gauges(&self) {
        let (mut p, mut s, mut r) = (0, 0, 0);
        for peer in self.peers.iter().flatten() {
            match peer.role {
                _ if peer.transport.relay.is_some() => r += 1,
                Role::Publisher(_) => p += 1,
                Role::Subscriber(_) => s += 1,
            }
        }
        self.stats.set_peers(p, s);
        super::stats::set(&self.stats.relay_legs, r);
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
        let role = Role::Subscriber(Consumer::new(id, Vec::new()));
        let slot = self.place_peer(Peer { id, transport, role });
        self.routes.by_ufrag.insert(ice.local_ufrag.as_str().into(), slot);
        Some(slot)
    }

    /// `peer` in a free slot, known by its id (the caller checked the id is free).
    pub(super) fn place_peer(&mut self, peer: Peer) -> u32 {
        let id = peer.id;
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
        slot
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
        let local = self.publisher_sources(publisher);
        let remote = origin.filter(|o| local.is_none() && here.is_some_and(|h| h != o.shard));
        let available = local
            .as_ref()
            .map(|s| s.iter().map(|t| t.source + 1).max().unwrap_or(0))
            .or_else(|| remote.as_ref().map(|o| o.tracks.len()));
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
        let Some(sources) = (if mirrored { self.publisher_sources(publisher) } else { local })
        else {
            return;
        };
        let mut out = Vec::with_capacity(tracks.len());
        for cfg in tracks {
            let of_source: Vec<&SourceTrack> =
                sources.iter().filter(|s| s.source == cfg.source).collect();
            let Some(first) = of_source.first() else { continue };
            let (track, clock_rate) = (first.track, first.clock_rate);
            let initial_seq: u16 = rand::random();
            let params = SubscribeParams {
                out_ssrc: cfg.ssrc,
                pt: cfg.pt,
                rtx: cfg.rtx,
                initial_seq,
                initial_ts: rand::random(),
            };
            // Every encoding's router track feeds the leg; a consumer choosing layers decides
            // which packets go out.
            for s in &of_source {
                // The leg is new, so it cannot be subscribed already; the track was just
                // looked up.
                let _ = self.router.subscribe(s.track, LegId(slot), params);
            }
            let layers = first.layer.map(|(_, codec)| {
                let tracks = of_source.iter().map(|s| s.track).collect();
                Box::new(ConsumerLayers::new(codec, tracks, cfg.ssrc, clock_rate, initial_seq))
            });
            out.push(ConsumerTrack { track, cfg, packets: 0, octets: 0, layers });
        }
        if let Some(peer) = self.peers[slot as usize].as_mut() {
            peer.transport.bwe = Some(Box::new(SendSideBwe::new(subscriber_bwe())));
            peer.role = Role::Subscriber(Consumer::new(publisher, out));
        }
    }

    /// The router tracks of `publisher` on this shard (its producer's, or its mirror's), one
    /// per track and encoding, in the producer's order.
    pub(super) fn publisher_sources(&mut self, publisher: PeerId) -> Option<Vec<SourceTrack>> {
        if let Some(p) = self.producer_mut(publisher) {
            let v = p
                .tracks
                .iter()
                .map(|t| SourceTrack {
                    source: t.source,
                    track: t.track,
                    clock_rate: t.cfg.clock_rate,
                    layer: t.cfg.layered().then_some((t.encoding, t.cfg.codec)),
                })
                .collect();
            return Some(v);
        }
        let m = self.mirrors.get(&publisher)?;
        Some(
            m.tracks
                .iter()
                .map(|t| SourceTrack {
                    source: t.source,
                    track: t.track,
                    clock_rate: self.router.track(t.track).map_or(90_000, |r| r.clock_rate),
                    layer: t.layer,
                })
                .collect(),
        )
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
        if self
            .peers
            .get(slot as usize)
            .and_then(Option::as_ref)
            .is_some_and(|p| p.transport.relay.is_some())
        {
            self.events.push_back(ShardEvent::Rejected { id, reason: "a relay leg has no ICE" });
            return None;
        }
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
                    self.dd_structures.forget(t.track);
                    for leg in self.router.remove_track(t.track) {
                        if let Some(Some(Peer { role: Role::Subscriber(c), .. })) =
                            self.peers.get_mut(leg.0 as usize)
                        {
                            c.tracks.retain(|o| !o.receives(t.track));
                        }
                    }
                }
            }
            Role::Subscriber(c) => {
                for o in c.tracks {
                    let _ = self.router.unsubscribe(o.track, LegId(slot));
                    for &t in o.layers.iter().flat_map(|l| &l.tracks).filter(|&&t| t != o.track) {
                        let _ = self.router.unsubscribe(t, LegId(slot));
                    }
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
                peer.transport.remember_source(now, meta.src, hosted, slot, &mut self.routes);
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
        self.after_ice(now, slot, tx);
    }

    /// Acts on the ICE agent's events; a peer whose consent expired fails.
    fn after_ice(&mut self, now: Instant, slot: u32, tx: &mut Egress<'_>) {
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let ice = peer.transport.poll_ice();
        if let Some(remote) = ice.start_client {
            // The ClientHello has waited in the endpoint for a path: send it now.
            self.after_dtls(now, slot, remote, tx);
        }
        if ice.consent_expired {
            stat!(self.stats, ice_consent_expired);
            self.fail_peer(now, slot, Some("ICE consent expired"), true, tx);
        }
    }

    /// A peer's transport failed (`reason`), or the browser closed it (`None`). A subscriber
    /// leg is removed. A publisher whose consent expired is removed with its tracks
    /// ([`ShardEvent::Vanished`]); after another failure it keeps its tracks and their
    /// subscribers for [`PUBLISHER_GRACE`], so `reconnectStream`
    /// ([`ShardCommand::RestartPublisher`]) can put a new transport behind them; until then it
    /// has no address, keys or credentials.
    fn fail_peer(
        &mut self,
        now: Instant,
        slot: u32,
        reason: Option<&'static str>,
        consent_expired: bool,
        tx: &mut Egress<'_>,
    ) {
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let id = peer.id;
        if matches!(peer.role, Role::Publisher(_)) {
            if consent_expired {
                self.release_hosted(slot, now);
                self.remove_peer(slot, tx);
                self.events
                    .push_back(ShardEvent::Vanished { id, reason: reason.unwrap_or("gone") });
                return;
            }
            peer.transport.unroute(slot, &mut self.routes);
            peer.transport.failed.get_or_insert(now);
            self.lower_deadline(Some(now + PUBLISHER_GRACE));
        } else {
            if consent_expired {
                self.release_hosted(slot, now);
            }
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
        self.after_dtls(now, slot, meta.src, tx);
    }

    /// Sends what the DTLS endpoint wrote and acts on how the handshake ended.
    fn after_dtls(&mut self, now: Instant, slot: u32, fallback: SocketAddr, tx: &mut Egress<'_>) {
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
                self.fail_peer(now, slot, Some(reason), false, tx);
            }
            Some(DtlsOutcome::Closed) => self.fail_peer(now, slot, None, false, tx),
        }
    }

    // ------------------------------------------------------------------ timers

    /// Every owner's timers that are due; then the next run at the earliest deadline (at least
    /// one `tick` away, at most a second: consent and feedback deadlines are seconds apart).
    fn on_tick(&mut self, now: Instant, tx: &mut Egress<'_>) {
        let mut next = now + Duration::from_secs(1);
        for slot in 0..self.peers.len() as u32 {
            let Some(peer) = self.peers[slot as usize].as_mut() else { continue };
            if peer.transport.placeholder {
                continue;
            }
            if let Some(since) = peer.transport.failed {
                // A failed publisher waits for reconnectStream, at most PUBLISHER_GRACE.
                let until = since + PUBLISHER_GRACE;
                if until <= now {
                    let id = peer.id;
                    // Its browser closed that connection itself (its allocations with it).
                    self.remove_peer(slot, tx);
                    let reason = "transport not reconnected";
                    self.events.push_back(ShardEvent::Vanished { id, reason });
                } else {
                    next = next.min(until);
                }
                continue;
            }
            if peer.transport.relay.is_some() {
                // A relay leg has no ICE or DTLS: it ends when the other node falls silent.
                let (id, publisher) = (peer.id, matches!(peer.role, Role::Publisher(_)));
                match self.relay_deadline(slot, now) {
                    Some(at) => next = next.min(at),
                    None => {
                        self.remove_peer(slot, tx);
                        let reason = "relay silent";
                        self.events.push_back(if publisher {
                            ShardEvent::Vanished { id, reason }
                        } else {
                            ShardEvent::Failed { id, reason }
                        });
                        continue;
                    }
                }
            } else {
                if peer.transport.ice.poll_timeout().is_some_and(|t| t <= now) {
                    peer.transport.ice.handle_timeout(now);
                }
                // Consent expiry fails the peer here (a subscriber leg is removed, a
                // publisher vanishes).
                self.after_ice(now, slot, tx);
                let Some(peer) =
                    self.peers[slot as usize].as_mut().filter(|p| p.transport.failed.is_none())
                else {
                    continue;
                };
                if peer.transport.dtls.poll_timeout().is_some_and(|t| t <= now) {
                    peer.transport.dtls.handle_timeout(now);
                    if let Some(f) = peer.transport.last_source() {
                        self.after_dtls(now, slot, f, tx);
                    }
                }
            }
            self.allocate(slot, now, tx);
            let MediaCore { peers, stats, scratch_seqs, settings, .. } = self;
            let Some(Some(peer)) = peers.get_mut(slot as usize) else { continue };
            match &mut peer.role {
                Role::Publisher(p) => {
                    p.send_nacks(&mut peer.transport, now, scratch_seqs, tx, stats);
                    p.send_feedback(&mut peer.transport, now, settings, tx, stats);
                    next = next.min(p.next_deadline(now));
                }
                Role::Subscriber(c) => {
                    // A climb pads every timer run (the tick paces it).
                    if c.climb.is_some() {
                        next = now;
                    }
                    let bwe = peer.transport.bwe.as_deref().and_then(|b| b.poll_timeout());
                    for d in [c.next_allocation, bwe].into_iter().flatten() {
                        next = next.min(d);
                    }
                }
            }
            if let Some(t) = peer.transport.next_deadline() {
                next = next.min(t);
            }
        }
        if now >= self.next_publish {
            self.next_publish = now + Duration::from_secs(1);
            self.publish_consumers();
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
            // For the hosted TURN server (`super::shard`).
            ShardCommand::EndTurnUser { .. } => {}
            ShardCommand::AddIngest { id, tracks, feed } => self.add_ingest(now, id, tracks, feed),
            ShardCommand::AddRelayOut { id, publisher, remote, plan, origin } => {
                self.add_relay_out(now, id, publisher, remote, &plan, origin, tx)
            }
            ShardCommand::AddRelayIn { id, remote, offer } => {
                self.add_relay_in(now, id, remote, &offer)
            }
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
