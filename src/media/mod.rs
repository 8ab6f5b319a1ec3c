//! The media engine: what turns negotiated publish/subscribe requests into forwarded packets.
//!
//! Two halves, talking only by message (DESIGN §1):
//!
//! - [`MediaCore`] (`core.rs`) is the per-shard [`ShardCore`](crate::shard::ShardCore): one per
//!   data-plane thread, it owns the peers placed on that shard (each a transport: ICE-lite
//!   agent, DTLS endpoint, SRTP contexts; with a producer's tracks or a consumer's legs), the
//!   mirrors of publishers of other shards and the shard's [`Router`](crate::router::Router). Sans-IO like every core: the shell lends it
//!   datagrams, `now` and a [`TxQueue`](crate::shard::TxQueue).
//! - [`MediaShard`] (`shard.rs`) is what a media shard runs: the media core, and the TURN core
//!   the shard hosts beside it, with in-process delivery between the two.
//! - [`MediaEngine`] (`engine.rs`) is the shards as the control plane sees them: it starts
//!   them, places transports, sends [`ShardCommand`]s down and hands [`ShardEvent`]s up. The
//!   JSON-RPC media methods that drive it (SDP with [`crate::sdp`], the registry's streams and
//!   subscriptions) are the control plane's (`control::media_rpc`); nothing here imports it.
//!
//! A session's publishers live on its home shard (chosen when its first peer is created);
//! its subscribers on the home shard until the session has `[media] spread_threshold`
//! subscriber legs there, then each new one on the least-loaded shard. A publisher with
//! consumers on other shards is *mirrored* there: its home shard decrypts each packet once and
//! copies it once per such shard into the shard mesh ([`crate::shard::mesh`]); the mirror
//! producer on the other shard fans it out to its consumers as if the publisher were local,
//! keeps its own retransmission ring (NACKs are answered there), sends keyframe requests back
//! and forwards the publisher's sender reports.
//!
//! Between nodes, a publisher travels once per (track, node) pair on a relay leg
//! (`relay.rs`): a relay out on the owner's node (a consumer peer without ICE or DTLS) sends
//! to a relay in on the other node (a producer peer its subscribers name as their publisher),
//! on a fixed path with SRTP keys the owner drew ([`RelayPlan`], [`RelayOffer`]).
//!
//! `feedback.rs` holds the receiver-side RTCP state a publisher needs from its SFU (receiver
//! reports, NACKs for its losses, transport-wide congestion feedback). A simulcast publisher's
//! encodings are producer tracks of their own; a consumer of a layered source (simulcast, VP9
//! SVC) chooses per packet what it forwards ([`layers`], `consumer.rs`), aiming at what its
//! transport's bandwidth estimate ([`bwe`]) allows (`allocate.rs`).

mod allocate;
pub use allocate::{ConsumerBoard, ConsumerRow};
pub mod bwe;
mod consumer;
mod core;
mod egress;
mod engine;
pub mod feedback;
mod flow;
mod ingest;
pub use ingest::{INGEST_MTU, IngestFeed, IngestReader, IngestWriter, ingest_ring};
pub mod layers;
mod mirror;
mod producer;
mod recorder;
pub use recorder::RecorderFeed;
mod relay;
pub use relay::{RELAY_TIMEOUT, RelayError, RelayKeys, RelayOffer, RelayPlan, RelayTrack, SrtpKey};
mod shard;
mod stats;
#[cfg(test)]
mod tests;
mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

pub use self::core::{CoreSettings, MediaCore, PUBLISHER_GRACE};
pub use self::shard::MediaShard;
/// The interface addresses the TURN server relays from when bound to the wildcard.
pub(crate) use engine::candidate_ips;
pub use engine::{MediaEngine, MediaEngineError, SendError};
pub use stats::{MediaDrop, MediaStats, MediaStatsSnapshot};

use crate::dtls::{DtlsRole, Fingerprint};
use crate::sdp::{ExtIds, MediaKind, NegotiatedMedia, OutgoingTrack};
use crate::wire::codec::Codec;

/// A peer connection of the engine (publisher or subscriber), unique per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub u64);

/// ICE-lite credentials of one peer: ours and the browser's ufrag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceParams {
    pub local_ufrag: String,
    pub local_pwd: String,
    pub remote_ufrag: String,
}

/// A track a publisher sends, as negotiated in its offer/answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InTrack {
    pub kind: MediaKind,
    pub mid: String,
    pub pt: u8,
    pub clock_rate: u32,
    pub rtx_pt: Option<u8>,
    /// SSRCs the offer announced; learnt from the first packet of `pt` / `rtx_pt` otherwise.
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    pub ext: ExtIds,
    /// Feedback the publisher accepts from us.
    pub nack: bool,
    pub pli: bool,
    pub fir: bool,
    pub remb: bool,
    pub transport_cc: bool,
    /// The codec (what the layer code inspects in the payload).
    pub codec: Codec,
    /// Simulcast encodings by RID (RFC 8851/8853), lowest first as the publisher ordered them
    /// in `a=simulcast` (openvidu-browser: `rdiv4;rdiv2;rdiv1`); empty: one encoding. Each
    /// encoding is a track of its own in the producer, its SSRCs learnt from the `rid` and
    /// `repaired-rid` header extensions.
    pub rids: Vec<String>,
}

impl InTrack {
    /// A publisher track from what was agreed for one m-line.
    pub fn from_negotiated(m: &NegotiatedMedia) -> InTrack {
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
            codec: Codec::from_sdp_name(&m.codec.name),
            rids: if m.kind == MediaKind::Video && m.simulcast.len() > 1 {
                m.simulcast.iter().filter_map(|st| st.rids.first().cloned()).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Encodings this track arrives in (1 without simulcast).
    pub fn encodings(&self) -> usize {
        self.rids.len().clamp(1, layers::MAX_ENCODINGS)
    }

    /// Whether consumers choose layers of this track ([`layers`]): simulcast, or VP9 and AV1
    /// (whose spatial and temporal layers are dropped by id: VP9's payload descriptor, AV1's
    /// Dependency Descriptor, which subscribers get with it).
    pub fn layered(&self) -> bool {
        self.kind == MediaKind::Video
            && (self.encodings() > 1 || matches!(self.codec, Codec::Vp9 | Codec::Av1))
    }
}

/// A leg a subscriber receives: one publisher track, rewritten to what was negotiated with
/// this subscriber. Serde: a cluster's owner sends it to the node hosting the leg.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutTrack {
    /// Index of the publisher's track in its [`ShardCommand::AddPublisher`] `tracks`.
    pub source: usize,
    pub kind: MediaKind,
    pub mid: String,
    pub pt: u8,
    pub ssrc: u32,
    /// RTX payload type and SSRC on this leg, when the subscriber accepted RTX.
    pub rtx: Option<(u8, u32)>,
    pub ext: ExtIds,
}

/// Where a subscriber's publisher runs when it is not on the subscriber's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The publisher's shard.
    pub shard: usize,
    /// The publisher's tracks, as in its [`ShardCommand::AddPublisher`].
    pub tracks: Vec<InTrack>,
}

impl OutTrack {
    /// The leg of publisher track `source` agreed for one m-line.
    pub fn from_negotiated(m: &NegotiatedMedia, source: usize) -> OutTrack {
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
    /// (of `outgoing`, one per publisher track) with its SSRC.
    pub fn for_answer(agreed: &[NegotiatedMedia], outgoing: &[OutgoingTrack]) -> Vec<OutTrack> {
        agreed
            .iter()
            .filter_map(|m| {
                let source = outgoing.iter().position(|t| Some(t.ssrc) == m.ssrc)?;
                Some(OutTrack::from_negotiated(m, source))
            })
            .collect()
    }
}

/// Control plane → media shard.
#[derive(Debug, Clone)]
pub enum ShardCommand {
    /// A publisher's peer: its transport and the tracks it will send.
    AddPublisher {
        id: PeerId,
        ice: IceParams,
        remote_fingerprint: Fingerprint,
        tracks: Vec<InTrack>,
    },
    /// A subscriber's peer receiving (some of) `publisher`'s tracks.
    AddSubscriber {
        id: PeerId,
        publisher: PeerId,
        ice: IceParams,
        remote_fingerprint: Fingerprint,
        /// Our DTLS role: `Server` when the browser took `a=setup:active` (always with
        /// browsers), `Client` when a server offer was answered `passive`.
        dtls_role: DtlsRole,
        tracks: Vec<OutTrack>,
        /// `None`: the publisher is on this shard. Otherwise the shard it is on and its tracks:
        /// this shard mirrors it (one mirror producer per publisher, shared by every consumer
        /// of it here) and its origin shard copies each packet here through the shard mesh.
        origin: Option<Origin>,
    },
    /// A publisher renegotiated its transport (`reconnectStream`): new ICE credentials and
    /// DTLS association, same tracks; subscribers keep their SSRCs and continuous sequence
    /// numbers.
    RestartPublisher {
        id: PeerId,
        ice: IceParams,
        remote_fingerprint: Fingerprint,
        /// The offer comes from the same peer connection (same certificate and SDP session):
        /// an ICE restart when its DTLS association is up or under way.
        same_connection: bool,
        tracks: Vec<InTrack>,
    },
    /// A subscriber's peer connection renegotiated the transport of its leg
    /// (`reconnectStream` with an offer from the same certificate and SDP session): new ICE
    /// credentials. An ICE restart when its DTLS association is up or under way (keys kept),
    /// otherwise a new DTLS endpoint; the leg keeps its tracks, SSRCs and sequence numbers.
    RestartSubscriber { id: PeerId, ice: IceParams, remote_fingerprint: Fingerprint },
    /// Tear a peer down (a publisher's removal also ends its subscribers' legs).
    RemovePeer { id: PeerId },
    /// Record publisher `publisher` (on this shard) into a recorder thread's ring
    /// (INDIVIDUAL recording; `recorder` names it for the detach).
    AttachRecorder { publisher: PeerId, recorder: u64, feed: RecorderFeed },
    /// Stop feeding recorder `recorder`: its thread closes the file.
    DetachRecorder { recorder: u64 },
    /// A participant is gone: the shard's TURN server ends the allocations of the TURN users
    /// whose name ends with `suffix` (`:<connectionId>`); the media core ignores it.
    EndTurnUser { suffix: Box<str> },
    /// An IP camera's producer, fed from the ingest thread through `feed` (packets of
    /// `tracks` by index); removed with [`ShardCommand::RemovePeer`].
    AddIngest { id: PeerId, tracks: Vec<InTrack>, feed: IngestFeed },
    /// Node A: relay `publisher` (on this shard, or on `origin`'s shard: mirrored here as for
    /// a subscriber) to node B's shard at `remote`, as `plan` says ([`RelayPlan::command`]);
    /// a consumer peer without ICE or DTLS. Removed with [`ShardCommand::RemovePeer`].
    AddRelayOut {
        id: PeerId,
        publisher: PeerId,
        remote: SocketAddr,
        plan: Box<RelayPlan>,
        origin: Option<Origin>,
    },
    /// Node B: a relay producer fed from node A's shard at `remote` ([`RelayOffer::command`]);
    /// subscribers name `id` as their publisher. Removed with [`ShardCommand::RemovePeer`];
    /// silent for [`RELAY_TIMEOUT`], it vanishes ([`ShardEvent::Vanished`]).
    AddRelayIn { id: PeerId, remote: SocketAddr, offer: Box<RelayOffer> },
}

/// Media shard → control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// ICE nominated a pair and DTLS finished: media flows.
    Connected { id: PeerId },
    /// The peer's transport failed (DTLS failure; for a subscriber also consent expiry). A
    /// subscriber leg was removed; a publisher keeps its tracks for `reconnectStream` during
    /// [`PUBLISHER_GRACE`].
    Failed { id: PeerId, reason: &'static str },
    /// A publisher is gone for good: its consent expired (the browser vanished), or its
    /// transport failed or closed and no `reconnectStream` came within
    /// [`PUBLISHER_GRACE`]. The shard removed it with its tracks (its subscribers' legs
    /// stay, without tracks, until released); the control plane unpublishes the stream.
    Vanished { id: PeerId, reason: &'static str },
    /// The browser closed the DTLS association (same consequences as `Failed`).
    Closed { id: PeerId },
    /// A command named a peer that does not exist (e.g. a subscriber of a publisher that has
    /// just gone): the control plane cleans its side up.
    Rejected { id: PeerId, reason: &'static str },
}

/// Shared, cheaply cloned per-shard stats handle (see [`MediaStats`]).
pub type MediaStatsHandle = Arc<MediaStats>;
