//! Wire codec micro-benchmarks: each ringsfu operation beside the same operation with the
//! webrtc-rs crate (`stun`, `rtp`, `rtcp`) in the same group, so one run shows the ratio.
//!
//! ```text
//! cargo bench --bench wire -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Inputs are the committed seed packets of `fuzz/corpus/`.
//!
//! One run on the shared 2-core dev machine under load (2026-12-01; medians, webrtc-rs / ringsfu):
//!
//! | operation | ringsfu | webrtc-rs | ratio |
//! |---|---|---|---|
//! | demux, 5 datagrams | 32 ns | - | - |
//! | DTLS record walk (ClientHello) | 24 ns | - | - |
//! | STUN parse + USERNAME/PRIORITY/USE-CANDIDATE | 167 ns | 545 ns | 3.3x |
//! | STUN MESSAGE-INTEGRITY + FINGERPRINT check | 614 ns | 4.48 µs | 7.3x |
//! | STUN Binding success write (XOR-MAPPED, MI, FP) | 418 ns | 3.62 µs | 8.6x |
//! | RTP parse + transport-cc lookup | 45 ns | 379 ns | 8.4x |
//! | RTP rewrite (SSRC, seq, ts, PT, transport-cc) | 45 ns | 402 ns | 9.0x |
//! | RTCP SR+SDES walk | 40 ns | 315 ns | 7.9x |
//! | RTCP TWCC (60 packets) walk | 654 ns | 1.80 µs | 2.7x |
//! | RTCP NACK walk + expansion | 44 ns | 253 ns | 5.7x |

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringsfu::wire::rtcp::{RtcpCompound, RtcpPacket};
use ringsfu::wire::stun::{Class, Method, StunView, StunWriter};
use ringsfu::wire::{IntegrityKey, RtpRewriter, RtpView, demux, dtls_record};
use webrtc_util::marshal::{Marshal, Unmarshal};

const BROWSER_REQ: &[u8] = include_bytes!("../fuzz/corpus/stun/browser_binding_request");
const BROWSER_PW: &str = "4ZVuiCYUHzgiqGORvRYR8xe3";
const RTP_ONE: &[u8] = include_bytes!("../fuzz/corpus/rtp/vp8_one_byte_ext");
const SR_SDES: &[u8] = include_bytes!("../fuzz/corpus/rtcp/sr_sdes");
const TWCC: &[u8] = include_bytes!("../fuzz/corpus/rtcp/twcc");
const NACK: &[u8] = include_bytes!("../fuzz/corpus/rtcp/nack");
const HELLO: &[u8] = include_bytes!("../fuzz/corpus/dtls_record/client_hello");

fn bench_demux(c: &mut Criterion) {
    let mut g = c.benchmark_group("demux");
    g.bench_function("ringsfu/5 datagrams", |b| {
        b.iter(|| {
            for d in [BROWSER_REQ, RTP_ONE, SR_SDES, TWCC, HELLO] {
                let _ = black_box(demux(black_box(d)));
            }
        })
    });
    g.bench_function("ringsfu/dtls records", |b| {
        b.iter(|| dtls_record::records(black_box(HELLO)).count())
    });
    g.finish();
}

fn bench_stun(c: &mut Criterion) {
    let key = IntegrityKey::short_term(BROWSER_PW.as_bytes());
    let mut g = c.benchmark_group("stun_parse");
    g.bench_function("ringsfu", |b| {
        b.iter(|| {
            let v = StunView::parse(black_box(BROWSER_REQ)).unwrap();
            black_box((v.username().unwrap(), v.priority().unwrap(), v.use_candidate().unwrap()))
        })
    });
    g.bench_function("webrtc-rs", |b| {
        use stun::attributes::*;
        b.iter(|| {
            let mut m = stun::message::Message::new();
            m.raw = black_box(BROWSER_REQ).to_vec();
            m.decode().unwrap();
            black_box((
                m.get(ATTR_USERNAME).unwrap(),
                m.get(ATTR_PRIORITY).unwrap(),
                m.contains(ATTR_USE_CANDIDATE),
            ))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("stun_integrity_check");
    g.bench_function("ringsfu", |b| {
        b.iter(|| {
            let v = StunView::parse(black_box(BROWSER_REQ)).unwrap();
            v.verify_integrity(&key).unwrap();
            v.verify_fingerprint().unwrap();
        })
    });
    let mi = stun::integrity::MessageIntegrity::new_short_term_integrity(BROWSER_PW.to_owned());
    g.bench_function("webrtc-rs", |b| {
        b.iter(|| {
            let mut m = stun::message::Message::new();
            m.raw = black_box(BROWSER_REQ).to_vec();
            m.decode().unwrap();
            mi.check(&mut m).unwrap();
            stun::fingerprint::FINGERPRINT.check(&m).unwrap();
        })
    });
    g.finish();

    let mut g = c.benchmark_group("stun_write_response");
    let addr: std::net::SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let mut buf = [0u8; 256];
    g.bench_function("ringsfu", |b| {
        b.iter(|| {
            let mut w =
                StunWriter::new(&mut buf, Class::SuccessResponse, Method::BINDING, &[7; 12])
                    .unwrap();
            w.xor_mapped_address(black_box(addr)).unwrap();
            w.message_integrity(&key).unwrap();
            w.fingerprint().unwrap();
            black_box(w.finish())
        })
    });
    g.bench_function("webrtc-rs", |b| {
        use stun::message::*;
        b.iter(|| {
            let mut m = Message::new();
            m.build(&[
                Box::new(BINDING_SUCCESS),
                Box::new(stun::agent::TransactionId([7; 12])),
                Box::new(stun::xoraddr::XorMappedAddress { ip: addr.ip(), port: addr.port() }),
                Box::new(mi.clone()),
                Box::new(stun::fingerprint::FINGERPRINT),
            ])
            .unwrap();
            black_box(m.raw.len())
        })
    });
    g.finish();
}

fn bench_rtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtp_parse");
    g.bench_function("ringsfu", |b| {
        b.iter(|| {
            let v = RtpView::parse(black_box(RTP_ONE)).unwrap();
            black_box((v.sequence_number(), v.transport_cc(3), v.payload().len()))
        })
    });
    g.bench_function("webrtc-rs", |b| {
        b.iter(|| {
            let mut s = black_box(RTP_ONE);
            let p = rtp::packet::Packet::unmarshal(&mut s).unwrap();
            black_box((p.header.sequence_number, p.header.get_extension(3), p.payload.len()))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("rtp_rewrite");
    let mut buf = RTP_ONE.to_vec();
    g.bench_function("ringsfu", |b| {
        b.iter(|| {
            let mut w = RtpRewriter::new(black_box(&mut buf[..])).unwrap();
            w.set_ssrc(0x1234_5678)
                .set_sequence_number(1000)
                .set_timestamp(90_000)
                .set_payload_type(100)
                .unwrap();
            w.set_transport_cc(3, 4242).unwrap();
        })
    });
    let mut out = vec![0u8; 1500];
    g.bench_function("webrtc-rs (unmarshal, edit, marshal_to)", |b| {
        b.iter(|| {
            let mut s = black_box(RTP_ONE);
            let mut p = rtp::packet::Packet::unmarshal(&mut s).unwrap();
            p.header.ssrc = 0x1234_5678;
            p.header.sequence_number = 1000;
            p.header.timestamp = 90_000;
            p.header.payload_type = 100;
            p.header.set_extension(3, bytes::Bytes::from_static(&[0x10, 0x92])).unwrap();
            black_box(p.marshal_to(&mut out).unwrap())
        })
    });
    g.finish();
}

fn walk(d: &[u8]) -> usize {
    let c = RtcpCompound::parse_relaxed(d).unwrap();
    let mut n = 0;
    for p in c.packets() {
        match p.unwrap() {
            RtcpPacket::SenderReport(s) => n += s.report_blocks().count(),
            RtcpPacket::Sdes(s) => n += s.chunks().map(|c| c.items().count()).sum::<usize>(),
            RtcpPacket::TransportCc(t) => n += t.packets().filter(|p| p.delta.is_some()).count(),
            RtcpPacket::Nack(k) => n += k.lost().count(),
            _ => n += 1,
        }
    }
    n
}

fn bench_rtcp(c: &mut Criterion) {
    for (name, d) in [("sr_sdes", SR_SDES), ("twcc", TWCC), ("nack", NACK)] {
        let mut g = c.benchmark_group(format!("rtcp_parse_{name}"));
        g.bench_function("ringsfu", |b| b.iter(|| walk(black_box(d))));
        g.bench_function("webrtc-rs", |b| {
            b.iter(|| {
                let mut bytes = bytes::Bytes::from_static(d);
                black_box(rtcp::packet::unmarshal(black_box(&mut bytes)).unwrap())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench_demux, bench_stun, bench_rtp, bench_rtcp);
criterion_main!(benches);
