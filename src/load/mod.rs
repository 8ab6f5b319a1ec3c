//! `ringsfu-load`: a load generator that speaks the real protocols (issue 6).
//!
//! Many clients in one process: the control part (REST sessions and tokens, one WebSocket
//! JSON-RPC connection per participant: joinRoom, publishVideo, receiveVideoFrom) runs on a
//! tokio current-thread runtime ([`signal`]); the media part of every client (ICE, DTLS client,
//! SRTP, synthetic RTP) runs in one [`LoadCore`] on the crate's own I/O shell, one thread and
//! one socket, each client on its own loopback source address ([`core`]).
//!
//! A run is a list of phases over the same topology (P publishers x S subscribers per session x
//! K sessions): one per ringsfu server (the given one, or one per `--backends` entry when the
//! tool starts `--server-bin` itself), and with `--raw` the same packets through a minimal
//! forwarder ([`raw`]), the machine's ceiling. Each phase: join at the ramp rate, wait until
//! every client is connected and receiving, then count for `--duration` seconds (the window),
//! stop the publishers and let the last packets arrive. Results: a progress line per second, a
//! table, `--json`, `--svg` ([`report`]); ratios to the raw phase and between backends.
//!
//! The figures are refused (exit status 3, `"valid": false` in the JSON) when the load
//! generator's own thread was busy for more than `--max-load-cpu` of the window: then it, not
//! the server, was the bottleneck.

pub mod core;
pub mod hist;
pub mod offer;
pub mod procfs;
pub mod raw;
pub mod report;
pub mod signal;
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
use self::raw::{RawCommand, RawForwarder};
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
    /// Data-plane shards of the started server.
    #[arg(long, default_value_t = 1)]
    pub server_shards: usize,
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

    /// Subscriber legs (peer connections receiving one publisher each).
    pub fn legs(&self) -> u64 {
        u64::from(self.sessions) * u64::from(self.publishers) * u64::from(self.subscribers)
    }

    /// Packets the server should forward per second.
    pub fn expected_egress_pps(&self) -> f64 {
        self.legs() as f64 * self.media().packets_per_second()
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
    /// Data-plane CPU seconds of the server (or forwarder) in the window, per shard.
    pub shard_cpu: Vec<(String, f64)>,
    pub server_cpu_total: Option<f64>,
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
    pub fn data_plane_cpu(&self) -> f64 {
        self.shard_cpu.iter().map(|(_, c)| c).sum()
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

fn spawn_load(o: &Options, epoch: Instant, dtls: Option<DtlsContext>) -> Result<LoadShard, String> {
    let settings = LoadSettings { media: o.media(), verify_every: o.verify_every(), epoch, dtls };
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

    /// Runs the window once every client is set up; fills the common fields of `r`.
    async fn measure(
        &mut self,
        r: &mut PhaseResult,
        subscriber_clients: &[u32],
        join_start: &HashMap<u32, Instant>,
        data_plane: impl Fn() -> Vec<(String, f64)>,
    ) -> Result<(), String> {
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
        // Let join bursts and keyframe requests settle before counting.
        self.idle(Duration::from_millis(500)).await;
        let cpu0 = data_plane();
        let load0 = self.load_cpu();
        let server0 = self.server_pid.and_then(procfs::process_cpu);
        let udp0 = procfs::udp_errors();
        let t0 = Instant::now();
        self.command(LoadCommand::StartWindow).await?;
        self.idle(Duration::from_secs_f64(self.o.duration)).await;
        self.command(LoadCommand::StopMedia).await?;
        let window = t0.elapsed().as_secs_f64();
        let cpu1 = data_plane();
        let load1 = self.load_cpu();
        let server1 = self.server_pid.and_then(procfs::process_cpu);
        // The last packets are in flight; nothing new is sent.
        self.idle(Duration::from_millis(500)).await;
        r.udp_buffer_drops = udp0.zip(procfs::udp_errors()).map(|(a, b)| (b.1 - a.1, b.2 - a.2));
        self.command(LoadCommand::Finish).await?;
        if !self.wait_for(Duration::from_secs(10), |t| t.final_report.is_some()).await {
            return Err("the load core sent no final report".into());
        }
        let f = self.tr.final_report.take().unwrap_or_default();
        r.window_s = window;
        r.connected = self.tr.connected.len() as u32;
        r.failures.extend(self.tr.failed.iter().take(20).cloned());
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
        for i in subscriber_clients {
            if let (Some(s), Some(m)) = (join_start.get(i), self.tr.first_media.get(i)) {
                r.join_to_first.record(m.saturating_duration_since(*s).as_micros() as u64);
            }
        }
        r.shard_cpu = cpu1
            .iter()
            .map(|(n, c)| {
                let before = cpu0.iter().find(|(m, _)| m == n).map_or(0.0, |x| x.1);
                (n.clone(), c - before)
            })
            .collect();
        r.server_cpu_total = server0.zip(server1).map(|(a, b)| b - a);
        r.load_cpu = (load1 - load0) / window.max(1e-9);
        r.sent_bytes = f.sent_bytes;
        r.recv_bytes = f.recv_bytes;
        r.seconds = std::mem::take(&mut self.tr.seconds);
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
}

fn negotiate(answer: &str, local_ufrag: &str) -> Result<Negotiated, String> {
    let d = crate::sdp::parse(answer).map_err(|e| format!("answer: {e}"))?;
    let server = d
        .candidates
        .iter()
        .filter(|c| c.udp)
        .map(|c| c.addr)
        .find(SocketAddr::is_ipv4)
        .ok_or("answer has no IPv4 UDP candidate")?;
    let fp = Fingerprint::sha256(&d.fingerprint).ok_or("answer has no sha-256 fingerprint")?;
    Ok(Negotiated {
        spec: SecureSpec {
            local_ufrag: local_ufrag.to_string(),
            remote_ufrag: d.ice_ufrag,
            remote_pwd: d.ice_pwd,
            remote_fingerprint: fp,
        },
        server,
    })
}

/// One subscribing participant to join: its session, its legs (client index, stream id,
/// publisher client index).
struct SubscriberSpec {
    api: Api,
    session: String,
    name: String,
    legs: Vec<(u32, String, u32)>,
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
        for (idx, stream, publisher) in self.legs {
            let (ufrag, offer) = client_offer(idx, &self.fingerprint, self.load_port, None);
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
) -> (String, String) {
    let ufrag = random_token(8);
    let offer = offer::write_offer(&offer::OfferParams {
        ice_ufrag: &ufrag,
        ice_pwd: &random_token(24),
        fingerprint,
        candidate: SocketAddr::new(IpAddr::V4(client_ip(idx)), load_port),
        send_ssrcs,
        session_id: rand::random::<u64>() >> 2,
    });
    (ufrag, offer)
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
) -> Result<PhaseResult, String> {
    let epoch = Instant::now();
    let cert = DtlsCert::generate().map_err(|e| format!("certificate: {e}"))?;
    let fp = cert.sdp_fingerprint();
    let fp = fp.strip_prefix("sha-256 ").unwrap_or(&fp).to_string();
    let ctx = DtlsContext::new(cert, &DtlsConfig::default()).map_err(|e| format!("dtls: {e}"))?;
    let load = spawn_load(o, epoch, Some(ctx))?;
    let lay = layout(o);
    let mut ph = Phase {
        o,
        label: label.to_string(),
        load,
        tr: Tracker::default(),
        server_pid,
        last_server_cpu: None,
    };
    let mut r = PhaseResult {
        label: label.to_string(),
        kind: "ringsfu",
        backend,
        clients: lay.total,
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
            let (ufrag, offer) = client_offer(idx, &fp, load_port, Some(ssrcs));
            let res = p
                .call(
                    "publishVideo",
                    json!({"sdpOffer": offer, "doLoopback": false, "hasAudio": true,
                       "hasVideo": true, "audioActive": true, "videoActive": true,
                       "typeOfVideo": "CAMERA", "frameRate": o.fps,
                       "videoDimensions": "{\"width\":640,\"height\":480}"}),
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
                    .map(|(j, &idx)| (idx, streams[k][j].clone(), lay.publishers[k][j]))
                    .collect(),
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
    let pid = server_pid;
    let dp = move || pid.map(procfs::shard_cpu).unwrap_or_default();
    // Memory per leg once every leg is up.
    let total = lay.total as usize;
    ph.wait_for(Duration::from_secs(20) + Duration::from_secs_f64(total as f64 * 0.02), |t| {
        t.connected.len() + t.failed.len() >= total
    })
    .await;
    let turns_after_ramp = scrape_turns(api).await;
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
    ph.measure(&mut r, &sub_clients, &join_start, dp).await?;
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
    };
    let mut r =
        PhaseResult { label: "raw".into(), kind: "raw", clients: lay.total, ..Default::default() };
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
                };
                ph.command(LoadCommand::Add(Box::new(spec))).await?;
                subs.push(i);
            }
        }
    }
    let pid = std::process::id();
    let ftid = fwd_tid.load(Ordering::Acquire);
    let dp = move || {
        procfs::thread_cpu(pid, ftid)
            .map(|c| vec![("forwarder".to_string(), c)])
            .unwrap_or_default()
    };
    ph.measure(&mut r, &subs, &join_start, dp).await?;
    let _ = ph.load.shards.shutdown();
    let _ = fwd.shutdown();
    Ok(r)
}

/// A ringsfu process started by the tool.
struct Server {
    child: std::process::Child,
    api: Api,
}

impl Drop for Server {
    fn drop(&mut self) {
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

async fn start_server(o: &Options, bin: &std::path::Path, backend: &str) -> Result<Server, String> {
    let port = free_port(false)?;
    let media = free_port(true)?;
    let secret = o.secret.clone();
    let child = std::process::Command::new(bin)
        .args(["--port", &port.to_string(), "--secret", &secret, "--log-level", "warn"])
        .args(["--set", &format!("media.io_backend={backend}")])
        .args(["--set", &format!("media.shards={}", o.server_shards)])
        .args(["--set", &format!("media.port_base={media}")])
        .args(["--set", "turn.enabled=false"])
        .args(["--set", "server.address=127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let api = Api::new(&format!("http://127.0.0.1:{port}"), &secret);
    let mut s = Server { child, api };
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

/// Runs every phase; the results and the JSON document.
pub fn run(o: &Options) -> Result<(Vec<PhaseResult>, Value), String> {
    if o.publishers == 0 || o.subscribers == 0 || o.sessions == 0 {
        return Err("--publishers, --subscribers and --sessions must be at least 1".into());
    }
    if !(o.duration > 0.0 && o.duration <= 3600.0) {
        return Err("--duration must be in (0, 3600] seconds".into());
    }
    let total = layout(o).total;
    if total > 200_000 {
        return Err(format!("{total} clients: at most 200000"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    rt.block_on(async {
        let mut phases = Vec::new();
        match &o.server_bin {
            Some(bin) => {
                for b in &o.backends {
                    backend_of(b)?;
                    let server = start_server(o, bin, b).await?;
                    let pid = server.child.id();
                    let r = ringsfu_phase(
                        o,
                        &format!("ringsfu-{b}"),
                        &server.api,
                        Some(pid),
                        Some(b.clone()),
                    )
                    .await;
                    drop(server);
                    phases.push(r?);
                }
            }
            None => {
                let api = Api::new(&o.url, &o.secret);
                phases.push(ringsfu_phase(o, "ringsfu", &api, o.server_pid, None).await?);
            }
        }
        if o.raw {
            phases.push(raw_phase(o).await?);
        }
        let doc = report::json(o, &phases);
        Ok((phases, doc))
    })
}
