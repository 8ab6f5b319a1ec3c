//! The systemd watchdog keep-alive decision: `WATCHDOG=1` goes out only while every registered
//! shard's event loop is turning.
//!
//! Each shard counts its loop turns in [`ShardStats::turns`] and promises at least one turn per
//! second while healthy (its timers wake it even when no packet arrives). The watchdog samples
//! those counters at every keep-alive tick; a shard whose counter has not moved for
//! [`Watchdog::stall_limit`] is stuck, and from then on no keep-alive is sent: systemd kills and
//! restarts the service `WatchdogSec=` later. The control-plane thread runs the ticks, so a stuck
//! control plane stops the keep-alives too.
//!
//! Like the protocol cores, this type never reads the clock: `now` is an argument.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::shard::ShardStats;

/// A shard whose loop stopped turning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Index in the list given to [`Watchdog::new`].
    pub shard: usize,
    /// How long its turn counter has not moved.
    pub for_: Duration,
}

/// Decides whether a keep-alive may be sent.
#[derive(Debug)]
pub struct Watchdog {
    shards: Vec<Arc<ShardStats>>,
    /// Per shard: the last turn count seen and when it last changed (None before the first check).
    seen: Vec<Option<(u64, Instant)>>,
    stall_limit: Duration,
}

impl Watchdog {
    /// Default time without a loop turn after which a shard is stuck: three times the one turn
    /// per second a healthy shard guarantees.
    pub const DEFAULT_STALL_LIMIT: Duration = Duration::from_secs(3);

    /// Watches these shards (the media shards' counters, one per shard; empty = nothing to
    /// watch, every check is healthy).
    pub fn new(shards: Vec<Arc<ShardStats>>) -> Watchdog {
        let seen = vec![None; shards.len()];
        Watchdog { shards, seen, stall_limit: Self::DEFAULT_STALL_LIMIT }
    }

    /// Overrides the stall limit (at least one millisecond).
    pub fn with_stall_limit(mut self, limit: Duration) -> Watchdog {
        self.stall_limit = limit.max(Duration::from_millis(1));
        self
    }

    pub fn stall_limit(&self) -> Duration {
        self.stall_limit
    }

    /// Number of watched shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Samples every shard at `now`: `Ok` when all turned within the stall limit, else the
    /// stuck shard that has been stuck longest.
    pub fn check(&mut self, now: Instant) -> Result<(), Stuck> {
        let mut worst: Option<Stuck> = None;
        for (i, (stats, seen)) in self.shards.iter().zip(self.seen.iter_mut()).enumerate() {
            let turns = stats.turns();
            match seen {
                Some((last, since)) if *last == turns => {
                    let for_ = now.saturating_duration_since(*since);
                    if for_ >= self.stall_limit && worst.is_none_or(|w| for_ > w.for_) {
                        worst = Some(Stuck { shard: i, for_ });
                    }
                }
                _ => *seen = Some((turns, now)),
            }
        }
        match worst {
            None => Ok(()),
            Some(s) => Err(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_shards_is_always_healthy() {
        let mut w = Watchdog::new(Vec::new());
        let t0 = Instant::now();
        assert_eq!(w.check(t0), Ok(()));
        assert_eq!(w.check(t0 + Duration::from_secs(3600)), Ok(()));
    }

    #[test]
    fn a_shard_that_stops_turning_withholds_the_keepalive_until_it_turns_again() {
        let a = Arc::new(ShardStats::default());
        let b = Arc::new(ShardStats::default());
        let mut w =
            Watchdog::new(vec![a.clone(), b.clone()]).with_stall_limit(Duration::from_secs(2));
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(w.check(t0), Ok(()));
        // Both turn: healthy.
        a.turn(1, false);
        b.turn(1, false);
        assert_eq!(w.check(t0 + s), Ok(()));
        // Only `a` turns; `b` is stuck once 2 s passed since its last change.
        a.turn(1, false);
        assert_eq!(w.check(t0 + 2 * s), Ok(()));
        a.turn(1, false);
        assert_eq!(w.check(t0 + 3 * s), Err(Stuck { shard: 1, for_: 2 * s }));
        a.turn(1, false);
        assert_eq!(w.check(t0 + 4 * s), Err(Stuck { shard: 1, for_: 3 * s }));
        // `b` recovers.
        b.turn(1, false);
        a.turn(1, false);
        assert_eq!(w.check(t0 + 5 * s), Ok(()));
    }
}
