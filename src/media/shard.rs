//! One media shard's core: the [`MediaCore`] and, when the TURN server runs, the shard's
//! [`TurnShard`] beside it (DESIGN §1: a shard serves its media port, the shared TURN port and
//! its relayed addresses).
//!
//! Sockets: [`SocketId::MAIN`] is the media port and belongs to the media core; every other
//! socket (the shared TURN listener [`HOSTED_LISTENER`], the shard's own TURN port
//! [`SHARD_LISTENER`] and the relay sockets) belongs to the TURN core.
//!
//! In-process delivery (DESIGN §2, `[turn] deliver_in_process`): when an allocation of this
//! shard relays a client's datagram to this shard's own media port, the TURN core names the
//! payload inside the receive buffer and the media core handles it right there, as if it had
//! arrived from the relayed address; what the media core queues for one of this shard's
//! relayed addresses is rewritten in its send slot into a ChannelData message or Data indication
//! to the client ([`TurnShard::relay_from_media`]): the shard's send queue keeps room in front of
//! every datagram ([`MediaShard::tx_headroom`]), so the header goes in front of it where it lies.
//! Neither direction costs a copy or a move beyond the media core's own, nor a syscall; allocations on another shard, or to other peers, go through
//! the relay socket and the kernel as usual.

use std::time::Instant;

use super::core::MediaCore;
use super::{ShardCommand, ShardEvent};
use crate::shard::{RecvMeta, ShardCore, SocketId, SocketOp, TxQueue};
use crate::turn::shard::{HOSTED_LISTENER, SHARD_LISTENER, TurnShard};

/// See the module docs.
pub struct MediaShard {
    media: MediaCore,
    turn: Option<TurnShard>,
}

impl MediaShard {
    /// A media core, with the TURN core this shard hosts (see [`TurnShard::hosted`]).
    pub fn new(media: MediaCore, turn: Option<TurnShard>) -> MediaShard {
        MediaShard { media, turn }
    }

    /// The media core (tests).
    pub fn media(&self) -> &MediaCore {
        &self.media
    }

    /// Packets the media core queued since `mark` for a relayed address of this shard go to
    /// their TURN clients in place.
    fn reroute(&mut self, now: Instant, mark: usize, tx: &mut TxQueue) {
        let Some(turn) = self.turn.as_mut() else { return };
        if !turn.delivers_in_process() || tx.pending_len() <= mark {
            return;
        }
        tx.rewrite_pending(mark, |meta, slot| {
            meta.socket != SocketId::MAIN || turn.relay_from_media(now, meta, slot).unwrap_or(true)
        });
    }

    fn media_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        let mark = tx.pending_len();
        self.media.handle_datagram(now, meta, buf, tx);
        self.reroute(now, mark, tx);
    }
}

impl ShardCore for MediaShard {
    type Command = ShardCommand;
    type Event = ShardEvent;

    fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        if meta.socket == SocketId::MAIN {
            return self.media_datagram(now, meta, buf, tx);
        }
        let Some(turn) = self.turn.as_mut() else { return };
        if let Some(local) = turn.handle_datagram_hosted(now, meta, buf, tx) {
            let len = local.range.len();
            let inner = RecvMeta {
                src: local.relay,
                dst_ip: Some(local.peer.ip()),
                dst_port: local.peer.port(),
                socket: SocketId::MAIN,
                len,
                stride: len,
            };
            self.media_datagram(now, inner, &mut buf[local.range], tx);
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: ShardCommand, tx: &mut TxQueue) {
        let mark = tx.pending_len();
        self.media.handle_command(now, cmd, tx);
        self.reroute(now, mark, tx);
    }

    fn handle_timeout(&mut self, now: Instant, tx: &mut TxQueue) {
        if self.media.poll_timeout().is_some_and(|d| d <= now) {
            let mark = tx.pending_len();
            self.media.handle_timeout(now, tx);
            self.reroute(now, mark, tx);
        }
        if let Some(turn) = self.turn.as_mut()
            && turn.poll_timeout().is_some_and(|d| d <= now)
        {
            turn.handle_timeout(now, tx);
        }
    }

    fn has_mesh_input(&self) -> bool {
        self.media.has_mesh_input()
    }

    fn handle_mesh(&mut self, now: Instant, tx: &mut TxQueue) -> bool {
        let mark = tx.pending_len();
        let done = self.media.handle_mesh(now, tx);
        self.reroute(now, mark, tx);
        done
    }

    fn flush_mesh(&mut self) {
        self.media.flush_mesh();
    }

    /// With in-process delivery, every media datagram is written behind room for the header
    /// [`TurnShard::relay_from_media`] may put in front of it: no datagram is moved.
    fn tx_headroom(&self) -> usize {
        match &self.turn {
            // Configured, not yet in use (`delivers_in_process` waits for an allocation).
            Some(t) if !t.server().in_process().is_empty() => crate::turn::server::PEER_HEADROOM,
            _ => 0,
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let turn = self.turn.as_ref().and_then(|t| t.poll_timeout());
        match (self.media.poll_timeout(), turn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_event(&mut self) -> Option<ShardEvent> {
        // The TURN core's only event answers a report command, which hosted cores never get
        // (their counters are published through their stats cell).
        self.media.poll_event()
    }

    fn poll_socket_op(&mut self) -> Option<SocketOp> {
        self.turn.as_mut().and_then(|t| t.poll_socket_op())
    }

    fn handle_socket_result(
        &mut self,
        now: Instant,
        id: SocketId,
        result: Result<(), std::io::ErrorKind>,
        tx: &mut TxQueue,
    ) {
        // A listener that does not bind stops the shard from starting (`Driver::startup_result`);
        // say which one it is.
        if let Err(e) = result {
            if id == HOSTED_LISTENER {
                tracing::error!(error = ?e, "this shard cannot bind the shared TURN UDP port");
            } else if id == SHARD_LISTENER {
                tracing::error!(
                    error = ?e,
                    "this shard cannot bind its own TURN port (turn.shard_ports: \
                     media.port_base + shards + shard index)"
                );
            }
        }
        if let Some(t) = self.turn.as_mut() {
            t.handle_socket_result(now, id, result, tx);
        }
    }
}
