//! Reloadable TURN credentials: the static long-term users and the TURN REST API secret, shared
//! between the control plane (which mints the `joinRoom` TURN credentials) and the TURN server
//! in the shards (which checks them), and replaced as a whole on `SIGHUP`.
//!
//! Cost model: a [`TurnSecretsHandle`] is an `Arc`; [`TurnSecretsHandle::generation`] is one
//! relaxed atomic load, meant to be read once per shard loop turn (never per packet);
//! [`TurnSecretsHandle::load`] takes a read lock for the time of an `Arc` clone, and is only
//! needed when the generation changed. A shard keeps its own derived state (e.g. a
//! `turn::auth::Credentials` with precomputed keys) and rebuilds it when the generation moves:
//!
//! ```
//! # use ringsfu::secrets::{TurnSecrets, TurnSecretsHandle};
//! let handle = TurnSecretsHandle::new(TurnSecrets::default());
//! let mut seen = handle.generation();
//! let mut mine = handle.load();
//! // ... once per loop turn:
//! if handle.generation() != seen {
//!     seen = handle.generation();
//!     mine = handle.load(); // rebuild derived keys from `mine` here
//! }
//! # let _ = mine;
//! ```
//!
//! Old REST credentials stay valid after a secret change only if the TURN side keeps the
//! previous secret around; this module publishes the current values, policy is the reader's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;

/// One consistent set of TURN credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnSecrets {
    /// The TURN REST API shared secret (`[turn] static_auth_secret`, or `[server] secret` when
    /// that is empty).
    pub rest_secret: String,
    /// Static long-term users, `(name, password)`.
    pub users: Vec<(String, String)>,
    /// The realm (`[turn] realm`).
    pub realm: String,
}

impl TurnSecrets {
    /// The credentials a configuration asks for (`turn.users` entries are validated by
    /// [`Config::validate`]; malformed ones are skipped here).
    pub fn from_config(cfg: &Config) -> TurnSecrets {
        TurnSecrets {
            rest_secret: cfg.turn_secret().to_string(),
            users: cfg
                .turn
                .users
                .iter()
                .filter_map(|u| u.split_once(':'))
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .collect(),
            realm: cfg.turn.realm.clone(),
        }
    }

    /// The users as `name:password` strings (the form `turn::auth::Credentials::new` takes).
    pub fn user_strings(&self) -> Vec<String> {
        self.users.iter().map(|(n, p)| format!("{n}:{p}")).collect()
    }
}

#[derive(Debug)]
struct Shared {
    generation: AtomicU64,
    current: RwLock<Arc<TurnSecrets>>,
}

/// A cheap, cloneable handle to the current [`TurnSecrets`].
#[derive(Clone, Debug)]
pub struct TurnSecretsHandle(Arc<Shared>);

impl TurnSecretsHandle {
    pub fn new(initial: TurnSecrets) -> TurnSecretsHandle {
        TurnSecretsHandle(Arc::new(Shared {
            generation: AtomicU64::new(0),
            current: RwLock::new(Arc::new(initial)),
        }))
    }

    pub fn from_config(cfg: &Config) -> TurnSecretsHandle {
        TurnSecretsHandle::new(TurnSecrets::from_config(cfg))
    }

    /// The current credentials.
    pub fn load(&self) -> Arc<TurnSecrets> {
        // A writer never panics while holding the lock (it only swaps an Arc); recover anyway.
        self.0.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Bumped at every change; compare with a remembered value to know when to [`Self::load`].
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }

    /// Replaces the credentials; returns false (and keeps the generation) when nothing changed.
    pub fn store(&self, new: TurnSecrets) -> bool {
        let mut cur = self.0.current.write().unwrap_or_else(|p| p.into_inner());
        if **cur == new {
            return false;
        }
        *cur = Arc::new(new);
        self.0.generation.fetch_add(1, Ordering::Release);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_bumps_the_generation_only_on_change() {
        let mut cfg = Config::default();
        cfg.turn.users = vec!["alice:pw".into()];
        let h = TurnSecretsHandle::from_config(&cfg);
        let reader = h.clone();
        assert_eq!(reader.load().rest_secret, "MY_SECRET");
        assert_eq!(reader.load().user_strings(), vec!["alice:pw".to_string()]);
        let g = reader.generation();
        assert!(!h.store(TurnSecrets::from_config(&cfg)));
        assert_eq!(reader.generation(), g);
        cfg.turn.static_auth_secret = "new".into();
        assert!(h.store(TurnSecrets::from_config(&cfg)));
        assert_eq!(reader.generation(), g + 1);
        assert_eq!(reader.load().rest_secret, "new");
    }
}
