//! OpenVidu webhook delivery (spec §7): a bounded queue drained by one task that POSTs each
//! event as JSON to `webhook.endpoint` with the configured headers.
//!
//! - Enqueueing never blocks: when the queue is full the event is dropped and counted.
//! - Each attempt has a timeout (`webhook.timeout`); failed attempts are retried up to
//!   `webhook.max_attempts` in total with a short exponential back-off.
//! - Only events named in `webhook.events` are queued.
//!
//! The HTTP client is a minimal HTTP/1.1 one over a tokio `TcpStream` (`Connection: close`,
//! success = any 2xx status), which avoids pulling a second HTTP client stack into the binary.
//! For an `https://` endpoint the stream is wrapped in TLS (`tokio-rustls`, the aws-lc-rs
//! provider) that checks the receiver's certificate against the system's trust store plus the
//! CA certificates of `webhook.ca_file`, for the endpoint's host name or IP address. The TLS
//! client configuration is built once, when the delivery task starts. A failed handshake
//! (unknown CA, wrong name) is a failed attempt like any other; the warning logged when an
//! event is dropped carries the last attempt's error.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::config::WebhookConfig;
use crate::config::endpoint::add_ca_file;
pub use crate::config::endpoint::{Endpoint, Scheme, parse_endpoint};

/// Most bytes of event bodies waiting in the queue (on top of the `webhook.queue_size` event
/// count): large signals must not let a dead endpoint pin gigabytes.
pub const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Delivery counters (readable by tests and metrics).
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub queued: AtomicU64,
    pub delivered: AtomicU64,
    /// Dropped because the queue was full.
    pub dropped_full: AtomicU64,
    /// Dropped after the last failed attempt.
    pub dropped_failed: AtomicU64,
    /// Bytes of bodies currently queued.
    pub queued_bytes: AtomicUsize,
}

/// Producer side of the webhook queue.
#[derive(Clone)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<String>>,
    events: Arc<Vec<String>>,
    pub stats: Arc<WebhookStats>,
}

/// The name an `https://` endpoint's certificate must be valid for: its IP address, or its DNS
/// name.
fn server_name(host: &str) -> Option<ServerName<'static>> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Some(ServerName::IpAddress(ip.into())),
        Err(_) => ServerName::try_from(host.to_string()).ok(),
    }
}

/// The TLS client configuration of `https://` endpoints: the system's trust store plus the
/// certificates of `ca_file`.
fn tls_client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "webhook: part of the system trust store could not be read");
    }
    let (system, unusable) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(system, unusable, "webhook: system CA certificates loaded");
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path)?;
    }
    if roots.is_empty() {
        tracing::warn!(
            "webhook: no trusted CA certificate (empty system trust store, no webhook.ca_file); \
             every https delivery will fail"
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// How the delivery task reaches the endpoint, fixed when it starts.
enum Transport {
    Plain,
    Tls { connector: TlsConnector, name: ServerName<'static> },
}

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("request: {0}")]
    Io(std::io::Error),
    #[error("no HTTP status line in the answer")]
    BadStatusLine,
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl Webhooks {
    /// A sink that delivers nothing.
    pub fn disabled() -> Webhooks {
        Webhooks { tx: None, events: Arc::new(Vec::new()), stats: Arc::default() }
    }

    /// Starts the delivery task on the current tokio runtime (disabled if none or not enabled).
    /// For an `https://` endpoint this reads the system's trust store and `webhook.ca_file`
    /// once, here.
    pub fn start(cfg: &WebhookConfig) -> Webhooks {
        if !cfg.enabled {
            return Webhooks::disabled();
        }
        let Some(endpoint) = parse_endpoint(&cfg.endpoint) else {
            tracing::error!(endpoint = %cfg.endpoint, "webhook endpoint is not http[s]://host[:port]/path; webhooks disabled");
            return Webhooks::disabled();
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!("no tokio runtime; webhooks disabled");
            return Webhooks::disabled();
        };
        let transport = match endpoint.scheme {
            Scheme::Http => Transport::Plain,
            Scheme::Https => {
                let Some(name) = server_name(&endpoint.host) else {
                    tracing::error!(host = %endpoint.host, "webhook endpoint host is not a valid TLS server name; webhooks disabled");
                    return Webhooks::disabled();
                };
                match tls_client_config(cfg.ca_file.as_deref()) {
                    Ok(tls) => {
                        Transport::Tls { connector: TlsConnector::from(Arc::new(tls)), name }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "webhook TLS client cannot be set up; webhooks disabled");
                        return Webhooks::disabled();
                    }
                }
            }
        };
        let (tx, rx) = mpsc::channel(cfg.queue_size.max(1));
        let stats = Arc::new(WebhookStats::default());
        let headers: Vec<(String, String)> = cfg
            .headers
            .iter()
            .filter_map(|h| h.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .filter(|(n, v)| {
                // Header injection guard: no CR/LF in configured headers.
                !(n.is_empty() || n.contains(['\r', '\n']) || v.contains(['\r', '\n']))
            })
            .collect();
        let head = request_head(&endpoint, &headers);
        rt.spawn(deliver_loop(
            rx,
            Target { endpoint, transport, head },
            Duration::from_secs(cfg.timeout.max(1)),
            cfg.max_attempts.max(1),
            stats.clone(),
        ));
        Webhooks { tx: Some(tx), events: Arc::new(cfg.events.clone()), stats }
    }

    /// Queues an event (complete body with an `event` key) if its name is enabled. Never blocks.
    pub fn send(&self, event: Value) {
        let Some(tx) = &self.tx else { return };
        let name = event.get("event").and_then(Value::as_str).unwrap_or("");
        if !self.events.iter().any(|e| e == name) {
            return;
        }
        let body = event.to_string();
        let len = body.len();
        let prev = self.stats.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let result =
            if prev + len > MAX_QUEUED_BYTES { Err(()) } else { tx.try_send(body).map_err(|_| ()) };
        match result {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(()) => {
                self.stats.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                let n = self.stats.dropped_full.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "webhook queue full (webhook.queue_size events or MAX_QUEUED_BYTES); event dropped"
                    );
                }
            }
        }
    }
}

/// Where and how the delivery task posts.
struct Target {
    endpoint: Endpoint,
    transport: Transport,
    /// The request up to, not including, `Content-Length` (the same for every event).
    head: String,
}

async fn deliver_loop(
    mut rx: mpsc::Receiver<String>,
    target: Target,
    timeout: Duration,
    attempts: u32,
    stats: Arc<WebhookStats>,
) {
    while let Some(body) = rx.recv().await {
        let request = format!("{}Content-Length: {}\r\n\r\n{body}", target.head, body.len());
        let mut last = None;
        for attempt in 0..attempts {
            if attempt > 0 {
                let backoff = Duration::from_millis(200u64 << (attempt - 1).min(5));
                tokio::time::sleep(backoff).await;
            }
            let outcome =
                match tokio::time::timeout(timeout, post(&target, request.as_bytes())).await {
                    Ok(Ok(status)) if (200..300).contains(&status) => Ok(()),
                    Ok(Ok(status)) => Err(AttemptError::Status(status)),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(AttemptError::Timeout(timeout)),
                };
            match outcome {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "webhook delivery attempt failed");
                    last = Some(e);
                }
            }
        }
        stats.queued_bytes.fetch_sub(body.len(), Ordering::Relaxed);
        match last {
            None => {
                stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Some(e) => {
                stats.dropped_failed.fetch_add(1, Ordering::Relaxed);
                let ep = &target.endpoint;
                tracing::warn!(
                    endpoint = %format!("{}:{}{}", ep.host, ep.port, ep.path),
                    error = %e,
                    "webhook event dropped after {attempts} attempts"
                );
            }
        }
    }
}

/// The request line and the headers every POST carries, up to `Content-Length`.
fn request_head(ep: &Endpoint, headers: &[(String, String)]) -> String {
    let mut head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nConnection: close\r\nUser-Agent: ringsfu\r\n",
        ep.path,
        ep.host_header(),
    );
    for (n, v) in headers {
        head.push_str(n);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head
}

/// One POST of the complete `request`; returns the response status code.
async fn post(target: &Target, request: &[u8]) -> Result<u16, AttemptError> {
    let ep = &target.endpoint;
    let tcp =
        TcpStream::connect((ep.host.as_str(), ep.port)).await.map_err(AttemptError::Connect)?;
    match &target.transport {
        Transport::Plain => exchange(tcp, request).await,
        Transport::Tls { connector, name } => {
            let tls = connector.connect(name.clone(), tcp).await.map_err(AttemptError::Tls)?;
            exchange(tls, request).await
        }
    }
}

/// Writes the request and reads the status line of the answer (bounded).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<u16, AttemptError> {
    stream.write_all(request).await.map_err(AttemptError::Io)?;
    stream.flush().await.map_err(AttemptError::Io)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = stream.read(&mut chunk).await.map_err(AttemptError::Io)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(AttemptError::BadStatusLine)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(scheme: Scheme, host: &str, port: u16, path: &str) -> Endpoint {
        Endpoint { scheme, host: host.into(), port, path: path.into() }
    }

    #[test]
    fn http_endpoints() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:7777/hook"),
            Some(ep(Scheme::Http, "127.0.0.1", 7777, "/hook"))
        );
        assert_eq!(parse_endpoint("http://h"), Some(ep(Scheme::Http, "h", 80, "/")));
        assert_eq!(parse_endpoint("http://[::1]:9/x"), Some(ep(Scheme::Http, "::1", 9, "/x")));
        assert_eq!(parse_endpoint("http://[::1]"), Some(ep(Scheme::Http, "::1", 80, "/")));
        assert!(parse_endpoint("http://h:notaport/").is_none());
    }

    #[test]
    fn https_endpoints() {
        for (url, host, port, path) in [
            ("https://hooks.example.org/openvidu?k=v", "hooks.example.org", 443, "/openvidu?k=v"),
            ("https://127.0.0.1:8443/hook", "127.0.0.1", 8443, "/hook"),
            ("https://h", "h", 443, "/"),
            ("https://h/x#frag", "h", 443, "/x"),
            ("https://[2001:db8::1]/x", "2001:db8::1", 443, "/x"),
            ("https://[2001:db8::1]:8443/x", "2001:db8::1", 8443, "/x"),
        ] {
            assert_eq!(parse_endpoint(url), Some(ep(Scheme::Https, host, port, path)), "{url}");
        }
    }

    #[test]
    fn bad_endpoints() {
        for url in [
            "",
            "ftp://h/x",
            "HTTPS://h/x",
            "https://",
            "https:///x",
            "https://h:/x",
            "https://h:0/x",
            "https://h:65536/x",
            "https://h:443x/",
            "https://::1/x",
            "https://[::1/x",
            "https://[::1]x/",
            "https://[nothex]/x",
            "https://[]/x",
            "https://user:pw@h/x",
            "https://h/x y",
            "https://h/x\r\nX-Injected: 1",
            " https://h/x",
        ] {
            assert_eq!(parse_endpoint(url), None, "{url:?}");
        }
    }

    #[test]
    fn server_names_are_ip_addresses_or_dns_names() {
        let ip = |s: &str| ServerName::IpAddress(s.parse::<std::net::IpAddr>().unwrap().into());
        assert_eq!(server_name("127.0.0.1"), Some(ip("127.0.0.1")));
        assert_eq!(server_name("::1"), Some(ip("::1")));
        assert_eq!(server_name("localhost"), Some(ServerName::try_from("localhost").unwrap()));
        assert!(matches!(server_name("hooks.example.org"), Some(ServerName::DnsName(_))));
        assert_eq!(server_name("bad name!"), None);
    }

    #[test]
    fn host_header_names_the_port_only_when_not_the_default() {
        let h = |url: &str| parse_endpoint(url).unwrap().host_header();
        assert_eq!(h("http://h/x"), "h");
        assert_eq!(h("http://h:443/x"), "h:443");
        assert_eq!(h("https://h/x"), "h");
        assert_eq!(h("https://h:80/x"), "h:80");
        assert_eq!(h("https://[::1]/x"), "[::1]");
        assert_eq!(h("https://[::1]:8443/x"), "[::1]:8443");
    }

    #[test]
    fn request_head_then_length_and_body() {
        let ep = parse_endpoint("https://127.0.0.1:8443/hook").unwrap();
        let head = request_head(&ep, &[("Authorization".into(), "Basic abc".into())]);
        assert!(head.starts_with("POST /hook HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n"), "{head}");
        assert!(head.ends_with("\r\nAuthorization: Basic abc\r\n"), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
    }

    #[test]
    fn ca_file_needs_a_certificate() {
        let dir = std::env::temp_dir().join(format!(
            "ringsfu-webhook-ca-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let add = |path: &Path| add_ca_file(&mut rustls::RootCertStore::empty(), path);
        let missing = dir.join("missing.pem");
        assert!(add(&missing).is_err());
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        assert!(add(&empty).unwrap_err().contains("no PEM CA certificate"));
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let good = dir.join("ca.pem");
        std::fs::write(&good, ca.cert.pem()).unwrap();
        assert_eq!(add(&good), Ok(1));
        assert!(tls_client_config(Some(&good)).is_ok());
        assert!(tls_client_config(Some(&empty)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
