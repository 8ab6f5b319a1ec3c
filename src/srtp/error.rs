//! The one error type of the SRTP core: a small `Copy` enum, sorted by who is at fault.

use std::fmt;

/// Why a protect or unprotect call failed.
///
/// The variants fall into three groups (see [`SrtpError::blame`]):
///
/// - **peer**: the datagram is malformed, forged, replayed or too old. Drop it and count
///   it under [`SrtpError::label`]; never tear the session down for one of these.
/// - **caller**: the shell or router misused the API (a buffer without room for the
///   tag, a header length that does not fit, key material of the wrong size, or a
///   context whose per-SSRC table is full). These are bugs or limits to raise.
/// - **session**: the key has protected as many packets as SRTP allows and must be
///   replaced (RFC 3711 §9.2), or the crypto backend refused an operation.
///
/// On any error the contents of the buffer passed in are unspecified (a failed
/// decryption may have scribbled over it); the replay window and rollover counter are
/// left untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SrtpError {
    /// The packet is shorter than its header plus the authentication tag, or an RTCP
    /// packet shorter than its 8-byte header (plus the SRTCP trailer when unprotecting).
    TooShort,
    /// The authentication tag did not verify: forged, corrupted, or keyed differently.
    AuthFailed,
    /// The packet index was already accepted once (inside the replay window).
    Replayed,
    /// The packet index is older than the replay window reaches back.
    TooOld,
    /// No per-SSRC state exists and the context's fixed SSRC table is full.
    NoContext,
    /// The buffer handed in has no room for the authentication tag (and SRTCP index).
    BufferTooSmall,
    /// The caller's `header_len` is below the 12-byte fixed RTP header, or (when
    /// protecting) past the end of the packet.
    BadHeaderLen,
    /// Master key, master salt or DTLS keying material has the wrong length for the
    /// profile.
    BadKeyLength,
    /// The 48-bit SRTP index or 31-bit SRTCP index of this SSRC would wrap: the master
    /// key must be replaced (RFC 3711 §9.2).
    IndexExhausted,
    /// The AEAD backend refused an operation that cannot fail for valid inputs.
    Crypto,
}

/// Who caused an [`SrtpError`]; decides between "drop and count" and "fix the caller".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The remote peer sent something we refuse: drop the packet, bump a counter.
    Peer,
    /// Our own code used the API wrongly or hit a configured limit.
    Caller,
    /// The session's key is used up, or the environment (crypto backend) failed.
    Session,
}

impl SrtpError {
    /// Who is at fault for this error.
    pub const fn blame(self) -> Blame {
        match self {
            SrtpError::TooShort
            | SrtpError::AuthFailed
            | SrtpError::Replayed
            | SrtpError::TooOld => Blame::Peer,
            SrtpError::NoContext
            | SrtpError::BufferTooSmall
            | SrtpError::BadHeaderLen
            | SrtpError::BadKeyLength => Blame::Caller,
            SrtpError::IndexExhausted | SrtpError::Crypto => Blame::Session,
        }
    }

    /// A short, stable label for drop-reason counters (`srtp_too_short`, ...).
    pub const fn label(self) -> &'static str {
        match self {
            SrtpError::TooShort => "srtp_too_short",
            SrtpError::AuthFailed => "srtp_auth_failed",
            SrtpError::Replayed => "srtp_replayed",
            SrtpError::TooOld => "srtp_too_old",
            SrtpError::NoContext => "srtp_no_context",
            SrtpError::BufferTooSmall => "srtp_buffer_too_small",
            SrtpError::BadHeaderLen => "srtp_bad_header_len",
            SrtpError::BadKeyLength => "srtp_bad_key_length",
            SrtpError::IndexExhausted => "srtp_index_exhausted",
            SrtpError::Crypto => "srtp_crypto",
        }
    }
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            SrtpError::TooShort => "packet shorter than its header and authentication tag",
            SrtpError::AuthFailed => "authentication tag does not verify",
            SrtpError::Replayed => "packet index already received (replay)",
            SrtpError::TooOld => "packet index older than the replay window",
            SrtpError::NoContext => "per-SSRC table full; raise max_ssrcs for this context",
            SrtpError::BufferTooSmall => "buffer has no room for the SRTP trailer",
            SrtpError::BadHeaderLen => "RTP header length below 12 or past the packet end",
            SrtpError::BadKeyLength => {
                "key, salt or keying material length does not fit the profile"
            }
            SrtpError::IndexExhausted => {
                "SRTP/SRTCP index exhausted; the master key must be replaced"
            }
            SrtpError::Crypto => "crypto backend failure",
        };
        f.write_str(text)
    }
}

impl std::error::Error for SrtpError {}
