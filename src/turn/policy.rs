//! Which peer addresses a TURN allocation may relay to (RFC 8656 §21.1 and §21.3: an open relay
//! into the server's own networks is the classic TURN security hole).
//!
//! Default: loopback, private (RFC 1918, RFC 6598 shared space, IPv6 ULA), link-local,
//! multicast, broadcast, unspecified, "this network" (0.0.0.0/8), documentation-free
//! reserved ranges and the server's own addresses are **denied**. `allow_loopback_peers` lifts
//! the loopback rule; `allowed_peer_ranges` lift any default rule for their range;
//! `denied_peer_ranges` deny more, and an explicit deny wins over an explicit allow.

use std::net::IpAddr;

use crate::config::{TurnConfig, parse_cidr};

/// A CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, &'static str> {
        let (addr, len) = parse_cidr(s)?;
        Ok(Cidr { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = if self.len == 0 { 0 } else { u32::MAX << (32 - self.len as u32) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - self.len as u32) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Why a peer was refused (for the 403 reason phrase and the counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    Loopback,
    Private,
    LinkLocal,
    Multicast,
    Unspecified,
    Reserved,
    ServerAddress,
    Configured,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Loopback => "peer_loopback",
            Denied::Private => "peer_private",
            Denied::LinkLocal => "peer_link_local",
            Denied::Multicast => "peer_multicast",
            Denied::Unspecified => "peer_unspecified",
            Denied::Reserved => "peer_reserved",
            Denied::ServerAddress => "peer_server_address",
            Denied::Configured => "peer_denied_range",
        }
    }
}

/// The peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow_loopback: bool,
    allowed: Vec<Cidr>,
    denied: Vec<Cidr>,
    server_addresses: Vec<IpAddr>,
}

impl PeerPolicy {
    /// From the `[turn]` section (ranges were validated when the configuration loaded) and the
    /// server's own addresses.
    pub fn from_config(cfg: &TurnConfig, server_addresses: Vec<IpAddr>) -> PeerPolicy {
        PeerPolicy {
            allow_loopback: cfg.allow_loopback_peers,
            allowed: cfg.allowed_peer_ranges.iter().filter_map(|r| Cidr::parse(r).ok()).collect(),
            denied: cfg.denied_peer_ranges.iter().filter_map(|r| Cidr::parse(r).ok()).collect(),
            server_addresses: server_addresses.into_iter().map(canonical).collect(),
        }
    }

    /// Whether `ip` may be a peer.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        let ip = canonical(ip);
        if self.denied.iter().any(|c| c.contains(ip)) {
            return Err(Denied::Configured);
        }
        if self.allowed.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        if ip.is_loopback() {
            return if self.allow_loopback { Ok(()) } else { Err(Denied::Loopback) };
        }
        if self.server_addresses.contains(&ip) {
            return Err(Denied::ServerAddress);
        }
        default_rule(ip)
    }
}

fn default_rule(ip: IpAddr) -> Result<(), Denied> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_unspecified() || o[0] == 0 {
                Err(Denied::Unspecified)
            } else if v4.is_private() || (o[0] == 100 && (o[1] & 0xC0) == 64) {
                Err(Denied::Private)
            } else if v4.is_link_local() {
                Err(Denied::LinkLocal)
            } else if v4.is_multicast() || v4.is_broadcast() {
                Err(Denied::Multicast)
            } else if o[0] >= 240 || (o[0] == 192 && o[1] == 0 && o[2] == 0) {
                Err(Denied::Reserved)
            } else {
                Ok(())
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() {
                Err(Denied::Unspecified)
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Err(Denied::Private)
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Err(Denied::LinkLocal)
            } else if v6.is_multicast() {
                Err(Denied::Multicast)
            } else {
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow_loopback: bool, allowed: &[&str], denied: &[&str]) -> PeerPolicy {
        let cfg = TurnConfig {
            allow_loopback_peers: allow_loopback,
            allowed_peer_ranges: allowed.iter().map(|s| s.to_string()).collect(),
            denied_peer_ranges: denied.iter().map(|s| s.to_string()).collect(),
            ..TurnConfig::default()
        };
        PeerPolicy::from_config(&cfg, vec!["203.0.113.5".parse().unwrap()])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_deny_internal_ranges() {
        let p = policy(false, &[], &[]);
        for (a, d) in [
            ("127.0.0.1", Denied::Loopback),
            ("::1", Denied::Loopback),
            ("::ffff:127.0.0.1", Denied::Loopback),
            ("10.1.2.3", Denied::Private),
            ("172.16.0.1", Denied::Private),
            ("192.168.1.1", Denied::Private),
            ("100.64.0.1", Denied::Private),
            ("fd00::1", Denied::Private),
            ("169.254.1.1", Denied::LinkLocal),
            ("fe80::1", Denied::LinkLocal),
            ("224.0.0.1", Denied::Multicast),
            ("255.255.255.255", Denied::Multicast),
            ("ff02::1", Denied::Multicast),
            ("0.0.0.0", Denied::Unspecified),
            ("0.1.2.3", Denied::Unspecified),
            ("::", Denied::Unspecified),
            ("240.0.0.1", Denied::Reserved),
            ("203.0.113.5", Denied::ServerAddress),
        ] {
            assert_eq!(p.check(ip(a)), Err(d), "{a}");
        }
        for a in ["8.8.8.8", "198.51.100.7", "2001:db8::1", "2a00:1450::1"] {
            assert_eq!(p.check(ip(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn configuration_overrides() {
        let p = policy(true, &["10.0.0.0/8"], &["10.9.0.0/16", "8.8.8.0/24"]);
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("10.1.2.3")), Ok(()));
        assert_eq!(p.check(ip("10.9.1.1")), Err(Denied::Configured), "deny wins over allow");
        assert_eq!(p.check(ip("8.8.8.8")), Err(Denied::Configured));
        assert_eq!(p.check(ip("192.168.0.1")), Err(Denied::Private));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(!Cidr::parse("::/0").unwrap().contains(ip("1.2.3.4")));
    }
}
