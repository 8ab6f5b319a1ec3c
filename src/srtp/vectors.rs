//! Published test vectors, applied below the per-SSRC bookkeeping.
//!
//! RFC 3711 Appendix B.2 (AES-CM keystream) and RFC 7714 §16-17 (AES-128-GCM and
//! AES-256-GCM, SRTP and SRTCP) are stated in session keys, so they key [`Cipher`]
//! directly; the KDF vectors (RFC 3711 B.3, RFC 6188 §7.2 for AES-256) are in `keys.rs`.

use super::cipher::{Cipher, SRTCP_E_FLAG};
use super::error::SrtpError;
use super::keys::SessionKeys;
use super::profile::SrtpProfile;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
        .collect()
}

fn session(key: &str, salt: &str) -> SessionKeys {
    let mut keys = SessionKeys { enc_key: [0; 32], salt: [0; 14], auth_key: [0; 20] };
    let key = unhex(key);
    keys.enc_key[..key.len()].copy_from_slice(&key);
    let salt = unhex(salt);
    keys.salt[..salt.len()].copy_from_slice(&salt);
    keys
}

/// RFC 3711 B.2: with SSRC 0 and index 0 the AES-CM IV is the shifted salt, so
/// encrypting zeros yields the published keystream, including blocks 0xFEFF..0xFF01.
#[test]
fn rfc3711_b2_aes_cm_keystream() {
    let keys = session("2B7E151628AED2A6ABF7158809CF4F3C", "F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
    let cipher =
        Cipher::from_session_keys(SrtpProfile::Aes128CmSha1_80, &keys, &keys).expect("valid keys");
    let segment = 65282 * 16;
    let mut buf = vec![0u8; 12 + segment + 10];
    buf[0] = 0x80;
    let n = cipher.seal_rtp(&mut buf, 12 + segment, 12, 0, 0).expect("fits");
    assert_eq!(n, 12 + segment + 10);
    let ks = &buf[12..12 + segment];
    assert_eq!(
        ks[..48].to_vec(),
        unhex(
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
             41E95B3BB0A2E8DD477901E4FCA894C0"
        )
    );
    assert_eq!(
        ks[segment - 48..].to_vec(),
        unhex(
            "EC8CDF7398607CB0F2D21675EA9EA1E4 362B7C3C6773516318A077D7FC5073AE
             6A2CC3787889374FBEB4C81B17BA6C44"
        )
    );
}

const GCM_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const GCM256_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const GCM_SALT: &str = "517569642070726f2071756f";
const RTP: &str = "8040f17b8041f8d35501a0b2 47616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";
const SRTP: &str = "8040f17b8041f8d35501a0b2 f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833 899d7f27beb16a9152cf765ee4390cce";
const RTCP: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef";
const SRTCP: &str = "81c8000d4d617273 63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275bc84aa45896cf4d2fc5abf872 45d9eade800005d4";
const SRTCP_TAG_ONLY: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef 841dd9683dd78ec92ae58790125f62b3 000005d4";
const SRTCP_INDEX: u32 = 0x5d4;
/// RFC 7714 §16.2: the §16 RTP packet under AEAD_AES_256_GCM.
const SRTP_256: &str = "8040f17b8041f8d35501a0b2 32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b 7aa3db36dfffd6b0f9bb7878d7a76c13";
/// RFC 7714 §17: the SRTCP AEAD_AES_256_GCM encryption vector (E = 1).
const SRTCP_256: &str = "81c8000d4d617273 d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad 1d1eb30c4446839f57ff6f6cb26ac3be 800005d4";
/// RFC 7714 §17: the SRTCP AEAD_AES_256_GCM tag-only vector (E = 0).
const SRTCP_256_TAG_ONLY: &str = "81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61deadbeefdeadbeefdeadbeefdeadbeefdeadbeef 91db4afbfeee5a978fab4393ed2615fe 000005d4";

fn gcm() -> Cipher {
    let keys = session(GCM_KEY, GCM_SALT);
    Cipher::from_session_keys(SrtpProfile::AeadAes128Gcm, &keys, &keys).expect("valid keys")
}

fn gcm256() -> Cipher {
    let keys = session(GCM256_KEY, GCM_SALT);
    Cipher::from_session_keys(SrtpProfile::AeadAes256Gcm, &keys, &keys).expect("valid keys")
}

/// RFC 7714 §16.2.1 / §16.2.2: AEAD_AES_256_GCM, same packet, SSRC and index as §16.1.
#[test]
fn rfc7714_16_2_srtp_aes256_seal_and_open() {
    let plain = unhex(RTP);
    let expected = unhex(SRTP_256);
    let mut buf = vec![0u8; plain.len() + 16];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = gcm256().seal_rtp(&mut buf, plain.len(), 12, 0x5501a0b2, 0xf17b).expect("fits");
    assert_eq!(&buf[..n], &expected[..]);

    let mut dst = vec![0u8; expected.len()];
    dst[..12].copy_from_slice(&plain[..12]);
    let n = gcm256().seal_rtp_from(&mut dst, 12, &plain[12..], 0x5501a0b2, 0xf17b).expect("fits");
    assert_eq!(&dst[..n], &expected[..]);

    let mut buf = expected.clone();
    let n = gcm256().open_rtp(&mut buf, 12, 0x5501a0b2, 0xf17b).expect("verifies");
    assert_eq!(&buf[..n], &plain[..]);

    // The AES-128 key (the first half of the AES-256 one) does not open it.
    let mut buf = expected.clone();
    assert_eq!(gcm().open_rtp(&mut buf, 12, 0x5501a0b2, 0xf17b), Err(SrtpError::AuthFailed));
}

/// RFC 7714 §17, AEAD_AES_256_GCM: SRTCP with E = 1, and the tag-only form (E = 0).
#[test]
fn rfc7714_17_srtcp_aes256_seal_open_and_tag_only() {
    let plain = unhex(RTCP);
    let expected = unhex(SRTCP_256);
    let ssrc = 0x4d61_7273;
    let mut buf = vec![0u8; plain.len() + 20];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = gcm256().seal_rtcp(&mut buf, plain.len(), ssrc, SRTCP_INDEX).expect("fits");
    assert_eq!(&buf[..n], &expected[..]);

    let mut buf = expected.clone();
    let n = gcm256().open_rtcp(&mut buf, ssrc, SRTCP_INDEX | SRTCP_E_FLAG).expect("verifies");
    assert_eq!(&buf[..n], &plain[..]);

    let tagged = unhex(SRTCP_256_TAG_ONLY);
    let mut buf = tagged.clone();
    let n = gcm256().open_rtcp(&mut buf, ssrc, SRTCP_INDEX).expect("verifies");
    assert_eq!(&buf[..n], &plain[..]);
    assert_eq!(buf, tagged);
    let mut bad = tagged.clone();
    bad[20] ^= 2;
    assert_eq!(gcm256().open_rtcp(&mut bad, ssrc, SRTCP_INDEX), Err(SrtpError::AuthFailed));
}

/// RFC 7714 §16.1.1 / §16.1.2: SSRC 0x5501a0b2, ROC 0, SEQ 0xf17b.
#[test]
fn rfc7714_16_1_srtp_seal_and_open() {
    let plain = unhex(RTP);
    let expected = unhex(SRTP);
    let mut buf = vec![0u8; plain.len() + 16];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = gcm().seal_rtp(&mut buf, plain.len(), 12, 0x5501a0b2, 0xf17b).expect("fits");
    assert_eq!(&buf[..n], &expected[..]);

    // The fused copy path produces the same bytes.
    let mut dst = vec![0u8; expected.len()];
    dst[..12].copy_from_slice(&plain[..12]);
    let n = gcm().seal_rtp_from(&mut dst, 12, &plain[12..], 0x5501a0b2, 0xf17b).expect("fits");
    assert_eq!(&dst[..n], &expected[..]);

    let mut buf = expected.clone();
    let n = gcm().open_rtp(&mut buf, 12, 0x5501a0b2, 0xf17b).expect("verifies");
    assert_eq!(&buf[..n], &plain[..]);

    let mut bad = expected.clone();
    bad[20] ^= 1;
    assert_eq!(gcm().open_rtp(&mut bad, 12, 0x5501a0b2, 0xf17b), Err(SrtpError::AuthFailed));
}

/// RFC 7714 §17.1 / §17.2: SRTCP with SSRC "Mars", index 0x5d4, E = 1.
#[test]
fn rfc7714_17_1_srtcp_seal_and_open() {
    let plain = unhex(RTCP);
    let expected = unhex(SRTCP);
    let ssrc = 0x4d61_7273;
    let mut buf = vec![0u8; plain.len() + 20];
    buf[..plain.len()].copy_from_slice(&plain);
    let n = gcm().seal_rtcp(&mut buf, plain.len(), ssrc, SRTCP_INDEX).expect("fits");
    assert_eq!(&buf[..n], &expected[..]);

    let mut buf = expected.clone();
    let n = gcm().open_rtcp(&mut buf, ssrc, SRTCP_INDEX | SRTCP_E_FLAG).expect("verifies");
    assert_eq!(&buf[..n], &plain[..]);
}

/// RFC 7714 §17.3 / §17.4: E = 0, authenticated only; the bytes stay as they were.
#[test]
fn rfc7714_17_3_srtcp_tag_only() {
    let plain = unhex(RTCP);
    let tagged = unhex(SRTCP_TAG_ONLY);
    let mut buf = tagged.clone();
    let n = gcm().open_rtcp(&mut buf, 0x4d61_7273, SRTCP_INDEX).expect("verifies");
    assert_eq!(&buf[..n], &plain[..]);
    assert_eq!(buf, tagged, "trailer restored after the AAD shuffle");

    let mut bad = tagged.clone();
    bad[9] ^= 0x80;
    assert_eq!(gcm().open_rtcp(&mut bad, 0x4d61_7273, SRTCP_INDEX), Err(SrtpError::AuthFailed));
}

/// RFC 3711 §3.4 with E = 0: the packet is authenticated but not encrypted; the tag
/// covers the RTCP packet and the E||index word. Built here with an independent HMAC.
#[test]
fn aes_cm_srtcp_with_e_flag_clear_is_authenticated_only() {
    use hmac::{Hmac, Mac};
    let mut keys = session("2B7E151628AED2A6ABF7158809CF4F3C", "F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
    keys.auth_key = [0x11; 20];
    let cipher =
        Cipher::from_session_keys(SrtpProfile::Aes128CmSha1_80, &keys, &keys).expect("valid keys");
    let plain = unhex(RTCP);
    let word = 0x0000_0123u32.to_be_bytes();
    let mut mac = <Hmac<sha1::Sha1> as Mac>::new_from_slice(&keys.auth_key).expect("any length");
    mac.update(&plain);
    mac.update(&word);
    let tag = mac.finalize().into_bytes();
    let mut packet = plain.clone();
    packet.extend_from_slice(&word);
    packet.extend_from_slice(&tag[..10]);

    let mut buf = packet.clone();
    let n = cipher.open_rtcp(&mut buf, 0x4d61_7273, 0x123).expect("verifies");
    assert_eq!(&buf[..n], &plain[..], "nothing decrypted");

    let mut bad = packet.clone();
    bad[12] ^= 4;
    assert_eq!(cipher.open_rtcp(&mut bad, 0x4d61_7273, 0x123), Err(SrtpError::AuthFailed));
    // The same bytes claimed as encrypted (E = 1) do not verify either.
    let mut flagged = packet.clone();
    flagged[plain.len()] |= 0x80;
    assert_eq!(
        cipher.open_rtcp(&mut flagged, 0x4d61_7273, 0x123 | SRTCP_E_FLAG),
        Err(SrtpError::AuthFailed)
    );
}
