//! Echo throughput on loopback, in one run: raw blocking recv/send loop (the ceiling), the
//! epoll shard and the io_uring shard, all driven by the same client. Reports packets per second
//! and the ratios uring/epoll and each/raw.
//!
//! `cargo bench --bench io` (release). Environment: `IO_BENCH_SECS` (default 3),
//! `IO_BENCH_SIZE` (payload bytes, default 200), `IO_BENCH_WINDOW` (datagrams in flight,
//! default 64).
//!
//! One run here (2 shared cores, load average ~14 from parallel builds, 200 B, window 64):
//! raw 35.2k pps, epoll 38.5k, io_uring 38.0k: uring/epoll 0.99, uring/raw 1.08, epoll/raw 1.09.
//! The single blocking client thread (two syscalls per echo) is the bottleneck at this load,
//! so these ratios say "no shell overhead visible", not which backend is faster; compare
//! backends on an idle machine with a batched client before drawing conclusions.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringsfu::config::IoBackend;
use ringsfu::io::{UringSupport, probe_uring, spawn_shards_with};
use ringsfu::shard::{RecvMeta, TxQueue};

mod common;
use common::{OnDatagram, env, one_shard};

/// Sends each datagram back where it came from.
fn echo(meta: RecvMeta, buf: &mut [u8], tx: &mut TxQueue) {
    if let Some(mut slot) = tx.push(meta.src) {
        slot.buf()[..buf.len()].copy_from_slice(buf);
        slot.commit(buf.len());
    }
}

/// Keep `window` datagrams in flight against `server` for `secs`; echoes per second.
fn drive(server: SocketAddr, size: usize, window: usize, secs: u64) -> f64 {
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let msg = vec![0x5au8; size];
    let mut buf = [0u8; 2048];
    let warmup = Instant::now() + Duration::from_millis(300);
    let mut start = None;
    let mut count = 0u64;
    for _ in 0..window {
        let _ = c.send_to(&msg, server);
    }
    loop {
        let now = Instant::now();
        if start.is_none() && now >= warmup {
            start = Some(now);
            count = 0;
        }
        if let Some(s) = start
            && now.duration_since(s) >= Duration::from_secs(secs)
        {
            return count as f64 / now.duration_since(s).as_secs_f64();
        }
        match c.recv_from(&mut buf) {
            Ok(_) => {
                count += 1;
                let _ = c.send_to(&msg, server);
            }
            Err(_) => {
                // Lost in the window (socket buffer overflow): refill it.
                for _ in 0..window {
                    let _ = c.send_to(&msg, server);
                }
            }
        }
    }
}

fn raw(size: usize, window: usize, secs: u64) -> f64 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let addr = s.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !st.load(Ordering::Relaxed) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    let pps = drive(addr, size, window, secs);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    pps
}

fn shard(backend: IoBackend, size: usize, window: usize, secs: u64) -> f64 {
    let h = spawn_shards_with(&one_shard(backend), |_| OnDatagram(echo)).expect("spawn shard");
    let addr = h.get(0).unwrap().info().local_addr;
    let pps = drive(addr, size, window, secs);
    let snap = h.snapshot()[0];
    eprintln!("  {backend:?} shard counters: {snap:?}");
    h.shutdown().unwrap();
    pps
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: run short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs = if quick { 1 } else { env("IO_BENCH_SECS", 3) };
    let size = env("IO_BENCH_SIZE", 200) as usize;
    let window = env("IO_BENCH_WINDOW", 64) as usize;
    println!(
        "echo over loopback: {size} B datagrams, window {window}, {secs} s per mode, one client thread"
    );
    let r = raw(size, window, secs);
    let e = shard(IoBackend::Epoll, size, window, secs);
    let u = match probe_uring() {
        UringSupport::Available => Some(shard(IoBackend::Uring, size, window, secs)),
        UringSupport::Unavailable(why) => {
            println!("io_uring unavailable: {why}");
            None
        }
    };
    println!("{:<10} {:>12}", "mode", "pps");
    println!("{:<10} {:>12.0}", "raw", r);
    println!("{:<10} {:>12.0}", "epoll", e);
    if let Some(u) = u {
        println!("{:<10} {:>12.0}", "io_uring", u);
        println!(
            "ratios: uring/epoll {:.2}  uring/raw {:.2}  epoll/raw {:.2}",
            u / e,
            u / r,
            e / r
        );
    } else {
        println!("ratios: epoll/raw {:.2}", e / r);
    }
}
