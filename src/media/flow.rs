//! The packet flows between a shard's producers and consumers, on [`MediaCore`]'s slabs: a
//! publisher's RTP into its producer, across the mesh and out to each consumer
//! ([`MediaCore::forward`], [`write_rtp`]); RTCP from consumers (NACKs answered from the
//! router's retransmission ring, keyframe requests through the limiters to the publisher or
//! its origin shard) and from publishers (sender reports translated for every consumer).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::PeerId;
use super::bwe::{Retransmit, SendSideBwe};
use super::consumer::{Source, write_rtp};
use super::core::{MediaCore, Peer, Role};
use super::egress::Egress;
use super::layers::{Action, MAX_ENCODINGS, PacketMeta};
use super::producer::{Received, Rid, RidBytes, Seen};
use super::stats::{MediaDrop, MediaStats, stat};
use super::transport::Routes;
use crate::router::{LegId, RtpFields, TrackId};
use crate::sdp::{ExtIds, MediaKind};
use crate::shard::RecvMeta;
use crate::srtp::SrtpContext;
use crate::wire::codec::{Codec, inspect};
use crate::wire::rtcp::{self, RtcpCompound, RtcpPacket, pli, sr, xr};
use crate::wire::rtp::RtpView;
use crate::wire::rtp_write::HeaderFields;

/// The peer that sends from `src`, once DTLS keyed its transport: its slot, inbound SRTP context
/// and role. Otherwise the datagram's drop is counted (unknown source, not connected).
///
/// From another node's relay address (`super::relay`), the leg is found by (`src`, `ssrc`):
/// the RTP SSRC, or the sender SSRC of an RTCP compound's first packet (both in the clear);
/// the leg's `last_heard` is handed back to be set once the packet authenticates.
fn keyed<'a>(
    routes: &Routes,
    peers: &'a mut [Option<Peer>],
    stats: &MediaStats,
    src: SocketAddr,
    ssrc: Option<u32>,
) -> Option<Keyed<'a>> {
    let slot = if routes.is_relay_source(src) {
        let Some(&slot) = ssrc.and_then(|s| routes.relays.get(&(src, s))) else {
            stats.count_drop(MediaDrop::UnknownRelaySsrc);
            return None;
        };
        slot
    } else {
        let Some(&slot) = routes.by_addr.get(&src) else {
            stats.count_drop(MediaDrop::UnknownSource);
            return None;
        };
        slot
    };
    let Peer { transport, role, .. } = peers.get_mut(slot as usize)?.as_mut()?;
    let Some(srtp) = transport.srtp_in.as_mut() else {
        stats.count_drop(MediaDrop::NotConnected);
        return None;
    };
    let heard = transport.relay.as_mut().map(|r| &mut r.last_heard);
    Some((slot, srtp, role, heard))
}

/// A keyed peer: slot, inbound SRTP context, role, and a relay leg's `last_heard`.
type Keyed<'a> = (u32, &'a mut SrtpContext, &'a mut Role, Option<&'a mut Instant>);

/// The SSRC at `at` (RTP: 8, RTCP sender: 4), if the datagram is long enough.
fn ssrc_at(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

impl MediaCore {
    pub(super) fn on_rtp(
        &mut self,
        now: Instant,
        meta: RecvMeta,
        buf: &mut [u8],
        tx: &mut Egress<'_>,
    ) {
        let arrival = now.saturating_duration_since(self.epoch);
        let Some((slot, srtp, role, heard)) =
            keyed(&self.routes, &mut self.peers, &self.stats, meta.src, ssrc_at(buf, 8))
        else {
            return;
        };
        let Role::Publisher(producer) = role else {
            return self.stats.count_drop(MediaDrop::UnknownTrack);
        };
        // The header once, before decryption (SRTP leaves it and its extensions in the clear).
        let twcc_id = producer.twcc_id();
        let rid_ids = producer.rid_ids();
        let Ok((hl, seen)) = RtpView::parse(buf).map(|v| {
            let twcc_seq = twcc_id.and_then(|id| v.transport_cc(id));
            let rid = match rid_ids {
                Some((r, rr)) => Rid {
                    rid: (r != 0).then(|| v.extension(r)).flatten().map(RidBytes::new),
                    repaired: (rr != 0).then(|| v.extension(rr)).flatten().map(RidBytes::new),
                },
                None => Rid::default(),
            };
            (v.header_len(), Seen { ssrc: v.ssrc(), pt: v.payload_type(), twcc_seq, rid })
        }) else {
            return self.stats.count_drop(MediaDrop::Malformed);
        };
        let Ok(len) = srtp.unprotect_rtp(buf, hl) else {
            return self.stats.count_drop(MediaDrop::SrtpFailed);
        };
        if let Some(h) = heard {
            *h = now;
            stat!(self.stats, relay_in);
        }
        let r = match producer.receive(buf, len, arrival, seen) {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(reason) => return self.stats.count_drop(reason),
        };
        let gap = r.gap;
        self.accepted(now, slot, &r, tx);
        if gap {
            self.send_nacks(slot, now, tx);
            // Retries of what is still missing.
            self.lower_deadline(Some(now + self.settings.tick));
        }
    }

    /// A packet the producer in `slot` accepted (a browser's or a camera's): counted, copied to
    /// the shards mirroring it and to its recorders, fanned out here.
    pub(super) fn accepted(
        &mut self,
        now: Instant,
        slot: u32,
        r: &Received<'_>,
        tx: &mut Egress<'_>,
    ) {
        stat!(self.stats, rtp_in);
        self.copy_to_mirrors(slot, r.index, r.packet.as_bytes());
        if !self.recorders.is_empty() {
            self.copy_to_recorders(slot, r.index, &r.packet);
        }
        self.forward(now, r.track, r.layer, &r.packet, &r.ext, tx);
    }

    /// Fans one plaintext publisher packet of `track` out to its consumers on this shard.
    /// `layer`: its encoding and codec when consumers choose layers of it: the payload
    /// descriptor is read once here, and each such consumer's selector decides.
    pub(super) fn forward(
        &mut self,
        now: Instant,
        track: TrackId,
        layer: Option<(u8, Codec)>,
        v: &RtpView<'_>,
        ext: &ExtIds,
        tx: &mut Egress<'_>,
    ) {
        let fields = RtpFields { ssrc: v.ssrc(), seq: v.sequence_number(), ts: v.timestamp() };
        let abs = abs_send_time(now.saturating_duration_since(self.epoch));
        let payload_len = (v.as_bytes().len() - v.header_len()) as u32;
        let info = layer.map(|(_, codec)| {
            // A descriptor that does not parse: no layer ids, not a keyframe (forwarded while
            // its encoding is, never a switching point).
            let mut info = inspect(codec, v.payload(), v.marker()).unwrap_or_default();
            // The Dependency Descriptor, when the publisher sends it with a layered source:
            // layer ids from the templates of the last structure it sent (kept per router
            // track).
            if ext.dependency_descriptor != 0
                && let Some(dd) = v.extension(ext.dependency_descriptor)
            {
                self.dd_structures.apply(track, dd, &mut info);
            }
            if let Some(t) = self.router.track_mut(track) {
                let (s, t_id) = (info.spatial_id.unwrap_or(0), info.temporal_id.unwrap_or(0));
                t.meter.note(now, s, t_id, payload_len as usize);
            }
            info
        });
        let mut keyframes: [Option<(PeerId, TrackId)>; MAX_ENCODINGS] = [None; MAX_ENCODINGS];
        let MediaCore { router, peers, stats, dd_structures, .. } = self;
        let _ = router.on_publisher_rtp(now, track, fields, v.as_bytes(), |fwd| {
            let Some(Some(sub)) = peers.get_mut(fwd.leg.0 as usize) else { return };
            let t = &mut sub.transport;
            if t.remote.is_none() || t.srtp_out.is_none() {
                return;
            }
            let Role::Subscriber(c) = &mut sub.role else { return };
            let publisher = c.publisher;
            let Some(out) = c.tracks.iter_mut().find(|o| o.cfg.ssrc == fwd.ssrc) else { return };
            let mut header = HeaderFields {
                marker: v.marker(),
                pt: fwd.pt,
                seq: fwd.seq,
                ts: fwd.ts,
                ssrc: fwd.ssrc,
            };
            let mut picture = None;
            let mut dd_len = None;
            if let (Some(l), Some(info), Some((encoding, codec))) =
                (out.layers.as_mut(), info.as_ref(), layer)
            {
                let meta = PacketMeta {
                    encoding,
                    ssrc: fields.ssrc,
                    seq: fields.seq,
                    timestamp: fields.ts,
                    marker: v.marker(),
                };
                let verdict = l.on_packet(now, &meta, info);
                if let Some(&want) =
                    verdict.keyframe_request.and_then(|e| l.tracks.get(usize::from(e)))
                    && let Some(free) =
                        keyframes.iter_mut().find(|k| k.is_none_or(|(_, t)| t == want))
                {
                    *free = Some((publisher, want));
                }
                match verdict.action {
                    Action::Drop(reason) => {
                        if reason.in_current() {
                            l.rewriter.dropped(&meta, info);
                        }
                        return;
                    }
                    Action::Forward { marker, switched } => {
                        let Some(rw) = l.rewriter.forward(now, &meta, info, switched) else {
                            return;
                        };
                        header.marker = marker;
                        header.seq = rw.seq;
                        header.ts = rw.timestamp;
                        if let Some(id) = rw.picture_id {
                            // Only a changed id costs the payload its patch (a copy, then
                            // encryption in place, instead of the fused copy-and-encrypt).
                            let same = info.picture_id.is_some_and(|p| {
                                p.value == id % p.modulus() && info.tl0picidx == rw.tl0picidx
                            });
                            if !same {
                                picture = Some((codec, id, rw.tl0picidx));
                            }
                            l.remember_picture(rw.seq, id, rw.tl0picidx);
                        }
                        // AV1: the layers changed, the next frame start says which decode
                        // targets are still active.
                        if l.announce
                            && info.frame_start
                            && out.cfg.ext.dependency_descriptor != 0
                            && ext.dependency_descriptor != 0
                            && let Some(d) = v.extension(ext.dependency_descriptor)
                            && let Some(s) = dd_structures.get(track)
                        {
                            dd_len = l.announce_targets(d, s);
                        }
                    }
                }
            }
            let relay = t.relay.is_some();
            let dd = out.layers.as_deref().and_then(|l| l.descriptor(dd_len));
            let Some(leg) = t.leg(&out.cfg, now) else { return };
            let src = Source { packet: v, ext, header, osn: None, abs_send_time: abs, picture, dd };
            if write_rtp(tx, leg, &src, stats) {
                out.packets = out.packets.wrapping_add(1);
                out.octets = out.octets.wrapping_add(payload_len);
                stat!(stats, rtp_out);
                stat!(stats, rtp_out_bytes, u64::from(payload_len));
                if relay {
                    stat!(stats, relay_out);
                }
            }
        });
        for (publisher, want) in keyframes.into_iter().flatten() {
            if self.router.on_keyframe_request(now, want).unwrap_or(false) {
                self.send_pli(publisher, want, false, tx);
            }
        }
    }

    pub(super) fn on_rtcp(
        &mut self,
        now: Instant,
        meta: RecvMeta,
        buf: &mut [u8],
        tx: &mut Egress<'_>,
    ) {
        let Some((slot, srtp, role, heard)) =
            keyed(&self.routes, &mut self.peers, &self.stats, meta.src, ssrc_at(buf, 4))
        else {
            return;
        };
        let is_publisher = matches!(role, Role::Publisher(_));
        let Ok(n) = srtp.unprotect_rtcp(buf) else {
            return self.stats.count_drop(MediaDrop::SrtpFailed);
        };
        if let Some(h) = heard {
            *h = now;
        }
        let Ok(compound) = RtcpCompound::parse_relaxed(&buf[..n]) else {
            return self.stats.count_drop(MediaDrop::Malformed);
        };
        stat!(self.stats, rtcp_in);
        for p in compound.packets() {
            let Ok(p) = p else {
                self.stats.count_drop(MediaDrop::Malformed);
                break;
            };
            if let RtcpPacket::Other(raw) = p
                && raw.header.packet_type == rtcp::packet_type::XR
            {
                self.on_xr(slot, now, raw, tx);
                continue;
            }
            if is_publisher {
                if let RtcpPacket::SenderReport(r) = p {
                    self.on_publisher_sr(slot, now, &r.info, tx);
                }
                continue;
            }
            match p {
                RtcpPacket::TransportCc(fb) => {
                    if let Some(b) = self.subscriber_bwe(slot) {
                        b.handle_twcc(now, &fb);
                    }
                }
                RtcpPacket::Remb(r) => {
                    if let Some(b) = self.subscriber_bwe(slot) {
                        b.handle_remb(now, r.bitrate());
                    }
                }
                RtcpPacket::ReceiverReport(r) => {
                    // The RTT from LSR/DLSR is not ours to read: the sender reports it refers
                    // to carry the publisher's clock.
                    if let Some(b) = self.subscriber_bwe(slot) {
                        for block in r.report_blocks() {
                            b.handle_receiver_report(now, block.fraction_lost, None);
                        }
                    }
                }
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
                _ => {}
            }
        }
    }

    /// The router track subscriber `slot` receives as `ssrc` (its media or RTX SSRC).
    fn out_track(&self, slot: u32, ssrc: u32) -> Option<TrackId> {
        match &self.peers.get(slot as usize)?.as_ref()?.role {
            Role::Subscriber(c) => c.track_for_ssrc(ssrc),
            Role::Publisher(_) => None,
        }
    }

    /// The bandwidth estimator of subscriber `slot`'s transport.
    fn subscriber_bwe(&mut self, slot: u32) -> Option<&mut SendSideBwe> {
        self.peers.get_mut(slot as usize)?.as_mut()?.transport.bwe.as_deref_mut()
    }

    /// Where a subscriber's keyframe request for `track` goes: for a consumer choosing layers,
    /// the encoding it forwards now (or aims at, before its first keyframe).
    fn keyframe_track(&self, slot: u32, track: TrackId) -> TrackId {
        let Some(Some(Peer { role: Role::Subscriber(c), .. })) = self.peers.get(slot as usize)
        else {
            return track;
        };
        let Some(l) = c.tracks.iter().find(|o| o.track == track).and_then(|o| o.layers.as_ref())
        else {
            return track;
        };
        let e = l.selector.current().unwrap_or(l.selector.target()).encoding;
        l.tracks.get(usize::from(e)).copied().unwrap_or(track)
    }

    /// A subscriber's NACK for its sequence numbers `lost` of `track`: answered from the
    /// track's retransmission ring on this shard (a mirror's ring for a publisher elsewhere),
    /// each resend granted by the subscriber's bandwidth estimate first (a packet too old to
    /// arrive in time, or past the retransmission budget, is not resent). A consumer choosing
    /// layers maps each sequence number back through its rewriter to the encoding it came from.
    fn answer_nack(
        &mut self,
        slot: u32,
        now: Instant,
        track: TrackId,
        lost: impl Iterator<Item = u16>,
        tx: &mut Egress<'_>,
    ) {
        let abs = abs_send_time(now.saturating_duration_since(self.epoch));
        // The ring keeps the publisher's packets with its extension ids: find them so values
        // such as video orientation are carried over to the retransmission.
        let ext = self.source_ext(slot, track).unwrap_or_default();
        self.scratch_renacks.clear();
        let MediaCore { router, peers, stats, scratch_renacks: renacks, .. } = self;
        // Bounded by its capacity: no allocation here.
        let mut not_stored = |track: TrackId, seq: u16| {
            if renacks.len() < renacks.capacity() {
                renacks.push((track, seq));
            }
        };
        let Some(Some(sub)) = peers.get_mut(slot as usize) else { return };
        let t = &mut sub.transport;
        if t.remote.is_none() || t.srtp_out.is_none() {
            return;
        }
        let Role::Subscriber(c) = &sub.role else { return };
        let Some(out) = c.tracks.iter().find(|o| o.track == track) else { return };
        let cfg = &out.cfg;
        let grant = |bwe: &mut Option<Box<SendSideBwe>>, len: usize, at: Instant| {
            let Some(b) = bwe.as_deref_mut() else { return true };
            match b.allow_retransmit(now, len, at) {
                Retransmit::Send => true,
                Retransmit::TooOld => {
                    stat!(stats, rtx_too_old);
                    false
                }
                Retransmit::OverBudget => {
                    stat!(stats, rtx_over_budget);
                    false
                }
            }
        };
        if let Some(l) = out.layers.as_deref() {
            let mut missing = 0u64;
            for out_seq in lost {
                let source = l.rewriter.source_of(out_seq).and_then(|s| {
                    let enc_track = *l.tracks.get(usize::from(s.encoding))?;
                    Some((s, enc_track))
                });
                let Some((s, enc_track)) = source else {
                    missing += 1;
                    continue;
                };
                let Some((len, at)) =
                    router.stored(now, enc_track, s.ssrc, s.seq).map(|(p, at)| (p.len(), at))
                else {
                    missing += 1;
                    not_stored(enc_track, s.seq);
                    continue;
                };
                if !grant(&mut t.bwe, len, at) {
                    continue;
                }
                let rtx = router.next_rtx(track, LegId(slot));
                let Some((packet, _)) = router.stored(now, enc_track, s.ssrc, s.seq) else {
                    continue;
                };
                let Ok(v) = RtpView::parse(packet) else { continue };
                let (pt, ssrc, seq, osn) = match rtx {
                    Some((pt, ssrc, seq)) => (pt, ssrc, seq, Some(out_seq)),
                    None => (cfg.pt, cfg.ssrc, out_seq, None),
                };
                let ts = v.timestamp().wrapping_add(s.ts_offset);
                let header = HeaderFields { marker: v.marker(), pt, seq, ts, ssrc };
                let picture = l.picture_of(out_seq).map(|(id, tl0)| (l.codec, id, tl0));
                let Some(leg) = t.leg(cfg, now) else { continue };
                let src = Source {
                    packet: &v,
                    ext: &ext,
                    header,
                    osn,
                    abs_send_time: abs,
                    picture,
                    dd: l.descriptor(None),
                };
                if write_rtp(tx, leg, &src, stats) {
                    stat!(stats, rtx_out);
                }
            }
            stat!(self.stats, rtx_missing, missing);
            self.renack_publisher(slot, now, tx);
            return;
        }
        let relay = t.relay.is_some();
        let resend = |rt: crate::router::Retransmit<'_>| {
            if !grant(&mut t.bwe, rt.packet.len(), rt.stored_at) {
                return;
            }
            let Ok(v) = RtpView::parse(rt.packet) else { return };
            let Some(leg) = t.leg(cfg, now) else { return };
            let header = HeaderFields {
                marker: v.marker(),
                pt: rt.pt,
                seq: rt.seq,
                ts: rt.ts,
                ssrc: rt.ssrc,
            };
            let src = Source {
                packet: &v,
                ext: &ext,
                header,
                osn: rt.osn,
                abs_send_time: abs,
                picture: None,
                dd: None,
            };
            if write_rtp(tx, leg, &src, stats) {
                stat!(stats, rtx_out);
                if relay {
                    stat!(stats, relay_out);
                }
            }
        };
        let res =
            router.on_nack(now, track, LegId(slot), lost, resend, |seq| not_stored(track, seq));
        if let Ok(missing) = res {
            stat!(self.stats, rtx_missing, missing as u64);
        }
        self.renack_publisher(slot, now, tx);
    }

    /// The packets subscriber `slot` NACKed that never reached this shard
    /// (`scratch_renacks`): its publisher is asked for them again if ringsfu's own tries are
    /// spent ([`Producer::renack`]); a publisher of another shard through its origin.
    fn renack_publisher(&mut self, slot: u32, now: Instant, tx: &mut Egress<'_>) {
        if self.scratch_renacks.is_empty() {
            return;
        }
        let Some(publisher) =
            self.peers.get(slot as usize).and_then(Option::as_ref).and_then(Peer::publisher)
        else {
            return;
        };
        // Taken out and put back: a move, not an allocation.
        let renacks = std::mem::take(&mut self.scratch_renacks);
        if self.mirrors.contains_key(&publisher) {
            for &(track, seq) in &renacks {
                self.renack_at_origin(now, publisher, track, seq);
            }
        } else {
            self.renew_nacks(publisher, &renacks, now, tx);
        }
        self.scratch_renacks = renacks;
    }

    /// Publisher `publisher` of this shard is asked again for the packets `wanted` (router
    /// track, sequence number) whose NACK tries are spent ([`Producer::renack`]); the NACKs
    /// go out now.
    pub(super) fn renew_nacks(
        &mut self,
        publisher: PeerId,
        wanted: &[(TrackId, u16)],
        now: Instant,
        tx: &mut Egress<'_>,
    ) {
        let Some(&slot) = self.by_id.get(&publisher) else { return };
        let Some(p) = self.producer_mut(publisher) else { return };
        let renewed: u64 =
            wanted.iter().map(|&(track, seq)| u64::from(p.renack(track, seq, now))).sum();
        if renewed > 0 {
            stat!(self.stats, nacks_renewed, renewed);
            self.send_nacks(slot, now, tx);
            self.lower_deadline(Some(now + self.settings.tick));
        }
    }

    /// The publisher's extension ids of `track`, seen from subscriber `slot`.
    fn source_ext(&self, slot: u32, track: TrackId) -> Option<ExtIds> {
        let publisher = self.peers.get(slot as usize)?.as_ref()?.publisher()?;
        if let Some(m) = self.mirrors.get(&publisher) {
            return m.tracks.iter().find(|t| t.track == track).map(|t| t.ext);
        }
        match &self.peers.get(*self.by_id.get(&publisher)? as usize)?.as_ref()?.role {
            Role::Publisher(p) => p.tracks.iter().find(|t| t.track == track).map(|t| t.cfg.ext),
            Role::Subscriber(_) => None,
        }
    }

    /// A subscriber (`slot`) asked for a keyframe of `track`: forward it, rate-limited.
    fn keyframe_request(&mut self, slot: u32, now: Instant, track: TrackId, tx: &mut Egress<'_>) {
        let Some(publisher) = self.peers[slot as usize].as_ref().and_then(Peer::publisher) else {
            return;
        };
        let track = self.keyframe_track(slot, track);
        if self.router.on_keyframe_request(now, track).unwrap_or(false) {
            self.send_pli(publisher, track, false, tx);
        }
    }

    /// A new subscriber connected: ask the publisher for keyframes so its video starts now.
    pub(super) fn request_keyframes_for(&mut self, slot: u32, tx: &mut Egress<'_>) {
        let mut wanted = [None; 4];
        let Some(Peer { role: Role::Subscriber(c), .. }) = self.peers[slot as usize].as_ref()
        else {
            return;
        };
        let publisher = c.publisher;
        let video = c.tracks.iter().filter(|o| o.cfg.kind == MediaKind::Video);
        for (w, o) in wanted.iter_mut().zip(video) {
            *w = Some(o.track);
        }
        for w in wanted.iter_mut().flatten() {
            *w = self.keyframe_track(slot, *w);
        }
        for track in wanted.into_iter().flatten() {
            self.send_pli(publisher, track, true, tx);
        }
    }

    /// Sends a PLI for `track` to `publisher`; for a publisher of another shard, asks its
    /// origin (`now`: at once, else through the origin's keyframe limiter too).
    pub(super) fn send_pli(
        &mut self,
        publisher: PeerId,
        track: TrackId,
        now: bool,
        tx: &mut Egress<'_>,
    ) {
        if self.keyframe_from_origin(publisher, track, now) {
            return;
        }
        let Some(&slot) = self.by_id.get(&publisher) else { return };
        let Some(peer) = self.peers[slot as usize].as_mut() else { return };
        let Role::Publisher(p) = &peer.role else { return };
        let Some(media_ssrc) = p.tracks.iter().find(|t| t.track == track).and_then(|t| t.ssrc)
        else {
            return;
        };
        let sender = peer.transport.rtcp_ssrc;
        tracing::debug!(?publisher, media_ssrc, "PLI to the publisher");
        if peer.transport.send_rtcp(tx, |b| pli::write(b, sender, media_ssrc).ok()) {
            stat!(self.stats, pli_out);
            stat!(self.stats, rtcp_out);
        }
    }

    fn on_publisher_sr(
        &mut self,
        slot: u32,
        now: Instant,
        info: &sr::SenderInfo,
        tx: &mut Egress<'_>,
    ) {
        let Some(Some(Peer { role: Role::Publisher(p), .. })) = self.peers.get_mut(slot as usize)
        else {
            return;
        };
        let Some((index, track)) = p.on_sender_report(now, info) else { return };
        self.copy_sr_to_mirrors(slot, index, info);
        self.sr_to_recorders(slot, index, info);
        self.relay_sr(track, info, tx);
    }

    /// The publisher's sender report of `track`, translated for each consumer of it here.
    pub(super) fn relay_sr(&mut self, track: TrackId, info: &sr::SenderInfo, tx: &mut Egress<'_>) {
        let MediaCore { router, peers, stats, .. } = self;
        for s in router.subscribers(track) {
            let Some(Some(sub)) = peers.get_mut(s.leg.0 as usize) else { continue };
            let Role::Subscriber(c) = &sub.role else { continue };
            // A consumer choosing layers: only the report of the encoding it forwards now,
            // with that encoding's timestamp offset.
            let layered =
                c.tracks.iter().find(|o| o.receives(track)).and_then(|o| o.layers.as_ref());
            let ts_offset = match layered {
                Some(l) => match l.rewriter.current_source() {
                    Some((ssrc, off)) if ssrc == info.ssrc => off,
                    _ => continue,
                },
                None if s.rewriter.source_ssrc() == Some(info.ssrc) => s.rewriter.ts_offset(),
                None => continue,
            };
            let Some(translated) = c.translate_sr(s.rewriter.out_ssrc, ts_offset, info) else {
                continue;
            };
            if sub.transport.send_rtcp(tx, |b| sr::write(b, &translated, &[]).ok()) {
                stat!(stats, rtcp_out);
            }
        }
    }

    /// An XR packet (RFC 3611) from peer `slot`: its RRTR is answered at once with a DLRR
    /// (delay 0: answered as it arrives), so a receiving browser learns its RTT; a publisher's
    /// DLRR answering our RRTR gives the RTT that times our NACK retries to it.
    fn on_xr(&mut self, slot: u32, now: Instant, raw: rtcp::RawPacket<'_>, tx: &mut Egress<'_>) {
        let Ok(x) = xr::Xr::parse(raw.header, raw.body) else {
            return self.stats.count_drop(MediaDrop::Malformed);
        };
        let Some(Some(peer)) = self.peers.get_mut(slot as usize) else { return };
        let ours = peer.transport.rtcp_ssrc;
        for b in x.blocks() {
            match b {
                xr::XrBlock::Rrtr { ntp } => {
                    let item = xr::DlrrItem {
                        ssrc: x.sender_ssrc,
                        last_rr: xr::compact_ntp(ntp),
                        delay: 0,
                    };
                    if peer.transport.send_rtcp(tx, |b| xr::write_dlrr(b, ours, &[item]).ok()) {
                        stat!(self.stats, rtcp_out);
                    }
                }
                xr::XrBlock::Dlrr(body) => {
                    if let Role::Publisher(p) = &mut peer.role {
                        for item in xr::dlrr_items(body).filter(|i| i.ssrc == ours) {
                            if let Some(rtt) = p.on_dlrr(now, &item) {
                                tracing::trace!(peer = peer.id.0, ?rtt, "publisher RTT (XR DLRR)");
                            }
                        }
                    }
                }
                xr::XrBlock::Other { .. } => {}
            }
        }
    }

    /// NACKs for every packet of publisher `slot` still missing and due.
    fn send_nacks(&mut self, slot: u32, now: Instant, tx: &mut Egress<'_>) {
        let MediaCore { peers, stats, scratch_seqs, .. } = self;
        if let Some(Some(Peer { transport, role: Role::Publisher(p), .. })) =
            peers.get_mut(slot as usize)
        {
            p.send_nacks(transport, now, scratch_seqs, tx, stats);
        }
    }
}

/// abs-send-time: 6.18 fixed-point seconds, 24 bits.
fn abs_send_time(since_epoch: Duration) -> u32 {
    ((since_epoch.as_nanos() << 18) / 1_000_000_000) as u32 & 0x00FF_FFFF
}
