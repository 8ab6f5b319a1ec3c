//! SRTP / SRTCP (RFC 3711, RFC 7714) protect and unprotect in place, sans-IO.
//!
//! Three profiles: [`SrtpProfile::AeadAes256Gcm`] (AEAD_AES_256_GCM, RFC 7714),
//! [`SrtpProfile::AeadAes128Gcm`] (AEAD_AES_128_GCM, RFC 7714) and
//! [`SrtpProfile::Aes128CmSha1_80`] (AES_CM_128_HMAC_SHA1_80, RFC 3711). Browsers offer all
//! three and the `dtls` module's server prefers AES-128-GCM, so browser calls run
//! AES-128-GCM. The output is byte-identical to the `webrtc-srtp` crate
//! for all three (checked by the differential tests in `tests/srtp_differential.rs`).
//! [`SrtpProfile`] and [`DtlsRole`] are also the types `dtls` uses (re-exported there).
//!
//! # How the shard uses it
//!
//! 1. When DTLS completes (`DtlsEvent::Connected { keying_material, .. }`), build both
//!    directions from the exported keys:
//!    `let (tx, rx) = SrtpContext::from_dtls_keys(&keying_material, DtlsRole::Server)?;`
//!    With raw exporter output instead (another DTLS stack), map the `use_srtp` id with
//!    [`SrtpProfile::from_dtls_id`], export `profile.keying_material_len()` bytes with
//!    [`DTLS_SRTP_EXPORTER_LABEL`] and call [`SrtpContext::from_dtls`] (RFC 5764 §4.2 key
//!    layout; [`split_keying_material`] if you want the keys).
//! 2. Inbound RTP (first byte 128..191, RTP payload type): parse the header length, then
//!    `let n = rx.unprotect_rtp(&mut datagram[..len], header_len)?;` and `datagram[..n]` is
//!    the plaintext RTP packet, decrypted in the receive buffer. Inbound RTCP:
//!    `rx.unprotect_rtcp(&mut datagram[..len])?`.
//! 3. Forwarding to a subscriber (one copy, fused with encryption): write the rewritten
//!    header into the send slot `dst[..header_len]` (copy the publisher's header, patch
//!    SSRC, sequence number, timestamp), then
//!    `let n = tx.protect_rtp_payload_into(dst, header_len, &plain[header_len..])?;`.
//!    The payload is read from the publisher's plaintext once and written encrypted into
//!    `dst` (AES-CM: keystream XOR while copying; AES-GCM: aws-lc-rs out-of-place seal),
//!    the tag appended. [`SrtpContext::protect_rtp_into`] does the same without a rewrite.
//! 4. Locally generated packets (RTCP reports, feedback, probes) are protected in the
//!    buffer they were written to: `tx.protect_rtp(buf, len, header_len)` and
//!    `tx.protect_rtcp(buf, len)`, which need [`SrtpProfile::rtp_overhead`] /
//!    [`SrtpProfile::rtcp_overhead`] spare bytes after `len`.
//! 5. On any `Err`, drop the packet and count it under [`SrtpError::label`];
//!    [`SrtpError::blame`] separates peer garbage from our own mistakes.
//!
//! # Invariants
//!
//! - No allocation after a context is built (the per-SSRC table is fixed-size; checked by
//!   `tests/srtp_alloc.rs` with a counting allocator). No clock, no I/O, no locks.
//! - Replay windows (128 indices) and rollover counters advance only after a packet has
//!   authenticated; a forged packet changes no state.
//! - Tags are compared in constant time (`subtle` for HMAC, aws-lc for GCM).
//! - Malformed input returns an error and never panics (`tests/srtp_fuzz.rs`).
//! - **Caller's duty**: never protect two *different* packets with the same SSRC and
//!   sequence number in one rollover period. Re-protecting the identical packet (a
//!   retransmission without RTX) is harmless, but different plaintext under the same
//!   index reuses the AES-CTR keystream or, worse, the GCM nonce. The sender side keeps
//!   no window, exactly like `webrtc-srtp` (and libsrtp with `allow_repeat_tx`).
//!
//! # Differences from `webrtc-srtp` (output bytes are identical)
//!
//! - The receive-side rollover state only moves forward (RFC 3711 §3.3.1); webrtc-srtp
//!   also moves it back for late packets. Both estimate the same index for reordering
//!   below 2^15 packets.
//! - Replay detection runs on the full 48-bit index, not the 16-bit sequence number.
//! - SRTCP with the E flag clear is authenticated before it is accepted (webrtc-srtp's
//!   AES-CM path returns it unchecked).
//! - Per-SSRC state is created only for packets that authenticated.
//!
//! # What we implement and skip
//!
//! Implemented: RFC 3711 KDF (AES-CM PRF, `kdr = 0`; AES-256-CM PRF of RFC 6188 for
//! AES-256-GCM, RFC 7714 §11), SRTP index estimation (Appendix A), SRTP/SRTCP for the
//! three profiles, the SRTCP E flag (we always send E = 1; we accept E = 0 from peers,
//! authenticated, for every profile, RFC 7714 §9.2 for GCM), replay protection for SRTP
//! and SRTCP.
//! Skipped: MKI, key derivation rates other than 0, AES_256_CM_HMAC_SHA1 (RFC 6188) and
//! the 32-bit-tag profiles,
//! NULL ciphers, re-keying mid-session (build a new context), ROC synchronisation
//! (RFC 4771). The SRTP index cannot wrap: past 2^48 packets per SSRC (2^31 for SRTCP)
//! calls fail with [`SrtpError::IndexExhausted`].

mod cipher;
mod context;
mod error;
mod keys;
mod profile;
mod replay;
mod table;
#[cfg(test)]
mod vectors;

pub use context::{DEFAULT_MAX_SSRCS, SrtpContext};
pub use error::{Blame, SrtpError};
pub use keys::{DTLS_SRTP_EXPORTER_LABEL, DtlsRole, MasterKey, split_keying_material};
pub use profile::SrtpProfile;
pub use replay::REPLAY_WINDOW;

/// Helpers for tests and benches. Not API: may change without notice.
#[doc(hidden)]
pub mod test_support {
    /// The length of an RTP header (fixed part, CSRCs, header extension) of `packet`, or
    /// `None` if it is not RTP version 2 or does not fit. The real parser lives in
    /// `wire`; this one exists so SRTP tests do not depend on it.
    pub fn rtp_header_len(packet: &[u8]) -> Option<usize> {
        let first = *packet.first()?;
        if first >> 6 != 2 || packet.len() < 12 {
            return None;
        }
        let mut len = 12 + 4 * usize::from(first & 0x0f);
        if first & 0x10 != 0 {
            let ext = packet.get(len..len + 4)?;
            len += 4 + 4 * usize::from(u16::from_be_bytes([ext[2], ext[3]]));
        }
        (len <= packet.len()).then_some(len)
    }
}
