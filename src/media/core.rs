//! [`MediaCore`]: the media [`ShardCore`] — ICE-lite, DTLS-SRTP and forwarding for the peers
//! of the sessions pinned to one shard.
//!
//! Per datagram (first byte, RFC 7983):
//! - **STUN**: the USERNAME's local ufrag names the peer; its [`IceLiteAgent`] checks and
//!   answers. An authenticated check registers the source address for that peer: only such
//!   addresses get past the next steps.
//! - **DTLS**: into the peer's [`DtlsEndpoint`]; when the handshake completes, the exported keys
//!   become the peer's two SRTP contexts.
//! - **RTP** from a publisher: unprotected once in the receive buffer, RTX unwrapped in place,
//!   then for every subscriber of the track the header is written afresh (rewritten SSRC,
//!   sequence number, timestamp, payload type; the subscriber's extension ids) straight into a
//!   send slot and the payload is encrypted from the receive buffer into that slot (one copy,
//!   fused with encryption).
//! - **RTCP**: from a subscriber, NACKs are answered from the track's retransmission ring and
//!   PLI/FIR go to the publisher through the keyframe limiter; from a publisher, sender reports
//!   feed reception statistics and are translated for each subscriber.
//!
//! On the shard's timer tick: ICE consent and DTLS retransmissions, then for publishers the
//! NACKs of missing packets, transport-wide congestion feedback (every `twcc_interval`) and a
//! receiver report plus REMB (every `rtcp_interval`).
//!
//! Nothing on the packet path allocates: the maps are looked up with borrowed keys, the peer
//! tables and rings are sized when peers are added.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::feedback::{NackTracker, ReceiveStats, TwccRecorder};
use super::stats::{MediaDrop, MediaStats, stat};
use super::{InTrack, Origin, OutTrack, PeerId, ShardCommand, ShardEvent};
use crate::dtls::{DtlsContext, DtlsEndpoint, DtlsEvent, DtlsRole, DtlsState};
use crate::ice::{IceEvent, IceLiteAgent, Reply};
use crate::router::{LegId, Router, RouterConfig, RtpFields, SubscribeParams, TrackId};
use crate::sdp::{ExtIds, MediaKind};
use crate::shard::mesh::{MeshMsg, MeshPort};
use crate::shard::{RecvMeta, ShardCore, TX_SLOT_SIZE, TxQueue};
use crate::srtp::SrtpContext;
use crate::wire::rtcp::{RtcpCompound, RtcpPacket, nack, pli, remb, rr, sr, twcc};
use crate::wire::rtp::RtpView;
use crate::wire::{Datagram, RtpRewriter, StunView, demux};

/// Tunables of a media core.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    /// Estimated bitrate announced to publishers in REMB (bits/s); 0 = no REMB.
    pub remb_bitrate: u64,
    /// Receiver reports (and REMB) to publishers.
    pub rtcp_interval: Duration,
    /// Transport-wide congestion feedback to publishers.
    pub twcc_interval: Duration,
    /// Timer granularity while peers exist.
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

/// Source addresses remembered per peer (one per candidate pair the browser checked).
const MAX_ADDRS: usize = 8;
/// Missing publisher packets tracked per track for NACKs.
const NACK_CAP: usize = 128;

struct InState {
    cfg: InTrack,
    track: TrackId,
    ssrc: Option<u32>,
    rtx_ssrc: Option<u32>,
    stats: ReceiveStats,
    nack: NackTracker,
}

struct OutState {
    cfg: OutTrack,
    track: TrackId,
    packets: u32,
    octets: u32,
}

enum Role {
    Publisher {
        tracks: Vec<InState>,
        twcc: Option<(u8, TwccRecorder)>,
        /// Shards that mirror this publisher for consumers of their own: each packet is
        /// copied once per shard here into the mesh.
        mirrored_to: Vec<usize>,
    },
    Subscriber {
        publisher: PeerId,
        tracks: Vec<OutState>,
    },
}

/// A publisher of another shard, mirrored on this one for its consumers here: router tracks of
/// its own (retransmission ring, keyframe limiter, the consumers' rewriters) fed from the mesh.
struct Mirror {
    origin: usize,
    tracks: Vec<MirrorTrack>,
    /// Subscriber peers of this shard receiving it; the mirror goes with the last.
    consumers: usize,
    /// The origin acknowledged (or packets arrived): no more attach requests.
    attached: bool,
}

struct MirrorTrack {
    track: TrackId,
    /// The publisher's extension ids (the packets in the ring carry them).
    ext: ExtIds,
}

/// What a mesh message is ([`MeshMsg::kind`]); `key` is always the publisher's peer id.
mod msg {
    /// Origin → mirror: a plaintext publisher packet of track `index`.
    pub const RTP: u8 = 1;
    /// Origin → mirror: a sender report of track `index` (24 bytes, see `encode_sr`).
    pub const SR: u8 = 2;
    /// Mirror → origin: copy the publisher's packets to me (repeated until acknowledged).
    pub const ATTACH: u8 = 3;
    /// Origin → mirror: attached.
    pub const ATTACHED: u8 = 4;
    /// Mirror → origin: my last consumer left, stop.
    pub const DETACH: u8 = 5;
    /// Mirror → origin: a keyframe of track `index`; one byte 1 = at once (a new consumer),
    /// 0 = through the origin's keyframe limiter.
    pub const KEYFRAME: u8 = 6;
}

/// Mesh messages queued because the ring was full (control messages only: packets are
/// dropped and counted instead); retried every turn and tick.
const MESH_BACKLOG: usize = 256;

struct Peer {
    id: PeerId,
    ice: IceLiteAgent,
    dtls: DtlsEndpoint,
    /// `Client` only for a subscriber that answered a server offer with `a=setup:passive`:
    /// its ClientHello goes out once ICE selected a pair.
    dtls_role: DtlsRole,
    srtp_out: Option<SrtpContext>,
    srtp_in: Option<SrtpContext>,
    /// The nominated remote address and the local address it was nominated on.
    remote: Option<SocketAddr>,
    local_ip: Option<IpAddr>,
    /// Every address an authenticated check came from (keys of `by_addr`).
    addrs: Vec<SocketAddr>,
    ufrag: Box<str>,
    /// Sender SSRC of the RTCP we originate towards this peer.
    rtcp_ssrc: u32,
    /// Transport-wide sequence number of the next packet to a subscriber.
    twcc_seq: u16,
    next_report: Instant,
    next_twcc: Instant,
    /// A publisher whose transport failed, waiting for `reconnectStream` (no timers run).
    failed: bool,
    role: Role,
}

impl Peer {
    /// Forgets the transport (keys, nominated pair) and removes the routes — source addresses
    /// and ufrag — that still lead to `slot`.
    fn unroute(
        &mut self,
        slot: u32,
        by_addr: &mut HashMap<SocketAddr, u32>,
        by_ufrag: &mut HashMap<Box<str>, u32>,
    ) {
        for a in self.addrs.drain(..) {
            if by_addr.get(&a) == Some(&slot) {
                by_addr.remove(&a);
            }
        }
        if by_ufrag.get(&self.ufrag) == Some(&slot) {
            by_ufrag.remove(&self.ufrag);
        }
        self.srtp_in = None;
        self.srtp_out = None;
        self.remote = None;
        self.local_ip = None;
    }

    /// The publisher a subscriber receives from.
    fn publisher(&self) -> Option<PeerId> {
        match self.role {
            Role::Subscriber { publisher, .. } => Some(publisher),
            Role::Publisher { .. } => None,
        }
    }
}

/// The media core of one shard. See the module docs.
pub struct MediaCore {
    local: SocketAddr,
    settings: CoreSettings,
    dtls: DtlsContext,
    router: Router,
    peers: Vec<Option<Peer>>,
    free: Vec<u32>,
    by_id: HashMap<PeerId, u32>,
    by_ufrag: HashMap<Box<str>, u32>,
    by_addr: HashMap<SocketAddr, u32>,
    events: VecDeque<ShardEvent>,
    stats: Arc<MediaStats>,
    epoch: Instant,
    next_tick: Instant,
    scratch_seqs: Vec<u16>,
    /// This shard's end of the shard mesh (`None`: a single shard, or a core in a unit test).
    mesh: Option<MeshPort>,
    mirrors: HashMap<PeerId, Mirror>,
    /// Control messages for the mesh (to, kind, index, key, byte) waiting for room.
    mesh_backlog: VecDeque<(usize, u8, u8, u64, u8)>,
}

/// What a datagram is, without borrowing it.
#[derive(Clone, Copy)]
enum Class {
    Stun,
    Dtls,
    Rtp,
    Rtcp,
    Other,
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
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            events: VecDeque::new(),
            stats,
            epoch: now,
            next_tick: now,
            scratch_seqs: Vec::with_capacity(NACK_CAP),
            mesh: None,
            mirrors: HashMap::new(),
            mesh_backlog: VecDeque::with_capacity(MESH_BACKLOG),
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

    fn peer_mut(&mut self, slot: u32) -> Option<&mut Peer> {
        self.peers.get_mut(slot as usize)?.as_mut()
    }

    fn update_gauges(&self) {
        let (mut p, mut s) = (0, 0);
        for peer in self.peers.iter().flatten() {
            match peer.role {
                Role::Publisher { .. } => p += 1,
                Role::Subscriber { .. } => s += 1,
            }
        }
        self.stats.set_peers(p, s);
        super::stats::set(&self.stats.mirrors, self.mirrors.len() as u64);
    }

    // ------------------------------------------------------------------ commands

    fn insert_peer(&mut self, peer: Peer) -> u32 {
        let id = peer.id;
        let ufrag = peer.ufrag.clone();
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
        self.by_ufrag.insert(ufrag, slot);
        slot
    }

    fn new_peer(
        &self,
        now: Instant,
        id: PeerId,
        ice: &super::IceParams,
        fp: crate::dtls::Fingerprint,
        dtls_role: DtlsRole,
        role: Role,
    ) -> Peer {
        Peer {
            id,
            ice: IceLiteAgent::new(&ice.local_ufrag, &ice.local_pwd, &ice.remote_ufrag),
            dtls: DtlsEndpoint::new(&self.dtls, dtls_role, now, fp),
            dtls_role,
            srtp_out: None,
            srtp_in: None,
            remote: None,
            local_ip: None,
            addrs: Vec::with_capacity(MAX_ADDRS),
            ufrag: ice.local_ufrag.as_str().into(),
            rtcp_ssrc: rand::random::<u32>() | 1,
            twcc_seq: rand::random(),
            next_report: now + self.settings.rtcp_interval / 2,
            next_twcc: now + self.settings.twcc_interval,
            failed: false,
            role,
        }
    }

    fn in_states(&mut self, tracks: Vec<InTrack>) -> (Vec<InState>, Option<(u8, TwccRecorder)>) {
        let twcc = tracks
            .iter()
            .find(|t| t.transport_cc && t.ext.twcc != 0)
            .map(|t| (t.ext.twcc, TwccRecorder::default()));
        let states = tracks
            .into_iter()
            .map(|cfg| InState {
                track: self.router.add_track(
                    cfg.clock_rate,
                    cfg.ssrc.unwrap_or(0),
                    cfg.kind == MediaKind::Video,
                ),
                ssrc: cfg.ssrc,
                rtx_ssrc: cfg.rtx_ssrc,
                stats: ReceiveStats::new(cfg.clock_rate),
                nack: NackTracker::new(NACK_CAP),
                cfg,
            })
            .collect();
        (states, twcc)
    }

    fn add_publisher(
        &mut self,
        now: Instant,
        id: PeerId,
        ice: super::IceParams,
        fp: crate::dtls::Fingerprint,
        tracks: Vec<InTrack>,
    ) {
        if self.by_id.contains_key(&id) || self.by_ufrag.contains_key(ice.local_ufrag.as_str()) {
            self.events.push_back(ShardEvent::Rejected { id, reason: "duplicate peer" });
            return;
        }
        let (tracks, twcc) = self.in_states(tracks);
        let role = Role::Publisher { tracks, twcc, mirrored_to: Vec::new() };
        let peer = self.new_peer(now, id, &ice, fp, DtlsRole::Server, role);
        self.insert_peer(peer);
    }

    #[allow(clippy::too_many_arguments)]
    fn add_subscriber(
        &mut self,
        now: Instant,
        id: PeerId,
        publisher: PeerId,
        ice: super::IceParams,
        fp: crate::dtls::Fingerprint,
        dtls_role: DtlsRole,
        tracks: Vec<OutTrack>,
        origin: Option<Origin>,
    ) {
        if self.by_id.contains_key(&id) || self.by_ufrag.contains_key(ice.local_ufrag.as_str()) {
            self.events.push_back(ShardEvent::Rejected { id, reason: "duplicate peer" });
            return;
        }
        let local: Option<Vec<TrackId>> = self
            .by_id
            .get(&publisher)
            .and_then(|&s| self.peers[s as usize].as_ref())
            .and_then(|p| match &p.role {
                Role::Publisher { tracks, .. } => Some(tracks.iter().map(|t| t.track).collect()),
                Role::Subscriber { .. } => None,
            });
        // A publisher of this shard, or one of another shard already mirrored here.
        let existing = local.or_else(|| {
            self.mirrors.get(&publisher).map(|m| m.tracks.iter().map(|t| t.track).collect())
        });
        // Otherwise one of another shard, to be mirrored here with this first consumer.
        let here = self.mesh.as_ref().map(MeshPort::index);
        let remote = if existing.is_none() {
            origin.filter(|o| here.is_some_and(|h| h != o.shard))
        } else {
            None
        };
        let available =
            existing.as_ref().map(Vec::len).or_else(|| remote.as_ref().map(|o| o.tracks.len()));
        let Some(available) = available else {
            self.events.push_back(ShardEvent::Rejected { id, reason: "publisher not found" });
            return;
        };
        if tracks.iter().any(|cfg| cfg.source >= available) {
            self.events.push_back(ShardEvent::Rejected { id, reason: "no such track" });
            return;
        }
        let source_tracks = match (existing, remote) {
            (Some(t), _) => t,
            (None, Some(o)) => self.mirror(publisher, o),
            (None, None) => return,
        };
        if let Some(m) = self.mirrors.get_mut(&publisher) {
            m.consumers += 1;
        }
        let mut outs = Vec::with_capacity(tracks.len());
        for cfg in tracks {
            let track = source_tracks[cfg.source];
            outs.push(OutState { cfg, track, packets: 0, octets: 0 });
        }
        let peer = self.new_peer(
            now,
            id,
            &ice,
            fp,
            dtls_role,
            Role::Subscriber { publisher, tracks: outs },
        );
        let slot = self.insert_peer(peer);
        let Some(Role::Subscriber { tracks, .. }) =
            self.peers[slot as usize].as_ref().map(|p| &p.role)
        else {
            return;
        };
        let subs: Vec<(TrackId, SubscribeParams)> = tracks
            .iter()
            .map(|o| {
                (
                    o.track,
                    SubscribeParams {
                        out_ssrc: o.cfg.ssrc,
                        pt: o.cfg.pt,
                        rtx: o.cfg.rtx,
                        initial_seq: rand::random(),
                        initial_ts: rand::random(),
                    },
                )
            })
            .collect();
        for (track, params) in subs {
            // The leg is new, so it cannot be subscribed already; the track was just looked up.
            let _ = self.router.subscribe(track, LegId(slot), params);
        }
    }

    fn restart_publisher(
        &mut self,
        now: Instant,
        id: PeerId,
        ice: super::IceParams,
        fp: crate::dtls::Fingerprint,
        same_connection: bool,
        tracks: Vec<InTrack>,
    ) {
        let Some(slot) = self.slot_to_restart(id, &ice, "publisher not found") else { return };
        let ice_restart = self.restart_transport(now, slot, &ice, fp, same_connection);
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        if let Role::Publisher { tracks: states, twcc, .. } = &mut peer.role {
            // Same tracks in the same order; the browser may pick new SSRCs (statistics and
            // NACK state start over then, and always with a new transport).
            for (st, cfg) in states.iter_mut().zip(tracks) {
                if !ice_restart || st.ssrc != cfg.ssrc {
                    st.stats = ReceiveStats::new(cfg.clock_rate);
                    st.nack = NackTracker::new(NACK_CAP);
                }
                st.ssrc = cfg.ssrc;
                st.rtx_ssrc = cfg.rtx_ssrc;
                st.cfg = cfg;
            }
            *twcc = states
                .iter()
                .find(|t| t.cfg.transport_cc && t.cfg.ext.twcc != 0)
                .map(|t| (t.cfg.ext.twcc, TwccRecorder::default()));
        }
        self.by_ufrag.insert(ice.local_ufrag.into(), slot);
    }

    /// New ICE credentials for the peer in `slot`; true when that was an ICE restart. From the
    /// same peer connection (`same_connection`: same certificate and SDP session) whose DTLS
    /// association is up or under way, it is a renegotiation of that connection (RFC 8445
    /// §2.4, `restartIce()`): the DTLS endpoint, the keys, the SRTP contexts and the nominated
    /// pair stay, and media keeps flowing on that pair until the browser nominates one with
    /// the new credentials. Otherwise a new transport (openvidu-browser reconnects with a new
    /// peer connection, which also handshakes anew): new ICE agent and DTLS endpoint. The
    /// caller maps the new ufrag to `slot`.
    fn restart_transport(
        &mut self,
        now: Instant,
        slot: u32,
        ice: &super::IceParams,
        fp: crate::dtls::Fingerprint,
        same_connection: bool,
    ) -> bool {
        let Some(peer) = self.peers[slot as usize].as_mut() else { return false };
        let alive = matches!(peer.dtls.state(), DtlsState::Connected | DtlsState::Handshaking);
        let ice_restart = same_connection && alive && *peer.dtls.remote_fingerprint() == fp;
        if ice_restart {
            if self.by_ufrag.get(&peer.ufrag) == Some(&slot) {
                self.by_ufrag.remove(&peer.ufrag);
            }
            peer.ice.restart(&ice.local_ufrag, &ice.local_pwd, &ice.remote_ufrag);
            stat!(self.stats, ice_restarts);
        } else {
            peer.unroute(slot, &mut self.by_addr, &mut self.by_ufrag);
            peer.ice = IceLiteAgent::new(&ice.local_ufrag, &ice.local_pwd, &ice.remote_ufrag);
            peer.dtls = match peer.dtls_role {
                DtlsRole::Server => self.dtls.server(now, fp),
                DtlsRole::Client => DtlsEndpoint::new(&self.dtls, DtlsRole::Client, now, fp),
            };
        }
        peer.ufrag = ice.local_ufrag.as_str().into();
        peer.failed = false;
        ice_restart
    }

    /// The slot of peer `id` for a renegotiation with `ice`; `None` (and a `Rejected` event,
    /// `missing` or a ufrag another peer has) when it cannot be.
    fn slot_to_restart(
        &mut self,
        id: PeerId,
        ice: &super::IceParams,
        missing: &'static str,
    ) -> Option<u32> {
        let Some(&slot) = self.by_id.get(&id) else {
            self.events.push_back(ShardEvent::Rejected { id, reason: missing });
            return None;
        };
        if self.by_ufrag.get(ice.local_ufrag.as_str()).is_some_and(|&s| s != slot) {
            self.events.push_back(ShardEvent::Rejected { id, reason: "duplicate ufrag" });
            return None;
        }
        Some(slot)
    }

    /// [`ShardCommand::RestartSubscriber`].
    fn restart_subscriber(
        &mut self,
        now: Instant,
        id: PeerId,
        ice: super::IceParams,
        fp: crate::dtls::Fingerprint,
    ) {
        let Some(slot) = self.slot_to_restart(id, &ice, "subscriber not found") else { return };
        self.restart_transport(now, slot, &ice, fp, true);
        self.by_ufrag.insert(ice.local_ufrag.into(), slot);
    }

    fn remove_peer(&mut self, slot: u32, tx: &mut TxQueue) {
        let Some(mut peer) = self.peers.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        // Tell the browser (close_notify) when it is still there to hear it.
        if let Some(dst) = peer.remote {
            peer.dtls.close();
            drain_dtls_output(&mut peer, dst, tx);
        }
        peer.unroute(slot, &mut self.by_addr, &mut self.by_ufrag);
        self.by_id.remove(&peer.id);
        match peer.role {
            Role::Publisher { tracks, .. } => {
                for t in tracks {
                    for leg in self.router.remove_track(t.track) {
                        if let Some(Some(sub)) = self.peers.get_mut(leg.0 as usize)
                            && let Role::Subscriber { tracks, .. } = &mut sub.role
                        {
                            tracks.retain(|o| o.track != t.track);
                        }
                    }
                }
            }
            Role::Subscriber { tracks, publisher } => {
                for o in tracks {
                    let _ = self.router.unsubscribe(o.track, LegId(slot));
                }
                self.release_mirror(publisher);
            }
        }
        self.free.push(slot);
    }

    // ------------------------------------------------------------------ the shard mesh

    /// Makes the mirror of `publisher` (on shard `origin.shard`) for a first consumer here and
    /// asks the origin for its packets; returns its router tracks.
    fn mirror(&mut self, publisher: PeerId, origin: Origin) -> Vec<TrackId> {
        let tracks: Vec<MirrorTrack> = origin
            .tracks
            .iter()
            .map(|t| MirrorTrack {
                track: self.router.add_track(t.clock_rate, 0, t.kind == MediaKind::Video),
                ext: t.ext,
            })
            .collect();
        let ids = tracks.iter().map(|t| t.track).collect();
        self.mirrors.insert(
            publisher,
            Mirror { origin: origin.shard, tracks, consumers: 0, attached: false },
        );
        self.mesh_control(origin.shard, msg::ATTACH, 0, publisher.0, 0);
        ids
    }

    /// A consumer of `publisher` left this shard: the last one takes its mirror (if it is one)
    /// along and tells the origin to stop.
    fn release_mirror(&mut self, publisher: PeerId) {
        let Some(m) = self.mirrors.get_mut(&publisher) else { return };
        m.consumers = m.consumers.saturating_sub(1);
        if m.consumers > 0 {
            return;
        }
        let Some(m) = self.mirrors.remove(&publisher) else { return };
        for t in &m.tracks {
            self.router.remove_track(t.track);
        }
        self.mesh_control(m.origin, msg::DETACH, 0, publisher.0, 0);
    }

    /// Queues a control message for another shard and tries to send what waits.
    fn mesh_control(&mut self, to: usize, kind: u8, index: u8, key: u64, byte: u8) {
        if self.mesh_backlog.len() < MESH_BACKLOG {
            self.mesh_backlog.push_back((to, kind, index, key, byte));
        } else {
            self.stats.count_drop(MediaDrop::MeshFull);
        }
        self.flush_mesh_backlog();
    }

    fn flush_mesh_backlog(&mut self) {
        // No port while `handle_mesh` has it out: it flushes after putting it back.
        let Some(mesh) = self.mesh.as_mut() else { return };
        while let Some(&(to, kind, index, key, byte)) = self.mesh_backlog.front() {
            if !mesh.push(to, kind, index, key, &[byte]) {
                return;
            }
            stat!(self.stats, mesh_out);
            self.mesh_backlog.pop_front();
        }
    }

    /// One message from shard `from`.
    fn on_mesh(&mut self, now: Instant, from: usize, m: &MeshMsg, tx: &mut TxQueue) {
        stat!(self.stats, mesh_in);
        let publisher = PeerId(m.key);
        match m.kind {
            msg::RTP => {
                let Some(mirror) = self.mirrors.get_mut(&publisher) else { return };
                mirror.attached = true;
                let Some(t) = mirror.tracks.get(usize::from(m.index)) else { return };
                let (track, ext) = (t.track, t.ext);
                let Ok(v) = RtpView::parse(m.bytes()) else {
                    return self.stats.count_drop(MediaDrop::Malformed);
                };
                self.forward(now, track, &v, &ext, tx);
            }
            msg::SR => {
                let Some(t) =
                    self.mirrors.get(&publisher).and_then(|x| x.tracks.get(usize::from(m.index)))
                else {
                    return;
                };
                if let Some(info) = decode_sr(m.bytes()) {
                    self.relay_sr(t.track, &info, tx);
                }
            }
            msg::ATTACHED => {
                if let Some(mirror) = self.mirrors.get_mut(&publisher) {
                    mirror.attached = true;
                }
            }
            msg::ATTACH | msg::DETACH => {
                let Some(&slot) = self.by_id.get(&publisher) else { return };
                let Some(Peer { role: Role::Publisher { mirrored_to, .. }, .. }) =
                    self.peers[slot as usize].as_mut()
                else {
                    return;
                };
                mirrored_to.retain(|&d| d != from);
                if m.kind == msg::ATTACH {
                    mirrored_to.push(from);
                    self.mesh_control(from, msg::ATTACHED, 0, publisher.0, 0);
                }
            }
            msg::KEYFRAME => {
                let Some(&slot) = self.by_id.get(&publisher) else { return };
                let track = match self.peers[slot as usize].as_ref().map(|p| &p.role) {
                    Some(Role::Publisher { tracks, .. }) => {
                        tracks.get(usize::from(m.index)).map(|t| t.track)
                    }
                    _ => None,
                };
                let Some(track) = track else { return };
                let now_forced = m.bytes().first() == Some(&1);
                if now_forced || self.router.on_keyframe_request(now, track).unwrap_or(false) {
                    self.send_pli(publisher, track, true, tx);
                }
            }
            _ => self.stats.count_drop(MediaDrop::Malformed),
        }
    }

    /// Mirrors whose origin has not answered yet ask again (every tick).
    fn reattach_mirrors(&mut self) {
        let waiting: Vec<(PeerId, usize)> =
            self.mirrors.iter().filter(|(_, m)| !m.attached).map(|(p, m)| (*p, m.origin)).collect();
        for (p, origin) in waiting {
            self.mesh_control(origin, msg::ATTACH, 0, p.0, 0);
        }
    }

    /// Whether messages from other shards wait.
    pub fn has_mesh_input(&self) -> bool {
        self.mesh.as_ref().is_some_and(MeshPort::has_input)
    }

    /// Handles one message from another shard, if one waits.
    pub fn handle_mesh(&mut self, now: Instant, tx: &mut TxQueue) -> bool {
        let Some(mut port) = self.mesh.take() else { return false };
        let mut got = false;
        port.drain(1, |from, m| {
            got = true;
            self.on_mesh(now, from, m, tx);
        });
        self.mesh = Some(port);
        if got && !self.mesh_backlog.is_empty() {
            self.flush_mesh_backlog();
        }
        got
    }

    /// Wakes the shards written to this turn.
    pub fn flush_mesh(&mut self) {
        if !self.mesh_backlog.is_empty() {
            self.flush_mesh_backlog();
        }
        if let Some(m) = self.mesh.as_mut() {
            m.flush_wakes();
        }
    }

    // ------------------------------------------------------------------ datagrams

    fn on_stun(&mut self, now: Instant, meta: RecvMeta, buf: &[u8], tx: &mut TxQueue) {
        let Ok(msg) = StunView::parse(buf) else {
            return self.stats.count_drop(MediaDrop::StunUnknown);
        };
        let slot = match msg.username() {
            Ok(Some(u)) => IceLiteAgent::local_ufrag_of(u).and_then(|l| self.by_ufrag.get(l)),
            _ => None,
        };
        let Some(&slot) = slot else {
            return self.stats.count_drop(MediaDrop::StunUnknown);
        };
        let local = SocketAddr::new(meta.dst_ip.unwrap_or(self.local.ip()), meta.dst_port);
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let Some(mut out) = tx.push(meta.src) else {
            return self.stats.count_drop(MediaDrop::TxFull);
        };
        out.set_source(meta.dst_ip);
        match peer.ice.handle_stun(now, meta.src, local, &msg, out.buf()) {
            Reply::Success(n) => {
                out.commit(n);
                stat!(self.stats, stun_checks);
                if !peer.addrs.contains(&meta.src) {
                    if peer.addrs.len() == MAX_ADDRS {
                        let old = peer.addrs.remove(0);
                        if self.by_addr.get(&old) == Some(&slot) {
                            self.by_addr.remove(&old);
                        }
                    }
                    peer.addrs.push(meta.src);
                    self.by_addr.insert(meta.src, slot);
                }
            }
            Reply::Error(n, _) => {
                out.commit(n);
                self.stats.count_drop(MediaDrop::StunRejected);
            }
            Reply::Drop(_) => {
                drop(out);
                self.stats.count_drop(MediaDrop::StunRejected);
            }
        }
        self.drain_ice(slot, tx);
    }

    /// Acts on the ICE agent's events; a peer whose consent expired is removed.
    fn drain_ice(&mut self, slot: u32, tx: &mut TxQueue) {
        let Some(peer) = self.peer_mut(slot) else { return };
        let mut expired = false;
        let mut start_client = None;
        while let Some(ev) = peer.ice.poll_event() {
            match ev {
                IceEvent::Selected { remote, local } => {
                    if peer.remote.is_none() && peer.dtls_role == DtlsRole::Client {
                        start_client = Some(remote);
                    }
                    peer.remote = Some(remote);
                    peer.local_ip = Some(local.ip());
                }
                IceEvent::ConsentExpired => expired = true,
            }
        }
        if let Some(remote) = start_client {
            // The ClientHello has waited in the endpoint for a path: send it now.
            self.drain_dtls(slot, remote, tx);
        }
        if expired {
            stat!(self.stats, ice_consent_expired);
            self.fail_peer(slot, Some("ICE consent expired"), tx);
        }
    }

    /// A peer's transport is gone for good (`reason`), or the browser closed it (`None`).
    /// A subscriber leg is removed. A publisher keeps its tracks and their subscribers, so
    /// `reconnectStream` ([`ShardCommand::RestartPublisher`]) can put a new transport behind
    /// them; until then it has no address, keys or credentials.
    fn fail_peer(&mut self, slot: u32, reason: Option<&'static str>, tx: &mut TxQueue) {
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let id = peer.id;
        if matches!(peer.role, Role::Publisher { .. }) {
            peer.unroute(slot, &mut self.by_addr, &mut self.by_ufrag);
            peer.failed = true;
        } else {
            self.remove_peer(slot, tx);
        }
        self.events.push_back(match reason {
            Some(reason) => ShardEvent::Failed { id, reason },
            None => ShardEvent::Closed { id },
        });
    }

    fn on_dtls(&mut self, now: Instant, meta: RecvMeta, buf: &[u8], tx: &mut TxQueue) {
        let Some(&slot) = self.by_addr.get(&meta.src) else {
            return self.stats.count_drop(MediaDrop::UnknownSource);
        };
        let Some(peer) = self.peer_mut(slot) else { return };
        peer.dtls.handle_packet(now, buf);
        self.drain_dtls(slot, meta.src, tx);
    }

    /// Sends what the DTLS endpoint wrote and acts on its events.
    fn drain_dtls(&mut self, slot: u32, fallback: SocketAddr, tx: &mut TxQueue) {
        let Some(peer) = self.peer_mut(slot) else { return };
        let dst = peer.remote.unwrap_or(fallback);
        drain_dtls_output(peer, dst, tx);
        let mut outcome: Option<Result<(), Option<&'static str>>> = None;
        while let Some(ev) = peer.dtls.poll_event() {
            match ev {
                DtlsEvent::Connected { keying_material, .. } => {
                    match SrtpContext::from_dtls_keys(&keying_material, peer.dtls_role) {
                        Ok((out, inb)) => {
                            peer.srtp_out = Some(out);
                            peer.srtp_in = Some(inb);
                            if peer.remote.is_none() {
                                peer.remote = Some(fallback);
                            }
                            outcome = Some(Ok(()));
                        }
                        Err(_) => outcome = Some(Err(Some("SRTP keys rejected"))),
                    }
                }
                DtlsEvent::Failed(f) => outcome = Some(Err(Some(f.as_str()))),
                DtlsEvent::Closed => outcome = Some(Err(None)),
            }
        }
        let id = peer.id;
        match outcome {
            None => {}
            Some(Ok(())) => {
                stat!(self.stats, dtls_handshakes);
                self.events.push_back(ShardEvent::Connected { id });
                self.request_keyframes_for(slot, tx);
            }
            Some(Err(Some(reason))) => {
                stat!(self.stats, dtls_failures);
                self.fail_peer(slot, Some(reason), tx);
            }
            Some(Err(None)) => self.fail_peer(slot, None, tx),
        }
    }

    /// A new subscriber connected: ask the publisher for keyframes so its video starts now.
    fn request_keyframes_for(&mut self, slot: u32, tx: &mut TxQueue) {
        let mut wanted = [None; 4];
        let mut publisher = None;
        if let Some(Peer { role: Role::Subscriber { tracks, publisher: p }, .. }) =
            self.peers[slot as usize].as_ref()
        {
            publisher = Some(*p);
            for (w, o) in
                wanted.iter_mut().zip(tracks.iter().filter(|o| o.cfg.kind == MediaKind::Video))
            {
                *w = Some(o.track);
            }
        }
        let Some(publisher) = publisher else { return };
        for track in wanted.into_iter().flatten() {
            self.send_pli(publisher, track, true, tx);
        }
    }

    fn on_rtp(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        let Some(&slot) = self.by_addr.get(&meta.src) else {
            return self.stats.count_drop(MediaDrop::UnknownSource);
        };
        let epoch = self.epoch;
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let Some(srtp) = peer.srtp_in.as_mut() else {
            return self.stats.count_drop(MediaDrop::NotConnected);
        };
        let publisher = peer.id;
        let Role::Publisher { tracks, twcc, mirrored_to } = &mut peer.role else {
            return self.stats.count_drop(MediaDrop::UnknownTrack);
        };
        let Ok(hl) = RtpView::parse(buf).map(|v| v.header_len()) else {
            return self.stats.count_drop(MediaDrop::Malformed);
        };
        let Ok(mut len) = srtp.unprotect_rtp(buf, hl) else {
            return self.stats.count_drop(MediaDrop::SrtpFailed);
        };
        let (ssrc, pt, twcc_seq) = {
            let Ok(v) = RtpView::parse(&buf[..len]) else {
                return self.stats.count_drop(MediaDrop::Malformed);
            };
            let seq = twcc.as_ref().and_then(|(id, _)| v.transport_cc(*id));
            (v.ssrc(), v.payload_type(), seq)
        };
        // Which track: by SSRC, else bind an unannounced SSRC by payload type.
        let mut found = None;
        for (i, t) in tracks.iter().enumerate() {
            if t.ssrc == Some(ssrc) {
                found = Some((i, false));
                break;
            }
            if t.rtx_ssrc == Some(ssrc) {
                found = Some((i, true));
                break;
            }
        }
        if found.is_none() {
            for (i, t) in tracks.iter_mut().enumerate() {
                if t.ssrc.is_none() && t.cfg.pt == pt {
                    t.ssrc = Some(ssrc);
                    found = Some((i, false));
                    break;
                }
                if t.rtx_ssrc.is_none() && t.cfg.rtx_pt == Some(pt) {
                    t.rtx_ssrc = Some(ssrc);
                    found = Some((i, true));
                    break;
                }
            }
        }
        let Some((i, is_rtx)) = found else {
            return self.stats.count_drop(MediaDrop::UnknownTrack);
        };
        let arrival = now.saturating_duration_since(epoch);
        if let (Some((_, rec)), Some(seq)) = (twcc.as_mut(), twcc_seq) {
            rec.on_packet(seq, arrival);
        }
        let t = &mut tracks[i];
        if is_rtx {
            // RFC 4588: the payload starts with the original sequence number. Put the packet
            // back together in place: header fields of the media stream, OSN removed.
            let Ok(v) = RtpView::parse(&buf[..len]) else { return };
            if v.payload().len() < 2 {
                // Padding-only probe on the RTX stream: bandwidth probing, nothing to forward.
                return;
            }
            let hl = v.header_len();
            let osn = u16::from_be_bytes([buf[hl], buf[hl + 1]]);
            buf.copy_within(hl + 2..len, hl);
            len -= 2;
            let (Some(media_ssrc), Ok(mut w)) = (t.ssrc, RtpRewriter::new(&mut buf[..len])) else {
                return self.stats.count_drop(MediaDrop::Malformed);
            };
            w.set_ssrc(media_ssrc).set_sequence_number(osn);
            if w.set_payload_type(t.cfg.pt).is_err() {
                return self.stats.count_drop(MediaDrop::Malformed);
            }
        }
        let Ok(v) = RtpView::parse(&buf[..len]) else {
            return self.stats.count_drop(MediaDrop::Malformed);
        };
        let (ext, before) = t.stats.on_packet(arrival, v.sequence_number(), v.timestamp());
        if t.cfg.nack {
            t.nack.on_packet(ext, before);
        }
        let gap = !t.nack.is_empty();
        let track = t.track;
        let src_ext = t.cfg.ext;
        stat!(self.stats, rtp_in);
        // Consumers on other shards: one copy of the plaintext per shard into the mesh.
        if let Some(mesh) = self.mesh.as_mut() {
            for &to in mirrored_to.iter() {
                if mesh.push(to, msg::RTP, i as u8, publisher.0, v.as_bytes()) {
                    stat!(self.stats, mesh_out);
                } else {
                    self.stats.count_drop(MediaDrop::MeshFull);
                }
            }
        }
        self.forward(now, track, &v, &src_ext, tx);
        if gap {
            self.send_nacks(slot, now, tx);
        }
    }

    /// Fans one plaintext publisher packet out to the subscribers of `track`.
    fn forward(
        &mut self,
        now: Instant,
        track: TrackId,
        v: &RtpView<'_>,
        src_ext: &ExtIds,
        tx: &mut TxQueue,
    ) {
        let fields = RtpFields { ssrc: v.ssrc(), seq: v.sequence_number(), ts: v.timestamp() };
        let abs = abs_send_time(now.saturating_duration_since(self.epoch));
        let MediaCore { router, peers, stats, .. } = self;
        let payload = &v.as_bytes()[v.header_len()..];
        let _ = router.on_publisher_rtp(now, track, fields, v.as_bytes(), |fwd| {
            let Some(Some(sub)) = peers.get_mut(fwd.leg.0 as usize) else { return };
            let (Some(dst), Some(srtp)) = (sub.remote, sub.srtp_out.as_mut()) else { return };
            let Role::Subscriber { tracks, .. } = &mut sub.role else { return };
            let Some(out) = tracks.iter_mut().find(|o| o.cfg.ssrc == fwd.ssrc) else { return };
            let leg = LegOut {
                dst,
                local_ip: sub.local_ip,
                srtp,
                twcc_seq: &mut sub.twcc_seq,
                cfg: &out.cfg,
            };
            let hdr =
                Header { marker: v.marker(), pt: fwd.pt, seq: fwd.seq, ts: fwd.ts, ssrc: fwd.ssrc };
            if write_to_leg(tx, leg, (v, payload), src_ext, abs, &hdr, None, stats) {
                out.packets = out.packets.wrapping_add(1);
                out.octets = out.octets.wrapping_add(payload.len() as u32);
                stat!(stats, rtp_out);
                stat!(stats, rtp_out_bytes, payload.len() as u64);
            }
        });
    }

    fn on_rtcp(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        let Some(&slot) = self.by_addr.get(&meta.src) else {
            return self.stats.count_drop(MediaDrop::UnknownSource);
        };
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let Some(srtp) = peer.srtp_in.as_mut() else {
            return self.stats.count_drop(MediaDrop::NotConnected);
        };
        let Ok(n) = srtp.unprotect_rtcp(buf) else {
            return self.stats.count_drop(MediaDrop::SrtpFailed);
        };
        let Ok(compound) = RtcpCompound::parse_relaxed(&buf[..n]) else {
            return self.stats.count_drop(MediaDrop::Malformed);
        };
        stat!(self.stats, rtcp_in);
        let is_publisher = matches!(peer.role, Role::Publisher { .. });
        for p in compound.packets() {
            let Ok(p) = p else {
                self.stats.count_drop(MediaDrop::Malformed);
                break;
            };
            if is_publisher {
                if let RtcpPacket::SenderReport(r) = p {
                    self.on_publisher_sr(slot, now, &r.info, tx);
                }
                continue;
            }
            match p {
                RtcpPacket::Nack(nk) => {
                    stat!(self.stats, nacks_in);
                    let Some(track) = self.out_track(slot, nk.media_ssrc) else { continue };
                    self.answer_nack(slot, now, track, nk.lost(), tx);
                }
                RtcpPacket::Pli(p) => {
                    if let Some(track) = self.out_track(slot, p.media_ssrc) {
                        self.keyframe_request(slot, now, track, tx);
                    }
                }
                RtcpPacket::Fir(f) => {
                    let tracks: [Option<TrackId>; 2] = {
                        let mut it = f.entries().map(|(ssrc, _)| self.out_track(slot, ssrc));
                        [it.next().flatten(), it.next().flatten()]
                    };
                    for track in tracks.into_iter().flatten() {
                        self.keyframe_request(slot, now, track, tx);
                    }
                }
                // Receiver reports, REMB and transport-wide feedback from subscribers describe
                // the subscriber's downlink; the SFU forwards what the publisher sends and
                // does not adapt per subscriber (no simulcast layers to switch), so they are
                // only counted.
                _ => {}
            }
        }
    }

    /// The router track a subscriber receives as `ssrc` (its media or RTX SSRC).
    fn out_track(&self, slot: u32, ssrc: u32) -> Option<TrackId> {
        match &self.peers.get(slot as usize)?.as_ref()?.role {
            Role::Subscriber { tracks, .. } => tracks
                .iter()
                .find(|o| o.cfg.ssrc == ssrc || o.cfg.rtx.is_some_and(|(_, r)| r == ssrc))
                .map(|o| o.track),
            Role::Publisher { .. } => None,
        }
    }

    fn answer_nack(
        &mut self,
        slot: u32,
        now: Instant,
        track: TrackId,
        lost: impl Iterator<Item = u16>,
        tx: &mut TxQueue,
    ) {
        let abs = abs_send_time(now.saturating_duration_since(self.epoch));
        // The ring keeps the publisher's packets with its extension ids: find them so values
        // such as video orientation are carried over to the retransmission.
        let src_ext = self.source_ext(slot, track).unwrap_or_default();
        let MediaCore { router, peers, stats, .. } = self;
        let Some(Some(sub)) = peers.get_mut(slot as usize) else { return };
        let (Some(dst), Some(srtp)) = (sub.remote, sub.srtp_out.as_mut()) else { return };
        let Role::Subscriber { tracks, .. } = &sub.role else { return };
        let Some(out) = tracks.iter().find(|o| o.track == track) else { return };
        let (cfg, twcc_seq, local_ip) = (&out.cfg, &mut sub.twcc_seq, sub.local_ip);
        let res = router.on_nack(now, track, LegId(slot), lost, |rt| {
            let Ok(v) = RtpView::parse(rt.packet) else { return };
            let leg = LegOut { dst, local_ip, srtp: &mut *srtp, twcc_seq: &mut *twcc_seq, cfg };
            let hdr =
                Header { marker: v.marker(), pt: rt.pt, seq: rt.seq, ts: rt.ts, ssrc: rt.ssrc };
            let payload = &rt.packet[v.header_len()..];
            if write_to_leg(tx, leg, (&v, payload), &src_ext, abs, &hdr, rt.osn, stats) {
                stat!(stats, rtx_out);
            }
        });
        if let Ok(missing) = res {
            stat!(self.stats, rtx_missing, missing as u64);
        }
    }

    /// A subscriber (`slot`) asked for a keyframe of `track`: forward it, rate-limited.
    /// The publisher's extension ids of `track`, seen from subscriber `slot`.
    fn source_ext(&self, slot: u32, track: TrackId) -> Option<ExtIds> {
        let publisher = self.peers.get(slot as usize)?.as_ref()?.publisher()?;
        if let Some(m) = self.mirrors.get(&publisher) {
            return m.tracks.iter().find(|t| t.track == track).map(|t| t.ext);
        }
        let p = self.peers.get(*self.by_id.get(&publisher)? as usize)?.as_ref()?;
        match &p.role {
            Role::Publisher { tracks, .. } => {
                tracks.iter().find(|t| t.track == track).map(|t| t.cfg.ext)
            }
            Role::Subscriber { .. } => None,
        }
    }

    fn keyframe_request(&mut self, slot: u32, now: Instant, track: TrackId, tx: &mut TxQueue) {
        let Some(publisher) = self.peers[slot as usize].as_ref().and_then(Peer::publisher) else {
            return;
        };
        if self.router.on_keyframe_request(now, track).unwrap_or(false) {
            self.send_pli(publisher, track, false, tx);
        }
    }

    /// Sends a PLI for `track` to `publisher`; for a publisher of another shard, asks its
    /// origin (`now`: at once, else through the origin's keyframe limiter too).
    fn send_pli(&mut self, publisher: PeerId, track: TrackId, now: bool, tx: &mut TxQueue) {
        if let Some(m) = self.mirrors.get(&publisher) {
            let Some(i) = m.tracks.iter().position(|t| t.track == track) else { return };
            let to = m.origin;
            if let Some(mesh) = self.mesh.as_mut() {
                if mesh.push(to, msg::KEYFRAME, i as u8, publisher.0, &[u8::from(now)]) {
                    stat!(self.stats, mesh_out);
                } else {
                    self.stats.count_drop(MediaDrop::MeshFull);
                }
            }
            return;
        }
        let Some(&slot) = self.by_id.get(&publisher) else { return };
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let Role::Publisher { tracks, .. } = &peer.role else { return };
        let Some(media_ssrc) = tracks.iter().find(|t| t.track == track).and_then(|t| t.ssrc) else {
            return;
        };
        let sender = peer.rtcp_ssrc;
        if send_rtcp(peer, tx, |b| pli::write(b, sender, media_ssrc).ok()) {
            stat!(self.stats, pli_out);
            stat!(self.stats, rtcp_out);
        }
    }

    fn on_publisher_sr(
        &mut self,
        slot: u32,
        now: Instant,
        info: &sr::SenderInfo,
        tx: &mut TxQueue,
    ) {
        let Some(Some(publisher)) = self.peers.get_mut(slot as usize) else { return };
        let id = publisher.id;
        let Role::Publisher { tracks, mirrored_to, .. } = &mut publisher.role else { return };
        let Some(i) = tracks.iter().position(|t| t.ssrc == Some(info.ssrc)) else { return };
        let t = &mut tracks[i];
        t.stats.on_sender_report(now, info.ntp_time);
        let track = t.track;
        if let Some(mesh) = self.mesh.as_mut() {
            let bytes = encode_sr(info);
            for &to in mirrored_to.iter() {
                if mesh.push(to, msg::SR, i as u8, id.0, &bytes) {
                    stat!(self.stats, mesh_out);
                } else {
                    self.stats.count_drop(MediaDrop::MeshFull);
                }
            }
        }
        self.relay_sr(track, info, tx);
    }

    /// The publisher's sender report of `track`, translated for each consumer of it here.
    fn relay_sr(&mut self, track: TrackId, info: &sr::SenderInfo, tx: &mut TxQueue) {
        let MediaCore { router, peers, stats, .. } = self;
        for s in router.subscribers(track) {
            if s.rewriter.source_ssrc() != Some(info.ssrc) {
                continue;
            }
            let Some(Some(sub)) = peers.get_mut(s.leg.0 as usize) else { continue };
            let Role::Subscriber { tracks, .. } = &sub.role else { continue };
            let Some(out) = tracks.iter().find(|o| o.cfg.ssrc == s.rewriter.out_ssrc) else {
                continue;
            };
            let translated = sr::SenderInfo {
                ssrc: out.cfg.ssrc,
                ntp_time: info.ntp_time,
                rtp_timestamp: info.rtp_timestamp.wrapping_add(s.rewriter.ts_offset()),
                packet_count: out.packets,
                octet_count: out.octets,
            };
            if send_rtcp(sub, tx, |b| sr::write(b, &translated, &[]).ok()) {
                stat!(stats, rtcp_out);
            }
        }
    }

    /// NACKs for every publisher packet still missing and due.
    fn send_nacks(&mut self, slot: u32, now: Instant, tx: &mut TxQueue) {
        let MediaCore { peers, stats, scratch_seqs, .. } = self;
        let Some(Some(peer)) = peers.get_mut(slot as usize) else { return };
        let Peer { srtp_out, remote, local_ip, role, rtcp_ssrc, .. } = peer;
        let (Some(dst), Some(srtp)) = (*remote, srtp_out.as_mut()) else { return };
        let Role::Publisher { tracks, .. } = role else { return };
        for t in tracks.iter_mut() {
            if t.nack.is_empty() {
                continue;
            }
            t.nack.due(now, scratch_seqs);
            let Some(ssrc) = t.ssrc else { continue };
            if scratch_seqs.is_empty() {
                continue;
            }
            let seqs = scratch_seqs.iter().copied();
            let link = Link { dst, src: *local_ip, srtp: &mut *srtp };
            if send_rtcp_on(link, tx, |b| nack::write_lost(b, *rtcp_ssrc, ssrc, seqs).ok()) {
                stat!(stats, nacks_out);
                stat!(stats, rtcp_out);
            } else {
                stats.count_drop(MediaDrop::TxFull);
            }
        }
    }

    /// Receiver report + REMB (every `rtcp_interval`) and transport-wide feedback (every
    /// `twcc_interval`) to a publisher.
    fn publisher_feedback(&mut self, slot: u32, now: Instant, tx: &mut TxQueue) {
        let remb_bitrate = self.settings.remb_bitrate;
        let (rtcp_interval, twcc_interval) =
            (self.settings.rtcp_interval, self.settings.twcc_interval);
        let MediaCore { peers, stats, .. } = self;
        let Some(Some(peer)) = peers.get_mut(slot as usize) else { return };
        let Peer { srtp_out, remote, local_ip, role, rtcp_ssrc, next_report, next_twcc, .. } = peer;
        let (Some(dst), Some(srtp)) = (*remote, srtp_out.as_mut()) else { return };
        let Role::Publisher { tracks, twcc, .. } = role else { return };
        let sender = *rtcp_ssrc;
        if now >= *next_twcc {
            *next_twcc = now + twcc_interval;
            let media_ssrc = tracks.iter().find_map(|t| t.ssrc).unwrap_or(0);
            if let Some((_, rec)) = twcc.as_mut()
                && let Some(fb) = rec.build()
            {
                let h = twcc::TwccHeader {
                    sender_ssrc: sender,
                    media_ssrc,
                    base_seq: fb.base_seq,
                    reference_time: fb.reference_time,
                    fb_pkt_count: fb.fb_pkt_count,
                };
                let link = Link { dst, src: *local_ip, srtp: &mut *srtp };
                if send_rtcp_on(link, tx, |b| twcc::write(b, &h, rec.deltas()).ok()) {
                    stat!(stats, rtcp_out);
                }
            }
        }
        if now >= *next_report {
            *next_report = now + rtcp_interval;
            let mut blocks = [rr::ReportBlock::default(); 4];
            let mut nb = 0;
            let mut remb_ssrcs = [0u32; 4];
            let mut nr = 0;
            for t in tracks.iter_mut() {
                let Some(ssrc) = t.ssrc else { continue };
                if nb < blocks.len()
                    && let Some(b) = t.stats.report(now, ssrc)
                {
                    blocks[nb] = b;
                    nb += 1;
                }
                if t.cfg.remb && nr < remb_ssrcs.len() {
                    remb_ssrcs[nr] = ssrc;
                    nr += 1;
                }
            }
            let link = Link { dst, src: *local_ip, srtp: &mut *srtp };
            let sent = send_rtcp_on(link, tx, |b| {
                let mut n = rr::write(b, sender, &blocks[..nb]).ok()?;
                if remb_bitrate > 0 && nr > 0 {
                    n += remb::write(&mut b[n..], sender, remb_bitrate, &remb_ssrcs[..nr]).ok()?;
                }
                Some(n)
            });
            if sent {
                stat!(stats, rtcp_out);
            }
        }
    }

    fn on_tick(&mut self, now: Instant, tx: &mut TxQueue) {
        for slot in 0..self.peers.len() as u32 {
            let Some(peer) = self.peers[slot as usize].as_mut() else { continue };
            if peer.failed {
                continue;
            }
            if peer.ice.poll_timeout().is_some_and(|t| t <= now) {
                peer.ice.handle_timeout(now);
            }
            // Consent expiry fails the peer here (a subscriber leg is removed).
            self.drain_ice(slot, tx);
            let Some(peer) = self.peers[slot as usize].as_mut().filter(|p| !p.failed) else {
                continue;
            };
            if peer.dtls.poll_timeout().is_some_and(|t| t <= now) {
                peer.dtls.handle_timeout(now);
                if let Some(f) = peer.remote.or(peer.addrs.last().copied()) {
                    self.drain_dtls(slot, f, tx);
                }
            }
            let is_publisher = matches!(
                self.peers[slot as usize].as_ref().map(|p| &p.role),
                Some(Role::Publisher { .. })
            );
            if is_publisher {
                self.send_nacks(slot, now, tx);
                self.publisher_feedback(slot, now, tx);
            }
        }
        if self.mirrors.values().any(|m| !m.attached) {
            self.reattach_mirrors();
        }
        if !self.mesh_backlog.is_empty() {
            self.flush_mesh_backlog();
        }
        self.next_tick = now + self.settings.tick;
    }
}

impl ShardCore for MediaCore {
    type Command = ShardCommand;
    type Event = ShardEvent;

    fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        let class = match demux(buf) {
            Ok(Datagram::Stun(_)) => Class::Stun,
            Ok(Datagram::Dtls(_)) => Class::Dtls,
            Ok(Datagram::Rtp(_)) => Class::Rtp,
            Ok(Datagram::Rtcp(_)) => Class::Rtcp,
            Ok(Datagram::ChannelData(_)) | Err(_) => Class::Other,
        };
        match class {
            Class::Stun => self.on_stun(now, meta, buf, tx),
            Class::Dtls => self.on_dtls(now, meta, buf, tx),
            Class::Rtp => self.on_rtp(now, meta, buf, tx),
            Class::Rtcp => self.on_rtcp(now, meta, buf, tx),
            Class::Other => self.stats.count_drop(MediaDrop::Unclassified),
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: ShardCommand, tx: &mut TxQueue) {
        let was_idle = self.by_id.is_empty();
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
            } => self.restart_publisher(now, id, ice, remote_fingerprint, same_connection, tracks),
            ShardCommand::RestartSubscriber { id, ice, remote_fingerprint } => {
                self.restart_subscriber(now, id, ice, remote_fingerprint)
            }
            ShardCommand::RemovePeer { id } => {
                if let Some(&slot) = self.by_id.get(&id) {
                    self.remove_peer(slot, tx);
                }
            }
        }
        if was_idle {
            self.next_tick = now + self.settings.tick;
        }
        self.update_gauges();
    }

    fn handle_timeout(&mut self, now: Instant, tx: &mut TxQueue) {
        self.on_tick(now, tx);
        self.update_gauges();
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.by_id.is_empty()).then_some(self.next_tick)
    }

    fn poll_event(&mut self) -> Option<ShardEvent> {
        self.events.pop_front()
    }

    fn has_mesh_input(&self) -> bool {
        MediaCore::has_mesh_input(self)
    }

    fn handle_mesh(&mut self, now: Instant, tx: &mut TxQueue) -> bool {
        MediaCore::handle_mesh(self, now, tx)
    }

    fn flush_mesh(&mut self) {
        MediaCore::flush_mesh(self)
    }
}

/// A sender report's fields for the mesh: SSRC, NTP time, RTP timestamp, packet and octet
/// counts, big-endian (24 bytes).
fn encode_sr(info: &sr::SenderInfo) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[0..4].copy_from_slice(&info.ssrc.to_be_bytes());
    b[4..12].copy_from_slice(&info.ntp_time.to_be_bytes());
    b[12..16].copy_from_slice(&info.rtp_timestamp.to_be_bytes());
    b[16..20].copy_from_slice(&info.packet_count.to_be_bytes());
    b[20..24].copy_from_slice(&info.octet_count.to_be_bytes());
    b
}

fn decode_sr(b: &[u8]) -> Option<sr::SenderInfo> {
    let b: &[u8; 24] = b.try_into().ok()?;
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut ntp = [0u8; 8];
    ntp.copy_from_slice(&b[4..12]);
    Some(sr::SenderInfo {
        ssrc: u32_at(0),
        ntp_time: u64::from_be_bytes(ntp),
        rtp_timestamp: u32_at(12),
        packet_count: u32_at(16),
        octet_count: u32_at(20),
    })
}

// ---------------------------------------------------------------------- helpers

/// Where RTCP to one peer goes and the context that protects it.
struct Link<'a> {
    dst: SocketAddr,
    src: Option<IpAddr>,
    srtp: &'a mut SrtpContext,
}

/// Writes one RTCP packet (or compound) with `build` into a send slot, protects and queues it.
fn send_rtcp_on(
    link: Link<'_>,
    tx: &mut TxQueue,
    build: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let Some(mut s) = tx.push(link.dst) else { return false };
    s.set_source(link.src);
    let b = s.buf();
    // Leave room for the SRTCP trailer and tag.
    let room = TX_SLOT_SIZE - 64;
    let Some(n) = build(&mut b[..room]) else { return false };
    match link.srtp.protect_rtcp(b, n) {
        Ok(n) => {
            s.commit(n);
            true
        }
        Err(_) => false,
    }
}

/// [`send_rtcp_on`] for a whole peer.
fn send_rtcp(
    peer: &mut Peer,
    tx: &mut TxQueue,
    build: impl FnOnce(&mut [u8]) -> Option<usize>,
) -> bool {
    let (Some(dst), Some(srtp)) = (peer.remote, peer.srtp_out.as_mut()) else { return false };
    send_rtcp_on(Link { dst, src: peer.local_ip, srtp }, tx, build)
}

/// Queues every datagram the DTLS endpoint has to send.
fn drain_dtls_output(peer: &mut Peer, dst: SocketAddr, tx: &mut TxQueue) {
    loop {
        let Some(mut s) = tx.push(dst) else { return };
        s.set_source(peer.local_ip);
        match peer.dtls.poll_transmit(s.buf()) {
            Some(n) => s.commit(n),
            None => return,
        }
    }
}

/// abs-send-time: 6.18 fixed-point seconds, 24 bits.
fn abs_send_time(since_epoch: Duration) -> u32 {
    ((since_epoch.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00FF_FFFF
}

/// One subscriber leg's sending side, for [`write_to_leg`].
struct LegOut<'a> {
    dst: SocketAddr,
    local_ip: Option<IpAddr>,
    srtp: &'a mut SrtpContext,
    /// The leg's next transport-wide sequence number (taken when the track negotiated it).
    twcc_seq: &'a mut u16,
    cfg: &'a OutTrack,
}

/// The one recipe that writes an RTP packet to a subscriber leg into a send slot, for forwarding
/// and NACK answers alike: the header with this leg's fields and extensions ([`write_header`]),
/// for an RFC 4588 retransmission (`osn`: the original sequence number) that number before the
/// payload, then `payload` (the source packet's, after its header) protected into the slot (one
/// copy, fused with the encryption).
/// False when nothing was sent (a full pool or a packet too large: counted as `TxFull`).
#[allow(clippy::too_many_arguments)]
fn write_to_leg(
    tx: &mut TxQueue,
    leg: LegOut<'_>,
    (src, payload): (&RtpView<'_>, &[u8]),
    src_ext: &ExtIds,
    abs: u32,
    hdr: &Header,
    osn: Option<u16>,
    stats: &MediaStats,
) -> bool {
    let Some(mut slot) = tx.push(leg.dst) else {
        stats.count_drop(MediaDrop::TxFull);
        return false;
    };
    slot.set_source(leg.local_ip);
    let twcc = (leg.cfg.ext.twcc != 0).then(|| {
        let s = *leg.twcc_seq;
        *leg.twcc_seq = s.wrapping_add(1);
        s
    });
    let b = slot.buf();
    let hl = write_header(b, hdr, src, src_ext, leg.cfg, abs, twcc);
    let res = match osn {
        Some(osn) => {
            let end = hl + 2 + payload.len();
            if end + 64 > TX_SLOT_SIZE {
                stats.count_drop(MediaDrop::TxFull);
                return false;
            }
            b[hl..hl + 2].copy_from_slice(&osn.to_be_bytes());
            b[hl + 2..end].copy_from_slice(payload);
            leg.srtp.protect_rtp(b, end, hl)
        }
        None => leg.srtp.protect_rtp_payload_into(b, hl, payload),
    };
    match res {
        Ok(n) => {
            slot.commit(n);
            true
        }
        Err(_) => {
            stats.count_drop(MediaDrop::TxFull);
            false
        }
    }
}

/// The fixed-header fields of a packet to a subscriber.
struct Header {
    marker: bool,
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

/// Writes the RTP header of a forwarded packet into `b`: the fixed header with the rewritten
/// fields, the source's CSRCs, the padding bit, and a one-byte-form extension block with this
/// leg's ids (mid, abs-send-time, transport-wide sequence number, and the source's audio level
/// and video orientation values when both sides negotiated them). Returns the header length.
fn write_header(
    b: &mut [u8],
    h: &Header,
    src: &RtpView<'_>,
    src_ext: &ExtIds,
    out: &OutTrack,
    abs: u32,
    twcc: Option<u16>,
) -> usize {
    let cc = src.csrc_count() as usize;
    b[1] = (u8::from(h.marker) << 7) | (h.pt & 0x7F);
    b[2..4].copy_from_slice(&h.seq.to_be_bytes());
    b[4..8].copy_from_slice(&h.ts.to_be_bytes());
    b[8..12].copy_from_slice(&h.ssrc.to_be_bytes());
    b[12..12 + 4 * cc].copy_from_slice(&src.as_bytes()[12..12 + 4 * cc]);
    let start = 12 + 4 * cc;
    let mut q = start + 4;
    let put = |b: &mut [u8], q: &mut usize, id: u8, value: &[u8]| {
        // One-byte form: ids 1..=14, values 1..=16 bytes.
        if (1..=14).contains(&id) && (1..=16).contains(&value.len()) {
            b[*q] = (id << 4) | (value.len() as u8 - 1);
            b[*q + 1..*q + 1 + value.len()].copy_from_slice(value);
            *q += 1 + value.len();
        }
    };
    let e = &out.ext;
    if e.mid != 0 {
        put(b, &mut q, e.mid, out.mid.as_bytes());
    }
    if e.abs_send_time != 0 {
        put(b, &mut q, e.abs_send_time, &abs.to_be_bytes()[1..]);
    }
    if let Some(seq) = twcc {
        put(b, &mut q, e.twcc, &seq.to_be_bytes());
    }
    if e.audio_level != 0
        && src_ext.audio_level != 0
        && let Some(v) = src.extension(src_ext.audio_level)
    {
        put(b, &mut q, e.audio_level, v);
    }
    if e.video_orientation != 0
        && src_ext.video_orientation != 0
        && let Some(v) = src.extension(src_ext.video_orientation)
    {
        put(b, &mut q, e.video_orientation, v);
    }
    let has_ext = q > start + 4;
    let end = if has_ext {
        while !(q - start).is_multiple_of(4) {
            b[q] = 0;
            q += 1;
        }
        b[start..start + 2].copy_from_slice(&[0xBE, 0xDE]);
        b[start + 2..start + 4].copy_from_slice(&(((q - start - 4) / 4) as u16).to_be_bytes());
        q
    } else {
        start
    };
    b[0] = 0x80 | (u8::from(src.has_padding()) << 5) | (u8::from(has_ext) << 4) | cc as u8;
    end
}
