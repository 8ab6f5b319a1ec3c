//! `DtlsContext` (shared per shard) and `DtlsEndpoint` (one per ICE leg), wrapping dimpl.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Dtls, Output};

use super::cert::{DtlsCert, Fingerprint};
use super::keys::{SrtpKeyMaterial, profile_from_dimpl};
use super::record::{self, FramingError};
use crate::srtp::{DtlsRole, SrtpProfile};

/// Settings shared by every endpoint of a [`DtlsContext`].
#[derive(Debug, Clone)]
pub struct DtlsConfig {
    /// Largest datagram the engine produces. 1150 (dimpl's default) leaves room for TURN
    /// framing and IPv6 headers under the 1280-byte IPv6 minimum MTU.
    pub mtu: usize,
    /// First retransmission timeout of a flight; doubles per retry (RFC 6347 §4.2.4.1).
    pub flight_start_rto: Duration,
    /// Retransmissions per flight before the handshake fails.
    pub flight_retries: usize,
    /// Deadline for the whole handshake, counted from the first ClientHello.
    pub handshake_timeout: Duration,
    /// Send a HelloVerifyRequest cookie round trip (RFC 6347 §4.2.1). Off by default: the
    /// endpoint only exists for a 5-tuple that ICE already verified with an authenticated
    /// STUN check, so the cookie would cost a round trip and protect nothing.
    pub use_cookie: bool,
    /// SRTP profiles the server may select, most preferred first: the first one the client
    /// offers is selected (default [`SrtpProfile::ALL`]: AES-128-GCM, AES-256-GCM,
    /// AES-CM-SHA1-80). A handshake that still lands on a profile outside this set (a client
    /// role endpoint, where the server chooses) fails with
    /// [`DtlsFailure::SrtpProfileNotAccepted`].
    pub srtp_profiles: Vec<SrtpProfile>,
}

impl Default for DtlsConfig {
    fn default() -> Self {
        DtlsConfig {
            mtu: 1150,
            flight_start_rto: Duration::from_secs(1),
            flight_retries: 4,
            handshake_timeout: Duration::from_secs(30),
            use_cookie: false,
            srtp_profiles: SrtpProfile::ALL.to_vec(),
        }
    }
}

/// The configuration was refused (the caller is at fault).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DtlsConfigError {
    /// `srtp_profiles` is empty.
    #[error("dtls: srtp_profiles must name at least one profile")]
    NoSrtpProfile,
    /// dimpl refused the settings (MTU below 64, zero or absurd timeouts).
    #[error("dtls: invalid setting: {0}")]
    Invalid(&'static str),
}

/// What every endpoint of one shard shares: the certificate and the dimpl configuration.
///
/// Cheap to clone (reference-counted inside).
#[derive(Clone)]
pub struct DtlsContext {
    cert: Arc<DtlsCert>,
    config: Arc<dimpl::Config>,
    accepted: [bool; 3],
    mtu: usize,
}

impl DtlsContext {
    /// Builds the shared configuration.
    pub fn new(cert: DtlsCert, config: &DtlsConfig) -> Result<Self, DtlsConfigError> {
        if config.srtp_profiles.is_empty() {
            return Err(DtlsConfigError::NoSrtpProfile);
        }
        let order: Vec<dimpl::SrtpProfile> =
            config.srtp_profiles.iter().map(|p| super::keys::profile_to_dimpl(*p)).collect();
        let dimpl_config = dimpl::Config::builder()
            .srtp_profiles(&order)
            .mtu(config.mtu)
            .flight_start_rto(config.flight_start_rto)
            .flight_retries(config.flight_retries)
            .handshake_timeout(config.handshake_timeout)
            .use_server_cookie(config.use_cookie)
            .require_client_certificate(true)
            .build()
            .map_err(|e| {
                DtlsConfigError::Invalid(match e {
                    dimpl::Error::ConfigError(dimpl::ConfigError::MtuTooSmall { .. }) => {
                        "mtu below 64"
                    }
                    dimpl::Error::ConfigError(dimpl::ConfigError::InvalidHandshakeTimeout) => {
                        "handshake_timeout zero or above ten years"
                    }
                    dimpl::Error::ConfigError(dimpl::ConfigError::InvalidFlightStartRto) => {
                        "flight_start_rto zero or above ten years"
                    }
                    _ => "rejected by dimpl",
                })
            })?;
        let mut accepted = [false; 3];
        for p in &config.srtp_profiles {
            accepted[profile_index(*p)] = true;
        }
        Ok(DtlsContext {
            cert: Arc::new(cert),
            config: Arc::new(dimpl_config),
            accepted,
            mtu: config.mtu,
        })
    }

    /// The local certificate (its fingerprint goes into SDP).
    pub fn cert(&self) -> &DtlsCert {
        &self.cert
    }

    /// The smallest buffer [`DtlsEndpoint::poll_transmit`] always fits a datagram into.
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    /// A new server-role endpoint; see [`DtlsEndpoint::new`].
    pub fn server(&self, now: Instant, remote_fingerprint: Fingerprint) -> DtlsEndpoint {
        DtlsEndpoint::new(self, DtlsRole::Server, now, remote_fingerprint)
    }
}

impl fmt::Debug for DtlsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsContext")
            .field("cert", &self.cert)
            .field("mtu", &self.mtu)
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

fn profile_index(p: SrtpProfile) -> usize {
    match p {
        SrtpProfile::Aes128CmSha1_80 => 0,
        SrtpProfile::AeadAes128Gcm => 1,
        SrtpProfile::AeadAes256Gcm => 2,
    }
}

/// Who is to blame for a failure; decides log level and which counter family moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Blame {
    /// The peer broke the protocol or failed authentication.
    Peer,
    /// The peer went silent (loss, NAT, closed tab).
    Network,
    /// Our configuration or our crypto library.
    Local,
}

/// Why a handshake (or connection) failed. `Copy`, with a stable label for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtlsFailure {
    /// The peer's certificate does not hash to the `a=fingerprint` of its SDP.
    FingerprintMismatch,
    /// The handshake completed without a peer certificate to check.
    NoPeerCertificate,
    /// The client did not offer `use_srtp`, or no profile in common.
    NoSrtpProfile,
    /// The negotiated profile is outside [`DtlsConfig::srtp_profiles`].
    SrtpProfileNotAccepted(SrtpProfile),
    /// No cipher suite, group or Extended Master Secret in common.
    NoCommonParameters,
    /// The peer certificate could not be parsed or uses an unsupported key.
    BadPeerCertificate,
    /// The peer broke the protocol (unexpected message, bad signature or Finished, ...).
    ProtocolViolation,
    /// The peer sent a fatal alert (TLS alert description code).
    PeerAlert(u8),
    /// The peer sent `close_notify` before the handshake completed.
    PeerClosed,
    /// The peer overran dimpl's receive queue or our handshake input limit.
    PeerFlood,
    /// Flight retransmissions or the handshake deadline ran out.
    HandshakeTimeout,
    /// A local crypto or internal failure (key unusable, invalid state).
    Local,
}

impl DtlsFailure {
    /// Stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DtlsFailure::FingerprintMismatch => "fingerprint_mismatch",
            DtlsFailure::NoPeerCertificate => "no_peer_certificate",
            DtlsFailure::NoSrtpProfile => "no_srtp_profile",
            DtlsFailure::SrtpProfileNotAccepted(_) => "srtp_profile_not_accepted",
            DtlsFailure::NoCommonParameters => "no_common_parameters",
            DtlsFailure::BadPeerCertificate => "bad_peer_certificate",
            DtlsFailure::ProtocolViolation => "protocol_violation",
            DtlsFailure::PeerAlert(_) => "peer_alert",
            DtlsFailure::PeerClosed => "peer_closed",
            DtlsFailure::PeerFlood => "peer_flood",
            DtlsFailure::HandshakeTimeout => "handshake_timeout",
            DtlsFailure::Local => "local",
        }
    }

    /// Who is at fault.
    pub const fn blame(self) -> Blame {
        match self {
            DtlsFailure::HandshakeTimeout => Blame::Network,
            DtlsFailure::SrtpProfileNotAccepted(_) | DtlsFailure::Local => Blame::Local,
            _ => Blame::Peer,
        }
    }

    fn from_dimpl(e: &dimpl::Error) -> Self {
        use dimpl::Error as E;
        use dimpl::SecurityError as S;
        match e {
            E::Timeout(_) => DtlsFailure::HandshakeTimeout,
            E::SecurityError(S::FatalAlert { description }) => DtlsFailure::PeerAlert(*description),
            E::SecurityError(
                S::NoMutuallyAcceptableCipherSuite
                | S::NoCommonCipherSuite
                | S::NoCommonKeyExchangeGroup
                | S::ExtendedMasterSecretNotNegotiated
                | S::UnsupportedClientVersion(_)
                | S::UnsupportedServerVersion(_),
            ) => DtlsFailure::NoCommonParameters,
            E::CertificateError(_) => DtlsFailure::BadPeerCertificate,
            E::ReceiveQueueFull | E::TooManyClientHelloFragments => DtlsFailure::PeerFlood,
            E::ConnectionClosed => DtlsFailure::PeerClosed,
            E::SecurityError(_)
            | E::UnexpectedMessage(_)
            | E::RenegotiationAttempt
            | E::IncompleteServerHello
            | E::PskError(_) => DtlsFailure::ProtocolViolation,
            // Signature and Finished checks fail as crypto errors; the peer signed or
            // encrypted wrongly. Failures of our own key are `Local` below.
            E::CryptoError(
                dimpl::CryptoError::SignatureVerificationFailed { .. }
                | dimpl::CryptoError::CertificateParseFailed
                | dimpl::CryptoError::InvalidPublicKey(_)
                | dimpl::CryptoError::InvalidSubjectPublicKey
                | dimpl::CryptoError::InvalidSignatureFormat
                | dimpl::CryptoError::UnsupportedPublicKeyAlgorithm
                | dimpl::CryptoError::UnsupportedEcCurve
                | dimpl::CryptoError::SignatureAlgorithmNotOfferedByClient
                | dimpl::CryptoError::OperationFailed(
                    dimpl::CryptoOperation::Decrypt
                    | dimpl::CryptoOperation::VerifySignature
                    | dimpl::CryptoOperation::VerifyData
                    | dimpl::CryptoOperation::CompleteKeyExchange,
                ),
            ) => DtlsFailure::ProtocolViolation,
            _ => DtlsFailure::Local,
        }
    }
}

impl fmt::Display for DtlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtlsFailure::SrtpProfileNotAccepted(p) => write!(f, "{} ({p})", self.as_str()),
            DtlsFailure::PeerAlert(d) => write!(f, "{} ({d})", self.as_str()),
            _ => f.write_str(self.as_str()),
        }
    }
}

/// Why a datagram or an output was dropped without an event (counted in [`DtlsStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Not a DTLS datagram (too short, first byte outside 20..=63).
    NotDtls,
    /// A record header with an unknown content type or version.
    BadRecordHeader,
    /// A record runs past the end of the datagram.
    Truncated,
    /// Input after the endpoint failed or closed.
    AfterClose,
    /// Handshake input beyond [`MAX_HANDSHAKE_INPUT`] bytes.
    HandshakeInputLimit,
    /// An outgoing datagram larger than the buffer the shell lent (lent buffer below MTU).
    TransmitBufferTooSmall,
}

impl DropReason {
    /// Number of reasons (the length of [`DtlsStats::dropped`]).
    pub const COUNT: usize = 6;
    /// All reasons, indexed like [`DtlsStats::dropped`].
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::NotDtls,
        DropReason::BadRecordHeader,
        DropReason::Truncated,
        DropReason::AfterClose,
        DropReason::HandshakeInputLimit,
        DropReason::TransmitBufferTooSmall,
    ];

    /// Stable label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::NotDtls => "not_dtls",
            DropReason::BadRecordHeader => "bad_record_header",
            DropReason::Truncated => "truncated",
            DropReason::AfterClose => "after_close",
            DropReason::HandshakeInputLimit => "handshake_input_limit",
            DropReason::TransmitBufferTooSmall => "transmit_buffer_too_small",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Per-endpoint counters; the shard sums them into its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DtlsStats {
    /// Datagrams passed to `handle_packet`.
    pub datagrams_in: u64,
    /// Bytes passed to `handle_packet`.
    pub bytes_in: u64,
    /// Datagrams returned by `poll_transmit`.
    pub datagrams_out: u64,
    /// Bytes returned by `poll_transmit`.
    pub bytes_out: u64,
    /// Application data records received (WebRTC data channels; ignored here).
    pub app_data_records: u64,
    /// Application data bytes received and ignored.
    pub app_data_bytes: u64,
    /// Drops by [`DropReason`] index.
    pub dropped: [u64; DropReason::COUNT],
}

impl DtlsStats {
    /// The drop counter for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }
}

/// What the endpoint reports to the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtlsEvent {
    /// The handshake completed, the peer certificate matched its SDP fingerprint and SRTP
    /// keys were exported. Hand `keying_material` to the SRTP layer.
    Connected {
        /// The negotiated SRTP profile (same as `keying_material.profile`).
        profile: SrtpProfile,
        /// The exported master keys and salts.
        keying_material: SrtpKeyMaterial,
    },
    /// The handshake or connection failed; the endpoint is dead. Count `reason.as_str()`.
    Failed(DtlsFailure),
    /// The peer closed a connected session with `close_notify`.
    Closed,
}

/// Lifecycle of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsState {
    /// Waiting for or inside the handshake.
    Handshaking,
    /// Keys exported; the session carries only alerts and ignored application data.
    Connected,
    /// Closed by either side (terminal).
    Closed,
    /// Failed (terminal).
    Failed(DtlsFailure),
}

/// Bytes a peer may feed into one handshake before further input is dropped. A real
/// handshake is ~2 kB; retransmissions for 30 s stay far below this. It also bounds the
/// scratch buffer the peer certificate is copied into.
pub const MAX_HANDSHAKE_INPUT: usize = 128 * 1024;

/// Deadlines further away than this are dimpl's "idle" sentinel (now + 10 years), reported
/// as no deadline.
const IDLE_HORIZON: Duration = Duration::from_secs(3600);

/// Smallest scratch buffer; grows to the handshake input (the peer certificate must fit).
const SCRATCH_MIN: usize = 2048;

/// Largest output dimpl can ask for (one UDP datagram of application data).
const SCRATCH_MAX: usize = 64 * 1024 + 256;

/// One DTLS endpoint per ICE leg (5-tuple), sans-IO. See the module docs for the run loop.
pub struct DtlsEndpoint {
    /// `None` once terminal (failed or closed): the engine's memory is released.
    dtls: Option<Dtls>,
    role: DtlsRole,
    state: DtlsState,
    remote_fingerprint: Fingerprint,
    accepted: [bool; 3],
    peer_verified: bool,
    engine_connected: bool,
    keys: Option<SrtpKeyMaterial>,
    events: VecDeque<DtlsEvent>,
    /// dimpl writes here: its `PeerCert` output asserts the buffer fits the certificate, so
    /// the shell's buffer cannot be handed to it directly. Datagrams are copied out (only
    /// handshake flights and alerts; SRTP never passes through here).
    scratch: Vec<u8>,
    /// `true` when dimpl has been polled up to its `Timeout` since the last input.
    drained: bool,
    close_requested: bool,
    deadline: Option<Instant>,
    last_now: Instant,
    handshake_input: usize,
    stats: DtlsStats,
}

impl DtlsEndpoint {
    /// A new endpoint for one ICE leg.
    ///
    /// `remote_fingerprint` is the peer's `a=fingerprint` from its SDP; the handshake fails
    /// unless the certificate the peer presents hashes to it. The engine is primed with
    /// `now` (dimpl needs a clock reading before its first packet), so drain
    /// [`poll_transmit`](Self::poll_transmit) right away: a client emits its ClientHello.
    pub fn new(
        ctx: &DtlsContext,
        role: DtlsRole,
        now: Instant,
        remote_fingerprint: Fingerprint,
    ) -> Self {
        let mut dtls = Dtls::new_12(ctx.config.clone(), ctx.cert.inner.clone(), now);
        if role == DtlsRole::Client {
            dtls.set_active(true);
        }
        let mut ep = DtlsEndpoint {
            dtls: Some(dtls),
            role,
            state: DtlsState::Handshaking,
            remote_fingerprint,
            accepted: ctx.accepted,
            peer_verified: false,
            engine_connected: false,
            keys: None,
            events: VecDeque::with_capacity(2),
            scratch: Vec::new(),
            drained: false,
            close_requested: false,
            deadline: None,
            last_now: now,
            handshake_input: 0,
            stats: DtlsStats::default(),
        };
        ep.advance_clock(now);
        ep
    }

    /// Feeds one received datagram (RFC 7983 first byte 20..=63).
    ///
    /// Never panics on hostile input: garbage is dropped and counted in [`Self::stats`];
    /// a protocol failure becomes a [`DtlsEvent::Failed`].
    pub fn handle_packet(&mut self, now: Instant, datagram: &[u8]) {
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += datagram.len() as u64;
        if self.dtls.is_none() {
            self.drop_input(DropReason::AfterClose);
            return;
        }
        if let Err(e) = record::check_datagram(datagram) {
            self.drop_input(match e {
                FramingError::NotDtls => DropReason::NotDtls,
                FramingError::BadRecordHeader => DropReason::BadRecordHeader,
                FramingError::Truncated => DropReason::Truncated,
            });
            return;
        }
        if self.state == DtlsState::Handshaking {
            if self.handshake_input + datagram.len() > MAX_HANDSHAKE_INPUT {
                self.drop_input(DropReason::HandshakeInputLimit);
                return;
            }
            self.handshake_input += datagram.len();
        }
        // dimpl wants its logical clock refreshed before input at a new instant.
        if !self.advance_clock(now) {
            return;
        }
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        self.drained = false;
        if let Err(e) = dtls.handle_packet(datagram) {
            self.fail(DtlsFailure::from_dimpl(&e));
        }
    }

    /// Drives retransmission and handshake deadlines. Call at or after
    /// [`poll_timeout`](Self::poll_timeout); calling early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance_clock(now);
    }

    /// Starts a graceful close: a connected session queues `close_notify` for
    /// [`poll_transmit`](Self::poll_transmit); a handshake in progress is abandoned silently.
    /// No event follows a local close.
    pub fn close(&mut self) {
        let Some(dtls) = self.dtls.as_mut() else {
            return;
        };
        self.close_requested = true;
        self.drained = false;
        let connected = self.state == DtlsState::Connected;
        self.state = DtlsState::Closed;
        if dtls.close().is_err() || !connected {
            self.release();
        }
    }

    /// Writes the next datagram to send into `buf` and returns its length, or `None` when
    /// nothing is left. `buf` should be at least [`DtlsContext::mtu`] bytes; a datagram that
    /// does not fit is dropped and counted (the flight's retransmission recovers).
    ///
    /// Draining this also surfaces events and the next deadline: call it until `None` after
    /// every `handle_*`, then [`poll_event`](Self::poll_event) and
    /// [`poll_timeout`](Self::poll_timeout).
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        loop {
            if self.drained {
                return None;
            }
            let need = if self.state == DtlsState::Handshaking {
                SCRATCH_MIN.max(self.handshake_input)
            } else {
                SCRATCH_MIN
            };
            if self.scratch.len() < need {
                self.scratch.resize(need, 0);
            }
            let dtls = self.dtls.as_mut()?;
            let step = match dtls.poll_output(&mut self.scratch) {
                Output::Packet(p) => match buf.get_mut(..p.len()) {
                    Some(out) => {
                        out.copy_from_slice(p);
                        Step::Transmit(p.len())
                    }
                    None => Step::TooBig,
                },
                Output::BufferTooSmall { needed } => Step::Grow(needed),
                Output::Timeout(t) => Step::Drained(t),
                Output::PeerCert(der) => Step::PeerCert(self.remote_fingerprint.matches_der(der)),
                Output::Connected => Step::Connected,
                Output::KeyingMaterial(km, profile) => Step::Keys(
                    profile_from_dimpl(profile)
                        .and_then(|p| SrtpKeyMaterial::from_exported(p, &km).map(|k| (p, k))),
                ),
                Output::ApplicationData(d) => Step::AppData(d.len()),
                Output::CloseNotify => Step::PeerClose,
                // `Output` is non_exhaustive; an unknown output carries nothing we use.
                _ => Step::Nothing,
            };
            match step {
                Step::Transmit(n) => {
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += n as u64;
                    return Some(n);
                }
                Step::TooBig => self.count_drop(DropReason::TransmitBufferTooSmall),
                Step::Grow(needed) => {
                    if needed > SCRATCH_MAX || needed <= self.scratch.len() {
                        self.fail(DtlsFailure::Local);
                        return None;
                    }
                    self.scratch.resize(needed, 0);
                }
                Step::Drained(t) => {
                    self.on_drained(t);
                    return None;
                }
                Step::PeerCert(true) => self.peer_verified = true,
                Step::PeerCert(false) => {
                    self.fail(DtlsFailure::FingerprintMismatch);
                    return None;
                }
                Step::Connected => {
                    if !self.peer_verified {
                        self.fail(DtlsFailure::NoPeerCertificate);
                        return None;
                    }
                    self.engine_connected = true;
                }
                Step::Keys(None) => {
                    self.fail(DtlsFailure::Local);
                    return None;
                }
                Step::Keys(Some((profile, keys))) => {
                    if !self.accepted[profile_index(profile)] {
                        self.fail(DtlsFailure::SrtpProfileNotAccepted(profile));
                        return None;
                    }
                    self.keys = Some(keys);
                    self.try_connect();
                }
                Step::AppData(n) => {
                    self.stats.app_data_records += 1;
                    self.stats.app_data_bytes += n as u64;
                }
                Step::PeerClose => match self.state {
                    DtlsState::Handshaking => {
                        self.fail(DtlsFailure::PeerClosed);
                        return None;
                    }
                    DtlsState::Connected => {
                        self.state = DtlsState::Closed;
                        self.events.push_back(DtlsEvent::Closed);
                    }
                    DtlsState::Closed | DtlsState::Failed(_) => {}
                },
                Step::Nothing => {}
            }
        }
    }

    /// The next event, after [`poll_transmit`](Self::poll_transmit) returned `None`.
    pub fn poll_event(&mut self) -> Option<DtlsEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due next (retransmission or
    /// handshake deadline), after [`poll_transmit`](Self::poll_transmit) returned `None`.
    /// `None`: no timer (connected and idle, or terminal).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The role this endpoint plays.
    pub fn role(&self) -> DtlsRole {
        self.role
    }

    /// The lifecycle state.
    pub fn state(&self) -> DtlsState {
        self.state
    }

    /// Whether keys have been exported and the session is up.
    /// The `a=fingerprint` the peer's certificate must match (from its SDP).
    pub fn remote_fingerprint(&self) -> &Fingerprint {
        &self.remote_fingerprint
    }

    pub fn is_connected(&self) -> bool {
        self.state == DtlsState::Connected
    }

    /// The exported SRTP keys, once connected (also delivered in [`DtlsEvent::Connected`]).
    pub fn keying_material(&self) -> Option<&SrtpKeyMaterial> {
        self.keys.as_ref()
    }

    /// Counters.
    pub fn stats(&self) -> &DtlsStats {
        &self.stats
    }

    /// Refreshes dimpl's clock; returns `false` if that failed the endpoint.
    fn advance_clock(&mut self, now: Instant) -> bool {
        // A core never sees time go backwards, whatever the shell's clock does.
        let now = now.max(self.last_now);
        self.last_now = now;
        let Some(dtls) = self.dtls.as_mut() else {
            return false;
        };
        self.drained = false;
        match dtls.handle_timeout(now) {
            Ok(()) => true,
            Err(e) => {
                self.fail(DtlsFailure::from_dimpl(&e));
                false
            }
        }
    }

    fn on_drained(&mut self, t: Instant) {
        self.drained = true;
        self.deadline = (t < self.last_now + IDLE_HORIZON).then_some(t);
        if self.engine_connected && self.state == DtlsState::Handshaking && self.keys.is_none() {
            // The handshake finished without a use_srtp agreement.
            self.fail(DtlsFailure::NoSrtpProfile);
            return;
        }
        if self.close_requested || self.state == DtlsState::Closed {
            // close_notify (ours or theirs) is out: nothing more will happen.
            self.release();
            return;
        }
        if self.state == DtlsState::Connected && self.scratch.len() > SCRATCH_MIN {
            // The handshake-sized scratch is no longer needed.
            self.scratch = Vec::new();
        }
    }

    fn try_connect(&mut self) {
        if self.state != DtlsState::Handshaking || !self.peer_verified {
            return;
        }
        let Some(keys) = self.keys.clone() else {
            return;
        };
        self.state = DtlsState::Connected;
        self.events
            .push_back(DtlsEvent::Connected { profile: keys.profile, keying_material: keys });
    }

    fn fail(&mut self, reason: DtlsFailure) {
        if matches!(self.state, DtlsState::Failed(_)) {
            return;
        }
        self.state = DtlsState::Failed(reason);
        self.keys = None;
        self.events.push_back(DtlsEvent::Failed(reason));
        self.release();
    }

    /// Drops the engine and buffers; the endpoint is terminal.
    fn release(&mut self) {
        if self.state == DtlsState::Handshaking || self.state == DtlsState::Connected {
            self.state = DtlsState::Closed;
        }
        self.dtls = None;
        self.deadline = None;
        self.drained = true;
        self.scratch = Vec::new();
    }

    fn drop_input(&mut self, reason: DropReason) {
        self.count_drop(reason);
    }

    fn count_drop(&mut self, reason: DropReason) {
        self.stats.dropped[reason.index()] += 1;
    }
}

/// One `poll_output` result, detached from the scratch-buffer borrow.
enum Step {
    Transmit(usize),
    TooBig,
    Grow(usize),
    Drained(Instant),
    PeerCert(bool),
    Connected,
    Keys(Option<(SrtpProfile, SrtpKeyMaterial)>),
    AppData(usize),
    PeerClose,
    Nothing,
}

impl fmt::Debug for DtlsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DtlsEndpoint")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("deadline", &self.deadline)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_indexed() {
        let mut seen = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(seen.insert(r.as_str()));
        }
        let failures = [
            DtlsFailure::FingerprintMismatch,
            DtlsFailure::NoPeerCertificate,
            DtlsFailure::NoSrtpProfile,
            DtlsFailure::SrtpProfileNotAccepted(SrtpProfile::AeadAes256Gcm),
            DtlsFailure::NoCommonParameters,
            DtlsFailure::BadPeerCertificate,
            DtlsFailure::ProtocolViolation,
            DtlsFailure::PeerAlert(40),
            DtlsFailure::PeerClosed,
            DtlsFailure::PeerFlood,
            DtlsFailure::HandshakeTimeout,
            DtlsFailure::Local,
        ];
        let mut seen = std::collections::HashSet::new();
        for f in failures {
            assert!(seen.insert(f.as_str()));
        }
        assert_eq!(DtlsFailure::PeerAlert(40).to_string(), "peer_alert (40)");
    }

    #[test]
    fn dimpl_errors_map_by_blame() {
        use dimpl::Error as E;
        assert_eq!(
            DtlsFailure::from_dimpl(&E::Timeout(dimpl::TimeoutError::Handshake)),
            DtlsFailure::HandshakeTimeout
        );
        assert_eq!(
            DtlsFailure::from_dimpl(&E::SecurityError(dimpl::SecurityError::FatalAlert {
                description: 42
            })),
            DtlsFailure::PeerAlert(42)
        );
        assert_eq!(
            DtlsFailure::from_dimpl(&E::SecurityError(
                dimpl::SecurityError::NoMutuallyAcceptableCipherSuite
            )),
            DtlsFailure::NoCommonParameters
        );
        assert_eq!(DtlsFailure::from_dimpl(&E::ReceiveQueueFull), DtlsFailure::PeerFlood);
        assert_eq!(
            DtlsFailure::from_dimpl(&E::CryptoError(dimpl::CryptoError::NoPrivateKeyConfigured))
                .blame(),
            Blame::Local
        );
        assert_eq!(DtlsFailure::HandshakeTimeout.blame(), Blame::Network);
        assert_eq!(DtlsFailure::FingerprintMismatch.blame(), Blame::Peer);
    }

    #[test]
    fn config_errors() {
        let cert = DtlsCert::generate().expect("cert");
        let bad_mtu = DtlsConfig { mtu: 10, ..DtlsConfig::default() };
        assert_eq!(
            DtlsContext::new(cert.clone(), &bad_mtu).err(),
            Some(DtlsConfigError::Invalid("mtu below 64"))
        );
        let ctx = DtlsContext::new(cert, &DtlsConfig::default()).expect("ctx");
        assert_eq!(ctx.mtu(), 1150);
    }
}
