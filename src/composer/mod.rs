//! `ringsfu-composer` (feature `composer`): one COMPOSED recording in a process of its own, on
//! GStreamer through gstreamer-rs, so a crash or a slow encoder never touches ringsfu's media
//! shards. It reads [`crate::record::compose_wire`] frames from the `SOCK_SEQPACKET` socket
//! ringsfu gives it as fd 3 ([`crate::record::feed`]).
//!
//! Pipeline (built on [`Frame::Start`]; GStreamer is loaded before, so a warm composer for
//! COMPOSED_QUICK_START only waits for that frame):
//! - video: a live black `videotestsrc` at the requested size and rate as the background pad of
//!   `compositor` (so the output runs at the requested rate from the start, whatever the
//!   publishers send), then `x264enc` → `h264parse` → `mp4mux` → `filesink`;
//! - audio: a live silent `audiotestsrc` into `audiomixer` → `avenc_aac` into the same mp4, or,
//!   audio-only, `opusenc` → `webmmux` (`.webm`);
//! - per track ([`Frame::StreamAdded`]): `appsrc` (`application/x-rtp`, live, stamped on
//!   arrival, leaky) → `rtpjitterbuffer` → depayloader → decoder (VP8, H.264, VP9; AV1 when the
//!   plugins exist) → a compositor pad placed by [`crate::record::grid::best_fit`] with
//!   `sizing-policy=keep-aspect-ratio` (black bars); Opus → `opusdec` → an `audiomixer` pad. A
//!   track that leaves gets EOS and its tile is hidden; the grid is laid out again. An error in
//!   a track's branch (an undecodable stream) ends that track only. A publisher that never
//!   sends a keyframe stays a black tile.
//!
//! The file is written as `<file>.part` and renamed once complete. [`Frame::End`] (or ringsfu
//! closing the socket) sends EOS; once the muxer has written the file: the thumbnail
//! `<id>.jpg` (480 px wide, from the middle, as OpenVidu's recorder makes it), then
//! [`Frame::Done`] with the file's size and duration, and exit 0. Any other pipeline error (a
//! full disk, a missing plugin) sends [`Frame::Error`] and exits 1: ringsfu reports the
//! recording failed with that reason.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::record::compose_wire::{Frame, MAX_FRAME, TrackKind};
use crate::record::grid::best_fit;

/// Jitter buffer latency per track.
const JITTER_MS: u32 = 200;
/// Extra latency of the mixers, so tracks joining later (with their jitter buffer) are not late.
const MIX_LATENCY_MS: u64 = 400;
/// Element names of a track's branch start with this, then the track number and `_`.
const TRACK_PREFIX: &str = "track";

/// The track whose branch `element` belongs to.
fn track_of(element: &str) -> Option<u16> {
    element.strip_prefix(TRACK_PREFIX)?.split_once('_')?.0.parse().ok()
}

/// How long the muxer may take to finish after the end.
const EOS_TIMEOUT: Duration = Duration::from_secs(20);

fn log(msg: &str) {
    eprintln!("ringsfu-composer[{}]: {msg}", std::process::id());
}

/// The socket to ringsfu.
#[derive(Clone, Copy)]
struct Sock(RawFd);

impl Sock {
    fn send(&self, f: &Frame<'_>) {
        let mut b = Vec::new();
        f.write(&mut b);
        // SAFETY: `b` is valid for the call. Blocking: these are rare, small frames.
        let _ = unsafe { libc::send(self.0, b.as_ptr().cast(), b.len(), libc::MSG_NOSIGNAL) };
    }

    /// The next message into `buf`: its length, 0 at the end of the stream.
    fn recv(&self, buf: &mut [u8]) -> usize {
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                return n as usize;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return 0;
            }
        }
    }
}

/// The output settings of [`Frame::Start`].
#[derive(Clone, Debug)]
struct Out {
    width: u32,
    height: u32,
    fps: i32,
    has_audio: bool,
    has_video: bool,
    path: String,
    thumbnail: String,
}

struct Track {
    src: gst_app::AppSrc,
    stream: u16,
    kind: TrackKind,
    /// The compositor or mixer pad.
    pad: gst::Pad,
}

struct Comp {
    pipeline: gst::Pipeline,
    out: Out,
    compositor: Option<gst::Element>,
    mixer: Option<gst::Element>,
    tracks: HashMap<u16, Track>,
    ended: bool,
}

fn make(factory: &str) -> Result<gst::Element, String> {
    gst::ElementFactory::make(factory).build().map_err(|_| {
        format!("GStreamer element {factory} is missing (install {})", plugin_of(factory))
    })
}

/// The Debian package that brings an element.
fn plugin_of(factory: &str) -> &'static str {
    match factory {
        "x264enc" => "gstreamer1.0-plugins-ugly",
        "avenc_aac" | "avdec_h264" => "gstreamer1.0-libav",
        "compositor" | "audiomixer" | "opusenc" | "opusdec" | "videotestsrc" | "audiotestsrc"
        | "videoconvert" | "audioconvert" | "audioresample" | "appsrc" => {
            "gstreamer1.0-plugins-base"
        }
        "h264parse" | "av1dec" | "rtpav1depay" => "gstreamer1.0-plugins-bad",
        _ => "gstreamer1.0-plugins-good",
    }
}

fn set_if<V: Into<gst::glib::Value>>(e: &gst::Element, name: &str, v: V) {
    if e.find_property(name).is_some() {
        e.set_property(name, v);
    }
}

fn set_str_if(e: &gst::Element, name: &str, v: &str) {
    if e.find_property(name).is_some() {
        e.set_property_from_str(name, v);
    }
}

/// Adds the elements of `chain` not in a bin yet, and links them in order.
fn add_chain(p: &gst::Pipeline, chain: &[gst::Element]) -> Result<(), String> {
    for e in chain.iter().filter(|e| e.parent().is_none()) {
        p.add(e).map_err(|err| format!("cannot add {}: {err}", e.name()))?;
    }
    gst::Element::link_many(chain).map_err(|e| format!("cannot link: {e}"))
}

fn caps_filter(caps: gst::Caps) -> Result<gst::Element, String> {
    gst::ElementFactory::make("capsfilter")
        .property("caps", caps)
        .build()
        .map_err(|e| e.to_string())
}

impl Comp {
    /// The pipeline for `out`, in PLAYING.
    fn build(out: Out) -> Result<Comp, String> {
        let pipeline = gst::Pipeline::new();
        let mut compositor = None;
        let mut mixer = None;
        let sink = make("filesink")?;
        sink.set_property("location", part_of(&out.path));
        let mux = if out.has_video { make("mp4mux")? } else { make("webmmux")? };
        pipeline.add_many([&mux, &sink]).map_err(|e| e.to_string())?;
        mux.link(&sink).map_err(|e| e.to_string())?;
        if out.has_video {
            let bg = make("videotestsrc")?;
            bg.set_property("is-live", true);
            bg.set_property_from_str("pattern", "black");
            let raw = gst::Caps::builder("video/x-raw")
                .field("width", out.width as i32)
                .field("height", out.height as i32)
                .field("framerate", gst::Fraction::new(out.fps, 1))
                .build();
            let bg_caps = caps_filter(raw.clone())?;
            let comp = make("compositor")?;
            comp.set_property_from_str("background", "black");
            set_if(&comp, "latency", MIX_LATENCY_MS * 1_000_000);
            let out_caps = caps_filter(raw)?;
            let conv = make("videoconvert")?;
            // The encoder's input never changes mid-recording (a publisher joining with other
            // colorimetry must not renegotiate the encoder, whose new headers the mp4 muxer
            // would refuse): videoconvert absorbs what the compositor's output does.
            let enc_in = caps_filter(
                gst::Caps::builder("video/x-raw")
                    .field("format", "I420")
                    .field("colorimetry", "bt601")
                    .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                    .field("interlace-mode", "progressive")
                    .build(),
            )?;
            let enc = make("x264enc")?;
            enc.set_property_from_str("speed-preset", "veryfast");
            enc.set_property_from_str("tune", "zerolatency");
            enc.set_property_from_str("pass", "qual");
            enc.set_property("quantizer", 28u32);
            enc.set_property("key-int-max", (out.fps.max(1) * 2) as u32);
            let enc_caps =
                caps_filter(gst::Caps::builder("video/x-h264").field("profile", "main").build())?;
            let parse = make("h264parse")?;
            let q = make("queue")?;
            add_chain(&pipeline, &[bg, bg_caps, comp.clone()])?;
            add_chain(
                &pipeline,
                &[comp.clone(), out_caps, conv, enc_in, enc, enc_caps, parse, q.clone()],
            )?;
            q.link(&mux).map_err(|e| format!("mp4mux video: {e}"))?;
            compositor = Some(comp);
        }
        if out.has_audio {
            let bg = make("audiotestsrc")?;
            bg.set_property("is-live", true);
            bg.set_property_from_str("wave", "silence");
            let raw = gst::Caps::builder("audio/x-raw")
                .field("rate", 48_000i32)
                .field("channels", 2i32)
                .build();
            let bg_caps = caps_filter(raw.clone())?;
            let mix = make("audiomixer")?;
            set_if(&mix, "latency", MIX_LATENCY_MS * 1_000_000);
            let conv = make("audioconvert")?;
            let res = make("audioresample")?;
            let caps = caps_filter(raw)?;
            let q = make("queue")?;
            let mut chain = vec![mix.clone(), conv, res, caps];
            if out.has_video {
                chain.push(make("avenc_aac")?);
                chain.push(make("aacparse")?);
            } else {
                chain.push(make("opusenc")?);
            }
            chain.push(q.clone());
            add_chain(&pipeline, &[bg, bg_caps, mix.clone()])?;
            add_chain(&pipeline, &chain)?;
            q.link(&mux).map_err(|e| format!("muxer audio: {e}"))?;
            mixer = Some(mix);
        }
        pipeline.set_state(gst::State::Playing).map_err(|e| format!("cannot start: {e}"))?;
        Ok(Comp { pipeline, out, compositor, mixer, tracks: HashMap::new(), ended: false })
    }

    /// A track joins ([`Frame::StreamAdded`]): its branch, linked to the compositor or the
    /// mixer, playing.
    fn add_track(&mut self, sock: Sock, added: &Frame<'_>) -> Result<(), String> {
        let Frame::StreamAdded { track, stream, kind, pt, clock_rate, codec } = *added else {
            return Ok(());
        };
        if self.tracks.contains_key(&track) || self.ended {
            return Ok(());
        }
        let upper = codec.to_ascii_uppercase();
        let (depay, mut decode): (&str, Vec<&str>) = match (kind, upper.as_str()) {
            (TrackKind::Audio, "OPUS") if self.mixer.is_some() => ("rtpopusdepay", vec!["opusdec"]),
            (TrackKind::Video, "VP8") if self.compositor.is_some() => {
                ("rtpvp8depay", vec!["vp8dec"])
            }
            (TrackKind::Video, "VP9") if self.compositor.is_some() => {
                ("rtpvp9depay", vec!["vp9dec"])
            }
            (TrackKind::Video, "H264") if self.compositor.is_some() => {
                ("rtph264depay", vec!["h264parse", "avdec_h264"])
            }
            (TrackKind::Video, "AV1") if self.compositor.is_some() => {
                ("rtpav1depay", vec!["av1parse", "av1dec"])
            }
            _ => {
                log(&format!("track {track}: {codec} {kind:?} not composed"));
                return Ok(());
            }
        };
        if kind == TrackKind::Video {
            decode.extend(["videoconvert", "queue"]);
        } else {
            decode.extend(["audioconvert", "audioresample", "queue"]);
        }
        let media = if kind == TrackKind::Video { "video" } else { "audio" };
        let enc_name = if upper == "OPUS" { "OPUS".to_string() } else { upper.clone() };
        let caps = gst::Caps::builder("application/x-rtp")
            .field("media", media)
            .field("clock-rate", clock_rate as i32)
            .field("encoding-name", enc_name)
            .field("payload", i32::from(pt))
            .build();
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .is_live(true)
            .do_timestamp(true)
            .format(gst::Format::Time)
            .max_bytes(4 << 20)
            .build();
        set_str_if(src.upcast_ref(), "leaky-type", "downstream");
        let jb = make("rtpjitterbuffer")?;
        jb.set_property("latency", JITTER_MS);
        set_if(&jb, "drop-on-latency", true);
        let dp = make(depay)?;
        set_if(&dp, "request-keyframe", true);
        set_if(&dp, "wait-for-keyframe", true);
        let mut chain: Vec<gst::Element> = vec![src.clone().upcast(), jb, dp];
        for f in decode {
            let e = make(f)?;
            set_if(&e, "max-errors", -1i32);
            set_if(&e, "automatic-request-sync-points", true);
            chain.push(e);
        }
        // Named after the track: an error of the branch ends the track, not the recording.
        for (i, e) in chain.iter().enumerate() {
            e.set_property("name", format!("{}{track}_{i}", TRACK_PREFIX));
        }
        // Keyframe requests travel upstream to the appsrc as force-key-unit events.
        let last: Arc<Mutex<Option<Instant>>> = Arc::default();
        if let Some(pad) = src.static_pad("src") {
            pad.add_probe(gst::PadProbeType::EVENT_UPSTREAM, move |_, info| {
                if let Some(gst::PadProbeData::Event(ev)) = &info.data
                    && ev.structure().is_some_and(|s| s.name() == "GstForceKeyUnit")
                {
                    let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
                    if l.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                        *l = Some(Instant::now());
                        sock.send(&Frame::Keyframe { track });
                    }
                }
                gst::PadProbeReturn::Ok
            });
        }
        self.pipeline.add_many(&chain).map_err(|e| e.to_string())?;
        gst::Element::link_many(&chain).map_err(|e| format!("cannot link track {track}: {e}"))?;
        let tail = chain.last().cloned().ok_or("empty chain")?;
        let target = if kind == TrackKind::Video { &self.compositor } else { &self.mixer };
        let target = target.as_ref().ok_or("no mixer")?;
        let pad = target.request_pad_simple("sink_%u").ok_or("no mixer pad")?;
        if kind == TrackKind::Video {
            pad.set_property("zorder", 1u32);
            if pad.find_property("sizing-policy").is_some() {
                pad.set_property_from_str("sizing-policy", "keep-aspect-ratio");
            }
            // Scaling each input into its tile is most of the composer's work (perf: the
            // video converter and compositor ~65%, x264 ~15%, VP8 decoding ~11% for 4 x 720p):
            // bilinear instead of the default cubic resampler, no dithering.
            if pad.find_property("converter-config").is_some() {
                let cfg = gst::Structure::builder("GstVideoConverter")
                    .field(
                        "GstVideoConverter.resampler-method",
                        gstreamer_video::VideoResamplerMethod::Linear,
                    )
                    .field(
                        "GstVideoConverter.chroma-resampler-method",
                        gstreamer_video::VideoResamplerMethod::Linear,
                    )
                    .field(
                        "GstVideoConverter.dither-method",
                        gstreamer_video::VideoDitherMethod::None,
                    )
                    .build();
                pad.set_property("converter-config", cfg);
            }
        }
        let src_pad = tail.static_pad("src").ok_or("no src pad")?;
        src_pad.link(&pad).map_err(|e| format!("cannot link to the mixer: {e:?}"))?;
        for e in &chain {
            e.sync_state_with_parent().map_err(|e| e.to_string())?;
        }
        self.tracks.insert(track, Track { src, stream, kind, pad });
        if kind == TrackKind::Video {
            self.layout();
            sock.send(&Frame::Keyframe { track });
        }
        Ok(())
    }

    /// A track leaves: EOS through its branch, its tile hidden, the grid laid out again.
    /// `broken`: its branch stopped on an error, so the EOS goes straight into the mixer's pad
    /// (the mixer must see every pad end before it ends the file).
    fn remove_track(&mut self, track: u16, broken: bool) {
        let Some(t) = self.tracks.remove(&track) else { return };
        if broken {
            t.pad.send_event(gst::event::Eos::new());
        } else {
            let _ = t.src.end_of_stream();
        }
        if t.kind == TrackKind::Video {
            t.pad.set_property("alpha", 0.0f64);
            self.layout();
        }
    }

    /// Places every video track's pad on the BEST_FIT grid, in the order the streams joined.
    fn layout(&self) {
        let mut video: Vec<(&u16, &Track)> =
            self.tracks.iter().filter(|(_, t)| t.kind == TrackKind::Video).collect();
        video.sort_by_key(|(id, t)| (t.stream, **id));
        let tiles = best_fit(video.len(), self.out.width, self.out.height);
        for ((_, t), r) in video.iter().zip(tiles) {
            t.pad.set_property("xpos", r.x);
            t.pad.set_property("ypos", r.y);
            t.pad.set_property("width", r.w);
            t.pad.set_property("height", r.h);
        }
    }

    fn push(&mut self, track: u16, packet: &[u8]) {
        if self.ended {
            return;
        }
        if let Some(t) = self.tracks.get(&track) {
            let _ = t.src.push_buffer(gst::Buffer::from_slice(packet.to_vec()));
        }
    }

    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.pipeline.send_event(gst::event::Eos::new());
        }
    }
}

/// The thumbnail: a frame from the middle of `video`, 480 px wide, as JPEG into `jpg`; returns
/// the file's duration as its demuxer reads it.
fn thumbnail(
    video: &str,
    jpg: &str,
    width: u32,
    height: u32,
) -> Result<Option<gst::ClockTime>, String> {
    let h = (480 * height / width.max(1)).max(2) & !1;
    let desc = format!(
        "filesrc location=\"{video}\" ! qtdemux name=d d.video_0 ! h264parse ! avdec_h264 ! \
         videoconvert ! videoscale ! video/x-raw,width=480,height={h} ! jpegenc snapshot=true ! \
         filesink location=\"{jpg}\""
    );
    let p = gst::parse::launch(&desc)
        .map_err(|e| e.to_string())?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let bus = p.bus().ok_or("no bus")?;
    let result = (|| {
        p.set_state(gst::State::Paused).map_err(|e| e.to_string())?;
        let _ = p.state(gst::ClockTime::from_seconds(5));
        let duration = p.query_duration::<gst::ClockTime>();
        if let Some(d) = duration {
            let _ = p.seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::KEY_UNIT, d / 2);
        }
        p.set_state(gst::State::Playing).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else { continue };
            match m.view() {
                gst::MessageView::Eos(_) => return Ok(duration),
                gst::MessageView::Error(e) => return Err(e.error().to_string()),
                _ => {}
            }
        }
        Err("timed out".to_string())
    })();
    let _ = p.set_state(gst::State::Null);
    result
}

/// The process: `--fd N` (default 3). Returns the exit status.
pub fn main_with_args(args: impl Iterator<Item = String>) -> i32 {
    let mut fd: RawFd = 3;
    let mut args = args.skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fd" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => fd = v,
                None => {
                    log("--fd needs a number");
                    return 2;
                }
            },
            "--version" => {
                println!("ringsfu-composer {}", env!("CARGO_PKG_VERSION"));
                return 0;
            }
            _ => {
                eprintln!(
                    "usage: ringsfu-composer [--fd N]\n\
                     Run by ringsfu for COMPOSED recordings, with a SOCK_SEQPACKET socket as fd N."
                );
                return 2;
            }
        }
    }
    let sock = Sock(fd);
    if let Err(e) = gst::init() {
        let msg = format!("GStreamer unavailable: {e}");
        log(&msg);
        sock.send(&Frame::Error { reason: &msg });
        return 1;
    }
    let mut buf = vec![0u8; MAX_FRAME + 1];
    // A warm composer waits here.
    let out = loop {
        let n = sock.recv(&mut buf);
        if n == 0 {
            return 0;
        }
        match Frame::parse(buf.get(..n).unwrap_or(&[])) {
            Ok(Frame::Start { width, height, fps, has_audio, has_video, path, thumbnail }) => {
                break Out {
                    width: u32::from(width),
                    height: u32::from(height),
                    fps: i32::from(fps),
                    has_audio,
                    has_video,
                    path: path.to_string(),
                    thumbnail: thumbnail.to_string(),
                };
            }
            Ok(Frame::End) => return 0,
            Ok(_) => continue,
            Err(e) => log(&format!("malformed frame before start: {e}")),
        }
    };
    let comp = match Comp::build(out.clone()) {
        Ok(c) => c,
        Err(e) => {
            log(&e);
            sock.send(&Frame::Error { reason: &e });
            return 1;
        }
    };
    let pipeline = comp.pipeline.clone();
    let comp = Arc::new(Mutex::new(comp));
    sock.send(&Frame::Ready);
    let reader = Arc::clone(&comp);
    std::thread::spawn(move || read_loop(sock, reader, buf));
    let started = Instant::now();
    let result = watch(&pipeline, &comp);
    let mut duration_ms = pipeline
        .query_position::<gst::ClockTime>()
        .map_or(started.elapsed().as_millis() as u64, |p| p.mseconds());
    let _ = pipeline.set_state(gst::State::Null);
    if let Err(e) = result {
        log(&format!("failed: {e}"));
        sock.send(&Frame::Error { reason: &e });
        return 1;
    }
    if let Err(e) = std::fs::rename(part_of(&out.path), &out.path) {
        let e = format!("cannot put the file in place: {e}");
        sock.send(&Frame::Error { reason: &e });
        return 1;
    }
    if out.has_video && !out.thumbnail.is_empty() {
        match thumbnail(&out.path, &out.thumbnail, out.width, out.height) {
            // The file's own duration, as OpenVidu reports it (ffprobe's).
            Ok(Some(d)) => duration_ms = d.mseconds(),
            Ok(None) => {}
            Err(e) => log(&format!("no thumbnail: {e}")),
        }
    }
    let size = match std::fs::metadata(&out.path) {
        Ok(m) => m.len(),
        Err(e) => {
            let e = format!("the file is gone: {e}");
            sock.send(&Frame::Error { reason: &e });
            return 1;
        }
    };
    sock.send(&Frame::Done { size, duration_ms });
    0
}

/// Where the file is written until it is complete (then renamed into place): a failed
/// composition never leaves a file under the recording's name.
fn part_of(path: &str) -> String {
    format!("{path}.part")
}

fn lock(c: &Mutex<Comp>) -> std::sync::MutexGuard<'_, Comp> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

/// The bus until EOS (Ok) or an error.
fn watch(pipeline: &gst::Pipeline, comp: &Mutex<Comp>) -> Result<(), String> {
    let bus = pipeline.bus().ok_or("no bus")?;
    let mut ending: Option<Instant> = None;
    loop {
        if ending.is_none() && lock(comp).ended {
            ending = Some(Instant::now());
        }
        if ending.is_some_and(|t| t.elapsed() > EOS_TIMEOUT) {
            return Err("the muxer did not finish the file in time".into());
        }
        let Some(m) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else { continue };
        match m.view() {
            gst::MessageView::Eos(_) => return Ok(()),
            gst::MessageView::Error(e) => {
                let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
                let err = e.error();
                log(&format!("error from {src}: {err} ({:?})", e.debug()));
                if let Some(track) = track_of(&src) {
                    // One publisher's stream broke (undecodable): its tile goes, the rest goes on.
                    lock(comp).remove_track(track, true);
                    continue;
                }
                if err.matches(gst::ResourceError::NoSpaceLeft) {
                    return Err("disk full".into());
                }
                return Err(format!("{src}: {err}"));
            }
            gst::MessageView::Warning(w) => log(&format!("warning: {}", w.error())),
            gst::MessageView::Latency(_) => {
                let _ = pipeline.recalculate_latency();
            }
            _ => {}
        }
    }
}

fn read_loop(sock: Sock, comp: Arc<Mutex<Comp>>, mut buf: Vec<u8>) {
    loop {
        let n = sock.recv(&mut buf);
        if n == 0 {
            // ringsfu closed the socket (it stopped, or died): finish what was recorded.
            lock(&comp).end();
            return;
        }
        let msg = buf.get(..n).unwrap_or(&[]);
        match Frame::parse(msg) {
            Ok(Frame::Rtp { track, packet }) => lock(&comp).push(track, packet),
            Ok(f @ Frame::StreamAdded { track, .. }) => {
                if let Err(e) = lock(&comp).add_track(sock, &f) {
                    log(&format!("track {track}: {e}"));
                }
            }
            Ok(Frame::StreamRemoved { track }) => lock(&comp).remove_track(track, false),
            Ok(Frame::End) => {
                lock(&comp).end();
            }
            Ok(f) => log(&format!("unexpected {f:?}")),
            Err(e) => log(&format!("malformed frame: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_elements_name_their_track() {
        assert_eq!(track_of("track7_2"), Some(7));
        assert_eq!(track_of("track65535_0"), Some(65535));
        assert_eq!(track_of("videotestsrc0"), None);
        assert_eq!(track_of("track_1"), None);
        assert_eq!(track_of("trackx_1"), None);
    }

    #[test]
    fn missing_elements_name_their_package() {
        assert_eq!(plugin_of("x264enc"), "gstreamer1.0-plugins-ugly");
        assert_eq!(plugin_of("avenc_aac"), "gstreamer1.0-libav");
        assert_eq!(plugin_of("rtpvp8depay"), "gstreamer1.0-plugins-good");
    }
}
