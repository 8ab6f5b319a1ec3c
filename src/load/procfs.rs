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
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else { continue };
        let comm = comm.trim();
        if comm.starts_with(prefix) {
            out.push((comm.to_string(), tid));
        }
    }
    out.sort_by_key(|a| natural(&a.0));
    out
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
}
