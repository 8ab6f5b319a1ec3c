//! The SRTP protection profiles we speak (RFC 5764 §4.1.2, RFC 7714 §14.2).

/// An SRTP protection profile negotiated in the DTLS `use_srtp` extension.
///
/// Prefer [`SrtpProfile::AeadAes128Gcm`]: one AES-GCM pass authenticates and encrypts,
/// where [`SrtpProfile::Aes128CmSha1_80`] needs AES-CTR plus an HMAC-SHA1 over the whole
/// packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpProfile {
    /// `SRTP_AES128_CM_HMAC_SHA1_80` (0x0001): AES-128 counter mode, 80-bit HMAC-SHA1
    /// tag (RFC 3711).
    Aes128CmSha1_80,
    /// `SRTP_AEAD_AES_128_GCM` (0x0007): AES-128-GCM with a 128-bit tag (RFC 7714).
    AeadAes128Gcm,
}

impl SrtpProfile {
    /// Length of the master key in bytes (16 for both profiles).
    pub const fn key_len(self) -> usize {
        16
    }

    /// Length of the master salt in bytes: 14 for AES-CM, 12 for AES-GCM (RFC 7714 §11).
    pub const fn salt_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 14,
            SrtpProfile::AeadAes128Gcm => 12,
        }
    }

    /// Length of the authentication tag appended to SRTP and SRTCP packets.
    pub const fn tag_len(self) -> usize {
        match self {
            SrtpProfile::Aes128CmSha1_80 => 10,
            SrtpProfile::AeadAes128Gcm => 16,
        }
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
        }
    }

    /// The profile for a DTLS `use_srtp` identifier, if we implement it.
    pub const fn from_dtls_id(id: u16) -> Option<SrtpProfile> {
        match id {
            0x0001 => Some(SrtpProfile::Aes128CmSha1_80),
            0x0007 => Some(SrtpProfile::AeadAes128Gcm),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_follow_the_rfcs() {
        let cm = SrtpProfile::Aes128CmSha1_80;
        let gcm = SrtpProfile::AeadAes128Gcm;
        assert_eq!((cm.key_len(), cm.salt_len(), cm.tag_len()), (16, 14, 10));
        assert_eq!((gcm.key_len(), gcm.salt_len(), gcm.tag_len()), (16, 12, 16));
        assert_eq!(cm.keying_material_len(), 60);
        assert_eq!(gcm.keying_material_len(), 56);
        assert_eq!(cm.rtcp_overhead(), 14);
        assert_eq!(gcm.rtcp_overhead(), 20);
        for p in [cm, gcm] {
            assert_eq!(SrtpProfile::from_dtls_id(p.dtls_id()), Some(p));
        }
        assert_eq!(SrtpProfile::from_dtls_id(0x0002), None);
    }
}
