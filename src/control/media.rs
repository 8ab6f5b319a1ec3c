//! The seam between the control plane and the media shards.
//!
//! The control plane owns the OpenVidu model (sessions, connections, streams, subscriptions) in
//! [`Registry`](super::registry::Registry), and in it which media transport (peer id and shard)
//! belongs to which stream and subscription; the shards own ICE/DTLS/SRTP and forwarding. They
//! talk by message only (DESIGN §1): commands down per-shard queues, events up a queue per
//! shard. Nothing is shared.
//!
//! # How media plugs in
//! 1. The JSON-RPC media methods (`publishVideo`, `receiveVideoFrom`, `prepareReceiveVideoFrom`,
//!    `onIceCandidate`, `unpublishVideo`, `unsubscribeFromVideo`, `reconnectStream`) all reach
//!    `dispatch`, the single dispatch point. With a [`MediaEngine`] attached
//!    ([`crate::control::ControlPlane::attach_media`]) `control::media_rpc` answers them: it
//!    negotiates SDP, sends the shard its command before the answer leaves (so the browser's
//!    first STUN check finds its transport) and records the transport in the registry
//!    (`add_stream` + `set_stream_transport`, `add_subscriber` + `set_subscription_transport`,
//!    `put_offer` / `take_offer`); without one it answers a JSON-RPC error (except
//!    `onIceCandidate`, which the spec says must always succeed).
//! 2. Shard events come back to `media_rpc::on_shard_events`, which finds the transport's owner
//!    in the registry (`transport_owner`).
//! 3. Whenever the registry ends a stream, subscription, connection or session (unpublish,
//!    unsubscribe, eviction, REST `DELETE …/stream`, `forceUnpublish`, session close, shutdown)
//!    it emits `Output::Media(MediaCommand::Release(transports))`; the shell forwards it to
//!    [`MediaSink::send`], which hands the transports to the attached [`MediaEngine`].

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::oneshot;

use super::Inner;
use super::registry::TransportRef;
use crate::media::MediaEngine;

use crate::signaling::{RpcError, code};

/// Registry → media engine (through [`MediaSink`]).
#[derive(Clone, Debug, PartialEq)]
pub enum MediaCommand {
    /// Tear these transports down (a stream's, its subscribers', a connection's, a session's).
    Release(Vec<TransportRef>),
    /// The participant with this connection id left or was evicted: the TURN allocations made
    /// with its credentials end (a vanished browser never ends them itself).
    ParticipantGone(String),
}

/// Where the shell sends media commands: the media engine once one is attached (until then,
/// and in tests without media, they are logged and dropped).
#[derive(Debug, Default)]
pub struct MediaSink {
    engine: std::sync::OnceLock<Arc<MediaEngine>>,
}

impl MediaSink {
    pub fn send(&self, cmd: MediaCommand) {
        match (self.engine.get(), cmd) {
            (Some(e), MediaCommand::Release(refs)) => {
                let pairs: Vec<_> = refs.iter().map(|t| (t.peer, t.shard)).collect();
                e.release(&pairs);
            }
            (Some(e), MediaCommand::ParticipantGone(cid)) => e.participant_gone(&cid),
            (None, cmd) => tracing::debug!(?cmd, "media command (no media engine attached)"),
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

/// A subscription (the browser's offer) placed on another node of the cluster: when this node
/// hosts `[cluster] spill_after` legs already, or the caller's earlier leg of the stream is
/// there (`control::cluster::span`).
fn spill(
    inner: &Arc<Inner>,
    engine: &Arc<MediaEngine>,
    caller: &Caller,
    method: &str,
    params: &Map<String, Value>,
) -> Option<MediaReply> {
    use super::cluster::span;
    let cluster = inner.cluster.get()?;
    let str_of = |k: &str| params.get(k).and_then(|v| v.as_str());
    let later = |fut: std::pin::Pin<Box<dyn Future<Output = Result<Value, RpcError>> + Send>>| {
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            let _ = tx.send(fut.await);
        });
        Some(MediaReply::Later(rx))
    };
    let (inner2, engine2, cluster2, caller2) =
        (inner.clone(), engine.clone(), cluster.clone(), caller.clone());
    // The browser's answer to a server offer of a leg on another node.
    let answer_to = match method {
        "receiveVideoFrom" if str_of("sdpOffer").is_none() => {
            str_of("sender").zip(str_of("sdpAnswer"))
        }
        "reconnectStream" if str_of("sdpOffer").is_none() => {
            str_of("stream").zip(str_of("sdpString"))
        }
        _ => None,
    };
    if let Some((stream, answer)) = answer_to {
        if !span::has_pending(inner, caller, stream) {
            return None;
        }
        let fut =
            span::answer_remote(inner2, engine2, cluster2, caller2, stream.into(), answer.into());
        return later(Box::pin(fut));
    }
    let (stream, offer) = match method {
        "receiveVideoFrom" => (str_of("sender")?, str_of("sdpOffer")),
        "reconnectStream" => (str_of("stream")?, Some(str_of("sdpOffer")?)),
        "prepareReceiveVideoFrom" => (str_of("sender")?, None),
        _ => return None,
    };
    if method == "receiveVideoFrom" && offer.is_none() {
        return None;
    }
    let own = inner.with(|st| st.reg.stream_of(&caller.session_id, &caller.connection_id));
    if own.as_deref() == Some(stream) {
        return None; // a publisher's own stream
    }
    let node = if span::is_remote(inner, caller, stream) {
        // A renegotiation of a leg elsewhere: a new leg there (or where there is room).
        span::spill_target(inner, cluster, &caller.session_id)
            .or_else(|| cluster.nodes().into_values().find(|n| n.id != cluster.id && n.accepts()))?
    } else {
        span::spill_target(inner, cluster, &caller.session_id)?
    };
    match offer {
        Some(offer) => later(Box::pin(span::subscribe_remote(
            inner2,
            engine2,
            cluster2,
            caller2,
            stream.to_string(),
            offer.to_string(),
            node,
        ))),
        None => later(Box::pin(span::prepare_remote(
            inner2,
            engine2,
            cluster2,
            caller2,
            stream.to_string(),
            node,
        ))),
    }
}

/// THE media dispatch point: every media JSON-RPC method of a joined participant lands here
/// (`control::media_rpc` with an engine attached). The result value gets `sessionId`
/// injected by the framing.
pub(crate) fn dispatch(
    inner: &Arc<Inner>,
    caller: &Caller,
    method: &str,
    params: &Map<String, Value>,
) -> MediaReply {
    if let Some(engine) = inner.media.engine() {
        if let Some(reply) = spill(inner, engine, caller, method, params) {
            return reply;
        }
        return MediaReply::Now(super::media_rpc::dispatch(inner, engine, caller, method, params));
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
