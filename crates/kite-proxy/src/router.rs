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
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, header, uri::PathAndQuery,
};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use tokio::{sync::watch, time::Instant};
use tracing::{debug, info};

use crate::{
    config::{
        Action, HashOn, HeaderMatch, HttpManager, PathMatch, Redirect, RetryPolicy, Route,
        RouteAction, StrMatch, VirtualHost,
    },
    state::State,
    upstream::{ClusterRuntime, Outcome, Upstreams, hash_key},
};

pub(crate) type Body = BoxBody<Bytes, hyper::Error>;

mod attempts;
mod headers;
mod matching;

use attempts::{attempts, mirror_request};
use headers::{apply_ops, client_cert_header, is_websocket, prepare_headers, strip_hop_by_hop};
use matching::{Unanswered, select};

/// Requests are buffered so they can be retried and mirrored; beyond this a
/// request is refused rather than held in memory.
const MAX_BUFFERED_BODY: usize = 16 << 20;

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
        %peer,
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

fn chance(ppm: u32) -> bool {
    ppm >= 1_000_000 || fastrand::u32(..1_000_000) < ppm
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
        // Boxed: the timer beside the tries made every request's future
        // larger by its size, timeout or not.
        Some(t) => match Box::pin(tokio::time::timeout(t, attempt_all)).await {
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
