//! OpenVidu 2.32's recording module in the control plane: the recording model and its state
//! machine (`starting → started → stopped → ready | failed`), the REST routes ([`http`]), the
//! `recordingStarted` / `recordingStopped` notifications, the `recordingStatusChanged` webhook,
//! `recordingMode: ALWAYS`, the autostop timer, and the INDIVIDUAL layout written on stop
//! ([`layout`]: `<name>.json` and `<name>.zip` beside `.recording.<id>`).
//!
//! Layout: [`props`] (properties checks, Recording JSON; sans-IO), `backend.rs` (the seam
//! below), `events.rs` (registry events in; notifications, joinRoom fields and webhooks out),
//! [`layout`] (files on disk), `task.rs` (timers, recorder events, the layout writer), [`http`]
//! (routes); this file holds [`Recordings`] and the state machine.
//!
//! The media side is behind [`RecordingBackend`]: the control plane asks it to start and stop
//! one recorder per published stream (INDIVIDUAL) or one composition (COMPOSED), and awaits its
//! [`BackendEvent`]s on a channel. Without a backend attached
//! ([`super::ControlPlane::attach_recording`]) recording is reported off and every recording
//! route answers 501, as OpenVidu with `OPENVIDU_RECORDING=false`: nothing is ever accepted
//! that would record nothing. A recorder that fails while its recording runs (a full disk)
//! stops the recording at once (unless `ignoreFailedStreams` keeps other streams going), which
//! then goes `failed` with the recorder's reason.
//!
//! How it follows the sessions: after every registry operation the shell hands this module the
//! registry's webhook outputs (`observe`), whatever the webhook configuration: a stream
//! published or unpublished, a participant gone, a session destroyed. The state lives in
//! [`Recordings`] inside the control plane's one `State`, under the same lock as the registry;
//! timers and file writing run as tasks that come back through that lock.

mod backend;
pub mod composed;
mod events;
pub mod http;
pub mod layout;
pub mod native;
pub mod props;
mod task;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::registry::{ActiveRecording, Output, Session};
use super::{Inner, State, now_ms};
pub use backend::{
    BackendError, BackendEvent, ComposedRecordingSpec, EVENT_QUEUE, RecordingBackend,
    StreamRecorderId, StreamRecordingSpec,
};
pub(crate) use events::{RegEvent, join_fields, observe};
use events::{notify_roles, status_hook};
pub use props::{OutputMode, Recording, RecordingProps, Status};
pub(crate) use task::run;

/// Unix epoch milliseconds.
pub type Ms = u64;

/// The backend and the task's inbox, once attached.
pub(crate) struct Runtime {
    pub backend: Arc<dyn RecordingBackend>,
    pub effects: mpsc::UnboundedSender<Effect>,
}

/// Work for the recording task (timers and file writing, outside the lock).
#[derive(Debug)]
pub(crate) enum Effect {
    Autostop { session: String, epoch: u64, after: Duration },
    Watch { id: String },
    Finalize(Box<layout::Job>),
}

/// One stream recorder of a recording.
#[derive(Clone, Debug)]
struct StreamRec {
    recorder: StreamRecorderId,
    stream_id: String,
    connection_id: String,
    client_data: String,
    server_data: String,
    has_audio: bool,
    has_video: bool,
    type_of_video: Option<String>,
    stopping: bool,
    done: Option<Result<layout::Done, String>>,
}

#[derive(Clone, Debug)]
struct Entry {
    rec: Recording,
    streams: Vec<StreamRec>,
    composed: Option<StreamRecorderId>,
    composed_done: Option<Result<layout::Done, String>>,
    reason: Option<String>,
    finalizing: bool,
}

/// Every recording this server knows, and the sessions being recorded.
#[derive(Default)]
pub struct Recordings {
    all: BTreeMap<String, Entry>,
    /// Session id → its active recording's id.
    active: HashMap<String, String>,
    recorders: HashMap<StreamRecorderId, String>,
    /// Sessions whose recording was stopped by REST: ALWAYS does not restart them.
    manually_stopped: HashSet<String>,
    /// Session → (epoch, reason) of its armed autostop timer.
    autostop: HashMap<String, (u64, String)>,
    epoch: u64,
}

impl Recordings {
    /// Recordings not finished yet: starting, started, or stopped and still being written
    /// (their files, `<name>.json` and `<name>.zip` not final).
    pub fn unfinished(&self) -> usize {
        self.all
            .values()
            .filter(|e| {
                matches!(e.rec.status, Status::Starting | Status::Started | Status::Stopped)
            })
            .count()
    }
}

/// Why a start was refused (REST status in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartError {
    /// No such session (404).
    NotFound,
    /// Not ROUTED or already being recorded (409).
    Conflict,
    /// No participant connected (406).
    NotAcceptable,
    /// The backend cannot (501).
    Unsupported(String),
    /// The properties ask for what is not built (422): a CUSTOM layout.
    Unprocessable(String),
    /// The backend or the disk failed (500).
    Failed(String),
}

/// Why a stop was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopError {
    /// Unknown, or not being recorded any more (404, as OpenVidu's started-recordings lookup).
    NotFound,
    /// Still starting (406).
    Starting,
}

impl Recordings {
    /// The recordings found under `dir` (each `<id>/.recording.<id>`); one left `starting`,
    /// `started` or `stopped` by a previous process is `failed` now (its files were never
    /// sealed).
    pub fn load(dir: &Path) -> Recordings {
        let mut r = Recordings::default();
        for mut rec in layout::load_all(dir) {
            if !matches!(rec.status, Status::Ready | Status::Failed) {
                rec.status = Status::Failed;
            }
            let entry = Entry {
                rec,
                streams: Vec::new(),
                composed: None,
                composed_done: None,
                reason: None,
                finalizing: false,
            };
            r.all.insert(entry.rec.id.clone(), entry);
        }
        r
    }

    pub fn get(&self, id: &str) -> Option<&Recording> {
        self.all.get(id).map(|e| &e.rec)
    }

    /// All recordings, by id.
    pub fn list(&self) -> Vec<&Recording> {
        self.all.values().map(|e| &e.rec).collect()
    }

    /// The recording in progress of a session.
    pub fn active_of(&self, session: &str) -> Option<&Recording> {
        self.active.get(session).and_then(|id| self.get(id))
    }

    /// Forgets a finished recording (its directory is the caller's to delete).
    fn forget(&mut self, id: &str) {
        self.all.remove(id);
    }
}

/// The recording directory of `id`.
pub(crate) fn dir_of(inner: &Inner, id: &str) -> PathBuf {
    Path::new(&inner.cfg.recording.path).join(id)
}

/// `<public url>/openvidu/recordings/<id>/<file>` (OpenVidu's recording `url`).
fn url_of(inner: &Inner, rec: &Recording) -> String {
    format!("{}/openvidu/recordings/{}/{}", inner.cfg.public_url(), rec.id, rec.file_name())
}

/// Whether the recording API is on: configured and a backend attached.
pub(crate) fn enabled(inner: &Inner) -> bool {
    inner.cfg.recording.enabled && inner.recording.get().is_some()
}

fn effect(inner: &Inner, e: Effect) {
    if let Some(rt) = inner.recording.get() {
        let _ = rt.effects.send(e);
    }
}

fn write_entity(inner: &Inner, rec: &Recording) {
    if let Err(e) = layout::write_entity(&dir_of(inner, &rec.id), rec) {
        tracing::warn!(recording = %rec.id, error = %e, "cannot write the recording entity file");
    }
}

/// A free recording id: the session id, then `<session>~1`, `~2`, … (OpenVidu's
/// `getNextAvailableRecordingId`, over the known recordings and the directories on disk).
fn free_id(inner: &Inner, st: &State, session: &str) -> String {
    let taken = |id: &str| st.rec.all.contains_key(id) || dir_of(inner, id).exists();
    let mut id = session.to_string();
    let mut i = 1u64;
    while taken(&id) {
        id = format!("{session}~{i}");
        i += 1;
    }
    id
}

/// The stream spec of connection `cid`'s published stream for recording `rec`, with the file
/// name OpenVidu gives the stream's n-th recorder; `None` when nothing of it is recordable.
fn stream_spec(
    inner: &Inner,
    entry: &Entry,
    session: &Session,
    cid: &str,
) -> Option<(StreamRecordingSpec, StreamRec)> {
    let conn = session.connection(cid)?;
    let stream = conn.publisher.as_ref()?;
    if !conn.props.record {
        return None;
    }
    let p = &entry.rec.props;
    let has_audio = stream.media.has_audio && p.has_audio;
    let has_video = stream.media.has_video && p.has_video;
    if !has_audio && !has_video {
        tracing::warn!(stream = %stream.id, "stream incompatible with the recording's hasAudio/hasVideo; skipped");
        return None;
    }
    let n = entry.streams.iter().filter(|s| s.stream_id == stream.id).count();
    let file_name = if n == 0 { stream.id.clone() } else { format!("{}-{n}", stream.id) };
    let spec = StreamRecordingSpec {
        recording_id: entry.rec.id.clone(),
        session_id: session.id.clone(),
        connection_id: conn.id.clone(),
        stream_id: stream.id.clone(),
        file_base: dir_of(inner, &entry.rec.id).join(file_name),
        has_audio,
        has_video,
        tracks: stream.transport.as_ref().map(|t| t.negotiated.clone()).unwrap_or_default(),
        publisher: stream.transport.as_ref().map(|t| t.at),
        recording_created_at: entry.rec.created_at,
    };
    let rec = StreamRec {
        recorder: StreamRecorderId(0),
        stream_id: stream.id.clone(),
        connection_id: conn.id.clone(),
        client_data: conn.active.as_ref().map(|a| a.client_data.clone()).unwrap_or_default(),
        server_data: conn.props.data.clone(),
        has_audio,
        has_video,
        type_of_video: stream.media.type_of_video.clone().filter(|_| stream.media.has_video),
        stopping: false,
        done: None,
    };
    Some((spec, rec))
}

/// Why a CUSTOM layout cannot be recorded: what it names that is missing.
fn custom_layout_message(props: &RecordingProps) -> String {
    let named = match props.custom_layout.as_deref() {
        Some(c) if !c.is_empty() => format!("customLayout \"{c}\""),
        _ => "the default custom layout (customLayout empty)".to_string(),
    };
    format!(
        "recordingLayout CUSTOM is not supported: {named} is a web page the recorder would have \
         to render, and ringsfu's composer has no page renderer (no custom layouts directory, \
         no browser); use recordingLayout BEST_FIT"
    )
}

/// Starts recording `session_id` (REST or ALWAYS).
pub(crate) fn start(
    inner: &Inner,
    st: &mut State,
    session_id: &str,
    mut props: RecordingProps,
    now: Ms,
) -> Result<Recording, StartError> {
    let Some(rt) = inner.recording.get() else {
        return Err(StartError::Unsupported("recording is disabled".into()));
    };
    let session = st.reg.session(session_id).ok_or(StartError::NotFound)?;
    if session.props.media_mode != "ROUTED" || st.rec.active.contains_key(session_id) {
        return Err(StartError::Conflict);
    }
    if session.active_count() == 0 {
        return Err(StartError::NotAcceptable);
    }
    if props.output_mode.is_composed()
        && props.has_video
        && props.recording_layout.as_deref() == Some("CUSTOM")
    {
        return Err(StartError::Unprocessable(custom_layout_message(&props)));
    }
    let id = free_id(inner, st, session_id);
    if props.name.is_empty() {
        props.name = id.clone();
    }
    // Invariant: looked up above, nothing removed since.
    let session = st.reg.session(session_id).ok_or(StartError::NotFound)?.clone();
    let mut entry = Entry {
        rec: Recording {
            id: id.clone(),
            session_id: session_id.to_string(),
            unique_session_id: format!("{}_{}", session.id, session.created_at),
            created_at: now,
            props,
            status: Status::Starting,
            size: 0,
            duration: 0.0,
            url: None,
        },
        streams: Vec::new(),
        composed: None,
        composed_done: None,
        reason: None,
        finalizing: false,
    };
    let dir = dir_of(inner, &id);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Err(StartError::Failed(format!("cannot create {}: {e}", dir.display())));
    }
    let publishers: Vec<String> = session
        .connections
        .iter()
        .filter(|c| c.active.is_some() && c.publisher.is_some())
        .map(|c| c.id.clone())
        .collect();
    let outcome = if entry.rec.props.output_mode.is_composed() {
        let streams =
            publishers.iter().filter_map(|c| stream_spec(inner, &entry, &session, c)).map(|x| x.0);
        let spec = ComposedRecordingSpec {
            recording_id: id.clone(),
            session_id: session_id.to_string(),
            file_base: dir.join(&entry.rec.props.name),
            props: entry.rec.props.clone(),
            streams: streams.collect(),
            recording_created_at: now,
        };
        rt.backend.start_composed(spec).map(|r| entry.composed = Some(r))
    } else {
        let ignore = entry.rec.props.ignore_failed_streams == Some(true);
        let mut result = Ok(());
        for cid in &publishers {
            let Some((spec, mut s)) = stream_spec(inner, &entry, &session, cid) else { continue };
            match rt.backend.start_individual(spec) {
                Ok(r) => {
                    s.recorder = r;
                    entry.streams.push(s);
                }
                Err(BackendError::Failed(why)) if ignore => {
                    tracing::warn!(recording = %id, stream = %s.stream_id, %why, "stream not recorded (ignoreFailedStreams)");
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_err() {
            for s in &entry.streams {
                rt.backend.stop_individual(s.recorder);
            }
        }
        result
    };
    match outcome {
        Err(BackendError::Unsupported(why)) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(StartError::Unsupported(why));
        }
        Err(BackendError::Failed(why)) => {
            // OpenVidu's failStartRecording: sealed as failed, webhook `failed`, 500.
            entry.rec.status = Status::Failed;
            entry.rec.url = Some(url_of(inner, &entry.rec));
            write_entity(inner, &entry.rec);
            st.reg.emit(Output::Webhook(status_hook(&entry.rec, Status::Failed, None, now)));
            st.rec.all.insert(id, entry);
            return Err(StartError::Failed(why));
        }
        Ok(()) => {}
    }
    entry.rec.status = Status::Started;
    for s in &entry.streams {
        st.rec.recorders.insert(s.recorder, id.clone());
    }
    if let Some(r) = entry.composed {
        st.rec.recorders.insert(r, id.clone());
    }
    let rec = entry.rec.clone();
    write_entity(inner, &rec);
    st.rec.all.insert(id.clone(), entry);
    st.rec.active.insert(session_id.to_string(), id.clone());
    st.reg.set_recording(
        session_id,
        Some(ActiveRecording { id: id.clone(), name: rec.props.name.clone() }),
    );
    st.reg.emit(Output::Webhook(status_hook(&rec, Status::Started, None, now)));
    notify_roles(
        inner,
        st,
        session_id,
        "recordingStarted",
        json!({"id": rec.id, "name": rec.props.name}),
    );
    if publishers.is_empty() {
        arm_autostop(inner, st, session_id, "automaticStop");
    }
    tracing::info!(recording = %id, session = %session_id, mode = rec.props.output_mode.as_str(), "recording started");
    Ok(rec)
}

/// Stops recording `id` with `reason` (REST `recordingStoppedByServer`, autostop, session
/// closed). `manual`: by REST (ALWAYS then does not restart the session's recording).
pub(crate) fn stop(
    inner: &Inner,
    st: &mut State,
    id: &str,
    reason: &str,
    manual: bool,
    now: Ms,
) -> Result<Recording, StopError> {
    let entry = st.rec.all.get_mut(id).ok_or(StopError::NotFound)?;
    match entry.rec.status {
        Status::Starting => return Err(StopError::Starting),
        Status::Started => {}
        _ => return Err(StopError::NotFound),
    }
    entry.rec.status = Status::Stopped;
    entry.reason = Some(reason.to_string());
    let rec = entry.rec.clone();
    let session = rec.session_id.clone();
    if let Some(rt) = inner.recording.get() {
        for s in entry.streams.iter_mut().filter(|s| !s.stopping && s.done.is_none()) {
            s.stopping = true;
            rt.backend.stop_individual(s.recorder);
        }
        if let Some(c) = entry.composed.filter(|_| entry.composed_done.is_none()) {
            rt.backend.stop_composed(c);
        }
    }
    write_entity(inner, &rec);
    st.rec.active.remove(&session);
    if manual {
        st.rec.manually_stopped.insert(session.clone());
    }
    st.reg.set_recording(&session, None);
    st.reg.emit(Output::Webhook(status_hook(&rec, Status::Stopped, Some(reason), now)));
    notify_roles(
        inner,
        st,
        &session,
        "recordingStopped",
        json!({"id": rec.id, "name": rec.props.name, "reason": reason}),
    );
    // OpenVidu's abortAutomaticRecordingStopThread: a recording stopped during the autostop
    // wait of an empty session closes the session.
    if st.rec.autostop.remove(&session).is_some()
        && st.reg.session(&session).is_some_and(|s| s.active_count() == 0)
    {
        st.reg.close_session(&session, reason, now);
    }
    tracing::info!(recording = %id, %reason, "recording stopped");
    effect(inner, Effect::Watch { id: id.to_string() });
    try_finalize(inner, st, id);
    Ok(rec)
}

fn arm_autostop(inner: &Inner, st: &mut State, session: &str, reason: &str) {
    if st.rec.autostop.contains_key(session) {
        return;
    }
    st.rec.epoch += 1;
    let epoch = st.rec.epoch;
    st.rec.autostop.insert(session.to_string(), (epoch, reason.to_string()));
    let after = Duration::from_secs(inner.cfg.recording.autostop_timeout);
    tracing::info!(session, secs = after.as_secs(), "recording autostop armed");
    effect(inner, Effect::Autostop { session: session.to_string(), epoch, after });
}

/// The autostop timer `epoch` of `session` fired.
pub(crate) fn autostop_fired(inner: &Inner, st: &mut State, session: &str, epoch: u64) {
    let Some((e, reason)) = st.rec.autostop.get(session).cloned() else { return };
    if e != epoch {
        return;
    }
    st.rec.autostop.remove(session);
    let now = now_ms();
    let empty = st.reg.session(session).map(|s| s.active_count() == 0);
    match empty {
        // The session goes, and its recording with it (Destroyed below).
        Some(true) => {
            st.reg.close_session(session, &reason, now);
        }
        Some(false) => {
            if let Some(id) = st.rec.active.get(session).cloned() {
                let _ = stop(inner, st, &id, &reason, false, now);
            }
        }
        None => {}
    }
}

/// Follows the registry: ALWAYS starts, streams joining or leaving a recording, autostop,
/// session close.
pub(crate) fn on_registry_events(inner: &Inner, st: &mut State, events: Vec<RegEvent>) {
    let Some(rt) = inner.recording.get() else { return };
    if !inner.cfg.recording.enabled {
        return;
    }
    let now = now_ms();
    for ev in events {
        match ev {
            RegEvent::Published { session, connection, stream: _ } => {
                if let Some(id) = st.rec.active.get(&session).cloned() {
                    st.rec.autostop.remove(&session);
                    let Some(s) = st.reg.session(&session).cloned() else { continue };
                    let Some(entry) = st.rec.all.get_mut(&id) else { continue };
                    if let Some(c) = entry.composed.filter(|_| entry.composed_done.is_none()) {
                        if let Some((spec, _)) = stream_spec(inner, entry, &s, &connection) {
                            rt.backend.composed_stream_added(c, spec);
                        }
                        continue;
                    }
                    if entry.rec.props.output_mode != OutputMode::Individual {
                        continue;
                    }
                    let Some((spec, mut sr)) = stream_spec(inner, entry, &s, &connection) else {
                        continue;
                    };
                    match rt.backend.start_individual(spec) {
                        Ok(r) => {
                            sr.recorder = r;
                            entry.streams.push(sr);
                            st.rec.recorders.insert(r, id.clone());
                        }
                        Err(e) => {
                            tracing::error!(recording = %id, stream = %sr.stream_id, error = ?e, "cannot record a new stream");
                        }
                    }
                    continue;
                }
                let Some(s) = st.reg.session(&session) else { continue };
                let publishers = s.connections.iter().filter(|c| c.publisher.is_some()).count();
                if s.props.recording_mode == "ALWAYS"
                    && publishers == 1
                    && !st.rec.manually_stopped.contains(&session)
                {
                    let defaults = match &s.props.default_recording_properties {
                        Value::Object(m) => m.clone(),
                        _ => serde_json::Map::new(),
                    };
                    let started = props::parse(&serde_json::Map::new(), Some(&defaults))
                        .map_err(|e| StartError::Failed(e.message().to_string()))
                        .and_then(|p| start(inner, st, &session, p, now));
                    if let Err(e) = started {
                        tracing::error!(%session, error = ?e, "recordingMode ALWAYS: cannot start the recording");
                    }
                }
            }
            RegEvent::Unpublished { session, stream } => {
                let Some(id) = st.rec.active.get(&session) else { continue };
                let Some(entry) = st.rec.all.get_mut(id) else { continue };
                if let Some(c) = entry.composed.filter(|_| entry.composed_done.is_none()) {
                    rt.backend.composed_stream_removed(c, &stream);
                }
                for s in entry.streams.iter_mut() {
                    if s.stream_id == stream && !s.stopping && s.done.is_none() {
                        s.stopping = true;
                        rt.backend.stop_individual(s.recorder);
                    }
                }
            }
            RegEvent::Left { session, reason } => {
                if reason == "sessionClosedByServer" || !st.rec.active.contains_key(&session) {
                    continue;
                }
                if st.reg.session(&session).is_some_and(|s| s.active_count() == 0) {
                    let why = if inner.cfg.recording.autostop_timeout == 0 {
                        "lastParticipantLeft"
                    } else {
                        "automaticStop"
                    };
                    arm_autostop(inner, st, &session, why);
                }
            }
            RegEvent::Created { session } => {
                let quick = st.reg.session(&session).is_some_and(|s| {
                    s.props.default_recording_properties.get("outputMode").and_then(Value::as_str)
                        == Some("COMPOSED_QUICK_START")
                });
                if quick {
                    rt.backend.quick_start_session(&session);
                }
            }
            RegEvent::Destroyed { session, reason } => {
                rt.backend.session_closed(&session);
                st.rec.autostop.remove(&session);
                st.rec.manually_stopped.remove(&session);
                if let Some(id) = st.rec.active.get(&session).cloned() {
                    let _ = stop(inner, st, &id, props::final_reason(&reason), false, now);
                }
            }
        }
    }
}

/// A recorder finished or failed.
pub(crate) fn on_backend_event(inner: &Inner, st: &mut State, ev: BackendEvent) {
    let (rid, outcome) = match ev {
        BackendEvent::Finished { id, file, size, start_time_offset, end_time_offset } => {
            (id, Ok(layout::Done { file, size, start_time_offset, end_time_offset }))
        }
        BackendEvent::Failed { id, reason } => (id, Err(reason)),
    };
    let Some(rec_id) = st.rec.recorders.remove(&rid) else { return };
    let Some(entry) = st.rec.all.get_mut(&rec_id) else {
        // Deleted while stopping: once its last recorder is done, nothing of it stays.
        if !st.rec.recorders.values().any(|r| *r == rec_id) {
            let dir = dir_of(inner, &rec_id);
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir));
        }
        return;
    };
    if let Err(why) = &outcome {
        tracing::warn!(recording = %rec_id, recorder = rid.0, %why, "recorder failed");
    }
    let failed = outcome.is_err();
    if entry.composed == Some(rid) {
        entry.composed_done = Some(outcome);
    } else if let Some(s) = entry.streams.iter_mut().find(|s| s.recorder == rid) {
        s.done = Some(outcome);
    }
    // A recorder that fails while the recording runs (a full disk) fails the whole recording
    // unless ignoreFailedStreams keeps others going: it is stopped now, so it goes `failed`
    // with the reason instead of staying `started` with nothing being written.
    let ignore = entry.rec.props.ignore_failed_streams == Some(true);
    let all_failed = entry.streams.iter().all(|s| matches!(s.done, Some(Err(_))))
        && entry.composed_done.as_ref().is_none_or(Result::is_err);
    if failed && entry.rec.status == Status::Started && (!ignore || all_failed) {
        // Not by REST, but an ALWAYS session must not restart into the same failure.
        let _ = stop(inner, st, &rec_id, "recordingStoppedByServer", true, now_ms());
        return;
    }
    try_finalize(inner, st, &rec_id);
}

/// Once a stopped recording has every recorder's outcome: the layout is written off the
/// runtime (INDIVIDUAL), or the composed file sealed.
fn try_finalize(inner: &Inner, st: &mut State, id: &str) {
    let Some(entry) = st.rec.all.get_mut(id) else { return };
    if entry.rec.status != Status::Stopped || entry.finalizing {
        return;
    }
    if entry.streams.iter().any(|s| s.done.is_none())
        || (entry.composed.is_some() && entry.composed_done.is_none())
    {
        return;
    }
    entry.finalizing = true;
    let ignore = entry.rec.props.ignore_failed_streams == Some(true);
    let mut files = Vec::new();
    let mut failure = None;
    if let Some(done) = &entry.composed_done {
        match done {
            Ok(d) => files.push(layout::StreamFile::composed(d.clone())),
            Err(why) => failure = Some(why.clone()),
        }
    }
    for s in &entry.streams {
        match &s.done {
            Some(Ok(d)) => files.push(layout::StreamFile {
                done: d.clone(),
                connection_id: s.connection_id.clone(),
                stream_id: s.stream_id.clone(),
                client_data: s.client_data.clone(),
                server_data: s.server_data.clone(),
                has_audio: s.has_audio,
                has_video: s.has_video,
                type_of_video: s.type_of_video.clone(),
            }),
            Some(Err(why)) if !ignore => {
                failure.get_or_insert_with(|| format!("stream {}: {why}", s.stream_id));
            }
            _ => {}
        }
    }
    let job = layout::Job {
        dir: dir_of(inner, id),
        rec: entry.rec.clone(),
        files,
        failure,
        reason: entry.reason.clone(),
    };
    effect(inner, Effect::Finalize(Box::new(job)));
}

/// The layout task's outcome: `ready` with size and duration, or `failed`.
pub(crate) fn finalized(inner: &Inner, st: &mut State, id: &str, out: layout::Outcome) {
    let now = now_ms();
    let Some(entry) = st.rec.all.get_mut(id) else {
        // Deleted while its files were written: nothing of it stays.
        let _ = std::fs::remove_dir_all(dir_of(inner, id));
        return;
    };
    if entry.rec.status != Status::Stopped {
        return;
    }
    let reason = entry.reason.clone();
    let failure = match out {
        layout::Outcome::Ready { size, duration } => {
            entry.rec.status = Status::Ready;
            entry.rec.size = size;
            entry.rec.duration = duration;
            None
        }
        layout::Outcome::Failed(why) => {
            entry.rec.status = Status::Failed;
            Some(why)
        }
    };
    entry.rec.url = Some(url_of(inner, &entry.rec));
    let rec = entry.rec.clone();
    write_entity(inner, &rec);
    let hook_reason = match &failure {
        Some(why) => Some(why.clone()),
        None => reason,
    };
    if let Some(why) = &failure {
        tracing::error!(recording = %id, %why, "recording failed");
    } else {
        tracing::info!(recording = %id, size = rec.size, "recording ready");
    }
    st.reg.emit(Output::Webhook(status_hook(&rec, rec.status, hook_reason.as_deref(), now)));
}

/// A stopped recording still waiting for recorders after [`task::COMPLETION_TIMEOUT`]: those are
/// given up as failed.
pub(crate) fn watch_expired(inner: &Inner, st: &mut State, id: &str) {
    let Some(entry) = st.rec.all.get_mut(id) else { return };
    if entry.rec.status != Status::Stopped || entry.finalizing {
        return;
    }
    let gone: Vec<StreamRecorderId> = entry
        .streams
        .iter_mut()
        .filter(|s| s.done.is_none())
        .map(|s| {
            s.done = Some(Err("the recorder did not finish in time".into()));
            s.recorder
        })
        .chain(entry.composed.filter(|_| entry.composed_done.is_none()))
        .collect();
    if entry.composed.is_some() && entry.composed_done.is_none() {
        entry.composed_done = Some(Err("the composer did not finish in time".into()));
    }
    for r in gone {
        st.rec.recorders.remove(&r);
    }
    try_finalize(inner, st, id);
}

/// Why a delete was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteError {
    /// Unknown (404).
    NotFound,
    /// Starting or started (409).
    Active,
}

/// `DELETE /recordings/{id}`. A recording whose files are still being sealed (`stopped`) is
/// forgotten now and its directory removed once the writer is done.
pub(crate) fn delete(inner: &Inner, st: &mut State, id: &str) -> Result<(), DeleteError> {
    let entry = st.rec.all.get(id).ok_or(DeleteError::NotFound)?;
    if entry.rec.status.is_active() {
        return Err(DeleteError::Active);
    }
    let finalizing = entry.rec.status == Status::Stopped;
    st.rec.forget(id);
    if !finalizing {
        let dir = dir_of(inner, id);
        tokio::task::spawn_blocking(move || {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot delete a recording");
            }
        });
    }
    Ok(())
}
