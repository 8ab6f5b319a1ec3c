//! Prometheus metrics, written by hand in the text exposition format (version 0.0.4).
//!
//! Why by hand: the exposition format is a few lines of text per metric, every number we
//! export already lives in an atomic somewhere (shard counters, webhook counters) or is counted
//! at scrape time from the registry, and a metrics crate would add a global recorder that the
//! shards must not touch on the packet path anyway.
//!
//! Three kinds of sources:
//! - counters the control plane bumps here ([`Metrics::signaling`], [`Metrics::http`]);
//! - gauges the control plane computes at scrape time ([`ControlGauges`]) and the webhook
//!   counters ([`crate::control::webhook::WebhookStats`]);
//! - the media shards, registered once at start-up with [`Metrics::register_shards`]: their
//!   [`ShardStats`] (packets, bytes, drops, loop turns, io backend), and the media cores'
//!   counters read at scrape time (DTLS handshakes and failures, ICE legs, drops by reason);
//! - the standalone TURN shards (UDP TURN with the media engine off), registered with
//!   [`Metrics::register_turn_shards`]: their [`ShardStats`] in the same `ringsfu_shard_*`
//!   families as the media shards', told apart by a `kind="turn"` label (media shards' series
//!   carry no `kind`, as before);
//! - the TURN server's shards and TCP/TLS thread, registered with [`Metrics::register_turn`]:
//!   allocations, relayed packets, authentication failures and drops by reason, which each
//!   publishes once a second ([`TurnStatsCell`]).
//!
//! Label values are bounded: signaling methods outside the OpenVidu method list are counted as
//! `other`, HTTP methods outside the standard set as `OTHER`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, RwLock};

use crate::config::IoBackend;
use crate::media::{ConsumerRow, MediaDrop, MediaStatsSnapshot};
use crate::shard::{DropReason, ShardStats};
use crate::turn::shard::{DROP_LABELS as TURN_DROP_LABELS, TurnShardStats, TurnStatsCell};

/// Every JSON-RPC method a client may call (spec §4.3); others are labelled `other`.
pub const SIGNALING_METHODS: &[&str] = &[
    "ping",
    "joinRoom",
    "publishVideo",
    "prepareReceiveVideoFrom",
    "receiveVideoFrom",
    "onIceCandidate",
    "unsubscribeFromVideo",
    "unpublishVideo",
    "streamPropertyChanged",
    "sendMessage",
    "forceDisconnect",
    "forceUnpublish",
    "leaveRoom",
    "videoData",
    "echo",
    "reconnectStream",
    "connect",
    "sessionStatus",
    "closeSession",
    "applyFilter",
    "removeFilter",
    "execFilterMethod",
    "addFilterEventListener",
    "removeFilterEventListener",
    "subscribeToSpeechToText",
    "unsubscribeFromSpeechToText",
];

/// The outcome of one signaling request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RpcResult {
    Ok,
    Error,
}

impl RpcResult {
    fn as_str(self) -> &'static str {
        match self {
            RpcResult::Ok => "ok",
            RpcResult::Error => "error",
        }
    }
}

/// Per-shard snapshots of the media cores' counters (index = shard), read at every scrape.
pub type MediaSource = Box<dyn Fn() -> Vec<MediaStatsSnapshot> + Send + Sync>;

/// Every media consumer with its shard, read at every scrape.
pub type ConsumerSource = Box<dyn Fn() -> Vec<(usize, ConsumerRow)> + Send + Sync>;

/// One registered shard.
#[derive(Clone, Debug)]
pub struct ShardMetrics {
    /// The shard index (the `shard` label).
    pub index: usize,
    pub stats: Arc<ShardStats>,
}

/// Control-plane gauges counted at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlGauges {
    /// Sessions in the registry (created, joined or not).
    pub sessions: u64,
    /// Sessions with at least one participant.
    pub active_sessions: u64,
    /// Joined connections.
    pub participants: u64,
    /// Connections not joined yet (tokens handed out).
    pub pending_connections: u64,
    /// Participants publishing a stream.
    pub publishers: u64,
    /// Subscriptions (one per subscriber per stream).
    pub subscribers: u64,
    /// Open WebSocket connections.
    pub websockets: u64,
    /// 1 while the server drains before stopping.
    pub draining: bool,
}

/// Webhook delivery counters at scrape time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WebhookCounts {
    pub queued: u64,
    pub delivered: u64,
    pub dropped_full: u64,
    pub dropped_failed: u64,
}

/// The metrics registry of the process.
#[derive(Default)]
pub struct Metrics {
    signaling: Mutex<BTreeMap<(&'static str, RpcResult), u64>>,
    http: Mutex<BTreeMap<(&'static str, u16), u64>>,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
    shards: RwLock<Vec<ShardMetrics>>,
    /// Standalone TURN shards (only when the media engine is off: otherwise the media shards
    /// host UDP TURN).
    turn_shards: RwLock<Vec<ShardMetrics>>,
    media: RwLock<Option<MediaSource>>,
    /// The media consumers (shard, row), read at every scrape.
    consumers: RwLock<Option<ConsumerSource>>,
    /// TURN counters by label (`0`, `1`... for the UDP shards, `stream` for TCP/TLS).
    turn: RwLock<Vec<(String, Arc<TurnStatsCell>)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("shards", &self.shard_count()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while counting is a bug; the counters stay usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one signaling request.
    pub fn signaling(&self, method: &str, result: RpcResult) {
        let m = SIGNALING_METHODS.iter().find(|&&k| k == method).copied().unwrap_or("other");
        *lock(&self.signaling).entry((m, result)).or_default() += 1;
    }

    /// Counts one signaling frame that was not valid JSON-RPC.
    pub fn signaling_invalid(&self) {
        *lock(&self.signaling).entry(("invalid", RpcResult::Error)).or_default() += 1;
    }

    /// Counts one HTTP response.
    pub fn http(&self, method: &axum::http::Method, status: u16) {
        use axum::http::Method as M;
        let m = match *method {
            M::GET => "GET",
            M::POST => "POST",
            M::PUT => "PUT",
            M::PATCH => "PATCH",
            M::DELETE => "DELETE",
            M::HEAD => "HEAD",
            M::OPTIONS => "OPTIONS",
            _ => "OTHER",
        };
        *lock(&self.http).entry((m, status)).or_default() += 1;
    }

    /// Counts one SIGHUP reload (`result` = `ok` or `error`).
    pub fn reload(&self, ok: bool) {
        *lock(&self.reloads).entry(if ok { "ok" } else { "error" }).or_default() += 1;
    }

    /// Registers the media shards (call once, when they run). Replaces an earlier list.
    pub fn register_shards(&self, shards: Vec<ShardMetrics>) {
        *self.shards.write().unwrap_or_else(|p| p.into_inner()) = shards;
    }

    /// Registers the standalone TURN shards' loop counters (the `TurnService`'s UDP shards when
    /// the media engine is off); exported as the media shards' are, labelled `kind="turn"`.
    /// Replaces an earlier list.
    pub fn register_turn_shards(&self, shards: Vec<Arc<ShardStats>>) {
        let shards = shards
            .into_iter()
            .enumerate()
            .map(|(index, stats)| ShardMetrics { index, stats })
            .collect();
        *self.turn_shards.write().unwrap_or_else(|p| p.into_inner()) = shards;
    }

    /// Registers the media engine's shards ([`ShardStats`] of each) and reads its cores' counters at every scrape. Called by
    /// `ControlPlane::attach_media`.
    pub fn register_media_engine(&self, engine: &Arc<crate::media::MediaEngine>) {
        let shards = engine
            .shard_stats()
            .into_iter()
            .enumerate()
            .map(|(index, stats)| ShardMetrics { index, stats })
            .collect();
        self.register_shards(shards);
        let weak = Arc::downgrade(engine);
        self.set_media_source(Box::new(move || {
            weak.upgrade().map(|e| e.stats()).unwrap_or_default()
        }));
        let weak = Arc::downgrade(engine);
        *self.consumers.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Box::new(move || weak.upgrade().map(|e| e.consumers()).unwrap_or_default()));
    }

    /// Registers the TURN server's published counters: one cell per UDP shard, then the
    /// TCP/TLS thread's (labelled `stream`). Replaces an earlier list.
    pub fn register_turn(&self, cells: Vec<Arc<TurnStatsCell>>) {
        let n = cells.len();
        let labelled = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| (if i + 1 == n { "stream".to_string() } else { i.to_string() }, c))
            .collect();
        *self.turn.write().unwrap_or_else(|p| p.into_inner()) = labelled;
    }

    /// Sets where the media cores' per-shard counters come from (the media engine).
    pub fn set_media_source(&self, source: MediaSource) {
        *self.media.write().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Number of registered shards.
    pub fn shard_count(&self) -> usize {
        self.shards.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// The whole exposition text.
    pub fn render(&self, g: &ControlGauges, w: &WebhookCounts) -> String {
        let mut out = String::with_capacity(8192);
        let o = &mut out;
        header(
            o,
            "ringsfu_build_info",
            "gauge",
            "Version of ringsfu and of the OpenVidu protocol it speaks.",
        );
        sample(
            o,
            "ringsfu_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("openvidu_version", crate::OPENVIDU_VERSION),
            ],
            1,
        );
        gauge(o, "ringsfu_sessions", "Sessions in the registry, joined or not.", g.sessions);
        gauge(
            o,
            "ringsfu_active_sessions",
            "Sessions with at least one participant.",
            g.active_sessions,
        );
        gauge(o, "ringsfu_participants", "Participants (joined connections).", g.participants);
        gauge(
            o,
            "ringsfu_pending_connections",
            "Connections whose token was not used yet.",
            g.pending_connections,
        );
        gauge(o, "ringsfu_publishers", "Participants publishing a stream.", g.publishers);
        gauge(
            o,
            "ringsfu_subscribers",
            "Subscriptions (one per subscriber and stream).",
            g.subscribers,
        );
        gauge(o, "ringsfu_websockets", "Open signaling WebSocket connections.", g.websockets);
        gauge(
            o,
            "ringsfu_draining",
            "1 while the server drains before stopping.",
            g.draining as u64,
        );

        header(
            o,
            "ringsfu_signaling_requests_total",
            "counter",
            "Signaling (JSON-RPC) requests by method and result.",
        );
        for ((m, r), n) in lock(&self.signaling).iter() {
            sample(
                o,
                "ringsfu_signaling_requests_total",
                &[("method", m), ("result", r.as_str())],
                *n,
            );
        }
        header(
            o,
            "ringsfu_http_requests_total",
            "counter",
            "HTTP responses by request method and status code.",
        );
        for ((m, code), n) in lock(&self.http).iter() {
            let code = code.to_string();
            sample(o, "ringsfu_http_requests_total", &[("method", m), ("code", &code)], *n);
        }
        header(
            o,
            "ringsfu_webhook_events_total",
            "counter",
            "Webhook events by outcome: queued, delivered, dropped_full (queue full), dropped_failed (every attempt failed).",
        );
        for (r, n) in [
            ("queued", w.queued),
            ("delivered", w.delivered),
            ("dropped_full", w.dropped_full),
            ("dropped_failed", w.dropped_failed),
        ] {
            sample(o, "ringsfu_webhook_events_total", &[("result", r)], n);
        }
        header(o, "ringsfu_reloads_total", "counter", "SIGHUP reloads by result.");
        for (r, n) in lock(&self.reloads).iter() {
            sample(o, "ringsfu_reloads_total", &[("result", r)], *n);
        }
        self.render_shards(o);
        out
    }

    fn render_shards(&self, o: &mut String) {
        let media = self.shards.read().unwrap_or_else(|p| p.into_inner()).clone();
        let turn = self.turn_shards.read().unwrap_or_else(|p| p.into_inner()).clone();
        let media_rows =
            media.iter().map(|s| (vec![("shard", s.index.to_string())], s.stats.snapshot()));
        let turn_rows = turn.iter().map(|s| {
            (vec![("shard", s.index.to_string()), ("kind", "turn".to_string())], s.stats.snapshot())
        });
        let snaps: Vec<(Labels, _)> = media_rows.chain(turn_rows).collect();
        gauge(o, "ringsfu_shards", "Media shards registered.", media.len() as u64);
        gauge(
            o,
            "ringsfu_turn_shards",
            "Standalone TURN shards registered (UDP TURN with the media engine off; their \
             ringsfu_shard_* series carry kind=\"turn\").",
            turn.len() as u64,
        );
        header(
            o,
            "ringsfu_shard_info",
            "gauge",
            "One series per shard (kind=\"turn\": a standalone TURN shard); io_backend is uring, \
             epoll or auto (not started).",
        );
        for (labels, s) in &snaps {
            let backend = match s.backend {
                IoBackend::Uring => "uring",
                IoBackend::Epoll => "epoll",
                IoBackend::Auto => "auto",
            };
            let gso = if s.gso { "true" } else { "false" };
            labelled(o, "ringsfu_shard_info", labels, &[("io_backend", backend), ("gso", gso)], 1);
        }
        let counters: [Family<crate::shard::ShardStatsSnapshot>; 9] = [
            ("ringsfu_shard_rx_packets_total", "counter", "Datagrams received.", |s| s.rx_packets),
            ("ringsfu_shard_rx_bytes_total", "counter", "Bytes received.", |s| s.rx_bytes),
            ("ringsfu_shard_tx_packets_total", "counter", "Datagrams sent.", |s| s.tx_packets),
            ("ringsfu_shard_tx_bytes_total", "counter", "Bytes sent.", |s| s.tx_bytes),
            (
                "ringsfu_shard_tx_gso_sends_total",
                "counter",
                "Sends carrying several datagrams (UDP GSO).",
                |s| s.tx_gso_sends,
            ),
            (
                "ringsfu_shard_tx_gso_datagrams_total",
                "counter",
                "Datagrams sent in those GSO sends.",
                |s| s.tx_gso_datagrams,
            ),
            (
                "ringsfu_shard_tx_reliefs_total",
                "counter",
                "Mid-turn transmit flushes because the send pool ran low (large fanouts).",
                |s| s.tx_reliefs,
            ),
            (
                "ringsfu_shard_loop_turns_total",
                "counter",
                "Event-loop turns (stops moving when a shard is stuck).",
                |s| s.turns,
            ),
            (
                "ringsfu_shard_loop_overruns_total",
                "counter",
                "Event-loop turns that overran their budget.",
                |s| s.overruns,
            ),
        ];
        families(o, &snaps, &counters);
        shard_turns(o, &snaps);
        header(
            o,
            "ringsfu_shard_drops_total",
            "counter",
            "Datagrams or events dropped by the shard shell, by reason.",
        );
        for (labels, s) in &snaps {
            for r in DropReason::ALL {
                labelled(
                    o,
                    "ringsfu_shard_drops_total",
                    labels,
                    &[("reason", r.as_str())],
                    s.drops(r),
                );
            }
        }
        self.render_media(o);
        self.render_turn(o);
    }

    fn render_turn(&self, o: &mut String) {
        let cells = self.turn.read().unwrap_or_else(|p| p.into_inner()).clone();
        let snaps: Vec<(String, TurnShardStats)> =
            cells.iter().map(|(l, c)| (l.clone(), c.load())).collect();
        let rows: Vec<(Labels, TurnShardStats)> =
            snaps.iter().map(|(l, t)| (vec![("shard", l.clone())], *t)).collect();
        let fields: [Family<TurnShardStats>; 6] = [
            (
                "ringsfu_turn_allocations",
                "gauge",
                "TURN allocations (shard: UDP shard index, or stream for TCP/TLS).",
                |t| t.allocations,
            ),
            (
                "ringsfu_turn_allocations_created_total",
                "counter",
                "TURN allocations created.",
                |t| t.allocations_created,
            ),
            (
                "ringsfu_turn_allocations_expired_total",
                "counter",
                "TURN allocations that expired without a refresh.",
                |t| t.allocations_expired,
            ),
            (
                "ringsfu_turn_auth_failures_total",
                "counter",
                "TURN requests refused for bad or missing credentials.",
                |t| t.auth_failures,
            ),
            (
                "ringsfu_turn_relay_sockets",
                "gauge",
                "Relay sockets open (with in-process delivery, allocations that reach only their \
                 shard's media port hold none).",
                |t| t.relay_sockets,
            ),
            (
                "ringsfu_turn_relay_open_failed_total",
                "counter",
                "Relayed addresses the kernel refused to open (the allocation was removed).",
                |t| t.relay_open_failed,
            ),
        ];
        families(o, &rows, &fields);
        let name = "ringsfu_turn_relayed_packets_total";
        header(o, name, "counter", "Packets relayed, by direction (to_peer, to_client).");
        for (l, t) in &snaps {
            sample(o, name, &[("shard", l), ("direction", "to_peer")], t.relayed_to_peer);
            sample(o, name, &[("shard", l), ("direction", "to_client")], t.relayed_to_client);
        }
        let name = "ringsfu_turn_in_process_total";
        header(
            o,
            name,
            "counter",
            "Relayed packets handed between the TURN and media cores of a shard without the \
             kernel (to_media, to_client).",
        );
        for (l, t) in &snaps {
            sample(o, name, &[("shard", l), ("direction", "to_media")], t.in_process_to_media);
            sample(o, name, &[("shard", l), ("direction", "to_client")], t.in_process_to_client);
        }
        let name = "ringsfu_turn_in_process_moved_total";
        header(
            o,
            name,
            "counter",
            "In-process media -> client datagrams moved in their send slot to make room for the \
             TURN header (0 while the media shard keeps headroom in front of every datagram).",
        );
        for (l, t) in &snaps {
            sample(o, name, &[("shard", l)], t.moved_for_header);
        }
        let name = "ringsfu_turn_drops_total";
        header(o, name, "counter", "TURN datagrams dropped, by reason.");
        for (l, t) in &snaps {
            for (r, v) in TURN_DROP_LABELS.iter().zip(t.drops) {
                sample(o, name, &[("shard", l), ("reason", r)], v);
            }
        }
    }

    fn render_media(&self, o: &mut String) {
        let media = self.media.read().unwrap_or_else(|p| p.into_inner());
        let snaps: Vec<(String, MediaStatsSnapshot)> = media
            .as_ref()
            .map(|f| f())
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, m)| (i.to_string(), m))
            .collect();
        let rows: Vec<(Labels, MediaStatsSnapshot)> =
            snaps.iter().map(|(i, m)| (vec![("shard", i.clone())], *m)).collect();
        drop(media);
        let fields: [Family<MediaStatsSnapshot>; 29] = [
            ("ringsfu_shard_media_publishers", "gauge", "Publisher peers on the shard.", |m| {
                m.publishers
            }),
            ("ringsfu_shard_media_subscribers", "gauge", "Subscriber peers on the shard.", |m| {
                m.subscribers
            }),
            (
                "ringsfu_shard_ice_legs",
                "gauge",
                "ICE legs (one per peer connection) on the shard.",
                |m| m.publishers + m.subscribers,
            ),
            ("ringsfu_shard_dtls_handshakes_total", "counter", "DTLS handshakes completed.", |m| {
                m.dtls_handshakes
            }),
            ("ringsfu_shard_dtls_failures_total", "counter", "DTLS handshakes failed.", |m| {
                m.dtls_failures
            }),
            (
                "ringsfu_shard_ice_consent_expired_total",
                "counter",
                "Peers removed because ICE consent expired.",
                |m| m.ice_consent_expired,
            ),
            (
                "ringsfu_shard_ice_restarts_total",
                "counter",
                "ICE restarts (new ICE credentials, same DTLS association).",
                |m| m.ice_restarts,
            ),
            (
                "ringsfu_shard_stun_checks_total",
                "counter",
                "ICE connectivity checks answered.",
                |m| m.stun_checks,
            ),
            (
                "ringsfu_shard_rtp_in_total",
                "counter",
                "RTP packets received from publishers.",
                |m| m.rtp_in,
            ),
            ("ringsfu_shard_rtp_out_total", "counter", "RTP packets sent to subscribers.", |m| {
                m.rtp_out
            }),
            (
                "ringsfu_shard_rtp_out_bytes_total",
                "counter",
                "RTP payload bytes sent to subscribers.",
                |m| m.rtp_out_bytes,
            ),
            (
                "ringsfu_shard_rtx_out_total",
                "counter",
                "Retransmissions sent (NACK answered).",
                |m| m.rtx_out,
            ),
            (
                "ringsfu_shard_rtx_missing_total",
                "counter",
                "NACKed packets no longer in the retransmission ring.",
                |m| m.rtx_missing,
            ),
            (
                "ringsfu_shard_rtx_over_budget_total",
                "counter",
                "NACKed packets not resent: the subscriber's retransmission budget was spent.",
                |m| m.rtx_over_budget,
            ),
            (
                "ringsfu_shard_rtx_too_old_total",
                "counter",
                "NACKed packets not resent: first sent too long ago to arrive in time.",
                |m| m.rtx_too_old,
            ),
            (
                "ringsfu_shard_probe_packets_total",
                "counter",
                "Padding packets sent to probe subscribers' bandwidth.",
                |m| m.probe_packets,
            ),
            (
                "ringsfu_shard_layer_switches_total",
                "counter",
                "Layer targets changed for consumers of simulcast / SVC sources.",
                |m| m.layer_switches,
            ),
            ("ringsfu_shard_nacks_in_total", "counter", "NACKs received from subscribers.", |m| {
                m.nacks_in
            }),
            ("ringsfu_shard_nacks_out_total", "counter", "NACKs sent to publishers.", |m| {
                m.nacks_out
            }),
            (
                "ringsfu_shard_nacks_renewed_total",
                "counter",
                "Publisher packets NACKed again because a subscriber asked for them after ringsfu's own tries were spent.",
                |m| m.nacks_renewed,
            ),
            (
                "ringsfu_shard_pli_out_total",
                "counter",
                "Keyframe requests (PLI) sent to publishers.",
                |m| m.pli_out,
            ),
            ("ringsfu_shard_rtcp_in_total", "counter", "RTCP packets received.", |m| m.rtcp_in),
            ("ringsfu_shard_rtcp_out_total", "counter", "RTCP packets sent.", |m| m.rtcp_out),
            (
                "ringsfu_shard_mirror_producers",
                "gauge",
                "Publishers of other shards mirrored on this shard for its consumers.",
                |m| m.mirrors,
            ),
            (
                "ringsfu_shard_mesh_out_total",
                "counter",
                "Messages written to other shards (packets, sender reports, keyframe requests).",
                |m| m.mesh_out,
            ),
            ("ringsfu_shard_mesh_in_total", "counter", "Messages read from other shards.", |m| {
                m.mesh_in
            }),
            (
                "ringsfu_shard_relay_legs",
                "gauge",
                "Relay legs to or from other nodes on this shard.",
                |m| m.relay_legs,
            ),
            (
                "ringsfu_shard_relay_in_total",
                "counter",
                "Relay RTP packets received from other nodes.",
                |m| m.relay_in,
            ),
            (
                "ringsfu_shard_relay_out_total",
                "counter",
                "Relay RTP packets sent to other nodes (forwarded and retransmitted).",
                |m| m.relay_out,
            ),
        ];
        families(o, &rows, &fields);
        header(
            o,
            "ringsfu_shard_media_drops_total",
            "counter",
            "Packets the media core dropped, by reason.",
        );
        for (i, m) in &snaps {
            for r in MediaDrop::ALL {
                sample(
                    o,
                    "ringsfu_shard_media_drops_total",
                    &[("shard", i), ("reason", r.as_str())],
                    m.drops(r),
                );
            }
        }
        self.render_consumers(o);
    }

    /// One series per subscriber transport (`transport` = its peer id, `publisher` the one it
    /// receives), refreshed by each shard once a second.
    fn render_consumers(&self, o: &mut String) {
        let source = self.consumers.read().unwrap_or_else(|p| p.into_inner());
        let rows = source.as_ref().map(|f| f()).unwrap_or_default();
        drop(source);
        type Col = (&'static str, &'static str, &'static str, fn(&ConsumerRow) -> Option<u64>);
        let cols: [Col; 8] = [
            (
                "ringsfu_consumer_estimate_bps",
                "gauge",
                "Send-side bandwidth estimate of the subscriber's link (bit/s).",
                |r| Some(r.estimate_bps),
            ),
            (
                "ringsfu_consumer_encoding",
                "gauge",
                "Simulcast encoding forwarded now (0 = lowest).",
                |r| r.current.map(|c| u64::from(c.encoding)),
            ),
            (
                "ringsfu_consumer_spatial_layer",
                "gauge",
                "Highest spatial layer forwarded (3 = all).",
                |r| r.current.map(|c| u64::from(c.spatial)),
            ),
            (
                "ringsfu_consumer_temporal_layer",
                "gauge",
                "Highest temporal layer forwarded (3 = all).",
                |r| r.current.map(|c| u64::from(c.temporal)),
            ),
            (
                "ringsfu_consumer_target_encoding",
                "gauge",
                "Simulcast encoding the estimate allows.",
                |r| r.target.map(|c| u64::from(c.encoding)),
            ),
            (
                "ringsfu_consumer_layer_switches_total",
                "counter",
                "Layer switches of the consumer.",
                |r| Some(r.switches),
            ),
            (
                "ringsfu_consumer_rtx_bytes_total",
                "counter",
                "Retransmission bytes the budget granted.",
                |r| Some(r.rtx_bytes),
            ),
            (
                "ringsfu_consumer_rtt_milliseconds",
                "gauge",
                "Round-trip time to the subscriber.",
                |r| r.rtt_ms,
            ),
        ];
        for (name, kind, help, f) in cols {
            header(o, name, kind, help);
            for (shard, r) in &rows {
                if let Some(v) = f(r) {
                    let (s, t, p) =
                        (shard.to_string(), r.transport.to_string(), r.publisher.to_string());
                    sample(o, name, &[("shard", &s), ("transport", &t), ("publisher", &p)], v);
                }
            }
        }
        let name = "ringsfu_consumer_rtx_refused_total";
        header(o, name, "counter", "NACKed packets not resent, by reason.");
        for (shard, r) in &rows {
            let (s, t, p) = (shard.to_string(), r.transport.to_string(), r.publisher.to_string());
            for (reason, v) in [("budget", r.rtx_over_budget), ("age", r.rtx_too_old)] {
                sample(
                    o,
                    name,
                    &[("shard", &s), ("transport", &t), ("publisher", &p), ("reason", reason)],
                    v,
                );
            }
        }
    }
}

/// A per-shard metric family: name, type, help, and its value in a shard's snapshot.
/// The loop-turn histogram of every shard (`ringsfu_shard_loop_turn_seconds`, cumulative
/// buckets as Prometheus wants them) and the longest turn.
fn shard_turns(o: &mut String, snaps: &[(Labels, crate::shard::ShardStatsSnapshot)]) {
    let name = "ringsfu_shard_loop_turn_seconds";
    header(o, name, "histogram", "Work time of event-loop turns (sleep excluded).");
    for (labels, s) in snaps {
        let mut cumulative = 0;
        let bounds = crate::shard::TURN_BUCKETS_US.iter().map(|us| format!("{}", *us as f64 / 1e6));
        for (le, n) in bounds.chain(std::iter::once("+Inf".to_string())).zip(s.turn_hist) {
            cumulative += n;
            labelled(o, &format!("{name}_bucket"), labels, &[("le", &le)], cumulative);
        }
        let all: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sample(o, &format!("{name}_sum"), &all, s.turn_us as f64 / 1e6);
        labelled(o, &format!("{name}_count"), labels, &[], cumulative);
    }
    let max = "ringsfu_shard_loop_turn_max_seconds";
    header(o, max, "gauge", "The longest event-loop turn so far (its work, sleep excluded).");
    for (labels, s) in snaps {
        let all: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        sample(o, max, &all, s.turn_max_us as f64 / 1e6);
    }
}

type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> u64);

/// The labels that name one shard's series (`shard`, and `kind` for a standalone TURN shard).
type Labels = Vec<(&'static str, String)>;

/// Each family of `fams` with one sample per shard of `rows` (its labels, snapshot).
fn families<T>(o: &mut String, rows: &[(Labels, T)], fams: &[Family<T>]) {
    for (name, kind, help, f) in fams {
        header(o, name, kind, help);
        for (labels, snap) in rows {
            labelled(o, name, labels, &[], f(snap));
        }
    }
}

/// One sample with a shard's labels followed by `extra`.
fn labelled(o: &mut String, name: &str, labels: &Labels, extra: &[(&str, &str)], v: u64) {
    let all: Vec<(&str, &str)> =
        labels.iter().map(|(k, v)| (*k, v.as_str())).chain(extra.iter().copied()).collect();
    sample(o, name, &all, v);
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

fn gauge(o: &mut String, name: &str, help: &str, v: u64) {
    header(o, name, "gauge", help);
    sample(o, name, &[], v);
}

/// `name{labels} v`, label values escaped.
fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], v: impl std::fmt::Display) {
    o.push_str(name);
    if !labels.is_empty() {
        o.push('{');
        for (k, (key, val)) in labels.iter().enumerate() {
            if k > 0 {
                o.push(',');
            }
            o.push_str(key);
            o.push_str("=\"");
            for ch in val.chars() {
                match ch {
                    '\\' => o.push_str("\\\\"),
                    '"' => o.push_str("\\\""),
                    '\n' => o.push_str("\\n"),
                    c => o.push(c),
                }
            }
            o.push('"');
        }
        o.push('}');
    }
    let _ = writeln!(o, " {v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line is `name{labels} value` with a declared TYPE, and names are valid.
    fn check_exposition(text: &str) {
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let v = value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line}"));
            assert!(v.is_finite() && v >= 0.0, "bad value in {line}");
            let name = series.split('{').next().unwrap();
            assert!(
                name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad name in {line}"
            );
            // A histogram's series carry a suffix on the name its TYPE line declares.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "{name} has no TYPE line");
        }
    }

    #[test]
    fn renders_every_source() {
        let m = Metrics::new();
        m.signaling("joinRoom", RpcResult::Ok);
        m.signaling("joinRoom", RpcResult::Ok);
        m.signaling("noSuchMethod\"", RpcResult::Error);
        m.signaling_invalid();
        m.http(&axum::http::Method::POST, 200);
        m.reload(true);
        let stats = Arc::new(ShardStats::default());
        stats.turn(10, false);
        stats.set_backend(IoBackend::Epoll);
        m.register_shards(vec![ShardMetrics { index: 0, stats }]);
        let turn_shard = Arc::new(ShardStats::default());
        turn_shard.turn(30_000, true);
        turn_shard.set_backend(IoBackend::Uring);
        turn_shard.publish(&mut crate::shard::stats::Tally {
            rx_packets: 3,
            tx_bytes: 96,
            ..Default::default()
        });
        m.register_turn_shards(vec![turn_shard]);
        let udp = Arc::new(TurnStatsCell::default());
        udp.store(&TurnShardStats { allocations: 4, relayed_to_peer: 7, ..Default::default() });
        m.register_turn(vec![udp, Arc::new(TurnStatsCell::default())]);
        m.set_media_source(Box::new(|| {
            vec![MediaStatsSnapshot {
                dtls_handshakes: 1,
                publishers: 1,
                subscribers: 2,
                ..Default::default()
            }]
        }));
        let g =
            ControlGauges { sessions: 2, participants: 3, draining: true, ..Default::default() };
        let w = WebhookCounts { delivered: 5, ..Default::default() };
        let text = m.render(&g, &w);
        check_exposition(&text);
        for want in [
            "ringsfu_sessions 2\n",
            "ringsfu_participants 3\n",
            "ringsfu_draining 1\n",
            "ringsfu_signaling_requests_total{method=\"joinRoom\",result=\"ok\"} 2\n",
            "ringsfu_signaling_requests_total{method=\"other\",result=\"error\"} 1\n",
            "ringsfu_signaling_requests_total{method=\"invalid\",result=\"error\"} 1\n",
            "ringsfu_http_requests_total{method=\"POST\",code=\"200\"} 1\n",
            "ringsfu_webhook_events_total{result=\"delivered\"} 5\n",
            "ringsfu_reloads_total{result=\"ok\"} 1\n",
            "ringsfu_shard_info{shard=\"0\",io_backend=\"epoll\",gso=\"false\"} 1\n",
            "ringsfu_shard_loop_turns_total{shard=\"0\"} 1\n",
            "ringsfu_shard_loop_turn_seconds_bucket{shard=\"0\",le=\"0.001\"} 1\n",
            "ringsfu_shard_loop_turn_seconds_bucket{shard=\"0\",le=\"+Inf\"} 1\n",
            "ringsfu_shard_loop_turn_seconds_count{shard=\"0\"} 1\n",
            "ringsfu_shard_loop_turn_seconds_sum{shard=\"0\"} 0.00001\n",
            "ringsfu_shard_loop_turn_max_seconds{shard=\"0\"} 0.00001\n",
            "ringsfu_shard_loop_turn_seconds_bucket{shard=\"0\",kind=\"turn\",le=\"0.02\"} 0\n",
            "ringsfu_shard_loop_turn_seconds_bucket{shard=\"0\",kind=\"turn\",le=\"0.05\"} 1\n",
            "ringsfu_shard_loop_overruns_total{shard=\"0\",kind=\"turn\"} 1\n",
            "ringsfu_shard_drops_total{shard=\"0\",reason=\"rx_truncated\"} 0\n",
            "ringsfu_shards 1\n",
            "ringsfu_turn_shards 1\n",
            "ringsfu_shard_rx_packets_total{shard=\"0\"} 0\n",
            "ringsfu_shard_rx_packets_total{shard=\"0\",kind=\"turn\"} 3\n",
            "ringsfu_shard_tx_bytes_total{shard=\"0\",kind=\"turn\"} 96\n",
            "ringsfu_shard_loop_turns_total{shard=\"0\",kind=\"turn\"} 1\n",
            "ringsfu_shard_info{shard=\"0\",kind=\"turn\",io_backend=\"uring\",gso=\"false\"} 1\n",
            "ringsfu_shard_drops_total{shard=\"0\",kind=\"turn\",reason=\"rx_truncated\"} 0\n",
            "ringsfu_shard_dtls_handshakes_total{shard=\"0\"} 1\n",
            "ringsfu_shard_ice_legs{shard=\"0\"} 3\n",
            "ringsfu_shard_media_drops_total{shard=\"0\",reason=\"srtp_failed\"} 0\n",
            "ringsfu_turn_allocations{shard=\"0\"} 4\n",
            "ringsfu_turn_allocations{shard=\"stream\"} 0\n",
            "ringsfu_turn_relayed_packets_total{shard=\"0\",direction=\"to_peer\"} 7\n",
            "ringsfu_turn_drops_total{shard=\"stream\",reason=\"turn_peer_denied\"} 0\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let mut o = String::new();
        sample(&mut o, "x", &[("a", "q\"b\\n\nl")], 1);
        assert_eq!(o, "x{a=\"q\\\"b\\\\n\\nl\"} 1\n");
    }
}
