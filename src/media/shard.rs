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
//! arrived from the relayed address (marked [`FROM_HOSTED_RELAY`]), and the transport takes that
//! path as a hosted route. Each datagram the media core writes on a hosted route is rewritten
//! in its send slot, right after it is written, into a ChannelData message or Data indication to
//! the client ([`HostedRelay`], [`TurnShard::relay_from_media`]): the shard's send queue keeps
//! room in front of every datagram ([`MediaShard::tx_headroom`]), so the header goes in front of
//! it where it lies. Neither direction costs a copy, a move, a walk over the queue or a syscall;
//! allocations on another shard, or to other peers, go through the relay socket and the kernel
//! as usual.

use std::time::Instant;

use super::core::MediaCore;
use super::egress::{Egress, FROM_HOSTED_RELAY, HostedRelay};
use super::{ShardCommand, ShardEvent};
use crate::shard::{RecvMeta, ShardCore, SocketId, SocketOp, TxMeta, TxQueue};
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

    /// Ends the in-process TURN allocations of the transports the media core removed (a
    /// vanished browser leaves its allocation behind; nothing else relays through it).
    fn release_relays(&mut self) {
        while let Some(relay) = self.media.take_released_relay() {
            if let Some(turn) = self.turn.as_mut() {
                turn.release_in_process(relay);
            }
        }
    }

    /// The media core's egress for this turn: the send queue and this shard's TURN relay.
    fn split<'a>(
        media: &'a mut MediaCore,
        turn: &'a mut Option<TurnShard>,
        tx: &'a mut TxQueue,
        now: Instant,
    ) -> (&'a mut MediaCore, Egress<'a>) {
        let relay = turn.as_mut().map(|t| t as &mut dyn HostedRelay);
        (media, Egress::new(tx, relay, now))
    }
}

/// The media core's sends on a hosted route ([`super::egress`]) become ChannelData messages or
/// Data indications to the client in their send slot.
impl HostedRelay for TurnShard {
    fn relay(&mut self, now: Instant, meta: &mut TxMeta, slot: &mut [u8]) -> bool {
        // `None`: the allocation is gone; the datagram goes to the relayed address through the
        // kernel like any peer's, and the TURN core decides there.
        self.relay_from_media(now, meta, slot).unwrap_or(true)
    }
}

impl ShardCore for MediaShard {
    type Command = ShardCommand;
    type Event = ShardEvent;

    fn handle_datagram(&mut self, now: Instant, meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
        if meta.socket == SocketId::MAIN {
            let (media, mut out) = Self::split(&mut self.media, &mut self.turn, tx, now);
            media.on_datagram(now, meta, buf, &mut out);
            return self.release_relays();
        }
        let Some(turn) = self.turn.as_mut() else { return };
        if let Some(local) = turn.handle_datagram_hosted(now, meta, buf, tx) {
            let len = local.range.len();
            let inner = RecvMeta {
                src: local.relay,
                dst_ip: Some(local.peer.ip()),
                dst_port: local.peer.port(),
                socket: FROM_HOSTED_RELAY,
                len,
                stride: len,
            };
            let (media, mut out) = Self::split(&mut self.media, &mut self.turn, tx, now);
            media.on_datagram(now, inner, &mut buf[local.range], &mut out);
            self.release_relays();
        }
    }

    fn handle_command(&mut self, now: Instant, cmd: ShardCommand, tx: &mut TxQueue) {
        if let ShardCommand::EndTurnUser { suffix } = &cmd {
            if let Some(turn) = self.turn.as_mut() {
                turn.end_user_allocations(suffix);
            }
            return;
        }
        let (media, mut out) = Self::split(&mut self.media, &mut self.turn, tx, now);
        media.on_command(now, cmd, &mut out);
        self.release_relays();
    }

    fn handle_timeout(&mut self, now: Instant, tx: &mut TxQueue) {
        if self.media.poll_timeout().is_some_and(|d| d <= now) {
            let (media, mut out) = Self::split(&mut self.media, &mut self.turn, tx, now);
            media.on_timeout(now, &mut out);
            self.release_relays();
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
        let (media, mut out) = Self::split(&mut self.media, &mut self.turn, tx, now);
        media.drain_mesh(now, &mut out)
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
