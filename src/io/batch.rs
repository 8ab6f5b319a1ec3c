//! Grouping of pending transmits into sends: a run of datagrams to the same destination from the
//! same source, all of the first one's size (the last may be shorter), becomes one GSO send.

use crate::io::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS};
use crate::shard::TxQueue;

/// The next send starting at pending position `start`: `(datagrams, segment size)`; a segment
/// size of `None` means a plain single-datagram send. `start` must be a valid position.
pub(crate) fn next_run(tx: &TxQueue, start: usize, gso: bool) -> (usize, Option<u16>) {
    let Some(first) = tx.pending_at(start) else {
        return (0, None);
    };
    let m0 = *tx.meta(first);
    if !gso || m0.len == 0 || tx.is_solo(first) {
        return (1, None);
    }
    let seg = m0.len as usize;
    let max = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / seg);
    let mut n = 1;
    while n < max {
        let Some(idx) = tx.pending_at(start + n) else {
            break;
        };
        let m = tx.meta(idx);
        if tx.is_solo(idx)
            || m.dst != m0.dst
            || m.src != m0.src
            || m.socket != m0.socket
            || m.len == 0
            || m.len as usize > seg
        {
            break;
        }
        n += 1;
        if (m.len as usize) < seg {
            // A shorter datagram can only be the last segment.
            break;
        }
    }
    if n == 1 { (1, None) } else { (n, Some(seg as u16)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn a(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    #[test]
    fn runs() {
        let mut q = TxQueue::new(16);
        for _ in 0..3 {
            q.send(a(1), None, &[0; 100]).unwrap();
        }
        q.send(a(1), None, &[0; 50]).unwrap();
        q.send(a(1), None, &[0; 100]).unwrap();
        q.send(a(2), None, &[0; 100]).unwrap();
        assert_eq!(next_run(&q, 0, true), (4, Some(100)));
        assert_eq!(next_run(&q, 4, true), (1, None));
        assert_eq!(next_run(&q, 5, true), (1, None));
        assert_eq!(next_run(&q, 0, false), (1, None));
        assert_eq!(next_run(&q, 6, true), (0, None));
    }
}
