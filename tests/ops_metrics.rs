//! `/metrics` and `/health` on the in-process server: counters move with signaling traffic,
//! auth is required unless `server.metrics_public`, the Grafana dashboard only uses metric
//! names the server exports, and draining flips `/health` and `/openvidu/api/health` and refuses
//! new work. And on the
//! binary: standalone TURN shards (media off) export their shard counters, labelled
//! `kind="turn"`, which move with STUN traffic. (The media shards' counters under real media:
//! `ops_media.rs`.)

mod common;
mod ops_common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::join_params;
use ringsfu::ops::metrics::ShardMetrics;
use ringsfu::shard::ShardStats;
use serde_json::json;

/// The value of one series (`name{labels}` exactly as exported), 0 when absent.
fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("integer sample"))
        .unwrap_or(0)
}

async fn scrape(s: &common::Server) -> String {
    let r = s.req(reqwest::Method::GET, "/metrics").send().await.expect("scrape");
    assert_eq!(r.status().as_u16(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    r.text().await.expect("body")
}

#[tokio::test(flavor = "current_thread")]
async fn counters_move_with_signaling_traffic() {
    let s = common::start(|_| {}).await;
    s.control
        .metrics()
        .register_shards(vec![ShardMetrics { index: 0, stats: Arc::new(ShardStats::default()) }]);
    // Unauthenticated scrapes are refused.
    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);

    let before = scrape(&s).await;
    let joined_ok = "ringsfu_signaling_requests_total{method=\"joinRoom\",result=\"ok\"}";
    let join_err = "ringsfu_signaling_requests_total{method=\"joinRoom\",result=\"error\"}";
    let other_err = "ringsfu_signaling_requests_total{method=\"other\",result=\"error\"}";
    let pings = "ringsfu_signaling_requests_total{method=\"ping\",result=\"ok\"}";
    let post_ok = "ringsfu_http_requests_total{method=\"POST\",code=\"200\"}";
    assert_eq!(value(&before, "ringsfu_participants"), 0);

    let sid = s.session(Some("metrics")).await;
    let (_, tok_a) = s.connection(&sid, "PUBLISHER", "a").await;
    let (_, tok_b) = s.connection(&sid, "PUBLISHER", "b").await;
    let (mut a, _) = s.join(&sid, &tok_a, "A").await;
    let (_b, _) = s.join(&sid, &tok_b, "B").await;
    let r = a.call("joinRoom", Some(join_params(&sid, "tok_nope", "again"))).await;
    assert!(r.get("error").is_some(), "{r}");
    let r = a.call("noSuchMethod", Some(json!({}))).await;
    assert!(r.get("error").is_some(), "{r}");
    let msg = json!({"to": [], "type": "signal:x", "data": "hi"}).to_string();
    let r = a.call("sendMessage", Some(json!({"message": msg}))).await;
    assert!(r.get("result").is_some(), "{r}");

    let after = scrape(&s).await;
    assert_eq!(value(&after, joined_ok), value(&before, joined_ok) + 2, "{after}");
    assert_eq!(value(&after, join_err), value(&before, join_err) + 1);
    assert_eq!(value(&after, other_err), value(&before, other_err) + 1);
    assert!(value(&after, pings) >= value(&before, pings) + 2);
    assert!(value(&after, post_ok) >= value(&before, post_ok) + 3, "{after}");
    assert!(
        value(&after, "ringsfu_signaling_requests_total{method=\"sendMessage\",result=\"ok\"}")
            >= 1
    );
    assert_eq!(value(&after, "ringsfu_sessions"), 1);
    assert_eq!(value(&after, "ringsfu_active_sessions"), 1);
    assert_eq!(value(&after, "ringsfu_participants"), 2);
    assert_eq!(value(&after, "ringsfu_websockets"), 2);
    assert_eq!(value(&after, "ringsfu_shards"), 1);
    assert_eq!(
        value(&after, "ringsfu_shard_info{shard=\"0\",io_backend=\"auto\",gso=\"false\"}"),
        1
    );
    assert!(after.contains("ringsfu_webhook_events_total{result=\"delivered\"} 0\n"));

    // Every metric the Grafana dashboard queries is exported.
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/grafana-dashboard.json"
    ))
    .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dash).expect("dashboard is JSON");
    let exported: BTreeSet<&str> = after
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let mut used = BTreeSet::new();
    let bytes = dash.as_bytes();
    let mut i = 0;
    while let Some(p) = dash[i..].find("ringsfu_") {
        let start = i + p;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        used.insert(&dash[start..end]);
        i = end;
    }
    assert!(used.len() > 10, "{used:?}");
    for m in &used {
        // A histogram's series carry a suffix on the family its TYPE line declares.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| m.strip_suffix(suffix).filter(|f| exported.contains(f)))
            .unwrap_or(m);
        assert!(
            exported.contains(family),
            "the dashboard uses {m}, which /metrics does not export"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn health_and_drain_refusals() {
    let s = common::start(|c| c.server.metrics_public = true).await;
    let r = s.http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(s.get("/openvidu/api/health").await, (200, json!({"status": "UP"})));
    // metrics_public: no credentials needed.
    let r = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    let sid = s.session(Some("d")).await;
    let (_, tok) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok2) = s.connection(&sid, "PUBLISHER", "").await;
    let (mut a, joined) = s.join(&sid, &tok, "A").await;
    assert_eq!(s.control.begin_drain(), 1);
    assert!(s.control.is_draining());
    let ev = a.notification("participantEvicted").await;
    assert_eq!(ev["connectionId"], joined["id"]);
    assert_eq!(ev["reason"], "openviduServerStopped");

    let r = s.http.get(s.url("/health")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({"status": "DRAINING"}));
    // The REST API's health answers the same (with the API's Basic auth).
    assert_eq!(s.get("/openvidu/api/health").await, (503, json!({"status": "DRAINING"})));
    let (st, v) = s.post("/openvidu/api/sessions", json!({})).await;
    assert_eq!(st, 503, "{v}");
    let (st, _) = s.post(&format!("/openvidu/api/sessions/{sid}/connection"), json!({})).await;
    assert_eq!(st, 503);
    let (st, _) = s.post("/openvidu/api/tokens", json!({"session": sid})).await;
    assert_eq!(st, 503);
    let mut b = common::Ws::open(&format!("{}?sessionId={sid}", s.ws_url)).await;
    let r = b.call("joinRoom", Some(join_params(&sid, &tok2, "B"))).await;
    assert_eq!(r["error"]["code"], 203, "{r}");
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("ringsfu_draining 1\n"), "{text}");

    // The told participant closes its socket (as openvidu-browser does): evicted at once.
    drop(a);
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while s.control.gauges().participants > 0 {
        assert!(tokio::time::Instant::now() < deadline, "participant not removed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// One STUN Binding request to `to` from `sock`, retried (UDP) until its success response
/// arrives: the response's length.
fn stun_binding(sock: &std::net::UdpSocket, to: std::net::SocketAddr) -> usize {
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let tid: [u8; 12] = rand::random();
    let mut req = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(&tid);
    let mut buf = [0u8; 1500];
    // Bounded: 20 tries.
    for _ in 0..20 {
        sock.send_to(&req, to).expect("send Binding");
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from == to
            && n >= 20
            && buf[..2] == [0x01, 0x01]
            && buf[8..20] == tid
        {
            return n;
        }
    }
    panic!("no Binding success response from {to}");
}

#[test]
fn standalone_turn_shards_export_their_shard_counters_labelled_turn() {
    const SECRET: &str = "TURN_METRICS_SECRET";
    let port = ops_common::free_port();
    let turn = common::free_port();
    let turn_port = format!("turn.port={turn}");
    let _server = ops_common::Server::spawn(
        port,
        &["--secret", SECRET, "--set", "media.enabled=false", "--set", &turn_port],
        &[],
    );
    // Up once the TURN shard is registered.
    let before = common::await_metric(port, SECRET, "ringsfu_turn_shards", 1);
    assert_eq!(value(&before, "ringsfu_shards"), 0, "no media shards: {before}");
    assert!(
        !before.contains("ringsfu_shard_rx_packets_total{shard=\"0\"} "),
        "a media-shard series without media: {before}"
    );
    let info = "ringsfu_shard_info{shard=\"0\",kind=\"turn\",io_backend=";
    assert!(before.lines().any(|l| l.starts_with(info)), "{before}");

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let answer = stun_binding(&sock, ([127, 0, 0, 1], turn).into()) as u64;
    let rx = "ringsfu_shard_rx_packets_total{shard=\"0\",kind=\"turn\"}";
    // The shard publishes its counters every loop turn: bounded wait for them.
    let mut after = String::new();
    for _ in 0..50 {
        after = common::metrics_text(port, SECRET).expect("scrape");
        if value(&after, rx) > value(&before, rx) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let moved = |series: &str| value(&after, series) - value(&before, series);
    let s = |name: &str| format!("ringsfu_shard_{name}_total{{shard=\"0\",kind=\"turn\"}}");
    assert!(moved(&s("rx_packets")) >= 1, "{after}");
    assert!(moved(&s("rx_bytes")) >= 20, "{after}");
    assert!(moved(&s("tx_packets")) >= 1, "{after}");
    assert!(moved(&s("tx_bytes")) >= answer, "{after}");
    assert!(moved(&s("loop_turns")) >= 1, "{after}");
}
