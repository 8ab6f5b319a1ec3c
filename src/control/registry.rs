//! The session registry: the OpenVidu model (Session → Connection(token, role) → Stream) as
//! plain data, sans-IO.
//!
//! Run loop (what the shell does):
//! 1. call one operation (`create_session`, `join`, `evict`, …) passing `now_ms` (Unix epoch
//!    milliseconds; the registry never reads a clock);
//! 2. drain [`Registry::poll_output`] until `None` and carry every [`Output`] out: notifications
//!    to the JSON-RPC session they name, webhooks to the webhook queue, media commands to the
//!    shard queues, `Detach` to the socket layer.
//!
//! Outputs are queued in the exact order OpenVidu sends them (e.g. §4.8: `participantLeft` to
//! the others, then `participantEvicted` to the evicted one and the others).

use std::collections::{HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

use super::media::MediaCommand;
use crate::dtls::Fingerprint;
use crate::media::PeerId;
use crate::sdp::{Negotiated, NegotiatedMedia, OutgoingTrack, VideoCodecPolicy};
use crate::signaling::{RpcError, code};

mod ipcam;
pub use ipcam::IpcamView;

/// Unix epoch milliseconds.
pub type Ms = u64;

const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
const BASE32: &[u8] = b"0123456789abcdefghijklmnopqrstuv";

/// The `mediaServer` value of the joinRoom result (spec §4.3): the client-offer flow.
pub const MEDIA_SERVER: &str = "kurento";
/// The `mediaServer` value with `[media] simulcast`: openvidu-browser sends simulcast and
/// subscribes with server offers (`prepareReceiveVideoFrom`) only for this value.
pub const MEDIA_SERVER_SIMULCAST: &str = "mediasoup";

/// Participant roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Subscriber,
    Publisher,
    Moderator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Subscriber => "SUBSCRIBER",
            Role::Publisher => "PUBLISHER",
            Role::Moderator => "MODERATOR",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "SUBSCRIBER" => Some(Role::Subscriber),
            "PUBLISHER" => Some(Role::Publisher),
            "MODERATOR" => Some(Role::Moderator),
            _ => None,
        }
    }
}

/// `WEBRTC` or `IPCAM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionType {
    WebRtc,
    IpCam,
}

/// Validated session properties (REST layer parses and checks; §2.3).
#[derive(Clone, Debug)]
pub struct SessionProps {
    pub media_mode: String,
    pub recording_mode: String,
    pub custom_session_id: String,
    /// Already normalised to the §2.2 shape.
    pub default_recording_properties: Value,
    pub forced_video_codec: Option<String>,
    pub allow_transcoding: Option<bool>,
    /// `{"id": …}` when given.
    pub media_node: Option<Value>,
}

/// Validated connection properties (§2.7).
#[derive(Clone, Debug)]
pub struct ConnectionProps {
    pub kind: ConnectionType,
    pub data: String,
    pub record: bool,
    pub role: Role,
    pub kurento_options: Option<Value>,
    /// Entries `{url, username?, credential?}` (staticAuthSecret already resolved).
    pub custom_ice_servers: Vec<Value>,
    pub rtsp_uri: Option<String>,
    pub adaptative_bitrate: Option<bool>,
    pub only_play_with_subscribers: Option<bool>,
    pub network_cache: Option<i64>,
}

/// Media options of a published stream (§2.6 `mediaOptions`, §4.5 stream descriptor).
#[derive(Clone, Debug, PartialEq)]
pub struct MediaOptions {
    pub has_audio: bool,
    pub has_video: bool,
    pub audio_active: bool,
    pub video_active: bool,
    /// `CAMERA` | `SCREEN` | `CUSTOM` | `IPCAM`; `None` when `has_video` is false.
    pub type_of_video: Option<String>,
    pub frame_rate: Option<Value>,
    /// JSON text `{"width":W,"height":H}` or `None`.
    pub video_dimensions: Option<String>,
    /// `{}` or `{type, options, lastExecMethod?}`.
    pub filter: Value,
}

#[derive(Clone, Debug)]
pub struct Stream {
    pub id: String,
    pub created_at: Ms,
    pub media: MediaOptions,
    /// Its publisher's media transport and what was agreed with it (`None`: no media engine,
    /// or an IP camera).
    pub transport: Option<PublishedMedia>,
}

#[derive(Clone, Debug)]
pub struct Subscription {
    pub stream_id: String,
    pub created_at: Ms,
    /// The subscriber leg's media transport (`None`: no media engine, or the transport failed
    /// and the browser has not reconnected it yet).
    pub transport: Option<ReceivedMedia>,
}

/// Where a stream's or a subscription's media transport is: a peer of a media shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportRef {
    pub peer: PeerId,
    pub shard: usize,
}

/// The shard of a [`TransportRef`] that is a subscriber leg hosted by another node of the
/// cluster (its `peer` is a local alias; `control::cluster::span` knows the leg).
pub const REMOTE_SHARD: usize = usize::MAX;

/// What the media layer agreed with a publisher (`publishVideo`).
#[derive(Clone, Debug)]
pub struct PublishedMedia {
    pub at: TransportRef,
    /// The agreed m-lines, in track order.
    pub negotiated: Vec<NegotiatedMedia>,
    pub policy: VideoCodecPolicy,
    /// The publisher's peer connection: its certificate and SDP session (`o=` sess-id).
    pub connection_of: (Fingerprint, u64),
}

/// A subscriber leg's transport and, for a client offer, what its answer announced (for a
/// renegotiation of the same peer connection).
#[derive(Clone, Debug)]
pub struct ReceivedMedia {
    pub at: TransportRef,
    pub answered: Option<AnsweredLeg>,
}

/// What a client-offer subscriber leg was answered with.
#[derive(Clone, Debug)]
pub struct AnsweredLeg {
    /// Its certificate and SDP session, as [`PublishedMedia::connection_of`].
    pub connection_of: (Fingerprint, u64),
    pub outgoing: Vec<OutgoingTrack>,
}

/// A server offer waiting for the subscriber's answer (`prepareReceiveVideoFrom`).
#[derive(Clone, Debug)]
pub struct PendingOffer {
    pub stream_id: String,
    pub offer: Negotiated,
    pub ice_ufrag: String,
    pub ice_pwd: String,
    /// Publisher track index of each offered m-line.
    pub sources: Vec<usize>,
    /// The shard the offer's candidates name (where the leg will be).
    pub shard: usize,
}

/// What a connection gets at joinRoom.
#[derive(Clone, Debug)]
pub struct ActiveInfo {
    /// JSON-RPC session id the participant's notifications go to.
    pub rpc: String,
    pub active_at: Ms,
    pub ip: String,
    pub platform: String,
    pub client_data: String,
    pub location: String,
}

#[derive(Clone, Debug)]
pub struct Connection {
    pub id: String,
    pub token_value: String,
    pub token_url: String,
    pub created_at: Ms,
    pub props: ConnectionProps,
    pub active: Option<ActiveInfo>,
    pub publisher: Option<Stream>,
    pub subscriptions: Vec<Subscription>,
    /// Server offers made to this connection, waiting for its answers.
    pub offers: Vec<PendingOffer>,
    /// An IP camera's ingest status (`ipcam` in the connection's JSON), once known.
    pub ipcam_status: Option<Value>,
}

impl Connection {
    /// Client data and server data as every client sees them (joined by `%/%`).
    pub fn full_metadata(&self) -> String {
        let client = self.active.as_ref().map(|a| a.client_data.as_str()).unwrap_or("");
        match (client.is_empty(), self.props.data.is_empty()) {
            (false, false) => format!("{client}%/%{}", self.props.data),
            (false, true) => client.to_string(),
            (true, _) => self.props.data.clone(),
        }
    }

    fn rpc(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.rpc.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct Session {
    pub id: String,
    pub created_at: Ms,
    pub props: SessionProps,
    /// Someone joined at least once.
    pub ever_active: bool,
    /// The media shard of its publishers (chosen at the first join or publish).
    pub media_home: Option<usize>,
    /// In creation order.
    pub connections: Vec<Connection>,
    /// The recording in progress (`recording` flag of the session JSON); while set, the session
    /// outlives its last participant (the recording's autostop closes it).
    pub recording: Option<ActiveRecording>,
}

/// The recording a session is being recorded by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveRecording {
    pub id: String,
    pub name: String,
}

impl Session {
    pub fn connection(&self, id: &str) -> Option<&Connection> {
        self.connections.iter().find(|c| c.id == id)
    }

    fn connection_mut(&mut self, id: &str) -> Option<&mut Connection> {
        self.connections.iter_mut().find(|c| c.id == id)
    }

    fn active_rpcs_except(&self, except: &str) -> Vec<String> {
        self.connections
            .iter()
            .filter(|c| c.id != except)
            .filter_map(|c| c.rpc().map(str::to_string))
            .collect()
    }

    pub fn active_count(&self) -> usize {
        self.connections.iter().filter(|c| c.active.is_some()).count()
    }

    fn unique_id(&self) -> String {
        format!("{}_{}", self.id, self.created_at)
    }

    /// The stream with this id and its owner.
    pub fn stream(&self, stream_id: &str) -> Option<(&Connection, &Stream)> {
        self.connections
            .iter()
            .find_map(|c| c.publisher.as_ref().filter(|s| s.id == stream_id).map(|s| (c, s)))
    }
}

/// TURN settings for joinRoom credentials.
#[derive(Clone, Debug)]
pub struct TurnSettings {
    pub ip: String,
    pub port: u16,
    /// The REST API secret is read from here at every join (reloadable on SIGHUP).
    pub secrets: crate::secrets::TurnSecretsHandle,
    pub ttl_secs: u64,
}

/// Registry configuration (from [`crate::config::Config`]).
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// `ws[s]://host[:port]` prefix of the token URLs.
    pub ws_url: String,
    pub forced_video_codec: String,
    pub allow_transcoding: bool,
    /// Default `customIceServers` entries.
    pub ice_servers: Vec<Value>,
    pub max_sessions: usize,
    pub max_connections_per_session: usize,
    pub turn: Option<TurnSettings>,
    /// `[media] simulcast`: joinRoom says `mediaServer: "mediasoup"` and `videoSimulcast`.
    pub simulcast: bool,
}

/// Something the shell must carry out after an operation.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// Send the notification to each JSON-RPC session in `to`, in order.
    Notify { to: Vec<String>, method: &'static str, params: Value },
    /// The participant of JSON-RPC session `rpc` is gone (evicted, left, session closed): unbind
    /// it, and close its socket after the grace period if the client does not.
    Detach { rpc: String, close: bool },
    /// A webhook event (complete JSON body).
    Webhook(Value),
    /// A command for the media shards.
    Media(MediaCommand),
}

/// Errors of registry operations, sorted for the REST mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegError {
    SessionNotFound,
    ConnectionNotFound,
    StreamNotFound,
    SessionExists,
    /// A configured limit (`max_sessions`, `max_connections_per_session`) is reached.
    Limit(&'static str),
    /// The operation does not apply to this object (e.g. unpublishing an IP camera).
    NotAllowed,
    /// A signal could not be delivered (§2.8 406).
    NotAcceptable(String),
}

/// Result of a successful joinRoom.
#[derive(Clone, Debug)]
pub struct Joined {
    pub session_id: String,
    pub connection_id: String,
    /// The joinRoom result object (without `sessionId`, injected by the framing).
    pub result: Value,
}

/// Session id -> the UDP port of its shard's own TURN listener (see
/// [`JoinRequest::media_turn_port`]).
pub type MediaTurnPort<'a> = dyn Fn(&str) -> Option<u16> + 'a;

/// Parameters of joinRoom taken from the request and the socket.
#[derive(Clone)]
pub struct JoinRequest<'a> {
    pub token: &'a str,
    pub session: &'a str,
    pub rpc: &'a str,
    pub ip: &'a str,
    pub platform: &'a str,
    pub client_data: &'a str,
    /// The TURN port of the session's media shard (`[turn] shard_ports`), offered first in
    /// `customIceServers`; asked only once the token is valid (it may assign the session a
    /// shard). `None`: the TURN port only.
    pub media_turn_port: Option<&'a MediaTurnPort<'a>>,
}

impl std::fmt::Debug for JoinRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinRequest")
            .field("session", &self.session)
            .field("rpc", &self.rpc)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

/// The session registry.
pub struct Registry {
    cfg: RegistryConfig,
    sessions: HashMap<String, Session>,
    /// Token value (`tok_…`) → (session id, connection id) for pending connections.
    tokens: HashMap<String, (String, String)>,
    /// Media transport (peer) → (session, connection) owning it.
    transports: HashMap<PeerId, (String, String)>,
    rng: StdRng,
    out: VecDeque<Output>,
    closed: bool,
}

impl Registry {
    pub fn new(cfg: RegistryConfig, seed: u64) -> Registry {
        Registry {
            cfg,
            sessions: HashMap::new(),
            tokens: HashMap::new(),
            transports: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
            out: VecDeque::new(),
            closed: false,
        }
    }

    /// Next output to carry out.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// Queues an output made outside the registry (the recording manager's notifications and
    /// webhooks), in order with the registry's own.
    pub fn emit(&mut self, out: Output) {
        self.out.push_back(out);
    }

    /// Marks a session as recorded by `rec` (or no longer). False when the session is unknown.
    pub fn set_recording(&mut self, session_id: &str, rec: Option<ActiveRecording>) -> bool {
        match self.sessions.get_mut(session_id) {
            Some(s) => {
                s.recording = rec;
                true
            }
            None => false,
        }
    }

    fn rand_from(&mut self, set: &[u8], n: usize) -> String {
        (0..n).map(|_| set[self.rng.random_range(0..set.len())] as char).collect()
    }

    fn prefixed_id(&mut self, prefix: &str, rest: usize) -> String {
        let first = self.rand_from(UPPER, 1);
        let tail = self.rand_from(ALNUM, rest);
        format!("{prefix}{first}{tail}")
    }

    /// A fresh JSON-RPC session id (26 chars [0-9a-v], like kurento-jsonrpc).
    pub fn new_rpc_session_id(&mut self) -> String {
        self.rand_from(BASE32, 26)
    }

    fn notify(&mut self, rpcs: &[String], method: &'static str, params: &Value) {
        if rpcs.is_empty() {
            return;
        }
        self.out.push_back(Output::Notify { to: rpcs.to_vec(), method, params: params.clone() });
    }

    fn webhook(&mut self, event: &str, session: &Session, now: Ms, extra: Value) {
        let mut body = json!({
            "event": event,
            "timestamp": now,
            "sessionId": session.id,
            "uniqueSessionId": session.unique_id(),
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        self.out.push_back(Output::Webhook(body));
    }

    // ---------------------------------------------------------------- sessions

    pub fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    /// All sessions, oldest first.
    pub fn sessions(&self) -> Vec<&Session> {
        let mut v: Vec<&Session> = self.sessions.values().collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// `POST /sessions`. The custom id must already be validated.
    pub fn create_session(&mut self, props: SessionProps, now: Ms) -> Result<String, RegError> {
        if self.closed {
            return Err(RegError::Limit("server is shutting down"));
        }
        if !props.custom_session_id.is_empty()
            && self.sessions.contains_key(&props.custom_session_id)
        {
            return Err(RegError::SessionExists);
        }
        if self.sessions.len() >= self.cfg.max_sessions {
            return Err(RegError::Limit("sessions.max_sessions"));
        }
        let id = if props.custom_session_id.is_empty() {
            loop {
                let id = self.prefixed_id("ses_", 9);
                if !self.sessions.contains_key(&id) {
                    break id;
                }
            }
        } else {
            props.custom_session_id.clone()
        };
        let session = Session {
            id: id.clone(),
            created_at: now,
            props,
            ever_active: false,
            media_home: None,
            connections: Vec::new(),
            recording: None,
        };
        self.webhook("sessionCreated", &session, now, json!({}));
        self.sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// Closes a session: evicts every participant with `reason`, invalidates tokens, emits
    /// `sessionDestroyed`. Returns false if unknown.
    pub fn close_session(&mut self, id: &str, reason: &str, now: Ms) -> bool {
        let Some(session) = self.sessions.get(id) else {
            return false;
        };
        let active: Vec<String> = session
            .connections
            .iter()
            .filter(|c| c.active.is_some())
            .map(|c| c.id.clone())
            .collect();
        for cid in active {
            self.evict_inner(id, &cid, reason, now, false);
        }
        self.destroy_session(id, reason, now);
        true
    }

    fn destroy_session(&mut self, id: &str, reason: &str, now: Ms) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let mut refs = Vec::new();
        for c in &session.connections {
            self.tokens.remove(&c.token_value);
            refs.extend(transports_of(c));
        }
        self.release(refs);
        let duration = now.saturating_sub(session.created_at) / 1000;
        self.webhook(
            "sessionDestroyed",
            &session,
            now,
            json!({"startTime": session.created_at, "duration": duration, "reason": reason}),
        );
    }

    /// Removes sessions nobody ever joined that are older than `threshold_ms`. Returns their ids.
    pub fn collect_garbage(&mut self, now: Ms, threshold_ms: u64) -> Vec<String> {
        let ids: Vec<String> = self
            .sessions
            .values()
            .filter(|s| {
                !s.ever_active
                    && s.active_count() == 0
                    && now.saturating_sub(s.created_at) >= threshold_ms
            })
            .map(|s| s.id.clone())
            .collect();
        for id in &ids {
            self.destroy_session(id, "automaticStop", now);
        }
        ids
    }

    /// Server shutdown: every session closed with `openviduServerStopped`; refuses new work.
    pub fn shutdown(&mut self, now: Ms) {
        self.closed = true;
        let ids: Vec<String> = self.sessions.keys().cloned().collect();
        for id in ids {
            self.close_session(&id, "openviduServerStopped", now);
        }
    }

    // ------------------------------------------------------------- connections

    /// `POST /sessions/{id}/connection` (and `POST /tokens`).
    pub fn create_connection(
        &mut self,
        session_id: &str,
        mut props: ConnectionProps,
        now: Ms,
    ) -> Result<String, RegError> {
        let Some(count) = self.sessions.get(session_id).map(|s| s.connections.len()) else {
            return Err(RegError::SessionNotFound);
        };
        if self.closed {
            return Err(RegError::SessionNotFound);
        }
        if count >= self.cfg.max_connections_per_session {
            return Err(RegError::Limit("sessions.max_connections_per_session"));
        }
        if props.kind == ConnectionType::WebRtc && props.custom_ice_servers.is_empty() {
            props.custom_ice_servers = self.cfg.ice_servers.clone();
        }
        let custom = custom_connection_id(&props.data).filter(|id| {
            // Invariant: presence checked at the top of this function.
            self.sessions[session_id].connection(id).is_none()
        });
        let id = match (&props.kind, &props.rtsp_uri, custom) {
            (ConnectionType::IpCam, Some(uri), _) => self.ipcam_id(uri),
            (_, _, Some(id)) => id,
            _ => self.prefixed_id("con_", 9),
        };
        let token_value = loop {
            let t = self.prefixed_id("tok_", 15);
            if !self.tokens.contains_key(&t) {
                break t;
            }
        };
        let token_url = match props.kind {
            ConnectionType::WebRtc => {
                format!("{}?sessionId={}&token={}", self.cfg.ws_url, session_id, token_value)
            }
            ConnectionType::IpCam => token_value.clone(),
        };
        let kind = props.kind;
        let conn = Connection {
            id: id.clone(),
            token_value: token_value.clone(),
            token_url,
            created_at: now,
            props,
            active: None,
            publisher: None,
            subscriptions: Vec::new(),
            offers: Vec::new(),
            ipcam_status: None,
        };
        // Invariant: presence checked at the top of this function.
        let session = self.sessions.get_mut(session_id).expect("session exists");
        session.connections.push(conn);
        if kind == ConnectionType::WebRtc {
            self.tokens.insert(token_value, (session_id.to_string(), id.clone()));
        } else {
            self.activate_ipcam(session_id, &id, now);
        }
        Ok(id)
    }

    /// IP cameras are active at once with one `IPC` stream (the media engine pulls the RTSP feed).
    fn activate_ipcam(&mut self, session_id: &str, cid: &str, now: Ms) {
        let stream = self.new_ipcam_stream(cid, now);
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        session.ever_active = true;
        let others = session.active_rpcs_except(cid);
        let Some(conn) = session.connection_mut(cid) else {
            return;
        };
        conn.active = Some(ActiveInfo {
            rpc: format!("ipcam:{cid}"),
            active_at: now,
            ip: String::new(),
            platform: "IPCAM".into(),
            client_data: String::new(),
            location: "unknown".into(),
        });
        let joined = json!({"id": cid, "createdAt": now, "metadata": conn.full_metadata()});
        let published = json!({"id": cid, "createdAt": now, "metadata": conn.full_metadata(),
            "streams": [stream_descriptor(&stream)]});
        conn.publisher = Some(stream);
        let hook = participant_hook(conn);
        let session = session.clone();
        self.notify(&others, "participantJoined", &joined);
        self.notify(&others, "participantPublished", &published);
        self.webhook("participantJoined", &session, now, hook);
    }

    /// A new `IPC` stream of camera `cid` (published at activation, and again when a lost
    /// camera answers).
    fn new_ipcam_stream(&mut self, cid: &str, now: Ms) -> Stream {
        let stream_rand = format!("{}{}", self.rand_from(UPPER, 1), self.rand_from(ALNUM, 3));
        Stream {
            id: format!("str_IPC_{stream_rand}_{cid}"),
            created_at: now,
            transport: None,
            media: MediaOptions {
                has_audio: true,
                has_video: true,
                audio_active: true,
                video_active: true,
                type_of_video: Some("IPCAM".into()),
                frame_rate: None,
                video_dimensions: None,
                filter: json!({}),
            },
        }
    }

    /// `ipc_IPCAM_<scheme>_<4 chars>_<host_port_path>` (spec §1); characters outside
    /// `[A-Za-z0-9_]` and URI credentials are dropped so the id stays URL-safe.
    fn ipcam_id(&mut self, uri: &str) -> String {
        let (scheme, rest) = uri.split_once("://").unwrap_or(("rtsp", uri));
        let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
        let tail: String = rest
            .chars()
            .filter(|c| *c != '-')
            .map(|c| if matches!(c, '/' | '.' | ':') { '_' } else { c })
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let tag = self.rand_from(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", 4);
        format!("ipc_IPCAM_{scheme}_{tag}_{}", tail.trim_end_matches('_'))
    }

    /// `PATCH …/connection/{id}`. Pushes `connectionPropertyChanged` for changed properties of an
    /// active connection.
    pub fn update_connection(
        &mut self,
        session_id: &str,
        cid: &str,
        role: Option<Role>,
        record: Option<bool>,
    ) -> Result<(), RegError> {
        let session = self.sessions.get_mut(session_id).ok_or(RegError::SessionNotFound)?;
        let conn = session.connection_mut(cid).ok_or(RegError::ConnectionNotFound)?;
        if conn.props.kind == ConnectionType::IpCam {
            return Err(RegError::NotAllowed);
        }
        let mut changes = Vec::new();
        if let Some(r) = role
            && r != conn.props.role
        {
            conn.props.role = r;
            changes.push(json!({"property": "role", "newValue": r.as_str()}));
        }
        if let Some(rec) = record
            && rec != conn.props.record
        {
            conn.props.record = rec;
            changes.push(json!({"property": "record", "newValue": rec.to_string()}));
        }
        if let Some(rpc) = conn.rpc().map(str::to_string) {
            for c in changes {
                self.notify(std::slice::from_ref(&rpc), "connectionPropertyChanged", &c);
            }
        }
        Ok(())
    }

    /// `DELETE …/connection/{id}`: a pending connection loses its token; an active one is
    /// evicted with `reason`.
    pub fn remove_connection(
        &mut self,
        session_id: &str,
        cid: &str,
        reason: &str,
        now: Ms,
    ) -> Result<(), RegError> {
        let session = self.sessions.get_mut(session_id).ok_or(RegError::SessionNotFound)?;
        let idx = session
            .connections
            .iter()
            .position(|c| c.id == cid)
            .ok_or(RegError::ConnectionNotFound)?;
        if session.connections[idx].active.is_none() {
            let c = session.connections.remove(idx);
            self.tokens.remove(&c.token_value);
            return Ok(());
        }
        self.evict_inner(session_id, cid, reason, now, true);
        Ok(())
    }

    // ---------------------------------------------------------- participants

    /// joinRoom (§4.3). Consumes the token, activates the connection, notifies the others.
    pub fn join(&mut self, req: &JoinRequest<'_>, now: Ms) -> Result<Joined, RpcError> {
        if self.closed {
            return Err(RpcError::new(
                code::ROOM_CLOSED,
                format!("Unable to join session {}. Server is shutting down", req.session),
            ));
        }
        if !self.sessions.contains_key(req.session) {
            return Err(RpcError::new(
                code::ROOM_NOT_FOUND,
                format!("Unable to join session. Session {} cannot be found", req.session),
            ));
        }
        let invalid = || {
            RpcError::new(
                code::USER_UNAUTHORIZED,
                format!("Unable to join session {}. Token {} is not valid", req.session, req.token),
            )
        };
        let by_value = crate::signaling::token_value(req.token)
            .and_then(|t| self.tokens.get(t).map(|v| (t.to_string(), v.clone())));
        let by_exact = || {
            self.tokens.get(req.token).map(|v| (req.token.to_string(), v.clone())).or_else(|| {
                // Exact match against the whole token URL.
                let s = self.sessions.get(req.session)?;
                let c = s
                    .connections
                    .iter()
                    .find(|c| c.active.is_none() && c.token_url == req.token)?;
                Some((c.token_value.clone(), (s.id.clone(), c.id.clone())))
            })
        };
        let (tok, (sid, cid)) = by_value.or_else(by_exact).ok_or_else(invalid)?;
        if sid != req.session {
            return Err(invalid());
        }
        self.tokens.remove(&tok);
        let turn = self.cfg.turn.clone();
        let final_user_id = self.rand_from(b"0123456789ABCDEF", 16);
        // Invariant: tokens only map to existing sessions (removed together in destroy_session).
        let session = self.sessions.get_mut(&sid).ok_or_else(invalid)?;
        session.ever_active = true;
        let conn = session.connection_mut(&cid).ok_or_else(invalid)?;
        conn.active = Some(ActiveInfo {
            rpc: req.rpc.to_string(),
            active_at: now,
            ip: req.ip.to_string(),
            platform: req.platform.to_string(),
            client_data: req.client_data.to_string(),
            location: "unknown".into(),
        });
        let session = &self.sessions[&sid];
        // Invariant: activated just above.
        let conn = session.connection(&cid).expect("connection exists");
        let metadata = conn.full_metadata();
        let others = session.active_rpcs_except(&cid);
        let value: Vec<Value> = session
            .connections
            .iter()
            .filter(|c| c.id != cid)
            .filter_map(|c| {
                let a = c.active.as_ref()?;
                let mut v =
                    json!({"id": c.id, "createdAt": a.active_at, "metadata": c.full_metadata()});
                if let Some(s) = &c.publisher {
                    v["streams"] = json!([stream_descriptor(s)]);
                }
                Some(v)
            })
            .collect();
        let mut result = json!({
            "id": cid,
            "finalUserId": final_user_id,
            "createdAt": now,
            "metadata": metadata,
            "value": value,
            "session": sid,
            "version": crate::OPENVIDU_VERSION,
            "mediaServer": if self.cfg.simulcast { MEDIA_SERVER_SIMULCAST } else { MEDIA_SERVER },
            "videoSimulcast": self.cfg.simulcast,
            "record": conn.props.record,
            "role": conn.props.role.as_str(),
        });
        let mut ice = conn.props.custom_ice_servers.clone();
        if let Some(t) = &turn {
            let secret = t.secrets.load();
            let (user, cred) =
                turn_rest_credentials(&secret.rest_secret, now / 1000 + t.ttl_secs, &cid);
            result["coturnIp"] = json!(t.ip);
            result["coturnPort"] = json!(t.port);
            result["turnUsername"] = json!(user);
            result["turnCredential"] = json!(cred);
            if ice.is_empty() {
                let host = if t.ip.contains(':') && !t.ip.starts_with('[') {
                    format!("[{}]", t.ip)
                } else {
                    t.ip.clone()
                };
                if let Some(port) = req.media_turn_port.and_then(|f| f(&sid)) {
                    ice.push(json!({"url": format!("turn:{host}:{port}"), "username": user, "credential": cred}));
                }
                ice.push(json!({"url": format!("turn:{host}:{}", t.port), "username": user, "credential": cred}));
                ice.push(json!({"url": format!("turn:{host}:{}?transport=tcp", t.port), "username": user, "credential": cred}));
            }
        }
        result["customIceServers"] = Value::Array(ice);
        let joined = json!({"id": cid, "createdAt": now, "metadata": metadata});
        let hook = participant_hook(conn);
        self.notify(&others, "participantJoined", &joined);
        let session = self.sessions[&sid].clone();
        self.webhook("participantJoined", &session, now, hook);
        Ok(Joined { session_id: sid, connection_id: cid, result })
    }

    /// leaveRoom (or a close the shell treats as voluntary): `participantLeft` to the others.
    /// Returns false if the participant was already gone.
    pub fn leave(&mut self, session_id: &str, cid: &str, reason: &str, now: Ms) -> bool {
        self.remove_participant(session_id, cid, reason, now, false, false)
    }

    /// Forced removal (§4.8): `participantLeft` to the others, then `participantEvicted` to the
    /// evicted one and the others.
    pub fn evict(&mut self, session_id: &str, cid: &str, reason: &str, now: Ms) -> bool {
        self.evict_inner(session_id, cid, reason, now, true)
    }

    fn evict_inner(
        &mut self,
        session_id: &str,
        cid: &str,
        reason: &str,
        now: Ms,
        close_if_empty: bool,
    ) -> bool {
        self.remove_participant(session_id, cid, reason, now, true, close_if_empty)
    }

    fn remove_participant(
        &mut self,
        session_id: &str,
        cid: &str,
        reason: &str,
        now: Ms,
        evicted: bool,
        close_if_empty: bool,
    ) -> bool {
        let close_if_empty = close_if_empty || !evicted;
        let Some(session) = self.sessions.get_mut(session_id) else {
            return false;
        };
        let Some(idx) = session.connections.iter().position(|c| c.id == cid) else {
            return false;
        };
        if session.connections[idx].active.is_none() {
            return false;
        }
        let conn = session.connections.remove(idx);
        let own_stream = conn.publisher.as_ref().map(|s| s.id.clone());
        // Subscribers of the leaving publisher lose their subscription.
        let (subs, mut refs) = own_stream
            .as_deref()
            .map(|sid| take_subscribers(&mut session.connections, sid))
            .unwrap_or_default();
        refs.extend(transports_of(&conn));
        if let Some(sid) = own_stream.as_deref() {
            for c in &mut session.connections {
                c.offers.retain(|o| o.stream_id != sid);
            }
        }
        // The leaving participant's own subscriptions end too.
        let own_subs: Vec<(Stream, String, Ms)> = conn
            .subscriptions
            .iter()
            .filter_map(|sub| {
                let (p, st) = session.stream(&sub.stream_id)?;
                Some((st.clone(), p.id.clone(), sub.created_at))
            })
            .collect();
        let others = session.active_rpcs_except(cid);
        let session_snapshot = session.clone();
        // Invariant: checked `active.is_some()` above.
        let active = conn.active.clone().expect("active connection");
        self.release(refs);
        for (st, publisher, created) in &own_subs {
            let me = [(cid.to_string(), *created)];
            self.subscribers_destroyed_hooks(&session_snapshot, st, publisher, &me, reason, now);
        }
        if let Some(s) = &conn.publisher {
            self.subscribers_destroyed_hooks(&session_snapshot, s, cid, &subs, reason, now);
            self.stream_destroyed_hook(&session_snapshot, &conn, s, reason, now);
        }
        let msg = json!({"connectionId": cid, "reason": reason});
        self.notify(&others, "participantLeft", &msg);
        if evicted {
            let mut all = vec![active.rpc.clone()];
            all.extend(others.iter().cloned());
            self.notify(&all, "participantEvicted", &msg);
        }
        self.out.push_back(Output::Detach { rpc: active.rpc.clone(), close: evicted });
        self.out.push_back(Output::Media(MediaCommand::ParticipantGone(cid.to_string())));
        let mut hook = participant_hook(&conn);
        hook["startTime"] = json!(active.active_at);
        hook["duration"] = json!(now.saturating_sub(active.active_at) / 1000);
        hook["reason"] = json!(reason);
        self.webhook("participantLeft", &session_snapshot, now, hook);
        let recorded = self.sessions.get(session_id).is_some_and(|s| s.recording.is_some());
        if close_if_empty && session_snapshot.active_count() == 0 && !recorded {
            self.destroy_session(session_id, "lastParticipantLeft", now);
        }
        true
    }

    /// The (session, connection) of an active participant by JSON-RPC session id. Linear in the
    /// session's size; the shell caches the binding and uses [`Registry::is_active`].
    pub fn is_active(&self, session_id: &str, cid: &str, rpc: &str) -> bool {
        self.sessions.get(session_id).and_then(|s| s.connection(cid)).and_then(|c| c.rpc())
            == Some(rpc)
    }

    /// The role of an active participant.
    pub fn role(&self, session_id: &str, cid: &str) -> Option<Role> {
        self.sessions
            .get(session_id)?
            .connection(cid)
            .filter(|c| c.active.is_some())
            .map(|c| c.props.role)
    }

    // --------------------------------------------------------------- signals

    /// A signal from REST (`from` None) or from a participant. `to` empty = everyone active.
    pub fn signal(
        &mut self,
        session_id: &str,
        from: Option<&str>,
        to: &[String],
        kind: Option<&str>,
        data: Option<&str>,
        now: Ms,
    ) -> Result<(), RegError> {
        let session = self.sessions.get(session_id).ok_or(RegError::SessionNotFound)?;
        if session.active_count() == 0 {
            return Err(RegError::NotAcceptable(format!(
                "Session {session_id} has no participants"
            )));
        }
        let mut targets = Vec::new();
        let mut to_ids = Vec::new();
        if to.is_empty() {
            for c in &session.connections {
                if let Some(r) = c.rpc() {
                    targets.push(r.to_string());
                    to_ids.push(c.id.clone());
                }
            }
        } else {
            for id in to {
                match session.connection(id).and_then(|c| c.rpc()) {
                    Some(r) => {
                        if !targets.iter().any(|t| t == r) {
                            targets.push(r.to_string());
                            to_ids.push(id.clone());
                        }
                    }
                    None => {
                        return Err(RegError::NotAcceptable(format!(
                            "Connection {id} is not an active connection of session {session_id}"
                        )));
                    }
                }
            }
        }
        let mut params = Map::new();
        if let Some(d) = data {
            params.insert("data".into(), json!(d));
        }
        if let Some(t) = kind {
            params.insert("type".into(), json!(t));
        }
        if let Some(f) = from {
            params.insert("from".into(), json!(f));
        }
        let params = Value::Object(params);
        let session = session.clone();
        self.notify(&targets, "sendMessage", &params);
        self.webhook(
            "signalSent",
            &session,
            now,
            json!({"from": from, "to": to_ids, "type": kind.unwrap_or(""), "data": data.unwrap_or("")}),
        );
        Ok(())
    }

    // --------------------------------------------------------------- streams

    /// Records a published stream (called by the media code after answering `publishVideo`);
    /// assigns the id, emits `participantPublished` to the others and `webrtcConnectionCreated`.
    pub fn add_stream(
        &mut self,
        session_id: &str,
        cid: &str,
        media: MediaOptions,
        now: Ms,
    ) -> Result<String, RpcError> {
        let prefix = if !media.has_video {
            "MIC".to_string()
        } else {
            media
                .type_of_video
                .as_deref()
                .unwrap_or("CAMERA")
                .chars()
                .take(3)
                .collect::<String>()
                .to_uppercase()
        };
        let r = format!("{}{}", self.rand_from(UPPER, 1), self.rand_from(ALNUM, 3));
        let session = self.sessions.get_mut(session_id).ok_or_else(no_session)?;
        let conn =
            session.connection_mut(cid).filter(|c| c.active.is_some()).ok_or_else(no_connection)?;
        if conn.props.role == Role::Subscriber {
            return Err(RpcError::new(
                code::USER_UNAUTHORIZED,
                "Unable to publish video. The user does not have a valid token",
            ));
        }
        if conn.publisher.is_some() {
            return Err(RpcError::new(
                code::USER_ALREADY_STREAMING,
                "The user is already publishing",
            ));
        }
        let stream = Stream {
            id: format!("str_{prefix}_{r}_{cid}"),
            created_at: now,
            media,
            transport: None,
        };
        let id = stream.id.clone();
        let desc = json!({"id": cid, "createdAt": conn.active.as_ref().map(|a| a.active_at),
            "metadata": conn.full_metadata(), "streams": [stream_descriptor(&stream)]});
        conn.publisher = Some(stream.clone());
        let conn = conn.clone();
        let others = session.active_rpcs_except(cid);
        let session = session.clone();
        self.notify(&others, "participantPublished", &desc);
        let mut hook = participant_hook_short(&conn);
        hook["streamId"] = json!(id);
        hook["connection"] = json!("OUTBOUND");
        media_hook_fields(&mut hook, &stream.media);
        self.webhook("webrtcConnectionCreated", &session, now, hook);
        Ok(id)
    }

    /// Unpublishes a stream. `forced` = by moderator/REST: the publisher also gets
    /// `participantUnpublished` about itself.
    pub fn remove_stream(
        &mut self,
        session_id: &str,
        stream_id: &str,
        reason: &str,
        forced: bool,
        now: Ms,
    ) -> Result<(), RegError> {
        let session = self.sessions.get_mut(session_id).ok_or(RegError::SessionNotFound)?;
        let owner = session
            .connections
            .iter()
            .position(|c| c.publisher.as_ref().is_some_and(|s| s.id == stream_id))
            .ok_or(RegError::StreamNotFound)?;
        if session.connections[owner].props.kind == ConnectionType::IpCam {
            return Err(RegError::NotAllowed);
        }
        self.unpublish_owned(session_id, owner, reason, forced, now);
        Ok(())
    }

    /// Unpublishes the stream of connection number `owner` of `session_id` (which has one):
    /// its subscribers' legs and its transport released, `participantUnpublished` with
    /// `reason` (to the owner too when `forced`), the webhooks.
    fn unpublish_owned(
        &mut self,
        session_id: &str,
        owner: usize,
        reason: &str,
        forced: bool,
        now: Ms,
    ) {
        let Some(session) = self.sessions.get_mut(session_id) else { return };
        let Some(stream) = session.connections.get_mut(owner).and_then(|c| c.publisher.take())
        else {
            return;
        };
        let stream_id = stream.id.as_str();
        let (subs, mut refs) = take_subscribers(&mut session.connections, stream_id);
        refs.extend(stream.transport.as_ref().map(|t| t.at));
        for c in &mut session.connections {
            c.offers.retain(|o| o.stream_id != stream_id);
        }
        let conn = session.connections[owner].clone();
        let mut targets = session.active_rpcs_except(&conn.id);
        if forced && let Some(r) = conn.rpc() {
            targets.insert(0, r.to_string());
        }
        let session = session.clone();
        self.release(refs);
        self.notify(
            &targets,
            "participantUnpublished",
            &json!({"connectionId": conn.id, "reason": reason}),
        );
        self.subscribers_destroyed_hooks(&session, &stream, &conn.id, &subs, reason, now);
        self.stream_destroyed_hook(&session, &conn, &stream, reason, now);
    }

    /// `webrtcConnectionDestroyed` for subscriber legs (`INBOUND`) of `stream`.
    fn subscribers_destroyed_hooks(
        &mut self,
        session: &Session,
        stream: &Stream,
        publisher: &str,
        subs: &[(String, Ms)],
        reason: &str,
        now: Ms,
    ) {
        for (sub, created) in subs {
            let mut hook = json!({"participantId": sub, "connectionId": sub, "streamId": stream.id,
                "connection": "INBOUND", "receivingFrom": publisher});
            media_hook_fields(&mut hook, &stream.media);
            hook["startTime"] = json!(created);
            hook["duration"] = json!(now.saturating_sub(*created) / 1000);
            hook["reason"] = json!(reason);
            self.webhook("webrtcConnectionDestroyed", session, now, hook);
        }
    }

    fn stream_destroyed_hook(
        &mut self,
        session: &Session,
        conn: &Connection,
        stream: &Stream,
        reason: &str,
        now: Ms,
    ) {
        let mut hook = participant_hook_short(conn);
        hook["streamId"] = json!(stream.id);
        hook["connection"] = json!("OUTBOUND");
        media_hook_fields(&mut hook, &stream.media);
        hook["startTime"] = json!(stream.created_at);
        hook["duration"] = json!(now.saturating_sub(stream.created_at) / 1000);
        hook["reason"] = json!(reason);
        self.webhook("webrtcConnectionDestroyed", session, now, hook);
    }

    /// Records that `cid` receives `stream_id` (called by the media code after `receiveVideoFrom`).
    pub fn add_subscriber(
        &mut self,
        session_id: &str,
        cid: &str,
        stream_id: &str,
        now: Ms,
    ) -> Result<(), RpcError> {
        let session = self.sessions.get_mut(session_id).ok_or_else(no_session)?;
        let Some((_, stream)) = session.stream(stream_id) else {
            return Err(RpcError::new(
                code::USER_NOT_STREAMING,
                format!("Stream {stream_id} is not published"),
            ));
        };
        let media = stream.media.clone();
        let publisher = session.stream(stream_id).map(|(c, _)| c.id.clone()).unwrap_or_default();
        let conn =
            session.connection_mut(cid).filter(|c| c.active.is_some()).ok_or_else(no_connection)?;
        // A new subscription to the same stream replaces the old one (re-subscribe, reconnect).
        let old: Vec<TransportRef> = conn
            .subscriptions
            .iter()
            .filter(|s| s.stream_id == stream_id)
            .filter_map(|s| s.transport.as_ref().map(|t| t.at))
            .collect();
        conn.subscriptions.retain(|s| s.stream_id != stream_id);
        conn.subscriptions.push(Subscription {
            stream_id: stream_id.to_string(),
            created_at: now,
            transport: None,
        });
        let mut hook = participant_hook_short(conn);
        let session = session.clone();
        hook["streamId"] = json!(stream_id);
        hook["connection"] = json!("INBOUND");
        hook["receivingFrom"] = json!(publisher);
        media_hook_fields(&mut hook, &media);
        self.release(old);
        self.webhook("webrtcConnectionCreated", &session, now, hook);
        Ok(())
    }

    /// Drops a subscription (`unsubscribeFromVideo`, called by the media code).
    pub fn remove_subscriber(
        &mut self,
        session_id: &str,
        cid: &str,
        stream_id: &str,
        now: Ms,
    ) -> Result<(), RpcError> {
        let session = self.sessions.get_mut(session_id).ok_or_else(no_session)?;
        let conn = session.connection_mut(cid).ok_or_else(no_connection)?;
        let Some(pos) = conn.subscriptions.iter().position(|s| s.stream_id == stream_id) else {
            return Err(RpcError::new(code::USER_NOT_FOUND, "Not subscribed"));
        };
        let sub = conn.subscriptions.remove(pos);
        let refs: Vec<TransportRef> = sub.transport.as_ref().map(|t| t.at).into_iter().collect();
        if let Some((p, st)) = session.stream(stream_id) {
            let (publisher, st) = (p.id.clone(), st.clone());
            let session = session.clone();
            let me = [(cid.to_string(), sub.created_at)];
            self.subscribers_destroyed_hooks(&session, &st, &publisher, &me, "unsubscribe", now);
        }
        self.release(refs);
        Ok(())
    }

    /// streamPropertyChanged from the stream's owner: update the media options and tell the
    /// others, with `newValue` re-encoded as JSON text (§4.5).
    pub fn stream_property_changed(
        &mut self,
        session_id: &str,
        cid: &str,
        stream_id: &str,
        property: &str,
        new_value: &Value,
        reason: &str,
    ) -> Result<(), RpcError> {
        let session = self.sessions.get_mut(session_id).ok_or_else(no_session)?;
        let conn = session.connection_mut(cid).ok_or_else(no_connection)?;
        let Some(stream) = conn.publisher.as_mut().filter(|s| s.id == stream_id) else {
            return Err(RpcError::new(
                code::USER_NOT_STREAMING,
                format!("Stream {stream_id} is not published by {cid}"),
            ));
        };
        match (property, new_value) {
            ("audioActive", Value::Bool(b)) => stream.media.audio_active = *b,
            ("videoActive", Value::Bool(b)) => stream.media.video_active = *b,
            ("videoDimensions", Value::String(s)) => {
                stream.media.video_dimensions = Some(s.clone())
            }
            _ => {}
        }
        let encoded = if property == "filter" {
            new_value.clone()
        } else {
            Value::String(new_value.to_string())
        };
        let others = session.active_rpcs_except(cid);
        self.notify(
            &others,
            "streamPropertyChanged",
            &json!({"connectionId": cid, "streamId": stream_id, "property": property,
                    "newValue": encoded, "reason": reason}),
        );
        Ok(())
    }

    /// Sends one notification to an active connection (media events: `iceCandidate`,
    /// `mediaError`). Unknown or inactive targets are ignored.
    pub fn notify_connection(
        &mut self,
        session_id: &str,
        cid: &str,
        method: &'static str,
        params: Value,
    ) {
        let rpc = self
            .sessions
            .get(session_id)
            .and_then(|s| s.connection(cid))
            .and_then(|c| c.rpc())
            .map(str::to_string);
        if let Some(rpc) = rpc {
            self.out.push_back(Output::Notify { to: vec![rpc], method, params });
        }
    }

    /// The stream id of a connection's publisher.
    pub fn stream_of(&self, session_id: &str, cid: &str) -> Option<String> {
        self.sessions.get(session_id)?.connection(cid)?.publisher.as_ref().map(|s| s.id.clone())
    }

    // ------------------------------------------------------------------ media transports

    /// Lets go of media transports: forgets who owns them and tells the media engine.
    fn release(&mut self, refs: Vec<TransportRef>) {
        if refs.is_empty() {
            return;
        }
        for r in &refs {
            self.transports.remove(&r.peer);
        }
        self.out.push_back(Output::Media(MediaCommand::Release(refs)));
    }

    /// Records the publisher transport of `stream_id` (after `publishVideo` or its
    /// renegotiation). False when the stream is gone (the caller releases the transport).
    pub fn set_stream_transport(
        &mut self,
        session_id: &str,
        stream_id: &str,
        t: PublishedMedia,
    ) -> bool {
        let Some(session) = self.sessions.get_mut(session_id) else { return false };
        let Some(conn) = session
            .connections
            .iter_mut()
            .find(|c| c.publisher.as_ref().is_some_and(|s| s.id == stream_id))
        else {
            return false;
        };
        let peer = t.at.peer;
        if let Some(s) = conn.publisher.as_mut() {
            s.transport = Some(t);
        }
        let cid = conn.id.clone();
        self.transports.insert(peer, (session_id.to_string(), cid));
        true
    }

    /// Records the transport of `cid`'s subscription to `stream_id`. False when there is no
    /// such subscription (the caller releases the transport).
    pub fn set_subscription_transport(
        &mut self,
        session_id: &str,
        cid: &str,
        stream_id: &str,
        t: ReceivedMedia,
    ) -> bool {
        let Some(conn) = self.sessions.get_mut(session_id).and_then(|s| s.connection_mut(cid))
        else {
            return false;
        };
        let Some(sub) = conn.subscriptions.iter_mut().find(|s| s.stream_id == stream_id) else {
            return false;
        };
        let peer = t.at.peer;
        let old = sub.transport.replace(t).map(|o| o.at).filter(|o| o.peer != peer);
        self.transports.insert(peer, (session_id.to_string(), cid.to_string()));
        self.release(old.into_iter().collect());
        true
    }

    /// Who owns media transport `peer`: (session, connection, stream, is it the publisher's).
    pub fn transport_owner(&self, peer: PeerId) -> Option<(String, String, String, bool)> {
        let (sid, cid) = self.transports.get(&peer)?;
        let conn = self.sessions.get(sid)?.connection(cid)?;
        let has = |t: Option<TransportRef>| t.is_some_and(|t| t.peer == peer);
        if let Some(s) = conn.publisher.as_ref().filter(|s| has(s.transport.as_ref().map(|t| t.at)))
        {
            return Some((sid.clone(), cid.clone(), s.id.clone(), true));
        }
        let sub = conn.subscriptions.iter().find(|s| has(s.transport.as_ref().map(|t| t.at)))?;
        Some((sid.clone(), cid.clone(), sub.stream_id.clone(), false))
    }

    /// A subscriber leg's transport is gone on its shard (failed, closed, refused): the
    /// subscription stays (the browser reconnects it) without a transport. The shard the leg
    /// was on, when `peer` was such a leg.
    pub fn subscription_transport_gone(&mut self, peer: PeerId) -> Option<usize> {
        let (sid, cid) = self.transports.get(&peer).cloned()?;
        let conn = self.sessions.get_mut(&sid)?.connection_mut(&cid)?;
        let sub = conn
            .subscriptions
            .iter_mut()
            .find(|s| s.transport.as_ref().is_some_and(|t| t.at.peer == peer))?;
        let shard = sub.transport.take().map(|t| t.at.shard);
        self.transports.remove(&peer);
        shard
    }

    /// The media shard of a session's publishers, chosen with `choose` the first time.
    pub fn media_home(
        &mut self,
        session_id: &str,
        choose: impl FnOnce() -> usize,
    ) -> Option<usize> {
        let s = self.sessions.get_mut(session_id)?;
        Some(*s.media_home.get_or_insert_with(choose))
    }

    /// Subscriber legs with a transport on this node, every session.
    pub fn local_legs(&self) -> usize {
        self.sessions
            .values()
            .flat_map(|s| &s.connections)
            .flat_map(|c| &c.subscriptions)
            .filter(|sub| sub.transport.as_ref().is_some_and(|t| t.at.shard != REMOTE_SHARD))
            .count()
    }

    /// Subscriber legs of a session with a transport on `shard`.
    pub fn legs_on(&self, session_id: &str, shard: usize) -> usize {
        self.sessions.get(session_id).map_or(0, |s| {
            s.connections
                .iter()
                .flat_map(|c| &c.subscriptions)
                .filter(|sub| sub.transport.as_ref().is_some_and(|t| t.at.shard == shard))
                .count()
        })
    }

    /// Stores a server offer made to `cid` (replacing an earlier one for the same stream).
    pub fn put_offer(&mut self, session_id: &str, cid: &str, offer: PendingOffer) -> bool {
        let Some(conn) = self.sessions.get_mut(session_id).and_then(|s| s.connection_mut(cid))
        else {
            return false;
        };
        conn.offers.retain(|o| o.stream_id != offer.stream_id);
        conn.offers.push(offer);
        true
    }

    /// Takes the server offer made to `cid` for `stream_id`.
    pub fn take_offer(
        &mut self,
        session_id: &str,
        cid: &str,
        stream_id: &str,
    ) -> Option<PendingOffer> {
        let conn = self.sessions.get_mut(session_id)?.connection_mut(cid)?;
        let i = conn.offers.iter().position(|o| o.stream_id == stream_id)?;
        Some(conn.offers.remove(i))
    }

    /// The stream's publisher transport and owner (for a subscription to it).
    pub fn published(&self, session_id: &str, stream_id: &str) -> Option<(String, PublishedMedia)> {
        let (c, s) = self.sessions.get(session_id)?.stream(stream_id)?;
        Some((c.id.clone(), s.transport.clone()?))
    }

    /// `cid`'s subscription to `stream_id`, if it has a transport.
    pub fn received(&self, session_id: &str, cid: &str, stream_id: &str) -> Option<ReceivedMedia> {
        let conn = self.sessions.get(session_id)?.connection(cid)?;
        conn.subscriptions.iter().find(|s| s.stream_id == stream_id)?.transport.clone()
    }
}

/// OpenVidu dev feature (spec §1): server data that is a JSON object with a string
/// `openviduCustomConnectionId` yields the connection id `con_<value without non-word chars>`.
fn custom_connection_id(data: &str) -> Option<String> {
    if !data.trim_start().starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(data).ok()?;
    let raw = v.get("openviduCustomConnectionId")?.as_str()?;
    let clean: String =
        raw.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(128).collect();
    (!clean.is_empty()).then(|| format!("con_{clean}"))
}

/// Removes every subscription to `stream_id`; returns (subscriber, subscribed at).
/// Removes every subscription to `stream_id`: (subscriber, since) of each, and their media
/// transports.
fn take_subscribers(
    conns: &mut [Connection],
    stream_id: &str,
) -> (Vec<(String, Ms)>, Vec<TransportRef>) {
    let (mut out, mut refs) = (Vec::new(), Vec::new());
    for c in conns {
        if let Some(pos) = c.subscriptions.iter().position(|s| s.stream_id == stream_id) {
            let sub = c.subscriptions.remove(pos);
            refs.extend(sub.transport.as_ref().map(|t| t.at));
            out.push((c.id.clone(), sub.created_at));
        }
    }
    (out, refs)
}

/// Every media transport a connection holds: its stream's and its subscriptions'.
fn transports_of(c: &Connection) -> impl Iterator<Item = TransportRef> + '_ {
    let published = c.publisher.as_ref().and_then(|s| s.transport.as_ref()).map(|t| t.at);
    let received = c.subscriptions.iter().filter_map(|s| s.transport.as_ref().map(|t| t.at));
    published.into_iter().chain(received)
}

/// The stream descriptor of `participantPublished` / joinRoom `value[].streams[]`.
pub fn stream_descriptor(s: &Stream) -> Value {
    let m = &s.media;
    json!({
        "id": s.id,
        "createdAt": s.created_at,
        "hasAudio": m.has_audio,
        "hasVideo": m.has_video,
        "audioActive": m.audio_active,
        "videoActive": m.video_active,
        "typeOfVideo": m.type_of_video,
        "frameRate": m.frame_rate,
        "videoDimensions": m.video_dimensions,
        "filter": m.filter,
    })
}

fn participant_hook_short(c: &Connection) -> Value {
    json!({"participantId": c.id, "connectionId": c.id})
}

fn participant_hook(c: &Connection) -> Value {
    let a = c.active.as_ref();
    json!({
        "participantId": c.id,
        "connectionId": c.id,
        "location": a.map(|a| a.location.as_str()).unwrap_or("unknown"),
        "ip": a.map(|a| a.ip.as_str()).unwrap_or(""),
        "platform": a.map(|a| a.platform.as_str()).unwrap_or(""),
        "clientData": a.map(|a| a.client_data.as_str()).unwrap_or(""),
        "serverData": c.props.data,
    })
}

fn media_hook_fields(hook: &mut Value, m: &MediaOptions) {
    hook["audioEnabled"] = json!(m.has_audio);
    hook["videoEnabled"] = json!(m.has_video);
    if m.has_video {
        hook["videoSource"] = json!(m.type_of_video);
        hook["videoFramerate"] = json!(m.frame_rate);
        hook["videoDimensions"] = json!(m.video_dimensions);
    }
}

/// The JSON-RPC error for a session id that is not (or no longer) known.
fn no_session() -> RpcError {
    RpcError::new(code::ROOM_NOT_FOUND, "Session not found")
}

/// The JSON-RPC error for a connection that is not an (active) participant of the session.
fn no_connection() -> RpcError {
    RpcError::new(code::USER_NOT_FOUND, "Connection not found")
}

/// TURN REST API credentials (coturn `use-auth-secret`): username `<expiry>:<name>`,
/// credential base64(HMAC-SHA1(secret, username)).
/// The TURN server (`crate::turn`) checks them with the same function.
pub fn turn_rest_credentials(secret: &str, expiry_unix_secs: u64, name: &str) -> (String, String) {
    let user = format!("{expiry_unix_secs}:{name}");
    let cred = crate::turn::auth::rest_password(secret.as_bytes(), &user);
    (user, cred)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Registry {
        Registry::new(
            RegistryConfig {
                ws_url: "ws://localhost:4443".into(),
                forced_video_codec: "MEDIA_SERVER_PREFERRED".into(),
                allow_transcoding: false,
                ice_servers: vec![],
                max_sessions: 10,
                max_connections_per_session: 10,
                turn: None,
                simulcast: false,
            },
            7,
        )
    }

    fn props(custom: &str) -> SessionProps {
        SessionProps {
            media_mode: "ROUTED".into(),
            recording_mode: "MANUAL".into(),
            custom_session_id: custom.into(),
            default_recording_properties: json!({}),
            forced_video_codec: None,
            allow_transcoding: None,
            media_node: None,
        }
    }

    fn cprops(role: Role) -> ConnectionProps {
        ConnectionProps {
            kind: ConnectionType::WebRtc,
            data: "srv".into(),
            record: true,
            role,
            kurento_options: None,
            custom_ice_servers: vec![],
            rtsp_uri: None,
            adaptative_bitrate: None,
            only_play_with_subscribers: None,
            network_cache: None,
        }
    }

    fn join(r: &mut Registry, sid: &str, cid: &str, rpc: &str) -> Joined {
        let tok = r.session(sid).unwrap().connection(cid).unwrap().token_url.clone();
        r.join(
            &JoinRequest {
                token: &tok,
                session: sid,
                rpc,
                ip: "1.2.3.4",
                platform: "p",
                client_data: "cli",
                media_turn_port: None,
            },
            1000,
        )
        .unwrap()
    }

    #[test]
    fn ids_have_the_openvidu_shape() {
        let mut r = reg();
        let sid = r.create_session(props(""), 1).unwrap();
        assert!(sid.starts_with("ses_") && sid.len() == 14);
        let cid = r.create_connection(&sid, cprops(Role::Publisher), 2).unwrap();
        assert!(cid.starts_with("con_") && cid.len() == 14);
        let c = r.session(&sid).unwrap().connection(&cid).unwrap();
        assert_eq!(c.token_value.len(), 20);
        assert!(c.token_url.ends_with(&c.token_value));
        assert_eq!(r.new_rpc_session_id().len(), 26);
    }

    #[test]
    fn join_evict_and_close_fan_out() {
        let mut r = reg();
        let sid = r.create_session(props("room"), 1).unwrap();
        assert_eq!(r.create_session(props("room"), 1), Err(RegError::SessionExists));
        let a = r.create_connection(&sid, cprops(Role::Publisher), 2).unwrap();
        let b = r.create_connection(&sid, cprops(Role::Moderator), 2).unwrap();
        join(&mut r, &sid, &a, "ra");
        while r.poll_output().is_some() {}
        let jb = join(&mut r, &sid, &b, "rb");
        assert_eq!(jb.result["value"][0]["id"], json!(a));
        assert_eq!(jb.result["metadata"], "cli%/%srv");
        let outs: Vec<Output> = std::iter::from_fn(|| r.poll_output()).collect();
        assert!(
            matches!(&outs[0], Output::Notify { to, method: "participantJoined", .. } if to == &["ra"])
        );
        r.evict(&sid, &a, "forceDisconnectByUser", 2000);
        let outs: Vec<Output> = std::iter::from_fn(|| r.poll_output()).collect();
        let methods: Vec<(&str, &str)> = outs
            .iter()
            .flat_map(|o| match o {
                Output::Notify { to, method, .. } => {
                    to.iter().map(|r| (r.as_str(), *method)).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(
            methods,
            vec![
                ("rb", "participantLeft"),
                ("ra", "participantEvicted"),
                ("rb", "participantEvicted")
            ]
        );
        assert!(r.leave(&sid, &b, "disconnect", 3000));
        assert!(r.session(&sid).is_none(), "last participant closes the session");
    }

    /// A camera stream's media options (audio and video on, 30 fps).
    fn camera() -> MediaOptions {
        MediaOptions {
            has_audio: true,
            has_video: true,
            audio_active: true,
            video_active: true,
            type_of_video: Some("CAMERA".into()),
            frame_rate: Some(json!(30)),
            video_dimensions: None,
            filter: json!({}),
        }
    }

    #[test]
    fn streams_and_subscriptions_emit_webrtc_hooks() {
        let mut r = reg();
        let sid = r.create_session(props(""), 1).unwrap();
        let a = r.create_connection(&sid, cprops(Role::Publisher), 2).unwrap();
        let b = r.create_connection(&sid, cprops(Role::Subscriber), 2).unwrap();
        join(&mut r, &sid, &a, "ra");
        join(&mut r, &sid, &b, "rb");
        let media = camera();
        assert_eq!(r.add_stream(&sid, &b, media.clone(), 3).unwrap_err().code, 401);
        let st = r.add_stream(&sid, &a, media.clone(), 3).unwrap();
        assert_eq!(r.add_stream(&sid, &a, media, 3).unwrap_err().code, 106);
        r.add_subscriber(&sid, &b, &st, 4).unwrap();
        while r.poll_output().is_some() {}
        r.evict(&sid, &a, "forceDisconnectByServer", 5000);
        let hooks: Vec<Value> = std::iter::from_fn(|| r.poll_output())
            .filter_map(|o| match o {
                Output::Webhook(v) if v["event"] == "webrtcConnectionDestroyed" => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(hooks.len(), 2, "{hooks:?}");
        assert_eq!(hooks[0]["connection"], "INBOUND");
        assert_eq!(hooks[0]["receivingFrom"], json!(a));
        assert_eq!(hooks[1]["connection"], "OUTBOUND");
        assert!(r.session(&sid).unwrap().connection(&b).unwrap().subscriptions.is_empty());
    }

    /// The registry is the one record of which media transport is whose: every way a stream,
    /// subscription, connection or session ends releases exactly its transports, once.
    #[test]
    fn every_teardown_releases_its_transports() {
        fn released(r: &mut Registry) -> Vec<TransportRef> {
            let mut out = Vec::new();
            while let Some(o) = r.poll_output() {
                if let Output::Media(MediaCommand::Release(refs)) = o {
                    out.extend(refs);
                }
            }
            out.sort_by_key(|t| t.peer);
            out
        }
        let at = |peer: u64, shard: usize| TransportRef { peer: PeerId(peer), shard };
        let fp = Fingerprint::sha256(&[1u8; 32]).expect("fingerprint");
        let published = |t: TransportRef| PublishedMedia {
            at: t,
            negotiated: Vec::new(),
            policy: VideoCodecPolicy::MediaServerPreferred,
            connection_of: (fp, 1),
        };
        let received = |t: TransportRef| ReceivedMedia { at: t, answered: None };
        let media = camera();
        let mut r = reg();
        let sid = r.create_session(props(""), 1).unwrap();
        assert_eq!(r.media_home(&sid, || 1), Some(1));
        assert_eq!(r.media_home(&sid, || 0), Some(1), "chosen once");
        let (a, b, c) = (
            r.create_connection(&sid, cprops(Role::Publisher), 2).unwrap(),
            r.create_connection(&sid, cprops(Role::Publisher), 2).unwrap(),
            r.create_connection(&sid, cprops(Role::Subscriber), 2).unwrap(),
        );
        for (cid, rpc) in [(&a, "ra"), (&b, "rb"), (&c, "rc")] {
            join(&mut r, &sid, cid, rpc);
        }
        let sa = r.add_stream(&sid, &a, media.clone(), 3).unwrap();
        let sb = r.add_stream(&sid, &b, media, 3).unwrap();
        assert!(r.set_stream_transport(&sid, &sa, published(at(1, 1))));
        assert!(r.set_stream_transport(&sid, &sb, published(at(2, 1))));
        assert!(!r.set_stream_transport(&sid, "str_nope", published(at(9, 0))));
        // c and b receive a; c receives b.
        for (cid, stream, t) in [(&c, &sa, at(3, 0)), (&b, &sa, at(4, 1)), (&c, &sb, at(5, 0))] {
            r.add_subscriber(&sid, cid, stream, 4).unwrap();
            assert!(r.set_subscription_transport(&sid, cid, stream, received(t)));
        }
        assert_eq!(released(&mut r), vec![]);
        assert_eq!(r.legs_on(&sid, 0), 2);
        assert_eq!(r.transport_owner(PeerId(1)), Some((sid.clone(), a.clone(), sa.clone(), true)));
        assert_eq!(r.transport_owner(PeerId(5)), Some((sid.clone(), c.clone(), sb.clone(), false)));

        // A new subscription of c to a replaces the old leg: the old transport goes.
        r.add_subscriber(&sid, &c, &sa, 5).unwrap();
        assert!(r.set_subscription_transport(&sid, &c, &sa, received(at(6, 1))));
        assert_eq!(released(&mut r), vec![at(3, 0)]);
        assert_eq!(r.transport_owner(PeerId(3)), None);

        // A leg whose transport ended on its shard keeps its subscription, without transport.
        assert_eq!(r.subscription_transport_gone(PeerId(6)), Some(1));
        assert_eq!(r.subscription_transport_gone(PeerId(6)), None);
        assert!(r.received(&sid, &c, &sa).is_none());

        // Unsubscribing releases the leg; unpublishing a releases a and b's leg of it.
        r.remove_subscriber(&sid, &c, &sb, 6).unwrap();
        assert_eq!(released(&mut r), vec![at(5, 0)]);
        r.remove_stream(&sid, &sa, "unpublish", false, 7).unwrap();
        assert_eq!(released(&mut r), vec![at(1, 1), at(4, 1)]);

        // b leaves with its stream; a server offer to c for it goes too.
        let offer = crate::sdp::offer_subscribe(
            &crate::sdp::LocalTransport {
                ice_ufrag: "u".into(),
                ice_pwd: "p".repeat(22),
                fingerprint_sha256: "AB".into(),
                candidates: Vec::new(),
                session_id: 1,
                session_version: 1,
            },
            &[],
        );
        let pending = PendingOffer {
            stream_id: sb.clone(),
            offer,
            ice_ufrag: "u".into(),
            ice_pwd: "p".into(),
            sources: Vec::new(),
            shard: 0,
        };
        assert!(r.put_offer(&sid, &c, pending));
        r.add_subscriber(&sid, &c, &sb, 8).unwrap();
        assert!(r.set_subscription_transport(&sid, &c, &sb, received(at(7, 0))));
        r.leave(&sid, &b, "disconnect", 9);
        assert_eq!(released(&mut r), vec![at(2, 1), at(7, 0)]);
        assert!(r.take_offer(&sid, &c, &sb).is_none());
        assert_eq!(r.transport_owner(PeerId(2)), None);
    }

    #[test]
    fn custom_connection_ids() {
        let mut r = reg();
        let sid = r.create_session(props(""), 1).unwrap();
        let mut p = cprops(Role::Publisher);
        p.data = r#"{"openviduCustomConnectionId":"my-id.1"}"#.into();
        assert_eq!(r.create_connection(&sid, p.clone(), 2).unwrap(), "con_myid1");
        // A clash falls back to a generated id.
        assert_ne!(r.create_connection(&sid, p, 2).unwrap(), "con_myid1");
    }

    #[test]
    fn garbage_collects_unjoined_sessions() {
        let mut r = reg();
        let s = r.create_session(props(""), 0).unwrap();
        assert!(r.collect_garbage(500, 1000).is_empty());
        assert_eq!(r.collect_garbage(1000, 1000), vec![s]);
    }

    #[test]
    fn turn_credentials_follow_the_rest_scheme() {
        let (u, c) = turn_rest_credentials("secret", 100, "con_X");
        assert_eq!(u, "100:con_X");
        assert_eq!(c.len(), 28);
    }
    #[test]
    fn a_lost_camera_is_unpublished_and_published_again_when_it_answers() {
        use crate::dtls::FingerprintAlg;
        let mut r = reg();
        let sid = r.create_session(props("cams"), 1).unwrap();
        let viewer = r.create_connection(&sid, cprops(Role::Subscriber), 2).unwrap();
        join(&mut r, &sid, &viewer, "rv");
        let mut cam = cprops(Role::Publisher);
        cam.kind = ConnectionType::IpCam;
        cam.rtsp_uri = Some("rtsp://10.0.0.9/live".into());
        let cid = r.create_connection(&sid, cam, 3).unwrap();
        let stream_of = |r: &Registry| {
            r.session(&sid)
                .unwrap()
                .connection(&cid)
                .unwrap()
                .publisher
                .as_ref()
                .map(|s| s.id.clone())
        };
        let first = stream_of(&r).unwrap();
        r.add_subscriber(&sid, &viewer, &first, 4).unwrap();
        let v = r.ipcams();
        assert_eq!((v.len(), v[0].subscribers, v[0].only_play_with_subscribers), (1, 1, true));
        assert_eq!((v[0].network_cache, v[0].connection.as_str()), (2000, cid.as_str()));
        let media = |peer| PublishedMedia {
            at: TransportRef { peer: PeerId(peer), shard: 0 },
            negotiated: vec![],
            policy: VideoCodecPolicy::MediaServerPreferred,
            connection_of: (Fingerprint::of_der(FingerprintAlg::Sha256, &[]), 0),
        };
        while r.poll_output().is_some() {}
        let events = |r: &mut Registry| {
            let mut names = Vec::new();
            while let Some(o) = r.poll_output() {
                names.push(match o {
                    Output::Notify { method, params, .. } => {
                        format!("{method} {}", params["reason"])
                    }
                    Output::Webhook(v) => format!("hook {} {}", v["event"], v["reason"]),
                    Output::Media(MediaCommand::Release(t)) => format!("release {:?}", t[0].peer),
                    Output::Media(MediaCommand::ParticipantGone(c)) => format!("gone {c}"),
                    Output::Detach { .. } => "detach".into(),
                });
            }
            names
        };
        // The producer arrives for the stream published at activation.
        assert!(r.ipcam_ready(&sid, &cid, media(5), 5));
        assert_eq!(events(&mut r), ["hook \"webrtcConnectionCreated\" null"]);
        assert_eq!(r.transport_owner(PeerId(5)).map(|o| o.3), Some(true));
        assert_eq!(r.published(&sid, &first).map(|p| p.1.at.peer), Some(PeerId(5)));
        // Lost: unpublished with the reason, producer released, connection kept.
        assert!(r.ipcam_lost(&sid, &cid, "networkDisconnect", 6));
        let ev = events(&mut r);
        assert!(ev.contains(&"release PeerId(5)".to_string()), "{ev:?}");
        assert!(ev.contains(&"participantUnpublished \"networkDisconnect\"".to_string()), "{ev:?}");
        assert!(
            ev.contains(&"hook \"webrtcConnectionDestroyed\" \"networkDisconnect\"".to_string())
        );
        assert_eq!(stream_of(&r), None);
        assert!(r.session(&sid).unwrap().connection(&cid).unwrap().active.is_some());
        assert_eq!(r.ipcams()[0].subscribers, 0);
        assert!(!r.ipcam_lost(&sid, &cid, "networkDisconnect", 7), "nothing left to unpublish");
        // Back: a new stream, published to the others.
        assert!(r.ipcam_ready(&sid, &cid, media(6), 8));
        let second = stream_of(&r).unwrap();
        assert_ne!(second, first);
        let ev = events(&mut r);
        assert_eq!(ev, ["participantPublished null", "hook \"webrtcConnectionCreated\" null"]);
        assert_eq!(r.remove_stream(&sid, &second, "unpublish", true, 9), Err(RegError::NotAllowed));
        r.set_ipcam_status(&sid, &cid, json!({"state": "playing"}));
        let c = r.session(&sid).unwrap().connection(&cid).unwrap();
        assert_eq!(c.ipcam_status, Some(json!({"state": "playing"})));
    }
}
