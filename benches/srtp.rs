//! SRTP protect/unprotect per packet (1200-byte payload), ours beside `webrtc-srtp`.
//!
//! `cargo bench --bench srtp -- --measurement-time 2 --warm-up-time 1`
//!
//! - `protect/<profile>/ours_in_place`: copy the plaintext into the send buffer, protect
//!   in place (what a locally generated packet costs).
//! - `protect/<profile>/ours_into`: the router's fused path, header copy + encrypt the
//!   payload from the source into the send slot.
//! - `protect/<profile>/webrtc_srtp`: `Context::encrypt_rtp` (allocates the output).
//! - `unprotect/<profile>/...`: copy a protected packet from a pool into the receive
//!   buffer, then unprotect (ours: in place, with replay protection; webrtc-srtp: without
//!   replay protection, allocating the output).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringsfu::srtp::{MasterKey, SrtpContext, SrtpProfile};
use webrtc_srtp::context::Context;
use webrtc_srtp::protection_profile::ProtectionProfile;

const PAYLOAD: usize = 1200;
const HEADER: usize = 12;
const SSRC: u32 = 0x1234_5678;
const POOL: usize = 1024;

fn plain_packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; HEADER + PAYLOAD];
    p[0] = 0x80;
    p[1] = 96;
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p[8..12].copy_from_slice(&SSRC.to_be_bytes());
    for (i, b) in p[HEADER..].iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    p
}

fn keys(profile: SrtpProfile) -> (Vec<u8>, Vec<u8>) {
    let key: Vec<u8> = (0..profile.key_len() as u8).collect();
    let salt: Vec<u8> = (100..100 + profile.salt_len() as u8).collect();
    (key, salt)
}

fn ours(profile: SrtpProfile) -> SrtpContext {
    let (key, salt) = keys(profile);
    SrtpContext::new(&MasterKey::new(profile, &key, &salt).expect("lengths")).expect("context")
}

fn theirs(profile: SrtpProfile) -> Context {
    let (key, salt) = keys(profile);
    let p = match profile {
        SrtpProfile::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    };
    Context::new(&key, &salt, p, None, None).expect("context")
}

fn name(profile: SrtpProfile) -> &'static str {
    match profile {
        SrtpProfile::Aes128CmSha1_80 => "aes_cm_sha1_80",
        SrtpProfile::AeadAes128Gcm => "aead_aes_128_gcm",
        SrtpProfile::AeadAes256Gcm => "aead_aes_256_gcm",
    }
}

fn protect(c: &mut Criterion) {
    for profile in SrtpProfile::ALL {
        let mut group = c.benchmark_group(format!("protect/{}", name(profile)));
        group.throughput(Throughput::Elements(1));

        let mut plain = plain_packet(0);
        let mut buf = vec![0u8; 1500];
        let mut ctx = ours(profile);
        let mut seq = 0u16;
        group.bench_function("ours_in_place", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                plain[2..4].copy_from_slice(&seq.to_be_bytes());
                buf[..plain.len()].copy_from_slice(&plain);
                let n = ctx.protect_rtp(&mut buf, plain.len(), HEADER).expect("protect");
                black_box(&buf[..n]);
            })
        });

        let mut ctx = ours(profile);
        let mut seq = 0u16;
        group.bench_function("ours_into", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                plain[2..4].copy_from_slice(&seq.to_be_bytes());
                let n = ctx.protect_rtp_into(&plain, HEADER, &mut buf).expect("protect");
                black_box(&buf[..n]);
            })
        });

        let mut ctx = theirs(profile);
        let mut seq = 0u16;
        group.bench_function("webrtc_srtp", |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                plain[2..4].copy_from_slice(&seq.to_be_bytes());
                black_box(ctx.encrypt_rtp(&plain).expect("encrypt"));
            })
        });
        group.finish();
    }
}

fn unprotect(c: &mut Criterion) {
    for profile in SrtpProfile::ALL {
        let mut group = c.benchmark_group(format!("unprotect/{}", name(profile)));
        group.throughput(Throughput::Elements(1));

        // Sequence numbers 0..POOL, ROC 0, protected once.
        let mut tx = ours(profile);
        let pool: Vec<Vec<u8>> = (0..POOL as u16)
            .map(|seq| {
                let plain = plain_packet(seq);
                let mut buf = vec![0u8; plain.len() + profile.rtp_overhead()];
                buf[..plain.len()].copy_from_slice(&plain);
                let n = tx.protect_rtp(&mut buf, plain.len(), HEADER).expect("protect");
                buf.truncate(n);
                buf
            })
            .collect();

        let mut rx = ours(profile);
        let mut buf = vec![0u8; 1500];
        let mut i = 0usize;
        group.bench_function("ours", |b| {
            b.iter(|| {
                if i == POOL {
                    // The pool repeats its sequence numbers: start the stream afresh
                    // (once per 1024 packets) instead of tripping the replay check.
                    i = 0;
                    rx.remove_ssrc(SSRC);
                }
                let pkt = &pool[i];
                i += 1;
                buf[..pkt.len()].copy_from_slice(pkt);
                let n = rx.unprotect_rtp(&mut buf[..pkt.len()], HEADER).expect("unprotect");
                black_box(&buf[..n]);
            })
        });

        let mut rx = theirs(profile);
        let mut i = 0usize;
        group.bench_function("webrtc_srtp", |b| {
            b.iter(|| {
                let pkt = &pool[i % POOL];
                i += 1;
                black_box(rx.decrypt_rtp(pkt).expect("decrypt"));
            })
        });
        group.finish();
    }
}

criterion_group!(benches, protect, unprotect);
criterion_main!(benches);
