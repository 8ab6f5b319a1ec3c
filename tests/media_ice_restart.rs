//! ICE restart on renegotiation: a str0m publisher, then a str0m subscriber, restart ICE on
//! their peer connections (`ice_restart`: new ufrag and password, the same DTLS association and
//! SDP session) and send the new offer with `reconnectStream`. ringsfu answers with new
//! credentials of its own (and, to the subscriber, the same tracks and SSRCs), keeps the DTLS
//! associations and the SRTP keys (no further handshake), and the subscriber keeps receiving
//! the publisher's frames intact. A new peer connection (what openvidu-browser does) still
//! gets a new transport: see `tests/media_str0m.rs`.

mod common;
mod str0m_common;

use std::time::Duration;

use serde_json::json;
use str0m::change::SdpPendingOffer;
use str0m::media::MediaKind;
use str0m_common::{Peer, connect, frame, publish, pump_for, run_until, subscribe};

const AV: &[MediaKind] = &[MediaKind::Audio, MediaKind::Video];

fn ice_ufrag(sdp: &str) -> &str {
    sdp.lines().find_map(|l| l.trim().strip_prefix("a=ice-ufrag:")).expect("a=ice-ufrag")
}

/// An ICE restart on `peer`'s peer connection: its new offer (new ufrag and password).
fn restart_offer(peer: &mut Peer) -> (String, SdpPendingOffer) {
    let mut change = peer.rtc.sdp_api();
    change.ice_restart(true);
    let (offer, pending) = change.apply().expect("a restart offer");
    (offer.to_sdp_string(), pending)
}

/// Sends frames `range` of both kinds, paced, and waits until the subscriber has `want` frames.
fn send(publisher: &mut Peer, subscriber: &mut Peer, range: std::ops::Range<u64>, want: usize) {
    for n in range {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            publisher.write(kind, n, &frame(kind, n));
        }
        pump_for(&mut [&mut *publisher, &mut *subscriber], Duration::from_millis(10));
    }
    run_until(&mut [publisher, subscriber], "frames received", Duration::from_secs(10), |p| {
        p[1].frames.len() >= want
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ice_restarts_keep_the_dtls_associations_and_the_media() {
    let s = common::start_with_media(|_| {}).await;
    let sid = s.session(None).await;
    let (_, mut ws_pub) = s.joined(&sid, "PUBLISHER", "pub").await;
    let (_, mut ws_sub) = s.joined(&sid, "SUBSCRIBER", "sub").await;

    let mut publisher = Peer::new();
    let (stream, first_answer) = publish(&mut ws_pub, &mut publisher, AV).await;
    let mut subscriber = Peer::new();
    subscribe(&mut ws_sub, &mut subscriber, &stream, AV).await;

    tokio::task::block_in_place(|| {
        connect(&mut [&mut publisher, &mut subscriber]);
        send(&mut publisher, &mut subscriber, 0..20, 40);
    });

    // ICE restart on the same peer connection: new credentials, same certificate.
    let (offer, pending) = restart_offer(&mut publisher);
    let r =
        ws_pub.call("reconnectStream", Some(json!({"stream": stream, "sdpString": offer}))).await;
    let answer = r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    assert_ne!(ice_ufrag(&answer), ice_ufrag(&first_answer), "new server credentials");
    publisher.accept(pending, &answer);

    let before = subscriber.frames.len();
    tokio::task::block_in_place(|| {
        send(&mut publisher, &mut subscriber, 20..60, before + 80);
    });

    // The subscriber restarts ICE on its peer connection (client-offer reconnectStream).
    let (offer, pending) = restart_offer(&mut subscriber);
    let r =
        ws_sub.call("reconnectStream", Some(json!({"stream": stream, "sdpOffer": offer}))).await;
    let answer = r["result"]["sdpAnswer"].as_str().unwrap_or_else(|| panic!("{r}")).to_string();
    subscriber.accept(pending, &answer);
    let before = subscriber.frames.len();
    tokio::task::block_in_place(|| {
        send(&mut publisher, &mut subscriber, 60..100, before + 80);
    });

    // Every frame arrived intact, in order, across both restarts.
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let got: Vec<&Vec<u8>> =
            subscriber.frames.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f).collect();
        let want: Vec<Vec<u8>> = (0..100).map(|n| frame(kind, n)).collect();
        assert_eq!(got.len(), want.len(), "{kind:?} frame count");
        for (n, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(*g, w, "{kind:?} frame {n}");
        }
    }

    let engine = s.control.media_engine().expect("engine");
    let st = engine.stats()[0];
    assert_eq!(st.ice_restarts, 2, "{st:?}");
    assert_eq!(st.dtls_handshakes, 2, "no new handshake: {st:?}");
    assert_eq!(st.subscribers, 1, "the same leg: {st:?}");
    assert_eq!(st.drops(ringsfu::media::MediaDrop::SrtpFailed), 0, "{st:?}");
}
