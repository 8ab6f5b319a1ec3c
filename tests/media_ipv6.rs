//! Several public addresses, IPv4 and IPv6: the media port bound to the IPv6 wildcard (dual
//! stack) with `public_ips = [127.0.0.1, ::1]`. The answers carry a host candidate for each;
//! a str0m publisher on 127.0.0.1 and a str0m subscriber on ::1 connect on the address family
//! they have, and every frame arrives intact.

mod common;
mod str0m_common;

use std::time::Duration;

use str0m::media::MediaKind;
use str0m_common::{Peer, connect, frame, publish, pump_for, run_until, subscribe};

const AV: &[MediaKind] = &[MediaKind::Audio, MediaKind::Video];

/// The host candidates' addresses, each once (every bundled m-section repeats them).
fn host_candidates(sdp: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for l in sdp.lines().filter(|l| l.starts_with("a=candidate:") && l.contains("typ host")) {
        let ip = l.split_whitespace().nth(4).unwrap_or_default().to_string();
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_publisher_and_ipv6_subscriber_on_one_dual_stack_port() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        assert!(std::env::var_os("RINGSFU_REQUIRE_TOOLS").is_none(), "no IPv6 loopback here");
        eprintln!("SKIPPED: no IPv6 loopback here");
        return;
    }
    let s = common::start_with_media(|c| {
        c.media.bind_address = "::".parse().unwrap();
        c.media.public_ips = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    })
    .await;
    let sid = s.session(None).await;
    let (_, mut ws_pub) = s.joined(&sid, "PUBLISHER", "pub").await;
    let (_, mut ws_sub) = s.joined(&sid, "SUBSCRIBER", "sub").await;

    let mut publisher = Peer::bound("127.0.0.1:0");
    let (stream, answer) = publish(&mut ws_pub, &mut publisher, AV).await;
    assert_eq!(host_candidates(&answer), ["127.0.0.1", "::1"], "{answer}");
    let mut subscriber = Peer::bound("[::1]:0");
    let answer = subscribe(&mut ws_sub, &mut subscriber, &stream, AV).await;
    assert_eq!(host_candidates(&answer), ["127.0.0.1", "::1"], "{answer}");

    const N: u64 = 40;
    tokio::task::block_in_place(|| {
        connect(&mut [&mut publisher, &mut subscriber]);
        for n in 0..N {
            for kind in [MediaKind::Audio, MediaKind::Video] {
                publisher.write(kind, n, &frame(kind, n));
            }
            pump_for(&mut [&mut publisher, &mut subscriber], Duration::from_millis(10));
        }
        run_until(&mut [&mut publisher, &mut subscriber], "frames", Duration::from_secs(10), |p| {
            p[1].frames.len() >= 2 * N as usize
        });
    });
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let got: Vec<&Vec<u8>> =
            subscriber.frames.iter().filter(|(k, _)| *k == kind).map(|(_, f)| f).collect();
        assert_eq!(got.len(), N as usize, "{kind:?}");
        for (n, g) in got.iter().enumerate() {
            assert_eq!(**g, frame(kind, n as u64), "{kind:?} frame {n}");
        }
    }
}
