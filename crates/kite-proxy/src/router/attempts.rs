//! Sending a request upstream: tries and retries per the route's policy
//! (other hosts, per-try timeouts, back-off, circuit breakers), the HTTP/1
//! or HTTP/2 exchange, and fire-and-forget mirrors.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn mirror_request(
    shared: &Shared,
    state: &State,
    cluster: &str,
    method: &Method,
    path: &PathAndQuery,
    headers: &HeaderMap,
    host: &str,
    body: Bytes,
) {
    let Some(cluster) = state.clusters.get(cluster) else {
        return;
    };
    let rt = shared.upstreams.get(cluster);
    // A DNS cluster's last resolution: the copy never waits on DNS.
    let endpoints = match &cluster.discovery {
        crate::config::Discovery::Dns(_) => rt.resolved().unwrap_or_default(),
        _ => state.cluster_endpoints(cluster),
    };
    let Some(addr) = rt.pick(&endpoints, &[], None) else {
        return;
    };
    let mut headers = headers.clone();
    let shadow = match host.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => format!("{h}-shadow:{p}"),
        _ => format!("{host}-shadow"),
    };
    if let Ok(v) = HeaderValue::from_str(&shadow) {
        headers.insert(header::HOST, v);
    }
    let secure = rt.secure(&endpoints, addr);
    let Ok(req) = build(method, (addr, secure), path, &headers, body) else {
        return;
    };
    // Fire and forget: the primary response never waits on the copy.
    tokio::spawn(async move {
        let _guard = rt.start(addr);
        let limit = rt.config.max_requests_per_connection;
        if let Ok(rsp) = rt.h1.send(addr, secure, req, limit).await {
            let _ = rsp.into_body().collect().await;
        }
    });
}

/// The cluster's protocol decides the HTTP version upstream; clusters
/// that follow the client send HTTP/2 requests (gRPC among them) as HTTP/2.
pub(super) async fn send_on(
    rt: &ClusterRuntime,
    version: http::Version,
    (addr, secure): (SocketAddr, bool),
    mut req: Box<Request<Full<Bytes>>>,
) -> Result<Response<Incoming>, crate::upstream::SendError> {
    let h2 = match rt.config.protocol {
        crate::config::UpstreamProtocol::Http1 => false,
        crate::config::UpstreamProtocol::Http2 => true,
        crate::config::UpstreamProtocol::Downstream => version == http::Version::HTTP_2,
    };
    if !h2 {
        let limit = rt.config.max_requests_per_connection;
        return rt.h1.send(addr, secure, req, limit).await;
    }
    // HTTP/2 carries the app's authority as `:authority`, in place of Host.
    *req.version_mut() = http::Version::HTTP_2;
    if let Some(host) = req.headers_mut().remove(header::HOST)
        && let Ok(authority) = http::uri::Authority::try_from(host.as_bytes())
    {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = Some(authority);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    rt.h2
        .send(addr, secure, req, rt.config.max_requests_per_connection)
        .await
}

/// The upstream request; `https` goes over the mesh's mutual TLS. Boxed,
/// as the downstream one (`handle`).
pub(super) fn build(
    method: &Method,
    (addr, secure): (SocketAddr, bool),
    path: &PathAndQuery,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Box<Request<Full<Bytes>>>, http::Error> {
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(if secure {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    uri.authority = Some(http::uri::Authority::try_from(addr.to_string())?);
    uri.path_and_query = Some(path.clone());
    let uri = Uri::from_parts(uri)?;
    let mut req = Request::builder()
        .method(method.clone())
        .uri(uri)
        .body(Full::new(body))?;
    *req.headers_mut() = headers.clone();
    Ok(Box::new(req))
}

/// Tries the request, retrying per the route's policy on other hosts where
/// possible, each try bounded by the per-try timeout.
#[allow(clippy::too_many_arguments)]
pub(super) async fn attempts(
    rt: &Arc<ClusterRuntime>,
    endpoints: &[crate::config::Endpoint],
    policy: Option<&RetryPolicy>,
    (method, version): (&Method, http::Version),
    path: &PathAndQuery,
    headers: &HeaderMap,
    body: &Bytes,
    hash: Option<u64>,
) -> Result<Response<Incoming>, (Response<Body>, Flag)> {
    let retries = policy.map_or(0, |p| p.num_retries);
    let mut tried: Vec<SocketAddr> = Vec::new();
    // Boxed, as a failed try is rare and every request's future would
    // carry its room while it waits on the upstream.
    let mut last: Option<Box<(Response<Body>, Flag)>> = None;
    for attempt in 0..=retries {
        if attempt > 0 {
            // Envoy's retry circuit breaker: at most max_retries retries in
            // flight, or with a retry budget a share of active requests.
            let allowed = match rt.config.limits.retry_budget {
                Some((percent, min)) => {
                    let share = f64::from(rt.active.load(Ordering::Relaxed)) * percent / 100.0;
                    min.max(share as u32)
                }
                None => rt.config.limits.max_retries,
            };
            if rt.active_retries.load(Ordering::Relaxed) >= allowed {
                rt.stats
                    .upstream_rq_retry_overflow
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
            rt.stats.upstream_rq_retry.fetch_add(1, Ordering::Relaxed);
            // Fully jittered exponential back-off from 25 ms, capped at 250 ms.
            let cap = (25u64 << (attempt - 1).min(4)).min(250);
            tokio::time::sleep(Duration::from_millis(fastrand::u64(..=cap))).await;
        }
        let exclude: &[SocketAddr] = if policy.is_some_and(|p| p.other_hosts) {
            &tried
        } else {
            &[]
        };
        let Some(addr) = rt.pick(endpoints, exclude, hash) else {
            return Err((
                local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                Flag::NoHealthyUpstream,
            ));
        };
        tried.push(addr);
        if rt.active.load(Ordering::Relaxed)
            >= rt.config.limits.max_requests.min(
                rt.config
                    .limits
                    .max_connections
                    .saturating_add(rt.config.limits.max_pending),
            )
        {
            rt.stats
                .upstream_rq_pending_overflow
                .fetch_add(1, Ordering::Relaxed);
            return Err((
                local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                ),
                Flag::Overflow,
            ));
        }
        let secure = rt.config.origination.is_some()
            || (rt.config.mtls.is_some() && endpoints.iter().any(|e| e.addr == addr && e.tls));
        let req = match build(method, (addr, secure), path, headers, body.clone()) {
            Ok(r) => r,
            Err(_) => return Err((local(StatusCode::BAD_REQUEST, "bad request"), Flag::None)),
        };
        rt.stats.upstream_rq_total.fetch_add(1, Ordering::Relaxed);
        rt.active.fetch_add(1, Ordering::Relaxed);
        let retrying = attempt > 0;
        if retrying {
            rt.active_retries.fetch_add(1, Ordering::Relaxed);
        }
        let guard = rt.start(addr);
        let send = send_on(rt, version, (addr, secure), req);
        let result = match policy.and_then(|p| p.per_try_timeout) {
            Some(t) => tokio::time::timeout(t, send).await.map_err(|_| ()),
            None => Ok(send.await),
        };
        drop(guard);
        rt.active.fetch_sub(1, Ordering::Relaxed);
        if retrying {
            rt.active_retries.fetch_sub(1, Ordering::Relaxed);
        }
        let (outcome, retry_ok) = match &result {
            Ok(Ok(rsp)) => {
                let code = rsp.status().as_u16();
                (
                    Outcome::Status(code),
                    policy.is_some_and(|p| status_retriable(p, code, rsp.headers())),
                )
            }
            Ok(Err(e)) if e.is_connect() => (
                Outcome::ConnectFailure,
                policy.is_some_and(|p| {
                    p.on_connect_failure || p.on_5xx || p.on_gateway_error || p.on_reset
                }),
            ),
            Ok(Err(_)) => (
                Outcome::Reset,
                policy.is_some_and(|p| p.on_reset || p.on_5xx || p.on_refused_stream),
            ),
            Err(()) => (
                Outcome::Timeout,
                policy.is_some_and(|p| p.on_5xx || p.on_gateway_error || p.on_reset),
            ),
        };
        rt.record(addr, outcome, endpoints.len());
        match result {
            Ok(Ok(rsp)) if !retry_ok || attempt == retries => return Ok(rsp),
            Ok(Ok(rsp)) => {
                debug!(status = rsp.status().as_u16(), %addr, "retrying");
                let _ = rsp.into_body().collect().await;
                last = None;
            }
            Ok(Err(e)) => {
                debug!(error = %e, %addr, "upstream attempt failed");
                if format!("{e:?}").contains("secure naming") {
                    rt.stats.ssl_fail_verify_san.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%addr, cluster = %rt.config.name, error = ?e, "server refused by secure naming");
                }
                last = Some(Box::new(if e.is_connect() {
                    (
                        local(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                        ),
                        Flag::ConnectFailure,
                    )
                } else {
                    (
                        local(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                        ),
                        Flag::Reset,
                    )
                }));
                if !retry_ok {
                    break;
                }
            }
            Err(()) => {
                last = Some(Box::new((
                    local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"),
                    Flag::Timeout,
                )));
                if !retry_ok {
                    break;
                }
            }
        }
    }
    Err(last.map_or_else(
        || {
            (
                local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream"),
                Flag::NoHealthyUpstream,
            )
        },
        |last| *last,
    ))
}

pub(super) fn status_retriable(p: &RetryPolicy, code: u16, headers: &HeaderMap) -> bool {
    (p.on_5xx && code >= 500)
        || (p.on_gateway_error && matches!(code, 502..=504))
        || (p.on_retriable_4xx && code == 409)
        || (p.on_status_codes && p.status_codes.contains(&code))
        || headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|g| p.grpc.contains(&g))
}
