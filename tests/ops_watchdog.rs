//! The systemd watchdog in the running binary: with `WATCHDOG_USEC` set, `WATCHDOG=1`
//! keep-alives stop while one shard's event loop is stopped, a `STATUS=` line says which shard
//! is stuck, and both come back when the shard turns again; the same for the TURN TCP/TLS
//! thread (`turn-stream`), whose one-second timer counts its turns.
//!
//! Only the shard thread (`shard-0`) is stopped, with ptrace (`PTRACE_SEIZE` then
//! `PTRACE_INTERRUPT` on its thread id): the control thread that sends the keep-alives keeps
//! running, so what withholds them is the watchdog's view of the shard's loop counter. Where
//! ptrace is not permitted (`EPERM`: Yama, seccomp, no capability) the test skips loudly, or
//! fails when `RINGSFU_REQUIRE_TOOLS` is set (`tools/test.sh`). Every wait is bounded; nothing
//! asserts a duration.

mod common;
mod ops_common;

use std::io;
use std::ptr::null_mut;
use std::time::Duration;

use ops_common::{NotifySocket, Server, TempDir, free_port};

const SECRET: &str = "WATCHDOG_SECRET";

/// The id of `pid`'s thread whose name (`/proc/<pid>/task/<tid>/comm`) is `name`.
fn thread_named(pid: i32, name: &str) -> Option<i32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        (comm.trim_end() == name).then(|| t.file_name().to_str()?.parse().ok())?
    })
}

/// The scheduler state letter of a thread (`/proc/<pid>/task/<tid>/stat`; `t` = traced, stopped).
fn thread_state(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    // The command name in parentheses may hold spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `ptrace(request, tid, NULL, NULL)`: every request this test makes takes no address and
/// no data (no options, no signal).
fn ptrace(request: libc::c_uint, tid: libc::pid_t) -> libc::c_long {
    // SAFETY: SEIZE, INTERRUPT and DETACH read neither pointer when both are null.
    unsafe { libc::ptrace(request, tid, null_mut::<libc::c_void>(), null_mut::<libc::c_void>()) }
}

/// One thread held in a ptrace stop by the calling thread; detached (resumed) on drop. Every
/// ptrace call must come from the thread that attached: the test's (a `current_thread` runtime
/// runs the test body on it).
struct Stopped {
    tid: libc::pid_t,
    attached: bool,
}

impl Stopped {
    /// Attaches to `tid` and stops it; `Err` only when the attach itself is refused.
    fn stop(tid: libc::pid_t) -> io::Result<Stopped> {
        // No options: a plain seize.
        let rc = ptrace(libc::PTRACE_SEIZE, tid);
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let s = Stopped { tid, attached: true };
        let rc = ptrace(libc::PTRACE_INTERRUPT, tid);
        assert_eq!(rc, 0, "PTRACE_INTERRUPT: {}", io::Error::last_os_error());
        // Bounded: at most 2000 polls 5 ms apart for the stop to be reported.
        let mut status = 0;
        for _ in 0..2000 {
            // SAFETY: waitpid with a valid pointer to an int; __WALL for a non-leader thread.
            let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
            if r == tid {
                assert!(
                    libc::WIFSTOPPED(status) && status >> 16 == libc::PTRACE_EVENT_STOP,
                    "not a ptrace event stop: status {status:#x}"
                );
                return Ok(s);
            }
            assert_eq!(r, 0, "waitpid({tid}): {}", io::Error::last_os_error());
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("thread {tid} did not stop after PTRACE_INTERRUPT");
    }

    /// Detaches: the thread runs again.
    fn resume(mut self) {
        self.detach();
    }

    fn detach(&mut self) {
        if std::mem::take(&mut self.attached) {
            // Data 0: resumed with no signal.
            let rc = ptrace(libc::PTRACE_DETACH, self.tid);
            assert_eq!(rc, 0, "PTRACE_DETACH: {}", io::Error::last_os_error());
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.attached {
            self.attached = false;
            // On a failing test the result does not matter.
            ptrace(libc::PTRACE_DETACH, self.tid);
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_stopped_shard_withholds_watchdog_keepalives_until_it_turns_again() {
    let dir = TempDir::new("ops-watchdog");
    let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
    let port = free_port();
    // Keep-alives every 100 ms; the stall limit is the built-in one (3 s).
    let mut server = Server::spawn(
        port,
        &["--secret", SECRET],
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")],
    );
    notify.wait("READY=1", |m| m.contains("READY=1")).await;
    notify.wait("WATCHDOG=1", |m| m == "WATCHDOG=1").await;
    let pid = server.pid();
    let tid = thread_named(pid, "shard-0").expect("the media shard thread shard-0");
    assert_ne!(tid, pid, "shard-0 is not the main thread");

    let stopped = match Stopped::stop(tid) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            assert!(
                std::env::var_os("RINGSFU_REQUIRE_TOOLS").is_none(),
                "ptrace of the shard thread not permitted ({e}) and RINGSFU_REQUIRE_TOOLS is set"
            );
            eprintln!(
                "SKIPPED: ptrace(PTRACE_SEIZE) of the shard thread is not permitted here ({e}); \
                 the stuck-shard watchdog is not checked in the binary"
            );
            return;
        }
        Err(e) => panic!("PTRACE_SEIZE of thread {tid}: {e}"),
    };
    assert_eq!(thread_state(pid, tid), Some('t'), "shard-0 is in a ptrace stop");

    // The watchdog notices within its stall limit and says so.
    let stuck = notify
        .wait("STATUS saying shard 0 is stuck", |m| m.starts_with("STATUS=Shard 0 stuck for "))
        .await;
    assert!(stuck.contains("watchdog keep-alives withheld"), "{stuck}");
    // From then on no keep-alive while the shard stays stopped (10 watchdog ticks).
    notify.forget();
    let during = notify.collect_for(Duration::from_secs(1)).await;
    assert!(
        !during.iter().any(|m| m == "WATCHDOG=1"),
        "keep-alive from a stuck server: {during:?}"
    );
    assert_eq!(thread_state(pid, tid), Some('t'), "shard-0 stayed stopped throughout");
    // Only the shard stopped: the control thread answers.
    let health = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("health while the shard is stopped");
    assert_eq!(health.status().as_u16(), 200);

    // The shard runs again: keep-alives resume and the status line is the serving one again.
    stopped.resume();
    notify.forget();
    notify.wait("WATCHDOG=1 after the shard turns again", |m| m == "WATCHDOG=1").await;
    notify.wait("the serving STATUS again", |m| m.starts_with("STATUS=Serving: ")).await;
    let lines = server.stderr_lines();
    assert!(
        lines.iter().any(|l| l.contains("shard event loop stuck")),
        "the stuck shard was logged: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("watchdog keep-alives resume")),
        "the recovery was logged: {lines:#?}"
    );

    // The shard that was stopped shuts down cleanly.
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code().await, Some(0));
}

/// The TURN TCP/TLS thread (`turn-stream`) is watched like the shards: stopped, it withholds
/// the keep-alives; running again, they resume.
#[tokio::test(flavor = "current_thread")]
async fn a_stopped_turn_stream_thread_withholds_watchdog_keepalives() {
    let dir = TempDir::new("ops-watchdog-turn");
    let mut notify = NotifySocket::bind(&dir.path("notify.sock"));
    let port = free_port();
    let mut server = Server::spawn(
        port,
        &["--secret", SECRET],
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap()), ("WATCHDOG_USEC", "200000")],
    );
    notify.wait("READY=1", |m| m.contains("READY=1")).await;
    notify.wait("WATCHDOG=1", |m| m == "WATCHDOG=1").await;
    let pid = server.pid();
    let tid = thread_named(pid, "turn-stream").expect("the TURN TCP/TLS thread turn-stream");
    let stopped = match Stopped::stop(tid) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            assert!(
                std::env::var_os("RINGSFU_REQUIRE_TOOLS").is_none(),
                "ptrace of the turn-stream thread not permitted ({e}) and RINGSFU_REQUIRE_TOOLS is set"
            );
            eprintln!("SKIPPED: ptrace(PTRACE_SEIZE) not permitted here ({e})");
            return;
        }
        Err(e) => panic!("PTRACE_SEIZE of thread {tid}: {e}"),
    };
    let stuck = notify
        .wait("STATUS saying a watched thread is stuck", |m| {
            m.starts_with("STATUS=Shard ") && m.contains(" stuck for ")
        })
        .await;
    assert!(stuck.contains("watchdog keep-alives withheld"), "{stuck}");
    notify.forget();
    let during = notify.collect_for(Duration::from_secs(1)).await;
    assert!(!during.iter().any(|m| m == "WATCHDOG=1"), "keep-alive while stuck: {during:?}");
    stopped.resume();
    notify.forget();
    notify.wait("WATCHDOG=1 after the thread turns again", |m| m == "WATCHDOG=1").await;
    server.signal(libc::SIGTERM);
    assert_eq!(server.exit_code().await, Some(0));
}
