//! The SRTP protection profiles we speak (RFC 5764 §4.1.2, RFC 7714 §14.2).

use std::fmt;

/// An SRTP protection profile negotiated in the DTLS `use_srtp` extension.
///
/// This is the one profile type of the crate: `dtls` reports the negotiated profile with
/// it and `srtp` keys its contexts with it.
///
/// Prefer the AEAD profiles: one AES-GCM pass authenticates and encrypts, where
/// [`SrtpProfile::Aes128CmSha1_80`] needs AES-CTR plus an HMAC-SHA1 over the whole
/// packet. Our DTLS server selects in the order of [`SrtpProfile::ALL`], so a browser call
/// (browsers offer all three) runs [`SrtpProfile::AeadAes128Gcm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001): AES-128 counter mode, 80-bit HMAC-SHA1
    /// tag (RFC 3711).
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007): AES-128-GCM with a 128-bit tag (RFC 7714).
    AeadAes128Gcm,
    /// `SRTP_AEAD_AES_256_GCM` (0x0008): AES-256-GCM with a 128-bit tag (RFC 7714);
    /// session keys come from the AES-256 counter-mode PRF (RFC 7714 §11, RFC 6188).
    AeadAes256Gcm,
}

impl SrtpProfile {
    /// Every profile, in ringsfu's order of preference (the DTLS server's default): AES-128-GCM
    /// (the cheapest per packet: protect 0.90x of AES-256-GCM's time, 0.17x of
    /// AES-CM-HMAC-SHA1-80's, `benches/srtp.rs`), AES-256-GCM, AES-CM-HMAC-SHA1-80.
    pub const ALL: [SrtpProfile; 3] =
        [SrtpProfile::AeadAes128Gcm, SrtpProfile::AeadAes256Gcm, SrtpProfile::Aes128CmSha1_80];

    /// Length of the master key (and of the session encryption key) in bytes: 16, or 32
    /// for AES-256-GCM.
    pub const fn key_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 | SrtpProfile::AeadAes128Gcm => 16,
            SrtpProfile::AeadAes256Gcm => 32,
        }
    }

    /// Length of the master salt in bytes: 14 for AES-CM, 12 for AES-GCM (RFC 7714 §11).
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 14,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 12,
        }
    }

    /// Length of the authentication tag appended to SRTP and SRTCP packets.
    pub const fn tag_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 10,
            SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm => 16,
        }
    }

    /// Whether this is an AEAD (AES-GCM, RFC 7714) profile.
    pub const fn is_aead(self) -> bool {
        matches!(self, SrtpProfile::AeadAes128Gcm | SrtpProfile::AeadAes256Gcm)
    }

    /// Bytes that protecting an RTP packet adds: the buffer must have this much room
    /// past the plaintext.
    pub const fn rtp_overhead(self) -> usize {
        self.tag_len()
    }

    /// Bytes that protecting an RTCP packet adds (the 4-byte E-flag + SRTCP index word
    /// and the tag).
    pub const fn rtcp_overhead(self) -> usize {
        self.tag_len() + 4
    }

    /// Length of the DTLS-SRTP exported keying material: `2 * (key_len + salt_len)`
    /// (RFC 5764 §4.2).
    pub const fn keying_material_len(self) -> usize {
        2 * (self.key_len() + self.salt_len())
    }

    /// The profile's identifier in the DTLS `use_srtp` extension.
    pub const fn dtls_id(self) -> u16 {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 0x0001,
            SrtpProfile::AeadAes128Gcm => 0x0007,
            SrtpProfile::AeadAes256Gcm => 0x0008,
        }
    }

    /// The profile for a DTLS `use_srtp` identifier, if we implement it.
    pub const fn from_dtls_id(id: u16) -> Option<SrtpProfile> {
        match id {
            0x0001 => Some(SrtpProfile::Aes128CmSha1_80),
            0x0007 => Some(SrtpProfile::AeadAes128Gcm),
            0x0008 => Some(SrtpProfile::AeadAes256Gcm),
            _ => None,
        }
    }

    /// The profile name as RFC 5764 / RFC 7714 and OpenSSL spell it
    /// (`SRTP_AEAD_AES_128_GCM`); also what `Display` prints.
    pub const fn name(self) -> &'static str {
        match self {
            SrtpProfile::Aes128CmSha1_80 => "SRTP_AES128_CM_SHA1_80",
            SrtpProfile::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            SrtpProfile::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
        }
    }

    /// A short stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            SrtpProfile::Aes128CmSha1_80 => "aes128_cm_sha1_80",
            SrtpProfile::AeadAes128Gcm => "aead_aes128_gcm",
            SrtpProfile::AeadAes256Gcm => "aead_aes256_gcm",
        }
    }
}

impl fmt::Display for SrtpProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_rfcs() {
        let cm = SrtpProfile::Aes128CmSha1_80;
        let gcm = SrtpProfile::AeadAes128Gcm;
        let gcm256 = SrtpProfile::AeadAes256Gcm;
        assert_eq!((cm.key_len(), cm.salt_len(), cm.tag_len()), (16, 14, 10));
        assert_eq!((gcm.key_len(), gcm.salt_len(), gcm.tag_len()), (16, 12, 16));
        assert_eq!((gcm256.key_len(), gcm256.salt_len(), gcm256.tag_len()), (32, 12, 16));
        assert_eq!(cm.keying_material_len(), 60);
        assert_eq!(gcm.keying_material_len(), 56);
        assert_eq!(gcm256.keying_material_len(), 88);
        assert_eq!(cm.rtcp_overhead(), 14);
        assert_eq!(gcm.rtcp_overhead(), 20);
        assert_eq!(gcm256.rtcp_overhead(), 20);
        assert_eq!(gcm256.dtls_id(), 0x0008);
        for p in SrtpProfile::ALL {
            assert_eq!(SrtpProfile::from_dtls_id(p.dtls_id()), Some(p));
            assert_eq!(p.is_aead(), p != cm);
        }
        assert_eq!(SrtpProfile::from_dtls_id(0x0002), None);
        assert_eq!(gcm256.to_string(), "SRTP_AEAD_AES_256_GCM");
    }
}
