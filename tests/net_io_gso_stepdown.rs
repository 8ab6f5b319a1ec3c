//! A path that refuses UDP GSO: a private network namespace whose `lo` MTU (500) is smaller
//! than the GSO segment (600 B + headers), so the kernel fails the GSO send (EMSGSIZE). The shard
//! must resend those datagrams one by one (IP fragments them, the receiver reassembles) and
//! keep GSO for other paths. (The socket-wide step-down on EIO, which needs a device without
//! checksum offload, is exercised with the injected error in `net_io_shard.rs`.)
//! Needs CAP_SYS_ADMIN + CAP_NET_ADMIN (root in the test container); skips loudly otherwise.

mod net_io_common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use net_io_common::*;
use ringsfu::config::IoBackend;

#[repr(C)]
struct IfreqInt {
    name: [u8; libc::IFNAMSIZ],
    value: libc::c_int,
    _pad: [u8; 20],
}

#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn lo_name() -> [u8; libc::IFNAMSIZ] {
    let mut n = [0u8; libc::IFNAMSIZ];
    n[..2].copy_from_slice(b"lo");
    n
}

/// New network namespace for this thread with `lo` up at MTU 500.
/// `Err` with the reason when not permitted.
fn private_small_mtu_loopback() -> Result<(), String> {
    // SAFETY: plain syscalls on a socket this function owns; structs outlive the calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error()));
        }
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut ifr = IfreqFlags { name: lo_name(), flags: 0, _pad: [0; 22] };
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) != 0 {
            return Err(format!("SIOCGIFFLAGS: {}", std::io::Error::last_os_error()));
        }
        ifr.flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut ifr) != 0 {
            return Err(format!("SIOCSIFFLAGS: {}", std::io::Error::last_os_error()));
        }
        let mut req = IfreqInt { name: lo_name(), value: 500, _pad: [0; 20] };
        if libc::ioctl(fd, libc::SIOCSIFMTU, &mut req) != 0 {
            return Err(format!("SIOCSIFMTU: {}", std::io::Error::last_os_error()));
        }
        libc::close(fd);
    }
    Ok(())
}

fn gso_refusal_steps_down(b: IoBackend) {
    let t = std::thread::spawn(move || {
        if let Err(why) = private_small_mtu_loopback() {
            eprintln!("SKIPPED: cannot build a private small-MTU loopback: {why}");
            return;
        }
        // Shard threads are created by this thread and inherit its network namespace.
        let mut h = spawn(&options(b, "127.0.0.1", 1));
        let c = client("127.0.0.1:0");
        let dst = c.local_addr().unwrap();
        let s = h.get_mut(0).unwrap();
        if !s.stats().snapshot().gso {
            eprintln!("SKIPPED: no UDP GSO on this kernel");
            return;
        }
        const COUNT: u32 = 20;
        const SIZE: usize = 600;
        for round in 0..2 {
            s.commands().send(Cmd::Burst { dst, count: COUNT, size: SIZE }).unwrap();
            assert_eq!(
                s.events().recv_timeout(Duration::from_secs(5)),
                Some(Ev::BurstQueued(COUNT))
            );
            let mut seen = HashSet::new();
            let mut buf = [0u8; 2048];
            let deadline = Instant::now() + Duration::from_secs(10);
            while seen.len() < COUNT as usize && Instant::now() < deadline {
                if let Ok((len, _)) = c.recv_from(&mut buf) {
                    assert_eq!(len, SIZE);
                    let i = u32::from_be_bytes(buf[..4].try_into().unwrap());
                    assert!(buf[4..len].iter().all(|&x| x == i as u8));
                    seen.insert(i);
                }
            }
            assert_eq!(
                seen.len(),
                COUNT as usize,
                "round {round}: every datagram arrives; {:?}",
                s.stats().snapshot()
            );
        }
        let snap = settle(s.stats(), |x| x.tx_packets >= 2 * COUNT as u64);
        assert!(snap.gso, "a per-path refusal keeps GSO for other paths: {snap:?}");
        assert_eq!(snap.tx_gso_sends, 0, "every refused datagram went alone");
        assert_eq!(snap.tx_packets, 2 * COUNT as u64);
        h.shutdown().unwrap();
    });
    t.join().expect("namespace thread");
}

#[test]
fn uring() {
    if backend_available(IoBackend::Uring) {
        gso_refusal_steps_down(IoBackend::Uring);
    }
}

#[test]
fn epoll() {
    gso_refusal_steps_down(IoBackend::Epoll);
}
