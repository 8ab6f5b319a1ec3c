//! DTLS 1.2 for DTLS-SRTP (RFC 5764): certificate, fingerprint, role and key export, sans-IO.
//!
//! A thin wrapper around [dimpl](https://docs.rs/dimpl) (sans-IO, sync, aws-lc-rs). One
//! [`DtlsContext`] per shard holds the process certificate and the dimpl configuration; one
//! [`DtlsEndpoint`] per ICE leg (5-tuple) runs the handshake in the server role (the browser
//! is `a=setup:active`), checks the peer certificate against the `a=fingerprint` of the
//! peer's SDP and exports the SRTP master keys.
//!
//! # Run loop (what the shard does)
//!
//! 1. At start-up: [`DtlsCert::generate`] once per process; [`DtlsContext::new`] per shard.
//!    Put [`DtlsCert::sdp_fingerprint`] into every SDP answer with `a=setup:passive`.
//! 2. When ICE selects a 5-tuple: parse the peer's `a=fingerprint` with
//!    [`Fingerprint::parse_sdp`] and create [`DtlsContext::server`]`(now, fingerprint)`.
//!    The constructor primes dimpl with `now`.
//! 3. For every datagram whose first byte is 20..=63 (RFC 7983) from that 5-tuple:
//!    [`DtlsEndpoint::handle_packet`]`(now, bytes)`. When the shard's timer for this endpoint
//!    fires: [`DtlsEndpoint::handle_timeout`]`(now)`.
//! 4. After every `handle_*`, drain in this order:
//!    1. [`DtlsEndpoint::poll_transmit`]`(&mut send_slot)` until `None`, sending each
//!       `Some(len)` to the 5-tuple (the slot should hold [`DtlsContext::mtu`] bytes);
//!    2. [`DtlsEndpoint::poll_event`] until `None`: on [`DtlsEvent::Connected`] build the
//!       SRTP contexts from its [`SrtpKeyMaterial`] with
//!       [`SrtpContext::from_dtls_keys`](crate::srtp::SrtpContext::from_dtls_keys)`(&km,
//!       DtlsRole::Server)`, which returns `(outbound, inbound)`; on [`DtlsEvent::Failed`] count
//!       [`DtlsFailure::as_str`] and tear the leg down; on [`DtlsEvent::Closed`] tear down;
//!    3. [`DtlsEndpoint::poll_timeout`]: re-arm the shard's timer slot (`None`: disarm).
//! 5. Sum [`DtlsEndpoint::stats`] into the shard counters when the leg goes away (or on
//!    scrape): garbage datagrams are dropped there by [`DropReason`], not reported as events.
//!
//! # SRTP keys
//!
//! [`SrtpKeyMaterial`] is plain data: the negotiated [`SrtpProfile`] plus
//! `client_key`/`server_key`/`client_salt`/`server_salt` in fixed arrays with slice accessors
//! trimmed to the profile's lengths. The SFU, as DTLS server, unprotects with the client's
//! key and salt and protects with the server's ([`SrtpKeyMaterial::inbound`] /
//! [`SrtpKeyMaterial::outbound`] with [`DtlsRole::Server`]);
//! [`SrtpContext::from_dtls_keys`](crate::srtp::SrtpContext::from_dtls_keys) does exactly
//! that. [`SrtpProfile`] and [`DtlsRole`] are the `srtp` module's types, re-exported here:
//! one profile type and one role type for both modules.
//!
//! # What is implemented, what is not
//!
//! - DTLS 1.2 only (`Dtls::new_12`), ECDHE-ECDSA with AES-GCM or ChaCha20 (dimpl's suites),
//!   Extended Master Secret required, client certificate required (WebRTC always sends one).
//! - SRTP profiles: the server selects the first of [`DtlsConfig::srtp_profiles`] that the
//!   client offers, by default `SRTP_AEAD_AES_128_GCM`, `SRTP_AEAD_AES_256_GCM`,
//!   `SRTP_AES128_CM_HMAC_SHA1_80`, so browsers (which offer all three, AES-256-GCM first) get
//!   AES-128-GCM. dimpl 0.9.0 fixes that order at AES-256-GCM first; the crate builds against
//!   it with one added setting (`vendor/dimpl.patch`, see `Cargo.toml`). `srtp` implements all
//!   three.
//! - No cookie exchange by default ([`DtlsConfig::use_cookie`]): ICE has already verified
//!   the 5-tuple with an authenticated STUN check before DTLS starts.
//! - No fatal alert is sent on local failure (dimpl has no API for it); the peer times out.
//! - Application data (data channels) is counted and discarded.
//! - The endpoint never reads the clock; `now` is always an argument.

mod cert;
mod endpoint;
mod keys;
mod record;

/// The role and profile types are `srtp`'s, shared by both modules.
pub use crate::srtp::{DtlsRole, SrtpProfile};
pub use cert::{CertError, DtlsCert, Fingerprint, FingerprintAlg, FingerprintParseError};
pub use endpoint::{
    Blame, DropReason, DtlsConfig, DtlsConfigError, DtlsContext, DtlsEndpoint, DtlsEvent,
    DtlsFailure, DtlsState, DtlsStats, MAX_HANDSHAKE_INPUT,
};
pub use keys::{MAX_SRTP_KEY_LEN, MAX_SRTP_SALT_LEN, SrtpKeyMaterial};
