//! Differential bodies: `ringsfu::wire` against the webrtc-rs crates `stun`, `rtp`, `rtcp`.
//!
//! Shared by the fuzz targets `*_diff` (`#[path = "../differential.rs"] mod differential;`) and
//! by `tests/wire_corpus.rs` (same include), so the library never depends on the oracles.
//!
//! Direction of each check: whatever ringsfu accepts, the oracle must accept too and agree on
//! every field both expose. The oracles are more lenient in places (no version check, RTP
//! padding count 0, trailing bytes in STUN), so "oracle accepts, we reject" is not a failure.
//! Inputs that are known to panic inside an oracle (RTP header-extension elements overrunning
//! their block make `rtp` 0.13 read past the buffer) are filtered before calling it.
#![allow(dead_code)]

use ringsfu::wire::rtcp::{RtcpCompound, RtcpPacket};
use ringsfu::wire::rtp::RtpView;
use ringsfu::wire::stun::{StunView, StunWriter, attr};
use ringsfu::wire::stun_integrity::IntegrityKey;

const PASSWORD: &str = "fuzz-password";

/// STUN: header and attribute agreement, then MESSAGE-INTEGRITY and FINGERPRINT written by us
/// and checked by the oracle.
pub fn stun(data: &[u8]) {
    use ::stun::message::Message;
    let Ok(ours) = StunView::parse(data) else {
        return;
    };
    let mut theirs = Message::new();
    theirs.raw = data.to_vec();
    theirs.decode().expect("stun crate must accept what ringsfu accepts");
    assert_eq!(theirs.typ.value(), ours.message_type());
    assert_eq!(&theirs.transaction_id.0, ours.transaction_id());
    // Our counted attributes are a prefix of theirs (we ignore what follows the integrity
    // attributes), plus FINGERPRINT which is their last.
    let compat = |t: u16| {
        if t == 0x8020 { attr::XOR_MAPPED_ADDRESS } else { t }
    };
    let mut theirs_iter = theirs.attributes.0.iter();
    for a in ours.attributes().filter(|a| a.typ != attr::FINGERPRINT) {
        let t = theirs_iter.next().expect("oracle has fewer attributes");
        assert_eq!(t.typ.0, compat(a.typ));
        assert_eq!(t.value.as_slice(), a.value);
    }
    if ours.has_fingerprint() {
        let last = theirs.attributes.0.last().expect("fingerprint");
        assert_eq!(last.typ.0, attr::FINGERPRINT);
    }

    // Rebuild with our writer, integrity + fingerprint, and let the oracle check both.
    let key = IntegrityKey::short_term(PASSWORD.as_bytes());
    let mut buf = vec![0u8; data.len() + 96];
    let Ok(mut w) = StunWriter::new(&mut buf, ours.class(), ours.method(), ours.transaction_id())
    else {
        return;
    };
    for a in ours.attributes().filter(|a| {
        !matches!(
            a.typ,
            attr::MESSAGE_INTEGRITY | attr::MESSAGE_INTEGRITY_SHA256 | attr::FINGERPRINT
        )
    }) {
        if w.attribute(a.typ, a.value).is_err() {
            return;
        }
    }
    if w.message_integrity(&key).is_err() || w.fingerprint().is_err() {
        return;
    }
    let n = w.finish();
    let mut m = Message::new();
    m.raw = buf[..n].to_vec();
    m.decode().expect("oracle decodes our message");
    ::stun::integrity::MessageIntegrity::new_short_term_integrity(PASSWORD.to_owned())
        .check(&mut m)
        .expect("oracle verifies our MESSAGE-INTEGRITY");
    ::stun::fingerprint::FINGERPRINT.check(&m).expect("oracle verifies our FINGERPRINT");
}

/// RTP: header fields, CSRCs, payload and RFC 8285 elements.
pub fn rtp(data: &[u8]) {
    use ::rtp::packet::Packet;
    use webrtc_util::marshal::Unmarshal;
    let Ok(ours) = RtpView::parse(data) else {
        return;
    };
    // Filter inputs that make the oracle panic or mis-walk: elements must tile the block
    // exactly under its own rules (one-byte: no ID 15; two-byte: profile 0x1000 only).
    let clean = match ours.extension_profile() {
        None => true,
        Some(0xBEDE) | Some(0x1000) => extension_block_is_clean(&ours),
        Some(_) => true,
    };
    if !clean {
        return;
    }
    let mut b = data;
    let theirs = Packet::unmarshal(&mut b).expect("rtp crate must accept what ringsfu accepts");
    let h = &theirs.header;
    assert_eq!(h.version, 2);
    assert_eq!(h.padding, ours.has_padding());
    assert_eq!(h.marker, ours.marker());
    assert_eq!(h.payload_type, ours.payload_type());
    assert_eq!(h.sequence_number, ours.sequence_number());
    assert_eq!(h.timestamp, ours.timestamp());
    assert_eq!(h.ssrc, ours.ssrc());
    assert!(h.csrc.iter().copied().eq(ours.csrcs()));
    assert_eq!(&theirs.payload[..], ours.payload());
    match ours.extension_profile() {
        Some(0xBEDE) | Some(0x1000) => {
            assert_eq!(h.extensions.len(), ours.extensions().count());
            for (t, o) in h.extensions.iter().zip(ours.extensions()) {
                assert_eq!(t.id, o.id);
                assert_eq!(&t.payload[..], o.value);
            }
        }
        _ => {}
    }
}

fn extension_block_is_clean(v: &RtpView<'_>) -> bool {
    let Some(block) = v.extension_data() else {
        return true;
    };
    let one = v.extension_profile() == Some(0xBEDE);
    let mut p = 0;
    while p < block.len() {
        let b = block[p];
        if b == 0 {
            p += 1;
            continue;
        }
        if one {
            // ID 15 (stop) and ID 0 with a nonzero length nibble are walked differently by
            // the oracle (it stops early / yields an element with ID 0).
            if b >> 4 == 15 || b >> 4 == 0 {
                return false;
            }
            p += 1 + (b & 0x0F) as usize + 1;
        } else {
            let Some(&l) = block.get(p + 1) else {
                return false;
            };
            p += 2 + l as usize;
        }
    }
    p == block.len()
}

/// RTCP: the compound as a whole, then SR, RR, PLI, NACK, REMB, TWCC field by field.
pub fn rtcp(data: &[u8]) {
    use ::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
    use ::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
    use ::rtcp::receiver_report::ReceiverReport;
    use ::rtcp::sender_report::SenderReport;
    use ::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
    use ::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
    let Ok(ours) = RtcpCompound::parse(data) else {
        return;
    };
    // Only well-typed compounds: every packet parses on our side, no padding (the oracle's
    // padding rules differ per packet type), no unknown types (the oracle rejects some).
    let mut typed = Vec::new();
    for p in ours.packets() {
        match p {
            Ok(RtcpPacket::Other(_)) | Ok(RtcpPacket::App(_)) | Err(_) => return,
            Ok(p) => typed.push(p),
        }
    }
    if ours.raw_packets().any(|p| p.header.padding) {
        return;
    }
    let mut b = bytes::Bytes::copy_from_slice(data);
    let Ok(theirs) = ::rtcp::packet::unmarshal(&mut b) else {
        // The oracle is stricter on some bodies (e.g. SDES item rules); not our failure.
        return;
    };
    assert_eq!(theirs.len(), typed.len());
    for (o, t) in typed.iter().zip(theirs.iter()) {
        let any = t.as_any();
        match o {
            RtcpPacket::SenderReport(sr) => {
                let t = any.downcast_ref::<SenderReport>().expect("SR kind");
                assert_eq!(t.ssrc, sr.info.ssrc);
                assert_eq!(t.ntp_time, sr.info.ntp_time);
                assert_eq!(t.rtp_time, sr.info.rtp_timestamp);
                assert_eq!(t.packet_count, sr.info.packet_count);
                assert_eq!(t.octet_count, sr.info.octet_count);
                assert_eq!(t.reports.len(), sr.report_blocks().len());
                for (r, b) in t.reports.iter().zip(sr.report_blocks()) {
                    assert_eq!(r.ssrc, b.ssrc);
                    assert_eq!(r.fraction_lost, b.fraction_lost);
                    assert_eq!(r.total_lost, b.cumulative_lost as u32 & 0xFF_FFFF);
                    assert_eq!(r.last_sequence_number, b.extended_highest_seq);
                    assert_eq!(r.jitter, b.jitter);
                    assert_eq!(r.last_sender_report, b.last_sr);
                    assert_eq!(r.delay, b.delay_since_last_sr);
                }
            }
            RtcpPacket::ReceiverReport(rr) => {
                let t = any.downcast_ref::<ReceiverReport>().expect("RR kind");
                assert_eq!(t.ssrc, rr.sender_ssrc);
                assert_eq!(t.reports.len(), rr.report_blocks().len());
                for (r, b) in t.reports.iter().zip(rr.report_blocks()) {
                    assert_eq!(r.ssrc, b.ssrc);
                    assert_eq!(r.total_lost, b.cumulative_lost as u32 & 0xFF_FFFF);
                    assert_eq!(r.last_sequence_number, b.extended_highest_seq);
                }
            }
            RtcpPacket::Pli(p) => {
                let t = any.downcast_ref::<PictureLossIndication>().expect("PLI kind");
                assert_eq!((t.sender_ssrc, t.media_ssrc), (p.sender_ssrc, p.media_ssrc));
            }
            RtcpPacket::Nack(n) => {
                let t = any.downcast_ref::<TransportLayerNack>().expect("NACK kind");
                assert_eq!((t.sender_ssrc, t.media_ssrc), (n.sender_ssrc, n.media_ssrc));
                assert!(t.nacks.iter().map(|p| (p.packet_id, p.lost_packets)).eq(n.pairs()));
            }
            RtcpPacket::Remb(r) => {
                let t = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>().expect("REMB kind");
                assert_eq!(t.sender_ssrc, r.sender_ssrc);
                assert!(t.ssrcs.iter().copied().eq(r.ssrcs()));
                // The oracle keeps an f32: compare with relative tolerance.
                let ours = r.bitrate() as f64;
                let theirs = t.bitrate as f64;
                // The oracle decodes mantissa 0 as 2^23 (its IEEE-754 rebuild lacks the zero
                // case; regression `remb_zero_mantissa_oracle_decodes_2pow23`): skip it.
                if r.bitrate() != u64::MAX && r.mantissa != 0 {
                    assert!((ours - theirs).abs() <= ours * 1e-6 + 1.0, "{ours} vs {theirs}");
                }
            }
            RtcpPacket::TransportCc(c) => {
                let t = any.downcast_ref::<TransportLayerCc>().expect("TWCC kind");
                assert_eq!(t.sender_ssrc, c.sender_ssrc);
                assert_eq!(t.media_ssrc, c.media_ssrc);
                assert_eq!(t.base_sequence_number, c.base_seq);
                assert_eq!(t.packet_status_count, c.status_count);
                assert_eq!(t.reference_time, c.reference_time as u32 & 0xFF_FFFF);
                assert_eq!(t.fb_pkt_count, c.fb_pkt_count);
                // The oracle counts every symbol of the last status-vector chunk, also those
                // past the status count (libwebrtc and ringsfu ignore them), so it may read
                // extra deltas at the end: ours must be a prefix of theirs.
                let ours_deltas: Vec<i64> =
                    c.packets().filter_map(|p| p.delta).map(|d| d as i64 * 250).collect();
                assert!(t.recv_deltas.len() >= ours_deltas.len());
                assert!(
                    t.recv_deltas
                        .iter()
                        .map(|d| d.delta)
                        .take(ours_deltas.len())
                        .eq(ours_deltas.iter().copied())
                );
            }
            _ => {}
        }
    }
}

/// The Matroska / WebM muxer against an independent reader (`matroska-demuxer`): frames made
/// from the input (track, keyframe flag, time step, length) are written by
/// `ringsfu::record::mkv::MkvMuxer`, the patches applied, and the file read back must give
/// the same tracks, the same frames in the same order with the same timestamps, keyframe
/// flags and bytes, and the Duration the muxer reports.
pub fn mkv_roundtrip(data: &[u8]) {
    use matroska_demuxer::{Frame, MatroskaFile, TrackType};
    use ringsfu::record::mkv::{MkvMuxer, OpusTrack, TrackKind, VideoCodec, VideoTrack};
    use std::io::Cursor;

    let Some((&cfg, mut rest)) = data.split_first() else {
        return;
    };
    let codec =
        [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::Av1, VideoCodec::H264][usize::from(cfg & 3)];
    let with_video = cfg & 4 == 0;
    let with_audio = cfg & 8 == 0 || !with_video;
    let video = VideoTrack { codec, width: 640, height: 480, codec_private: vec![1, 2, 3] };
    let mut file = Vec::new();
    let mut m = MkvMuxer::new(
        with_video.then_some(&video),
        with_audio.then_some(OpusTrack::WEBRTC),
        &mut file,
    );
    let mut patches = Vec::new();
    // (track number, time, keyframe, bytes) as written.
    let mut expected: Vec<(u64, u64, bool, Vec<u8>)> = Vec::new();
    let mut time = [0u64; 2];
    while rest.len() >= 3 && expected.len() < 2000 {
        let (op, tail) = rest.split_at(3);
        let len = usize::from(op[2]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        let audio = op[0] & 1 == 1;
        let kind = if audio { TrackKind::Audio } else { TrackKind::Video };
        let key = op[0] & 2 != 0;
        let i = usize::from(audio);
        time[i] += u64::from(op[1]) * u64::from(op[0] >> 2).max(1);
        let ok = m.write_frame(kind, time[i], key, payload, &mut file).is_ok();
        assert_eq!(ok, m.has_track(kind));
        while let Some(p) = m.poll_patch() {
            patches.push(p);
        }
        if ok {
            let number = if audio && with_video { 2 } else { 1 };
            expected.push((number, time[i], key || audio, payload.to_vec()));
        }
    }
    m.finish(&mut file);
    while let Some(p) = m.poll_patch() {
        patches.push(p);
    }
    assert_eq!(m.written(), file.len() as u64);
    for p in &patches {
        assert!(p.apply(&mut file), "patch inside the file");
    }
    let mut mkv = match MatroskaFile::open(Cursor::new(file)) {
        Ok(mkv) => mkv,
        // The reader insists on a cluster; a file without frames has none (and is valid).
        Err(matroska_demuxer::DemuxError::CantFindCluster) if expected.is_empty() => return,
        Err(e) => panic!("matroska-demuxer reads what we wrote: {e:?}"),
    };
    let tracks = mkv.tracks();
    assert_eq!(tracks.len(), usize::from(with_video) + usize::from(with_audio));
    if with_video {
        assert_eq!(tracks[0].track_type(), TrackType::Video);
        assert_eq!(tracks[0].codec_id(), codec.codec_id());
        assert_eq!(tracks[0].video().map(|v| v.pixel_width().get()), Some(640));
    }
    if with_audio {
        let a = tracks.last().expect("audio track");
        assert_eq!(a.codec_id(), "A_OPUS");
        assert_eq!(a.codec_private().map(|c| c.len()), Some(19));
    }
    assert_eq!(mkv.info().duration(), Some(m.duration_ms() as f64));
    let mut frame = Frame::default();
    let mut got = Vec::new();
    while mkv.next_frame(&mut frame).expect("frames read back") {
        got.push((
            frame.track,
            frame.timestamp,
            frame.is_keyframe == Some(true),
            frame.data.clone(),
        ));
    }
    assert_eq!(got.len(), expected.len(), "frame count");
    for (n, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "frame {n}");
    }
}
