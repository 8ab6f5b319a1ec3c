//! Webhooks (spec §7) received by a tiny HTTP server inside the test, and by an HTTPS one whose
//! certificate comes from a test CA (`webhook.ca_file`; untrusted and wrong-name cases too).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::start;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Connections a test receiver accepts at most.
const MAX_CONNECTIONS: usize = 64;

/// Reads one HTTP/1.1 POST from `sock` (head, then `Content-Length` bytes of body, at most
/// 1 MiB in all), answers 200 and forwards (head, JSON body).
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    tx: mpsc::UnboundedSender<(String, Value)>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body_start, len) = loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 || buf.len() > 1 << 20 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            break (head, p + 4, len.min(1 << 20));
        }
    };
    while buf.len() < body_start + len {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Value =
        serde_json::from_slice(&buf[body_start..body_start + len]).unwrap_or(Value::Null);
    let _ =
        sock.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
    let _ = sock.flush().await;
    let _ = tx.send((head, body));
}

/// Accepts HTTP/1.1 POSTs, answers 200, forwards (headers, JSON body).
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, Value)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(answer(sock, tx.clone()));
        }
    });
    (url, rx)
}

/// A test CA and, signed by it, a receiver certificate for `names` (DNS names or IP addresses).
struct Pki {
    ca_pem: String,
    tls: Arc<rustls::ServerConfig>,
}

fn pki(names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    ca.distinguished_name.push(DnType::CommonName, "ringsfu webhook test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(names).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone(), ca.der().clone()],
            PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
        )
        .unwrap();
    Pki { ca_pem: ca.pem(), tls: Arc::new(tls) }
}

/// Writes `pem` to a scratch file of its own; its path.
fn pem_file(case: &str, pem: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringsfu-webhook-{case}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ca.pem");
    std::fs::write(&path, pem).unwrap();
    // What the server will read back is a certificate.
    assert_eq!(CertificateDer::pem_file_iter(&path).unwrap().count(), 1);
    path
}

/// What an HTTPS receiver saw: the requests it answered, and its failed handshakes' errors.
struct TlsReceiver {
    port: u16,
    requests: mpsc::UnboundedReceiver<(String, Value)>,
    refused: mpsc::UnboundedReceiver<String>,
}

/// Accepts TLS on 127.0.0.1 with `tls`, then answers like [`receiver`].
async fn tls_receiver(tls: Arc<rustls::ServerConfig>) -> TlsReceiver {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let (tx, requests) = mpsc::unbounded_channel();
    let (refused_tx, refused) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((sock, _)) = l.accept().await else {
                return;
            };
            let (acceptor, tx, refused_tx) = (acceptor.clone(), tx.clone(), refused_tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(common::WAIT, acceptor.accept(sock)).await {
                    Ok(Ok(tls)) => answer(tls, tx).await,
                    Ok(Err(e)) => drop(refused_tx.send(e.to_string())),
                    Err(_) => drop(refused_tx.send("handshake timed out".into())),
                }
            });
        }
    });
    TlsReceiver { port, requests, refused }
}

/// Waits until `counter` reaches `want` (bounded by [`common::WAIT`]).
async fn await_count(counter: &AtomicU64, want: u64, what: &str) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while counter.load(Ordering::Relaxed) < want {
        assert!(tokio::time::Instant::now() < deadline, "{what} never reached {want}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<(String, Value)>,
    name: &str,
) -> (String, Value) {
    loop {
        let ev = tokio::time::timeout(common::WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no {name} webhook"))
            .expect("receiver alive");
        if ev.1["event"] == name {
            return ev;
        }
    }
}

#[tokio::test]
async fn webhook_events_have_openvidu_payloads() {
    let (url, mut rx) = receiver().await;
    let s = start(|c| {
        c.webhook.enabled = true;
        c.webhook.endpoint = url.clone();
        c.webhook.headers = vec!["Authorization: Basic abc".into()];
        c.webhook.events = [
            "sessionCreated",
            "sessionDestroyed",
            "participantJoined",
            "participantLeft",
            "signalSent",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
    })
    .await;
    let sid = s.session(Some("hooked")).await;
    let (head, ev) = next_event(&mut rx, "sessionCreated").await;
    assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
    assert!(head.contains("Authorization: Basic abc"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"));
    assert_eq!(ev["sessionId"], sid);
    let unique = ev["uniqueSessionId"].as_str().unwrap().to_string();
    assert!(unique.starts_with("hooked_"));
    assert!(ev["timestamp"].as_u64().is_some());

    let (ca, ta) = s.connection(&sid, "PUBLISHER", "srv").await;
    let (mut a, _) = s.join(&sid, &ta, "Ana").await;
    let (_, ev) = next_event(&mut rx, "participantJoined").await;
    assert_eq!(ev["participantId"], ca);
    assert_eq!(ev["connectionId"], ca);
    assert_eq!(ev["sessionId"], sid);
    assert_eq!(ev["uniqueSessionId"], unique);
    assert_eq!(ev["ip"], "127.0.0.1");
    assert_eq!(ev["platform"], "Test 1.0");
    assert_eq!(ev["location"], "unknown");
    assert_eq!(ev["clientData"], "{\"clientData\":\"Ana\"}");
    assert_eq!(ev["serverData"], "srv");

    let r = s
        .post("/openvidu/api/signal", json!({"session": sid, "type": "signal:x", "data": "d"}))
        .await;
    assert_eq!(r.0, 200);
    let (_, ev) = next_event(&mut rx, "signalSent").await;
    assert_eq!(ev["from"], Value::Null);
    assert_eq!(ev["to"], json!([ca]));
    assert_eq!(ev["type"], "signal:x");
    assert_eq!(ev["data"], "d");

    a.call("leaveRoom", Some(json!({}))).await;
    let (_, ev) = next_event(&mut rx, "participantLeft").await;
    assert_eq!(ev["connectionId"], ca);
    assert_eq!(ev["reason"], "disconnect");
    assert!(ev["startTime"].as_u64().is_some());
    assert!(ev["duration"].as_u64().is_some());
    let (_, ev) = next_event(&mut rx, "sessionDestroyed").await;
    assert_eq!(ev["sessionId"], sid);
    assert_eq!(ev["reason"], "lastParticipantLeft");
    assert!(ev["startTime"].as_u64().is_some());
    assert!(ev["duration"].as_u64().is_some());
    assert!(s.control.webhook_stats().delivered.load(Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn event_filter_is_honoured() {
    let (url, mut rx) = receiver().await;
    let s = start(|c| {
        c.webhook.enabled = true;
        c.webhook.endpoint = url.clone();
        c.webhook.events = vec!["sessionDestroyed".into()];
    })
    .await;
    let sid = s.session(None).await;
    assert_eq!(s.delete(&format!("/openvidu/api/sessions/{sid}")).await, 204);
    let (_, ev) = next_event(&mut rx, "sessionDestroyed").await;
    assert_eq!(ev["reason"], "sessionClosedByServer");
    // sessionCreated was filtered out: nothing else is waiting.
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv()).await.is_err());
}

#[tokio::test]
async fn dead_webhook_endpoint_does_not_block_signaling() {
    // Accepts connections and never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = l.accept().await {
            held.push(sock);
        }
    });
    let s = start(|c| {
        c.webhook.enabled = true;
        c.webhook.endpoint = url.clone();
        c.webhook.timeout = 1;
        c.webhook.max_attempts = 2;
        c.webhook.queue_size = 2;
    })
    .await;
    let mut last = String::new();
    for i in 0..20 {
        last = s.session(Some(&format!("s{i}"))).await;
    }
    let (_, tok) = s.connection(&last, "PUBLISHER", "").await;
    let (mut a, _) = tokio::time::timeout(common::WAIT, s.join(&last, &tok, "a"))
        .await
        .expect("join not blocked");
    assert_eq!(a.call("ping", None).await["result"]["value"], "pong");
    let stats = s.control.webhook_stats();
    assert!(stats.dropped_full.load(Ordering::Relaxed) > 0, "overflow counted");
}

#[tokio::test]
async fn https_webhooks_reach_a_receiver_whose_ca_is_in_ca_file() {
    let pki = pki(&["localhost", "127.0.0.1"]);
    let ca_file = pem_file("https-trusted", &pki.ca_pem);
    let mut r = tls_receiver(pki.tls.clone()).await;
    // By IP address (the certificate's IP SAN) and by name (its DNS SAN).
    for (host, path) in [("127.0.0.1", "/hook"), ("localhost", "/hooks/by-name")] {
        let url = format!("https://{host}:{}{path}", r.port);
        let s = start(|c| {
            c.webhook.enabled = true;
            c.webhook.endpoint = url.clone();
            c.webhook.ca_file = Some(ca_file.clone());
            c.webhook.headers = vec!["Authorization: Basic abc".into()];
            c.webhook.events = vec!["sessionCreated".into()];
        })
        .await;
        let sid = s.session(None).await;
        let (head, ev) = next_event(&mut r.requests, "sessionCreated").await;
        assert!(head.starts_with(&format!("POST {path} HTTP/1.1\r\n")), "{url}: {head}");
        assert!(head.contains(&format!("\r\nHost: {host}:{}\r\n", r.port)), "{url}: {head}");
        assert!(head.contains("\r\nAuthorization: Basic abc"), "{url}: {head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        assert_eq!(ev["sessionId"], sid, "{url}");
        let stats = s.control.webhook_stats();
        await_count(&stats.delivered, 1, "delivered").await;
        assert_eq!(stats.dropped_failed.load(Ordering::Relaxed), 0, "{url}");
    }
    assert!(r.refused.try_recv().is_err(), "no handshake failed");
    let _ = std::fs::remove_dir_all(ca_file.parent().unwrap());
}

#[tokio::test]
async fn https_webhooks_to_an_untrusted_receiver_are_dropped_and_counted() {
    // The CA is not trusted (no ca_file; the system's store does not hold a test CA), and the
    // CA is trusted but the certificate names another host.
    let unknown_ca = pki(&["127.0.0.1"]);
    let other_name = pki(&["localhost"]);
    let other_name_ca = pem_file("https-other-name", &other_name.ca_pem);
    for (case, tls, ca_file) in [
        ("unknown CA", unknown_ca.tls, None),
        ("name mismatch", other_name.tls, Some(other_name_ca.clone())),
    ] {
        let mut r = tls_receiver(tls).await;
        let url = format!("https://127.0.0.1:{}/hook", r.port);
        let s = start(|c| {
            c.webhook.enabled = true;
            c.webhook.endpoint = url.clone();
            c.webhook.ca_file = ca_file;
            c.webhook.events = vec!["sessionCreated".into()];
            c.webhook.max_attempts = 1;
            c.webhook.timeout = 2;
        })
        .await;
        s.session(None).await;
        let stats = s.control.webhook_stats();
        await_count(&stats.dropped_failed, 1, "dropped_failed").await;
        assert_eq!(stats.delivered.load(Ordering::Relaxed), 0, "{case}");
        // The attempt reached the receiver and failed in the handshake: no request came in.
        let refused = tokio::time::timeout(common::WAIT, r.refused.recv())
            .await
            .unwrap_or_else(|_| panic!("{case}: the receiver saw no handshake"))
            .expect("receiver alive");
        assert!(refused.contains("alert"), "{case}: the client did not refuse: {refused}");
        assert!(r.requests.try_recv().is_err(), "{case}: a request was delivered");
    }
    let _ = std::fs::remove_dir_all(other_name_ca.parent().unwrap());
}
