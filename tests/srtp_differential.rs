//! Differential tests: our SRTP/SRTCP against `webrtc-srtp`, byte for byte, both ways.

mod srtp_common;

use ringsfu::srtp::test_support::rtp_header_len;
use ringsfu::srtp::{DtlsRole, MasterKey, SrtpContext, SrtpError, SrtpProfile};
use srtp_common::{Rng, jittered_order, rtcp_packet, rtp_packet};
use webrtc_srtp::context::Context;
use webrtc_srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use webrtc_srtp::protection_profile::ProtectionProfile;

/// Every profile we implement; each test below runs once per profile.
const PROFILES: [SrtpProfile; 3] = SrtpProfile::ALL;

fn theirs_profile(p: SrtpProfile) -> ProtectionProfile {
    match p {
        SrtpProfile::Aes128CmSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        SrtpProfile::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
        SrtpProfile::AeadAes256Gcm => ProtectionProfile::AeadAes256Gcm,
    }
}

struct Keys {
    key: Vec<u8>,
    salt: Vec<u8>,
    profile: SrtpProfile,
}

impl Keys {
    fn random(rng: &mut Rng, profile: SrtpProfile) -> Keys {
        Keys { key: rng.bytes(profile.key_len()), salt: rng.bytes(profile.salt_len()), profile }
    }

    fn ours(&self) -> SrtpContext {
        let master = MasterKey::new(self.profile, &self.key, &self.salt).expect("lengths");
        SrtpContext::new(&master).expect("context")
    }

    fn theirs(&self) -> Context {
        Context::new(
            &self.key,
            &self.salt,
            theirs_profile(self.profile),
            Some(srtp_replay_protection(64)),
            Some(srtcp_replay_protection(64)),
        )
        .expect("webrtc-srtp context")
    }
}

fn protect_ours(ctx: &mut SrtpContext, plain: &[u8], header_len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; plain.len() + ctx.profile().rtp_overhead()];
    buf[..plain.len()].copy_from_slice(plain);
    let n = ctx.protect_rtp(&mut buf, plain.len(), header_len).expect("protect");
    buf.truncate(n);
    buf
}

fn unprotect_ours(ctx: &mut SrtpContext, srtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = srtp.to_vec();
    let header_len = rtp_header_len(&buf).ok_or(SrtpError::TooShort)?;
    let n = ctx.unprotect_rtp(&mut buf, header_len)?;
    buf.truncate(n);
    Ok(buf)
}

/// One sender stream per profile through the sequence number wrap, with CSRCs,
/// extensions, padding, two interleaved SSRCs and out-of-order sending. Our protect and
/// webrtc-srtp's must agree byte for byte; each receiver must open the other's output,
/// delivered in yet another (jittered) order.
#[test]
fn rtp_matches_webrtc_srtp_across_rollover_and_reordering() {
    for (n, profile) in PROFILES.into_iter().enumerate() {
        let mut rng = Rng::new(0x5eed_0001 + n as u64);
        let keys = Keys::random(&mut rng, profile);
        let (mut ours_tx, mut ours_tx_into, mut ours_rx) = (keys.ours(), keys.ours(), keys.ours());
        let (mut theirs_tx, mut theirs_rx) = (keys.theirs(), keys.theirs());

        let ssrcs = [rng.u32(), rng.u32()];
        let starts = [65535u16 - 700, rng.u32() as u16];
        let per_ssrc = 1600;
        let mut plain = Vec::new();
        for i in 0..per_ssrc {
            for (s, &ssrc) in ssrcs.iter().enumerate() {
                let seq = starts[s].wrapping_add(i as u16);
                plain.push(rtp_packet(&mut rng, ssrc, seq, 1200));
            }
        }

        let mut protected_ours = Vec::new();
        let mut protected_theirs = Vec::new();
        for &i in &jittered_order(&mut rng, plain.len(), 6) {
            let (pkt, header_len) = &plain[i];
            assert_eq!(rtp_header_len(pkt), Some(*header_len));
            let ours = protect_ours(&mut ours_tx, pkt, *header_len);
            let theirs = theirs_tx.encrypt_rtp(pkt).expect("webrtc-srtp encrypt");
            assert_eq!(ours, theirs.to_vec(), "{profile:?} packet {i} differs");

            let mut dst = vec![0u8; pkt.len() + profile.rtp_overhead() + 7];
            let m =
                ours_tx_into.protect_rtp_into(pkt, *header_len, &mut dst).expect("protect_into");
            assert_eq!(&dst[..m], &ours[..], "{profile:?} fused path differs");

            protected_ours.push((i, ours));
            protected_theirs.push((i, theirs.to_vec()));
        }
        assert_eq!(ours_tx.roc(ssrcs[0]), Some(1), "first SSRC wrapped");

        for &k in &jittered_order(&mut rng, protected_ours.len(), 10) {
            let (i, ref srtp) = protected_theirs[k];
            let opened = unprotect_ours(&mut ours_rx, srtp).expect("ours opens theirs");
            assert_eq!(opened, plain[i].0, "{profile:?} packet {i}");
            let (i, ref srtp) = protected_ours[k];
            let opened = theirs_rx.decrypt_rtp(srtp).expect("theirs opens ours");
            assert_eq!(opened.to_vec(), plain[i].0, "{profile:?} packet {i}");
        }
        assert_eq!(ours_rx.roc(ssrcs[0]), Some(1));
        assert_eq!(ours_rx.ssrc_count(), 2);
    }
}

/// Two full wraps of the sequence number (ROC 0 -> 2) with small packets.
#[test]
fn rtp_matches_webrtc_srtp_over_two_rollovers() {
    for (n, profile) in PROFILES.into_iter().enumerate() {
        let mut rng = Rng::new(0xabcd_0001 + n as u64);
        let keys = Keys::random(&mut rng, profile);
        let (mut ours_tx, mut ours_rx) = (keys.ours(), keys.ours());
        let (mut theirs_tx, mut theirs_rx) = (keys.theirs(), keys.theirs());
        let ssrc = rng.u32();
        let start = 40_000u16;
        let total = 2 * 65536 + 100;
        let (mut pkt, header_len) = rtp_packet(&mut rng, ssrc, start, 16);
        for i in 0..total {
            let seq = start.wrapping_add(i as u16);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            let last = pkt.len() - 1;
            pkt[last] = pkt[last].wrapping_add(1);
            // Compare every packet near a wrap, and a sample elsewhere (time).
            let near_wrap = !(40..=65500).contains(&seq);
            if !(near_wrap || i % 97 == 0) {
                // Keep both senders in step without comparing.
                protect_ours(&mut ours_tx, &pkt, header_len);
                theirs_tx.encrypt_rtp(&pkt).expect("encrypt");
                continue;
            }
            let ours = protect_ours(&mut ours_tx, &pkt, header_len);
            let theirs = theirs_tx.encrypt_rtp(&pkt).expect("encrypt");
            assert_eq!(ours, theirs.to_vec(), "{profile:?} seq {seq} (i = {i})");
            assert_eq!(unprotect_ours(&mut ours_rx, &theirs).expect("open"), pkt);
            assert_eq!(theirs_rx.decrypt_rtp(&ours).expect("open").to_vec(), pkt);
        }
        assert_eq!(ours_tx.roc(ssrc), Some(2));
        assert_eq!(ours_rx.roc(ssrc), Some(2));
    }
}

/// SRTCP: same index sequence (1, 2, ... per SSRC), same bytes, each opens the other's.
#[test]
fn rtcp_matches_webrtc_srtp() {
    for (n, profile) in PROFILES.into_iter().enumerate() {
        let mut rng = Rng::new(0x7c7c_0001 + n as u64);
        let keys = Keys::random(&mut rng, profile);
        let (mut ours_tx, mut ours_rx) = (keys.ours(), keys.ours());
        let (mut theirs_tx, mut theirs_rx) = (keys.theirs(), keys.theirs());
        let ssrcs = [rng.u32(), rng.u32(), 1];
        for i in 0..600 {
            let ssrc = ssrcs[rng.below(3) as usize];
            let words = 1 + rng.below(100) as usize;
            let plain = rtcp_packet(&mut rng, ssrc, words);
            let mut buf = vec![0u8; plain.len() + profile.rtcp_overhead()];
            buf[..plain.len()].copy_from_slice(&plain);
            let len = ours_tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
            assert_eq!(len, buf.len());
            let theirs = theirs_tx.encrypt_rtcp(&plain).expect("encrypt");
            assert_eq!(buf, theirs.to_vec(), "{profile:?} rtcp {i} differs");

            let mut mine = theirs.to_vec();
            let n = ours_rx.unprotect_rtcp(&mut mine).expect("ours opens theirs");
            assert_eq!(&mine[..n], &plain[..]);
            let opened = theirs_rx.decrypt_rtcp(&buf).expect("theirs opens ours");
            assert_eq!(opened.to_vec(), plain);
        }
    }
}

/// The SRTCP index is the 31-bit value in the trailer, starting at 1 per SSRC.
#[test]
fn srtcp_index_and_e_flag_are_where_the_rfcs_put_them() {
    for profile in PROFILES {
        let mut rng = Rng::new(0x1d1d);
        let keys = Keys::random(&mut rng, profile);
        let mut tx = keys.ours();
        for expected in 1u32..=3 {
            let plain = rtcp_packet(&mut rng, 0xfeed_f00d, 6);
            let mut buf = vec![0u8; plain.len() + profile.rtcp_overhead()];
            buf[..plain.len()].copy_from_slice(&plain);
            tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
            let at = if profile.is_aead() { plain.len() + 16 } else { plain.len() };
            let word = u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
            assert_eq!(word, 0x8000_0000 | expected, "{profile:?}");
            assert_eq!(&buf[..8], &plain[..8], "header stays clear");
        }
    }
}

/// Keys split from DTLS keying material (RFC 5764 §4.2) interoperate: the client's
/// outbound context talks to the server's inbound one, and matches webrtc-srtp keyed
/// with the client write key and salt.
#[test]
fn dtls_key_split_pairs_client_and_server() {
    for profile in PROFILES {
        let mut rng = Rng::new(0xd715);
        let material = rng.bytes(profile.keying_material_len());
        let (mut client_tx, mut client_rx) =
            SrtpContext::from_dtls(profile, &material, DtlsRole::Client).expect("client");
        let (mut server_tx, mut server_rx) =
            SrtpContext::from_dtls(profile, &material, DtlsRole::Server).expect("server");
        let (k, s) = (profile.key_len(), profile.salt_len());
        let client_keys = Keys {
            key: material[..k].to_vec(),
            salt: material[2 * k..2 * k + s].to_vec(),
            profile,
        };
        let mut theirs = client_keys.theirs();

        let (pkt, header_len) = rtp_packet(&mut rng, 42, 7, 300);
        let ours = protect_ours(&mut client_tx, &pkt, header_len);
        assert_eq!(ours, theirs.encrypt_rtp(&pkt).expect("encrypt").to_vec());
        assert_eq!(unprotect_ours(&mut server_rx, &ours).expect("server opens"), pkt);

        let (pkt, header_len) = rtp_packet(&mut rng, 42, 8, 300);
        let back = protect_ours(&mut server_tx, &pkt, header_len);
        assert_eq!(unprotect_ours(&mut client_rx, &back).expect("client opens"), pkt);
        assert_eq!(
            unprotect_ours(&mut server_rx, &back),
            Err(SrtpError::AuthFailed),
            "directions use different keys"
        );
    }
}
