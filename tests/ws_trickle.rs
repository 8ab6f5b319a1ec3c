//! Server candidates trickled as `iceCandidate` notifications (spec §4.3, §4.5), besides the
//! same candidates in the SDP: after publishVideo to the publisher (its own connection id),
//! after receiveVideoFrom (client offer) and prepareReceiveVideoFrom (server offer) to the
//! subscriber, naming the publisher's connection; never to anyone else.

mod common;

use std::time::Duration;

use common::start_with_media;
use serde_json::{Value, json};

const PUBLISH: &str = include_str!("data/sdp/chrome156_publish_offer.sdp");
const SUBSCRIBE: &str = include_str!("data/sdp/chrome156_subscribe_offer.sdp");

fn result(v: &Value) -> &Value {
    assert!(v.get("error").is_none(), "unexpected error: {v}");
    &v["result"]
}

/// The `a=candidate:` values of the first m-section of `sdp` that has any, with that
/// section's index and mid.
fn sdp_candidates(sdp: &str) -> (Vec<String>, u64, String) {
    let sections: Vec<&str> = sdp.split("m=").skip(1).collect();
    for (i, sec) in sections.iter().enumerate() {
        let cands: Vec<String> = sec
            .lines()
            .filter_map(|l| l.trim().strip_prefix("a="))
            .filter(|c| c.starts_with("candidate:"))
            .map(str::to_string)
            .collect();
        if !cands.is_empty() {
            let mid = sec.lines().find_map(|l| l.trim().strip_prefix("a=mid:")).unwrap();
            return (cands, i as u64, mid.to_string());
        }
    }
    panic!("no candidate in {sdp}");
}

/// Every `iceCandidate` notification of `ws` within a quiet period.
async fn trickled(ws: &mut common::Ws) -> Vec<Value> {
    ws.drain(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|n| n["method"] == "iceCandidate")
        .map(|n| n["params"].clone())
        .collect()
}

fn check(got: &[Value], sdp: &str, sender: &str, endpoint: &str) {
    let (cands, index, mid) = sdp_candidates(sdp);
    let mut names: Vec<&str> = got.iter().map(|p| p["candidate"].as_str().unwrap()).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = cands.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(names, want, "the SDP's candidates, each once");
    for p in got {
        assert_eq!(p["senderConnectionId"], sender, "{p}");
        assert_eq!(p["endpointName"], endpoint, "{p}");
        assert_eq!(p["sdpMid"], mid.as_str(), "{p}");
        assert_eq!(p["sdpMLineIndex"], index, "{p}");
    }
}

#[tokio::test]
async fn server_candidates_are_trickled_to_the_peer_owner() {
    let s = start_with_media(|c| {
        c.media.public_ips = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    })
    .await;
    let sid = s.session(None).await;
    let (ca, mut a) = s.joined(&sid, "PUBLISHER", "A").await;
    let (cb, mut b) = s.joined(&sid, "SUBSCRIBER", "B").await;
    a.drain(Duration::from_millis(100)).await;

    let r = a.call("publishVideo", Some(common::publish_params(PUBLISH, true))).await;
    let stream = result(&r)["id"].as_str().unwrap().to_string();
    let answer = result(&r)["sdpAnswer"].as_str().unwrap().to_string();
    let got = trickled(&mut a).await;
    assert_eq!(got.len(), 2, "one per public address: {got:?}");
    check(&got, &answer, &ca, &stream);
    assert!(trickled(&mut b).await.is_empty(), "nothing of A's peer to B");

    // Client-offer subscription (mediaServer "kurento").
    let r =
        b.call("receiveVideoFrom", Some(json!({"sender": stream, "sdpOffer": SUBSCRIBE}))).await;
    let answer = result(&r)["sdpAnswer"].as_str().unwrap().to_string();
    let got = trickled(&mut b).await;
    check(&got, &answer, &ca, &format!("{cb}_{stream}"));
    assert!(trickled(&mut a).await.is_empty(), "nothing of B's peer to A");

    // Server-offer subscription (mediaServer "mediasoup").
    let r = b
        .call("prepareReceiveVideoFrom", Some(json!({"sender": stream, "reconnect": false})))
        .await;
    let offer = result(&r)["sdpOffer"].as_str().unwrap().to_string();
    let got = trickled(&mut b).await;
    check(&got, &offer, &ca, &format!("{cb}_{stream}"));
}
