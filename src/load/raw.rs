//! The raw ceiling: a minimal UDP forwarder with no crypto and no protocol, run as a
//! [`ShardCore`] on the same I/O shells as ringsfu. A datagram from a registered publisher
//! address is copied to each of its subscribers' addresses; anything else is counted and
//! dropped. What ringsfu does on top of this (ICE, DTLS, SRTP decrypt and per-leg encrypt,
//! header rewrite, RTCP) is what the ratio `ringsfu / raw` prices.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::shard::{RecvMeta, ShardCore, TxQueue};

/// Orchestrator → forwarder.
#[derive(Debug)]
pub enum RawCommand {
    /// Datagrams from `from` go to every address in `to`.
    Route { from: SocketAddr, to: Vec<SocketAddr> },
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct RawForwarder {
    routes: HashMap<SocketAddr, Vec<SocketAddr>>,
    /// Datagrams from unknown sources.
    pub unknown: u64,
    /// Datagrams not sent because the transmit pool was full.
    pub tx_full: u64,
}

impl ShardCore for RawForwarder {
    type Command = RawCommand;
    type Event = ();

    fn handle_datagram(&mut self, _now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        let Some(to) = self.routes.get(&meta.src) else {
            self.unknown += 1;
            return;
        };
        for &dst in to {
            if tx.send(dst, None, buf).is_err() {
                self.tx_full += 1;
            }
        }
    }

    fn handle_command(&mut self, _now: Instant, cmd: RawCommand, _tx: &mut TxQueue) {
        match cmd {
            RawCommand::Route { from, to } => {
                self.routes.entry(from).or_default().extend(to);
            }
        }
    }

    fn handle_timeout(&mut self, _now: Instant, _tx: &mut TxQueue) {}

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(src: SocketAddr, len: usize) -> RecvMeta {
        RecvMeta {
            src,
            dst_ip: None,
            dst_port: 1,
            socket: crate::shard::SocketId::MAIN,
            len,
            stride: len,
        }
    }

    #[test]
    fn copies_to_every_subscriber_and_drops_strangers() {
        let now = Instant::now();
        let mut f = RawForwarder::default();
        let mut tx = TxQueue::new(8);
        let p: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let subs: Vec<SocketAddr> =
            vec!["127.0.0.2:1".parse().unwrap(), "127.0.0.3:1".parse().unwrap()];
        f.handle_command(now, RawCommand::Route { from: p, to: subs.clone() }, &mut tx);
        let mut b = *b"hello";
        f.handle_datagram(now, meta(p, 5), &mut b, &mut tx);
        f.handle_datagram(now, meta("127.0.0.9:9".parse().unwrap(), 5), &mut b, &mut tx);
        let mut got = Vec::new();
        while let Some(d) = tx.pop_pending(|m, b| (m.dst, b.to_vec())) {
            got.push(d);
        }
        assert_eq!(got, subs.iter().map(|&a| (a, b"hello".to_vec())).collect::<Vec<_>>());
        assert_eq!(f.unknown, 1);
    }
}
