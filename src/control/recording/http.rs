//! The recording routes: `/openvidu/api/recordings/**` with OpenVidu 2.32's status codes (see
//! `SessionRestController`), and the recording files at `/openvidu/recordings/<id>/<file>`,
//! streamed from disk with single byte ranges (RFC 9110 §14) so a browser can seek.
//!
//! [`parse_range`] and [`safe_segment`] are sans-IO (fuzzed in `crate::fuzzing::http_range`).
//! The range handling is hand-written: it is twenty lines over a header value, and the
//! `tower-http` file service would bring its own path mapping where the recordings need exactly
//! two checked segments.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::super::rest::{empty, error_json, ok_json, parse_body};
use super::super::{Inner, now_ms};
use super::props::{self, PropsError};
use super::{DeleteError, StartError, StopError, enabled};

type St = State<Arc<Inner>>;

/// `POST /openvidu/api/recordings/start`.
pub(crate) async fn start(State(inner): St, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    let m = match parse_body(&body) {
        Ok(m) if !body.iter().all(|b| b.is_ascii_whitespace()) => m,
        Ok(_) => {
            return error_json(
                StatusCode::BAD_REQUEST,
                path,
                "Error in body parameters. Cannot be empty",
            );
        }
        Err(e) => return error_json(StatusCode::BAD_REQUEST, path, &e),
    };
    if !enabled(&inner) {
        return empty(StatusCode::NOT_IMPLEMENTED);
    }
    let sid = match m.get("session") {
        None | Some(Value::Null) => {
            return error_json(StatusCode::BAD_REQUEST, path, "\"session\" parameter is mandatory");
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return error_json(
                StatusCode::BAD_REQUEST,
                path,
                "Type error in parameter \"session\"",
            );
        }
    };
    inner.with(|st| {
        // OpenVidu's order: 404, 409, 406, then the properties (400 / 422).
        let Some(s) = st.reg.session(&sid) else { return empty(StatusCode::NOT_FOUND) };
        if s.props.media_mode != "ROUTED" || st.rec.active_of(&sid).is_some() {
            return empty(StatusCode::CONFLICT);
        }
        if s.active_count() == 0 {
            return empty(StatusCode::NOT_ACCEPTABLE);
        }
        let defaults = match &s.props.default_recording_properties {
            Value::Object(d) => d.clone(),
            _ => serde_json::Map::new(),
        };
        let p = match props::parse(&m, Some(&defaults)) {
            Ok(p) => p,
            Err(PropsError::BadRequest(msg)) => {
                return error_json(StatusCode::BAD_REQUEST, path, &msg);
            }
            Err(PropsError::Unprocessable(msg)) => {
                return error_json(StatusCode::UNPROCESSABLE_ENTITY, path, &msg);
            }
        };
        match super::start(&inner, st, &sid, p, now_ms()) {
            Ok(rec) => ok_json(rec.to_json(false)),
            Err(StartError::NotFound) => empty(StatusCode::NOT_FOUND),
            Err(StartError::Conflict) => empty(StatusCode::CONFLICT),
            Err(StartError::NotAcceptable) => empty(StatusCode::NOT_ACCEPTABLE),
            Err(StartError::Unsupported(why)) => {
                error_json(StatusCode::NOT_IMPLEMENTED, path, &why)
            }
            Err(StartError::Unprocessable(why)) => {
                error_json(StatusCode::UNPROCESSABLE_ENTITY, path, &why)
            }
            Err(StartError::Failed(why)) => error_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                path,
                &format!("Error starting recording: {why}"),
            ),
        }
    })
}

/// `POST /openvidu/api/recordings/stop/{recordingId}`.
pub(crate) async fn stop(State(inner): St, Path(id): Path<String>) -> Response {
    if !enabled(&inner) {
        return empty(StatusCode::NOT_IMPLEMENTED);
    }
    inner.with(|st| {
        match super::stop(&inner, st, &id, "recordingStoppedByServer", true, now_ms()) {
            Ok(rec) => ok_json(rec.to_json(false)),
            Err(StopError::Starting) => empty(StatusCode::NOT_ACCEPTABLE),
            Err(StopError::NotFound) => empty(StatusCode::NOT_FOUND),
        }
    })
}

/// `GET /openvidu/api/recordings/{recordingId}`.
pub(crate) async fn get_one(State(inner): St, Path(id): Path<String>) -> Response {
    if !enabled(&inner) {
        return empty(StatusCode::NOT_IMPLEMENTED);
    }
    inner.with(|st| match st.rec.get(&id) {
        Some(r) => ok_json(r.to_json(false)),
        None => empty(StatusCode::NOT_FOUND),
    })
}

/// `GET /openvidu/api/recordings`.
pub(crate) async fn list(State(inner): St) -> Response {
    if !enabled(&inner) {
        return empty(StatusCode::NOT_IMPLEMENTED);
    }
    inner.with(|st| {
        let items: Vec<Value> = st.rec.list().into_iter().map(|r| r.to_json(false)).collect();
        ok_json(json!({"count": items.len(), "items": items}))
    })
}

/// `DELETE /openvidu/api/recordings/{recordingId}`.
pub(crate) async fn delete(State(inner): St, Path(id): Path<String>) -> Response {
    if !enabled(&inner) {
        return empty(StatusCode::NOT_IMPLEMENTED);
    }
    inner.with(|st| match super::delete(&inner, st, &id) {
        Ok(()) => empty(StatusCode::NO_CONTENT),
        Err(DeleteError::NotFound) => empty(StatusCode::NOT_FOUND),
        Err(DeleteError::Active) => empty(StatusCode::CONFLICT),
    })
}

/// A path segment that names an entry of one directory and nothing else: not empty, not `.`
/// or `..`, no separator, no NUL, and not hidden (the entity file is not served).
pub fn safe_segment(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains(['/', '\\', '\0'])
}

/// What a `Range` header asks of a representation of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeSpec {
    /// No usable range (absent, malformed, several ranges, another unit): the whole file, 200.
    Full,
    /// Bytes `first..=last`, 206.
    Partial { first: u64, last: u64 },
    /// A well-formed range that selects nothing: 416.
    Unsatisfiable,
}

/// Parses one `bytes=` range (`a-b`, `a-`, `-n`) against a length.
pub fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeSpec::Full };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeSpec::Full };
    let num = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())).then(|| s.parse::<u64>().ok())?
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // Suffix: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                RangeSpec::Unsatisfiable
            } else {
                RangeSpec::Partial { first: len.saturating_sub(n), last: len - 1 }
            }
        }
        (false, Some(first), None) if b.trim().is_empty() => {
            if first < len {
                RangeSpec::Partial { first, last: len - 1 }
            } else {
                RangeSpec::Unsatisfiable
            }
        }
        (false, Some(first), Some(last)) if first <= last => {
            if first < len {
                RangeSpec::Partial { first, last: last.min(len - 1) }
            } else {
                RangeSpec::Unsatisfiable
            }
        }
        _ => RangeSpec::Full,
    }
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).as_deref() {
        Some("webm") => "video/webm",
        Some("mkv") => "video/x-matroska",
        Some("mp4") => "video/mp4",
        Some("zip") => "application/zip",
        Some("json") => "application/json",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Bytes read from disk per body chunk.
const CHUNK: usize = 64 * 1024;

/// `GET /openvidu/recordings/{recordingId}/{file}`: Basic auth as the API unless
/// `recording.public_access` (see `rest::auth`); 404 while recording is off.
pub(crate) async fn file(
    State(inner): St,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !enabled(&inner) || !safe_segment(&id) || !safe_segment(&name) {
        return empty(StatusCode::NOT_FOUND);
    }
    let path = super::dir_of(&inner, &id).join(&name);
    let Ok(mut f) = tokio::fs::File::open(&path).await else {
        return empty(StatusCode::NOT_FOUND);
    };
    let len = match f.metadata().await {
        Ok(m) if m.is_file() => m.len(),
        _ => return empty(StatusCode::NOT_FOUND),
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeSpec::Full, |v| parse_range(v, len));
    let (status, first, count) = match range {
        RangeSpec::Full => (StatusCode::OK, 0, len),
        RangeSpec::Partial { first, last } => {
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        RangeSpec::Unsatisfiable => {
            let mut r = empty(StatusCode::RANGE_NOT_SATISFIABLE);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    if first > 0 && f.seek(std::io::SeekFrom::Start(first)).await.is_err() {
        return empty(StatusCode::INTERNAL_SERVER_ERROR);
    }
    let stream = futures_util::stream::unfold((f, count), |(mut f, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; CHUNK.min(left as usize)];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (f, left - n as u64)))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&name)));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&count.to_string()) {
        h.insert(header::CONTENT_LENGTH, v);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{}/{len}", first + count - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Partial { first: 0, last: 99 });
        assert_eq!(parse_range("bytes=900-", 1000), Partial { first: 900, last: 999 });
        assert_eq!(parse_range("bytes=-100", 1000), Partial { first: 900, last: 999 });
        assert_eq!(parse_range("bytes=-5000", 1000), Partial { first: 0, last: 999 });
        assert_eq!(parse_range("bytes=990-5000", 1000), Partial { first: 990, last: 999 });
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Full);
        assert_eq!(parse_range("items=0-1", 1000), Full);
        assert_eq!(parse_range("bytes=+1-2", 1000), Full);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
    }

    #[test]
    fn segments() {
        for bad in ["", ".", "..", "../x", "a/b", "a\\b", ".recording.x", "a\0"] {
            assert!(!safe_segment(bad), "{bad:?}");
        }
        assert!(safe_segment("ses_A~1") && safe_segment("rec.zip"));
    }
}
