//! Replays the committed fuzz corpora and crash regressions through the same bodies the fuzz
//! targets run (`ringsfu::fuzzing` and `fuzz/differential.rs`), on stable Rust.
//!
//! `fuzz/corpus/<target>/*`, `fuzz/found/<target>/*` and `fuzz/regressions/<target>/*` go through the body named
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
        "rtcp_xr" => f::rtcp_xr,
        "codec_inspect" => f::codec_inspect,
        "av1_dd" => f::av1_dd,
        "layer_switch" => f::layer_switch,
        "stun_diff" => differential::stun,
        "rtp_diff" => differential::rtp,
        "rtcp_diff" => differential::rtcp,
        "record_depack" => f::record_depack,
        "compose_wire" => f::compose_wire,
        "mkv_roundtrip" => differential::mkv_roundtrip,
        "load_sim" => f::load_sim,
        "ingest_h264" => f::ingest_h264,
        "relay_offer" => f::relay_offer,
        "cluster_plan" => f::cluster_plan,
        "janus_signal" => f::janus_signal,
        "signaling" => f::signaling,
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

/// What the long campaigns kept (`fuzz/run_all.sh --campaign`: inputs that added coverage,
/// minimised; not well-formed in general, unlike the seeds).
#[test]
fn found_replays() {
    replay("found");
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
            "rtcp" | "rtcp_roundtrip" | "rtcp_diff" | "rtcp_xr" => RtcpCompound::parse_relaxed(&d)
                .map(|c| c.packets().all(|p| p.is_ok()))
                .unwrap_or(false),
            "channel_data" => ChannelDataView::parse(&d).is_ok(),
            "dtls_record" => records(&d).all(|r| r.is_ok()),
            "demux" => demux(&d).is_ok(),
            "webhook_endpoint" => std::str::from_utf8(&d)
                .ok()
                .and_then(ringsfu::config::endpoint::parse_endpoint)
                .is_some(),
            "codec_inspect" => d.split_first().is_some_and(|(&sel, p)| {
                use ringsfu::wire::codec::{Codec, inspect};
                let c = [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1][sel as usize & 3];
                inspect(c, p, sel & 0x80 != 0).is_ok()
            }),
            "av1_dd" => d.split_first().is_some_and(|(&n, rest)| {
                rest.get(..n as usize)
                    .is_some_and(|f| ringsfu::wire::codec::av1_dd::parse(f, None).is_ok())
            }),
            "signaling" => {
                std::str::from_utf8(&d).is_ok_and(|t| ringsfu::signaling::parse(t).is_ok())
            }
            "metrics_turns" => {
                std::str::from_utf8(&d).is_ok_and(|t| !ringsfu::load::turns::parse(t).is_empty())
            }
            _ => true,
        };
        assert!(ok, "seed {} does not parse", path.display());
    }
}

/// The real payloads in `corpus/codec_inspect/` (ffmpeg's libvpx VP8/VP9 and libx264 H.264
/// RTP, a libaom AV1 temporal unit) are classified as what they are: the first packet of the
/// stream is a keyframe start, later frame starts are delta frames, frame ends are ends.
#[test]
fn real_payloads_are_classified() {
    use ringsfu::wire::codec::{Codec, inspect};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/codec_inspect");
    let get = |name: &str| {
        let d = fs::read(dir.join(name)).unwrap();
        let c = [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1][d[0] as usize & 3];
        inspect(c, &d[1..], d[0] & 0x80 != 0).unwrap()
    };
    for codec in ["vp8", "vp9", "h264"] {
        let first = get(&format!("ffmpeg_{codec}_first"));
        assert!(first.keyframe && first.frame_start, "{codec} first packet");
        let end = get(&format!("ffmpeg_{codec}_first_frame_end"));
        assert!(end.frame_end && !end.frame_start && !end.keyframe, "{codec} frame end");
        for later in ["second_frame_start", "delta_frame_start"] {
            let i = get(&format!("ffmpeg_{codec}_{later}"));
            assert!(i.frame_start && !i.keyframe, "{codec} {later}");
        }
    }
    let vp8 = get("ffmpeg_vp8_second_frame_start");
    assert_eq!(vp8.picture_id.map(|p| (p.value, p.long)), Some((1, true)));
    let key = get("libaom_av1_keyframe_first");
    assert!(key.keyframe && key.frame_start && !key.frame_end);
    let last = get("libaom_av1_keyframe_last");
    assert!(!last.frame_start && last.frame_end && !last.keyframe);
    assert!(!get("libaom_av1_delta").keyframe);
}
