//! A Janus target for `ringsfu-load` (`--targets ...,janus`): the same topology (P publishers x
//! S subscribers x K sessions) through Debian's `janus` (VideoRoom plugin, HTTP transport), so
//! one run measures ringsfu and Janus side by side.
//!
//! 1. The run moves into a network namespace of its own ([`enter_netns`]: Janus gathers no
//!    loopback candidate, and this gives it one interface whose replies reach the clients'
//!    127.10.x.y addresses). [`JanusServer::start`] writes a config dir in a temp dir (HTTP on
//!    127.0.0.1 only, the VideoRoom plugin and the HTTP transport only, no STUN/TURN, ICE lite,
//!    half-trickle with every candidate in the SDP, an RTP port range) and starts `janus` on
//!    it. Its libnice still sends connectivity checks in lite mode: the clients answer them
//!    (`SecureSpec::local_pwd`) and check and nominate as they do with ringsfu.
//! 2. A session (a room) is one Janus session with one long-poll task ([`JanusSession`]) that
//!    hands every event to the request whose transaction it names, and sends a keepalive every
//!    [`KEEPALIVE`].
//! 3. Publisher: attach, `joinandconfigure` with the tool's offer (`a=setup:active`: the load
//!    clients are DTLS clients), the answer in the event. Subscriber leg: attach, `join` as
//!    `ptype: subscriber` for the publisher's feed, Janus's offer in the event, the answer from
//!    [`write_answer`] sent with `start`.
//!
//! The messages are plain JSON ([`parse_reply`] sorts one into [`Reply`]); the SDP is read with
//! the crate's own parser ([`crate::sdp::parse`]). Written by hand: no crate speaks the Janus
//! API.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::sdp::{self, MediaKind, RemoteDescription};

/// Every awaited reply is bounded by this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// A keepalive per session this often (Janus drops a session silent for 60 s).
pub const KEEPALIVE: Duration = Duration::from_secs(25);

/// Why a Janus message could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// Not a JSON object with a `janus` string.
    NotAMessage,
    /// `janus: "error"` (core API): its code and reason.
    Janus(i64, String),
    /// The VideoRoom plugin's `error_code` and `error`.
    Plugin(i64, String),
    /// A `jsep` without a `type` of offer/answer or without `sdp`.
    BadJsep,
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplyError::NotAMessage => f.write_str("not a Janus message"),
            ReplyError::Janus(c, r) => write!(f, "Janus error {c}: {r}"),
            ReplyError::Plugin(c, r) => write!(f, "VideoRoom error {c}: {r}"),
            ReplyError::BadJsep => f.write_str("a jsep without type or sdp"),
        }
    }
}

/// An offer or answer carried in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jsep {
    pub offer: bool,
    pub sdp: String,
}

/// One Janus message, sorted.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// The request was taken; its result comes as an event with the same transaction.
    Ack,
    /// A synchronous result: `data` (create, attach) or the plugin's data (room `create`).
    Success { data: Value },
    /// An asynchronous plugin event: the handle it is from, the plugin's data, a jsep.
    Event { sender: u64, data: Value, jsep: Option<Jsep> },
    /// Anything else (`keepalive`, `webrtcup`, `media`, `slowlink`, `hangup`, `detached`):
    /// its `janus` value.
    Notice(String),
}

/// Sorts one message (see [`Reply`]); plugin errors come back as [`ReplyError::Plugin`].
pub fn parse_reply(v: &Value) -> Result<Reply, ReplyError> {
    let kind = v.get("janus").and_then(Value::as_str).ok_or(ReplyError::NotAMessage)?;
    let plugin_data = v.get("plugindata").and_then(|p| p.get("data"));
    if let Some(d) = plugin_data
        && let Some(code) = d.get("error_code").and_then(Value::as_i64)
    {
        let reason = d.get("error").and_then(Value::as_str).unwrap_or("").to_string();
        return Err(ReplyError::Plugin(code, reason));
    }
    match kind {
        "ack" => Ok(Reply::Ack),
        "success" => Ok(Reply::Success {
            data: plugin_data.or_else(|| v.get("data")).cloned().unwrap_or(Value::Null),
        }),
        "error" => {
            let e = v.get("error");
            let code = e.and_then(|e| e.get("code")).and_then(Value::as_i64).unwrap_or(0);
            let reason =
                e.and_then(|e| e.get("reason")).and_then(Value::as_str).unwrap_or("").to_string();
            Err(ReplyError::Janus(code, reason))
        }
        "event" => {
            let jsep = match v.get("jsep") {
                None | Some(Value::Null) => None,
                Some(j) => {
                    let offer = match j.get("type").and_then(Value::as_str) {
                        Some("offer") => true,
                        Some("answer") => false,
                        _ => return Err(ReplyError::BadJsep),
                    };
                    let sdp =
                        j.get("sdp").and_then(Value::as_str).ok_or(ReplyError::BadJsep)?.into();
                    Some(Jsep { offer, sdp })
                }
            };
            Ok(Reply::Event {
                sender: v.get("sender").and_then(Value::as_u64).unwrap_or(0),
                data: plugin_data.cloned().unwrap_or(Value::Null),
                jsep,
            })
        }
        other => Ok(Reply::Notice(other.to_string())),
    }
}

/// The messages of one long-poll answer: Janus sends an array with `maxev`, else one object.
pub fn poll_messages(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        o => vec![o],
    }
}

/// What goes into a subscriber's answer besides Janus's offer.
#[derive(Debug, Clone)]
pub struct AnswerParams<'a> {
    pub ice_ufrag: &'a str,
    pub ice_pwd: &'a str,
    /// `sha-256` fingerprint as written after `a=fingerprint:sha-256 `.
    pub fingerprint: &'a str,
    /// The client's host candidate.
    pub candidate: SocketAddr,
    pub session_id: u64,
}

/// A receive-only answer to Janus's subscriber offer: every audio and video m-line accepted
/// with its first codec (`recvonly`, rtcp-mux, no header extensions), anything else rejected
/// (port 0), one BUNDLE group of the accepted mids, `a=setup:active` (the load clients are DTLS
/// clients). `None` when the offer accepts nothing.
pub fn write_answer(offer: &RemoteDescription, p: &AnswerParams<'_>) -> Option<String> {
    let accepted: Vec<&sdp::MediaSection> = offer
        .media
        .iter()
        .filter(|m| {
            matches!(m.kind, Some(MediaKind::Audio | MediaKind::Video))
                && m.port != 0
                && m.codecs.first().is_some_and(writable_codec)
                && valid_token(&m.mid)
        })
        .collect();
    if accepted.is_empty() {
        return None;
    }
    let mut s = String::with_capacity(1024);
    // Writing into a String cannot fail.
    let _ = write!(s, "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n", p.session_id);
    let mids: Vec<&str> = accepted.iter().map(|m| m.mid.as_str()).collect();
    let _ = write!(s, "a=group:BUNDLE {}\r\na=msid-semantic: WMS\r\n", mids.join(" "));
    let mut first = true;
    for m in &offer.media {
        let take = accepted.iter().any(|a| std::ptr::eq(*a, m));
        let Some(c) = m.codecs.first().filter(|_| take) else {
            // Rejected: the m-line echoed with port 0 and a format it offered.
            let media = if m.kind == Some(MediaKind::Audio) { "audio" } else { "video" };
            let _ = write!(s, "m={media} 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n");
            if valid_token(&m.mid) && !mids.contains(&m.mid.as_str()) {
                let _ = write!(s, "a=mid:{}\r\n", m.mid);
            }
            s.push_str("a=inactive\r\n");
            continue;
        };
        let media = if m.kind == Some(MediaKind::Audio) { "audio" } else { "video" };
        let _ = write!(
            s,
            "m={media} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=fingerprint:sha-256 {}\r\na=setup:active\r\n\
             a=mid:{}\r\na=recvonly\r\n",
            p.ice_ufrag,
            p.ice_pwd,
            p.fingerprint,
            m.mid,
            pt = c.pt
        );
        if first {
            let _ = write!(
                s,
                "a=candidate:1 1 udp 2122260223 {} {} typ host generation 0\r\n\
                 a=end-of-candidates\r\n",
                p.candidate.ip(),
                p.candidate.port()
            );
            first = false;
        }
        s.push_str("a=rtcp-mux\r\n");
        let _ = write!(s, "a=rtpmap:{} {}/{}", c.pt, c.name, c.clock_rate);
        if let Some(ch) = c.channels {
            let _ = write!(s, "/{ch}");
        }
        s.push_str("\r\n");
    }
    Some(s)
}

/// A codec the answer can name: a dynamic-or-static RTP payload type, a name without
/// separators, a clock rate.
fn writable_codec(c: &sdp::Codec) -> bool {
    c.pt <= 127 && c.clock_rate > 0 && valid_token(&c.name) && !c.name.contains('/')
}

/// A token safe to write into an SDP line (no spaces or line breaks, not empty).
fn valid_token(t: &str) -> bool {
    !t.is_empty() && t.len() <= 64 && t.bytes().all(|b| b.is_ascii_graphic())
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// The Janus HTTP API of one server.
#[derive(Clone)]
pub struct JanusApi {
    http: reqwest::Client,
    /// `http://127.0.0.1:PORT/janus`
    base: String,
}

fn transaction() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

impl JanusApi {
    pub fn new(base: &str) -> JanusApi {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT + Duration::from_secs(40))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        JanusApi { http, base: base.trim_end_matches('/').to_string() }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        let r = tokio::time::timeout(
            CALL_TIMEOUT,
            self.http.post(format!("{}{path}", self.base)).json(&body).send(),
        )
        .await
        .map_err(|_| format!("POST {path}: timed out"))?
        .map_err(|e| format!("POST {path}: {e}"))?;
        r.json().await.map_err(|e| format!("POST {path}: {e}"))
    }

    /// True once the API answers `info`.
    pub async fn ready(&self) -> bool {
        match self.http.get(format!("{}/info", self.base)).send().await {
            Ok(r) => r.status().is_success(),
            Err(_) => false,
        }
    }
}

/// One Janus session, its long-poll task and its keepalives (both end when it is dropped).
pub struct JanusSession {
    api: JanusApi,
    pub id: u64,
    pending: Pending,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JanusSession {
    pub async fn create(api: &JanusApi) -> Result<JanusSession, String> {
        let v = api.post("", json!({"janus": "create", "transaction": transaction()})).await?;
        let id = match parse_reply(&v).map_err(|e| format!("create: {e}"))? {
            Reply::Success { data } => data.get("id").and_then(Value::as_u64),
            _ => None,
        }
        .ok_or("create: no session id")?;
        let pending: Pending = Arc::default();
        let task = tokio::spawn(poll_loop(api.clone(), id, pending.clone()));
        Ok(JanusSession { api: api.clone(), id, pending, task })
    }

    /// Attaches a VideoRoom handle.
    pub async fn attach(&self) -> Result<u64, String> {
        let v = self
            .api
            .post(
                &format!("/{}", self.id),
                json!({"janus": "attach", "plugin": "janus.plugin.videoroom",
                       "transaction": transaction()}),
            )
            .await?;
        match parse_reply(&v).map_err(|e| format!("attach: {e}"))? {
            Reply::Success { data } => data.get("id").and_then(Value::as_u64),
            _ => None,
        }
        .ok_or_else(|| "attach: no handle id".into())
    }

    /// A plugin request on `handle`; its result, synchronous or the event that answers it.
    pub async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Jsep>,
    ) -> Result<(Value, Option<Jsep>), String> {
        let tx = transaction();
        let mut msg = json!({"janus": "message", "body": body, "transaction": tx});
        if let Some(j) = jsep {
            msg["jsep"] = json!({"type": if j.offer { "offer" } else { "answer" }, "sdp": j.sdp});
        }
        let (send, recv) = oneshot::channel();
        lock(&self.pending).insert(tx.clone(), send);
        let path = format!("/{}/{handle}", self.id);
        let what = body_request(&msg);
        let v = match self.api.post(&path, msg).await {
            Ok(v) => v,
            Err(e) => {
                lock(&self.pending).remove(&tx);
                return Err(e);
            }
        };
        let first = parse_reply(&v);
        let v = match first {
            Ok(Reply::Ack) => tokio::time::timeout(CALL_TIMEOUT, recv)
                .await
                .map_err(|_| format!("{what}: no event within {CALL_TIMEOUT:?}"))?
                .map_err(|_| format!("{what}: the session's poller ended"))?,
            _ => {
                lock(&self.pending).remove(&tx);
                v
            }
        };
        match parse_reply(&v).map_err(|e| format!("{what}: {e}"))? {
            Reply::Success { data } => Ok((data, None)),
            Reply::Event { data, jsep, .. } => Ok((data, jsep)),
            r => Err(format!("{what}: unexpected reply {r:?}")),
        }
    }
}

fn body_request(msg: &Value) -> String {
    msg["body"]["request"].as_str().unwrap_or("message").to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map is still a map: a panicking holder cannot leave it half-written.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Long-polls the session's events, hands each to its transaction's waiter, and keeps the
/// session alive. Ends with the session (aborted on drop) or when Janus forgets it.
async fn poll_loop(api: JanusApi, id: u64, pending: Pending) {
    let mut next_keepalive = Instant::now() + KEEPALIVE;
    loop {
        if Instant::now() >= next_keepalive {
            next_keepalive = Instant::now() + KEEPALIVE;
            let _ = api
                .post(
                    &format!("/{id}"),
                    json!({"janus": "keepalive", "transaction": transaction()}),
                )
                .await;
        }
        let url = format!("{}/{id}?maxev=20&rid={}", api.base, rand::random::<u32>());
        let got = match api.http.get(url).send().await {
            Ok(r) => r.json::<Value>().await.ok(),
            Err(_) => None,
        };
        let Some(v) = got else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for m in poll_messages(v) {
            if matches!(parse_reply(&m), Err(ReplyError::Janus(458, _))) {
                // No such session: nothing more will come.
                return;
            }
            let Some(tx) = m.get("transaction").and_then(Value::as_str) else { continue };
            if let Some(waiter) = lock(&pending).remove(tx) {
                let _ = waiter.send(m);
            }
        }
    }
}

/// A Janus process started by the tool, with its config dir (removed with it).
pub struct JanusServer {
    pub child: std::process::Child,
    pub api: JanusApi,
    dir: std::path::PathBuf,
}

impl Drop for JanusServer {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // `RINGSFU_LOAD_KEEP_JANUS=1` keeps the config dir and Janus's log for a look.
        if std::env::var_os("RINGSFU_LOAD_KEEP_JANUS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Where Debian installs Janus's modules.
const JANUS_LIB: &str = "/usr/lib/x86_64-linux-gnu/janus";
/// Every module of Debian's package but the VideoRoom plugin and the HTTP transport.
const OTHER_PLUGINS: &str = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,\
    libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,\
    libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so";
const OTHER_TRANSPORTS: &str = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,\
    libjanus_rabbitmq.so,libjanus_websockets.so";

/// The config files of a Janus serving HTTP on `127.0.0.1:http_port` (`(file name, text)`).
pub fn config_files(
    dir: &std::path::Path,
    http_port: u16,
    rtp_ports: (u16, u16),
    event_loops: u32,
) -> Vec<(&'static str, String)> {
    let keep = std::env::var_os("RINGSFU_LOAD_KEEP_JANUS").is_some();
    let (debug, nice) = if keep { (5, true) } else { (3, false) };
    let loops =
        if event_loops > 0 { format!("\tevent_loops = {event_loops}\n") } else { "".into() };
    let main = format!(
        "general: {{\n\tconfigs_folder = \"{dir}\"\n\tplugins_folder = \"{JANUS_LIB}/plugins\"\n\
         \ttransports_folder = \"{JANUS_LIB}/transports\"\n\tevents_folder = \"{JANUS_LIB}/events\"\n\
         \tloggers_folder = \"{JANUS_LIB}/loggers\"\n\tdebug_level = {debug}\n\tsession_timeout = 60\n\
         {loops}}}\nmedia: {{\n\tipv6 = false\n\trtp_port_range = \"{}-{}\"\n}}\n\
         nat: {{\n\tnice_debug = {nice}\n\tice_lite = true\n\tfull_trickle = false\n\tice_ignore_list = \"vmnet\"\n}}\n\
         plugins: {{\n\tdisable = \"{OTHER_PLUGINS}\"\n}}\n\
         transports: {{\n\tdisable = \"{OTHER_TRANSPORTS}\"\n}}\n\
         loggers: {{\n\tdisable = \"libjanus_jsonlog.so\"\n}}\nevents: {{\n\tbroadcast = false\n}}\n",
        rtp_ports.0,
        rtp_ports.1,
        dir = dir.display()
    );
    let http = format!(
        "general: {{\n\tjson = \"compact\"\n\tbase_path = \"/janus\"\n\thttp = true\n\
         \tport = {http_port}\n\tip = \"127.0.0.1\"\n\thttps = false\n}}\n\
         admin: {{\n\tadmin_http = false\n}}\n"
    );
    vec![
        ("janus.jcfg", main),
        ("janus.transport.http.jcfg", http),
        ("janus.plugin.videoroom.jcfg", "general: {\n}\n".into()),
    ]
}

impl JanusServer {
    /// Starts `bin` on a fresh config dir; waits (at most 15 s) until its API answers.
    pub async fn start(
        bin: &std::path::Path,
        http_port: u16,
        rtp_ports: (u16, u16),
        event_loops: u32,
    ) -> Result<JanusServer, String> {
        let dir = std::env::temp_dir()
            .join(format!("ringsfu-load-janus-{}-{http_port}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (name, text) in config_files(&dir, http_port, rtp_ports, event_loops) {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))?;
        }
        let log =
            std::fs::File::create(dir.join("janus.log")).map_err(|e| format!("janus.log: {e}"))?;
        let child = std::process::Command::new(bin)
            .arg("-C")
            .arg(dir.join("janus.jcfg"))
            .arg("-F")
            .arg(&dir)
            .arg("--disable-colors")
            .stdout(log)
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let api = JanusApi::new(&format!("http://127.0.0.1:{http_port}/janus"));
        let mut s = JanusServer { child, api, dir };
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if s.api.ready().await {
                return Ok(s);
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                return Err(format!("{} exited: {st} (log: {})", bin.display(), s.log_tail()));
            }
            if Instant::now() >= end {
                return Err(format!("{} did not answer within 15 s", bin.display()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of Janus's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("janus.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

/// The address of Janus's host candidate in the namespace [`enter_netns`] makes.
pub const NETNS_ADDR: &str = "10.99.0.1";

/// Moves the calling thread (and every thread and process it starts afterwards: the load
/// shell, the servers) into a new network namespace with `lo` up and a veth pair, `jv0`
/// holding [`NETNS_ADDR`] with the clients' `127.10.0.0/16` routed locally through it. Needs
/// CAP_SYS_ADMIN and iproute2.
///
/// Why: Janus never gathers loopback interfaces, and libnice pins each host candidate's
/// socket to its interface (`IP_UNICAST_IF`), so a reply to a client's 127.10.x.y leaves by
/// that interface instead of `lo`. A local route for the clients' addresses on that very
/// interface brings it back. Nothing leaves the namespace: it has no other interface.
pub fn enter_netns() -> Result<(), String> {
    // SAFETY: unshare(2) with one flag; it changes only this thread's network namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "a network namespace for the Janus target: unshare: {} (run as root, or pass \
             --no-netns in a namespace set up as `load::janus::enter_netns` describes)",
            std::io::Error::last_os_error()
        ));
    }
    let route = ["route", "add", "local", "127.10.0.0/16", "dev", "jv0", "table", "local"];
    let addr = format!("{NETNS_ADDR}/32");
    let steps: [&[&str]; 6] = [
        &["link", "set", "lo", "up"],
        &["link", "add", "jv0", "type", "veth", "peer", "name", "jv1"],
        &["addr", "add", &addr, "dev", "jv0"],
        &["link", "set", "jv0", "up"],
        &["link", "set", "jv1", "up"],
        &route,
    ];
    for args in steps {
        let st = std::process::Command::new("ip")
            .args(args)
            .status()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if !st.success() {
            return Err(format!("ip {}: {st}", args.join(" ")));
        }
    }
    Ok(())
}

/// The publisher's offer as Janus needs it: the tool's offer with `a=setup:active` (Janus
/// would take the DTLS client role on `actpass`, and the load clients are DTLS clients).
pub fn publisher_offer(offer: &str) -> String {
    offer.replace("a=setup:actpass", "a=setup:active")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Janus 1.1.2's replies as it sent them to this tool (trimmed SDP).
    const JOINED: &str = r#"{"janus":"event","session_id":38,"transaction":"t1","sender":35,
        "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"joined",
        "room":1234,"id":2045730215523647,"private_id":617190177,"publishers":[]}},
        "jsep":{"type":"answer","sdp":"v=0\r\n"}}"#;
    const NO_FEED: &str = r#"{"janus":"event","session_id":38,"transaction":"t2","sender":22,
        "plugindata":{"plugin":"janus.plugin.videoroom","data":{"videoroom":"event",
        "error_code":428,"error":"No such feed (2045730215523647)"}}}"#;
    const CREATED: &str = r#"{"janus":"success","session_id":78,"transaction":"t3",
        "sender":60,"plugindata":{"plugin":"janus.plugin.videoroom","data":{
        "videoroom":"created","room":1234,"permanent":false}}}"#;
    const SESSION: &str = r#"{"janus":"success","transaction":"a","data":{"id":8364661240655608}}"#;
    const NO_SESSION: &str = r#"{"janus":"error","session_id":1,"transaction":"x",
        "error":{"code":458,"reason":"No such session 1"}}"#;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).expect("json")
    }

    #[test]
    fn replies_are_sorted() {
        match parse_reply(&v(JOINED)) {
            Ok(Reply::Event { sender, data, jsep: Some(j) }) => {
                assert_eq!(sender, 35);
                assert_eq!(data["id"].as_u64(), Some(2045730215523647));
                assert!(!j.offer);
                assert_eq!(j.sdp, "v=0\r\n");
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(
            parse_reply(&v(NO_FEED)),
            Err(ReplyError::Plugin(428, "No such feed (2045730215523647)".into()))
        );
        match parse_reply(&v(CREATED)) {
            Ok(Reply::Success { data }) => assert_eq!(data["videoroom"], "created"),
            r => panic!("{r:?}"),
        }
        match parse_reply(&v(SESSION)) {
            Ok(Reply::Success { data }) => assert_eq!(data["id"].as_u64(), Some(8364661240655608)),
            r => panic!("{r:?}"),
        }
        assert_eq!(
            parse_reply(&v(NO_SESSION)),
            Err(ReplyError::Janus(458, "No such session 1".into()))
        );
        assert_eq!(parse_reply(&v(r#"{"janus":"ack","transaction":"t"}"#)), Ok(Reply::Ack));
        assert_eq!(
            parse_reply(&v(r#"{"janus":"webrtcup","sender":4}"#)),
            Ok(Reply::Notice("webrtcup".into()))
        );
        assert_eq!(parse_reply(&v("[1]")), Err(ReplyError::NotAMessage));
        assert_eq!(parse_reply(&v(r#"{"janus":1}"#)), Err(ReplyError::NotAMessage));
        assert_eq!(
            parse_reply(&v(r#"{"janus":"event","jsep":{"type":"pranswer","sdp":""}}"#)),
            Err(ReplyError::BadJsep)
        );
        assert_eq!(poll_messages(v(r#"[{"janus":"keepalive"},{"janus":"ack"}]"#)).len(), 2);
        assert_eq!(poll_messages(v(r#"{"janus":"keepalive"}"#)).len(), 1);
    }

    /// Janus 1.1.2's subscriber offer (as it sent it here, trimmed to one candidate per
    /// m-line).
    pub(crate) const JANUS_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 192.0.2.2\r\ns=VideoRoom 1234\r\n\
        t=0 0\r\na=group:BUNDLE 0 1\r\na=ice-lite\r\na=fingerprint:sha-256 C5:5D:CE:CB:8F:03:1A:\
        13:00:F9:A6:C5:7B:F6:17:DF:68:C7:81:AC:F5:21:3D:71:5F:F7:AB:58:6A:0A:4F:F3\r\n\
        a=extmap-allow-mixed\r\na=msid-semantic: WMS *\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        c=IN IP4 192.0.2.2\r\na=sendonly\r\na=mid:0\r\na=rtcp-mux\r\na=ice-ufrag:aOVL\r\n\
        a=ice-pwd:wYWrtvVW6pFqSMZ5NCDLyX\r\na=setup:actpass\r\na=rtpmap:111 opus/48000/2\r\n\
        a=msid:janus janus0\r\na=ssrc:1205078892 cname:janus\r\n\
        a=candidate:1 1 udp 2015363327 192.0.2.2 40735 typ host\r\na=end-of-candidates\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 192.0.2.2\r\na=sendonly\r\na=mid:1\r\n\
        a=rtcp-mux\r\na=ice-ufrag:aOVL\r\na=ice-pwd:wYWrtvVW6pFqSMZ5NCDLyX\r\n\
        a=setup:actpass\r\na=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 ccm fir\r\n\
        a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\na=msid:janus janus1\r\n\
        a=ssrc:4092528495 cname:janus\r\n\
        a=candidate:1 1 udp 2015363327 192.0.2.2 40735 typ host\r\na=end-of-candidates\r\n";

    #[test]
    fn subscriber_answer_accepts_every_track() {
        let offer = sdp::parse(JANUS_OFFER).expect("Janus's offer parses");
        let fp = (0..32).map(|i| format!("{i:02X}")).collect::<Vec<_>>().join(":");
        let a = write_answer(
            &offer,
            &AnswerParams {
                ice_ufrag: "abcd",
                ice_pwd: "0123456789abcdefghijklmn",
                fingerprint: &fp,
                candidate: "127.10.0.3:5000".parse().expect("addr"),
                session_id: 9,
            },
        )
        .expect("an answer");
        let d = sdp::parse(&a).expect("the answer parses");
        assert_eq!(d.bundle, ["0", "1"]);
        assert_eq!(d.setup, sdp::Setup::Active);
        assert_eq!(d.ice_ufrag, "abcd");
        assert_eq!(d.media.len(), 2);
        assert_eq!(d.media[0].codecs[0].pt, 111);
        assert_eq!(d.media[1].codecs[0].name, "VP8");
        assert!(d.media.iter().all(|m| m.direction == sdp::Direction::RecvOnly));
        assert_eq!(d.candidates.len(), 1);
        // The server's candidate (IPv4, UDP) is where the client sends.
        assert_eq!(offer.candidates[0].addr, "192.0.2.2:40735".parse().expect("addr"));
    }

    /// A data channel m-line is rejected (port 0) and left out of the BUNDLE group; the answer
    /// still parses and keeps every m-line.
    #[test]
    fn subscriber_answer_rejects_what_it_cannot_receive() {
        let with_data = format!(
            "{JANUS_OFFER}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n\
             c=IN IP4 192.0.2.2\r\na=mid:2\r\na=sctp-port:5000\r\n"
        )
        .replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2");
        let offer = sdp::parse(&with_data).expect("parses");
        assert_eq!(offer.media.len(), 3);
        let p = AnswerParams {
            ice_ufrag: "abcd",
            ice_pwd: "0123456789abcdefghijklmn",
            fingerprint: &["AB"; 32].join(":"),
            candidate: "127.10.0.3:5000".parse().expect("addr"),
            session_id: 9,
        };
        let a = write_answer(&offer, &p).expect("an answer");
        let d = sdp::parse(&a).expect("the answer parses");
        assert_eq!(d.media.len(), 3);
        assert_eq!(d.media[2].port, 0);
        assert_eq!(d.bundle, ["0", "1"]);
        // Nothing to accept: no answer.
        let mut none = offer.clone();
        none.media.retain(|m| m.kind.is_none());
        assert!(write_answer(&none, &p).is_none());
    }

    #[test]
    fn publisher_offer_is_active() {
        let o = publisher_offer("a=setup:actpass\r\nm=x\r\na=setup:actpass\r\n");
        assert_eq!(o, "a=setup:active\r\nm=x\r\na=setup:active\r\n");
    }

    #[test]
    fn config_is_loopback_and_lite() {
        let files = config_files(std::path::Path::new("/tmp/x"), 18088, (40000, 40999), 0);
        let main = &files[0].1;
        assert!(main.contains("ice_lite = true"));
        assert!(main.contains("rtp_port_range = \"40000-40999\""));
        assert!(!main.contains("stun_server"));
        assert!(!main.contains("event_loops"));
        assert!(files[1].1.contains("ip = \"127.0.0.1\""));
        let with_loops = config_files(std::path::Path::new("/tmp/x"), 1, (1, 2), 2);
        assert!(with_loops[0].1.contains("event_loops = 2"));
    }
}
