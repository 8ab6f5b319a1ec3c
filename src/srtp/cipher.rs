//! The transforms (AES-CM + HMAC-SHA1, AES-GCM with a 128- or 256-bit key), below the
//! per-SSRC bookkeeping: given a packet index they encrypt and tag, or verify and
//! decrypt, in the caller's buffer.
//!
//! - AES_CM_128_HMAC_SHA1_80 (RFC 3711 §4.1.1, §4.2): AES-128 in counter mode from the
//!   RustCrypto `aes` crate (AES-NI when the CPU has it) and HMAC-SHA1 from `hmac`/`sha1`
//!   (SHA-NI when present). The HMAC key schedule (inner and outer pads) is computed once;
//!   each packet clones that state.
//! - AEAD_AES_128_GCM and AEAD_AES_256_GCM (RFC 7714 §8, §9): `aws-lc-rs`, whose GCM
//!   uses AES-NI/VAES and carry-less multiplication. In-place seal/open; the fused copy
//!   path uses `seal_out_of_place_scatter`, which reads the plaintext from the source and
//!   writes the ciphertext to the destination in one pass.

use aes::Aes128Enc;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, generic_array::GenericArray};
use aws_lc_rs::aead::{AES_128_GCM, AES_256_GCM, Aad, Algorithm, LessSafeKey, Nonce, UnboundKey};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::error::SrtpError;
use super::keys::{MasterKey, SessionKeys};
use super::profile::SrtpProfile;

/// Length of the SRTCP trailer word holding the E flag and the 31-bit index.
pub(crate) const SRTCP_INDEX_LEN: usize = 4;
/// The E (encrypted) flag in the SRTCP trailer word.
pub(crate) const SRTCP_E_FLAG: u32 = 1 << 31;
/// Fixed RTCP header plus sender SSRC: the part of an RTCP packet never encrypted.
pub(crate) const RTCP_HEADER_LEN: usize = 8;

const CM_TAG: usize = 10;
const GCM_TAG: usize = 16;

type Aes128Ctr = ctr::Ctr128BE<Aes128Enc>;
type CtrCore = ctr::CtrCore<Aes128Enc, ctr::flavors::Ctr128BE>;
type HmacSha1 = Hmac<Sha1>;

/// Session keys of one AES-CM direction (SRTP or SRTCP), expanded and ready.
struct CmKeys {
    aes: Aes128Enc,
    salt: [u8; 14],
    mac: HmacSha1,
}

impl CmKeys {
    fn new(keys: &SessionKeys) -> Result<CmKeys, SrtpError> {
        Ok(CmKeys {
            aes: Aes128Enc::new(GenericArray::from_slice(&keys.enc_key[..16])),
            salt: keys.salt,
            mac: <HmacSha1 as Mac>::new_from_slice(&keys.auth_key)
                .map_err(|_| SrtpError::Crypto)?,
        })
    }

    /// The counter-mode keystream for `(ssrc, index)`:
    /// `IV = (k_s << 16) XOR (SSRC << 64) XOR (index << 16)` (RFC 3711 §4.1.1). The low
    /// 16 bits of the IV are the block counter.
    #[inline]
    fn keystream(&self, ssrc: u32, index: u64) -> Aes128Ctr {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        // index << 16 as a 48-bit big-endian number lands on bytes 8..14.
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        Aes128Ctr::from_core(CtrCore::inner_iv_init(self.aes.clone(), &GenericArray::from(iv)))
    }

    /// HMAC-SHA1 over `parts` in order, truncated to the 80-bit tag.
    #[inline]
    fn tag(&self, parts: [&[u8]; 2]) -> [u8; CM_TAG] {
        let mut mac = self.mac.clone();
        for p in parts {
            mac.update(p);
        }
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; CM_TAG];
        tag.copy_from_slice(&full[..CM_TAG]);
        tag
    }
}

/// Session keys of one AES-GCM direction.
struct GcmKeys {
    key: LessSafeKey,
    salt: [u8; 12],
}

impl GcmKeys {
    /// Keys for `algorithm` (AES-128-GCM or AES-256-GCM) from the first `key_len()` bytes
    /// of the session encryption key.
    fn new(algorithm: &'static Algorithm, keys: &SessionKeys) -> Result<GcmKeys, SrtpError> {
        let enc_key = keys.enc_key.get(..algorithm.key_len()).ok_or(SrtpError::Crypto)?;
        let key = UnboundKey::new(algorithm, enc_key).map_err(|_| SrtpError::Crypto)?;
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&keys.salt[..12]);
        Ok(GcmKeys { key: LessSafeKey::new(key), salt })
    }

    /// SRTP IV (RFC 7714 §8.1): `00 00 | SSRC | ROC | SEQ` XOR salt, where ROC and SEQ
    /// are the 48-bit packet index.
    #[inline]
    fn rtp_nonce(&self, ssrc: u32, index: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[2..6].copy_from_slice(&ssrc.to_be_bytes());
        n[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        self.nonce(n)
    }

    /// SRTCP IV (RFC 7714 §9.1): `00 00 | SSRC | 00 00 | 0 | index(31)` XOR salt.
    #[inline]
    fn rtcp_nonce(&self, ssrc: u32, index: u32) -> Nonce {
        let mut n = [0u8; 12];
        n[2..6].copy_from_slice(&ssrc.to_be_bytes());
        n[8..12].copy_from_slice(&(index & !SRTCP_E_FLAG).to_be_bytes());
        self.nonce(n)
    }

    #[inline]
    fn nonce(&self, mut n: [u8; 12]) -> Nonce {
        for (b, s) in n.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }
}

/// AES-CM keys are large (expanded AES schedules for two backends, two HMAC states:
/// about 1.7 KB), so they live behind a box; the GCM keys already point to aws-lc state.
struct CmPair {
    rtp: CmKeys,
    rtcp: CmKeys,
}

enum Keys {
    Cm(Box<CmPair>),
    Gcm { rtp: GcmKeys, rtcp: GcmKeys },
}

/// The transform of one context, keyed for SRTP and SRTCP.
pub(crate) struct Cipher {
    keys: Keys,
}

impl Cipher {
    /// Derive the session keys (RFC 3711 §4.3) and key the transform.
    pub(crate) fn new(master: &MasterKey) -> Result<Cipher, SrtpError> {
        let rtp = SessionKeys::derive(master, false);
        let rtcp = SessionKeys::derive(master, true);
        Cipher::from_session_keys(master.profile(), &rtp, &rtcp)
    }

    /// Key the transform straight from session keys (used by the RFC test vectors,
    /// which are stated below the key derivation).
    pub(crate) fn from_session_keys(
        profile: SrtpProfile,
        rtp: &SessionKeys,
        rtcp: &SessionKeys,
    ) -> Result<Cipher, SrtpError> {
        let keys = match profile {
            SrtpProfile::Aes128CmSha1_80 => {
                Keys::Cm(Box::new(CmPair { rtp: CmKeys::new(rtp)?, rtcp: CmKeys::new(rtcp)? }))
            }
            SrtpProfile::AeadAes128Gcm => Keys::Gcm {
                rtp: GcmKeys::new(&AES_128_GCM, rtp)?,
                rtcp: GcmKeys::new(&AES_128_GCM, rtcp)?,
            },
            SrtpProfile::AeadAes256Gcm => Keys::Gcm {
                rtp: GcmKeys::new(&AES_256_GCM, rtp)?,
                rtcp: GcmKeys::new(&AES_256_GCM, rtcp)?,
            },
        };
        Ok(Cipher { keys })
    }

    /// Protect the RTP packet `buf[..len]` (header `buf[..header_len]`) in place and
    /// write the tag at `buf[len..]`. The caller checked that the tag fits.
    #[inline]
    pub(crate) fn seal_rtp(
        &self,
        buf: &mut [u8],
        len: usize,
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        match &self.keys {
            Keys::Cm(cm) => {
                let rtp = &cm.rtp;
                rtp.keystream(ssrc, index).apply_keystream(&mut buf[header_len..len]);
                let roc = roc_bytes(index);
                let tag = rtp.tag([&buf[..len], &roc]);
                buf[len..len + CM_TAG].copy_from_slice(&tag);
                Ok(len + CM_TAG)
            }
            Keys::Gcm { rtp, .. } => {
                let (aad, rest) = buf.split_at_mut(header_len);
                let (body, trailer) = rest.split_at_mut(len - header_len);
                let tag = rtp
                    .key
                    .seal_in_place_separate_tag(rtp.rtp_nonce(ssrc, index), Aad::from(&*aad), body)
                    .map_err(|_| SrtpError::Crypto)?;
                trailer[..GCM_TAG].copy_from_slice(tag.as_ref());
                Ok(len + GCM_TAG)
            }
        }
    }

    /// Protect an RTP packet whose header the caller already placed in
    /// `dst[..header_len]`, reading the plaintext payload from `payload`: one pass that
    /// encrypts while copying. The caller checked that everything fits.
    #[inline]
    pub(crate) fn seal_rtp_from(
        &self,
        dst: &mut [u8],
        header_len: usize,
        payload: &[u8],
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        let len = header_len + payload.len();
        match &self.keys {
            Keys::Cm(cm) => {
                let rtp = &cm.rtp;
                rtp.keystream(ssrc, index)
                    .apply_keystream_b2b(payload, &mut dst[header_len..len])
                    .map_err(|_| SrtpError::Crypto)?;
                let roc = roc_bytes(index);
                let tag = rtp.tag([&dst[..len], &roc]);
                dst[len..len + CM_TAG].copy_from_slice(&tag);
                Ok(len + CM_TAG)
            }
            Keys::Gcm { rtp, .. } => {
                let (aad, rest) = dst.split_at_mut(header_len);
                let (body, trailer) = rest.split_at_mut(payload.len());
                rtp.key
                    .seal_out_of_place_scatter(
                        rtp.rtp_nonce(ssrc, index),
                        Aad::from(&*aad),
                        payload,
                        body,
                        &[],
                        &mut trailer[..GCM_TAG],
                    )
                    .map_err(|_| SrtpError::Crypto)?;
                Ok(len + GCM_TAG)
            }
        }
    }

    /// Verify and decrypt the SRTP packet `buf` in place; returns the plaintext length.
    /// The caller checked `header_len + tag <= buf.len()`.
    #[inline]
    pub(crate) fn open_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        ssrc: u32,
        index: u64,
    ) -> Result<usize, SrtpError> {
        match &self.keys {
            Keys::Cm(cm) => {
                let rtp = &cm.rtp;
                let end = buf.len() - CM_TAG;
                let roc = roc_bytes(index);
                let expected = rtp.tag([&buf[..end], &roc]);
                if !bool::from(expected.ct_eq(&buf[end..])) {
                    return Err(SrtpError::AuthFailed);
                }
                rtp.keystream(ssrc, index).apply_keystream(&mut buf[header_len..end]);
                Ok(end)
            }
            Keys::Gcm { rtp, .. } => {
                let end = buf.len() - GCM_TAG;
                let (aad, rest) = buf.split_at_mut(header_len);
                let (body, tag) = rest.split_at_mut(end - header_len);
                rtp.key
                    .open_in_place_separate_tag(
                        rtp.rtp_nonce(ssrc, index),
                        Aad::from(&*aad),
                        tag,
                        body,
                    )
                    .map_err(|_| SrtpError::AuthFailed)?;
                Ok(end)
            }
        }
    }

    /// Protect the RTCP packet `buf[..len]` in place with SRTCP `index` (E flag set) and
    /// append the trailer. The caller checked `len >= 8` and that the trailer fits.
    #[inline]
    pub(crate) fn seal_rtcp(
        &self,
        buf: &mut [u8],
        len: usize,
        ssrc: u32,
        index: u32,
    ) -> Result<usize, SrtpError> {
        let word = (index | SRTCP_E_FLAG).to_be_bytes();
        match &self.keys {
            Keys::Cm(cm) => {
                let rtcp = &cm.rtcp;
                // RFC 3711 §3.4: encrypt after the first 8 bytes; E||index follows the
                // payload; the tag covers header, payload and that word.
                rtcp.keystream(ssrc, u64::from(index))
                    .apply_keystream(&mut buf[RTCP_HEADER_LEN..len]);
                buf[len..len + SRTCP_INDEX_LEN].copy_from_slice(&word);
                let end = len + SRTCP_INDEX_LEN;
                let tag = rtcp.tag([&buf[..end], &[]]);
                buf[end..end + CM_TAG].copy_from_slice(&tag);
                Ok(end + CM_TAG)
            }
            Keys::Gcm { rtcp, .. } => {
                // RFC 7714 §9: AAD = first 8 bytes || E||index; the tag sits between
                // the ciphertext and the E||index word.
                let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                aad[RTCP_HEADER_LEN..].copy_from_slice(&word);
                let tag = rtcp
                    .key
                    .seal_in_place_separate_tag(
                        rtcp.rtcp_nonce(ssrc, index),
                        Aad::from(&aad),
                        &mut buf[RTCP_HEADER_LEN..len],
                    )
                    .map_err(|_| SrtpError::Crypto)?;
                buf[len..len + GCM_TAG].copy_from_slice(tag.as_ref());
                let end = len + GCM_TAG;
                buf[end..end + SRTCP_INDEX_LEN].copy_from_slice(&word);
                Ok(end + SRTCP_INDEX_LEN)
            }
        }
    }

    /// Verify (and, with the E flag, decrypt) the SRTCP packet `buf` in place; returns
    /// the RTCP length. The caller read the trailer word and checked the minimum length.
    #[inline]
    pub(crate) fn open_rtcp(
        &self,
        buf: &mut [u8],
        ssrc: u32,
        word: u32,
    ) -> Result<usize, SrtpError> {
        let index = word & !SRTCP_E_FLAG;
        let encrypted = word & SRTCP_E_FLAG != 0;
        let len = buf.len();
        match &self.keys {
            Keys::Cm(cm) => {
                let rtcp = &cm.rtcp;
                let end = len - CM_TAG;
                let expected = rtcp.tag([&buf[..end], &[]]);
                if !bool::from(expected.ct_eq(&buf[end..])) {
                    return Err(SrtpError::AuthFailed);
                }
                let plain_end = end - SRTCP_INDEX_LEN;
                if encrypted {
                    rtcp.keystream(ssrc, u64::from(index))
                        .apply_keystream(&mut buf[RTCP_HEADER_LEN..plain_end]);
                }
                Ok(plain_end)
            }
            Keys::Gcm { rtcp, .. } => {
                let plain_end = len - SRTCP_INDEX_LEN - GCM_TAG;
                let nonce = rtcp.rtcp_nonce(ssrc, index);
                if encrypted {
                    let mut aad = [0u8; RTCP_HEADER_LEN + SRTCP_INDEX_LEN];
                    aad[..RTCP_HEADER_LEN].copy_from_slice(&buf[..RTCP_HEADER_LEN]);
                    aad[RTCP_HEADER_LEN..].copy_from_slice(&word.to_be_bytes());
                    let (body, trailer) =
                        buf[RTCP_HEADER_LEN..].split_at_mut(plain_end - RTCP_HEADER_LEN);
                    rtcp.key
                        .open_in_place_separate_tag(
                            nonce,
                            Aad::from(&aad),
                            &trailer[..GCM_TAG],
                            body,
                        )
                        .map_err(|_| SrtpError::AuthFailed)?;
                } else {
                    // RFC 7714 §9.2 (E = 0): the whole RTCP packet and the E||index word
                    // are AAD, the plaintext is empty. Move the word next to the packet so
                    // the AAD is contiguous, verify, then put the bytes back.
                    let mut tag = [0u8; GCM_TAG];
                    tag.copy_from_slice(&buf[plain_end..plain_end + GCM_TAG]);
                    buf[plain_end..plain_end + SRTCP_INDEX_LEN]
                        .copy_from_slice(&word.to_be_bytes());
                    let verified = rtcp.key.open_in_place_separate_tag(
                        nonce,
                        Aad::from(&buf[..plain_end + SRTCP_INDEX_LEN]),
                        &tag,
                        &mut [],
                    );
                    buf[plain_end..plain_end + GCM_TAG].copy_from_slice(&tag);
                    buf[plain_end + GCM_TAG..].copy_from_slice(&word.to_be_bytes());
                    verified.map_err(|_| SrtpError::AuthFailed)?;
                }
                Ok(plain_end)
            }
        }
    }
}

/// The rollover counter of a 48-bit index, big-endian, as HMAC input (RFC 3711 §4.2).
#[inline]
fn roc_bytes(index: u64) -> [u8; 4] {
    // The index is at most 48 bits: the shift leaves the 32-bit ROC.
    ((index >> 16) as u32).to_be_bytes()
}
