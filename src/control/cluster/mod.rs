//! Several nodes as one deployment (`[cluster]`), on Redis.
//!
//! Redis holds only ownership and liveness ([`plan`] has the keys and scripts):
//! - each node's record (`ringsfu:node:<id>`, JSON: URLs, load), written every second with the
//!   node TTL, and its id in the `ringsfu:nodes` set;
//! - each session's owner (`ringsfu:session:<id>` = node id): claimed with `SET NX PX` when
//!   the session is created, refreshed every second for every session of the local registry
//!   (a missing key is written again, so a Redis restart loses nothing live), released by
//!   compare-and-delete when the session is gone.
//!
//! Live session state stays in the owner's registry. Any node answers the REST API
//! ([`forward`]): a request for a session not held here goes to its owner, once, over the
//! owner's internal listener, signed with `internal_secret`. Tokens are minted by the owner,
//! so they carry its WebSocket URL and browsers connect to it directly.
//!
//! Faults: a node that dies loses its record within `node_ttl`; other nodes then treat its
//! sessions as gone (404) and clear their claims. A node that cannot reach Redis refuses new
//! sessions at once (it cannot claim one), keeps serving the sessions it holds, and closes them
//! once its claims may have expired (`lease` seconds without a refresh), since another node may
//! own them by then: never two owners of one session. A refresh that finds a session owned by
//! another node closes the local copy.

pub mod forward;
pub mod plan;
pub mod span;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::config::Config;
use plan::NodeRecord;

/// How often the node's record and its claims are refreshed, and the node table read.
pub const TICK: Duration = Duration::from_secs(1);

/// How long one Redis operation may take before the store counts as unreachable.
const OP_TIMEOUT: Duration = Duration::from_millis(800);

/// Counters of `/metrics` (`ringsfu_cluster_*`).
#[derive(Debug, Default)]
pub struct ClusterCounts {
    pub forwarded: AtomicU64,
    pub forward_failures: AtomicU64,
    pub claim_conflicts: AtomicU64,
    pub fenced_sessions: AtomicU64,
    pub store_refusals: AtomicU64,
    pub bad_signatures: AtomicU64,
}

/// The cluster membership of this node: the Redis connection, the node table as last read,
/// the claims held. Lives on the control thread (its tokio runtime).
pub struct Cluster {
    pub id: String,
    pub secret: String,
    internal_url: String,
    lease: Duration,
    node_ttl: Duration,
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// Every live node's record, this one's included, as of the last tick.
    nodes: Mutex<HashMap<String, NodeRecord>>,
    /// Sessions this node holds a claim on.
    claimed: Mutex<HashSet<String>>,
    /// Redis answered the last tick.
    up: AtomicBool,
    /// When a refresh last succeeded (None: never).
    last_ok: Mutex<Option<Instant>>,
    pub counts: ClusterCounts,
    pub http: reqwest::Client,
    /// Relay legs and subscriber legs across nodes ([`span`]).
    pub(crate) spans: Mutex<span::Spans>,
    /// Remote subscriptions are set up one at a time (a relay is made once per node).
    pub(crate) span_lock: tokio::sync::Mutex<()>,
}

/// A failure to reach or use Redis, as one line.
#[derive(Debug, Clone)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError(e.to_string())
    }
}

impl Cluster {
    /// The cluster membership `cfg` describes, not yet connected (the first tick connects).
    pub fn new(cfg: &Config) -> Result<Arc<Cluster>, StoreError> {
        let c = &cfg.cluster;
        let client = redis::Client::open(c.redis_url.trim())?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| StoreError(format!("http client: {e}")))?;
        Ok(Arc::new(Cluster {
            id: c.node_id(),
            secret: c.internal_secret.clone(),
            internal_url: format!("http://{}", c.internal_address.trim()),
            lease: Duration::from_secs(c.lease),
            node_ttl: Duration::from_secs(c.node_ttl),
            client,
            conn: tokio::sync::Mutex::new(None),
            nodes: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashSet::new()),
            up: AtomicBool::new(false),
            last_ok: Mutex::new(None),
            counts: ClusterCounts::default(),
            http,
            spans: Mutex::new(span::Spans::default()),
            span_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// Whether Redis answered the last tick (new sessions are refused while not).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The node table as of the last tick.
    pub fn nodes(&self) -> HashMap<String, NodeRecord> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts a session just placed on `id` in the table until the next tick reads its record,
    /// so a burst of creations between two ticks spreads out instead of piling on one node.
    pub fn note_placed(&self, id: &str) {
        if let Some(n) = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            n.sessions += 1;
        }
    }

    /// Counts a subscriber leg just placed on `id` until the next tick reads its record.
    pub fn note_leg(&self, id: &str) {
        if let Some(n) = self.nodes.lock().unwrap_or_else(|p| p.into_inner()).get_mut(id) {
            n.connections += 1;
        }
    }

    /// A signed internal POST of JSON to `node`, its JSON answer (non-2xx: an error with the
    /// status and body).
    pub(crate) async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        node: &NodeRecord,
        path: &str,
        body: &Req,
    ) -> Result<Resp, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let r = self.signed(node, reqwest::Method::POST, path, bytes).await?;
        serde_json::from_slice(&r).map_err(|e| format!("{path}: bad answer: {e}"))
    }

    /// A signed internal DELETE.
    pub(crate) async fn delete(&self, node: &NodeRecord, path: &str) -> Result<(), String> {
        self.signed(node, reqwest::Method::DELETE, path, Vec::new()).await.map(|_| ())
    }

    async fn signed(
        &self,
        node: &NodeRecord,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, String> {
        let now = super::now_ms();
        let sig = plan::sign(&self.secret, &self.id, now, method.as_str(), path, &body);
        let resp = self
            .http
            .request(method, format!("{}{}", node.internal_url, path))
            .header(plan::H_NODE, &self.id)
            .header(plan::H_TIME, now.to_string())
            .header(plan::H_SIG, sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", node.id))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "{} answered {status}: {}",
                node.id,
                String::from_utf8_lossy(&bytes)
            ));
        }
        Ok(bytes.to_vec())
    }

    /// A live node's record (from the last tick).
    pub fn node(&self, id: &str) -> Option<NodeRecord> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let mut g = self.conn.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(OP_TIMEOUT)
            .set_response_timeout(OP_TIMEOUT)
            .set_number_of_retries(1)
            .set_max_delay(200);
        let c = tokio::time::timeout(
            OP_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        .map_err(|_| StoreError("redis: connect timed out".into()))??;
        *g = Some(c.clone());
        Ok(c)
    }

    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let c = self.conn().await?;
        match tokio::time::timeout(OP_TIMEOUT, f(c)).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError("redis: timed out".into())),
        }
    }

    /// Claims a new session for this node: false when another node owns it.
    pub async fn claim(&self, session_id: &str) -> Result<bool, StoreError> {
        let key = plan::session_key(session_id);
        let me = self.id.clone();
        let px = self.lease.as_millis() as u64;
        let set: Option<String> = self
            .run(async move |mut c| {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&me)
                    .arg("NX")
                    .arg("PX")
                    .arg(px)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if set.is_some() {
            self.claimed.lock().unwrap_or_else(|p| p.into_inner()).insert(session_id.into());
            return Ok(true);
        }
        // Already ours (a retried create, or a claim refreshed before the create finished).
        Ok(self.owner(session_id).await?.as_deref() == Some(self.id.as_str()))
    }

    /// The node id owning `session_id`, if any.
    pub async fn owner(&self, session_id: &str) -> Result<Option<String>, StoreError> {
        let key = plan::session_key(session_id);
        self.run(async move |mut c| c.get(&key).await).await
    }

    /// The live owner of a session not held here: its record, or None when nobody owns it or
    /// its owner is dead (then its stale claim is cleared, so the id is free again).
    pub async fn live_owner(&self, session_id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let Some(owner) = self.owner(session_id).await? else { return Ok(None) };
        if let Some(n) = self.node(&owner) {
            return Ok(Some(n));
        }
        // Not in the table of the last tick: read its record (it may have just joined).
        let key = plan::node_key(&owner);
        let raw: Option<String> = self.run(async move |mut c| c.get(&key).await).await?;
        if let Some(n) = raw.and_then(|r| serde_json::from_str::<NodeRecord>(&r).ok()) {
            return Ok(Some(n));
        }
        let key = plan::session_key(session_id);
        let _: Result<i64, _> = self
            .run(async move |mut c| {
                redis::Script::new(plan::COMPARE_AND_DELETE)
                    .key(&key)
                    .arg(&owner)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        Ok(None)
    }

    /// One tick: this node's record, its claims refreshed (those found owned elsewhere are
    /// returned: the caller closes them), claims of sessions gone released, the node table
    /// read. `local` is every session of the local registry.
    async fn tick(&self, record: &NodeRecord, local: &[String]) -> Result<Vec<String>, StoreError> {
        let now_ms = super::now_ms();
        let node_key = plan::node_key(&self.id);
        let json = serde_json::to_string(record).map_err(|e| StoreError(e.to_string()))?;
        let ttl_ms = self.node_ttl.as_millis() as u64;
        let me = self.id.clone();
        self.run(async move |mut c| {
            redis::pipe()
                .cmd("SET")
                .arg(&node_key)
                .arg(&json)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("ZADD")
                .arg(plan::NODES_KEY)
                .arg(now_ms)
                .arg(&me)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await?;

        let mut lost = Vec::new();
        let lease_ms = self.lease.as_millis() as u64;
        for chunk in local.chunks(512) {
            let keys: Vec<String> = chunk.iter().map(|s| plan::session_key(s)).collect();
            let me = self.id.clone();
            let res: Vec<i64> = self
                .run(async move |mut c| {
                    let script = redis::Script::new(plan::REFRESH_SCRIPT);
                    let mut inv = script.prepare_invoke();
                    for k in &keys {
                        inv.key(k);
                    }
                    inv.arg(&me).arg(lease_ms).invoke_async(&mut c).await
                })
                .await?;
            for (sid, r) in chunk.iter().zip(res) {
                if r == 0 {
                    lost.push(sid.clone());
                }
            }
        }
        // Claims of sessions that are gone here.
        let gone: Vec<String> = {
            let mut claimed = self.claimed.lock().unwrap_or_else(|p| p.into_inner());
            let now: HashSet<String> =
                local.iter().filter(|s| !lost.contains(s)).cloned().collect();
            let gone = claimed.difference(&now).cloned().collect();
            *claimed = now;
            gone
        };
        for sid in gone {
            self.release(&sid).await?;
        }

        // The node table: every member whose record still exists.
        let ids: Vec<String> =
            self.run(async move |mut c| c.zrange(plan::NODES_KEY, 0, -1).await).await?;
        let mut table = HashMap::new();
        let mut dead = Vec::new();
        if !ids.is_empty() {
            let keys: Vec<String> = ids.iter().map(|i| plan::node_key(i)).collect();
            let raws: Vec<Option<String>> = self
                .run(async move |mut c| redis::cmd("MGET").arg(&keys).query_async(&mut c).await)
                .await?;
            for (id, raw) in ids.into_iter().zip(raws) {
                match raw.and_then(|r| serde_json::from_str::<NodeRecord>(&r).ok()) {
                    Some(n) => {
                        table.insert(id, n);
                    }
                    None => dead.push(id),
                }
            }
        }
        if !dead.is_empty() {
            let _: Result<(), _> =
                self.run(async move |mut c| c.zrem::<_, _, ()>(plan::NODES_KEY, &dead).await).await;
        }
        *self.nodes.lock().unwrap_or_else(|p| p.into_inner()) = table;
        Ok(lost)
    }

    /// Releases this node's claim on a session (compare-and-delete).
    pub async fn release(&self, session_id: &str) -> Result<(), StoreError> {
        let key = plan::session_key(session_id);
        let me = self.id.clone();
        let _: i64 = self
            .run(async move |mut c| {
                redis::Script::new(plan::COMPARE_AND_DELETE)
                    .key(&key)
                    .arg(&me)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.claimed.lock().unwrap_or_else(|p| p.into_inner()).remove(session_id);
        Ok(())
    }

    /// At shutdown: every claim released, the record removed (best effort).
    pub(crate) async fn leave(&self) {
        let claimed: Vec<String> =
            self.claimed.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect();
        for sid in claimed {
            let _ = self.release(&sid).await;
        }
        let key = plan::node_key(&self.id);
        let me = self.id.clone();
        let _: Result<(), _> = self
            .run(async move |mut c| {
                redis::pipe()
                    .del(&key)
                    .ignore()
                    .zrem(plan::NODES_KEY, &me)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
    }

    /// `/metrics` lines of the cluster.
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let n = self.nodes.lock().map(|t| t.len()).unwrap_or(0);
        let claimed = self.claimed.lock().map(|t| t.len()).unwrap_or(0);
        let c = &self.counts;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let spans = self.spans.lock().map(|s| s.counts()).unwrap_or_default();
        let _ = write!(
            out,
            "# HELP ringsfu_cluster_up Whether Redis answered the last refresh.\n\
             # TYPE ringsfu_cluster_up gauge\nringsfu_cluster_up{{node=\"{id}\"}} {up}\n\
             # HELP ringsfu_cluster_nodes Live nodes as of the last refresh.\n\
             # TYPE ringsfu_cluster_nodes gauge\nringsfu_cluster_nodes {n}\n\
             # HELP ringsfu_cluster_sessions_owned Sessions this node holds a claim on.\n\
             # TYPE ringsfu_cluster_sessions_owned gauge\nringsfu_cluster_sessions_owned {claimed}\n\
             # HELP ringsfu_cluster_forwarded_total REST requests forwarded to another node.\n\
             # TYPE ringsfu_cluster_forwarded_total counter\nringsfu_cluster_forwarded_total {fw}\n\
             # HELP ringsfu_cluster_forward_failures_total Forwarded requests whose node did not answer.\n\
             # TYPE ringsfu_cluster_forward_failures_total counter\nringsfu_cluster_forward_failures_total {ff}\n\
             # HELP ringsfu_cluster_claim_conflicts_total Sessions found owned by another node.\n\
             # TYPE ringsfu_cluster_claim_conflicts_total counter\nringsfu_cluster_claim_conflicts_total {cc}\n\
             # HELP ringsfu_cluster_fenced_sessions_total Sessions closed after the claims lapsed without Redis.\n\
             # TYPE ringsfu_cluster_fenced_sessions_total counter\nringsfu_cluster_fenced_sessions_total {fs}\n\
             # HELP ringsfu_cluster_store_refusals_total Requests answered 503 because Redis could not be reached.\n\
             # TYPE ringsfu_cluster_store_refusals_total counter\nringsfu_cluster_store_refusals_total {rs}\n\
             # HELP ringsfu_cluster_relays_out Relay legs sending this node's publishers to other nodes.\n\
             # TYPE ringsfu_cluster_relays_out gauge\nringsfu_cluster_relays_out {ro}\n\
             # HELP ringsfu_cluster_remote_legs Subscriber legs of this node's sessions hosted by other nodes.\n\
             # TYPE ringsfu_cluster_remote_legs gauge\nringsfu_cluster_remote_legs {rl}\n\
             # HELP ringsfu_cluster_relays_in Relay legs received from other nodes.\n\
             # TYPE ringsfu_cluster_relays_in gauge\nringsfu_cluster_relays_in {ri}\n\
             # HELP ringsfu_cluster_hosted_legs Subscriber legs hosted here for other nodes' sessions.\n\
             # TYPE ringsfu_cluster_hosted_legs gauge\nringsfu_cluster_hosted_legs {hl}\n\
             # HELP ringsfu_cluster_bad_signatures_total Internal requests refused for their signature.\n\
             # TYPE ringsfu_cluster_bad_signatures_total counter\nringsfu_cluster_bad_signatures_total {bs}\n",
            id = self.id,
            up = u8::from(self.is_up()),
            fw = g(&c.forwarded),
            ff = g(&c.forward_failures),
            cc = g(&c.claim_conflicts),
            fs = g(&c.fenced_sessions),
            rs = g(&c.store_refusals),
            bs = g(&c.bad_signatures),
            ro = spans.0,
            rl = spans.1,
            ri = spans.2,
            hl = spans.3,
        );
    }
}

/// The record this node publishes now.
fn record_of(
    cluster: &Cluster,
    inner: &super::Inner,
    sessions: u64,
    connections: u64,
) -> NodeRecord {
    NodeRecord {
        id: cluster.id.clone(),
        public_url: inner.cfg.public_url(),
        ws_url: inner.cfg.ws_url(),
        internal_url: cluster.internal_url.clone(),
        sessions,
        connections,
        shards: inner.cfg.effective_shards() as u64,
        draining: inner.draining.load(Ordering::Relaxed),
        // (A record only reaches Redis when Redis is reachable: no need to say so.)
        refusing: sessions as usize >= inner.cfg.sessions.max_sessions,
    }
}

/// The cluster's background task: one [`Cluster::tick`] a second until `stop`, then the claims
/// are released and the record removed.
pub(crate) async fn run(
    cluster: Arc<Cluster>,
    inner: Arc<super::Inner>,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut iv = tokio::time::interval(TICK);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = iv.tick() => {}
            // The caller releases the claims and the record (`ControlPlane::leave_cluster`).
            _ = stop.notified() => return,
        }
        let (local, connections) = inner.with(|st| {
            let ss = st.reg.sessions();
            let conns: usize = ss.iter().map(|s| s.connections.len()).sum();
            (ss.iter().map(|s| s.id.clone()).collect::<Vec<_>>(), conns)
        });
        let record = record_of(&cluster, &inner, local.len() as u64, connections as u64);
        match cluster.tick(&record, &local).await {
            Ok(lost) => {
                cluster.up.store(true, Ordering::Relaxed);
                *cluster.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                if warned {
                    tracing::info!(node = %cluster.id, "cluster store reachable again");
                    warned = false;
                }
                if !lost.is_empty() {
                    cluster.counts.claim_conflicts.fetch_add(lost.len() as u64, Ordering::Relaxed);
                    tracing::warn!(sessions = ?lost, "sessions owned by another node: closing them here");
                    close_all(&inner, &lost);
                }
            }
            Err(e) => {
                cluster.up.store(false, Ordering::Relaxed);
                // A broken connection is made again next tick.
                *cluster.conn.lock().await = None;
                if !warned {
                    tracing::error!(node = %cluster.id, error = %e, "cluster store unreachable: refusing new sessions");
                    warned = true;
                }
                let since = *cluster.last_ok.lock().unwrap_or_else(|p| p.into_inner());
                let lapsed = since.is_none_or(|t| t.elapsed() >= cluster.lease);
                if lapsed && !local.is_empty() {
                    cluster.counts.fenced_sessions.fetch_add(local.len() as u64, Ordering::Relaxed);
                    tracing::error!(
                        sessions = local.len(),
                        "cluster store unreachable for longer than the lease: closing this node's sessions (another node may own them now)"
                    );
                    close_all(&inner, &local);
                    cluster.claimed.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
            }
        }
    }
}

fn close_all(inner: &super::Inner, sessions: &[String]) {
    let now = super::now_ms();
    inner.with(|st| {
        for sid in sessions {
            st.reg.close_session(sid, "sessionClosedByServer", now);
        }
    });
}
