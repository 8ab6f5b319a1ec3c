//! CPU time and memory of processes and threads, from `/proc` (Linux).

use std::path::Path;

/// Clock ticks per second of `/proc/*/stat` times.
fn ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime (seconds) of a `stat` file's contents.
fn cpu_of_stat(stat: &str) -> Option<f64> {
    // Fields after the command name (which may contain spaces) start at `state`.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks())
}

/// CPU seconds of one thread: `schedstat`'s run time (nanoseconds) when the kernel has it,
/// else `stat`'s utime + stime (clock ticks, 10 ms granularity).
pub fn thread_cpu(pid: u32, tid: u32) -> Option<f64> {
    let base = format!("/proc/{pid}/task/{tid}");
    if let Ok(s) = std::fs::read_to_string(format!("{base}/schedstat"))
        && let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok())
    {
        return Some(ns as f64 / 1e9);
    }
    cpu_of_stat(&std::fs::read_to_string(format!("{base}/stat")).ok()?)
}

/// CPU seconds of a whole process.
pub fn process_cpu(pid: u32) -> Option<f64> {
    cpu_of_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `(name, tid)` of every thread whose name starts with `prefix`, sorted by name.
pub fn threads_named(pid: u32, prefix: &str) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = tasks(pid)
        .into_iter()
        .filter(|(_, c)| c.starts_with(prefix))
        .map(|(t, c)| (c, t))
        .collect();
    out.sort_by_key(|a| natural(&a.0));
    out
}

/// `(tid, name)` of every thread of `pid` now (empty when the process is gone).
fn tasks(pid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((tid, comm.trim().to_string()))
        })
        .collect()
}

fn natural(s: &str) -> (String, u64) {
    let digits: String = s.chars().rev().take_while(char::is_ascii_digit).collect();
    let n = digits.chars().rev().collect::<String>().parse().unwrap_or(0);
    (s.trim_end_matches(|c: char| c.is_ascii_digit()).to_string(), n)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// Whether `/proc/<pid>` exists.
pub fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The kernel's UDP counters `(InErrors, RcvbufErrors, SndbufErrors)` from `/proc/net/snmp`
/// (this network namespace): datagrams dropped because a socket's buffer was full.
pub fn udp_errors() -> Option<(u64, u64, u64)> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let get = |n: &str| -> Option<u64> {
        let i = names.iter().position(|x| *x == n)?;
        values.get(i)?.parse().ok()
    };
    Some((get("InErrors")?, get("RcvbufErrors")?, get("SndbufErrors")?))
}

/// CPU seconds of each named shard thread of `pid` (`shard-0`, `shard-1`, ...).
pub fn shard_cpu(pid: u32) -> Vec<(String, f64)> {
    threads_named(pid, "shard-")
        .into_iter()
        .filter_map(|(n, tid)| Some((n, thread_cpu(pid, tid)?)))
        .collect()
}

/// Whose CPU a [`CpuSampler`] counts as data plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataPlane {
    /// A server process: its `shard-*` threads, and every io_uring worker thread
    /// (`iou-wrk-<tid>`) of the process, attributed to the shard thread whose tid it names.
    Server { pid: u32 },
    /// One thread of a process (the raw forwarder inside the load generator), named `name`,
    /// and the io_uring worker threads it started (`iou-wrk-<tid>`); other workers of that
    /// process belong to someone else and are not counted.
    Thread { pid: u32, tid: u32, name: String },
    /// Every thread of a process (another SFU, whose threads are all its data plane), by name
    /// with trailing digits and spaces dropped (`hloop 123`: `hloop`).
    Process { pid: u32 },
}

/// One thread's run time as seen over a window, across samples.
#[derive(Debug, Clone)]
struct Tracked {
    comm: String,
    /// CPU seconds of earlier threads that held this tid within the window.
    closed: f64,
    /// Its CPU seconds at the window's start, or 0 for a thread born in the window.
    base: f64,
    last: f64,
}

/// The data-plane CPU of a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DataPlaneCpu {
    /// Per data-plane thread (`shard-0`, ... or the forwarder): its own CPU seconds.
    pub threads: Vec<(String, f64)>,
    /// io_uring worker threads' CPU seconds, by the data-plane thread that started them
    /// (`"other"` when the tid they name is none of those threads).
    pub iou_wrk: Vec<(String, f64)>,
    /// io_uring worker threads seen during the window.
    pub iou_wrk_threads: usize,
}

impl DataPlaneCpu {
    /// Every data-plane CPU second: threads and their io_uring workers.
    pub fn total(&self) -> f64 {
        self.threads.iter().chain(&self.iou_wrk).map(|(_, c)| c).sum()
    }
}

/// Measures data-plane CPU over a window: [`CpuSampler::start`] at its start, [`sample`]
/// during it (io_uring workers come and go: one that exits between two samples takes the CPU
/// it used since the last sample with it, so sample about once a second), [`finish`] at its
/// end.
///
/// [`sample`]: CpuSampler::sample
/// [`finish`]: CpuSampler::finish
#[derive(Debug, Clone)]
pub struct CpuSampler {
    who: DataPlane,
    seen: std::collections::BTreeMap<u32, Tracked>,
}

const IOU_WRK: &str = "iou-wrk-";

impl CpuSampler {
    /// Starts a window now.
    pub fn start(who: DataPlane) -> CpuSampler {
        let mut s = CpuSampler { who, seen: Default::default() };
        for (tid, comm, cpu) in s.threads() {
            s.seen.insert(tid, Tracked { comm, closed: 0.0, base: cpu, last: cpu });
        }
        s
    }

    fn pid(&self) -> u32 {
        match &self.who {
            DataPlane::Server { pid }
            | DataPlane::Thread { pid, .. }
            | DataPlane::Process { pid } => *pid,
        }
    }

    /// `(tid, comm, cpu)` of the threads this sampler counts, now.
    fn threads(&self) -> Vec<(u32, String, f64)> {
        let pid = self.pid();
        let mut out = Vec::new();
        for (tid, comm) in tasks(pid) {
            let counted = match &self.who {
                DataPlane::Server { .. } => comm.starts_with("shard-") || comm.starts_with(IOU_WRK),
                DataPlane::Thread { tid: owner, .. } => {
                    tid == *owner || iou_wrk_owner(&comm) == Some(*owner)
                }
                DataPlane::Process { .. } => true,
            };
            if counted && let Some(cpu) = thread_cpu(pid, tid) {
                out.push((tid, comm, cpu));
            }
        }
        out
    }

    /// Takes a sample (bounded: one read of the process's task list).
    pub fn sample(&mut self) {
        for (tid, comm, cpu) in self.threads() {
            match self.seen.get_mut(&tid) {
                // The same thread, or a new one under a reused tid (another name, or less CPU).
                Some(t) if t.comm == comm && cpu >= t.last => t.last = cpu,
                Some(t) => {
                    t.closed += (t.last - t.base).max(0.0);
                    *t = Tracked { comm, closed: t.closed, base: 0.0, last: cpu };
                }
                None => {
                    self.seen.insert(tid, Tracked { comm, closed: 0.0, base: 0.0, last: cpu });
                }
            }
        }
    }

    /// Ends the window (one last sample) and attributes its CPU.
    pub fn finish(&mut self) -> DataPlaneCpu {
        self.sample();
        let owner_of = |tid: u32| -> String {
            match &self.who {
                DataPlane::Thread { name, .. } => name.clone(),
                DataPlane::Server { .. } | DataPlane::Process { .. } => self
                    .seen
                    .get(&tid)
                    .filter(|t| !t.comm.starts_with(IOU_WRK))
                    .map_or_else(|| "other".to_string(), |t| t.comm.clone()),
            }
        };
        let add = |v: &mut Vec<(String, f64)>, name: String, cpu: f64| match v
            .iter_mut()
            .find(|(n, _)| *n == name)
        {
            Some(x) => x.1 += cpu,
            None => v.push((name, cpu)),
        };
        let mut out = DataPlaneCpu::default();
        for t in self.seen.values() {
            let cpu = t.closed + (t.last - t.base).max(0.0);
            if t.comm.starts_with(IOU_WRK) {
                out.iou_wrk_threads += 1;
                let owner = iou_wrk_owner(&t.comm).map_or_else(|| "other".to_string(), owner_of);
                add(&mut out.iou_wrk, owner, cpu);
            } else {
                let name = match &self.who {
                    DataPlane::Thread { name, .. } => name.clone(),
                    DataPlane::Server { .. } => t.comm.clone(),
                    DataPlane::Process { .. } => {
                        let g = t.comm.trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ');
                        if g.is_empty() { t.comm.clone() } else { g.to_string() }
                    }
                };
                add(&mut out.threads, name, cpu);
            }
        }
        out.threads.sort_by_key(|a| natural(&a.0));
        out.iou_wrk.sort_by_key(|a| natural(&a.0));
        out
    }
}

/// The tid an io_uring worker thread's name gives (`iou-wrk-1234`: the task that set up the
/// ring's work queue).
pub fn iou_wrk_owner(comm: &str) -> Option<u32> {
    comm.strip_prefix(IOU_WRK)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_name() {
        let s = "123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 200 100 0 0";
        assert_eq!(cpu_of_stat(s), Some(300.0 / ticks()));
        assert_eq!(cpu_of_stat("garbage"), None);
    }

    #[test]
    fn reads_itself() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap_or(0) > 0);
        assert!(process_cpu(pid).is_some());
        assert!(thread_cpu(pid, gettid()).is_some());
        assert!(alive(pid));
        assert!(udp_errors().is_some());
    }

    #[test]
    fn samples_its_own_thread() {
        let pid = std::process::id();
        let tid = gettid();
        let who = DataPlane::Thread { pid, tid, name: "me".into() };
        let mut s = CpuSampler::start(who);
        // Some work of this thread, then the window's figures: one thread named as asked, no
        // io_uring worker of ours (none started), a CPU figure that is not negative.
        let mut x = 0u64;
        for i in 0..200_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        s.sample();
        let d = s.finish();
        assert_eq!(d.threads.len(), 1, "{d:?}");
        assert_eq!(d.threads[0].0, "me");
        assert!(d.threads[0].1 >= 0.0);
        assert_eq!(d.iou_wrk_threads, 0);
        assert!(d.total() >= 0.0);
        // A process with no such threads: nothing, no panic.
        let mut gone = CpuSampler::start(DataPlane::Server { pid: u32::MAX });
        assert_eq!(gone.finish(), DataPlaneCpu::default());
    }

    #[test]
    fn names_io_uring_workers_by_their_task() {
        assert_eq!(iou_wrk_owner("iou-wrk-1234"), Some(1234));
        assert_eq!(iou_wrk_owner("iou-wrk-"), None);
        assert_eq!(iou_wrk_owner("iou-sqp-12"), None);
        assert_eq!(iou_wrk_owner("shard-0"), None);
    }

    /// An io_uring request forced to run asynchronously is executed by a worker thread of the
    /// process named after the thread that submitted it: the sampler counts that worker for
    /// the submitting thread. (Skipped where io_uring is unavailable.)
    #[test]
    fn io_uring_workers_are_counted_for_the_thread_that_started_them() {
        use std::sync::mpsc::channel;
        let (tid_tx, tid_rx) = channel::<Option<u32>>();
        let (go_tx, go_rx) = channel::<()>();
        let (done_tx, done_rx) = channel::<bool>();
        let ring_thread = std::thread::spawn(move || {
            let Ok(mut ring) = io_uring::IoUring::new(8) else {
                let _ = tid_tx.send(None);
                return;
            };
            let _ = tid_tx.send(Some(gettid()));
            let _ = go_rx.recv();
            let nop = io_uring::opcode::Nop::new()
                .build()
                .flags(io_uring::squeue::Flags::ASYNC)
                .user_data(1);
            // SAFETY: a NOP references no memory.
            let pushed = unsafe { ring.submission().push(&nop) }.is_ok();
            let ok = pushed && ring.submit_and_wait(1).is_ok();
            let _ = done_tx.send(ok);
            // Stay (and keep the ring, so its worker) until the sample is taken.
            let _ = go_rx.recv();
        });
        let Ok(Some(tid)) = tid_rx.recv() else {
            eprintln!("io_uring unavailable: not checked");
            let _ = ring_thread.join();
            return;
        };
        let pid = std::process::id();
        let mut s = CpuSampler::start(DataPlane::Thread { pid, tid, name: "ring".into() });
        let _ = go_tx.send(());
        let ok = done_rx.recv().unwrap_or(false);
        s.sample();
        let d = s.finish();
        let _ = go_tx.send(());
        let _ = ring_thread.join();
        assert!(ok, "the NOP completed");
        assert_eq!(d.threads.len(), 1, "{d:?}");
        assert!(d.iou_wrk_threads >= 1, "a worker ran the forced-async NOP: {d:?}");
        assert_eq!(d.iou_wrk.len(), 1, "{d:?}");
        assert_eq!(d.iou_wrk[0].0, "ring", "counted for the thread that submitted: {d:?}");
        assert!(d.total() >= d.threads[0].1);
    }
}
