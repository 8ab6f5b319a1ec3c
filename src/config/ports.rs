//! The port plan: every port ringsfu listens on or relays from, derived from the configuration
//! in one place ([`Config::port_plan`]) and checked for overlaps when the configuration loads.
//!
//! | key | protocol | ports |
//! |---|---|---|
//! | `server.port` | TCP | the REST API, the WebSocket, the demo page, `/metrics` |
//! | `media.port_base` | UDP | `port_base .. port_base + shards - 1`: media shard `i` on `port_base + i` |
//! | `turn.shard_ports` | UDP | `port_base + shards .. port_base + 2 x shards - 1`: media shard `i`'s TURN port |
//! | `turn.port` | UDP and TCP | the shared TURN listener |
//! | `turn.tls_port` | TCP | TURN over TLS (when not 0) |
//! | `turn.relay_port_min` .. `turn.relay_port_max` | UDP | relayed transport addresses |
//!
//! Two ranges overlap when they share a port, a protocol and an address: the HTTP listener
//! binds `server.address`, the media and TURN listeners `media.bind_address`, relayed addresses
//! `turn.relay_ips` (else a specific `media.bind_address`, else every interface); a wildcard
//! address meets every other. So TURN relays on addresses of their own (`turn.relay_ips`) may
//! use any port numbers.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use super::{Config, ConfigError, err};

/// The transport protocol(s) of a port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
    UdpAndTcp,
}

impl Proto {
    fn shares(self, other: Proto) -> bool {
        !matches!((self, other), (Proto::Udp, Proto::Tcp) | (Proto::Tcp, Proto::Udp))
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
            Proto::UdpAndTcp => "UDP+TCP",
        })
    }
}

/// One range of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// The configuration key(s) the range comes from, as an operator writes them.
    pub key: &'static str,
    /// What listens there.
    pub what: &'static str,
    pub proto: Proto,
    pub ports: RangeInclusive<u16>,
    /// The addresses bound; empty = every address of the host.
    pub addrs: Vec<IpAddr>,
}

impl PortRange {
    /// Whether the two ranges would bind a common (address, protocol, port).
    pub fn overlaps(&self, other: &PortRange) -> bool {
        let any = |v: &[IpAddr]| v.is_empty() || v.iter().any(|ip| ip.is_unspecified());
        let addrs = any(&self.addrs)
            || any(&other.addrs)
            || self.addrs.iter().any(|a| other.addrs.contains(a));
        addrs
            && self.proto.shares(other.proto)
            && self.ports.start() <= other.ports.end()
            && other.ports.start() <= self.ports.end()
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (lo, hi) = (self.ports.start(), self.ports.end());
        if lo == hi {
            write!(f, "{} {} {lo}", self.what, self.proto)
        } else {
            write!(f, "{} {} {lo}-{hi}", self.what, self.proto)
        }
    }
}

/// Every port range of a configuration, in the order of the table above.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortPlan {
    pub ranges: Vec<PortRange>,
}

impl PortPlan {
    /// The range configured by `key`, if it is in use.
    pub fn get(&self, key: &str) -> Option<&PortRange> {
        self.ranges.iter().find(|r| r.key == key)
    }

    /// The media ports (`media.port_base`), if the media engine runs.
    pub fn media(&self) -> Option<RangeInclusive<u16>> {
        self.get("media.port_base").map(|r| r.ports.clone())
    }

    /// Media shard `shard`'s own TURN port, if the shards host TURN with one.
    pub fn turn_shard_port(&self, shard: usize) -> Option<u16> {
        let r = self.get("turn.shard_ports")?;
        let port = *r.ports.start() as usize + shard;
        (port <= *r.ports.end() as usize).then_some(port as u16)
    }

    /// The first pair of ranges that share a port and a protocol.
    fn overlap(&self) -> Option<(&PortRange, &PortRange)> {
        for (i, a) in self.ranges.iter().enumerate() {
            for b in &self.ranges[i + 1..] {
                if a.overlaps(b) {
                    return Some((a, b));
                }
            }
        }
        None
    }
}

impl fmt::Display for PortPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// `lo ..= lo + count - 1` as ports, or the error naming `key` when it passes 65535.
fn span(
    key: &str,
    lo: usize,
    count: usize,
    what: &str,
) -> Result<RangeInclusive<u16>, ConfigError> {
    let hi = lo + count.max(1) - 1;
    if hi > u16::MAX as usize {
        return Err(err(key, format!("{what} would end at port {hi}, past 65535")));
    }
    Ok(lo as u16..=hi as u16)
}

impl Config {
    /// Every port this configuration uses, derived in one place; an error names both keys of
    /// the first two ranges that overlap, or the key whose range passes 65535.
    pub fn port_plan(&self) -> Result<PortPlan, ConfigError> {
        let shards = self.effective_shards();
        let base = self.media.port_base as usize;
        let (http, media) = (vec![self.server.address], vec![self.media.bind_address]);
        let mut ranges = vec![PortRange {
            key: "server.port",
            what: "HTTP/WebSocket",
            proto: Proto::Tcp,
            ports: self.server.port..=self.server.port,
            addrs: http,
        }];
        if self.media.enabled {
            let what = format!("port_base + {shards} shards");
            let ports = span("media.port_base", base, shards, &what)?;
            ranges.push(PortRange {
                key: "media.port_base",
                what: "media",
                proto: Proto::Udp,
                ports,
                addrs: media.clone(),
            });
        }
        if self.turn.enabled {
            if self.media.enabled && self.turn.shard_ports {
                let what = format!("the shards' TURN ports (port_base + {shards} + shard)");
                let ports = span("turn.shard_ports", base + shards, shards, &what)?;
                ranges.push(PortRange {
                    key: "turn.shard_ports",
                    what: "shard TURN",
                    proto: Proto::Udp,
                    ports,
                    addrs: media.clone(),
                });
            }
            ranges.push(PortRange {
                key: "turn.port",
                what: "TURN",
                proto: Proto::UdpAndTcp,
                ports: self.turn.port..=self.turn.port,
                addrs: media.clone(),
            });
            if self.turn.tls_port != 0 {
                ranges.push(PortRange {
                    key: "turn.tls_port",
                    what: "TURN over TLS",
                    proto: Proto::Tcp,
                    ports: self.turn.tls_port..=self.turn.tls_port,
                    addrs: media.clone(),
                });
            }
            ranges.push(PortRange {
                key: "turn.relay_port_min..turn.relay_port_max",
                what: "TURN relay",
                proto: Proto::Udp,
                ports: self.turn.relay_port_min..=self.turn.relay_port_max,
                addrs: self.turn_relay_ips(),
            });
        }
        let plan = PortPlan { ranges };
        if let Some((a, b)) = plan.overlap() {
            return Err(err(a.key, format!("{a} overlaps `{}` ({b}); move one of the two", b.key)));
        }
        Ok(plan)
    }
}
