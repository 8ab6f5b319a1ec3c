//! The control plane: one thread running a tokio current-thread runtime that serves the OpenVidu
//! REST API and WebSocket signaling and owns the session registry.
//!
//! Layout:
//! - [`registry`]: the sans-IO OpenVidu model (sessions, connections, tokens, streams) and the
//!   outputs (notifications, webhooks, media commands) each operation produces;
//! - [`rest`]: `/openvidu/api/**` (spec §2), with [`views`] rendering the JSON objects;
//! - [`ws`]: the `/openvidu` WebSocket JSON-RPC shell (spec §3.3, §4);
//! - [`webhook`]: the bounded webhook queue and its HTTP/1.1 sender (spec §7);
//! - [`media`]: the command/event seam to the media shards and the media-method dispatch point;
//! - [`recording`]: the recording API, its state machine and the seam to a recorder backend.
//!
//! Concurrency: all state lives in one [`State`] behind a `std::sync::Mutex` that is only held
//! for the synchronous duration of one registry operation plus the routing of its outputs
//! (never across an `.await`). Routing a notification is a non-blocking `try_send` into the
//! target socket's bounded queue; a socket whose queue is full is cut off (it is not reading).

pub mod cluster;
pub mod demo;
pub mod ipcam;
pub mod media;
mod media_rpc;
pub mod recording;
pub mod registry;
pub mod rest;
pub mod views;
pub mod webhook;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::ws::Utf8Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::ops::metrics::{ControlGauges, Metrics, WebhookCounts};
use crate::secrets::TurnSecretsHandle;
use registry::{Output, Registry, RegistryConfig, TurnSettings};

/// Messages queued for one WebSocket.
#[derive(Debug)]
pub(crate) enum Outgoing {
    Text(Utf8Bytes),
    /// Close the socket after this delay unless the client closes it first.
    CloseAfter(Duration),
}

/// Capacity of each socket's outgoing queue.
pub(crate) const SOCKET_QUEUE: usize = 512;

/// How long a shutdown waits for stopped recordings to be written out (the unit's
/// `TimeoutStopSec` leaves room for it: see `ops::service`).
pub const RECORDINGS_AT_SHUTDOWN: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct SocketHandle {
    pub id: u64,
    pub tx: mpsc::Sender<Outgoing>,
}

/// One JSON-RPC session (kurento-jsonrpc "participant private id"). Survives its socket for
/// `server.reconnection_window` so that `connect` can re-attach.
#[derive(Debug, Default)]
pub(crate) struct RpcSession {
    pub socket: Option<SocketHandle>,
    /// (session id, connection id) after joinRoom.
    pub participant: Option<(String, String)>,
    /// Bumped at every detach from a socket; a grace timer only acts on its own epoch.
    pub detach_epoch: u64,
}

/// Everything mutable of the control plane.
pub(crate) struct State {
    pub reg: Registry,
    pub rpcs: HashMap<String, RpcSession>,
    /// `iceCandidate` notifications (session, connection, params) waiting for the media event
    /// task's next turn (`media_rpc::trickle`).
    pub trickle: Vec<(String, String, Value)>,
    /// The recordings (empty until a recording backend is attached).
    pub rec: recording::Recordings,
}

pub(crate) struct Inner {
    pub cfg: Arc<Config>,
    state: Mutex<State>,
    pub webhooks: webhook::Webhooks,
    pub media: media::MediaSink,
    pub ws_count: AtomicUsize,
    pub next_socket: AtomicU64,
    /// Counters of the HTTP and signaling shells (rendered at `/metrics`).
    pub metrics: Arc<Metrics>,
    /// Set by [`ControlPlane::begin_drain`]: new joins and connections are refused.
    pub draining: AtomicBool,
    /// The TURN credentials joinRoom mints from (reloadable).
    pub turn_secrets: TurnSecretsHandle,
    /// Woken when `iceCandidate` notifications wait in `State::trickle`.
    pub trickle_ready: tokio::sync::Notify,
    /// The recording backend and its task, once attached ([`ControlPlane::attach_recording`]).
    pub(crate) recording: std::sync::OnceLock<recording::Runtime>,
    /// The cluster membership, when `[cluster]` is configured ([`ControlPlane::attach_cluster`]).
    pub(crate) cluster: std::sync::OnceLock<Arc<cluster::Cluster>>,
    /// Stops the cluster task (which then releases the claims and the node record).
    cluster_stop: Arc<tokio::sync::Notify>,
}

/// Unix epoch milliseconds now (the shell's clock; cores get it as an argument).
pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Parses one `OPENVIDU_WEBRTC_ICE_SERVERS` entry (`url=…,username=…,credential=…` or
/// `…,staticAuthSecret=…`) into a `customIceServers` object.
pub(crate) fn parse_ice_server_string(s: &str, now: u64, ttl: u64) -> Option<Value> {
    let mut url = None;
    let mut user = None;
    let mut cred = None;
    let mut secret = None;
    for part in s.split(',') {
        let (k, v) = part.split_once('=')?;
        match k.trim() {
            "url" => url = Some(v.trim().to_string()),
            "username" => user = Some(v.trim().to_string()),
            "credential" => cred = Some(v.trim().to_string()),
            "staticAuthSecret" => secret = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let url = url?;
    let mut o = serde_json::json!({ "url": url });
    if let Some(sec) = secret {
        let (u, c) = registry::turn_rest_credentials(&sec, now / 1000 + ttl, "ringsfu");
        o["username"] = u.into();
        o["credential"] = c.into();
    } else {
        if let Some(u) = user.filter(|u| !u.is_empty()) {
            o["username"] = u.into();
        }
        if let Some(c) = cred.filter(|c| !c.is_empty()) {
            o["credential"] = c.into();
        }
    }
    Some(o)
}

impl Inner {
    /// Runs `f` on the state, then routes every output the registry produced.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut st = self.lock();
        let r = f(&mut st);
        self.route(&mut st);
        r
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving with the state as it was left.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn route(&self, st: &mut State) {
        let window = Duration::from_secs(self.cfg.server.reconnection_window);
        let recording = self.recording.get().is_some();
        loop {
            let mut seen = Vec::new();
            while let Some(out) = st.reg.poll_output() {
                if recording
                    && let Output::Webhook(v) = &out
                    && let Some(ev) = recording::observe(v)
                {
                    seen.push(ev);
                }
                self.route_one(st, out, window);
            }
            if seen.is_empty() {
                break;
            }
            // The recordings follow what just happened; their outputs go round once more.
            recording::on_registry_events(self, st, seen);
        }
    }

    fn route_one(&self, st: &mut State, out: Output, window: Duration) {
        {
            match out {
                Output::Notify { to, method, params } => {
                    // Serialised once, shared by every target (cheap clones of the bytes).
                    let text = Utf8Bytes::from(crate::signaling::notification(method, &params));
                    for rpc in &to {
                        deliver(&mut st.rpcs, rpc, Outgoing::Text(text.clone()));
                    }
                }
                Output::Detach { rpc, close: _ } => {
                    if let Some(r) = st.rpcs.get_mut(&rpc) {
                        r.participant = None;
                        if r.socket.is_none() {
                            st.rpcs.remove(&rpc);
                        } else {
                            deliver(&mut st.rpcs, &rpc, Outgoing::CloseAfter(window));
                        }
                    }
                }
                Output::Webhook(v) => self.webhooks.send(v),
                Output::Media(media::MediaCommand::Release(refs))
                    if refs.iter().any(|t| t.shard == registry::REMOTE_SHARD) =>
                {
                    // Legs on other nodes are released there (`cluster::span`).
                    let (remote, local): (Vec<_>, Vec<_>) =
                        refs.into_iter().partition(|t| t.shard == registry::REMOTE_SHARD);
                    cluster::span::release_refs(self, &remote);
                    self.media.send(media::MediaCommand::Release(local));
                }
                Output::Media(cmd) => self.media.send(cmd),
            }
        }
    }
}

/// Queues a message for the socket bound to `rpc`; a full queue cuts the socket off (its task
/// then sees its queue closed and closes the WebSocket).
fn deliver(rpcs: &mut HashMap<String, RpcSession>, rpc: &str, msg: Outgoing) {
    let Some(r) = rpcs.get_mut(rpc) else { return };
    let Some(sock) = &r.socket else { return };
    if let Err(mpsc::error::TrySendError::Full(_)) = sock.tx.try_send(msg) {
        tracing::warn!(rpc, "socket queue full; disconnecting slow client");
        r.socket = None;
    }
}

/// Handle to the control plane; cheap to clone.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl ControlPlane {
    /// Builds the control plane. When called inside a tokio runtime it also starts the webhook
    /// sender and the garbage collector of never-joined sessions.
    pub fn new(cfg: Arc<Config>) -> ControlPlane {
        let now = now_ms();
        let ice_servers = cfg
            .sessions
            .ice_servers
            .iter()
            .filter_map(|s| parse_ice_server_string(s, now, cfg.turn.credential_ttl))
            .collect();
        let turn_secrets = TurnSecretsHandle::from_config(&cfg);
        let rcfg = RegistryConfig {
            ws_url: cfg.ws_url(),
            forced_video_codec: cfg.sessions.forced_video_codec.clone(),
            allow_transcoding: cfg.sessions.allow_transcoding,
            ice_servers,
            max_sessions: cfg.sessions.max_sessions,
            max_connections_per_session: cfg.sessions.max_connections_per_session,
            turn: cfg.turn.enabled.then(|| TurnSettings {
                ip: cfg.turn_public_ip(),
                port: cfg.turn.port,
                secrets: turn_secrets.clone(),
                ttl_secs: cfg.turn.credential_ttl,
            }),
            simulcast: cfg.media.enabled && cfg.media.simulcast,
        };
        let seed: u64 = rand::random();
        let inner = Arc::new(Inner {
            webhooks: webhook::Webhooks::start(&cfg.webhook),
            cfg: cfg.clone(),
            state: Mutex::new(State {
                reg: Registry::new(rcfg, seed),
                rpcs: HashMap::new(),
                trickle: Vec::new(),
                rec: recording::Recordings::default(),
            }),
            media: media::MediaSink::default(),
            ws_count: AtomicUsize::new(0),
            next_socket: AtomicU64::new(1),
            metrics: Arc::new(Metrics::new()),
            draining: AtomicBool::new(false),
            turn_secrets,
            trickle_ready: tokio::sync::Notify::new(),
            recording: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            cluster_stop: Arc::new(tokio::sync::Notify::new()),
        });
        if cfg.sessions.garbage_interval > 0
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let weak = Arc::downgrade(&inner);
            let every = Duration::from_secs(cfg.sessions.garbage_interval);
            let threshold = cfg.sessions.garbage_threshold.saturating_mul(1000);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(inner) = weak.upgrade() else { return };
                    let gone = inner.with(|st| st.reg.collect_garbage(now_ms(), threshold));
                    if !gone.is_empty() {
                        tracing::info!(sessions = ?gone, "garbage-collected unused sessions");
                    }
                }
            });
        }
        ControlPlane { inner }
    }

    /// Every HTTP route the server answers: the REST API, the WebSocket, CORS, auth, limits.
    pub fn router(&self) -> Router {
        let rest = rest::router(self.inner.clone());
        if self.inner.cfg.server.demo { demo::router(self.inner.clone(), rest) } else { rest }
    }

    /// Joins the cluster `[cluster]` describes: the background task (node record, claims,
    /// node table; see [`cluster`]) is spawned on the current runtime. Call once, before
    /// serving.
    pub fn attach_cluster(&self) -> Result<(), cluster::StoreError> {
        let c = cluster::Cluster::new(&self.inner.cfg)?;
        if self.inner.cluster.set(c.clone()).is_err() {
            return Ok(());
        }
        tokio::spawn(cluster::run(c, self.inner.clone(), self.inner.cluster_stop.clone()));
        Ok(())
    }

    /// The internal listener's router (`[cluster] internal_address`): the same API, for signed
    /// requests of other nodes only.
    pub fn internal_router(&self) -> Router {
        let spans = cluster::span::routes().with_state(self.inner.clone());
        rest::router(self.inner.clone()).merge(spans).layer(axum::middleware::from_fn_with_state(
            self.inner.clone(),
            cluster::forward::require_signed,
        ))
    }

    /// Leaves the cluster: claims released and the node record removed (waits at most 2 s).
    pub async fn leave_cluster(&self) {
        let Some(c) = self.inner.cluster.get() else { return };
        self.inner.cluster_stop.notify_one();
        let _ = tokio::time::timeout(Duration::from_secs(2), c.leave()).await;
    }

    /// Graceful shutdown: every participant is evicted (`openviduServerStopped`), sessions are
    /// destroyed (their recordings stopped and written out, waited for up to
    /// [`RECORDINGS_AT_SHUTDOWN`]), new joins and sessions are refused, sockets are closed.
    pub async fn shutdown(&self) {
        self.inner.with(|st| {
            st.reg.shutdown(now_ms());
            for r in st.rpcs.values_mut() {
                if let Some(s) = &r.socket {
                    let _ = s.tx.try_send(Outgoing::CloseAfter(Duration::ZERO));
                }
            }
        });
        // Let socket tasks flush their last notifications.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Closing the sessions stopped their recordings (reason `openviduServerStopped`): their
        // recorder threads write what they have and the files are put in their final form
        // before the process exits, within a bound (a stuck writer is left to the next start).
        let deadline = tokio::time::Instant::now() + RECORDINGS_AT_SHUTDOWN;
        loop {
            let left = self.inner.with(|st| st.rec.unfinished());
            if left == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    recordings = left,
                    "shutdown: recordings still being written are left unfinished"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Webhook delivery counters.
    pub fn webhook_stats(&self) -> Arc<webhook::WebhookStats> {
        self.inner.webhooks.stats.clone()
    }

    /// Test hook, not API: records a published stream as the media code will after
    /// `publishVideo` (`params` = the publishVideo params). Emits `participantPublished`.
    #[doc(hidden)]
    pub fn _add_stream_for_tests(
        &self,
        session_id: &str,
        connection_id: &str,
        params: &serde_json::Map<String, Value>,
    ) -> Result<String, crate::signaling::RpcError> {
        let media = ws::media_options_from_params(params)?;
        self.inner.with(|st| st.reg.add_stream(session_id, connection_id, media, now_ms()))
    }

    /// Attaches the media engine: media methods go to it, registry teardowns reach it, and a
    /// task turns its shards' events into notifications. Call once, inside the runtime.
    pub fn attach_media(&self, engine: Arc<crate::media::MediaEngine>) {
        if !self.inner.media.attach(engine.clone()) {
            return;
        }
        self.inner.metrics.register_media_engine(&engine);
        let weak = Arc::downgrade(&self.inner);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Events are awaited: the task sleeps until a shard writes its event eventfd or
            // the engine queues trickled candidates.
            let mut wakers = engine.event_wakers();
            let _guard = rt.enter();
            for w in &mut wakers {
                if let Err(e) = w.register() {
                    tracing::error!(error = %e, "cannot await the media shards' events");
                }
            }
            let ipcam_engine = engine.clone();
            rt.spawn(async move {
                loop {
                    let Some(trickle) = weak.upgrade() else { return };
                    tokio::select! {
                        () = crate::shard::any_wake(&mut wakers) => {}
                        // Trickled candidates wait one more turn of the runtime, so the answer
                        // or offer that created their transport goes out first.
                        () = trickle.trickle_ready.notified() => tokio::task::yield_now().await,
                    }
                    drop(trickle);
                    let Some(inner) = weak.upgrade() else { return };
                    media_rpc::on_shard_events(&inner, &engine, engine.poll_events());
                    media_rpc::flush_trickle(&inner);
                }
            });
            // IP cameras: the ingest thread and the task that keeps it in step.
            ipcam::start(&self.inner, ipcam_engine);
        }
    }

    /// Plugs a recorder in: from now on (if `recording.enabled`) `/config` reports recording on,
    /// the recording routes work, ALWAYS sessions record, and the recordings already under
    /// `recording.path` are listed. `events` carries the backend's completions (a channel of
    /// [`recording::EVENT_QUEUE`] is plenty). Call once, inside the runtime; false if a backend
    /// was attached before.
    pub fn attach_recording(
        &self,
        backend: Arc<dyn recording::RecordingBackend>,
        events: mpsc::Receiver<recording::BackendEvent>,
    ) -> bool {
        let (tx, rx) = mpsc::unbounded_channel();
        let rt = recording::Runtime { backend, effects: tx };
        if self.inner.recording.set(rt).is_err() {
            return false;
        }
        if self.inner.cfg.recording.enabled {
            // Created by the first recording (`create_dir_all` of its directory), so a server
            // that never records leaves no directory behind.
            let dir = std::path::Path::new(&self.inner.cfg.recording.path);
            let loaded = recording::Recordings::load(dir);
            self.inner.with(|st| st.rec = loaded);
        }
        let weak = Arc::downgrade(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(recording::run(weak, events, rx));
            }
            Err(_) => {
                tracing::error!("attach_recording outside a runtime: recorder events are lost")
            }
        }
        true
    }

    /// Whether the recording API is on (`recording.enabled` and a backend attached).
    pub fn recording_enabled(&self) -> bool {
        recording::enabled(&self.inner)
    }

    /// The attached media engine, if any.
    pub fn media_engine(&self) -> Option<Arc<crate::media::MediaEngine>> {
        self.inner.media.engine().cloned()
    }

    /// Number of open WebSocket connections.
    pub fn websocket_count(&self) -> usize {
        self.inner.ws_count.load(Ordering::Relaxed)
    }

    /// The metrics registry (`/metrics`); the process registers the media shards on it.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// The reloadable TURN credentials joinRoom mints from; the TURN shards read the same handle.
    pub fn turn_secrets(&self) -> TurnSecretsHandle {
        self.inner.turn_secrets.clone()
    }

    /// Registry and socket gauges, counted now.
    pub fn gauges(&self) -> ControlGauges {
        let mut g = self.inner.with(|st| gauges_of(&st.reg));
        g.websockets = self.websocket_count() as u64;
        g.draining = self.is_draining();
        g
    }

    /// Whether [`ControlPlane::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }

    /// Starts the drain before a stop: joinRoom and new sessions/connections are refused from
    /// now on, and every participant is told with `participantEvicted {connectionId: own id,
    /// reason: "openviduServerStopped"}` (spec §4.8; openvidu-browser then leaves on its own and
    /// closes its socket). Participants stay in their sessions, and their media keeps flowing,
    /// until they leave or [`ControlPlane::shutdown`] evicts the rest. A participant whose socket
    /// closes during the drain is evicted at once with `openviduServerStopped` (no reconnection
    /// window). Returns the number of participants told.
    pub fn begin_drain(&self) -> usize {
        if self.inner.draining.swap(true, Ordering::Relaxed) {
            return 0;
        }
        self.inner.with(|st| {
            let told: Vec<(String, String)> = st
                .reg
                .sessions()
                .into_iter()
                .flat_map(|s| s.connections.iter())
                .filter_map(|c| c.active.as_ref().map(|a| (a.rpc.clone(), c.id.clone())))
                .collect();
            for (rpc, cid) in &told {
                let params =
                    serde_json::json!({"connectionId": cid, "reason": "openviduServerStopped"});
                let text = crate::signaling::notification("participantEvicted", &params);
                deliver(&mut st.rpcs, rpc, Outgoing::Text(Utf8Bytes::from(text)));
            }
            told.len()
        })
    }

    /// Webhook delivery counters in the metrics' shape.
    pub fn webhook_counts(&self) -> WebhookCounts {
        let s = &self.inner.webhooks.stats;
        WebhookCounts {
            queued: s.queued.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            dropped_full: s.dropped_full.load(Ordering::Relaxed),
            dropped_failed: s.dropped_failed.load(Ordering::Relaxed),
        }
    }
}

/// Counts sessions, participants, publishers and subscriptions.
fn gauges_of(reg: &Registry) -> ControlGauges {
    let mut g = ControlGauges::default();
    for s in reg.sessions() {
        g.sessions += 1;
        let active = s.active_count() as u64;
        g.participants += active;
        if active > 0 {
            g.active_sessions += 1;
        }
        for c in &s.connections {
            if c.active.is_none() {
                g.pending_connections += 1;
                continue;
            }
            g.publishers += c.publisher.is_some() as u64;
            g.subscribers += c.subscriptions.len() as u64;
        }
    }
    g
}

/// The client IP of a request: `X-Real-IP` if present, else the TCP peer.
pub(crate) fn client_ip(headers: &axum::http::HeaderMap, peer: Option<SocketAddr>) -> String {
    headers
        .get("x-real-ip")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| peer.map(|p| p.ip().to_string()))
        .unwrap_or_default()
}
