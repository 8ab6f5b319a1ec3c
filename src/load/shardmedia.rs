//! Where the server put a session's media, as its `/metrics` tells it per shard: subscriber
//! legs (`ringsfu_shard_media_subscribers`, the consumers), publishers, mirror producers (a
//! publisher of another shard mirrored here for this shard's consumers), messages over the
//! shard mesh (`ringsfu_shard_mesh_out_total` / `_mesh_in_total`: packets, sender reports and
//! keyframe requests that crossed shards) and packets dropped because a mesh ring was full
//! (`ringsfu_shard_media_drops_total{reason="mesh_full"}`), beside those dropped because the
//! shard's transmit pool was full (`reason="tx_full"`) and all media drops.
//!
//! Read at the end of the ramp (where the consumers are) and around each measurement window
//! (the counters' difference is the window's cross-shard traffic).

use std::collections::BTreeMap;

/// One shard's media figures from one scrape (gauges as read, counters cumulative), or the
/// difference of two scrapes ([`ShardMedia::since`]: counters over the interval, gauges as at
/// its end).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardMedia {
    /// The shard's index as the `shard` label gives it.
    pub shard: u32,
    pub publishers: u64,
    /// Subscriber legs (consumers) on the shard.
    pub subscribers: u64,
    pub mirror_producers: u64,
    pub rtp_out: u64,
    pub mesh_out: u64,
    pub mesh_in: u64,
    pub mesh_full: u64,
    /// Media packets dropped because the shard's transmit pool was full.
    pub tx_full: u64,
    /// Media packets dropped for any reason (`mesh_full` and `tx_full` included).
    pub media_drops: u64,
}

/// The families read, and the field each fills.
const FAMILIES: [(&str, Field); 7] = [
    ("ringsfu_shard_media_publishers", Field::Publishers),
    ("ringsfu_shard_media_subscribers", Field::Subscribers),
    ("ringsfu_shard_mirror_producers", Field::Mirrors),
    ("ringsfu_shard_rtp_out_total", Field::RtpOut),
    ("ringsfu_shard_mesh_out_total", Field::MeshOut),
    ("ringsfu_shard_mesh_in_total", Field::MeshIn),
    ("ringsfu_shard_media_drops_total", Field::MeshFull),
];

#[derive(Clone, Copy)]
enum Field {
    Publishers,
    Subscribers,
    Mirrors,
    RtpOut,
    MeshOut,
    MeshIn,
    MeshFull,
}

/// A sample line: metric name, labels, value.
type Sample<'a> = (&'a str, Vec<(&'a str, &'a str)>, u64);

/// `(name, labels, value)` of a sample line; `None` for comments and lines that do not parse.
fn sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    // Counters print as integers; a float that is a whole number is accepted too.
    let value = match value.trim().parse::<u64>() {
        Ok(v) => v,
        Err(_) => {
            let f = value.trim().parse::<f64>().ok()?;
            if !(f.is_finite() && f >= 0.0) {
                return None;
            }
            f as u64
        }
    };
    let Some((name, labels)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let labels = labels.strip_suffix('}')?;
    let mut out = Vec::new();
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        out.push((k, v.strip_prefix('"')?.strip_suffix('"')?));
    }
    Some((name, out, value))
}

/// Every shard's figures in a `/metrics` text, by shard index (empty when the server exports
/// none of these families).
pub fn parse(text: &str) -> Vec<ShardMedia> {
    let mut shards: BTreeMap<u32, ShardMedia> = BTreeMap::new();
    for line in text.lines() {
        let Some((name, labels, v)) = sample(line) else { continue };
        let Some(&(_, field)) = FAMILIES.iter().find(|(n, _)| *n == name) else { continue };
        let label = |k: &str| labels.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let Some(shard) = label("shard").and_then(|s| s.parse::<u32>().ok()) else { continue };
        let m = shards.entry(shard).or_insert_with(|| ShardMedia { shard, ..Default::default() });
        match field {
            Field::Publishers => m.publishers = v,
            Field::Subscribers => m.subscribers = v,
            Field::Mirrors => m.mirror_producers = v,
            Field::RtpOut => m.rtp_out = v,
            Field::MeshOut => m.mesh_out = v,
            Field::MeshIn => m.mesh_in = v,
            Field::MeshFull => {
                m.media_drops = m.media_drops.saturating_add(v);
                match label("reason") {
                    Some("mesh_full") => m.mesh_full = v,
                    Some("tx_full") => m.tx_full = v,
                    _ => {}
                }
            }
        }
    }
    shards.into_values().collect()
}

impl ShardMedia {
    /// This scrape's counters minus `earlier`'s (0 where a counter went back: a restarted
    /// server), gauges as now.
    pub fn since(&self, earlier: Option<&ShardMedia>) -> ShardMedia {
        let d = |now: u64, f: fn(&ShardMedia) -> u64| now.saturating_sub(earlier.map_or(0, f));
        ShardMedia {
            rtp_out: d(self.rtp_out, |m| m.rtp_out),
            mesh_out: d(self.mesh_out, |m| m.mesh_out),
            mesh_in: d(self.mesh_in, |m| m.mesh_in),
            mesh_full: d(self.mesh_full, |m| m.mesh_full),
            tx_full: d(self.tx_full, |m| m.tx_full),
            media_drops: d(self.media_drops, |m| m.media_drops),
            ..self.clone()
        }
    }
}

/// Per shard, `after`'s figures since `before` (shards matched by index).
pub fn since(after: &[ShardMedia], before: &[ShardMedia]) -> Vec<ShardMedia> {
    after.iter().map(|a| a.since(before.iter().find(|b| b.shard == a.shard))).collect()
}

/// The sum over shards (its `shard` is the number of shards).
pub fn total(shards: &[ShardMedia]) -> ShardMedia {
    let mut t = ShardMedia { shard: shards.len() as u32, ..Default::default() };
    for s in shards {
        t.publishers += s.publishers;
        t.subscribers += s.subscribers;
        t.mirror_producers += s.mirror_producers;
        t.rtp_out += s.rtp_out;
        t.mesh_out += s.mesh_out;
        t.mesh_in += s.mesh_in;
        t.mesh_full += s.mesh_full;
        t.tx_full += s.tx_full;
        t.media_drops += s.media_drops;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP ringsfu_shard_media_subscribers Subscriber peers on the shard.
# TYPE ringsfu_shard_media_subscribers gauge
ringsfu_shard_media_subscribers{shard=\"0\"} 16
ringsfu_shard_media_subscribers{shard=\"1\"} 12
ringsfu_shard_media_publishers{shard=\"0\"} 1
ringsfu_shard_media_publishers{shard=\"1\"} 0
ringsfu_shard_mirror_producers{shard=\"1\"} 1
ringsfu_shard_mesh_out_total{shard=\"0\"} 2000
ringsfu_shard_mesh_in_total{shard=\"1\"} 1990
ringsfu_shard_media_drops_total{shard=\"0\",reason=\"srtp_failed\"} 7
ringsfu_shard_media_drops_total{shard=\"0\",reason=\"mesh_full\"} 10
ringsfu_shard_rtp_out_total{shard=\"0\"} 5e3
ringsfu_participants 29
";

    #[test]
    fn reads_every_shard() {
        let m = parse(TEXT);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            ShardMedia {
                shard: 0,
                publishers: 1,
                subscribers: 16,
                mirror_producers: 0,
                rtp_out: 5000,
                mesh_out: 2000,
                mesh_in: 0,
                mesh_full: 10,
                tx_full: 0,
                media_drops: 17,
            }
        );
        assert_eq!((m[1].subscribers, m[1].mirror_producers, m[1].mesh_in), (12, 1, 1990));
        let t = total(&m);
        assert_eq!(
            (t.shard, t.subscribers, t.mesh_out, t.mesh_in, t.mesh_full),
            (2, 28, 2000, 1990, 10)
        );
    }

    #[test]
    fn differences_are_counters_over_the_interval() {
        let before = parse(TEXT);
        let later = TEXT.replace("} 2000", "} 2500").replace("} 16", "} 20");
        let d = since(&parse(&later), &before);
        assert_eq!((d[0].mesh_out, d[0].subscribers, d[0].mesh_full), (500, 20, 0));
        // A counter that went back (a restarted server) gives 0, not a wrap.
        let d = since(&before, &parse(&later));
        assert_eq!(d[0].mesh_out, 0);
    }

    #[test]
    fn garbage_gives_nothing_and_never_panics() {
        for t in [
            "",
            "ringsfu_shard_media_subscribers",
            "ringsfu_shard_media_subscribers{shard=\"0\"}",
            "ringsfu_shard_media_subscribers{shard=\"x\"} 3",
            "ringsfu_shard_media_subscribers{shard=0} 3",
            "ringsfu_shard_media_subscribers{shard=\"0\" 3",
            "ringsfu_shard_media_subscribers{shard=\"0\"} -1",
            "ringsfu_shard_media_subscribers{shard=\"0\"} NaN",
            "ringsfu_shard_media_subscribers{=} 3",
            "{} 1",
            " ",
        ] {
            assert!(parse(t).is_empty(), "{t:?}");
        }
    }
}
