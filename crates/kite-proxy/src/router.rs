//! HTTP routing with Envoy's semantics for what the control plane emits:
//! virtual host by authority, first matching route, faults, weighted
//! clusters, rewrites, header manipulation, mirrors, timeouts and retries.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
    uri::PathAndQuery,
};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use tokio::{sync::watch, time::Instant};
use tracing::{debug, info};

use crate::{
    config::{
        Action, HashOn, HeaderMatch, HeaderOps, HttpManager, PathMatch, Redirect, RetryPolicy,
        Route, RouteAction, StrMatch, VirtualHost,
    },
    state::State,
    upstream::{ClusterRuntime, Outcome, Upstreams, hash_key},
};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

/// Requests are buffered so they can be retried and mirrored; beyond this a
/// request is refused rather than held in memory.
mod attempts;
mod matching;

use attempts::{attempts, mirror_request};
use matching::{Unanswered, select};

const MAX_BUFFERED_BODY: usize = 16 << 20;

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// What every HTTP listener shares.
pub(crate) struct Shared {
    pub(crate) state: watch::Receiver<Arc<State>>,
    pub(crate) upstreams: Arc<Upstreams>,
    /// The workload certificate, when the proxy has an identity.
    pub(crate) identity: Option<crate::identity::Watch>,
    /// Requests being served and TCP connections being proxied, which a
    /// stopping proxy lets finish.
    pub(crate) in_flight: std::sync::atomic::AtomicUsize,
    /// Asks the VHDS stream for an alias (`<route configuration>/<host>`).
    pub(crate) vhds: tokio::sync::mpsc::UnboundedSender<String>,
}

/// How long a request waits for the control plane to say which virtual
/// host serves a host the proxy has not routed before.
const VHDS_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Shared {
    /// The state once VHDS has answered for `host` in route table `rc`
    /// (or once [`VHDS_WAIT`] has passed).
    async fn vhds_answer(&self, rc: &str, host: &str) -> Arc<State> {
        let mut rx = self.state.clone();
        let _ = self.vhds.send(format!("{rc}/{host}"));
        let answered = async {
            loop {
                {
                    let state = rx.borrow_and_update();
                    if state.vhds_host(rc, host).is_some() {
                        return state.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    return rx.borrow().clone();
                }
            }
        };
        match tokio::time::timeout(VHDS_WAIT, answered).await {
            Ok(state) => state,
            Err(_) => {
                info!(%host, route_config = %rc, "no VHDS answer in time; routing by the route table alone");
                self.state.borrow().clone()
            }
        }
    }
}

/// Counts one unit of work in [`Shared::in_flight`] while alive.
pub(crate) struct InFlight(Arc<Shared>);

impl InFlight {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Envoy's response flags, for the access log.
#[derive(Clone, Copy, Debug)]
enum Flag {
    None,
    NoRoute,
    NoCluster,
    NoHealthyUpstream,
    ConnectFailure,
    Timeout,
    Overflow,
    FaultAbort,
    Reset,
}

impl Flag {
    fn code(self) -> &'static str {
        match self {
            Flag::None => "-",
            Flag::NoRoute => "NR",
            Flag::NoCluster => "NC",
            Flag::NoHealthyUpstream => "UH",
            Flag::ConnectFailure => "UF",
            Flag::Timeout => "UT",
            Flag::Overflow => "UO",
            Flag::FaultAbort => "FI",
            Flag::Reset => "UR",
        }
    }
}

/// Routes one request. It comes boxed, and goes down the router by
/// reference: every async fn keeps its by-value arguments for its whole
/// life, so a request passed by value down the chain was held once per
/// level (`bench/results/2026-11-28.md`, second round).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    hcm: Arc<HttpManager>,
    peer: SocketAddr,
    peer_id: Option<Arc<kite_identity::SpiffeId>>,
    mut req: Box<Request<Incoming>>,
) -> Response<Body> {
    if hcm.xfcc {
        client_cert_header(&shared, peer_id.as_deref(), req.headers_mut());
    }
    let authority = authority(&req);
    if !hcm.access_log {
        return route_request(&shared, &hcm, peer, req, &authority).await.0;
    }
    let start = Instant::now();
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_else(|| "/".into());
    let (rsp, flag, cluster) = route_request(&shared, &hcm, peer, req, &authority).await;
    info!(
        target: "kite::access",
        method = %method,
        authority = %authority,
        path = %path,
        status = rsp.status().as_u16(),
        flags = flag.code(),
        cluster = cluster.as_deref().unwrap_or("-"),
        duration_ms = start.elapsed().as_millis() as u64,
        listener = %hcm.stat_prefix,
        "request"
    );
    rsp
}

fn authority<B>(req: &Request<B>) -> String {
    let mut authority = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or_default()
        .to_owned();
    authority.make_ascii_lowercase();
    authority
}

async fn route_request(
    shared: &Shared,
    hcm: &HttpManager,
    peer: SocketAddr,
    mut req: Box<Request<Incoming>>,
    authority: &str,
) -> (Response<Body>, Flag, Option<String>) {
    let current = shared.state.borrow().clone();
    let answered;
    let (state, route) = match select(&current, &hcm.route_config, authority, &req, true) {
        Ok(route) => (&current, route),
        Err(Unanswered) => {
            answered = shared.vhds_answer(&hcm.route_config, authority).await;
            // Still unanswered once the wait is over: the table alone.
            let route = select(&answered, &hcm.route_config, authority, &req, false);
            (&answered, route.unwrap_or(None))
        }
    };
    let Some(route) = route else {
        return (local(StatusCode::NOT_FOUND, ""), Flag::NoRoute, None);
    };
    let websocket = hcm.websocket && is_websocket(req.headers());
    prepare_headers(req.headers_mut(), hcm, peer);
    if let Some(fault) = &route.fault {
        if let Some((delay, ppm)) = fault.delay
            && chance(ppm)
        {
            tokio::time::sleep(delay).await;
        }
        if let Some((status, ppm)) = fault.abort
            && chance(ppm)
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return (local(status, "fault filter abort"), Flag::FaultAbort, None);
        }
    }
    match &route.action {
        Action::Direct { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            let mut rsp = local(status, body);
            apply_ops(rsp.headers_mut(), &route.response_headers);
            (rsp, Flag::None, None)
        }
        Action::Redirect(r) => (redirect(r, req.uri(), authority), Flag::None, None),
        Action::Route(action) if req.method() == Method::CONNECT => {
            if !(hcm.connect && action.connect_tunnel) {
                return (local(StatusCode::FORBIDDEN, ""), Flag::None, None);
            }
            let (parts, _body) = (*req).into_parts();
            tunnel(shared, state, action, parts).await
        }
        Action::Route(action) => {
            if websocket {
                let headers = req.headers_mut();
                headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            }
            let body = match Limited::new(req.body_mut(), MAX_BUFFERED_BODY)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(_) => {
                    return (
                        local(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
                        Flag::None,
                        None,
                    );
                }
            };
            forward(
                shared, state, route, action, &mut req, body, authority, peer,
            )
            .await
        }
    }
}

/// Headers Envoy's connection manager sets on every request.
fn prepare_headers(headers: &mut HeaderMap, hcm: &HttpManager, peer: SocketAddr) {
    strip_hop_by_hop(headers);
    if !headers.contains_key(X_REQUEST_ID) {
        headers.insert(X_REQUEST_ID, uuid_v4());
    }
    if hcm.use_remote_address {
        let ip = peer.ip().to_string();
        let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) => format!("{existing}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert(X_FORWARDED_FOR, v);
        }
    }
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    trace_context(headers);
}

/// B3 context as Istio's proxies set it: a new trace at the first hop
/// (sampled at Istio's default 1 %), and a new span for every hop after, so
/// that apps that propagate the headers stitch one trace.
fn trace_context(headers: &mut HeaderMap) {
    let span = || hex_value(u128::from(fastrand::u64(1..)), 16);
    match (
        headers.contains_key(X_B3_TRACEID),
        headers.get(X_B3_SPANID).cloned(),
    ) {
        (true, Some(parent)) => {
            headers.insert(X_B3_PARENTSPANID, parent);
            headers.insert(X_B3_SPANID, span());
        }
        (true, None) => {
            headers.insert(X_B3_SPANID, span());
        }
        (false, _) => {
            headers.insert(X_B3_TRACEID, hex_value(fastrand::u128(1..), 32));
            headers.insert(X_B3_SPANID, span());
            headers.insert(
                X_B3_SAMPLED,
                HeaderValue::from_static(if chance(10_000) { "1" } else { "0" }),
            );
        }
    }
}

/// The low `digits` hex digits of `n`, as a header value.
fn hex_value(n: u128, digits: usize) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 32];
    for (i, b) in buf[..digits].iter_mut().enumerate() {
        *b = HEX[((n >> (4 * (digits - 1 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf[..digits]).unwrap_or(HeaderValue::from_static("0"))
}

/// `x-forwarded-client-cert` as Istio's sidecars set it on mTLS
/// connections (SANITIZE_SET): whatever the client sent is replaced by
/// this proxy's identity (`By`) and the peer's (`URI`).
fn client_cert_header(
    shared: &Shared,
    peer: Option<&kite_identity::SpiffeId>,
    headers: &mut HeaderMap,
) {
    headers.remove("x-forwarded-client-cert");
    let own = match shared.identity.as_ref().map(|w| w.borrow().clone()) {
        Some(crate::identity::Status::Ready(a)) => a.id.to_string(),
        _ => return,
    };
    let Some(peer) = peer else { return };
    if let Ok(v) = HeaderValue::from_str(&format!("By={own};URI={peer}")) {
        headers.insert(HeaderName::from_static("x-forwarded-client-cert"), v);
    }
}

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Terminates a CONNECT request: a TCP connection to an endpoint of the
/// route's cluster, joined to the client's tunnel once answered 200.
async fn tunnel(
    shared: &Shared,
    state: &State,
    action: &RouteAction,
    mut parts: http::request::Parts,
) -> (Response<Body>, Flag, Option<String>) {
    let Some(target) = pick_weighted(action) else {
        return (
            local(StatusCode::SERVICE_UNAVAILABLE, ""),
            Flag::NoCluster,
            None,
        );
    };
    let name = target.name.clone();
    let Some(cluster) = state.clusters.get(&name) else {
        return (
            local(StatusCode::SERVICE_UNAVAILABLE, ""),
            Flag::NoCluster,
            Some(name),
        );
    };
    let rt = shared.upstreams.get(cluster);
    let endpoints = rt.endpoints(state).await;
    let Some(addr) = rt.pick(&endpoints, &[], None) else {
        return (
            local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
            Flag::NoHealthyUpstream,
            Some(name),
        );
    };
    let connected = rt.connect_tcp(addr, rt.secure(&endpoints, addr)).await;
    let Ok(mut upstream) = connected else {
        rt.record(addr, Outcome::ConnectFailure, endpoints.len());
        return (
            local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            ),
            Flag::ConnectFailure,
            Some(name),
        );
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return (
            local(
                StatusCode::BAD_REQUEST,
                "CONNECT without an upgradable connection",
            ),
            Flag::None,
            Some(name),
        );
    };
    let guard = rt.start(addr);
    tokio::spawn(async move {
        let _guard = guard;
        let Ok(down) = on_upgrade.await else { return };
        let mut down = hyper_util::rt::TokioIo::new(down);
        match tokio::io::copy_bidirectional(&mut down, &mut upstream).await {
            Ok((up, back)) => debug!(sent = up, received = back, "tunnel closed"),
            Err(e) => debug!(error = %e, "tunnel failed"),
        }
    });
    (Response::new(full(Bytes::new())), Flag::None, Some(name))
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too; most
    // messages name none or only standard ones.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .collect();
    for h in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(h);
    }
}

fn uuid_v4() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [0u8; 36];
    let mut i = 0;
    for (n, x) in b.iter().enumerate() {
        if matches!(n, 4 | 6 | 8 | 10) {
            out[i] = b'-';
            i += 1;
        }
        out[i] = HEX[usize::from(x >> 4)];
        out[i + 1] = HEX[usize::from(x & 0xf)];
        i += 2;
    }
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
}

fn chance(ppm: u32) -> bool {
    ppm >= 1_000_000 || fastrand::u32(..1_000_000) < ppm
}

fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name);
    }
    for (name, value, overwrite) in &ops.add {
        if *overwrite {
            headers.insert(name.clone(), value.clone());
        } else {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn redirect(r: &Redirect, uri: &Uri, authority: &str) -> Response<Body> {
    let scheme = if r.scheme.is_empty() {
        uri.scheme_str().unwrap_or("http")
    } else {
        &r.scheme
    };
    let mut host = if r.host.is_empty() {
        authority.to_owned()
    } else {
        r.host.clone()
    };
    if r.port != 0 {
        let bare = host
            .rsplit_once(':')
            .map_or(host.as_str(), |(h, _)| h)
            .to_owned();
        host = format!("{bare}:{}", r.port);
    }
    let path = if r.path.is_empty() {
        uri.path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into())
    } else {
        r.path.clone()
    };
    let mut rsp = local(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::MOVED_PERMANENTLY),
        "",
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{scheme}://{host}{path}")) {
        rsp.headers_mut().insert(header::LOCATION, v);
    }
    rsp
}

pub(crate) fn local(status: StatusCode, body: &str) -> Response<Body> {
    let mut rsp = Response::new(full(Bytes::from(body.to_owned())));
    *rsp.status_mut() = status;
    if !body.is_empty() {
        rsp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    rsp
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: &Shared,
    state: &State,
    route: &Route,
    action: &RouteAction,
    req: &mut Request<Incoming>,
    body: Bytes,
    authority: &str,
    peer: SocketAddr,
) -> (Response<Body>, Flag, Option<String>) {
    let downstream_upgrade = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>();
    let Some(target) = pick_weighted(action) else {
        return (
            local(StatusCode::SERVICE_UNAVAILABLE, ""),
            Flag::NoCluster,
            None,
        );
    };
    let cluster_name = target.name.clone();
    let Some(cluster) = state.clusters.get(&cluster_name) else {
        return (
            local(StatusCode::SERVICE_UNAVAILABLE, ""),
            Flag::NoCluster,
            Some(cluster_name),
        );
    };
    let rt = shared.upstreams.get(cluster);
    let endpoints = if cluster.discovery == crate::config::Discovery::DynamicForward {
        match resolve(authority).await {
            Some(addr) => Arc::new(vec![crate::config::Endpoint {
                tls: false,
                addr,
                weight: 1,
                locality: String::new(),
                priority: 0,
                locality_weight: 1,
            }]),
            None => {
                return (
                    local(StatusCode::SERVICE_UNAVAILABLE, "DNS resolution failed"),
                    Flag::NoHealthyUpstream,
                    Some(cluster_name),
                );
            }
        }
    } else {
        rt.endpoints(state).await
    };
    let hash = hash_of(action, req.headers(), peer);
    let mut headers = std::mem::take(req.headers_mut());
    apply_ops(&mut headers, &route.request_headers);
    apply_ops(&mut headers, &target.request_headers);
    let host = action.host_rewrite.as_deref().unwrap_or(authority);
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(header::HOST, v);
    }
    let Some(path) = rewrite_path(route, action, req.uri()) else {
        return (
            local(StatusCode::BAD_REQUEST, "bad request"),
            Flag::None,
            Some(cluster_name),
        );
    };
    for (mirror, ppm) in &action.mirrors {
        if chance(*ppm) {
            mirror_request(
                shared,
                state,
                mirror,
                req.method(),
                &path,
                &headers,
                host,
                body.clone(),
            );
        }
    }
    let attempt_all = attempts(
        &rt,
        &endpoints,
        action.retry.as_ref(),
        (req.method(), req.version()),
        &path,
        &headers,
        &body,
        hash,
    );
    let result = match action.timeout {
        Some(t) => match tokio::time::timeout(t, attempt_all).await {
            Ok(r) => r,
            Err(_) => {
                rt.stats.upstream_rq_timeout.fetch_add(1, Ordering::Relaxed);
                Err((
                    local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
                    Flag::Timeout,
                ))
            }
        },
        None => attempt_all.await,
    };
    match result {
        Ok(mut rsp) if rsp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            // A WebSocket (or other) upgrade: join the two connections once
            // both sides have switched.
            let downstream = downstream_upgrade;
            let upstream = hyper::upgrade::on(&mut rsp);
            tokio::spawn(async move {
                let (Some(down), Ok(up)) = (downstream, upstream.await) else {
                    return;
                };
                let Ok(down) = down.await else { return };
                let mut down = hyper_util::rt::TokioIo::new(down);
                let mut up = hyper_util::rt::TokioIo::new(up);
                let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
            });
            let (p, b) = rsp.into_parts();
            (
                Response::from_parts(p, b.boxed()),
                Flag::None,
                Some(cluster_name),
            )
        }
        Ok(rsp) => {
            let (mut p, b) = rsp.into_parts();
            strip_hop_by_hop(&mut p.headers);
            apply_ops(&mut p.headers, &target.response_headers);
            apply_ops(&mut p.headers, &route.response_headers);
            (
                Response::from_parts(p, b.boxed()),
                Flag::None,
                Some(cluster_name),
            )
        }
        Err((rsp, flag)) => (rsp, flag, Some(cluster_name)),
    }
}

/// The address a request's authority names (port 80 when none is given).
async fn resolve(authority: &str) -> Option<SocketAddr> {
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    tokio::net::lookup_host(target).await.ok()?.next()
}

fn pick_weighted(action: &RouteAction) -> Option<&crate::config::WeightedCluster> {
    let total: u64 = action.clusters.iter().map(|c| u64::from(c.weight)).sum();
    if total == 0 {
        return action.clusters.first();
    }
    let mut pick = fastrand::u64(..total);
    for c in &action.clusters {
        if pick < u64::from(c.weight) {
            return Some(c);
        }
        pick -= u64::from(c.weight);
    }
    action.clusters.last()
}

/// Envoy's rewrites: `prefix_rewrite` replaces what a prefix route matched
/// (or the whole path of an exact or regex route); a regex rewrite
/// substitutes every match in the path.
fn rewrite_path(route: &Route, action: &RouteAction, uri: &Uri) -> Option<PathAndQuery> {
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let rewritten = if let Some((re, sub)) = &action.regex_rewrite {
        re.replace_all(path, sub.as_str()).into_owned()
    } else if let Some(new) = &action.prefix_rewrite {
        match &route.matcher.path {
            PathMatch::Prefix(p) if path.len() >= p.len() => format!("{new}{}", &path[p.len()..]),
            PathMatch::Connect => path.to_owned(),
            _ => new.clone(),
        }
    } else {
        // Unchanged: the request's own, shared rather than copied.
        return Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
    };
    PathAndQuery::try_from(format!("{rewritten}{query}")).ok()
}

fn hash_of(action: &RouteAction, headers: &HeaderMap, peer: SocketAddr) -> Option<u64> {
    action.hash.iter().find_map(|h| match h {
        HashOn::Header(name) => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(hash_key),
        HashOn::Cookie(name) => headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| hash_key(v)),
        HashOn::SourceIp => Some(hash_key(&peer.ip().to_string())),
        HashOn::Query(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = uuid_v4();
        let s = id.to_str().unwrap();
        let groups: Vec<usize> = s.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{s}");
        assert_eq!(&s[14..15], "4", "version nibble: {s}");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "variant: {s}");
        assert!(
            s.bytes()
                .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
            "{s}"
        );
        assert_ne!(uuid_v4(), uuid_v4());
    }

    #[test]
    fn trace_ids_keep_their_width() {
        assert_eq!(hex_value(0xabc, 16), "0000000000000abc");
        assert_eq!(hex_value(u128::MAX, 32), "f".repeat(32).as_str());
    }

    #[test]
    fn a_hop_starts_a_child_span_of_the_callers() {
        let mut h = HeaderMap::new();
        h.insert(X_B3_TRACEID, HeaderValue::from_static("463ac35c9f6413ad"));
        h.insert(X_B3_SPANID, HeaderValue::from_static("a2fb4a1d1a96d312"));
        trace_context(&mut h);
        assert_eq!(h[X_B3_TRACEID], "463ac35c9f6413ad");
        assert_eq!(h[X_B3_PARENTSPANID], "a2fb4a1d1a96d312");
        assert_eq!(h[X_B3_SPANID].len(), 16);
        assert_ne!(h[X_B3_SPANID], "a2fb4a1d1a96d312");

        let mut fresh = HeaderMap::new();
        trace_context(&mut fresh);
        assert_eq!(fresh[X_B3_TRACEID].len(), 32);
        assert!(matches!(fresh[X_B3_SAMPLED].to_str(), Ok("0" | "1")));
    }

    #[test]
    fn hop_by_hop_headers_go_with_the_ones_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
