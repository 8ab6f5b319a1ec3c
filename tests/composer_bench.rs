//! COMPOSED recording cost (BENCHMARKS.md): `RINGSFU_COMPOSERS=<k>` compositions at once, each of
//! 4 publishers (real VP8 720p25 at 1.5 Mbit/s and Opus, made once by `gst-launch-1.0`), fed in
//! real time through the same feed ringsfu uses ([`ringsfu::record::feed`]: recorder rings, the
//! composer socket) into `ringsfu-composer` processes pinned with `taskset` to one core
//! (`RINGSFU_COMPOSER_CPU`, default 1). Reports each composer's CPU (from /proc) and whether
//! every file came out whole: its duration and frame count those of the wall time.
//!
//! Ignored by default (it needs the composer, GStreamer's tools and a quiet machine):
//! `cargo build --features composer && RINGSFU_COMPOSERS=2 cargo test --features composer
//! --test composer_bench -- --ignored --nocapture`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringsfu::record::feed::{self, Composer, FeedEvent, StartParams, TrackSpec};
use ringsfu::record::mkv::TrackKind;

/// RTP packets of an RFC 4571 stream file: (rtp timestamp, seq, marker, payload).
fn read_rtp(path: &Path) -> Vec<(u32, u16, bool, Vec<u8>)> {
    let b = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 2 <= b.len() {
        let n = usize::from(u16::from_be_bytes([b[i], b[i + 1]]));
        let p = &b[i + 2..i + 2 + n];
        i += 2 + n;
        let cc = usize::from(p[0] & 0x0f);
        let mut off = 12 + 4 * cc;
        if p[0] & 0x10 != 0 {
            let words = usize::from(u16::from_be_bytes([p[off + 2], p[off + 3]]));
            off += 4 + 4 * words;
        }
        let seq = u16::from_be_bytes([p[2], p[3]]);
        let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        out.push((ts, seq, p[1] & 0x80 != 0, p[off..].to_vec()));
    }
    out
}

fn gst(dir: &Path, name: &str, desc: &str) -> PathBuf {
    let out = dir.join(name);
    let args: Vec<String> = desc.split_whitespace().map(str::to_string).collect();
    let st = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(&args)
        .arg(format!("location={}", out.display()))
        .status()
        .expect("gst-launch-1.0 (gstreamer1.0-tools)");
    assert!(st.success(), "{desc}");
    out
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit_once(')').map_or("", |x| x.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the comm.
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn ffprobe(file: &Path) -> (f64, u64) {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries"])
        .args(["stream=nb_read_packets:format=duration", "-of", "default=nw=1:nk=1"])
        .arg(file)
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    let v: Vec<&str> = t.split_whitespace().collect();
    (
        v.get(1).and_then(|d| d.parse().ok()).unwrap_or(0.0),
        v.first().and_then(|n| n.parse().ok()).unwrap_or(0),
    )
}

#[test]
#[ignore = "benchmark: needs ringsfu-composer, gst-launch-1.0, ffprobe and a quiet machine"]
fn composed_recordings_of_four_720p_publishers_on_one_core() {
    let k: usize =
        std::env::var("RINGSFU_COMPOSERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    let cpu = std::env::var("RINGSFU_COMPOSER_CPU").unwrap_or_else(|_| "1".into());
    let secs: u64 =
        std::env::var("RINGSFU_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_ringsfu")).with_file_name("ringsfu-composer");
    assert!(bin.exists(), "{} (cargo build --features composer)", bin.display());
    let dir = std::env::temp_dir().join(format!("ringsfu-composer-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let video = gst(
        &dir,
        "v.rtp",
        "videotestsrc num-buffers=250 pattern=smpte horizontal-speed=4 ! \
        video/x-raw,width=1280,height=720,framerate=25/1 ! \
        vp8enc deadline=1 cpu-used=8 target-bitrate=1500000 keyframe-max-dist=50 ! \
        rtpvp8pay pt=96 mtu=1200 ! rtpstreampay ! filesink",
    );
    let audio = gst(
        &dir,
        "a.rtp",
        "audiotestsrc num-buffers=500 samplesperbuffer=960 wave=sine ! \
        audio/x-raw,rate=48000,channels=2 ! opusenc ! rtpopuspay pt=111 ! rtpstreampay ! filesink",
    );
    let (v, a) = (read_rtp(&video), read_rtp(&audio));
    let wrapper = dir.join("pinned-composer");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec taskset -c {cpu} {} \"$@\"\n", bin.display()),
    )
    .unwrap();
    Command::new("chmod").arg("755").arg(&wrapper).status().unwrap();

    let (tx, rx) = mpsc::channel();
    let mut feeds = Vec::new();
    let mut inputs = Vec::new();
    let mut pids = Vec::new();
    for i in 0..k {
        let c = Composer::launch(&wrapper).unwrap();
        pids.push(c.pid());
        let start = StartParams {
            width: 1280,
            height: 720,
            fps: 25,
            has_audio: true,
            has_video: true,
            path: dir.join(format!("rec{i}.mp4")),
            thumbnail: Some(dir.join(format!("rec{i}.jpg"))),
        };
        let tx = tx.clone();
        let h = feed::spawn(c, start, move |e| tx.send((i, e)).unwrap()).unwrap();
        for _ in 0..4 {
            let opus = TrackSpec { pt: 111, clock_rate: 48000, codec: "opus".into() };
            let vp8 = TrackSpec { pt: 96, clock_rate: 90000, codec: "VP8".into() };
            inputs.push(h.add_stream(Some(opus), Some(vp8), 2048));
        }
        feeds.push(h);
    }
    // Real time: each packet when its RTP timestamp is due; the 10 s clips loop.
    let (v0, a0) = (v[0].0, a[0].0);
    let v_span = v.last().unwrap().0.wrapping_sub(v0) + 3600;
    let a_span = a.last().unwrap().0.wrapping_sub(a0) + 960;
    let t0 = Instant::now();
    let mut cpu0 = None;
    let (mut vi, mut ai, mut vloop, mut aloop) = (0usize, 0usize, 0u32, 0u32);
    while t0.elapsed() < Duration::from_secs(secs) {
        let now_us = t0.elapsed().as_micros() as u64;
        if cpu0.is_none() && now_us > 3_000_000 {
            cpu0 = Some((Instant::now(), pids.iter().map(|&p| cpu_ticks(p)).collect::<Vec<_>>()));
        }
        loop {
            let (ts, seq, m, p) = &v[vi];
            let at = u64::from(ts.wrapping_sub(v0)) + u64::from(vloop) * u64::from(v_span);
            if at * 1000 / 90 > now_us {
                break;
            }
            let seq = seq.wrapping_add((vloop as usize * v.len()) as u16);
            let ts = ts.wrapping_add(vloop.wrapping_mul(v_span));
            for inp in &mut inputs {
                inp.push(TrackKind::Video, seq, ts, *m, p);
            }
            vi += 1;
            if vi == v.len() {
                (vi, vloop) = (0, vloop + 1);
            }
        }
        loop {
            let (ts, seq, m, p) = &a[ai];
            let at = u64::from(ts.wrapping_sub(a0)) + u64::from(aloop) * u64::from(a_span);
            if at * 1000 / 48 > now_us {
                break;
            }
            let seq = seq.wrapping_add((aloop as usize * a.len()) as u16);
            let ts = ts.wrapping_add(aloop.wrapping_mul(a_span));
            for inp in &mut inputs {
                inp.push(TrackKind::Audio, seq, ts, *m, p);
            }
            ai += 1;
            if ai == a.len() {
                (ai, aloop) = (0, aloop + 1);
            }
        }
        for inp in &mut inputs {
            inp.wake();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let (c_at, c0) = cpu0.unwrap();
    let c1: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
    let window = c_at.elapsed().as_secs_f64();
    let wall = t0.elapsed().as_secs_f64();
    let dropped: u64 = inputs.iter().map(|i| i.dropped()).sum();
    drop(inputs);
    for f in &feeds {
        f.stop();
    }
    let mut total = 0.0;
    let mut whole = true;
    for _ in 0..k {
        let (i, ev) = rx.recv_timeout(Duration::from_secs(60)).unwrap();
        let FeedEvent::Finished { size, .. } = ev else { panic!("composition {i}: {ev:?}") };
        let (d, frames) = ffprobe(&dir.join(format!("rec{i}.mp4")));
        let cores = (c1[i] - c0[i]) as f64 / 100.0 / window;
        total += cores;
        println!(
            "composition {i}: {cores:.3} core over {window:.1} s; file {size} bytes, {d:.2} s for \
             {wall:.2} s of wall time, {frames} frames ({:.1}/s)",
            frames as f64 / d.max(0.001)
        );
        whole &=
            (d - wall).abs() <= 0.05 * wall && (frames as f64 - 25.0 * d).abs() <= 0.05 * 25.0 * d;
    }
    println!(
        "{k} compositions of 4 x VP8 720p25 into 1280x720 25 fps on cpu {cpu}: {total:.3} core in all; ring drops {dropped}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(whole, "not sustained: a file's duration or frame rate is more than 5% short");
}
