//! `ringsfu-composer` driven through ringsfu's feed (`record::feed`) with streams a browser
//! would not send: a publisher that never sends a VP8 keyframe (only inter frames) keeps the
//! recording going (its tile stays black) and the file is complete; garbage payloads do not
//! fail it either. Needs the composer (`cargo build --features composer`) and ffprobe; skipped
//! without them unless RINGSFU_REQUIRE_TOOLS is set.

use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringsfu::record::feed::{self, Composer, FeedEvent, StartParams, TrackSpec};
use ringsfu::record::mkv::TrackKind;

fn composer() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ringsfu")).with_file_name("ringsfu-composer");
    let tools = Command::new("ffprobe").arg("-version").output().is_ok();
    if bin.exists() && tools {
        return Some(bin);
    }
    assert!(
        std::env::var_os("RINGSFU_REQUIRE_TOOLS").is_none(),
        "{} or ffprobe missing (cargo build --features composer)",
        bin.display()
    );
    eprintln!("skipped: no {} or no ffprobe", bin.display());
    None
}

#[test]
fn a_publisher_without_keyframes_leaves_a_complete_file() {
    let Some(bin) = composer() else { return };
    let dir = std::env::temp_dir().join(format!("ringsfu-composer-faults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("nokey.mp4");
    let c = Composer::launch(&bin).unwrap();
    let start = StartParams {
        width: 320,
        height: 240,
        fps: 15,
        has_audio: true,
        has_video: true,
        path: path.clone(),
        thumbnail: Some(dir.join("nokey.jpg")),
    };
    let (tx, rx) = mpsc::channel();
    let h = feed::spawn(c, start, move |e| tx.send(e).unwrap()).unwrap();
    let vp8 = TrackSpec { pt: 96, clock_rate: 90000, codec: "VP8".into() };
    let mut nokey = h.add_stream(None, Some(vp8.clone()), 1024);
    let mut garbage = h.add_stream(None, Some(vp8), 1024);
    // 3 s at 15 fps: VP8 inter frames only (frame tag bit 0 set), and random-looking bytes.
    let t0 = Instant::now();
    for n in 0..45u32 {
        let seq = n as u16;
        let ts = n * 6000;
        let mut inter = vec![0x10, 0x01, 0x00, 0x00];
        inter.extend((0..300u32).map(|i| (i.wrapping_mul(31) ^ n) as u8));
        nokey.push(TrackKind::Video, seq, ts, true, &inter);
        let junk: Vec<u8> =
            (0..500u32).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8 ^ n as u8).collect();
        garbage.push(TrackKind::Video, seq, ts, true, &junk);
        nokey.wake();
        garbage.wake();
        let due = t0 + Duration::from_millis(u64::from(n + 1) * 1000 / 15);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    let wall = t0.elapsed().as_secs_f64();
    h.stop();
    let ev = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let FeedEvent::Finished { size, duration_ms, .. } = ev else { panic!("{ev:?}") };
    assert_eq!(size, std::fs::metadata(&path).unwrap().len());
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration:stream=codec_name,width,height"])
        .args(["-of", "default=nw=1"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("codec_name=h264") && text.contains("width=320"), "{text}");
    assert!(text.contains("codec_name=aac"), "{text}");
    let d: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("duration="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!((d - wall).abs() <= 0.15 * wall + 0.3, "{d} s for {wall} s; {duration_ms} ms reported");
    assert!(!dir.join("nokey.mp4.part").exists(), "the .part was renamed");
    let _ = std::fs::remove_dir_all(&dir);
}
