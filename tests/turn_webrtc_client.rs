//! The webrtc-rs `turn` crate's client (an independent TURN implementation) against ringsfu's
//! TURN server started in-process exactly as the binary starts it (`turn::serve::start`):
//! allocate, permission (created by the client's first send), relay both ways to a UDP socket of
//! the test; and the credentials `joinRoom` hands out accepted end to end.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringsfu::config::Config;
use ringsfu::turn::serve::{TurnService, start as start_turn};
use tokio::net::UdpSocket;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const WAIT: Duration = Duration::from_secs(10);

fn turn_config(port: u16, secret: &str) -> Config {
    let mut cfg = Config::default();
    cfg.server.secret = secret.into();
    cfg.media.shards = 2;
    cfg.media.pin_threads = false;
    cfg.turn.port = port;
    cfg.turn.users = vec!["alice:wonderland".into()];
    cfg.turn.allow_loopback_peers = true;
    let base = 30000 + (std::process::id() % 10000) as u16 + (port % 16) * 200;
    cfg.turn.relay_port_min = base;
    cfg.turn.relay_port_max = base + 150;
    cfg
}

fn start(cfg: Config) -> TurnService {
    start_turn(&Arc::new(cfg), None, None).expect("start TURN").expect("TURN enabled")
}

/// A webrtc-rs TURN client of `server` on `conn` with long-term credentials, listening.
async fn listening_client(server: SocketAddr, user: &str, pass: &str, conn: UdpSocket) -> Client {
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: user.into(),
        password: pass.into(),
        realm: "ringsfu".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn: Arc::new(conn),
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

/// Allocates with `user`/`pass`, relays `rounds` messages each way between the allocation and
/// a UDP socket of the test, and checks addresses and contents.
async fn relay_round_trips(server: SocketAddr, user: &str, pass: &str, rounds: u32) {
    let conn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = conn.local_addr().unwrap();
    let client = listening_client(server, user, pass, conn).await;
    let mapped = tokio::time::timeout(WAIT, client.send_binding_request()).await.unwrap().unwrap();
    assert_eq!(mapped, local, "Binding on the TURN port answers the client's address");

    let relay = tokio::time::timeout(WAIT, client.allocate()).await.unwrap().expect("allocate");
    let relayed = relay.local_addr().unwrap();
    assert_eq!(relayed.ip().to_string(), "127.0.0.1");

    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let mut buf = vec![0u8; 1500];
    for i in 0..rounds {
        let out = format!("to peer {i}");
        // The first send makes the client create the permission (and later bind a channel).
        tokio::time::timeout(WAIT, relay.send_to(out.as_bytes(), peer_addr))
            .await
            .unwrap()
            .expect("send through the relay");
        let (n, from) =
            tokio::time::timeout(WAIT, peer.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(from, relayed, "the peer sees the relayed address");
        assert_eq!(&buf[..n], out.as_bytes());

        let back = format!("to client {i}");
        peer.send_to(back.as_bytes(), relayed).await.unwrap();
        let (n, from) =
            tokio::time::timeout(WAIT, relay.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(from, peer_addr, "the client learns the peer's address");
        assert_eq!(&buf[..n], back.as_bytes());
    }
    relay.close().await.unwrap();
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_rs_client_allocates_and_relays() {
    let turn = start(turn_config(common::free_port(), "S"));
    relay_round_trips(turn.udp_addr(), "alice", "wonderland", 30).await;
    let mut turn = turn;
    let reports = tokio::task::block_in_place(|| turn.reports(WAIT));
    let relayed: u64 = reports.iter().map(|r| r.relayed_to_peer + r.relayed_to_client).sum();
    assert!(relayed >= 60, "{reports:?}");
    turn.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_to_the_webrtc_rs_client() {
    let turn = start(turn_config(common::free_port(), "S"));
    let conn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = listening_client(turn.udp_addr(), "alice", "wonderlanD", conn).await;
    let r =
        tokio::time::timeout(WAIT * 3, client.allocate()).await.expect("an answer, not silence");
    assert!(r.is_err(), "allocation with a wrong password");
    client.close().await.unwrap();
    let mut turn = turn;
    let reports = tokio::task::block_in_place(|| turn.reports(WAIT));
    assert!(reports.iter().map(|r| r.auth_failures).sum::<u64>() >= 1, "{reports:?}");
    assert!(reports.iter().all(|r| r.allocations == 0));
    turn.shutdown();
}

/// joinRoom's `turnUsername` / `turnCredential` (TURN REST scheme, server secret) open an
/// allocation on the TURN server of the same configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_room_credentials_work_against_the_turn_server() {
    let port = common::free_port();
    let turn = start(turn_config(port, common::SECRET));
    let s = common::start(|c| c.turn.port = port).await;
    let sid = s.session(None).await;
    let (_, token) = s.connection(&sid, "PUBLISHER", "").await;
    let (_ws, r) = s.join(&sid, &token, "Ana").await;
    assert_eq!(r["coturnPort"], port);
    let user = r["turnUsername"].as_str().unwrap();
    let pass = r["turnCredential"].as_str().unwrap();
    relay_round_trips(turn.udp_addr(), user, pass, 3).await;
    // A credential for another username is refused.
    let conn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let client = listening_client(turn.udp_addr(), &format!("{user}x"), pass, conn).await;
    let r = tokio::time::timeout(WAIT * 3, client.allocate()).await.expect("an answer");
    assert!(r.is_err());
    client.close().await.unwrap();
    tokio::task::block_in_place(|| turn.shutdown());
}

/// A credential reload (what SIGHUP does through the control plane's `TurnSecretsHandle`)
/// reaches the TURN shards: the new password is accepted without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_credentials_reach_the_turn_shards() {
    use ringsfu::secrets::{TurnSecrets, TurnSecretsHandle};
    let cfg = turn_config(common::free_port(), "S");
    let secrets = TurnSecretsHandle::from_config(&cfg);
    let turn = start_turn(&Arc::new(cfg), None, Some(secrets.clone())).unwrap().unwrap();
    relay_round_trips(turn.udp_addr(), "alice", "wonderland", 1).await;
    let mut next = (*secrets.load()).clone();
    next.users = vec![("alice".into(), "looking-glass".into())];
    assert!(secrets.store(TurnSecrets { ..next }));
    // The shards look at the handle about once a second: retry, bounded in count.
    let mut accepted = false;
    for _ in 0..20 {
        let conn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = listening_client(turn.udp_addr(), "alice", "looking-glass", conn).await;
        let ok = matches!(tokio::time::timeout(WAIT, client.allocate()).await, Ok(Ok(_)));
        client.close().await.unwrap();
        if ok {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(accepted, "the reloaded password was never accepted");
    tokio::task::block_in_place(|| turn.shutdown());
}
