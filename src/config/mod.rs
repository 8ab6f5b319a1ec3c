//! Configuration: embedded defaults, a TOML file, environment variables and CLI flags, in that
//! order of precedence (each later source overrides the earlier ones key by key).
//!
//! Environment variables come in two families:
//! - the OpenVidu 2 names where one exists (`OPENVIDU_SECRET`, `HTTPS_PORT`,
//!   `DOMAIN_OR_PUBLIC_IP`, `OPENVIDU_WEBHOOK*`, ... — see [`OPENVIDU_ENV`]);
//! - every key as `RINGSFU_<SECTION>_<KEY>`, e.g. `RINGSFU_MEDIA_SHARDS=2` or
//!   `RINGSFU_MEDIA_PORT_BASE=40000`. A `RINGSFU_` variable wins over its OpenVidu twin.
//!
//! [`Config::validate`] checks cross-field rules; every error names the offending key, and the
//! binary prints it on one line and exits with code 2.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub mod endpoint;
mod env;
mod machine;
mod ports;

pub use env::OPENVIDU_ENV;
pub use machine::Machine;
pub use ports::{PortPlan, PortRange, Proto};

/// The whole effective configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub media: MediaConfig,
    pub turn: TurnConfig,
    pub webhook: WebhookConfig,
    pub sessions: SessionsConfig,
    pub recording: RecordingConfig,
    pub cluster: ClusterConfig,
    /// The machine, read once when this configuration was made ([`Machine::detect`]): what
    /// `media.shards = 0` and the wildcard bind resolve against. Not a configuration key.
    #[serde(skip)]
    pub machine: Machine,
}

/// `[server]`: the HTTP(S) listener of the REST API and the WebSocket signaling.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the REST API and WebSocket listen on.
    pub address: IpAddr,
    /// Port of the REST API and WebSocket (OpenVidu: `HTTPS_PORT`).
    pub port: u16,
    /// Host name or address clients use to reach this server (OpenVidu: `DOMAIN_OR_PUBLIC_IP`).
    /// Empty: the listen address.
    pub public_host: String,
    /// Public URL override (OpenVidu: `OPENVIDU_PUBLICURL`), e.g. `https://media.example.org`.
    /// Empty: derived from scheme, `public_host` and `port`.
    pub public_url: String,
    /// Basic-auth secret of the REST API (OpenVidu: `OPENVIDU_SECRET`).
    pub secret: String,
    /// Largest accepted REST request body, bytes.
    pub max_body_bytes: usize,
    /// Largest accepted WebSocket message, bytes.
    pub max_ws_message_bytes: usize,
    /// Most concurrent WebSocket connections; further upgrades get 503.
    pub max_ws_connections: usize,
    /// Seconds without a `ping` after which a participant is considered gone (the browser pings
    /// every 5 s; OpenVidu's watchdog closes after 3 missed pings plus grace).
    pub ping_timeout: u64,
    /// Seconds a participant whose WebSocket closed keeps its place, waiting for the browser to
    /// re-attach with `connect` (kurento-jsonrpc: 10 s); then it is evicted with
    /// `networkDisconnect`. Also the delay after which the server closes the socket of an evicted
    /// participant that did not close it itself. 0 = evict at once.
    pub reconnection_window: u64,
    /// Serve the demo page at `/` and its token endpoint `POST /demo/token`, which creates
    /// sessions and connections WITHOUT the secret: for trying ringsfu out, off in production.
    pub demo: bool,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace` or a tracing directive).
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Seconds a SIGTERM drain lasts at most: new joins are refused, participants are told
    /// (`participantEvicted`, reason `openviduServerStopped`) and media keeps flowing until they
    /// have all left or this time is up. 0 = stop at once.
    pub drain_timeout: u64,
    /// Serve `/metrics` without the REST API's Basic auth (for a scraper on a private network).
    pub metrics_public: bool,
}

/// `[tls]`: HTTPS for the REST API and WebSocket (rustls).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve HTTPS / WSS instead of plain HTTP / WS (OpenVidu: `FORCE_PLAIN_HTTP` inverted).
    pub enabled: bool,
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// Generate a self-signed certificate for `public_host` at start-up (local HTTPS).
    pub self_signed: bool,
}

/// `[media]`: the UDP data plane.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Start the media shards (false: signaling only; media methods answer errors).
    pub enabled: bool,
    /// Address the media sockets bind to.
    pub bind_address: IpAddr,
    /// Addresses advertised as ICE host candidates (IPv4 and IPv6). Empty: `bind_address`, or
    /// every interface address when bound to the wildcard, led by the addresses
    /// `server.public_host` resolves to when it is a host name.
    pub public_ips: Vec<IpAddr>,
    /// Data-plane threads; 0 = one per CPU this process may use (resolved once when the
    /// configuration loads; `--check-config` prints the resolved count).
    pub shards: usize,
    /// Shard `i` listens on UDP port `port_base + i`.
    pub port_base: u16,
    /// `auto`, `uring` or `epoll`.
    pub io_backend: IoBackend,
    /// Pin each shard thread to a core.
    pub pin_threads: bool,
    /// Send media (and hosted TURN listener) datagrams with the don't-fragment bit and no
    /// path-MTU discovery: ~6% less shard CPU at large fanouts on IPv4, but a datagram above the
    /// path MTU is lost instead of fragmented.
    pub dont_fragment: bool,
    /// Subscriber legs a session keeps on its home shard (where its publishers are) before
    /// each new leg goes to the shard with the fewest peers, which receives the publisher's
    /// packets through the shard mesh. Small sessions stay on one shard (no cross-shard copy);
    /// large ones use every core. 0: every leg on the least-loaded shard.
    pub spread_threshold: usize,
    /// Ask openvidu-browser publishers for simulcast (three encodings, `rdiv4`/`rdiv2`/`rdiv1`)
    /// and choose per subscriber what it receives from its bandwidth estimate. `joinRoom` then
    /// says `mediaServer: "mediasoup"` (the browser only sends simulcast, and subscribes with
    /// server offers, for that value) and `videoSimulcast: true`. OpenVidu:
    /// `OPENVIDU_WEBRTC_SIMULCAST`.
    pub simulcast: bool,
}

/// `[turn]`: the built-in TURN server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    pub enabled: bool,
    /// UDP and TCP port (OpenVidu: `COTURN_PORT`).
    pub port: u16,
    /// TLS port; 0 = no TURN over TLS.
    pub tls_port: u16,
    /// Address handed to browsers as `coturnIp` (OpenVidu: `COTURN_IP`). Empty: the public host.
    pub public_ip: String,
    pub realm: String,
    /// Static long-term users, `"name:password"`.
    pub users: Vec<String>,
    /// Shared secret of the TURN REST API scheme (coturn `use-auth-secret`,
    /// OpenVidu: `COTURN_SHARED_SECRET_KEY`). Empty: the server secret.
    pub static_auth_secret: String,
    /// Seconds the credentials handed out in `joinRoom` stay valid.
    pub credential_ttl: u64,
    pub allow_loopback_peers: bool,
    /// CIDR ranges allowed as peers even though the default policy denies them.
    pub allowed_peer_ranges: Vec<String>,
    /// CIDR ranges denied as peers in addition to the default policy.
    pub denied_peer_ranges: Vec<String>,
    pub max_allocations: usize,
    pub max_allocations_per_user: usize,
    /// Relayed bytes per second per user; 0 = unlimited.
    pub max_user_bandwidth: u64,
    /// Local addresses relayed transport addresses are bound on (and advertised as); each
    /// brings `relay_port_min..=relay_port_max`, so N addresses serve N times the allocations.
    /// Empty: `media.bind_address` when it is a specific address, else `media.public_ips`.
    pub relay_ips: Vec<IpAddr>,
    /// Lowest UDP port of a relayed transport address.
    pub relay_port_min: u16,
    /// Highest UDP port of a relayed transport address.
    pub relay_port_max: u16,
    /// With the media engine running, a datagram an allocation relays to ringsfu's own media
    /// port on the same shard is handed to the media core inside the process (both ways), not
    /// sent through the kernel. `false`: always through the kernel (for comparison).
    pub deliver_in_process: bool,
    /// With the media engine on: media shard `i` also serves TURN over UDP on a port of its
    /// own, `media.port_base + shards + i` (right after the media ports), and joinRoom lists the
    /// session's shard port as the first TURN server, so a browser's allocation lands on the
    /// shard of its session, where relaying to the SFU stays in the process and costs no
    /// socket. The shared `port` stays in the list after it (a browser that cannot reach the
    /// shard port still has it).
    pub shard_ports: bool,
}

/// `[webhook]`: OpenVidu webhook delivery.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// OpenVidu: `OPENVIDU_WEBHOOK`.
    pub enabled: bool,
    /// OpenVidu: `OPENVIDU_WEBHOOK_ENDPOINT` (`http://` or `https://` URL).
    pub endpoint: String,
    /// PEM file of extra CA certificates an `https://` endpoint's certificate may chain to
    /// (a private receiver), trusted besides the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// OpenVidu: `OPENVIDU_WEBHOOK_HEADERS`, each `"Name: value"`.
    pub headers: Vec<String>,
    /// OpenVidu: `OPENVIDU_WEBHOOK_EVENTS`; the event names delivered.
    pub events: Vec<String>,
    /// Delivery attempts per event (first try included).
    pub max_attempts: u32,
    /// Seconds before one delivery attempt times out.
    pub timeout: u64,
    /// Events queued for delivery before new ones are dropped (and counted).
    pub queue_size: usize,
}

/// `[sessions]`: OpenVidu session defaults (visible in `GET /openvidu/api/config`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// OpenVidu: `OPENVIDU_STREAMS_FORCED_VIDEO_CODEC`.
    pub forced_video_codec: String,
    /// OpenVidu: `OPENVIDU_STREAMS_ALLOW_TRANSCODING`.
    pub allow_transcoding: bool,
    /// kbps, OpenVidu: `OPENVIDU_STREAMS_VIDEO_MAX_RECV_BANDWIDTH` and siblings.
    pub video_max_recv_bandwidth: u32,
    pub video_min_recv_bandwidth: u32,
    pub video_max_send_bandwidth: u32,
    pub video_min_send_bandwidth: u32,
    /// Seconds between sweeps of sessions nobody joined (`OPENVIDU_SESSIONS_GARBAGE_INTERVAL`);
    /// 0 disables the sweep.
    pub garbage_interval: u64,
    /// Age in seconds after which an unjoined session is swept
    /// (`OPENVIDU_SESSIONS_GARBAGE_THRESHOLD`).
    pub garbage_threshold: u64,
    /// Default `customIceServers` of every connection, as OpenVidu's
    /// `OPENVIDU_WEBRTC_ICE_SERVERS` strings (`url=turn:host:3478,username=u,credential=p`).
    pub ice_servers: Vec<String>,
    /// Most sessions alive at once; creating one more answers 503.
    pub max_sessions: usize,
    /// Most connections (pending or active) per session; one more answers 503.
    pub max_connections_per_session: usize,
}

/// `[recording]`: OpenVidu's recording module (`/openvidu/api/recordings`). Recording is only
/// reported on when this says so AND a recording backend is attached to the control plane.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RecordingConfig {
    /// OpenVidu: `OPENVIDU_RECORDING`.
    pub enabled: bool,
    /// Directory of the recordings, one sub-directory per recording (OpenVidu:
    /// `OPENVIDU_RECORDING_PATH`). A relative path is relative to the working directory.
    pub path: String,
    /// Serve `/openvidu/recordings/**` without Basic auth (OpenVidu:
    /// `OPENVIDU_RECORDING_PUBLIC_ACCESS`).
    pub public_access: bool,
    /// Who gets `recordingStarted` / `recordingStopped`: `none`, `moderator`,
    /// `publisher_moderator` or `all` (OpenVidu: `OPENVIDU_RECORDING_NOTIFICATION`).
    pub notification: String,
    /// Seconds a recorded session survives its last participant (or a recording started with no
    /// publisher waits for one) before the recording stops (OpenVidu:
    /// `OPENVIDU_RECORDING_AUTOSTOP_TIMEOUT`).
    pub autostop_timeout: u64,
    /// The COMPOSED recording program (`ringsfu-composer`, built with `--features composer`);
    /// empty: the one next to the ringsfu executable, if any (without one, COMPOSED answers
    /// 501). Must be an executable file when set.
    pub composer_path: String,
}

/// `[cluster]`: several nodes as one deployment (see `control::cluster`). Off while `redis_url`
/// is empty: the node is alone and needs nothing more.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS, the system's trust
    /// store). Redis holds only which node owns which session and which nodes are alive.
    pub redis_url: String,
    /// This node's name in the cluster; empty: its `internal_address`. Unique per node.
    pub node_id: String,
    /// `ip:port` of the internal HTTP listener the other nodes call (forwarded REST requests);
    /// an address they reach, not a wildcard. Required with `redis_url`.
    pub internal_address: String,
    /// Shared by every node: signs each internal request (HMAC-SHA256). At least 16 characters;
    /// required with `redis_url`.
    pub internal_secret: String,
    /// Seconds a session's ownership lasts in Redis without being refreshed (refreshed every
    /// second). A node cut off from Redis for longer closes its sessions, since another node
    /// may own them by then (2..=300).
    pub lease: u64,
    /// Seconds a node's record lasts without being refreshed (every second): how soon a dead
    /// node is known dead (2..=60, below `lease`).
    pub node_ttl: u64,
    /// Subscriber legs this node hosts before new subscriber legs of its sessions go to other
    /// nodes (the least loaded), fed by one relay leg per stream and node; 0: never (a
    /// session's media stays on its owner).
    pub spill_after: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis_url: String::new(),
            node_id: String::new(),
            internal_address: String::new(),
            internal_secret: String::new(),
            lease: 10,
            node_ttl: 3,
            spill_after: 0,
        }
    }
}

impl ClusterConfig {
    /// Whether this node is part of a cluster.
    pub fn enabled(&self) -> bool {
        !self.redis_url.trim().is_empty()
    }

    /// The node's id (its internal address unless named).
    pub fn node_id(&self) -> String {
        if self.node_id.trim().is_empty() {
            self.internal_address.trim().to_string()
        } else {
            self.node_id.trim().to_string()
        }
    }

    /// The internal listener's address (valid once the configuration validated).
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.internal_address.trim().parse().ok()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let url = self.redis_url.trim();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(err("cluster.redis_url", "must start with redis:// or rediss://"));
        }
        let Some(addr) = self.internal_addr() else {
            return Err(err(
                "cluster.internal_address",
                "required with cluster.redis_url: ip:port of the internal listener",
            ));
        };
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(err(
                "cluster.internal_address",
                "must be an address the other nodes reach (not a wildcard, port not 0)",
            ));
        }
        if self.internal_secret.chars().count() < 16 {
            return Err(err("cluster.internal_secret", "required, at least 16 characters"));
        }
        let id = self.node_id();
        if id.len() > 128 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("cluster.node_id", "at most 128 characters, no spaces"));
        }
        if !(2..=300).contains(&self.lease) {
            return Err(err("cluster.lease", "must be 2..=300 seconds"));
        }
        if !(2..=60).contains(&self.node_ttl) || self.node_ttl >= self.lease {
            return Err(err("cluster.node_ttl", "must be 2..=60 seconds and below cluster.lease"));
        }
        Ok(())
    }

    /// Spanning sessions sends relay legs from the media sockets, recognised by the other nodes
    /// by their source address: the media must be bound to the address they are sent from.
    fn validate_media(&self, media: &MediaConfig) -> Result<(), ConfigError> {
        if self.enabled() && self.spill_after > 0 && media.bind_address.is_unspecified() {
            return Err(err(
                "cluster.spill_after",
                "needs media.bind_address set to this node's address that the other nodes reach \
                 (relay legs are recognised by their source address), not a wildcard",
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IoBackend {
    #[default]
    Auto,
    Uring,
    Epoll,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 4443,
            public_host: String::new(),
            public_url: String::new(),
            secret: "MY_SECRET".into(),
            max_body_bytes: 1 << 20,
            max_ws_message_bytes: 1 << 20,
            max_ws_connections: 10_000,
            ping_timeout: 20,
            reconnection_window: 10,
            demo: true,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            drain_timeout: 30,
            metrics_public: false,
        }
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            enabled: true,
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            public_ips: Vec::new(),
            shards: 0,
            port_base: 40000,
            io_backend: IoBackend::Auto,
            pin_threads: true,
            dont_fragment: false,
            spread_threshold: 16,
            simulcast: false,
        }
    }
}

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: true,
            port: 3478,
            tls_port: 0,
            public_ip: String::new(),
            realm: "ringsfu".into(),
            users: Vec::new(),
            static_auth_secret: String::new(),
            credential_ttl: 86_400,
            allow_loopback_peers: false,
            allowed_peer_ranges: Vec::new(),
            denied_peer_ranges: Vec::new(),
            max_allocations: 100_000,
            max_allocations_per_user: 100,
            max_user_bandwidth: 0,
            relay_ips: Vec::new(),
            // Above Linux's default ephemeral range (net.ipv4.ip_local_port_range = 32768-60999),
            // so no outgoing socket of the host can hold a port an allocation wants.
            relay_port_min: 61000,
            relay_port_max: 65535,
            deliver_in_process: true,
            shard_ports: true,
        }
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            enabled: false,
            endpoint: String::new(),
            ca_file: None,
            headers: Vec::new(),
            events: [
                "sessionCreated",
                "sessionDestroyed",
                "participantJoined",
                "participantLeft",
                "webrtcConnectionCreated",
                "webrtcConnectionDestroyed",
                "recordingStatusChanged",
                "filterEventDispatched",
                "signalSent",
                "mediaNodeStatusChanged",
                "autoscaling",
                "nodeCrashed",
                "nodeRecovered",
                "broadcastStarted",
                "broadcastStopped",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            max_attempts: 5,
            timeout: 5,
            queue_size: 10_000,
        }
    }
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            enabled: true,
            path: "recordings".into(),
            public_access: false,
            notification: "publisher_moderator".into(),
            autostop_timeout: 120,
            composer_path: String::new(),
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            forced_video_codec: "MEDIA_SERVER_PREFERRED".into(),
            allow_transcoding: false,
            video_max_recv_bandwidth: 1000,
            video_min_recv_bandwidth: 300,
            video_max_send_bandwidth: 1000,
            video_min_send_bandwidth: 300,
            garbage_interval: 900,
            garbage_threshold: 3600,
            ice_servers: Vec::new(),
            max_sessions: 100_000,
            max_connections_per_session: 10_000,
        }
    }
}

/// A configuration error: names the key (as `section.key`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "invalid configuration: {}", self.message)
        } else {
            write!(f, "invalid configuration key `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError { key: key.into(), message: message.into() }
}

/// Where configuration comes from, in increasing precedence. `overrides` are `section.key=value`
/// pairs (the CLI flags), values parsed as TOML values where they parse, else as strings.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub overrides: Vec<(String, String)>,
}

impl Sources {
    /// The process environment and no file or overrides.
    pub fn from_process_env() -> Sources {
        Sources { file: None, env: std::env::vars().collect(), overrides: Vec::new() }
    }
}

impl Config {
    /// Builds and validates the effective configuration from its sources.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &sources.file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err("", format!("cannot read config file {}: {e}", path.display())))?;
            // Parse once ourselves so a syntax error names the line.
            text.parse::<toml::Table>().map_err(|e| {
                err("", format!("{}: {}", path.display(), one_line(&e.to_string())))
            })?;
            fig = fig.merge(Toml::string(&text));
        }
        let env_table = env::overlay(&sources.env)?;
        fig = fig.merge(Serialized::defaults(env_table));
        let cli = env::overrides_table(&sources.overrides)?;
        fig = fig.merge(Serialized::defaults(cli));
        let cfg: Config = fig.extract().map_err(figment_error)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field checks and value ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.cluster.validate()?;
        self.cluster.validate_media(&self.media)?;
        if self.server.secret.is_empty() {
            return Err(err("server.secret", "must not be empty"));
        }
        if self.server.port == 0 {
            return Err(err("server.port", "must be 1..=65535"));
        }
        let url = &self.server.public_url;
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err("server.public_url", "must start with http:// or https://"));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(err("server.max_body_bytes", "must be at least 1024"));
        }
        if self.server.max_ws_message_bytes < 1024 {
            return Err(err("server.max_ws_message_bytes", "must be at least 1024"));
        }
        if self.server.max_ws_connections == 0 {
            return Err(err("server.max_ws_connections", "must be at least 1"));
        }
        if self.server.ping_timeout == 0 {
            return Err(err("server.ping_timeout", "must be at least 1 second"));
        }
        if self.server.drain_timeout > 86_400 {
            return Err(err("server.drain_timeout", "at most 86400 seconds"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.server.log_level)
            .map_err(|e| err("server.log_level", one_line(&e.to_string())))?;
        if self.tls.enabled && !self.tls.self_signed {
            match (&self.tls.cert, &self.tls.key) {
                (None, _) => {
                    return Err(err(
                        "tls.cert",
                        "required when tls.enabled and not tls.self_signed",
                    ));
                }
                (_, None) => {
                    return Err(err(
                        "tls.key",
                        "required when tls.enabled and not tls.self_signed",
                    ));
                }
                (Some(c), Some(k)) => {
                    if !c.is_file() {
                        return Err(err("tls.cert", format!("no such file: {}", c.display())));
                    }
                    if !k.is_file() {
                        return Err(err("tls.key", format!("no such file: {}", k.display())));
                    }
                }
            }
        }
        if !["none", "moderator", "publisher_moderator", "all"]
            .contains(&self.recording.notification.as_str())
        {
            return Err(err(
                "recording.notification",
                "must be one of none, moderator, publisher_moderator, all",
            ));
        }
        if self.recording.enabled && self.recording.path.trim().is_empty() {
            return Err(err("recording.path", "required when recording.enabled"));
        }
        if !self.recording.composer_path.trim().is_empty()
            && !crate::control::recording::composed::is_executable(std::path::Path::new(
                &self.recording.composer_path,
            ))
        {
            return Err(err("recording.composer_path", "not an executable file"));
        }
        if self.recording.autostop_timeout > 86_400 {
            return Err(err("recording.autostop_timeout", "at most 86400 seconds"));
        }
        if self.media.shards > 1024 {
            return Err(err("media.shards", "at most 1024"));
        }
        if self.media.port_base == 0 {
            return Err(err("media.port_base", "must be 1..=65535"));
        }
        if self.turn.enabled && self.turn.port == 0 {
            return Err(err("turn.port", "must be 1..=65535"));
        }
        for u in &self.turn.users {
            match u.split_once(':') {
                Some((name, pass)) if !name.is_empty() && !pass.is_empty() => {}
                _ => {
                    return Err(err("turn.users", format!("entry {u:?} is not \"name:password\"")));
                }
            }
        }
        for (key, ranges) in [
            ("turn.allowed_peer_ranges", &self.turn.allowed_peer_ranges),
            ("turn.denied_peer_ranges", &self.turn.denied_peer_ranges),
        ] {
            for r in ranges {
                parse_cidr(r).map_err(|m| err(key, format!("{r:?}: {m}")))?;
            }
        }
        if self.turn.relay_port_min == 0 || self.turn.relay_port_min > self.turn.relay_port_max {
            return Err(err("turn.relay_port_min", "must be 1..=turn.relay_port_max"));
        }
        if self.turn.credential_ttl == 0 {
            return Err(err("turn.credential_ttl", "must be at least 1 second"));
        }
        if self.webhook.enabled {
            if self.webhook.endpoint.is_empty() {
                return Err(err("webhook.endpoint", "required when webhook.enabled"));
            }
            if endpoint::parse_endpoint(&self.webhook.endpoint).is_none() {
                return Err(err(
                    "webhook.endpoint",
                    format!(
                        "{:?} is not an http[s]://host[:port][/path] URL",
                        self.webhook.endpoint
                    ),
                ));
            }
        }
        if let Some(f) = &self.webhook.ca_file {
            endpoint::add_ca_file(&mut rustls::RootCertStore::empty(), f)
                .map_err(|m| err("webhook.ca_file", m))?;
        }
        for h in &self.webhook.headers {
            match h.split_once(':') {
                Some((name, _)) if !name.trim().is_empty() => {}
                _ => {
                    return Err(err(
                        "webhook.headers",
                        format!("entry {h:?} is not \"Name: value\""),
                    ));
                }
            }
        }
        if self.webhook.max_attempts == 0 {
            return Err(err("webhook.max_attempts", "must be at least 1"));
        }
        match self.sessions.forced_video_codec.as_str() {
            "MEDIA_SERVER_PREFERRED" | "VP8" | "VP9" | "H264" | "AV1" | "NONE" => {}
            other => {
                return Err(err(
                    "sessions.forced_video_codec",
                    format!(
                        "{other:?} is not one of MEDIA_SERVER_PREFERRED, VP8, VP9, H264, AV1, NONE"
                    ),
                ));
            }
        }
        for s in &self.sessions.ice_servers {
            if !s.starts_with("url=") {
                return Err(err(
                    "sessions.ice_servers",
                    format!("{s:?} must look like url=turn:host:port,username=u,credential=p"),
                ));
            }
        }
        self.port_plan()?;
        Ok(())
    }

    /// Number of shards: `media.shards`, or for 0 the CPUs of [`Config::machine`] (read when
    /// the configuration was made, never again: a pinned shard thread would see one CPU).
    pub fn effective_shards(&self) -> usize {
        if self.media.shards == 0 { self.machine.cpus } else { self.media.shards }
    }

    /// The UDP port of media shard `shard`'s own TURN listener (`[turn] shard_ports`), if the
    /// media shards host TURN with one ([`Config::port_plan`]).
    pub fn turn_shard_port(&self, shard: usize) -> Option<u16> {
        self.port_plan().ok()?.turn_shard_port(shard)
    }

    /// The socket address the HTTP(S) listener binds.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.server.address, self.server.port)
    }

    /// Host name clients use (`DOMAIN_OR_PUBLIC_IP`), defaulting to the listen address.
    pub fn public_host(&self) -> String {
        if self.server.public_host.is_empty() {
            match self.server.address {
                IpAddr::V6(a) if a.is_unspecified() => "localhost".into(),
                IpAddr::V4(a) if a.is_unspecified() => "localhost".into(),
                IpAddr::V6(a) => format!("[{a}]"),
                IpAddr::V4(a) => a.to_string(),
            }
        } else {
            self.server.public_host.clone()
        }
    }

    /// The public URL without trailing slash, e.g. `http://127.0.0.1:4443`.
    pub fn public_url(&self) -> String {
        if !self.server.public_url.is_empty() {
            return self.server.public_url.trim_end_matches('/').to_string();
        }
        let scheme = if self.tls.enabled { "https" } else { "http" };
        let default_port = if self.tls.enabled { 443 } else { 80 };
        if self.server.port == default_port {
            format!("{scheme}://{}", self.public_host())
        } else {
            format!("{scheme}://{}:{}", self.public_host(), self.server.port)
        }
    }

    /// The WebSocket URL tokens carry (`ws://` / `wss://`, no trailing slash).
    pub fn ws_url(&self) -> String {
        let u = self.public_url();
        if let Some(rest) = u.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = u.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            u
        }
    }

    /// Addresses advertised as ICE host candidates.
    pub fn media_public_ips(&self) -> Vec<IpAddr> {
        if self.media.public_ips.is_empty() {
            vec![self.media.bind_address]
        } else {
            self.media.public_ips.clone()
        }
    }

    /// The TURN REST API secret in force.
    pub fn turn_secret(&self) -> &str {
        if self.turn.static_auth_secret.is_empty() {
            &self.server.secret
        } else {
            &self.turn.static_auth_secret
        }
    }

    /// The addresses TURN relayed transport addresses are bound on when the configuration
    /// names them: `turn.relay_ips`, else a specific `media.bind_address`; empty when bound to
    /// the wildcard (the TURN server then uses the interface addresses).
    pub fn turn_relay_ips(&self) -> Vec<IpAddr> {
        if !self.turn.relay_ips.is_empty() {
            return self.turn.relay_ips.clone();
        }
        if !self.media.bind_address.is_unspecified() {
            return vec![self.media.bind_address];
        }
        Vec::new()
    }

    /// The host handed to browsers as `coturnIp`.
    pub fn turn_public_ip(&self) -> String {
        if !self.turn.public_ip.is_empty() {
            return self.turn.public_ip.clone();
        }
        match self.media_public_ips().first() {
            Some(ip) => ip.to_string(),
            None => self.public_host(),
        }
    }

    /// The effective configuration as TOML with secrets masked (for `--check-config`).
    pub fn to_masked_toml(&self) -> String {
        let mut c = self.clone();
        c.server.secret = mask(&c.server.secret);
        if !c.turn.static_auth_secret.is_empty() {
            c.turn.static_auth_secret = mask(&c.turn.static_auth_secret);
        }
        if !c.cluster.internal_secret.is_empty() {
            c.cluster.internal_secret = mask(&c.cluster.internal_secret);
        }
        c.cluster.redis_url = mask_url_password(&c.cluster.redis_url);
        c.turn.users = c
            .turn
            .users
            .iter()
            .map(|u| match u.split_once(':') {
                Some((n, p)) => format!("{n}:{}", mask(p)),
                None => mask(u),
            })
            .collect();
        // The shard count as it resolved on this machine, with where it came from.
        c.media.shards = self.effective_shards();
        let text = match toml::to_string_pretty(&c) {
            Ok(t) => t,
            Err(e) => return format!("# cannot render: {e}\n"),
        };
        let note = if self.media.shards == 0 {
            format!("  # auto: {} CPUs", self.machine.cpus)
        } else {
            String::new()
        };
        let mut out = String::with_capacity(text.len() + 512);
        let mut section = "";
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name;
            }
            out.push_str(line);
            if section == "media" && line.starts_with("shards = ") {
                out.push_str(&note);
            }
            out.push('\n');
        }
        out.push_str(&self.machine_comment());
        out
    }

    /// What `--check-config` says of the machine and the port plan, as TOML comments.
    fn machine_comment(&self) -> String {
        let m = &self.machine;
        let mut s = String::from("\n# resolved on this machine when the configuration loaded\n");
        s.push_str(&format!("# cpus = {}\n", m.cpus));
        match &m.interfaces {
            Ok(ips) => s.push_str(&format!(
                "# interfaces = [{}]\n",
                ips.iter().map(|ip| format!("\"{ip}\"")).collect::<Vec<_>>().join(", ")
            )),
            Err(e) => s.push_str(&format!("# interfaces: cannot list them ({e})\n")),
        }
        if let Some((lo, hi)) = m.ephemeral_ports {
            s.push_str(&format!(
                "# ephemeral_ports = \"{lo}-{hi}\"  # net.ipv4.ip_local_port_range\n"
            ));
        }
        if let Some((soft, hard)) = m.open_files {
            s.push_str(&format!("# open_files = {soft}  # hard limit {hard}\n"));
        }
        if let Ok(plan) = self.port_plan() {
            for r in &plan.ranges {
                s.push_str(&format!("# port: {r}  ({})\n", r.key));
            }
        }
        s
    }
}

fn mask(s: &str) -> String {
    if s.is_empty() { String::new() } else { "********".into() }
}

/// `scheme://user:password@host` with the password masked (a Redis URL may carry one).
fn mask_url_password(u: &str) -> String {
    let Some((scheme, rest)) = u.split_once("://") else { return u.to_string() };
    let Some((auth, host)) = rest.rsplit_once('@') else { return u.to_string() };
    match auth.split_once(':') {
        Some((user, pw)) => format!("{scheme}://{user}:{}@{host}", mask(pw)),
        None => format!("{scheme}://{}@{host}", mask(auth)),
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = e.path.join(".");
    let mut msg = e.kind.to_string();
    if let Some(meta) = &e.metadata {
        msg.push_str(&format!(" (from {})", meta.name));
    }
    err(&key, one_line(&msg))
}

/// Parses `a.b.c.d/n` or `x::/n` (a bare address means a host range).
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), &'static str> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr.trim().parse().map_err(|_| "not an IP address")?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.trim().parse::<u8>().map_err(|_| "prefix length is not a number")?,
        None => max,
    };
    if len > max {
        return Err("prefix length too long");
    }
    Ok((ip, len))
}

#[cfg(test)]
mod tests;
