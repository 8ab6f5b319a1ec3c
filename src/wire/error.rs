//! Errors of the wire codecs: one small `Copy` enum, sorted by who is at fault, each variant
//! carrying a `&'static str` naming the rule or field that failed. Nothing here allocates.

use core::fmt;

/// Why a parse or a write failed.
///
/// The first three variants blame the peer (garbage, a protocol violation, a failed check);
/// the last two blame the caller (a buffer too small, an argument out of range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// Peer sent garbage: the input ended before the named field.
    Truncated(&'static str),
    /// Peer sent garbage: the named field has a value the format forbids.
    Malformed(&'static str),
    /// Peer broke the protocol or uses a variant we do not implement (version, legacy STUN).
    Unsupported(&'static str),
    /// Peer failed an authentication or checksum (MESSAGE-INTEGRITY, FINGERPRINT).
    CheckFailed(&'static str),
    /// Caller misuse: the output buffer lent to a writer is too small.
    BufferTooSmall(&'static str),
    /// Caller misuse: an argument is out of range for the field, or the call is out of order.
    InvalidArgument(&'static str),
}

impl WireError {
    /// A stable, low-cardinality label for drop-reason counters (`wire_truncated`, ...).
    pub fn kind_label(&self) -> &'static str {
        match self {
            WireError::Truncated(_) => "wire_truncated",
            WireError::Malformed(_) => "wire_malformed",
            WireError::Unsupported(_) => "wire_unsupported",
            WireError::CheckFailed(_) => "wire_check_failed",
            WireError::BufferTooSmall(_) => "wire_buffer_too_small",
            WireError::InvalidArgument(_) => "wire_invalid_argument",
        }
    }

    /// The rule or field that failed.
    pub fn context(&self) -> &'static str {
        match *self {
            WireError::Truncated(c)
            | WireError::Malformed(c)
            | WireError::Unsupported(c)
            | WireError::CheckFailed(c)
            | WireError::BufferTooSmall(c)
            | WireError::InvalidArgument(c) => c,
        }
    }

    /// True when the peer is at fault (drop and count), false when the caller is.
    pub fn is_peer_fault(&self) -> bool {
        !matches!(self, WireError::BufferTooSmall(_) | WireError::InvalidArgument(_))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            WireError::Truncated(_) => "truncated",
            WireError::Malformed(_) => "malformed",
            WireError::Unsupported(_) => "unsupported",
            WireError::CheckFailed(_) => "check failed",
            WireError::BufferTooSmall(_) => "output buffer too small",
            WireError::InvalidArgument(_) => "invalid argument",
        };
        write!(f, "{what}: {}", self.context())
    }
}

impl std::error::Error for WireError {}

/// Result alias of the wire codecs.
pub type WireResult<T> = Result<T, WireError>;
