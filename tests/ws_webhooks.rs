//! Webhooks (spec §7) received by a tiny HTTP server inside the test.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::start;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Accepts HTTP/1.1 POSTs, answers 200, forwards (headers, JSON body).
async fn receiver() -> (String, mpsc::UnboundedReceiver<(String, Value)>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = l.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body_start, len) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
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
                        break (head, p + 4, len);
                    }
                };
                while buf.len() < body_start + len {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body: Value = serde_json::from_slice(&buf[body_start..body_start + len])
                    .unwrap_or(Value::Null);
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tx.send((head, body));
            });
        }
    });
    (url, rx)
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
