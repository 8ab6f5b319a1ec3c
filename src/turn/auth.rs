//! TURN long-term credentials (RFC 8489 §9.2) with a REALM and a stateless NONCE, from two
//! sources: static users (`[turn] users = ["name:password"]`) and the TURN REST API scheme that
//! coturn calls `use-auth-secret` (username `<expiry unix seconds>[:<user id>]`, password
//! `base64(HMAC-SHA1(secret, username))`). Keys of static users are computed once; REST keys
//! once per allocation (the allocation keeps its key).
//!
//! The nonce is stateless: the issue time in seconds modulo 2^16 and 4 bytes of HMAC-SHA256
//! over that time and the client address, base64url: 8 characters, so the 401 challenge (with
//! the default 7-character realm) fits in 52 bytes, the size of the smallest Allocate coturn's
//! clients send, and an unauthenticated answer never exceeds its request. A nonce older than
//! [`NONCE_LIFETIME`] gets 438 Stale Nonce. (The nonce only proves freshness and the client
//! address; a forged or replayed one still needs the password for MESSAGE-INTEGRITY.)

use std::collections::HashMap;
use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

use crate::wire::stun_integrity::IntegrityKey;

/// Seconds a nonce stays fresh.
pub const NONCE_LIFETIME: u64 = 600;

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// No USERNAME/REALM/NONCE/MESSAGE-INTEGRITY: answer 401 with realm and nonce.
    Missing,
    /// The nonce is old or not ours: answer 438 with a fresh one.
    StaleNonce,
    /// Unknown user, expired REST credential, or wrong MESSAGE-INTEGRITY: 401.
    Unauthorized,
}

/// The credential store of one TURN server.
pub struct Credentials {
    realm: String,
    static_users: HashMap<String, IntegrityKey>,
    rest_secret: Option<Vec<u8>>,
    nonce_key: [u8; 32],
}

impl Credentials {
    /// `users` as `name:password`; `rest_secret` None disables the REST scheme.
    pub fn new(
        realm: &str,
        users: &[String],
        rest_secret: Option<&str>,
        nonce_key: [u8; 32],
    ) -> Credentials {
        let static_users = users
            .iter()
            .filter_map(|u| u.split_once(':'))
            .map(|(n, p)| {
                (
                    n.to_string(),
                    IntegrityKey::long_term(n.as_bytes(), realm.as_bytes(), p.as_bytes()),
                )
            })
            .collect();
        Credentials {
            realm: realm.to_string(),
            static_users,
            rest_secret: rest_secret.filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec()),
            nonce_key,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// A fresh nonce for `client` at `unix` seconds.
    pub fn nonce(&self, unix: u64, client: SocketAddr) -> String {
        let ts = (unix as u16).to_be_bytes();
        let mut raw = [0u8; 6];
        raw[..2].copy_from_slice(&ts);
        raw[2..].copy_from_slice(&self.nonce_mac(&ts, client));
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn nonce_mac(&self, ts: &[u8; 2], client: SocketAddr) -> [u8; 4] {
        // Invariant: HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.nonce_key).expect("hmac key");
        mac.update(ts);
        match client {
            SocketAddr::V4(a) => mac.update(&a.ip().octets()),
            SocketAddr::V6(a) => mac.update(&a.ip().octets()),
        }
        mac.update(&client.port().to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 4];
        out.copy_from_slice(&full[..4]);
        out
    }

    /// Checks that `nonce` is ours, for `client`, and fresh at `unix`.
    pub fn check_nonce(&self, nonce: &str, unix: u64, client: SocketAddr) -> Result<(), AuthError> {
        let mut raw = [0u8; 6];
        match URL_SAFE_NO_PAD.decode_slice(nonce.as_bytes(), &mut raw) {
            Ok(6) => {}
            _ => return Err(AuthError::StaleNonce),
        }
        let ts: [u8; 2] = [raw[0], raw[1]];
        let expected = self.nonce_mac(&ts, client);
        // Constant-time enough for a MAC compare of fixed length: fold the differences.
        let diff = expected.iter().zip(&raw[2..]).fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(AuthError::StaleNonce);
        }
        // Seconds modulo 2^16: the age is the wrapping difference (a nonce "from the future"
        // wraps to a large age and is stale).
        let age = (unix as u16).wrapping_sub(u16::from_be_bytes(ts)) as u64;
        if age > NONCE_LIFETIME {
            return Err(AuthError::StaleNonce);
        }
        Ok(())
    }

    /// The long-term key of `username` at `unix` seconds, if the user exists and (REST) has not
    /// expired.
    pub fn key_for(&self, username: &str, unix: u64) -> Option<IntegrityKey> {
        if let Some(k) = self.static_users.get(username) {
            return Some(k.clone());
        }
        let secret = self.rest_secret.as_ref()?;
        let expiry: u64 = username.split(':').next()?.parse().ok()?;
        if expiry < unix {
            return None;
        }
        let password = rest_password(secret, username);
        Some(IntegrityKey::long_term(
            username.as_bytes(),
            self.realm.as_bytes(),
            password.as_bytes(),
        ))
    }
}

/// The TURN REST API password of `username` under `secret`: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // Invariant: HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("hmac key");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Credentials handed to a browser in `joinRoom` (`turnUsername`, `turnCredential`): valid
/// until `unix + ttl`.
pub fn rest_credentials(secret: &str, user_id: &str, unix: u64, ttl: u64) -> (String, String) {
    let username = format!("{}:{user_id}", unix + ttl);
    let password = rest_password(secret.as_bytes(), &username);
    (username, password)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether two keys are the same: a message signed with one verifies with the other.
    fn same(a: &IntegrityKey, b: &IntegrityKey) -> bool {
        use crate::wire::stun::{Class, Method, StunView, StunWriter};
        let mut buf = [0u8; 64];
        let mut w = StunWriter::new(&mut buf, Class::Request, Method::BINDING, &[1; 12]).unwrap();
        w.message_integrity(a).unwrap();
        let n = w.finish();
        StunView::parse(&buf[..n]).unwrap().verify_integrity(b).is_ok()
    }

    fn creds() -> Credentials {
        Credentials::new("ringsfu", &["alice:wonderland".into()], Some("s3cret"), [7; 32])
    }

    fn client() -> SocketAddr {
        "192.0.2.1:5000".parse().unwrap()
    }

    #[test]
    fn nonce_is_short_bound_to_the_client_and_expires() {
        let c = creds();
        let n = c.nonce(1_000_000, client());
        assert_eq!(n.len(), 8);
        assert_eq!(c.check_nonce(&n, 1_000_000 + NONCE_LIFETIME, client()), Ok(()));
        assert_eq!(
            c.check_nonce(&n, 1_000_001 + NONCE_LIFETIME, client()),
            Err(AuthError::StaleNonce)
        );
        assert_eq!(c.check_nonce(&n, 999_999, client()), Err(AuthError::StaleNonce));
        let other: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        assert_eq!(c.check_nonce(&n, 1_000_000, other), Err(AuthError::StaleNonce));
        assert_eq!(c.check_nonce("garbage", 1_000_000, client()), Err(AuthError::StaleNonce));
        assert_eq!(c.check_nonce("", 1_000_000, client()), Err(AuthError::StaleNonce));
    }

    #[test]
    fn static_and_rest_users() {
        let c = creds();
        let k = c.key_for("alice", 0).unwrap();
        assert!(same(&k, &IntegrityKey::long_term(b"alice", b"ringsfu", b"wonderland")));
        assert!(!same(&k, &IntegrityKey::long_term(b"alice", b"ringsfu", b"wonderlanD")));
        assert!(c.key_for("bob", 0).is_none());
        let (user, pass) = rest_credentials("s3cret", "con_X", 1000, 60);
        assert_eq!(user, "1060:con_X");
        let k = c.key_for(&user, 1060).unwrap();
        assert!(same(&k, &IntegrityKey::long_term(user.as_bytes(), b"ringsfu", pass.as_bytes())));
        assert!(c.key_for(&user, 1061).is_none(), "expired");
        assert!(c.key_for("notanumber:x", 0).is_none());
        let no_rest = Credentials::new("r", &[], None, [0; 32]);
        assert!(no_rest.key_for(&user, 0).is_none());
    }

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // base64(HMAC-SHA1("s3cret", "1060:con_X")), computed independently with openssl:
        // printf '1060:con_X' | openssl dgst -sha1 -hmac s3cret -binary | base64
        let expected = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf '1060:con_X' | openssl dgst -sha1 -hmac s3cret -binary | base64")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        if let Some(expected) = expected {
            assert_eq!(rest_password(b"s3cret", "1060:con_X"), expected);
        }
    }
}
