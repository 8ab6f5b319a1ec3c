//! Generates the seed corpora under `fuzz/corpus/` (run on demand, the files are committed):
//!
//! ```text
//! cargo test --test wire_seed_gen -- --ignored
//! ```
//!
//! Seeds come from RFC sample messages (RFC 5769), from packets laid out as browsers and TURN
//! clients send them (built with our writers), and from packets marshalled by the webrtc-rs
//! crates (`stun`, `rtp`, `rtcp`) so that the corpus is not only our own writer's output.

use std::fs;
use std::path::Path;

use ringsfu::wire::rtcp::{self as wrtcp, rr::ReportBlock, sr::SenderInfo, twcc::TwccHeader};
use ringsfu::wire::stun::{Class, Method, StunWriter};
use ringsfu::wire::turn_attr::TRANSPORT_UDP;
use ringsfu::wire::{IntegrityKey, channel_data, dtls_record, turn_attr};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn put(targets: &[&str], name: &str, data: &[u8]) {
    for t in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(t);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), data).unwrap();
    }
}

const STUN: &[&str] = &["stun", "stun_roundtrip", "stun_diff"];
const RTP: &[&str] = &["rtp", "rtp_rewrite", "rtp_diff"];
const RTCP: &[&str] = &["rtcp", "rtcp_roundtrip", "rtcp_diff"];

fn stun_seeds() -> Vec<u8> {
    // RFC 5769 §2.1-2.4.
    put(
        STUN,
        "rfc5769_request",
        &hex(
            "00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74 00 24 00 04 6e 00 01 ff 80 29 00 08 93 2f f9 b1 51 26 3b 36 00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20 00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2 80 28 00 04 e5 7a 3b cf",
        ),
    );
    put(
        STUN,
        "rfc5769_response_v4",
        &hex(
            "01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 00 20 00 08 00 01 a1 47 e1 12 a6 43 00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7 80 28 00 04 c0 7d 4c 96",
        ),
    );
    put(
        STUN,
        "rfc5769_response_v6",
        &hex(
            "01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae 80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20 00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9 00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41 80 28 00 04 c8 fb 0b 4c",
        ),
    );
    put(
        STUN,
        "rfc5769_long_term",
        &hex(
            "00 01 00 60 21 12 a4 42 78 ad 34 33 c6 ad 72 c0 29 da 41 2e 00 06 00 12 e3 83 9e e3 83 88 e3 83 aa e3 83 83 e3 82 af e3 82 b9 00 00 00 15 00 1c 66 2f 2f 34 39 39 6b 39 35 34 64 36 4f 4c 33 34 6f 4c 39 46 53 54 76 79 36 34 73 41 00 14 00 0b 65 78 61 6d 70 6c 65 2e 6f 72 67 00 00 08 00 14 f6 70 24 65 6d d6 4a 3e 02 b8 e0 71 2e 85 c9 a2 8c a8 96 66",
        ),
    );

    let ice = IntegrityKey::short_term(b"4ZVuiCYUHzgiqGORvRYR8xe3");
    let mut buf = [0u8; 512];
    // A Chrome binding request as it nominates: USERNAME, GOOG-NETWORK-INFO (0xC057),
    // ICE-CONTROLLING, USE-CANDIDATE, PRIORITY, MESSAGE-INTEGRITY, FINGERPRINT.
    let mut w = StunWriter::new(
        &mut buf,
        Class::Request,
        Method::BINDING,
        &[0x4a, 0x33, 0x6b, 0x52, 0x70, 0x31, 0x45, 0x2b, 0x36, 0x47, 0x61, 0x37],
    )
    .unwrap();
    w.username("Xk3p:9fQa").unwrap();
    w.attribute(0xC057, &[0x00, 0x01, 0x00, 0x0a]).unwrap();
    w.ice_controlling(0x1b4f_2c6e_9d3a_5f17).unwrap();
    w.use_candidate().unwrap();
    w.priority(1_853_759_231).unwrap();
    w.message_integrity(&ice).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    let browser_request = buf[..n].to_vec();
    put(STUN, "browser_binding_request", &browser_request);

    let mut w =
        StunWriter::new(&mut buf, Class::SuccessResponse, Method::BINDING, &[7; 12]).unwrap();
    w.xor_mapped_address("[2001:db8::7]:61000".parse().unwrap()).unwrap();
    w.message_integrity(&ice).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    put(STUN, "binding_success_v6", &buf[..n]);

    let mut w = StunWriter::new(&mut buf, Class::ErrorResponse, Method::BINDING, &[8; 12]).unwrap();
    w.error_code(487, "Role Conflict").unwrap();
    w.message_integrity(&ice).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    put(STUN, "binding_error_487", &buf[..n]);

    // TURN: unauthenticated Allocate, 401, authenticated Allocate, success, CreatePermission,
    // ChannelBind, Send indication, Refresh.
    let txid = [0x11; 12];
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &txid).unwrap();
    w.requested_transport(TRANSPORT_UDP).unwrap();
    w.dont_fragment().unwrap();
    let n = w.finish();
    put(STUN, "turn_allocate_noauth", &buf[..n]);

    let mut w = StunWriter::new(&mut buf, Class::ErrorResponse, Method::ALLOCATE, &txid).unwrap();
    w.error_code(401, "Unauthorized").unwrap();
    w.realm("ringsfu.example").unwrap();
    w.nonce("obMatJos2gAAAadl7W7PeDU4hKE72jda").unwrap();
    w.software("ringsfu").unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    put(STUN, "turn_allocate_401", &buf[..n]);

    let lt = IntegrityKey::long_term(b"1700000000:alice", b"ringsfu.example", b"secret");
    let mut w = StunWriter::new(&mut buf, Class::Request, Method::ALLOCATE, &[0x12; 12]).unwrap();
    w.requested_transport(TRANSPORT_UDP).unwrap();
    w.lifetime(600).unwrap();
    w.even_port(true).unwrap();
    w.requested_address_family(turn_attr::AddressFamily::V4).unwrap();
    w.username("1700000000:alice").unwrap();
    w.realm("ringsfu.example").unwrap();
    w.nonce("obMatJos2gAAAadl7W7PeDU4hKE72jda").unwrap();
    w.message_integrity(&lt).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    put(STUN, "turn_allocate_request", &buf[..n]);

    let mut w =
        StunWriter::new(&mut buf, Class::SuccessResponse, Method::ALLOCATE, &[0x12; 12]).unwrap();
    w.xor_relayed_address("203.0.113.5:49152".parse().unwrap()).unwrap();
    w.xor_mapped_address("198.51.100.7:40000".parse().unwrap()).unwrap();
    w.lifetime(600).unwrap();
    w.reservation_token(&[1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    w.message_integrity(&lt).unwrap();
    w.message_integrity_sha256(&lt).unwrap();
    w.fingerprint().unwrap();
    let n = w.finish();
    put(STUN, "turn_allocate_success", &buf[..n]);

    let mut w =
        StunWriter::new(&mut buf, Class::Request, Method::CREATE_PERMISSION, &[0x13; 12]).unwrap();
    w.xor_peer_address("192.0.2.50:0".parse().unwrap()).unwrap();
    w.xor_peer_address("[2001:db8::50]:0".parse().unwrap()).unwrap();
    w.username("1700000000:alice").unwrap();
    w.realm("ringsfu.example").unwrap();
    w.nonce("obMatJos2gAAAadl7W7PeDU4hKE72jda").unwrap();
    w.message_integrity(&lt).unwrap();
    let n = w.finish();
    put(STUN, "turn_create_permission", &buf[..n]);

    let mut w =
        StunWriter::new(&mut buf, Class::Request, Method::CHANNEL_BIND, &[0x14; 12]).unwrap();
    w.channel_number(0x4001).unwrap();
    w.xor_peer_address("192.0.2.50:5000".parse().unwrap()).unwrap();
    w.username("1700000000:alice").unwrap();
    w.message_integrity(&lt).unwrap();
    let n = w.finish();
    put(STUN, "turn_channel_bind", &buf[..n]);

    let mut w = StunWriter::new(&mut buf, Class::Indication, Method::SEND, &[0x15; 12]).unwrap();
    w.xor_peer_address("192.0.2.50:5000".parse().unwrap()).unwrap();
    w.data(b"\x80\x60\x00\x01hello").unwrap();
    let n = w.finish();
    put(STUN, "turn_send_indication", &buf[..n]);

    let mut w = StunWriter::new(&mut buf, Class::Request, Method::REFRESH, &[0x16; 12]).unwrap();
    w.lifetime(0).unwrap();
    w.username("1700000000:alice").unwrap();
    w.message_integrity(&lt).unwrap();
    let n = w.finish();
    put(STUN, "turn_refresh_delete", &buf[..n]);

    // Marshalled by the webrtc-rs stun crate.
    {
        use ::stun::agent::TransactionId;
        use ::stun::attributes::*;
        use ::stun::message::*;
        let mut m = Message::new();
        m.build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId([5; 12])),
            Box::new(::stun::textattrs::TextAttribute::new(
                ATTR_USERNAME,
                "rfrag:lfrag".to_owned(),
            )),
            Box::new(::stun::integrity::MessageIntegrity::new_short_term_integrity(
                "webrtc-rs-password".to_owned(),
            )),
            Box::new(::stun::fingerprint::FINGERPRINT),
        ])
        .unwrap();
        put(STUN, "webrtc_rs_binding_request", &m.raw);
    }
    browser_request
}

fn rtp_seeds() -> Vec<u8> {
    // Chrome-like VP8 packet: one-byte extensions abs-send-time (id 2, 3 bytes),
    // transport-wide-cc (id 3, 2 bytes), mid (id 4, "0"), padding to a word.
    let one = hex("90 e0 1a 2b 00 0f 42 40 6b 8b 45 67
         be de 00 03 22 12 34 56 31 00 2a 40 30 00 00 00
         90 80 00 9d 01 2a a0 00 78 00");
    put(RTP, "vp8_one_byte_ext", &one);
    // Two-byte extensions (0x1000) with a 20-byte element and an empty one, CSRC, padding.
    let mut two = hex("b1 6f 00 01 00 00 00 64 11 22 33 44 aa bb cc dd 10 00 00 07");
    two.extend_from_slice(&[0x05, 0x14]);
    two.extend(0..20u8);
    two.extend_from_slice(&[0x07, 0x00, 0x03, 0x02, 0x01, 0x02]); // 2+20+2+4 = 28 bytes
    two.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x03]);
    put(RTP, "two_byte_ext_csrc_padding", &two);
    put(RTP, "opus_plain", &hex("80 6f 00 05 00 00 03 c0 01 02 03 04 fc ff fe"));
    // Marshalled by the webrtc-rs rtp crate.
    {
        use ::rtp::header::{Extension, Header};
        use ::rtp::packet::Packet;
        use webrtc_util::marshal::Marshal;
        let p = Packet {
            header: Header {
                version: 2,
                marker: true,
                payload_type: 111,
                sequence_number: 27023,
                timestamp: 3653407706,
                ssrc: 476325762,
                csrc: vec![],
                extension: true,
                extension_profile: 0xBEDE,
                extensions: vec![Extension { id: 1, payload: bytes::Bytes::from_static(&[0x2F]) }],
                ..Default::default()
            },
            payload: bytes::Bytes::from_static(&[0x98, 0x36, 0xbe, 0x88, 0x9e]),
        };
        put(RTP, "webrtc_rs_opus_audio_level", &p.marshal().unwrap());
    }
    one
}

fn rtcp_seeds() -> Vec<u8> {
    let mut buf = [0u8; 1500];
    // SR + SDES compound (what a sender emits every second).
    let info = SenderInfo {
        ssrc: 0x6b8b4567,
        ntp_time: 0xe8b1_3b2a_4000_0000,
        rtp_timestamp: 1_000_000,
        packet_count: 300,
        octet_count: 360_000,
    };
    let blk = ReportBlock {
        ssrc: 0x1234_5678,
        fraction_lost: 3,
        cumulative_lost: 12,
        extended_highest_seq: 0x0001_0203,
        jitter: 45,
        last_sr: 0x3b2a_4000,
        delay_since_last_sr: 6553,
    };
    let mut n = wrtcp::sr::write(&mut buf, &info, &[blk]).unwrap();
    n += wrtcp::sdes::write(
        &mut buf[n..],
        &[(0x6b8b4567, &[(1, &b"{9c00eb92-1afb-9d49-a47d-91f64eee69f5}"[..])])],
    )
    .unwrap();
    let sr_sdes = buf[..n].to_vec();
    put(RTCP, "sr_sdes", &sr_sdes);
    // RR + REMB compound.
    let mut n = wrtcp::rr::write(&mut buf, 1, &[blk]).unwrap();
    n += wrtcp::remb::write(&mut buf[n..], 1, 2_500_000, &[0x6b8b4567, 0x11]).unwrap();
    put(RTCP, "rr_remb", &buf[..n]);
    let n = wrtcp::pli::write(&mut buf, 1, 0x6b8b4567).unwrap();
    put(RTCP, "pli", &buf[..n]);
    let n = wrtcp::fir::write(&mut buf, 1, &[(0x6b8b4567, 7)]).unwrap();
    put(RTCP, "fir", &buf[..n]);
    let n = wrtcp::nack::write_lost(&mut buf, 1, 0x6b8b4567, [100u16, 101, 103, 116, 117, 200])
        .unwrap();
    put(RTCP, "nack", &buf[..n]);
    let mut deltas: Vec<Option<i16>> = Vec::new();
    for i in 0..40 {
        deltas.push(match i % 11 {
            3 => None,
            7 => Some(-20),
            9 => Some(400),
            _ => Some(20 + (i % 3) as i16),
        });
    }
    deltas.extend(std::iter::repeat_n(Some(4), 20));
    let h = TwccHeader {
        sender_ssrc: 1,
        media_ssrc: 0x6b8b4567,
        base_seq: 65500,
        reference_time: 123_456,
        fb_pkt_count: 9,
    };
    let n = wrtcp::twcc::write(&mut buf, &h, &deltas).unwrap();
    put(RTCP, "twcc", &buf[..n]);
    // libwebrtc-style TWCC with the padding bit set (two-bit vector, small/large deltas).
    put(
        RTCP,
        "twcc_padded",
        &hex(
            "af cd 00 07 fa 17 fa 17 43 03 2f a0 00 99 00 03 00 00 01 2a d6 00 10 20 ff f0 00 00 00 00 00 06",
        ),
    );
    let n = wrtcp::bye::write(&mut buf, &[0x6b8b4567], Some(b"leaving")).unwrap();
    put(RTCP, "bye", &buf[..n]);
    // Marshalled by the webrtc-rs rtcp crate: RR + SDES + TWCC-free PLI.
    {
        use ::rtcp::packet::Packet;
        let pkts: Vec<Box<dyn Packet + Send + Sync>> = vec![
            Box::new(::rtcp::receiver_report::ReceiverReport {
                ssrc: 0x902f9e2e,
                reports: vec![::rtcp::reception_report::ReceptionReport {
                    ssrc: 0xbc5e9a40,
                    fraction_lost: 0,
                    total_lost: 0,
                    last_sequence_number: 0x46e1,
                    jitter: 273,
                    last_sender_report: 0x9f36432,
                    delay: 150137,
                }],
                ..Default::default()
            }),
            Box::new(::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                sender_ssrc: 0x902f9e2e,
                media_ssrc: 0x4bc4fcb4,
            }),
        ];
        let b = ::rtcp::packet::marshal(&pkts).unwrap();
        put(RTCP, "webrtc_rs_rr_pli", &b);
    }
    sr_sdes
}

fn dtls_seeds() -> Vec<u8> {
    // A DTLS 1.2 ClientHello (first flight, no cookie): record header, handshake header,
    // client_version, random, empty session id and cookie, 4 suites, null compression,
    // extensions: supported_groups, ec_point_formats, signature_algorithms, use_srtp,
    // extended_master_secret.
    let mut body = Vec::new();
    body.extend_from_slice(&[0xfe, 0xfd]);
    body.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    body.push(0); // session id
    body.push(0); // cookie
    body.extend_from_slice(&[0x00, 0x08, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x0a, 0xc0, 0x14]);
    body.extend_from_slice(&[0x01, 0x00]);
    let ext = hex("00 0a 00 06 00 04 00 1d 00 17
         00 0b 00 02 01 00
         00 0d 00 08 00 06 04 03 08 04 04 01
         00 0e 00 07 00 04 00 07 00 01 00
         00 17 00 00");
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&[0x00, 0x00]); // message_seq
    hs.extend_from_slice(&[0x00, 0x00, 0x00]); // fragment_offset
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = [0u8; 13];
    dtls_record::write_header(&mut rec, 22, dtls_record::DTLS_1_0, 0, 0, hs.len()).unwrap();
    let mut hello = rec.to_vec();
    hello.extend_from_slice(&hs);
    put(&["dtls_record"], "client_hello", &hello);
    // ChangeCipherSpec + encrypted Finished in one datagram.
    let mut d = Vec::new();
    dtls_record::write_header(&mut rec, 20, dtls_record::DTLS_1_2, 0, 5, 1).unwrap();
    d.extend_from_slice(&rec);
    d.push(1);
    dtls_record::write_header(&mut rec, 22, dtls_record::DTLS_1_2, 1, 0, 40).unwrap();
    d.extend_from_slice(&rec);
    d.extend((0..40u8).map(|i| i ^ 0x5a));
    put(&["dtls_record"], "ccs_finished", &d);
    // DTLS 1.3 unified header (C=0, S=1, L=1, epoch 3) + an alert record.
    let mut u = vec![0x2f, 0x00, 0x07, 0x00, 0x04, 1, 2, 3, 4];
    dtls_record::write_header(&mut rec, 21, dtls_record::DTLS_1_2, 0, 9, 2).unwrap();
    u.extend_from_slice(&rec);
    u.extend_from_slice(&[2, 40]);
    put(&["dtls_record"], "dtls13_unified_then_alert", &u);
    hello
}

#[test]
#[ignore = "writes fuzz/corpus; run on demand"]
fn generate_seed_corpus() {
    let stun = stun_seeds();
    let rtp = rtp_seeds();
    let rtcp = rtcp_seeds();
    let dtls = dtls_seeds();
    let mut cd = [0u8; 64];
    let n = channel_data::write(&mut cd, 0x4001, b"\x80\x60\x00\x01payload", false).unwrap();
    put(&["channel_data"], "udp_unpadded", &cd[..n]);
    let n2 = channel_data::write(&mut cd, 0x4FFF, b"\x80\x60\x00\x01payload", true).unwrap();
    put(&["channel_data"], "tcp_padded", &cd[..n2]);
    put(&["channel_data"], "empty", &[0x40, 0x00, 0x00, 0x00]);
    put(&["demux"], "stun", &stun);
    put(&["demux"], "rtp", &rtp);
    put(&["demux"], "rtcp", &rtcp);
    put(&["demux"], "dtls", &dtls);
    put(&["demux"], "channel_data", &cd[..n]);
}

/// Seeds of `av1_dd` (descriptors written with the test bit writer: an L1T3 structure, then
/// template-only and custom-field descriptors) and `layer_switch` (operation sequences: a
/// steady top encoding, switches down and up with keyframe requests, losses and late packets).
/// `codec_inspect` seeds are real packets: `fuzz/tools/codec_seeds.py`.
#[test]
#[ignore = "writes fuzz/corpus; run on demand"]
fn generate_codec_seed_corpus() {
    use ringsfu::wire::codec::av1_dd::{BitWriter, sample_l1t3_with_structure};
    let mut w = BitWriter::default();
    sample_l1t3_with_structure(&mut w, 0, 1000);
    let first = w.finish().to_vec();
    let mut d = vec![first.len() as u8];
    d.extend_from_slice(&first);
    for (tid, fnum) in [(3u8, 1001u16), (2, 1002), (4, 1003), (1, 1004)] {
        d.push(3);
        d.push(0xC0 | tid);
        d.extend_from_slice(&fnum.to_be_bytes());
    }
    put(&["av1_dd"], "l1t3_structure_then_templates", &d);
    // Extended: active targets, custom DTIs, fdiffs and chains against the same structure.
    let mut w = BitWriter::default();
    for (n, v) in [(1, 1), (1, 0), (6, 2), (16, 7), (5, 0b01111), (3, 0b011)] {
        w.put(n, v);
    }
    for dti in [0, 3, 3] {
        w.put(2, dti);
    }
    for (n, v) in [(2, 2), (8, 199), (2, 1), (4, 3), (2, 0), (8, 9)] {
        w.put(n, v);
    }
    let ext = w.finish().to_vec();
    let mut d = vec![first.len() as u8];
    d.extend_from_slice(&first);
    d.push(ext.len() as u8);
    d.extend_from_slice(&ext);
    put(&["av1_dd"], "l1t3_structure_then_custom_fields", &d);
    put(&["av1_dd"], "mandatory_only", &[3, 0x80, 0x00, 0x01]);

    // layer_switch: the mode (0 VP8 simulcast, 1 VP9 k-SVC), 9 bytes of stream bases, then
    // operations (see fuzzing::layer_switch).
    let deliver = |enc: u8| 0x40 | (enc << 3) | 2;
    let base = [0, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 0xF0, 0x11];
    let mut d = base.to_vec();
    for i in 0..120u8 {
        d.extend_from_slice(&[deliver(i % 3), i]);
    }
    put(&["layer_switch"], "steady_three_encodings", &d);
    let mut d = base.to_vec();
    for round in 0..6u8 {
        d.extend_from_slice(&[0x00, 2 - (round % 3), round % 3]);
        for i in 0..30u8 {
            d.extend_from_slice(&[deliver(i % 3), i.wrapping_mul(7)]);
            if i % 10 == 0 {
                d.extend_from_slice(&[0x01, 30]);
            }
        }
    }
    put(&["layer_switch"], "switch_down_and_up", &d);
    let mut d = base.to_vec();
    let mut x: u32 = 0x2545_F491;
    for _ in 0..300 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        d.push(match x % 10 {
            0 => (((x >> 8) % 3) as u8) << 3 | 2,        // lost
            1 => 0x20 | (((x >> 8) % 3) as u8) << 3 | 2, // held
            2 => 0x07,                                   // deliver the oldest held
            3 => 0x00,                                   // target change (next two bytes)
            _ => deliver(((x >> 8) % 3) as u8),
        });
        d.push((x >> 16) as u8);
        if x % 10 == 3 {
            d.push((x >> 24) as u8);
        }
    }
    put(&["layer_switch"], "losses_late_packets_and_target_changes", &d);
    // VP9 k-SVC: spatial and temporal targets down and up, then losses and late packets.
    let mut d = base.to_vec();
    d[0] = 1;
    for round in 0..6u8 {
        d.extend_from_slice(&[0x00, 2 - (round % 3), (round + 1) % 3]);
        for i in 0..40u8 {
            d.extend_from_slice(&[deliver(0), i]);
        }
    }
    for i in 0..200u32 {
        let op = match i % 11 {
            3 => 0x02,
            7 => 0x22,
            9 => 0x07,
            10 => 0x00,
            _ => deliver(0),
        };
        d.extend_from_slice(&[op, (i * 37) as u8]);
    }
    put(&["layer_switch"], "vp9_ksvc_targets_losses_late", &d);
}
