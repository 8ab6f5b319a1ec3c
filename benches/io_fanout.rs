//! The I/O shells alone under SFU-shaped load: each datagram a shard receives is copied to `N`
//! distinct destinations (as one packet fanned out to `N` subscribers: no two copies share a
//! destination, so no GSO run), with no crypto or protocol in between. Measures datagrams sent
//! per CPU-second of the data plane (the shard thread plus any io_uring worker threads,
//! `/proc`), for io_uring and epoll in alternating rounds of one run, and reports the median
//! of each and their ratio. This is the shell's own cost per datagram, which `ringsfu-load`
//! mixes with SRTP, the media core and the load generator.
//!
//! `cargo bench --bench io_fanout` (release). Environment: `FANOUT_N` (comma list of fanouts,
//! default `100,1000`), `FANOUT_OUT_PPS` (offered egress datagrams per second, default 250000),
//! `FANOUT_SIZE` (bytes, default 1000), `FANOUT_SECS` (window per round, default 3),
//! `FANOUT_ROUNDS` (default 3).
//!
//! `FANOUT_RELAYS=r` adds `r` relay legs to other nodes (127.2.0.x): every datagram also goes
//! to each of them, as a relay out does, and each round runs twice, with the relay copies
//! marked as trains (`TxSlot::set_train`: gathered into GSO sends) and without (the copies
//! interleaved with the local legs', one datagram per send, as before trains). The feeder's
//! 1 ms bursts put several input datagrams in one loop turn, as load does.
//!
//! Destinations are 127.1.x.y on one port, received by one socket bound to 0.0.0.0 and never
//! read (its small buffer overflows): the kernel's send path runs in full for every datagram,
//! and nothing else competes for the two cores.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ringsfu::config::IoBackend;
use ringsfu::io::{UringSupport, probe_uring, spawn_shards_with};
use ringsfu::load::procfs::{CpuSampler, DataPlane};
use ringsfu::shard::{RecvMeta, TxQueue};

mod common;
use common::{OnDatagram, env, one_shard};

/// Copies each datagram to every destination of `dsts`, then to every relay of `relays`
/// (marked as a train when `trains`).
fn fanout(
    dsts: Vec<SocketAddr>,
    relays: Vec<SocketAddr>,
    trains: bool,
) -> impl FnMut(RecvMeta, &mut [u8], &mut TxQueue) + Send {
    move |_meta, buf, tx| {
        for &d in &dsts {
            let Some(mut slot) = tx.push(d) else { return };
            slot.buf()[..buf.len()].copy_from_slice(buf);
            slot.commit(buf.len());
        }
        for &d in &relays {
            let Some(mut slot) = tx.push(d) else { return };
            if trains {
                slot.set_train();
            }
            slot.buf()[..buf.len()].copy_from_slice(buf);
            slot.commit(buf.len());
        }
    }
}

/// Sends `in_pps` datagrams of `size` bytes per second to `to` until `stop`, in 1 ms bursts.
fn feeder(to: SocketAddr, in_pps: u64, size: usize, stop: Arc<AtomicBool>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let msg = vec![0x80u8; size];
    let start = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * in_pps as f64) as u64;
        while sent < due {
            let _ = s.send_to(&msg, to);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Round {
    sent: u64,
    cpu: f64,
}

fn round(
    backend: IoBackend,
    (dsts, relays, trains): (&[SocketAddr], &[SocketAddr], bool),
    in_pps: u64,
    size: usize,
    secs: u64,
) -> Round {
    let (d, r) = (dsts.to_vec(), relays.to_vec());
    let h = spawn_shards_with(&one_shard(backend), move |_| {
        OnDatagram(fanout(d.clone(), r.clone(), trains))
    })
    .expect("spawn shard");
    let addr = h.get(0).unwrap().info().local_addr;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let f = std::thread::spawn(move || feeder(addr, in_pps, size, st));
    std::thread::sleep(Duration::from_millis(500));
    let before = h.snapshot()[0].tx_packets;
    let mut cpu = CpuSampler::start(DataPlane::Server { pid: std::process::id() });
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(250));
        cpu.sample();
    }
    let used = cpu.finish().total();
    let sent = h.snapshot()[0].tx_packets - before;
    stop.store(true, Ordering::Relaxed);
    f.join().unwrap();
    h.shutdown().unwrap();
    Round { sent, cpu: used }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs one short round.
    let quick = !std::env::args().any(|a| a == "--bench");
    let fanouts: Vec<u64> = std::env::var("FANOUT_N")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let out_pps = env("FANOUT_OUT_PPS", if quick { 20_000 } else { 250_000 });
    let size = env("FANOUT_SIZE", 1000) as usize;
    let secs = if quick { 1 } else { env("FANOUT_SECS", 3) };
    let rounds = if quick { 1 } else { env("FANOUT_ROUNDS", 3) };
    let uring = match probe_uring() {
        UringSupport::Available => true,
        UringSupport::Unavailable(why) => {
            println!("io_uring unavailable ({why}): epoll only");
            false
        }
    };
    let sink = UdpSocket::bind("0.0.0.0:0").expect("sink");
    let port = sink.local_addr().unwrap().port();
    let relays: Vec<SocketAddr> = (0..env("FANOUT_RELAYS", 0))
        .map(|i| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 2, 0, i as u8 + 1), port)))
        .collect();
    // With relays, each backend runs with trains and without: (label, trains).
    let modes: &[(&str, bool)] =
        if relays.is_empty() { &[("", false)] } else { &[("+trains", true), ("-trains", false)] };
    println!(
        "fanout over loopback: {size} B, {out_pps} datagrams/s offered, {secs} s x {rounds} rounds per backend"
    );
    println!("{:>6} {:>16} {:>14} {:>14} {:>8}", "N", "backend", "sent/s", "sent/CPU-s", "CPU %");
    for &n in &fanouts {
        let dsts: Vec<SocketAddr> = (0..n)
            .map(|i| {
                let ip = Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250) as u8 + 1);
                SocketAddr::V4(SocketAddrV4::new(ip, port))
            })
            .collect();
        let in_pps = (out_pps / (n + relays.len() as u64)).max(1);
        let mut per: Vec<(IoBackend, &str, bool, Vec<f64>)> = Vec::new();
        for b in [IoBackend::Uring, IoBackend::Epoll] {
            for &(label, trains) in modes {
                per.push((b, label, trains, Vec::new()));
            }
        }
        for _ in 0..rounds {
            for (b, label, trains, v) in per.iter_mut() {
                if *b == IoBackend::Uring && !uring {
                    continue;
                }
                let r = round(*b, (&dsts, &relays, *trains), in_pps, size, secs);
                let eff = r.sent as f64 / r.cpu.max(1e-9);
                println!(
                    "{n:>6} {:>16} {:>14.0} {:>14.0} {:>7.0}%",
                    format!("{b:?}{label}"),
                    r.sent as f64 / secs as f64,
                    eff,
                    100.0 * r.cpu / secs as f64
                );
                v.push(eff);
            }
        }
        let med = |b: IoBackend, label: &str| {
            per.iter()
                .find(|p| p.0 == b && p.1 == label)
                .filter(|p| !p.3.is_empty())
                .map(|p| median(p.3.clone()))
        };
        for &(label, _) in modes {
            let e = med(IoBackend::Epoll, label).unwrap_or(0.0);
            match med(IoBackend::Uring, label) {
                Some(u) => println!(
                    "N={n}{label}: median sent per CPU-second: io_uring {u:.0}, epoll {e:.0}, uring/epoll {:.3}",
                    u / e
                ),
                None => println!("N={n}{label}: median sent per CPU-second: epoll {e:.0}"),
            }
        }
        if !relays.is_empty() {
            for b in [IoBackend::Uring, IoBackend::Epoll] {
                if let (Some(with), Some(without)) = (med(b, "+trains"), med(b, "-trains")) {
                    println!(
                        "N={n} + {} relays, {b:?}: trains/no trains sent per CPU-second {:.3}",
                        relays.len(),
                        with / without
                    );
                }
            }
        }
    }
}
