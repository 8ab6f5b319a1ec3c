//! OpenVidu webhook delivery (spec §7): a bounded queue drained by one task that POSTs each
//! event as JSON to `webhook.endpoint` with the configured headers.
//!
//! - Enqueueing never blocks: when the queue is full the event is dropped and counted.
//! - Each attempt has a timeout (`webhook.timeout`); failed attempts are retried up to
//!   `webhook.max_attempts` in total with a short exponential back-off.
//! - Only events named in `webhook.events` are queued.
//!
//! The HTTP client is a minimal HTTP/1.1 one over a tokio `TcpStream` (`Connection: close`,
//! success = any 2xx status): the endpoint is plain `http://` by configuration rule, and this
//! avoids pulling a second HTTP client stack into the binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::config::WebhookConfig;

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

/// A parsed `http://host[:port][/path]` endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// Parses the endpoint URL; only `http://` is supported.
pub fn parse_endpoint(url: &str) -> Option<Endpoint> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
        let (h, after) = stripped.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => 80,
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), 80),
        }
    };
    Some(Endpoint { host, port, path: path.to_string() })
}

impl Webhooks {
    /// A sink that delivers nothing.
    pub fn disabled() -> Webhooks {
        Webhooks { tx: None, events: Arc::new(Vec::new()), stats: Arc::default() }
    }

    /// Starts the delivery task on the current tokio runtime (disabled if none or not enabled).
    pub fn start(cfg: &WebhookConfig) -> Webhooks {
        if !cfg.enabled {
            return Webhooks::disabled();
        }
        let Some(endpoint) = parse_endpoint(&cfg.endpoint) else {
            tracing::error!(endpoint = %cfg.endpoint, "webhook endpoint is not http://host[:port]/path; webhooks disabled");
            return Webhooks::disabled();
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::error!("no tokio runtime; webhooks disabled");
            return Webhooks::disabled();
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
        rt.spawn(deliver_loop(
            rx,
            endpoint,
            headers,
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

async fn deliver_loop(
    mut rx: mpsc::Receiver<String>,
    endpoint: Endpoint,
    headers: Vec<(String, String)>,
    timeout: Duration,
    attempts: u32,
    stats: Arc<WebhookStats>,
) {
    while let Some(body) = rx.recv().await {
        let mut ok = false;
        for attempt in 0..attempts {
            if attempt > 0 {
                let backoff = Duration::from_millis(200u64 << (attempt - 1).min(5));
                tokio::time::sleep(backoff).await;
            }
            match tokio::time::timeout(timeout, post(&endpoint, &headers, &body)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    ok = true;
                    break;
                }
                Ok(Ok(status)) => {
                    tracing::debug!(status, attempt, "webhook endpoint answered an error")
                }
                Ok(Err(e)) => tracing::debug!(error = %e, attempt, "webhook delivery failed"),
                Err(_) => tracing::debug!(attempt, "webhook delivery timed out"),
            }
        }
        stats.queued_bytes.fetch_sub(body.len(), Ordering::Relaxed);
        if ok {
            stats.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.dropped_failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                endpoint = %format!("{}:{}{}", endpoint.host, endpoint.port, endpoint.path),
                "webhook event dropped after {attempts} attempts"
            );
        }
    }
}

/// One POST; returns the response status code.
async fn post(ep: &Endpoint, headers: &[(String, String)], body: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect((ep.host.as_str(), ep.port)).await?;
    let host = if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: ringsfu\r\n",
        ep.path,
        body.len()
    );
    for (n, v) in headers {
        req.push_str(n);
        req.push_str(": ");
        req.push_str(v);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    // Read just the status line (bounded).
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let status =
        line.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "bad status line")
        })?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("http://127.0.0.1:7777/hook"),
            Some(Endpoint { host: "127.0.0.1".into(), port: 7777, path: "/hook".into() })
        );
        assert_eq!(parse_endpoint("http://h").unwrap().port, 80);
        assert_eq!(parse_endpoint("http://[::1]:9/x").unwrap().host, "::1");
        assert!(parse_endpoint("https://h/x").is_none());
        assert!(parse_endpoint("http://h:notaport/").is_none());
    }
}
