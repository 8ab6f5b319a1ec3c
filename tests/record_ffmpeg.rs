//! INDIVIDUAL recording against real bitstreams: Debian's `ffmpeg` encodes a test pattern
//! (libx264 baseline) and a sine (libopus) and sends them as RTP to UDP sockets this test
//! binds on loopback; the captured packets, reordered and with some dropped (re-delivered
//! when the recorder NACKs them), go through `RecorderCore` or the recorder thread; the file
//! is checked by `ffprobe` (codecs, dimensions, frame count within 2%, duration within 5%)
//! and `mkvinfo` (cues present, every cluster starts with a video keyframe).
//!
//! Needs `ffmpeg`, `ffprobe` and `mkvinfo` (`tools/test.sh` installs them); without them the
//! tests fail, unless `RINGSFU_SKIP_FFMPEG` is set, when they skip with a message.

use std::collections::BTreeMap;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringsfu::record::depack::{Codec, read_leb128, write_leb128};
use ringsfu::record::mkv::TrackKind;
use ringsfu::record::recorder::{Output, RecorderConfig, RecorderCore, Summary};
use ringsfu::record::writer::{RecorderEvent, Request, spawn};
use ringsfu::wire::rtp::RtpView;

#[derive(Clone, Debug)]
struct Pkt {
    /// Which publisher (a reconnect starts the next epoch).
    epoch: u8,
    track: TrackKind,
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
}

fn tools_present() -> bool {
    let ok = [("ffmpeg", "-version"), ("ffprobe", "-version"), ("mkvinfo", "--version")]
        .iter()
        .all(|(t, a)| Command::new(t).arg(a).output().is_ok_and(|o| o.status.success()));
    if !ok {
        if std::env::var_os("RINGSFU_SKIP_FFMPEG").is_some() {
            eprintln!("SKIPPED: ffmpeg/ffprobe/mkvinfo missing and RINGSFU_SKIP_FFMPEG is set");
            return false;
        }
        panic!("ffmpeg, ffprobe and mkvinfo are needed (apt-get install ffmpeg mkvtoolnix)");
    }
    true
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringsfu-rec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bind() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let s2 = socket2::SockRef::from(&s);
    let _ = s2.set_recv_buffer_size(8 << 20);
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    s
}

/// Runs ffmpeg with `video_args` (None: no video) and an Opus sine, `secs` long, and returns
/// every RTP packet received, in arrival order.
fn capture(video_args: Option<&[&str]>, secs: u32) -> Vec<Pkt> {
    let vs = bind();
    let aus = bind();
    let (tx, rx) = mpsc::channel();
    let mut threads = Vec::new();
    for (sock, track) in
        [(vs.try_clone().unwrap(), TrackKind::Video), (aus.try_clone().unwrap(), TrackKind::Audio)]
    {
        let tx = tx.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut idle = 0;
            while idle < 25 {
                match sock.recv(&mut buf) {
                    Ok(n) => {
                        idle = 0;
                        let Ok(v) = RtpView::parse(&buf[..n]) else { continue };
                        if v.payload_type() >= 72 && v.payload_type() <= 76 {
                            continue; // RTCP on the same port
                        }
                        let p = Pkt {
                            epoch: 0,
                            track,
                            seq: v.sequence_number(),
                            ts: v.timestamp(),
                            marker: v.marker(),
                            payload: v.payload().to_vec(),
                        };
                        if tx.send(p).is_err() {
                            return;
                        }
                    }
                    Err(_) => idle += 1,
                }
            }
        }));
    }
    drop(tx);
    let t = secs.to_string();
    let vport = vs.local_addr().unwrap().port();
    let aport = aus.local_addr().unwrap().port();
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-loglevel", "error", "-nostdin", "-re", "-sdp_file", "/dev/null"]);
    if video_args.is_some() {
        cmd.args(["-f", "lavfi", "-i", &format!("testsrc=size=320x240:rate=30:duration={t}")]);
    }
    cmd.args(["-f", "lavfi", "-i", &format!("sine=frequency=440:sample_rate=48000:duration={t}")]);
    if let Some(v) = video_args {
        cmd.args(["-map", "0:v"]).args(v).args([
            "-f",
            "rtp",
            &format!("rtp://127.0.0.1:{vport}?pkt_size=1200"),
        ]);
    }
    let amap = if video_args.is_some() { "1:a" } else { "0:a" };
    cmd.args(["-map", amap, "-c:a", "libopus", "-b:a", "48k", "-ac", "2", "-f", "rtp"])
        .arg(format!("rtp://127.0.0.1:{aport}?pkt_size=1200"));
    let st = cmd.status().expect("run ffmpeg");
    assert!(st.success(), "ffmpeg failed: {st}");
    for t in threads {
        t.join().unwrap();
    }
    rx.into_iter().collect()
}

const H264: &[&str] = &[
    "-pix_fmt",
    "yuv420p",
    "-c:v",
    "libx264",
    "-profile:v",
    "baseline",
    "-tune",
    "zerolatency",
    "-g",
    "30",
    "-bsf:v",
    "h264_mp4toannexb",
];

fn video_frames(pkts: &[Pkt]) -> usize {
    let mut ts: Vec<u32> =
        pkts.iter().filter(|p| p.track == TrackKind::Video).map(|p| p.ts).collect();
    ts.sort_unstable();
    ts.dedup();
    ts.len()
}

/// Arrival order with impairments: every 7th video packet swapped with its successor, every
/// 5th audio packet too, and every 40th video packet held back (re-sent on NACK).
fn impair(pkts: &[Pkt]) -> (Vec<Pkt>, BTreeMap<u16, Pkt>) {
    let mut out: Vec<Pkt> = Vec::new();
    let mut held = BTreeMap::new();
    let mut vi = 0;
    for p in pkts {
        if p.track == TrackKind::Video {
            vi += 1;
            if vi % 40 == 0 {
                held.insert(p.seq, p.clone());
                continue;
            }
        }
        out.push(p.clone());
    }
    let mut i = 0;
    while i + 1 < out.len() {
        if i % 7 == 3 {
            out.swap(i, i + 1);
        }
        i += 2;
    }
    (out, held)
}

struct Probe {
    codecs: Vec<String>,
    width: u64,
    height: u64,
    video_frames: u64,
    duration: f64,
}

/// The checks every audio + video recording passes: `ffprobe` finds `codec` and Opus at
/// 320x240, the video frames within 2% of `sent`, the duration within 5% of `duration` s, and
/// `mkvinfo` sees clusters that start at keyframes with cues.
fn check_av_file(path: &Path, codec: &str, sent: usize, duration: f64) {
    let p = ffprobe(path);
    assert_eq!(p.codecs, vec![codec, "opus"]);
    assert_eq!((p.width, p.height), (320, 240));
    assert!(
        within(p.video_frames as f64, sent as f64, 0.02),
        "{} frames read, {sent} sent",
        p.video_frames
    );
    assert!(within(p.duration, duration, 0.05), "duration {}", p.duration);
    check_mkvinfo(path, true);
}

fn ffprobe(path: &Path) -> Probe {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_entries"])
        .arg("stream=codec_name,codec_type,width,height,nb_read_frames:format=duration")
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "ffprobe: {}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut p = Probe { codecs: vec![], width: 0, height: 0, video_frames: 0, duration: 0.0 };
    for s in j["streams"].as_array().unwrap() {
        p.codecs.push(s["codec_name"].as_str().unwrap_or("").to_string());
        if s["codec_type"] == "video" {
            p.width = s["width"].as_u64().unwrap_or(0);
            p.height = s["height"].as_u64().unwrap_or(0);
            p.video_frames = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
        }
    }
    p.duration = j["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    p
}

/// mkvinfo: cue points present, and the first block of every cluster a video keyframe.
fn check_mkvinfo(path: &Path, with_video: bool) {
    let o = Command::new("mkvinfo").arg("-a").arg(path).output().unwrap();
    assert!(o.status.success(), "mkvinfo: {}", String::from_utf8_lossy(&o.stdout));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("Cue point"), "no cues:\n{text}");
    let mut clusters = 0;
    let mut first_block = false;
    for line in text.lines() {
        if line.trim_start_matches('|').trim() == "+ Cluster" {
            clusters += 1;
            first_block = true;
        } else if first_block && line.contains("Simple block") {
            first_block = false;
            if with_video {
                assert!(
                    line.contains("key") && line.contains("track number 1"),
                    "cluster {clusters} starts with {line}"
                );
            }
        }
    }
    assert!(clusters >= 1, "no clusters:\n{text}");
    let cues = text.matches("+ Cue point").count();
    if with_video {
        assert_eq!(cues, clusters, "one cue point per cluster:\n{text}");
        // The encoders here make a keyframe every 30 frames: not every frame is one.
        let key_blocks =
            text.lines().filter(|l| l.contains("Simple block: key, track number 1")).count();
        let blocks = text.lines().filter(|l| l.contains("track number 1,")).count();
        assert!(key_blocks * 10 < blocks, "{key_blocks} of {blocks} video blocks are keyframes");
    }
}

fn within(actual: f64, expected: f64, frac: f64) -> bool {
    (actual - expected).abs() <= expected * frac
}

/// Feeds `arrival` into a core on a virtual clock (each packet at its RTP time), answering
/// NACKs from `held`; returns the file and the summary.
fn record_core(
    cfg: RecorderConfig,
    arrival: &[Pkt],
    mut held: BTreeMap<u16, Pkt>,
) -> (Vec<u8>, Summary, usize, usize) {
    let t0 = Instant::now();
    let mut core = RecorderCore::new(t0, cfg);
    let mut file = Vec::new();
    let mut summary = None;
    let (mut nacks, mut plis) = (0, 0);
    let mut first: BTreeMap<bool, u32> = BTreeMap::new();
    let mut now = t0;
    let mut base = t0;
    let mut epoch = arrival.first().map_or(0, |p| p.epoch);
    let mut resend: Vec<Pkt> = Vec::new();
    let mut drain = |core: &mut RecorderCore,
                     file: &mut Vec<u8>,
                     resend: &mut Vec<Pkt>,
                     summary: &mut Option<Summary>| {
        while let Some(o) = core.poll_output() {
            match o {
                Output::Append(b) => file.extend_from_slice(&b),
                Output::Patch(p) => assert!(p.apply(file), "patch outside the file"),
                Output::Nack { seqs, .. } => {
                    nacks += 1;
                    for s in seqs {
                        if let Some(p) = held.remove(&s) {
                            resend.push(p);
                        }
                    }
                }
                Output::Pli => plis += 1,
                Output::Note(_) => {}
                Output::Finished(s) => *summary = Some(s),
            }
        }
    };
    for p in arrival {
        if p.epoch != epoch {
            // The publisher reconnected: a new SSRC, new sequence numbers and timestamps.
            epoch = p.epoch;
            now += Duration::from_millis(500);
            base = now;
            first.clear();
            core.restart_track(now, TrackKind::Video);
            core.restart_track(now, TrackKind::Audio);
        }
        let rate = if p.track == TrackKind::Video { 90_000.0 } else { 48_000.0 };
        let f = *first.entry(p.track == TrackKind::Video).or_insert(p.ts);
        let at = base + Duration::from_secs_f64(f64::from(p.ts.wrapping_sub(f)) / rate);
        now = now.max(at);
        if let Some(t) = core.poll_timeout()
            && t <= now
        {
            core.handle_timeout(t);
        }
        core.handle_rtp(now, p.track, p.seq, p.ts, p.marker, &p.payload);
        drain(&mut core, &mut file, &mut resend, &mut summary);
        for r in std::mem::take(&mut resend) {
            core.handle_rtp(now, r.track, r.seq, r.ts, r.marker, &r.payload);
            drain(&mut core, &mut file, &mut resend, &mut summary);
        }
    }
    now += Duration::from_secs(1);
    core.handle_timeout(now);
    core.close(now);
    drain(&mut core, &mut file, &mut resend, &mut summary);
    (file, summary.expect("Finished"), nacks, plis)
}

/// Captures `secs` of ffmpeg output, records it through the core with impairments and NACK
/// re-delivery, and checks the file with ffprobe and mkvinfo.
fn roundtrip_core(name: &str, args: &[&str], codec: Codec, probe_name: &str) {
    let pkts = capture(Some(args), 3);
    let sent = video_frames(&pkts);
    assert!(sent >= 85, "captured {sent} video frames");
    let (arrival, held) = impair(&pkts);
    assert!(!held.is_empty());
    let (file, summary, nacks, _plis) =
        record_core(RecorderConfig::new(Some(codec), true), &arrival, held);
    assert!(nacks > 0, "the held packets were NACKed");
    let dir = tmpdir(name);
    let path = dir.join(if codec == Codec::H264 { "rec.mkv" } else { "rec.webm" });
    std::fs::write(&path, &file).unwrap();
    assert_eq!(summary.size, file.len() as u64);
    assert_eq!((summary.width, summary.height), (320, 240));
    check_av_file(&path, probe_name, sent, 3.0);
}

#[test]
fn h264_opus_reordered_with_nacks_through_the_core() {
    if tools_present() {
        roundtrip_core("h264", H264, Codec::H264, "h264");
    }
}

#[test]
fn h264_high_profile_opus_through_the_core() {
    if tools_present() {
        let high = [
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-profile:v",
            "high",
            "-tune",
            "zerolatency",
            "-g",
            "30",
            "-bsf:v",
            "h264_mp4toannexb",
        ];
        roundtrip_core("h264high", &high, Codec::H264, "h264");
    }
}

#[test]
fn vp8_opus_reordered_with_nacks_through_the_core() {
    if tools_present() {
        let vp8 = [
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "30",
            "-b:v",
            "300k",
        ];
        roundtrip_core("vp8", &vp8, Codec::Vp8, "vp8");
    }
}

#[test]
fn vp9_opus_reordered_with_nacks_through_the_core() {
    if tools_present() {
        let vp9 = [
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "30",
            "-b:v",
            "300k",
            "-strict",
            "experimental",
        ];
        roundtrip_core("vp9", &vp9, Codec::Vp9, "vp9");
    }
}

#[test]
fn h264_lost_packets_ask_for_a_keyframe_and_the_file_still_decodes() {
    if !tools_present() {
        return;
    }
    let pkts = capture(Some(H264), 3);
    let sent = video_frames(&pkts);
    let (arrival, held) = impair(&pkts);
    // Nothing is re-sent: the recorder gives up on the gaps, asks for a PLI and skips to the
    // next keyframe (every 30 frames here).
    let lost = held.len();
    let (file, summary, _, plis) =
        record_core(RecorderConfig::new(Some(Codec::H264), true), &arrival, BTreeMap::new());
    assert!(plis >= 1, "PLI after a lost frame");
    let dir = tmpdir("loss");
    let path = dir.join("rec.mkv");
    std::fs::write(&path, &file).unwrap();
    let p = ffprobe(&path);
    assert_eq!(p.codecs, vec!["h264", "opus"]);
    assert!(p.video_frames < sent as u64, "{lost} packets lost, yet all {sent} frames written");
    assert_eq!(p.video_frames, summary.video_frames, "every written frame decodes");
    check_mkvinfo(&path, true);
}

#[test]
fn a_reconnected_publisher_goes_on_in_the_same_file() {
    if !tools_present() {
        return;
    }
    let first = capture(Some(H264), 2);
    let mut second = capture(Some(H264), 2);
    for p in &mut second {
        p.epoch = 1;
    }
    let sent = video_frames(&first) + video_frames(&second);
    let mut all = first;
    all.extend(second);
    let (file, summary, _, _) =
        record_core(RecorderConfig::new(Some(Codec::H264), true), &all, BTreeMap::new());
    let dir = tmpdir("reconnect");
    let path = dir.join("rec.mkv");
    std::fs::write(&path, &file).unwrap();
    let p = ffprobe(&path);
    assert_eq!(p.codecs, vec!["h264", "opus"]);
    assert!(
        within(p.video_frames as f64, sent as f64, 0.02),
        "{} frames read, {sent} sent",
        p.video_frames
    );
    // Two 2 s publishers with 0.5 s between them.
    assert!(within(p.duration, 4.5, 0.05), "duration {}", p.duration);
    assert_eq!(summary.video_frames, p.video_frames);
    check_mkvinfo(&path, true);
}

#[test]
fn h264_opus_through_the_recorder_thread() {
    if !tools_present() {
        return;
    }
    let pkts = capture(Some(H264), 3);
    let sent = video_frames(&pkts);
    let (mut arrival, held) = impair(&pkts);
    // No retransmission here: the held packets come late, out of order.
    arrival.extend(held.into_values());
    let dir = tmpdir("thread");
    let path = dir.join("rec.mkv");
    let (tx, rx) = mpsc::channel();
    let mut cfg = RecorderConfig::new(Some(Codec::H264), true);
    cfg.reorder_capacity = 4096;
    cfg.reorder_wait = Duration::from_secs(30);
    let (mut input, handle) = spawn(path.clone(), cfg, 8192, move |e| {
        let _ = tx.send(e);
    })
    .unwrap();
    for p in &arrival {
        assert!(input.push(p.track, p.seq, p.ts, p.marker, &p.payload), "ring full");
    }
    input.wake();
    let mut requests = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && requests == 0 {
        while let Some(r) = input.poll_request() {
            assert!(matches!(r, Request::Nack { .. } | Request::Pli));
            requests += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.stop();
    handle.join();
    let events: Vec<RecorderEvent> = rx.try_iter().collect();
    let Some(RecorderEvent::Finished(s)) =
        events.iter().find(|e| matches!(e, RecorderEvent::Finished(_)))
    else {
        panic!("no Finished: {events:?}");
    };
    assert_eq!(s.size, std::fs::metadata(&path).unwrap().len());
    let p = ffprobe(&path);
    assert_eq!(p.codecs, vec!["h264", "opus"]);
    assert!(
        within(p.video_frames as f64, sent as f64, 0.02),
        "{} frames read, {sent} sent",
        p.video_frames
    );
    assert!(within(p.duration, 3.0, 0.05), "duration {}", p.duration);
    check_mkvinfo(&path, true);
}

/// NAL unit types in an H.264 RTP payload (inside STAP-A, of a FU-A).
fn nal_types(p: &[u8]) -> Vec<u8> {
    let Some(&h) = p.first() else { return vec![] };
    match h & 0x1F {
        24 => {
            let mut out = vec![];
            let mut rest = &p[1..];
            while rest.len() > 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                if let Some(&n) = rest.get(2) {
                    out.push(n & 0x1F);
                }
                rest = rest.get(2 + len..).unwrap_or(&[]);
            }
            out
        }
        28 => p.get(1).map(|f| vec![f & 0x1F]).unwrap_or_default(),
        t => vec![t],
    }
}

#[test]
fn a_stream_without_keyframes_closes_audio_only_with_a_reason() {
    if !tools_present() {
        return;
    }
    let pkts = capture(Some(H264), 2);
    // Drop every packet of every keyframe (x264 IDR frames are the ones with SPS in STAP-A
    // or an IDR NAL): simplest, drop every video frame whose packets contain NAL type 5/7.
    let mut key_ts = std::collections::HashSet::new();
    for p in pkts.iter().filter(|p| p.track == TrackKind::Video) {
        if nal_types(&p.payload).iter().any(|t| matches!(t, 5 | 7 | 8)) {
            key_ts.insert(p.ts);
        }
    }
    let arrival: Vec<Pkt> = pkts.into_iter().filter(|p| !key_ts.contains(&p.ts)).collect();
    assert!(arrival.iter().any(|p| p.track == TrackKind::Video), "delta frames left");
    let mut cfg = RecorderConfig::new(Some(Codec::H264), true);
    cfg.keyframe_wait = Duration::from_millis(500);
    let (file, summary, _, plis) = record_core(cfg, &arrival, BTreeMap::new());
    assert!(plis >= 1, "asked for a keyframe");
    assert!(!summary.has_video && summary.has_audio);
    assert!(summary.no_video_reason.is_some());
    let dir = tmpdir("nokey");
    let path = dir.join("rec.webm");
    std::fs::write(&path, &file).unwrap();
    let p = ffprobe(&path);
    assert_eq!(p.codecs, vec!["opus"]);
    assert!(p.duration > 1.0, "duration {}", p.duration);
}

#[test]
fn disk_full_fails_with_a_reason() {
    let (tx, rx) = mpsc::channel();
    let (mut input, handle) =
        spawn(PathBuf::from("/dev/full"), RecorderConfig::new(None, true), 256, move |e| {
            let _ = tx.send(e);
        })
        .unwrap();
    // Opus frames: anything non-empty is a frame.
    for i in 0..300u16 {
        input.push(TrackKind::Audio, i, u32::from(i) * 960, true, &[0xFC; 100]);
        if i % 50 == 0 {
            input.wake();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    handle.stop();
    handle.join();
    let events: Vec<RecorderEvent> = rx.try_iter().collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RecorderEvent::Failed { reason, .. } if reason == "disk full")),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, RecorderEvent::Finished(_))), "{events:?}");
}

#[test]
fn an_unwritable_path_fails_with_a_reason() {
    let (tx, rx) = mpsc::channel();
    let (_input, handle) = spawn(
        PathBuf::from("/nonexistent-dir/rec.webm"),
        RecorderConfig::new(None, true),
        16,
        move |e| {
            let _ = tx.send(e);
        },
    )
    .unwrap();
    handle.stop();
    handle.join();
    let events: Vec<RecorderEvent> = rx.try_iter().collect();
    assert!(
        events.iter().any(|e| matches!(e, RecorderEvent::Failed { reason, .. } if reason.starts_with("cannot create"))),
        "{events:?}"
    );
}

fn read_leb(d: &[u8]) -> (usize, usize) {
    read_leb128(d).expect("a valid leb128")
}

/// A minimal AV1 RTP packetizer for the test (ffmpeg 5.1 has none): the temporal units of a
/// low-overhead OBU stream, temporal delimiters dropped, each OBU an element without its size
/// field, W = 0 (every element length-prefixed), fragmented at 1000 bytes with Y / Z.
fn av1_packets(obus: &[u8]) -> Vec<Pkt> {
    let mut tus: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut at = 0;
    while at < obus.len() {
        let h = obus[at];
        let ext = usize::from((h >> 2) & 1);
        assert!(h & 2 != 0, "size field");
        let (size, used) = read_leb(&obus[at + 1 + ext..]);
        let body_at = at + 1 + ext + used;
        let ty = (h >> 3) & 0xF;
        if ty == 2 {
            tus.push(Vec::new());
        } else {
            let mut el = vec![h & !2];
            el.extend_from_slice(&obus[at + 1..at + 1 + ext]);
            el.extend_from_slice(&obus[body_at..body_at + size]);
            tus.last_mut().expect("stream starts with a temporal delimiter").push(el);
        }
        at = body_at + size;
    }
    let mut out = Vec::new();
    let mut seq = 5000u16;
    for (i, tu) in tus.iter().enumerate() {
        let ts = 7_000 + (i as u32) * 3000;
        let key = tu.iter().any(|el| (el[0] >> 3) & 0xF == 1);
        let mut pkts: Vec<Vec<u8>> = vec![vec![if key { 0x08 } else { 0 }]];
        for el in tu {
            let mut rest = &el[..];
            while !rest.is_empty() {
                let cur = pkts.last_mut().unwrap();
                let room = 1000usize.saturating_sub(cur.len() + 2);
                if room < 16 {
                    pkts.push(vec![0]);
                    continue;
                }
                let take = rest.len().min(room);
                write_leb128(take, cur);
                cur.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if !rest.is_empty() {
                    cur[0] |= 0x40; // Y: continues in the next packet
                    pkts.push(vec![0x80]); // Z
                }
            }
        }
        let n = pkts.len();
        for (k, p) in pkts.into_iter().enumerate() {
            out.push(Pkt {
                epoch: 0,
                track: TrackKind::Video,
                seq,
                ts,
                marker: k + 1 == n,
                payload: p,
            });
            seq = seq.wrapping_add(1);
        }
    }
    out
}

#[test]
fn av1_opus_reordered_with_nacks_through_the_core() {
    if !tools_present() {
        return;
    }
    let dir = tmpdir("av1");
    let obu = dir.join("in.obu");
    let st = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-nostdin",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=30:duration=3",
        ])
        .args([
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libaom-av1",
            "-cpu-used",
            "8",
            "-usage",
            "realtime",
            "-g",
            "30",
        ])
        .args(["-f", "obu"])
        .arg(&obu)
        .status()
        .unwrap();
    assert!(st.success());
    let video = av1_packets(&std::fs::read(&obu).unwrap());
    let audio = capture(None, 3);
    // Arrival in time order (each track at its RTP time from its first packet).
    let at = |p: &Pkt, first: u32, rate: f64| f64::from(p.ts.wrapping_sub(first)) / rate;
    let mut all: Vec<(f64, Pkt)> =
        video.iter().map(|p| (at(p, video[0].ts, 90_000.0), p.clone())).collect();
    all.extend(audio.iter().map(|p| (at(p, audio[0].ts, 48_000.0), p.clone())));
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pkts: Vec<Pkt> = all.into_iter().map(|(_, p)| p).collect();
    let sent = video_frames(&pkts);
    assert!(sent >= 85, "{sent} temporal units");
    let (arrival, held) = impair(&pkts);
    let (file, summary, nacks, _) =
        record_core(RecorderConfig::new(Some(Codec::Av1), true), &arrival, held);
    assert!(nacks > 0);
    let path = dir.join("rec.webm");
    std::fs::write(&path, &file).unwrap();
    assert_eq!((summary.width, summary.height), (320, 240));
    check_av_file(&path, "av1", sent, 3.0);
}

#[test]
fn opus_only_is_webm_with_clusters_every_five_seconds() {
    if !tools_present() {
        return;
    }
    let pkts = capture(None, 6);
    let (arrival, _) = impair(&pkts);
    let (file, summary, _, plis) =
        record_core(RecorderConfig::new(None, true), &arrival, BTreeMap::new());
    assert_eq!(plis, 0);
    assert!(summary.has_audio && !summary.has_video && summary.no_video_reason.is_none());
    let dir = tmpdir("opus");
    let path = dir.join("rec.webm");
    std::fs::write(&path, &file).unwrap();
    let p = ffprobe(&path);
    assert_eq!(p.codecs, vec!["opus"]);
    assert!(within(p.duration, 6.0, 0.05), "duration {}", p.duration);
    check_mkvinfo(&path, false);
    let o = Command::new("mkvinfo").arg("-a").arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let clusters = text.lines().filter(|l| l.trim_start_matches('|').trim() == "+ Cluster").count();
    assert_eq!(clusters, 2, "6 s of audio in 5 s clusters:\n{text}");
}
