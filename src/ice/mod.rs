//! ICE-lite agent (RFC 8445 §2.5 lite implementation) and consent freshness (RFC 7675), sans-IO.
//!
//! ringsfu never sends connectivity checks: browsers (full agents, always controlling against a
//! lite agent) send Binding requests to the host candidates ringsfu advertised, and the agent:
//!
//! 1. checks the request: Binding/Request, `USERNAME` = `<local ufrag>:<remote ufrag>`,
//!    `MESSAGE-INTEGRITY` with the local password (only an [`Authenticated`] message gets past
//!    this step), `FINGERPRINT` when present, `PRIORITY` present, the peer not claiming the
//!    controlled role (487 Role Conflict otherwise);
//! 2. records the candidate pair (remote address, local address) it arrived on, in a small
//!    bounded table;
//! 3. nominates the pair when the request carries `USE-CANDIDATE` (the selected pair follows the
//!    latest nomination, as RFC 8445 §8.1.1 lets a controlling agent re-nominate);
//! 4. writes the success response (`XOR-MAPPED-ADDRESS`, `MESSAGE-INTEGRITY`, `FINGERPRINT`)
//!    into the caller's buffer, or an error response (400/401/487) without integrity.
//!
//! Every authenticated request on the selected pair refreshes consent; when none arrived for
//! [`CONSENT_TIMEOUT`] the agent reports [`IceEvent::ConsentExpired`] and the caller frees the
//! leg. Drive it like every core here: `handle_*` with `now`, then drain `poll_event`, and arm a
//! timer for `poll_timeout`.
//!
//! ICE restart (a renegotiation with new credentials): [`IceLiteAgent::restart`] swaps both
//! credential sets and forgets the pairs; media keeps flowing on the old selected pair until a
//! new one is nominated.
//!
//! Not implemented: full-agent checks, TCP candidates, peer-reflexive priority bookkeeping beyond
//! recording the pair (a lite agent needs none of them).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::stun::{Authenticated, Class, Method, StunView, StunWriter, TransactionId};
use crate::wire::stun_integrity::IntegrityKey;

#[cfg(test)]
mod tests;

/// RFC 7675 §5.1: consent expires 30 s after the last successful check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Candidate pairs remembered per agent (a browser checks one pair per remote candidate it
/// gathered, times our candidates); the least recently checked unselected pair is replaced.
pub const MAX_PAIRS: usize = 16;

/// Why a STUN message was not accepted; maps to a drop-reason counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IceError {
    #[error("not a Binding request")]
    NotBindingRequest,
    #[error("USERNAME missing or not ours")]
    BadUsername,
    #[error("MESSAGE-INTEGRITY missing or wrong")]
    BadIntegrity,
    #[error("FINGERPRINT wrong")]
    BadFingerprint,
    #[error("PRIORITY missing")]
    NoPriority,
    #[error("peer claims the controlled role too")]
    RoleConflict,
    #[error("malformed attribute")]
    Malformed,
    #[error("response buffer too small")]
    BufferTooSmall,
}

impl IceError {
    /// Label for the drop counter.
    pub fn reason(self) -> &'static str {
        match self {
            IceError::NotBindingRequest => "stun_not_binding_request",
            IceError::BadUsername => "stun_bad_username",
            IceError::BadIntegrity => "stun_bad_integrity",
            IceError::BadFingerprint => "stun_bad_fingerprint",
            IceError::NoPriority => "stun_no_priority",
            IceError::RoleConflict => "stun_role_conflict",
            IceError::Malformed => "stun_malformed",
            IceError::BufferTooSmall => "stun_buffer_too_small",
        }
    }
}

/// What the caller sends back to the request's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A success response of this length is in the buffer.
    Success(usize),
    /// An error response of this length is in the buffer; the error says why.
    Error(usize, IceError),
    /// Nothing to send (the message is dropped; the error says why).
    Drop(IceError),
}

/// Something the caller acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// The controlling agent nominated this pair: send media there.
    Selected { remote: SocketAddr, local: SocketAddr },
    /// No consent refresh for [`CONSENT_TIMEOUT`]: stop sending and free the leg.
    ConsentExpired,
}

/// Connection state of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceState {
    /// No pair nominated yet.
    New,
    /// A pair is selected and consent is fresh.
    Connected,
    /// Consent expired; terminal until [`IceLiteAgent::restart`].
    Expired,
}

#[derive(Debug, Clone, Copy)]
struct Pair {
    remote: SocketAddr,
    local: SocketAddr,
    last_check: Instant,
}

/// An ICE-lite agent for one bundled transport (one browser RTCPeerConnection).
pub struct IceLiteAgent {
    local_ufrag: String,
    local_key: IntegrityKey,
    remote_ufrag: String,
    /// `<local ufrag>:<remote ufrag>`, what requests must carry.
    expected_username: String,
    pairs: Vec<Pair>,
    selected: Option<usize>,
    consent_at: Option<Instant>,
    state: IceState,
    events: VecDeque<IceEvent>,
}

impl IceLiteAgent {
    /// A new agent with our credentials and the remote's (from its SDP).
    pub fn new(local_ufrag: &str, local_pwd: &str, remote_ufrag: &str) -> IceLiteAgent {
        IceLiteAgent {
            local_ufrag: local_ufrag.to_string(),
            local_key: IntegrityKey::short_term(local_pwd.as_bytes()),
            remote_ufrag: remote_ufrag.to_string(),
            expected_username: format!("{local_ufrag}:{remote_ufrag}"),
            pairs: Vec::with_capacity(MAX_PAIRS),
            selected: None,
            consent_at: None,
            state: IceState::New,
            events: VecDeque::with_capacity(4),
        }
    }

    /// ICE restart: new credentials on both sides; pairs are forgotten but the selected pair
    /// keeps carrying media until a new nomination.
    pub fn restart(&mut self, local_ufrag: &str, local_pwd: &str, remote_ufrag: &str) {
        let selected = self.selected.map(|i| self.pairs[i]);
        *self = IceLiteAgent::new(local_ufrag, local_pwd, remote_ufrag);
        if let Some(p) = selected {
            self.pairs.push(p);
            self.selected = Some(0);
            self.consent_at = Some(p.last_check);
            self.state = IceState::Connected;
        }
    }

    pub fn local_ufrag(&self) -> &str {
        &self.local_ufrag
    }

    pub fn remote_ufrag(&self) -> &str {
        &self.remote_ufrag
    }

    pub fn state(&self) -> IceState {
        self.state
    }

    /// The nominated pair (remote, local), if any.
    pub fn selected(&self) -> Option<(SocketAddr, SocketAddr)> {
        self.selected.map(|i| (self.pairs[i].remote, self.pairs[i].local))
    }

    /// Whether `remote` passed a connectivity check (DTLS and media are accepted from such
    /// addresses, also before nomination).
    pub fn is_valid_remote(&self, remote: SocketAddr) -> bool {
        self.state != IceState::Expired && self.pairs.iter().any(|p| p.remote == remote)
    }

    /// The local ufrag of a Binding request's USERNAME (`<ours>:<theirs>`), for routing a request
    /// from an unknown 5-tuple to its agent.
    pub fn local_ufrag_of(username: &str) -> Option<&str> {
        username.split_once(':').map(|(l, _)| l)
    }

    /// Handles a STUN message received from `remote` on `local`; writes the reply into `out`.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        msg: &StunView<'_>,
        out: &mut [u8],
    ) -> Reply {
        if msg.class() != Class::Request || msg.method() != Method::BINDING {
            return Reply::Drop(IceError::NotBindingRequest);
        }
        let txid = *msg.transaction_id();
        if msg.has_fingerprint() && msg.verify_fingerprint().is_err() {
            return Reply::Drop(IceError::BadFingerprint);
        }
        match msg.username() {
            Ok(Some(u)) if u == self.expected_username => {}
            Ok(_) => return self.error(out, &txid, 401, "Unauthorized", IceError::BadUsername),
            Err(_) => return self.error(out, &txid, 400, "Bad Request", IceError::Malformed),
        }
        let auth = match msg.verify_integrity(&self.local_key) {
            Ok(a) => a,
            Err(_) => return self.error(out, &txid, 401, "Unauthorized", IceError::BadIntegrity),
        };
        self.handle_authenticated(now, remote, local, auth, out)
    }

    fn handle_authenticated(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        local: SocketAddr,
        msg: Authenticated<'_>,
        out: &mut [u8],
    ) -> Reply {
        let txid = *msg.transaction_id();
        match msg.priority() {
            Ok(Some(_)) => {}
            Ok(None) => return self.error(out, &txid, 400, "Bad Request", IceError::NoPriority),
            Err(_) => return self.error(out, &txid, 400, "Bad Request", IceError::Malformed),
        }
        if matches!(msg.ice_controlled(), Ok(Some(_))) {
            // A lite agent is always controlled (RFC 8445 §6.1.1); the peer must switch.
            return self.error(out, &txid, 487, "Role Conflict", IceError::RoleConflict);
        }
        let nominate = match msg.use_candidate() {
            Ok(n) => n,
            Err(_) => return self.error(out, &txid, 400, "Bad Request", IceError::Malformed),
        };
        let index = self.record_pair(now, remote, local);
        if nominate && self.selected != Some(index) && self.state != IceState::Expired {
            self.selected = Some(index);
            self.state = IceState::Connected;
            self.events.push_back(IceEvent::Selected { remote, local });
        }
        if self.selected == Some(index) {
            self.consent_at = Some(now);
        }
        match self.write_success(out, &txid, remote) {
            Some(n) => Reply::Success(n),
            None => Reply::Drop(IceError::BufferTooSmall),
        }
    }

    fn record_pair(&mut self, now: Instant, remote: SocketAddr, local: SocketAddr) -> usize {
        if let Some(i) = self.pairs.iter().position(|p| p.remote == remote && p.local == local) {
            self.pairs[i].last_check = now;
            return i;
        }
        let pair = Pair { remote, local, last_check: now };
        if self.pairs.len() < MAX_PAIRS {
            self.pairs.push(pair);
            return self.pairs.len() - 1;
        }
        // Replace the least recently checked pair that is not the selected one.
        let victim = (0..self.pairs.len())
            .filter(|&i| Some(i) != self.selected)
            .min_by_key(|&i| self.pairs[i].last_check)
            .unwrap_or(0); // MAX_PAIRS > 1, so an unselected pair always exists.
        self.pairs[victim] = pair;
        victim
    }

    fn write_success(
        &self,
        out: &mut [u8],
        txid: &TransactionId,
        remote: SocketAddr,
    ) -> Option<usize> {
        let mut w = StunWriter::new(out, Class::SuccessResponse, Method::BINDING, txid).ok()?;
        w.xor_mapped_address(remote).ok()?;
        w.message_integrity(&self.local_key).ok()?;
        w.fingerprint().ok()?;
        Some(w.finish())
    }

    fn error(
        &self,
        out: &mut [u8],
        txid: &TransactionId,
        code: u16,
        reason: &str,
        e: IceError,
    ) -> Reply {
        let written = (|| {
            let mut w = StunWriter::new(out, Class::ErrorResponse, Method::BINDING, txid).ok()?;
            w.error_code(code, reason).ok()?;
            w.fingerprint().ok()?;
            Some(w.finish())
        })();
        match written {
            Some(n) => Reply::Error(n, e),
            None => Reply::Drop(e),
        }
    }

    /// Checks consent freshness.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != IceState::Connected {
            return;
        }
        if let Some(at) = self.consent_at
            && now.saturating_duration_since(at) >= CONSENT_TIMEOUT
        {
            self.state = IceState::Expired;
            self.events.push_back(IceEvent::ConsentExpired);
        }
    }

    /// When [`IceLiteAgent::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            IceState::Connected => self.consent_at.map(|t| t + CONSENT_TIMEOUT),
            _ => None,
        }
    }

    pub fn poll_event(&mut self) -> Option<IceEvent> {
        self.events.pop_front()
    }
}
