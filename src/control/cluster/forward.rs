//! The REST API of a cluster node: each request is served here or forwarded, once, to the node
//! that owns its session ([`plan::target`] says which). Forwarded requests go to the owner's
//! internal listener, signed ([`plan::sign`]); the internal listener serves only signed
//! requests, and serves them here, never forwarding again. The caller's `Authorization` header
//! travels with the request, so the owner checks it as for any client.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde_json::Value;

use super::plan::{self, H_NODE, H_SIG, H_TIME, NodeRecord, Target};
use super::{Cluster, StoreError};
use crate::control::Inner;
use crate::control::rest::{empty, error_json};

/// Marks a request that arrived signed on the internal listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Signed;

/// The internal listener's gate: only requests signed by a node of the cluster pass, marked
/// [`Signed`] (served here, never forwarded again).
pub(crate) async fn require_signed(
    State(inner): State<Arc<Inner>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cluster) = inner.cluster.get() else {
        return empty(StatusCode::NOT_FOUND);
    };
    let (mut parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, inner.cfg.server.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => return empty(StatusCode::PAYLOAD_TOO_LARGE),
    };
    let h = |k: &str| parts.headers.get(k).and_then(|v| v.to_str().ok());
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let checked = plan::verify(
        &cluster.secret,
        h(H_NODE),
        h(H_TIME),
        h(H_SIG),
        crate::control::now_ms(),
        parts.method.as_str(),
        path,
        &bytes,
    );
    if let Err(e) = checked {
        cluster.counts.bad_signatures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(reason = ?e, path, "internal request refused: bad signature");
        return error_json(
            StatusCode::UNAUTHORIZED,
            parts.uri.path(),
            "internal request not signed by a cluster node",
        );
    }
    parts.extensions.insert(Signed);
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// The public router's cluster layer (inside authentication).
pub(crate) async fn route(State(inner): State<Arc<Inner>>, req: Request, next: Next) -> Response {
    let Some(cluster) = inner.cluster.get().cloned() else {
        return next.run(req).await;
    };
    if req.extensions().get::<Signed>().is_some() {
        return serve_here(&inner, &cluster, req, next).await;
    }
    let target = plan::target(req.method().as_str(), req.uri().path());
    match target {
        Target::Local => next.run(req).await,
        Target::Session(sid) => to_owner(&inner, &cluster, &sid, req, next).await,
        Target::BodySession => {
            let (req, bytes) = match buffer(&inner, req).await {
                Ok(x) => x,
                Err(r) => return r,
            };
            let sid = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("session").and_then(|s| s.as_str()).map(String::from));
            match sid {
                Some(sid) => to_owner(&inner, &cluster, &sid, req, next).await,
                // The handler says what is wrong with the body.
                None => next.run(req).await,
            }
        }
        Target::Place => place(&inner, &cluster, req, next).await,
        Target::Merge => merge(&inner, &cluster, req, next).await,
        Target::Anywhere => anywhere(&inner, &cluster, req, next).await,
    }
}

/// A signed request: served here. A session created here is claimed like any other.
async fn serve_here(
    inner: &Arc<Inner>,
    cluster: &Arc<Cluster>,
    req: Request,
    next: Next,
) -> Response {
    if plan::target(req.method().as_str(), req.uri().path()) == Target::Place {
        return create_here(inner, cluster, req, next).await;
    }
    next.run(req).await
}

fn held_here(inner: &Inner, sid: &str) -> bool {
    inner.with(|st| st.reg.session(sid).is_some())
}

async fn to_owner(
    inner: &Arc<Inner>,
    cluster: &Arc<Cluster>,
    sid: &str,
    req: Request,
    next: Next,
) -> Response {
    if held_here(inner, sid) {
        return next.run(req).await;
    }
    match cluster.live_owner(sid).await {
        Ok(Some(n)) if n.id != cluster.id => {
            let (req, bytes) = match buffer(inner, req).await {
                Ok(x) => x,
                Err(r) => return r,
            };
            forward_or_503(cluster, &n, &Head::of(&req), bytes).await
        }
        // Nobody (alive) owns it, or we do: the local registry answers (404 when absent).
        Ok(_) => next.run(req).await,
        Err(e) => store_down(cluster, req.uri().path(), &e),
    }
}

async fn place(inner: &Arc<Inner>, cluster: &Arc<Cluster>, req: Request, next: Next) -> Response {
    let (req, bytes) = match buffer(inner, req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let custom = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
        v.get("customSessionId")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .map(String::from)
    });
    if let Some(sid) = &custom {
        if held_here(inner, sid) {
            return next.run(req).await; // 409 from the registry
        }
        match cluster.live_owner(sid).await {
            Ok(Some(n)) if n.id != cluster.id => {
                return forward_or_503(cluster, &n, &Head::of(&req), bytes).await; // its owner answers 409
            }
            Ok(_) => {}
            Err(e) => return store_down(cluster, req.uri().path(), &e),
        }
    }
    if !cluster.is_up() {
        return store_down(cluster, req.uri().path(), &StoreError("unreachable".into()));
    }
    let nodes = cluster.nodes();
    let chosen = {
        use rand::Rng;
        let mut rng = rand::rng();
        plan::place(&nodes, |n| rng.random_range(0..n)).cloned()
    };
    if let Some(n) = &chosen {
        cluster.note_placed(&n.id);
    }
    match chosen {
        Some(n) if n.id != cluster.id => {
            let head = Head::of(&req);
            drop(req);
            match forward(cluster, &n, &head, bytes.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(node = %n.id, error = %e, "placing a session: node did not answer, creating it here");
                    create_here(inner, cluster, head.rebuild(bytes), next).await
                }
            }
        }
        _ => create_here(inner, cluster, req, next).await,
    }
}

/// Creates the session here and claims it; a claim lost to another node (the same custom id
/// created there at the same time) undoes the creation and answers 409.
async fn create_here(
    inner: &Arc<Inner>,
    cluster: &Arc<Cluster>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    if !cluster.is_up() {
        return store_down(cluster, &path, &StoreError("unreachable".into()));
    }
    let resp = next.run(req).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let sid = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("id").and_then(|s| s.as_str()).map(String::from))
        .unwrap_or_default();
    let undo = |inner: &Inner| {
        inner.with(|st| {
            st.reg.close_session(&sid, "sessionClosedByServer", crate::control::now_ms())
        })
    };
    match cluster.claim(&sid).await {
        Ok(true) => Response::from_parts(parts, Body::from(bytes)),
        Ok(false) => {
            cluster.counts.claim_conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            undo(inner);
            empty(StatusCode::CONFLICT)
        }
        Err(e) => {
            undo(inner);
            store_down(cluster, &path, &e)
        }
    }
}

/// The request served here first, kept (head and body) for asking the other nodes after.
async fn here_first(
    inner: &Arc<Inner>,
    req: Request,
    next: Next,
) -> Result<(Head, Bytes, Response), Response> {
    let (req, bytes) = buffer(inner, req).await?;
    let head = Head::of(&req);
    Ok((head, bytes, next.run(req).await))
}

async fn merge(inner: &Arc<Inner>, cluster: &Arc<Cluster>, req: Request, next: Next) -> Response {
    let (copy, bytes, local) = match here_first(inner, req, next).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if local.status() != StatusCode::OK {
        return local;
    }
    let mut parts = vec![json_of(local).await];
    for n in cluster.nodes().values().filter(|n| n.id != cluster.id) {
        match forward(cluster, n, &copy, bytes.clone()).await {
            Ok(r) if r.status() == StatusCode::OK => parts.push(json_of(r).await),
            Ok(r) => {
                tracing::warn!(node = %n.id, status = %r.status(), "list: node answered an error")
            }
            Err(e) => tracing::warn!(node = %n.id, error = %e, "list: node did not answer"),
        }
    }
    crate::control::rest::ok_json(plan::merge_lists(&parts))
}

async fn anywhere(
    inner: &Arc<Inner>,
    cluster: &Arc<Cluster>,
    req: Request,
    next: Next,
) -> Response {
    let (copy, bytes, local) = match here_first(inner, req, next).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if local.status() != StatusCode::NOT_FOUND {
        return local;
    }
    for n in cluster.nodes().values().filter(|n| n.id != cluster.id) {
        if let Ok(r) = forward(cluster, n, &copy, bytes.clone()).await
            && r.status() != StatusCode::NOT_FOUND
        {
            return r;
        }
    }
    local
}

async fn json_of(r: Response) -> Value {
    let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The request's body, read whole (up to `server.max_body_bytes`), and the request again.
async fn buffer(inner: &Inner, req: Request) -> Result<(Request, Bytes), Response> {
    let (parts, body) = req.into_parts();
    match axum::body::to_bytes(body, inner.cfg.server.max_body_bytes).await {
        Ok(b) => Ok((Request::from_parts(parts, Body::from(b.clone())), b)),
        Err(_) => {
            Err(error_json(StatusCode::PAYLOAD_TOO_LARGE, parts.uri.path(), "body too large"))
        }
    }
}

/// What a request is without its body (which is not `Sync`: a borrowed request cannot be held
/// across an await of a `Send` future).
#[derive(Clone)]
struct Head {
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
}

impl Head {
    fn of(req: &Request) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            headers: req.headers().clone(),
        }
    }

    /// The request again, with `bytes` as its body.
    fn rebuild(&self, bytes: Bytes) -> Request {
        let mut r = Request::new(Body::from(bytes));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

fn store_down(cluster: &Cluster, path: &str, e: &StoreError) -> Response {
    cluster.counts.store_refusals.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut r = error_json(
        StatusCode::SERVICE_UNAVAILABLE,
        path,
        &format!("the cluster store (Redis) cannot be reached from this node: {e}"),
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    r
}

async fn forward_or_503(
    cluster: &Cluster,
    node: &NodeRecord,
    req: &Head,
    bytes: Bytes,
) -> Response {
    match forward(cluster, node, req, bytes).await {
        Ok(r) => r,
        Err(e) => {
            let mut r = error_json(
                StatusCode::SERVICE_UNAVAILABLE,
                req.uri.path(),
                &format!("the session's node {} did not answer: {e}", node.id),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
    }
}

/// Hop-by-hop headers and those the HTTP client sets itself.
fn skipped(name: &header::HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host" | "connection" | "content-length" | "transfer-encoding" | "keep-alive" | "upgrade"
    ) || name.as_str().starts_with("x-ringsfu-")
}

/// Sends `req` (with `bytes` as its body) to `node`'s internal listener, signed.
async fn forward(
    cluster: &Cluster,
    node: &NodeRecord,
    req: &Head,
    bytes: Bytes,
) -> Result<Response, String> {
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
    let method = req.method.clone();
    let now = crate::control::now_ms();
    let sig = plan::sign(&cluster.secret, &cluster.id, now, method.as_str(), &path, &bytes);
    let mut headers = HeaderMap::new();
    for (k, v) in req.headers.iter() {
        if !skipped(k) {
            headers.append(k.clone(), v.clone());
        }
    }
    let hv = |s: &str| HeaderValue::from_str(s).map_err(|e| e.to_string());
    headers.insert(H_NODE, hv(&cluster.id)?);
    headers.insert(H_TIME, hv(&now.to_string())?);
    headers.insert(H_SIG, hv(&sig)?);
    let url = format!("{}{}", node.internal_url, path);
    cluster.counts.forwarded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sent =
        cluster.http.request(method_of(&method), &url).headers(headers).body(bytes).send().await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            cluster.counts.forward_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e.to_string());
        }
    };
    let status = resp.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if !skipped(k) {
            out_headers.append(k.clone(), v.clone());
        }
    }
    // Streamed through, not buffered: a recording file may be large.
    let mut r = Response::new(Body::from_stream(resp.bytes_stream()));
    *r.status_mut() = status;
    *r.headers_mut() = out_headers;
    Ok(r)
}

fn method_of(m: &Method) -> reqwest::Method {
    m.clone()
}
