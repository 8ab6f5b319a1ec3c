//! The demo page (`[server] demo = true`): `GET /` serves a page, written for this project,
//! that joins a session by name, publishes the camera and microphone and shows everyone else,
//! speaking the OpenVidu 2 WebSocket protocol itself (`demo.js`: no SDK). `POST /demo/token`
//! gives the page a token, creating the session when needed — without the secret, which is why
//! the demo is off in production configurations.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use super::registry::RegError;
use super::rest::{connection_props, session_props};
use super::{Inner, now_ms};

const PAGE: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("demo.js");

/// The demo routes in front of `rest` (which answers everything else).
pub(crate) fn router(inner: Arc<Inner>, rest: Router) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/demo.js", get(script))
        .route("/demo/token", post(token))
        .with_state(inner)
        .fallback_service(rest)
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn script() -> Response {
    ([(header::CONTENT_TYPE, "application/javascript; charset=utf-8")], SCRIPT).into_response()
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({ "message": msg }))).into_response()
}

/// `{"session": name, "user": name}` → `{"token": …}`. Session names follow OpenVidu's custom
/// session id rule; the user name becomes the connection's server data.
async fn token(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&body) else {
        return bad("the body must be a JSON object {\"session\", \"user\"}");
    };
    let session = m.get("session").and_then(Value::as_str).unwrap_or("").trim();
    let user = m.get("user").and_then(Value::as_str).unwrap_or("").trim();
    if user.is_empty() || user.len() > 64 {
        return bad("user: 1 to 64 characters");
    }
    let mut sm = Map::new();
    sm.insert("customSessionId".into(), json!(session));
    let props = match session_props(&sm) {
        Ok(p) if !session.is_empty() => p,
        Ok(_) => return bad("session: a name is required"),
        Err(e) => return bad(&e),
    };
    let now = now_ms();
    let mut cm = Map::new();
    cm.insert("role".into(), json!("PUBLISHER"));
    cm.insert("data".into(), json!(user));
    let cprops = match connection_props(&cm, now, inner.cfg.turn.credential_ttl) {
        Ok(p) => p,
        Err(e) => return bad(&e),
    };
    inner.with(|st| {
        if st.reg.session(session).is_none() {
            match st.reg.create_session(props, now) {
                Ok(_) | Err(RegError::SessionExists) => {}
                Err(e) => return bad(&format!("cannot create the session: {e:?}")),
            }
        }
        match st.reg.create_connection(session, cprops, now) {
            Ok(cid) => {
                let url = st
                    .reg
                    .session(session)
                    .and_then(|s| s.connection(&cid))
                    .map(|c| c.token_url.clone())
                    .unwrap_or_default();
                axum::Json(json!({ "token": url, "connectionId": cid })).into_response()
            }
            Err(e) => bad(&format!("cannot create the connection: {e:?}")),
        }
    })
}
