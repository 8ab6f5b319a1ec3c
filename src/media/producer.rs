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
use crate::router::{Router, TrackId};
use crate::sdp::{ExtIds, MediaKind};
use crate::wire::rtcp::{nack, remb, rr, sr, twcc, xr};
use crate::wire::rtp::RtpView;
use crate::wire::rtp_write::rtx_unwrap;

/// Missing publisher packets tracked per track for NACKs.
pub(super) const NACK_CAP: usize = 128;

/// One incoming track.
pub(super) struct ProducerTrack {
    pub cfg: InTrack,
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
}

/// A publisher packet after [`Producer::receive`]: plaintext in the receive buffer.
pub(super) struct Received<'b> {
    /// Index of its track in the producer.
    pub index: usize,
    pub track: TrackId,
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
            .map(|cfg| ProducerTrack {
                track: router.add_track(
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
        for (st, cfg) in self.tracks.iter_mut().zip(tracks) {
            if !keep || st.ssrc != cfg.ssrc {
                st.stats = ReceiveStats::new(cfg.clock_rate);
                st.nack = NackTracker::new(NACK_CAP);
            }
            st.ssrc = cfg.ssrc;
            st.rtx_ssrc = cfg.rtx_ssrc;
            st.cfg = cfg;
        }
        self.twcc = twcc_of(&self.tracks);
    }

    /// The index of the track sent as `ssrc` and whether that is its RTX stream; an SSRC the
    /// offer did not announce is bound to the track whose payload type `pt` it carries.
    fn track_of(&mut self, ssrc: u32, pt: u8) -> Option<(usize, bool)> {
        for (i, t) in self.tracks.iter().enumerate() {
            if t.ssrc == Some(ssrc) {
                return Some((i, false));
            }
            if t.rtx_ssrc == Some(ssrc) {
                return Some((i, true));
            }
        }
        for (i, t) in self.tracks.iter_mut().enumerate() {
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
        let Seen { ssrc, pt, twcc_seq } = seen;
        let (index, is_rtx) = self.track_of(ssrc, pt).ok_or(MediaDrop::UnknownTrack)?;
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
        let (ext, before) = t.stats.on_packet(arrival, v.sequence_number(), v.timestamp());
        if t.cfg.nack {
            t.nack.on_packet(ext, before);
        }
        let gap = !t.nack.is_empty();
        Ok(Some(Received { index, track: t.track, packet: v, ext: t.cfg.ext, gap }))
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
            if t.nack.is_empty() {
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
            let remb_bitrate = settings.remb_bitrate;
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
