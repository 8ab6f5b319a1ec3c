//! Fuzz bodies shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, one line each), the
//! corpus replay test (`tests/wire_corpus.rs`) and the benches. Not API: hidden from the docs.
//!
//! Each function takes arbitrary bytes, must never panic on its own account, and asserts
//! invariants (bounds, consistency between views, parse-write-parse round trips). A failing
//! `assert!` here is a bug in `wire`, reported by the fuzzer as a crash.
//!
//! Integrity tags: `stun_roundtrip` rebuilds any parsed message with MESSAGE-INTEGRITY under
//! [`FUZZ_KEY_PASSWORD`], so the verification path is exercised past the MAC check.

use crate::wire::channel_data::{self, ChannelDataView, StreamFrame};
use crate::wire::demux::{Datagram, demux as demux_fn};
use crate::wire::dtls_record::{self, Record};
use crate::wire::rtcp::{self, RtcpCompound, RtcpPacket};
use crate::wire::rtp::{RtpRewriter, RtpView};
use crate::wire::stun::{self, StunView, StunWriter, attr};
use crate::wire::stun_integrity::IntegrityKey;

/// Short-term password the fuzz bodies use for MESSAGE-INTEGRITY.
pub const FUZZ_KEY_PASSWORD: &[u8] = b"fuzz-password";

/// Demux, then the full parse of the class it picked.
pub fn demux(data: &[u8]) {
    let Ok(d) = demux_fn(data) else {
        return;
    };
    assert_eq!(d.bytes(), data);
    let first = data[0];
    match d {
        Datagram::Stun(b) => {
            assert!(first <= 3);
            stun(b);
        }
        Datagram::Dtls(b) => {
            assert!((20..=63).contains(&first));
            dtls_record(b);
        }
        Datagram::ChannelData(b) => {
            assert!((64..=79).contains(&first));
            channel_data(b);
        }
        Datagram::Rtp(b) => {
            assert!((128..=191).contains(&first) && !(192..=223).contains(&data[1]));
            rtp(b);
        }
        Datagram::Rtcp(b) => {
            assert!((128..=191).contains(&first) && (192..=223).contains(&data[1]));
            rtcp(b);
        }
    }
}

/// STUN view: every accessor, integrity and fingerprint checks, stream framing agreement.
pub fn stun(data: &[u8]) {
    let framed = channel_data::stream_frame_len(data);
    let cheap = stun::is_stun(data);
    let Ok(v) = StunView::parse(data) else {
        return;
    };
    assert!(cheap, "is_stun must accept what parse accepts");
    assert_eq!(v.length() as usize + stun::HEADER_LEN, data.len());
    assert_eq!(framed, Ok(Some(StreamFrame::Stun { len: data.len() })));
    let mut seen_fp = false;
    let mut n = 0;
    for a in v.attributes() {
        assert!(!seen_fp, "FINGERPRINT must be the last attribute yielded");
        seen_fp = a.typ == attr::FINGERPRINT;
        let start = a.value.as_ptr() as usize - data.as_ptr() as usize;
        assert!(start + a.value.len() <= data.len());
        n += 1;
        assert!(n <= data.len() / 4);
    }
    assert_eq!(seen_fp, v.has_fingerprint());
    let _ = v.class();
    let _ = v.method();
    let _ = v.transaction_id();
    let _ = v.username();
    let _ = v.software();
    let _ = v.priority();
    let _ = v.use_candidate();
    let _ = v.ice_controlling();
    let _ = v.ice_controlled();
    let _ = v.xor_mapped_address();
    let _ = v.mapped_address();
    if let Ok(Some((code, _))) = v.error_code() {
        assert!((300..=699).contains(&code));
    }
    let _ = v.requested_transport();
    let _ = v.lifetime();
    let _ = v.xor_relayed_address();
    let _ = v.xor_peer_address();
    assert!(v.xor_peer_addresses().count() <= n);
    let _ = v.channel_number();
    let _ = v.data();
    let _ = v.nonce();
    let _ = v.realm();
    let _ = v.requested_address_family();
    let _ = v.even_port();
    let _ = v.dont_fragment();
    let _ = v.reservation_token();
    let _ = v.first_unknown_comprehension_required();
    let key = IntegrityKey::short_term(FUZZ_KEY_PASSWORD);
    if !v.has_integrity() {
        assert!(v.verify_integrity(&key).is_err());
    }
    let _ = v.verify_integrity_sha256(&key);
    let _ = v.verify_fingerprint();
}

/// Parse, rebuild with our writer (integrity under the fuzz key, fingerprint), parse again:
/// same header, same attributes, and the checks pass.
pub fn stun_roundtrip(data: &[u8]) {
    let Ok(v) = StunView::parse(data) else {
        return;
    };
    let key = IntegrityKey::short_term(FUZZ_KEY_PASSWORD);
    let mut buf = vec![0u8; data.len() + 96];
    let Ok(mut w) = StunWriter::new(&mut buf, v.class(), v.method(), v.transaction_id()) else {
        panic!("writer refused a parsed class/method");
    };
    let is_tail = |t: u16| {
        t == attr::MESSAGE_INTEGRITY
            || t == attr::MESSAGE_INTEGRITY_SHA256
            || t == attr::FINGERPRINT
    };
    for a in v.attributes().filter(|a| !is_tail(a.typ)) {
        if w.attribute(a.typ, a.value).is_err() {
            // Only possible when the rebuilt message would exceed 65535 bytes.
            return;
        }
    }
    if w.message_integrity(&key).is_err() || w.fingerprint().is_err() {
        return;
    }
    let n = w.finish();
    let v2 = StunView::parse(&buf[..n]).expect("our own message must parse");
    assert_eq!(v2.message_type(), v.message_type());
    assert_eq!(v2.transaction_id(), v.transaction_id());
    assert!(
        v.attributes().filter(|a| !is_tail(a.typ)).eq(v2.attributes().filter(|a| !is_tail(a.typ)))
    );
    v2.verify_integrity(&key).expect("integrity of our own message");
    v2.verify_fingerprint().expect("fingerprint of our own message");
    assert_eq!(v2.username(), v.username());
    assert_eq!(v2.xor_mapped_address(), v.xor_mapped_address());
    assert_eq!(v2.xor_peer_address(), v.xor_peer_address());
    assert_eq!(v2.error_code(), v.error_code());
    // One flipped bit anywhere before the MAC must fail the check.
    let flip = data.len() % (n - 24 - 8).max(1);
    if flip >= 2 && flip != 3 {
        buf[flip] ^= 0x01;
        if let Ok(v3) = StunView::parse(&buf[..n]) {
            assert!(v3.verify_integrity(&key).is_err());
        }
    }
}

/// ChannelData view, writer round trip and stream framing agreement.
pub fn channel_data(data: &[u8]) {
    let framed = channel_data::stream_frame_len(data);
    let Ok(v) = ChannelDataView::parse(data) else {
        return;
    };
    assert!(channel_data::is_channel_data(data));
    assert!(data.len() - 4 - v.data().len() <= 3);
    match framed {
        Ok(Some(StreamFrame::ChannelData { len, data_len })) => {
            assert_eq!(data_len, v.data().len());
            assert_eq!(len % 4, 0);
            assert!(len >= 4 + data_len && len - 4 - data_len <= 3);
        }
        other => panic!("framing disagrees with parse: {other:?}"),
    }
    let mut out = vec![0u8; data.len() + 4];
    for pad in [false, true] {
        let n = channel_data::write(&mut out, v.channel(), v.data(), pad).unwrap();
        let v2 = ChannelDataView::parse(&out[..n]).unwrap();
        assert_eq!(v2, v);
    }
}

/// RTP view: layout arithmetic and extension bounds.
pub fn rtp(data: &[u8]) {
    let Ok(v) = RtpView::parse(data) else {
        return;
    };
    assert!(crate::wire::rtp::is_rtp(data));
    let hl = v.header_len();
    assert_eq!(hl + v.payload().len() + v.padding_len(), data.len());
    assert!(hl >= 12 + 4 * v.csrc_count() as usize);
    assert_eq!(v.csrcs().len(), v.csrc_count() as usize);
    let mut count = 0;
    for e in v.extensions() {
        assert!(e.offset + e.value.len() <= hl);
        assert_eq!(&data[e.offset..e.offset + e.value.len()], e.value);
        assert_ne!(e.id, 0);
        count += 1;
        assert!(count <= hl);
        assert!(v.extension(e.id).is_some());
    }
    if let Some(ext) = v.extension_data() {
        assert_eq!(ext.len() % 4, 0);
    }
    let _ = v.transport_cc(1);
    let _ = v.abs_send_time(2);
}

/// Rewrite every field in place, re-parse, check the changes and that nothing else moved.
pub fn rtp_rewrite(data: &[u8]) {
    let Ok(orig) = RtpView::parse(data) else {
        return;
    };
    let mut buf = data.to_vec();
    let seed = data.iter().fold(0u32, |a, &b| a.rotate_left(5) ^ b as u32);
    let mut w = RtpRewriter::new(&mut buf).expect("parsed packet must be rewritable");
    w.set_ssrc(seed)
        .set_sequence_number(seed as u16)
        .set_timestamp(!seed)
        .set_marker(seed & 1 == 1);
    w.set_payload_type((seed >> 8) as u8 & 0x7F).unwrap();
    assert!(w.set_payload_type(128).is_err());
    // Rewrite the first extension element with its bitwise complement.
    let first = orig.extensions().next();
    let mut expect_ext = [0u8; 256];
    if let Some(e) = first {
        for (d, s) in expect_ext.iter_mut().zip(e.value) {
            *d = !*s;
        }
        w.set_extension(e.id, &expect_ext[..e.value.len()])
            .expect("present element must be writable");
        if e.value.len() != 2 {
            assert!(w.set_transport_cc(e.id, 1).is_err());
        }
    }
    assert_eq!(w.header_len(), orig.header_len());
    let v = RtpView::parse(&buf).expect("rewritten packet must parse");
    assert_eq!(v.ssrc(), seed);
    assert_eq!(v.sequence_number(), seed as u16);
    assert_eq!(v.timestamp(), !seed);
    assert_eq!(v.marker(), seed & 1 == 1);
    assert_eq!(v.payload_type(), (seed >> 8) as u8 & 0x7F);
    assert_eq!(v.payload(), orig.payload());
    assert_eq!(v.header_len(), orig.header_len());
    assert!(v.csrcs().eq(orig.csrcs()));
    if let Some(e) = first {
        assert_eq!(v.extension(e.id), Some(&expect_ext[..e.value.len()]));
    }
    assert_eq!(v.extensions().count(), orig.extensions().count());

    // The writers: a header rebuilt from this packet for another receiver parses back with
    // its fields, the source's CSRCs and the chosen elements; an RTX unwrap never panics and
    // what it leaves parses.
    use crate::wire::rtp_write::{HeaderFields, rtx_unwrap, write_header, write_rtx_payload};
    let h = HeaderFields {
        marker: seed & 2 == 2,
        pt: (seed >> 16) as u8 & 0x7F,
        seq: (seed >> 3) as u16,
        ts: seed.rotate_left(7),
        ssrc: !seed,
    };
    // Up to 47 bytes and ids up to 31: both the one-byte and the two-byte form (RFC 8285),
    // beside a one-byte-sized element that must come out in whichever form was chosen.
    let value = &data[..data.len().min((seed >> 24) as usize % 48)];
    let id = (seed % 32) as u8;
    let other: (u8, &[u8]) = (if id == 1 { 2 } else { 1 }, b"m");
    let mut out = [0u8; 2 * 1500];
    // What follows the header, padding included (the forwarding path copies it whole); a
    // datagram's worth at most (mutated inputs can be longer).
    let tail = &data[orig.header_len()..];
    if tail.len() <= 1500
        && let Some(n) = write_header(&mut out, &h, &orig, &[other, (id, value)])
    {
        let end = write_rtx_payload(&mut out, n, seed as u16, tail)
            .expect("a 3000-byte buffer holds a header and a 1500-byte payload");
        let w = RtpView::parse(&out[..end]).expect("a written header parses");
        assert_eq!((w.marker(), w.payload_type(), w.sequence_number()), (h.marker, h.pt, h.seq));
        assert_eq!((w.timestamp(), w.ssrc()), (h.ts, h.ssrc));
        assert!(w.csrcs().eq(orig.csrcs()));
        if id != 0 && !value.is_empty() {
            assert_eq!(w.extension(id), Some(value));
        }
        assert_eq!(w.extension(other.0), Some(other.1));
        let two = id != 0 && !value.is_empty() && (id > 14 || value.len() > 16);
        assert_eq!(w.extension_profile(), Some(if two { 0x1000 } else { 0xBEDE }));
        assert!(n.is_multiple_of(4));
        if let Ok(Some(n)) = rtx_unwrap(&mut out, end, 0x1234, 96) {
            let u = RtpView::parse(&out[..n]).expect("unwrapped parses");
            assert_eq!((u.ssrc(), u.sequence_number()), (0x1234, seed as u16));
            assert_eq!(&out[u.header_len()..n], tail);
        }
    }
    let mut copy = data.to_vec();
    let _ = rtx_unwrap(&mut copy, data.len(), 1, 96);
}

/// RTCP walker: strict implies relaxed, every typed view walked to the end.
pub fn rtcp(data: &[u8]) {
    let strict = RtcpCompound::parse(data);
    let Ok(c) = RtcpCompound::parse_relaxed(data) else {
        assert!(strict.is_err());
        return;
    };
    assert_eq!(data[0] >> 6, 2);
    assert_eq!(c.raw_packets().count(), c.len());
    assert_eq!(c.raw_packets().map(|p| p.bytes.len()).sum::<usize>(), data.len());
    for p in c.packets() {
        let Ok(p) = p else { continue };
        walk_packet(&p);
    }
}

fn walk_packet(p: &RtcpPacket<'_>) {
    match p {
        RtcpPacket::SenderReport(sr) => assert!(sr.report_blocks().count() <= 31),
        RtcpPacket::ReceiverReport(rr) => assert!(rr.report_blocks().count() <= 31),
        RtcpPacket::Sdes(s) => {
            for c in s.chunks() {
                let _ = c.items().count();
            }
        }
        RtcpPacket::Bye(b) => assert!(b.ssrcs().len() <= 31),
        RtcpPacket::App(_) | RtcpPacket::Pli(_) | RtcpPacket::Other(_) => {}
        RtcpPacket::Fir(f) => {
            let _ = f.entries().count();
        }
        RtcpPacket::Nack(n) => assert!(n.lost().count() <= 17 * n.pairs().len()),
        RtcpPacket::Remb(r) => {
            let _ = r.bitrate();
            let _ = r.ssrcs().count();
        }
        RtcpPacket::TransportCc(t) => {
            let mut n = 0u32;
            let mut seq = t.base_seq;
            for s in t.packets() {
                assert_eq!(s.seq, seq);
                assert_eq!(s.delta.is_some(), s.status != rtcp::twcc::Status::NotReceived);
                seq = seq.wrapping_add(1);
                n += 1;
            }
            assert_eq!(n, t.status_count as u32);
        }
    }
}

/// Parse each packet, write it again with our writer, parse that: same values.
pub fn rtcp_roundtrip(data: &[u8]) {
    let Ok(c) = RtcpCompound::parse_relaxed(data) else {
        return;
    };
    let mut buf = vec![0u8; data.len() * 2 + 64 + 20 * 65536 / 8];
    for p in c.packets() {
        let Ok(p) = p else { continue };
        let n = match write_like(&p, &mut buf) {
            Some(n) => n,
            None => continue,
        };
        let c2 = RtcpCompound::parse(&buf[..n]).expect("our own packet must frame");
        let p2 = c2.packets().next().expect("one packet").expect("our own packet must parse");
        same_packet(&p, &p2);
    }
}

fn write_like(p: &RtcpPacket<'_>, buf: &mut [u8]) -> Option<usize> {
    use rtcp::*;
    Some(match p {
        RtcpPacket::SenderReport(s) => {
            let blocks: Vec<_> = s.report_blocks().collect();
            sr::write(buf, &s.info, &blocks).ok()?
        }
        RtcpPacket::ReceiverReport(r) => {
            let blocks: Vec<_> = r.report_blocks().collect();
            rr::write(buf, r.sender_ssrc, &blocks).ok()?
        }
        RtcpPacket::Sdes(s) => {
            let items: Vec<Vec<(u8, &[u8])>> = s.chunks().map(|c| c.items().collect()).collect();
            let chunks: Vec<sdes::ChunkSpec<'_>> =
                s.chunks().zip(items.iter()).map(|(c, i)| (c.ssrc, i.as_slice())).collect();
            sdes::write(buf, &chunks).ok()?
        }
        RtcpPacket::Bye(b) => {
            let ssrcs: Vec<u32> = b.ssrcs().collect();
            bye::write(buf, &ssrcs, b.reason).ok()?
        }
        RtcpPacket::App(a) => {
            if !a.data.len().is_multiple_of(4) {
                return None;
            }
            app::write(buf, a.subtype, a.ssrc, a.name, a.data).ok()?
        }
        RtcpPacket::Pli(x) => pli::write(buf, x.sender_ssrc, x.media_ssrc).ok()?,
        RtcpPacket::Fir(f) => {
            let e: Vec<_> = f.entries().collect();
            fir::write(buf, f.sender_ssrc, &e).ok()?
        }
        RtcpPacket::Nack(n) => {
            let pairs: Vec<_> = n.pairs().collect();
            nack::write(buf, n.sender_ssrc, n.media_ssrc, &pairs).ok()?
        }
        RtcpPacket::Remb(r) => {
            if r.bitrate() == u64::MAX {
                return None;
            }
            let ssrcs: Vec<u32> = r.ssrcs().collect();
            remb::write(buf, r.sender_ssrc, r.bitrate(), &ssrcs).ok()?
        }
        RtcpPacket::TransportCc(t) => {
            let deltas: Vec<Option<i16>> = t.packets().map(|p| p.delta).collect();
            let h = twcc::TwccHeader {
                sender_ssrc: t.sender_ssrc,
                media_ssrc: t.media_ssrc,
                base_seq: t.base_seq,
                reference_time: t.reference_time,
                fb_pkt_count: t.fb_pkt_count,
            };
            twcc::write(buf, &h, &deltas).ok()?
        }
        RtcpPacket::Other(_) => return None,
    })
}

fn same_packet(a: &RtcpPacket<'_>, b: &RtcpPacket<'_>) {
    match (a, b) {
        (RtcpPacket::SenderReport(x), RtcpPacket::SenderReport(y)) => {
            assert_eq!(x.info, y.info);
            assert!(x.report_blocks().eq(y.report_blocks()));
        }
        (RtcpPacket::ReceiverReport(x), RtcpPacket::ReceiverReport(y)) => {
            assert_eq!(x.sender_ssrc, y.sender_ssrc);
            assert!(x.report_blocks().eq(y.report_blocks()));
        }
        (RtcpPacket::Sdes(x), RtcpPacket::Sdes(y)) => {
            assert!(x.chunks().map(|c| c.ssrc).eq(y.chunks().map(|c| c.ssrc)));
            for (c, d) in x.chunks().zip(y.chunks()) {
                assert!(c.items().eq(d.items()));
            }
        }
        (RtcpPacket::Bye(x), RtcpPacket::Bye(y)) => {
            assert!(x.ssrcs().eq(y.ssrcs()));
            assert_eq!(x.reason, y.reason);
        }
        (RtcpPacket::App(x), RtcpPacket::App(y)) => assert_eq!(x, y),
        (RtcpPacket::Pli(x), RtcpPacket::Pli(y)) => assert_eq!(x, y),
        (RtcpPacket::Fir(x), RtcpPacket::Fir(y)) => {
            assert_eq!(x.sender_ssrc, y.sender_ssrc);
            assert!(x.entries().eq(y.entries()));
        }
        (RtcpPacket::Nack(x), RtcpPacket::Nack(y)) => assert_eq!(x, y),
        (RtcpPacket::Remb(x), RtcpPacket::Remb(y)) => {
            assert_eq!(x.bitrate(), y.bitrate());
            assert!(x.ssrcs().eq(y.ssrcs()));
            assert_eq!(x.sender_ssrc, y.sender_ssrc);
        }
        (RtcpPacket::TransportCc(x), RtcpPacket::TransportCc(y)) => {
            assert_eq!(
                (x.base_seq, x.status_count, x.reference_time, x.fb_pkt_count),
                (y.base_seq, y.status_count, y.reference_time, y.fb_pkt_count)
            );
            // A large-delta symbol carrying 0..=255 is re-encoded as a small delta: compare
            // what the receiver learns, (seq, delta).
            assert!(
                x.packets().map(|p| (p.seq, p.delta)).eq(y.packets().map(|p| (p.seq, p.delta)))
            );
        }
        (a, b) => panic!("packet kind changed: {a:?} -> {b:?}"),
    }
}

/// DTLS record walk: records tile the datagram, iteration ends.
pub fn dtls_record(data: &[u8]) {
    let mut consumed = 0usize;
    let mut n = 0usize;
    for r in dtls_record::records(data) {
        n += 1;
        assert!(n <= data.len());
        match r {
            Ok(Record::Plain(p)) => {
                consumed += dtls_record::HEADER_LEN + p.fragment.len();
                assert!(p.sequence >> 48 == 0);
                let mut h = [0u8; 13];
                dtls_record::write_header(
                    &mut h,
                    p.content_type,
                    p.version,
                    p.epoch,
                    p.sequence,
                    p.fragment.len(),
                )
                .unwrap();
                assert_eq!(&h[..], &data[consumed - p.fragment.len() - 13..][..13]);
            }
            Ok(Record::Unified(u)) => consumed += u.header.len() + u.ciphertext.len(),
            Ok(Record::UnifiedWithCid(rest)) => consumed += rest.len(),
            Err(_) => {
                consumed = data.len();
            }
        }
        assert!(consumed <= data.len());
    }
    assert_eq!(consumed, data.len());
}

/// A remote SDP (a browser's offer or answer) through what the signaling does with it:
/// `sdp::parse`, then, if it parses, the publish answer under every codec policy, a subscribe
/// answer for the tracks that publish agreed, and the server offer answered by it. Every SDP
/// ringsfu writes from it must parse again (nothing of the remote SDP breaks the lines out).
pub fn sdp(data: &[u8]) {
    use crate::sdp::{self, LocalTransport, OutgoingTrack, VideoCodecPolicy};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(remote) = sdp::parse(text) else { return };
    for line in text.lines() {
        let _ = sdp::parse_candidate(line);
    }
    let local = LocalTransport {
        ice_ufrag: "fuzzufrag".into(),
        ice_pwd: "fuzz-password-0123456789".into(),
        fingerprint_sha256: ["AB"; 32].join(":"),
        candidates: vec!["127.0.0.1:40000".parse().unwrap(), "[::1]:40000".parse().unwrap()],
        session_id: 1,
        session_version: 2,
    };
    let reparses = |written: &str| {
        if let Err(e) = sdp::parse(written) {
            panic!("ringsfu wrote an SDP it cannot parse ({e}):\n{written}");
        }
    };
    for policy in [
        VideoCodecPolicy::MediaServerPreferred,
        VideoCodecPolicy::None,
        VideoCodecPolicy::Vp8,
        VideoCodecPolicy::Vp9,
        VideoCodecPolicy::H264,
        VideoCodecPolicy::Av1,
    ] {
        let Ok(published) = sdp::answer_publish(&remote, &local, policy) else { continue };
        reparses(&published.sdp);
        // The simulcast streams agreed are the ones the answer says it receives.
        let back = sdp::parse(&published.sdp).expect("checked above");
        let answered = back.media.iter().filter(|b| b.port != 0);
        assert_eq!(answered.clone().count(), published.media.len());
        for (m, b) in published.media.iter().zip(answered) {
            let recv = b.simulcast.as_ref().map(|s| s.recv.clone()).unwrap_or_default();
            assert_eq!(recv, m.simulcast, "a=simulcast:recv of mid {}", m.mid);
        }
        let tracks: Vec<OutgoingTrack> = published
            .media
            .iter()
            .map(|m| OutgoingTrack {
                kind: m.kind,
                codec: m.codec.clone(),
                ssrc: 1111,
                rtx_ssrc: 2222,
                cname: "fuzzcname".into(),
                stream_id: "str_CAM_fuzz".into(),
                track_id: format!("{}_fuzz", m.kind.as_str()),
            })
            .collect();
        if let Ok(answer) = sdp::answer_subscribe(&remote, &local, &tracks) {
            reparses(&answer.sdp);
        }
        let offer = sdp::offer_subscribe(&local, &tracks);
        reparses(&offer.sdp);
        let _ = sdp::accept_subscribe_answer(&offer, &remote);
    }
}

/// A `webhook.endpoint` URL (`config::endpoint::parse_endpoint`, which the configuration check
/// and the delivery task share): what parses has a host, a port and an absolute path with no
/// white space or control character (nothing that could break the request head), and the URL
/// rebuilt from it (scheme, `Host` header form, path) parses to the same endpoint.
pub fn webhook_endpoint(data: &[u8]) {
    use crate::config::endpoint::{Scheme, parse_endpoint};
    let Ok(url) = std::str::from_utf8(data) else { return };
    let Some(ep) = parse_endpoint(url) else { return };
    assert!(!ep.host.is_empty() && ep.port != 0 && ep.path.starts_with('/'), "{url:?}: {ep:?}");
    let clean = |s: &str| !s.chars().any(|c| c.is_whitespace() || c.is_control());
    assert!(clean(&ep.host) && clean(&ep.path), "{url:?}: {ep:?}");
    let scheme = match ep.scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    let again = format!("{scheme}://{}{}", ep.host_header(), ep.path);
    assert_eq!(parse_endpoint(&again).as_ref(), Some(&ep), "{url:?} rebuilt as {again:?}");
}

/// A `/metrics` text through `ringsfu-load`'s loop-turn reader (`load::turns`): whatever the
/// text holds it neither panics nor invents turns, so a scrape compared with itself shows none,
/// and one compared with an empty scrape gives a summary.
pub fn metrics_turns(data: &[u8]) {
    use crate::load::turns::{TurnCounts, TurnSummary, parse};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let counts = parse(text);
    assert_eq!(counts.since(&counts), TurnSummary::default(), "{text:?}");
    let _ = counts.since(&TurnCounts::default()).to_string();
}

/// Every parser on the same bytes (the `demux` target routes by first byte; this one does not).
pub fn all(data: &[u8]) {
    demux(data);
    stun(data);
    channel_data(data);
    rtp(data);
    rtcp(data);
    dtls_record(data);
    sdp(data);
    webhook_endpoint(data);
    metrics_turns(data);
    http_range(data);
    recording_json(data);
    codec_inspect(data);
    av1_dd(data);
}

/// A `Range` header against a length (the first 8 bytes, when present) through the recording
/// files route's parser: a partial range lies inside the file, a range written back from it
/// parses to itself, and a segment judged safe names one directory entry and nothing else.
pub fn http_range(data: &[u8]) {
    use crate::control::recording::http::{RangeSpec, parse_range, safe_segment};
    let (len, rest) = match data.split_first_chunk::<8>() {
        Some((l, rest)) => (u64::from_le_bytes(*l), rest),
        None => (0, data),
    };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    match parse_range(text, len) {
        RangeSpec::Partial { first, last } => {
            assert!(first <= last && last < len, "{text:?} / {len}: {first}-{last}");
            let again = format!("bytes={first}-{last}");
            assert_eq!(parse_range(&again, len), RangeSpec::Partial { first, last }, "{again}");
        }
        RangeSpec::Unsatisfiable => {
            assert!(text.trim().starts_with("bytes="), "{text:?}");
        }
        RangeSpec::Full => {}
    }
    if safe_segment(text) {
        assert!(!text.contains('/') && !text.contains('\\') && !text.starts_with('.'), "{text:?}");
        assert!(std::path::Path::new(text).components().count() == 1, "{text:?}");
    }
}

/// JSON through the recording properties checks and the entity-file reader: accepted
/// properties obey OpenVidu's ranges (with or without session defaults taken from the same
/// object), and a Recording read back from its own JSON is the same Recording.
pub fn recording_json(data: &[u8]) {
    use crate::control::recording::props::{Recording, parse, valid_name, valid_resolution};
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for defaults in [None, Some(&m)] {
        let Ok(p) = parse(&m, defaults) else { continue };
        assert!(p.name.is_empty() || valid_name(&p.name), "{:?}", p.name);
        assert!(p.has_audio || p.has_video);
        assert!(p.resolution.as_deref().is_none_or(valid_resolution), "{:?}", p.resolution);
        assert!(p.frame_rate.is_none_or(|f| (1..=120).contains(&f)), "{:?}", p.frame_rate);
        assert!(p.shm_size.is_none_or(|s| s >= 134_217_728), "{:?}", p.shm_size);
        assert_eq!(p.output_mode.is_composed(), p.ignore_failed_streams.is_none());
    }
    if let Some(r) = Recording::from_json(&serde_json::Value::Object(m)) {
        let mut back = Recording::from_json(&r.to_json(true)).expect("own JSON reads back");
        back.props.shm_size = r.props.shm_size;
        assert_eq!(back.to_json(true), r.to_json(true));
    }
}

/// Arbitrary RTCP into a transport's send-side bandwidth estimator
/// ([`crate::media::bwe::SendSideBwe`]) after a scripted send history: 200 packets from
/// transport-wide sequence 65,500 (it wraps), 2 ms apart, the first probe cluster tagged.
/// The input is records `[advance: u8][len: u16 BE][len bytes of RTCP]`: the clock moves
/// `4 × advance` ms while packets keep going out every 5 ms, then the compound is parsed
/// (relaxed) and its TWCC, REMB and report blocks are fed in. Whatever comes, the estimate
/// stays within [min, max], every probe targets at most max, a retransmission is never
/// granted for a packet over a second old, and nothing panics.
pub fn twcc_feedback(data: &[u8]) {
    use std::time::{Duration, Instant};

    use crate::media::bwe::{Bitrate, BweConfig, Retransmit, SendSideBwe};
    use crate::wire::rtcp::{RtcpCompound, RtcpPacket};

    let cfg = BweConfig {
        start: Bitrate::kbps(300),
        min: Bitrate::kbps(50),
        max: Bitrate::kbps(5_000),
        history: 512,
        rtx_share: 0.2,
    };
    let mut bwe = SendSideBwe::new(cfg);
    let t0 = Instant::now();
    let mut now = t0;
    let mut seq: u16 = 65_500;
    let mut cluster = None;
    let check = |bwe: &mut SendSideBwe, now: Instant| {
        let e = bwe.estimate();
        assert!(e >= cfg.min && e <= cfg.max, "estimate {e} outside [{}, {}]", cfg.min, cfg.max);
        while let Some(c) = bwe.poll_probe(now) {
            assert!(c.bitrate <= cfg.max && c.min_packets > 0, "{c:?}");
        }
        if bwe.poll_timeout().is_some_and(|t| t <= now) {
            bwe.handle_timeout(now);
        }
    };
    for i in 0..200u32 {
        now = t0 + Duration::from_millis(2 * i as u64);
        if i == 0 {
            bwe.handle_sent(now, Some(seq), 1_000, None, false);
            cluster = bwe.poll_probe(now).map(|c| c.id);
        } else {
            let tag = if i < 10 { cluster } else { None };
            bwe.handle_sent(now, Some(seq), 200 + (i as usize * 37) % 1_000, tag, i % 17 == 0);
        }
        seq = seq.wrapping_add(1);
    }
    let mut rest = data;
    while let [advance, hi, lo, tail @ ..] = rest {
        let len = u16::from_be_bytes([*hi, *lo]) as usize;
        let (rtcp, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        let until = now + Duration::from_millis(4 * *advance as u64);
        while now + Duration::from_millis(5) <= until {
            now += Duration::from_millis(5);
            bwe.handle_sent(now, Some(seq), 1_200, None, false);
            seq = seq.wrapping_add(1);
            check(&mut bwe, now);
        }
        now = until;
        let Ok(c) = RtcpCompound::parse_relaxed(rtcp) else { continue };
        for p in c.packets().flatten() {
            match p {
                RtcpPacket::TransportCc(t) => bwe.handle_twcc(now, &t),
                RtcpPacket::Remb(r) => bwe.handle_remb(now, r.bitrate()),
                RtcpPacket::ReceiverReport(rr) => {
                    for b in rr.report_blocks() {
                        let rtt = Duration::from_micros(b.delay_since_last_sr as u64 * 15);
                        bwe.handle_receiver_report(now, b.fraction_lost, Some(rtt));
                    }
                }
                _ => {}
            }
            check(&mut bwe, now);
        }
        // Past the longest age any RTT allows (`bwe::MAX_AGE`), a resend is refused.
        let max_age = crate::media::bwe::MAX_AGE;
        let old = now.checked_sub(max_age + Duration::from_millis(1)).unwrap_or(t0);
        if now.saturating_duration_since(old) > max_age {
            assert_eq!(bwe.allow_retransmit(now, 1_200, old), Retransmit::TooOld);
        }
        let _ = bwe.allow_retransmit(now, 1_200, now);
    }
    check(&mut bwe, now);
}

/// Random RTP packet streams of one track (the first byte picks H.264, AV1, VP8, VP9 or Opus)
/// through the reorder buffer and the depacketizer on a virtual clock, and the same stream
/// through a whole `RecorderCore`. Invariants: packets leave the buffer in strictly
/// increasing order (until the buffer starts over on another sequence); every frame is a well-formed sample of its codec (H.264: 4-byte
/// length-prefixed NAL units exactly filling it; AV1: OBUs with size fields exactly filling
/// it, no temporal delimiter; any codec: non-empty and at most `MAX_FRAME`); the recorder's
/// patches land inside the bytes it appended and its summary's size is that length.
pub fn record_depack(data: &[u8]) {
    use crate::record::depack::{Codec, Depacketizer, MAX_FRAME, read_leb128};
    use crate::record::mkv::TrackKind;
    use crate::record::recorder::{Output, RecorderConfig, RecorderCore};
    use crate::record::reorder::ReorderBuffer;
    use std::time::{Duration, Instant};

    let Some((&first, mut rest)) = data.split_first() else { return };
    let codec =
        [Codec::H264, Codec::Av1, Codec::Vp8, Codec::Vp9, Codec::Opus][usize::from(first % 5)];
    let kind = if codec == Codec::Opus { TrackKind::Audio } else { TrackKind::Video };
    let t0 = Instant::now();
    let mut now = t0;
    let mut rb = ReorderBuffer::new(32, Duration::from_millis(50));
    let mut dp = Depacketizer::new(codec);
    let mut core = RecorderCore::new(
        t0,
        RecorderConfig::new(codec.is_video().then_some(codec), !codec.is_video()),
    );
    let mut file: Vec<u8> = Vec::new();
    let mut finished = None;
    let mut last_seq = None;
    let (mut seq, mut ts) = (1000u16, 0u32);
    let check_frame = |codec: Codec, f: &[u8]| {
        assert!(!f.is_empty() && f.len() <= MAX_FRAME);
        let mut at = 0usize;
        match codec {
            Codec::H264 => {
                while at < f.len() {
                    let len = f
                        .get(at..at + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize);
                    let len = len.expect("H.264 length prefix");
                    assert!(len > 0 && f.get(at + 4).is_some_and(|h| h & 0x80 == 0), "NAL unit");
                    at += 4 + len;
                }
                assert_eq!(at, f.len(), "NAL units fill the sample");
            }
            Codec::Av1 => {
                while at < f.len() {
                    let h = f[at];
                    assert!(h & 0x02 != 0 && h & 0x80 == 0, "OBU header with size field");
                    assert_ne!((h >> 3) & 0xF, 2, "temporal delimiter dropped");
                    let hl = 1 + usize::from((h >> 2) & 1);
                    let (size, used) =
                        read_leb128(f.get(at + hl..).unwrap_or(&[])).expect("obu_size");
                    at += hl + used + size;
                }
                assert_eq!(at, f.len(), "OBUs fill the sample");
            }
            _ => {}
        }
    };
    let drain_core = |core: &mut RecorderCore, file: &mut Vec<u8>, finished: &mut Option<u64>| {
        while let Some(o) = core.poll_output() {
            match o {
                Output::Append(b) => file.extend_from_slice(&b),
                Output::Patch(p) => assert!(p.apply(file), "patch inside the file"),
                Output::Finished(s) => *finished = Some(s.size),
                _ => {}
            }
        }
    };
    while rest.len() >= 4 {
        let (hdr, tail) = rest.split_at(4);
        let len = usize::from(hdr[3]).min(tail.len());
        let (payload, tail) = tail.split_at(len);
        rest = tail;
        seq = seq.wrapping_add(hdr[0] as i8 as i16 as u16);
        ts = ts.wrapping_add(u32::from(hdr[1]) * 300);
        let marker = hdr[2] & 1 != 0;
        now += Duration::from_millis(u64::from(hdr[2] >> 1));
        rb.insert(now, seq, ts, marker, payload);
        if rb.take_restarted() {
            last_seq = None; // another sequence: order starts over
        }
        if rb.poll_timeout().is_some_and(|t| t <= now) {
            rb.handle_timeout(now);
        }
        while let Some(p) = rb.pop() {
            assert!(last_seq.is_none_or(|l| p.seq > l), "in order");
            last_seq = Some(p.seq);
            dp.push(p.timestamp, p.marker, p.payload, p.lost_before);
        }
        rb.after_pop(now);
        while let Some(f) = dp.poll_frame() {
            check_frame(codec, &f.data);
        }
        while dp.poll_note().is_some() {}
        if let Some(t) = core.poll_timeout()
            && t <= now
        {
            core.handle_timeout(now);
        }
        core.handle_rtp(now, kind, seq, ts, marker, payload);
        drain_core(&mut core, &mut file, &mut finished);
    }
    core.close(now);
    drain_core(&mut core, &mut file, &mut finished);
    assert_eq!(finished, Some(file.len() as u64), "summary size is the file length");
}

/// One video payload: the first byte picks the codec (`% 6`: VP8, VP9, H.264, AV1, Opus,
/// other) and the marker (top bit), the rest is the payload. What `inspect` accepts stays in
/// bounds and keeps each codec's ranges; a VP8/VP9 picture id rewrite changes the id (modulo
/// its field) and TL0PICIDX, and nothing else `inspect` reports nor any bitstream byte.
pub fn codec_inspect(data: &[u8]) {
    use crate::wire::codec::{self, Codec, PictureId, vp8, vp9};
    let Some((&sel, payload)) = data.split_first() else { return };
    let codecs = [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1, Codec::Opus, Codec::Other];
    let c = codecs[(sel & 0x7F) as usize % codecs.len()];
    let marker = sel & 0x80 != 0;
    let Ok(info) = codec::inspect(c, payload, marker) else { return };
    assert!(info.payload_offset <= payload.len());
    match c {
        Codec::Vp8 => {
            assert!(info.temporal_id.is_none_or(|t| t < 4) && info.spatial_id.is_none());
            assert!(!info.keyframe || (info.frame_start && info.payload_offset < payload.len()));
            assert_eq!(info.frame_end, marker);
        }
        Codec::Vp9 => {
            assert!(info.temporal_id.is_none_or(|t| t < 8));
            assert!(info.spatial_id.is_none_or(|s| s < 8));
            assert!(!info.keyframe || (info.frame_start && !info.inter_predicted));
            assert!(!info.flexible || info.tl0picidx.is_none());
            if let Some(ss) = info.scalability {
                assert!((1..=8).contains(&ss.spatial_layers));
            }
        }
        Codec::H264 => {
            assert!(matches!(info.payload_offset, 0..=2) && info.temporal_id.is_none());
        }
        Codec::Av1 => {
            assert_eq!(info.payload_offset, 1);
            assert!(info.temporal_id.is_none_or(|t| t < 8));
            assert!(info.spatial_id.is_none_or(|s| s < 4));
        }
        Codec::Opus | Codec::Other => assert_eq!(info.payload_offset, 0),
    }
    if !matches!(c, Codec::Vp8 | Codec::Vp9) {
        return;
    }
    let seed = data.iter().fold(0u16, |a, &b| a.rotate_left(3) ^ u16::from(b));
    let tl0 = seed as u8 ^ 0x5A;
    let mut buf = payload.to_vec();
    let res = if c == Codec::Vp8 {
        vp8::rewrite_picture_id(&mut buf, seed, Some(tl0))
    } else {
        vp9::rewrite_picture_id(&mut buf, seed, Some(tl0))
    };
    let Some(pid) = info.picture_id else {
        assert!(res.is_err(), "no picture id, nothing to rewrite");
        assert_eq!(buf, payload);
        return;
    };
    res.expect("a parsed descriptor with a picture id is rewritable");
    let again = codec::inspect(c, &buf, marker).expect("a rewritten descriptor parses");
    let mut expect = info;
    expect.picture_id = Some(PictureId { value: seed % pid.modulus(), long: pid.long });
    if info.tl0picidx.is_some() {
        expect.tl0picidx = Some(tl0);
    }
    assert_eq!(again, expect);
    assert_eq!(&buf[info.payload_offset..], &payload[info.payload_offset..]);
    assert!(buf.iter().zip(payload).filter(|(a, b)| a != b).count() <= 3);
}

/// AV1 Dependency Descriptors: the first byte is the length of a first descriptor (parsed
/// without a structure), then length-prefixed descriptors parsed with the structure the first
/// one carried. Ids come from the structure's templates and stay in its ranges; a 3-byte
/// descriptor written from a parsed one's mandatory fields parses to the same frame.
pub fn av1_dd(data: &[u8]) {
    use crate::wire::codec::av1_dd::{self, DdPacket, DdStructure, MAX_FDIFFS};
    fn check(p: &DdPacket, s: Option<&DdStructure>) {
        assert!((p.fdiff_cnt as usize) <= MAX_FDIFFS);
        assert!(p.fdiffs[..p.fdiff_cnt as usize].iter().all(|&f| f >= 1));
        let Some(s) = s else {
            assert_eq!((p.spatial_id, p.temporal_id), (None, None));
            return;
        };
        let (sid, tid) = (p.spatial_id.unwrap(), p.temporal_id.unwrap());
        assert_eq!(s.template_layers(p.template_id), Some((sid, tid)));
        assert!(sid <= s.max_spatial_id() && tid <= s.max_temporal_id());
        assert!((1..=64).contains(&s.template_count()));
        assert_eq!(p.chain_cnt as usize, s.chain_count());
        assert!(s.chain_count() <= s.decode_target_count());
        for dt in 0..32 {
            assert_eq!(p.dti(dt).is_some(), dt < s.decode_target_count());
            if let Some((ms, mt)) = s.decode_target_layers(dt) {
                assert!(ms <= s.max_spatial_id() && mt <= s.max_temporal_id());
            }
            if let Some(c) = s.protected_by(dt) {
                assert!((c as usize) < s.chain_count());
            }
        }
        if let Some(mask) = p.active_decode_targets {
            let n = s.decode_target_count();
            assert!(n == 32 || mask >> n == 0);
        }
        // The mandatory fields alone, with the structure: the same frame.
        let b0 =
            (u8::from(p.start_of_frame) << 7) | (u8::from(p.end_of_frame) << 6) | p.template_id;
        let [hi, lo] = p.frame_number.to_be_bytes();
        let q = av1_dd::parse(&[b0, hi, lo], Some(s)).expect("mandatory fields of a parsed frame");
        assert_eq!((q.spatial_id, q.temporal_id), (p.spatial_id, p.temporal_id));
        assert_eq!(
            (q.start_of_frame, q.end_of_frame, q.frame_number),
            (p.start_of_frame, p.end_of_frame, p.frame_number)
        );
    }
    // The active decode targets rewrite: what it writes parses back as the same frame with
    // the new bitmask (the structure, DTIs, diffs and chains kept bit for bit).
    fn rewrite(d: &[u8], p: &DdPacket, s: &DdStructure, active: u32) {
        let mut out = [0u8; av1_dd::MAX_DESCRIPTOR_LEN];
        let Ok(n) = av1_dd::with_active_decode_targets(d, p, s, active, &mut out) else {
            return;
        };
        let q = av1_dd::parse(&out[..n], Some(s)).expect("a rewritten descriptor parses");
        assert_eq!(q.active_decode_targets, Some(active & s.all_targets()));
        assert_eq!(q.new_structure.as_ref(), p.new_structure.as_ref());
        assert_eq!(
            (q.spatial_id, q.temporal_id, q.frame_number),
            (p.spatial_id, p.temporal_id, p.frame_number)
        );
        assert_eq!(
            (q.start_of_frame, q.end_of_frame, q.template_id),
            (p.start_of_frame, p.end_of_frame, p.template_id)
        );
        assert_eq!(&q.fdiffs[..q.fdiff_cnt as usize], &p.fdiffs[..p.fdiff_cnt as usize]);
        assert_eq!(
            &q.chain_fdiffs[..q.chain_cnt as usize],
            &p.chain_fdiffs[..p.chain_cnt as usize]
        );
        for dt in 0..s.decode_target_count() {
            assert_eq!(q.dti(dt), p.dti(dt));
        }
    }
    let Some((&n, rest)) = data.split_first() else { return };
    let (first, mut more) = rest.split_at((n as usize).min(rest.len()));
    let mut structure = None;
    if let Ok(p) = av1_dd::parse(first, None) {
        check(&p, p.new_structure.as_ref());
        if let Some(s) = p.new_structure.as_ref() {
            rewrite(first, &p, s, u32::from(n).rotate_left(3));
        }
        structure = p.new_structure;
    }
    while let Some((&len, tail)) = more.split_first() {
        let (d, t) = tail.split_at((len as usize % 64).min(tail.len()));
        if let Ok(p) = av1_dd::parse(d, structure.as_ref()) {
            let s = p.new_structure.as_ref().or(structure.as_ref());
            check(&p, s);
            if let Some(s) = s {
                rewrite(d, &p, s, u32::from(len) * 0x0101_0101);
            }
        }
        more = t;
    }
}

/// A simulated publisher, by the first byte's low bit a three-encoding VP8 simulcast or a VP9
/// k-SVC (L3T3_KEY: three spatial layers, SS on key pictures) one (temporal pattern 0,2,1,2
/// with layer sync, keyframes every 64 pictures or on request), feeding one consumer's
/// `LayerSelector` and `SeqTsRewriter`, driven by the bytes: which encoding sends next, loss,
/// delay (held and delivered late), time steps and target changes. Asserts: the encoding
/// changes only at a keyframe, the temporal layer rises only at a keyframe or a layer sync,
/// the spatial layer only at a key picture; lower targets hold from the next picture start;
/// a late packet changes nothing; a frame whose first packet was dropped is dropped whole;
/// one marker per forwarded picture, on its last forwarded packet; outgoing seq is +1 after
/// the previous one unless the input lost or held packets in between, never reused, +1
/// across a switch; timestamps follow the input within an encoding and advance by the
/// elapsed time (at least one tick) across a switch; picture id +1 per forwarded picture and
/// TL0PICIDX +1 per forwarded TL0 picture unless a packet was lost in between; NACKs map
/// back; `Rewrite::apply` round trips. (A switch on a keyframe that came late leaves holes for
/// the packets of the new encoding that came before it: they were dropped while the old
/// encoding was forwarded.)
pub fn layer_switch(data: &[u8]) {
    use crate::media::layers::{Action, LayerSelector, LayerTarget, PacketMeta, SeqTsRewriter};
    use crate::wire::codec::{self, Codec, PacketInfo};
    use crate::wire::rtp::RtpView;
    use std::collections::{BTreeSet, HashSet};
    use std::time::{Duration, Instant};

    const PATTERN: [u8; 4] = [0, 2, 1, 2];
    #[derive(Clone, Copy, Default)]
    struct Enc {
        idx: u64,
        seq0: u16,
        ts: u32,
        pic: u16,
        tl0: u8,
        frame: u32,
        left: u8,
        tid: u8,
        key: bool,
        first: bool,
        key_pending: bool,
        /// SVC: the spatial layer being sent and whether a picture is under way.
        sid: u8,
        open: bool,
    }
    struct Pkt {
        enc: u8,
        idx: u64,
        bytes: Vec<u8>,
    }
    let mut bytes = data.iter().copied();
    let mut byte = move || bytes.next();
    // Mode: VP8 simulcast (three encodings) or VP9 k-SVC (one encoding, L3T3_KEY).
    let svc = byte().unwrap_or(0) & 1 == 1;
    let n_enc: u8 = if svc { 1 } else { 3 };
    let codec_of = if svc { Codec::Vp9 } else { Codec::Vp8 };
    let t0 = Instant::now();
    let mut ms: u64 = 0;
    let mut encs = [Enc::default(); 3];
    for (i, e) in encs.iter_mut().enumerate() {
        e.seq0 = u16::from(byte().unwrap_or(0)) << 8 | (i as u16 * 77);
        e.pic = u16::from(byte().unwrap_or(0)) << 7;
        e.ts = u32::from(byte().unwrap_or(0)) << 24;
        e.frame = 0;
    }
    let first_seq = 4000u16;
    let mut target = if svc {
        LayerTarget { encoding: 0, spatial: 2, temporal: 2 }
    } else {
        LayerTarget { encoding: 2, spatial: 0, temporal: 2 }
    };
    let mut sel = LayerSelector::new(target, Duration::from_millis(300));
    let mut rw = SeqTsRewriter::new(0x5EED, 90_000, first_seq);
    let mut held: Vec<Pkt> = Vec::new();
    let mut delivered_hi = [None::<u64>; 3];
    // Packets (encoding, index) lost or held and not delivered yet.
    let mut missing: BTreeSet<(u8, u64)> = BTreeSet::new();
    let mut outs: HashSet<u64> = HashSet::new();
    // Frames (encoding, timestamp) whose first packet was dropped: none of it goes out.
    let mut dropped_frames: HashSet<(u8, u32, Option<u8>)> = HashSet::new();
    // The picture under way in what was forwarded in order: encoding, timestamp, index of its
    // first forwarded packet, whether its marker went out.
    let mut picture: Option<(u8, u32, u64, bool)> = None;
    // (out seq extended, ts, time in ms, encoding, index) of the newest outgoing seq; the
    // newest picture id (with the encoding and index of its packet) and TL0PICIDX.
    let mut last: Option<(u64, u32, u64, u8, u64)> = None;
    let mut last_pic: Option<(u16, u8, u64)> = None;
    let mut last_tl0: Option<u8> = None;

    // Nothing of encoding `enc` is missing strictly between packets `from` and `to`.
    fn whole(missing: &BTreeSet<(u8, u64)>, enc: u8, from: u64, to: u64) -> bool {
        from + 1 >= to || missing.range((enc, from + 1)..(enc, to)).next().is_none()
    }
    let make = |e: &mut Enc, enc: u8, per_frame: u8| -> Pkt {
        if e.left == 0 && svc && e.open && e.sid < 2 {
            e.sid += 1;
            e.left = 1 + per_frame % 2;
            e.first = true;
        } else if e.left == 0 {
            e.sid = 0;
            e.open = true;
            e.key = e.frame == 0 || e.key_pending || e.frame.is_multiple_of(64);
            if e.key {
                e.key_pending = false;
                e.frame = 0;
            }
            e.tid = PATTERN[e.frame as usize % 4];
            if e.tid == 0 {
                e.tl0 = e.tl0.wrapping_add(1);
            }
            e.pic = e.pic.wrapping_add(1) & 0x7FFF;
            e.ts = e.ts.wrapping_add(3000);
            e.frame += 1;
            e.left = 1 + per_frame % 3;
            e.first = true;
        }
        let start = e.first;
        e.first = false;
        e.left -= 1;
        let layer_end = e.left == 0;
        let marker = layer_end && (!svc || e.sid == 2);
        let sync = e.tid > 0 && matches!((e.frame - 1) % 4, 1 | 2);
        let seq = e.seq0.wrapping_add(e.idx as u16);
        let mut b = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&e.ts.to_be_bytes());
        b.extend_from_slice(&(1000 + u32::from(enc)).to_be_bytes());
        if svc {
            // I P L (F=0) B E V: picture id, layer indices, TL0PICIDX, SS on the key picture.
            let ss = e.key && e.sid == 0 && start;
            b.push(
                0xA0 | if e.key { 0 } else { 0x40 }
                    | if start { 0x08 } else { 0 }
                    | if layer_end { 0x04 } else { 0 }
                    | if ss { 0x02 } else { 0 },
            );
            b.extend_from_slice(&(0x8000 | e.pic).to_be_bytes());
            let d = u8::from(e.key && e.sid > 0);
            b.push((e.tid << 5) | (u8::from(sync) << 4) | (e.sid << 1) | d);
            b.push(e.tl0);
            if ss {
                b.push(0x50);
                for v in [320u16, 180, 640, 360, 1280, 720] {
                    b.extend_from_slice(&v.to_be_bytes());
                }
            }
            // The VP9 frame header's first byte (profile 0): key frame or not.
            b.push(if e.key { 0x82 } else { 0x86 });
        } else {
            b.push(0x80 | if start { 0x10 } else { 0 });
            b.push(0xE0);
            b.extend_from_slice(&(0x8000 | e.pic).to_be_bytes());
            b.push(e.tl0);
            b.push((e.tid << 6) | if sync { 0x20 } else { 0 });
            b.push(if e.key && start { 0x10 } else { 0x11 });
        }
        b.extend_from_slice(&[0xAA; 3]);
        let p = Pkt { enc, idx: e.idx, bytes: b };
        e.idx += 1;
        p
    };

    let mut steps = 0;
    while let Some(op) = byte() {
        steps += 1;
        if steps > 4096 {
            break;
        }
        ms += 2;
        let pkt = match op % 8 {
            0 => {
                let layer = byte().unwrap_or(0) % 3;
                let (encoding, spatial) = if svc { (0, layer) } else { (layer, 0) };
                target = LayerTarget { encoding, spatial, temporal: byte().unwrap_or(0) % 3 };
                sel.set_target(target);
                continue;
            }
            1 => {
                ms += u64::from(byte().unwrap_or(0));
                continue;
            }
            7 => {
                if held.is_empty() {
                    continue;
                }
                held.remove(0)
            }
            _ => {
                let enc = (op >> 3) % n_enc;
                let per_frame = byte().unwrap_or(0);
                let p = make(&mut encs[enc as usize], enc, per_frame);
                match op >> 5 {
                    0 => {
                        // Lost.
                        missing.insert((enc, p.idx));
                        continue;
                    }
                    1 => {
                        missing.insert((enc, p.idx));
                        held.push(p);
                        if held.len() <= 4 {
                            continue;
                        }
                        held.remove(0)
                    }
                    _ => p,
                }
            }
        };
        let now = t0 + Duration::from_millis(ms);
        let e = pkt.enc as usize;
        missing.remove(&(pkt.enc, pkt.idx));
        let in_order = delivered_hi[e].is_none_or(|h| pkt.idx > h);
        if in_order {
            delivered_hi[e] = Some(pkt.idx);
        }
        let v = RtpView::parse(&pkt.bytes).expect("the simulation writes valid RTP");
        let info: PacketInfo =
            codec::inspect(codec_of, v.payload(), v.marker()).expect("valid descriptor");
        let picture_start = info.frame_start && info.spatial_id.unwrap_or(0) == 0;
        let meta = PacketMeta {
            encoding: pkt.enc,
            ssrc: v.ssrc(),
            seq: v.sequence_number(),
            timestamp: v.timestamp(),
            marker: v.marker(),
        };
        let before = sel.current();
        let verdict = sel.on_packet(now, &meta, &info);
        let after = sel.current();
        if let Some(k) = verdict.keyframe_request {
            assert!(k < n_enc);
            encs[k as usize].key_pending = true;
        }
        if let (Some(b), Some(a)) = (before, after) {
            if a != b {
                assert!(in_order, "a late packet changes nothing");
            }
            if a.encoding != b.encoding {
                assert!(info.keyframe, "encoding switch only at a keyframe");
            }
            if a.encoding == b.encoding && a.temporal > b.temporal {
                assert!(info.keyframe || info.layer_sync, "temporal up only at a switch point");
            }
            if a.encoding == b.encoding && a.spatial > b.spatial {
                assert!(info.keyframe, "spatial up only at a key picture");
            }
            if a.encoding == pkt.enc && picture_start && in_order {
                assert!(a.temporal <= target.temporal, "temporal down at the picture start");
                assert!(a.spatial <= target.spatial, "spatial down at the picture start");
            }
        } else if after.is_some() {
            assert!(info.keyframe, "starts at a keyframe");
        }
        match verdict.action {
            Action::Drop(reason) => {
                if reason.in_current() && info.frame_start && in_order {
                    dropped_frames.insert((pkt.enc, meta.timestamp, info.spatial_id));
                }
                if reason.in_current() {
                    rw.dropped(&meta, &info);
                    if !in_order {
                        // Its place was kept for it: a late drop stays a hole.
                        missing.insert((pkt.enc, pkt.idx));
                    }
                }
            }
            Action::Forward { marker, switched } => {
                assert_eq!(switched, before.is_none_or(|b| b.encoding != pkt.enc));
                if in_order {
                    let frame = (pkt.enc, meta.timestamp, info.spatial_id);
                    assert!(!dropped_frames.contains(&frame), "part of a dropped frame");
                }
                if switched && !in_order {
                    // Switched on a keyframe that came late: the packets of this encoding
                    // after it came earlier and were dropped (another encoding was forwarded),
                    // so for this consumer they are holes (a NACK can fill them).
                    for i in pkt.idx + 1..=delivered_hi[e].unwrap_or(pkt.idx) {
                        missing.insert((pkt.enc, i));
                    }
                }
                let Some(out) = rw.forward(now, &meta, &info, switched) else {
                    missing.insert((pkt.enc, pkt.idx));
                    assert!(!in_order && !switched, "only late packets are refused");
                    continue;
                };
                let out_ext = match last {
                    Some((l, ..)) => crate::router::SeqExtender::nearest(l, out.seq),
                    None => (1 << 32) + u64::from(out.seq),
                };
                assert!(outs.insert(out_ext), "outgoing seq {} reused", out.seq);
                if !svc {
                    assert_eq!(marker, meta.marker);
                }
                // The rewritten packet carries what was decided.
                let mut b = pkt.bytes.clone();
                out.apply(codec_of, &mut b, marker).expect("apply on a valid packet");
                let w = RtpView::parse(&b).unwrap();
                assert_eq!(
                    (w.sequence_number(), w.timestamp(), w.ssrc()),
                    (out.seq, out.timestamp, 0x5EED)
                );
                let wi = codec::inspect(codec_of, w.payload(), marker).unwrap();
                assert_eq!(wi.picture_id.map(|p| p.value), out.picture_id);
                assert_eq!(wi.tl0picidx, out.tl0picidx);
                let src = rw.source_of(out.seq).expect("a forwarded seq maps back");
                assert_eq!((src.encoding, src.ssrc, src.seq), (pkt.enc, meta.ssrc, meta.seq));
                assert_eq!(src.ts_offset, out.timestamp.wrapping_sub(meta.timestamp));
                let (pic, tl0) = (out.picture_id.unwrap(), out.tl0picidx.unwrap());
                // A switch starts a new mapping even on a packet that came late.
                if in_order || switched {
                    match last {
                        None => assert_eq!(out.seq, first_seq),
                        Some((l, lts, lms, lenc, lidx)) => {
                            assert!(out_ext > l, "an in-order packet goes after what was sent");
                            let dts = out.timestamp.wrapping_sub(lts);
                            if switched {
                                assert_eq!(out_ext, l + 1, "seq continues across a switch");
                                let ticks = ((ms - lms) * 90).max(1);
                                assert_eq!(u64::from(dts), ticks, "ts continues across a switch");
                            } else {
                                assert_eq!(lenc, pkt.enc, "another encoding without a switch");
                                if whole(&missing, pkt.enc, lidx, pkt.idx) {
                                    assert_eq!(out_ext, l + 1, "a drop left a hole");
                                }
                                assert!((dts as i32) >= 0, "timestamps go back");
                            }
                        }
                    }
                    if let (true, Some((lp, penc, pidx)), Some(lt)) =
                        (picture_start, last_pic, last_tl0)
                        && (switched
                            || (penc == pkt.enc && whole(&missing, pkt.enc, pidx, pkt.idx)))
                    {
                        assert_eq!(pic, (lp + 1) & 0x7FFF, "picture id continuous");
                        let step = u8::from(info.temporal_id == Some(0));
                        assert_eq!(tl0, lt.wrapping_add(step), "TL0PICIDX continuous");
                    }
                }
                // One marker per forwarded picture, on its last forwarded packet (VP9: the end of
                // the highest forwarded spatial layer); a late packet may bring it.
                match picture {
                    Some((penc, pts, pidx, seen)) if penc == pkt.enc && pts == meta.timestamp => {
                        if in_order && whole(&missing, pkt.enc, pidx, pkt.idx) {
                            assert!(!seen, "a packet after the picture's marker");
                        }
                        picture = Some((penc, pts, pidx, seen || marker));
                    }
                    prev if in_order || switched => {
                        if let Some((penc, _, pidx, seen)) = prev
                            && !switched
                            && penc == pkt.enc
                            && whole(&missing, pkt.enc, pidx, pkt.idx)
                        {
                            assert!(seen, "a forwarded picture without its marker");
                        }
                        picture = Some((pkt.enc, meta.timestamp, pkt.idx, marker));
                    }
                    _ => {}
                }
                // What the rewriter continues from: the newest outgoing seq (a late packet may
                // fill the top hole) with its timestamp and TL0PICIDX, the newest picture id.
                if last_pic
                    .is_none_or(|(lp, ..)| (1..0x4000).contains(&(pic.wrapping_sub(lp) & 0x7FFF)))
                {
                    last_pic = Some((pic, pkt.enc, pkt.idx));
                }
                if last.is_none_or(|(l, ..)| out_ext > l) {
                    last = Some((out_ext, out.timestamp, ms, pkt.enc, pkt.idx));
                    last_tl0 = Some(tl0);
                }
            }
        }
    }
}

/// `ringsfu-load --simulcast`'s readers and accounting: the stamp and keyframe-size readers on
/// arbitrary bytes (a stamp only where its magic is, sizes within 14 bits), the simulcast VP8
/// header written from fuzzed fields read back by `wire::codec` unchanged, the policer never
/// passing more than its depth plus its rate, and the frame tracker never counting more
/// frames than it was given packets.
pub fn load_sim(data: &[u8]) {
    use crate::load::core::{STAMP_MAGIC, STAMP_OFFSET, read_stamp_at};
    use crate::load::simulcast::{
        FrameTracker, LAYER_SIZES, SIM_STAMP_OFFSET, TokenBucket, Vp8Header, keyframe_size,
        write_vp8_header,
    };
    use crate::wire::codec::{Codec, inspect};
    use std::time::{Duration, Instant};
    for at in [0, STAMP_OFFSET, SIM_STAMP_OFFSET, data.len(), usize::MAX] {
        if let Some(s) = read_stamp_at(data, at) {
            assert_eq!(data.get(at..at + 4), Some(&STAMP_MAGIC.to_be_bytes()[..]));
            assert!(data.len() >= at + 28, "{s:?}");
        }
        if let Some((w, h)) = keyframe_size(data, at) {
            assert!(w < 0x4000 && h < 0x4000);
        }
    }
    let Some((head, rest)) = data.split_first_chunk::<6>() else { return };
    let h = Vp8Header {
        first: head[0] & 1 != 0,
        key: head[0] & 3 == 3,
        picture_id: u16::from_be_bytes([head[1], head[2]]) & 0x7FFF,
        tl0picidx: head[3],
        tid: head[4] % 3,
        sync: head[4] & 4 != 0,
        size: LAYER_SIZES[usize::from(head[5] % 3)],
    };
    let b = write_vp8_header(&h);
    let info = inspect(Codec::Vp8, &b, head[0] & 4 != 0).expect("our header parses");
    assert_eq!(info.frame_start, h.first);
    assert_eq!(info.keyframe, h.key);
    assert_eq!(info.temporal_id, Some(h.tid));
    assert_eq!(info.layer_sync, h.sync);
    assert_eq!(info.tl0picidx, Some(h.tl0picidx));
    assert_eq!(info.picture_id.map(|p| p.value), Some(h.picture_id));
    assert_eq!(keyframe_size(&b, info.payload_offset), h.key.then_some(h.size));
    // The rest: (gap ms, bytes / frame index, count) triples for the policer and the tracker.
    let t0 = Instant::now();
    let rate = 8_000 * u64::from(head[5].max(1));
    let mut bucket = TokenBucket::new(rate);
    let mut frames = FrameTracker::default();
    let (mut now, mut passed, mut packets) = (t0, 0u64, 0u64);
    for c in rest.chunks_exact(3) {
        now += Duration::from_millis(u64::from(c[0]));
        let bytes = usize::from(c[1]) * 8;
        if bucket.admit(now, bytes) {
            passed += bytes as u64;
        }
        let depth = (rate as f64 / 8.0 * 0.1).max(4500.0);
        let allowed = depth + now.duration_since(t0).as_secs_f64() * rate as f64 / 8.0;
        assert!(passed as f64 <= allowed + 1e-6, "{passed} > {allowed}");
        packets += 1;
        frames.on_packet(now, u32::from(c[0] / 16), c[1] % 8, c[2] % 8, true);
        assert!(frames.frames <= packets);
        assert!(frames.longest_freeze <= frames.freeze_total);
        assert!(u64::from(frames.freezes) <= frames.frames);
    }
}

/// RTCP XR (RFC 3611): every XR packet of a compound, and the input itself taken as an XR
/// body. Blocks tile the body, DLRR items are whole, writing the blocks back gives the same
/// bytes (block bodies are kept verbatim) and parses to the same blocks; RTT never panics.
pub fn rtcp_xr(data: &[u8]) {
    use rtcp::xr::{self, Xr, XrBlock};
    fn check(x: &Xr<'_>, body: &[u8]) {
        let blocks: Vec<XrBlock<'_>> = x.blocks().collect();
        let mut len = 4usize;
        for b in &blocks {
            len += 4 + match b {
                XrBlock::Rrtr { .. } => 8,
                XrBlock::Dlrr(d) => {
                    assert_eq!(d.len() % 12, 0);
                    assert_eq!(xr::dlrr_items(d).count(), d.len() / 12);
                    for it in xr::dlrr_items(d) {
                        let _ = xr::rtt_from_dlrr(it.last_rr ^ it.delay, &it);
                    }
                    d.len()
                }
                XrBlock::Other { body, .. } => body.len(),
            };
        }
        assert_eq!(len, body.len(), "blocks tile the body");
        let mut out = vec![0u8; body.len() + 8];
        let n = xr::write(&mut out, x.sender_ssrc, &blocks).expect("our blocks write back");
        // The same bytes, but for the type-specific byte of RRTR and DLRR blocks: reserved
        // there (RFC 3611 4.4, 4.5), written as zero whatever came in.
        let mut want = body[4..].to_vec();
        let mut at = 0;
        for b in &blocks {
            if matches!(b, XrBlock::Rrtr { .. } | XrBlock::Dlrr(_)) {
                want[at + 1] = 0;
            }
            at += 4 + usize::from(u16::from_be_bytes([want[at + 2], want[at + 3]])) * 4;
        }
        assert_eq!(&out[8..n], &want[..], "block bytes unchanged");
        let (p, rest) = rtcp::frame(&out[..n]).expect("our packet frames");
        assert!(rest.is_empty());
        let again = Xr::parse(p.header, p.body).expect("our packet parses");
        assert_eq!(again.sender_ssrc, x.sender_ssrc);
        assert!(again.blocks().eq(blocks.iter().copied()));
    }
    if let Ok(c) = RtcpCompound::parse_relaxed(data) {
        for p in c.raw_packets().filter(|p| p.header.packet_type == rtcp::packet_type::XR) {
            if let Ok(x) = Xr::parse(p.header, p.body) {
                check(&x, p.body);
            }
        }
    }
    let h = rtcp::RtcpHeader {
        padding: false,
        count: 0,
        packet_type: rtcp::packet_type::XR,
        len: data.len() + 4,
    };
    if let Ok(x) = Xr::parse(h, data) {
        check(&x, data);
    }
}

/// The IP camera H.264 re-packetizer (`ingest::h264`), round trip: the input is access units,
/// each a 2-byte length then length-prefixed NAL units; the first byte picks the payload limit.
/// Every payload stays within the limit, the marker is on each access unit's last packet only,
/// and the recorder's depacketizer (an independent RFC 6184 reader) gives back exactly the NAL
/// units that are forwarded, with the SPS and PPS seen last put before an IDR that lacks them.
/// A malformed access unit is refused whole.
pub fn ingest_h264(data: &[u8]) {
    use crate::ingest::h264::{Packetizer, SpsProfile, forwarded, nal, nal_units};
    use crate::record::depack::{Codec, Depacketizer};

    let Some((&sel, mut rest)) = data.split_first() else { return };
    let max = 3 + usize::from(sel) * 5;
    let Ok(mut p) = Packetizer::new(max) else { return };
    let mut dp = Depacketizer::new(Codec::H264);
    let (mut sps, mut pps): (Option<Vec<u8>>, Option<Vec<u8>>) = (None, None);
    let mut ts = 0u32;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_be_bytes(*len)).min(tail.len());
        let (au, tail) = tail.split_at(len);
        rest = tail;
        // What should come out: the forwarded units, parameter sets first for an IDR.
        let units: Result<Vec<&[u8]>, _> = nal_units(au).collect();
        let mut payloads: Vec<(Vec<u8>, bool)> = Vec::new();
        let res = p.packetize(au, |b, m| payloads.push((b.to_vec(), m)));
        let Ok(units) = units else {
            assert!(
                res.is_err() && payloads.is_empty(),
                "a malformed access unit is refused whole"
            );
            continue;
        };
        let mut expected: Vec<&[u8]> = Vec::new();
        let (mut idr, mut has_sps, mut has_pps) = (false, false, false);
        for n in units.into_iter().filter(|n| n.first().is_some_and(|&h| forwarded(h))) {
            match n[0] & 0x1F {
                nal::IDR => idr = true,
                nal::SPS if SpsProfile::parse(n).is_ok() => {
                    has_sps = true;
                    sps = Some(n.to_vec());
                }
                nal::PPS => {
                    has_pps = true;
                    pps = Some(n.to_vec());
                }
                _ => {}
            }
            expected.push(n);
        }
        let mut prefix: Vec<&[u8]> = Vec::new();
        if idr {
            if let (false, Some(s)) = (has_sps, &sps) {
                prefix.push(s);
            }
            if let (false, Some(q)) = (has_pps, &pps) {
                prefix.push(q);
            }
        }
        prefix.extend(expected);
        assert_eq!(res, Ok(payloads.len()));
        if prefix.is_empty() {
            assert!(payloads.is_empty());
            continue;
        }
        let markers: Vec<bool> = payloads.iter().map(|(_, m)| *m).collect();
        assert_eq!(markers.iter().filter(|m| **m).count(), 1, "one marker");
        assert_eq!(markers.last(), Some(&true), "on the last packet");
        for (b, m) in &payloads {
            assert!(b.len() <= max && !b.is_empty(), "payload within the limit");
            dp.push(ts, *m, b, false);
        }
        ts = ts.wrapping_add(3000);
        let frame = dp.poll_frame().expect("the access unit comes back whole");
        let mut want = Vec::new();
        for n in prefix {
            want.extend_from_slice(&(n.len() as u32).to_be_bytes());
            want.extend_from_slice(n);
        }
        assert_eq!(frame.data, want, "the same NAL units, in order");
        assert!(dp.poll_frame().is_none());
    }
}

/// The composer socket's framing (`record::compose_wire`): a message either parses or names a
/// rule; what parses writes back to the same bytes (the encoding is canonical), and a frame
/// built from the first bytes as grid input gives tiles inside the frame.
pub fn compose_wire(data: &[u8]) {
    use crate::record::compose_wire::{Frame, MAX_FRAME};
    match Frame::parse(data) {
        Ok(f) => {
            let mut out = Vec::new();
            f.write(&mut out);
            assert_eq!(out, data, "{f:?} does not write back to its bytes");
            assert!(out.len() <= MAX_FRAME);
        }
        Err(_) => assert!(!data.is_empty() || Frame::parse(data).is_err()),
    }
    if let [n, w0, w1, h0, h1, ..] = *data {
        let n = usize::from(n % 32);
        let (w, h) = (
            100 + u32::from(u16::from_be_bytes([w0, w1]) % 1900),
            100 + u32::from(u16::from_be_bytes([h0, h1]) % 1900),
        );
        let tiles = crate::record::grid::best_fit(n, w, h);
        assert_eq!(tiles.len(), n);
        for t in tiles {
            assert!(t.x >= 0 && t.y >= 0 && t.w > 0 && t.h > 0, "{t:?}");
            assert!(t.x + t.w <= w as i32 && t.y + t.h <= h as i32, "{t:?} outside {w}x{h}");
        }
    }
}

/// A relay offer from another node (`media::RelayOffer`, JSON over the internal call): what
/// parses either passes `check` or names a rule; what passes gives one relay producer track
/// per publisher track, with no TWCC, REMB or RIDs on the relay, and serialises back to an
/// equal offer.
pub fn relay_offer(data: &[u8]) {
    use crate::media::RelayOffer;
    let Ok(offer) = serde_json::from_slice::<RelayOffer>(data) else { return };
    if offer.check().is_err() {
        return;
    }
    let tracks = offer.in_tracks();
    assert_eq!(tracks.len(), offer.tracks.len());
    for (t, src) in tracks.iter().zip(&offer.tracks) {
        assert_eq!((t.ext.twcc, t.ext.rid, t.transport_cc, t.remb), (0, 0, false, false));
        assert_eq!((t.pt, t.kind, t.encodings()), (src.pt, src.kind, src.encodings()));
        assert!(t.ssrc.is_some(), "every track has a leg");
    }
    let legs: usize = offer.tracks.iter().map(|t| t.encodings()).sum();
    assert_eq!(offer.legs.len(), legs, "one leg per track and encoding");
    let json = serde_json::to_vec(&offer).expect("an offer serialises");
    let back: RelayOffer = serde_json::from_slice(&json).expect("and parses again");
    assert_eq!(back, offer);
}

/// `control::cluster::plan`: where a request goes (any method and path: no panic; a session
/// path names the session it carries), the internal signature (what is signed verifies, one
/// changed byte does not), and list merging (the count is the content's length).
pub fn cluster_plan(data: &[u8]) {
    use crate::control::cluster::plan::{SigError, Target, merge_lists, sign, target, verify};
    let Some((&m, rest)) = data.split_first() else { return };
    let method = ["GET", "POST", "DELETE", "PATCH", "PUT"][usize::from(m % 5)];
    let text = String::from_utf8_lossy(rest);
    let path = text.as_ref();
    match target(method, path) {
        Target::Session(sid) => {
            let tail = path.strip_prefix("/openvidu/api/sessions/").expect("a session path");
            assert!(!sid.is_empty() && tail.starts_with(sid.as_str()), "{path:?} -> {sid:?}");
        }
        Target::Place => assert_eq!(method, "POST"),
        _ => {}
    }
    // Secret and body from the two halves of the bytes (a half may cut a UTF-8 character).
    let (a, body) = rest.split_at(rest.len() / 2);
    let secret = String::from_utf8_lossy(a);
    let secret = secret.as_ref();
    let s = sign(secret, "node", 1_000, method, path, body);
    let ok = verify(secret, Some("node"), Some("1000"), Some(&s), 2_000, method, path, body);
    assert_eq!(ok, Ok(()));
    let mut changed = body.to_vec();
    if let Some(b) = changed.first_mut() {
        *b ^= 1;
        let bad =
            verify(secret, Some("node"), Some("1000"), Some(&s), 2_000, method, path, &changed);
        assert_eq!(bad, Err(SigError::Mismatch));
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest) {
        let merged = merge_lists(&[v.clone(), v]);
        let (n, list) = match merged.get("items") {
            Some(items) => (&merged["count"], items),
            None => (&merged["numberOfElements"], &merged["content"]),
        };
        assert_eq!(n.as_u64(), list.as_array().map(|a| a.len() as u64));
    }
}

/// The Janus target of `ringsfu-load` (`load::janus`): a message either sorts into a reply or
/// names why not, and a sorted event keeps its jsep's SDP and a plugin error its code; an SDP
/// that parses as an offer gets an answer (when it has audio or video to accept) that parses
/// again, keeps every m-line, bundles the accepted mids and takes the DTLS client role.
pub fn janus_signal(data: &[u8]) {
    use crate::load::janus::{AnswerParams, Reply, ReplyError, parse_reply, poll_messages};
    use crate::sdp;
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        match parse_reply(&v) {
            Ok(Reply::Event { jsep: Some(j), .. }) => {
                assert_eq!(v["jsep"]["sdp"].as_str(), Some(j.sdp.as_str()));
            }
            Err(ReplyError::Plugin(code, _)) => {
                assert_eq!(v["plugindata"]["data"]["error_code"].as_i64(), Some(code));
            }
            Err(ReplyError::NotAMessage) => assert!(!v["janus"].is_string()),
            _ => {}
        }
        let n = v.as_array().map_or(usize::from(!v.is_null()), Vec::len);
        assert_eq!(poll_messages(v).len(), n);
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(offer) = sdp::parse(text) else { return };
    let fp = ["AB"; 32].join(":");
    let p = AnswerParams {
        ice_ufrag: "fuzz",
        ice_pwd: "fuzz-password-0123456789",
        fingerprint: &fp,
        candidate: "127.10.0.1:5000".parse().expect("a literal address"),
        session_id: 1,
    };
    let Some(answer) = crate::load::janus::write_answer(&offer, &p) else { return };
    let d = match sdp::parse(&answer) {
        Ok(d) => d,
        Err(e) => panic!("an answer that does not parse ({e}):\n{answer}"),
    };
    assert_eq!(d.media.len(), offer.media.len());
    assert_eq!(d.setup, sdp::Setup::Active);
    let accepted: Vec<String> =
        d.media.iter().filter(|m| m.port != 0).map(|m| m.mid.clone()).collect();
    assert!(!accepted.is_empty());
    assert_eq!(d.bundle, accepted);
}

/// One signaling frame, as the WebSocket shell hands it over (`control::ws`): `signaling::parse`
/// sorts it into a request, a notification, a client's response or an error, and what ringsfu
/// writes back for it is JSON-RPC 2.0 that the same parser reads again:
/// - an error names the frame's id (null when the frame was not read that far) and one of the
///   three framing codes, and the parse error is given exactly when the text is not JSON;
/// - a request's answers (result or error, with and without the JSON-RPC session id) carry its
///   id, and the session id lands where openvidu-browser looks for it;
/// - the params, written into a server notification, come back as the same params;
/// - the typed parameter readers accept exactly the JSON types they document, the
///   `publishVideo` options have a type of video exactly when they have video (or the request
///   is refused as invalid params), and a token value cut from any string is part of it and
///   holds no `&` or `#`.
pub fn signaling(data: &[u8]) {
    use crate::control::ws::media_options_from_params;
    use crate::signaling::{
        self, Incoming, Params, RpcError, code, error_response, notification, response, token_value,
    };
    use serde_json::{Value, json};
    let Ok(text) = std::str::from_utf8(data) else { return };
    // An answer ringsfu writes: JSON-RPC 2.0 with `id`, read back as a client's response.
    let answer = |written: &str, id: &Value| -> Value {
        let v: Value = serde_json::from_str(written).expect("ringsfu writes JSON");
        assert_eq!(v["jsonrpc"], "2.0", "{written}");
        assert_eq!(&v["id"], id, "{written}");
        assert_ne!(v.get("result").is_some(), v.get("error").is_some(), "{written}");
        assert_eq!(signaling::parse(written), Ok(Incoming::Response), "{written}");
        v
    };
    let frame: Option<Value> = serde_json::from_str(text).ok();
    let params = match signaling::parse(text) {
        Err(fe) => {
            let v = answer(&error_response(&fe.id, &fe.error, None), &fe.id.to_value());
            assert_eq!(v["error"]["code"], fe.error.code);
            let framing = [code::PARSE_ERROR, code::INVALID_REQUEST, code::INVALID_PARAMS];
            assert!(framing.contains(&fe.error.code), "{:?}", fe.error);
            assert_eq!(fe.error.code == code::PARSE_ERROR, frame.is_none(), "{text:?}");
            return;
        }
        Ok(Incoming::Response) => {
            let f = frame.expect("a response is JSON");
            assert!(
                f.get("method").is_none()
                    && (f.get("result").is_some() || f.get("error").is_some())
            );
            return;
        }
        Ok(Incoming::Notification { method, params }) => {
            let f = frame.expect("a notification is JSON");
            assert!(f["id"].is_null());
            assert_eq!(f["method"], method.as_str());
            params
        }
        Ok(Incoming::Request { id, method, params }) => {
            let f = frame.expect("a request is JSON");
            let idv = id.to_value();
            assert!(!idv.is_null());
            assert_eq!(f["id"], idv);
            assert_eq!(f["method"], method.as_str());
            let v = answer(&response(&id, Value::Object(params.clone()), Some("rpc_1")), &idv);
            assert_eq!(v["result"]["sessionId"], "rpc_1");
            let v = answer(&response(&id, json!("pong"), None), &idv);
            assert_eq!(v["result"], "pong");
            let e = RpcError::new(code::METHOD_NOT_FOUND, format!("Method not found: {method}"));
            let v = answer(&error_response(&id, &e, Some("rpc_1")), &idv);
            assert_eq!(v["error"]["data"]["sessionId"], "rpc_1");
            assert_eq!(v["error"]["message"], e.message.as_str());
            params
        }
    };
    // The params, sent on in a notification (as `sendMessage` does with a signal), are read
    // back as the same params.
    let written = notification("signal", &Value::Object(params.clone()));
    match signaling::parse(&written) {
        Ok(Incoming::Notification { method, params: back }) => {
            assert_eq!(method, "signal");
            assert_eq!(back, params, "{written}");
        }
        other => panic!("a notification read back as {other:?}: {written}"),
    }
    let p = Params(&params);
    for (key, value) in &params {
        let null = value.is_null();
        assert_eq!(p.opt_str(key).is_ok(), null || value.is_string(), "{key}: {value}");
        let boolish = matches!(value, Value::String(s) if s == "true" || s == "false");
        assert_eq!(p.opt_bool(key).is_ok(), null || value.is_boolean() || boolish, "{key}");
        assert_eq!(p.opt_i64(key).is_ok(), null || value.is_number(), "{key}: {value}");
        assert_eq!(p.value(key).is_none(), null);
        if let Value::String(s) = value
            && let Some(t) = token_value(s)
        {
            assert!(!t.contains('&') && !t.contains('#') && s.contains(t), "{s:?} -> {t:?}");
        }
    }
    match media_options_from_params(&params) {
        Ok(m) => assert_eq!(m.has_video, m.type_of_video.is_some()),
        Err(e) => assert_eq!(e.code, code::INVALID_PARAMS, "{e:?}"),
    }
}
