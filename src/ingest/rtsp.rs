//! The RTSP client of IP cameras: one thread, `ringsfu-ingest`, with its own tokio
//! current_thread runtime and one task per camera. Its own thread rather than the control
//! plane's runtime: a camera's packets are handled one by one (depacketized, re-packetized,
//! written into the ring), work that would otherwise sit between signaling messages on the
//! control thread; and nothing in it can hold up REST or the WebSocket. No task blocks: every
//! wait is a timer or a socket.
//!
//! Per camera (`retina`: DESCRIBE, SETUP, PLAY, digest auth from the URI's user info,
//! keep-alives while playing):
//! 1. DESCRIBE (10 s at most). What it offers becomes a [`CameraLayout`]: H.264 video (the
//!    SPS from `sprop-parameter-sets` names the profile) and PCMU / PCMA / Opus audio; other
//!    formats (AAC, H.265, MJPEG) are left out with a note. The first time (and after a loss)
//!    the control plane gets [`CameraEvent::Ready`] with the ring's reading end, and publishes.
//! 2. With `onlyPlayWithSubscribers` and no subscriber, the connection is closed before any
//!    SETUP (no RTSP session) until one subscribes; then DESCRIBE again and go on.
//! 3. SETUP over TCP interleaved; a camera refusing it is set up over UDP at the next attempt
//!    (and the other way round). PLAY. Each video packet goes through the RTP depacketizer
//!    ([`crate::record::depack`]) into access units, which [`Packetizer`] splits again for
//!    WebRTC (parameter sets before each IDR); each audio packet is passed through with a new
//!    header. The shard is woken once per access unit or audio packet.
//! 4. When the last subscriber leaves (`onlyPlayWithSubscribers`) the session is dropped
//!    (TEARDOWN) and the camera waits at step 2. While it waits nothing watches the camera:
//!    one that went away meanwhile is found lost at the next subscriber's DESCRIBE.
//!
//! A camera that does not answer, refuses, closes the connection or sends nothing for
//! `networkCache` + 5 s is lost: [`CameraEvent::Lost`] (the stream is unpublished, the
//! connection kept), then DESCRIBE again after 1 s, 2 s, 4 s ... up to 30 s
//! ([`Backoff`]), reset once a camera plays again.
//!
//! Keyframe requests of subscribers cannot reach an RTSP camera (RTSP has no such request;
//! a new PLAY makes some cameras start with an IDR but costs a reconnection, a second or more
//! of black video for every subscriber, so it is not done). New subscribers wait for the
//! camera's next IDR: its GOP length bounds the wait.
//!
//! `adaptativeBitrate`: Kurento transcoded to adapt each subscriber's bitrate; without
//! transcoding the camera's one bitrate goes to everyone, whatever the value (reported in the
//! status). `networkCache` adds no delay here (there is no jitter buffer before the browsers'
//! own); it lengthens the silence tolerated before a camera counts as lost.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use retina::client::{
    Credentials, PacketItem, PlayOptions, Session, SessionOptions, SetupOptions,
    TcpTransportOptions, Transport, UdpTransportOptions,
};
use retina::codec::{ParametersRef, VideoParametersCodec};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::h264::{MAX_PAYLOAD, Packetizer, SpsProfile};
use super::{AudioCodec, Backoff, CameraLayout, TrackWriter, pt};
use crate::media::{IngestFeed, IngestWriter, ingest_ring};
use crate::record::depack::{Codec, Depacketizer};
use crate::shard::mesh::ShardWake;

/// How long DESCRIBE, SETUP and PLAY may take each.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence tolerated while playing, on top of `networkCache`.
const STALL: Duration = Duration::from_secs(5);

/// What the ingest thread is asked (camera `key`s are the control plane's).
#[derive(Debug)]
pub enum IngestCommand {
    Start {
        key: u64,
        camera: CameraConfig,
        wake: Option<ShardWake>,
    },
    /// The camera's stream has `subscribers` subscribers now.
    Demand {
        key: u64,
        subscribers: usize,
    },
    Stop {
        key: u64,
    },
}

/// One camera's connection properties.
#[derive(Debug, Clone)]
pub struct CameraConfig {
    pub rtsp_uri: String,
    pub only_play_with_subscribers: bool,
    pub network_cache: Duration,
    pub adaptative_bitrate: bool,
}

/// What the ingest thread tells the control plane.
#[derive(Debug)]
pub enum CameraEvent {
    /// The camera answered and nothing is published for it: publish `layout`'s tracks (SSRCs
    /// `ssrcs`, in ring order) with a producer fed from `feed`.
    Ready { key: u64, layout: CameraLayout, ssrcs: Vec<u32>, feed: IngestFeed },
    /// The camera went away or never answered (`error`): unpublish, keep the connection.
    Lost { key: u64, error: String },
    /// A new status for the connection's JSON.
    Status { key: u64, status: CameraStatus },
}

/// A camera's ingest status (`ipcam` in its connection's JSON).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CameraStatus {
    /// `connecting`, `waitingForSubscribers`, `playing`, `retrying`.
    pub state: &'static str,
    /// `tcp` or `udp` while playing.
    pub transport: Option<&'static str>,
    /// E.g. `H264 Constrained Baseline (profile-level-id 42e01f)`.
    pub video: Option<String>,
    /// E.g. `PCMU/8000`.
    pub audio: Option<String>,
    /// What was left out or may not play (AAC dropped, a High profile ...).
    pub notes: Vec<String>,
    pub last_error: Option<String>,
    /// Failed attempts since the camera last played.
    pub failures: u32,
    /// Packets dropped because the shard's ring was full.
    pub dropped_packets: u64,
    /// What `adaptativeBitrate` does here.
    pub adaptative_bitrate: &'static str,
}

/// The ingest thread.
pub struct IngestService {
    commands: mpsc::UnboundedSender<IngestCommand>,
}

impl IngestService {
    /// Starts the thread; its events go to `events`.
    pub fn start(events: mpsc::UnboundedSender<CameraEvent>) -> std::io::Result<IngestService> {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name("ringsfu-ingest".into())
            .spawn(move || rt.block_on(serve(rx, events)))?;
        Ok(IngestService { commands: tx })
    }

    pub fn send(&self, cmd: IngestCommand) {
        // The thread ends only with this sender.
        let _ = self.commands.send(cmd);
    }
}

async fn serve(
    mut commands: mpsc::UnboundedReceiver<IngestCommand>,
    events: mpsc::UnboundedSender<CameraEvent>,
) {
    let mut cameras: HashMap<u64, (watch::Sender<usize>, tokio::task::JoinHandle<()>)> =
        HashMap::new();
    while let Some(cmd) = commands.recv().await {
        match cmd {
            IngestCommand::Start { key, camera, wake } => {
                let (demand, rx) = watch::channel(0);
                let task = tokio::spawn(run_camera(key, camera, wake, rx, events.clone()));
                if let Some((_, old)) = cameras.insert(key, (demand, task)) {
                    old.abort();
                }
            }
            IngestCommand::Demand { key, subscribers } => {
                if let Some((d, _)) = cameras.get(&key) {
                    d.send_replace(subscribers);
                }
            }
            IngestCommand::Stop { key } => {
                if let Some((_, task)) = cameras.remove(&key) {
                    // Dropping the session sends TEARDOWN (retina does it on the runtime).
                    task.abort();
                }
            }
        }
    }
    for (_, (_, task)) in cameras {
        task.abort();
    }
}

/// The URI without its user info, and the credentials it carried.
fn split_credentials(uri: &str) -> Result<(url::Url, Option<Credentials>), String> {
    let mut url = url::Url::parse(uri).map_err(|e| format!("rtspUri: {e}"))?;
    if url.scheme() != "rtsp" {
        return Err(format!("rtspUri: the {} scheme is not supported (rtsp only)", url.scheme()));
    }
    let creds = (!url.username().is_empty()).then(|| Credentials {
        username: decode(url.username()),
        password: url.password().map(decode).unwrap_or_default(),
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, creds))
}

/// Percent-decoding of URI user info.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (c, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// SPS and PPS NAL units.
type ParameterSets = (Vec<u8>, Vec<u8>);

/// What a DESCRIBE offered: the layout, and the stream indices of the chosen tracks (the
/// video's with its parameter sets from the SDP, when given).
struct Described {
    layout: CameraLayout,
    video: Option<(usize, Option<ParameterSets>)>,
    audio: Option<usize>,
}

fn describe_layout(session: &Session<retina::client::Described>) -> Described {
    let mut layout = CameraLayout::default();
    let (mut video, mut audio) = (None, None);
    for (i, s) in session.streams().iter().enumerate() {
        let enc = s.encoding_name().to_ascii_lowercase();
        match (s.media(), enc.as_str()) {
            ("video", "h264") if video.is_none() => {
                let ps = match s.parameters() {
                    Some(ParametersRef::Video(v)) => match v.codec_params() {
                        VideoParametersCodec::H264 { sps, pps } => {
                            Some((sps.to_vec(), pps.to_vec()))
                        }
                        _ => None,
                    },
                    _ => None,
                };
                let profile = ps.as_ref().and_then(|(sps, _)| SpsProfile::parse(sps).ok());
                match profile {
                    Some(p) => {
                        let name = p.profile().name();
                        let id = p.profile_level_id();
                        if !p.profile().browser_safe() {
                            layout.notes.push(format!(
                                "video is H.264 {name} (profile-level-id {id}): browsers without \
                                 a decoder for it (some Chromium builds, Safari and Firefox on \
                                 some platforms) get no video from this camera; set the camera \
                                 to Baseline"
                            ));
                        }
                        layout.video_profile = Some(name.to_string());
                        layout.video = Some(id);
                    }
                    None => {
                        layout.notes.push(
                            "the camera's SDP has no sprop-parameter-sets: its H.264 profile \
                             is assumed to be Constrained Baseline (42e01f)"
                                .into(),
                        );
                        layout.video_profile = Some("Constrained Baseline (assumed)".into());
                        layout.video = Some("42e01f".into());
                    }
                }
                video = Some((i, ps));
            }
            ("audio", e) if audio.is_none() && AudioCodec::from_encoding(e).is_some() => {
                let codec = AudioCodec::from_encoding(e);
                let expected = codec.map(|c| c.rtpmap().1);
                if expected == Some(s.clock_rate_hz()) {
                    layout.audio = codec;
                    audio = Some(i);
                } else {
                    layout.notes.push(format!(
                        "audio {}/{} dropped: browsers decode it only at {} Hz",
                        s.encoding_name(),
                        s.clock_rate_hz(),
                        expected.unwrap_or(0)
                    ));
                }
            }
            ("audio", "mpeg4-generic" | "mp4a-latm") => layout.notes.push(format!(
                "audio {} (AAC) dropped: browsers' WebRTC stacks do not decode AAC, and \
                 ringsfu does not transcode",
                s.encoding_name()
            )),
            (media, _) if media == "audio" || media == "video" => layout.notes.push(format!(
                "{media} {} dropped: not a format browsers decode over WebRTC (H.264 video; \
                 PCMU, PCMA or Opus audio pass through)",
                s.encoding_name()
            )),
            _ => {}
        }
    }
    Described { layout, video, audio }
}

/// What a camera has published: its ring and track writers (kept across RTSP sessions).
struct Live {
    writer: IngestWriter,
    layout: CameraLayout,
    video: Option<TrackWriter>,
    audio: Option<TrackWriter>,
}

impl Live {
    fn new(layout: CameraLayout, wake: Option<ShardWake>) -> (Live, Vec<u32>, IngestFeed) {
        let (writer, feed) = ingest_ring(wake);
        let ssrc = || rand::random::<u32>() | 1;
        let video = layout
            .video
            .as_ref()
            .map(|_| TrackWriter::new(ssrc(), pt::H264, 90_000, rand::random()));
        let audio =
            layout.audio.map(|a| TrackWriter::new(ssrc(), a.pt(), a.rtpmap().1, rand::random()));
        let ssrcs = video.iter().chain(audio.iter()).map(|t| t.ssrc).collect();
        (Live { writer, layout, video, audio }, ssrcs, feed)
    }
}

/// One camera's connection state (see the module docs).
struct Camera {
    key: u64,
    cfg: CameraConfig,
    wake: Option<ShardWake>,
    events: mpsc::UnboundedSender<CameraEvent>,
    status: CameraStatus,
    backoff: Backoff,
    live: Option<Live>,
    udp: bool,
}

impl Camera {
    fn report(&mut self, state: &'static str) {
        self.status.state = state;
        if let Some(l) = &self.live {
            self.status.dropped_packets = l.writer.dropped;
        }
        let _ =
            self.events.send(CameraEvent::Status { key: self.key, status: self.status.clone() });
    }

    /// A failed attempt: the stream (if any) is unpublished, then the back-off.
    async fn fail(&mut self, error: String) {
        tracing::warn!(camera = self.key, uri = %redacted(&self.cfg.rtsp_uri), %error, "IP camera lost");
        self.status.failures += 1;
        self.status.last_error = Some(error.clone());
        self.status.transport = None;
        self.live = None;
        let _ = self.events.send(CameraEvent::Lost { key: self.key, error });
        self.report("retrying");
        tokio::time::sleep(self.backoff.next_delay()).await;
    }
}

/// The URI for logs: without its password.
fn redacted(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(invalid URI)".into(),
    }
}

async fn run_camera(
    key: u64,
    cfg: CameraConfig,
    wake: Option<ShardWake>,
    mut demand: watch::Receiver<usize>,
    events: mpsc::UnboundedSender<CameraEvent>,
) {
    let adaptative = if cfg.adaptative_bitrate {
        "requested; without transcoding every subscriber gets the camera's own bitrate"
    } else {
        "off: the camera's own bitrate"
    };
    let mut cam = Camera {
        key,
        cfg,
        wake,
        events,
        status: CameraStatus { adaptative_bitrate: adaptative, ..CameraStatus::default() },
        backoff: Backoff::default(),
        live: None,
        udp: false,
    };
    let (url, creds) = match split_credentials(&cam.cfg.rtsp_uri) {
        Ok(x) => x,
        Err(e) => {
            // Nothing to retry: the URI will not change.
            cam.status.last_error = Some(e.clone());
            let _ = cam.events.send(CameraEvent::Lost { key, error: e });
            return cam.report("failed");
        }
    };
    let options = || SessionOptions::default().creds(creds.clone()).user_agent("ringsfu".into());
    loop {
        cam.report("connecting");
        let session =
            match tokio::time::timeout(ANSWER_TIMEOUT, Session::describe(url.clone(), options()))
                .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    cam.fail(format!("DESCRIBE: {e}")).await;
                    continue;
                }
                Err(_) => {
                    cam.fail("DESCRIBE: no answer within 10 s".into()).await;
                    continue;
                }
            };
        let d = describe_layout(&session);
        if d.video.is_none() && d.audio.is_none() {
            let notes = d.layout.notes.join("; ");
            cam.status.notes = d.layout.notes;
            cam.fail(format!("nothing browsers can play: {notes}")).await;
            continue;
        }
        cam.status.notes = d.layout.notes.clone();
        cam.status.video = d.layout.video.as_ref().map(|id| {
            let p = d.layout.video_profile.as_deref().unwrap_or("");
            format!("H264 {p} (profile-level-id {id})")
        });
        cam.status.audio = d.layout.audio.map(|a| {
            let (n, r, _) = a.rtpmap();
            format!("{n}/{r}")
        });
        for n in &d.layout.notes {
            tracing::warn!(camera = key, note = %n, "IP camera");
        }
        let publish = match &cam.live {
            None => true,
            // Unpublished by the control plane meanwhile, or the camera changed formats.
            Some(l) => l.writer.is_abandoned() || l.layout != d.layout,
        };
        if publish {
            let (live, ssrcs, feed) = Live::new(d.layout.clone(), cam.wake.clone());
            cam.live = Some(live);
            let _ =
                cam.events.send(CameraEvent::Ready { key, layout: d.layout.clone(), ssrcs, feed });
        }
        if cam.cfg.only_play_with_subscribers && *demand.borrow_and_update() == 0 {
            drop(session);
            cam.report("waitingForSubscribers");
            loop {
                if demand.changed().await.is_err() {
                    return;
                }
                if *demand.borrow_and_update() > 0 {
                    break;
                }
            }
            continue;
        }
        match play(&mut cam, session, &d, &mut demand).await {
            Ok(()) => {}
            Err(e) => cam.fail(e).await,
        }
    }
}

/// SETUP, PLAY and the packets, until the camera fails (`Err`) or the last subscriber leaves
/// with `onlyPlayWithSubscribers` (`Ok`).
async fn play(
    cam: &mut Camera,
    mut session: Session<retina::client::Described>,
    d: &Described,
    demand: &mut watch::Receiver<usize>,
) -> Result<(), String> {
    let transport = |udp: bool| {
        if udp {
            Transport::Udp(UdpTransportOptions::default())
        } else {
            Transport::Tcp(TcpTransportOptions::default())
        }
    };
    let udp = cam.udp;
    let chosen: Vec<usize> = d.video.iter().map(|v| v.0).chain(d.audio).collect();
    for &i in &chosen {
        let setup = session.setup(i, SetupOptions::default().transport(transport(udp)));
        match tokio::time::timeout(ANSWER_TIMEOUT, setup).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // The next attempt tries the other transport.
                cam.udp = !udp;
                return Err(format!("SETUP: {e}"));
            }
            Err(_) => return Err("SETUP: no answer within 10 s".into()),
        }
    }
    let opts = PlayOptions::default()
        .enforce_timestamps_with_max_jump_secs(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
    let mut playing = match tokio::time::timeout(ANSWER_TIMEOUT, session.play(opts)).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(format!("PLAY: {e}")),
        Err(_) => return Err("PLAY: no answer within 10 s".into()),
    };
    let mut packetizer = Packetizer::new(MAX_PAYLOAD).map_err(|e| e.to_string())?;
    if let Some((_, Some((sps, pps)))) = &d.video {
        packetizer.set_parameter_sets(sps, pps);
    }
    let mut depack = Depacketizer::new(Codec::H264);
    let Some(live) = cam.live.as_mut() else { return Err("not published".into()) };
    for t in live.video.iter_mut().chain(live.audio.iter_mut()) {
        t.restart();
    }
    cam.status.transport = Some(if udp { "udp" } else { "tcp" });
    cam.status.last_error = None;
    cam.status.failures = 0;
    cam.backoff.reset();
    cam.report("playing");
    tracing::info!(camera = cam.key, uri = %redacted(&cam.cfg.rtsp_uri), transport = if udp { "udp" } else { "tcp" }, "IP camera playing");
    let stall = cam.cfg.network_cache + STALL;
    let video_stream = d.video.as_ref().map(|v| v.0);
    let mut last_report = Instant::now();
    loop {
        let item = tokio::select! {
            item = tokio::time::timeout(stall, playing.next()) => item,
            changed = demand.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                if cam.cfg.only_play_with_subscribers && *demand.borrow_and_update() == 0 {
                    // Dropping `playing` sends TEARDOWN.
                    tracing::info!(camera = cam.key, "IP camera paused: no subscribers");
                    return Ok(());
                }
                continue;
            }
        };
        let pkt = match item {
            Err(_) => return Err(format!("no media for {} s", stall.as_secs())),
            Ok(None) => return Err("the camera ended the session".into()),
            Ok(Some(Err(e))) => return Err(e.to_string()),
            Ok(Some(Ok(PacketItem::Rtp(p)))) => p,
            Ok(Some(Ok(_))) => continue,
        };
        let Some(live) = cam.live.as_mut() else { return Err("not published".into()) };
        if live.writer.is_abandoned() {
            // Unpublished by the control plane (the connection or session is gone).
            return Err("the stream was unpublished".into());
        }
        let now = Instant::now();
        let ts = pkt.timestamp().timestamp() as u32;
        if Some(pkt.stream_id()) == video_stream {
            let Some(track) = live.video.as_mut() else { continue };
            depack.push(ts, pkt.mark(), pkt.payload(), pkt.loss() > 0);
            while let Some(frame) = depack.poll_frame() {
                let out_ts = track.timestamp(frame.timestamp, now);
                let w = &mut live.writer;
                let res = packetizer.packetize(&frame.data, |payload, marker| {
                    w.push(|slot| track.write(slot, out_ts, marker, payload));
                });
                if let Err(e) = res {
                    tracing::debug!(camera = cam.key, error = %e, "access unit dropped");
                }
                live.writer.flush();
            }
        } else if let Some(track) = live.audio.as_mut() {
            let out_ts = track.timestamp(ts, now);
            let payload = pkt.payload();
            live.writer.push(|slot| track.write(slot, out_ts, pkt.mark(), payload));
            live.writer.flush();
        }
        if now.duration_since(last_report) >= Duration::from_secs(5) {
            last_report = now;
            cam.report("playing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_uri() {
        let (u, c) = split_credentials("rtsp://ad%40min:p%3Ass@cam.local:554/live").unwrap();
        assert_eq!(u.as_str(), "rtsp://cam.local:554/live");
        assert_eq!(c, Some(Credentials { username: "ad@min".into(), password: "p:ss".into() }));
        assert!(split_credentials("rtsp://cam/x").unwrap().1.is_none());
        assert!(split_credentials("http://cam/x").is_err());
        assert_eq!(redacted("rtsp://u:secret@cam/x"), "rtsp://u:***@cam/x");
    }
}
