//! Shard shells over real UDP sockets on loopback; every test runs on both backends.

mod net_io_common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use net_io_common::*;
use ringsfu::config::IoBackend;
use ringsfu::shard::{DropReason, SocketId, SocketOp};

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;
                #[test]
                fn uring() {
                    if backend_available(IoBackend::Uring) {
                        super::$name(IoBackend::Uring);
                    }
                }
                #[test]
                fn epoll() {
                    super::$name(IoBackend::Epoll);
                }
            }
        )*
    };
}

both_backends!(
    echo_ipv4,
    echo_ipv6,
    echo_with_tiny_receive_ring,
    commands_and_events,
    events_awaited_from_tokio,
    timer_fires,
    gso_burst_arrives_as_separate_datagrams,
    trains_leave_as_gso_between_other_sends,
    shutdown_joins_all_shards,
    tx_pool_exhaustion_is_counted,
    fanout_beyond_the_pool_in_one_turn_is_relieved,
    fanout_to_600_legs_every_copy_arrives,
    gso_eio_steps_down_and_resends,
    gro_buffers_are_split_per_datagram,
    echo_dual_stack,
    oversize_datagram_is_dropped_and_counted,
    sockets_opened_by_the_core,
    a_backlog_is_handled_over_several_turns,
);

fn echo_ipv4(b: IoBackend) {
    let h = spawn(&options(b, "127.0.0.1", 1));
    let server = h.get(0).unwrap().info().local_addr;
    let c = client("127.0.0.1:0");
    echo_round_trip(&c, server, 3000, 64);
    let s = settle(h.get(0).unwrap().stats(), |x| x.tx_packets >= 3000);
    assert!(s.rx_packets >= 3000 && s.tx_packets >= 3000, "{s:?}");
    assert_eq!(s.backend, b);
    assert!(s.turns > 0);
    h.shutdown().unwrap();
}

fn echo_ipv6(b: IoBackend) {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED: no IPv6 loopback");
        return;
    }
    let h = spawn(&options(b, "::1", 1));
    let server = h.get(0).unwrap().info().local_addr;
    assert!(server.is_ipv6());
    let c = client("[::1]:0");
    echo_round_trip(&c, server, 1000, 32);
    h.shutdown().unwrap();
}

/// Eight receive buffers for bursts of 64: io_uring runs out of provided buffers (ENOBUFS ends
/// the multishot, which must be re-armed); epoll reads in batches of eight.
fn echo_with_tiny_receive_ring(b: IoBackend) {
    let mut o = options(b, "127.0.0.1", 1);
    o.io.rx_buffers = 8;
    let h = spawn(&o);
    let server = h.get(0).unwrap().info().local_addr;
    let c = client("127.0.0.1:0");
    echo_round_trip(&c, server, 2000, 64);
    eprintln!("{b:?}: {:?}", h.snapshot()[0]);
    h.shutdown().unwrap();
}

fn commands_and_events(b: IoBackend) {
    let mut h = spawn(&options(b, "127.0.0.1", 2));
    for i in 0..h.len() {
        let s = h.get_mut(i).unwrap();
        for n in 0..200 {
            s.commands().send(net_io_common::Cmd::Ping(n)).unwrap();
        }
        for n in 0..200 {
            let ev = s.events().recv_timeout(Duration::from_secs(5));
            assert_eq!(ev, Some(Ev::Pong(n)), "shard {i}");
        }
        assert!(s.events().try_recv().is_none());
    }
    assert!(h.snapshot().iter().all(|s| s.drops(DropReason::EventQueueFull) == 0));
    h.shutdown().unwrap();
}

fn events_awaited_from_tokio(b: IoBackend) {
    let mut h = spawn(&options(b, "127.0.0.1", 1));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let s = h.get_mut(0).unwrap();
    rt.block_on(async {
        for n in 0..50 {
            s.commands().send(Cmd::Ping(n)).unwrap();
            let ev = tokio::time::timeout(Duration::from_secs(5), s.events().recv()).await;
            assert_eq!(ev.expect("event before timeout"), Some(Ev::Pong(n)));
        }
    });
    h.shutdown().unwrap();
}

fn timer_fires(b: IoBackend) {
    let mut h = spawn(&options(b, "127.0.0.1", 1));
    let s = h.get_mut(0).unwrap();
    s.commands().send(Cmd::SetTimer(Duration::from_millis(30))).unwrap();
    assert_eq!(s.events().recv_timeout(Duration::from_secs(10)), Some(Ev::TimerFired));
    // A second, longer timer also fires (the loop sleeps until the deadline, then wakes).
    s.commands().send(Cmd::SetTimer(Duration::from_millis(300))).unwrap();
    assert_eq!(s.events().recv_timeout(Duration::from_secs(10)), Some(Ev::TimerFired));
    h.shutdown().unwrap();
}

fn gso_burst_arrives_as_separate_datagrams(b: IoBackend) {
    let mut h = spawn(&options(b, "127.0.0.1", 1));
    let c = client("127.0.0.1:0");
    let dst = c.local_addr().unwrap();
    const COUNT: u32 = 40;
    const SIZE: usize = 1000;
    let s = h.get_mut(0).unwrap();
    let gso = s.stats().snapshot().gso;
    s.commands().send(Cmd::Burst { dst, count: COUNT, size: SIZE }).unwrap();
    assert_eq!(s.events().recv_timeout(Duration::from_secs(5)), Some(Ev::BurstQueued(COUNT)));
    let mut seen = HashSet::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < COUNT as usize && Instant::now() < deadline {
        let Ok((len, from)) = c.recv_from(&mut buf) else {
            continue;
        };
        assert_eq!(from, s.info().local_addr);
        assert_eq!(len, SIZE, "each GSO segment arrives as its own datagram");
        let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
        assert!(buf[4..len].iter().all(|&x| x == i as u8), "contents of {i}");
        seen.insert(i);
    }
    assert_eq!(seen.len(), COUNT as usize);
    let snap = settle(s.stats(), |x| x.tx_packets >= COUNT as u64);
    if gso {
        assert!(snap.tx_gso_sends >= 1, "the burst went out as GSO: {snap:?}");
        assert!(snap.tx_gso_sends < COUNT as u64);
    } else {
        eprintln!("SKIPPED (partly): the kernel has no UDP GSO; sent one by one");
    }
    assert_eq!(snap.tx_packets, COUNT as u64);
    h.shutdown().unwrap();
}

/// Datagrams to one destination marked as a train, queued interleaved with datagrams to another
/// (a relay leg beside a local leg in a fanout), leave as GSO sends all the same, in order.
fn trains_leave_as_gso_between_other_sends(b: IoBackend) {
    let mut h = spawn(&options(b, "127.0.0.1", 1));
    let (local, relay) = ([client("127.0.0.1:0"), client("127.0.0.1:0")], client("127.0.0.1:0"));
    const COUNT: u32 = 24;
    const SIZE: usize = 1000;
    let s = h.get_mut(0).unwrap();
    let gso = s.stats().snapshot().gso;
    let cmd = Cmd::Interleaved {
        local: [local[0].local_addr().unwrap(), local[1].local_addr().unwrap()],
        relay: relay.local_addr().unwrap(),
        count: COUNT,
        size: SIZE,
    };
    s.commands().send(cmd).unwrap();
    assert_eq!(s.events().recv_timeout(Duration::from_secs(5)), Some(Ev::BurstQueued(COUNT)));
    let mut buf = [0u8; 4096];
    for (sock, name) in [(&relay, "relay"), (&local[0], "local 0"), (&local[1], "local 1")] {
        let mut next = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while next < COUNT && Instant::now() < deadline {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                continue;
            };
            assert_eq!(len, SIZE, "{name}: one datagram per segment");
            let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert_eq!(i, next, "{name}: in the order queued");
            assert!(buf[4..len].iter().all(|&x| x == i as u8), "contents of {i}");
            next += 1;
        }
        assert_eq!(next, COUNT, "{name}: every datagram");
    }
    let snap = settle(s.stats(), |x| x.tx_packets >= 3 * COUNT as u64);
    if gso {
        assert_eq!(snap.tx_gso_datagrams, COUNT as u64, "the relay's datagrams as GSO: {snap:?}");
        assert_eq!(snap.tx_gso_sends, 1, "one train: {snap:?}");
    } else {
        eprintln!("SKIPPED (partly): the kernel has no UDP GSO; sent one by one");
    }
    assert_eq!(snap.tx_packets, 3 * COUNT as u64);
    h.shutdown().unwrap();
}

fn shutdown_joins_all_shards(b: IoBackend) {
    let h = spawn(&options(b, "127.0.0.1", 3));
    assert_eq!(h.len(), 3);
    let stats: Vec<_> = h.iter().map(|s| s.stats().clone()).collect();
    let started = Instant::now();
    h.shutdown().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    // Threads are gone: counters no longer move.
    let t: Vec<u64> = stats.iter().map(|s| s.turns()).collect();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(t, stats.iter().map(|s| s.turns()).collect::<Vec<_>>());
}

fn tx_pool_exhaustion_is_counted(b: IoBackend) {
    let mut o = options(b, "127.0.0.1", 1);
    o.io.tx_slots = 16;
    let mut h = spawn(&o);
    let c = client("127.0.0.1:0");
    let dst = c.local_addr().unwrap();
    let s = h.get_mut(0).unwrap();
    s.commands().send(Cmd::Burst { dst, count: 40, size: 100 }).unwrap();
    assert_eq!(s.events().recv_timeout(Duration::from_secs(5)), Some(Ev::BurstQueued(16)));
    let mut buf = [0u8; 256];
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got < 16 && Instant::now() < deadline {
        if c.recv_from(&mut buf).is_ok() {
            got += 1;
        }
    }
    assert_eq!(got, 16);
    // The core stopped at the first refusal: one drop counted.
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.stats().snapshot().drops(DropReason::TxQueueFull) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.stats().snapshot().drops(DropReason::TxQueueFull), 1);
    h.shutdown().unwrap();
}

/// Each datagram fans out to 20 destinations through a 32-slot pool, and a burst of datagrams
/// arrives within a few turns: without the mid-turn relief every datagram after the first of a
/// turn finds too few slots. With it, nothing is refused and every copy arrives.
fn fanout_beyond_the_pool_in_one_turn_is_relieved(b: IoBackend) {
    const LEGS: usize = 20;
    const N: u32 = 150;
    let mut o = options(b, "127.0.0.1", 1);
    o.io.tx_slots = 32;
    let mut h = spawn(&o);
    let server = h.get(0).unwrap().info().local_addr;
    let legs: Vec<_> = (0..LEGS)
        .map(|_| {
            let c = client("127.0.0.1:0");
            c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            // Room for the whole burst (the default buffer would overflow on a slow reader).
            socket2::SockRef::from(&c).set_recv_buffer_size(4 << 20).unwrap();
            c
        })
        .collect();
    let s = h.get_mut(0).unwrap();
    s.commands().send(Cmd::Fanout(legs.iter().map(|c| c.local_addr().unwrap()).collect())).unwrap();
    assert_eq!(s.events().recv_timeout(Duration::from_secs(5)), Some(Ev::Pong(u32::MAX)));
    let sender = client("127.0.0.1:0");
    socket2::SockRef::from(&sender).set_send_buffer_size(4 << 20).unwrap();
    for i in 0..N {
        let mut p = [0u8; 200];
        p[..4].copy_from_slice(&i.to_be_bytes());
        sender.send_to(&p, server).unwrap();
    }
    let mut buf = [0u8; 512];
    for (k, c) in legs.iter().enumerate() {
        let mut seen = vec![false; N as usize];
        let mut got = 0;
        // Bounded: each receive times out, and at most N + 10 receives are tried.
        for _ in 0..N + 10 {
            let Ok((len, _)) = c.recv_from(&mut buf) else { break };
            assert_eq!(len, 200);
            let i = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            if !seen[i] {
                seen[i] = true;
                got += 1;
            }
            if got == N {
                break;
            }
        }
        let st = s.stats().snapshot();
        assert_eq!(got, N, "leg {k}: {got}/{N} copies arrived; {st:?}");
    }
    let st = settle(s.stats(), |x| x.tx_packets >= N as u64 * LEGS as u64);
    assert_eq!(st.drops(DropReason::TxQueueFull), 0, "{st:?}");
    assert_eq!(st.rx_packets, N as u64, "{st:?}");
    assert!(st.tx_reliefs > 0, "{st:?}");
    h.shutdown().unwrap();
}

/// A datagram to 600 destinations queues 600 single sends at once: on io_uring that is the
/// direct `sendmmsg` path (from 512 pending), on epoll its usual one. Every copy arrives intact.
fn fanout_to_600_legs_every_copy_arrives(b: IoBackend) {
    const LEGS: usize = 600;
    const N: u32 = 5;
    let mut h = spawn(&options(b, "127.0.0.1", 1));
    let server = h.get(0).unwrap().info().local_addr;
    let legs: Vec<_> = (0..LEGS)
        .map(|_| {
            let c = client("127.0.0.1:0");
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            c
        })
        .collect();
    let s = h.get_mut(0).unwrap();
    s.commands().send(Cmd::Fanout(legs.iter().map(|c| c.local_addr().unwrap()).collect())).unwrap();
    assert_eq!(s.events().recv_timeout(Duration::from_secs(5)), Some(Ev::Pong(u32::MAX)));
    let sender = client("127.0.0.1:0");
    for i in 0..N {
        let mut p = [0u8; 300];
        p[..4].copy_from_slice(&i.to_be_bytes());
        p[4..].fill(i as u8 ^ 0x5a);
        sender.send_to(&p, server).unwrap();
    }
    let mut buf = [0u8; 512];
    for (k, c) in legs.iter().enumerate() {
        let mut seen = [false; N as usize];
        // Bounded: at most N + 2 receives, each with a timeout.
        for _ in 0..N + 2 {
            let Ok((len, from)) = c.recv_from(&mut buf) else { break };
            assert_eq!((len, from), (300, server));
            let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert!(buf[4..len].iter().all(|&x| x == i as u8 ^ 0x5a), "leg {k}: copy {i} intact");
            seen[i as usize] = true;
            if seen.iter().all(|&x| x) {
                break;
            }
        }
        assert!(seen.iter().all(|&x| x), "leg {k}: {seen:?}; {:?}", s.stats().snapshot());
    }
    let st = settle(s.stats(), |x| x.tx_packets >= N as u64 * LEGS as u64);
    assert_eq!(st.tx_packets, N as u64 * LEGS as u64, "{st:?}");
    assert_eq!(st.drops.iter().sum::<u64>(), 0, "{st:?}");
    h.shutdown().unwrap();
}

/// The kernel answers a GSO send with EIO (no checksum offload on the egress device; injected
/// here): the shard disables GSO, resends the datagrams one by one and keeps going.
fn gso_eio_steps_down_and_resends(b: IoBackend) {
    let mut o = options(b, "127.0.0.1", 1);
    o.io.inject_gso_error = Some(libc::EIO);
    let mut h = spawn(&o);
    let c = client("127.0.0.1:0");
    let dst = c.local_addr().unwrap();
    let s = h.get_mut(0).unwrap();
    if !s.stats().snapshot().gso {
        eprintln!("SKIPPED: no UDP GSO on this kernel");
        return;
    }
    const COUNT: u32 = 30;
    for round in 0..2 {
        s.commands().send(Cmd::Burst { dst, count: COUNT, size: 700 }).unwrap();
        assert_eq!(s.events().recv_timeout(Duration::from_secs(5)), Some(Ev::BurstQueued(COUNT)));
        let mut seen = HashSet::new();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < COUNT as usize && Instant::now() < deadline {
            if let Ok((len, _)) = c.recv_from(&mut buf) {
                assert_eq!(len, 700);
                let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
                assert!(buf[4..len].iter().all(|&x| x == i as u8));
                seen.insert(i);
            }
        }
        assert_eq!(seen.len(), COUNT as usize, "round {round}");
    }
    let snap = settle(s.stats(), |x| x.tx_packets >= 3 * COUNT as u64);
    assert!(!snap.gso, "{snap:?}");
    assert_eq!(snap.tx_gso_sends, 0);
    assert_eq!(snap.tx_packets, 2 * COUNT as u64);
    assert_eq!(snap.drops(DropReason::TxError), 0);
    h.shutdown().unwrap();
}

/// Send `count` segments of `seg` bytes to `dst` in one UDP GSO sendmsg (IPv4).
fn client_gso_send(
    c: &std::net::UdpSocket,
    dst: std::net::SocketAddrV4,
    seg: u16,
    data: &[u8],
) -> bool {
    use std::os::fd::AsRawFd;
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    name.sin_family = libc::AF_INET as libc::sa_family_t;
    name.sin_port = dst.port().to_be();
    name.sin_addr = libc::in_addr { s_addr: u32::from(*dst.ip()).to_be() };
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut cbuf = Cmsg([0; 64]);
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE/CMSG_FIRSTHDR/CMSG_DATA on our own, large-enough, aligned buffer.
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(2) as _;
        let cm = libc::CMSG_FIRSTHDR(&msg);
        (*cm).cmsg_level = libc::SOL_UDP;
        (*cm).cmsg_type = libc::UDP_SEGMENT;
        (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
        std::ptr::copy_nonoverlapping(seg.to_ne_bytes().as_ptr(), libc::CMSG_DATA(cm), 2);
        libc::sendmsg(c.as_raw_fd(), &msg, 0) == data.len() as isize
    }
}

/// With UDP_GRO on, a GSO burst from the client reaches the shard as one coalesced buffer;
/// the shell splits it and the core sees (and echoes) each datagram on its own.
fn gro_buffers_are_split_per_datagram(b: IoBackend) {
    let mut o = options(b, "127.0.0.1", 1);
    o.io.gro = true;
    o.io.rx_buffers = 16;
    let h = spawn(&o);
    let std::net::SocketAddr::V4(server) = h.get(0).unwrap().info().local_addr else {
        unreachable!()
    };
    let c = client("127.0.0.1:0");
    const SEG: usize = 500;
    const COUNT: usize = 10;
    let mut data = vec![0u8; SEG * COUNT];
    for (i, chunk) in data.chunks_mut(SEG).enumerate() {
        chunk[..4].copy_from_slice(&(i as u32).to_be_bytes());
        chunk[4..].fill(i as u8);
    }
    if !client_gso_send(&c, server, SEG as u16, &data) {
        eprintln!("SKIPPED: the client cannot send with UDP GSO here");
        return;
    }
    let mut seen = HashSet::new();
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < COUNT && Instant::now() < deadline {
        if let Ok((len, _)) = c.recv_from(&mut buf) {
            assert_eq!(len, SEG);
            let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
            assert!(buf[4..len].iter().all(|&x| x == i as u8), "contents of {i}");
            seen.insert(i);
        }
    }
    assert_eq!(seen.len(), COUNT);
    let snap = settle(h.get(0).unwrap().stats(), |x| x.rx_packets >= COUNT as u64);
    assert_eq!(snap.rx_packets, COUNT as u64, "{snap:?}");
    h.shutdown().unwrap();
}

/// A shard bound to `::` serves IPv4 peers too (mapped addresses are canonical IPv4 for the
/// core; the reply leaves from the address the request came to).
fn echo_dual_stack(b: IoBackend) {
    if std::net::UdpSocket::bind("[::]:0").is_err() {
        eprintln!("SKIPPED: no IPv6");
        return;
    }
    let h = spawn(&options(b, "::", 1));
    let port = h.get(0).unwrap().info().local_addr.port();
    let c4 = client("127.0.0.1:0");
    echo_round_trip(&c4, std::net::SocketAddr::from(([127, 0, 0, 1], port)), 300, 16);
    if std::net::UdpSocket::bind("[::1]:0").is_ok() {
        let c6 = client("[::1]:0");
        echo_round_trip(
            &c6,
            std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            300,
            16,
        );
    }
    h.shutdown().unwrap();
}

/// A datagram larger than a receive buffer is dropped and counted, never handed to the core
/// cut short; the shard keeps serving.
fn oversize_datagram_is_dropped_and_counted(b: IoBackend) {
    let h = spawn(&options(b, "127.0.0.1", 1));
    let server = h.get(0).unwrap().info().local_addr;
    let c = client("127.0.0.1:0");
    c.send_to(&[7u8; 3000], server).unwrap();
    let snap = settle(h.get(0).unwrap().stats(), |x| x.drops(DropReason::RxTruncated) >= 1);
    assert_eq!(snap.drops(DropReason::RxTruncated), 1, "{snap:?}");
    assert_eq!(snap.rx_packets, 0);
    echo_round_trip(&c, server, 50, 8);
    h.shutdown().unwrap();
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Commands are handled and their socket requests carried out in the same turn, before the
/// turn's events reach the control plane: the second `Pong` proves the earlier requests are
/// done and their failures reported (a failure is reported after the turn's commands).
fn sync(s: &mut ringsfu::io::ShardHandle<EchoCore>, n: u32) -> Vec<Ev> {
    s.commands().send(Cmd::Ping(n)).unwrap();
    s.commands().send(Cmd::Ping(n + 1000)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..100 {
        match s.events().recv_timeout(Duration::from_secs(5)) {
            Some(Ev::Pong(m)) if m == n + 1000 => return seen,
            Some(Ev::Pong(m)) if m == n => {}
            Some(e) => seen.push(e),
            None => panic!("no pong {n}"),
        }
    }
    panic!("no pong {n} among 100 events")
}

/// The core opens extra sockets (TURN relayed addresses): datagrams arrive tagged with the
/// socket, replies leave from it; a failed bind is reported back; a closed socket's port is
/// free again and its id reusable.
fn sockets_opened_by_the_core(b: IoBackend) {
    let mut h = spawn(&options(b, "127.0.0.1", 1));
    let main = h.get(0).unwrap().info().local_addr;
    let s = h.get_mut(0).unwrap();
    let mut extra = Vec::new();
    for id in [3u32, 9, 1000] {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
        s.commands().send(Cmd::Socket(SocketOp::Open { id: SocketId(id), addr })).unwrap();
        extra.push((id, addr));
    }
    assert_eq!(sync(s, 1), vec![]);
    let c = client("127.0.0.1:0");
    for &(_, addr) in &extra {
        echo_round_trip(&c, addr, 300, 16);
    }
    echo_round_trip(&c, main, 300, 16);

    // The main socket's address is taken (no SO_REUSEPORT): the core hears why.
    s.commands().send(Cmd::Socket(SocketOp::Open { id: SocketId(4), addr: main })).unwrap();
    assert_eq!(sync(s, 2), vec![Ev::SocketFailed(SocketId(4), std::io::ErrorKind::AddrInUse)]);
    // Ids that are not the core's to open.
    s.commands().send(Cmd::Socket(SocketOp::Open { id: SocketId::MAIN, addr: main })).unwrap();
    assert_eq!(
        sync(s, 3),
        vec![Ev::SocketFailed(SocketId::MAIN, std::io::ErrorKind::InvalidInput)]
    );

    // Close id 3: its port can be bound again (io_uring closes after the cancel completes).
    let (id3, addr3) = extra[0];
    s.commands().send(Cmd::Socket(SocketOp::Close { id: SocketId(id3) })).unwrap();
    assert_eq!(sync(s, 4), vec![]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let rebound = loop {
        match std::net::UdpSocket::bind(addr3) {
            Ok(sock) => break sock,
            Err(e) => {
                assert!(Instant::now() < deadline, "port of a closed socket still bound: {e}");
                sync(s, 5);
            }
        }
    };
    drop(rebound);
    // Reuse id 3 on another port; the other sockets are untouched.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    s.commands().send(Cmd::Socket(SocketOp::Open { id: SocketId(id3), addr })).unwrap();
    assert_eq!(sync(s, 6), vec![]);
    echo_round_trip(&c, addr, 300, 16);
    echo_round_trip(&c, extra[1].1, 100, 16);
    h.shutdown().unwrap();
}

/// A core whose every datagram costs at least a millisecond (as a fanout to a thousand
/// subscribers does): it counts the datagrams of each turn (its timer is due 100 µs after it
/// last ran, so after a turn of such datagrams `handle_timeout` runs at the next one) and
/// answers a command with (seen, most in one turn).
struct SlowCore {
    next: Instant,
    this_turn: u32,
    most: u32,
    seen: u32,
    events: std::collections::VecDeque<(u32, u32)>,
}

impl ringsfu::shard::ShardCore for SlowCore {
    type Command = ();
    type Event = (u32, u32);

    fn handle_datagram(
        &mut self,
        _now: Instant,
        _meta: ringsfu::shard::RecvMeta,
        _buf: &mut [u8],
        _tx: &mut ringsfu::shard::TxQueue,
    ) {
        std::thread::sleep(Duration::from_millis(1));
        self.this_turn += 1;
        self.seen += 1;
    }

    fn handle_command(&mut self, _now: Instant, _cmd: (), _tx: &mut ringsfu::shard::TxQueue) {
        self.events.push_back((self.seen, self.most.max(self.this_turn)));
    }

    fn handle_timeout(&mut self, now: Instant, _tx: &mut ringsfu::shard::TxQueue) {
        self.most = self.most.max(self.this_turn);
        self.this_turn = 0;
        self.next = now + Duration::from_micros(100);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }

    fn poll_event(&mut self) -> Option<(u32, u32)> {
        self.events.pop_front()
    }
}

/// 200 datagrams waiting at once, each a millisecond of work: a turn stops taking datagrams
/// once its work budget (10 ms) is spent, so commands and timers come round between them,
/// instead of one turn handling the whole backlog (before: all 200, up to `budget` 512). The
/// bound is on counts: at least 1 ms each, a turn sees at most 16.
fn a_backlog_is_handled_over_several_turns(b: IoBackend) {
    let opts = options(b, "127.0.0.1", 1);
    let mut h = ringsfu::io::spawn_shards_with(&opts, |_| SlowCore {
        next: Instant::now(),
        this_turn: 0,
        most: 0,
        seen: 0,
        events: Default::default(),
    })
    .expect("spawn");
    let server = h.get(0).unwrap().info().local_addr;
    let c = client("127.0.0.1:0");
    for i in 0..200u32 {
        c.send_to(&i.to_be_bytes(), server).unwrap();
    }
    let s = h.get_mut(0).unwrap();
    let mut last = (0, 0);
    // Bounded: 100 asks, 50 ms apart.
    for _ in 0..100 {
        s.commands().send(()).unwrap();
        if let Some(ev) = s.events().recv_timeout(Duration::from_secs(5)) {
            last = ev;
        }
        if last.0 >= 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(last.0, 200, "{b:?}: datagrams handled");
    assert!(last.1 <= 16, "{b:?}: {} datagrams in one turn", last.1);
    assert!(last.1 >= 1);
    h.shutdown().unwrap();
}
