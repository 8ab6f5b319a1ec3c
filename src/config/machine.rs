//! What the machine gives the process, read once when a configuration is made, on the thread
//! that loads it (the main thread): the CPUs, the interface addresses, the kernel's ephemeral
//! port range and the open-file limit. Everything derived from them (the shard count, the
//! candidate addresses, the relay port checks) reads these values; nothing machine-dependent is
//! asked again later, least of all from a shard thread that has pinned itself to one CPU (where
//! `available_parallelism()` answers 1).

use std::net::IpAddr;

/// The machine's facts, as the process saw them when its configuration was loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// CPUs this process may use (`available_parallelism`: the affinity mask and the cgroup CPU
    /// quota), at least 1.
    pub cpus: usize,
    /// Addresses of the interfaces that are up (IPv4 and IPv6, IPv6 link-local left out), or why
    /// they cannot be listed (glibc's `getifaddrs` needs an AF_NETLINK socket).
    pub interfaces: Result<Vec<IpAddr>, String>,
    /// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), if readable.
    pub ephemeral_ports: Option<(u16, u16)>,
    /// The open-file limit (soft, hard), if readable.
    pub open_files: Option<(u64, u64)>,
}

impl Default for Machine {
    /// This machine, as [`Machine::detect`] reads it.
    fn default() -> Machine {
        Machine::detect()
    }
}

impl Machine {
    /// Reads the machine. Call it from the thread that loads the configuration, before any
    /// thread pins itself.
    pub fn detect() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            interfaces: interface_addresses(),
            ephemeral_ports: ephemeral_ports(),
            open_files: open_files(),
        }
    }

    /// A machine with `cpus` CPUs, loopback interfaces and Linux's default limits (tests).
    pub fn fixed(cpus: usize) -> Machine {
        Machine {
            cpus: cpus.max(1),
            interfaces: Ok(vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ]),
            ephemeral_ports: Some((32768, 60999)),
            open_files: Some((1024, 524_288)),
        }
    }

    /// The interface addresses of one family (`with_v6`: both), loopback last; empty when they
    /// cannot be listed.
    pub fn interface_ips(&self, with_v6: bool) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = match &self.interfaces {
            Ok(list) => list.iter().copied().filter(|ip| with_v6 || ip.is_ipv4()).collect(),
            Err(_) => Vec::new(),
        };
        // Loopback last: only useful when nothing else exists (tests, single-host demos).
        ips.sort_by_key(|ip| ip.is_loopback());
        ips
    }
}

/// The kernel's ephemeral port range.
fn ephemeral_ports() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

fn open_files() -> Option<(u64, u64)> {
    // SAFETY: all-zero is a valid rlimit; getrlimit fills it.
    let mut r: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return None;
    }
    Some((r.rlim_cur as u64, r.rlim_max as u64))
}

fn interface_addresses() -> Result<Vec<IpAddr>, String> {
    let mut out = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `ifap` with a list we free below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let mut cur = ifap;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr whose family says its real type.
        let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let ip = match family {
            libc::AF_INET => {
                // SAFETY: family AF_INET means a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: family AF_INET6 means a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if ip.segments()[0] & 0xffc0 == 0xfe80 {
                    continue; // link-local needs a scope id browsers cannot use
                }
                IpAddr::V6(ip)
            }
            _ => continue,
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    // SAFETY: the list came from getifaddrs.
    unsafe { libc::freeifaddrs(ifap) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reads_sane_values() {
        let m = Machine::detect();
        assert!(m.cpus >= 1);
        // Loopback is up on any machine that runs these tests (a namespace brings `lo` up).
        if let Ok(list) = &m.interfaces {
            assert!(
                list.iter().all(|ip| !matches!(ip, IpAddr::V6(v) if v.segments()[0] == 0xfe80))
            );
        }
        if let Some((lo, hi)) = m.ephemeral_ports {
            assert!(lo <= hi, "{lo}-{hi}");
        }
        if let Some((soft, hard)) = m.open_files {
            assert!(soft <= hard);
        }
    }

    #[test]
    fn interface_ips_filter_the_family_and_put_loopback_last() {
        let mut m = Machine::fixed(2);
        m.interfaces = Ok(vec![
            "127.0.0.1".parse().unwrap(),
            "::1".parse().unwrap(),
            "192.0.2.4".parse().unwrap(),
            "2001:db8::4".parse().unwrap(),
        ]);
        let v4: Vec<String> = m.interface_ips(false).iter().map(|i| i.to_string()).collect();
        assert_eq!(v4, ["192.0.2.4", "127.0.0.1"]);
        let all = m.interface_ips(true);
        assert_eq!(all.len(), 4);
        assert!(!all[0].is_loopback() && !all[1].is_loopback());
        m.interfaces = Err("no netlink".into());
        assert!(m.interface_ips(true).is_empty());
    }
}
