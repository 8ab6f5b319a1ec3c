//! The seam between the control plane and the media shards.
//!
//! The control plane owns the OpenVidu model (sessions, connections, streams, subscriptions) in
//! [`Registry`](super::registry::Registry); the shards own ICE/DTLS/SRTP and forwarding. They talk
//! by message only (DESIGN §1): the control thread sends [`MediaCommand`]s down per-shard queues
//! and the shards answer with [`MediaEvent`]s up a queue the control thread drains. Nothing is
//! shared.
//!
//! # How media plugs in
//! 1. The JSON-RPC media methods (`publishVideo`, `receiveVideoFrom`, `prepareReceiveVideoFrom`,
//!    `onIceCandidate`, `unpublishVideo`, `unsubscribeFromVideo`, `reconnectStream`) all reach
//!    [`dispatch`] — the single dispatch point. With a [`MediaEngine`] attached
//!    ([`crate::control::ControlPlane::attach_media`]) it negotiates SDP there and answers
//!    at once (the shard gets its command before the answer leaves, so the browser's first
//!    STUN check finds its peer); without one it answers a JSON-RPC error (except
//!    `onIceCandidate`, which the spec says must always succeed).
//!    Shard events come back through [`ControlHandle::handle_event`].
//! 2. After a successful `publishVideo` answer, call [`ControlHandle::add_stream`]
//!    ([`Registry::add_stream`](super::registry::Registry::add_stream)): it assigns the stream id
//!    (`str_CAM_Xxxx_con_…`), stores the media options and emits `participantPublished` to the
//!    others plus the `webrtcConnectionCreated` webhook.
//! 3. For subscriptions call [`Registry::add_subscriber`](super::registry::Registry::add_subscriber)
//!    / [`remove_subscriber`](super::registry::Registry::remove_subscriber); for `unpublishVideo`
//!    [`Registry::remove_stream`](super::registry::Registry::remove_stream) with reason
//!    `unpublish`.
//! 4. Whenever the registry tears media down on its own (eviction, REST `DELETE …/stream`,
//!    `forceUnpublish`, session close, shutdown) it emits `Output::Media(MediaCommand::…)`; the
//!    shell forwards those to [`MediaSink::send`], which hands them to the attached
//!    [`MediaEngine`] (`src/media/engine.rs`).

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::registry::{MediaOptions, Role};
use super::{Inner, now_ms};
use crate::media::MediaEngine;

use crate::signaling::{RpcError, code};

/// Control plane → shard. Every command names the session so the shell can pick the shard.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaCommand {
    /// Tear down the publisher endpoint of `stream_id` and every subscriber leg of it.
    ReleasePublisher { session_id: String, connection_id: String, stream_id: String },
    /// Tear down one subscriber leg (`subscriber` receiving `stream_id`).
    ReleaseSubscriber { session_id: String, subscriber: String, stream_id: String },
    /// Drop every endpoint of a connection (eviction / leave), publisher and subscriber legs.
    ReleaseConnection { session_id: String, connection_id: String },
    /// The session is gone: free everything the shard holds for it.
    CloseSession { session_id: String },
}

/// Shard → control plane (drained by the control thread, which then calls the registry and
/// pushes notifications). Defined here so both sides agree on the shape.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaEvent {
    /// A server ICE candidate to trickle to the browser as an `iceCandidate` notification.
    /// `sender_connection_id` is the owner of the stream the peer belongs to (spec §4.5).
    IceCandidate {
        session_id: String,
        to_connection: String,
        sender_connection_id: String,
        endpoint_name: String,
        candidate: String,
        sdp_mid: String,
        sdp_mline_index: u32,
    },
    /// A transport failed for good (ICE consent lost, DTLS failure): notify `mediaError`.
    TransportFailed { session_id: String, connection_id: String, description: String },
}

/// Where the shell sends media commands: the media engine once one is attached (until then,
/// and in tests without media, they are logged and dropped).
#[derive(Debug, Default)]
pub struct MediaSink {
    engine: std::sync::OnceLock<Arc<MediaEngine>>,
}

impl MediaSink {
    pub fn send(&self, cmd: MediaCommand) {
        match self.engine.get() {
            Some(e) => e.on_registry_command(cmd),
            None => tracing::debug!(?cmd, "media command (no media engine attached)"),
        }
    }

    /// Attaches the engine (once; later calls are ignored and return false).
    pub fn attach(&self, engine: Arc<MediaEngine>) -> bool {
        self.engine.set(engine).is_ok()
    }

    pub fn engine(&self) -> Option<&Arc<MediaEngine>> {
        self.engine.get()
    }
}

/// The JSON-RPC methods that belong to the media engine.
pub const MEDIA_METHODS: &[&str] = &[
    "publishVideo",
    "receiveVideoFrom",
    "prepareReceiveVideoFrom",
    "onIceCandidate",
    "unpublishVideo",
    "unsubscribeFromVideo",
    "reconnectStream",
];

/// Who is calling a media method (resolved by the shell after `joinRoom`).
#[derive(Clone, Debug)]
pub struct Caller {
    pub session_id: String,
    pub connection_id: String,
    /// The JSON-RPC session id (what `sessionId` in results carries).
    pub rpc_session: String,
}

/// How the media engine answers one request.
#[derive(Debug)]
pub enum MediaReply {
    /// Answered synchronously.
    Now(Result<Value, RpcError>),
    /// Answered later (e.g. after a shard round-trip for SDP); the socket keeps serving other
    /// requests (pings!) meanwhile. Dropping the sender answers a generic error.
    Later(oneshot::Receiver<Result<Value, RpcError>>),
}

/// THE media dispatch point: every media JSON-RPC method of a joined participant lands here
/// with a [`ControlHandle`] to update the registry (`add_stream`, `add_subscriber`, …).
/// The result value gets `sessionId` injected by the framing.
pub fn dispatch(
    control: &ControlHandle,
    caller: &Caller,
    method: &str,
    params: &Map<String, Value>,
) -> MediaReply {
    if let Some(engine) = control.0.media.engine() {
        return MediaReply::Now(engine.dispatch(control, caller, method, params));
    }
    match method {
        // Spec §4.3: an error here makes the browser raise ICE_CANDIDATE_ERROR; always succeed.
        "onIceCandidate" => MediaReply::Now(Ok(json!({}))),
        _ => MediaReply::Now(Err(RpcError::new(
            code::GENERIC,
            format!("{method}: media is not available on this server"),
        ))),
    }
}

/// What the media code may do to the control plane (registry updates and notifications).
/// Cheap to clone; every call takes the control-plane lock briefly and routes the outputs.
#[derive(Clone)]
pub struct ControlHandle(pub(crate) Arc<Inner>);

impl ControlHandle {
    /// After answering `publishVideo`: record the stream, notify `participantPublished`.
    /// Returns the stream id (`str_CAM_Xxxx_con_…`); fails with 401 for SUBSCRIBER, 106 if
    /// already publishing. Use [`super::ws::media_options_from_params`] to build `media`.
    pub fn add_stream(&self, caller: &Caller, media: MediaOptions) -> Result<String, RpcError> {
        self.0.with(|st| {
            st.reg.add_stream(&caller.session_id, &caller.connection_id, media, now_ms())
        })
    }

    /// `unpublishVideo` (reason `unpublish`, not forced).
    pub fn remove_stream(&self, caller: &Caller, reason: &str) -> Result<(), RpcError> {
        self.0.with(|st| {
            let stream = st
                .reg
                .stream_of(&caller.session_id, &caller.connection_id)
                .ok_or_else(|| RpcError::new(code::USER_NOT_STREAMING, "Not publishing"))?;
            st.reg
                .remove_stream(&caller.session_id, &stream, reason, false, now_ms())
                .map_err(|_| RpcError::new(code::USER_NOT_STREAMING, "Not publishing"))
        })
    }

    /// After answering `receiveVideoFrom`.
    pub fn add_subscriber(&self, caller: &Caller, stream_id: &str) -> Result<(), RpcError> {
        self.0.with(|st| {
            st.reg.add_subscriber(&caller.session_id, &caller.connection_id, stream_id, now_ms())
        })
    }

    /// `unsubscribeFromVideo`.
    pub fn remove_subscriber(&self, caller: &Caller, stream_id: &str) -> Result<(), RpcError> {
        self.0.with(|st| {
            st.reg.remove_subscriber(&caller.session_id, &caller.connection_id, stream_id, now_ms())
        })
    }

    /// A stream (with its owner) by id, for `receiveVideoFrom {sender}`.
    pub fn stream(&self, session_id: &str, stream_id: &str) -> Option<(String, MediaOptions)> {
        self.0.with(|st| {
            st.reg
                .session(session_id)?
                .stream(stream_id)
                .map(|(c, s)| (c.id.clone(), s.media.clone()))
        })
    }

    /// The caller's role, `None` when it is not an active participant.
    pub fn role(&self, caller: &Caller) -> Option<Role> {
        self.0.with(|st| st.reg.role(&caller.session_id, &caller.connection_id))
    }

    /// The stream a connection publishes, if any.
    pub fn stream_of(&self, session_id: &str, connection_id: &str) -> Option<String> {
        self.0.with(|st| st.reg.stream_of(session_id, connection_id))
    }

    /// The session's `forcedVideoCodec`, when it set one.
    pub fn forced_video_codec(&self, session_id: &str) -> Option<String> {
        self.0.with(|st| st.reg.session(session_id)?.props.forced_video_codec.clone())
    }

    /// When a stream was published (ms since the epoch), 0 if unknown.
    pub fn stream_created_at(&self, session_id: &str, stream_id: &str) -> u64 {
        self.0.with(|st| {
            st.reg
                .session(session_id)
                .and_then(|s| s.stream(stream_id))
                .map_or(0, |(_, s)| s.created_at)
        })
    }

    /// Carries out one event from a shard.
    pub fn handle_event(&self, ev: MediaEvent) {
        self.0.with(|st| match ev {
            MediaEvent::IceCandidate {
                session_id,
                to_connection,
                sender_connection_id,
                endpoint_name,
                candidate,
                sdp_mid,
                sdp_mline_index,
            } => st.reg.notify_connection(
                &session_id,
                &to_connection,
                "iceCandidate",
                json!({"senderConnectionId": sender_connection_id, "endpointName": endpoint_name,
                       "sdpMLineIndex": sdp_mline_index, "sdpMid": sdp_mid, "candidate": candidate}),
            ),
            MediaEvent::TransportFailed {
                session_id,
                connection_id,
                description,
            } => st.reg.notify_connection(
                &session_id,
                &connection_id,
                "mediaError",
                json!({ "error": description }),
            ),
        })
    }
}
