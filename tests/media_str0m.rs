//! End to end through the real signaling and media path with an independent WebRTC stack:
//! str0m (sans-IO; its own ICE agent, SRTP, RTP packetizers, SDP) publishes audio (Opus) and
//! video (VP8) frames with known contents over `publishVideo`; a second str0m peer subscribes
//! with `receiveVideoFrom` (client offer) and must get every frame back intact, payload for
//! payload. Run once per I/O backend (io_uring and epoll). Then the subscriber's side of the
//! protocol (`unsubscribeFromVideo`, both forms of `reconnectStream`) and a transport failure
//! (a wrong DTLS fingerprint in the offer) reported as `mediaError`, each checked on the wire,
//! on `/metrics` and by what the str0m peers receive.

mod common;
mod str0m_common;

use std::time::Duration;

use ringsfu::config::IoBackend;
use serde_json::json;
use str0m::media::{Direction, MediaKind};
use str0m_common::{
    Peer, Watchdog, assert_frames, connect, frame, pump_for, run_until, send_frames,
};

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
    let (stream_id, _) = str0m_common::publish(&mut ws_pub, &mut publisher, AV).await;
    let published = ws_sub.notification("participantPublished").await;
    assert_eq!(published["streams"][0]["id"], stream_id);

    // Subscribe: str0m offers recvonly audio + video (openvidu-browser's default flow).
    let mut subscriber = Peer::new();
    let answer = str0m_common::subscribe(&mut ws_sub, &mut subscriber, &stream_id, AV).await;
    assert!(answer.contains("a=ice-lite"), "{answer}");

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
    if !common::uring_or_skip() {
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
    let publish = |offer: String| common::publish_params(&offer, true);

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

const SUBSCRIBERS: &str = "ringsfu_shard_media_subscribers{shard=\"0\"}";
const ICE_LEGS: &str = "ringsfu_shard_ice_legs{shard=\"0\"}";
const RTP_IN: &str = "ringsfu_shard_rtp_in_total{shard=\"0\"}";
const DTLS_OK: &str = "ringsfu_shard_dtls_handshakes_total{shard=\"0\"}";
const DTLS_FAILED: &str = "ringsfu_shard_dtls_failures_total{shard=\"0\"}";

/// A server (one epoll shard), a session with a publisher and a subscriber joined, and a str0m
/// publisher (audio and video) whose offer went through `edit` before `publishVideo`.
struct Setup {
    s: common::Server,
    sid: String,
    pub_connection: String,
    sub_connection: String,
    ws_pub: common::Ws,
    ws_sub: common::Ws,
    stream_id: String,
    publisher: Peer,
    _watchdog: Watchdog,
}

async fn setup(session: &'static str, edit: impl FnOnce(String) -> String) -> Setup {
    let watchdog = Watchdog::new(session, Duration::from_secs(120));
    let s = common::start_with_media(|c| c.media.io_backend = IoBackend::Epoll).await;
    let sid = s.session(Some(session)).await;
    let (pub_connection, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (sub_connection, tok_sub) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, _) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_sub, _) = s.join(&sid, &tok_sub, "sub").await;
    let mut publisher = Peer::new();
    let (offer, pending) = publisher.offer(Direction::SendOnly, AV);
    let r = ws_pub.call("publishVideo", Some(common::publish_params(&edit(offer), true))).await;
    let stream_id = r["result"]["id"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    publisher.accept(pending, r["result"]["sdpAnswer"].as_str().expect("sdpAnswer"));
    let published = ws_sub.notification("participantPublished").await;
    assert_eq!(published["streams"][0]["id"], stream_id);
    Setup {
        s,
        sid,
        pub_connection,
        sub_connection,
        ws_pub,
        ws_sub,
        stream_id,
        publisher,
        _watchdog: watchdog,
    }
}

impl Setup {
    /// Connects `sub` and the publisher, sends `frames` (both kinds, 40 frames in all for 20
    /// numbers) and checks `sub` got them intact.
    fn flows_to(&mut self, sub: &mut Peer, frames: std::ops::Range<u64>) {
        let publisher = &mut self.publisher;
        let want = 2 * (frames.end - frames.start) as usize;
        tokio::task::block_in_place(|| {
            connect(&mut [&mut *publisher, &mut *sub]);
            send_frames(publisher, sub, frames.clone(), want);
        });
        assert_frames(sub, frames);
    }

    /// One subscriber leg on the shard, and the REST view lists the one subscription.
    async fn assert_one_leg(&self) {
        assert_eq!(self.s.metric(SUBSCRIBERS).await, 1);
        assert_eq!(self.subscriptions().await, vec![json!(self.stream_id)]);
    }

    /// The streams the subscriber's connection subscribes to, from the REST view.
    async fn subscriptions(&self) -> Vec<serde_json::Value> {
        let (st, v) = self.s.get(&format!("/openvidu/api/sessions/{}", self.sid)).await;
        assert_eq!(st, 200, "{v}");
        let conns = v["connections"]["content"].as_array().expect("connections");
        let sub = conns.iter().find(|c| c["connectionId"] == self.sub_connection.as_str());
        let sub = sub.unwrap_or_else(|| panic!("no subscriber connection in {v}"));
        let subs = sub["subscribers"].as_array().expect("subscribers");
        subs.iter().map(|x| x["streamId"].clone()).collect()
    }
}

/// A fresh str0m subscriber (recvonly audio and video) offered through `method` with `params`
/// plus its `sdpOffer` (`receiveVideoFrom` or a subscriber's `reconnectStream`).
async fn subscribe_with_offer(
    ws: &mut common::Ws,
    method: &str,
    params: serde_json::Value,
) -> Peer {
    let mut sub = Peer::new();
    let (offer, pending) = sub.offer(Direction::RecvOnly, AV);
    let mut params = params;
    params["sdpOffer"] = json!(offer);
    let r = ws.call(method, Some(params)).await;
    let answer = r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("{method}: {r}"));
    sub.accept(pending, answer);
    sub
}

/// A success whose result is `{}` (plus the `sessionId` every result carries, spec §4.1).
fn assert_empty_result(r: &serde_json::Value) {
    let result = r["result"].as_object().unwrap_or_else(|| panic!("not a success: {r}"));
    assert!(result.keys().all(|k| k == "sessionId"), "{r}");
}

/// `unsubscribeFromVideo`: the server drops the leg (its subscriber gauge falls, the REST view
/// forgets the subscription) and the subscriber gets no more RTP or RTCP while the publisher
/// keeps sending; subscribing again brings the media back, intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_unsubscribe_then_subscribe_again() {
    let mut t = setup("str0m-unsub", |o| o).await;
    let stream = t.stream_id.clone();
    let mut sub =
        subscribe_with_offer(&mut t.ws_sub, "receiveVideoFrom", json!({"sender": stream})).await;
    t.flows_to(&mut sub, 0..20);
    t.assert_one_leg().await;

    let r = t.ws_sub.call("unsubscribeFromVideo", Some(json!({"sender": stream}))).await;
    assert_empty_result(&r);
    t.s.await_metric(SUBSCRIBERS, "fell to 0", |v| v == 0).await;
    assert_eq!(t.s.metric(ICE_LEGS).await, 1, "only the publisher's leg is left");
    assert!(t.subscriptions().await.is_empty());

    // Whatever the shard sent before it dropped the leg is read now; after that nothing comes
    // while the publisher sends 30 more frames of each kind and the server receives them.
    let publisher = &mut t.publisher;
    tokio::task::block_in_place(|| pump_for(&mut [&mut sub], Duration::from_millis(200)));
    let (datagrams, frames) = (sub.rtp_datagrams, sub.frames.len());
    let rtp_in = t.s.metric(RTP_IN).await;
    tokio::task::block_in_place(|| {
        for n in 20..50 {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                publisher.write(kind, n, &frame(kind, n));
            }
            pump_for(&mut [&mut *publisher, &mut sub], Duration::from_millis(10));
        }
    });
    t.s.await_metric(RTP_IN, "moved", |v| v > rtp_in).await;
    let publisher = &mut t.publisher;
    tokio::task::block_in_place(|| {
        pump_for(&mut [&mut *publisher, &mut sub], Duration::from_millis(200));
    });
    assert_eq!(sub.rtp_datagrams, datagrams, "RTP/RTCP after unsubscribeFromVideo");
    assert_eq!(sub.frames.len(), frames);
    drop(sub);

    // Subscribing again (a new peer connection, as the browser makes): media flows again.
    let mut sub =
        subscribe_with_offer(&mut t.ws_sub, "receiveVideoFrom", json!({"sender": stream})).await;
    t.flows_to(&mut sub, 100..120);
    t.assert_one_leg().await;

    // The spec's form names the publisher's connection id.
    let sender = t.pub_connection.clone();
    let r = t.ws_sub.call("unsubscribeFromVideo", Some(json!({"sender": sender}))).await;
    assert_empty_result(&r);
    t.s.await_metric(SUBSCRIBERS, "fell to 0", |v| v == 0).await;
    assert!(t.subscriptions().await.is_empty());
}

/// A subscriber's `reconnectStream`, both forms of the spec: a client offer from a new peer
/// connection (`{stream, sdpOffer}`), then a server offer (`prepareReceiveVideoFrom` with
/// `reconnect: true`, answered in `{stream, sdpString}`). Each time the new peer gets the
/// frames intact and the old leg is gone (one subscriber leg on the shard).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_subscriber_reconnect_stream_both_forms() {
    let mut t = setup("str0m-sub-reconnect", |o| o).await;
    let stream = t.stream_id.clone();
    let mut sub1 =
        subscribe_with_offer(&mut t.ws_sub, "receiveVideoFrom", json!({"sender": stream})).await;
    t.flows_to(&mut sub1, 0..20);
    drop(sub1);

    // Client offer from a fresh peer connection.
    let mut sub2 = subscribe_with_offer(
        &mut t.ws_sub,
        "reconnectStream",
        json!({"stream": stream, "forciblyReconnect": false}),
    )
    .await;
    t.flows_to(&mut sub2, 100..120);
    // The shard removed the old leg before it added the new one (commands run in order).
    t.assert_one_leg().await;
    drop(sub2);

    // Server offer, client answer.
    let r = t
        .ws_sub
        .call("prepareReceiveVideoFrom", Some(json!({"sender": stream, "reconnect": true})))
        .await;
    let offer = r["result"]["sdpOffer"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    let mut sub3 = Peer::new();
    let answer = sub3.answer(&offer);
    let r = t
        .ws_sub
        .call(
            "reconnectStream",
            Some(json!({"stream": stream, "sdpString": answer, "forciblyReconnect": true})),
        )
        .await;
    assert_empty_result(&r);
    t.flows_to(&mut sub3, 200..220);
    t.assert_one_leg().await;
    assert_eq!(t.s.metric(DTLS_OK).await, 4, "publisher and three subscriber legs");
}

/// `sdp` with the value of its `a=fingerprint` lines replaced by another one (every byte
/// inverted): the certificate the peer presents no longer matches.
fn wrong_fingerprint(sdp: String) -> String {
    let mut changed = 0;
    let lines: Vec<String> = sdp
        .split("\r\n")
        .map(|l| match l.strip_prefix("a=fingerprint:") {
            Some(v) => {
                let (alg, hex) = v.split_once(' ').expect("a=fingerprint:<alg> <hex>");
                let inverted: Vec<String> = hex
                    .split(':')
                    .map(|b| format!("{:02X}", !u8::from_str_radix(b, 16).expect("hex byte")))
                    .collect();
                changed += 1;
                format!("a=fingerprint:{alg} {}", inverted.join(":"))
            }
            None => l.to_string(),
        })
        .collect();
    assert!(changed > 0, "no a=fingerprint in {sdp}");
    lines.join("\r\n")
}

/// A publisher whose offer carries a wrong `a=fingerprint`: ICE completes, the server's DTLS
/// fingerprint check fails, the participant gets `mediaError` naming the reason and the
/// stream, `/metrics` counts the failure, and the publisher never gets media keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn str0m_wrong_fingerprint_reported_as_media_error() {
    let mut t = setup("str0m-bad-fp", wrong_fingerprint).await;
    assert_eq!(t.s.metric(DTLS_FAILED).await, 0);
    // Bounded: 200 rounds of 50 ms of str0m, each followed by one scrape.
    let mut failed = 0;
    for _ in 0..200 {
        let publisher = &mut t.publisher;
        tokio::task::block_in_place(|| pump_for(&mut [publisher], Duration::from_millis(50)));
        failed = t.s.metric(DTLS_FAILED).await;
        if failed > 0 {
            break;
        }
    }
    assert_eq!(failed, 1, "DTLS failures on /metrics");
    assert_eq!(t.s.metric(DTLS_OK).await, 0);
    let err = t.ws_pub.notification("mediaError").await;
    let text = err["error"].as_str().unwrap_or_else(|| panic!("{err}"));
    assert!(text.contains("fingerprint_mismatch"), "{err}");
    assert!(text.contains(&t.stream_id), "{err}");
    assert!(!t.publisher.connected, "str0m must not get SRTP keys");
}
