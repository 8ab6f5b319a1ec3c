//! Replays the committed fuzz corpora and crash regressions through the same bodies the fuzz
//! targets run (`ringsfu::fuzzing` and `fuzz/differential.rs`), on stable Rust.
//!
//! `fuzz/corpus/<target>/*` and `fuzz/regressions/<target>/*` go through the body named
//! `<target>`; every file also goes through `fuzzing::all`, which runs every parser, and
//! through the three differential bodies.

#[path = "../fuzz/differential.rs"]
mod differential;

use std::fs;
use std::path::{Path, PathBuf};

fn body(target: &str) -> Option<fn(&[u8])> {
    use ringsfu::fuzzing as f;
    Some(match target {
        "demux" => f::demux,
        "stun" => f::stun,
        "channel_data" => f::channel_data,
        "rtp" => f::rtp,
        "rtcp" => f::rtcp,
        "dtls_record" => f::dtls_record,
        "sdp" => f::sdp,
        "webhook_endpoint" => f::webhook_endpoint,
        "metrics_turns" => f::metrics_turns,
        "twcc_feedback" => f::twcc_feedback,
        "http_range" => f::http_range,
        "recording_json" => f::recording_json,
        "stun_roundtrip" => f::stun_roundtrip,
        "rtp_rewrite" => f::rtp_rewrite,
        "rtcp_roundtrip" => f::rtcp_roundtrip,
        "stun_diff" => differential::stun,
        "rtp_diff" => differential::rtp,
        "rtcp_diff" => differential::rtcp,
        "record_depack" => f::record_depack,
        "mkv_roundtrip" => differential::mkv_roundtrip,
        _ => return None,
    })
}

fn files(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let Ok(targets) = fs::read_dir(dir) else {
        return out;
    };
    for t in targets.flatten() {
        let name = t.file_name().to_string_lossy().into_owned();
        let Ok(entries) = fs::read_dir(t.path()) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_file() {
                out.push((name.clone(), e.path()));
            }
        }
    }
    out.sort();
    out
}

fn replay(sub: &str) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(sub);
    let mut n = 0;
    for (target, path) in files(&root) {
        let data = fs::read(&path).unwrap();
        let f = body(&target).unwrap_or_else(|| panic!("unknown fuzz target dir {target}"));
        f(&data);
        ringsfu::fuzzing::all(&data);
        ringsfu::fuzzing::stun_roundtrip(&data);
        ringsfu::fuzzing::rtp_rewrite(&data);
        ringsfu::fuzzing::rtcp_roundtrip(&data);
        differential::stun(&data);
        differential::rtp(&data);
        differential::rtcp(&data);
        n += 1;
    }
    n
}

#[test]
fn corpus_replays() {
    let n = replay("corpus");
    assert!(n >= 20, "expected the committed seed corpus, found {n} files");
}

#[test]
fn regressions_replay() {
    replay("regressions");
}

/// Every seed is well-formed for its own target: the seeds must get past the first parse.
#[test]
fn seeds_parse() {
    use ringsfu::wire::*;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, path) in files(&root) {
        let d = fs::read(&path).unwrap();
        let ok = match target.as_str() {
            "stun" | "stun_roundtrip" | "stun_diff" => StunView::parse(&d).is_ok(),
            "rtp" | "rtp_rewrite" | "rtp_diff" => RtpView::parse(&d).is_ok(),
            "rtcp" | "rtcp_roundtrip" | "rtcp_diff" => RtcpCompound::parse_relaxed(&d)
                .map(|c| c.packets().all(|p| p.is_ok()))
                .unwrap_or(false),
            "channel_data" => ChannelDataView::parse(&d).is_ok(),
            "dtls_record" => records(&d).all(|r| r.is_ok()),
            "demux" => demux(&d).is_ok(),
            "webhook_endpoint" => std::str::from_utf8(&d)
                .ok()
                .and_then(ringsfu::config::endpoint::parse_endpoint)
                .is_some(),
            "metrics_turns" => {
                std::str::from_utf8(&d).is_ok_and(|t| !ringsfu::load::turns::parse(t).is_empty())
            }
            _ => true,
        };
        assert!(ok, "seed {} does not parse", path.display());
    }
}
