//! ringsfu: a WebRTC SFU that speaks the OpenVidu 2 REST API and JSON-RPC signaling.
//!
//! The crate is one library plus binaries. Protocol logic lives in sans-IO cores (no sockets,
//! threads, clocks or async inside; `now` is always an argument); the I/O shells (the shards'
//! io_uring / epoll loops and the control-plane thread) are thin and drive those cores.
//! `ARCHITECTURE.md` at the top of the repository is the code map.

#![forbid(unsafe_op_in_unsafe_fn)]

pub mod app;
#[cfg(feature = "composer")]
pub mod composer;
pub mod config;
pub mod control;
pub mod dtls;
pub mod ice;
pub mod ingest;
pub mod io;
pub mod load;
pub mod media;
pub mod ops;
pub mod record;
pub mod router;
pub mod sdp;
pub mod secrets;
pub mod shard;
pub mod signaling;
pub mod srtp;
pub mod turn;
pub mod wire;

#[doc(hidden)]
pub mod fuzzing;

/// The OpenVidu server version ringsfu reports (`joinRoom.version`, `GET /config`).
pub const OPENVIDU_VERSION: &str = "2.32.2";
