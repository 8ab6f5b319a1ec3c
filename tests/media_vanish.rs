//! A publisher that vanishes without its WebSocket closing: a str0m publisher sends media to a
//! str0m subscriber through ringsfu, then goes silent on UDP (its socket dropped, as when the
//! browser's media process dies or the network path is cut) while its WebSocket stays open.
//! When its ICE consent expires (RFC 7675, 30 s) ringsfu removes the publisher with its tracks,
//! tells everyone (the publisher too) `participantUnpublished` with OpenVidu's
//! `networkDisconnect`, releases the subscriber's leg, and every media gauge on `/metrics`
//! returns to zero while both participants stay connected.
//!
//! Slow by nature: it waits for the real consent timeout (bounded by a 60 s deadline).

mod common;
mod str0m_common;

use std::time::Duration;

use str0m::media::MediaKind;
use str0m_common::{Peer, pump_for, run_until, send_frames};

const AV: &[MediaKind] = &[MediaKind::Audio, MediaKind::Video];

/// The sum of every sample of metric `name` (all label sets) in an exposition `text`.
fn total(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with('{') || r.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const GAUGES: &[&str] = &[
    "ringsfu_publishers",
    "ringsfu_subscribers",
    "ringsfu_shard_media_publishers",
    "ringsfu_shard_media_subscribers",
    "ringsfu_shard_ice_legs",
    "ringsfu_shard_mirror_producers",
];

fn gauges(text: &str) -> Vec<(&'static str, u64)> {
    GAUGES.iter().map(|g| (*g, total(text, g))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_publisher_is_unpublished_when_its_consent_expires() {
    // No ping needed on the test's sockets for the whole run: the WebSocket stays open.
    let s = common::start_with_media(|c| c.server.ping_timeout = 600).await;
    let sid = s.session(Some("vanish")).await;
    let (pub_cid, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, _) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, _) = s.join(&sid, &tok_sub, "sub").await;

    let mut publisher = Peer::new();
    let (stream_id, _) = str0m_common::publish(&mut ws_pub, &mut publisher, AV).await;
    let mut subscriber = Peer::new();
    str0m_common::subscribe(&mut ws_sub, &mut subscriber, &stream_id, AV).await;
    tokio::task::block_in_place(|| {
        run_until(
            &mut [&mut publisher, &mut subscriber],
            "both peers connected",
            Duration::from_secs(10),
            |p| p.iter().all(|p| p.connected),
        );
        send_frames(&mut publisher, &mut subscriber, 0..20, 30);
    });
    let before = gauges(&s.metrics().await);
    for (g, v) in &before {
        if *g != "ringsfu_shard_mirror_producers" {
            assert!(*v >= 1, "{g} before: {before:?}");
        }
    }

    // The publisher vanishes from the network: no more datagrams, no DTLS close.
    drop(publisher);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let unpublished = loop {
        assert!(tokio::time::Instant::now() < deadline, "no participantUnpublished in 60 s");
        // The subscriber keeps its own consent fresh meanwhile.
        tokio::task::block_in_place(|| {
            pump_for(&mut [&mut subscriber], Duration::from_millis(200))
        });
        let got = ws_sub.drain(Duration::from_millis(10)).await;
        if let Some(n) = got.iter().find(|n| n["method"] == "participantUnpublished") {
            break n["params"].clone();
        }
    };
    assert_eq!(unpublished["connectionId"], pub_cid.as_str(), "{unpublished}");
    assert_eq!(unpublished["reason"], "networkDisconnect", "{unpublished}");
    // The publisher's own browser is told too (openvidu-browser ends its Publisher).
    let own = ws_pub.notification("participantUnpublished").await;
    assert_eq!(own["reason"], "networkDisconnect", "{own}");

    // Every media gauge back to zero; both participants still connected.
    let mut after = Vec::new();
    for _ in 0..100 {
        after = gauges(&s.metrics().await);
        if after.iter().all(|(_, v)| *v == 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(after.iter().all(|(_, v)| *v == 0), "before {before:?}, after {after:?}");
    let text = s.metrics().await;
    assert_eq!(total(&text, "ringsfu_participants"), 2, "{text}");
    assert!(total(&text, "ringsfu_shard_ice_consent_expired_total") >= 1, "{text}");

    // The stream is gone from the REST API as well.
    let (status, session) = s.get(&format!("/openvidu/api/sessions/{sid}")).await;
    assert_eq!(status, 200);
    let published = session["connections"]["content"].as_array().map(|c| {
        c.iter().filter(|c| !c["publishers"].as_array().is_none_or(Vec::is_empty)).count()
    });
    assert_eq!(published, Some(0), "{session}");
}
