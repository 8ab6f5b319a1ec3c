//! Shared helpers: start the real server (same router and axum-server stack as the binary) on
//! an ephemeral loopback port, plus small REST and WebSocket JSON-RPC clients.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use ringsfu::config::Config;
use ringsfu::control::ControlPlane;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[path = "../port_claims/mod.rs"]
mod port_claims;

pub const SECRET: &str = "TEST_SECRET";
/// Upper bound for any awaited outcome (never asserted as a duration).
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Server {
    pub base: String,
    pub ws_url: String,
    pub control: ControlPlane,
    pub http: reqwest::Client,
}

/// Starts a server with default configuration adjusted by `tweak` (signaling only: no media
/// shards; see [`start_with_media`]).
pub async fn start(tweak: impl FnOnce(&mut Config)) -> Server {
    start_inner(tweak, false, |_| {}).await
}

/// Like [`start`], with `setup` run on the control plane before it serves (e.g. to attach a
/// recording backend).
pub async fn start_with(
    tweak: impl FnOnce(&mut Config),
    setup: impl FnOnce(&ControlPlane),
) -> Server {
    start_inner(tweak, false, setup).await
}

/// Like [`start`], with the media engine running (one shard on a kernel-chosen loopback port
/// unless `tweak` says otherwise).
#[allow(dead_code)]
pub async fn start_with_media(tweak: impl FnOnce(&mut Config)) -> Server {
    start_inner(
        |c| {
            c.media.shards = 1;
            c.media.port_base = 0;
            c.media.pin_threads = false;
            tweak(c);
        },
        true,
        |_| {},
    )
    .await
}

async fn start_inner(
    tweak: impl FnOnce(&mut Config),
    media: bool,
    setup: impl FnOnce(&ControlPlane),
) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("local addr").port();
    let mut cfg = Config::default();
    cfg.server.port = port;
    cfg.server.secret = SECRET.into();
    cfg.server.public_url = format!("http://127.0.0.1:{port}");
    cfg.turn.public_ip = "127.0.0.1".into();
    tweak(&mut cfg);
    let cfg = Arc::new(cfg);
    let control = ControlPlane::new(cfg.clone());
    if media {
        let engine = ringsfu::media::MediaEngine::start(cfg).expect("media engine starts");
        control.attach_media(engine);
    }
    setup(&control);
    let app = control.router();
    let server = axum_server::from_tcp(listener).expect("from_tcp");
    tokio::spawn(async move {
        let _ = server.serve(app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Server {
        base: format!("http://127.0.0.1:{port}"),
        ws_url: format!("ws://127.0.0.1:{port}/openvidu"),
        control,
        http: reqwest::Client::new(),
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).basic_auth("OPENVIDUAPP", Some(SECRET))
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.req(reqwest::Method::POST, path).json(&body).send().await.expect("request");
        status_json(r).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.req(reqwest::Method::GET, path).send().await.expect("request");
        status_json(r).await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.req(reqwest::Method::DELETE, path).send().await.expect("request").status().as_u16()
    }

    /// Creates a session (custom id optional) and returns its id.
    pub async fn session(&self, custom: Option<&str>) -> String {
        let body = match custom {
            Some(c) => json!({ "customSessionId": c }),
            None => json!({}),
        };
        let (st, v) = self.post("/openvidu/api/sessions", body).await;
        assert_eq!(st, 200, "{v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Creates a connection with `role`; returns (connectionId, token).
    pub async fn connection(&self, sid: &str, role: &str, data: &str) -> (String, String) {
        let (st, v) = self
            .post(
                &format!("/openvidu/api/sessions/{sid}/connection"),
                json!({"role": role, "data": data}),
            )
            .await;
        assert_eq!(st, 200, "{v}");
        (
            v["connectionId"].as_str().expect("id").to_string(),
            v["token"].as_str().expect("token").to_string(),
        )
    }

    /// A new connection of `sid` with `role`, joined as `name`: (connection id, its socket).
    pub async fn joined(&self, sid: &str, role: &str, name: &str) -> (String, Ws) {
        let (connection, token) = self.connection(sid, role, "").await;
        (connection, self.join(sid, &token, name).await.0)
    }

    /// Opens a WebSocket, pings and joins with `token`.
    pub async fn join(&self, sid: &str, token: &str, client: &str) -> (Ws, Value) {
        let mut ws = Ws::open(&format!("{}?sessionId={sid}", self.ws_url)).await;
        let pong = ws.call("ping", Some(json!({"interval": 5000}))).await;
        assert_eq!(pong["result"]["value"], "pong");
        let r = ws.call("joinRoom", Some(join_params(sid, token, client))).await;
        assert!(r.get("result").is_some(), "join failed: {r}");
        (ws, r["result"].clone())
    }
}

/// `publishVideo` params of a camera stream (30 fps, 640x480) with `offer`; `audio`: it has
/// an audio track.
pub fn publish_params(offer: &str, audio: bool) -> Value {
    json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": audio, "hasVideo": true,
           "audioActive": audio, "videoActive": true, "typeOfVideo": "CAMERA", "frameRate": 30,
           "videoDimensions": "{\"width\":640,\"height\":480}"})
}

pub fn join_params(sid: &str, token: &str, client: &str) -> Value {
    json!({"token": token, "session": sid, "platform": "Test 1.0", "sdkVersion": "2.32.2",
           "metadata": json!({"clientData": client}).to_string(), "secret": "", "recorder": false, "stt": false})
}

pub async fn status_json(r: reqwest::Response) -> (u16, Value) {
    let st = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (st, v)
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A JSON-RPC client like the browser's: integer ids from 0, notifications buffered.
pub struct Ws {
    pub stream: WsStream,
    next_id: u64,
    pub notifications: VecDeque<Value>,
}

impl Ws {
    pub async fn open(url: &str) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(url).await.expect("websocket connect");
        Ws { stream, next_id: 0, notifications: VecDeque::new() }
    }

    pub fn from_stream(stream: WsStream) -> Ws {
        Ws { stream, next_id: 0, notifications: VecDeque::new() }
    }

    pub async fn send_text(&mut self, text: String) {
        self.stream.send(Message::Text(text.into())).await.expect("send");
    }

    /// Next JSON frame, or None if the socket closed or nothing came within WAIT.
    pub async fn recv(&mut self) -> Option<Value> {
        loop {
            let m = tokio::time::timeout(WAIT, self.stream.next()).await.ok()??;
            match m {
                Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// Sends a request and waits for its response (notifications in between are buffered).
    pub async fn call(&mut self, method: &str, params: Option<Value>) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if let Some(p) = params {
            req["params"] = p;
        }
        self.send_text(req.to_string()).await;
        loop {
            let v = self.recv().await.unwrap_or_else(|| panic!("no response to {method}"));
            if v.get("id").is_some() && v.get("method").is_none() {
                assert_eq!(v["jsonrpc"], "2.0");
                if v["id"] == json!(id) {
                    return v;
                }
            } else {
                self.notifications.push_back(v);
            }
        }
    }

    /// Waits for a notification named `method` (earlier ones are kept in order).
    pub async fn notification(&mut self, method: &str) -> Value {
        if let Some(pos) = self.notifications.iter().position(|n| n["method"] == method) {
            return self.notifications.remove(pos).expect("present")["params"].clone();
        }
        loop {
            let v = self.recv().await.unwrap_or_else(|| panic!("no {method} notification"));
            if v["method"] == method {
                assert!(v.get("id").is_none(), "notifications carry no id");
                return v["params"].clone();
            }
            self.notifications.push_back(v);
        }
    }

    /// All notifications named `method` received until the socket goes quiet for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) -> Vec<Value> {
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(quiet, self.stream.next()).await
        {
            if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                self.notifications.push_back(v);
            }
        }
        self.notifications.drain(..).collect()
    }

    /// True once the server closed the socket (within WAIT).
    pub async fn closed_by_server(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(Message::Text(t)))) => {
                    if let Ok(v) = serde_json::from_str::<Value>(t.as_str()) {
                        self.notifications.push_back(v);
                    }
                }
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// Whether every tool in `tools` is on the PATH. Without one the calling test skips loudly
/// (`install` says how to get them), or fails when `RINGSFU_REQUIRE_TOOLS` is set
/// (`tools/test.sh` installs the tools and sets it: there a skip is a failure).
pub fn tools_present(tools: &[&str], install: &str) -> bool {
    let on_path = |t: &&str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = tools.iter().filter(|t| !on_path(t)).copied().collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("RINGSFU_REQUIRE_TOOLS").is_none(),
            "{missing:?} missing and RINGSFU_REQUIRE_TOOLS is set ({install})"
        );
        eprintln!("SKIPPED: {missing:?} not installed ({install})");
    }
    missing.is_empty()
}

/// A loopback port free for both UDP and TCP when checked (a TURN port serves both).
pub fn free_port() -> u16 {
    for _ in 0..100 {
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() && port_claims::claim(port, 1) {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// Writes `body` as `ringsfu.toml` in a scratch folder of its own (`ringsfu-<name>-<pid>`
/// under the temporary directory); its path.
pub fn write_config(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringsfu-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("ringsfu.toml");
    std::fs::write(&cfg, body).unwrap();
    cfg
}

/// A UDP port on 127.0.0.1 whose three successors are free too (two media shards' ports, then
/// their own TURN ports).
pub fn free_udp_run() -> u16 {
    for _ in 0..100 {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port <= u16::MAX - 3
            && (1..=3).all(|k| std::net::UdpSocket::bind(("127.0.0.1", port + k)).is_ok())
            && port_claims::claim(port, 4)
        {
            return port;
        }
    }
    panic!("no four consecutive UDP ports free");
}

/// A run of `count` UDP ports on `ip` that were all free when checked, the one at `held` kept
/// bound by the returned socket (a port "another process" holds); (socket, first port).
pub fn hold_port_in_free_run(ip: &str, count: u16, held: u16) -> (std::net::UdpSocket, u16) {
    use std::net::UdpSocket;
    for _ in 0..1000 {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        let p = s.local_addr().unwrap().port();
        if p < 1024 + held || p - held > u16::MAX - (count - 1) {
            continue;
        }
        let base = p - held;
        if (0..count).filter(|&k| k != held).all(|k| UdpSocket::bind((ip, base + k)).is_ok())
            && port_claims::claim(base, count)
        {
            return (s, base);
        }
    }
    panic!("no run of {count} free UDP ports on {ip}");
}

/// A child process killed (and reaped) when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` from a ringsfu binary on `127.0.0.1:http` whose `[server] secret` is
/// `secret`: the whole response (headers and body).
pub fn metrics_text(http: u16, secret: &str) -> std::io::Result<String> {
    use base64::Engine;
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("OPENVIDUAPP:{secret}"));
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Polls [`metrics_text`] (bounded: 50 times, 100 ms apart) until the sample `series` reads
/// `want`; the metrics text then. Panics with the last text otherwise.
pub fn await_metric(http: u16, secret: &str, series: &str, want: u64) -> String {
    let reads = |m: &str| {
        m.lines().any(|l| l.strip_prefix(series).is_some_and(|v| v.trim() == want.to_string()))
    };
    let mut last = String::new();
    for _ in 0..50 {
        last = metrics_text(http, secret).unwrap_or_else(|e| format!("({e})"));
        if reads(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{series} never reached {want}:\n{last}");
}

/// The last lines a child process logged (kept by [`await_log_line`]'s drain thread), for
/// failure messages.
#[derive(Clone, Default)]
pub struct LogTail(std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>);

impl LogTail {
    const KEEP: usize = 200;

    fn push(&self, line: String) {
        let mut q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() == Self::KEEP {
            q.pop_front();
        }
        q.push_back(line);
    }

    /// The kept lines, oldest first, one per line.
    pub fn text(&self) -> String {
        let q = self.0.lock().unwrap_or_else(|e| e.into_inner());
        q.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

/// Reads `child`'s piped stderr until a line contains `needle` (at most `max_lines` lines, and
/// no further than the process's end); panics with what it logged otherwise. The rest of its
/// log is drained by a thread so it never blocks on a full pipe; the returned tail keeps its
/// last lines.
pub fn await_log_line(child: &mut std::process::Child, needle: &str, max_lines: usize) -> LogTail {
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr piped");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut log = Vec::new();
    let mut ready = false;
    for _ in 0..max_lines {
        match lines.next() {
            Some(Ok(l)) if l.contains(needle) => {
                ready = true;
                break;
            }
            Some(Ok(l)) => log.push(l),
            _ => break,
        }
    }
    assert!(ready, "no log line with {needle:?}:\n{}", log.join("\n"));
    let tail = LogTail::default();
    let keep = tail.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            keep.push(l);
        }
    });
    tail
}

/// Whether something a test needs but cannot install (`what`, e.g. io_uring) is `available`.
/// Without it the calling test skips loudly, or fails when `RINGSFU_REQUIRE_TOOLS` is set (as
/// [`tools_present`] does for tools on the PATH).
pub fn available_or_skip(available: bool, what: &str) -> bool {
    if !available {
        assert!(
            std::env::var_os("RINGSFU_REQUIRE_TOOLS").is_none(),
            "{what} unavailable and RINGSFU_REQUIRE_TOOLS is set"
        );
        eprintln!("SKIPPED: {what} unavailable");
    }
    available
}

/// Whether io_uring is available: without it the calling test skips loudly, or fails under
/// `RINGSFU_REQUIRE_TOOLS` (`tools/test.sh`), see [`available_or_skip`].
#[allow(dead_code)]
pub fn uring_or_skip() -> bool {
    let uring = ringsfu::io::choose_backend(ringsfu::config::IoBackend::Uring);
    let why = uring.as_ref().err().cloned().unwrap_or_default();
    available_or_skip(uring.is_ok(), &format!("io_uring ({why})"))
}

/// The value of the sample `series` (name and labels exactly as exposed, e.g.
/// `ringsfu_shard_media_subscribers{shard="0"}`) in a Prometheus exposition `text`.
pub fn metric_value(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

impl Server {
    /// `GET /metrics` of this in-process server: the exposition text.
    pub async fn metrics(&self) -> String {
        let r = self.req(reqwest::Method::GET, "/metrics").send().await.expect("request");
        assert_eq!(r.status().as_u16(), 200);
        r.text().await.expect("metrics text")
    }

    /// The sample `series` on `/metrics` (see [`metric_value`]); panics when it is absent.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = self.metrics().await;
        metric_value(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    }

    /// Polls `/metrics` (bounded: 100 times, 50 ms apart) until `series` satisfies `ok`; its
    /// value then. Panics with the last value otherwise.
    pub async fn await_metric(&self, series: &str, what: &str, ok: impl Fn(u64) -> bool) -> u64 {
        let mut last = 0;
        for _ in 0..100 {
            last = self.metric(series).await;
            if ok(last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{series} never {what} (last {last})");
    }
}

/// Classic BPF for the seccomp filters of tests: the opcodes they use and this machine's
/// audit architecture.
pub mod bpf {
    /// BPF_LD | BPF_W | BPF_ABS
    pub const LD_W_ABS: u16 = 0x20;
    /// BPF_JMP | BPF_JEQ | BPF_K
    pub const JEQ_K: u16 = 0x15;
    /// BPF_RET | BPF_K
    pub const RET_K: u16 = 0x06;
    #[cfg(target_arch = "x86_64")]
    pub const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    pub const AUDIT_ARCH: u32 = 0xC000_00B7;

    /// One instruction.
    pub fn op(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }
}
