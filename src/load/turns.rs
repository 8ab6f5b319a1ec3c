//! The server's event-loop turns, as its `/metrics` tells them
//! (`ringsfu_shard_loop_turn_seconds`, a histogram per shard): read before and after a part of a
//! run (the ramp, the window, the teardown), the difference says how many turns that part took,
//! how many ran over 20 ms and the longest (to its bucket's upper bound).

use std::collections::BTreeMap;

/// Cumulative bucket counts per shard (its labels but `le`), by upper bound (`f64::INFINITY`
/// for `+Inf`), as one scrape gave them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TurnCounts {
    shards: BTreeMap<String, Vec<(f64, u64)>>,
}

/// What a part of the run did to the loop turns of every shard together.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TurnSummary {
    pub turns: u64,
    /// Turns over 20 ms (known from the buckets).
    pub over_20ms: u64,
    /// Upper bound of the highest bucket that gained a turn, seconds (`INFINITY`: above the
    /// largest bound); `None` when no turn happened.
    pub longest_le_s: Option<f64>,
}

const NAME: &str = "ringsfu_shard_loop_turn_seconds_bucket{";

/// The loop-turn buckets of a `/metrics` text (missing when the server exports none).
pub fn parse(text: &str) -> TurnCounts {
    let mut shards: BTreeMap<String, Vec<(f64, u64)>> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(NAME) else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        let Ok(count) = value.trim().parse::<u64>() else { continue };
        let mut le = None;
        let mut key = Vec::new();
        for l in labels.split(',') {
            match l.strip_prefix("le=\"").and_then(|v| v.strip_suffix('"')) {
                Some("+Inf") => le = Some(f64::INFINITY),
                Some(v) => le = v.parse::<f64>().ok(),
                None => key.push(l),
            }
        }
        if let Some(le) = le {
            shards.entry(key.join(",")).or_default().push((le, count));
        }
    }
    for b in shards.values_mut() {
        b.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    TurnCounts { shards }
}

impl TurnCounts {
    /// Whether the scrape had the histogram at all.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// The turns between `earlier` and this scrape, all shards together.
    pub fn since(&self, earlier: &TurnCounts) -> TurnSummary {
        let mut s = TurnSummary::default();
        for (shard, buckets) in &self.shards {
            let before = earlier.shards.get(shard);
            let cumulative_before = |i: usize| before.and_then(|b| b.get(i)).map_or(0, |x| x.1);
            let mut previous = 0;
            for (i, &(le, cumulative)) in buckets.iter().enumerate() {
                let gained = cumulative.saturating_sub(cumulative_before(i));
                let in_bucket = gained.saturating_sub(previous);
                previous = gained;
                if in_bucket == 0 {
                    continue;
                }
                // The bucket's lower bound: the bound before it.
                let lower = if i == 0 { 0.0 } else { buckets[i - 1].0 };
                if lower >= 0.020 {
                    s.over_20ms += in_bucket;
                }
                s.longest_le_s = Some(s.longest_le_s.map_or(le, |m: f64| m.max(le)));
            }
            s.turns += previous;
        }
        s
    }
}

impl std::fmt::Display for TurnSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} turns, {} over 20 ms, longest ", self.turns, self.over_20ms)?;
        match self.longest_le_s {
            None => f.write_str("-"),
            Some(s) if s.is_infinite() => f.write_str("> 1 s"),
            Some(s) => write!(f, "<= {} ms", s * 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(counts: [u64; 8]) -> String {
        let les = ["0.001", "0.005", "0.02", "0.05", "0.1", "0.5", "1", "+Inf"];
        let mut text = String::from("# TYPE ringsfu_shard_loop_turn_seconds histogram\n");
        let mut c = 0;
        for (le, n) in les.iter().zip(counts) {
            c += n;
            text.push_str(&format!("{NAME}shard=\"0\",le=\"{le}\"}} {c}\n"));
        }
        text.push_str(&format!("ringsfu_shard_loop_turn_seconds_count{{shard=\"0\"}} {c}\n"));
        text
    }

    #[test]
    fn differences_name_the_turns_of_a_part() {
        let a = parse(&scrape([10, 2, 0, 0, 0, 0, 0, 0]));
        let b = parse(&scrape([50, 4, 3, 1, 0, 2, 0, 0]));
        assert_eq!(b.since(&a), TurnSummary { turns: 48, over_20ms: 3, longest_le_s: Some(0.5) });
        assert_eq!(b.since(&b), TurnSummary::default());
        let c = parse(&scrape([50, 4, 3, 1, 0, 2, 0, 1]));
        assert!(c.since(&b).longest_le_s.unwrap().is_infinite());
        assert_eq!(c.since(&b).to_string(), "1 turns, 1 over 20 ms, longest > 1 s");
        assert_eq!(b.since(&TurnCounts::default()).turns, 60);
        assert!(parse("nothing here\n").is_empty());
    }
}
