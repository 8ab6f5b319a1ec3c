//! The life cycle around the HTTP server: readiness, periodic status, watchdog keep-alives,
//! `SIGHUP` reload and the `SIGTERM` drain.
//!
//! The process shell (`app.rs`) does, in order:
//! 1. build the [`ControlPlane`] and an [`Ops`] with the [`Notifier`] from the environment;
//! 2. start the media shards (`ControlPlane::attach_media` registers them for `/metrics`) and
//!    give their [`ShardStats`] to [`Ops::watch_shards`] (watchdog);
//! 3. [`Signals::install`] before anything can send `SIGHUP` (its default action kills);
//! 4. [`Ops::spawn_background`] (status lines and watchdog keep-alives);
//! 5. [`Ops::ready`] once every listener is accepting;
//! 6. [`Ops::run_until_stopped`], which reloads on `SIGHUP` and returns after the drain that the
//!    first `SIGTERM`/`SIGINT` starts; then the shell stops the HTTP server.
//!
//! Reload (`SIGHUP`, `systemctl reload`): the configuration is read again from the same sources;
//! the TLS certificate and key files are re-read (open connections keep theirs), the log level
//! and the TURN credentials ([`crate::secrets`]) are replaced. Keys that need a restart are
//! named in a warning and keep their running value. A configuration that does not load changes
//! nothing. Sessions are never touched.
//!
//! Drain (`SIGTERM`, `systemctl stop`): `STOPPING=1` (with `EXTEND_TIMEOUT_USEC` covering the
//! drain), then [`ControlPlane::begin_drain`]: `/health` answers 503, joinRoom and new
//! sessions/connections are refused, every participant gets `participantEvicted` with reason
//! `openviduServerStopped`. Media keeps flowing until everyone has left or
//! `[server] drain_timeout` is up (a second `SIGTERM`/`SIGINT` cuts it short); then the
//! remaining participants are evicted, sessions closed, and the process exits.

use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::time::Instant;

use super::metrics::ControlGauges;
use super::notify::Notifier;
use super::watchdog::Watchdog;
use crate::config::{Config, ConfigError};
use crate::control::ControlPlane;
use crate::secrets::TurnSecrets;
use crate::shard::ShardStats;

/// Reads the configuration again (for `SIGHUP`); the binary passes a closure over its original
/// sources (file, environment, flags).
pub type ConfigSource = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// How often the status line is recomputed (sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);
/// How often the drain checks whether everyone has left.
const DRAIN_POLL: Duration = Duration::from_millis(200);
/// Time asked from systemd on top of `drain_timeout` for the final shutdown: the recordings
/// being written out (`control::RECORDINGS_AT_SHUTDOWN`) and a margin.
const STOP_MARGIN: Duration =
    Duration::from_secs(5 + crate::control::RECORDINGS_AT_SHUTDOWN.as_secs());

/// The operations side of the process.
pub struct Ops {
    cfg: Arc<Config>,
    control: ControlPlane,
    notifier: Arc<Notifier>,
    shards: Vec<Arc<ShardStats>>,
    stall_limit: Duration,
}

impl Ops {
    pub fn new(cfg: Arc<Config>, control: ControlPlane, notifier: Notifier) -> Ops {
        Ops {
            cfg,
            control,
            notifier: Arc::new(notifier),
            shards: Vec::new(),
            stall_limit: Watchdog::DEFAULT_STALL_LIMIT,
        }
    }

    /// The shards whose loops the watchdog watches: keep-alives are withheld when one stops
    /// turning. Call before [`Ops::spawn_background`]. (Their metrics are registered with
    /// [`super::Metrics::register_shards`], which `ControlPlane::attach_media` does.)
    pub fn watch_shards(&mut self, shards: Vec<Arc<ShardStats>>) {
        self.shards = shards;
    }

    /// Overrides the watchdog's stall limit (default [`Watchdog::DEFAULT_STALL_LIMIT`]).
    pub fn set_stall_limit(&mut self, limit: Duration) {
        self.stall_limit = limit;
    }

    pub fn notifier(&self) -> Arc<Notifier> {
        self.notifier.clone()
    }

    /// Spawns the status-line task and, when systemd asked for one, the watchdog task.
    /// The status task is the one writer of `STATUS=` lines while serving: the serving counts,
    /// or what the watchdog reports while a shard is stuck.
    pub fn spawn_background(&self) {
        let control = self.control.clone();
        let notifier = self.notifier.clone();
        let stuck: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        if notifier.enabled() {
            let stuck = stuck.clone();
            tokio::spawn(async move {
                let mut last = String::new();
                let mut tick = tokio::time::interval(STATUS_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let reported = stuck.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let line = reported.unwrap_or_else(|| status_line(&control.gauges()));
                    if line != last {
                        notifier.status(&line);
                        last = line;
                    }
                }
            });
        }
        let Some(timeout) = self.notifier.watchdog_timeout() else { return };
        let every = (timeout / 2).max(Duration::from_millis(10));
        let mut watchdog = Watchdog::new(self.shards.clone()).with_stall_limit(self.stall_limit);
        let notifier = self.notifier.clone();
        tracing::info!(
            interval_ms = every.as_millis() as u64,
            shards = watchdog.len(),
            "systemd watchdog keep-alives enabled"
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut stuck_logged = false;
            loop {
                tick.tick().await;
                match watchdog.check(std::time::Instant::now()) {
                    Ok(()) => {
                        if stuck_logged {
                            tracing::warn!("every shard turns again; watchdog keep-alives resume");
                            *stuck.lock().unwrap_or_else(|p| p.into_inner()) = None;
                            stuck_logged = false;
                        }
                        notifier.watchdog();
                    }
                    Err(s) => {
                        if !stuck_logged {
                            tracing::error!(
                                shard = s.shard,
                                stalled_ms = s.for_.as_millis() as u64,
                                "shard event loop stuck; withholding watchdog keep-alives"
                            );
                            *stuck.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                                "Shard {} stuck for {} ms; watchdog keep-alives withheld",
                                s.shard,
                                s.for_.as_millis()
                            ));
                            stuck_logged = true;
                        }
                    }
                }
            }
        });
    }

    /// `READY=1` with the first status line.
    pub fn ready(&self) {
        self.notifier.ready(&status_line(&self.control.gauges()));
    }

    /// Serves signals: reloads on `SIGHUP`; on the first `SIGTERM`/`SIGINT` drains, evicts the
    /// rest and returns (the caller then stops the HTTP server).
    pub async fn run_until_stopped(&self, signals: &mut Signals, reloader: &mut Reloader) {
        while signals.next().await == Sig::Hup {
            self.reload(reloader).await;
        }
        let timeout = Duration::from_secs(self.cfg.server.drain_timeout);
        self.notifier.stopping("Draining before stop", timeout + STOP_MARGIN);
        let told = self.control.begin_drain();
        tracing::info!(
            participants = told,
            drain_timeout_s = timeout.as_secs(),
            "draining: new joins refused, participants told (openviduServerStopped)"
        );
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.control.gauges().participants;
            if left == 0 {
                tracing::info!("drain complete: every participant has left");
                break;
            }
            if Instant::now() >= deadline {
                tracing::info!(participants = left, "drain timeout; evicting the rest");
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(DRAIN_POLL) => {}
                s = signals.next() => match s {
                    Sig::Hup => self.reload(reloader).await,
                    Sig::Stop => {
                        tracing::info!(participants = left, "second stop signal; evicting the rest now");
                        break;
                    }
                },
            }
        }
        self.notifier.status("Stopping");
        self.control.shutdown().await;
        self.control.leave_cluster().await;
    }

    async fn reload(&self, reloader: &mut Reloader) {
        self.notifier.reloading();
        let ok = match reloader.reload(&self.control).await {
            Ok(summary) => {
                tracing::info!(applied = %summary, "configuration reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed; the running configuration stays");
                false
            }
        };
        self.control.metrics().reload(ok);
        self.notifier.ready(&status_line(&self.control.gauges()));
    }
}

/// The `STATUS=` text.
pub fn status_line(g: &ControlGauges) -> String {
    let verb = if g.draining { "Draining" } else { "Serving" };
    format!(
        "{verb}: {} sessions, {} participants, {} publishers, {} subscribers",
        g.sessions, g.participants, g.publishers, g.subscribers
    )
}

/// A signal the service reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// `SIGHUP`: reload.
    Hup,
    /// `SIGTERM` or `SIGINT`: drain and stop.
    Stop,
}

/// The installed signal handlers.
pub struct Signals {
    handlers: Option<(Signal, Signal, Signal)>,
}

impl Signals {
    /// Installs the `SIGHUP`, `SIGTERM` and `SIGINT` handlers (inside a tokio runtime). Without
    /// them (an error is logged) the signals keep their default action.
    pub fn install() -> Signals {
        let r = (|| {
            Ok::<_, std::io::Error>((
                signal(SignalKind::hangup())?,
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
            ))
        })();
        match r {
            Ok(h) => Signals { handlers: Some(h) },
            Err(e) => {
                tracing::error!(error = %e, "cannot install signal handlers; no reload or drain");
                Signals { handlers: None }
            }
        }
    }

    /// The next signal.
    pub async fn next(&mut self) -> Sig {
        let Some((hup, term, int)) = &mut self.handlers else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = hup.recv() => Sig::Hup,
            _ = term.recv() => Sig::Stop,
            _ = int.recv() => Sig::Stop,
        }
    }
}

/// Applies a re-read configuration to the running process.
pub struct Reloader {
    source: Option<ConfigSource>,
    current: Config,
    tls: Option<RustlsConfig>,
}

/// Keys a reload applies; every other changed key needs a restart.
const RELOADABLE: &[&str] = &[
    "server.log_level",
    "tls.cert",
    "tls.key",
    "turn.users",
    "turn.static_auth_secret",
    "turn.realm",
];

impl Reloader {
    /// `source` re-reads the configuration (None: only re-read the certificate files);
    /// `tls` is the running server's TLS configuration, if it serves HTTPS.
    pub fn new(current: Config, source: Option<ConfigSource>, tls: Option<RustlsConfig>) -> Self {
        Reloader { source, current, tls }
    }

    /// Reloads; returns what was applied, or why nothing was.
    pub async fn reload(&mut self, control: &ControlPlane) -> Result<String, String> {
        let new = match &self.source {
            Some(load) => load().map_err(|e| e.to_string())?,
            None => self.current.clone(),
        };
        let mut applied = Vec::new();
        // TLS first: a broken certificate aborts the reload before anything else changes.
        if let Some(tls) = &self.tls
            && new.tls.enabled
            && !new.tls.self_signed
        {
            let (Some(cert), Some(key)) = (&new.tls.cert, &new.tls.key) else {
                return Err("tls.cert and tls.key are required".into());
            };
            tls.reload_from_pem_file(cert, key).await.map_err(|e| {
                format!("TLS certificate {} / key {}: {e}", cert.display(), key.display())
            })?;
            applied.push("tls certificate");
        }
        if new.server.log_level != self.current.server.log_level {
            super::logging::set_level(&new.server.log_level)?;
            applied.push("log level");
        }
        if control.turn_secrets().store(TurnSecrets::from_config(&new)) {
            applied.push("turn credentials");
        }
        let restart = changed_keys(&self.current, &new)
            .into_iter()
            .filter(|k| !RELOADABLE.contains(&k.as_str()))
            .collect::<Vec<_>>();
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "changed keys need a restart; running values kept");
        }
        // Keep the restart-only keys at their running values for the next comparison.
        let mut kept = self.current.clone();
        kept.server.log_level = new.server.log_level.clone();
        kept.tls.cert = new.tls.cert.clone();
        kept.tls.key = new.tls.key.clone();
        kept.turn.users = new.turn.users.clone();
        kept.turn.static_auth_secret = new.turn.static_auth_secret.clone();
        kept.turn.realm = new.turn.realm.clone();
        self.current = kept;
        Ok(if applied.is_empty() { "nothing changed".into() } else { applied.join(", ") })
    }
}

/// `section.key` of every value that differs between two configurations.
pub fn changed_keys(a: &Config, b: &Config) -> Vec<String> {
    let (Ok(ta), Ok(tb)) = (toml::Table::try_from(a), toml::Table::try_from(b)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let empty = toml::Table::new();
    let mut sections: Vec<&String> = ta.keys().chain(tb.keys()).collect();
    sections.sort();
    sections.dedup();
    for s in sections {
        let sa = ta.get(s).and_then(|v| v.as_table()).unwrap_or(&empty);
        let sb = tb.get(s).and_then(|v| v.as_table()).unwrap_or(&empty);
        let mut keys: Vec<&String> = sa.keys().chain(sb.keys()).collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            if sa.get(k) != sb.get(k) {
                out.push(format!("{s}.{k}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_keys_names_each_difference() {
        let a = Config::default();
        let mut b = a.clone();
        b.server.port = 1;
        b.turn.users = vec!["a:b".into()];
        b.tls.cert = Some("/x".into());
        assert_eq!(changed_keys(&a, &b), vec!["server.port", "tls.cert", "turn.users"]);
        assert!(changed_keys(&a, &a).is_empty());
    }

    #[test]
    fn status_line_counts() {
        let g = ControlGauges { sessions: 1, participants: 2, publishers: 1, ..Default::default() };
        assert_eq!(
            status_line(&g),
            "Serving: 1 sessions, 2 participants, 1 publishers, 0 subscribers"
        );
        let g = ControlGauges { draining: true, ..g };
        assert!(status_line(&g).starts_with("Draining: "));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reload_swaps_turn_credentials_and_keeps_restart_keys() {
        let cfg = Config::default();
        let control = ControlPlane::new(Arc::new(cfg.clone()));
        let next = std::sync::Mutex::new(cfg.clone());
        let mut changed = cfg.clone();
        changed.turn.static_auth_secret = "rotated".into();
        changed.server.port = 9999;
        *next.lock().unwrap() = changed;
        let source: ConfigSource = Box::new(move || Ok(next.lock().unwrap().clone()));
        let mut r = Reloader::new(cfg, Some(source), None);
        let summary = r.reload(&control).await.unwrap();
        assert_eq!(summary, "turn credentials");
        assert_eq!(control.turn_secrets().load().rest_secret, "rotated");
        // The port kept its running value: a second reload reports nothing new.
        assert_eq!(r.reload(&control).await.unwrap(), "nothing changed");
        assert_eq!(r.current.server.port, 4443);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failing_source_changes_nothing() {
        let cfg = Config::default();
        let control = ControlPlane::new(Arc::new(cfg.clone()));
        let source: ConfigSource =
            Box::new(|| Err(ConfigError { key: "server.port".into(), message: "broken".into() }));
        let mut r = Reloader::new(cfg, Some(source), None);
        let e = r.reload(&control).await.unwrap_err();
        assert!(e.contains("server.port"), "{e}");
        assert_eq!(control.turn_secrets().generation(), 0);
    }
}
