//! Full DTLS-SRTP handshakes per second per core: our server endpoint against an in-process
//! dimpl client (through the same wrapper), in memory, on a virtual clock.
//!
//! Reports the pair rate (one core doing both sides) and the server-side rate (time spent
//! in the server endpoint's calls only), with and without the HelloVerifyRequest cookie.
//! Time is this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so a machine shared with
//! other work does not inflate the per-core figures; wall-clock rates are printed too.
//! A program that prints figures, not a timed assertion: `cargo bench --bench dtls`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ringsfu::dtls::{DtlsCert, DtlsConfig, DtlsContext, DtlsEndpoint, DtlsEvent, DtlsRole};

/// CPU time consumed by the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

struct Totals {
    handshakes: u32,
    wall: Duration,
    cpu: Duration,
    server: Duration,
}

/// One handshake; returns the time spent inside server calls.
fn handshake(server_ctx: &DtlsContext, client_ctx: &DtlsContext, t0: Instant) -> Duration {
    let mut server_time = Duration::ZERO;
    let mut now = t0;
    let s_start = thread_cpu();
    let mut server = server_ctx.server(now, *client_ctx.cert().fingerprint());
    server_time += thread_cpu() - s_start;
    let mut client =
        DtlsEndpoint::new(client_ctx, DtlsRole::Client, now, *server_ctx.cert().fingerprint());
    let mut buf = [0u8; 1500];
    let mut to_server: Vec<Vec<u8>> = Vec::new();
    let mut to_client: Vec<Vec<u8>> = Vec::new();
    while let Some(n) = client.poll_transmit(&mut buf) {
        to_server.push(buf[..n].to_vec());
    }
    let mut connected = (false, false);
    for _round in 0..16 {
        now += Duration::from_millis(1);
        let s_start = thread_cpu();
        for d in to_server.drain(..) {
            server.handle_packet(now, &d);
            while let Some(n) = server.poll_transmit(&mut buf) {
                to_client.push(buf[..n].to_vec());
            }
        }
        while let Some(e) = server.poll_event() {
            connected.0 |= matches!(e, DtlsEvent::Connected { .. });
        }
        server_time += thread_cpu() - s_start;
        for d in to_client.drain(..) {
            client.handle_packet(now, &d);
            while let Some(n) = client.poll_transmit(&mut buf) {
                to_server.push(buf[..n].to_vec());
            }
        }
        while let Some(e) = client.poll_event() {
            connected.1 |= matches!(e, DtlsEvent::Connected { .. });
        }
        if connected == (true, true) && to_server.is_empty() {
            break;
        }
    }
    assert_eq!(connected, (true, true), "handshake did not complete");
    black_box(server.keying_material());
    server_time
}

fn run(label: &str, use_cookie: bool, budget: Duration) {
    let config = DtlsConfig { use_cookie, ..DtlsConfig::default() };
    let server_ctx =
        DtlsContext::new(DtlsCert::generate().expect("cert"), &config).expect("server ctx");
    let client_ctx =
        DtlsContext::new(DtlsCert::generate().expect("cert"), &config).expect("client ctx");
    let t0 = Instant::now();
    // Warm up.
    for _ in 0..50 {
        handshake(&server_ctx, &client_ctx, t0);
    }
    let mut totals =
        Totals { handshakes: 0, wall: Duration::ZERO, cpu: Duration::ZERO, server: Duration::ZERO };
    let start = Instant::now();
    let cpu_start = thread_cpu();
    while start.elapsed() < budget {
        totals.server += handshake(&server_ctx, &client_ctx, t0);
        totals.handshakes += 1;
    }
    totals.wall = start.elapsed();
    totals.cpu = thread_cpu() - cpu_start;
    let n = f64::from(totals.handshakes);
    println!(
        "dtls {label:<10} {:>6} handshakes | pair (client+server) {:>6.0}/s/core CPU, \
         {:>6.0}/s wall | server side {:>6.0}/s/core CPU ({:.0} us CPU each)",
        totals.handshakes,
        n / totals.cpu.as_secs_f64(),
        n / totals.wall.as_secs_f64(),
        n / totals.server.as_secs_f64(),
        totals.server.as_secs_f64() * 1e6 / n,
    );
}

fn main() {
    // `cargo test --benches` passes `--test`-ish flags: run a tiny budget then.
    let quick = std::env::args().any(|a| a == "--test" || a == "--quick");
    let budget = if quick { Duration::from_millis(200) } else { Duration::from_secs(4) };
    run("no-cookie", false, budget);
    run("cookie", true, budget);
}
