//! One session over two shards, end to end with str0m (an independent WebRTC stack): with
//! `[media] spread_threshold = 0` the publisher sits on the session's home shard and its first
//! subscriber on the other shard, fed through the shard mesh; a second subscriber stays on the
//! home shard. Checked on the wire and on the counters:
//! - both subscribers get every video frame intact, the cross-shard one through 1-in-7 loss on
//!   its downlink: its NACKs are answered from the mirror's retransmission ring on its own shard;
//! - a keyframe request (PLI) of the cross-shard subscriber crosses back to the publisher;
//! - when that subscriber leaves, its shard drops the mirror and the home shard stops copying.
//!
//! Run once per I/O backend.

mod common;
mod str0m_common;

use std::time::Duration;

use ringsfu::config::IoBackend;
use ringsfu::media::{MediaDrop, MediaStatsSnapshot};
use str0m::media::MediaKind;
use str0m_common::{Peer, Watchdog, assert_frames, frame, pump_for, run_until};

const VIDEO: &[MediaKind] = &[MediaKind::Video];

/// The port of the host candidate an SDP names.
fn candidate_port(sdp: &str) -> u16 {
    let line = sdp.lines().find(|l| l.starts_with("a=candidate:")).expect("a candidate");
    line.split_whitespace().nth(5).and_then(|p| p.parse().ok()).expect("candidate port")
}

/// The payload type an SDP maps to `codec`.
fn payload_type(sdp: &str, codec: &str) -> u8 {
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .find_map(|l| {
            let (pt, enc) = l.split_once(' ')?;
            enc.starts_with(codec).then(|| pt.parse().ok()).flatten()
        })
        .expect("codec in the SDP")
}

fn stats(s: &common::Server) -> Vec<MediaStatsSnapshot> {
    s.control.media_engine().expect("engine").stats()
}

async fn cross_shard(backend: IoBackend) {
    let _watchdog = Watchdog::new("cross-shard test", Duration::from_secs(120));
    let s = common::start_with_media(|c| {
        c.media.io_backend = backend;
        c.media.shards = 2;
        c.media.spread_threshold = 0;
    })
    .await;
    let ports: Vec<u16> =
        s.control.media_engine().expect("engine").local_addrs().iter().map(|a| a.port()).collect();
    let sid = s.session(Some("mesh")).await;
    let (_, tok_pub) = s.connection(&sid, "PUBLISHER", "").await;
    let (_, tok_a) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (_, tok_b) = s.connection(&sid, "SUBSCRIBER", "").await;
    let (mut ws_pub, _) = s.join(&sid, &tok_pub, "pub").await;
    let (mut ws_a, _) = s.join(&sid, &tok_a, "a").await;
    let (mut ws_b, _) = s.join(&sid, &tok_b, "b").await;

    let mut publisher = Peer::new();
    let (stream, pub_answer) = str0m_common::publish(&mut ws_pub, &mut publisher, VIDEO).await;
    let home = ports.iter().position(|&p| p == candidate_port(&pub_answer)).expect("home shard");
    let other = 1 - home;

    // Subscriber A: the least-loaded shard, the other one. Subscriber B: a tie, the home shard.
    let mut sub_a = Peer::new();
    let answer_a = str0m_common::subscribe(&mut ws_a, &mut sub_a, &stream, VIDEO).await;
    assert_eq!(candidate_port(&answer_a), ports[other], "A on the other shard: {answer_a}");
    let mut sub_b = Peer::new();
    let answer_b = str0m_common::subscribe(&mut ws_b, &mut sub_b, &stream, VIDEO).await;
    assert_eq!(candidate_port(&answer_b), ports[home], "B on the home shard: {answer_b}");
    // 1 in 7 of the media packets lost (retransmissions, on the RTX payload type, all arrive).
    sub_a.drop_every = 7;
    sub_a.drop_pt = Some(payload_type(&answer_a, "VP8"));

    tokio::task::block_in_place(|| {
        run_until(
            &mut [&mut publisher, &mut sub_a, &mut sub_b],
            "three peers connected",
            Duration::from_secs(10),
            |p| p.iter().all(|p| p.connected),
        );
        const N: u64 = 100;
        for n in 0..N + 3 {
            if n == N {
                // A loss in the last frame is only seen when something follows it: the last
                // three frames arrive whole.
                sub_a.drop_every = 0;
            }
            publisher.write(MediaKind::Video, n, &frame(MediaKind::Video, n));
            pump_for(&mut [&mut publisher, &mut sub_a, &mut sub_b], Duration::from_millis(10));
        }
        let all = (N + 3) as usize;
        run_until(
            &mut [&mut publisher, &mut sub_a, &mut sub_b],
            "every frame at both subscribers",
            Duration::from_secs(15),
            |p| {
                let done = p[1].frames.len() >= all && p[2].frames.len() >= all;
                // MESH_DEBUG=1: where a stuck run stands, on stderr.
                if !done && std::env::var_os("MESH_DEBUG").is_some() {
                    let st = stats(&s);
                    eprintln!(
                        "frames: a {} b {}; other: rtx_out {} rtx_missing {} too_old {} over_budget {} nacks_in {} mesh_in {}; home: rtp_in {} mesh_out {} nacks_out {} drops {:?}",
                        p[1].frames.len(),
                        p[2].frames.len(),
                        st[other].rtx_out,
                        st[other].rtx_missing,
                        st[other].rtx_too_old,
                        st[other].rtx_over_budget,
                        st[other].nacks_in,
                        st[other].mesh_in,
                        st[home].rtp_in,
                        st[home].mesh_out,
                        st[home].nacks_out,
                        st[home].drops
                    );
                }
                done
            },
        );
        assert!(sub_a.dropped > 10, "loss was applied: {}", sub_a.dropped);
        assert_frames(&sub_a, 0..N + 3);
        assert_frames(&sub_b, 0..N + 3);
    });
    let st = stats(&s);
    assert_eq!(st[other].mirrors, 1, "{:?}", st[other]);
    assert_eq!(st[home].mirrors, 0, "{:?}", st[home]);
    assert!(st[home].mesh_out >= 100, "packets copied to the other shard: {:?}", st[home]);
    assert!(st[other].mesh_in >= 100, "{:?}", st[other]);
    assert!(st[other].rtx_out > 0, "NACKs answered on the subscriber's shard: {:?}", st[other]);
    assert!(st[other].rtp_out >= 100 && st[home].rtp_out >= 100, "{st:?}");
    assert_eq!(st[home].drops(MediaDrop::MeshFull), 0, "{:?}", st[home]);
    assert_eq!(st[home].publishers, 1);
    assert_eq!((st[home].subscribers, st[other].subscribers), (1, 1), "{st:?}");

    // A's keyframe request crosses back to the publisher (after the keyframe limiter's
    // interval since the requests of the subscribers' start).
    tokio::task::block_in_place(|| {
        pump_for(&mut [&mut publisher, &mut sub_a, &mut sub_b], Duration::from_millis(700));
        let (before, pli_before) = (publisher.keyframe_requests, stats(&s)[home].pli_out);
        sub_a.request_keyframe(MediaKind::Video);
        run_until(
            &mut [&mut publisher, &mut sub_a, &mut sub_b],
            "the publisher asked for a keyframe",
            Duration::from_secs(5),
            |p| p[0].keyframe_requests > before,
        );
        assert!(stats(&s)[home].pli_out > pli_before);
    });

    // The metrics show the mesh per shard.
    let port: u16 = s.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let text = tokio::task::spawn_blocking(move || {
        common::metrics_text(port, common::SECRET).expect("metrics")
    })
    .await
    .expect("metrics task");
    let line = format!("ringsfu_shard_mirror_producers{{shard=\"{other}\"}} 1");
    assert!(text.contains(&line), "{line} in\n{text}");
    assert!(text.contains("ringsfu_shard_mesh_in_total{shard="), "{text}");

    // A leaves: its shard drops the mirror, the home shard stops copying.
    let r = ws_a.call("unsubscribeFromVideo", Some(serde_json::json!({"sender": stream}))).await;
    assert!(r.get("error").is_none(), "{r}");
    tokio::task::block_in_place(|| {
        run_until(&mut [&mut publisher, &mut sub_b], "mirror gone", Duration::from_secs(5), |_| {
            stats(&s)[other].mirrors == 0
        });
        pump_for(&mut [&mut publisher, &mut sub_b], Duration::from_millis(200));
        let copied = stats(&s)[home].mesh_out;
        for n in 103..123 {
            publisher.write(MediaKind::Video, n, &frame(MediaKind::Video, n));
            pump_for(&mut [&mut publisher, &mut sub_b], Duration::from_millis(10));
        }
        run_until(&mut [&mut publisher, &mut sub_b], "B gets more", Duration::from_secs(5), |p| {
            p[1].frames.len() >= 123
        });
        assert_eq!(stats(&s)[home].mesh_out, copied, "nothing copied after the detach");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_spans_two_shards_uring() {
    if !common::uring_or_skip() {
        return;
    }
    cross_shard(IoBackend::Uring).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_spans_two_shards_epoll() {
    cross_shard(IoBackend::Epoll).await;
}
