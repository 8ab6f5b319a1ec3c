//! Which peer addresses a TURN allocation may relay to (RFC 8656 §21.1 and §21.3: an open relay
//! into the server's own networks is the classic TURN security hole).
//!
//! Default: loopback, private (RFC 1918, RFC 6598 shared space, IPv6 ULA), link-local,
//! multicast, broadcast, unspecified, "this network" (0.0.0.0/8), documentation-free
//! reserved ranges and the server's own addresses are **denied**. `allow_loopback_peers` lifts
//! the loopback rule; `allowed_peer_ranges` lift any default rule for their range;
//! `denied_peer_ranges` deny more, and an explicit deny wins over an explicit allow.
//!
//! One exception to the defaults: **ringsfu's own media ports** ([`PeerPolicy::with_media`]).
//! Relaying a browser behind a strict firewall to the SFU is what the built-in TURN server is
//! for, and the SFU's ICE candidates are the server's own (often private, in tests loopback)
//! addresses. A permission for a media address is granted, but datagrams to that address are
//! relayed only to the media ports ([`PeerPolicy::check_addr`]); its other ports (the REST API,
//! SSH...) stay as denied as the rest of the server.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;

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

/// The same address, an IPv4-mapped IPv6 address being the IPv4 address it carries.
pub(crate) fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
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
    /// The SFU's own ICE candidate addresses and media ports (empty range: none).
    media_ips: Vec<IpAddr>,
    media_ports: Option<RangeInclusive<u16>>,
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
            media_ips: Vec::new(),
            media_ports: None,
        }
    }

    /// Lets allocations relay to ringsfu's own media endpoints: `ips` (the ICE candidate
    /// addresses) on `ports` (the shards' media ports), whatever the default rules say about
    /// those addresses. An explicit `denied_peer_ranges` entry still wins.
    pub fn with_media(mut self, ips: Vec<IpAddr>, ports: RangeInclusive<u16>) -> PeerPolicy {
        self.media_ips = ips.into_iter().map(canonical).collect();
        self.media_ports = Some(ports);
        self
    }

    /// Whether `ip` is one of ringsfu's media addresses (datagrams to it need
    /// [`PeerPolicy::check_addr`]: only the media ports are open).
    pub fn is_media_ip(&self, ip: IpAddr) -> bool {
        self.media_ports.is_some() && self.media_ips.contains(&canonical(ip))
    }

    /// Whether a permission for `ip` lets datagrams reach only ringsfu's media ports (a media
    /// address that the rules would deny but for the media exception).
    pub fn reaches_only_media(&self, ip: IpAddr) -> bool {
        self.is_media_ip(ip) && self.check_ip(canonical(ip), false).is_err()
    }

    /// Whether a permission for `ip` may be installed (CreatePermission; permissions are per
    /// IP address, RFC 8656 §9). ringsfu's media addresses are allowed here; which of their
    /// ports a datagram may reach is [`PeerPolicy::check_addr`]'s business.
    pub fn check(&self, ip: IpAddr) -> Result<(), Denied> {
        self.check_ip(canonical(ip), true)
    }

    /// Whether datagrams may be relayed to `peer` (ChannelBind, and every Send indication to a
    /// media address): as [`PeerPolicy::check`], but the media exception covers only the media
    /// ports.
    pub fn check_addr(&self, peer: SocketAddr) -> Result<(), Denied> {
        let media_port = self.media_ports.as_ref().is_some_and(|r| r.contains(&peer.port()));
        self.check_ip(canonical(peer.ip()), media_port)
    }

    fn check_ip(&self, ip: IpAddr, media_exception: bool) -> Result<(), Denied> {
        if self.denied.iter().any(|c| c.contains(ip)) {
            return Err(Denied::Configured);
        }
        if media_exception && self.is_media_ip(ip) {
            return Ok(());
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
    fn own_media_ports_are_reachable_and_nothing_else_of_the_server() {
        let cfg = TurnConfig::default();
        let own: IpAddr = ip("10.0.0.5");
        let p = PeerPolicy::from_config(&cfg, vec![own, ip("127.0.0.1")])
            .with_media(vec![own, ip("127.0.0.1")], 40000..=40001);
        // Permissions: per IP, granted for the media addresses (private and loopback here).
        assert_eq!(p.check(own), Ok(()));
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("::ffff:10.0.0.5")), Ok(()));
        // Datagrams: the media ports only.
        for port in [40000, 40001] {
            assert_eq!(p.check_addr(SocketAddr::new(own, port)), Ok(()));
            assert_eq!(p.check_addr(SocketAddr::new(ip("127.0.0.1"), port)), Ok(()));
        }
        assert_eq!(p.check_addr(SocketAddr::new(own, 4443)), Err(Denied::ServerAddress));
        assert_eq!(p.check_addr(SocketAddr::new(own, 39999)), Err(Denied::ServerAddress));
        assert_eq!(p.check_addr(SocketAddr::new(ip("127.0.0.1"), 22)), Err(Denied::Loopback));
        // Other private and server addresses keep their default.
        assert_eq!(p.check(ip("10.0.0.6")), Err(Denied::Private));
        assert_eq!(p.check_addr(SocketAddr::new(ip("10.0.0.6"), 40000)), Err(Denied::Private));
        // An explicit deny still wins.
        let cfg = TurnConfig { denied_peer_ranges: vec!["10.0.0.0/8".into()], ..cfg };
        let p = PeerPolicy::from_config(&cfg, vec![own]).with_media(vec![own], 40000..=40001);
        assert_eq!(p.check(own), Err(Denied::Configured));
        assert_eq!(p.check_addr(SocketAddr::new(own, 40000)), Err(Denied::Configured));
        // Without media endpoints the server's addresses are denied.
        let p = PeerPolicy::from_config(&TurnConfig::default(), vec![ip("203.0.113.5")]);
        assert_eq!(p.check(ip("203.0.113.5")), Err(Denied::ServerAddress));
        assert!(!p.is_media_ip(ip("203.0.113.5")));
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
