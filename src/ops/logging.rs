//! The process's tracing subscriber: text or JSON lines on stderr, with the level filter behind
//! a reload layer so `SIGHUP` can change it. The lines fit where stderr goes:
//!
//! - a terminal: colours;
//! - the systemd journal (`JOURNAL_STREAM` names stderr's device and inode): no timestamp (the
//!   journal stamps every line itself) and no colour, each line led by its syslog priority
//!   (`<3>` error, `<4>` warn, `<6>` info, `<7>` debug and trace), which journald reads into
//!   `PRIORITY=` (the unit's default `SyslogLevelPrefix=yes`) and strips from the message, so
//!   `journalctl -p warning` shows warnings and errors;
//! - anything else (a file, a pipe): timestamps, no colour.
//!
//! The prefix keeps one output stream (stderr) and needs no socket of its own: the journal's
//! native protocol (tracing-journald) would need the unit to allow writes to
//! /run/systemd/journal/socket and gives nothing `journalctl -p` needs beyond the priority.
//!
//! Libraries that log through the `log` crate reach tracing through a bridge that demotes
//! `webrtc-sdp`'s warnings to debug: they describe remote SDP ringsfu does not need to
//! understand (unknown attribute types), not a problem of the server; SDP ringsfu cannot use
//! is refused with an error of its own. (`a=rtcp-xr`, in every Chromium offer, no longer
//! reaches it: `sdp::parse` reads it itself.)

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Where stderr goes, as far as the log format cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    Terminal,
    Journal,
    Plain,
}

impl Destination {
    /// Where this process's stderr goes: the journal when `journal_stream` (the value of
    /// `JOURNAL_STREAM`, `device:inode`) is stderr itself (a child that inherited the variable
    /// but not the stream must not take its output for the journal).
    pub fn of_stderr(journal_stream: Option<&str>) -> Destination {
        if journal_stream.is_some_and(stderr_is) {
            Destination::Journal
        } else if std::io::stderr().is_terminal() {
            Destination::Terminal
        } else {
            Destination::Plain
        }
    }
}

/// Whether stderr's device and inode are `device:inode` (decimal, as systemd writes them).
fn stderr_is(journal_stream: &str) -> bool {
    let Some((dev, ino)) = journal_stream.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    // SAFETY: all-zero is a valid `stat`; fstat fills it for a valid descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd 2 and a valid pointer; an invalid descriptor only makes fstat fail.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev as u64 == dev && st.st_ino as u64 == ino
}

/// The syslog priority prefix of a level (`sd-daemon(3)`).
pub fn priority_prefix(level: &Level) -> &'static [u8] {
    match *level {
        Level::ERROR => b"<3>",
        Level::WARN => b"<4>",
        Level::INFO => b"<6>",
        Level::DEBUG | Level::TRACE => b"<7>",
    }
}

/// Writes stderr, each event led by its priority prefix. The fmt layer formats an event into a
/// buffer and writes it whole, so one writer is one event (one line).
struct JournalStderr;

/// One event's writer: the prefix goes out with the first write.
struct Prefixed {
    prefix: Option<&'static [u8]>,
}

impl Write for Prefixed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if let Some(p) = self.prefix.take() {
            // One write of prefix and line, so no other thread's line comes between.
            let mut line = Vec::with_capacity(p.len() + buf.len());
            line.extend_from_slice(p);
            line.extend_from_slice(buf);
            err.write_all(&line)?;
        } else {
            err.write_all(buf)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for JournalStderr {
    type Writer = Prefixed;

    fn make_writer(&'a self) -> Prefixed {
        Prefixed { prefix: Some(priority_prefix(&Level::INFO)) }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Prefixed {
        Prefixed { prefix: Some(priority_prefix(meta.level())) }
    }
}

/// The `log` crate's records into tracing, `webrtc-sdp`'s warnings as debug (see the module
/// documentation).
struct LogBridge(tracing_log::LogTracer);

impl LogBridge {
    fn demoted(record: &log::Record<'_>) -> bool {
        record.level() == log::Level::Warn && record.target().starts_with("webrtc_sdp")
    }
}

impl log::Log for LogBridge {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        self.0.enabled(meta)
    }

    fn log(&self, record: &log::Record<'_>) {
        if Self::demoted(record) {
            let r = log::Record::builder()
                .level(log::Level::Debug)
                .target(record.target())
                .args(*record.args())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build();
            self.0.log(&r);
        } else {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// The formatting layer for `format` on `dest`.
fn fmt_layer<S>(format: LogFormat, dest: Destination) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let base = tracing_subscriber::fmt::layer().with_ansi(dest == Destination::Terminal);
    match (format, dest) {
        (LogFormat::Json, Destination::Journal) => {
            base.json().without_time().with_writer(JournalStderr).boxed()
        }
        (LogFormat::Json, _) => base.json().with_writer(std::io::stderr).boxed(),
        (LogFormat::Text, Destination::Journal) => {
            base.without_time().with_writer(JournalStderr).boxed()
        }
        (LogFormat::Text, _) => base.with_writer(std::io::stderr).boxed(),
    }
}

/// Installs the global subscriber (once per process; later calls change nothing and return
/// false). An invalid filter falls back to `info` (the configuration validates it earlier).
pub fn init(level: &str, format: LogFormat) -> bool {
    let dest = Destination::of_stderr(std::env::var("JOURNAL_STREAM").ok().as_deref());
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let subscriber = tracing_subscriber::registry().with(filter).with(fmt_layer(format, dest));
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return false;
    }
    let _ = FILTER.set(handle);
    // The level is decided by the tracing filter (which SIGHUP may change); `log` passes all.
    if log::set_boxed_logger(Box::new(LogBridge(tracing_log::LogTracer::new()))).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    true
}

/// Replaces the level filter of the subscriber [`init`] installed.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("server.log_level: {e}"))?;
    let Some(handle) = FILTER.get() else {
        return Err("logging was not initialised by ringsfu".into());
    };
    handle.reload(filter).map_err(|e| format!("cannot change the log level: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_be_stderr_itself() {
        assert!(!stderr_is("not-a-pair"));
        assert!(!stderr_is("1:x"));
        assert!(!stderr_is("0:0"));
        // SAFETY: as in `stderr_is`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd 2 and a valid pointer.
        if unsafe { libc::fstat(2, &mut st) } == 0 {
            assert!(stderr_is(&format!("{}:{}", st.st_dev, st.st_ino)));
            assert_eq!(
                Destination::of_stderr(Some(&format!("{}:{}", st.st_dev, st.st_ino))),
                Destination::Journal
            );
        }
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority_prefix(&Level::ERROR), b"<3>");
        assert_eq!(priority_prefix(&Level::WARN), b"<4>");
        assert_eq!(priority_prefix(&Level::INFO), b"<6>");
        assert_eq!(priority_prefix(&Level::TRACE), b"<7>");
    }

    #[test]
    fn only_webrtc_sdp_warnings_are_demoted() {
        let rec = |level, target| {
            LogBridge::demoted(
                &log::Record::builder().level(level).target(target).args(format_args!("x")).build(),
            )
        };
        assert!(rec(log::Level::Warn, "webrtc_sdp::attribute_type"));
        assert!(!rec(log::Level::Error, "webrtc_sdp::attribute_type"));
        assert!(!rec(log::Level::Warn, "rustls::conn"));
    }
}
