//! [`Consumer`]: what one subscriber receives on its transport — one outgoing track per
//! router track it subscribes to, with its counters — and [`write_rtp`], the one function
//! that writes an RTP packet for a consumer into a send slot, used by forwarding and by NACK
//! answers alike.
//!
//! The per-leg rewrite state (sequence numbers, timestamps, RTX sequence) is the router's
//! [`Subscription`](crate::router::Subscription); the consumer holds what the leg negotiated
//! (SSRCs, payload types, extension ids) and what it sent.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::bwe::{ClusterId, SendSideBwe};
use super::egress::Egress;
use super::layers::{
    LayerSelector, LayerTarget, MAX_ENCODINGS, PacketMeta, SeqTsRewriter, Verdict,
};
use super::stats::{MediaDrop, MediaStats};
use super::{OutTrack, PeerId};
use crate::router::TrackId;
use crate::sdp::ExtIds;
use crate::shard::TxSlot;
use crate::srtp::SrtpContext;
use crate::wire::codec::av1_dd::{self, DdStructure, MAX_DESCRIPTOR_LEN};
use crate::wire::codec::{Codec, PacketInfo, vp8, vp9};
use crate::wire::rtcp::sr;
use crate::wire::rtp::RtpView;
use crate::wire::rtp_write::{HeaderFields, write_header, write_rtx_payload};

/// One outgoing track.
pub(super) struct ConsumerTrack {
    pub cfg: OutTrack,
    /// The router track it receives (a simulcast source's lowest encoding).
    pub track: TrackId,
    pub packets: u32,
    pub octets: u32,
    /// A source whose layers this consumer chooses (simulcast, VP9 SVC).
    pub layers: Option<Box<ConsumerLayers>>,
}

impl ConsumerTrack {
    /// Whether this track receives router track `t` (any of its encodings).
    pub fn receives(&self, t: TrackId) -> bool {
        self.track == t || self.layers.as_ref().is_some_and(|l| l.tracks.contains(&t))
    }
}

/// A remembered picture id: (outgoing seq, picture id, TL0PICIDX, valid).
type PicEntry = (u16, u16, Option<u8>, bool);

/// Outgoing sequence numbers whose picture id was rewritten, remembered for retransmissions.
const PIC_MEMORY: usize = 512;

/// What a consumer choosing layers keeps ([`super::layers`]): the selector, the rewriter that
/// makes one stream of what it forwards, and the picture ids it wrote (a retransmission
/// carries the same).
pub(super) struct ConsumerLayers {
    pub codec: Codec,
    /// The router track of each encoding, lowest first.
    pub tracks: Vec<TrackId>,
    pub selector: LayerSelector,
    pub rewriter: SeqTsRewriter,
    /// The publisher SSRC last seen per encoding: a new one (the publisher started over)
    /// resets the selector, which then waits for a keyframe.
    sources: [Option<u32>; MAX_ENCODINGS],
    /// Switches of selectors replaced by such a reset.
    switches_before: u64,
    /// Outgoing seq → (picture id, TL0PICIDX), by seq modulo [`PIC_MEMORY`].
    pics: Box<[PicEntry]>,
    /// The forwarded layers changed (or a keyframe, whose structure says "all active", went
    /// out): the next forwarded frame start carries the active decode targets in its AV1
    /// Dependency Descriptor ([`ConsumerLayers::announce_targets`]).
    pub announce: bool,
    /// That rewritten descriptor.
    pub dd: Box<[u8; MAX_DESCRIPTOR_LEN]>,
}

impl ConsumerLayers {
    pub fn new(
        codec: Codec,
        tracks: Vec<TrackId>,
        out_ssrc: u32,
        clock_rate: u32,
        first_seq: u16,
    ) -> ConsumerLayers {
        // Start on the lowest encoding, every layer of it: the estimate climbs from there.
        let target = LayerTarget { encoding: 0, spatial: 3, temporal: 3 };
        ConsumerLayers {
            codec,
            tracks,
            selector: LayerSelector::new(target, KEYFRAME_RETRY),
            rewriter: SeqTsRewriter::new(out_ssrc, clock_rate, first_seq),
            sources: [None; MAX_ENCODINGS],
            switches_before: 0,
            pics: vec![(0, 0, None, false); PIC_MEMORY].into_boxed_slice(),
            announce: false,
            dd: Box::new([0; MAX_DESCRIPTOR_LEN]),
        }
    }

    /// Layer switches so far.
    pub fn switches(&self) -> u64 {
        self.switches_before + self.selector.switches()
    }

    /// One publisher packet: the verdict, after a reset if its encoding's SSRC changed.
    pub fn on_packet(&mut self, now: Instant, p: &PacketMeta, info: &PacketInfo) -> Verdict {
        if let Some(slot) = self.sources.get_mut(usize::from(p.encoding)) {
            if slot.is_some_and(|s| s != p.ssrc) {
                self.switches_before += self.selector.switches();
                self.selector = LayerSelector::new(self.selector.target(), KEYFRAME_RETRY);
                self.sources = [None; MAX_ENCODINGS];
            }
            self.sources[usize::from(p.encoding)] = Some(p.ssrc);
        }
        let before = self.selector.current();
        let v = self.selector.on_packet(now, p, info);
        let sent = matches!(v.action, super::layers::Action::Forward { .. });
        self.announce |= self.selector.current() != before || (sent && info.keyframe);
        v
    }

    /// The Dependency Descriptor override for a packet [`Source`]: the announcement written
    /// by [`ConsumerLayers::announce_targets`] (`len`), or for a simulcast source none at all
    /// (an empty value: each encoding numbers its frames on its own, and a switch to one whose
    /// numbers are lower would make Chromium drop its keyframe as older than the structure it
    /// holds; without the descriptor it assembles AV1 from the payload alone).
    pub fn descriptor(&self, len: Option<usize>) -> Option<&[u8]> {
        if self.tracks.len() > 1 {
            return Some(&[]);
        }
        self.dd.get(..len?)
    }

    /// Descriptor `dd` of a forwarded frame start (structure `s`) rewritten into
    /// [`ConsumerLayers::dd`] with the decode targets the layers forwarded now serve as the
    /// active ones (AV1 RTP spec A.8.3.3: a receiver then ignores the chains of the others);
    /// its length, and the announcement done. `None`: it does not parse, leave it as it is.
    /// (Chromium decodes without it: it follows each frame's references and uses the chains
    /// only for loss notifications.)
    pub fn announce_targets(&mut self, dd: &[u8], s: &DdStructure) -> Option<usize> {
        let cur = self.selector.current()?;
        let p = av1_dd::parse(dd, Some(s)).ok()?;
        let s = p.new_structure.as_ref().unwrap_or(s);
        let active = s.targets_upto(cur.spatial, cur.temporal);
        let n = av1_dd::with_active_decode_targets(dd, &p, s, active, &mut self.dd[..]).ok()?;
        self.announce = false;
        Some(n)
    }

    /// Remembers the picture id written on outgoing `seq`.
    pub fn remember_picture(&mut self, seq: u16, picture_id: u16, tl0: Option<u8>) {
        let i = usize::from(seq) % PIC_MEMORY;
        if let Some(e) = self.pics.get_mut(i) {
            *e = (seq, picture_id, tl0, true);
        }
    }

    /// The picture id written on outgoing `seq`, if remembered.
    pub fn picture_of(&self, seq: u16) -> Option<(u16, Option<u8>)> {
        let (s, pic, tl0, valid) = *self.pics.get(usize::from(seq) % PIC_MEMORY)?;
        (valid && s == seq).then_some((pic, tl0))
    }
}

/// Keyframe requests of one consumer's selector, at most one per encoding per this interval.
const KEYFRAME_RETRY: Duration = Duration::from_millis(1000);

pub(super) struct Consumer {
    /// The publisher it receives (on this shard or mirrored here).
    pub publisher: PeerId,
    pub tracks: Vec<ConsumerTrack>,
    /// When its layers are chosen again ([`super::allocate`]).
    pub next_allocation: Option<Instant>,
    /// A climb to a higher layer under way, and when the next may start after a failed one.
    pub climb: Option<super::allocate::Climb>,
    pub climb_retry_at: Option<Instant>,
    pub climb_backoff: Duration,
}

impl Consumer {
    pub fn new(publisher: PeerId, tracks: Vec<ConsumerTrack>) -> Consumer {
        Consumer {
            publisher,
            tracks,
            next_allocation: None,
            climb: None,
            climb_retry_at: None,
            climb_backoff: Duration::ZERO,
        }
    }

    /// The router track the subscriber receives as `ssrc` (its media or RTX SSRC).
    pub fn track_for_ssrc(&self, ssrc: u32) -> Option<TrackId> {
        self.tracks
            .iter()
            .find(|o| o.cfg.ssrc == ssrc || o.cfg.rtx.is_some_and(|(_, r)| r == ssrc))
            .map(|o| o.track)
    }

    /// The publisher's sender report `info` for the outgoing track sent as `out_ssrc`, in
    /// that track's terms (its SSRC, timestamp offset `ts_offset`, its own counts).
    pub fn translate_sr(
        &self,
        out_ssrc: u32,
        ts_offset: u32,
        info: &sr::SenderInfo,
    ) -> Option<sr::SenderInfo> {
        let out = self.tracks.iter().find(|o| o.cfg.ssrc == out_ssrc)?;
        Some(sr::SenderInfo {
            ssrc: out.cfg.ssrc,
            ntp_time: info.ntp_time,
            rtp_timestamp: info.rtp_timestamp.wrapping_add(ts_offset),
            packet_count: out.packets,
            octet_count: out.octets,
        })
    }
}

/// One consumer track's sending side, for [`write_rtp`].
pub(super) struct LegOut<'a> {
    pub dst: SocketAddr,
    /// Through this shard's own TURN server ([`super::egress`]).
    pub hosted: bool,
    /// A relay leg to another node: its packets are sent as GSO trains
    /// ([`crate::shard::TxSlot::set_train`]).
    pub train: bool,
    pub local_ip: Option<IpAddr>,
    pub srtp: &'a mut SrtpContext,
    /// The transport's next transport-wide sequence number (taken when the track negotiated it).
    pub twcc_seq: &'a mut u16,
    pub cfg: &'a OutTrack,
    /// The transport's bandwidth estimator: told of every packet sent.
    pub bwe: Option<&'a mut SendSideBwe>,
    pub now: Instant,
}

impl super::transport::Transport {
    /// The sending side of consumer track `cfg` on this transport, once it has a selected path
    /// and keys.
    pub fn leg<'a>(&'a mut self, cfg: &'a OutTrack, now: Instant) -> Option<LegOut<'a>> {
        let dst = self.remote?;
        Some(LegOut {
            dst,
            hosted: self.relayed == Some(dst),
            train: self.relay.is_some(),
            local_ip: self.local_ip,
            srtp: self.srtp_out.as_mut()?,
            twcc_seq: &mut self.twcc_seq,
            cfg,
            bwe: self.bwe.as_deref_mut(),
            now,
        })
    }
}

/// The packet to write: the source packet, the publisher's extension ids, the header fields
/// for this leg and, for an RFC 4588 retransmission, the original sequence number.
pub(super) struct Source<'a, 'b> {
    pub packet: &'a RtpView<'b>,
    pub ext: &'a ExtIds,
    pub header: HeaderFields,
    pub osn: Option<u16>,
    /// abs-send-time now (6.18 fixed point, 24 bits).
    pub abs_send_time: u32,
    /// A picture id and TL0PICIDX to write into the payload descriptor (a consumer choosing
    /// layers): the payload is then copied, patched and encrypted in place.
    pub picture: Option<(Codec, u16, Option<u8>)>,
    /// A Dependency Descriptor to send instead of the source's (the active decode targets
    /// announced, [`ConsumerLayers::announce_targets`]; empty: none).
    pub dd: Option<&'a [u8]>,
}

/// A send slot for `leg` (from its local address) with the queue's length before it, and the
/// leg's next transport-wide sequence number when it negotiated one (taken: the packet must
/// go out with it). `None`, counted `TxFull`, when the pool is out of slots.
fn open_slot<'t>(
    tx: &'t mut Egress<'_>,
    leg: &mut LegOut<'_>,
    stats: &MediaStats,
) -> Option<(usize, TxSlot<'t>, Option<[u8; 2]>)> {
    let mark = tx.pending_len();
    let Some(mut slot) = tx.push(leg.dst) else {
        stats.count_drop(MediaDrop::TxFull);
        return None;
    };
    slot.set_source(leg.local_ip);
    if leg.train {
        slot.set_train();
    }
    let twcc = (leg.cfg.ext.twcc != 0).then(|| {
        let s = *leg.twcc_seq;
        *leg.twcc_seq = s.wrapping_add(1);
        s.to_be_bytes()
    });
    Some((mark, slot, twcc))
}

/// The one recipe that writes an RTP packet to a consumer track into a send slot: the header
/// with this leg's fields and extensions (mid, abs-send-time, transport-wide sequence number,
/// and the source's audio level, video orientation and Dependency Descriptor when both sides
/// negotiated them), for a retransmission the OSN, then the source's payload protected into
/// the slot (one copy, fused with the encryption). False when nothing was sent (a full pool or a packet too large:
/// counted as `TxFull`).
pub(super) fn write_rtp(
    tx: &mut Egress<'_>,
    mut leg: LegOut<'_>,
    src: &Source<'_, '_>,
    stats: &MediaStats,
) -> bool {
    let Some((mark, mut slot, twcc)) = open_slot(tx, &mut leg, stats) else { return false };
    let v = src.packet;
    let (e, se) = (&leg.cfg.ext, src.ext);
    let abs = src.abs_send_time.to_be_bytes();
    let level =
        (e.audio_level != 0 && se.audio_level != 0).then(|| v.extension(se.audio_level)).flatten();
    let orientation = (e.video_orientation != 0 && se.video_orientation != 0)
        .then(|| v.extension(se.video_orientation))
        .flatten();
    // The Dependency Descriptor (negotiated for AV1 only): as the publisher sent it, in the
    // two-byte form when it carries its structure (write_header picks the form).
    let dd = (e.dependency_descriptor != 0 && se.dependency_descriptor != 0)
        .then(|| src.dd.or_else(|| v.extension(se.dependency_descriptor)))
        .flatten();
    let exts: [(u8, &[u8]); 6] = [
        (e.mid, leg.cfg.mid.as_bytes()),
        (e.abs_send_time, &abs[1..]),
        (if twcc.is_some() { e.twcc } else { 0 }, twcc.as_ref().map_or(&[][..], |t| &t[..])),
        (if level.is_some() { e.audio_level } else { 0 }, level.unwrap_or_default()),
        (
            if orientation.is_some() { e.video_orientation } else { 0 },
            orientation.unwrap_or_default(),
        ),
        (if dd.is_some() { e.dependency_descriptor } else { 0 }, dd.unwrap_or_default()),
    ];
    let payload = &v.as_bytes()[v.header_len()..];
    // Room for the SRTP tag and trailer behind the packet.
    let room = slot.room().len().saturating_sub(64);
    let b = &mut slot.room()[..room];
    // Without a descriptor (every non-AV1 packet) the header walks five elements, as before.
    let exts = if dd.is_some() { &exts[..] } else { &exts[..5] };
    let Some(hl) = write_header(b, &src.header, v, exts) else {
        stats.count_drop(MediaDrop::TxFull);
        return false;
    };
    let res = match (src.osn, src.picture) {
        (Some(osn), picture) => match write_rtx_payload(b, hl, osn, payload) {
            Some(end) => {
                if let Some(p) = picture {
                    patch_picture(&mut b[hl + 2..end], p);
                }
                leg.srtp.protect_rtp(slot.room(), end, hl)
            }
            None => {
                stats.count_drop(MediaDrop::TxFull);
                return false;
            }
        },
        (None, Some(p)) => match b.get_mut(hl..hl + payload.len()) {
            Some(dst) => {
                dst.copy_from_slice(payload);
                patch_picture(dst, p);
                leg.srtp.protect_rtp(slot.room(), hl + payload.len(), hl)
            }
            None => {
                stats.count_drop(MediaDrop::TxFull);
                return false;
            }
        },
        (None, None) => leg.srtp.protect_rtp_payload_into(slot.room(), hl, payload),
    };
    match res {
        Ok(n) => {
            slot.commit_room(n);
            tx.route_from(mark, leg.hosted);
            if let Some(bwe) = leg.bwe {
                let seq = twcc.map(u16::from_be_bytes);
                bwe.handle_sent(leg.now, seq, n, None, src.osn.is_some());
            }
            true
        }
        Err(_) => {
            stats.count_drop(MediaDrop::TxFull);
            false
        }
    }
}

/// Writes a consumer's picture id (and TL0PICIDX) into a VP8 / VP9 payload descriptor in
/// place; a descriptor that does not parse is left as it is (the packet still goes).
fn patch_picture(payload: &mut [u8], (codec, id, tl0): (Codec, u16, Option<u8>)) {
    let _ = match codec {
        Codec::Vp8 => vp8::rewrite_picture_id(payload, id, tl0),
        Codec::Vp9 => vp9::rewrite_picture_id(payload, id, tl0),
        _ => Ok(()),
    };
}

/// A padding-only packet of `size` padding bytes on a leg's RTX stream (`pt`, `ssrc`, `seq`,
/// `ts`), sent for bandwidth probe `cluster`: RFC 3550 padding (P bit, the last byte the
/// count), the transport-wide sequence number so the feedback reports it. False when the pool
/// had no slot.
pub(super) fn write_padding(
    tx: &mut Egress<'_>,
    mut leg: LegOut<'_>,
    (pt, ssrc, seq, ts): (u8, u32, u16, u32),
    size: usize,
    cluster: Option<ClusterId>,
    stats: &MediaStats,
) -> bool {
    let size = size.clamp(1, 255);
    let template = [0x80u8, pt & 0x7F, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let Ok(src) = RtpView::parse(&template) else { return false };
    let Some((mark, mut slot, twcc)) = open_slot(tx, &mut leg, stats) else { return false };
    let e = &leg.cfg.ext;
    let exts: [(u8, &[u8]); 2] = [
        (e.mid, leg.cfg.mid.as_bytes()),
        (if twcc.is_some() { e.twcc } else { 0 }, twcc.as_ref().map_or(&[][..], |t| &t[..])),
    ];
    let header = HeaderFields { marker: false, pt, seq, ts, ssrc };
    let room = slot.room().len().saturating_sub(64);
    let b = &mut slot.room()[..room];
    let Some(hl) = write_header(b, &header, &src, &exts) else { return false };
    let Some(pad) = b.get_mut(hl..hl + size) else { return false };
    pad.fill(0);
    pad[size - 1] = size as u8;
    b[0] |= 0x20;
    match leg.srtp.protect_rtp(slot.room(), hl + size, hl) {
        Ok(n) => {
            slot.commit_room(n);
            tx.route_from(mark, leg.hosted);
            if let Some(bwe) = leg.bwe {
                // A climb's padding (no cluster) counts with the retransmissions, not the
                // media: the repairs' budget under overuse is what the media leaves.
                let seq = twcc.map(u16::from_be_bytes);
                bwe.handle_sent(leg.now, seq, n, cluster, cluster.is_none());
            }
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::layers::DdStructures;
    use crate::wire::codec::av1_dd::{BitWriter, sample_l1t3_with_structure};

    /// An AV1 consumer announces the active decode targets on the first frame start after its
    /// layers change (and on a keyframe); a simulcast one sends no descriptor at all.
    #[test]
    fn av1_active_targets_announced_after_a_change() {
        let t0 = Instant::now();
        let track = TrackId(0);
        let mut l = ConsumerLayers::new(Codec::Av1, vec![track], 7, 90_000, 100);
        let mut dd = DdStructures::default();
        let mut seq = 0u16;
        let mut send = |l: &mut ConsumerLayers, dd: &mut DdStructures, ext: &[u8]| {
            seq += 1;
            let mut info = PacketInfo::default();
            dd.apply(track, ext, &mut info);
            let meta = PacketMeta {
                encoding: 0,
                ssrc: 1,
                seq,
                timestamp: u32::from(seq) * 3000,
                marker: true,
            };
            let v = l.on_packet(t0, &meta, &info);
            let sent = matches!(v.action, crate::media::layers::Action::Forward { .. });
            let s = dd.get(track).cloned();
            let n = (sent && l.announce).then(|| l.announce_targets(ext, s.as_ref()?)).flatten();
            let out = n.map(|n| l.descriptor(Some(n)).unwrap().to_vec());
            (sent, out.map(|d| av1_dd::parse(&d, s.as_ref()).unwrap().active_decode_targets))
        };
        let frame = |template: u8, n: u16| [0xC0 | template, (n >> 8) as u8, n as u8];
        let mut w = BitWriter::default();
        sample_l1t3_with_structure(&mut w, 0, 1);
        // The keyframe: every target of the structure active (the selector forwards all).
        assert_eq!(send(&mut l, &mut dd, w.finish()), (true, Some(Some(0b111))));
        assert_eq!(send(&mut l, &mut dd, &frame(3, 2)), (true, None), "announced once");
        // Down to T1 at the next picture start: DT2 (T2) no longer active.
        l.selector.set_target(crate::media::layers::LayerTarget {
            encoding: 0,
            spatial: 3,
            temporal: 1,
        });
        assert_eq!(send(&mut l, &mut dd, &frame(2, 3)), (true, Some(Some(0b011))));
        assert_eq!(send(&mut l, &mut dd, &frame(4, 4)), (false, None));
        assert_eq!(send(&mut l, &mut dd, &frame(1, 5)), (true, None));
        // Simulcast: the descriptor is never sent.
        let sim = ConsumerLayers::new(Codec::Av1, vec![track, TrackId(1)], 7, 90_000, 100);
        assert_eq!(sim.descriptor(None), Some(&[][..]));
        assert_eq!(l.descriptor(None), None);
    }
}
