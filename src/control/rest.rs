//! The OpenVidu 2 REST API (`/openvidu/api/**`, spec §2), plus the router assembly: CORS,
//! deprecated-path rewriting, Basic auth, body limits and the WebSocket route.
//!
//! Status mapping (spec §2): 400 bad body (JSON error body), 401 auth (`WWW-Authenticate`),
//! 404/409 mostly empty, 406 signal undeliverable (JSON error body), 413 body over
//! `server.max_body_bytes`, 501 recordings while recording is off (`recording::http` has the
//! recording routes), 503 when `sessions.max_sessions` /
//! `sessions.max_connections_per_session` is reached (JSON error body; OpenVidu has no such
//! limits, and node-client only looks at the status).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use base64::Engine;
use serde_json::{Map, Value, json};
use tower::ServiceExt;
use tower_http::cors::CorsLayer;

use super::registry::{
    Connection, ConnectionProps, ConnectionType, RegError, Role, Session, SessionProps,
};
use super::views::{connection_json, connections_json, session_json};
use super::{Inner, now_ms};

type St = State<Arc<Inner>>;
type Q = Query<HashMap<String, String>>;

type Handler = MethodRouter<Arc<Inner>>;

/// Every route the server answers, one `(path, method, handler)` per entry: the router is built
/// from this table and the OpenAPI document (`src/ops/openapi.json`) is checked against it.
fn table() -> Vec<(&'static str, Method, Handler)> {
    use super::recording::http as rec;
    use axum::routing::{delete, patch};
    let m = |p, method, h| (p, method, h);
    vec![
        m("/openvidu/api/sessions", Method::POST, post(create_session)),
        m("/openvidu/api/sessions", Method::GET, get(list_sessions)),
        m("/openvidu/api/sessions/{sessionId}", Method::GET, get(get_session)),
        m("/openvidu/api/sessions/{sessionId}", Method::DELETE, delete(delete_session)),
        m("/openvidu/api/sessions/{sessionId}/connection", Method::POST, post(create_connection)),
        m("/openvidu/api/sessions/{sessionId}/connection", Method::GET, get(list_connections)),
        m(
            "/openvidu/api/sessions/{sessionId}/connection/{connectionId}",
            Method::GET,
            get(get_connection),
        ),
        m(
            "/openvidu/api/sessions/{sessionId}/connection/{connectionId}",
            Method::PATCH,
            patch(patch_connection),
        ),
        m(
            "/openvidu/api/sessions/{sessionId}/connection/{connectionId}",
            Method::DELETE,
            delete(delete_connection),
        ),
        m(
            "/openvidu/api/sessions/{sessionId}/stream/{streamId}",
            Method::DELETE,
            delete(delete_stream),
        ),
        m("/openvidu/api/tokens", Method::POST, post(create_token)),
        m("/openvidu/api/signal", Method::POST, post(signal)),
        m("/openvidu/api/config", Method::GET, get(config)),
        m("/openvidu/api/config/{item}", Method::GET, get(config_item)),
        m("/openvidu/api/health", Method::GET, get(health)),
        m("/openvidu/api/openapi.json", Method::GET, get(openapi)),
        m("/openvidu/api/recordings", Method::GET, get(rec::list)),
        m("/openvidu/api/recordings/start", Method::POST, post(rec::start)),
        m("/openvidu/api/recordings/stop/{recordingId}", Method::POST, post(rec::stop)),
        m("/openvidu/api/recordings/{recordingId}", Method::GET, get(rec::get_one)),
        m("/openvidu/api/recordings/{recordingId}", Method::DELETE, delete(rec::delete)),
        m("/openvidu/recordings/{recordingId}/{file}", Method::GET, get(rec::file)),
        m("/openvidu", Method::GET, get(super::ws::upgrade)),
        m("/metrics", Method::GET, get(metrics)),
        m("/health", Method::GET, get(health)),
    ]
}

/// Every `(method, path)` the router serves (paths in axum syntax: `{param}`, `{*rest}`).
/// A `GET` route also answers `HEAD`; `OPTIONS` is answered for every path (CORS preflight).
pub fn routes() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|(p, m, _)| (m, p)).collect()
}

/// Builds the whole HTTP router.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    let max_body = inner.cfg.server.max_body_bytes;
    let entries = table();
    let mut api = Router::new();
    let mut done: Vec<&str> = Vec::new();
    for (path, _, _) in &entries {
        if done.contains(path) {
            continue;
        }
        done.push(path);
        // One method router per path, merged from that path's entries (no method repeats).
        let merged = entries
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, _, h)| h.clone())
            .reduce(|a, b| a.merge(b));
        if let Some(h) = merged {
            api = api.route(path, h);
        }
    }
    let api = api
        .fallback(not_found)
        .with_state(inner.clone())
        .layer(DefaultBodyLimit::max(max_body))
        // After authentication: a request for a session of another node goes there, once.
        .layer(middleware::from_fn_with_state(inner.clone(), super::cluster::forward::route))
        .layer(middleware::from_fn_with_state(inner.clone(), auth));
    let rewritten = api.map_request(rewrite_deprecated);
    Router::new()
        .fallback_service(rewritten)
        .layer(CorsLayer::very_permissive())
        .layer(middleware::from_fn_with_state(inner, count_http))
}

/// Counts every HTTP response by method and status (`ringsfu_http_requests_total`).
async fn count_http(State(inner): St, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let resp = next.run(req).await;
    inner.metrics.http(&method, resp.status().as_u16());
    resp
}

/// `SUPPORT_DEPRECATED_API`: pre-2.16 paths are rewritten to their current form.
fn rewrite_deprecated(mut req: Request) -> Request {
    let path = req.uri().path();
    let new_path = if let Some(rest) = path.strip_prefix("/api/") {
        Some(format!("/openvidu/api/{rest}"))
    } else if path == "/config" || path.starts_with("/config/") {
        Some(format!("/openvidu/api{path}"))
    } else if path == "/cdr" || path.starts_with("/cdr/") || path.starts_with("/recordings/") {
        Some(format!("/openvidu{path}"))
    } else if let Some(rest) = path.strip_prefix("/layouts/custom/") {
        Some(format!("/openvidu/layouts/{rest}"))
    } else if path == "/info" {
        Some("/openvidu/info".to_string())
    } else {
        None
    };
    if let Some(p) = new_path {
        let pq = match req.uri().query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        if let Ok(uri) = Uri::builder().path_and_query(pq).build() {
            *req.uri_mut() = uri;
        }
    }
    req
}

fn is_protected(
    method: &Method,
    path: &str,
    metrics_public: bool,
    recordings_public: bool,
) -> bool {
    if path == "/openvidu/api/config/openvidu-publicurl"
        && (method == Method::GET || method == Method::HEAD)
    {
        return false;
    }
    // /metrics: behind the same Basic auth as the REST API unless `server.metrics_public`; it
    // sits on the public port next to the API and reveals the server's load.
    if path == "/metrics" {
        return !metrics_public;
    }
    path.starts_with("/openvidu/api/")
        || path == "/openvidu/api"
        || path.starts_with("/openvidu/cdr")
        || path.starts_with("/openvidu/layouts")
        || (path.starts_with("/openvidu/recordings") && !recordings_public)
        || path.starts_with("/dashboard")
}

async fn auth(State(inner): St, req: Request, next: Next) -> Response {
    let metrics_public = inner.cfg.server.metrics_public;
    let recordings_public = inner.cfg.recording.public_access;
    if req.method() == Method::OPTIONS
        || !is_protected(req.method(), req.uri().path(), metrics_public, recordings_public)
    {
        return next.run(req).await;
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("OPENVIDUAPP:{}", inner.cfg.server.secret))
    );
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()))
        .unwrap_or(false);
    if ok {
        return next.run(req).await;
    }
    let mut r = error_json(StatusCode::UNAUTHORIZED, req.uri().path(), "Unauthorized");
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"OpenVidu Server\""),
    );
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ------------------------------------------------------------------ responses

fn reason_phrase(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// `{"timestamp","status","error","message","path"}`.
pub(crate) fn error_json(status: StatusCode, path: &str, message: &str) -> Response {
    let body = json!({
        "timestamp": now_ms(),
        "status": status.as_u16(),
        "error": reason_phrase(status),
        "message": message,
        "path": path,
    });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

pub(crate) fn ok_json(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn bad_request(uri: &Uri, msg: &str) -> Response {
    error_json(StatusCode::BAD_REQUEST, uri.path(), msg)
}

fn limit(uri: &Uri, what: &str) -> Response {
    error_json(StatusCode::SERVICE_UNAVAILABLE, uri.path(), &format!("Limit reached ({what})"))
}

async fn not_found() -> Response {
    empty(StatusCode::NOT_FOUND)
}

/// `/health` (load balancers, no auth) and `/openvidu/api/health` (OpenVidu Pro's, Basic auth):
/// 200 `UP` while serving, 503 `DRAINING` while draining before a stop.
async fn health(State(inner): St) -> Response {
    if inner.draining.load(std::sync::atomic::Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "DRAINING"}))).into_response()
    } else {
        ok_json(json!({"status": "UP"}))
    }
}

/// `/metrics`: Prometheus text exposition.
async fn metrics(State(inner): St) -> Response {
    let cp = super::ControlPlane { inner: inner.clone() };
    let mut text = inner.metrics.render(&cp.gauges(), &cp.webhook_counts());
    if let Some(c) = inner.cluster.get() {
        c.render_metrics(&mut text);
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
        .into_response()
}

/// The OpenAPI 3 document of this API.
async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        crate::ops::openapi::OPENAPI_JSON,
    )
        .into_response()
}

/// 503 for new sessions and connections while the server drains before a stop.
fn refuse_while_draining(inner: &Inner, uri: &Uri) -> Option<Response> {
    if !inner.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    let mut r = error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        uri.path(),
        "The server is shutting down (draining): no new sessions or connections",
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    Some(r)
}

fn flag(q: &HashMap<String, String>, key: &str, default: bool) -> bool {
    match q.get(key).map(|s| s.as_str()) {
        Some("true") => true,
        Some("false") => false,
        _ => default,
    }
}

// ------------------------------------------------------------------ body parsing

/// Parses a JSON body: empty or `null` = `{}`; anything else must be an object.
pub(crate) fn parse_body(bytes: &Bytes) -> Result<Map<String, Value>, String> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if crate::signaling::has_reserved_key(&v) => Err(format!(
            "The request body holds the reserved key {:?}",
            crate::signaling::RESERVED_KEY
        )),
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        Ok(_) => Err("The request body must be a JSON object".into()),
        Err(e) => Err(format!("Malformed JSON body: {e}")),
    }
}

/// Typed access to a body: `null` is absent, a wrong type is an error message.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Option<&'a Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn str(&self, k: &str) -> Result<Option<&'a str>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("Type error in parameter '{k}': expected a string")),
        }
    }

    fn bool(&self, k: &str) -> Result<Option<bool>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(format!("Type error in parameter '{k}': expected a boolean")),
        }
    }

    fn int(&self, k: &str) -> Result<Option<i64>, String> {
        match self.get(k) {
            None => Ok(None),
            Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64()),
            Some(Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                Ok(n.as_f64().map(|f| f as i64))
            }
            Some(_) => Err(format!("Type error in parameter '{k}': expected an integer")),
        }
    }

    fn enumeration(&self, k: &str, allowed: &[&str]) -> Result<Option<&'a str>, String> {
        match self.str(k)? {
            None => Ok(None),
            Some(s) if allowed.contains(&s) => Ok(Some(s)),
            Some(s) => Err(format!(
                "Parameter '{k}' has an invalid value '{s}'; allowed: {}",
                allowed.join(", ")
            )),
        }
    }
}

fn valid_custom_session_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Normalises `defaultRecordingProperties` to the §2.2 shape.
fn recording_properties(v: Option<&Value>) -> Result<Value, String> {
    let empty = Map::new();
    let m = match v {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err("Type error in parameter 'defaultRecordingProperties'".into());
        }
    };
    // OpenVidu builds the properties with RecordingProperties.fromJson: the same checks as a
    // start (name, resolution, frameRate, shmSize, ...), all answered 400 here.
    if let Err(e) = super::recording::props::parse(m, None) {
        return Err(format!(
            "Parameter 'defaultRecordingProperties' is not valid: {}",
            e.message()
        ));
    }
    let f = Fields(m);
    let name = f.str("name")?.unwrap_or("");
    let has_audio = f.bool("hasAudio")?.unwrap_or(true);
    let has_video = f.bool("hasVideo")?.unwrap_or(true);
    let output = f
        .enumeration("outputMode", &["COMPOSED", "INDIVIDUAL", "COMPOSED_QUICK_START"])?
        .unwrap_or("COMPOSED");
    let layout = f
        .enumeration(
            "recordingLayout",
            &[
                "BEST_FIT",
                "PICTURE_IN_PICTURE",
                "VERTICAL_PRESENTATION",
                "HORIZONTAL_PRESENTATION",
                "CUSTOM",
            ],
        )?
        .unwrap_or("BEST_FIT");
    let resolution = f.str("resolution")?.unwrap_or("1280x720");
    let frame_rate = f.int("frameRate")?.unwrap_or(25);
    let shm = f.int("shmSize")?.unwrap_or(536_870_912);
    let custom_layout = f.str("customLayout")?.unwrap_or("");
    let ignore_failed = f.bool("ignoreFailedStreams")?.unwrap_or(false);
    let media_node = match f.get("mediaNode") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Object(o)) => match o.get("id") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => return Err("Type error in parameter 'mediaNode'".into()),
        },
        Some(_) => return Err("Type error in parameter 'mediaNode'".into()),
    };
    if !has_audio && !has_video {
        return Err(
            "Cannot start a recording with both \"hasAudio\" and \"hasVideo\" set to false".into(),
        );
    }
    let mut out =
        json!({"name": name, "hasAudio": has_audio, "hasVideo": has_video, "outputMode": output});
    if output != "INDIVIDUAL" && has_video {
        out["recordingLayout"] = json!(layout);
        out["resolution"] = json!(resolution);
        out["frameRate"] = json!(frame_rate);
        out["shmSize"] = json!(shm);
        if layout == "CUSTOM" {
            out["customLayout"] = json!(custom_layout);
        }
    }
    if output == "INDIVIDUAL" {
        out["ignoreFailedStreams"] = json!(ignore_failed);
    }
    if let Some(n) = media_node {
        out["mediaNode"] = json!(n);
    }
    Ok(out)
}

pub(crate) fn session_props(m: &Map<String, Value>) -> Result<SessionProps, String> {
    let f = Fields(m);
    let media_mode = f.enumeration("mediaMode", &["ROUTED", "RELAYED"])?.unwrap_or("ROUTED");
    let recording_mode = f.enumeration("recordingMode", &["MANUAL", "ALWAYS"])?.unwrap_or("MANUAL");
    let custom = f.str("customSessionId")?.unwrap_or("");
    if !custom.is_empty() && !valid_custom_session_id(custom) {
        return Err(format!(
            "Parameter 'customSessionId' is wrong. Must be an alphanumeric string [a-zA-Z0-9_-]: {custom}"
        ));
    }
    let drp = recording_properties(f.get("defaultRecordingProperties"))?;
    // AV1 is a ringsfu extension (OpenVidu 2.32 knows the other five); the config accepts it too.
    let codec = f.enumeration(
        "forcedVideoCodec",
        &["MEDIA_SERVER_PREFERRED", "VP8", "VP9", "H264", "AV1", "NONE"],
    )?;
    let transcoding = f.bool("allowTranscoding")?;
    let media_node = match f.get("mediaNode") {
        None => None,
        Some(Value::String(s)) => Some(json!({ "id": s })),
        Some(Value::Object(o)) => match o.get("id") {
            Some(Value::String(s)) => Some(json!({ "id": s })),
            _ => return Err("Type error in parameter 'mediaNode'".into()),
        },
        Some(_) => return Err("Type error in parameter 'mediaNode'".into()),
    };
    Ok(SessionProps {
        media_mode: media_mode.into(),
        recording_mode: recording_mode.into(),
        custom_session_id: custom.into(),
        default_recording_properties: drp,
        forced_video_codec: codec.map(str::to_string),
        allow_transcoding: transcoding,
        media_node,
    })
}

fn kurento_options(v: Option<&Value>) -> Result<Option<Value>, String> {
    let Some(v) = v else { return Ok(None) };
    let Value::Object(m) = v else {
        return Err("Type error in parameter 'kurentoOptions'".into());
    };
    let f = Fields(m);
    let mut out = Map::new();
    for k in [
        "videoMaxRecvBandwidth",
        "videoMinRecvBandwidth",
        "videoMaxSendBandwidth",
        "videoMinSendBandwidth",
    ] {
        if let Some(n) = f.int(k)? {
            out.insert(k.into(), json!(n));
        }
    }
    match f.get("allowedFilters") {
        None => {}
        Some(Value::Array(a)) => {
            let mut list = Vec::new();
            for x in a {
                match x {
                    Value::String(s) => list.push(json!(s)),
                    _ => {
                        return Err(
                            "Type error in parameter 'kurentoOptions.allowedFilters'".into()
                        );
                    }
                }
            }
            out.insert("allowedFilters".into(), Value::Array(list));
        }
        Some(_) => return Err("Type error in parameter 'kurentoOptions.allowedFilters'".into()),
    }
    Ok(Some(Value::Object(out)))
}

fn ice_servers(v: Option<&Value>, now: u64, ttl: u64) -> Result<Vec<Value>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let Value::Array(a) = v else {
        return Err("Type error in parameter 'customIceServers': expected an array".into());
    };
    let mut out = Vec::new();
    for item in a {
        let Value::Object(m) = item else {
            return Err("Type error in parameter 'customIceServers': expected objects".into());
        };
        let f = Fields(m);
        let url = f.str("url")?.ok_or("customIceServers: 'url' is required")?;
        let user = f.str("username")?.filter(|s| !s.is_empty());
        let cred = f.str("credential")?.filter(|s| !s.is_empty());
        let secret = f.str("staticAuthSecret")?.filter(|s| !s.is_empty());
        let scheme = url.split(':').next().unwrap_or("");
        let base = url.split('?').next().unwrap_or(url);
        if base.len() <= scheme.len() + 1 {
            return Err(format!("customIceServers: invalid url '{url}'"));
        }
        if let Some((_, q)) = url.split_once('?')
            && q != "transport=udp"
            && q != "transport=tcp"
        {
            return Err(format!("customIceServers: invalid url '{url}'"));
        }
        let mut o = json!({ "url": url });
        match scheme {
            "stun" | "stuns" => {
                if user.is_some() || cred.is_some() || secret.is_some() {
                    return Err(format!(
                        "customIceServers: credentials are not allowed for STUN url '{url}'"
                    ));
                }
            }
            "turn" | "turns" => {
                if let Some(sec) = secret {
                    let (u, c) =
                        super::registry::turn_rest_credentials(sec, now / 1000 + ttl, "ringsfu");
                    o["username"] = json!(u);
                    o["credential"] = json!(c);
                } else {
                    match (user, cred) {
                        (Some(u), Some(c)) => {
                            o["username"] = json!(u);
                            o["credential"] = json!(c);
                        }
                        _ => {
                            return Err(format!(
                                "customIceServers: TURN url '{url}' requires username and credential"
                            ));
                        }
                    }
                }
            }
            _ => {
                return Err(format!(
                    "customIceServers: url '{url}' must start with stun:, stuns:, turn: or turns:"
                ));
            }
        }
        out.push(o);
    }
    Ok(out)
}

pub(crate) fn connection_props(
    m: &Map<String, Value>,
    now: u64,
    ttl: u64,
) -> Result<ConnectionProps, String> {
    let f = Fields(m);
    let kind = match f.enumeration("type", &["WEBRTC", "IPCAM"])? {
        Some("IPCAM") => ConnectionType::IpCam,
        _ => ConnectionType::WebRtc,
    };
    let data = f.str("data")?.unwrap_or("").to_string();
    let record = f.bool("record")?.unwrap_or(true);
    let role = f
        .enumeration("role", &["SUBSCRIBER", "PUBLISHER", "MODERATOR"])?
        .and_then(Role::parse)
        .unwrap_or(Role::Publisher);
    let kurento = kurento_options(f.get("kurentoOptions"))?;
    let ice = ice_servers(f.get("customIceServers"), now, ttl)?;
    let rtsp = f.str("rtspUri")?.map(str::to_string);
    let adaptative = f.bool("adaptativeBitrate")?;
    let only_play = f.bool("onlyPlayWithSubscribers")?;
    let cache = f.int("networkCache")?;
    if kind == ConnectionType::IpCam {
        let Some(uri) = &rtsp else {
            return Err("Parameter 'rtspUri' is required for IPCAM connections".into());
        };
        let scheme = uri.split("://").next().unwrap_or("");
        if !uri.contains("://") || !["rtsp", "rtsps", "http", "https", "file"].contains(&scheme) {
            return Err(format!(
                "Error in parameter 'rtspUri'. Unsupported protocol in URI: {uri}"
            ));
        }
    }
    let ipcam = kind == ConnectionType::IpCam;
    Ok(ConnectionProps {
        kind,
        data,
        record,
        role,
        kurento_options: if ipcam { None } else { kurento },
        custom_ice_servers: if ipcam { Vec::new() } else { ice },
        rtsp_uri: if ipcam { rtsp } else { None },
        adaptative_bitrate: ipcam.then(|| adaptative.unwrap_or(true)),
        only_play_with_subscribers: ipcam.then(|| only_play.unwrap_or(true)),
        network_cache: ipcam.then(|| cache.unwrap_or(2000)),
    })
}

// ------------------------------------------------------------------ sessions

async fn create_session(State(inner): St, uri: Uri, body: Bytes) -> Response {
    if let Some(r) = refuse_while_draining(&inner, &uri) {
        return r;
    }
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(e) => return bad_request(&uri, &e),
    };
    let props = match session_props(&m) {
        Ok(p) => p,
        Err(e) => return bad_request(&uri, &e),
    };
    inner.with(|st| match st.reg.create_session(props, now_ms()) {
        Ok(id) => {
            // Invariant: just created under the same lock.
            let s = st.reg.session(&id).expect("session just created");
            ok_json(session_json(s, st.reg.config(), false, false))
        }
        Err(RegError::SessionExists) => empty(StatusCode::CONFLICT),
        Err(RegError::Limit(what)) => limit(&uri, what),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, uri.path(), &format!("{e:?}")),
    })
}

async fn list_sessions(State(inner): St, Query(q): Q) -> Response {
    let pending = flag(&q, "pendingConnections", false);
    let stats = flag(&q, "webRtcStats", false);
    inner.with(|st| {
        let content: Vec<Value> = st
            .reg
            .sessions()
            .into_iter()
            .map(|s| session_json(s, st.reg.config(), pending, stats))
            .collect();
        ok_json(json!({"numberOfElements": content.len(), "content": content}))
    })
}

async fn get_session(State(inner): St, Path(sid): Path<String>, Query(q): Q) -> Response {
    let pending = flag(&q, "pendingConnections", false);
    let stats = flag(&q, "webRtcStats", false);
    inner.with(|st| match st.reg.session(&sid) {
        Some(s) => ok_json(session_json(s, st.reg.config(), pending, stats)),
        None => empty(StatusCode::NOT_FOUND),
    })
}

async fn delete_session(State(inner): St, Path(sid): Path<String>) -> Response {
    inner.with(|st| {
        if st.reg.close_session(&sid, "sessionClosedByServer", now_ms()) {
            empty(StatusCode::NO_CONTENT)
        } else {
            empty(StatusCode::NOT_FOUND)
        }
    })
}

// ------------------------------------------------------------------ connections

async fn create_connection(
    State(inner): St,
    Path(sid): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(e) => return bad_request(&uri, &e),
    };
    new_connection(
        &inner,
        &sid,
        &m,
        &uri,
        |s, c| ok_json(connection_json(s, c, false)),
        || empty(StatusCode::NOT_FOUND),
    )
}

/// Validates a connection body, creates the connection and answers `render` of it; `not_found`
/// answers an unknown session (the connection route and the legacy tokens route differ there).
fn new_connection(
    inner: &Inner,
    sid: &str,
    body: &Map<String, Value>,
    uri: &Uri,
    render: impl FnOnce(&Session, &Connection) -> Response,
    not_found: impl FnOnce() -> Response,
) -> Response {
    if let Some(r) = refuse_while_draining(inner, uri) {
        return r;
    }
    let now = now_ms();
    let props = match connection_props(body, now, inner.cfg.turn.credential_ttl) {
        Ok(p) => p,
        Err(e) => return bad_request(uri, &e),
    };
    inner.with(|st| match st.reg.create_connection(sid, props, now) {
        Ok(cid) => {
            // Invariant: created under the same lock.
            let s = st.reg.session(sid).expect("session exists");
            let c = s.connection(&cid).expect("connection just created");
            render(s, c)
        }
        Err(RegError::SessionNotFound) => not_found(),
        Err(RegError::Limit(what)) => limit(uri, what),
        Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, uri.path(), &format!("{e:?}")),
    })
}

async fn list_connections(State(inner): St, Path(sid): Path<String>, Query(q): Q) -> Response {
    let pending = flag(&q, "pendingConnections", true);
    let stats = flag(&q, "webRtcStats", false);
    inner.with(|st| match st.reg.session(&sid) {
        Some(s) => ok_json(connections_json(s, pending, stats)),
        None => empty(StatusCode::NOT_FOUND),
    })
}

async fn get_connection(
    State(inner): St,
    Path((sid, cid)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let stats = flag(&q, "webRtcStats", false);
    inner.with(|st| match st.reg.session(&sid) {
        None => empty(StatusCode::BAD_REQUEST),
        Some(s) => match s.connection(&cid) {
            Some(c) => ok_json(connection_json(s, c, stats)),
            None => empty(StatusCode::NOT_FOUND),
        },
    })
}

async fn patch_connection(
    State(inner): St,
    Path((sid, cid)): Path<(String, String)>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(e) => return bad_request(&uri, &e),
    };
    let f = Fields(&m);
    let role = match f.enumeration("role", &["SUBSCRIBER", "PUBLISHER", "MODERATOR"]) {
        Ok(r) => r.and_then(Role::parse),
        Err(e) => return bad_request(&uri, &e),
    };
    let record = match f.bool("record") {
        Ok(r) => r,
        Err(e) => return bad_request(&uri, &e),
    };
    inner.with(|st| match st.reg.update_connection(&sid, &cid, role, record) {
        Ok(()) => {
            // Invariant: the update just found both.
            let s = st.reg.session(&sid).expect("session exists");
            let c = s.connection(&cid).expect("connection exists");
            ok_json(connection_json(s, c, false))
        }
        Err(RegError::NotAllowed) => bad_request(&uri, "IPCAM connections cannot be updated"),
        Err(_) => empty(StatusCode::NOT_FOUND),
    })
}

async fn delete_connection(State(inner): St, Path((sid, cid)): Path<(String, String)>) -> Response {
    inner.with(|st| {
        match st.reg.remove_connection(&sid, &cid, "forceDisconnectByServer", now_ms()) {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(RegError::SessionNotFound) => empty(StatusCode::BAD_REQUEST),
            Err(_) => empty(StatusCode::NOT_FOUND),
        }
    })
}

async fn delete_stream(State(inner): St, Path((sid, stream)): Path<(String, String)>) -> Response {
    inner.with(|st| {
        match st.reg.remove_stream(&sid, &stream, "forceUnpublishByServer", true, now_ms()) {
            Ok(()) => empty(StatusCode::NO_CONTENT),
            Err(RegError::SessionNotFound) => empty(StatusCode::BAD_REQUEST),
            Err(RegError::NotAllowed) => empty(StatusCode::METHOD_NOT_ALLOWED),
            Err(_) => empty(StatusCode::NOT_FOUND),
        }
    })
}

// ------------------------------------------------------------------ tokens, signals

async fn create_token(State(inner): St, uri: Uri, body: Bytes) -> Response {
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(e) => return bad_request(&uri, &e),
    };
    let f = Fields(&m);
    let sid = match f.str("session") {
        Ok(Some(s)) => s.to_string(),
        Ok(None) => return bad_request(&uri, "\"session\" parameter is mandatory"),
        Err(e) => return bad_request(&uri, &e),
    };
    // `record` is ignored by this legacy route; the rest is a connection body.
    let mut cm = Map::new();
    for k in ["role", "data", "kurentoOptions"] {
        if let Some(v) = m.get(k) {
            cm.insert(k.into(), v.clone());
        }
    }
    let render = |_: &Session, c: &Connection| {
        let mut v = json!({
            "id": c.token_url,
            "token": c.token_url,
            "createdAt": c.created_at,
            "connectionId": c.id,
            "session": sid,
            "data": c.props.data,
            "role": c.props.role.as_str(),
        });
        if let Some(k) = &c.props.kurento_options {
            v["kurentoOptions"] = k.clone();
        }
        ok_json(v)
    };
    let not_found =
        || error_json(StatusCode::NOT_FOUND, uri.path(), &format!("Session {sid} not found"));
    new_connection(&inner, &sid, &cm, &uri, render, not_found)
}

async fn signal(State(inner): St, uri: Uri, body: Bytes) -> Response {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return bad_request(&uri, "Request body is mandatory");
    }
    let m = match parse_body(&body) {
        Ok(m) => m,
        Err(e) => return bad_request(&uri, &e),
    };
    let f = Fields(&m);
    type Signal = (String, Vec<String>, Option<String>, Option<String>);
    let parsed = (|| -> Result<Signal, String> {
        let sid = f.str("session")?.ok_or("\"session\" parameter is mandatory")?.to_string();
        let to = match f.get("to") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| "Type error in parameter 'to'".to_string())
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("Type error in parameter 'to': expected an array".into()),
        };
        let kind = f.str("type")?.map(str::to_string);
        let data = f.str("data")?.map(str::to_string);
        Ok((sid, to, kind, data))
    })();
    let (sid, to, kind, data) = match parsed {
        Ok(p) => p,
        Err(e) => return bad_request(&uri, &e),
    };
    inner.with(|st| {
        match st.reg.signal(&sid, None, &to, kind.as_deref(), data.as_deref(), now_ms()) {
            Ok(()) => empty(StatusCode::OK),
            Err(RegError::SessionNotFound) => {
                error_json(StatusCode::NOT_FOUND, uri.path(), &format!("Session {sid} not found"))
            }
            Err(RegError::NotAcceptable(msg)) => {
                error_json(StatusCode::NOT_ACCEPTABLE, uri.path(), &msg)
            }
            Err(e) => error_json(StatusCode::INTERNAL_SERVER_ERROR, uri.path(), &format!("{e:?}")),
        }
    })
}

// ------------------------------------------------------------------ config

async fn config(State(inner): St) -> Response {
    let c = &inner.cfg;
    let s = &c.sessions;
    let mut v = json!({
        "VERSION": crate::OPENVIDU_VERSION,
        "DOMAIN_OR_PUBLIC_IP": c.public_host(),
        "HTTPS_PORT": c.server.port,
        "OPENVIDU_PUBLICURL": c.public_url(),
        "OPENVIDU_CDR": false,
        "OPENVIDU_STREAMS_VIDEO_MAX_RECV_BANDWIDTH": s.video_max_recv_bandwidth,
        "OPENVIDU_STREAMS_VIDEO_MIN_RECV_BANDWIDTH": s.video_min_recv_bandwidth,
        "OPENVIDU_STREAMS_VIDEO_MAX_SEND_BANDWIDTH": s.video_max_send_bandwidth,
        "OPENVIDU_STREAMS_VIDEO_MIN_SEND_BANDWIDTH": s.video_min_send_bandwidth,
        "OPENVIDU_STREAMS_FORCED_VIDEO_CODEC": s.forced_video_codec,
        "OPENVIDU_STREAMS_ALLOW_TRANSCODING": s.allow_transcoding,
        "OPENVIDU_WEBRTC_SIMULCAST": c.media.enabled && c.media.simulcast,
        "OPENVIDU_SESSIONS_GARBAGE_INTERVAL": s.garbage_interval,
        "OPENVIDU_SESSIONS_GARBAGE_THRESHOLD": s.garbage_threshold,
        "OPENVIDU_RECORDING": super::recording::enabled(&inner),
        "OPENVIDU_WEBHOOK": c.webhook.enabled,
    });
    if super::recording::enabled(&inner) {
        let r = &c.recording;
        v["OPENVIDU_RECORDING_VERSION"] = json!(crate::OPENVIDU_VERSION);
        v["OPENVIDU_RECORDING_PATH"] = json!(recording_path(&inner));
        v["OPENVIDU_RECORDING_PUBLIC_ACCESS"] = json!(r.public_access);
        v["OPENVIDU_RECORDING_NOTIFICATION"] = json!(r.notification);
        v["OPENVIDU_RECORDING_CUSTOM_LAYOUT"] = json!("");
        v["OPENVIDU_RECORDING_AUTOSTOP_TIMEOUT"] = json!(r.autostop_timeout);
    }
    if c.webhook.enabled {
        v["OPENVIDU_WEBHOOK_ENDPOINT"] = json!(c.webhook.endpoint);
        v["OPENVIDU_WEBHOOK_HEADERS"] = json!(c.webhook.headers);
        v["OPENVIDU_WEBHOOK_EVENTS"] = json!(c.webhook.events);
    }
    ok_json(v)
}

async fn config_item(State(inner): St, Path(item): Path<String>) -> Response {
    let text = match item.as_str() {
        "openvidu-version" => crate::OPENVIDU_VERSION.to_string(),
        "openvidu-publicurl" => format!("{}/", inner.cfg.public_url()),
        "openvidu-recording" => super::recording::enabled(&inner).to_string(),
        "openvidu-recording-path" => recording_path(&inner),
        "openvidu-cdr" => "false".into(),
        _ => return empty(StatusCode::NOT_FOUND),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain;charset=UTF-8")], text).into_response()
}

/// `recording.path` as OpenVidu reports `OPENVIDU_RECORDING_PATH`: absolute, with a trailing `/`.
fn recording_path(inner: &Inner) -> String {
    let p = std::path::Path::new(&inner.cfg.recording.path);
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let s = abs.to_string_lossy();
    if s.ends_with('/') { s.into_owned() } else { format!("{s}/") }
}
