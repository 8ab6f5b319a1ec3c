//! DTLS-SRTP protection profiles and the exported SRTP master keys (RFC 5764 §4.2, RFC 7714 §12).

use std::fmt;

use super::endpoint::DtlsRole;

/// An SRTP protection profile negotiated by the `use_srtp` extension (RFC 5764 §4.1.2).
///
/// The discriminant is the IANA profile id carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum SrtpProfileId {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001): 128-bit key, 112-bit salt, 80-bit tag.
    Aes128CmHmacSha1_80 = 0x0001,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007, RFC 7714): 128-bit key, 96-bit salt.
    AeadAes128Gcm = 0x0007,
    /// `SRTP_AEAD_AES_256_GCM` (0x0008, RFC 7714): 256-bit key, 96-bit salt.
    ///
    /// dimpl 0.9 always selects this one when the client offers it (browsers do), so the SRTP
    /// layer must handle it unless [`DtlsConfig::srtp_profiles`](super::DtlsConfig) excludes it.
    AeadAes256Gcm = 0x0008,
}

impl SrtpProfileId {
    /// Every profile this module can negotiate, in the server's order of preference
    /// (dimpl's fixed order: AES-256-GCM, AES-128-GCM, AES-CM-HMAC-SHA1-80).
    pub const ALL: [SrtpProfileId; 3] = [
        SrtpProfileId::AeadAes256Gcm,
        SrtpProfileId::AeadAes128Gcm,
        SrtpProfileId::Aes128CmHmacSha1_80,
    ];

    /// The IANA `use_srtp` profile id.
    pub const fn wire_id(self) -> u16 {
        self as u16
    }

    /// The profile for an IANA id, if supported.
    pub const fn from_wire_id(id: u16) -> Option<Self> {
        match id {
            0x0001 => Some(SrtpProfileId::Aes128CmHmacSha1_80),
            0x0007 => Some(SrtpProfileId::AeadAes128Gcm),
            0x0008 => Some(SrtpProfileId::AeadAes256Gcm),
            _ => None,
        }
    }

    /// Master key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            SrtpProfileId::Aes128CmHmacSha1_80 | SrtpProfileId::AeadAes128Gcm => 16,
            SrtpProfileId::AeadAes256Gcm => 32,
        }
    }

    /// Master salt length in bytes.
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfileId::Aes128CmHmacSha1_80 => 14,
            SrtpProfileId::AeadAes128Gcm | SrtpProfileId::AeadAes256Gcm => 12,
        }
    }

    /// Length of the `EXTRACTOR-dtls_srtp` export: `2 * (key_len + salt_len)`.
    pub const fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// The profile name as OpenSSL and RFC 5764 spell it (`SRTP_AEAD_AES_128_GCM`).
    pub const fn name(self) -> &'static str {
        match self {
            SrtpProfileId::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_SHA1_80",
            SrtpProfileId::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            SrtpProfileId::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
        }
    }

    /// A short label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            SrtpProfileId::Aes128CmHmacSha1_80 => "aes128_cm_sha1_80",
            SrtpProfileId::AeadAes128Gcm => "aead_aes128_gcm",
            SrtpProfileId::AeadAes256Gcm => "aead_aes256_gcm",
        }
    }

    pub(crate) fn from_dimpl(p: dimpl::SrtpProfile) -> Option<Self> {
        match p {
            dimpl::SrtpProfile::AES128_CM_SHA1_80 => Some(SrtpProfileId::Aes128CmHmacSha1_80),
            dimpl::SrtpProfile::AEAD_AES_128_GCM => Some(SrtpProfileId::AeadAes128Gcm),
            dimpl::SrtpProfile::AEAD_AES_256_GCM => Some(SrtpProfileId::AeadAes256Gcm),
            _ => None,
        }
    }
}

impl fmt::Display for SrtpProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Longest master key of any supported profile (AES-256).
pub const MAX_SRTP_KEY_LEN: usize = 32;
/// Longest master salt of any supported profile (AES-CM: 112 bits).
pub const MAX_SRTP_SALT_LEN: usize = 14;

/// SRTP master keys and salts exported from the DTLS session (RFC 5764 §4.2).
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
    pub profile: SrtpProfileId,
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
    pub fn from_exported(profile: SrtpProfileId, exported: &[u8]) -> Option<Self> {
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
        assert_eq!(SrtpProfileId::AeadAes128Gcm.keying_material_len(), 56);
        assert_eq!(SrtpProfileId::Aes128CmHmacSha1_80.keying_material_len(), 60);
        assert_eq!(SrtpProfileId::AeadAes256Gcm.keying_material_len(), 88);
        for p in SrtpProfileId::ALL {
            assert_eq!(SrtpProfileId::from_wire_id(p.wire_id()), Some(p));
        }
        assert_eq!(SrtpProfileId::from_wire_id(0x0002), None);
    }

    #[test]
    fn split_and_join() {
        for p in SrtpProfileId::ALL {
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
