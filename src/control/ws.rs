//! The `/openvidu` WebSocket: JSON-RPC 2.0 signaling (spec §3.3, §4).
//!
//! One task per socket. It reads frames, answers requests synchronously against the registry
//! (so `ping` is never stuck behind slow work), writes queued notifications, and runs the ping
//! watchdog (`server.ping_timeout` without a `ping` closes the socket). When a socket closes,
//! its JSON-RPC session waits `server.reconnection_window` for a `connect`; if none comes the
//! participant is evicted with `networkDisconnect`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::media::{self, Caller, MediaReply};
use super::registry::{JoinRequest, MediaOptions, RegError, Role};
use super::{Inner, Outgoing, RpcSession, SOCKET_QUEUE, SocketHandle, now_ms};
use crate::ops::metrics::RpcResult;
use crate::signaling::{self, Incoming, Params, RpcError, code};

/// Time a single write to a client may take before the client is considered stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Decrements the open-socket gauge when the socket task ends (or the upgrade is abandoned).
struct CountGuard(Arc<Inner>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.ws_count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Initial read and write buffer of a signaling WebSocket.
const WS_BUFFER: usize = 8 << 10;

/// `GET /openvidu` upgrade.
pub(crate) async fn upgrade(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (mut parts, _body) = req.into_parts();
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = super::client_ip(&parts.headers, peer);
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let max = inner.cfg.server.max_ws_connections;
    let prev = inner.ws_count.fetch_add(1, Ordering::Relaxed);
    let guard = CountGuard(inner.clone());
    if prev >= max {
        drop(guard);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many WebSocket connections").into_response();
    }
    let limit = inner.cfg.server.max_ws_message_bytes;
    // Signaling messages are a few KiB (an SDP offer is the largest): small initial buffers
    // instead of tungstenite's 128 KiB read + 128 KiB write per socket (they grow when needed),
    // which were most of a participant's memory with thousands of participants.
    ws.read_buffer_size(WS_BUFFER)
        .write_buffer_size(WS_BUFFER)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move {
            run_socket(inner, socket, ip).await;
            drop(guard);
        })
}

/// Per-socket context.
struct Ctx {
    inner: Arc<Inner>,
    socket_id: u64,
    /// The JSON-RPC session this socket serves (changes on a successful `connect`).
    rpc: String,
    ip: String,
    tx: mpsc::Sender<Outgoing>,
}

async fn run_socket(inner: Arc<Inner>, socket: WebSocket, ip: String) {
    let socket_id = inner.next_socket.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Outgoing>(SOCKET_QUEUE);
    let rpc = inner.with(|st| {
        let id = st.reg.new_rpc_session_id();
        st.rpcs.insert(
            id.clone(),
            RpcSession {
                socket: Some(SocketHandle { id: socket_id, tx: tx.clone() }),
                participant: None,
                detach_epoch: 0,
            },
        );
        id
    });
    let mut ctx = Ctx { inner: inner.clone(), socket_id, rpc, ip, tx };
    let ping_timeout = Duration::from_secs(inner.cfg.server.ping_timeout);
    let mut ping_deadline = Instant::now() + ping_timeout;
    let mut close_at: Option<Instant> = None;
    let mut sink = socket;
    let mut close_reason: Option<&'static str> = None;
    // The rpc map holds this socket's sender while the socket serves a JSON-RPC session. The
    // server detaches a socket (slow consumer, `connect` from another socket) by replacing or
    // removing that handle; the check at the end of each turn notices and closes the socket.
    loop {
        let close_sleep = async {
            match close_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            frame = sink.recv() => {
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(_))) => {
                        tracing::debug!("binary WebSocket frame ignored");
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "WebSocket read error");
                        close_reason = Some("Message too big or malformed");
                        break;
                    }
                };
                let (reply, is_ping) = handle_frame(&mut ctx, text.as_str());
                if is_ping {
                    ping_deadline = Instant::now() + ping_timeout;
                } else if Instant::now() >= ping_deadline {
                    // `biased` polling must not let a stream of non-ping frames starve the
                    // watchdog.
                    close_reason = Some("Close for not receive ping from client");
                    break;
                }
                // Notifications produced by this request go out before its response.
                let mut failed = false;
                while let Ok(out) = rx.try_recv() {
                    if !write_queued(&mut sink, out, &mut rx, &mut close_at).await {
                        failed = true;
                        break;
                    }
                }
                if failed { break; }
                if let Some(reply) = reply
                    && !write_text(&mut sink, reply).await
                {
                    break;
                }
            }
            out = rx.recv() => {
                match out {
                    Some(out) => {
                        if !write_queued(&mut sink, out, &mut rx, &mut close_at).await {
                            break;
                        }
                    }
                    // Cannot happen while `ctx.tx` lives; treat it as a detach.
                    None => break,
                }
            }
            _ = tokio::time::sleep_until(ping_deadline) => {
                close_reason = Some("Close for not receive ping from client");
                break;
            }
            _ = close_sleep => {
                close_reason = Some("Closed by server");
                break;
            }
        }
        // The server cut this socket off (slow consumer or re-bound elsewhere).
        let detached = ctx.inner.with(|st| {
            st.rpcs.get(&ctx.rpc).and_then(|r| r.socket.as_ref()).map(|s| s.id)
                != Some(ctx.socket_id)
        });
        if detached {
            close_reason = Some("Detached by server");
            break;
        }
    }
    if let Some(reason) = close_reason {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            sink.send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: Utf8Bytes::from(reason),
            }))),
        )
        .await;
    }
    socket_closed(&ctx);
}

async fn write_text(sink: &mut WebSocket, text: String) -> bool {
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, sink.send(Message::Text(text.into()))).await,
        Ok(Ok(()))
    )
}

/// Writes `first` and whatever else is queued behind it (at most [`WRITE_BATCH`] messages) with
/// one flush: while a room fills, every join queues a notification for every participant, and
/// one `write` per batch instead of per message is what keeps the control thread's share of
/// the cores small.
async fn write_queued(
    sink: &mut WebSocket,
    first: Outgoing,
    rx: &mut mpsc::Receiver<Outgoing>,
    close_at: &mut Option<Instant>,
) -> bool {
    let batch = async {
        let mut next = Some(first);
        let mut n = 0;
        while let Some(out) = next.take() {
            match out {
                Outgoing::Text(t) => sink.feed(Message::Text(t)).await?,
                Outgoing::CloseAfter(d) => {
                    let t = Instant::now() + d;
                    *close_at = Some(close_at.map_or(t, |c| c.min(t)));
                }
            }
            n += 1;
            if n < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        sink.flush().await
    };
    matches!(tokio::time::timeout(WRITE_TIMEOUT, batch).await, Ok(Ok(())))
}

/// Messages written before one flush at most ([`write_queued`]).
const WRITE_BATCH: usize = 64;

/// The socket is gone: detach its JSON-RPC session and start the reconnection window.
fn socket_closed(ctx: &Ctx) {
    let inner = ctx.inner.clone();
    // While draining the server is going away: no reconnection window, and the reason is the
    // one OpenVidu gives at shutdown.
    let draining = inner.draining.load(Ordering::Relaxed);
    let window = if draining {
        Duration::ZERO
    } else {
        Duration::from_secs(inner.cfg.server.reconnection_window)
    };
    let reason = if draining { "openviduServerStopped" } else { "networkDisconnect" };
    let pending = inner.with(|st| {
        let r = st.rpcs.get_mut(&ctx.rpc)?;
        if r.socket.as_ref().map(|s| s.id) != Some(ctx.socket_id) && r.socket.is_some() {
            return None; // re-bound to another socket
        }
        r.socket = None;
        if r.participant.is_none() {
            st.rpcs.remove(&ctx.rpc);
            return None;
        }
        r.detach_epoch += 1;
        Some(r.detach_epoch)
    });
    let Some(epoch) = pending else { return };
    let rpc = ctx.rpc.clone();
    let expire = move |inner: &Inner| {
        inner.with(|st| {
            let Some(r) = st.rpcs.get(&rpc) else { return };
            if r.socket.is_some() || r.detach_epoch != epoch {
                return;
            }
            let participant = r.participant.clone();
            st.rpcs.remove(&rpc);
            if let Some((sid, cid)) = participant {
                st.reg.evict(&sid, &cid, reason, now_ms());
            }
        })
    };
    if window.is_zero() {
        expire(&inner);
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(window).await;
            expire(&inner);
        });
    }
}

/// Handles one text frame; returns the reply (if any) and whether it was a `ping`.
fn handle_frame(ctx: &mut Ctx, text: &str) -> (Option<String>, bool) {
    let metrics = ctx.inner.metrics.clone();
    let count = |method: &str, ok: bool| {
        metrics.signaling(method, if ok { RpcResult::Ok } else { RpcResult::Error })
    };
    match signaling::parse(text) {
        Err(fe) => {
            metrics.signaling_invalid();
            (Some(signaling::error_response(&fe.id, &fe.error, None)), false)
        }
        Ok(Incoming::Response) => (None, false),
        Ok(Incoming::Notification { method, params }) => {
            let is_ping = method == "ping";
            let ok = is_ping || dispatch(ctx, &method, &params).is_ok();
            count(&method, ok);
            (None, is_ping)
        }
        Ok(Incoming::Request { id, method, params }) => {
            if method == "ping" {
                count("ping", true);
                let r = signaling::response(&id, json!({"value": "pong"}), None);
                return (Some(r), true);
            }
            if media::MEDIA_METHODS.contains(&method.as_str()) {
                return (media_request(ctx, id, &method, &params), false);
            }
            let r = match dispatch(ctx, &method, &params) {
                Ok(v) => {
                    count(&method, true);
                    signaling::response(&id, v, Some(&ctx.rpc))
                }
                Err(e) => {
                    count(&method, false);
                    signaling::error_response(&id, &e, Some(&ctx.rpc))
                }
            };
            (Some(r), false)
        }
    }
}

/// Media requests go to the media dispatch point; a deferred answer is written by a task into
/// this socket's queue when it arrives, so the socket keeps serving pings meanwhile.
fn media_request(
    ctx: &mut Ctx,
    id: signaling::RpcId,
    method: &str,
    params: &Map<String, Value>,
) -> Option<String> {
    let metrics = ctx.inner.metrics.clone();
    let (session_id, connection_id) = match participant(ctx) {
        Ok(p) => p,
        Err(e) => {
            metrics.signaling(method, RpcResult::Error);
            return Some(signaling::error_response(&id, &e, Some(&ctx.rpc)));
        }
    };
    let caller = Caller { session_id, connection_id, rpc_session: ctx.rpc.clone() };
    match media::dispatch(&ctx.inner, &caller, method, params) {
        MediaReply::Now(Ok(v)) => {
            metrics.signaling(method, RpcResult::Ok);
            Some(signaling::response(&id, v, Some(&ctx.rpc)))
        }
        MediaReply::Now(Err(e)) => {
            metrics.signaling(method, RpcResult::Error);
            Some(signaling::error_response(&id, &e, Some(&ctx.rpc)))
        }
        MediaReply::Later(rx) => {
            let tx = ctx.tx.clone();
            let rpc = ctx.rpc.clone();
            let method = method.to_string();
            tokio::spawn(async move {
                let (text, ok) = match rx.await {
                    Ok(Ok(v)) => (signaling::response(&id, v, Some(&rpc)), true),
                    Ok(Err(e)) => (signaling::error_response(&id, &e, Some(&rpc)), false),
                    Err(_) => (
                        signaling::error_response(
                            &id,
                            &RpcError::new(code::GENERIC, "media request abandoned"),
                            Some(&rpc),
                        ),
                        false,
                    ),
                };
                metrics.signaling(&method, if ok { RpcResult::Ok } else { RpcResult::Error });
                // A full queue means the client is not reading; it will be cut off anyway.
                let _ = tx.try_send(Outgoing::Text(text.into()));
            });
            None
        }
    }
}

fn participant(ctx: &Ctx) -> Result<(String, String), RpcError> {
    ctx.inner.with(|st| st.rpcs.get(&ctx.rpc).and_then(|r| r.participant.clone())).ok_or_else(
        || {
            RpcError::new(
                code::TRANSPORT_ERROR,
                format!("No connection found for participant with privateId {}", ctx.rpc),
            )
        },
    )
}

fn dispatch(ctx: &mut Ctx, method: &str, params: &Map<String, Value>) -> Result<Value, RpcError> {
    let p = Params(params);
    match method {
        "joinRoom" => join_room(ctx, &p),
        "connect" => connect(ctx, &p),
        "closeSession" => {
            if let Ok((sid, cid)) = participant(ctx) {
                ctx.inner.with(|st| st.reg.leave(&sid, &cid, "disconnect", now_ms()));
            }
            Ok(json!("bye"))
        }
        "leaveRoom" => {
            // Answer {} even if already gone (better than OpenVidu's silence, spec §4.3).
            if let Ok((sid, cid)) = participant(ctx) {
                ctx.inner.with(|st| st.reg.leave(&sid, &cid, "disconnect", now_ms()));
            }
            Ok(json!({}))
        }
        "subscribeToSpeechToText" | "unsubscribeFromSpeechToText" => {
            participant(ctx)?;
            Err(RpcError::new(
                code::PRO_FEATURE,
                "Speech To Text requires OpenVidu Pro/Enterprise edition",
            ))
        }
        "applyFilter"
        | "removeFilter"
        | "execFilterMethod"
        | "addFilterEventListener"
        | "removeFilterEventListener" => {
            participant(ctx)?;
            Err(RpcError::new(code::FILTER_NOT_APPLIED, "Filters are not supported by this server"))
        }
        "sendMessage" => send_message(ctx, &p),
        "forceDisconnect" => force_disconnect(ctx, &p),
        "forceUnpublish" => force_unpublish(ctx, &p),
        "streamPropertyChanged" => stream_property_changed(ctx, &p),
        "videoData" | "echo" => {
            participant(ctx)?;
            Ok(json!({}))
        }
        m if media::MEDIA_METHODS.contains(&m) => {
            // Notifications (no id) for media methods: run them, ignore the answer.
            let (session_id, connection_id) = participant(ctx)?;
            let caller = Caller { session_id, connection_id, rpc_session: ctx.rpc.clone() };
            match media::dispatch(&ctx.inner, &caller, m, params) {
                MediaReply::Now(r) => r,
                MediaReply::Later(_) => Ok(json!({})),
            }
        }
        _ => Err(RpcError::new(code::METHOD_NOT_FOUND, format!("Method not found: {method}"))),
    }
}

fn join_room(ctx: &mut Ctx, p: &Params<'_>) -> Result<Value, RpcError> {
    let token = p.str("token")?;
    let session = p.str("session")?;
    let platform = p.opt_str("platform")?.unwrap_or("");
    let metadata = match p.value("metadata") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let rpc = ctx.rpc.clone();
    let ip = ctx.ip.clone();
    let engine = ctx.inner.media.engine().cloned();
    if ctx.inner.draining.load(Ordering::Relaxed) {
        return Err(RpcError::new(
            code::ROOM_CLOSED,
            format!("Unable to join session {session}. The server is shutting down (draining)"),
        ));
    }
    ctx.inner.with(|st| {
        if st.rpcs.get(&rpc).is_some_and(|r| r.participant.is_some()) {
            return Err(RpcError::new(
                code::GENERIC,
                "This WebSocket session has already joined a session",
            ));
        }
        // The session's media home shard (chosen now if it has none), for its TURN port.
        let home = engine.as_ref().and_then(|e| st.reg.media_home(session, || e.choose_home()));
        let media_turn_port = |_: &str| engine.as_ref().zip(home).and_then(|(e, h)| e.turn_port(h));
        let joined = st.reg.join(
            &JoinRequest {
                token,
                session,
                rpc: &rpc,
                ip: &ip,
                platform,
                client_data: &metadata,
                media_turn_port: Some(&media_turn_port),
            },
            now_ms(),
        )?;
        if let Some(r) = st.rpcs.get_mut(&rpc) {
            r.participant = Some((joined.session_id.clone(), joined.connection_id.clone()));
        }
        let mut result = joined.result;
        super::recording::join_fields(
            &ctx.inner,
            st,
            &joined.session_id,
            &joined.connection_id,
            &mut result,
        );
        Ok(result)
    })
}

fn connect(ctx: &mut Ctx, p: &Params<'_>) -> Result<Value, RpcError> {
    let Some(old) = p.opt_str("sessionId")? else {
        return Ok(json!("OK"));
    };
    if old == ctx.rpc {
        return Ok(json!("reconnection successful"));
    }
    let socket_id = ctx.socket_id;
    let tx = ctx.tx.clone();
    let mine = ctx.rpc.clone();
    let ok = ctx.inner.with(|st| {
        if !st.rpcs.contains_key(old) {
            return false;
        }
        // Drop the fresh JSON-RPC session this socket started with, unless it already joined.
        if st.rpcs.get(&mine).is_some_and(|r| r.participant.is_some()) {
            return false;
        }
        st.rpcs.remove(&mine);
        if let Some(r) = st.rpcs.get_mut(old) {
            // Replacing the handle drops the old socket's sender: its task ends quietly.
            r.socket = Some(SocketHandle { id: socket_id, tx });
            r.detach_epoch += 1;
        }
        true
    });
    if ok {
        ctx.rpc = old.to_string();
        Ok(json!("reconnection successful"))
    } else {
        Err(RpcError::new(code::RECONNECTION_ERROR, "reconnection error"))
    }
}

fn send_message(ctx: &mut Ctx, p: &Params<'_>) -> Result<Value, RpcError> {
    let (sid, cid) = participant(ctx)?;
    let bad = || RpcError::new(code::SIGNAL_FORMAT_INVALID, "Signal format invalid");
    let msg = p.str("message").map_err(|_| bad())?;
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(msg) else {
        return Err(bad());
    };
    let mut to = Vec::new();
    match m.get("to") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for x in a {
                match x {
                    Value::String(s) => to.push(s.clone()),
                    _ => {
                        return Err(RpcError::new(
                            code::SIGNAL_TO_INVALID,
                            "Signal \"to\" field invalid format: null or not a string",
                        ));
                    }
                }
            }
        }
        Some(_) => return Err(bad()),
    }
    let text = |k: &str| -> Result<Option<String>, RpcError> {
        match m.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Ok(Some(other.to_string())),
        }
    };
    let data = text("data")?;
    let kind = text("type")?;
    ctx.inner.with(|st| {
        match st.reg.signal(&sid, Some(&cid), &to, kind.as_deref(), data.as_deref(), now_ms()) {
            Ok(()) => Ok(json!({})),
            Err(RegError::NotAcceptable(m)) => Err(RpcError::new(code::SIGNAL_TO_INVALID, m)),
            Err(e) => Err(RpcError::new(code::GENERIC, format!("{e:?}"))),
        }
    })
}

fn require_moderator(ctx: &Ctx, sid: &str, cid: &str, what: &str) -> Result<(), RpcError> {
    let role = ctx.inner.with(|st| st.reg.role(sid, cid));
    if role == Some(Role::Moderator) {
        Ok(())
    } else {
        Err(RpcError::new(
            code::USER_UNAUTHORIZED,
            format!("The user {cid} is not authorized to {what}"),
        ))
    }
}

fn force_disconnect(ctx: &mut Ctx, p: &Params<'_>) -> Result<Value, RpcError> {
    let (sid, cid) = participant(ctx)?;
    require_moderator(ctx, &sid, &cid, "force disconnect")?;
    let target = p.str("connectionId")?;
    ctx.inner.with(|st| {
        let active = st
            .reg
            .session(&sid)
            .and_then(|s| s.connection(target))
            .is_some_and(|c| c.active.is_some());
        if !active {
            return Err(RpcError::new(
                code::USER_NOT_FOUND,
                format!("Connection {target} not found in session {sid}"),
            ));
        }
        st.reg.evict(&sid, target, "forceDisconnectByUser", now_ms());
        Ok(json!({}))
    })
}

fn force_unpublish(ctx: &mut Ctx, p: &Params<'_>) -> Result<Value, RpcError> {
    let (sid, cid) = participant(ctx)?;
    require_moderator(ctx, &sid, &cid, "force unpublish")?;
    let stream = p.str("streamId")?;
    ctx.inner.with(|st| {
        match st.reg.remove_stream(&sid, stream, "forceUnpublishByUser", true, now_ms()) {
            Ok(()) => Ok(json!({})),
            Err(RegError::NotAllowed) => Err(RpcError::new(
                code::USER_UNAUTHORIZED,
                "IP camera streams cannot be unpublished",
            )),
            Err(_) => Err(RpcError::new(
                code::USER_NOT_STREAMING,
                format!("Stream {stream} not found in session {sid}"),
            )),
        }
    })
}

fn stream_property_changed(ctx: &mut Ctx, p: &Params<'_>) -> Result<Value, RpcError> {
    let (sid, cid) = participant(ctx)?;
    let stream = p.str("streamId")?;
    let property = p.str("property")?;
    let reason = p.opt_str("reason")?.unwrap_or("");
    let new_value = p.0.get("newValue").cloned().unwrap_or(Value::Null);
    ctx.inner.with(|st| {
        st.reg.stream_property_changed(&sid, &cid, stream, property, &new_value, reason)
    })?;
    Ok(json!({}))
}

/// Media options from a `publishVideo` request (for the media code).
pub fn media_options_from_params(p: &Map<String, Value>) -> Result<MediaOptions, RpcError> {
    let p = Params(p);
    let has_audio = p.opt_bool("hasAudio")?.unwrap_or(true);
    let has_video = p.opt_bool("hasVideo")?.unwrap_or(true);
    Ok(MediaOptions {
        has_audio,
        has_video,
        audio_active: p.opt_bool("audioActive")?.unwrap_or(has_audio),
        video_active: p.opt_bool("videoActive")?.unwrap_or(has_video),
        type_of_video: if has_video {
            Some(p.opt_str("typeOfVideo")?.unwrap_or("CAMERA").to_string())
        } else {
            None
        },
        frame_rate: p.value("frameRate").cloned(),
        video_dimensions: p.opt_str("videoDimensions")?.map(str::to_string),
        filter: p.value("filter").cloned().unwrap_or_else(|| json!({})),
    })
}
