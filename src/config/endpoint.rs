//! The webhook endpoint's URL and its extra CA file: what a valid `webhook.endpoint` and
//! `webhook.ca_file` are, checked when the configuration loads and used as such by the delivery
//! task (`crate::control::webhook`), so the two never disagree.

use std::path::Path;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The scheme of a webhook endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// The port used when the URL names none.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A parsed `http[s]://host[:port][/path]` endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// A DNS name or an IP address (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    /// The `Host` header's value: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == self.scheme.default_port() { host } else { format!("{host}:{}", self.port) }
    }
}

/// Parses the endpoint URL: `http://` or `https://`, a host name, an IPv4 address or a
/// bracketed IPv6 address, an optional port (default 80 or 443) and path (default `/`). No user
/// information, no white space or control characters.
pub fn parse_endpoint(url: &str) -> Option<Endpoint> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        (Scheme::Https, url.strip_prefix("https://")?)
    };
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    // A fragment is the client's own; it is not sent.
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => scheme.default_port(),
            None => return None,
        };
        (h, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, scheme.default_port()),
        }
    };
    if host.is_empty() || port == 0 {
        return None;
    }
    Some(Endpoint { scheme, host: host.to_string(), port, path: path.to_string() })
}

/// Adds the CA certificates of the PEM file `path` (`webhook.ca_file`) to `roots`; how many. An
/// error (one line, naming the file) when it cannot be read or holds no certificate usable as a
/// trust anchor.
pub fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<usize, String> {
    if !path.is_file() {
        return Err(format!("no such file: {}", path.display()));
    }
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {}", path.display(), super::one_line(&e.to_string())))?;
    match roots.add_parsable_certificates(certs).0 {
        0 => Err(format!("{}: holds no PEM CA certificate", path.display())),
        n => Ok(n),
    }
}
