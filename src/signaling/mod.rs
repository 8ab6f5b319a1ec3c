//! JSON-RPC 2.0 message framing and the OpenVidu signaling error codes, as plain functions over
//! parsed messages; the WebSocket shell lives in `control::ws`.
//!
//! The browser's kurento-jsonrpc client drops any frame without `"jsonrpc":"2.0"` and matches
//! responses by integer `id`; notifications are recognised by the absence of `id`
//! (spec §4.1). The Java server injects the JSON-RPC session id into every result object
//! (`"sessionId"`), and wraps non-object results as `{"value": …}`; [`response`] does the same.

use serde_json::{Map, Value, json};

/// OpenVidu / kurento-jsonrpc error codes used on the wire (spec §4.3, §4.4).
pub mod code {
    /// JSON-RPC: the frame is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// JSON-RPC: the frame is JSON but not a request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// JSON-RPC: unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// JSON-RPC: missing or mistyped parameter.
    pub const INVALID_PARAMS: i64 = -32602;
    /// OpenVidu `USER_NOT_FOUND_ERROR_CODE`: no such connection.
    pub const USER_NOT_FOUND: i64 = 102;
    /// OpenVidu `USER_NOT_STREAMING_ERROR_CODE`.
    pub const USER_NOT_STREAMING: i64 = 105;
    /// OpenVidu `EXISTING_USER_IN_ROOM_ERROR_CODE`: already publishing (one stream per connection).
    pub const USER_ALREADY_STREAMING: i64 = 106;
    /// OpenVidu `ROOM_NOT_FOUND_ERROR_CODE`.
    pub const ROOM_NOT_FOUND: i64 = 202;
    /// OpenVidu `ROOM_CLOSED_ERROR_CODE`.
    pub const ROOM_CLOSED: i64 = 203;
    /// OpenVidu `MEDIA_SDP_ERROR_CODE`.
    pub const MEDIA_SDP_ERROR: i64 = 302;
    /// OpenVidu `USER_UNAUTHORIZED_ERROR_CODE` (the browser maps it to permission denied).
    pub const USER_UNAUTHORIZED: i64 = 401;
    /// OpenVidu `FILTER_NOT_APPLIED_ERROR_CODE`.
    pub const FILTER_NOT_APPLIED: i64 = 406;
    /// OpenVidu `USER_METADATA_FORMAT_INVALID_ERROR_CODE`.
    pub const METADATA_FORMAT_INVALID: i64 = 500;
    /// OpenVidu `SIGNAL_FORMAT_INVALID_ERROR_CODE`.
    pub const SIGNAL_FORMAT_INVALID: i64 = 600;
    /// OpenVidu `SIGNAL_TO_INVALID_ERROR_CODE`.
    pub const SIGNAL_TO_INVALID: i64 = 601;
    /// OpenVidu `TRANSPORT_ERROR_CODE` ("No connection found…": method before joinRoom).
    pub const TRANSPORT_ERROR: i64 = 803;
    /// What OpenVidu CE answers for Pro/Enterprise-only methods (speech to text).
    pub const PRO_FEATURE: i64 = 997;
    /// OpenVidu `GENERIC_ERROR_CODE`.
    pub const GENERIC: i64 = 999;
    /// kurento-jsonrpc: `connect` to a JSON-RPC session that no longer exists.
    pub const RECONNECTION_ERROR: i64 = 40007;
}

/// A JSON-RPC error object (`{"code","message","data"?}`).
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into() }
    }
}

/// The id of a request as received (the browser uses integers; other clients may use strings).
#[derive(Clone, Debug, PartialEq)]
pub enum RpcId {
    Num(Value),
    Str(String),
    /// The request could not be parsed far enough to know its id: answer with `"id": null`.
    Null,
}

impl RpcId {
    pub fn to_value(&self) -> Value {
        match self {
            RpcId::Num(v) => v.clone(),
            RpcId::Str(s) => Value::String(s.clone()),
            RpcId::Null => Value::Null,
        }
    }
}

/// A parsed incoming frame.
#[derive(Clone, Debug, PartialEq)]
pub enum Incoming {
    /// A request (it has an `id`): must be answered.
    Request { id: RpcId, method: String, params: Map<String, Value> },
    /// A notification from the client (no `id`): processed, never answered.
    Notification { method: String, params: Map<String, Value> },
    /// A response from the client (the server never sends requests, so it is ignored).
    Response,
}

/// Why a frame was rejected; each maps to one JSON-RPC error response.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameError {
    pub id: RpcId,
    pub error: RpcError,
}

/// The object key by which serde_json (with its `raw_value` feature, which axum turns on)
/// recognises a raw value: an object whose first key it is reads as the JSON text in its value.
pub const RESERVED_KEY: &str = "$serde_json::private::RawValue";

/// Whether `v` holds an object with [`RESERVED_KEY`] at any depth. ringsfu writes objects with
/// their keys sorted, so such a key, anywhere in what a client sent, can come first in what
/// ringsfu writes and make it unreadable to serde_json (another node, a file read back); every
/// JSON a client sends is refused with it (found by the `signaling` fuzz target).
pub fn has_reserved_key(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, v)| k == RESERVED_KEY || has_reserved_key(v)),
        Value::Array(a) => a.iter().any(has_reserved_key),
        _ => false,
    }
}

/// Parses one text frame. `params` must be an object or absent (`null` counts as absent).
pub fn parse(text: &str) -> Result<Incoming, FrameError> {
    let v: Value = serde_json::from_str(text).map_err(|e| FrameError {
        id: RpcId::Null,
        error: RpcError::new(code::PARSE_ERROR, format!("Parse error: {e}")),
    })?;
    if has_reserved_key(&v) {
        return Err(invalid(RpcId::Null, &format!("Invalid request: the key {RESERVED_KEY:?}")));
    }
    let Value::Object(mut obj) = v else {
        return Err(invalid(RpcId::Null, "Invalid request: not an object"));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(n @ Value::Number(_)) => Some(RpcId::Num(n)),
        Some(Value::String(s)) => Some(RpcId::Str(s)),
        Some(_) => return Err(invalid(RpcId::Null, "Invalid request: bad id")),
    };
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => {
            return Err(invalid(
                id.unwrap_or(RpcId::Null),
                "Invalid request: method is not a string",
            ));
        }
        None => {
            if obj.contains_key("result") || obj.contains_key("error") {
                return Ok(Incoming::Response);
            }
            return Err(invalid(id.unwrap_or(RpcId::Null), "Invalid request: no method"));
        }
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(FrameError {
                id: id.unwrap_or(RpcId::Null),
                error: RpcError::new(code::INVALID_PARAMS, "params must be an object"),
            });
        }
    };
    Ok(match id {
        Some(id) => Incoming::Request { id, method, params },
        None => Incoming::Notification { method, params },
    })
}

fn invalid(id: RpcId, msg: &str) -> FrameError {
    FrameError { id, error: RpcError::new(code::INVALID_REQUEST, msg) }
}

/// A success response with the JSON-RPC session id injected into `result` (non-object results
/// are wrapped as `{"value": …}`). `rpc_session` `None` leaves the result untouched (pong).
pub fn response(id: &RpcId, result: Value, rpc_session: Option<&str>) -> String {
    let result = match rpc_session {
        None => result,
        Some(s) => {
            let mut obj = match result {
                Value::Object(m) => m,
                Value::Null => Map::new(),
                other => {
                    let mut m = Map::new();
                    m.insert("value".into(), other);
                    m
                }
            };
            obj.insert("sessionId".into(), Value::String(s.to_string()));
            Value::Object(obj)
        }
    };
    json!({"jsonrpc": "2.0", "id": id.to_value(), "result": result}).to_string()
}

/// An error response; `rpc_session` goes into `error.data.sessionId` like the Java server does.
pub fn error_response(id: &RpcId, err: &RpcError, rpc_session: Option<&str>) -> String {
    let mut e = json!({"code": err.code, "message": err.message});
    if let Some(s) = rpc_session {
        e["data"] = json!({ "sessionId": s });
    }
    json!({"jsonrpc": "2.0", "id": id.to_value(), "error": e}).to_string()
}

/// A server → client notification (no `id`).
pub fn notification(method: &str, params: &Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// Typed access to request parameters: `null` is treated as absent; wrong types are errors.
pub struct Params<'a>(pub &'a Map<String, Value>);

impl<'a> Params<'a> {
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, RpcError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad_param(key, "a string")),
        }
    }

    pub fn str(&self, key: &str) -> Result<&'a str, RpcError> {
        self.opt_str(key)?.ok_or_else(|| missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, RpcError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            // Some hand-written clients send booleans as strings.
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(_) => Err(bad_param(key, "a boolean")),
        }
    }

    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, RpcError> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| bad_param(key, "a number")),
            Some(_) => Err(bad_param(key, "a number")),
        }
    }

    pub fn value(&self, key: &str) -> Option<&'a Value> {
        match self.0.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }
}

fn bad_param(key: &str, what: &str) -> RpcError {
    RpcError::new(code::INVALID_PARAMS, format!("Parameter '{key}' must be {what}"))
}

fn missing(key: &str) -> RpcError {
    RpcError::new(code::INVALID_PARAMS, format!("Request element '{key}' is missing"))
}

/// Extracts the `token=tok_…` value from a token URL (naive split like the browser does), or
/// `None` if the string carries no such query parameter.
pub fn token_value(token: &str) -> Option<&str> {
    let query = token.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `signaling` fuzz target: ringsfu writes object keys sorted, so serde_json's
    /// raw-value key, not first in what a client sent, came first in the answer, which
    /// serde_json then could not read.
    #[test]
    fn the_raw_value_key_is_refused_at_any_depth() {
        let frame = r#"{"jsonrpc":"2.0","method":"x","id":3,"params":{"a":[{"b":1,"$serde_json::private::RawValue":false}]}}"#;
        let e = parse(frame).unwrap_err();
        assert_eq!(e.error.code, code::INVALID_REQUEST);
        assert!(e.error.message.contains(RESERVED_KEY));
        assert!(parse(r#"{"jsonrpc":"2.0","method":"x","id":3,"params":{"a":[{"b":1}]}}"#).is_ok());
    }

    /// Found by the `signaling` fuzz target: an id too large for an integer is read as a float,
    /// and serde_json's default reader read the float ringsfu wrote back one unit off, so the
    /// answer named another id (`float_roundtrip` is on now).
    #[test]
    fn a_float_id_is_answered_unchanged() {
        let frame = r#"{"jsonrpc":"2.0","method":"ping","id":77777777777777777777777777777777777777777777777777771}"#;
        let Ok(Incoming::Request { id, .. }) = parse(frame) else { panic!("not a request") };
        let sent: Value = serde_json::from_str::<Value>(frame).unwrap()["id"].clone();
        let answer: Value = serde_json::from_str(&response(&id, json!("pong"), None)).unwrap();
        assert_eq!(answer["id"], sent);
    }

    #[test]
    fn parses_requests_and_notifications() {
        let r = parse(r#"{"jsonrpc":"2.0","method":"ping","params":{"interval":5000},"id":0}"#);
        match r {
            Ok(Incoming::Request { id, method, params }) => {
                assert_eq!(id, RpcId::Num(json!(0)));
                assert_eq!(method, "ping");
                assert_eq!(params["interval"], 5000);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","method":"x"}"#),
            Ok(Incoming::Notification { .. })
        ));
        assert_eq!(parse("{").unwrap_err().error.code, code::PARSE_ERROR);
        assert_eq!(parse("[1]").unwrap_err().error.code, code::INVALID_REQUEST);
        assert_eq!(
            parse(r#"{"id":3,"method":"x","params":[1]}"#).unwrap_err().error.code,
            code::INVALID_PARAMS
        );
    }

    #[test]
    fn response_injects_session_id() {
        let s = response(&RpcId::Num(json!(4)), json!({}), Some("abc"));
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["result"]["sessionId"], "abc");
        assert_eq!(v["id"], 4);
        let s = response(&RpcId::Num(json!(1)), json!("bye"), Some("abc"));
        let v: Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["result"]["value"], "bye");
    }

    #[test]
    fn token_values() {
        assert_eq!(token_value("ws://h:1?sessionId=s&token=tok_A"), Some("tok_A"));
        assert_eq!(token_value("tok_A"), None);
    }
}
