//! The process's tracing subscriber: text or JSON lines on stderr (journald adds the time and
//! unit), with the level filter behind a reload layer so `SIGHUP` can change it.

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;

static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber (once per process; later calls change nothing and return
/// false). An invalid filter falls back to `info` (the configuration validates it earlier).
pub fn init(level: &str, format: LogFormat) -> bool {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let base = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Json => base.json().boxed(),
        LogFormat::Text => base.boxed(),
    };
    let installed = tracing_subscriber::registry().with(filter).with(fmt).try_init().is_ok();
    if installed {
        let _ = FILTER.set(handle);
    }
    installed
}

/// Replaces the level filter of the subscriber [`init`] installed.
pub fn set_level(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("server.log_level: {e}"))?;
    let Some(handle) = FILTER.get() else {
        return Err("logging was not initialised by ringsfu".into());
    };
    handle.reload(filter).map_err(|e| format!("cannot change the log level: {e}"))
}
