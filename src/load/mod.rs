//! `ringsfu-load`: a load generator that speaks the real protocols (issue 6).
//!
//! Many clients in one process: the control part (REST sessions and tokens, one WebSocket
//! JSON-RPC connection per participant: joinRoom, publishVideo, receiveVideoFrom) runs on a
//! tokio current-thread runtime ([`signal`]); the media part of every client (ICE, DTLS client,
//! SRTP, synthetic RTP) runs in one [`LoadCore`] on the crate's own I/O shell, one thread and
//! one socket, each client on its own loopback source address ([`core`]).
//!
//! A run is a list of phases over the same topology (P publishers x S subscribers per session x
//! K sessions): one per ringsfu server (the given one, or, when the tool starts `--server-bin`
//! itself, one per `--backends` entry and `--server-shards` count: `--server-shards 1,2` runs
//! each backend on a 1-shard and then a 2-shard server, a fresh server per phase, environment
//! from `--server-env KEY=VALUE`), and with `--raw` the same packets through a minimal
//! forwarder ([`raw`]), the machine's ceiling. Each phase: join at the ramp rate, wait until
//! every client is connected and receiving, then count for `--duration` seconds (the window),
//! stop the publishers and let the last packets arrive. Results: a progress line per second, a
//! table, `--json`, `--svg` ([`report`]); ratios to the raw phase, between backends and between
//! shard counts (`N shards/1 shard`, same backend).
//!
//! Per phase, besides loss and latency: egress pps; **egress per data-plane CPU-second**
//! (delivered packets / CPU seconds of the data plane in the window, where the data plane is
//! every `shard-*` thread of the server plus every io_uring worker thread (`iou-wrk-<tid>`) of
//! its process, attributed to the shard thread whose tid it names; [`procfs::CpuSampler`]
//! samples them once a second, as workers come and go); each shard thread's CPU and its share
//! of the data plane; the consumers (subscriber legs) and mirror producers of each shard as the
//! server's `/metrics` gives them at the end of the ramp; the window's cross-shard traffic
//! (`ringsfu_shard_mesh_out_total` / `_mesh_in_total`) and `mesh_full` drops ([`shardmedia`]).
//!
//! `--saturate` replaces the one window by a search on the same joined peers: windows one
//! after the other at a rising video bitrate until the loss exceeds `--saturate-loss`; the
//! highest sustained egress pps, total and per data-plane core, with each shard's CPU at that
//! step ([`saturate`], which says why the bitrate is the knob).
//!
//! The figures are refused (exit status 3, `"valid": false` in the JSON) when the load
//! generator's own thread was busy for more than `--max-load-cpu` of the window: then it, not
//! the server, was the bottleneck.
//!
//! `--targets ringsfu-uring,ringsfu-epoll,janus` ([`janus`]): one phase per server, Janus's
//! VideoRoom among them (started by the tool, in a network namespace the run moves into); the
//! report adds every server's whole-process CPU and egress per CPU-second of it, loss and
//! latency side by side, and the ratio of each ringsfu phase to Janus.
//!
//! `--simulcast` ([`simulcast`]): publishers offer and send three VP8 layers as openvidu-browser
//! makes Chromium do in mediasoup mode; `--leg-cap` puts a policer in front of a
//! `--capped-share` of the subscriber legs; every subscriber sends TWCC feedback; the report
//! adds, per leg and per class (capped, uncapped), the layer received, loss and freezes.

pub mod core;
pub mod hist;
pub mod impair;
pub mod janus;
pub mod offer;
pub mod procfs;
pub mod raw;
pub mod report;
pub mod saturate;
pub mod shardmedia;
pub mod signal;
pub mod simulcast;
pub mod turns;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::config::IoBackend;
use crate::dtls::{DtlsCert, DtlsConfig, DtlsContext, Fingerprint};
use crate::io::IoOptions;
use crate::io::{ShardHandles, ShardOptions, spawn_shards_with};

pub use self::core::{
    ClientSpec, CoreReport, LoadCommand, LoadCore, LoadEvent, LoadSettings, MediaProfile,
    SecureSpec, client_ip,
};
use self::hist::Hist;
use self::procfs::{CpuSampler, DataPlane};
use self::raw::{RawCommand, RawForwarder};
use self::shardmedia::ShardMedia;
use self::signal::{Api, Participant};

/// Command-line options of `ringsfu-load`.
#[derive(Args, Debug, Clone)]
pub struct Options {
    /// REST/WebSocket base URL of a running ringsfu (ignored with --server-bin).
    #[arg(long, default_value = "http://127.0.0.1:4443")]
    pub url: String,
    /// REST API secret.
    #[arg(long, default_value = "MY_SECRET")]
    pub secret: String,
    /// PID of the running server, for its CPU time per shard and memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Start this ringsfu binary once per --backends entry (loopback, free ports).
    #[arg(long)]
    pub server_bin: Option<std::path::PathBuf>,
    /// I/O backends to compare with --server-bin.
    #[arg(long, value_delimiter = ',', default_value = "uring,epoll")]
    pub backends: Vec<String>,
    /// Data-plane shards of the started server; a list (`1,2`) runs every backend once per
    /// shard count, in this order, and compares them (0: one per core).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub server_shards: Vec<usize>,
    /// An environment variable for the started server, `KEY=VALUE` (repeatable), e.g.
    /// `RINGSFU_MEDIA_SPREAD_THRESHOLD=0`. The tool's own `--set` flags (shards, backend,
    /// ports) win over the same keys given here.
    #[arg(long = "server-env", value_name = "KEY=VALUE")]
    pub server_env: Vec<String>,
    /// Saturation mode: after the ramp, raise every publisher's video bitrate step by step
    /// (same topology) until the loss of a window exceeds --saturate-loss, and report the
    /// highest egress pps sustained below it (see the module docs).
    #[arg(long)]
    pub saturate: bool,
    /// Record every session (INDIVIDUAL, the server's native recorder) from the end of the
    /// ramp to the end of the window; the server's recorder threads' CPU is reported beside
    /// its shard threads' (with --server-bin).
    #[arg(long)]
    pub record: bool,
    /// Video bitrate factor from one saturation step to the next (above 1, at most 4).
    #[arg(long, default_value_t = 1.25)]
    pub saturate_factor: f64,
    /// At most this many rising saturation steps (the first at --video-bitrate; 1 to 40).
    #[arg(long, default_value_t = 12)]
    pub saturate_steps: u32,
    /// Steps between the last sustained and the first lossy bitrate once the loss limit is
    /// crossed (bisection, geometric mean; 0 to 6).
    #[arg(long, default_value_t = 2)]
    pub saturate_refine: u32,
    /// Loss limit of a sustained step (fraction: 0.001 = 0.1%).
    #[arg(long, default_value_t = 0.001)]
    pub saturate_loss: f64,
    /// Seconds at a step's bitrate before its window starts.
    #[arg(long, default_value_t = 2.0)]
    pub saturate_settle: f64,
    /// Seconds the steps of one phase may take in all; no step starts that would end later.
    #[arg(long, default_value_t = 1200.0)]
    pub saturate_max_time: f64,
    /// Publishers per session.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: u32,
    /// Subscribing participants per session (each receives every publisher of its session).
    #[arg(long, short = 's', default_value_t = 1)]
    pub subscribers: u32,
    /// Sessions.
    #[arg(long, short = 'k', default_value_t = 1)]
    pub sessions: u32,
    /// Ramp-up: peer connections started per second.
    #[arg(long, default_value_t = 100.0)]
    pub ramp: f64,
    /// Measurement window in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Video bits per second per publisher (0: none).
    #[arg(long, default_value_t = 1_000_000)]
    pub video_bitrate: u64,
    /// Video RTP payload bytes per packet.
    #[arg(long, default_value_t = 1000)]
    pub packet_size: usize,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Seconds between keyframes (0: only the first).
    #[arg(long, default_value_t = 2.0)]
    pub keyframe_interval: f64,
    /// Keyframe size as a multiple of a delta frame.
    #[arg(long, default_value_t = 4)]
    pub keyframe_factor: u32,
    /// Audio payload bytes per 20 ms packet (0: no audio).
    #[arg(long, default_value_t = 100)]
    pub audio_packet: usize,
    /// Fraction of received packets decrypted and checked (stamp, sequence, latency).
    #[arg(long, default_value_t = 1.0)]
    pub verify_ratio: f64,
    /// Also run the same topology through a minimal UDP forwarder (the raw ceiling).
    #[arg(long)]
    pub raw: bool,
    /// I/O backend of the load generator's own shell (auto, uring, epoll).
    #[arg(long, default_value = "auto")]
    pub load_backend: String,
    /// Refuse the figures when the load generator's thread was busier than this.
    #[arg(long, default_value_t = 0.9)]
    pub max_load_cpu: f64,
    /// Write the results as JSON.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Write an SVG plot of pps and latency over time.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Simulcast: every publisher offers and sends three VP8 layers (1/10, 1/3 and all of
    /// --video-bitrate; 320x180, 640x360, 1280x720) as Chromium does with openvidu-browser in
    /// mediasoup mode; subscribers send TWCC feedback and report per leg the layer they
    /// receive, loss and freezes (see `load::simulcast`). Subscribers then decrypt every
    /// packet (--verify-ratio is not used). Not with --raw or --saturate.
    #[arg(long)]
    pub simulcast: bool,
    /// Simulcast: a receive cap in kbit/s for a share of the subscriber legs (a policer in
    /// front of the client dropping what exceeds it, as a narrow link would).
    #[arg(long, value_name = "KBIT_S")]
    pub leg_cap: Option<u64>,
    /// Simulcast: the share of subscriber legs --leg-cap applies to (spread evenly).
    #[arg(long, default_value_t = 0.5)]
    pub capped_share: f64,
    /// Simulcast: subscribers also send REMB once a second (their cap, else 20 Mbit/s).
    #[arg(long)]
    pub remb: bool,
    /// Servers to measure, one phase each in this order, instead of --backends:
    /// `ringsfu-uring`, `ringsfu-epoll` (need --server-bin) and `janus` (Janus's VideoRoom
    /// started from --janus-bin, see `load::janus`), e.g. `ringsfu-uring,ringsfu-epoll,janus`.
    /// The report then compares every ringsfu phase with Janus by egress per CPU-second of
    /// the whole server process.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// The Janus binary the `janus` target starts (Debian's `janus` package).
    #[arg(long, default_value = "janus")]
    pub janus_bin: std::path::PathBuf,
    /// Janus's static event loops (`event_loops`; 0: its default, a thread per handle).
    #[arg(long, default_value_t = 0)]
    pub janus_event_loops: u32,
    /// With the `janus` target, stay in this network namespace instead of making one (it must
    /// then route the clients' 127.10.0.0/16 back through Janus's interface, see
    /// `load::janus::enter_netns`); by default a run with Janus moves into a new namespace
    /// (root), and its ringsfu phases with it.
    #[arg(long)]
    pub no_netns: bool,
}

/// One server a run measures (`--targets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// ringsfu on this I/O backend (`uring`, `epoll`, `auto`), started from --server-bin.
    Ringsfu(String),
    Janus,
}

impl Options {
    pub fn media(&self) -> MediaProfile {
        let kf = (self.keyframe_interval * f64::from(self.fps)).round();
        MediaProfile {
            video_bitrate: self.video_bitrate,
            video_packet: self.packet_size,
            fps: self.fps,
            keyframe_every: if kf >= 1.0 { kf as u32 } else { 0 },
            keyframe_factor: self.keyframe_factor,
            audio_packet: self.audio_packet,
        }
    }

    fn verify_every(&self) -> u32 {
        if self.verify_ratio <= 0.0 {
            u32::MAX
        } else {
            (1.0 / self.verify_ratio).round().clamp(1.0, u32::MAX as f64) as u32
        }
    }

    /// `--targets` read (empty: the run is planned from --backends as before).
    pub fn target_list(&self) -> Result<Vec<Target>, String> {
        self.targets
            .iter()
            .map(|t| match t.as_str() {
                "janus" => Ok(Target::Janus),
                r => match r.strip_prefix("ringsfu-") {
                    Some(b) => backend_of(b).map(|_| Target::Ringsfu(b.to_string())),
                    None => Err(format!(
                        "--targets {r:?}: want janus or ringsfu-<backend> (uring, epoll, auto)"
                    )),
                },
            })
            .collect()
    }

    /// Subscriber legs (peer connections receiving one publisher each).
    pub fn legs(&self) -> u64 {
        u64::from(self.sessions) * u64::from(self.publishers) * u64::from(self.subscribers)
    }

    /// Packets the server should forward per second.
    pub fn expected_egress_pps(&self) -> f64 {
        self.legs() as f64 * self.media().packets_per_second()
    }

    /// `--server-env` as `(key, value)` pairs.
    pub fn server_env_pairs(&self) -> Result<Vec<(String, String)>, String> {
        self.server_env
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v))
                    if !k.is_empty()
                        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                        && !v.contains('\0') =>
                {
                    Ok((k.to_string(), v.to_string()))
                }
                _ => Err(format!("--server-env {kv:?}: want KEY=VALUE (KEY of A-Z, 0-9, _)")),
            })
            .collect()
    }

    /// Checks the options that `clap` cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.publishers == 0 || self.subscribers == 0 || self.sessions == 0 {
            return Err("--publishers, --subscribers and --sessions must be at least 1".into());
        }
        if !(self.duration > 0.0 && self.duration <= 3600.0) {
            return Err("--duration must be in (0, 3600] seconds".into());
        }
        let total = layout(self).total;
        if total > 200_000 {
            return Err(format!("{total} clients: at most 200000"));
        }
        let shards = &self.server_shards;
        if shards.is_empty() || shards.len() > 8 || shards.iter().any(|&n| n > 256) {
            return Err("--server-shards: 1 to 8 shard counts, each at most 256".into());
        }
        if shards.iter().enumerate().any(|(i, n)| shards[..i].contains(n)) {
            return Err("--server-shards: a shard count given twice".into());
        }
        if shards.len() > 1 && self.server_bin.is_none() {
            return Err("--server-shards with several counts needs --server-bin".into());
        }
        self.server_env_pairs()?;
        if self.saturate {
            saturate::validate(self)?;
        }
        if self.simulcast {
            if self.raw || self.saturate {
                return Err("--simulcast measures layers, loss and freezes per leg: not with \
                            --raw (the forwarder would send every layer to every leg) or \
                            --saturate"
                    .into());
            }
            if self.video_bitrate == 0 {
                return Err("--simulcast needs video (--video-bitrate above 0)".into());
            }
        } else if self.leg_cap.is_some() || self.remb {
            return Err("--leg-cap and --remb need --simulcast".into());
        }
        if self.leg_cap == Some(0) {
            return Err("--leg-cap must be above 0 kbit/s".into());
        }
        let targets = self.target_list()?;
        if targets.iter().any(|t| matches!(t, Target::Ringsfu(_))) && self.server_bin.is_none() {
            return Err("--targets ringsfu-<backend> needs --server-bin".into());
        }
        if targets.iter().enumerate().any(|(i, t)| targets[..i].contains(t)) {
            return Err("--targets: a target given twice".into());
        }
        if targets.contains(&Target::Janus) {
            if self.simulcast || self.saturate || self.record {
                return Err("--targets janus: not with --simulcast, --saturate or --record".into());
            }
            if self.server_shards.len() > 1 {
                return Err("--targets janus: one --server-shards count".into());
            }
        }
        if !(0.0..=1.0).contains(&self.capped_share) {
            return Err("--capped-share must be in [0, 1]".into());
        }
        Ok(())
    }
}

/// The topology laid out as client indices: per session, publishers first, then per
/// subscribing participant one leg per publisher.
struct Layout {
    /// (session, publisher slot) -> client index.
    publishers: Vec<Vec<u32>>,
    /// (session, subscriber, publisher slot) -> client index.
    legs: Vec<Vec<Vec<u32>>>,
    total: u32,
}

fn layout(o: &Options) -> Layout {
    let mut next = 0u32;
    let mut publishers = Vec::new();
    let mut legs = Vec::new();
    for _ in 0..o.sessions {
        let p: Vec<u32> = (0..o.publishers).map(|i| next + i).collect();
        next += o.publishers;
        publishers.push(p);
        let mut s = Vec::new();
        for _ in 0..o.subscribers {
            s.push((0..o.publishers).map(|i| next + i).collect());
            next += o.publishers;
        }
        legs.push(s);
    }
    Layout { publishers, legs, total: next }
}

/// What one phase measured.
#[derive(Debug, Default, Clone)]
pub struct PhaseResult {
    pub label: String,
    pub kind: &'static str,
    pub backend: Option<String>,
    pub window_s: f64,
    pub clients: u32,
    pub connected: u32,
    pub failures: Vec<String>,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    pub recv_packets: u64,
    pub recv_bytes: u64,
    pub expected: u64,
    pub delivered: u64,
    pub worst_subscriber_loss: f64,
    pub latency: Hist,
    pub join_to_first: Hist,
    pub verified: u64,
    pub verify_failures: u64,
    pub srtp_failures: u64,
    /// Shards of the server the tool started (`None`: a running server).
    pub server_shards: Option<usize>,
    /// Data-plane CPU seconds of the server (or forwarder) in the window, per shard thread.
    pub shard_cpu: Vec<(String, f64)>,
    /// CPU seconds of the io_uring worker threads (`iou-wrk-*`) in the window, by the shard
    /// thread that started them (`other`: none of them); part of the data plane.
    pub iou_wrk_cpu: Vec<(String, f64)>,
    /// io_uring worker threads seen in the window.
    pub iou_wrk_threads: usize,
    /// Per shard at the end of the ramp (every client joined): consumers, publishers, mirror
    /// producers, from the server's `/metrics` (empty when it has none).
    pub shards_after_ramp: Vec<ShardMedia>,
    /// Per shard over the window: the counters' difference (mesh messages out and in,
    /// `mesh_full` drops, RTP out), gauges as at its end.
    pub shards_window: Vec<ShardMedia>,
    /// Video bitrate per publisher in the window.
    pub video_bitrate: u64,
    /// Packets the server should have forwarded per second at the window's media.
    pub offered_egress_pps: f64,
    /// Packets the load generator could not send in the window (its send queue was full).
    pub generator_tx_full: u64,
    /// Frames the load generator sent over a second late in the window.
    pub generator_late_frames: u64,
    /// `--saturate`: every step, and which one sustained the most.
    pub saturation: Option<saturate::Saturation>,
    pub server_cpu_total: Option<f64>,
    /// `--record`: CPU seconds of the server's recorder threads in the window, and the
    /// recordings' files (bytes) once ready.
    pub recorder_cpu: Option<f64>,
    pub recorded_bytes: Option<u64>,
    pub server_rss: Option<u64>,
    pub mem_per_leg: Option<f64>,
    pub load_cpu: f64,
    /// Datagrams the kernel dropped in the window because a UDP socket buffer was full
    /// (receive, send), this network namespace.
    pub udp_buffer_drops: Option<(u64, u64)>,
    pub seconds: Vec<(core::Second, Option<f64>)>,
    pub refused: Option<String>,
    /// The server's loop turns in each part of the run (`ramp`, `window`, `teardown`), from
    /// its `/metrics`.
    pub loop_turns: Vec<(&'static str, turns::TurnSummary)>,
    /// Seconds since the run's epoch at which the ramp started and every client was connected.
    pub ramp_s: Option<(f64, f64)>,
    /// `--simulcast`: every subscriber leg's layers, loss and freezes in the window.
    pub sim_legs: Vec<simulcast::SimOutcome>,
    /// `--simulcast`: keyframe requests the publishers received in the window.
    pub publisher_keyframe_requests: u64,
    /// `--simulcast`: packets the publishers retransmitted (RTX) on NACKs in the window.
    pub publisher_retransmissions: u64,
}

impl PhaseResult {
    pub fn egress_pps(&self) -> f64 {
        self.delivered as f64 / self.window_s.max(1e-9)
    }
    pub fn ingress_pps(&self) -> f64 {
        self.sent_packets as f64 / self.window_s.max(1e-9)
    }
    pub fn loss(&self) -> f64 {
        if self.expected == 0 { 0.0 } else { 1.0 - self.delivered as f64 / self.expected as f64 }
    }
    /// Data-plane CPU seconds in the window: the shard threads and their io_uring workers.
    pub fn data_plane_cpu(&self) -> f64 {
        self.shard_cpu.iter().chain(&self.iou_wrk_cpu).map(|(_, c)| c).sum()
    }
    /// CPU seconds of shard thread `name` and of the io_uring workers it started.
    pub fn shard_total_cpu(&self, name: &str) -> f64 {
        self.shard_cpu
            .iter()
            .chain(&self.iou_wrk_cpu)
            .filter(|(n, _)| n == name)
            .map(|(_, c)| c)
            .sum()
    }
    /// The largest share of the data-plane CPU one shard (thread and workers) had.
    pub fn max_shard_share(&self) -> Option<f64> {
        let all = self.data_plane_cpu();
        (all > 0.0).then(|| {
            self.shard_cpu.iter().map(|(n, _)| self.shard_total_cpu(n) / all).fold(0.0, f64::max)
        })
    }
    /// Delivered packets per CPU-second of the whole server process (every thread): the
    /// like-for-like figure between ringsfu and another SFU.
    pub fn pps_per_process_cpu(&self) -> Option<f64> {
        self.server_cpu_total.filter(|&c| c > 0.0).map(|c| self.delivered as f64 / c)
    }
    /// Delivered packets per second of data-plane CPU: egress pps per core.
    pub fn pps_per_core(&self) -> Option<f64> {
        let cpu = self.data_plane_cpu();
        (cpu > 0.0).then(|| self.delivered as f64 / cpu)
    }
}

/// The load shard of one phase.
struct LoadShard {
    shards: ShardHandles<LoadCore>,
    tid: Arc<AtomicU32>,
    port: u16,
}

fn backend_of(s: &str) -> Result<IoBackend, String> {
    match s {
        "auto" => Ok(IoBackend::Auto),
        "uring" => Ok(IoBackend::Uring),
        "epoll" => Ok(IoBackend::Epoll),
        o => Err(format!("unknown I/O backend {o:?} (auto, uring, epoll)")),
    }
}

fn shard_options(backend: IoBackend, bind: IpAddr) -> ShardOptions {
    ShardOptions {
        shards: 1,
        bind_address: bind,
        port_base: 0,
        backend,
        pin_threads: false,
        reuse_port: false,
        io: IoOptions { tx_slots: 8192, rx_buffers: 2048, ..IoOptions::default() },
    }
}

/// The clients' DTLS certificate (its SHA-256 fingerprint as SDP writes it, without the
/// algorithm) and the load thread secured with it.
fn spawn_secure_load(o: &Options, epoch: Instant) -> Result<(String, LoadShard), String> {
    let cert = DtlsCert::generate().map_err(|e| format!("certificate: {e}"))?;
    let fp = cert.sdp_fingerprint();
    let fp = fp.strip_prefix("sha-256 ").unwrap_or(&fp).to_string();
    let ctx = DtlsContext::new(cert, &DtlsConfig::default()).map_err(|e| format!("dtls: {e}"))?;
    Ok((fp, spawn_load(o, epoch, Some(ctx))?))
}

fn spawn_load(o: &Options, epoch: Instant, dtls: Option<DtlsContext>) -> Result<LoadShard, String> {
    let settings = LoadSettings {
        media: o.media(),
        verify_every: o.verify_every(),
        epoch,
        dtls,
        simulcast: o.simulcast,
        remb: o.remb,
    };
    let tid = Arc::new(AtomicU32::new(0));
    let t = tid.clone();
    let shards = spawn_shards_with(
        &shard_options(backend_of(&o.load_backend)?, IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        move |_| {
            t.store(procfs::gettid(), Ordering::Release);
            LoadCore::new(settings.clone(), Instant::now())
        },
    )
    .map_err(|e| format!("load generator shell: {e}"))?;
    let port = shards.get(0).map(|s| s.info().local_addr.port()).unwrap_or(0);
    Ok(LoadShard { shards, tid, port })
}

/// Events gathered from the load core.
#[derive(Default)]
struct Tracker {
    connected: HashMap<u32, Instant>,
    first_media: HashMap<u32, Instant>,
    failed: Vec<String>,
    seconds: Vec<(core::Second, Option<f64>)>,
    last: Option<core::Second>,
    final_report: Option<CoreReport>,
}

struct Phase<'a> {
    o: &'a Options,
    label: String,
    load: LoadShard,
    tr: Tracker,
    server_pid: Option<u32>,
    last_server_cpu: Option<f64>,
    /// Whose CPU is the data plane (`None`: not measurable here).
    data_plane: Option<DataPlane>,
    /// The window's data-plane CPU, sampled once a second while it runs.
    sampler: Option<CpuSampler>,
    /// The server's API, for its per-shard media counters around a window.
    api: Option<Api>,
}

impl Phase<'_> {
    fn pump(&mut self) {
        let Some(h) = self.load.shards.get_mut(0) else { return };
        while let Some(ev) = h.events().try_recv() {
            match ev {
                LoadEvent::Connected { index, at } => {
                    self.tr.connected.insert(index, at);
                }
                LoadEvent::FirstMedia { index, at } => {
                    self.tr.first_media.insert(index, at);
                }
                LoadEvent::Failed { index, reason } => {
                    self.tr.failed.push(format!("client {index}: {reason}"));
                }
                LoadEvent::Second(s) => {
                    if let Some(sampler) = self.sampler.as_mut() {
                        sampler.sample();
                    }
                    let cpu = self.server_pid.and_then(procfs::process_cpu);
                    let share = match (cpu, self.last_server_cpu) {
                        (Some(c), Some(l)) => Some(c - l),
                        _ => None,
                    };
                    self.last_server_cpu = cpu;
                    if !self.o.quiet {
                        println!(
                            "[{}] t={:5.1}s connected {:>5}  tx {:>8.0} pps  rx {:>9.0} pps \
                             {:>7.1} Mbit/s  latency p50 {:>6} us p99 {:>7} us{}",
                            self.label,
                            s.t,
                            self.tr.connected.len(),
                            s.sent_packets as f64,
                            s.recv_packets as f64,
                            s.recv_bytes as f64 * 8.0 / 1e6,
                            s.p50_us,
                            s.p99_us,
                            share
                                .map(|c| format!("  server cpu {:.0}%", c * 100.0))
                                .unwrap_or_default()
                        );
                    }
                    self.tr.last = Some((*s).clone());
                    self.tr.seconds.push((*s, share));
                }
                LoadEvent::Final(r) => self.tr.final_report = Some(*r),
            }
        }
    }

    async fn command(&mut self, mut cmd: LoadCommand) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let Some(h) = self.load.shards.get_mut(0) else {
                return Err("load shard gone".into());
            };
            match h.commands().send(cmd) {
                Ok(()) => return Ok(()),
                Err(crate::shard::SendError::Full(c)) if Instant::now() < deadline => {
                    cmd = c;
                    self.pump();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(_) => return Err("load shard command queue stuck".into()),
            }
        }
    }

    /// Sleeps `d`, pumping events.
    async fn idle(&mut self, d: Duration) {
        let end = Instant::now() + d;
        loop {
            self.pump();
            let now = Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(20))).await;
        }
    }

    /// Waits (bounded) until `done`.
    async fn wait_for(&mut self, limit: Duration, done: impl Fn(&Tracker) -> bool) -> bool {
        let end = Instant::now() + limit;
        loop {
            self.pump();
            if done(&self.tr) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn load_cpu(&self) -> f64 {
        let tid = self.load.tid.load(Ordering::Acquire);
        procfs::thread_cpu(std::process::id(), tid).unwrap_or(0.0)
    }

    /// Waits (bounded) until every client is connected and every subscriber receives media;
    /// notes in `r` what did not.
    async fn ready(&mut self, r: &mut PhaseResult, subscriber_clients: &[u32]) {
        let total = r.clients as usize;
        let settle = Duration::from_secs(20) + Duration::from_secs_f64(total as f64 * 0.02);
        if !self.wait_for(settle, |t| t.connected.len() + t.failed.len() >= total).await {
            r.failures.push(format!(
                "only {} of {total} clients connected within {settle:?}",
                self.tr.connected.len()
            ));
        }
        let subs: Vec<u32> = subscriber_clients.to_vec();
        if !self
            .wait_for(Duration::from_secs(10), |t| {
                subs.iter().all(|i| t.first_media.contains_key(i) || !t.connected.contains_key(i))
            })
            .await
        {
            r.failures.push("some subscribers received no media within 10 s".into());
        }
    }

    /// The one window of a phase: [`Phase::ready`], then [`Phase::window`] that stops the
    /// publishers at its end.
    async fn measure(
        &mut self,
        r: &mut PhaseResult,
        subscriber_clients: &[u32],
        join_start: &HashMap<u32, Instant>,
    ) -> Result<(), String> {
        self.ready(r, subscriber_clients).await;
        self.window(r, subscriber_clients, join_start, false).await
    }

    /// One measurement window of `--duration` seconds (bounded: the window, 1 s around it and
    /// at most 10 s for the load core's report); fills the window's fields of `r`. With
    /// `keep_media` the publishers go on sending after it (another window follows).
    async fn window(
        &mut self,
        r: &mut PhaseResult,
        subscriber_clients: &[u32],
        join_start: &HashMap<u32, Instant>,
        keep_media: bool,
    ) -> Result<(), String> {
        // Let join bursts and keyframe requests settle before counting.
        self.idle(Duration::from_millis(500)).await;
        let media0 = match &self.api {
            Some(api) => api.metrics().await.map(|t| shardmedia::parse(&t)).unwrap_or_default(),
            None => Vec::new(),
        };
        self.sampler = self.data_plane.clone().map(CpuSampler::start);
        let load0 = self.load_cpu();
        let server0 = self.server_pid.and_then(procfs::process_cpu);
        let rec0 = self.recorder_cpu();
        let udp0 = procfs::udp_errors();
        let t0 = Instant::now();
        self.command(LoadCommand::StartWindow).await?;
        self.idle(Duration::from_secs_f64(self.o.duration)).await;
        self.command(if keep_media { LoadCommand::EndWindow } else { LoadCommand::StopMedia })
            .await?;
        let window = t0.elapsed().as_secs_f64();
        let cpu = self.sampler.take().map(|mut s| s.finish()).unwrap_or_default();
        let load1 = self.load_cpu();
        let server1 = self.server_pid.and_then(procfs::process_cpu);
        if self.o.record {
            r.recorder_cpu = rec0.zip(self.recorder_cpu()).map(|(a, b)| (b - a).max(0.0));
        }
        // The server's counters at the window's end (a packet crosses the mesh within the
        // shard's loop turn): with `keep_media`, media goes on after it.
        if let Some(api) = &self.api {
            let media1 = api.metrics().await.map(|t| shardmedia::parse(&t)).unwrap_or_default();
            r.shards_window = shardmedia::since(&media1, &media0);
        }
        // The last packets of the window are in flight.
        self.idle(Duration::from_millis(500)).await;
        r.udp_buffer_drops = udp0.zip(procfs::udp_errors()).map(|(a, b)| (b.1 - a.1, b.2 - a.2));
        self.command(LoadCommand::Finish).await?;
        if !self.wait_for(Duration::from_secs(10), |t| t.final_report.is_some()).await {
            return Err("the load core sent no final report".into());
        }
        let f = self.tr.final_report.take().unwrap_or_default();
        r.window_s = window;
        r.connected = self.tr.connected.len() as u32;
        r.sent_packets = f.sent_packets;
        r.recv_packets = f.recv_packets;
        r.expected = f.subscribers.iter().map(|s| s.expected).sum();
        r.delivered = f.subscribers.iter().map(|s| s.delivered).sum();
        r.worst_subscriber_loss =
            f.subscribers
                .iter()
                .map(|s| {
                    if s.expected == 0 { 0.0 } else { 1.0 - s.delivered as f64 / s.expected as f64 }
                })
                .fold(0.0, f64::max);
        r.latency = f.latency;
        r.verified = f.verified;
        r.verify_failures = f.verify_failures;
        r.srtp_failures = f.srtp_failures;
        r.generator_tx_full = f.tx_full;
        r.generator_late_frames = f.late_frames;
        r.sim_legs = f.sim;
        r.publisher_keyframe_requests = f.publisher_keyframe_requests;
        r.publisher_retransmissions = f.publisher_retransmissions;
        r.join_to_first = Hist::default();
        for i in subscriber_clients {
            if let (Some(s), Some(m)) = (join_start.get(i), self.tr.first_media.get(i)) {
                r.join_to_first.record(m.saturating_duration_since(*s).as_micros() as u64);
            }
        }
        r.shard_cpu = cpu.threads;
        r.iou_wrk_cpu = cpu.iou_wrk;
        r.iou_wrk_threads = cpu.iou_wrk_threads;
        r.server_cpu_total = server0.zip(server1).map(|(a, b)| b - a);
        r.load_cpu = (load1 - load0) / window.max(1e-9);
        r.sent_bytes = f.sent_bytes;
        r.recv_bytes = f.recv_bytes;
        r.refused = None;
        if r.load_cpu > self.o.max_load_cpu {
            r.refused = Some(format!(
                "the load generator's thread was {:.0}% busy (limit {:.0}%): it, not the \
                 server, may have been the bottleneck; lower the load or raise --verify-ratio's \
                 divisor",
                r.load_cpu * 100.0,
                self.o.max_load_cpu * 100.0
            ));
        }
        Ok(())
    }

    /// CPU seconds of the server's recorder threads (`ringsfu-rec`) so far, when it is ours.
    fn recorder_cpu(&self) -> Option<f64> {
        let pid = self.server_pid?;
        Some(
            procfs::threads_named(pid, "ringsfu-rec")
                .into_iter()
                .filter_map(|(_, tid)| procfs::thread_cpu(pid, tid))
                .sum(),
        )
    }

    /// The phase's per-second series and the clients' failures, once its windows are done.
    fn conclude(&mut self, r: &mut PhaseResult) {
        r.failures.extend(self.tr.failed.iter().take(20).cloned());
        r.seconds = std::mem::take(&mut self.tr.seconds);
    }
}

fn random_token(n: usize) -> String {
    use rand::Rng;
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::rng();
    (0..n).map(|_| A[r.random_range(0..A.len())] as char).collect()
}

struct Negotiated {
    spec: SecureSpec,
    server: SocketAddr,
    /// The transport-wide sequence number extension id the answer agreed (0: none).
    twcc_ext: u8,
}

fn negotiate(answer: &str, local_ufrag: &str) -> Result<Negotiated, String> {
    negotiate_with(answer, local_ufrag, String::new())
}

/// [`negotiate`] for a server that checks connectivity too: the client answers its checks,
/// signed with `local_pwd`.
fn negotiate_with(
    answer: &str,
    local_ufrag: &str,
    local_pwd: String,
) -> Result<Negotiated, String> {
    let d = crate::sdp::parse(answer).map_err(|e| format!("answer: {e}"))?;
    let server = d
        .candidates
        .iter()
        .filter(|c| c.udp)
        .map(|c| c.addr)
        .find(SocketAddr::is_ipv4)
        .ok_or("answer has no IPv4 UDP candidate")?;
    let fp = Fingerprint::sha256(&d.fingerprint).ok_or("answer has no sha-256 fingerprint")?;
    let twcc_ext = d
        .media
        .iter()
        .flat_map(|m| &m.extmaps)
        .find(|e| e.uri == crate::sdp::ext::TWCC)
        .map_or(0, |e| e.id);
    Ok(Negotiated {
        twcc_ext,
        spec: SecureSpec {
            local_ufrag: local_ufrag.to_string(),
            remote_ufrag: d.ice_ufrag,
            remote_pwd: d.ice_pwd,
            remote_fingerprint: fp,
            local_pwd,
        },
        server,
    })
}

/// One subscribing participant to join: its session, its legs (client index, stream id,
/// publisher client index, receive cap in bits/s).
struct SubscriberSpec {
    api: Api,
    session: String,
    name: String,
    legs: Vec<(u32, String, u32, Option<u64>)>,
    simulcast: bool,
    session_index: u32,
    fingerprint: String,
    load_port: u16,
}

/// A joined subscriber: its participant and, per leg, when its join began and the client the
/// load core must add.
struct SubscriberJoin {
    participant: Participant,
    legs: Vec<(Instant, ClientSpec)>,
}

impl SubscriberSpec {
    /// Token, joinRoom, then receiveVideoFrom for each leg.
    async fn join(self) -> Result<SubscriberJoin, String> {
        let t_join = Instant::now();
        let token = self.api.token(&self.session, "SUBSCRIBER").await?;
        let participant = Participant::join(&self.api, &self.session, &token, &self.name).await?;
        let mut legs = Vec::with_capacity(self.legs.len());
        for (idx, stream, publisher, cap_bps) in self.legs {
            let (ufrag, offer) =
                client_offer(idx, &self.fingerprint, self.load_port, None, self.simulcast);
            let res = participant
                .call("receiveVideoFrom", json!({"sender": stream, "sdpOffer": offer}))
                .await?;
            let answer = res["sdpAnswer"].as_str().ok_or("receiveVideoFrom: no sdpAnswer")?;
            let n = negotiate(answer, &ufrag)?;
            legs.push((
                t_join,
                ClientSpec {
                    index: idx,
                    session: self.session_index,
                    server: n.server,
                    publish: None,
                    source: Some(publisher),
                    secure: Some(n.spec),
                    cap_bps,
                    twcc_ext: n.twcc_ext,
                },
            ));
        }
        Ok(SubscriberJoin { participant, legs })
    }
}

/// A synthetic client's SDP offer from client `idx` at the load port (sending `send_ssrcs`, video
/// and audio, when it publishes): its ICE ufrag and the offer.
fn client_offer(
    idx: u32,
    fingerprint: &str,
    load_port: u16,
    send_ssrcs: Option<(u32, u32)>,
    simulcast: bool,
) -> (String, String) {
    let (ufrag, _, offer) = client_offer_pwd(idx, fingerprint, load_port, send_ssrcs, simulcast);
    (ufrag, offer)
}

/// [`client_offer`] that also gives the client's ICE password: `(ufrag, pwd, offer)`.
fn client_offer_pwd(
    idx: u32,
    fingerprint: &str,
    load_port: u16,
    send_ssrcs: Option<(u32, u32)>,
    simulcast: bool,
) -> (String, String, String) {
    let ufrag = random_token(8);
    let pwd = random_token(24);
    let offer = offer::write_offer(&offer::OfferParams {
        ice_ufrag: &ufrag,
        ice_pwd: &pwd,
        fingerprint,
        candidate: SocketAddr::new(IpAddr::V4(client_ip(idx)), load_port),
        send_ssrcs,
        session_id: rand::random::<u64>() >> 2,
        simulcast,
    });
    (ufrag, pwd, offer)
}

impl Phase<'_> {
    /// Hands a joined subscriber's legs to the load core.
    async fn subscriber_joined(
        &mut self,
        j: SubscriberJoin,
        participants: &mut Vec<Participant>,
        join_start: &mut HashMap<u32, Instant>,
        sub_clients: &mut Vec<u32>,
    ) -> Result<(), String> {
        for (t_join, spec) in j.legs {
            join_start.insert(spec.index, t_join);
            sub_clients.push(spec.index);
            self.command(LoadCommand::Add(Box::new(spec))).await?;
        }
        participants.push(j.participant);
        Ok(())
    }
}

/// One phase against a ringsfu server at `api`.
async fn ringsfu_phase(
    o: &Options,
    label: &str,
    api: &Api,
    server_pid: Option<u32>,
    backend: Option<String>,
    server_shards: Option<usize>,
) -> Result<PhaseResult, String> {
    let epoch = Instant::now();
    let (fp, load) = spawn_secure_load(o, epoch)?;
    let lay = layout(o);
    let mut ph = Phase {
        o,
        label: label.to_string(),
        load,
        tr: Tracker::default(),
        server_pid,
        last_server_cpu: None,
        data_plane: server_pid.map(|pid| DataPlane::Server { pid }),
        sampler: None,
        api: Some(api.clone()),
    };
    let mut r = PhaseResult {
        label: label.to_string(),
        kind: "ringsfu",
        backend,
        server_shards,
        clients: lay.total,
        video_bitrate: o.video_bitrate,
        offered_egress_pps: o.expected_egress_pps(),
        ..Default::default()
    };
    let load_port = ph.load.port;
    let mut participants: Vec<Participant> = Vec::new();
    let mut join_start = HashMap::new();
    let mut streams: Vec<Vec<String>> = Vec::new();
    let turns_before_ramp = scrape_turns(api).await;
    let ramp_start = Instant::now();
    let mut started = 0u64;
    let pace = |n: u64| ramp_start + Duration::from_secs_f64(n as f64 / o.ramp.max(0.001));
    let mut sids = Vec::new();
    for _ in 0..o.sessions {
        sids.push(api.session().await?);
    }
    // Publishers.
    for (k, sid) in sids.iter().enumerate() {
        let mut ids = Vec::new();
        for &idx in &lay.publishers[k] {
            ph.idle(pace(started).saturating_duration_since(Instant::now())).await;
            started += 1;
            let token = api.token(sid, "PUBLISHER").await?;
            let p = Participant::join(api, sid, &token, &format!("pub{idx}")).await?;
            let ssrcs = (rand::random::<u32>() | 1, rand::random::<u32>() | 1);
            let (ufrag, offer) = client_offer(idx, &fp, load_port, Some(ssrcs), o.simulcast);
            // The size the camera has (a simulcast publisher's top layer).
            let dims = if o.simulcast {
                "{\"width\":1280,\"height\":720}"
            } else {
                "{\"width\":640,\"height\":480}"
            };
            let res = p
                .call(
                    "publishVideo",
                    json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": true,
                       "hasVideo": true, "audioActive": true, "videoActive": true,
                       "typeOfVideo": "CAMERA", "frameRate": o.fps,
                       "videoDimensions": dims}),
                )
                .await?;
            let answer = res["sdpAnswer"].as_str().ok_or("publishVideo: no sdpAnswer")?;
            ids.push(res["id"].as_str().ok_or("publishVideo: no stream id")?.to_string());
            let n = negotiate(answer, &ufrag)?;
            ph.command(LoadCommand::Add(Box::new(ClientSpec {
                index: idx,
                session: k as u32,
                server: n.server,
                publish: Some(ssrcs),
                source: None,
                secure: Some(n.spec),
                cap_bps: None,
                twcc_ext: n.twcc_ext,
            })))
            .await?;
            participants.push(p);
        }
        streams.push(ids);
    }
    let pubs: Vec<u32> = lay.publishers.iter().flatten().copied().collect();
    ph.wait_for(Duration::from_secs(20), |t| {
        pubs.iter().all(|i| t.connected.contains_key(i)) || !t.failed.is_empty()
    })
    .await;
    ph.idle(Duration::from_millis(300)).await;
    let rss_before = server_pid.and_then(procfs::rss_bytes);
    // Subscribers: one participant each, one peer connection per publisher of the session.
    // Each participant's signaling (token, joinRoom, receiveVideoFrom per leg) runs in a task
    // of its own, started at the ramp's pace: the ramp runs at the rate asked whatever one
    // join's round trip takes. The load core learns each leg when its answer arrives.
    let mut sub_clients = Vec::new();
    let mut joins: tokio::task::JoinSet<Result<SubscriberJoin, String>> =
        tokio::task::JoinSet::new();
    for (k, sid) in sids.iter().enumerate() {
        for (s, legs) in lay.legs[k].iter().enumerate() {
            ph.idle(pace(started).saturating_duration_since(Instant::now())).await;
            started += legs.len() as u64;
            while let Some(done) = joins.try_join_next() {
                let j = done.map_err(|e| format!("join task: {e}"))??;
                ph.subscriber_joined(j, &mut participants, &mut join_start, &mut sub_clients)
                    .await?;
            }
            let spec = SubscriberSpec {
                api: api.clone(),
                session: sid.clone(),
                name: format!("sub{k}-{s}"),
                legs: legs
                    .iter()
                    .enumerate()
                    .map(|(j, &idx)| {
                        // Legs in join order: session, subscriber, publisher.
                        let ordinal = ((k * lay.legs[k].len() + s) * legs.len() + j) as u64;
                        let cap = o
                            .leg_cap
                            .filter(|_| simulcast::is_capped(ordinal, o.capped_share))
                            .map(|kbit| kbit.saturating_mul(1000));
                        (idx, streams[k][j].clone(), lay.publishers[k][j], cap)
                    })
                    .collect(),
                simulcast: o.simulcast,
                session_index: k as u32,
                fingerprint: fp.clone(),
                load_port,
            };
            joins.spawn(spec.join());
        }
    }
    // Bounded: every join task ends within its calls' timeouts.
    while let Some(done) = joins.join_next().await {
        let j = done.map_err(|e| format!("join task: {e}"))??;
        ph.subscriber_joined(j, &mut participants, &mut join_start, &mut sub_clients).await?;
    }
    // Memory per leg once every leg is up.
    let total = lay.total as usize;
    ph.wait_for(Duration::from_secs(20) + Duration::from_secs_f64(total as f64 * 0.02), |t| {
        t.connected.len() + t.failed.len() >= total
    })
    .await;
    let text = api.metrics().await.unwrap_or_default();
    let turns_after_ramp = turns::parse(&text);
    // Where the consumers are, now that every leg has joined.
    r.shards_after_ramp = shardmedia::parse(&text);
    r.ramp_s =
        Some((ramp_start.duration_since(epoch).as_secs_f64(), epoch.elapsed().as_secs_f64()));
    ph.idle(Duration::from_millis(300)).await;
    let rss_after = server_pid.and_then(procfs::rss_bytes);
    r.server_rss = rss_after;
    if let (Some(a), Some(b)) = (rss_before, rss_after)
        && !sub_clients.is_empty()
    {
        r.mem_per_leg = Some((b as f64 - a as f64) / sub_clients.len() as f64);
    }
    let mut recordings = Vec::new();
    if o.record {
        for sid in &sids {
            recordings.push(api.start_recording(sid).await?);
        }
    }
    if o.saturate {
        ph.ready(&mut r, &sub_clients).await;
        saturate::run(&mut ph, &mut r, &sub_clients, &join_start).await?;
    } else {
        ph.measure(&mut r, &sub_clients, &join_start).await?;
    }
    if !recordings.is_empty() {
        let mut bytes = 0;
        for id in &recordings {
            match api.stop_recording(id).await {
                Ok(size) => bytes += size,
                Err(e) if r.failures.len() < 20 => r.failures.push(format!("recording: {e}")),
                Err(_) => {}
            }
        }
        r.recorded_bytes = Some(bytes);
    }
    ph.conclude(&mut r);
    let turns_after_window = scrape_turns(api).await;
    // Teardown: every participant leaves (leaveRoom), paced like the ramp, newest first.
    let leave_start = Instant::now();
    for (n, p) in participants.iter().rev().enumerate() {
        let at = leave_start + Duration::from_secs_f64(n as f64 / o.ramp.max(0.001));
        ph.idle(at.saturating_duration_since(Instant::now())).await;
        if let Err(e) = p.call("leaveRoom", json!({})).await
            && r.failures.len() < 20
        {
            r.failures.push(format!("teardown: {e}"));
        }
    }
    // Bounded: until the server counts no participant, at most 30 s.
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        let text = api.metrics().await.unwrap_or_default();
        if text.lines().any(|l| l == "ringsfu_participants 0") {
            break;
        }
        ph.idle(Duration::from_millis(100)).await;
    }
    let turns_after_teardown = scrape_turns(api).await;
    drop(participants);
    if !turns_before_ramp.is_empty() {
        r.loop_turns = vec![
            ("ramp", turns_after_ramp.since(&turns_before_ramp)),
            ("window", turns_after_window.since(&turns_after_ramp)),
            ("teardown", turns_after_teardown.since(&turns_after_window)),
        ];
    }
    let _ = ph.load.shards.shutdown();
    Ok(r)
}

/// The server's loop-turn histogram now (empty when `/metrics` cannot be read).
async fn scrape_turns(api: &Api) -> turns::TurnCounts {
    api.metrics().await.map(|t| turns::parse(&t)).unwrap_or_default()
}

/// The same topology through the minimal forwarder, in this process.
async fn raw_phase(o: &Options) -> Result<PhaseResult, String> {
    let epoch = Instant::now();
    let load = spawn_load(o, epoch, None)?;
    let fwd_tid = Arc::new(AtomicU32::new(0));
    let t = fwd_tid.clone();
    let mut fwd = spawn_shards_with(
        &shard_options(backend_of(&o.load_backend)?, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        move |_| {
            t.store(procfs::gettid(), Ordering::Release);
            RawForwarder::default()
        },
    )
    .map_err(|e| format!("raw forwarder: {e}"))?;
    let fwd_addr = fwd.get(0).map(|s| s.info().local_addr).ok_or("raw forwarder gone")?;
    let lay = layout(o);
    let port = load.port;
    let addr = |i: u32| SocketAddr::new(IpAddr::V4(client_ip(i)), port);
    for (k, pubs) in lay.publishers.iter().enumerate() {
        for (j, &p) in pubs.iter().enumerate() {
            let to: Vec<SocketAddr> = lay.legs[k].iter().map(|legs| addr(legs[j])).collect();
            let h = fwd.get_mut(0).ok_or("raw forwarder gone")?;
            h.commands()
                .send(RawCommand::Route { from: addr(p), to })
                .map_err(|_| "raw forwarder queue full")?;
        }
    }
    let mut ph = Phase {
        o,
        label: "raw".into(),
        load,
        tr: Tracker::default(),
        server_pid: None,
        last_server_cpu: None,
        data_plane: None,
        sampler: None,
        api: None,
    };
    let mut r = PhaseResult {
        label: "raw".into(),
        kind: "raw",
        clients: lay.total,
        video_bitrate: o.video_bitrate,
        offered_egress_pps: o.expected_egress_pps(),
        ..Default::default()
    };
    let mut join_start = HashMap::new();
    let mut subs = Vec::new();
    for (k, pubs) in lay.publishers.iter().enumerate() {
        for &p in pubs {
            let spec = ClientSpec {
                index: p,
                session: k as u32,
                server: fwd_addr,
                publish: Some((p * 2 + 1, p * 2 + 2)),
                source: None,
                secure: None,
                cap_bps: None,
                twcc_ext: 0,
            };
            ph.command(LoadCommand::Add(Box::new(spec))).await?;
        }
        for legs in &lay.legs[k] {
            for (j, &i) in legs.iter().enumerate() {
                join_start.insert(i, Instant::now());
                let spec = ClientSpec {
                    index: i,
                    session: k as u32,
                    server: fwd_addr,
                    publish: None,
                    source: Some(pubs[j]),
                    secure: None,
                    cap_bps: None,
                    twcc_ext: 0,
                };
                ph.command(LoadCommand::Add(Box::new(spec))).await?;
                subs.push(i);
            }
        }
    }
    ph.ready(&mut r, &subs).await;
    // The forwarder has forwarded by now, so its thread has stored its tid.
    let ftid = fwd_tid.load(Ordering::Acquire);
    ph.data_plane = (ftid != 0).then(|| DataPlane::Thread {
        pid: std::process::id(),
        tid: ftid,
        name: "forwarder".into(),
    });
    if o.saturate {
        saturate::run(&mut ph, &mut r, &subs, &join_start).await?;
    } else {
        ph.window(&mut r, &subs, &join_start, false).await?;
    }
    ph.conclude(&mut r);
    let _ = ph.load.shards.shutdown();
    let _ = fwd.shutdown();
    Ok(r)
}

/// A ringsfu process started by the tool.
struct Server {
    child: std::process::Child,
    api: Api,
    port: u16,
}

/// Where a server started on `port` writes its recordings (`--record`; removed with it).
fn recording_dir(port: u16) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ringsfu-load-{}-{port}", std::process::id()))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(recording_dir(self.port));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port(udp: bool) -> Result<u16, String> {
    let p = if udp {
        std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr())
    };
    p.map(|a| a.port()).map_err(|e| format!("free port: {e}"))
}

async fn start_server(
    o: &Options,
    bin: &std::path::Path,
    backend: &str,
    shards: usize,
) -> Result<Server, String> {
    let port = free_port(false)?;
    let media = free_port(true)?;
    let secret = o.secret.clone();
    let child = std::process::Command::new(bin)
        .envs(o.server_env_pairs()?)
        .args(["--port", &port.to_string(), "--secret", &secret, "--log-level", "warn"])
        .args(["--set", &format!("media.io_backend={backend}")])
        .args(["--set", &format!("media.shards={shards}")])
        .args(["--set", &format!("media.port_base={media}")])
        .args(["--set", "turn.enabled=false"])
        .args(["--set", "server.address=127.0.0.1"])
        .args(["--set", &format!("recording.path={}", recording_dir(port).display())])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let api = Api::new(&format!("http://127.0.0.1:{port}"), &secret);
    let mut s = Server { child, api, port };
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if s.api.ready().await {
            return Ok(s);
        }
        if let Ok(Some(st)) = s.child.try_wait() {
            return Err(format!("{} exited: {st}", bin.display()));
        }
        if Instant::now() >= end {
            return Err(format!("{} did not answer within 15 s", bin.display()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One phase per `--server-shards` count against a ringsfu started from `bin` on backend `b`
/// (the shard counts of a backend one after the other: their ratio is the steadier for it).
async fn started_phases(
    o: &Options,
    bin: &std::path::Path,
    b: &str,
    phases: &mut Vec<PhaseResult>,
) -> Result<(), String> {
    let several = o.server_shards.len() > 1;
    for &n in &o.server_shards {
        let label = if several { format!("ringsfu-{b}-{n}sh") } else { format!("ringsfu-{b}") };
        let server = start_server(o, bin, b, n).await?;
        let pid = server.child.id();
        let r =
            ringsfu_phase(o, &label, &server.api, Some(pid), Some(b.to_string()), Some(n)).await;
        drop(server);
        phases.push(r?);
    }
    Ok(())
}

/// Janus's RTP ports: below the kernel's ephemeral range (where the load generator's and a
/// ringsfu's ports come from), one per peer connection and spare.
const JANUS_RTP_PORTS: (u16, u16) = (20000, 29999);

/// Retries of a subscriber's `join` while Janus does not know the feed yet (its publisher's
/// DTLS is up on the client's side a moment before Janus's).
const JANUS_JOIN_TRIES: u32 = 50;

/// One phase against a Janus the tool starts (see [`janus`]): the same topology, clients and
/// window as [`ringsfu_phase`]; a room per session, a Janus session per room.
async fn janus_phase(o: &Options, label: &str) -> Result<PhaseResult, String> {
    use janus::{AnswerParams, JanusServer, JanusSession, Jsep};
    let mut server =
        JanusServer::start(&o.janus_bin, free_port(false)?, JANUS_RTP_PORTS, o.janus_event_loops)
            .await?;
    let pid = server.child.id();
    let epoch = Instant::now();
    let (fp, load) = spawn_secure_load(o, epoch)?;
    let lay = layout(o);
    let mut ph = Phase {
        o,
        label: label.to_string(),
        load,
        tr: Tracker::default(),
        server_pid: Some(pid),
        last_server_cpu: None,
        data_plane: Some(DataPlane::Process { pid }),
        sampler: None,
        api: None,
    };
    let mut r = PhaseResult {
        label: label.to_string(),
        kind: "janus",
        clients: lay.total,
        video_bitrate: o.video_bitrate,
        offered_egress_pps: o.expected_egress_pps(),
        ..Default::default()
    };
    let load_port = ph.load.port;
    let ramp_start = Instant::now();
    let mut started = 0u64;
    let pace = |n: u64| ramp_start + Duration::from_secs_f64(n as f64 / o.ramp.max(0.001));
    // Sessions and rooms.
    let mut rooms = Vec::new();
    for _ in 0..o.sessions {
        let s = JanusSession::create(&server.api).await?;
        let h = s.attach().await?;
        let (data, _) = s
            .message(
                h,
                json!({"request": "create", "publishers": o.publishers, "bitrate": 0,
                       "audiocodec": "opus", "videocodec": "vp8", "notify_joining": false}),
                None,
            )
            .await?;
        let room = data["room"].as_u64().ok_or("create: no room id")?;
        rooms.push((s, room));
    }
    // Publishers: joinandconfigure with the offer, the answer in the event.
    let mut feeds: Vec<Vec<u64>> = Vec::new();
    for (k, (s, room)) in rooms.iter().enumerate() {
        let mut ids = Vec::new();
        for &idx in &lay.publishers[k] {
            ph.idle(pace(started).saturating_duration_since(Instant::now())).await;
            started += 1;
            let h = s.attach().await?;
            let ssrcs = (rand::random::<u32>() | 1, rand::random::<u32>() | 1);
            let (ufrag, pwd, offer) = client_offer_pwd(idx, &fp, load_port, Some(ssrcs), false);
            let (data, jsep) = s
                .message(
                    h,
                    json!({"request": "joinandconfigure", "room": room, "ptype": "publisher",
                           "display": format!("pub{idx}"), "audio": true, "video": true}),
                    Some(Jsep { offer: true, sdp: janus::publisher_offer(&offer) }),
                )
                .await?;
            ids.push(data["id"].as_u64().ok_or("joinandconfigure: no publisher id")?);
            let answer = jsep.filter(|j| !j.offer).ok_or("joinandconfigure: no answer")?;
            let n = negotiate_with(&answer.sdp, &ufrag, pwd)?;
            ph.command(LoadCommand::Add(Box::new(ClientSpec {
                index: idx,
                session: k as u32,
                server: n.server,
                publish: Some(ssrcs),
                source: None,
                secure: Some(n.spec),
                cap_bps: None,
                twcc_ext: 0,
            })))
            .await?;
        }
        feeds.push(ids);
    }
    let pubs: Vec<u32> = lay.publishers.iter().flatten().copied().collect();
    ph.wait_for(Duration::from_secs(20), |t| {
        pubs.iter().all(|i| t.connected.contains_key(i)) || !t.failed.is_empty()
    })
    .await;
    ph.idle(Duration::from_millis(300)).await;
    let rss_before = procfs::rss_bytes(pid);
    // Subscriber legs: join as subscriber to the feed, Janus's offer, our answer with start.
    let mut join_start = HashMap::new();
    let mut sub_clients = Vec::new();
    for (k, (s, room)) in rooms.iter().enumerate() {
        for legs in &lay.legs[k] {
            for (j, &idx) in legs.iter().enumerate() {
                ph.idle(pace(started).saturating_duration_since(Instant::now())).await;
                started += 1;
                let t_join = Instant::now();
                let h = s.attach().await?;
                let body = json!({"request": "join", "room": room, "ptype": "subscriber",
                                  "streams": [{"feed": feeds[k][j]}]});
                let mut tries = 0;
                let offer = loop {
                    match s.message(h, body.clone(), None).await {
                        Ok((_, Some(j))) if j.offer => break j,
                        Ok(_) => return Err("join: no offer".into()),
                        Err(e) if e.contains("error 428") && tries < JANUS_JOIN_TRIES => {
                            tries += 1;
                            ph.idle(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e),
                    }
                };
                let d = crate::sdp::parse(&offer.sdp).map_err(|e| format!("Janus offer: {e}"))?;
                let ufrag = random_token(8);
                let pwd = random_token(24);
                let answer = janus::write_answer(
                    &d,
                    &AnswerParams {
                        ice_ufrag: &ufrag,
                        ice_pwd: &pwd,
                        fingerprint: &fp,
                        candidate: SocketAddr::new(IpAddr::V4(client_ip(idx)), load_port),
                        session_id: rand::random::<u64>() >> 2,
                    },
                )
                .ok_or("Janus offer: no audio or video to accept")?;
                let n = negotiate_with(&offer.sdp, &ufrag, pwd)?;
                s.message(h, json!({"request": "start"}), Some(Jsep { offer: false, sdp: answer }))
                    .await?;
                join_start.insert(idx, t_join);
                sub_clients.push(idx);
                ph.command(LoadCommand::Add(Box::new(ClientSpec {
                    index: idx,
                    session: k as u32,
                    server: n.server,
                    publish: None,
                    source: Some(lay.publishers[k][j]),
                    secure: Some(n.spec),
                    cap_bps: None,
                    twcc_ext: 0,
                })))
                .await?;
            }
        }
    }
    let total = lay.total as usize;
    ph.wait_for(Duration::from_secs(20) + Duration::from_secs_f64(total as f64 * 0.02), |t| {
        t.connected.len() + t.failed.len() >= total
    })
    .await;
    r.ramp_s =
        Some((ramp_start.duration_since(epoch).as_secs_f64(), epoch.elapsed().as_secs_f64()));
    ph.idle(Duration::from_millis(300)).await;
    let rss_after = procfs::rss_bytes(pid);
    r.server_rss = rss_after;
    if let (Some(a), Some(b)) = (rss_before, rss_after)
        && !sub_clients.is_empty()
    {
        r.mem_per_leg = Some((b as f64 - a as f64) / sub_clients.len() as f64);
    }
    ph.measure(&mut r, &sub_clients, &join_start).await?;
    ph.conclude(&mut r);
    if let Ok(Some(st)) = server.child.try_wait() {
        r.failures.push(format!("Janus exited during the phase ({st}): {}", server.log_tail()));
    }
    drop(rooms);
    let _ = ph.load.shards.shutdown();
    drop(server);
    Ok(r)
}

/// Runs every phase; the results and the JSON document.
pub fn run(o: &Options) -> Result<(Vec<PhaseResult>, Value), String> {
    o.validate()?;
    if o.target_list()?.contains(&Target::Janus) && !o.no_netns {
        janus::enter_netns()?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let mut phases = Vec::new();
        let targets = o.target_list()?;
        match &o.server_bin {
            _ if !targets.is_empty() => {
                for t in &targets {
                    match (t, &o.server_bin) {
                        (Target::Ringsfu(b), Some(bin)) => {
                            started_phases(o, bin, b, &mut phases).await?;
                        }
                        (Target::Ringsfu(_), None) => {
                            return Err("--targets ringsfu-<backend> needs --server-bin".into());
                        }
                        (Target::Janus, _) => phases.push(janus_phase(o, "janus").await?),
                    }
                }
            }
            Some(bin) => {
                for b in &o.backends {
                    backend_of(b)?;
                }
                for b in &o.backends {
                    started_phases(o, bin, b, &mut phases).await?;
                }
            }
            None => {
                let api = Api::new(&o.url, &o.secret);
                phases.push(ringsfu_phase(o, "ringsfu", &api, o.server_pid, None, None).await?);
            }
        }
        if o.raw {
            phases.push(raw_phase(o).await?);
        }
        let doc = report::json(o, &phases);
        Ok((phases, doc))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        o: Options,
    }

    fn opts(args: &[&str]) -> Result<Options, String> {
        let cli = Cli::try_parse_from(std::iter::once("ringsfu-load").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.o.validate()?;
        Ok(cli.o)
    }

    #[test]
    fn shard_lists_and_server_env() {
        let o = opts(&[]).expect("defaults");
        assert_eq!(o.server_shards, [1]);
        assert!(o.server_env_pairs().expect("none").is_empty());
        let o = opts(&[
            "--server-bin",
            "/bin/true",
            "--server-shards",
            "1,2",
            "--server-env",
            "RINGSFU_MEDIA_SPREAD_THRESHOLD=0",
            "--server-env",
            "A_B=x=y",
        ])
        .expect("a list");
        assert_eq!(o.server_shards, [1, 2]);
        assert_eq!(
            o.server_env_pairs().expect("pairs"),
            [
                ("RINGSFU_MEDIA_SPREAD_THRESHOLD".to_string(), "0".to_string()),
                ("A_B".to_string(), "x=y".to_string())
            ]
        );
        // A list needs a server the tool starts; no count twice; bad env entries are refused.
        assert!(opts(&["--server-shards", "1,2"]).is_err());
        assert!(opts(&["--server-bin", "/bin/true", "--server-shards", "2,2"]).is_err());
        assert!(
            opts(&["--server-bin", "/bin/true", "--server-shards", "1,2,3,4,5,6,7,8,9"]).is_err()
        );
        assert!(opts(&["--server-shards", "x"]).is_err());
        for bad in ["NOEQUALS", "=1", "A B=1", "A-B=1"] {
            assert!(opts(&["--server-env", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_are_checked() {
        let o = opts(&["--server-bin", "/bin/true", "--targets", "ringsfu-uring,janus"])
            .expect("two targets");
        assert_eq!(
            o.target_list().expect("read"),
            [Target::Ringsfu("uring".into()), Target::Janus]
        );
        assert!(opts(&["--targets", "janus"]).is_ok(), "Janus alone needs no --server-bin");
        assert!(opts(&[]).expect("defaults").target_list().expect("none").is_empty());
        for bad in [
            &["--targets", "ringsfu-uring"][..],
            &["--targets", "mediasoup"],
            &["--server-bin", "/bin/true", "--targets", "ringsfu-iocp"],
            &["--targets", "janus,janus"],
            &["--targets", "janus", "--simulcast"],
            &["--targets", "janus", "--saturate"],
            &["--targets", "janus", "--record"],
        ] {
            assert!(opts(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn saturation_options_are_bounded() {
        assert!(opts(&["--saturate"]).is_ok());
        for bad in [
            ["--saturate-factor", "1"],
            ["--saturate-factor", "5"],
            ["--saturate-factor", "NaN"],
            ["--saturate-steps", "0"],
            ["--saturate-steps", "41"],
            ["--saturate-refine", "7"],
            ["--saturate-loss=-0.1", "--quiet"],
            ["--saturate-settle", "61"],
            ["--saturate-max-time", "1"],
            ["--video-bitrate", "0"],
        ] {
            assert!(opts(&["--saturate", bad[0], bad[1]]).is_err(), "{bad:?}");
            // Without --saturate they are not looked at.
            if bad[0] != "--video-bitrate" {
                assert!(opts(&[bad[0], bad[1]]).is_ok(), "{bad:?}");
            }
        }
    }
}
