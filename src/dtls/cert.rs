//! The server certificate and certificate fingerprints (RFC 8122 `a=fingerprint`).

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;

/// Hash functions RFC 8122 allows in `a=fingerprint` that browsers actually use.
///
/// Browsers send `sha-256`; the others are accepted so that a remote fingerprint from an
/// unusual client can still be checked rather than rejected unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FingerprintAlg {
    /// `sha-1` (legacy, still legal in RFC 8122).
    Sha1,
    /// `sha-256`: what every browser sends and what we announce.
    Sha256,
    /// `sha-384`.
    Sha384,
    /// `sha-512`.
    Sha512,
}

impl FingerprintAlg {
    /// The token used in SDP (`sha-256`).
    pub const fn sdp_name(self) -> &'static str {
        match self {
            FingerprintAlg::Sha1 => "sha-1",
            FingerprintAlg::Sha256 => "sha-256",
            FingerprintAlg::Sha384 => "sha-384",
            FingerprintAlg::Sha512 => "sha-512",
        }
    }

    /// Digest length in bytes.
    pub const fn digest_len(self) -> usize {
        match self {
            FingerprintAlg::Sha1 => 20,
            FingerprintAlg::Sha256 => 32,
            FingerprintAlg::Sha384 => 48,
            FingerprintAlg::Sha512 => 64,
        }
    }

    fn digest_alg(self) -> &'static digest::Algorithm {
        match self {
            FingerprintAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            FingerprintAlg::Sha256 => &digest::SHA256,
            FingerprintAlg::Sha384 => &digest::SHA384,
            FingerprintAlg::Sha512 => &digest::SHA512,
        }
    }

    fn from_sdp_name(name: &str) -> Option<Self> {
        // RFC 8122 §5: hash function names are case-insensitive.
        [Self::Sha1, Self::Sha256, Self::Sha384, Self::Sha512]
            .into_iter()
            .find(|alg| alg.sdp_name().eq_ignore_ascii_case(name))
    }
}

/// Why an SDP fingerprint string was rejected (the peer's SDP is at fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintParseError {
    /// The hash function token is missing or not one we support (`md5`, `sha-224`, ...).
    #[error("unsupported or missing fingerprint hash function")]
    UnsupportedAlgorithm,
    /// The value is not colon-separated pairs of hex digits.
    #[error("fingerprint value is not colon-separated hex bytes")]
    BadHex,
    /// The number of bytes does not match the hash function.
    #[error("fingerprint length does not match its hash function")]
    WrongLength,
}

/// A certificate fingerprint: hash function and digest (RFC 8122 §5).
///
/// Plain value, no allocation: parse the peer's `a=fingerprint` once at construction of the
/// endpoint and compare it against the DER certificate the peer presents in the handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint {
    alg: FingerprintAlg,
    digest: [u8; 64],
}

impl Fingerprint {
    /// The fingerprint of a DER certificate with the given hash function.
    pub fn of_der(alg: FingerprintAlg, der: &[u8]) -> Self {
        let d = digest::digest(alg.digest_alg(), der);
        let mut digest = [0u8; 64];
        digest[..alg.digest_len()].copy_from_slice(d.as_ref());
        Fingerprint { alg, digest }
    }

    /// Parses the value of an `a=fingerprint:` attribute: `sha-256 AB:CD:...`.
    ///
    /// Hex digits may be upper or lower case; surrounding whitespace is ignored.
    pub fn parse_sdp(value: &str) -> Result<Self, FingerprintParseError> {
        let value = value.trim();
        let (alg, hex) = value
            .split_once(|c: char| c.is_ascii_whitespace())
            .ok_or(FingerprintParseError::UnsupportedAlgorithm)?;
        let alg = FingerprintAlg::from_sdp_name(alg)
            .ok_or(FingerprintParseError::UnsupportedAlgorithm)?;
        let mut digest = [0u8; 64];
        let mut n = 0usize;
        for pair in hex.trim().split(':') {
            let b = pair.as_bytes();
            if b.len() != 2 {
                return Err(FingerprintParseError::BadHex);
            }
            let byte = (hex_val(b[0]).ok_or(FingerprintParseError::BadHex)? << 4)
                | hex_val(b[1]).ok_or(FingerprintParseError::BadHex)?;
            if n >= alg.digest_len() {
                return Err(FingerprintParseError::WrongLength);
            }
            digest[n] = byte;
            n += 1;
        }
        if n != alg.digest_len() {
            return Err(FingerprintParseError::WrongLength);
        }
        Ok(Fingerprint { alg, digest })
    }

    /// A SHA-256 fingerprint from its 32 digest bytes (as an SDP parser decoded them);
    /// `None` for any other length.
    pub fn sha256(digest: &[u8]) -> Option<Self> {
        if digest.len() != FingerprintAlg::Sha256.digest_len() {
            return None;
        }
        let mut d = [0u8; 64];
        d[..32].copy_from_slice(digest);
        Some(Fingerprint { alg: FingerprintAlg::Sha256, digest: d })
    }

    /// The hash function.
    pub fn alg(&self) -> FingerprintAlg {
        self.alg
    }

    /// The digest bytes.
    pub fn digest(&self) -> &[u8] {
        &self.digest[..self.alg.digest_len()]
    }

    /// Whether `der` hashes to this fingerprint (with this fingerprint's hash function).
    pub fn matches_der(&self, der: &[u8]) -> bool {
        Fingerprint::of_der(self.alg, der) == *self
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Formats as the SDP attribute value: `sha-256 AB:CD:...` (upper-case hex, RFC 8122 §5).
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alg.sdp_name())?;
        f.write_str(" ")?;
        for (i, b) in self.digest().iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fingerprint::parse_sdp(s)
    }
}

/// Why a certificate could not be made or loaded (the environment or the caller is at fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Key generation or self-signing failed (crypto library error).
    #[error("certificate generation failed")]
    Generation,
    /// The DER certificate or PKCS#8 key passed in is empty.
    #[error("certificate or private key is empty")]
    Empty,
}

/// The DTLS server certificate: ECDSA P-256, self-signed, and its SHA-256 fingerprint.
///
/// Generate one per process ([`DtlsCert::generate`]) and share it (through
/// [`DtlsContext`](super::DtlsContext)) with every endpoint; the fingerprint goes into every
/// SDP answer as `a=fingerprint:` + [`DtlsCert::sdp_fingerprint`].
#[derive(Clone)]
pub struct DtlsCert {
    pub(crate) inner: dimpl::DtlsCertificate,
    fingerprint: Fingerprint,
}

impl DtlsCert {
    /// Generates a fresh self-signed ECDSA P-256 / SHA-256 certificate with a random serial
    /// (Firefox rejects two certificates with the same issuer and serial).
    ///
    /// Costs a key generation and a signature (~100 µs); call once per process, not per peer.
    pub fn generate() -> Result<Self, CertError> {
        let inner = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|_| CertError::Generation)?;
        Ok(Self::from_dimpl(inner))
    }

    /// Uses an existing certificate (DER) and its private key (PKCS#8 DER, ECDSA P-256 or
    /// P-384). The key is checked when the first handshake signs with it.
    pub fn from_der(certificate: Vec<u8>, private_key: Vec<u8>) -> Result<Self, CertError> {
        if certificate.is_empty() || private_key.is_empty() {
            return Err(CertError::Empty);
        }
        Ok(Self::from_dimpl(dimpl::DtlsCertificate { certificate, private_key }))
    }

    fn from_dimpl(inner: dimpl::DtlsCertificate) -> Self {
        let fingerprint = Fingerprint::of_der(FingerprintAlg::Sha256, &inner.certificate);
        DtlsCert { inner, fingerprint }
    }

    /// The SHA-256 fingerprint of the certificate.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The `a=fingerprint:` attribute value: `sha-256 AB:CD:...`.
    pub fn sdp_fingerprint(&self) -> String {
        self.fingerprint.to_string()
    }

    /// The certificate in DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.inner.certificate
    }

    /// The private key in PKCS#8 DER. Handle with care.
    pub fn private_key_der(&self) -> &[u8] {
        &self.inner.private_key
    }
}

impl fmt::Debug for DtlsCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsCert").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trip() {
        let fp = Fingerprint::of_der(FingerprintAlg::Sha256, b"hello");
        let s = fp.to_string();
        assert!(s.starts_with("sha-256 2C:F2:4D:BA:5F:B0:A3:0E:26:E8:3B:2A:C5:B9:E2:9E"));
        assert_eq!(s.len(), "sha-256 ".len() + 32 * 3 - 1);
        assert_eq!(Fingerprint::parse_sdp(&s), Ok(fp));
        assert_eq!(Fingerprint::parse_sdp(&s.to_lowercase()), Ok(fp));
        assert_eq!(Fingerprint::parse_sdp(&format!("  SHA-256\t{}  ", &s[8..])), Ok(fp));
        assert!(fp.matches_der(b"hello"));
        assert!(!fp.matches_der(b"hellO"));
    }

    #[test]
    fn fingerprint_rejects() {
        use FingerprintParseError::*;
        assert_eq!(Fingerprint::parse_sdp("md5 AB:CD"), Err(UnsupportedAlgorithm));
        assert_eq!(Fingerprint::parse_sdp("sha-256"), Err(UnsupportedAlgorithm));
        assert_eq!(Fingerprint::parse_sdp("sha-256 AB:CD"), Err(WrongLength));
        assert_eq!(Fingerprint::parse_sdp("sha-256 AB:CG"), Err(BadHex));
        assert_eq!(Fingerprint::parse_sdp("sha-256 ABC:D"), Err(BadHex));
        assert_eq!(Fingerprint::parse_sdp("sha-256 AB::CD"), Err(BadHex));
        let long = vec!["AB"; 33].join(":");
        assert_eq!(Fingerprint::parse_sdp(&format!("sha-256 {long}")), Err(WrongLength));
        let sha1 = vec!["0f"; 20].join(":");
        assert!(Fingerprint::parse_sdp(&format!("sha-1 {sha1}")).is_ok());
    }

    #[test]
    fn generated_cert_fingerprint() {
        let cert = DtlsCert::generate().expect("generate");
        let fp = cert.sdp_fingerprint();
        assert!(fp.starts_with("sha-256 "));
        assert!(cert.fingerprint().matches_der(cert.certificate_der()));
        let other = DtlsCert::generate().expect("generate");
        assert_ne!(cert.fingerprint(), other.fingerprint());
    }
}
