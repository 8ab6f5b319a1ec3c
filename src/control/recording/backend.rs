//! The seam to the media side: what the control plane asks a recorder to do, and what the
//! recorder reports back.

use std::path::PathBuf;

use super::Ms;
use super::props::RecordingProps;
use crate::control::registry::TransportRef;
use crate::sdp::NegotiatedMedia;

/// A recorder the backend runs (one stream, or one composition); chosen by the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamRecorderId(pub u64);

/// What to record of one published stream (INDIVIDUAL).
#[derive(Clone, Debug)]
pub struct StreamRecordingSpec {
    pub recording_id: String,
    pub session_id: String,
    pub connection_id: String,
    pub stream_id: String,
    /// The file to write, without extension (`<recording dir>/<streamId>` or
    /// `…/<streamId>-<n>` for the n-th republication): the backend adds `.webm` or `.mkv`.
    pub file_base: PathBuf,
    /// What to record (the stream's tracks intersected with the recording's `hasAudio` /
    /// `hasVideo`).
    pub has_audio: bool,
    pub has_video: bool,
    /// The publisher's agreed m-lines (codec, payload types, SSRCs) in track order; empty when
    /// the stream has no media transport (no media engine).
    pub tracks: Vec<NegotiatedMedia>,
    /// Where the publisher's transport lives.
    pub publisher: Option<TransportRef>,
    /// The recording's `createdAt`: [`BackendEvent::Finished`]'s offsets count from it.
    pub recording_created_at: Ms,
}

/// What to record of a whole session (COMPOSED, COMPOSED_QUICK_START).
#[derive(Clone, Debug)]
pub struct ComposedRecordingSpec {
    pub recording_id: String,
    pub session_id: String,
    /// `<recording dir>/<name>` without extension (`.mp4`, or `.webm` audio-only).
    pub file_base: PathBuf,
    pub props: RecordingProps,
    /// The session's recordable streams when it starts.
    pub streams: Vec<StreamRecordingSpec>,
    pub recording_created_at: Ms,
}

/// Why a backend refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendError {
    /// Not built in (e.g. COMPOSED without a composer): the REST call answers 501 with this text.
    Unsupported(String),
    /// Could not start now (disk, resources): 500, or the stream is skipped when
    /// `ignoreFailedStreams`.
    Failed(String),
}

/// Completion of a recorder, sent by the backend once its file is closed (or given up).
#[derive(Clone, Debug, PartialEq)]
pub enum BackendEvent {
    Finished {
        id: StreamRecorderId,
        /// The complete file (with its extension), inside the recording's directory.
        file: PathBuf,
        /// Bytes.
        size: u64,
        /// Milliseconds from the recording's `createdAt` to the first and last media written.
        start_time_offset: i64,
        end_time_offset: i64,
    },
    Failed {
        id: StreamRecorderId,
        reason: String,
    },
}

/// The media side of recording. Calls come from the control-plane thread under its state lock:
/// they must not block (hand the work to the recorder thread and return).
pub trait RecordingBackend: Send + Sync {
    fn start_individual(&self, spec: StreamRecordingSpec)
    -> Result<StreamRecorderId, BackendError>;
    /// Stops one recorder; its [`BackendEvent`] follows.
    fn stop_individual(&self, id: StreamRecorderId);
    fn start_composed(&self, spec: ComposedRecordingSpec)
    -> Result<StreamRecorderId, BackendError>;
    fn stop_composed(&self, id: StreamRecorderId);
    /// A stream was published in a session being recorded by composition `id`: it joins the
    /// grid.
    fn composed_stream_added(&self, _id: StreamRecorderId, _stream: StreamRecordingSpec) {}
    /// A stream of composition `id` was unpublished: it leaves the grid.
    fn composed_stream_removed(&self, _id: StreamRecorderId, _stream_id: &str) {}
    /// A session was created whose default output mode is COMPOSED_QUICK_START.
    fn quick_start_session(&self, _session_id: &str) {}
    /// A session was closed.
    fn session_closed(&self, _session_id: &str) {}
}

/// Capacity of the backend's event channel ([`crate::control::ControlPlane::attach_recording`]).
pub const EVENT_QUEUE: usize = 4096;
