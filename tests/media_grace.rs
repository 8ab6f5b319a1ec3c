//! A publisher whose browser closed its peer connection (DTLS close_notify) keeps its tracks
//! for `reconnectStream` during `PUBLISHER_GRACE` (openvidu-browser closes the old connection
//! just before it sends the new offer), and vanishes once the grace passes without one; a
//! restart within the grace keeps it. Through a `MediaCore` on a virtual clock, the peers
//! connected the real way (`core_peer`).

mod core_peer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use core_peer::{connect_keeping_dtls, ice, meta, peer_addr};
use ringsfu::dtls::{DtlsContext, DtlsEndpoint, Fingerprint};
use ringsfu::media::{
    CoreSettings, IceParams, MediaCore, MediaStats, PUBLISHER_GRACE, PeerId, ShardCommand,
    ShardEvent,
};
use ringsfu::shard::{ShardCore, TxQueue};

fn server() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// The client closes its DTLS association (close_notify) towards the core.
fn close(core: &mut MediaCore, tx: &mut TxQueue, client: &mut DtlsEndpoint, i: u32, now: Instant) {
    client.close();
    let mut out = vec![0u8; 2048];
    while let Some(n) = client.poll_transmit(&mut out) {
        core.handle_datagram(now, meta(peer_addr(i), server(), n), &mut out[..n], tx);
    }
}

fn events(core: &mut MediaCore) -> Vec<ShardEvent> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

/// Runs the core's timers from `from` for `d`, 20 ms apart; the time reached.
fn run(core: &mut MediaCore, tx: &mut TxQueue, from: Instant, d: Duration) -> Instant {
    let mut now = from;
    while now < from + d {
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, tx);
        }
        while tx.pop_pending(|_, _| ()).is_some() {}
        now += Duration::from_millis(20);
    }
    now
}

fn setup() -> (MediaCore, TxQueue, DtlsContext, Fingerprint, Fingerprint) {
    let ((server_ctx, server_fp), (client_ctx, client_fp)) = core_peer::contexts();
    let stats = Arc::new(MediaStats::default());
    let core = MediaCore::new(server(), server_ctx, CoreSettings::default(), stats, Instant::now());
    (core, TxQueue::new(256), client_ctx, server_fp, client_fp)
}

fn publish(core: &mut MediaCore, tx: &mut TxQueue, client_fp: Fingerprint) {
    let tracks = vec![core_peer::video_track(1111)];
    core_peer::add_publisher(core, Instant::now(), tx, 1, client_fp, tracks);
}

#[test]
fn a_closed_publisher_vanishes_after_the_grace_without_reconnect_stream() {
    let (mut core, mut tx, client_ctx, server_fp, client_fp) = setup();
    publish(&mut core, &mut tx, client_fp);
    let (_, _, mut client) =
        connect_keeping_dtls(&mut core, server(), &mut tx, &client_ctx, server_fp, 1);
    let t0 = Instant::now();
    let _ = events(&mut core);
    close(&mut core, &mut tx, &mut client, 1, t0);
    assert_eq!(events(&mut core), vec![ShardEvent::Closed { id: PeerId(1) }]);
    assert_eq!(core.peer_count(), 1, "kept for reconnectStream");
    // Just before the grace ends: still there.
    let now = run(&mut core, &mut tx, t0, PUBLISHER_GRACE - Duration::from_millis(100));
    assert_eq!(core.peer_count(), 1);
    assert_eq!(events(&mut core), vec![]);
    // After it: gone, and said so.
    run(&mut core, &mut tx, now, Duration::from_millis(200));
    assert_eq!(
        events(&mut core),
        vec![ShardEvent::Vanished { id: PeerId(1), reason: "transport not reconnected" }]
    );
    assert_eq!(core.peer_count(), 0);
    assert_eq!(core.poll_timeout(), None, "no timer left");
}

#[test]
fn a_reconnect_stream_within_the_grace_keeps_the_publisher() {
    let (mut core, mut tx, client_ctx, server_fp, client_fp) = setup();
    publish(&mut core, &mut tx, client_fp);
    let (_, _, mut client) =
        connect_keeping_dtls(&mut core, server(), &mut tx, &client_ctx, server_fp, 1);
    let t0 = Instant::now();
    close(&mut core, &mut tx, &mut client, 1, t0);
    let now = run(&mut core, &mut tx, t0, Duration::from_secs(1));
    // reconnectStream: a new peer connection (new credentials, same tracks).
    let fresh = IceParams { local_ufrag: "srvR".into(), ..ice(1) };
    core.handle_command(
        now,
        ShardCommand::RestartPublisher {
            id: PeerId(1),
            ice: fresh,
            remote_fingerprint: client_fp,
            same_connection: false,
            tracks: vec![core_peer::video_track(1111)],
        },
        &mut tx,
    );
    // Well past the grace (the new transport waits for its browser; its consent is not
    // running before a check): the publisher is still there.
    run(&mut core, &mut tx, now, PUBLISHER_GRACE + Duration::from_secs(5));
    assert!(
        !events(&mut core).iter().any(|e| matches!(e, ShardEvent::Vanished { .. })),
        "a restarted publisher does not vanish"
    );
    assert_eq!(core.peer_count(), 1);
}
