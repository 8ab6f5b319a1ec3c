//! TURN server core (RFC 8656, RFC 6062 framing), sans-IO: allocations, permissions, channels,
//! long-term and TURN REST API credentials, quotas and the peer address policy.
//!
//! - [`auth`]: realm, stateless nonces, static users and the `use-auth-secret` REST scheme;
//! - [`policy`]: which peers an allocation may reach (internal ranges denied by default);
//! - [`server`]: the state machine the shards drive (see its docs for the run loop);
//! - [`shard`]: that state machine as a data-plane shard core (UDP listener + relay sockets);
//! - [`serve`]: starting it all from the configuration (UDP shards, the TCP/TLS thread of
//!   `stream`), the [`serve::TurnService`] the binary holds.

pub mod auth;
pub mod policy;
pub mod serve;
pub mod server;
pub mod shard;
mod stream;

pub use auth::{Credentials, rest_credentials};
pub use policy::PeerPolicy;
pub use server::{
    FiveTuple, FromClient, FromPeer, Now, Transport, TurnEvent, TurnServer, TurnSettings,
};

#[cfg(test)]
mod tests;
