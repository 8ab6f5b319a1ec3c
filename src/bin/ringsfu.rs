//! The `ringsfu` server binary. With no arguments it serves the embedded development
//! configuration (REST + WebSocket on http://127.0.0.1:4443, secret MY_SECRET).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ringsfu::config::{Config, Sources};

#[derive(Parser, Debug)]
#[command(name = "ringsfu", version, about = "WebRTC SFU speaking the OpenVidu 2 protocol")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the configuration, print it (secrets masked) and exit.
    #[arg(long)]
    check_config: bool,
    /// Listen address of the REST API and WebSocket (server.address).
    #[arg(long, value_name = "IP")]
    address: Option<String>,
    /// Port of the REST API and WebSocket (server.port).
    #[arg(long, value_name = "PORT")]
    port: Option<String>,
    /// REST API secret (server.secret).
    #[arg(long, value_name = "SECRET")]
    secret: Option<String>,
    /// Number of data-plane shards, 0 = one per core (media.shards).
    #[arg(long, value_name = "N")]
    shards: Option<String>,
    /// auto, uring or epoll (media.io_backend).
    #[arg(long, value_name = "BACKEND")]
    io_backend: Option<String>,
    /// Log filter (server.log_level).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// text or json (server.log_format).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Any key: --set section.key=value (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut overrides = Vec::new();
    for (key, v) in [
        ("server.address", &cli.address),
        ("server.port", &cli.port),
        ("server.secret", &cli.secret),
        ("media.shards", &cli.shards),
        ("media.io_backend", &cli.io_backend),
        ("server.log_level", &cli.log_level),
        ("server.log_format", &cli.log_format),
    ] {
        if let Some(v) = v {
            overrides.push((key.to_string(), v.clone()));
        }
    }
    for s in &cli.set {
        match s.split_once('=') {
            Some((k, v)) => overrides.push((k.trim().to_string(), v.to_string())),
            None => {
                eprintln!("ringsfu: invalid --set {s:?}: want section.key=value");
                return ExitCode::from(2);
            }
        }
    }
    let sources = Sources { file: cli.config.clone(), overrides, ..Sources::from_process_env() };
    let cfg = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringsfu: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("# ringsfu effective configuration (secrets masked)");
        print!("{}", cfg.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    // SIGHUP re-reads the same sources (the file may have changed; env and flags have not).
    let reload: ringsfu::ops::ConfigSource = Box::new(move || Config::load(&sources));
    match ringsfu::app::run_with_reload(cfg, Some(reload)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringsfu: {e}");
            ExitCode::from(1)
        }
    }
}
