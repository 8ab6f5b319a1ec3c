//! Shared by the I/O shell benches (`io.rs`, `io_fanout.rs`).

use std::time::Instant;

use ringsfu::config::IoBackend;
use ringsfu::io::{IoOptions, ShardOptions};
use ringsfu::shard::{RecvMeta, ShardCore, TxQueue};

/// A shard core that only answers datagrams, with `F`.
pub struct OnDatagram<F>(pub F);

impl<F: FnMut(RecvMeta, &mut [u8], &mut TxQueue) + Send + 'static> ShardCore for OnDatagram<F> {
    type Command = ();
    type Event = ();

    fn handle_datagram(&mut self, _now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        (self.0)(meta, buf, tx)
    }
    fn handle_command(&mut self, _now: Instant, _cmd: (), _tx: &mut TxQueue) {}
    fn handle_timeout(&mut self, _now: Instant, _tx: &mut TxQueue) {}
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// One shard on an ephemeral loopback port.
pub fn one_shard(backend: IoBackend) -> ShardOptions {
    ShardOptions {
        shards: 1,
        bind_address: "127.0.0.1".parse().unwrap(),
        port_base: 0,
        backend,
        pin_threads: false,
        reuse_port: false,
        io: IoOptions::default(),
    }
}

/// An environment variable as a number, or `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
