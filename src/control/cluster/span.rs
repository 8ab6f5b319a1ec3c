//! A session spanning nodes: subscriber legs on another node, fed by relay legs.
//!
//! On the owner (O), once it hosts `[cluster] spill_after` subscriber legs, a new subscriber
//! leg (`receiveVideoFrom` with the browser's offer) goes to the least loaded other node (R):
//! 1. the publisher's tracks reach R once per (stream, node): O draws a `RelayPlan`, R makes
//!    the relay in (`POST /ringsfu/internal/relay`, answered with its address), O adds the
//!    relay out on the publisher's shard;
//! 2. R gives the leg's transport (`POST /ringsfu/internal/leg`: its shard's candidates, ICE
//!    credentials, DTLS fingerprint); O answers the browser's offer with them (O keeps the
//!    signaling), then R adds the leg fed from its relay in (`POST .../leg/attach`);
//! 3. the registry on O records the subscription with a local alias of the transport
//!    (`TransportRef { peer: alias, shard: REMOTE_SHARD }`); R sends the leg's media events
//!    back (`POST /ringsfu/internal/event`), which O handles as a local shard's;
//! 4. releasing the subscription deletes the leg on R (`DELETE .../leg/<peer>`); the last leg
//!    of a relay takes the relay with it on both nodes.
//!
//! Not spanned: server offers (`prepareReceiveVideoFrom`, openvidu-browser's simulcast mode)
//! and publishers (always on the owner).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Cluster;
use super::plan::NodeRecord;
use crate::control::media::Caller;
use crate::control::registry::{
    AnsweredLeg, PendingOffer, PublishedMedia, REMOTE_SHARD, ReceivedMedia, TransportRef,
};
use crate::control::{Inner, now_ms};
use crate::dtls::{DtlsRole, Fingerprint};
use crate::media::{
    IceParams, InTrack, MediaEngine, Origin, OutTrack, PeerId, ShardCommand, ShardEvent,
};
use crate::media::{RelayOffer, RelayPlan};
use crate::sdp::{self, LocalTransport};
use crate::signaling::{RpcError, code};

/// A relay out on the owner: one per (stream's publisher, node).
#[derive(Debug, Clone)]
struct RelayOut {
    peer: PeerId,
    shard: usize,
    node: String,
    legs: usize,
}

/// A subscriber leg of the owner's registry hosted by another node.
#[derive(Debug, Clone)]
struct RemoteLeg {
    node: String,
    peer: u64,
    relay: String,
    session: String,
}

/// A relay in on a hosting node.
#[derive(Debug, Clone)]
struct RelayIn {
    peer: PeerId,
    shard: usize,
    tracks: Vec<InTrack>,
    legs: usize,
}

/// A leg hosted here for another node's session.
#[derive(Debug, Clone)]
struct HostedLeg {
    owner: String,
    alias: u64,
    relay: String,
    shard: usize,
    /// ICE credentials given to the owner, until it attaches the leg.
    ice: Option<(String, String)>,
}

/// Both sides' state (a node is owner of some sessions and host of others' legs).
#[derive(Debug, Default)]
pub struct Spans {
    relays_out: HashMap<String, RelayOut>,
    remote_legs: HashMap<PeerId, RemoteLeg>,
    relays_in: HashMap<String, RelayIn>,
    hosted: HashMap<PeerId, HostedLeg>,
    /// Server offers made for legs on other nodes, until answered: (session, connection,
    /// stream) -> the prepared leg.
    pending: HashMap<(String, String, String), PendingLeg>,
}

/// A leg prepared on another node for a server offer not answered yet.
#[derive(Debug, Clone)]
struct PendingLeg {
    node: String,
    peer: u64,
    relay: String,
}

impl Spans {
    /// (relays out, legs elsewhere, relays in, legs hosted for others): for `/metrics`.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (self.relays_out.len(), self.remote_legs.len(), self.relays_in.len(), self.hosted.len())
    }
}

fn lock(m: &Mutex<Spans>) -> std::sync::MutexGuard<'_, Spans> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(msg: impl std::fmt::Display) -> RpcError {
    RpcError::new(code::GENERIC, format!("placing the subscription on another node: {msg}"))
}

/// The node a new subscriber leg of this owner goes to, when it spills: `[cluster]
/// spill_after` legs hosted here already, and another node accepts. Among the others, the one
/// with the fewest legs of this session (a big room spreads over every node), then the least
/// loaded.
pub(crate) fn spill_target(inner: &Inner, cluster: &Cluster, session: &str) -> Option<NodeRecord> {
    let limit = inner.cfg.cluster.spill_after;
    if limit == 0 {
        return None;
    }
    let local = inner.with(|st| st.reg.local_legs());
    if (local as u64) < limit {
        return None;
    }
    let nodes = cluster.nodes();
    let mut others: Vec<&NodeRecord> =
        nodes.values().filter(|n| n.id != cluster.id && n.accepts()).collect();
    let legs_of = |node: &str| {
        lock(&cluster.spans)
            .remote_legs
            .values()
            .filter(|l| l.session == session && l.node == node)
            .count()
    };
    others.sort_by(|a, b| {
        legs_of(&a.id)
            .cmp(&legs_of(&b.id))
            .then(a.load().total_cmp(&b.load()))
            .then(a.id.cmp(&b.id))
    });
    let n = others.first().map(|n| (*n).clone())?;
    cluster.note_leg(&n.id);
    Some(n)
}

/// Whether the caller's subscription to `stream` is a leg on another node.
pub(crate) fn is_remote(inner: &Inner, caller: &Caller, stream: &str) -> bool {
    inner.with(|st| {
        st.reg
            .received(&caller.session_id, &caller.connection_id, stream)
            .is_some_and(|r| r.at.shard == REMOTE_SHARD)
    })
}

#[derive(Serialize, Deserialize)]
struct RelayReq {
    key: String,
    source: SocketAddr,
    offer: RelayOffer,
}

#[derive(Serialize, Deserialize)]
struct RelayResp {
    peer: u64,
    shard: usize,
    address: SocketAddr,
}

#[derive(Serialize, Deserialize)]
struct LegResp {
    peer: u64,
    shard: usize,
    ufrag: String,
    pwd: String,
    fingerprint: String,
    candidates: Vec<SocketAddr>,
    session_id: u64,
}

impl LegResp {
    /// The host's half of the leg's transport, as the owner's SDP names it.
    fn transport(&self) -> LocalTransport {
        LocalTransport {
            ice_ufrag: self.ufrag.clone(),
            ice_pwd: self.pwd.clone(),
            fingerprint_sha256: self.fingerprint.clone(),
            candidates: self.candidates.clone(),
            session_id: self.session_id,
            session_version: 2,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct AttachReq {
    peer: u64,
    relay: String,
    remote_ufrag: String,
    /// SHA-256 digest of the browser's certificate.
    remote_fingerprint: Vec<u8>,
    dtls_server: bool,
    tracks: Vec<OutTrack>,
    alias: u64,
    owner: String,
}

#[derive(Serialize, Deserialize)]
struct EventReq {
    alias: u64,
    kind: String,
    reason: String,
}

/// O: the relay of `publisher` to `node` (made once per pair) and a new leg's transport
/// there. Returns the relay key and the leg.
async fn relay_and_leg(
    engine: &MediaEngine,
    cluster: &Cluster,
    node: &NodeRecord,
    stream: &str,
    publisher: &PublishedMedia,
) -> Result<(String, LegResp), RpcError> {
    // One relay per (publisher, node): the key names both (and the owner, for the host).
    let key = format!("{}|{}|{}|{}", cluster.id, stream, publisher.at.peer.0, node.id);
    let have = lock(&cluster.spans).relays_out.contains_key(&key);
    if !have {
        let tracks: Vec<InTrack> =
            publisher.negotiated.iter().map(InTrack::from_negotiated).collect();
        let plan = RelayPlan::new(&tracks);
        let source = engine
            .relay_address(publisher.at.shard)
            .ok_or_else(|| err("no relay address on the publisher's shard"))?;
        let req = RelayReq { key: key.clone(), source, offer: plan.offer() };
        let resp: RelayResp =
            cluster.call(node, "/ringsfu/internal/relay", &req).await.map_err(err)?;
        let id = engine.new_peer_id();
        let cmd = plan.command(id, publisher.at.peer, resp.address, None);
        engine.send(publisher.at.shard, cmd).map_err(|e| err(format!("{e:?}")))?;
        lock(&cluster.spans).relays_out.insert(
            key.clone(),
            RelayOut { peer: id, shard: publisher.at.shard, node: node.id.clone(), legs: 0 },
        );
        tracing::info!(stream, node = %node.id, relay = id.0, to = %resp.address, "relay leg to another node");
    }
    let leg: LegResp =
        cluster.call(node, "/ringsfu/internal/leg", &json!({ "relay": key })).await.map_err(err)?;
    Ok((key, leg))
}

/// O: a leg attached on its node is recorded: the relay counts it, the registry holds the
/// subscription under a local alias. On a registry refusal the leg is released again.
#[allow(clippy::too_many_arguments)]
async fn attach_and_record(
    inner: &Arc<Inner>,
    engine: &MediaEngine,
    cluster: &Cluster,
    node: &NodeRecord,
    caller: &Caller,
    stream: &str,
    mut attach: AttachReq,
    answered: Option<AnsweredLeg>,
) -> Result<(), RpcError> {
    let alias = engine.new_peer_id();
    attach.alias = alias.0;
    let (peer, key) = (attach.peer, attach.relay.clone());
    let _: Value =
        cluster.call(node, "/ringsfu/internal/leg/attach", &attach).await.map_err(err)?;
    {
        let mut sp = lock(&cluster.spans);
        if let Some(r) = sp.relays_out.get_mut(&key) {
            r.legs += 1;
        }
        sp.remote_legs.insert(
            alias,
            RemoteLeg {
                node: node.id.clone(),
                peer,
                relay: key,
                session: caller.session_id.clone(),
            },
        );
    }
    let received =
        ReceivedMedia { at: TransportRef { peer: alias, shard: REMOTE_SHARD }, answered };
    let recorded = inner.with(|st| {
        st.reg.add_subscriber(&caller.session_id, &caller.connection_id, stream, now_ms())?;
        st.reg.set_subscription_transport(
            &caller.session_id,
            &caller.connection_id,
            stream,
            received,
        );
        Ok::<_, RpcError>(())
    });
    if let Err(e) = recorded {
        release_refs(inner, &[TransportRef { peer: alias, shard: REMOTE_SHARD }]);
        return Err(e);
    }
    tracing::info!(session = %caller.session_id, stream, subscriber = %caller.connection_id, node = %node.id, peer, alias = alias.0, "subscribing on another node");
    Ok(())
}

/// O: the caller asked for a server offer (`prepareReceiveVideoFrom`, openvidu-browser's
/// simulcast mode) of a leg on `node`: the offer names that node's transport; the answer
/// ([`answer_remote`]) attaches the leg there.
pub(crate) async fn prepare_remote(
    inner: Arc<Inner>,
    engine: Arc<MediaEngine>,
    cluster: Arc<Cluster>,
    caller: Caller,
    stream: String,
    node: NodeRecord,
) -> Result<Value, RpcError> {
    let _one_at_a_time = cluster.span_lock.lock().await;
    let (owner, publisher, outgoing) =
        crate::control::media_rpc::outgoing_of(&inner, &caller, &stream)?;
    let (key, leg) = relay_and_leg(&engine, &cluster, &node, &stream, &publisher).await?;
    let local = leg.transport();
    let offer = sdp::offer_subscribe(&local, &outgoing);
    let sdp_offer = offer.sdp.clone();
    let pending = PendingOffer {
        stream_id: stream.clone(),
        offer,
        ice_ufrag: leg.ufrag,
        ice_pwd: leg.pwd,
        sources: (0..outgoing.len()).collect(),
        shard: REMOTE_SHARD,
    };
    inner.with(|st| st.reg.put_offer(&caller.session_id, &caller.connection_id, pending));
    let slot = (caller.session_id.clone(), caller.connection_id.clone(), stream.clone());
    let earlier = lock(&cluster.spans)
        .pending
        .insert(slot, PendingLeg { node: node.id.clone(), peer: leg.peer, relay: key });
    if let Some(old) = earlier {
        // An offer made before and never answered: its prepared leg goes.
        if let Some(n) = cluster.node(&old.node) {
            let _ = cluster.delete(&n, &format!("/ringsfu/internal/leg/{}", old.peer)).await;
        }
    }
    let endpoint = format!("{}_{stream}", caller.connection_id);
    crate::control::media_rpc::trickle_of(&inner, &caller, &owner, &endpoint, &sdp_offer);
    Ok(json!({ "sdpOffer": sdp_offer }))
}

/// Whether the caller's pending server offer for `stream` names a leg on another node.
pub(crate) fn has_pending(inner: &Inner, caller: &Caller, stream: &str) -> bool {
    inner.cluster.get().is_some_and(|c| {
        let slot = (caller.session_id.clone(), caller.connection_id.clone(), stream.to_string());
        lock(&c.spans).pending.contains_key(&slot)
    })
}

/// O: the browser's answer to a server offer of a leg on another node: the leg is attached
/// there and recorded here.
pub(crate) async fn answer_remote(
    inner: Arc<Inner>,
    engine: Arc<MediaEngine>,
    cluster: Arc<Cluster>,
    caller: Caller,
    stream: String,
    answer_sdp: String,
) -> Result<Value, RpcError> {
    let _one_at_a_time = cluster.span_lock.lock().await;
    let slot = (caller.session_id.clone(), caller.connection_id.clone(), stream.clone());
    let Some(p) = lock(&cluster.spans).pending.remove(&slot) else {
        return Err(err("no offer was made for this stream"));
    };
    let node = cluster.node(&p.node).ok_or_else(|| err(format!("node {} is gone", p.node)))?;
    let pending =
        inner.with(|st| st.reg.take_offer(&caller.session_id, &caller.connection_id, &stream));
    let Some(pending) = pending else {
        return Err(RpcError::new(
            code::MEDIA_SDP_ERROR,
            format!("No offer was made for stream {stream}: call prepareReceiveVideoFrom first"),
        ));
    };
    let answer = sdp::parse(&answer_sdp).map_err(crate::control::media_rpc::sdp_error)?;
    let tracks = crate::control::media_rpc::answered_tracks(&pending, &answer)?;
    let attach = AttachReq {
        peer: p.peer,
        relay: p.relay,
        remote_ufrag: answer.ice_ufrag.clone(),
        remote_fingerprint: answer.fingerprint.clone(),
        dtls_server: answer.setup != sdp::Setup::Passive,
        tracks,
        alias: 0,
        owner: cluster.id.clone(),
    };
    attach_and_record(&inner, &engine, &cluster, &node, &caller, &stream, attach, None).await?;
    Ok(json!({}))
}

/// O: subscribes the caller to `stream` with a leg on `node` (see the module doc).
pub(crate) async fn subscribe_remote(
    inner: Arc<Inner>,
    engine: Arc<MediaEngine>,
    cluster: Arc<Cluster>,
    caller: Caller,
    stream: String,
    offer_sdp: String,
    node: NodeRecord,
) -> Result<Value, RpcError> {
    let _one_at_a_time = cluster.span_lock.lock().await;
    let offer = sdp::parse(&offer_sdp).map_err(crate::control::media_rpc::sdp_error)?;
    let fp = crate::control::media_rpc::remote_fingerprint(&offer)?;
    let (owner, publisher, outgoing) =
        crate::control::media_rpc::outgoing_of(&inner, &caller, &stream)?;
    let (key, leg) = relay_and_leg(&engine, &cluster, &node, &stream, &publisher).await?;
    let local = leg.transport();
    let neg = sdp::answer_subscribe(&offer, &local, &outgoing)
        .map_err(crate::control::media_rpc::sdp_error)?;
    let tracks = OutTrack::for_answer(&neg.media, &outgoing);
    let attach = AttachReq {
        peer: leg.peer,
        relay: key,
        remote_ufrag: offer.ice_ufrag.clone(),
        remote_fingerprint: offer.fingerprint.clone(),
        dtls_server: true,
        tracks,
        alias: 0,
        owner: cluster.id.clone(),
    };
    let answered = Some(AnsweredLeg { connection_of: (fp, offer.origin_session), outgoing });
    attach_and_record(&inner, &engine, &cluster, &node, &caller, &stream, attach, answered).await?;
    let endpoint = format!("{}_{stream}", caller.connection_id);
    crate::control::media_rpc::trickle_of(&inner, &caller, &owner, &endpoint, &neg.sdp);
    Ok(json!({ "sdpAnswer": neg.sdp }))
}

/// O: the registry released these remote legs: each is deleted on its node; a relay whose
/// last leg went is taken down on both nodes. Runs the calls in the background.
pub(crate) fn release_refs(inner: &Inner, refs: &[TransportRef]) {
    let Some(cluster) = inner.cluster.get().cloned() else { return };
    let Some(engine) = inner.media.engine().cloned() else { return };
    let mut calls = Vec::new();
    {
        let mut sp = lock(&cluster.spans);
        for t in refs {
            let Some(leg) = sp.remote_legs.remove(&t.peer) else { continue };
            calls.push((leg.node.clone(), format!("/ringsfu/internal/leg/{}", leg.peer)));
            let last = match sp.relays_out.get_mut(&leg.relay) {
                Some(r) => {
                    r.legs = r.legs.saturating_sub(1);
                    r.legs == 0
                }
                None => false,
            };
            if last && let Some(r) = sp.relays_out.remove(&leg.relay) {
                engine.release(&[(r.peer, r.shard)]);
                calls.push((r.node, format!("/ringsfu/internal/relay/{}", urlencode(&leg.relay))));
            }
        }
    }
    if calls.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for (node, path) in calls {
            let Some(n) = cluster.node(&node) else { continue };
            if let Err(e) = cluster.delete(&n, &path).await {
                tracing::warn!(node, path, error = %e, "could not release a leg on another node");
            }
        }
    });
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// R: the events of legs hosted for other nodes go to their owners (in the background);
/// the rest is returned for the local registry.
pub(crate) fn take_hosted(inner: &Arc<Inner>, events: Vec<ShardEvent>) -> Vec<ShardEvent> {
    let Some(cluster) = inner.cluster.get().cloned() else { return events };
    let mut local = Vec::with_capacity(events.len());
    let mut out = Vec::new();
    {
        let mut sp = lock(&cluster.spans);
        for ev in events {
            let (id, kind, reason) = match &ev {
                ShardEvent::Connected { id } => (*id, "connected", ""),
                ShardEvent::Failed { id, reason } => (*id, "failed", *reason),
                ShardEvent::Closed { id } => (*id, "closed", ""),
                ShardEvent::Rejected { id, reason } => (*id, "rejected", *reason),
                ShardEvent::Vanished { id, .. } => {
                    // A relay in whose relay out went silent.
                    let key =
                        sp.relays_in.iter().find(|(_, r)| r.peer == *id).map(|(k, _)| k.clone());
                    if let Some(r) = key.and_then(|k| sp.relays_in.remove(&k)) {
                        tracing::info!(peer = r.peer.0, "relay in went silent: removed");
                        if let Some(engine) = inner.media.engine() {
                            engine.gone(r.shard);
                        }
                        continue;
                    }
                    local.push(ev);
                    continue;
                }
            };
            let Some(h) = sp.hosted.get(&id).cloned() else {
                local.push(ev);
                continue;
            };
            if kind != "connected" {
                sp.hosted.remove(&id);
                if let Some(r) = sp.relays_in.get_mut(&h.relay) {
                    r.legs = r.legs.saturating_sub(1);
                }
                if let Some(engine) = inner.media.engine() {
                    engine.gone(h.shard);
                }
            }
            out.push((
                h.owner,
                EventReq { alias: h.alias, kind: kind.into(), reason: reason.into() },
            ));
        }
    }
    if !out.is_empty() {
        tokio::spawn(async move {
            for (owner, ev) in out {
                let Some(n) = cluster.node(&owner) else { continue };
                if let Err(e) = cluster.call::<_, Value>(&n, "/ringsfu/internal/event", &ev).await {
                    tracing::warn!(owner, error = %e, "could not tell the owner of a leg's event");
                }
            }
        });
    }
    local
}

// ------------------------------------------------------------------ internal endpoints (R and O)

/// The media engine and the cluster of this node (None: media off or not a cluster node).
fn parts(inner: &Inner) -> Option<(Arc<MediaEngine>, Arc<Cluster>)> {
    Some((inner.media.engine().cloned()?, inner.cluster.get().cloned()?))
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "media is off on this node, or it is not in a cluster")
        .into_response()
}

fn bad(msg: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, msg.to_string()).into_response()
}

/// R: a relay in for `key` (or the one that exists).
async fn relay_open(State(inner): State<Arc<Inner>>, Json(req): Json<RelayReq>) -> Response {
    let Some((engine, cluster)) = parts(&inner) else { return unavailable() };
    if let Some(r) = lock(&cluster.spans).relays_in.get(&req.key)
        && let Some(address) = engine.relay_address(r.shard)
    {
        return Json(RelayResp { peer: r.peer.0, shard: r.shard, address }).into_response();
    }
    if let Err(e) = req.offer.check() {
        return bad(e);
    }
    let shard = engine.choose_home();
    let Some(address) = engine.relay_address(shard) else { return bad("no relay address") };
    let id = engine.new_peer_id();
    if let Err(e) = engine.send(shard, req.offer.command(id, req.source)) {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{e:?}")).into_response();
    }
    let tracks = req.offer.in_tracks();
    lock(&cluster.spans).relays_in.insert(req.key, RelayIn { peer: id, shard, tracks, legs: 0 });
    Json(RelayResp { peer: id.0, shard, address }).into_response()
}

/// R: a relay in taken down (its last leg went).
async fn relay_close(State(inner): State<Arc<Inner>>, Path(key): Path<String>) -> Response {
    let Some((engine, cluster)) = parts(&inner) else { return unavailable() };
    match lock(&cluster.spans).relays_in.remove(&key) {
        Some(r) => {
            engine.release(&[(r.peer, r.shard)]);
            StatusCode::NO_CONTENT.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[derive(Deserialize)]
struct LegReq {
    relay: String,
}

/// R: the transport of a new leg fed from a relay in: its shard, credentials, candidates.
async fn leg_prepare(State(inner): State<Arc<Inner>>, Json(req): Json<LegReq>) -> Response {
    let Some((engine, cluster)) = parts(&inner) else { return unavailable() };
    let Some(relay) = lock(&cluster.spans).relays_in.get(&req.relay).cloned() else {
        return bad("no such relay");
    };
    let shard = engine.place_subscriber(relay.shard, relay.legs);
    let (ufrag, pwd) = engine.ice_credentials();
    let local = engine.local_transport(shard, &ufrag, &pwd);
    let peer = engine.new_peer_id();
    let mut sp = lock(&cluster.spans);
    // Bounded: a node hosts at most this many legs for others (prepared or attached).
    if sp.hosted.len() >= 65_536 {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many legs").into_response();
    }
    sp.hosted.insert(
        peer,
        HostedLeg {
            owner: String::new(),
            alias: 0,
            relay: req.relay,
            shard,
            ice: Some((ufrag.clone(), pwd.clone())),
        },
    );
    Json(LegResp {
        peer: peer.0,
        shard,
        ufrag,
        pwd,
        fingerprint: local.fingerprint_sha256,
        candidates: local.candidates,
        session_id: local.session_id,
    })
    .into_response()
}

/// R: the leg, answered by the owner, is added on its shard.
async fn leg_attach(State(inner): State<Arc<Inner>>, Json(req): Json<AttachReq>) -> Response {
    let Some((engine, cluster)) = parts(&inner) else { return unavailable() };
    let peer = PeerId(req.peer);
    let Some(fp) = Fingerprint::sha256(&req.remote_fingerprint) else {
        return bad("remote_fingerprint: not a SHA-256 digest");
    };
    let (shard, ice, relay) = {
        let mut sp = lock(&cluster.spans);
        let Some(relay) = sp.relays_in.get(&req.relay).cloned() else {
            return bad("no such relay");
        };
        let Some(h) = sp.hosted.get_mut(&peer) else { return bad("no such leg") };
        let Some((ufrag, pwd)) = h.ice.take() else { return bad("leg attached already") };
        h.owner = req.owner.clone();
        h.alias = req.alias;
        (
            h.shard,
            IceParams {
                local_ufrag: ufrag,
                local_pwd: pwd,
                remote_ufrag: req.remote_ufrag.clone(),
            },
            relay,
        )
    };
    let origin =
        (shard != relay.shard).then(|| Origin { shard: relay.shard, tracks: relay.tracks.clone() });
    let cmd = ShardCommand::AddSubscriber {
        id: peer,
        publisher: relay.peer,
        ice,
        remote_fingerprint: fp,
        dtls_role: if req.dtls_server { DtlsRole::Server } else { DtlsRole::Client },
        tracks: req.tracks,
        origin,
    };
    if let Err(e) = engine.send(shard, cmd) {
        lock(&cluster.spans).hosted.remove(&peer);
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{e:?}")).into_response();
    }
    if let Some(r) = lock(&cluster.spans).relays_in.get_mut(&req.relay) {
        r.legs += 1;
    }
    tracing::info!(peer = peer.0, shard, owner = %req.owner, "hosting a subscriber leg for another node");
    Json(json!({})).into_response()
}

/// R: a hosted leg released by its owner.
async fn leg_close(State(inner): State<Arc<Inner>>, Path(peer): Path<u64>) -> Response {
    let Some((engine, cluster)) = parts(&inner) else { return unavailable() };
    let mut sp = lock(&cluster.spans);
    let Some(h) = sp.hosted.remove(&PeerId(peer)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Some(r) = sp.relays_in.get_mut(&h.relay) {
        r.legs = r.legs.saturating_sub(1);
    }
    if h.ice.is_none() {
        engine.release(&[(PeerId(peer), h.shard)]);
    }
    StatusCode::NO_CONTENT.into_response()
}

/// O: an event of one of its legs on another node, handled as a local shard's.
async fn leg_event(State(inner): State<Arc<Inner>>, Json(req): Json<EventReq>) -> Response {
    let Some((engine, _)) = parts(&inner) else { return unavailable() };
    let id = PeerId(req.alias);
    let reason: &'static str = match req.reason.as_str() {
        "" => "",
        "consent expired" => "consent expired",
        "dtls failed" => "dtls failed",
        _ => "transport failed on another node",
    };
    let ev = match req.kind.as_str() {
        "connected" => ShardEvent::Connected { id },
        "failed" => ShardEvent::Failed { id, reason },
        "closed" => ShardEvent::Closed { id },
        "rejected" => ShardEvent::Rejected { id, reason },
        other => return bad(format!("unknown event {other}")),
    };
    if req.kind != "connected" {
        // The leg is gone on its node, and the registry forgets a failed leg's transport
        // without releasing it: release it here, so a relay whose last leg this was goes too
        // (the host's answer to the leg's DELETE is a 404, logged).
        release_refs(&inner, &[TransportRef { peer: id, shard: REMOTE_SHARD }]);
    }
    crate::control::media_rpc::on_shard_events(&inner, &engine, vec![ev]);
    Json(json!({})).into_response()
}

/// The internal routes of spanning sessions (internal listener only).
pub(crate) fn routes() -> axum::Router<Arc<Inner>> {
    use axum::routing::{delete, post};
    axum::Router::new()
        .route("/ringsfu/internal/relay", post(relay_open))
        .route("/ringsfu/internal/relay/{key}", delete(relay_close))
        .route("/ringsfu/internal/leg", post(leg_prepare))
        .route("/ringsfu/internal/leg/attach", post(leg_attach))
        .route("/ringsfu/internal/leg/{peer}", delete(leg_close))
        .route("/ringsfu/internal/event", post(leg_event))
}
