//! Master keys from DTLS-SRTP and the RFC 3711 §4.3 key derivation function.
//!
//! DTLS exports `2 * (key_len + salt_len)` bytes with the label `EXTRACTOR-dtls_srtp`;
//! RFC 5764 §4.2 lays them out as
//! `client_write_key | server_write_key | client_write_salt | server_write_salt`.
//! The DTLS client protects with the client half and the server with the server half, so
//! our "local" (outbound) key is the half of our role and the "remote" (inbound) key the
//! other one. [`split_keying_material`] does that split.
//!
//! Session keys are derived once per context with the AES-CM PRF and a key derivation
//! rate of zero (the only rate DTLS-SRTP uses), so `r = index DIV kdr = 0`. AES-GCM uses
//! the same PRF with its 12-byte salt zero-padded to 14 bytes (RFC 7714 §11); for
//! AEAD_AES_256_GCM the PRF is AES-256 in counter mode keyed with the 256-bit master key
//! (AES_256_CM_PRF, RFC 6188 §5.1), which yields a 256-bit session key.

use std::fmt;

use aes::cipher::consts::U16;
use aes::cipher::{BlockEncrypt, BlockSizeUser, KeyInit, generic_array::GenericArray};
use aes::{Aes128, Aes256};

use super::error::SrtpError;
use super::profile::SrtpProfile;

/// The TLS exporter label for DTLS-SRTP keying material (RFC 5764 §4.2); export
/// [`SrtpProfile::keying_material_len`] bytes with it and an empty context.
pub const DTLS_SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// Which side of the DTLS handshake an endpoint plays (RFC 5763 §5: `a=setup`); decides
/// which exported half of the keying material it sends with.
///
/// The one role type of the crate: `dtls` re-exports it as `dtls::DtlsRole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    /// `a=setup:active`: sends the ClientHello. For test clients and the load generator.
    Client,
    /// `a=setup:passive`: waits for the ClientHello. What the SFU always is.
    Server,
}

/// One direction's master key and master salt, checked against its profile.
///
/// The bytes are wiped when the value is dropped. `Debug` does not print them.
#[derive(Clone)]
pub struct MasterKey {
    profile: SrtpProfile,
    key: [u8; MAX_KEY_LEN],
    salt: [u8; 14],
}

/// The longest master key of any profile (AES-256-GCM).
const MAX_KEY_LEN: usize = 32;

impl MasterKey {
    /// A master key for `profile`; `key` and `salt` must have exactly the profile's
    /// lengths, else [`SrtpError::BadKeyLength`].
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<MasterKey, SrtpError> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(SrtpError::BadKeyLength);
        }
        let mut k = [0u8; MAX_KEY_LEN];
        k[..key.len()].copy_from_slice(key);
        let mut s = [0u8; 14];
        s[..salt.len()].copy_from_slice(salt);
        Ok(MasterKey { profile, key: k, salt: s })
    }

    /// The profile this key was made for.
    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The master key bytes.
    pub fn key(&self) -> &[u8] {
        &self.key[..self.profile.key_len()]
    }

    /// The master salt bytes (14 for AES-CM, 12 for AES-GCM).
    pub fn salt(&self) -> &[u8] {
        &self.salt[..self.profile.salt_len()]
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey").field("profile", &self.profile).finish_non_exhaustive()
    }
}

impl Drop for MasterKey {
    fn drop(&mut self) {
        wipe(&mut self.key);
        wipe(&mut self.salt);
    }
}

/// Overwrite secret bytes in a way the optimiser keeps.
pub(crate) fn wipe(bytes: &mut [u8]) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a byte.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Split DTLS-SRTP exported keying material (RFC 5764 §4.2) into our
/// `(local, remote)` master keys: local protects what we send, remote unprotects what
/// we receive.
///
/// `material` must be exactly [`SrtpProfile::keying_material_len`] bytes.
pub fn split_keying_material(
    profile: SrtpProfile,
    material: &[u8],
    role: DtlsRole,
) -> Result<(MasterKey, MasterKey), SrtpError> {
    if material.len() != profile.keying_material_len() {
        return Err(SrtpError::BadKeyLength);
    }
    let (k, s) = (profile.key_len(), profile.salt_len());
    let client_key = &material[..k];
    let server_key = &material[k..2 * k];
    let client_salt = &material[2 * k..2 * k + s];
    let server_salt = &material[2 * k + s..];
    let client = MasterKey::new(profile, client_key, client_salt)?;
    let server = MasterKey::new(profile, server_key, server_salt)?;
    Ok(match role {
        DtlsRole::Client => (client, server),
        DtlsRole::Server => (server, client),
    })
}

/// RFC 3711 §4.3.3 key derivation labels.
pub(crate) mod label {
    pub(crate) const RTP_ENCRYPTION: u8 = 0x00;
    pub(crate) const RTP_AUTH: u8 = 0x01;
    pub(crate) const RTP_SALT: u8 = 0x02;
    pub(crate) const RTCP_ENCRYPTION: u8 = 0x03;
    pub(crate) const RTCP_AUTH: u8 = 0x04;
    pub(crate) const RTCP_SALT: u8 = 0x05;
}

/// The AES-CM PRF of RFC 3711 §4.3.1/§4.3.3 with `kdr = 0`: the keystream of AES in
/// counter mode under the master key, starting at
/// `IV = (master_salt XOR (label << 48)) << 16`, truncated to `out.len()` bytes.
pub(crate) fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    derive_raw(master.key(), &master.salt, label, out);
}

/// [`derive`] on raw bytes: AES-128 for a 16-byte master key, AES-256 (AES_256_CM_PRF,
/// RFC 6188 §5.1, used by AEAD_AES_256_GCM per RFC 7714 §11) for a 32-byte one. The
/// 14-byte `salt` is the master salt, zero-padded when shorter (a 12-byte GCM salt).
fn derive_raw(key: &[u8], salt: &[u8; 14], label: u8, out: &mut [u8]) {
    // x = key_id XOR master_salt, key_id = label || r (r = 0, 48 bits): the label lands
    // on byte 7 of the 14-byte salt. A 12-byte GCM salt is zero-padded (RFC 7714 §11).
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    iv[7] ^= label;
    // MasterKey holds 16 or 32 bytes (checked against the profile).
    match key.len() {
        16 => prf_blocks(&Aes128::new(GenericArray::from_slice(key)), &iv, out),
        _ => prf_blocks(&Aes256::new(GenericArray::from_slice(key)), &iv, out),
    }
    wipe(&mut iv);
}

/// Counter-mode keystream blocks of `aes` from `iv` (the low 16 bits are the counter).
fn prf_blocks<A: BlockEncrypt + BlockSizeUser<BlockSize = U16>>(
    aes: &A,
    iv: &[u8; 16],
    out: &mut [u8],
) {
    for (counter, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = *iv;
        // Only a handful of blocks are ever derived (at most 2 for a 32-byte key).
        block[14..].copy_from_slice(&(counter as u16).to_be_bytes());
        let mut b = GenericArray::from(block);
        aes.encrypt_block(&mut b);
        chunk.copy_from_slice(&b[..chunk.len()]);
        wipe(&mut b);
        wipe(&mut block);
    }
}

/// Session keys of one direction for SRTP or SRTCP.
pub(crate) struct SessionKeys {
    /// Session encryption key; the first `profile.key_len()` bytes (16 or 32) are used.
    pub(crate) enc_key: [u8; MAX_KEY_LEN],
    /// Session salt; 14 bytes for AES-CM, the first 12 for AES-GCM.
    pub(crate) salt: [u8; 14],
    /// HMAC-SHA1 key (AES-CM only).
    pub(crate) auth_key: [u8; 20],
}

impl SessionKeys {
    /// Derive the SRTP (`rtcp = false`) or SRTCP session keys from a master key.
    pub(crate) fn derive(master: &MasterKey, rtcp: bool) -> SessionKeys {
        let (l_enc, l_auth, l_salt) = if rtcp {
            (label::RTCP_ENCRYPTION, label::RTCP_AUTH, label::RTCP_SALT)
        } else {
            (label::RTP_ENCRYPTION, label::RTP_AUTH, label::RTP_SALT)
        };
        let mut keys = SessionKeys { enc_key: [0; MAX_KEY_LEN], salt: [0; 14], auth_key: [0; 20] };
        derive(master, l_enc, &mut keys.enc_key[..master.profile().key_len()]);
        let salt_len = master.profile().salt_len();
        derive(master, l_salt, &mut keys.salt[..salt_len]);
        if master.profile() == SrtpProfile::Aes128CmSha1_80 {
            derive(master, l_auth, &mut keys.auth_key);
        }
        keys
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        wipe(&mut self.enc_key);
        wipe(&mut self.salt);
        wipe(&mut self.auth_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex"))
            .collect()
    }

    /// RFC 3711 Appendix B.3.
    #[test]
    fn rfc3711_b3_key_derivation() {
        let master = MasterKey::new(
            SrtpProfile::Aes128CmSha1_80,
            &unhex("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &unhex("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .expect("lengths fit");
        let mut key = [0u8; 16];
        derive(&master, label::RTP_ENCRYPTION, &mut key);
        assert_eq!(key.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive(&master, label::RTP_SALT, &mut salt);
        assert_eq!(salt.to_vec(), unhex("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        derive(&master, label::RTP_AUTH, &mut auth);
        assert_eq!(auth.to_vec(), unhex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
        // The RFC prints 94 bytes of the auth key stream; check past the first block too.
        let mut long = [0u8; 48];
        derive(&master, label::RTP_AUTH, &mut long);
        assert_eq!(
            long.to_vec(),
            unhex(
                "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE\
                 E049646C43D9327AD175578EF7227098"
            )
        );
        let keys = SessionKeys::derive(&master, false);
        assert_eq!(keys.enc_key[..16].to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
    }

    /// RFC 6188 §7.2: the AES_256_CM_PRF (a 32-byte master key with a 14-byte salt; the
    /// PRF AEAD_AES_256_GCM uses, RFC 7714 §11).
    #[test]
    fn rfc6188_7_2_aes256_key_derivation() {
        let key = unhex("F0F04914B513F2763A1B1FA130F10E2998F6F6E43E4309D1E622A0E332B9F1B6");
        let mut salt = [0u8; 14];
        salt.copy_from_slice(&unhex("3B04803DE51EE7C96423AB5B78D2"));
        let mut enc = [0u8; 32];
        derive_raw(&key, &salt, label::RTP_ENCRYPTION, &mut enc);
        assert_eq!(
            enc.to_vec(),
            unhex("5BA1064E30EC51613CAD926C5A28EF731EC7FB397F70A960653CAF06554CD8C4")
        );
        let mut s = [0u8; 14];
        derive_raw(&key, &salt, label::RTP_SALT, &mut s);
        assert_eq!(s.to_vec(), unhex("FA31791685CA444A9E07C6C64E93"));
        let mut auth = [0u8; 20];
        derive_raw(&key, &salt, label::RTP_AUTH, &mut auth);
        assert_eq!(auth.to_vec(), unhex("FD9C32D39ED5FBB5A9DC96B30818454D1313DC05"));
    }

    /// An AES-256-GCM master key derives a 32-byte session key through the AES-256 PRF,
    /// with the 12-byte salt zero-padded.
    #[test]
    fn aes256_gcm_session_keys_use_the_aes256_prf() {
        let key: Vec<u8> = (0..32).collect();
        let salt: Vec<u8> = (100..112).collect();
        let master = MasterKey::new(SrtpProfile::AeadAes256Gcm, &key, &salt).expect("lengths");
        let keys = SessionKeys::derive(&master, true);
        let mut padded = [0u8; 14];
        padded[..12].copy_from_slice(&salt);
        let mut enc = [0u8; 32];
        derive_raw(&key, &padded, label::RTCP_ENCRYPTION, &mut enc);
        assert_eq!(keys.enc_key, enc);
        let mut s = [0u8; 12];
        derive_raw(&key, &padded, label::RTCP_SALT, &mut s);
        assert_eq!(keys.salt[..12], s);
        assert_eq!(keys.salt[12..], [0, 0]);
        assert_eq!(keys.auth_key, [0; 20], "no HMAC key for GCM");
        assert_eq!(master.key(), &key[..]);
    }

    #[test]
    fn split_follows_rfc5764_layout() {
        let profile = SrtpProfile::AeadAes128Gcm;
        let material: Vec<u8> = (0..profile.keying_material_len() as u8).collect();
        let (local, remote) =
            split_keying_material(profile, &material, DtlsRole::Client).expect("length fits");
        assert_eq!(local.key(), &material[0..16]);
        assert_eq!(remote.key(), &material[16..32]);
        assert_eq!(local.salt(), &material[32..44]);
        assert_eq!(remote.salt(), &material[44..56]);
        let (local, remote) =
            split_keying_material(profile, &material, DtlsRole::Server).expect("length fits");
        assert_eq!(local.key(), &material[16..32]);
        assert_eq!(remote.salt(), &material[32..44]);
        assert_eq!(
            split_keying_material(profile, &material[1..], DtlsRole::Server).err(),
            Some(SrtpError::BadKeyLength)
        );
        assert!(!format!("{local:?}").contains("16"));
    }

    #[test]
    fn master_key_checks_lengths() {
        let p = SrtpProfile::Aes128CmSha1_80;
        assert!(MasterKey::new(p, &[0; 16], &[0; 14]).is_ok());
        assert_eq!(MasterKey::new(p, &[0; 16], &[0; 12]).err(), Some(SrtpError::BadKeyLength));
        assert_eq!(MasterKey::new(p, &[0; 15], &[0; 14]).err(), Some(SrtpError::BadKeyLength));
        assert_eq!(MasterKey::new(p, &[0; 32], &[0; 14]).err(), Some(SrtpError::BadKeyLength));
        let p = SrtpProfile::AeadAes256Gcm;
        assert!(MasterKey::new(p, &[0; 32], &[0; 12]).is_ok());
        assert_eq!(MasterKey::new(p, &[0; 16], &[0; 12]).err(), Some(SrtpError::BadKeyLength));
    }
}
