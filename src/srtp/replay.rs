//! Sliding replay window (RFC 3711 §3.3.2) over 128 packet indices, and the rollover
//! counter estimate of RFC 3711 §3.3.1 / Appendix A.

use super::error::SrtpError;

/// How many indices behind the highest accepted one are still remembered. RFC 3711
/// asks for at least 64; 128 covers more reordering at the cost of one `u128`.
pub const REPLAY_WINDOW: u64 = 128;

/// A replay window: the highest accepted index and a bitmap of the 128 indices at and
/// below it (bit `n` = index `top - n` was accepted).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReplayWindow {
    top: u64,
    bits: u128,
    started: bool,
}

impl ReplayWindow {
    /// An empty window (nothing accepted yet).
    pub(crate) const ZERO: ReplayWindow = ReplayWindow { top: 0, bits: 0, started: false };

    /// Whether `index` may be accepted. Does not change the window: call
    /// [`ReplayWindow::accept`] only once the packet authenticated.
    pub(crate) fn check(&self, index: u64) -> Result<(), SrtpError> {
        if !self.started || index > self.top {
            return Ok(());
        }
        let behind = self.top - index;
        if behind >= REPLAY_WINDOW {
            return Err(SrtpError::TooOld);
        }
        if self.bits & (1u128 << behind) != 0 {
            return Err(SrtpError::Replayed);
        }
        Ok(())
    }

    /// Mark `index` as received (after it authenticated and passed [`Self::check`]).
    pub(crate) fn accept(&mut self, index: u64) {
        if !self.started {
            self.started = true;
            self.top = index;
            self.bits = 1;
        } else if index > self.top {
            let ahead = index - self.top;
            self.bits = if ahead >= REPLAY_WINDOW { 0 } else { self.bits << ahead };
            self.bits |= 1;
            self.top = index;
        } else {
            let behind = self.top - index;
            if behind < REPLAY_WINDOW {
                self.bits |= 1u128 << behind;
            }
        }
    }
}

/// Rollover state of one RTP stream: the highest sequence number seen (`s_l`) and its
/// rollover counter. The 48-bit packet index is `roc << 16 | seq`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Rollover {
    roc: u32,
    s_l: u16,
    started: bool,
}

impl Rollover {
    /// A stream that has seen no packet yet.
    pub(crate) const ZERO: Rollover = Rollover { roc: 0, s_l: 0, started: false };

    /// The rollover counter of the highest index seen so far.
    pub(crate) fn roc(&self) -> u32 {
        self.roc
    }

    /// Estimate the packet index of sequence number `seq` (RFC 3711 Appendix A).
    ///
    /// The first packet of a stream gets `ROC = 0`. A guess of `ROC - 1` while `ROC` is
    /// 0 stays at 0 (the packet then counts as ahead, as webrtc-srtp and libsrtp treat
    /// it). Returns [`SrtpError::IndexExhausted`] when the guess would pass `2^48 - 1`.
    pub(crate) fn estimate(&self, seq: u16) -> Result<u64, SrtpError> {
        if !self.started {
            return Ok(u64::from(seq));
        }
        const HALF: u16 = 1 << 15;
        let roc = if self.s_l < HALF {
            if seq > self.s_l && seq - self.s_l > HALF {
                self.roc.saturating_sub(1)
            } else {
                self.roc
            }
        } else if self.s_l - HALF > seq {
            self.roc.checked_add(1).ok_or(SrtpError::IndexExhausted)?
        } else {
            self.roc
        };
        Ok((u64::from(roc) << 16) | u64::from(seq))
    }

    /// Record that the packet with `index` was sent or authenticated: `s_l` and ROC
    /// advance only when it is the highest so far.
    pub(crate) fn update(&mut self, index: u64) {
        let highest = (u64::from(self.roc) << 16) | u64::from(self.s_l);
        if !self.started || index > highest {
            self.started = true;
            // The index is at most 48 bits: the casts split it, they do not truncate.
            self.roc = (index >> 16) as u32;
            self.s_l = index as u16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_accepts_new_and_rejects_replays() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.check(1000), Ok(()));
        w.accept(1000);
        assert_eq!(w.check(1000), Err(SrtpError::Replayed));
        assert_eq!(w.check(999), Ok(()));
        w.accept(999);
        assert_eq!(w.check(999), Err(SrtpError::Replayed));
        assert_eq!(w.check(1001), Ok(()));
        w.accept(1200);
        assert_eq!(w.check(1000), Err(SrtpError::TooOld));
        assert_eq!(w.check(1200 - 127), Ok(()));
        assert_eq!(w.check(1200 - 128), Err(SrtpError::TooOld));
        w.accept(1201);
        assert_eq!(w.check(1200), Err(SrtpError::Replayed));
        // A far jump clears the bitmap.
        w.accept(5000);
        assert_eq!(w.check(4999), Ok(()));
        assert_eq!(w.check(5000), Err(SrtpError::Replayed));
    }

    #[test]
    fn rollover_follows_appendix_a() {
        let mut r = Rollover::default();
        assert_eq!(r.estimate(65530), Ok(65530));
        r.update(65530);
        // Wrap forward.
        let i = r.estimate(3).expect("in range");
        assert_eq!(i, (1 << 16) | 3);
        r.update(i);
        assert_eq!(r.roc(), 1);
        // A late packet from before the wrap keeps the old ROC and does not move s_l.
        let late = r.estimate(65533).expect("in range");
        assert_eq!(late, 65533);
        r.update(late);
        assert_eq!(r.roc(), 1);
        assert_eq!(r.estimate(4), Ok((1 << 16) | 4));
        // ROC 0 never goes negative.
        let mut r = Rollover::default();
        r.update(10);
        assert_eq!(r.estimate(60000), Ok(60000));
    }

    #[test]
    fn rollover_refuses_to_wrap_the_index() {
        let mut r = Rollover::default();
        r.update((u64::from(u32::MAX) << 16) | 65000);
        assert_eq!(r.estimate(5), Err(SrtpError::IndexExhausted));
    }
}
