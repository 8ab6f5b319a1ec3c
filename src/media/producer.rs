//! [`Producer`]: what one publisher sends on its transport — its tracks, each bound to a router
//! track, with the SSRC/RTX binding, reception statistics and NACK tracker, plus the
//! transport-wide congestion recorder; and the feedback it is owed (NACKs, receiver reports,
//! REMB, TWCC), written onto the publisher's [`Transport`].

use std::time::{Duration, Instant};

use super::InTrack;
use super::core::CoreSettings;
use super::egress::Egress;
use super::feedback::{NackTracker, ReceiveStats, TwccRecorder};
use super::stats::{MediaDrop, MediaStats, stat};
use super::transport::Transport;
use crate::router::{Router, SeqExtender, TrackId};
use crate::sdp::{ExtIds, MediaKind};
use crate::wire::codec::Codec;
use crate::wire::rtcp::{nack, remb, rr, sr, twcc, xr};
use crate::wire::rtp::RtpView;
use crate::wire::rtp_write::rtx_unwrap;

/// Missing publisher packets tracked per track for NACKs.
pub(super) const NACK_CAP: usize = 128;

/// One incoming track: a publisher's m-line, or one simulcast encoding of it.
pub(super) struct ProducerTrack {
    pub cfg: InTrack,
    /// The publisher's track (m-line) it belongs to: the index in `AddPublisher`'s `tracks`.
    pub source: usize,
    /// Its simulcast encoding (0 = lowest, or the only one) and RID.
    pub encoding: u8,
    rid: Option<Box<[u8]>>,
    /// Its router track (where consumers subscribe).
    pub track: TrackId,
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    stats: ReceiveStats,
    nack: NackTracker,
}

pub(super) struct Producer {
    pub tracks: Vec<ProducerTrack>,
    twcc: Option<(u8, TwccRecorder)>,
    /// Shards that mirror this producer for consumers of their own: each packet is copied
    /// once per shard here into the shard mesh.
    pub mirrored_to: Vec<usize>,
    next_report: Instant,
    next_twcc: Instant,
    /// Origin of the NTP-like timestamps of our RRTRs (RFC 3611): the publisher echoes their
    /// middle 32 bits in its DLRR, [`Producer::on_dlrr`] turns that into the RTT.
    rrtr_epoch: Instant,
    /// The last round-trip time measured from a DLRR.
    pub rtt: Option<std::time::Duration>,
}

/// What the RTP header of a received packet says (read once, before decryption: SRTP leaves
/// the header and its extensions in the clear).
pub(super) struct Seen {
    pub ssrc: u32,
    pub pt: u8,
    /// The transport-wide sequence number, when the producer negotiated one
    /// ([`Producer::twcc_id`]).
    pub twcc_seq: Option<u16>,
    /// The `rid` / `repaired-rid` header extensions, read only while a simulcast encoding
    /// waits for its SSRCs ([`Producer::rid_ids`]).
    pub rid: Rid,
}

/// A RID from a header extension, without allocating (RFC 8851 allows 16 characters... in
/// practice; longer values are cut and will not match).
#[derive(Default, Clone, Copy)]
pub(super) struct RidBytes {
    buf: [u8; 16],
    len: u8,
}

impl RidBytes {
    pub fn new(v: &[u8]) -> RidBytes {
        let mut r = RidBytes::default();
        let n = v.len().min(16);
        r.buf[..n].copy_from_slice(&v[..n]);
        r.len = n as u8;
        r
    }

    fn get(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// The RIDs a packet carries.
#[derive(Default, Clone, Copy)]
pub(super) struct Rid {
    pub rid: Option<RidBytes>,
    pub repaired: Option<RidBytes>,
}

/// A publisher packet after [`Producer::receive`]: plaintext in the receive buffer.
pub(super) struct Received<'b> {
    /// Index of its track in the producer.
    pub index: usize,
    pub track: TrackId,
    /// Its encoding and codec when consumers choose its layers ([`InTrack::layered`]).
    pub layer: Option<(u8, Codec)>,
    /// The packet (an RTX packet put back together: shorter by its OSN).
    pub packet: RtpView<'b>,
    /// The publisher's extension ids on that track.
    pub ext: ExtIds,
    /// A gap is tracked: NACKs may be due.
    pub gap: bool,
}

fn twcc_of(tracks: &[ProducerTrack]) -> Option<(u8, TwccRecorder)> {
    tracks
        .iter()
        .find(|t| t.cfg.transport_cc && t.cfg.ext.twcc != 0)
        .map(|t| (t.cfg.ext.twcc, TwccRecorder::default()))
}

impl Producer {
    /// A producer of `tracks`, each with a new router track.
    pub fn new(
        router: &mut Router,
        tracks: Vec<InTrack>,
        now: Instant,
        settings: &CoreSettings,
    ) -> Producer {
        let tracks: Vec<ProducerTrack> = tracks
            .into_iter()
            .enumerate()
            .flat_map(|(source, cfg)| {
                (0..cfg.encodings()).map(move |e| (source, e as u8, cfg.clone()))
            })
            .map(|(source, encoding, cfg)| {
                let rid = cfg.rids.get(usize::from(encoding)).map(|r| r.as_bytes().into());
                // With RIDs the SSRCs are learnt from the header extensions.
                let (ssrc, rtx_ssrc) =
                    if rid.is_some() { (None, None) } else { (cfg.ssrc, cfg.rtx_ssrc) };
                ProducerTrack {
                    track: router.add_track(
                        cfg.clock_rate,
                        ssrc.unwrap_or(0),
                        cfg.kind == MediaKind::Video,
                    ),
                    source,
                    encoding,
                    rid,
                    ssrc,
                    rtx_ssrc,
                    stats: ReceiveStats::new(cfg.clock_rate),
                    nack: NackTracker::new(NACK_CAP),
                    cfg,
                }
            })
            .collect();
        Producer {
            twcc: twcc_of(&tracks),
            tracks,
            mirrored_to: Vec::new(),
            next_report: now + settings.rtcp_interval / 2,
            rrtr_epoch: now,
            rtt: None,
            next_twcc: now + settings.twcc_interval,
        }
    }

    /// The same tracks in the same order, renegotiated (`reconnectStream`). The browser may
    /// pick new SSRCs: statistics and NACK state start over then, and always unless `keep`
    /// (an ICE restart of the same transport).
    pub fn renegotiated(&mut self, tracks: Vec<InTrack>, keep: bool) {
        for st in self.tracks.iter_mut() {
            let Some(cfg) = tracks.get(st.source) else { continue };
            // A simulcast encoding keeps what it learnt on an ICE restart, and learns again
            // on a new connection.
            let (ssrc, rtx_ssrc) = match (&st.rid, keep) {
                (Some(_), true) => (st.ssrc, st.rtx_ssrc),
                (Some(_), false) => (None, None),
                (None, _) => (cfg.ssrc, cfg.rtx_ssrc),
            };
            if !keep || st.ssrc != ssrc {
                st.stats = ReceiveStats::new(cfg.clock_rate);
                st.nack = NackTracker::new(NACK_CAP);
            }
            st.ssrc = ssrc;
            st.rtx_ssrc = rtx_ssrc;
            st.cfg = cfg.clone();
        }
        self.twcc = twcc_of(&self.tracks);
    }

    /// The `rid` and `repaired-rid` extension ids while a simulcast encoding has not learnt
    /// its SSRCs yet (the packets' RIDs are read only then).
    pub fn rid_ids(&self) -> Option<(u8, u8)> {
        self.tracks
            .iter()
            .find(|t| t.rid.is_some() && (t.ssrc.is_none() || t.rtx_ssrc.is_none()))
            .map(|t| (t.cfg.ext.rid, t.cfg.ext.repaired_rid))
    }

    /// The index of the track sent as `ssrc` and whether that is its RTX stream; an SSRC the
    /// offer did not announce is bound to the track whose payload type `pt` it carries.
    fn track_of(&mut self, ssrc: u32, pt: u8, rid: &Rid) -> Option<(usize, bool)> {
        for (i, t) in self.tracks.iter().enumerate() {
            if t.ssrc == Some(ssrc) {
                return Some((i, false));
            }
            if t.rtx_ssrc == Some(ssrc) {
                return Some((i, true));
            }
        }
        // A simulcast encoding: bound by the RID its packets carry (RFC 8852).
        if let Some(r) = &rid.rid {
            let t = self.tracks.iter_mut().enumerate().find(|(_, t)| {
                t.ssrc.is_none() && t.cfg.pt == pt && t.rid.as_deref() == Some(r.get())
            });
            if let Some((i, t)) = t {
                t.ssrc = Some(ssrc);
                return Some((i, false));
            }
        }
        if let Some(r) = &rid.repaired {
            let t = self.tracks.iter_mut().enumerate().find(|(_, t)| {
                t.rtx_ssrc.is_none()
                    && t.cfg.rtx_pt == Some(pt)
                    && t.rid.as_deref() == Some(r.get())
            });
            if let Some((i, t)) = t {
                t.rtx_ssrc = Some(ssrc);
                return Some((i, true));
            }
        }
        for (i, t) in self.tracks.iter_mut().enumerate().filter(|(_, t)| t.rid.is_none()) {
            if t.ssrc.is_none() && t.cfg.pt == pt {
                t.ssrc = Some(ssrc);
                return Some((i, false));
            }
            if t.rtx_ssrc.is_none() && t.cfg.rtx_pt == Some(pt) {
                t.rtx_ssrc = Some(ssrc);
                return Some((i, true));
            }
        }
        None
    }

    /// The header extension id of transport-wide sequence numbers, when negotiated.
    pub fn twcc_id(&self) -> Option<u8> {
        self.twcc.as_ref().map(|(id, _)| *id)
    }

    /// A decrypted packet `buf[..len]` whose header said `seen`, arrived `arrival` after the
    /// core's epoch: its track, RTX unwrapped in place (RFC 4588), reception statistics, NACK
    /// tracker and transport-wide feedback recorded. `Ok(None)`: nothing to forward (a
    /// padding-only probe). The packet is parsed once here (twice for RTX).
    pub fn receive<'b>(
        &mut self,
        buf: &'b mut [u8],
        len: usize,
        arrival: Duration,
        seen: Seen,
    ) -> Result<Option<Received<'b>>, MediaDrop> {
        let Seen { ssrc, pt, twcc_seq, rid } = seen;
        let (index, is_rtx) = self.track_of(ssrc, pt, &rid).ok_or(MediaDrop::UnknownTrack)?;
        if let (Some((_, rec)), Some(seq)) = (self.twcc.as_mut(), twcc_seq) {
            rec.on_packet(seq, arrival);
        }
        let t = &mut self.tracks[index];
        let len = if is_rtx {
            match (rtx_unwrap(buf, len, t.ssrc.unwrap_or(0), t.cfg.pt), t.ssrc) {
                (Ok(Some(n)), Some(_)) => n,
                (Ok(None), _) => return Ok(None),
                _ => return Err(MediaDrop::Malformed),
            }
        } else {
            len
        };
        let buf: &'b [u8] = buf;
        let v = RtpView::parse(&buf[..len]).map_err(|_| MediaDrop::Malformed)?;
        // An RTX packet of something already received (Chromium probes its uplink by
        // resending old packets on RTX): forwarding it again would hand subscribers a
        // duplicate, which their SRTP replay check drops uncounted in their congestion
        // feedback (it then looks like loss).
        if is_rtx && let Some(h) = t.stats.highest() {
            let ext = SeqExtender::nearest(h, v.sequence_number());
            if ext <= h && !t.nack.is_missing(ext) {
                return Err(MediaDrop::Duplicate);
            }
        }
        let (ext, before) = t.stats.on_packet(arrival, v.sequence_number(), v.timestamp());
        if t.cfg.nack {
            t.nack.on_packet(ext, before);
        }
        let gap = t.nack.pending();
        Ok(Some(Received {
            index,
            track: t.track,
            layer: t.cfg.layered().then_some((t.encoding, t.cfg.codec)),
            packet: v,
            ext: t.cfg.ext,
            gap,
        }))
    }

    /// A sender report from the publisher: its track (index, router track), the report
    /// noted for the receiver reports' DLSR.
    pub fn on_sender_report(
        &mut self,
        now: Instant,
        info: &sr::SenderInfo,
    ) -> Option<(usize, TrackId)> {
        let i = self.tracks.iter().position(|t| t.ssrc == Some(info.ssrc))?;
        self.tracks[i].stats.on_sender_report(now, info.ntp_time);
        Some((i, self.tracks[i].track))
    }

    /// A subscriber NACKed packet `seq` of router track `track`, which never arrived from the
    /// publisher: asked for once more if ringsfu gave up on it lately
    /// ([`NackTracker::renack`]). True when a NACK is now due ([`Producer::send_nacks`]).
    pub fn renack(&mut self, track: TrackId, seq: u16, now: Instant) -> bool {
        let Some(t) = self.tracks.iter_mut().find(|t| t.track == track && t.cfg.nack) else {
            return false;
        };
        let Some(h) = t.stats.highest() else { return false };
        let ext = SeqExtender::nearest(h, seq);
        ext <= h && t.nack.renack(ext, now)
    }

    /// NACKs for every packet still missing and due, on `tr` (`scratch`: a reused buffer).
    pub fn send_nacks(
        &mut self,
        tr: &mut Transport,
        now: Instant,
        scratch: &mut Vec<u16>,
        tx: &mut Egress<'_>,
        stats: &MediaStats,
    ) {
        let sender = tr.rtcp_ssrc;
        for t in self.tracks.iter_mut() {
            if !t.nack.pending() {
                continue;
            }
            t.nack.due(now, scratch);
            let Some(ssrc) = t.ssrc else { continue };
            if scratch.is_empty() {
                continue;
            }
            let Some(link) = tr.link() else { return };
            let seqs = scratch.iter().copied();
            if link.send_rtcp(tx, |b| nack::write_lost(b, sender, ssrc, seqs).ok()) {
                stat!(stats, nacks_out);
                stat!(stats, rtcp_out);
            } else {
                stats.count_drop(MediaDrop::TxFull);
            }
        }
    }

    /// Receiver report + REMB (every `rtcp_interval`) and transport-wide feedback (every
    /// `twcc_interval`) on `tr`.
    pub fn send_feedback(
        &mut self,
        tr: &mut Transport,
        now: Instant,
        settings: &CoreSettings,
        tx: &mut Egress<'_>,
        stats: &MediaStats,
    ) {
        let sender = tr.rtcp_ssrc;
        if now >= self.next_twcc {
            self.next_twcc = now + settings.twcc_interval;
            let media_ssrc = self.tracks.iter().find_map(|t| t.ssrc).unwrap_or(0);
            if let Some((_, rec)) = self.twcc.as_mut()
                && let Some(fb) = rec.build()
                && let Some(link) = tr.link()
            {
                let h = twcc::TwccHeader {
                    sender_ssrc: sender,
                    media_ssrc,
                    base_seq: fb.base_seq,
                    reference_time: fb.reference_time,
                    fb_pkt_count: fb.fb_pkt_count,
                };
                if link.send_rtcp(tx, |b| twcc::write(b, &h, rec.deltas()).ok()) {
                    stat!(stats, rtcp_out);
                }
            }
        }
        if now >= self.next_report {
            self.next_report = now + settings.rtcp_interval;
            let mut blocks = [rr::ReportBlock::default(); 4];
            let mut nb = 0;
            let mut remb_ssrcs = [0u32; 4];
            let mut nr = 0;
            for t in self.tracks.iter_mut() {
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
            // A simulcast publisher's REMB covers its encodings together: the configured
            // bitrate is for its top encoding; the lower ones (1/4 and 1/2 of the
            // resolution, ~40% of the top's rate in Chromium) and the encoder's ramp-up get
            // as much again.
            let simulcast = self.tracks.iter().any(|t| t.encoding > 0);
            let remb_bitrate = if simulcast {
                settings.remb_bitrate.saturating_mul(2)
            } else {
                settings.remb_bitrate
            };
            let ntp = self.rrtr_ntp(now);
            let sent = tr.send_rtcp(tx, |b| {
                let mut n = rr::write(b, sender, &blocks[..nb]).ok()?;
                if remb_bitrate > 0 && nr > 0 {
                    n += remb::write(&mut b[n..], sender, remb_bitrate, &remb_ssrcs[..nr]).ok()?;
                }
                // Our reference time: the publisher's DLRR gives the RTT (RFC 3611 §4.4).
                n += xr::write_rrtr(&mut b[n..], sender, ntp).ok()?;
                Some(n)
            });
            if sent {
                stat!(stats, rtcp_out);
            }
        }
    }

    /// The 64-bit NTP-format timestamp of `now` on this producer's RRTR clock (starting at
    /// 1 s, so that its compact form is never the "no RRTR" zero).
    fn rrtr_ntp(&self, now: Instant) -> u64 {
        let d = now.saturating_duration_since(self.rrtr_epoch) + std::time::Duration::from_secs(1);
        (d.as_secs() << 32) | (((d.subsec_nanos() as u64) << 32) / 1_000_000_000)
    }

    /// A DLRR item from the publisher answering one of our RRTRs (`ssrc` = our RTCP SSRC):
    /// the RTT, which then times the NACK retries of every track. Returns it.
    pub fn on_dlrr(&mut self, now: Instant, item: &xr::DlrrItem) -> Option<std::time::Duration> {
        let arrival = xr::compact_ntp(self.rrtr_ntp(now));
        let rtt = xr::rtt_from_dlrr(arrival, item)?;
        self.rtt = Some(rtt);
        for t in self.tracks.iter_mut() {
            t.nack.set_rtt(rtt);
        }
        Some(rtt)
    }

    /// When this producer's timers are due next: feedback, or a NACK (a retry of a packet
    /// still missing).
    pub fn next_deadline(&self, now: Instant) -> Instant {
        let nack = self.tracks.iter().filter_map(|t| t.nack.next_due(now)).min();
        let feedback = self.next_report.min(self.next_twcc);
        nack.map_or(feedback, |n| n.min(feedback))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::RouterConfig;

    fn track(rids: &[&str]) -> InTrack {
        InTrack {
            kind: MediaKind::Video,
            mid: "1".into(),
            pt: 96,
            clock_rate: 90_000,
            rtx_pt: Some(97),
            ssrc: rids.is_empty().then_some(1111),
            rtx_ssrc: rids.is_empty().then_some(2222),
            ext: ExtIds { rid: 10, repaired_rid: 11, ..ExtIds::default() },
            nack: true,
            pli: true,
            fir: false,
            remb: false,
            transport_cc: false,
            codec: Codec::Vp8,
            rids: rids.iter().map(|r| r.to_string()).collect(),
        }
    }

    fn media(seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[8..12].copy_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(b"frame");
        p
    }

    /// RTX (PT 97, SSRC 2222) carrying original sequence number `osn`.
    fn rtx(rtx_seq: u16, osn: u16) -> Vec<u8> {
        let mut p = vec![0x80, 97, 0, 0, 0, 0, 0, 9, 0, 0, 0x08, 0xAE];
        p[2..4].copy_from_slice(&rtx_seq.to_be_bytes());
        p.extend_from_slice(&osn.to_be_bytes());
        p.extend_from_slice(b"frame");
        p
    }

    fn feed(p: &mut Producer, mut pkt: Vec<u8>, rid: Rid) -> Result<Option<u16>, MediaDrop> {
        let v = RtpView::parse(&pkt).unwrap();
        let seen = Seen { ssrc: v.ssrc(), pt: v.payload_type(), twcc_seq: None, rid };
        let len = pkt.len();
        let r = p.receive(&mut pkt, len, Duration::from_millis(1), seen)?;
        Ok(r.map(|r| r.packet.sequence_number()))
    }

    fn producer(tracks: Vec<InTrack>) -> Producer {
        let mut router = Router::new(RouterConfig::default());
        Producer::new(&mut router, tracks, Instant::now(), &CoreSettings::default())
    }

    #[test]
    fn an_rtx_of_a_received_packet_is_a_duplicate_not_a_repair() {
        let mut p = producer(vec![track(&[])]);
        let none = Rid::default();
        for seq in [1, 2, 3, 5] {
            assert_eq!(feed(&mut p, media(seq, 1111), none), Ok(Some(seq)));
        }
        // 2 arrived: its RTX is a probe, dropped; 4 is missing: its RTX repairs it.
        assert_eq!(feed(&mut p, rtx(100, 2), none), Err(MediaDrop::Duplicate));
        assert_eq!(feed(&mut p, rtx(101, 4), none), Ok(Some(4)));
        assert_eq!(feed(&mut p, rtx(102, 4), none), Err(MediaDrop::Duplicate));
    }

    #[test]
    fn simulcast_encodings_learn_their_ssrcs_from_rids() {
        let mut p = producer(vec![track(&["q", "h", "f"])]);
        assert_eq!(p.tracks.len(), 3);
        assert_eq!(p.rid_ids(), Some((10, 11)));
        let rid = |r: &str| Rid { rid: Some(RidBytes::new(r.as_bytes())), repaired: None };
        // No RID yet: an unknown SSRC is not guessed onto an encoding.
        assert_eq!(feed(&mut p, media(1, 7), Rid::default()), Err(MediaDrop::UnknownTrack));
        assert_eq!(feed(&mut p, media(1, 7), rid("h")), Ok(Some(1)));
        assert_eq!(feed(&mut p, media(1, 8), rid("f")), Ok(Some(1)));
        assert_eq!(feed(&mut p, media(1, 9), rid("q")), Ok(Some(1)));
        let ssrcs: Vec<_> = p.tracks.iter().map(|t| (t.encoding, t.ssrc)).collect();
        assert_eq!(ssrcs, vec![(0, Some(9)), (1, Some(7)), (2, Some(8))]);
        // Later packets need no RID.
        assert_eq!(feed(&mut p, media(2, 8), Rid::default()), Ok(Some(2)));
    }
}
