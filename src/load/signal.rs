//! The control part of a synthetic client: REST sessions and tokens, and one WebSocket JSON-RPC
//! connection per participant (joinRoom, publishVideo, receiveVideoFrom), as openvidu-browser
//! does it. Each participant's socket lives in its own task that answers nothing, pings every
//! 5 s (the server closes silent sockets) and keeps reading notifications so the server never
//! blocks on it.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// Every awaited reply is bounded by this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The REST API of one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    secret: String,
}

impl Api {
    /// `base` like `http://127.0.0.1:4443`.
    pub fn new(base: &str, secret: &str) -> Api {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Api { http, base: base.trim_end_matches('/').to_string(), secret: secret.to_string() }
    }

    pub fn ws_url(&self, session: &str) -> String {
        let ws = self.base.replacen("http", "ws", 1);
        format!("{ws}/openvidu?sessionId={session}")
    }

    /// Where a participant with `token` connects: the server its token names, as
    /// openvidu-browser does (in a cluster, the session's owner), else this API's server.
    pub fn ws_url_for(&self, session: &str, token: &str) -> String {
        match url::Url::parse(token) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some() => {
                let host = u.host_str().unwrap_or_default();
                let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}://{host}{port}/openvidu?sessionId={session}", u.scheme())
            }
            _ => self.ws_url(session),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let r = self
            .http
            .post(format!("{}{}", self.base, path))
            .basic_auth("OPENVIDUAPP", Some(&self.secret))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let st = r.status();
        let v: Value = r.json().await.map_err(|e| format!("POST {path}: {e}"))?;
        if !st.is_success() {
            return Err(format!("POST {path}: HTTP {st}: {v}"));
        }
        Ok(v)
    }

    /// True once the REST API answers (any status).
    pub async fn ready(&self) -> bool {
        self.http
            .get(format!("{}/openvidu/api/config", self.base))
            .basic_auth("OPENVIDUAPP", Some(&self.secret))
            .send()
            .await
            .is_ok()
    }

    /// The server's `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .basic_auth("OPENVIDUAPP", Some(&self.secret))
            .send()
            .await
            .map_err(|e| format!("GET /metrics: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("GET /metrics: HTTP {}", r.status()));
        }
        r.text().await.map_err(|e| format!("GET /metrics: {e}"))
    }

    pub async fn session(&self) -> Result<String, String> {
        let v = self.post("/openvidu/api/sessions", json!({})).await?;
        v["id"].as_str().map(str::to_string).ok_or_else(|| format!("no session id in {v}"))
    }

    /// Starts an INDIVIDUAL recording of `session`: its id.
    pub async fn start_recording(&self, session: &str) -> Result<String, String> {
        let v = self
            .post(
                "/openvidu/api/recordings/start",
                json!({"session": session, "outputMode": "INDIVIDUAL"}),
            )
            .await?;
        v["id"].as_str().map(str::to_string).ok_or_else(|| format!("no recording id in {v}"))
    }

    /// Stops recording `id` and waits (at most 20 s) until it is ready: its size in bytes.
    pub async fn stop_recording(&self, id: &str) -> Result<u64, String> {
        self.post(&format!("/openvidu/api/recordings/stop/{id}"), json!({})).await?;
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < end {
            let r = self
                .http
                .get(format!("{}/openvidu/api/recordings/{id}", self.base))
                .basic_auth("OPENVIDUAPP", Some(&self.secret))
                .send()
                .await
                .map_err(|e| format!("GET recording {id}: {e}"))?;
            let v: Value = r.json().await.map_err(|e| format!("GET recording {id}: {e}"))?;
            match v["status"].as_str() {
                Some("ready") => return Ok(v["size"].as_u64().unwrap_or(0)),
                Some("failed") => return Err(format!("recording {id} failed: {v}")),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Err(format!("recording {id} not ready within 20 s"))
    }

    pub async fn token(&self, session: &str, role: &str) -> Result<String, String> {
        let v = self
            .post(&format!("/openvidu/api/sessions/{session}/connection"), json!({"role": role}))
            .await?;
        v["token"].as_str().map(str::to_string).ok_or_else(|| format!("no token in {v}"))
    }
}

type Call = (String, Value, oneshot::Sender<Value>);

/// A joined participant (its socket task runs until this is dropped).
pub struct Participant {
    calls: mpsc::UnboundedSender<Call>,
}

impl Participant {
    /// Opens the socket, pings and joins with `token`.
    pub async fn join(api: &Api, session: &str, token: &str, name: &str) -> Result<Self, String> {
        let url = api.ws_url_for(session, token);
        let (ws, _) = tokio::time::timeout(CALL_TIMEOUT, tokio_tungstenite::connect_async(&url))
            .await
            .map_err(|_| format!("{url}: connect timed out"))?
            .map_err(|e| format!("{url}: {e}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(socket_task(ws, rx));
        let p = Participant { calls: tx };
        p.call("ping", json!({"interval": 5000})).await?;
        let params = json!({"token": token, "session": session, "platform": "ringsfu-load",
            "sdkVersion": "2.32.2", "metadata": json!({"clientData": name}).to_string(),
            "secret": "", "recorder": false, "stt": false});
        p.call("joinRoom", params).await?;
        Ok(p)
    }

    /// One JSON-RPC request; the `result` or the error as text.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, String> {
        let (tx, rx) = oneshot::channel();
        self.calls
            .send((method.to_string(), params, tx))
            .map_err(|_| format!("{method}: socket closed"))?;
        let v = tokio::time::timeout(CALL_TIMEOUT, rx)
            .await
            .map_err(|_| format!("{method}: no answer"))?
            .map_err(|_| format!("{method}: socket closed"))?;
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(format!("{method}: {}", v.get("error").unwrap_or(&v))),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket_task(ws: Ws, mut calls: mpsc::UnboundedReceiver<Call>) {
    let (mut sink, mut stream) = ws.split();
    let mut pending: HashMap<u64, oneshot::Sender<Value>> = HashMap::new();
    let mut next_id = 0u64;
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            c = calls.recv() => {
                let Some((method, params, reply)) = c else { break };
                let id = next_id;
                next_id += 1;
                let req = json!({"jsonrpc": "2.0", "method": method, "id": id, "params": params});
                if sink.send(Message::Text(req.to_string().into())).await.is_err() {
                    break;
                }
                pending.insert(id, reply);
            }
            m = stream.next() => {
                match m {
                    Some(Ok(Message::Text(t))) => {
                        // Notifications (participantJoined storms) are not parsed.
                        if t.as_str().contains("\"method\"") {
                            continue;
                        }
                        let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else { continue };
                        if v.get("method").is_none()
                            && let Some(id) = v.get("id").and_then(Value::as_u64)
                            && let Some(reply) = pending.remove(&id)
                        {
                            let _ = reply.send(v);
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            _ = ping.tick() => {
                let id = next_id;
                next_id += 1;
                let req = json!({"jsonrpc": "2.0", "method": "ping", "id": id,
                                 "params": {"interval": 5000}});
                if sink.send(Message::Text(req.to_string().into())).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::Api;

    #[test]
    fn participants_connect_where_their_token_says() {
        let api = Api::new("http://127.0.0.1:4443", "s");
        assert_eq!(
            api.ws_url_for("s1", "ws://127.0.0.3:5000?sessionId=s1&token=tok_x"),
            "ws://127.0.0.3:5000/openvidu?sessionId=s1"
        );
        assert_eq!(
            api.ws_url_for("s1", "wss://sfu.example:443?sessionId=s1&token=tok_x"),
            "wss://sfu.example/openvidu?sessionId=s1"
        );
        assert_eq!(api.ws_url_for("s1", "tok_x"), "ws://127.0.0.1:4443/openvidu?sessionId=s1");
    }
}
