//! The systemd notification protocol (`sd_notify(3)`): newline-separated `KEY=VALUE` lines in
//! one datagram to the unix socket named by `$NOTIFY_SOCKET`.
//!
//! Hand-written rather than a crate: the protocol is one `sendto` on a unix datagram socket, the
//! only subtlety is the abstract-namespace address (`@name`), and keeping it here avoids a
//! dependency whose only job would be those twenty lines. Every send is best effort: a service
//! manager that went away or stopped reading must not take the server down or block it, so the
//! socket is non-blocking and errors are logged once and dropped.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddr {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract-namespace socket (`$NOTIFY_SOCKET` starting with `@`).
    Abstract(Vec<u8>),
}

impl NotifyAddr {
    /// Parses a `$NOTIFY_SOCKET` value. Only absolute paths and `@abstract` names are valid
    /// (the `vsock:` form systemd also knows is not supported: the result is `None`).
    pub fn parse(value: &str) -> Option<NotifyAddr> {
        if let Some(name) = value.strip_prefix('@') {
            (!name.is_empty()).then(|| NotifyAddr::Abstract(name.as_bytes().to_vec()))
        } else if value.starts_with('/') {
            Some(NotifyAddr::Path(PathBuf::from(value)))
        } else {
            None
        }
    }
}

/// A sender of systemd notifications; a no-op when the process was not started by a service
/// manager that asked for them.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, NotifyAddr)>,
    /// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this process).
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Notifier::from_values(
            socket.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )
    }

    /// Builds a notifier from the three environment values (testable without touching the
    /// process environment). Unusable values are logged and ignored.
    pub fn from_values(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        my_pid: u32,
    ) -> Notifier {
        let target = socket.filter(|s| !s.is_empty()).and_then(|s| {
            let Some(addr) = NotifyAddr::parse(s) else {
                tracing::warn!(notify_socket = s, "NOTIFY_SOCKET is not a path or @name; ignored");
                return None;
            };
            // Non-blocking: a service manager that stops reading (a full socket queue) must not
            // stall the control thread; such a message is dropped.
            match UnixDatagram::unbound().and_then(|s| s.set_nonblocking(true).map(|()| s)) {
                Ok(sock) => Some((sock, addr)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the notification socket");
                    None
                }
            }
        });
        let for_me = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(my_pid));
        let usec = watchdog_usec.and_then(|u| match u.trim().parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(watchdog_usec = u, "WATCHDOG_USEC is not a number; no keep-alives");
                None
            }
        });
        let watchdog = usec.filter(|&u| u > 0 && for_me).map(Duration::from_micros);
        Notifier { target, watchdog, warned: AtomicBool::new(false) }
    }

    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None, watchdog: None, warned: AtomicBool::new(false) }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// The watchdog timeout systemd enforces (`WatchdogSec=`), if any.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (one or more `KEY=VALUE` lines). Best effort.
    pub fn notify(&self, state: &str) {
        let Some((sock, addr)) = &self.target else { return };
        let r = match addr {
            NotifyAddr::Path(p) => sock.send_to(state.as_bytes(), p),
            NotifyAddr::Abstract(name) => send_abstract(sock, name, state.as_bytes()),
        };
        if let Err(e) = r
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(error = %e, "cannot notify the service manager (further errors are silent)");
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=…`.
    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    /// `RELOADING=1` with the monotonic timestamp systemd (253+) wants beside it.
    pub fn reloading(&self) {
        self.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    /// `STOPPING=1`, and ask systemd for `extend` more time to stop (drain) when non-zero.
    pub fn stopping(&self, status: &str, extend: Duration) {
        let mut s = format!("STOPPING=1\nSTATUS={}", one_line(status));
        if !extend.is_zero() {
            s.push_str(&format!("\nEXTEND_TIMEOUT_USEC={}", extend.as_micros()));
        }
        self.notify(&s);
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &[u8], msg: &[u8]) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &[u8], _: &[u8]) -> std::io::Result<usize> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets need Linux"))
}

/// `CLOCK_MONOTONIC` in microseconds (what systemd compares `MONOTONIC_USEC` with).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64).saturating_mul(1_000_000) + (ts.tv_nsec as u64) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socket_addresses() {
        assert_eq!(
            NotifyAddr::parse("/run/systemd/notify"),
            Some(NotifyAddr::Path("/run/systemd/notify".into()))
        );
        assert_eq!(NotifyAddr::parse("@abc"), Some(NotifyAddr::Abstract(b"abc".to_vec())));
        assert_eq!(NotifyAddr::parse("@"), None);
        assert_eq!(NotifyAddr::parse("relative"), None);
        assert_eq!(NotifyAddr::parse("vsock:2:1234"), None);
    }

    #[test]
    fn watchdog_only_for_this_pid() {
        let n = Notifier::from_values(None, Some("3000000"), None, 7);
        assert_eq!(n.watchdog_timeout(), Some(Duration::from_secs(3)));
        let n = Notifier::from_values(None, Some("3000000"), Some("7"), 7);
        assert_eq!(n.watchdog_timeout(), Some(Duration::from_secs(3)));
        let n = Notifier::from_values(None, Some("3000000"), Some("8"), 7);
        assert_eq!(n.watchdog_timeout(), None);
        let n = Notifier::from_values(None, Some("soon"), None, 7);
        assert_eq!(n.watchdog_timeout(), None);
        let n = Notifier::from_values(None, Some("0"), None, 7);
        assert_eq!(n.watchdog_timeout(), None);
    }

    #[test]
    fn sends_datagrams_to_a_path_and_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("ringsfu-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_values(path.to_str(), None, None, 1);
        assert!(n.enabled());
        n.ready("up\nand running");
        let mut buf = [0u8; 256];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=up and running");
        n.reloading();
        let len = rx.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("ringsfu-notify-test-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::from_values(Some(&format!("@{name}")), None, None, 1);
        n.watchdog();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn a_full_socket_queue_drops_instead_of_blocking() {
        let dir = std::env::temp_dir().join(format!("ringsfu-notify-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let _rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_values(path.to_str(), None, None, 1);
        // Far more than any socket queue holds; returns instead of blocking.
        for _ in 0..10_000 {
            n.watchdog();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_socket_is_not_an_error() {
        let n = Notifier::from_values(Some("/nonexistent/ringsfu/notify"), None, None, 1);
        n.ready("x");
        n.ready("y");
        Notifier::disabled().stopping("bye", Duration::from_secs(1));
    }
}
