//! Replay protection, authentication failures, limits and argument checks.

mod srtp_common;

use ringsfu::srtp::test_support::rtp_header_len;
use ringsfu::srtp::{Blame, MasterKey, SrtpContext, SrtpError, SrtpProfile};
use srtp_common::{Rng, rtcp_packet, rtp_packet};

const PROFILES: [SrtpProfile; 3] = SrtpProfile::ALL;

fn pair(profile: SrtpProfile, max_ssrcs: usize) -> (SrtpContext, SrtpContext) {
    let master = MasterKey::new(profile, &vec![7; profile.key_len()], &vec![9; profile.salt_len()])
        .expect("lengths");
    (
        SrtpContext::with_max_ssrcs(&master, max_ssrcs).expect("tx"),
        SrtpContext::with_max_ssrcs(&master, max_ssrcs).expect("rx"),
    )
}

fn protect(tx: &mut SrtpContext, rng: &mut Rng, ssrc: u32, seq: u16) -> (Vec<u8>, Vec<u8>) {
    let (plain, header_len) = rtp_packet(rng, ssrc, seq, 200);
    let mut buf = vec![0u8; plain.len() + tx.profile().rtp_overhead()];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = tx.protect_rtp(&mut buf, plain.len(), header_len).expect("protect");
    buf.truncate(n);
    (plain, buf)
}

fn open(rx: &mut SrtpContext, srtp: &[u8]) -> Result<Vec<u8>, SrtpError> {
    let mut buf = srtp.to_vec();
    let header_len = rtp_header_len(&buf).expect("valid header");
    let n = rx.unprotect_rtp(&mut buf, header_len)?;
    buf.truncate(n);
    Ok(buf)
}

#[test]
fn replayed_and_too_old_rtp_is_rejected() {
    for profile in PROFILES {
        let mut rng = Rng::new(1);
        let (mut tx, mut rx) = pair(profile, 4);
        let packets: Vec<_> = (0..400u16).map(|seq| protect(&mut tx, &mut rng, 77, seq)).collect();
        assert_eq!(open(&mut rx, &packets[300].1), Ok(packets[300].0.clone()));
        assert_eq!(open(&mut rx, &packets[300].1), Err(SrtpError::Replayed));
        // 127 behind the highest is still inside the 128-wide window, 128 is not.
        assert_eq!(open(&mut rx, &packets[173].1), Ok(packets[173].0.clone()));
        assert_eq!(open(&mut rx, &packets[172].1), Err(SrtpError::TooOld));
        assert_eq!(open(&mut rx, &packets[100].1), Err(SrtpError::TooOld));
        assert_eq!(open(&mut rx, &packets[173].1), Err(SrtpError::Replayed));
        assert_eq!(open(&mut rx, &packets[250].1), Ok(packets[250].0.clone()));
        assert_eq!(open(&mut rx, &packets[399].1), Ok(packets[399].0.clone()));
        assert_eq!(open(&mut rx, &packets[300].1), Err(SrtpError::Replayed));
        assert_eq!(open(&mut rx, &packets[250].1), Err(SrtpError::TooOld));
        assert_eq!(SrtpError::Replayed.blame(), Blame::Peer);
    }
}

#[test]
fn any_flipped_bit_fails_authentication_and_changes_no_state() {
    for profile in PROFILES {
        let mut rng = Rng::new(2);
        let (mut tx, mut rx) = pair(profile, 4);
        let packets: Vec<_> = (0..50u16)
            .map(|seq| protect(&mut tx, &mut rng, 0x1234, 60000u16.wrapping_add(seq * 200)))
            .collect();
        assert!(open(&mut rx, &packets[0].1).is_ok());
        // Flip every bit of a packet that would move the window and the ROC far ahead.
        let target = &packets[49].1;
        let header_len = rtp_header_len(target).expect("valid");
        for bit in 0..target.len() * 8 {
            let mut forged = target.clone();
            forged[bit / 8] ^= 1 << (bit % 8);
            let Some(hl) = rtp_header_len(&forged) else {
                continue; // the flip broke the header shape; the parser drops it first
            };
            let mut buf = forged.clone();
            let got = rx.unprotect_rtp(&mut buf, hl);
            assert!(
                // A flip in the sequence number can land behind the window: dropped
                // before authentication, which is just as well.
                matches!(got, Err(SrtpError::AuthFailed | SrtpError::TooShort | SrtpError::TooOld)),
                "{profile:?} bit {bit} (header {header_len}): {got:?}"
            );
        }
        assert_eq!(rx.roc(0x1234), Some(0), "no forged packet advanced the ROC");
        // Every genuine packet still opens, in order, across the wrap.
        for (plain, srtp) in &packets[1..] {
            assert_eq!(open(&mut rx, srtp).as_ref(), Ok(plain));
        }
        assert_eq!(rx.roc(0x1234), tx.roc(0x1234));
    }
}

#[test]
fn forged_packets_from_unknown_ssrcs_do_not_fill_the_table() {
    for profile in PROFILES {
        let mut rng = Rng::new(3);
        let (mut tx, mut rx) = pair(profile, 2);
        for _ in 0..100 {
            let (_, mut srtp) = protect(&mut tx, &mut rng, 5, 1);
            srtp[8..12].copy_from_slice(&rng.u32().to_be_bytes());
            assert_eq!(open(&mut rx, &srtp), Err(SrtpError::AuthFailed));
            tx.remove_ssrc(5);
        }
        assert_eq!(rx.ssrc_count(), 0);
        let (plain, srtp) = protect(&mut tx, &mut rng, 5, 1);
        assert_eq!(open(&mut rx, &srtp), Ok(plain));
        assert_eq!(rx.ssrc_count(), 1);
    }
}

#[test]
fn ssrc_table_limit_and_removal() {
    for profile in PROFILES {
        let mut rng = Rng::new(4);
        let (mut tx, mut rx) = pair(profile, 2);
        let a = protect(&mut tx, &mut rng, 1, 10);
        let b = protect(&mut tx, &mut rng, 2, 10);
        // A third SSRC does not fit on the sending side either.
        let (plain, header_len) = rtp_packet(&mut rng, 3, 10, 10);
        let mut buf = plain.clone();
        buf.resize(plain.len() + profile.rtp_overhead(), 0);
        assert_eq!(tx.protect_rtp(&mut buf, plain.len(), header_len), Err(SrtpError::NoContext));
        assert!(open(&mut rx, &a.1).is_ok());
        assert!(open(&mut rx, &b.1).is_ok());
        assert_eq!(rx.ssrc_count(), rx.max_ssrcs());
        assert!(tx.remove_ssrc(1));
        let c = protect(&mut tx, &mut rng, 3, 10);
        assert_eq!(open(&mut rx, &c.1), Err(SrtpError::NoContext));
        assert!(rx.remove_ssrc(1));
        assert_eq!(open(&mut rx, &c.1), Ok(c.0));
        assert_eq!(SrtpError::NoContext.blame(), Blame::Caller);
    }
}

#[test]
fn argument_checks() {
    for profile in PROFILES {
        let mut rng = Rng::new(5);
        let (mut tx, mut rx) = pair(profile, 4);
        let (plain, header_len) = rtp_packet(&mut rng, 9, 1, 100);
        let mut exact = plain.clone();
        assert_eq!(
            tx.protect_rtp(&mut exact, plain.len(), header_len),
            Err(SrtpError::BufferTooSmall)
        );
        let mut buf = vec![0u8; plain.len() + 16];
        buf[..plain.len()].copy_from_slice(&plain);
        assert_eq!(tx.protect_rtp(&mut buf, plain.len(), 11), Err(SrtpError::BadHeaderLen));
        assert_eq!(
            tx.protect_rtp(&mut buf, plain.len(), plain.len() + 1),
            Err(SrtpError::BadHeaderLen)
        );
        let mut dst = vec![0u8; plain.len() + profile.rtp_overhead() - 1];
        assert_eq!(
            tx.protect_rtp_into(&plain, header_len, &mut dst),
            Err(SrtpError::BufferTooSmall)
        );
        let mut short = vec![0x80u8; 12 + profile.tag_len() - 1];
        assert_eq!(rx.unprotect_rtp(&mut short, 12), Err(SrtpError::TooShort));
        assert_eq!(rx.unprotect_rtp(&mut short, 4), Err(SrtpError::BadHeaderLen));
        let mut rtcp = vec![0x80u8; 7 + profile.rtcp_overhead()];
        assert_eq!(tx.protect_rtcp(&mut rtcp, 7), Err(SrtpError::TooShort));
        let mut rtcp = vec![0x80u8; 8 + profile.rtcp_overhead() - 1];
        assert_eq!(tx.protect_rtcp(&mut rtcp, 8), Err(SrtpError::BufferTooSmall));
        assert_eq!(rx.unprotect_rtcp(&mut rtcp), Err(SrtpError::TooShort));
        assert_eq!(
            MasterKey::new(profile, &vec![0; profile.key_len()], &[0; 13]).err(),
            Some(SrtpError::BadKeyLength)
        );
        assert_eq!(tx.ssrc_count(), 0, "failed calls create no state");
    }
}

#[test]
fn srtcp_replay_and_auth_failure() {
    for profile in PROFILES {
        let mut rng = Rng::new(6);
        let (mut tx, mut rx) = pair(profile, 4);
        let mut sent = Vec::new();
        for _ in 0..200 {
            let plain = rtcp_packet(&mut rng, 0xabc, 8);
            let mut buf = vec![0u8; plain.len() + profile.rtcp_overhead()];
            buf[..plain.len()].copy_from_slice(&plain);
            tx.protect_rtcp(&mut buf, plain.len()).expect("protect");
            sent.push((plain, buf));
        }
        let open = |rx: &mut SrtpContext, srtcp: &[u8]| {
            let mut b = srtcp.to_vec();
            rx.unprotect_rtcp(&mut b).map(|n| b[..n].to_vec())
        };
        assert_eq!(open(&mut rx, &sent[150].1), Ok(sent[150].0.clone()));
        assert_eq!(open(&mut rx, &sent[150].1), Err(SrtpError::Replayed));
        assert_eq!(open(&mut rx, &sent[10].1), Err(SrtpError::TooOld));
        assert_eq!(open(&mut rx, &sent[149].1), Ok(sent[149].0.clone()));
        for bit in 0..sent[199].1.len() * 8 {
            let mut forged = sent[199].1.clone();
            forged[bit / 8] ^= 1 << (bit % 8);
            let got = open(&mut rx, &forged);
            // A flip in the index can land on an already-seen or too-old index.
            assert!(
                matches!(got, Err(SrtpError::AuthFailed | SrtpError::Replayed | SrtpError::TooOld)),
                "{profile:?} bit {bit}: {got:?}"
            );
        }
        assert_eq!(open(&mut rx, &sent[199].1), Ok(sent[199].0.clone()));
    }
}

/// The router's path: copy the publisher's header into the send slot, rewrite SSRC,
/// sequence number and timestamp there, then encrypt the payload from the source.
#[test]
fn rewrite_then_protect_payload_into() {
    for profile in PROFILES {
        let mut rng = Rng::new(7);
        let (mut tx, mut rx) = pair(profile, 4);
        let (mut reference_tx, _) = pair(profile, 4);
        for i in 0..300u16 {
            let (src, header_len) = rtp_packet(&mut rng, 0x1111, 65400u16.wrapping_add(i), 1200);
            let mut slot = [0u8; 1500];
            slot[..header_len].copy_from_slice(&src[..header_len]);
            let seq = 100u16.wrapping_add(i.wrapping_mul(300));
            slot[2..4].copy_from_slice(&seq.to_be_bytes());
            slot[4..8].copy_from_slice(&u32::from(i).to_be_bytes());
            slot[8..12].copy_from_slice(&0x2222_2222u32.to_be_bytes());
            let n = tx
                .protect_rtp_payload_into(&mut slot, header_len, &src[header_len..])
                .expect("protect");

            let mut rewritten = slot[..header_len].to_vec();
            rewritten.extend_from_slice(&src[header_len..]);
            let mut expected = rewritten.clone();
            expected.resize(rewritten.len() + profile.rtp_overhead(), 0);
            reference_tx.protect_rtp(&mut expected, rewritten.len(), header_len).expect("protect");
            assert_eq!(&slot[..n], &expected[..]);
            assert_eq!(open(&mut rx, &slot[..n]), Ok(rewritten));
        }
        assert_eq!(rx.roc(0x2222_2222), tx.roc(0x2222_2222));
    }
}
