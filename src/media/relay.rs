//! Relay legs: a publisher's tracks carried once per (track, node) pair from the node that
//! owns it (node A) to another node (node B), where they feed a *relay producer* that B's
//! subscribers consume as if the publisher were local.
//!
//! - **Relay out** (on A, a shard with the publisher or a mirror of it): a consumer peer like
//!   a subscriber leg (`Role::Subscriber`: [`super::consumer::write_rtp`], seq/ts rewriting,
//!   NACKs answered from the retransmission ring, PLIs through the keyframe limiter, sender
//!   reports translated), with one outgoing track per *encoding* (B's consumers choose
//!   layers, so nothing is dropped here) and no bandwidth estimator.
//! - **Relay in** (on B): a publisher peer (`Role::Publisher`, a [`super::producer::Producer`])
//!   whose encodings are bound to the relay's SSRCs from the start; its NACKs, PLIs and
//!   receiver reports go back to A on the same path. No TWCC or REMB on a relay: nobody on
//!   A would read them (A forwards every packet, whatever B's link).
//! - **Transport**: no ICE and no DTLS. A fixed path (the other node's shard media socket,
//!   [`super::MediaEngine::relay_address`]) and SRTP (AEAD_AES_128_GCM) from keys A draws
//!   ([`RelayPlan::new`]) and hands to B in the [`RelayOffer`] (serde, for the control plane's
//!   internal HTTP call).
//! - **Demultiplexing**: every relay leg between two shards shares one address pair, so a
//!   relay route is keyed by (source address, SSRC): RTP by its SSRC, SRTCP by the sender
//!   SSRC of its first packet (both in the clear). A relay in owns its legs' SSRCs (media and
//!   RTX) and the relay out's RTCP SSRC; a relay out owns the relay in's RTCP SSRC. The
//!   sender (A) draws them at random; a receiver refuses a duplicate
//!   (`ShardEvent::Rejected { reason: "duplicate relay SSRC" }`). Per datagram: a scan of the
//!   shard's few relay source addresses, then one hash lookup; no allocation.
//! - **Ending**: released like any peer (`ShardCommand::RemovePeer`). A relay in that heard
//!   nothing for [`RELAY_TIMEOUT`] vanishes like a publisher (`ShardEvent::Vanished`); a
//!   relay out that heard nothing back for as long (B sends receiver reports every second)
//!   fails like a subscriber leg (`ShardEvent::Failed`). Neither falls silent while the
//!   other is there, media or not: the relay in sends a receiver report with an RRTR every
//!   `rtcp_interval` (1 s), which the relay out answers at once with a DLRR (RFC 3611).
//!
//! Hand-written because no crate does this: it is the media core's own peers over a path
//! without ICE/DTLS; the SRTP is `crate::srtp`'s.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::consumer::{Consumer, ConsumerTrack};
use super::core::{MediaCore, Peer, Role};
use super::producer::Producer;
use super::transport::{RelayPath, Transport};
use super::{InTrack, Origin, OutTrack, PeerId, ShardCommand, ShardEvent};
use crate::router::{LegId, SubscribeParams};
use crate::sdp::MediaKind;
use crate::srtp::{MasterKey, SrtpContext, SrtpError, SrtpProfile};

/// A relay leg that hears nothing from the other node for this long ends.
pub const RELAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Tracks (m-lines) a relay offer may carry.
const MAX_TRACKS: usize = 16;

/// One SRTP master key and salt (AEAD_AES_128_GCM).
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SrtpKey {
    pub key: [u8; 16],
    pub salt: [u8; 12],
}

impl std::fmt::Debug for SrtpKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SrtpKey(..)")
    }
}

impl SrtpKey {
    fn random() -> SrtpKey {
        // rand's thread generator is a CSPRNG seeded from the OS.
        SrtpKey { key: rand::random(), salt: rand::random() }
    }

    fn context(&self, ssrcs: usize) -> Result<SrtpContext, SrtpError> {
        let master = MasterKey::new(SrtpProfile::AeadAes128Gcm, &self.key, &self.salt)?;
        SrtpContext::with_max_ssrcs(&master, ssrcs)
    }
}

/// The keys of one relay leg, as one side sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayKeys {
    /// What this side protects with.
    pub send: SrtpKey,
    /// What this side unprotects with (the other side's `send`).
    pub receive: SrtpKey,
}

impl RelayKeys {
    /// The same keys as the other side sees them.
    pub fn reversed(&self) -> RelayKeys {
        RelayKeys { send: self.receive, receive: self.send }
    }
}

/// One relayed stream: one encoding of one publisher track, with its SSRCs on the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTrack {
    /// The publisher's track (m-line) index.
    pub source: usize,
    /// Its encoding (0 without simulcast).
    pub encoding: u8,
    pub ssrc: u32,
    /// RTX on the relay, when the publisher's track has an RTX payload type.
    pub rtx_ssrc: Option<u32>,
}

/// Why a relay command or offer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("relay: no tracks, or more than {MAX_TRACKS}")]
    TrackCount,
    #[error("relay: a leg names no track or encoding of the publisher")]
    NoSuchTrack,
    #[error("relay: SSRC 0 or used twice")]
    BadSsrc,
    #[error("relay: a track has a leg missing or twice")]
    Legs,
}

/// What node A decides for relaying one publisher to one node: SSRCs (media, RTX, RTCP)
/// and keys. Node A sends [`RelayPlan::command`] to the publisher's shard (or a shard
/// mirroring it) and [`RelayPlan::offer`] to node B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPlan {
    tracks: Vec<InTrack>,
    legs: Vec<RelayTrack>,
    /// A's view.
    keys: RelayKeys,
    /// Sender SSRC of the relay out's own RTCP (on A), and of the relay in's (on B).
    out_rtcp_ssrc: u32,
    in_rtcp_ssrc: u32,
}

/// Distinct non-zero random SSRCs.
fn draw(used: &mut Vec<u32>) -> u32 {
    // Bounded: a collision among a few dozen random u32s is rare; 64 draws cannot all collide
    // in practice, and the last one is taken anyway (the receiver refuses a duplicate).
    let mut s = 1;
    for _ in 0..64 {
        s = rand::random::<u32>() | 1;
        if !used.contains(&s) {
            break;
        }
    }
    used.push(s);
    s
}

impl RelayPlan {
    /// A plan for a publisher with `publisher_tracks` (as in its `AddPublisher`): one relay
    /// stream per track and encoding, RTX for the tracks that have an RTX payload type, fresh
    /// keys both ways.
    pub fn new(publisher_tracks: &[InTrack]) -> RelayPlan {
        let mut used = Vec::new();
        let mut legs = Vec::new();
        for (source, t) in publisher_tracks.iter().enumerate() {
            for e in 0..t.encodings() {
                let ssrc = draw(&mut used);
                let rtx_ssrc = t.rtx_pt.map(|_| draw(&mut used));
                legs.push(RelayTrack { source, encoding: e as u8, ssrc, rtx_ssrc });
            }
        }
        RelayPlan {
            tracks: publisher_tracks.to_vec(),
            legs,
            keys: RelayKeys { send: SrtpKey::random(), receive: SrtpKey::random() },
            out_rtcp_ssrc: draw(&mut used),
            in_rtcp_ssrc: draw(&mut used),
        }
    }

    /// The relay streams (one per track and encoding), as A sends them.
    pub fn out_tracks(&self) -> Vec<RelayTrack> {
        self.legs.clone()
    }

    /// What node B needs for its relay in (serialise it for the internal call).
    pub fn offer(&self) -> RelayOffer {
        RelayOffer {
            tracks: self.tracks.clone(),
            legs: self.legs.clone(),
            keys: self.keys.reversed(),
            rtcp_ssrc: self.in_rtcp_ssrc,
            peer_rtcp_ssrc: self.out_rtcp_ssrc,
        }
    }

    /// The relay out's command on A: peer `id` relays `publisher` to `remote` (node B's
    /// [`super::MediaEngine::relay_address`] of the relay in's shard); `origin` as for a
    /// subscriber when the publisher is on another shard of A.
    pub fn command(
        &self,
        id: PeerId,
        publisher: PeerId,
        remote: SocketAddr,
        origin: Option<Origin>,
    ) -> ShardCommand {
        ShardCommand::AddRelayOut { id, publisher, remote, plan: Box::new(self.clone()), origin }
    }

    /// The outgoing track of relay stream `leg`: the publisher's payload types and extension
    /// ids (no transport-wide sequence numbers on a relay).
    fn out_track(&self, leg: &RelayTrack) -> Option<OutTrack> {
        let t = self.tracks.get(leg.source)?;
        let mut ext = t.ext;
        ext.twcc = 0;
        Some(OutTrack {
            source: leg.source,
            kind: t.kind,
            mid: t.mid.clone(),
            pt: t.pt,
            ssrc: leg.ssrc,
            rtx: t.rtx_pt.zip(leg.rtx_ssrc),
            ext,
        })
    }
}

/// Everything node B needs for a relay in, from node A (JSON over the internal call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOffer {
    /// The publisher's tracks as negotiated on A.
    pub tracks: Vec<InTrack>,
    /// One per track and encoding.
    pub legs: Vec<RelayTrack>,
    /// B's view.
    pub keys: RelayKeys,
    /// Sender SSRC of the relay in's RTCP (B's), and of the relay out's (A's).
    pub rtcp_ssrc: u32,
    pub peer_rtcp_ssrc: u32,
}

impl RelayOffer {
    /// Checks what a peer node sent: a sane number of tracks, each with exactly one leg per
    /// encoding, SSRCs non-zero and distinct.
    pub fn check(&self) -> Result<(), RelayError> {
        if self.tracks.is_empty() || self.tracks.len() > MAX_TRACKS {
            return Err(RelayError::TrackCount);
        }
        let mut seen = [[false; super::layers::MAX_ENCODINGS]; MAX_TRACKS];
        for l in &self.legs {
            let t = self.tracks.get(l.source).ok_or(RelayError::NoSuchTrack)?;
            if usize::from(l.encoding) >= t.encodings() {
                return Err(RelayError::NoSuchTrack);
            }
            let slot = seen
                .get_mut(l.source)
                .and_then(|s| s.get_mut(usize::from(l.encoding)))
                .ok_or(RelayError::NoSuchTrack)?;
            if *slot {
                return Err(RelayError::Legs);
            }
            *slot = true;
        }
        let complete =
            self.tracks.iter().zip(&seen).all(|(t, s)| s.iter().take(t.encodings()).all(|&b| b));
        if !complete {
            return Err(RelayError::Legs);
        }
        let mut ssrcs: Vec<u32> = self.ssrcs().collect();
        let n = ssrcs.len();
        ssrcs.sort_unstable();
        ssrcs.dedup();
        if ssrcs.len() != n || ssrcs.first() == Some(&0) {
            return Err(RelayError::BadSsrc);
        }
        Ok(())
    }

    /// Every SSRC the relay in receives on (media, RTX, the relay out's RTCP) and its own.
    fn ssrcs(&self) -> impl Iterator<Item = u32> + '_ {
        self.legs
            .iter()
            .flat_map(|l| [Some(l.ssrc), l.rtx_ssrc])
            .flatten()
            .chain([self.peer_rtcp_ssrc, self.rtcp_ssrc])
    }

    /// The relay producer's tracks on B: the publisher's, without TWCC, REMB or RIDs on the
    /// wire (the SSRCs are known), NACK and PLI for video.
    pub fn in_tracks(&self) -> Vec<InTrack> {
        self.tracks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut t = t.clone();
                let first = self.legs.iter().find(|l| l.source == i);
                t.ssrc = first.map(|l| l.ssrc);
                t.rtx_ssrc = first.and_then(|l| l.rtx_ssrc);
                t.ext.twcc = 0;
                t.ext.rid = 0;
                t.ext.repaired_rid = 0;
                t.transport_cc = false;
                t.remb = false;
                let video = t.kind == MediaKind::Video;
                t.nack = video;
                t.pli = video;
                t.fir = false;
                t
            })
            .collect()
    }

    /// The relay in's command on B: peer `id`, fed from `remote` (node A's relay address of
    /// the relay out's shard). Subscribers on B then name `id` as their publisher.
    pub fn command(&self, id: PeerId, remote: SocketAddr) -> ShardCommand {
        ShardCommand::AddRelayIn { id, remote, offer: Box::new(self.clone()) }
    }
}

impl MediaCore {
    /// When relay leg `slot` ends unless it hears from the other node; `None` when it has
    /// been silent for [`RELAY_TIMEOUT`] (the caller ends it).
    pub(super) fn relay_deadline(&self, slot: u32, now: Instant) -> Option<Instant> {
        let r = self.peers.get(slot as usize)?.as_ref()?.transport.relay.as_ref()?;
        let until = r.last_heard + RELAY_TIMEOUT;
        (now < until).then_some(until)
    }

    /// A relay peer in a free slot, its relay routes `(remote, ssrc)` taken; `None` (and a
    /// `Rejected` event) when its id or one of the routes is taken, or the keys are refused.
    fn insert_relay(
        &mut self,
        id: PeerId,
        now: Instant,
        remote: SocketAddr,
        keys: &RelayKeys,
        (rtcp_ssrc, routes): (u32, &[u32]),
        role: Role,
    ) -> Option<u32> {
        let taken = routes.iter().any(|&s| self.routes.relays.contains_key(&(remote, s)));
        let reason = if self.by_id.contains_key(&id) {
            Some("duplicate peer")
        } else if taken {
            Some("duplicate relay SSRC")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.events.push_back(ShardEvent::Rejected { id, reason });
            return None;
        }
        let ssrcs = routes.len() + 4;
        let (Ok(srtp_out), Ok(srtp_in)) = (keys.send.context(ssrcs), keys.receive.context(ssrcs))
        else {
            self.events.push_back(ShardEvent::Rejected { id, reason: "relay keys refused" });
            return None;
        };
        let path = RelayPath { ssrcs: routes.to_vec(), last_heard: now };
        let transport =
            Transport::relay(&self.dtls, now, remote, (srtp_out, srtp_in), rtcp_ssrc, path);
        let slot = self.place_peer(Peer { id, transport, role });
        self.routes.add_relay(remote, routes, slot);
        Some(slot)
    }

    /// `ShardCommand::AddRelayOut`: a consumer of every track and encoding of `publisher`
    /// (here or mirrored here from `origin`), sent to `remote`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_relay_out(
        &mut self,
        now: Instant,
        id: PeerId,
        publisher: PeerId,
        remote: SocketAddr,
        plan: &RelayPlan,
        origin: Option<Origin>,
        tx: &mut super::egress::Egress<'_>,
    ) {
        let here = self.mesh.as_ref().map(crate::shard::mesh::MeshPort::index);
        let local = self.publisher_sources(publisher);
        let remote_origin =
            origin.filter(|o| local.is_none() && here.is_some_and(|h| h != o.shard));
        if local.is_none() && remote_origin.is_none() {
            self.events.push_back(ShardEvent::Rejected { id, reason: "publisher not found" });
            return;
        }
        let Some(slot) = self.insert_relay(
            id,
            now,
            remote,
            &plan.keys,
            (plan.out_rtcp_ssrc, &[plan.in_rtcp_ssrc]),
            Role::Subscriber(Consumer::new(publisher, Vec::new())),
        ) else {
            return;
        };
        let mirrored = self.mirror_for(publisher, remote_origin);
        let sources = if mirrored { self.publisher_sources(publisher) } else { local };
        let sources = sources.unwrap_or_default();
        let mut out = Vec::with_capacity(plan.legs.len());
        for leg in &plan.legs {
            let found = sources
                .iter()
                .find(|s| s.source == leg.source && s.layer.map_or(0, |(e, _)| e) == leg.encoding);
            let (Some(s), Some(cfg)) = (found, plan.out_track(leg)) else { continue };
            let params = SubscribeParams {
                out_ssrc: cfg.ssrc,
                pt: cfg.pt,
                rtx: cfg.rtx,
                initial_seq: rand::random(),
                initial_ts: rand::random(),
            };
            if self.router.subscribe(s.track, LegId(slot), params).is_ok() {
                out.push(ConsumerTrack {
                    track: s.track,
                    cfg,
                    packets: 0,
                    octets: 0,
                    layers: None,
                });
            }
        }
        if let Some(Some(peer)) = self.peers.get_mut(slot as usize) {
            peer.role = Role::Subscriber(Consumer::new(publisher, out));
        }
        // The relay in asks for keyframes as its consumers connect; one now starts the video.
        self.request_keyframes_for(slot, tx);
    }

    /// `ShardCommand::AddRelayIn`: a producer fed by the relay from `remote`.
    pub(super) fn add_relay_in(
        &mut self,
        now: Instant,
        id: PeerId,
        remote: SocketAddr,
        offer: &RelayOffer,
    ) {
        if offer.check().is_err() {
            self.events.push_back(ShardEvent::Rejected { id, reason: "relay offer refused" });
            return;
        }
        let routes: Vec<u32> = offer.ssrcs().filter(|&s| s != offer.rtcp_ssrc).collect();
        let mut producer = Producer::new(&mut self.router, offer.in_tracks(), now, &self.settings);
        for t in producer.tracks.iter_mut() {
            if let Some(l) =
                offer.legs.iter().find(|l| l.source == t.source && l.encoding == t.encoding)
            {
                t.ssrc = Some(l.ssrc);
                t.rtx_ssrc = l.rtx_ssrc;
            }
        }
        let tracks: Vec<_> = producer.tracks.iter().map(|t| t.track).collect();
        let role = Role::Publisher(producer);
        let keys = offer.keys;
        if self.insert_relay(id, now, remote, &keys, (offer.rtcp_ssrc, &routes), role).is_none() {
            for t in tracks {
                self.router.remove_track(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdp::ExtIds;
    use crate::wire::codec::Codec;

    fn track(kind: MediaKind, rids: &[&str]) -> InTrack {
        InTrack {
            kind,
            mid: "0".into(),
            pt: 96,
            clock_rate: 90_000,
            rtx_pt: (kind == MediaKind::Video).then_some(97),
            ssrc: Some(5),
            rtx_ssrc: None,
            ext: ExtIds { twcc: 3, rid: 10, ..ExtIds::default() },
            nack: true,
            pli: true,
            fir: true,
            remb: true,
            transport_cc: true,
            codec: Codec::Vp8,
            rids: rids.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn a_plan_has_one_leg_per_encoding_and_an_offer_that_checks() {
        let plan = RelayPlan::new(&[
            track(MediaKind::Audio, &[]),
            track(MediaKind::Video, &["q", "h", "f"]),
        ]);
        let legs = plan.out_tracks();
        assert_eq!(legs.len(), 4);
        assert!(legs[0].rtx_ssrc.is_none() && legs[1..].iter().all(|l| l.rtx_ssrc.is_some()));
        let offer = plan.offer();
        assert_eq!(offer.check(), Ok(()));
        assert_eq!(offer.keys, plan.keys.reversed());
        let json = serde_json::to_string(&offer).expect("serialises");
        let back: RelayOffer = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, offer);
        let tracks = offer.in_tracks();
        assert_eq!((tracks[1].ext.twcc, tracks[1].transport_cc, tracks[1].remb), (0, false, false));
        assert_eq!(tracks[1].rids.len(), 3, "still simulcast on B");
        assert!(!tracks[0].nack && tracks[1].nack);
    }

    #[test]
    fn the_fuzz_seeds_are_what_they_say() {
        let seed = |name: &str| -> RelayOffer {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/relay_offer/");
            let text = std::fs::read_to_string(format!("{dir}{name}.json")).expect("seed");
            serde_json::from_str(&text).expect("seed parses")
        };
        assert_eq!(seed("simulcast").check(), Ok(()));
        assert_eq!(seed("vp9_single").check(), Ok(()));
        assert_eq!(seed("duplicate_ssrc").check(), Err(RelayError::BadSsrc));
        assert_eq!(seed("missing_leg").check(), Err(RelayError::Legs));
    }

    #[test]
    fn a_bad_offer_is_refused_by_rule() {
        let plan = RelayPlan::new(&[track(MediaKind::Video, &["q", "f"])]);
        let mut o = plan.offer();
        o.legs[1].ssrc = o.legs[0].ssrc;
        assert_eq!(o.check(), Err(RelayError::BadSsrc));
        let mut o = plan.offer();
        o.legs.pop();
        assert_eq!(o.check(), Err(RelayError::Legs));
        let mut o = plan.offer();
        o.legs[0].encoding = 5;
        assert_eq!(o.check(), Err(RelayError::NoSuchTrack));
        let mut o = plan.offer();
        o.tracks.clear();
        assert_eq!(o.check(), Err(RelayError::TrackCount));
    }
}
