//! A fixed-capacity SSRC -> stream state map: open addressing with linear probing,
//! allocated once when the context is made, never grown.
//!
//! Lookups hash the SSRC (a multiplicative hash: SSRCs are random but a peer may pick
//! them) into a power-of-two slot array kept at most half full, so a probe sequence is
//! short. Removal uses backward-shift deletion, so there are no tombstones and the table
//! never degrades.

use super::replay::{ReplayWindow, Rollover};

/// Per-SSRC state of one direction.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stream {
    /// SRTP rollover counter and highest sequence number.
    pub(crate) rtp: Rollover,
    /// SRTP replay window (inbound only).
    pub(crate) rtp_replay: ReplayWindow,
    /// Last SRTCP index sent (outbound only); the first packet is sent with index 1.
    pub(crate) rtcp_sent: u32,
    /// SRTCP replay window (inbound only).
    pub(crate) rtcp_replay: ReplayWindow,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ssrc: u32,
    used: bool,
    stream: Stream,
}

const EMPTY: Slot = Slot {
    ssrc: 0,
    used: false,
    stream: Stream {
        rtp: Rollover::ZERO,
        rtp_replay: ReplayWindow::ZERO,
        rtcp_sent: 0,
        rtcp_replay: ReplayWindow::ZERO,
    },
};

/// The SSRC table of one [`super::SrtpContext`].
#[derive(Debug)]
pub(crate) struct SsrcTable {
    slots: Box<[Slot]>,
    mask: usize,
    shift: u32,
    len: usize,
    max: usize,
}

impl SsrcTable {
    /// A table holding up to `max` SSRCs (at least 1).
    pub(crate) fn new(max: usize) -> SsrcTable {
        let max = max.max(1);
        let cap = (max * 2).next_power_of_two().max(2);
        SsrcTable {
            slots: vec![EMPTY; cap].into_boxed_slice(),
            mask: cap - 1,
            shift: 32 - cap.trailing_zeros(),
            len: 0,
            max,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    #[inline]
    fn home(&self, ssrc: u32) -> usize {
        // Fibonacci hashing: the top bits of the product are well mixed.
        (ssrc.wrapping_mul(0x9E37_79B1) >> self.shift) as usize & self.mask
    }

    /// `Ok(slot)` holding `ssrc`, or `Err(slot)` where it would be inserted. The slot
    /// stays valid until the table is next changed.
    #[inline]
    pub(crate) fn find(&self, ssrc: u32) -> Result<usize, usize> {
        let mut i = self.home(ssrc);
        loop {
            // The table is at most half full, so an empty slot ends every probe.
            let slot = &self.slots[i];
            if !slot.used {
                return Err(i);
            }
            if slot.ssrc == ssrc {
                return Ok(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The state of `ssrc`, if it has any.
    #[inline]
    pub(crate) fn get(&self, ssrc: u32) -> Option<&Stream> {
        self.find(ssrc).ok().map(|i| &self.slots[i].stream)
    }

    /// Whether a new SSRC can still be inserted.
    #[inline]
    pub(crate) fn has_room(&self) -> bool {
        self.len < self.max
    }

    /// The state in a slot that [`Self::find`] returned as `Ok`.
    #[inline]
    pub(crate) fn at(&self, slot: usize) -> &Stream {
        &self.slots[slot].stream
    }

    /// The state in a slot that [`Self::find`] returned, inserted empty if the slot was
    /// free (`Err`); `None` when it was free and the table is full.
    #[inline]
    pub(crate) fn claim(&mut self, found: Result<usize, usize>, ssrc: u32) -> Option<&mut Stream> {
        match found {
            Ok(i) => Some(&mut self.slots[i].stream),
            Err(i) => {
                if self.len >= self.max {
                    return None;
                }
                self.len += 1;
                self.slots[i] = Slot { ssrc, used: true, stream: Stream::default() };
                Some(&mut self.slots[i].stream)
            }
        }
    }

    /// The state of `ssrc`, created empty if absent; `None` when absent and the table
    /// is full.
    #[inline]
    pub(crate) fn get_or_insert(&mut self, ssrc: u32) -> Option<&mut Stream> {
        let found = self.find(ssrc);
        self.claim(found, ssrc)
    }

    /// Forget `ssrc`; returns whether it was present.
    pub(crate) fn remove(&mut self, ssrc: u32) -> bool {
        let Ok(mut hole) = self.find(ssrc) else {
            return false;
        };
        self.slots[hole] = EMPTY;
        self.len -= 1;
        // Backward-shift: pull later members of the probe run into the hole when their
        // home position does not lie (cyclically) between the hole and themselves.
        let mut i = (hole + 1) & self.mask;
        while self.slots[i].used {
            let home = self.home(self.slots[i].ssrc);
            let dist_home = i.wrapping_sub(home) & self.mask;
            let dist_hole = i.wrapping_sub(hole) & self.mask;
            if dist_home >= dist_hole {
                self.slots[hole] = self.slots[i];
                self.slots[i] = EMPTY;
                hole = i;
            }
            i = (i + 1) & self.mask;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_stay_consistent() {
        let mut t = SsrcTable::new(16);
        let ssrcs: Vec<u32> = (0..16u32).map(|i| i.wrapping_mul(0x1000_0001) ^ 7).collect();
        for &s in &ssrcs {
            t.get_or_insert(s).expect("room").rtcp_sent = s;
        }
        assert_eq!(t.len(), 16);
        assert!(t.get_or_insert(0xdead_beef).is_none(), "full table refuses");
        for &s in &ssrcs {
            assert_eq!(t.get(s).expect("present").rtcp_sent, s);
        }
        for &s in ssrcs.iter().step_by(2) {
            assert!(t.remove(s));
            assert!(!t.remove(s));
        }
        for (n, &s) in ssrcs.iter().enumerate() {
            assert_eq!(t.get(s).is_some(), n % 2 == 1, "ssrc {s:#x}");
        }
        assert_eq!(t.len(), 8);
        assert!(t.get_or_insert(0xdead_beef).is_some());
    }

    #[test]
    fn colliding_ssrcs_survive_removal() {
        // Keys that land on the same home slot exercise the backward shift.
        let mut t = SsrcTable::new(8);
        let home0: Vec<u32> = (0u32..).filter(|&s| t.home(s) == 0).take(4).collect();
        for &s in &home0 {
            t.get_or_insert(s).expect("room");
        }
        assert!(t.remove(home0[0]));
        for &s in &home0[1..] {
            assert!(t.get(s).is_some());
        }
        assert!(t.remove(home0[2]));
        assert!(t.get(home0[1]).is_some());
        assert!(t.get(home0[3]).is_some());
    }
}
