//! One media shard's core: the [`MediaCore`] and, when the TURN server runs, the shard's
//! [`TurnShard`] beside it (DESIGN §1: a shard serves its media port, the shared TURN port and
//! its relayed addresses).
//!
//! Sockets: [`SocketId::MAIN`] is the media port and belongs to the media core, except for the
//! datagrams of TURN clients that use the media port as their TURN server (STUN requests other
//! than Binding, ChannelData: joinRoom offers the session's media port as its first TURN
//! server, so allocations land on the session's shard); every other socket (the TURN listener
//! [`HOSTED_LISTENER`] and the relay sockets) belongs to the TURN core.
//!
//! In-process delivery (DESIGN §2, `[turn] deliver_in_process`): when an allocation of this
//! shard relays a client's datagram to this shard's own media port, the TURN core names the
//! payload inside the receive buffer and the media core handles it right there, as if it had
//! arrived from the relayed address; what the media core queues for one of this shard's
//! relayed addresses is rewritten in its send slot into a ChannelData message or Data indication
//! to the client ([`TurnShard::relay_from_media`]). Neither direction costs a copy beyond the
//! media core's own, nor a syscall; allocations on another shard, or to other peers, go through
//! the relay socket and the kernel as usual.

use std::time::Instant;

use super::core::MediaCore;
use super::{ShardCommand, ShardEvent};
use crate::shard::{RecvMeta, ShardCore, SocketId, SocketOp, TxQueue};
use crate::turn::shard::{HOSTED_LISTENER, TurnShard};

/// Whether a datagram on the media port is a TURN client's: ChannelData (first byte 64..=127,
/// channels 0x4000..=0x7FFF; RFC 7983 gives 64..=79 to TURN channels and nothing else to the
/// rest) or a STUN message of a method other than Binding (Binding is ICE, the media core's).
fn is_turn_client(buf: &[u8]) -> bool {
    match buf.first() {
        Some(0x40..=0x7f) => true,
        Some(0..=3) if buf.len() >= 20 && buf[4..8] == [0x21, 0x12, 0xa4, 0x42] => {
            let t = u16::from_be_bytes([buf[0], buf[1]]);
            let method = (t & 0x000f) | ((t & 0x00e0) >> 1) | ((t & 0x3e00) >> 2);
            method != 0x001
        }
        _ => false,
    }
}

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
        if meta.socket == SocketId::MAIN && (self.turn.is_none() || !is_turn_client(buf)) {
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
        if id == HOSTED_LISTENER
            && let Err(e) = result
        {
            tracing::error!(error = ?e, "this shard cannot bind the TURN UDP listener");
        }
        if let Some(t) = self.turn.as_mut() {
            t.handle_socket_result(now, id, result, tx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_turn_client;

    fn stun(t: u16) -> Vec<u8> {
        let mut b = vec![0u8; 20];
        b[..2].copy_from_slice(&t.to_be_bytes());
        b[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        b
    }

    #[test]
    fn turn_client_datagrams_are_told_from_media() {
        // Allocate, Refresh, CreatePermission, ChannelBind requests; Send indication.
        for t in [0x0003, 0x0004, 0x0008, 0x0009, 0x0016] {
            assert!(is_turn_client(&stun(t)), "{t:#06x}");
        }
        // Binding request, indication, success, error: ICE, the media core's.
        for t in [0x0001, 0x0011, 0x0101, 0x0111] {
            assert!(!is_turn_client(&stun(t)), "{t:#06x}");
        }
        let mut no_cookie = stun(0x0003);
        no_cookie[4] = 0;
        assert!(!is_turn_client(&no_cookie));
        assert!(!is_turn_client(&stun(0x0003)[..19]));
        assert!(is_turn_client(&[0x40, 0x00, 0x00, 0x00]), "ChannelData");
        assert!(is_turn_client(&[0x7f, 0xff, 0x00, 0x00]), "ChannelData, RFC 5766 range");
        for first in [20u8, 63, 128, 191, 255] {
            assert!(!is_turn_client(&[first; 24]), "DTLS / RTP / other: {first}");
        }
        assert!(!is_turn_client(&[]));
    }
}
