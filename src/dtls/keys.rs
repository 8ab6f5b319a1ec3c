//! The exported SRTP master keys (RFC 5764 §4.2, RFC 7714 §12). The profile type is
//! [`SrtpProfile`], shared with `srtp`.

use std::fmt;

use crate::srtp::{DtlsRole, SrtpProfile};

/// The [`SrtpProfile`] for the profile dimpl negotiated, if we implement it.
pub(crate) fn profile_from_dimpl(p: dimpl::SrtpProfile) -> Option<SrtpProfile> {
    match p {
        dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(SrtpProfile::Aes128CmSha1_80),
        dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(SrtpProfile::AeadAes128Gcm),
        dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(SrtpProfile::AeadAes256Gcm),
        _ => None,
    }
}

/// dimpl's name for `p`.
pub(crate) fn profile_to_dimpl(p: SrtpProfile) -> dimpl::SrtpProfile {
    match p {
        SrtpProfile::Aes128CmSha1_80 => dimpl::SrtpProfile::AES128_CM_SHA1_80,
        SrtpProfile::AeadAes128Gcm => dimpl::SrtpProfile::AEAD_AES_128_GCM,
        SrtpProfile::AeadAes256Gcm => dimpl::SrtpProfile::AEAD_AES_256_GCM,
    }
}

/// Longest master key of any supported profile (AES-256).
pub const MAX_SRTP_KEY_LEN: usize = 32;
/// Longest master salt of any supported profile (AES-CM: 112 bits).
pub const MAX_SRTP_SALT_LEN: usize = 14;

/// SRTP master keys and salts exported from the DTLS session (RFC 5764 §4.2).
///
/// Hand it to [`SrtpContext::from_dtls_keys`](crate::srtp::SrtpContext::from_dtls_keys)
/// to get the `(outbound, inbound)` SRTP contexts.
///
/// Plain data, no heap. The arrays are sized for the largest profile; only the first
/// `profile.key_len()` / `profile.salt_len()` bytes are meaningful (the rest are zero). The
/// slice accessors return exactly the meaningful part.
///
/// Direction for the SFU (always the DTLS server, `a=setup:passive`):
/// - unprotect what the browser sends with `client_key` + `client_salt`
///   ([`Self::inbound`]`(DtlsRole::Server)`);
/// - protect what the SFU sends with `server_key` + `server_salt`
///   ([`Self::outbound`]`(DtlsRole::Server)`).
#[derive(Clone, PartialEq, Eq)]
pub struct SrtpKeyMaterial {
    /// The negotiated profile.
    pub profile: SrtpProfile,
    /// `client_write_SRTP_master_key`, first `profile.key_len()` bytes valid.
    pub client_key: [u8; MAX_SRTP_KEY_LEN],
    /// `server_write_SRTP_master_key`, first `profile.key_len()` bytes valid.
    pub server_key: [u8; MAX_SRTP_KEY_LEN],
    /// `client_write_SRTP_master_salt`, first `profile.salt_len()` bytes valid.
    pub client_salt: [u8; MAX_SRTP_SALT_LEN],
    /// `server_write_SRTP_master_salt`, first `profile.salt_len()` bytes valid.
    pub server_salt: [u8; MAX_SRTP_SALT_LEN],
}

impl SrtpKeyMaterial {
    /// Splits an `EXTRACTOR-dtls_srtp` export, laid out as
    /// `client_key | server_key | client_salt | server_salt`.
    ///
    /// Returns `None` when `exported` is not exactly `profile.keying_material_len()` bytes.
    pub fn from_exported(profile: SrtpProfile, exported: &[u8]) -> Option<Self> {
        if exported.len() != profile.keying_material_len() {
            return None;
        }
        let (k, s) = (profile.key_len(), profile.salt_len());
        let mut km = SrtpKeyMaterial {
            profile,
            client_key: [0; MAX_SRTP_KEY_LEN],
            server_key: [0; MAX_SRTP_KEY_LEN],
            client_salt: [0; MAX_SRTP_SALT_LEN],
            server_salt: [0; MAX_SRTP_SALT_LEN],
        };
        km.client_key[..k].copy_from_slice(&exported[..k]);
        km.server_key[..k].copy_from_slice(&exported[k..2 * k]);
        km.client_salt[..s].copy_from_slice(&exported[2 * k..2 * k + s]);
        km.server_salt[..s].copy_from_slice(&exported[2 * k + s..]);
        Some(km)
    }

    /// The client's (browser's) master key.
    pub fn client_key(&self) -> &[u8] {
        &self.client_key[..self.profile.key_len()]
    }

    /// The server's (SFU's) master key.
    pub fn server_key(&self) -> &[u8] {
        &self.server_key[..self.profile.key_len()]
    }

    /// The client's (browser's) master salt.
    pub fn client_salt(&self) -> &[u8] {
        &self.client_salt[..self.profile.salt_len()]
    }

    /// The server's (SFU's) master salt.
    pub fn server_salt(&self) -> &[u8] {
        &self.server_salt[..self.profile.salt_len()]
    }

    /// `(key, salt)` to unprotect what the peer sends, for an endpoint playing `role`.
    pub fn inbound(&self, role: DtlsRole) -> (&[u8], &[u8]) {
        match role {
            DtlsRole::Server => (self.client_key(), self.client_salt()),
            DtlsRole::Client => (self.server_key(), self.server_salt()),
        }
    }

    /// `(key, salt)` to protect what we send, for an endpoint playing `role`.
    pub fn outbound(&self, role: DtlsRole) -> (&[u8], &[u8]) {
        match role {
            DtlsRole::Server => (self.server_key(), self.server_salt()),
            DtlsRole::Client => (self.client_key(), self.client_salt()),
        }
    }

    /// The export in its wire layout (`client_key | server_key | client_salt | server_salt`),
    /// written to `out`; returns the length. `out` must hold `keying_material_len()` bytes.
    pub fn write_exported(&self, out: &mut [u8]) -> Option<usize> {
        let (k, s) = (self.profile.key_len(), self.profile.salt_len());
        let n = self.profile.keying_material_len();
        let out = out.get_mut(..n)?;
        out[..k].copy_from_slice(self.client_key());
        out[k..2 * k].copy_from_slice(self.server_key());
        out[2 * k..2 * k + s].copy_from_slice(self.client_salt());
        out[2 * k + s..].copy_from_slice(self.server_salt());
        Some(n)
    }
}

/// Keys are never printed.
impl fmt::Debug for SrtpKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrtpKeyMaterial").field("profile", &self.profile).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        for p in SrtpProfile::ALL {
            assert!(p.key_len() <= MAX_SRTP_KEY_LEN);
            assert!(p.salt_len() <= MAX_SRTP_SALT_LEN);
        }
        assert_eq!(
            profile_from_dimpl(dimpl::SrtpProfile::AEAD_AES_256_GCM),
            Some(SrtpProfile::AeadAes256Gcm)
        );
        assert_eq!(
            profile_from_dimpl(dimpl::SrtpProfile::AES128_CM_SHA1_80),
            Some(SrtpProfile::Aes128CmSha1_80)
        );
    }

    #[test]
    fn split_and_join() {
        for p in SrtpProfile::ALL {
            let n = p.keying_material_len();
            let exported: Vec<u8> = (0..n as u8).collect();
            let km = SrtpKeyMaterial::from_exported(p, &exported).expect("length");
            let (k, s) = (p.key_len(), p.salt_len());
            assert_eq!(km.client_key(), &exported[..k]);
            assert_eq!(km.server_key(), &exported[k..2 * k]);
            assert_eq!(km.client_salt(), &exported[2 * k..2 * k + s]);
            assert_eq!(km.server_salt(), &exported[2 * k + s..]);
            let client = (km.client_key(), km.client_salt());
            let server = (km.server_key(), km.server_salt());
            assert_eq!(km.inbound(DtlsRole::Server), client);
            assert_eq!(km.outbound(DtlsRole::Server), server);
            assert_eq!(km.inbound(DtlsRole::Client), server);
            assert_eq!(km.outbound(DtlsRole::Client), client);
            let mut out = [0u8; 88];
            assert_eq!(km.write_exported(&mut out), Some(n));
            assert_eq!(&out[..n], &exported[..]);
            assert!(SrtpKeyMaterial::from_exported(p, &exported[1..]).is_none());
            assert!(!format!("{km:?}").contains("client_key"));
        }
    }
}
