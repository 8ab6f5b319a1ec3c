//! End to end through the real signaling and media path with an independent WebRTC stack:
//! str0m (sans-IO; its own ICE agent, SRTP, RTP packetizers, SDP) publishes audio (Opus) and
//! video (VP8) frames with known contents over `publishVideo`; a second str0m peer subscribes
//! with `receiveVideoFrom` (client offer) and must get every frame back intact, payload for
//! payload. Run once per I/O backend (io_uring and epoll).

mod common;
mod str0m_common;

use std::time::Duration;

use ringsfu::config::IoBackend;
use serde_json::json;
use str0m::media::{Direction, MediaKind};
use str0m_common::{Peer, frame, pump_for, run_until, send_frames};

const AV: &[MediaKind] = &[MediaKind::Audio, MediaKind::Video];

async fn publish_and_subscribe(backend: IoBackend, dont_fragment: bool) {
    let s = common::start_with_media(|c| {
        c.media.io_backend = backend;
        c.media.dont_fragment = dont_fragment;
    })
    .await;
    let sid = s.session(Some("str0m")).await;
    let (_, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, _) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, _) = s.join(&sid, &tok_sub, "sub").await;

    // Publish: str0m offers sendonly audio + video.
    let mut publisher = Peer::new();
    let (offer, pending) = publisher.offer(Direction::SendOnly, AV);
    let r = ws_pub
        .call(
            "publishVideo",
            Some(
                json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": true, "hasVideo": true,
                "audioActive": true, "videoActive": true, "typeOfVideo": "CAMERA", "frameRate": 30,
                "videoDimensions": "{\"width\":640,\"height\":480}"}),
            ),
        )
        .await;
    let stream_id =
        r["result"]["id"].as_str().unwrap_or_else(|| panic!("publish failed: {r}")).to_string();
    publisher.accept(pending, r["result"]["sdpAnswer"].as_str().expect("sdpAnswer"));
    let published = ws_sub.notification("participantPublished").await;
    assert_eq!(published["streams"][0]["id"], stream_id);

    // Subscribe: str0m offers recvonly audio + video (openvidu-browser's default flow).
    let mut subscriber = Peer::new();
    let (offer, pending) = subscriber.offer(Direction::RecvOnly, AV);
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpOffer": offer})))
        .await;
    let answer =
        r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("subscribe failed: {r}"));
    assert!(answer.contains("a=ice-lite"), "{answer}");
    subscriber.accept(pending, answer);

    const N: u64 = 100;
    // The media part is synchronous (str0m is sans-IO, driven here over std sockets); keep the
    // runtime's other worker free for the server.
    tokio::task::block_in_place(|| {
        // Both connect (ICE with ringsfu's lite agent, DTLS, SRTP) within 10 s.
        run_until(
            &mut [&mut publisher, &mut subscriber],
            "both peers connected",
            Duration::from_secs(10),
            |p| p.iter().all(|p| p.connected),
        );

        // 100 audio and 100 video frames, paced at 10 ms, then wait for them to arrive.
        let mut sent = Vec::new();
        for n in 0..N {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let f = frame(kind, n);
                publisher.write(kind, n, &f);
                sent.push((kind, f));
            }
            pump_for(&mut [&mut publisher, &mut subscriber], Duration::from_millis(10));
        }
        run_until(
            &mut [&mut publisher, &mut subscriber],
            "every frame received",
            Duration::from_secs(10),
            |p| p[1].frames.len() >= sent.len(),
        );
        // Every frame intact and in order per kind.
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let want: Vec<&Vec<u8>> =
                sent.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f).collect();
            let got: Vec<&Vec<u8>> =
                subscriber.frames.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f).collect();
            assert_eq!(got.len(), want.len(), "{kind:?} frame count");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{kind:?} frame {i} differs");
            }
        }
    });

    // The REST view shows the stream and the subscription.
    let (st, v) = s.get(&format!("/openvidu/api/sessions/{sid}")).await;
    assert_eq!(st, 200);
    let conns = v["connections"]["content"].as_array().expect("connections");
    assert!(conns.iter().any(|c| c["publishers"][0]["streamId"] == stream_id.as_str()), "{v}");
    assert!(conns.iter().any(|c| c["subscribers"][0]["streamId"] == stream_id.as_str()), "{v}");

    // Counters moved: handshakes, forwarded packets, no SRTP failure.
    let engine = s.control.media_engine().expect("engine");
    let st = engine.stats()[0];
    assert_eq!(st.dtls_handshakes, 2);
    assert!(st.rtp_out >= 2 * N, "{st:?}");
    assert_eq!(st.drops(ringsfu::media::MediaDrop::SrtpFailed), 0, "{st:?}");
    assert_eq!(engine.shard_stats()[0].snapshot().backend, backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_publishes_and_subscribes_epoll() {
    publish_and_subscribe(IoBackend::Epoll, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_publishes_and_subscribes_uring() {
    if ringsfu::io::choose_backend(IoBackend::Uring).is_err() {
        eprintln!("io_uring unavailable here; the uring run is skipped");
        return;
    }
    publish_and_subscribe(IoBackend::Uring, false).await;
}

/// `[media] dont_fragment`: the media sockets send with DF set; media still flows both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_publishes_and_subscribes_with_dont_fragment() {
    let backend = ringsfu::io::choose_backend(IoBackend::Auto).expect("a backend");
    publish_and_subscribe(backend, true).await;
}

/// The mediasoup-style flow (`prepareReceiveVideoFrom` then `receiveVideoFrom` with the
/// answer), then the publisher reconnects (`reconnectStream` with a new offer from a new peer
/// connection): the subscriber keeps receiving on its untouched transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_server_offer_and_publisher_reconnect() {
    let s = common::start_with_media(|c| c.media.io_backend = IoBackend::Epoll).await;
    let sid = s.session(Some("str0m-offer")).await;
    let (_, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, _) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, _) = s.join(&sid, &tok_sub, "sub").await;
    let publish = |offer: String| {
        json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": true, "hasVideo": true,
               "audioActive": true, "videoActive": true, "typeOfVideo": "CAMERA", "frameRate": 30})
    };

    let mut p1 = Peer::new();
    let (offer, pending) = p1.offer(Direction::SendOnly, AV);
    let r = ws_pub.call("publishVideo", Some(publish(offer))).await;
    let stream_id = r["result"]["id"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    p1.accept(pending, r["result"]["sdpAnswer"].as_str().expect("answer"));

    // A SUBSCRIBER cannot publish.
    let mut nope = Peer::new();
    let (offer, _) = nope.offer(Direction::SendOnly, AV);
    let r = ws_sub.call("publishVideo", Some(publish(offer))).await;
    assert_eq!(r["error"]["code"], 401, "{r}");

    // Server offer, client answer.
    let r = ws_sub
        .call("prepareReceiveVideoFrom", Some(json!({"sender": stream_id, "reconnect": false})))
        .await;
    let offer = r["result"]["sdpOffer"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    assert!(offer.contains("a=setup:actpass") && offer.contains("a=sendonly"), "{offer}");
    let mut sub = Peer::new();
    let answer = sub.answer(&offer);
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpAnswer": answer})))
        .await;
    assert!(r.get("result").is_some(), "{r}");
    // An answer without an offer is refused with an SDP error.
    let r = ws_sub
        .call("receiveVideoFrom", Some(json!({"sender": stream_id, "sdpAnswer": "v=0"})))
        .await;
    assert_eq!(r["error"]["code"], 302, "{r}");

    tokio::task::block_in_place(|| {
        run_until(&mut [&mut p1, &mut sub], "connected", Duration::from_secs(10), |p| {
            p.iter().all(|p| p.connected)
        });
        send_frames(&mut p1, &mut sub, 0..20, 40);
    });

    // The publisher's browser rebuilds its peer connection: reconnectStream with a new offer.
    let mut p2 = Peer::new();
    let (offer, pending) = p2.offer(Direction::SendOnly, AV);
    let r = ws_pub
        .call("reconnectStream", Some(json!({"stream": stream_id, "sdpString": offer})))
        .await;
    assert_eq!(r["result"]["id"], stream_id.as_str(), "{r}");
    p2.accept(pending, r["result"]["sdpAnswer"].as_str().expect("answer"));
    drop(p1);
    tokio::task::block_in_place(|| {
        run_until(
            &mut [&mut p2, &mut sub],
            "publisher reconnected",
            Duration::from_secs(10),
            |p| p[0].connected,
        );
        send_frames(&mut p2, &mut sub, 100..120, 80);
    });
    // The subscriber got the new source's frames intact on its old transport.
    let video: Vec<&Vec<u8>> =
        sub.frames.iter().filter(|(k, _)| *k == MediaKind::Video).map(|(_, f)| f).collect();
    for n in 100..120u64 {
        assert!(
            video.contains(&&frame(MediaKind::Video, n)),
            "video frame {n} after reconnect missing"
        );
    }
}
