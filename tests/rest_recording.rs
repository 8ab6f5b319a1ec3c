//! The recording API (OpenVidu 2.32) over real loopback HTTP, WebSocket and webhooks, with a
//! recording backend defined here: it writes a small real file per stream recorder, reports
//! its completion on the control plane's channel, and can be told to fail. Covers every status
//! code, the state machine, ALWAYS mode and the autostop, the files route (auth, ranges, path
//! traversal) and the INDIVIDUAL `.json` / `.zip` layout.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Server, WAIT, start_with};
use reqwest::Method;
use ringsfu::control::recording::{
    BackendError, BackendEvent, ComposedRecordingSpec, EVENT_QUEUE, RecordingBackend,
    StreamRecorderId, StreamRecordingSpec,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The in-test recorder.
#[derive(Default)]
struct TestBackend {
    next: AtomicU64,
    events: Mutex<Option<mpsc::Sender<BackendEvent>>>,
    /// `start_individual` answers `Failed`.
    fail_start: AtomicBool,
    /// A stop reports `Failed` instead of the file.
    fail_finish: AtomicBool,
    started: Mutex<Vec<StreamRecordingSpec>>,
    files: Mutex<HashMap<u64, PathBuf>>,
}

impl TestBackend {
    fn send(&self, ev: BackendEvent) {
        if let Some(tx) = self.events.lock().unwrap().as_ref() {
            tx.try_send(ev).expect("event queue has room");
        }
    }
}

impl RecordingBackend for TestBackend {
    fn start_individual(
        &self,
        spec: StreamRecordingSpec,
    ) -> Result<StreamRecorderId, BackendError> {
        if self.fail_start.load(Ordering::Relaxed) {
            return Err(BackendError::Failed("no space left on device".into()));
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut file = spec.file_base.clone();
        file.set_extension("webm");
        // A small real file: its stream id repeated, so each file's content is known.
        let body = spec.stream_id.repeat(100);
        std::fs::write(&file, body).expect("recording dir exists when a recorder starts");
        self.files.lock().unwrap().insert(id, file);
        self.started.lock().unwrap().push(spec);
        Ok(StreamRecorderId(id))
    }

    fn stop_individual(&self, id: StreamRecorderId) {
        let file = self.files.lock().unwrap().remove(&id.0).expect("stop of a started recorder");
        if self.fail_finish.load(Ordering::Relaxed) {
            self.send(BackendEvent::Failed { id, reason: "disk full".into() });
            return;
        }
        let size = std::fs::metadata(&file).unwrap().len();
        self.send(BackendEvent::Finished {
            id,
            file,
            size,
            start_time_offset: 100,
            end_time_offset: 2100,
        });
    }

    fn start_composed(
        &self,
        _spec: ComposedRecordingSpec,
    ) -> Result<StreamRecorderId, BackendError> {
        Err(BackendError::Unsupported("COMPOSED needs the composer process".into()))
    }

    fn stop_composed(&self, _id: StreamRecorderId) {}
}

struct Rig {
    s: Server,
    backend: Arc<TestBackend>,
    dir: PathBuf,
    hooks: tokio::sync::Mutex<mpsc::UnboundedReceiver<Value>>,
}

/// Accepts the webhook POSTs, forwards their JSON bodies.
async fn hook_receiver() -> (String, mpsc::UnboundedReceiver<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..p]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < p + 4 + len {
                        continue;
                    }
                    let body =
                        serde_json::from_slice(&buf[p + 4..p + 4 + len]).unwrap_or(Value::Null);
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tx.send(body);
                    return;
                }
            });
        }
    });
    (url, rx)
}

async fn rig(tag: &str, tweak: impl FnOnce(&mut ringsfu::config::Config)) -> Rig {
    let dir = std::env::temp_dir().join(format!("ringsfu-rec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = Arc::new(TestBackend::default());
    let (url, hooks) = hook_receiver().await;
    let b = backend.clone();
    let d = dir.clone();
    let s = start_with(
        move |c| {
            c.recording.path = d.to_string_lossy().into_owned();
            c.webhook.enabled = true;
            c.webhook.endpoint = url;
            c.webhook.events = vec!["recordingStatusChanged".into(), "sessionDestroyed".into()];
            tweak(c);
        },
        move |cp| {
            let (tx, rx) = mpsc::channel(EVENT_QUEUE);
            *b.events.lock().unwrap() = Some(tx);
            assert!(cp.attach_recording(b.clone(), rx));
        },
    )
    .await;
    Rig { s, backend, dir, hooks: tokio::sync::Mutex::new(hooks) }
}

impl Rig {
    /// The next `recordingStatusChanged` webhook (others skipped).
    async fn status_hook(&self) -> Value {
        let mut hooks = self.hooks.lock().await;
        loop {
            let v = tokio::time::timeout(WAIT, hooks.recv())
                .await
                .expect("a webhook in time")
                .expect("receiver alive");
            if v["event"] == "recordingStatusChanged" {
                return v;
            }
        }
    }

    /// Polls GET /recordings/{id} until its status is `want`.
    async fn await_status(&self, id: &str, want: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (st, v) = self.s.get(&format!("/openvidu/api/recordings/{id}")).await;
            if st == 200 && v["status"] == want {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "{id} never {want}: {st} {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start(&self, body: Value) -> (u16, Value) {
        self.s.post("/openvidu/api/recordings/start", body).await
    }
}

fn camera() -> Map<String, Value> {
    let v = json!({"hasAudio": true, "hasVideo": true, "audioActive": true, "videoActive": true,
        "typeOfVideo": "CAMERA", "frameRate": 30, "videoDimensions": "{\"width\":640,\"height\":480}"});
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn without_a_backend_recording_is_off() {
    let dir = std::env::temp_dir().join(format!("ringsfu-rec-off-{}", std::process::id()));
    let d = dir.to_string_lossy().into_owned();
    // recording.enabled is true by default, but nothing records: the API says off.
    let s = common::start(move |c| c.recording.path = d).await;
    assert!(!s.control.recording_enabled());
    let (_, v) = s.get("/openvidu/api/config").await;
    assert_eq!(v["OPENVIDU_RECORDING"], false);
    assert!(v.get("OPENVIDU_RECORDING_PATH").is_none());
    let sid = s.session(None).await;
    let _a = s.joined(&sid, "PUBLISHER", "Ana").await;
    let (st, _) = s.post("/openvidu/api/recordings/start", json!({"session": sid})).await;
    assert_eq!(st, 501);
    let r = s.req(Method::GET, "/openvidu/recordings/x/x.zip").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    // ALWAYS sessions are accepted and record nothing visible (no recording to list either).
    let (st, _) = s
        .post("/openvidu/api/sessions", json!({"recordingMode": "ALWAYS", "customSessionId": "al"}))
        .await;
    assert_eq!(st, 200);
    let (_, v) = s.get("/openvidu/api/sessions/al").await;
    assert_eq!(v["recording"], false);

    // A backend attached to a deployment that turned recording off: still off.
    let s = start_with(
        |c| c.recording.enabled = false,
        |cp| {
            let (_tx, rx) = mpsc::channel(1);
            cp.attach_recording(Arc::new(TestBackend::default()), rx);
        },
    )
    .await;
    assert!(!s.control.recording_enabled());
    assert_eq!(s.get("/openvidu/api/recordings").await.0, 501);
    assert!(!dir.exists(), "nothing written while off");
}

#[tokio::test]
async fn status_codes_and_the_state_machine() {
    let r = rig("codes", |_| {}).await;
    let s = &r.s;
    let (_, v) = s.get("/openvidu/api/config").await;
    assert_eq!(v["OPENVIDU_RECORDING"], true, "{v}");
    assert_eq!(v["OPENVIDU_RECORDING_NOTIFICATION"], "publisher_moderator");
    assert_eq!(v["OPENVIDU_RECORDING_AUTOSTOP_TIMEOUT"], 120);
    assert!(v["OPENVIDU_RECORDING_PATH"].as_str().unwrap().ends_with('/'));
    let t = s.req(Method::GET, "/openvidu/api/config/openvidu-recording").send().await.unwrap();
    assert_eq!(t.text().await.unwrap(), "true");

    // 400: empty body, no session, mistyped session.
    let e = s.req(Method::POST, "/openvidu/api/recordings/start").send().await.unwrap();
    assert_eq!(e.status().as_u16(), 400);
    assert_eq!(r.start(json!({"name": "x"})).await.0, 400);
    assert_eq!(r.start(json!({"session": 5})).await.0, 400);
    // 404: no such session.
    assert_eq!(r.start(json!({"session": "nosuch"})).await.0, 404);
    // 406: nobody connected.
    let sid = s.session(Some("room")).await;
    assert_eq!(r.start(json!({"session": sid})).await.0, 406);
    // 409: RELAYED sessions are not recorded.
    let (st, _) = s
        .post("/openvidu/api/sessions", json!({"customSessionId": "p2p", "mediaMode": "RELAYED"}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(r.start(json!({"session": "p2p"})).await.0, 409);

    let (ca, mut a) = s.joined(&sid, "MODERATOR", "Ana").await;
    let stream = s.control._add_stream_for_tests(&sid, &ca, &camera()).unwrap();
    // 400 / 422 on the properties.
    for (body, want) in [
        (json!({"session": sid, "name": "bad name"}), 400),
        (json!({"session": sid, "outputMode": "MOSAIC"}), 400),
        (json!({"session": sid, "hasAudio": "yes"}), 400),
        (json!({"session": sid, "hasAudio": false, "hasVideo": false}), 422),
        (json!({"session": sid, "outputMode": "COMPOSED", "resolution": "2000x720"}), 422),
        (json!({"session": sid, "outputMode": "COMPOSED", "frameRate": 0}), 422),
        (json!({"session": sid, "outputMode": "COMPOSED", "shmSize": 1024}), 422),
        // CUSTOM layouts need a page renderer ringsfu does not have: refused before the backend.
        (json!({"session": sid, "outputMode": "COMPOSED", "recordingLayout": "CUSTOM"}), 422),
    ] {
        let (st, v) = r.start(body.clone()).await;
        assert_eq!(st, want, "{body} -> {v}");
        assert_eq!(v["status"], want, "JSON error body: {v}");
    }
    let (_, v) = r
        .start(json!({"session": sid, "outputMode": "COMPOSED", "recordingLayout": "CUSTOM",
            "customLayout": "mine/index.html"}))
        .await;
    let why = v["message"].as_str().unwrap();
    assert!(why.contains("customLayout \"mine/index.html\"") && why.contains("BEST_FIT"), "{v}");
    // 501 with the backend's reason: no composer.
    let (st, v) = r.start(json!({"session": sid, "outputMode": "COMPOSED"})).await;
    assert_eq!(st, 501);
    assert!(v["message"].as_str().unwrap().contains("composer"), "{v}");
    assert_eq!(s.get("/openvidu/api/recordings").await.1["count"], 0, "nothing kept of it");

    // 200: INDIVIDUAL, named after its id (the session id).
    let (st, rec) = r.start(json!({"session": sid, "outputMode": "INDIVIDUAL", "name": ""})).await;
    assert_eq!(st, 200, "{rec}");
    assert_eq!(rec["id"], "room");
    assert_eq!(rec["object"], "recording");
    assert_eq!(rec["name"], "room");
    assert_eq!(rec["outputMode"], "INDIVIDUAL");
    assert_eq!(rec["sessionId"], "room");
    assert_eq!(rec["status"], "started");
    assert_eq!(rec["size"], 0);
    assert_eq!(rec["url"], Value::Null);
    assert!(rec.get("resolution").is_none() && rec.get("uniqueSessionId").is_none());
    assert_eq!(a.notification("recordingStarted").await, json!({"id": "room", "name": "room"}));
    let hook = r.status_hook().await;
    assert_eq!((hook["status"].as_str(), hook["id"].as_str()), (Some("started"), Some("room")));
    assert_eq!(hook["startTime"], rec["createdAt"]);
    assert!(hook.get("reason").is_none());
    let specs = r.backend.started.lock().unwrap().clone();
    assert_eq!(specs.len(), 1);
    assert_eq!(
        (specs[0].stream_id.as_str(), specs[0].connection_id.as_str()),
        (stream.as_str(), ca.as_str())
    );
    assert!(specs[0].has_audio && specs[0].has_video);
    assert_eq!(specs[0].file_base, r.dir.join("room").join(&stream));
    // The session says so.
    assert_eq!(s.get("/openvidu/api/sessions/room").await.1["recording"], true);
    // 409: already being recorded; 409: cannot delete while started.
    assert_eq!(r.start(json!({"session": sid})).await.0, 409);
    assert_eq!(s.delete("/openvidu/api/recordings/room").await, 409);
    let (st, v) = s.get("/openvidu/api/recordings").await;
    assert_eq!((st, v["count"].as_u64()), (200, Some(1)));
    assert_eq!(v["items"][0]["status"], "started");

    // Stop: 404 unknown; 200 stopped, then ready.
    let stop = |id: &str| format!("/openvidu/api/recordings/stop/{id}");
    assert_eq!(s.post(&stop("nosuch"), json!({})).await.0, 404);
    let (st, v) = s.post(&stop("room"), json!({})).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("stopped")), "{v}");
    assert_eq!(
        a.notification("recordingStopped").await,
        json!({"id": "room", "name": "room", "reason": "recordingStoppedByServer"})
    );
    let hook = r.status_hook().await;
    assert_eq!(
        (hook["status"].as_str(), hook["reason"].as_str()),
        (Some("stopped"), Some("recordingStoppedByServer"))
    );
    let hook = r.status_hook().await;
    assert_eq!(hook["status"], "ready", "{hook}");
    assert_eq!(hook["size"], 100 * stream.len());
    assert_eq!(hook["duration"], 2.0);
    let v = r.await_status("room", "ready").await;
    assert_eq!(v["url"], format!("{}/openvidu/recordings/room/room.zip", s.base));
    assert_eq!(v["size"], 100 * stream.len());
    assert_eq!(s.get("/openvidu/api/sessions/room").await.1["recording"], false);
    // Stopping what is not being recorded: 404 (OpenVidu looks among started recordings).
    assert_eq!(s.post(&stop("room"), json!({})).await.0, 404);

    // The next recording of the session: room~1.
    let (st, v) =
        r.start(json!({"session": sid, "outputMode": "INDIVIDUAL", "name": "take2"})).await;
    assert_eq!((st, v["id"].as_str(), v["name"].as_str()), (200, Some("room~1"), Some("take2")));
    assert_eq!(s.post(&stop("room~1"), json!({})).await.0, 200);
    r.await_status("room~1", "ready").await;

    // Delete: 204, then 404 and the directory gone.
    assert_eq!(s.delete("/openvidu/api/recordings/room").await, 204);
    assert_eq!(s.get("/openvidu/api/recordings/room").await.0, 404);
    assert_eq!(s.delete("/openvidu/api/recordings/room").await, 404);
    let deadline = tokio::time::Instant::now() + WAIT;
    while r.dir.join("room").exists() {
        assert!(tokio::time::Instant::now() < deadline, "room's directory stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A deleted id is free again.
    let (st, v) = r.start(json!({"session": sid, "outputMode": "INDIVIDUAL"})).await;
    assert_eq!((st, v["id"].as_str()), (200, Some("room")));

    // A recorder that cannot start: 500, the recording listed as failed.
    let (st, _) = s.post(&stop("room"), json!({})).await;
    assert_eq!(st, 200);
    r.await_status("room", "ready").await;
    r.backend.fail_start.store(true, Ordering::Relaxed);
    let (st, v) = r.start(json!({"session": sid, "outputMode": "INDIVIDUAL"})).await;
    assert_eq!(st, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("no space left"), "{v}");
    assert_eq!(r.await_status("room~2", "failed").await["status"], "failed");
    // ...unless failed streams are ignored.
    let (st, v) = r
        .start(json!({"session": sid, "outputMode": "INDIVIDUAL", "ignoreFailedStreams": true}))
        .await;
    assert_eq!((st, v["status"].as_str()), (200, Some("started")), "{v}");
    r.backend.fail_start.store(false, Ordering::Relaxed);

    // Session defaults are checked at creation as OpenVidu does (400 there).
    for drp in [
        json!({"outputMode": "COMPOSED", "resolution": "99x99"}),
        json!({"outputMode": "COMPOSED", "frameRate": 500}),
        json!({"outputMode": "COMPOSED", "shmSize": 1}),
        json!({"name": "a/b"}),
    ] {
        let (st, v) =
            s.post("/openvidu/api/sessions", json!({"defaultRecordingProperties": drp})).await;
        assert_eq!(st, 400, "{drp} -> {v}");
        assert!(
            v["message"].as_str().unwrap().starts_with("Parameter 'defaultRecordingProperties'")
        );
    }
    let _ = std::fs::remove_dir_all(&r.dir);
}

#[tokio::test]
async fn individual_layout_notifications_and_the_files_route() {
    let r = rig("layout", |_| {}).await;
    let s = &r.s;
    let sid = s.session(Some("class")).await;
    let (ca, mut a) = s.joined(&sid, "PUBLISHER", "Ana").await;
    let (_cs, mut sub) = s.joined(&sid, "SUBSCRIBER", "Sam").await;
    // A connection that must not be recorded.
    let (cn, tn) = {
        let (st, v) = s
            .post(&format!("/openvidu/api/sessions/{sid}/connection"), json!({"record": false}))
            .await;
        assert_eq!(st, 200);
        (v["connectionId"].as_str().unwrap().to_string(), v["token"].as_str().unwrap().to_string())
    };
    let (_n, _) = s.join(&sid, &tn, "Nora").await;
    let sa = s.control._add_stream_for_tests(&sid, &ca, &camera()).unwrap();
    s.control._add_stream_for_tests(&sid, &cn, &camera()).unwrap();
    let (st, rec) = r
        .start(
            json!({"session": sid, "outputMode": "INDIVIDUAL", "name": "lesson", "hasVideo": true}),
        )
        .await;
    assert_eq!(st, 200, "{rec}");
    assert_eq!(a.notification("recordingStarted").await["name"], "lesson");
    assert_eq!(r.backend.started.lock().unwrap().len(), 1, "record=false is skipped");
    // A participant joining now learns about it (publisher_moderator).
    let (_, joined) = s.join(&sid, &s.connection(&sid, "PUBLISHER", "").await.1, "Late").await;
    assert_eq!(
        (joined["recordingId"].as_str(), joined["recordingName"].as_str()),
        (Some("class"), Some("lesson"))
    );
    let (_, joined) = s.join(&sid, &s.connection(&sid, "SUBSCRIBER", "").await.1, "Quiet").await;
    assert!(joined.get("recordingId").is_none(), "subscribers are not told: {joined}");
    // Republished: a second file, named as OpenVidu names it.
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}/stream/{sa}")).await, 204);
    let sa2 = s.control._add_stream_for_tests(&sid, &ca, &camera()).unwrap();
    assert_ne!(sa, sa2);
    let (st, _) = s.post("/openvidu/api/recordings/stop/class", json!({})).await;
    assert_eq!(st, 200);
    r.await_status("class", "ready").await;
    // Subscribers got neither notification.
    let got: Vec<String> = sub
        .drain(Duration::from_millis(200))
        .await
        .iter()
        .filter_map(|n| n["method"].as_str().map(str::to_string))
        .collect();
    assert!(!got.iter().any(|m| m.starts_with("recording")), "{got:?}");
    while r.status_hook().await["status"] != "ready" {}

    // On disk: the entity file and the zip only.
    let dir = r.dir.join("class");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![".recording.class".to_string(), "lesson.zip".to_string()]);
    let entity: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".recording.class")).unwrap())
            .unwrap();
    assert_eq!(
        (entity["status"].as_str(), entity["uniqueSessionId"].is_string()),
        (Some("ready"), true)
    );

    // The zip through the files route (Basic auth), then its contents.
    let url = "/openvidu/recordings/class/lesson.zip";
    let resp = s.http.get(s.url(url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "Basic auth as the API");
    let resp = s.req(Method::GET, url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["accept-ranges"], "bytes");
    assert_eq!(resp.headers()["content-type"], "application/zip");
    let zip_bytes = resp.bytes().await.unwrap().to_vec();
    assert_eq!(zip_bytes, std::fs::read(dir.join("lesson.zip")).unwrap());
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes.clone())).unwrap();
    let mut entries: Vec<String> = z.file_names().map(|n| n.unwrap().to_string()).collect();
    entries.sort();
    let mut want = vec![format!("{sa}.webm"), format!("{sa2}.webm"), "lesson.json".to_string()];
    want.sort();
    assert_eq!(entries, want);
    for stream in [&sa, &sa2] {
        let mut f = z.by_name(&format!("{stream}.webm")).unwrap();
        assert_eq!(f.compression(), zip::CompressionMethod::Deflated);
        let mut content = String::new();
        f.read_to_string(&mut content).unwrap();
        assert_eq!(content, stream.repeat(100));
    }
    let mut text = String::new();
    z.by_name("lesson.json").unwrap().read_to_string(&mut text).unwrap();
    let sync: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(sync["id"], "class");
    assert_eq!(sync["name"], "lesson");
    assert_eq!(sync["sessionId"], "class");
    assert_eq!(sync["createdAt"], rec["createdAt"]);
    let files = sync["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        assert_eq!(f["connectionId"], ca);
        assert_eq!(f["clientData"], "{\"clientData\":\"Ana\"}");
        assert_eq!(f["serverData"], "");
        assert_eq!((f["hasAudio"].as_bool(), f["hasVideo"].as_bool()), (Some(true), Some(true)));
        assert_eq!(f["typeOfVideo"], "CAMERA");
        assert_eq!(
            (f["startTimeOffset"].as_i64(), f["endTimeOffset"].as_i64()),
            (Some(100), Some(2100))
        );
        let sid_of = f["streamId"].as_str().unwrap();
        assert_eq!(f["name"], format!("{sid_of}.webm"));
        assert_eq!(f["size"], 100 * sid_of.len());
    }
    // A republication is a new stream id, so a new `<streamId>.webm` (OpenVidu adds `-<n>`
    // only when one stream id is recorded twice in one recording).

    // Ranges: a slice, a suffix, an open end, unsatisfiable.
    let len = zip_bytes.len();
    let get_range = |range: String| s.req(Method::GET, url).header("range", range).send();
    let resp = get_range("bytes=0-9".into()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.headers()["content-range"], format!("bytes 0-9/{len}").as_str());
    assert_eq!(resp.headers()["content-length"], "10");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), zip_bytes[..10].to_vec());
    let resp = get_range("bytes=-4".into()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    assert_eq!(resp.bytes().await.unwrap().to_vec(), zip_bytes[len - 4..].to_vec());
    let resp = get_range(format!("bytes={}-", len - 3)).await.unwrap();
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes {}-{}/{len}", len - 3, len - 1).as_str()
    );
    assert_eq!(resp.bytes().await.unwrap().to_vec(), zip_bytes[len - 3..].to_vec());
    let resp = get_range(format!("bytes={len}-")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 416);
    assert_eq!(resp.headers()["content-range"], format!("bytes */{len}").as_str());
    let resp = get_range("bytes=0-1,4-5".into()).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "several ranges: the whole file");

    // No way out of the recording directory, and no hidden file.
    std::fs::write(r.dir.join("secret.txt"), "outside").unwrap();
    for evil in [
        "/openvidu/recordings/class/..%2Fsecret.txt",
        "/openvidu/recordings/..%2Fclass/..%2F..%2Fsecret.txt",
        "/openvidu/recordings/%2E%2E/secret.txt",
        "/openvidu/recordings/class/.recording.class",
        "/openvidu/recordings/class/%2e%2e%2fsecret.txt",
        "/openvidu/recordings/class/..%5Csecret.txt",
        "/openvidu/recordings/class/nosuch.zip",
    ] {
        let resp = s.req(Method::GET, evil).send().await.unwrap();
        let st = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert!(st == 404 || st == 400, "{evil}: {st}");
        assert!(!body.contains("outside"), "{evil} leaked a file");
    }
    drop(a);
    let _ = std::fs::remove_dir_all(&r.dir);
}

#[tokio::test]
async fn public_access_serves_files_without_auth() {
    let r = rig("public", |c| c.recording.public_access = true).await;
    let s = &r.s;
    let sid = s.session(Some("pub")).await;
    let (ca, _a) = s.joined(&sid, "PUBLISHER", "Ana").await;
    s.control._add_stream_for_tests(&sid, &ca, &camera()).unwrap();
    assert_eq!(r.start(json!({"session": sid, "outputMode": "INDIVIDUAL"})).await.0, 200);
    assert_eq!(s.post("/openvidu/api/recordings/stop/pub", json!({})).await.0, 200);
    r.await_status("pub", "ready").await;
    let resp = s.http.get(s.url("/openvidu/recordings/pub/pub.zip")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // The API itself keeps its auth.
    let resp = s.http.get(s.url("/openvidu/api/recordings/pub")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let _ = std::fs::remove_dir_all(&r.dir);
}

#[tokio::test]
async fn always_mode_starts_at_the_first_publish_and_autostops() {
    let r = rig("always", |c| c.recording.autostop_timeout = 1).await;
    let s = &r.s;
    let (st, _) = s
        .post(
            "/openvidu/api/sessions",
            json!({"customSessionId": "auto", "recordingMode": "ALWAYS",
                   "defaultRecordingProperties": {"outputMode": "INDIVIDUAL", "name": "auto-rec"}}),
        )
        .await;
    assert_eq!(st, 200);
    let (ca, mut a) = s.joined("auto", "MODERATOR", "Ana").await;
    assert_eq!(s.get("/openvidu/api/recordings").await.1["count"], 0, "not before a publish");
    s.control._add_stream_for_tests("auto", &ca, &camera()).unwrap();
    assert_eq!(a.notification("recordingStarted").await, json!({"id": "auto", "name": "auto-rec"}));
    let v = r.await_status("auto", "started").await;
    assert_eq!(v["outputMode"], "INDIVIDUAL");
    assert_eq!(r.status_hook().await["status"], "started");

    // The last participant leaves: the session outlives it while the timer runs...
    a.call("leaveRoom", Some(json!({}))).await;
    let (st, v) = s.get("/openvidu/api/sessions/auto").await;
    assert_eq!((st, v["recording"].as_bool()), (200, Some(true)), "{v}");
    // ...then the recording stops (automaticStop) and the session closes with it.
    let hook = r.status_hook().await;
    assert_eq!(
        (hook["status"].as_str(), hook["reason"].as_str()),
        (Some("stopped"), Some("automaticStop")),
        "{hook}"
    );
    assert_eq!(r.status_hook().await["status"], "ready");
    assert_eq!(s.get("/openvidu/api/sessions/auto").await.0, 404);
    r.await_status("auto", "ready").await;

    // A publisher returning before the timeout keeps the recording going.
    let (st, _) = s
        .post(
            "/openvidu/api/sessions",
            json!({"customSessionId": "back", "recordingMode": "ALWAYS",
                   "defaultRecordingProperties": {"outputMode": "INDIVIDUAL"}}),
        )
        .await;
    assert_eq!(st, 200);
    let (cb, _b) = s.joined("back", "PUBLISHER", "Ben").await;
    let sb = s.control._add_stream_for_tests("back", &cb, &camera()).unwrap();
    r.await_status("back", "started").await;
    // Manual stop: ALWAYS does not restart it at the next publish.
    assert_eq!(s.post("/openvidu/api/recordings/stop/back", json!({})).await.0, 200);
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/back/stream/{sb}")).await, 204);
    s.control._add_stream_for_tests("back", &cb, &camera()).unwrap();
    r.await_status("back", "ready").await;
    let (_, v) = s.get("/openvidu/api/recordings").await;
    assert!(!v["items"].as_array().unwrap().iter().any(|i| i["id"] == "back~1"), "{v}");

    // Closing a recorded session stops its recording (sessionClosedByServer).
    let (cc, _c) = s.joined("back", "PUBLISHER", "Cid").await;
    let _ = cc;
    assert_eq!(r.start(json!({"session": "back", "outputMode": "INDIVIDUAL"})).await.0, 200);
    loop {
        let h = r.status_hook().await;
        if h["status"] == "started" && h["id"] == "back~1" {
            break;
        }
    }
    assert_eq!(s.delete("/openvidu/api/sessions/back").await, 204);
    let hook = r.status_hook().await;
    assert_eq!(
        (hook["id"].as_str(), hook["reason"].as_str()),
        (Some("back~1"), Some("sessionClosedByServer"))
    );
    r.await_status("back~1", "ready").await;
    let _ = std::fs::remove_dir_all(&r.dir);
}

#[tokio::test]
async fn a_failing_recorder_gives_failed_and_the_session_goes_on() {
    let r = rig("fail", |_| {}).await;
    let s = &r.s;
    let sid = s.session(Some("frail")).await;
    let (ca, mut a) = s.joined(&sid, "PUBLISHER", "Ana").await;
    s.control._add_stream_for_tests(&sid, &ca, &camera()).unwrap();
    assert_eq!(r.start(json!({"session": sid, "outputMode": "INDIVIDUAL"})).await.0, 200);
    r.backend.fail_finish.store(true, Ordering::Relaxed);
    assert_eq!(s.post("/openvidu/api/recordings/stop/frail", json!({})).await.0, 200);
    let v = r.await_status("frail", "failed").await;
    assert!(v["url"].is_string());
    loop {
        let h = r.status_hook().await;
        if h["status"] == "failed" {
            assert!(h["reason"].as_str().unwrap().contains("disk full"), "{h}");
            break;
        }
    }
    // Nothing half-written is left to look ready.
    assert!(!r.dir.join("frail").join("frail.zip").exists());
    // The session and its participant are untouched.
    let r2 = a.call("echo", Some(json!({}))).await;
    assert!(r2.get("result").is_some() || r2.get("error").is_some());
    assert_eq!(s.get(&format!("/openvidu/api/sessions/{sid}")).await.0, 200);
    let _ = std::fs::remove_dir_all(&r.dir);
}

#[tokio::test]
async fn a_recorder_failing_mid_recording_stops_it_as_failed() {
    let r = rig("midfail", |_| {}).await;
    let s = &r.s;
    let sid = s.session(Some("filling")).await;
    let (ca, mut a) = s.joined(&sid, "PUBLISHER", "Ana").await;
    s.control._add_stream_for_tests(&sid, &ca, &camera()).unwrap();
    assert_eq!(r.start(json!({"session": sid, "outputMode": "INDIVIDUAL"})).await.0, 200);
    assert_eq!(r.status_hook().await["status"], "started");
    // The recorder thread hits a full disk while the recording runs: nobody calls stop.
    let id = {
        let mut files = r.backend.files.lock().unwrap();
        let id = *files.keys().next().expect("one recorder running");
        files.remove(&id);
        id
    };
    r.backend.send(BackendEvent::Failed { id: StreamRecorderId(id), reason: "disk full".into() });
    let stopped = r.status_hook().await;
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert_eq!(stopped["reason"], "recordingStoppedByServer");
    let failed = r.status_hook().await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["reason"].as_str().unwrap().contains("disk full"), "{failed}");
    r.await_status("filling", "failed").await;
    assert!(!r.dir.join("filling").join("filling.zip").exists());
    // The participant heard it stop; the session goes on and is not recording any more.
    let n = a.notification("recordingStopped").await;
    assert_eq!(n["id"], "filling");
    let (st, v) = s.get(&format!("/openvidu/api/sessions/{sid}")).await;
    assert_eq!(st, 200);
    assert_eq!(v["recording"], false);
    let _ = std::fs::remove_dir_all(&r.dir);
}

#[tokio::test]
async fn a_recording_with_no_publisher_autostops_and_the_session_stays() {
    let r = rig("nopub", |c| c.recording.autostop_timeout = 1).await;
    let s = &r.s;
    let sid = s.session(Some("quiet")).await;
    let (_cm, mut m) = s.joined(&sid, "MODERATOR", "Mo").await;
    let (st, v) = r.start(json!({"session": sid, "outputMode": "INDIVIDUAL"})).await;
    assert_eq!((st, v["status"].as_str()), (200, Some("started")));
    assert_eq!(r.status_hook().await["status"], "started");
    // Nobody publishes before the timeout: stopped (automaticStop), the participant stays.
    let hook = r.status_hook().await;
    assert_eq!(
        (hook["status"].as_str(), hook["reason"].as_str()),
        (Some("stopped"), Some("automaticStop"))
    );
    assert_eq!(m.notification("recordingStopped").await["reason"], "automaticStop");
    let v = r.await_status("quiet", "ready").await;
    assert_eq!((v["size"].as_u64(), v["duration"].as_f64()), (Some(0), Some(0.0)));
    let (st, v) = s.get("/openvidu/api/sessions/quiet").await;
    assert_eq!((st, v["recording"].as_bool()), (200, Some(false)));
    // Deleting a recording whose files are being sealed is allowed; nothing of it stays.
    let (cp, _p) = s.joined(&sid, "PUBLISHER", "Pia").await;
    s.control._add_stream_for_tests(&sid, &cp, &camera()).unwrap();
    assert_eq!(r.start(json!({"session": sid, "outputMode": "INDIVIDUAL"})).await.0, 200);
    r.backend.fail_finish.store(false, Ordering::Relaxed);
    assert_eq!(s.post("/openvidu/api/recordings/stop/quiet~1", json!({})).await.0, 200);
    assert_eq!(s.delete("/openvidu/api/recordings/quiet~1").await, 204);
    assert_eq!(s.get("/openvidu/api/recordings/quiet~1").await.0, 404);
    let deadline = tokio::time::Instant::now() + WAIT;
    while r.dir.join("quiet~1").exists() {
        assert!(tokio::time::Instant::now() < deadline, "quiet~1's directory stays");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_dir_all(&r.dir);
}
