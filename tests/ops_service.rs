//! The binary under a (simulated) service manager: the sd_notify protocol (READY, STATUS,
//! WATCHDOG, RELOADING, STOPPING) on a socket the test owns, `SIGTERM` drain with a joined
//! participant, `SIGHUP` reload of the TLS certificate with an open WebSocket, JSON logs.
//! Every wait is bounded; nothing asserts a duration.

mod common;
mod ops_common;

use common::{Ws, join_params};
use futures_util::{SinkExt, StreamExt};
use ops_common::{NotifySocket, Server, TempDir, free_port, http_request, pem_fingerprint};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "OPS_SECRET";

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn rest(port: u16, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let r = client()
        .request(method, format!("http://127.0.0.1:{port}{path}"))
        .basic_auth("OPENVIDUAPP", Some(SECRET))
        .json(&body)
        .send()
        .await
        .expect("request");
    common::status_json(r).await
}

async fn token(port: u16, sid: &str) -> String {
    let (st, v) = rest(
        port,
        reqwest::Method::POST,
        &format!("/openvidu/api/sessions/{sid}/connection"),
        json!({}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    v["token"].as_str().expect("token").to_string()
}

#[tokio::test(flavor = "current_thread")]
async fn notify_protocol_and_sigterm_drain_with_a_joined_participant() {
    let dir = TempDir::new("ops-drain");
    let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
    let port = free_port();
    let mut server = Server::spawn(
        port,
        &["--secret", SECRET, "--log-format", "json", "--set", "server.drain_timeout=3"],
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")],
    );

    // READY=1 with a status line, then watchdog keep-alives.
    let ready = notify.wait("READY=1", |m| m.contains("READY=1")).await;
    assert!(ready.contains("STATUS=Serving: 0 sessions, 0 participants"), "{ready}");
    notify.wait("WATCHDOG=1", |m| m == "WATCHDOG=1").await;
    notify.wait("a second WATCHDOG=1", |m| m == "WATCHDOG=1").await;

    // A participant joins; the status line follows.
    let (st, v) = rest(
        port,
        reqwest::Method::POST,
        "/openvidu/api/sessions",
        json!({"customSessionId": "drain"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let tok_a = token(port, "drain").await;
    let tok_b = token(port, "drain").await;
    let mut ws = Ws::open(&format!("ws://127.0.0.1:{port}/openvidu?sessionId=drain")).await;
    let r = ws.call("joinRoom", Some(join_params("drain", &tok_a, "A"))).await;
    let me = r["result"]["id"].as_str().expect("joined").to_string();
    notify
        .wait("STATUS with 1 participant", |m| {
            m.contains("STATUS=Serving: 1 sessions, 1 participants")
        })
        .await;

    // The media shard is registered for metrics and the watchdog, and its loop turns.
    let text = client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .basic_auth("OPENVIDUAPP", Some(SECRET))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    assert!(text.contains("ringsfu_shards 1\n"), "{text}");
    assert!(text.contains("ringsfu_participants 1\n"), "{text}");
    let turns = text
        .lines()
        .find_map(|l| l.strip_prefix("ringsfu_shard_loop_turns_total{shard=\"0\"} "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("loop turns of shard 0");
    assert!(turns > 0, "{text}");

    // SIGTERM: STOPPING=1 (asking for the drain time), the participant is told.
    notify.forget();
    server.signal(libc::SIGTERM);
    let stopping = notify.wait("STOPPING=1", |m| m.contains("STOPPING=1")).await;
    assert!(stopping.contains("EXTEND_TIMEOUT_USEC="), "{stopping}");
    let ev = ws.notification("participantEvicted").await;
    assert_eq!(ev["connectionId"], me.as_str(), "{ev}");
    assert_eq!(ev["reason"], "openviduServerStopped", "{ev}");

    // While draining: health says so, new connections and joins are refused, the joined
    // participant is still served, keep-alives go on.
    let h = client().get(format!("http://127.0.0.1:{port}/health")).send().await.expect("health");
    assert_eq!(h.status().as_u16(), 503);
    let (st, v) =
        rest(port, reqwest::Method::POST, "/openvidu/api/sessions/drain/connection", json!({}))
            .await;
    assert_eq!(st, 503, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("draining"), "{v}");
    let mut ws_b = Ws::open(&format!("ws://127.0.0.1:{port}/openvidu?sessionId=drain")).await;
    let r = ws_b.call("joinRoom", Some(join_params("drain", &tok_b, "B"))).await;
    assert_eq!(r["error"]["code"], 203, "{r}");
    let pong = ws.call("ping", Some(json!({"interval": 5000}))).await;
    assert_eq!(pong["result"]["value"], "pong");
    assert!(server.running(), "the server must stay up while a participant remains");
    notify.wait("WATCHDOG=1 while draining", |m| m == "WATCHDOG=1").await;
    notify
        .wait("STATUS while draining", |m| {
            m.contains("STATUS=Draining: 1 sessions, 1 participants")
        })
        .await;

    // The drain ends at the timeout (the participant never left): evicted, socket closed, exit 0.
    assert!(
        ws.closed_by_server().await,
        "socket closed at the end of the drain: {:#?}",
        server.stderr_lines()
    );
    assert_eq!(server.exit_code().await, Some(0));
    let lines = server.stderr_lines();
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v.get("level").is_some() && v.get("fields").is_some(), "{l}");
    }
    assert!(
        lines.iter().any(|l| l.contains("drain timeout; evicting the rest")),
        "the drain lasted until its timeout: {lines:#?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn sigterm_with_nobody_connected_stops_at_once_and_sigint_too() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = TempDir::new(&format!("ops-quick-{sig}"));
        let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
        let port = free_port();
        // A drain timeout far beyond WAIT: the exit must come from "everyone has left".
        let mut server = Server::spawn(
            port,
            &["--secret", SECRET, "--set", "server.drain_timeout=3600"],
            &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
        );
        notify.wait("READY=1", |m| m.contains("READY=1")).await;
        server.signal(sig);
        notify.wait("STOPPING=1", |m| m.contains("STOPPING=1")).await;
        assert_eq!(server.exit_code().await, Some(0));
    }
}

fn write_cert(dir: &TempDir) -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let pem = ck.cert.pem();
    std::fs::write(dir.path("cert.pem"), &pem).unwrap();
    std::fs::write(dir.path("key.pem"), ck.signing_key.serialize_pem()).unwrap();
    pem
}

fn write_config(dir: &TempDir, log_level: &str, turn_secret: &str) -> std::path::PathBuf {
    let path = dir.path("ringsfu.toml");
    let text = format!(
        "[server]\nsecret = \"{SECRET}\"\ndrain_timeout = 1\nlog_level = \"{log_level}\"\n\
         [tls]\nenabled = true\ncert = \"{}\"\nkey = \"{}\"\n\
         [turn]\npublic_ip = \"127.0.0.1\"\nstatic_auth_secret = \"{turn_secret}\"\n",
        dir.path("cert.pem").display(),
        dir.path("key.pem").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

type Wss = tokio_tungstenite::WebSocketStream<ops_common::TlsStream>;

/// Sends a JSON-RPC request and returns its response (notifications are skipped).
async fn call(ws: &mut Wss, id: u64, method: &str, params: Value) -> Value {
    let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    ws.send(Message::Text(req.to_string().into())).await.expect("send");
    loop {
        let m = tokio::time::timeout(ops_common::WAIT, ws.next())
            .await
            .expect("answer in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).expect("JSON");
            if v["id"] == json!(id) {
                return v;
            }
        }
    }
}

/// Creates a connection in session `tls` over HTTPS and joins it over WSS.
async fn join_wss(port: u16, client: &str) -> (Wss, Value) {
    let (tls, _) = ops_common::tls_connect(port).await;
    let (st, body) =
        http_request(tls, "POST", "/openvidu/api/sessions/tls/connection", SECRET, "{}").await;
    assert_eq!(st, 200, "{body}");
    let tok: Value = serde_json::from_str(&body).expect("connection JSON");
    let (tls, _) = ops_common::tls_connect(port).await;
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{port}/openvidu?sessionId=tls"),
        tls,
    )
    .await
    .expect("wss upgrade");
    let token = tok["token"].as_str().expect("token");
    let r = call(&mut ws, 1, "joinRoom", join_params("tls", token, client)).await;
    assert!(r.get("result").is_some(), "{r}");
    (ws, r["result"].clone())
}

/// The TURN REST credential of a joinRoom result was made with `secret`.
fn turn_credential_made_with(joined: &Value, secret: &str) -> bool {
    let user = joined["turnUsername"].as_str().expect("turnUsername");
    let cred = joined["turnCredential"].as_str().expect("turnCredential");
    ringsfu::turn::auth::rest_password(secret.as_bytes(), user) == cred
}

#[tokio::test(flavor = "current_thread")]
async fn sighup_reloads_certificate_log_level_and_turn_secret_keeping_the_open_websocket() {
    let dir = TempDir::new("ops-reload");
    let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
    let pem_a = write_cert(&dir);
    let config = write_config(&dir, "info", "first");
    let port = free_port();
    let mut server = Server::spawn(
        port,
        &["--config", config.to_str().unwrap()],
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait("READY=1", |m| m.contains("READY=1")).await;
    let (_, fp) = ops_common::tls_connect(port).await;
    assert_eq!(fp, pem_fingerprint(&pem_a), "serves the first certificate");

    // A participant joins over WSS; its TURN credential comes from the first secret.
    let (tls, _) = ops_common::tls_connect(port).await;
    let (st, _) =
        http_request(tls, "POST", "/openvidu/api/sessions", SECRET, r#"{"customSessionId":"tls"}"#)
            .await;
    assert_eq!(st, 200);
    let (mut ws, joined) = join_wss(port, "T").await;
    assert!(turn_credential_made_with(&joined, "first"), "{joined}");

    // New certificate, log level and TURN secret on disk, SIGHUP: RELOADING=1 then READY=1.
    let pem_b = write_cert(&dir);
    write_config(&dir, "debug", "second");
    server.signal(libc::SIGHUP);
    let m = notify.wait("RELOADING=1", |m| m.contains("RELOADING=1")).await;
    assert!(m.contains("MONOTONIC_USEC="), "{m}");
    notify.wait("READY=1 after the reload", |m| m.contains("READY=1")).await;
    // New handshakes get the new certificate; the WebSocket opened before keeps working.
    let (_, fp) = ops_common::tls_connect(port).await;
    assert_eq!(fp, pem_fingerprint(&pem_b), "serves the reloaded certificate");
    let r = call(&mut ws, 2, "ping", json!({"interval": 5000})).await;
    assert_eq!(r["result"]["value"], "pong", "the WebSocket opened before the reload still works");
    // Debug logging is on now: an ignored binary frame is logged.
    ws.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send binary");
    let r = call(&mut ws, 3, "ping", json!({})).await;
    assert_eq!(r["result"]["value"], "pong");
    let deadline = tokio::time::Instant::now() + ops_common::WAIT;
    while !server.stderr_lines().iter().any(|l| l.contains("binary WebSocket frame ignored")) {
        assert!(tokio::time::Instant::now() < deadline, "log level not reloaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // New joins get credentials from the new TURN secret.
    let (_ws2, joined2) = join_wss(port, "U").await;
    assert!(turn_credential_made_with(&joined2, "second"), "{joined2}");

    // A broken certificate file: the reload fails and the running certificate stays.
    std::fs::write(dir.path("cert.pem"), "not a certificate").unwrap();
    server.signal(libc::SIGHUP);
    notify.wait("RELOADING=1", |m| m.contains("RELOADING=1")).await;
    notify.wait("READY=1 after the failed reload", |m| m.contains("READY=1")).await;
    let (_, fp) = ops_common::tls_connect(port).await;
    assert_eq!(fp, pem_fingerprint(&pem_b));
    let (tls, _) = ops_common::tls_connect(port).await;
    let (st, metrics) = http_request(tls, "GET", "/metrics", SECRET, "").await;
    assert_eq!(st, 200);
    assert!(metrics.contains("ringsfu_reloads_total{result=\"ok\"} 1\n"), "{metrics}");
    assert!(metrics.contains("ringsfu_reloads_total{result=\"error\"} 1\n"), "{metrics}");
    assert!(metrics.contains("ringsfu_participants 2\n"), "the session survived: {metrics}");
    let r = call(&mut ws, 4, "ping", json!({})).await;
    assert_eq!(r["result"]["value"], "pong");

    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code().await, Some(0));
}
