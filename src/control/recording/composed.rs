//! COMPOSED and COMPOSED_QUICK_START for the built-in backend: one composer process
//! (`ringsfu-composer`, GStreamer) per composition, fed by one recorder consumer per recorded
//! stream ([`crate::media::ShardCommand::AttachRecorder`]) through [`crate::record::feed`].
//! Streams published or unpublished while it records join or leave the grid.
//!
//! The composer is found at `[recording] composer_path`, else next to the ringsfu executable;
//! without one, COMPOSED answers 501 saying what to install. COMPOSED_QUICK_START: a session
//! created with that default output mode gets a composer launched at once (GStreamer loaded,
//! waiting for its start), used by its next recording and replaced after it, until the session
//! closes. CUSTOM layouts are refused before this (422, [`super::start`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use tokio::sync::mpsc;

use super::{
    BackendError, BackendEvent, ComposedRecordingSpec, StreamRecorderId, StreamRecordingSpec,
};
use crate::media::{MediaEngine, RecorderFeed, ShardCommand};
use crate::record::feed::{self, Composer, FeedEvent, FeedHandle, StartParams, TrackSpec};
use crate::sdp::MediaKind;
use crate::wire::codec::Codec;

/// Packets a stream's ring holds.
const RING_SLOTS: usize = 1024;

/// The composer's file name.
pub const COMPOSER_NAME: &str = "ringsfu-composer";

/// What to install when the composer is missing.
pub fn missing_composer_message() -> String {
    format!(
        "COMPOSED recording needs the {COMPOSER_NAME} program (GStreamer), which is not \
         installed: build it with `cargo build --release --features composer` and install it \
         next to the ringsfu binary or set [recording] composer_path \
         (RINGSFU_RECORDING_COMPOSER_PATH), with GStreamer's plugins (Debian: \
         gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
         gstreamer1.0-plugins-ugly gstreamer1.0-libav); or use outputMode INDIVIDUAL"
    )
}

/// The composer to run: `configured` (`[recording] composer_path`, when not empty), else
/// `ringsfu-composer` beside the running executable, if that is an executable file.
pub fn find_composer(configured: &str) -> Option<PathBuf> {
    let p = if configured.trim().is_empty() {
        std::env::current_exe().ok()?.parent()?.join(COMPOSER_NAME)
    } else {
        PathBuf::from(configured)
    };
    is_executable(&p).then_some(p)
}

/// A plain file with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

struct Run {
    feed: FeedHandle,
    /// Stream id → (shard, recorder id on that shard).
    taps: HashMap<String, (usize, u64)>,
}

#[derive(Default)]
struct State {
    runs: HashMap<u64, Run>,
    /// Warm composers by session (COMPOSED_QUICK_START).
    warm: HashMap<String, Composer>,
    /// The sessions that keep one warm.
    quick_start: std::collections::HashSet<String>,
}

/// See the module docs.
pub(super) struct ComposedBackend {
    engine: Arc<MediaEngine>,
    events: mpsc::Sender<BackendEvent>,
    program: Option<PathBuf>,
    state: Arc<Mutex<State>>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Poisoned only by a panic while held; the maps stay usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn ms_since_epoch(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `WxH` into numbers (validated by the properties checks).
fn resolution(s: Option<&str>) -> (u16, u16) {
    let parse = |s: &str| {
        let (w, h) = s.split_once('x')?;
        Some((w.parse().ok()?, h.parse().ok()?))
    };
    s.and_then(parse).unwrap_or((1280, 720))
}

/// The stream's tracks the composer can take: audio Opus; video VP8, H.264, VP9, AV1.
fn tracks(spec: &StreamRecordingSpec) -> (Option<TrackSpec>, Option<TrackSpec>) {
    let pick = |kind: MediaKind, ok: &dyn Fn(Codec) -> bool| {
        spec.tracks.iter().find(|m| m.kind == kind && ok(Codec::from_sdp_name(&m.codec.name))).map(
            |m| TrackSpec {
                pt: m.codec.pt,
                clock_rate: m.codec.clock_rate,
                codec: m.codec.name.clone(),
            },
        )
    };
    let audio = spec.has_audio.then(|| pick(MediaKind::Audio, &|c| c == Codec::Opus)).flatten();
    let video = spec
        .has_video
        .then(|| {
            pick(MediaKind::Video, &|c| {
                matches!(c, Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1)
            })
        })
        .flatten();
    (audio, video)
}

/// A warm composer for `session` if it keeps one (COMPOSED_QUICK_START) and has none.
fn rewarm(state: &Mutex<State>, program: &Path, session: &str) {
    {
        let st = lock(state);
        if !st.quick_start.contains(session) || st.warm.contains_key(session) {
            return;
        }
    }
    match Composer::launch(program) {
        Ok(c) => {
            let mut st = lock(state);
            // The session may have closed meanwhile.
            if st.quick_start.contains(session) && !st.warm.contains_key(session) {
                st.warm.insert(session.to_string(), c);
            } else {
                drop(st);
                c.kill();
            }
        }
        Err(e) => tracing::warn!(%session, error = %e, "cannot launch a warm composer"),
    }
}

impl ComposedBackend {
    pub(super) fn new(
        engine: Arc<MediaEngine>,
        events: mpsc::Sender<BackendEvent>,
        program: Option<PathBuf>,
    ) -> ComposedBackend {
        ComposedBackend { engine, events, program, state: Arc::new(Mutex::new(State::default())) }
    }

    /// Attaches a recorder consumer for one stream to the feed; `None` when the stream has
    /// nothing the composer takes or no transport.
    fn tap(&self, feed: &FeedHandle, s: &StreamRecordingSpec, rid: u64) -> Option<(usize, u64)> {
        let at = s.publisher?;
        let (audio, video) = tracks(s);
        if audio.is_none() && video.is_none() {
            tracing::warn!(stream = %s.stream_id, "nothing of the stream can be composed");
            return None;
        }
        let input = feed.add_stream(audio, video, RING_SLOTS);
        let cmd = ShardCommand::AttachRecorder {
            publisher: at.peer,
            recorder: rid,
            feed: RecorderFeed::new(input),
        };
        if let Err(e) = self.engine.send(at.shard, cmd) {
            // The input is dropped with the command: the feed lets the stream go.
            tracing::warn!(stream = %s.stream_id, error = ?e, "composed: the media shard refused");
            return None;
        }
        Some((at.shard, rid))
    }

    pub(super) fn start(
        &self,
        spec: ComposedRecordingSpec,
        id: u64,
        mut next_id: impl FnMut() -> u64,
    ) -> Result<StreamRecorderId, BackendError> {
        let Some(program) = &self.program else {
            return Err(BackendError::Unsupported(missing_composer_message()));
        };
        let mut warm = lock(&self.state).warm.remove(&spec.session_id);
        if let Some(c) = warm.take_if(|c| !c.alive()) {
            c.kill();
        }
        let composer = match warm {
            Some(c) => c,
            None => Composer::launch(program).map_err(|e| {
                BackendError::Failed(format!("cannot start {}: {e}", program.display()))
            })?,
        };
        let p = &spec.props;
        let (width, height) = resolution(p.resolution.as_deref());
        let ext = if p.has_video { "mp4" } else { "webm" };
        let mut path = spec.file_base.clone().into_os_string();
        path.push(".");
        path.push(ext);
        let path = PathBuf::from(path);
        let thumbnail = p.has_video.then(|| {
            let dir = spec.file_base.parent().unwrap_or(Path::new("."));
            dir.join(format!("{}.jpg", spec.recording_id))
        });
        let start = StartParams {
            width,
            height,
            fps: p.frame_rate.unwrap_or(25).clamp(1, 120) as u16,
            has_audio: p.has_audio,
            has_video: p.has_video,
            path: path.clone(),
            thumbnail,
        };
        let events = self.events.clone();
        let created = spec.recording_created_at as i64;
        let state = Arc::clone(&self.state);
        let recording = spec.recording_id.clone();
        let session = spec.session_id.clone();
        let program = program.clone();
        let on_event = move |ev: FeedEvent| {
            let ev = match ev {
                FeedEvent::Finished { size, duration_ms, started, ended: _ } => {
                    let start = ms_since_epoch(started) - created;
                    BackendEvent::Finished {
                        id: StreamRecorderId(id),
                        file: path,
                        size,
                        start_time_offset: start,
                        end_time_offset: start + duration_ms as i64,
                    }
                }
                FeedEvent::Failed { reason } => {
                    tracing::warn!(%recording, %reason, "composed recording failed");
                    BackendEvent::Failed { id: StreamRecorderId(id), reason }
                }
            };
            lock(&state).runs.remove(&id);
            // COMPOSED_QUICK_START: the session's next recording gets a fresh warm composer.
            rewarm(&state, &program, &session);
            // The feed thread is no runtime thread (bounded channel, always drained).
            let _ = events.blocking_send(ev);
        };
        let feed = feed::spawn(composer, start, on_event)
            .map_err(|e| BackendError::Failed(format!("cannot start the composer feed: {e}")))?;
        let mut taps = HashMap::new();
        for s in &spec.streams {
            if let Some(t) = self.tap(&feed, s, next_id()) {
                taps.insert(s.stream_id.clone(), t);
            }
        }
        lock(&self.state).runs.insert(id, Run { feed, taps });
        Ok(StreamRecorderId(id))
    }

    pub(super) fn stream_added(&self, id: u64, s: &StreamRecordingSpec, rid: u64) {
        let mut st = lock(&self.state);
        let Some(run) = st.runs.get_mut(&id) else { return };
        if run.taps.contains_key(&s.stream_id) {
            return;
        }
        if let Some(t) = self.tap(&run.feed, s, rid) {
            run.taps.insert(s.stream_id.clone(), t);
        }
    }

    pub(super) fn stream_removed(&self, id: u64, stream_id: &str) {
        let mut st = lock(&self.state);
        let Some(run) = st.runs.get_mut(&id) else { return };
        if let Some((shard, rid)) = run.taps.remove(stream_id) {
            let _ = self.engine.send(shard, ShardCommand::DetachRecorder { recorder: rid });
        }
    }

    pub(super) fn stop(&self, id: u64) {
        let st = lock(&self.state);
        let Some(run) = st.runs.get(&id) else { return };
        for &(shard, rid) in run.taps.values() {
            let _ = self.engine.send(shard, ShardCommand::DetachRecorder { recorder: rid });
        }
        run.feed.stop();
    }

    /// A session created with COMPOSED_QUICK_START as its default output mode.
    pub(super) fn session_created(&self, session: &str) {
        let Some(program) = &self.program else { return };
        lock(&self.state).quick_start.insert(session.to_string());
        match Composer::launch(program) {
            Ok(c) => {
                if let Some(old) = lock(&self.state).warm.insert(session.to_string(), c) {
                    old.kill();
                }
            }
            Err(e) => tracing::warn!(%session, error = %e, "cannot launch a warm composer"),
        }
    }

    pub(super) fn session_closed(&self, session: &str) {
        let mut st = lock(&self.state);
        st.quick_start.remove(session);
        let gone = st.warm.remove(session);
        drop(st);
        if let Some(c) = gone {
            c.kill();
        }
    }
}
