//! Where the media core's datagrams leave: the shard's send queue, and for a transport whose
//! selected path runs through this shard's own TURN server (a peer that uses one of our relayed
//! addresses), through that server's relay, at the moment each datagram is written.
//!
//! A hosted path is a route of the [`Transport`](super::transport::Transport): its checks arrive
//! from the TURN core in process (marked [`FROM_HOSTED_RELAY`]), the transport remembers the
//! relayed address, and every send to that address is handed to [`HostedRelay::relay`] right
//! after it is committed. The media core writes every datagram behind the queue's headroom
//! (`ShardCore::tx_headroom`), so the relay puts its ChannelData or Data-indication header in
//! front of the datagram where it lies: no walk over the queue afterwards, no copy.
//!
//! Sends to any other address cost one comparison of two addresses.

use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::shard::{SocketId, TxMeta, TxQueue};

/// The socket id of a datagram the shard's own TURN server delivered in process: never a real
/// socket (real ids are below [`SocketId::LIMIT`]).
pub(crate) const FROM_HOSTED_RELAY: SocketId = SocketId(u32::MAX);

/// The shard's TURN server seen from the media core.
pub(crate) trait HostedRelay {
    /// Rewrites the committed datagram `meta` / `slot` (to one of this server's relayed
    /// addresses) into the message to the client in place. False: refused (no permission, too
    /// big...; counted by the relay), the datagram is dropped.
    fn relay(&mut self, now: Instant, meta: &mut TxMeta, slot: &mut [u8]) -> bool;
}

/// The send queue the media core writes into, with the shard's TURN relay beside it.
pub(crate) struct Egress<'a> {
    tx: &'a mut TxQueue,
    relay: Option<&'a mut dyn HostedRelay>,
    now: Instant,
}

impl<'a> Egress<'a> {
    pub fn new(tx: &'a mut TxQueue, relay: Option<&'a mut dyn HostedRelay>, now: Instant) -> Self {
        Egress { tx, relay, now }
    }

    /// A queue without a hosted relay (a media core alone, as in tests).
    pub fn direct(tx: &'a mut TxQueue, now: Instant) -> Self {
        Egress { tx, relay: None, now }
    }

    /// Routes what was committed since `mark` (the queue's `pending_len()` before the writes)
    /// through the hosted relay when `hosted`; otherwise leaves it as it is. Call it right after
    /// the commit of a send whose path may be hosted.
    pub fn route_from(&mut self, mark: usize, hosted: bool) {
        if !hosted || self.tx.pending_len() <= mark {
            return;
        }
        let now = self.now;
        match self.relay.as_deref_mut() {
            Some(relay) => self.tx.rewrite_pending(mark, |meta, slot| relay.relay(now, meta, slot)),
            // A hosted path needs the relay that delivered its checks: drop rather than send a
            // datagram to our own relayed address through the kernel.
            None => self.tx.rewrite_pending(mark, |_, _| false),
        }
    }
}

impl Deref for Egress<'_> {
    type Target = TxQueue;
    fn deref(&self) -> &TxQueue {
        self.tx
    }
}

impl DerefMut for Egress<'_> {
    fn deref_mut(&mut self) -> &mut TxQueue {
        self.tx
    }
}
