//! The cluster's pure parts: Redis key names and the node record, where a REST request goes
//! (`target`), placement of a new session (two random choices, least loaded), and the
//! signature of internal requests. No I/O here: the shells in `super` and `super::forward`
//! drive it.

use std::collections::HashMap;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of every key ringsfu writes in Redis.
pub const PREFIX: &str = "ringsfu:";

/// The key holding a session's owner (its value: the owner's node id).
pub fn session_key(session_id: &str) -> String {
    format!("{PREFIX}session:{session_id}")
}

/// The key holding a node's record (JSON, expiring with the node's TTL).
pub fn node_key(node_id: &str) -> String {
    format!("{PREFIX}node:{node_id}")
}

/// The sorted set of every node id that has heartbeaten (score: last heartbeat, ms); a member
/// whose record expired is dead and gets pruned.
pub const NODES_KEY: &str = "ringsfu:nodes";

/// Refreshes a batch of session claims: for each key, set to this node when absent (1),
/// extended when already this node's (1), left alone when another node's (0).
pub const REFRESH_SCRIPT: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  local v = redis.call('GET', k)
  if not v then
    redis.call('SET', k, ARGV[1], 'PX', ARGV[2])
    out[i] = 1
  elseif v == ARGV[1] then
    redis.call('PEXPIRE', k, ARGV[2])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"#;

/// Deletes a key only while it still holds the given value (a claim released by its owner,
/// or a dead owner's claim cleared): 1 when deleted.
pub const COMPARE_AND_DELETE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// What a node publishes about itself every second.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeRecord {
    pub id: String,
    /// The REST base URL clients use (`server.public_url`).
    pub public_url: String,
    /// The WebSocket URL tokens carry.
    pub ws_url: String,
    /// `http://internal_address`: where other nodes forward requests.
    pub internal_url: String,
    /// Sessions this node owns.
    pub sessions: u64,
    /// Connections (participants) in them.
    pub connections: u64,
    /// Media shards (cores) of the node.
    pub shards: u64,
    /// Draining before a stop: never chosen for a new session.
    #[serde(default)]
    pub draining: bool,
    /// At `sessions.max_sessions`: refusing new sessions.
    #[serde(default)]
    pub refusing: bool,
}

impl NodeRecord {
    /// The load placement compares: participants and sessions per shard.
    pub fn load(&self) -> f64 {
        (self.connections + self.sessions) as f64 / self.shards.max(1) as f64
    }

    /// Whether placement may choose it.
    pub fn accepts(&self) -> bool {
        !self.draining && !self.refusing
    }
}

/// Two random choices among the nodes that accept sessions, the less loaded of the two (ties:
/// the first drawn). `draw(n)` returns a uniform index below `n`. None when no node accepts.
pub fn place(
    nodes: &HashMap<String, NodeRecord>,
    mut draw: impl FnMut(usize) -> usize,
) -> Option<&NodeRecord> {
    let mut open: Vec<&NodeRecord> = nodes.values().filter(|n| n.accepts()).collect();
    // A stable order, so the draws alone decide.
    open.sort_by(|a, b| a.id.cmp(&b.id));
    match open.len() {
        0 => None,
        1 => Some(open[0]),
        n => {
            let a = open[draw(n) % n];
            let b = open[draw(n) % n];
            Some(if b.load() < a.load() { b } else { a })
        }
    }
}

/// Where a REST request is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Always here: health, metrics, configuration, the WebSocket, unknown paths.
    Local,
    /// By the owner of this session.
    Session(String),
    /// By the owner of the session named in the JSON body's `session` field.
    BodySession,
    /// `POST /sessions`: a new session, placed by load unless its custom id is owned already.
    Place,
    /// Every node's answer merged (`GET /sessions`, `GET /recordings`).
    Merge,
    /// A recording: here if it is here, else the first node that knows it.
    Anywhere,
}

/// Where `method path` (after the deprecated paths were rewritten) is served.
pub fn target(method: &str, path: &str) -> Target {
    let api = match path.strip_prefix("/openvidu/api/") {
        Some(rest) => rest.trim_end_matches('/'),
        None => {
            return if path.starts_with("/openvidu/recordings/") {
                Target::Anywhere
            } else {
                Target::Local
            };
        }
    };
    let parts: Vec<&str> = api.split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["sessions"]) => Target::Place,
        ("GET", ["sessions"]) => Target::Merge,
        (_, ["sessions", sid, ..]) if !sid.is_empty() => Target::Session(sid.to_string()),
        ("POST", ["tokens"]) | ("POST", ["signal"]) | ("POST", ["recordings", "start"]) => {
            Target::BodySession
        }
        ("GET", ["recordings"]) => Target::Merge,
        (_, ["recordings", ..]) => Target::Anywhere,
        _ => Target::Local,
    }
}

/// Headers of a signed internal request.
pub const H_NODE: &str = "x-ringsfu-node";
pub const H_TIME: &str = "x-ringsfu-time";
pub const H_SIG: &str = "x-ringsfu-signature";

/// How far a signed request's time may be from the receiver's clock.
pub const MAX_SKEW_MS: u64 = 30_000;

/// The signature of an internal request: HMAC-SHA256 over the sender, its time, the method,
/// the path with query and the body's SHA-256, in hex.
pub fn sign(
    secret: &str,
    node: &str,
    time_ms: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> String {
    // Invariant: HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    let body_hash = Sha256::digest(body);
    mac.update(node.as_bytes());
    mac.update(b"\n");
    mac.update(time_ms.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    mac.update(b"\n");
    mac.update(hex(&body_hash).as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// Why a request's signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigError {
    Missing,
    Stale,
    Mismatch,
}

/// Checks a signature made by [`sign`] (constant time), and its time against `now_ms`.
#[allow(clippy::too_many_arguments)]
pub fn verify(
    secret: &str,
    node: Option<&str>,
    time: Option<&str>,
    sig: Option<&str>,
    now_ms: u64,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(), SigError> {
    let (Some(node), Some(time), Some(sig)) = (node, time, sig) else {
        return Err(SigError::Missing);
    };
    let t: u64 = time.parse().map_err(|_| SigError::Missing)?;
    if t.abs_diff(now_ms) > MAX_SKEW_MS {
        return Err(SigError::Stale);
    }
    let want = sign(secret, node, t, method, path, body);
    if subtle::ConstantTimeEq::ct_eq(want.as_bytes(), sig.as_bytes()).into() {
        Ok(())
    } else {
        Err(SigError::Mismatch)
    }
}

fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

/// Merges list answers (`{"numberOfElements": n, "content": [...]}`) of several nodes into one.
pub fn merge_lists(parts: &[serde_json::Value]) -> serde_json::Value {
    let mut content = Vec::new();
    for p in parts {
        if let Some(items) = p.get("content").and_then(|c| c.as_array()) {
            content.extend(items.iter().cloned());
        } else if let Some(items) = p.get("items").and_then(|c| c.as_array()) {
            // the recordings list of OpenVidu 2 is `{"count": n, "items": [...]}`
            content.extend(items.iter().cloned());
        }
    }
    let recordings = parts.iter().any(|p| p.get("items").is_some());
    if recordings {
        serde_json::json!({ "count": content.len(), "items": content })
    } else {
        serde_json::json!({ "numberOfElements": content.len(), "content": content })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, connections: u64) -> NodeRecord {
        NodeRecord {
            id: id.into(),
            public_url: String::new(),
            ws_url: String::new(),
            internal_url: String::new(),
            sessions: 0,
            connections,
            shards: 1,
            draining: false,
            refusing: false,
        }
    }

    #[test]
    fn targets() {
        assert_eq!(target("POST", "/openvidu/api/sessions"), Target::Place);
        assert_eq!(target("GET", "/openvidu/api/sessions"), Target::Merge);
        assert_eq!(target("GET", "/openvidu/api/sessions/s1"), Target::Session("s1".into()));
        assert_eq!(
            target("POST", "/openvidu/api/sessions/s1/connection"),
            Target::Session("s1".into())
        );
        assert_eq!(
            target("DELETE", "/openvidu/api/sessions/s1/stream/x"),
            Target::Session("s1".into())
        );
        assert_eq!(target("POST", "/openvidu/api/tokens"), Target::BodySession);
        assert_eq!(target("POST", "/openvidu/api/signal"), Target::BodySession);
        assert_eq!(target("POST", "/openvidu/api/recordings/start"), Target::BodySession);
        assert_eq!(target("POST", "/openvidu/api/recordings/stop/r"), Target::Anywhere);
        assert_eq!(target("GET", "/openvidu/api/recordings"), Target::Merge);
        assert_eq!(target("GET", "/openvidu/recordings/r/r.webm"), Target::Anywhere);
        assert_eq!(target("GET", "/openvidu/api/config"), Target::Local);
        assert_eq!(target("GET", "/openvidu"), Target::Local);
        assert_eq!(target("GET", "/metrics"), Target::Local);
    }

    #[test]
    fn placement_prefers_the_less_loaded_of_two_and_skips_refusing_nodes() {
        let mut nodes = HashMap::new();
        nodes.insert("a".into(), rec("a", 10));
        nodes.insert("b".into(), rec("b", 2));
        let mut draws = [0usize, 1].into_iter();
        assert_eq!(place(&nodes, |_| draws.next().unwrap()).unwrap().id, "b");
        let mut draws = [0usize, 0].into_iter();
        assert_eq!(place(&nodes, |_| draws.next().unwrap()).unwrap().id, "a");
        nodes.get_mut("b").unwrap().refusing = true;
        assert_eq!(place(&nodes, |_| 1).unwrap().id, "a");
        nodes.get_mut("a").unwrap().draining = true;
        assert!(place(&nodes, |_| 0).is_none());
    }

    #[test]
    fn signatures_bind_every_part() {
        let s = sign("0123456789abcdef", "n1", 1000, "GET", "/x?y=1", b"body");
        let ok = |node, t: &str, m, p, b: &[u8]| {
            verify("0123456789abcdef", Some(node), Some(t), Some(&s), 1500, m, p, b)
        };
        assert_eq!(ok("n1", "1000", "GET", "/x?y=1", b"body"), Ok(()));
        assert_eq!(ok("n2", "1000", "GET", "/x?y=1", b"body"), Err(SigError::Mismatch));
        assert_eq!(ok("n1", "1001", "GET", "/x?y=1", b"body"), Err(SigError::Mismatch));
        assert_eq!(ok("n1", "1000", "POST", "/x?y=1", b"body"), Err(SigError::Mismatch));
        assert_eq!(ok("n1", "1000", "GET", "/x?y=2", b"body"), Err(SigError::Mismatch));
        assert_eq!(ok("n1", "1000", "GET", "/x?y=1", b"bodz"), Err(SigError::Mismatch));
        let late = verify(
            "0123456789abcdef",
            Some("n1"),
            Some("1000"),
            Some(&s),
            99_000,
            "GET",
            "/x?y=1",
            b"body",
        );
        assert_eq!(late, Err(SigError::Stale));
        assert_eq!(
            verify("k", None, Some("1"), Some("x"), 1, "GET", "/", b""),
            Err(SigError::Missing)
        );
    }

    #[test]
    fn lists_merge() {
        let a = serde_json::json!({"numberOfElements": 1, "content": [{"id": "a"}]});
        let b = serde_json::json!({"numberOfElements": 2, "content": [{"id": "b"}, {"id": "c"}]});
        let m = merge_lists(&[a, b]);
        assert_eq!(m["numberOfElements"], 3);
        assert_eq!(m["content"][2]["id"], "c");
        let r = merge_lists(&[serde_json::json!({"count": 1, "items": [{"id": "r"}]})]);
        assert_eq!(r["count"], 1);
    }
}
