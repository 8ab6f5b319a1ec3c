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
//! the same PRF with its 12-byte salt zero-padded to 14 bytes (RFC 7714 §11).

use std::fmt;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};

use super::error::SrtpError;
use super::profile::SrtpProfile;

/// The TLS exporter label for DTLS-SRTP keying material (RFC 5764 §4.2); export
/// [`SrtpProfile::keying_material_len`] bytes with it and an empty context.
pub const DTLS_SRTP_EXPORTER_LABEL: &str = "EXTRACTOR-dtls_srtp";

/// Which side of the DTLS handshake we were; decides which exported half we send with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsRole {
    /// We sent the ClientHello (`a=setup:active` in SDP).
    Client,
    /// We answered the ClientHello (`a=setup:passive`); the usual role of an SFU.
    Server,
}

/// One direction's master key and master salt, checked against its profile.
///
/// The bytes are wiped when the value is dropped. `Debug` does not print them.
#[derive(Clone)]
pub struct MasterKey {
    profile: SrtpProfile,
    key: [u8; 16],
    salt: [u8; 14],
}

impl MasterKey {
    /// A master key for `profile`; `key` and `salt` must have exactly the profile's
    /// lengths, else [`SrtpError::BadKeyLength`].
    pub fn new(profile: SrtpProfile, key: &[u8], salt: &[u8]) -> Result<MasterKey, SrtpError> {
        if key.len() != profile.key_len() || salt.len() != profile.salt_len() {
            return Err(SrtpError::BadKeyLength);
        }
        let mut k = [0u8; 16];
        k.copy_from_slice(key);
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

/// The AES-CM PRF of RFC 3711 §4.3.1/§4.3.3 with `kdr = 0`: the keystream of AES-128
/// in counter mode under the master key, starting at
/// `IV = (master_salt XOR (label << 48)) << 16`, truncated to `out.len()` bytes.
pub(crate) fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let aes = Aes128::new(GenericArray::from_slice(master.key()));
    // x = key_id XOR master_salt, key_id = label || r (r = 0, 48 bits): the label lands
    // on byte 7 of the 14-byte salt. A 12-byte GCM salt is zero-padded (RFC 7714 §11).
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(&master.salt);
    iv[7] ^= label;
    for (counter, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = iv;
        // Only a handful of blocks are ever derived (at most 2 for a 20-byte key).
        block[14..].copy_from_slice(&(counter as u16).to_be_bytes());
        let mut b = GenericArray::from(block);
        aes.encrypt_block(&mut b);
        chunk.copy_from_slice(&b[..chunk.len()]);
        wipe(&mut b);
    }
}

/// Session keys of one direction for SRTP or SRTCP.
pub(crate) struct SessionKeys {
    pub(crate) enc_key: [u8; 16],
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
        let mut keys = SessionKeys { enc_key: [0; 16], salt: [0; 14], auth_key: [0; 20] };
        derive(master, l_enc, &mut keys.enc_key);
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
        assert_eq!(keys.enc_key.to_vec(), unhex("C61E7A93744F39EE10734AFE3FF7A087"));
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
    }
}
