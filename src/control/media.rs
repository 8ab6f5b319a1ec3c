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
//!    [`dispatch`] — the single dispatch point. Today it answers a JSON-RPC error (except
//!    `onIceCandidate`, which the spec says must always succeed). The media engineer replaces
//!    its body: negotiate SDP, send a [`MediaCommand`] to the session's shard, answer the
//!    request (possibly asynchronously via [`PendingReply`]).
//! 2. After a successful `publishVideo` answer, call
//!    [`Registry::add_stream`](super::registry::Registry::add_stream): it assigns the stream id
//!    (`str_CAM_Xxxx_con_…`), stores the media options and emits `participantPublished` to the
//!    others plus the `webrtcConnectionCreated` webhook.
//! 3. For subscriptions call [`Registry::add_subscriber`](super::registry::Registry::add_subscriber)
//!    / [`remove_subscriber`](super::registry::Registry::remove_subscriber); for `unpublishVideo`
//!    [`Registry::remove_stream`](super::registry::Registry::remove_stream) with reason
//!    `unpublish`.
//! 4. Whenever the registry tears media down on its own (eviction, REST `DELETE …/stream`,
//!    `forceUnpublish`, session close, shutdown) it emits `Output::Media(MediaCommand::…)`; the
//!    shell forwards those to [`MediaSink::send`] (today: logged and dropped).

use serde_json::{Map, Value, json};

use crate::signaling::{RpcError, code};

/// Control plane → shard. Every command names the session so the shell can pick the shard.
#[derive(Clone, Debug, PartialEq)]
pub enum MediaCommand {
    /// Tear down the publisher endpoint of `stream_id` and every subscriber leg of it.
    ReleasePublisher {
        session_id: String,
        connection_id: String,
        stream_id: String,
    },
    /// Tear down one subscriber leg (`subscriber` receiving `stream_id`).
    ReleaseSubscriber {
        session_id: String,
        subscriber: String,
        stream_id: String,
    },
    /// Drop every endpoint of a connection (eviction / leave), publisher and subscriber legs.
    ReleaseConnection {
        session_id: String,
        connection_id: String,
    },
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
    TransportFailed {
        session_id: String,
        connection_id: String,
        description: String,
    },
}

/// Where the shell sends media commands. Today nothing consumes them.
#[derive(Clone, Debug, Default)]
pub struct MediaSink;

impl MediaSink {
    pub fn send(&self, cmd: MediaCommand) {
        tracing::debug!(?cmd, "media command (no media engine attached)");
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
pub struct Caller<'a> {
    pub session_id: &'a str,
    pub connection_id: &'a str,
    pub rpc_session: &'a str,
}

/// An answer the media engine will send later (placeholder type for the async flow).
pub type PendingReply = tokio::sync::oneshot::Sender<Result<Value, RpcError>>;

/// THE media dispatch point. Returns the JSON-RPC result (without `sessionId`, which the framing
/// injects) or error for one media request.
pub fn dispatch(
    _caller: &Caller<'_>,
    method: &str,
    _params: &Map<String, Value>,
) -> Result<Value, RpcError> {
    match method {
        // Spec §4.3: an error here makes the browser raise ICE_CANDIDATE_ERROR; always succeed.
        "onIceCandidate" => Ok(json!({})),
        _ => Err(RpcError::new(
            code::GENERIC,
            format!("{method}: media is not available on this server"),
        )),
    }
}
