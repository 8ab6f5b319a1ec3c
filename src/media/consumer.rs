//! [`Consumer`]: what one subscriber receives on its transport — one outgoing track per
//! router track it subscribes to, with its counters — and [`write_rtp`], the one function
//! that writes an RTP packet for a consumer into a send slot, used by forwarding and by NACK
//! answers alike.
//!
//! The per-leg rewrite state (sequence numbers, timestamps, RTX sequence) is the router's
//! [`Subscription`](crate::router::Subscription); the consumer holds what the leg negotiated
//! (SSRCs, payload types, extension ids) and what it sent.

use std::net::{IpAddr, SocketAddr};

use super::egress::Egress;
use super::stats::{MediaDrop, MediaStats};
use super::{OutTrack, PeerId};
use crate::router::TrackId;
use crate::sdp::ExtIds;
use crate::srtp::SrtpContext;
use crate::wire::rtcp::sr;
use crate::wire::rtp::RtpView;
use crate::wire::rtp_write::{HeaderFields, write_header, write_rtx_payload};

/// One outgoing track.
pub(super) struct ConsumerTrack {
    pub cfg: OutTrack,
    /// The router track it receives.
    pub track: TrackId,
    pub packets: u32,
    pub octets: u32,
}

pub(super) struct Consumer {
    /// The publisher it receives (on this shard or mirrored here).
    pub publisher: PeerId,
    pub tracks: Vec<ConsumerTrack>,
}

impl Consumer {
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
    pub local_ip: Option<IpAddr>,
    pub srtp: &'a mut SrtpContext,
    /// The transport's next transport-wide sequence number (taken when the track negotiated it).
    pub twcc_seq: &'a mut u16,
    pub cfg: &'a OutTrack,
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
}

/// The one recipe that writes an RTP packet to a consumer track into a send slot: the header
/// with this leg's fields and extensions (mid, abs-send-time, transport-wide sequence number,
/// and the source's audio level and video orientation when both sides negotiated them), for a
/// retransmission the OSN, then the source's payload protected into the slot (one copy, fused
/// with the encryption). False when nothing was sent (a full pool or a packet too large:
/// counted as `TxFull`).
pub(super) fn write_rtp(
    tx: &mut Egress<'_>,
    leg: LegOut<'_>,
    src: &Source<'_, '_>,
    stats: &MediaStats,
) -> bool {
    let mark = tx.pending_len();
    let Some(mut slot) = tx.push(leg.dst) else {
        stats.count_drop(MediaDrop::TxFull);
        return false;
    };
    slot.set_source(leg.local_ip);
    let twcc = (leg.cfg.ext.twcc != 0).then(|| {
        let s = *leg.twcc_seq;
        *leg.twcc_seq = s.wrapping_add(1);
        s.to_be_bytes()
    });
    let v = src.packet;
    let (e, se) = (&leg.cfg.ext, src.ext);
    let abs = src.abs_send_time.to_be_bytes();
    let level =
        (e.audio_level != 0 && se.audio_level != 0).then(|| v.extension(se.audio_level)).flatten();
    let orientation = (e.video_orientation != 0 && se.video_orientation != 0)
        .then(|| v.extension(se.video_orientation))
        .flatten();
    let exts: [(u8, &[u8]); 5] = [
        (e.mid, leg.cfg.mid.as_bytes()),
        (e.abs_send_time, &abs[1..]),
        (if twcc.is_some() { e.twcc } else { 0 }, twcc.as_ref().map_or(&[][..], |t| &t[..])),
        (if level.is_some() { e.audio_level } else { 0 }, level.unwrap_or_default()),
        (
            if orientation.is_some() { e.video_orientation } else { 0 },
            orientation.unwrap_or_default(),
        ),
    ];
    let payload = &v.as_bytes()[v.header_len()..];
    // Room for the SRTP tag and trailer behind the packet.
    let room = slot.room().len().saturating_sub(64);
    let b = &mut slot.room()[..room];
    let Some(hl) = write_header(b, &src.header, v, &exts) else {
        stats.count_drop(MediaDrop::TxFull);
        return false;
    };
    let res = match src.osn {
        Some(osn) => match write_rtx_payload(b, hl, osn, payload) {
            Some(end) => leg.srtp.protect_rtp(slot.room(), end, hl),
            None => {
                stats.count_drop(MediaDrop::TxFull);
                return false;
            }
        },
        None => leg.srtp.protect_rtp_payload_into(slot.room(), hl, payload),
    };
    match res {
        Ok(n) => {
            slot.commit_room(n);
            tx.route_from(mark, leg.hosted);
            true
        }
        Err(_) => {
            stats.count_drop(MediaDrop::TxFull);
            false
        }
    }
}
