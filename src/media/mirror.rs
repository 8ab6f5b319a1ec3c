//! Producers across shards: a [`Mirror`] is a publisher of another shard, present on this one
//! for its consumers here, fed through the shard mesh ([`crate::shard::mesh`]).
//!
//! The origin shard (the publisher's) decrypts each packet once, forwards it to its own
//! consumers and copies it once per mirroring shard into the mesh (`Producer::mirrored_to`).
//! The mirror has router tracks of its own: its consumers' rewriters, a retransmission ring
//! (NACKs of its consumers are answered here, never crossing back) and a keyframe limiter.
//! Keyframe requests go back to the origin (through the origin's limiter too, except the one
//! a new consumer makes); the publisher's sender reports come forward and are translated for
//! each consumer here.
//!
//! Lifecycle: the first consumer of a publisher of another shard makes the mirror and sends
//! `ATTACH`, repeated every tick until the origin answers `ATTACHED` (or packets arrive); the
//! last consumer's removal takes the mirror and sends `DETACH`. Control messages that find the
//! ring full wait in a bounded backlog; packets that find it full are dropped and counted
//! (`mesh_full`).

use std::time::Instant;

use super::core::{MediaCore, Role};
use super::egress::Egress;
use super::stats::{MediaDrop, MediaStats, stat};
use super::{Origin, PeerId};
use crate::router::TrackId;
use crate::sdp::{ExtIds, MediaKind};
use crate::shard::mesh::{MeshMsg, MeshPort};
use crate::wire::codec::Codec;
use crate::wire::rtcp::sr;
use crate::wire::rtp::RtpView;

pub(super) struct Mirror {
    pub origin: usize,
    pub tracks: Vec<MirrorTrack>,
    /// Consumers of this shard receiving it; the mirror goes with the last.
    consumers: usize,
    /// The origin acknowledged (or packets arrived): no more attach requests.
    attached: bool,
}

pub(super) struct MirrorTrack {
    pub track: TrackId,
    /// The publisher's extension ids (the packets in the ring carry them).
    pub ext: ExtIds,
    /// The publisher's track (m-line) it mirrors, and its encoding and codec when consumers
    /// choose its layers: the same expansion as the origin's producer, so mesh indexes match.
    pub source: usize,
    pub layer: Option<(u8, Codec)>,
    /// The last sequence numbers passed to the origin as NACKed here and never received
    /// (`msg::NACK`), with when: one consumer's NACK of a packet reaches the origin, the same
    /// from the shard's other consumers right after it does not (a ring of [`RENACK_SEEN`]).
    renacked: [Option<(u16, Instant)>; RENACK_SEEN],
    next_renacked: usize,
}

/// Sequence numbers a mirror track remembers passing to its origin.
const RENACK_SEEN: usize = 8;
/// A sequence number passed to the origin is not passed again this soon (the origin asks
/// the publisher once per retry interval anyway, at least 10 ms).
const RENACK_QUIET: std::time::Duration = std::time::Duration::from_millis(10);

/// What a mesh message is ([`MeshMsg::kind`]); its `key` is always the publisher's peer id.
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
    /// Mirror → origin: a keyframe of track `index`; one byte, 1 = at once (a new consumer),
    /// 0 = through the origin's keyframe limiter.
    pub const KEYFRAME: u8 = 6;
    /// Mirror → origin: a consumer NACKed packet `seq` (two bytes, big-endian, the
    /// publisher's) of track `index`, which the mirror never received.
    pub const NACK: u8 = 7;
}

/// Control messages waiting for room in the mesh, at most.
pub(super) const MESH_BACKLOG: usize = 256;

impl MediaCore {
    /// Counts a new consumer of mirrored `publisher` here: its mirror, made now from `origin`
    /// (and the origin asked for packets) for a first consumer. False: `publisher` is not
    /// mirrored here and no `origin` was given.
    pub(super) fn mirror_for(&mut self, publisher: PeerId, origin: Option<Origin>) -> bool {
        if let Some(m) = self.mirrors.get_mut(&publisher) {
            m.consumers += 1;
            return true;
        }
        let Some(origin) = origin else { return false };
        let mut tracks = Vec::new();
        for (source, t) in origin.tracks.iter().enumerate() {
            for e in 0..t.encodings() {
                tracks.push(MirrorTrack {
                    track: self.router.add_track(t.clock_rate, 0, t.kind == MediaKind::Video),
                    ext: t.ext,
                    source,
                    layer: t.layered().then_some((e as u8, t.codec)),
                    renacked: [None; RENACK_SEEN],
                    next_renacked: 0,
                });
            }
        }
        let m = Mirror { origin: origin.shard, tracks, consumers: 1, attached: false };
        self.mirrors.insert(publisher, m);
        self.mesh_control(origin.shard, msg::ATTACH, 0, publisher.0, 0);
        true
    }

    /// A consumer of `publisher` left this shard: the last one takes its mirror (if it is one)
    /// along and tells the origin to stop.
    pub(super) fn release_mirror(&mut self, publisher: PeerId) {
        let Some(m) = self.mirrors.get_mut(&publisher) else { return };
        m.consumers = m.consumers.saturating_sub(1);
        if m.consumers > 0 {
            return;
        }
        let Some(m) = self.mirrors.remove(&publisher) else { return };
        for t in &m.tracks {
            self.router.remove_track(t.track);
            self.dd_structures.forget(t.track);
        }
        self.mesh_control(m.origin, msg::DETACH, 0, publisher.0, 0);
    }

    /// Copies a publisher packet (`index`: its track) to every shard mirroring it.
    pub(super) fn copy_to_mirrors(&mut self, slot: u32, index: usize, packet: &[u8]) {
        let Some(mesh) = self.mesh.as_mut() else { return };
        let Some(peer) = self.peers.get(slot as usize).and_then(Option::as_ref) else { return };
        let Role::Publisher(p) = &peer.role else { return };
        for &to in &p.mirrored_to {
            push_counted(mesh, &self.stats, to, msg::RTP, index as u8, peer.id.0, packet);
        }
    }

    /// Forwards a publisher's sender report of track `index` to every shard mirroring it.
    pub(super) fn copy_sr_to_mirrors(&mut self, slot: u32, index: usize, info: &sr::SenderInfo) {
        let Some(mesh) = self.mesh.as_mut() else { return };
        let Some(peer) = self.peers.get(slot as usize).and_then(Option::as_ref) else { return };
        let Role::Publisher(p) = &peer.role else { return };
        let bytes = encode_sr(info);
        for &to in &p.mirrored_to {
            push_counted(mesh, &self.stats, to, msg::SR, index as u8, peer.id.0, &bytes);
        }
    }

    /// Asks the origin of mirrored `publisher` for a keyframe of `track` (`now`: at once).
    /// False when `publisher` is not mirrored here.
    pub(super) fn keyframe_from_origin(
        &mut self,
        publisher: PeerId,
        track: TrackId,
        now: bool,
    ) -> bool {
        let Some(m) = self.mirrors.get(&publisher) else { return false };
        let Some(i) = m.tracks.iter().position(|t| t.track == track) else { return true };
        let to = m.origin;
        self.mesh_push(to, msg::KEYFRAME, i as u8, publisher.0, &[u8::from(now)]);
        true
    }

    /// Writes a message for shard `to` into the mesh now (a single shard has none).
    fn mesh_push(&mut self, to: usize, kind: u8, index: u8, key: u64, bytes: &[u8]) {
        if let Some(mesh) = self.mesh.as_mut() {
            push_counted(mesh, &self.stats, to, kind, index, key, bytes);
        }
    }

    /// Tells the origin of mirrored `publisher` that a consumer here NACKed packet `seq` of
    /// `track`, which never reached this shard (the origin may ask the publisher again),
    /// unless it was told so in the last [`RENACK_QUIET`]. Not queued when the mesh is full:
    /// the consumer's next NACK asks again.
    pub(super) fn renack_at_origin(
        &mut self,
        now: Instant,
        publisher: PeerId,
        track: TrackId,
        seq: u16,
    ) {
        let Some(m) = self.mirrors.get_mut(&publisher) else { return };
        let Some(i) = m.tracks.iter().position(|t| t.track == track) else { return };
        let t = &mut m.tracks[i];
        let recent = |e: &Option<(u16, Instant)>| {
            e.is_some_and(|(s, at)| s == seq && now.saturating_duration_since(at) < RENACK_QUIET)
        };
        if t.renacked.iter().any(recent) {
            return;
        }
        t.renacked[t.next_renacked] = Some((seq, now));
        t.next_renacked = (t.next_renacked + 1) % RENACK_SEEN;
        let to = m.origin;
        self.mesh_push(to, msg::NACK, i as u8, publisher.0, &seq.to_be_bytes());
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

    pub(super) fn flush_mesh_backlog(&mut self) {
        // No port while `drain_mesh` has it out: it flushes after putting it back.
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
    fn on_mesh(&mut self, now: Instant, from: usize, m: &MeshMsg, tx: &mut Egress<'_>) {
        stat!(self.stats, mesh_in);
        let publisher = PeerId(m.key);
        match m.kind {
            msg::RTP => {
                let Some(mirror) = self.mirrors.get_mut(&publisher) else { return };
                mirror.attached = true;
                let Some(t) = mirror.tracks.get(usize::from(m.index)) else { return };
                let (track, ext, layer) = (t.track, t.ext, t.layer);
                let Ok(v) = RtpView::parse(m.bytes()) else {
                    return self.stats.count_drop(MediaDrop::Malformed);
                };
                self.forward(now, track, layer, &v, &ext, tx);
            }
            msg::SR => {
                let t =
                    self.mirrors.get(&publisher).and_then(|x| x.tracks.get(usize::from(m.index)));
                if let (Some(t), Some(info)) = (t, decode_sr(m.bytes())) {
                    self.relay_sr(t.track, &info, tx);
                }
            }
            msg::ATTACHED => {
                if let Some(mirror) = self.mirrors.get_mut(&publisher) {
                    mirror.attached = true;
                }
            }
            msg::ATTACH | msg::DETACH => {
                let Some(p) = self.producer_mut(publisher) else { return };
                p.mirrored_to.retain(|&d| d != from);
                if m.kind == msg::ATTACH {
                    p.mirrored_to.push(from);
                    self.mesh_control(from, msg::ATTACHED, 0, publisher.0, 0);
                }
            }
            msg::KEYFRAME => {
                let Some(p) = self.producer_mut(publisher) else { return };
                let Some(track) = p.tracks.get(usize::from(m.index)).map(|t| t.track) else {
                    return;
                };
                let forced = m.bytes().first() == Some(&1);
                if forced || self.router.on_keyframe_request(now, track).unwrap_or(false) {
                    self.send_pli(publisher, track, true, tx);
                }
            }
            msg::NACK => {
                let Ok(seq) = <[u8; 2]>::try_from(m.bytes()).map(u16::from_be_bytes) else {
                    return self.stats.count_drop(MediaDrop::Malformed);
                };
                let Some(p) = self.producer_mut(publisher) else { return };
                let Some(track) = p.tracks.get(usize::from(m.index)).map(|t| t.track) else {
                    return;
                };
                self.renew_nacks(publisher, &[(track, seq)], now, tx);
            }
            _ => self.stats.count_drop(MediaDrop::Malformed),
        }
    }

    /// Mirrors whose origin has not answered yet ask again; control messages retried. True
    /// while something still waits (the timer then runs again a tick later).
    pub(super) fn mesh_tick(&mut self) -> bool {
        let waiting: Vec<(PeerId, usize)> =
            self.mirrors.iter().filter(|(_, m)| !m.attached).map(|(p, m)| (*p, m.origin)).collect();
        let pending = !waiting.is_empty();
        for (p, origin) in waiting {
            self.mesh_control(origin, msg::ATTACH, 0, p.0, 0);
        }
        if !self.mesh_backlog.is_empty() {
            self.flush_mesh_backlog();
        }
        pending || !self.mesh_backlog.is_empty()
    }

    /// Whether messages from other shards wait.
    pub fn has_mesh_input(&self) -> bool {
        self.mesh.as_ref().is_some_and(MeshPort::has_input) || self.has_ingest_input()
    }

    /// Handles one message from another shard, if one waits.
    pub(crate) fn drain_mesh(&mut self, now: Instant, tx: &mut Egress<'_>) -> bool {
        // Camera packets ride with the mesh messages (`ingest.rs`).
        let camera = self.drain_ingest(now, tx);
        let Some(mut port) = self.mesh.take() else { return camera };
        let mut got = camera;
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
        self.wake_recorders();
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

/// Writes a message for shard `to` into `mesh`, counted (`mesh_out`); dropped and counted
/// (`MeshFull`) when the mesh has no room.
#[inline]
fn push_counted(
    mesh: &mut MeshPort,
    stats: &MediaStats,
    to: usize,
    kind: u8,
    index: u8,
    key: u64,
    bytes: &[u8],
) {
    if mesh.push(to, kind, index, key, bytes) {
        stat!(stats, mesh_out);
    } else {
        stats.count_drop(MediaDrop::MeshFull);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_report_crosses_unchanged() {
        let info = sr::SenderInfo {
            ssrc: 1,
            ntp_time: 0x0102_0304_0506_0708,
            rtp_timestamp: 9,
            packet_count: 10,
            octet_count: 11,
        };
        assert_eq!(decode_sr(&encode_sr(&info)), Some(info));
        assert_eq!(decode_sr(&[0; 23]), None);
    }
}
