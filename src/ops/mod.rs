//! Operations: what a service manager, a load balancer and a monitoring system need from the
//! process, kept out of the protocol code.
//!
//! - [`notify`]: the systemd notification protocol (READY, STATUS, WATCHDOG, RELOADING,
//!   STOPPING) over `$NOTIFY_SOCKET`.
//! - [`watchdog`]: keep-alives only while every media shard's loop turns.
//! - [`metrics`]: the Prometheus `/metrics` text and the counters behind it.
//! - [`logging`]: the tracing subscriber (text or JSON) with a reloadable level.
//! - [`openapi`]: the OpenAPI document of the REST API.
//! - [`service`]: the life cycle around the HTTP server: readiness, periodic status, SIGHUP
//!   reload (TLS certificate, log level, TURN credentials), SIGTERM drain.
//!
//! `app.rs` wires these up: the media shards' `ShardStats` go to the watchdog with
//! [`service::Ops::watch_shards`]; `ControlPlane::attach_media` registers them (and the media
//! cores' counters) for `/metrics` with [`Metrics::register_media_engine`]; the TURN server's
//! published counters are registered with [`Metrics::register_turn`] and its shards watched too.

pub mod logging;
pub mod metrics;
pub mod notify;
pub mod openapi;
pub mod service;
pub mod watchdog;

pub use metrics::{Metrics, ShardMetrics};
pub use notify::Notifier;
pub use service::{ConfigSource, Ops};
pub use watchdog::Watchdog;
