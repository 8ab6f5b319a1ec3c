//! The process shell: logging, the control-plane thread's runtime, the HTTP(S) listener,
//! signals and graceful shutdown. Everything protocol-shaped lives in the cores it drives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::config::Config;
use crate::control::ControlPlane;
use crate::ops::service::{Reloader, Signals};
use crate::ops::{ConfigSource, Notifier, Ops};

/// A start-up failure of the server (the environment, not the configuration).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
    #[error("{0}")]
    Media(crate::media::MediaEngineError),
    #[error("{0}")]
    Turn(String),
    #[error("cluster: {0}")]
    Cluster(String),
}

/// Installs the global tracing subscriber (once per process; later calls are no-ops). The
/// level can be changed later by a `SIGHUP` reload.
pub fn init_logging(cfg: &Config) {
    crate::ops::logging::init(&cfg.server.log_level, cfg.server.log_format);
}

/// Builds the rustls server configuration from the `[tls]` section.
pub async fn tls_config(cfg: &Config) -> Result<RustlsConfig, AppError> {
    // Invariant: installing the process-wide provider only fails when one is already installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if cfg.tls.self_signed {
        let mut names = vec!["localhost".to_string()];
        let host = cfg.public_host();
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        if !names.contains(&host) {
            names.push(host);
        }
        let ck =
            rcgen::generate_simple_self_signed(names).map_err(|e| AppError::Tls(e.to_string()))?;
        return RustlsConfig::from_pem(
            ck.cert.pem().into_bytes(),
            ck.signing_key.serialize_pem().into_bytes(),
        )
        .await
        .map_err(|e| AppError::Tls(format!("self-signed certificate: {e}")));
    }
    let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) else {
        return Err(AppError::Tls("tls.cert and tls.key are required".into()));
    };
    RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
        AppError::Tls(format!("cannot load {} / {}: {e}", cert.display(), key.display()))
    })
}

/// Runs the server until SIGTERM or SIGINT, then drains and shuts down gracefully. A SIGHUP
/// re-reads only the certificate files (see [`run_with_reload`]).
pub fn run(cfg: Config) -> Result<(), AppError> {
    run_with_reload(cfg, None)
}

/// Like [`run`], with `reload` re-reading the whole configuration on SIGHUP.
pub fn run_with_reload(cfg: Config, reload: Option<ConfigSource>) -> Result<(), AppError> {
    init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ringsfu-control")
        .build()
        .map_err(AppError::Runtime)?;
    rt.block_on(serve(Arc::new(cfg), reload))
}

async fn serve(cfg: Arc<Config>, reload: Option<ConfigSource>) -> Result<(), AppError> {
    let addr = cfg.listen_addr();
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| AppError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| AppError::Bind { addr, source })?;
    let control = ControlPlane::new(cfg.clone());
    // TURN's configuration first: with the media engine on, the media shards host its UDP side.
    let mut turn_setup = crate::turn::serve::TurnSetup::new(&cfg, Some(control.turn_secrets()))
        .map_err(|e| AppError::Turn(e.to_string()))?;
    let hosted = match turn_setup.as_mut() {
        Some(t) if cfg.media.enabled => {
            Some(t.hosted().map_err(|e| AppError::Turn(e.to_string()))?)
        }
        _ => None,
    };
    let turn_hosted = hosted.is_some();
    let media = start_media(&cfg, &control, hosted)?;
    let app = control.router();
    let handle: Handle<SocketAddr> = Handle::new();
    if cfg.cluster.enabled() {
        start_cluster(&cfg, &control, handle.clone())?;
    }
    let tls = if cfg.tls.enabled { Some(tls_config(&cfg).await?) } else { None };
    let turn = start_turn(&cfg, tls.as_ref(), turn_setup, turn_hosted).await?;
    tracing::info!(
        version = crate::OPENVIDU_VERSION,
        listen = %addr,
        public_url = %cfg.public_url(),
        tls = cfg.tls.enabled,
        "ringsfu control plane listening"
    );

    if let Some(t) = &turn {
        control.metrics().register_turn(t.stats_cells());
        // Standalone TURN shards (media off): their packet and loop counters, labelled kind="turn".
        control.metrics().register_turn_shards(t.shard_stats());
    }

    let mut ops = Ops::new(cfg.clone(), control.clone(), Notifier::from_env());
    // The watchdog withholds keep-alives when a media or TURN shard's loop, or the TURN
    // TCP/TLS thread, stops turning.
    let mut watched = media.as_ref().map(|m| m.shard_stats()).unwrap_or_default();
    watched.extend(turn.as_ref().map(|t| t.watched()).unwrap_or_default());
    ops.watch_shards(watched);
    // Before anything can send SIGHUP: its default action would kill the process.
    let signals = Signals::install();
    ops.spawn_background();
    let reloader = Reloader::new((*cfg).clone(), reload, tls.clone());
    spawn_lifecycle(ops, signals, reloader, handle.clone());

    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let result = match tls {
        Some(tls) => {
            axum_server::from_tcp_rustls(listener, tls)
                .map_err(AppError::Serve)?
                .handle(handle)
                .serve(make)
                .await
        }
        None => {
            axum_server::from_tcp(listener)
                .map_err(AppError::Serve)?
                .handle(handle)
                .serve(make)
                .await
        }
    };
    if let Some(turn) = turn {
        turn.shutdown();
    }
    result.map_err(AppError::Serve)?;
    if let Some(m) = media {
        m.shutdown();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Joins the cluster (`[cluster]`) and serves the internal listener other nodes forward to
/// (plain HTTP, every request signed; see `control::cluster`).
fn start_cluster(
    cfg: &Arc<Config>,
    control: &ControlPlane,
    handle: Handle<SocketAddr>,
) -> Result<(), AppError> {
    let Some(addr) = cfg.cluster.internal_addr() else {
        return Err(AppError::Cluster("cluster.internal_address is not ip:port".into()));
    };
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| AppError::Bind { addr, source })?;
    listener.set_nonblocking(true).map_err(|source| AppError::Bind { addr, source })?;
    control.attach_cluster().map_err(|e| AppError::Cluster(e.to_string()))?;
    let internal = control.internal_router().into_make_service_with_connect_info::<SocketAddr>();
    let server = axum_server::from_tcp(listener).map_err(AppError::Serve)?.handle(handle);
    tokio::spawn(async move {
        if let Err(e) = server.serve(internal).await {
            tracing::error!(error = %e, "cluster internal listener failed");
        }
    });
    tracing::info!(
        node = %cfg.cluster.node_id(),
        internal = %addr,
        "cluster node: sessions owned through Redis, internal listener up"
    );
    Ok(())
}

/// Starts the media shards (hosting TURN's UDP side when `turn` is given) and attaches them to
/// the control plane (`[media] enabled`).
fn start_media(
    cfg: &Arc<Config>,
    control: &ControlPlane,
    turn: Option<crate::turn::serve::HostedTurnFactory>,
) -> Result<Option<Arc<crate::media::MediaEngine>>, AppError> {
    if !cfg.media.enabled {
        tracing::warn!("media disabled ([media] enabled = false): media methods answer errors");
        return Ok(None);
    }
    let engine =
        crate::media::MediaEngine::start_with_turn(cfg.clone(), turn).map_err(AppError::Media)?;
    control.attach_media(engine.clone());
    if cfg.recording.enabled {
        let (tx, rx) = tokio::sync::mpsc::channel(crate::control::recording::EVENT_QUEUE);
        let composer =
            crate::control::recording::composed::find_composer(&cfg.recording.composer_path);
        match &composer {
            Some(p) => tracing::info!(composer = %p.display(), "COMPOSED recording available"),
            None => tracing::info!("no ringsfu-composer installed: COMPOSED recording answers 501"),
        }
        let backend =
            crate::control::recording::native::NativeRecorder::new(engine.clone(), tx, composer);
        control.attach_recording(Arc::new(backend), rx);
    }
    Ok(Some(engine))
}

/// The built-in TURN server (`[turn]`), checking the credentials the control plane reloads;
/// TURN over TLS uses the HTTPS certificate (`[tls]`).
/// `hosted`: the media shards serve TURN over UDP; otherwise TURN shards of its own do.
async fn start_turn(
    cfg: &Arc<Config>,
    https: Option<&RustlsConfig>,
    setup: Option<crate::turn::serve::TurnSetup>,
    hosted: bool,
) -> Result<Option<crate::turn::serve::TurnService>, AppError> {
    let Some(setup) = setup else { return Ok(None) };
    let tls = match https {
        _ if cfg.turn.tls_port == 0 => None,
        Some(t) => Some(t.get_inner()),
        None => Some(tls_config(cfg).await?.get_inner()),
    };
    setup.start(tls, hosted).map(Some).map_err(|e| AppError::Turn(e.to_string()))
}

/// READY=1 once the listener accepts, then signals: SIGHUP reloads, SIGTERM/SIGINT drain and
/// stop the HTTP server.
fn spawn_lifecycle(
    ops: Ops,
    mut signals: Signals,
    mut reloader: Reloader,
    handle: Handle<SocketAddr>,
) {
    tokio::spawn(async move {
        if handle.listening().await.is_none() {
            return; // the server failed to start; `serve` reports why
        }
        ops.ready();
        ops.run_until_stopped(&mut signals, &mut reloader).await;
        handle.graceful_shutdown(Some(Duration::from_secs(5)));
    });
}
