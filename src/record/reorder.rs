//! A bounded reorder buffer by RTP sequence number, one per recorded track.
//!
//! Packets go in as they arrive ([`ReorderBuffer::insert`]) and come out in sequence order
//! ([`ReorderBuffer::pop`]). A gap is waited for at most [`ReorderBuffer::max_wait`] after the
//! first packet behind it arrived, and never with more than `capacity` packets held; then the
//! buffer gives up on the missing packets and the next packet out carries `lost_before`.
//! Every newly seen gap is reported once for a NACK ([`ReorderBuffer::take_missing`]).
//! A jump of more than four buffers either way is not loss but another sequence (a sender
//! that restarted): the buffer starts over there ([`ReorderBuffer::take_restarted`]).
//! Payload buffers are kept in their slots and reused, so a steady stream allocates nothing.

use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Slot {
    seq: u64,
    present: bool,
    timestamp: u32,
    marker: bool,
    payload: Vec<u8>,
}

/// A packet out of the buffer, in sequence order.
#[derive(Debug)]
pub struct Popped<'a> {
    /// Extended (never wrapping) sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// RTP payload.
    pub payload: &'a [u8],
    /// Packets before this one were given up on.
    pub lost_before: bool,
}

/// What [`ReorderBuffer::insert`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored (or ready to pop).
    Stored,
    /// A duplicate, or older than what was already given out or given up on: dropped.
    Late,
    /// Larger than the per-packet limit: dropped.
    TooLarge,
}

/// Largest payload the buffer keeps.
pub const MAX_PAYLOAD: usize = 1500;

/// The reorder buffer; see the module docs.
#[derive(Debug)]
pub struct ReorderBuffer {
    slots: Vec<Slot>,
    next: Option<u64>,
    highest: u64,
    gap_since: Option<Instant>,
    lost_pending: bool,
    missing: Vec<u16>,
    max_wait: Duration,
    lost_packets: u64,
    restarted: bool,
}

impl ReorderBuffer {
    /// A buffer holding at most `capacity` packets (rounded up to a power of two, at least 16)
    /// and waiting at most `max_wait` for a missing one.
    pub fn new(capacity: usize, max_wait: Duration) -> Self {
        let cap = capacity.clamp(16, 1 << 14).next_power_of_two();
        ReorderBuffer {
            slots: (0..cap).map(|_| Slot::default()).collect(),
            next: None,
            highest: 0,
            gap_since: None,
            lost_pending: false,
            missing: Vec::new(),
            max_wait,
            lost_packets: 0,
            restarted: false,
        }
    }

    /// How long a gap is waited for.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Packets given up on so far.
    pub fn lost_packets(&self) -> u64 {
        self.lost_packets
    }

    fn cap(&self) -> u64 {
        self.slots.len() as u64
    }

    fn idx(&self, seq: u64) -> usize {
        (seq % self.cap()) as usize
    }

    fn extend(&self, seq: u16) -> u64 {
        if self.next.is_none() {
            return (1 << 16) + u64::from(seq);
        }
        let base = self.highest;
        let cand = (base & !0xFFFF) | u64::from(seq);
        let options = [cand.wrapping_sub(1 << 16), cand, cand + (1 << 16)];
        let mut best = cand;
        let mut dist = u64::MAX;
        for o in options {
            if o < (1 << 16) {
                continue;
            }
            let d = o.abs_diff(base);
            if d < dist {
                dist = d;
                best = o;
            }
        }
        best
    }

    /// Takes one packet. `now` starts the wait for a gap it reveals.
    pub fn insert(
        &mut self,
        now: Instant,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Inserted {
        if payload.len() > MAX_PAYLOAD {
            return Inserted::TooLarge;
        }
        let ext = self.extend(seq);
        if let Some(n) = self.next
            && (ext + 4 * self.cap() < n || ext >= n + 4 * self.cap())
        {
            // Not a late or lost packet but another sequence (a sender that restarted).
            self.restart(ext);
        }
        let next = *self.next.get_or_insert(ext);
        if self.highest == 0 {
            self.highest = ext;
        }
        if ext < next {
            return Inserted::Late;
        }
        let cap = self.cap();
        if ext >= next + cap {
            // Too far ahead: give up on what cannot fit.
            let new_next = ext + 1 - cap;
            self.skip_to(new_next);
        }
        let i = self.idx(ext);
        let slot = &mut self.slots[i];
        if slot.present && slot.seq == ext {
            return Inserted::Late;
        }
        slot.seq = ext;
        slot.present = true;
        slot.timestamp = timestamp;
        slot.marker = marker;
        slot.payload.clear();
        slot.payload.extend_from_slice(payload);
        if ext > self.highest {
            let from = (self.highest + 1).max(self.next.unwrap_or(ext));
            for s in from..ext {
                if self.missing.len() < self.slots.len() {
                    self.missing.push(s as u16);
                }
            }
            self.highest = ext;
        }
        if Some(ext) != self.next && self.gap_since.is_none() {
            self.gap_since = Some(now);
        }
        Inserted::Stored
    }

    fn restart(&mut self, ext: u64) {
        for slot in &mut self.slots {
            slot.present = false;
        }
        self.next = Some(ext);
        self.highest = ext;
        self.gap_since = None;
        self.missing.clear();
        self.lost_pending = true;
        self.restarted = true;
    }

    /// True (once) when the sequence jumped so far that the buffer started over: the caller
    /// treats the track as a new stream (timeline anchor, keyframe).
    pub fn take_restarted(&mut self) -> bool {
        std::mem::take(&mut self.restarted)
    }

    fn skip_to(&mut self, new_next: u64) {
        let Some(n) = self.next else { return };
        let lost = new_next.saturating_sub(n);
        // Held packets overtaken by the skip are dropped with the gap (at most a lap).
        for s in n..new_next.min(n + self.cap()) {
            let i = self.idx(s);
            let slot = &mut self.slots[i];
            if slot.present && slot.seq == s {
                slot.present = false;
            }
        }
        if lost > 0 {
            self.lost_packets += lost;
            self.lost_pending = true;
        }
        self.next = Some(new_next);
        self.gap_since = None;
    }

    /// Sequence numbers newly found missing since the last call (each reported once).
    pub fn take_missing(&mut self) -> Vec<u16> {
        std::mem::take(&mut self.missing)
    }

    /// Gives up on a gap that was waited for long enough (call from the timeout).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(since) = self.gap_since else { return };
        if now.saturating_duration_since(since) < self.max_wait {
            return;
        }
        let Some(next) = self.next else { return };
        // Skip to the first held packet.
        let mut n = next;
        let end = next + self.cap();
        while n < end {
            let s = &self.slots[self.idx(n)];
            if s.present && s.seq == n {
                break;
            }
            n += 1;
        }
        if n < end {
            self.skip_to(n);
        } else {
            self.gap_since = None;
        }
    }

    /// When [`ReorderBuffer::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.gap_since.map(|s| s + self.max_wait)
    }

    /// The next packet in order, if it is here.
    pub fn pop(&mut self) -> Option<Popped<'_>> {
        let n = self.next?;
        let i = self.idx(n);
        if !(self.slots[i].present && self.slots[i].seq == n) {
            return None;
        }
        self.next = Some(n + 1);
        let lost_before = std::mem::take(&mut self.lost_pending);
        // The wait restarts for a gap right behind this packet.
        self.gap_since = None;
        let slot = &mut self.slots[i];
        slot.present = false;
        Some(Popped {
            seq: n,
            timestamp: slot.timestamp,
            marker: slot.marker,
            payload: &slot.payload,
            lost_before,
        })
    }

    /// After popping everything ready: starts the wait clock if a gap is now at the front.
    pub fn after_pop(&mut self, now: Instant) {
        if let Some(n) = self.next
            && self.highest >= n
            && self.gap_since.is_none()
        {
            self.gap_since = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(rb: &mut ReorderBuffer) -> Vec<(u64, bool)> {
        let mut v = Vec::new();
        while let Some(p) = rb.pop() {
            v.push((p.seq & 0xFFFF, p.lost_before));
        }
        v
    }

    #[test]
    fn reorders_nacks_and_gives_up() {
        let t0 = Instant::now();
        let mut rb = ReorderBuffer::new(16, Duration::from_millis(100));
        rb.insert(t0, 65534, 0, false, b"a");
        rb.insert(t0, 1, 0, false, b"c");
        assert_eq!(drain(&mut rb), vec![(65534, false)]);
        rb.after_pop(t0);
        assert_eq!(rb.take_missing(), vec![65535, 0]);
        rb.insert(t0, 65535, 0, false, b"b");
        assert_eq!(drain(&mut rb), vec![(65535, false)]);
        rb.after_pop(t0);
        assert_eq!(rb.poll_timeout(), Some(t0 + Duration::from_millis(100)));
        rb.handle_timeout(t0 + Duration::from_millis(100));
        assert_eq!(drain(&mut rb), vec![(1, true)]);
        assert_eq!(rb.insert(t0, 0, 0, false, b"late"), Inserted::Late);
        assert_eq!(rb.lost_packets(), 1);
    }

    #[test]
    fn a_restarted_sequence_starts_over() {
        let t0 = Instant::now();
        let mut rb = ReorderBuffer::new(16, Duration::from_millis(100));
        rb.insert(t0, 1000, 0, false, b"a");
        assert_eq!(drain(&mut rb).len(), 1);
        assert!(!rb.take_restarted());
        rb.insert(t0, 1000 - 300, 0, false, b"b");
        assert!(rb.take_restarted());
        assert_eq!(drain(&mut rb), vec![(700, true)]);
        rb.insert(t0, 701, 0, false, b"c");
        assert_eq!(drain(&mut rb), vec![(701, false)]);
    }

    #[test]
    fn too_far_ahead_skips() {
        let t0 = Instant::now();
        let mut rb = ReorderBuffer::new(16, Duration::from_millis(100));
        rb.insert(t0, 10, 0, false, b"a");
        assert_eq!(drain(&mut rb).len(), 1);
        rb.insert(t0, 40, 0, false, b"b");
        assert_eq!(drain(&mut rb), vec![]);
        for s in 25..40 {
            rb.insert(t0, s, 0, false, b"x");
        }
        let out = drain(&mut rb);
        assert_eq!(out.len(), 16);
        assert_eq!(out.first(), Some(&(25, true)));
        assert_eq!(out.last(), Some(&(40, false)));
    }
}
