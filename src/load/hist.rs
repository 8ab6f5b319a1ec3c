//! A small log-linear histogram of microseconds (8 sub-buckets per power of two, ≤ 12.5%
//! relative error), cheap enough to record every verified packet.

/// Sub-buckets per power of two (as a shift).
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Values up to 2^40 µs (12 days) are kept; larger ones land in the last bucket.
const BUCKETS: usize = ((40 - SUB_BITS as usize) + 1) * SUB as usize + SUB as usize;

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (((exp - SUB_BITS + 1) as u64 * SUB + sub) as usize).min(BUCKETS - 1)
}

/// Largest value of bucket `b`.
fn upper(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let exp = b / SUB - 1 + u64::from(SUB_BITS);
    let sub = b % SUB;
    ((SUB + sub + 1) << (exp - u64::from(SUB_BITS))) - 1
}

impl Hist {
    pub fn record(&mut self, v: u64) {
        self.counts[bucket(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0;
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.max = self.max.max(o.max);
    }

    /// The value at quantile `q` (0..=1): the upper bound of its bucket, capped at the
    /// maximum seen; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(b).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounded() {
        let mut prev = 0;
        for v in [0u64, 1, 7, 8, 9, 15, 16, 17, 100, 1000, 12_345, 1 << 30, u64::MAX] {
            let b = bucket(v);
            assert!(b >= prev && b < BUCKETS, "{v}");
            if v < 1 << 40 {
                assert!(upper(b) >= v, "{v} {}", upper(b));
                assert!(upper(b) as f64 <= v as f64 * 1.125 + 1.0, "{v} {}", upper(b));
            }
            prev = b;
        }
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::default();
        for v in 1..=1000 {
            h.record(v);
        }
        let p50 = h.quantile(0.5);
        assert!((500..=570).contains(&p50), "{p50}");
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(Hist::default().quantile(0.5), 0);
    }
}
