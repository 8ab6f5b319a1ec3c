//! Hostile input through the public unprotect entry points: random bytes, random header
//! lengths, truncated and mutated genuine packets. Nothing may panic, and nothing
//! forged may be accepted.

mod srtp_common;

use ringsfu::srtp::{MasterKey, SrtpContext, SrtpError, SrtpProfile};
use srtp_common::{Rng, rtcp_packet, rtp_packet};

const ITERATIONS: usize = 20_000;

fn contexts(profile: SrtpProfile) -> (SrtpContext, SrtpContext) {
    let master = MasterKey::new(profile, &vec![3; profile.key_len()], &vec![4; profile.salt_len()])
        .expect("lengths");
    (
        SrtpContext::with_max_ssrcs(&master, 4).expect("tx"),
        SrtpContext::with_max_ssrcs(&master, 4).expect("rx"),
    )
}

#[test]
fn random_bytes_never_panic_and_never_authenticate() {
    for profile in SrtpProfile::ALL {
        let mut rng = Rng::new(0xf022 + u64::from(profile.dtls_id()));
        let (_, mut rx) = contexts(profile);
        let mut buf = [0u8; 1600];
        for _ in 0..ITERATIONS {
            let len = match rng.below(4) {
                0 => rng.below(40) as usize,
                _ => rng.below(1600) as usize,
            };
            let pkt = &mut buf[..len];
            rng.fill(pkt);
            if len > 0 && rng.below(2) == 0 {
                pkt[0] = 0x80 | (pkt[0] & 0x3f);
            }
            let header_len = rng.below(len as u64 + 40) as usize;
            let r = rx.unprotect_rtp(pkt, header_len);
            assert!(r.is_err(), "random RTP accepted: {r:?}");
            rng.fill(pkt);
            let r = rx.unprotect_rtcp(pkt);
            assert!(r.is_err(), "random RTCP accepted: {r:?}");
        }
        assert_eq!(rx.ssrc_count(), 0);
    }
}

#[test]
fn mutated_genuine_packets_never_panic() {
    for profile in SrtpProfile::ALL {
        let mut rng = Rng::new(0xbeef + u64::from(profile.dtls_id()));
        let (mut tx, mut rx) = contexts(profile);
        let mut accepted = 0;
        for i in 0..ITERATIONS / 4 {
            let rtcp = rng.below(3) == 0;
            let mut pkt;
            let mut header_len = 0;
            if rtcp {
                let words = 1 + rng.below(30) as usize;
                let plain = rtcp_packet(&mut rng, 0x77, words);
                pkt = plain.clone();
                pkt.resize(plain.len() + profile.rtcp_overhead(), 0);
                tx.protect_rtcp(&mut pkt, plain.len()).expect("protect");
            } else {
                let (plain, hl) = rtp_packet(&mut rng, 0x55, i as u16, 300);
                header_len = hl;
                pkt = plain.clone();
                pkt.resize(plain.len() + profile.rtp_overhead(), 0);
                tx.protect_rtp(&mut pkt, plain.len(), hl).expect("protect");
            }
            let mutated = match rng.below(4) {
                0 => {
                    let cut = rng.below(pkt.len() as u64) as usize;
                    pkt.truncate(cut);
                    true
                }
                1 => {
                    let at = rng.below(pkt.len() as u64) as usize;
                    pkt[at] ^= 1 + rng.below(255) as u8;
                    true
                }
                2 => {
                    header_len = rng.below(pkt.len() as u64 + 8) as usize;
                    true
                }
                _ => false,
            };
            let r = if rtcp {
                rx.unprotect_rtcp(&mut pkt)
            } else {
                rx.unprotect_rtp(&mut pkt, header_len)
            };
            match r {
                Ok(_) => accepted += 1,
                Err(SrtpError::NoContext | SrtpError::BufferTooSmall) => {
                    panic!("unexpected error class {r:?}")
                }
                Err(_) => {}
            }
            if !mutated {
                assert!(r.is_ok(), "genuine packet {i} rejected: {r:?}");
            }
        }
        assert!(accepted > 0);
    }
}
