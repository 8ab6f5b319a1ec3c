//! The built-in recording backend: INDIVIDUAL recordings by recorder consumers on the media
//! shards ([`crate::media::ShardCommand::AttachRecorder`]) feeding one recorder thread per
//! stream ([`crate::record::writer`]), which writes WebM (VP8, VP9, AV1, Opus) or Matroska
//! (H.264). No transcoding, no process beside ringsfu.
//!
//! COMPOSED and COMPOSED_QUICK_START go to a composer process ([`super::composed`]); without
//! one installed they are refused with 501 and what to install.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use super::{
    BackendError, BackendEvent, ComposedRecordingSpec, RecordingBackend, StreamRecorderId,
    StreamRecordingSpec,
};
use crate::media::{MediaEngine, RecorderFeed, ShardCommand};
use crate::record::recorder::RecorderConfig;
use crate::record::writer::{RecorderEvent, RecorderHandle, spawn};
use crate::sdp::MediaKind;
use crate::wire::codec::Codec;

/// Packets a recorder's ring holds (about 1.5 KiB each): two seconds of a 4 Mbit/s stream.
const RING_SLOTS: usize = 1024;

/// See the module docs.
pub struct NativeRecorder {
    engine: Arc<MediaEngine>,
    events: mpsc::Sender<BackendEvent>,
    /// Running recorders. Locked by the control plane's start/stop calls only (never by a
    /// shard or a recorder thread).
    running: Mutex<Running>,
    composed: super::composed::ComposedBackend,
}

#[derive(Default)]
struct Running {
    next: u64,
    by_id: HashMap<u64, (RecorderHandle, usize)>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// What a stream's tracks give the recorder: its video codec, whether it has Opus audio, and
/// the file extension.
fn plan(spec: &StreamRecordingSpec) -> Result<(Option<Codec>, bool, &'static str), BackendError> {
    let video = spec.tracks.iter().find(|m| m.kind == MediaKind::Video && spec.has_video);
    let audio = spec.tracks.iter().find(|m| m.kind == MediaKind::Audio && spec.has_audio);
    let video = match video.map(|m| (Codec::from_sdp_name(&m.codec.name), &m.codec.name)) {
        None => None,
        Some((c @ (Codec::Vp8 | Codec::Vp9 | Codec::H264 | Codec::Av1), _)) => Some(c),
        Some((_, name)) => {
            return Err(BackendError::Failed(format!("video codec {name} cannot be recorded")));
        }
    };
    let opus = audio.is_some_and(|m| Codec::from_sdp_name(&m.codec.name) == Codec::Opus);
    if audio.is_some() && !opus {
        tracing::warn!(
            stream = %spec.stream_id,
            "the stream's audio is not Opus: recorded without audio"
        );
    }
    if video.is_none() && !opus {
        return Err(BackendError::Failed("the stream has nothing this recorder can write".into()));
    }
    let ext = if video == Some(Codec::H264) { "mkv" } else { "webm" };
    Ok((video, opus, ext))
}

impl NativeRecorder {
    /// A backend recording through `engine`'s shards; completions go to `events`.
    /// `composer`: the composer program ([`super::composed::find_composer`]); `None`: COMPOSED
    /// answers 501.
    pub fn new(
        engine: Arc<MediaEngine>,
        events: mpsc::Sender<BackendEvent>,
        composer: Option<PathBuf>,
    ) -> NativeRecorder {
        let composed =
            super::composed::ComposedBackend::new(engine.clone(), events.clone(), composer);
        NativeRecorder { engine, events, running: Mutex::new(Running::default()), composed }
    }

    fn next_id(&self) -> u64 {
        let mut r = self.running();
        r.next += 1;
        r.next
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        // Poisoned only by a panic while held; the map stays usable.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl RecordingBackend for NativeRecorder {
    fn start_individual(
        &self,
        spec: StreamRecordingSpec,
    ) -> Result<StreamRecorderId, BackendError> {
        let Some(at) = spec.publisher else {
            return Err(BackendError::Failed("the stream has no media transport".into()));
        };
        let (video, audio, ext) = plan(&spec)?;
        let mut path = spec.file_base.clone().into_os_string();
        path.push(".");
        path.push(ext);
        let path = PathBuf::from(path);
        let id = {
            let mut r = self.running();
            r.next += 1;
            r.next
        };
        // The recorder's clock starts now: its offsets count from here.
        let base = unix_ms() as i64 - spec.recording_created_at as i64;
        let events = self.events.clone();
        let file = path.clone();
        let stream = spec.stream_id.clone();
        let on_event = move |e: RecorderEvent| {
            let ev = match e {
                RecorderEvent::Note(n) => {
                    tracing::info!(%stream, note = ?n, "recorder");
                    return;
                }
                RecorderEvent::Finished(s) => BackendEvent::Finished {
                    id: StreamRecorderId(id),
                    file: file.clone(),
                    size: s.size,
                    start_time_offset: base + s.start_offset_ms as i64,
                    end_time_offset: base + s.end_offset_ms as i64,
                },
                RecorderEvent::Failed { reason, written } => {
                    tracing::warn!(%stream, %reason, written, "recording failed");
                    BackendEvent::Failed { id: StreamRecorderId(id), reason }
                }
            };
            // The recorder thread is no runtime thread: blocking here waits for the control
            // plane to take the event (bounded channel), which it always does.
            let _ = events.blocking_send(ev);
        };
        let (input, handle) = spawn(path, RecorderConfig::new(video, audio), RING_SLOTS, on_event)
            .map_err(|e| BackendError::Failed(format!("cannot start a recorder thread: {e}")))?;
        let cmd = ShardCommand::AttachRecorder {
            publisher: at.peer,
            recorder: id,
            feed: RecorderFeed::new(input),
        };
        if let Err(e) = self.engine.send(at.shard, cmd) {
            handle.stop();
            return Err(BackendError::Failed(format!("the media shard refused: {e:?}")));
        }
        self.running().by_id.insert(id, (handle, at.shard));
        Ok(StreamRecorderId(id))
    }

    fn stop_individual(&self, id: StreamRecorderId) {
        let Some((handle, shard)) = self.running().by_id.remove(&id.0) else { return };
        // Either stops it: the shard lets go of the ring, the thread closes the file.
        let _ = self.engine.send(shard, ShardCommand::DetachRecorder { recorder: id.0 });
        handle.stop();
    }

    fn start_composed(
        &self,
        spec: ComposedRecordingSpec,
    ) -> Result<StreamRecorderId, BackendError> {
        let id = self.next_id();
        self.composed.start(spec, id, || self.next_id())
    }

    fn stop_composed(&self, id: StreamRecorderId) {
        self.composed.stop(id.0);
    }

    fn composed_stream_added(&self, id: StreamRecorderId, stream: StreamRecordingSpec) {
        let rid = self.next_id();
        self.composed.stream_added(id.0, &stream, rid);
    }

    fn composed_stream_removed(&self, id: StreamRecorderId, stream_id: &str) {
        self.composed.stream_removed(id.0, stream_id);
    }

    fn quick_start_session(&self, session_id: &str) {
        self.composed.session_created(session_id);
    }

    fn session_closed(&self, session_id: &str) {
        self.composed.session_closed(session_id);
    }
}
