//! Media keeps flowing while the server drains: a str0m publisher and subscriber exchange
//! frames through ringsfu, the drain starts (both are told with `participantEvicted`, reason
//! `openviduServerStopped`), and frames sent afterwards still arrive; `/metrics` shows the
//! media counters moving. The drain's end (eviction, exit) is covered by `ops_service.rs`.
//!
//! The str0m peer is the shared one in `tests/str0m_common`.

mod common;
mod str0m_common;

use std::time::Duration;

use serde_json::json;
use str0m::media::{Direction, MediaKind};
use str0m_common::{Peer, run_until, send_frames};

const VIDEO: &[MediaKind] = &[MediaKind::Video];

fn series(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_keeps_flowing_while_draining() {
    let s =
        common::start_with_media(|c| c.media.io_backend = ringsfu::config::IoBackend::Epoll).await;
    let sid = s.session(Some("drainmedia")).await;
    let (_, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, joined_pub) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, joined_sub) = s.join(&sid, &tok_sub, "sub").await;

    let mut publisher = Peer::new();
    let (offer, pending) = publisher.offer(Direction::SendOnly, VIDEO);
    let r = ws_pub
        .call(
            "publishVideo",
            Some(json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": false,
                "hasVideo": true, "audioActive": false, "videoActive": true,
                "typeOfVideo": "CAMERA", "frameRate": 30, "videoDimensions": "{\"width\":640,\"height\":480}"})),
        )
        .await;
    let stream_id =
        r["result"]["id"].as_str().unwrap_or_else(|| panic!("publish: {r}")).to_string();
    publisher.accept(pending, r["result"]["sdpAnswer"].as_str().expect("sdpAnswer"));
    ws_sub.notification("participantPublished").await;
    let mut subscriber = Peer::new();
    let (offer, pending) = subscriber.offer(Direction::RecvOnly, VIDEO);
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpOffer": offer})))
        .await;
    subscriber.accept(pending, r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("{r}")));

    tokio::task::block_in_place(|| {
        run_until(
            &mut [&mut publisher, &mut subscriber],
            "both connected",
            Duration::from_secs(10),
            |p| p.iter().all(|p| p.connected),
        );
        send_frames(&mut publisher, &mut subscriber, 0..20, 20);
    });
    let before =
        s.req(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();

    // The drain starts: both participants are told, and stay in the session.
    assert_eq!(s.control.begin_drain(), 2);
    for (ws, joined) in [(&mut ws_pub, &joined_pub), (&mut ws_sub, &joined_sub)] {
        let ev = ws.notification("participantEvicted").await;
        assert_eq!(ev["connectionId"], joined["id"], "{ev}");
        assert_eq!(ev["reason"], "openviduServerStopped");
    }

    // Frames sent during the drain still reach the subscriber.
    tokio::task::block_in_place(|| {
        let had = subscriber.frames.len();
        send_frames(&mut publisher, &mut subscriber, 20..40, had + 20);
    });
    assert_eq!(s.control.gauges().participants, 2);
    let during =
        s.req(reqwest::Method::GET, "/metrics").send().await.unwrap().text().await.unwrap();
    let out = "ringsfu_shard_rtp_out_total{shard=\"0\"}";
    assert!(series(&during, out) > series(&before, out), "{during}");
    assert!(series(&before, out) > 0, "{before}");
    assert_eq!(series(&during, "ringsfu_shard_dtls_handshakes_total{shard=\"0\"}"), 2);
    assert_eq!(series(&during, "ringsfu_shard_ice_legs{shard=\"0\"}"), 2);
    assert!(
        series(&during, "ringsfu_shard_rx_packets_total{shard=\"0\"}")
            > series(&before, "ringsfu_shard_rx_packets_total{shard=\"0\"}")
    );
    assert_eq!(
        series(&during, "ringsfu_shard_media_drops_total{shard=\"0\",reason=\"srtp_failed\"}"),
        0
    );
    assert_eq!(series(&during, "ringsfu_draining"), 1);

    // The end of the drain evicts them.
    s.control.shutdown().await;
    assert_eq!(s.control.gauges().participants, 0);
}
