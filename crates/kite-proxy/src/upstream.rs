//! Per-cluster runtime: connection pools, load balancing, circuit breakers
//! and outlier detection. A runtime outlives config pushes as long as its
//! cluster's definition is unchanged, so its pools and counters carry over.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
};

use hyper_util::client::legacy::connect::HttpConnector;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::config::{Cluster, Endpoint, Lb};

mod balance;
mod h1;
mod h2;

use balance::{pick_locality, pick_priority};
pub(crate) use h1::H1Pool;
pub(crate) use h2::H2Pool;

/// Envoy's `dns_refresh_rate` default.
const DNS_REFRESH: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Upstreams {
    runtimes: Mutex<HashMap<String, Arc<ClusterRuntime>>>,
    identity: Option<crate::identity::Watch>,
}

pub(crate) struct ClusterRuntime {
    pub(crate) config: Arc<Cluster>,
    /// HTTP/1.1, whose Host header carries the authority the app used.
    pub(crate) h1: H1Pool,
    /// HTTP/2 with prior knowledge, for HTTP/2 clusters and requests that
    /// arrived as HTTP/2 (gRPC): Istio's upstream protocol follows the
    /// downstream one.
    pub(crate) h2: H2Pool,
    /// For TCP proxying and CONNECT tunnels: the same TLS, no ALPN.
    tcp: MeshConnector,
    endpoint_state: Mutex<HashMap<SocketAddr, Arc<EndpointState>>>,
    rr: AtomicUsize,
    /// Requests in flight, for `max_requests` / `max_connections`.
    pub(crate) active: AtomicU32,
    /// A DNS cluster's endpoints as last resolved, and when.
    resolved: Mutex<Option<(Instant, Arc<Vec<Endpoint>>)>>,
    /// Retries in flight, for `max_retries`.
    pub(crate) active_retries: AtomicU32,
    /// Kept when the cluster's definition changes: Envoy's counters are the
    /// cluster name's, and Prometheus would read a reset as a restart.
    pub(crate) stats: Arc<ClusterStats>,
}

#[derive(Default)]
pub(crate) struct EndpointState {
    active: AtomicU32,
    outlier: Mutex<OutlierState>,
    pub(crate) requests: AtomicU64,
}

#[derive(Default)]
struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
}

/// Envoy's counter names, rendered by the admin `/stats` endpoint.
#[derive(Default)]
pub(crate) struct ClusterStats {
    pub(crate) upstream_rq_total: AtomicU64,
    pub(crate) upstream_rq_2xx: AtomicU64,
    pub(crate) upstream_rq_3xx: AtomicU64,
    pub(crate) upstream_rq_4xx: AtomicU64,
    pub(crate) upstream_rq_5xx: AtomicU64,
    pub(crate) upstream_rq_timeout: AtomicU64,
    pub(crate) upstream_rq_per_try_timeout: AtomicU64,
    pub(crate) upstream_rq_retry: AtomicU64,
    pub(crate) upstream_rq_retry_overflow: AtomicU64,
    pub(crate) upstream_rq_pending_overflow: AtomicU64,
    pub(crate) upstream_cx_connect_fail: AtomicU64,
    /// Servers refused by secure naming (Envoy's `ssl.fail_verify_san`).
    pub(crate) ssl_fail_verify_san: AtomicU64,
    /// Shared with the cluster's connectors, which count what they open:
    /// every connection, and those of the HTTP/1.1 and the HTTP/2 pool.
    pub(crate) upstream_cx_total: Arc<AtomicU64>,
    pub(crate) upstream_cx_http1_total: Arc<AtomicU64>,
    pub(crate) upstream_cx_http2_total: Arc<AtomicU64>,
    pub(crate) outlier_detection_ejections_enforced_total: AtomicU64,
}

/// What became of one attempt, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Outcome {
    Status(u16),
    ConnectFailure,
    Reset,
    Timeout,
}

// === impl Upstreams ===

impl Upstreams {
    pub(crate) fn new(identity: Option<crate::identity::Watch>) -> Self {
        Self {
            runtimes: Mutex::default(),
            identity,
        }
    }

    /// The runtime for `cluster`, replaced when its definition changed.
    pub(crate) fn get(&self, cluster: &Arc<Cluster>) -> Arc<ClusterRuntime> {
        let mut runtimes = self.runtimes.lock();
        let previous = runtimes.get(&cluster.name);
        if let Some(rt) = previous
            && (rt.config == *cluster || *rt.config == **cluster)
        {
            return rt.clone();
        }
        let stats = previous.map(|rt| rt.stats.clone()).unwrap_or_default();
        let rt = Arc::new(ClusterRuntime::new(
            cluster.clone(),
            self.identity.clone(),
            stats,
        ));
        runtimes.insert(cluster.name.clone(), rt.clone());
        rt
    }

    pub(crate) fn all(&self) -> Vec<Arc<ClusterRuntime>> {
        let mut v: Vec<_> = self.runtimes.lock().values().cloned().collect();
        v.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        v
    }

    /// Forgets runtimes of clusters no longer configured.
    pub(crate) fn retain(&self, live: impl Fn(&str) -> bool) {
        self.runtimes.lock().retain(|name, _| live(name));
    }
}

// === impl ClusterRuntime ===

impl ClusterRuntime {
    /// Whether traffic to `addr` goes over TLS: origination for the whole
    /// cluster, or mesh mTLS to an endpoint that has a sidecar.
    pub(crate) fn secure(&self, endpoints: &[Endpoint], addr: SocketAddr) -> bool {
        self.config.origination.is_some()
            || (self.config.mtls.is_some() && endpoints.iter().any(|e| e.addr == addr && e.tls))
    }

    /// A byte stream to `addr` for TCP proxying and CONNECT tunnels, over
    /// the same TLS as HTTP to that endpoint.
    pub(crate) async fn connect_tcp(
        &self,
        addr: SocketAddr,
        secure: bool,
    ) -> Result<Box<dyn TcpIo>, BoxError> {
        Ok(match self.tcp.open(addr, secure).await? {
            MeshStream::Plain(s) => Box::new(s.into_inner()),
            MeshStream::Tls(s) => Box::new(s.into_inner()),
        })
    }

    fn new(
        config: Arc<Cluster>,
        identity: Option<crate::identity::Watch>,
        stats: Arc<ClusterStats>,
    ) -> Self {
        // The connect timeout is `MeshConnector::open`'s, over TCP and TLS.
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let connector = MeshConnector {
            http,
            mtls: identity.zip(config.mtls.clone()).map(Arc::new),
            origination: None,
            alpn: kite_identity::tls::ALPN_HTTP11,
            opened: stats.upstream_cx_total.clone(),
            codec_opened: Some(stats.upstream_cx_http1_total.clone()),
            connect_timeout: config.connect_timeout,
            mtls_config: Arc::default(),
        }
        .originating(config.origination.as_deref());
        let idle_timeout = config
            .idle_timeout
            .unwrap_or(std::time::Duration::from_secs(60));
        let h1 = H1Pool::new(connector.clone(), idle_timeout);
        let tcp = MeshConnector {
            alpn: b"",
            codec_opened: None,
            mtls_config: Arc::default(),
            ..connector.clone()
        }
        .originating(config.origination.as_deref());
        // The HTTP/2 client negotiates h2 over mTLS; the HTTP/1.1 client
        // stays on HTTP/1.1, whose Host header carries the authority the
        // app used (HTTP/2 would carry the endpoint's address instead).
        let connector = MeshConnector {
            alpn: kite_identity::tls::ALPN_H2,
            codec_opened: Some(stats.upstream_cx_http2_total.clone()),
            mtls_config: Arc::default(),
            ..connector
        }
        .originating(config.origination.as_deref());
        let h2 = H2Pool::new(connector, idle_timeout);
        Self {
            config,
            h1,
            h2,
            tcp,
            endpoint_state: Mutex::default(),
            rr: AtomicUsize::new(0),
            resolved: Mutex::default(),
            active: AtomicU32::new(0),
            active_retries: AtomicU32::new(0),
            stats,
        }
    }

    /// The cluster's endpoints: from the config, or for a DNS cluster its
    /// names resolved (again after Envoy's default refresh of 5 s).
    pub(crate) async fn endpoints(&self, state: &crate::state::State) -> Arc<Vec<Endpoint>> {
        let crate::config::Discovery::Dns(targets) = &self.config.discovery else {
            return state.cluster_endpoints(&self.config);
        };
        if let Some((at, eps)) = &*self.resolved.lock()
            && at.elapsed() < DNS_REFRESH
        {
            return eps.clone();
        }
        let mut out = Vec::new();
        for t in targets {
            match tokio::net::lookup_host((t.host.as_str(), t.port)).await {
                Ok(addrs) => out.extend(addrs.filter(SocketAddr::is_ipv4).map(|addr| Endpoint {
                    addr,
                    weight: t.weight,
                    locality: String::new(),
                    priority: 0,
                    locality_weight: 1,
                    tls: t.tls,
                })),
                Err(error) => {
                    tracing::debug!(cluster = %self.config.name, host = %t.host, %error, "DNS resolution failed")
                }
            }
        }
        let eps = Arc::new(out);
        *self.resolved.lock() = Some((Instant::now(), eps.clone()));
        eps
    }

    /// The last resolution of a DNS cluster, for the admin pages.
    pub(crate) fn resolved(&self) -> Option<Arc<Vec<Endpoint>>> {
        self.resolved.lock().as_ref().map(|(_, eps)| eps.clone())
    }

    pub(crate) fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointState> {
        self.endpoint_state.lock().entry(addr).or_default().clone()
    }

    /// Picks an endpoint, avoiding `exclude` (hosts already tried) and
    /// ejected hosts where others remain.
    pub(crate) fn pick(
        &self,
        endpoints: &[Endpoint],
        exclude: &[SocketAddr],
        hash: Option<u64>,
    ) -> Option<SocketAddr> {
        let now = Instant::now();
        let is_healthy = |e: &Endpoint| {
            self.endpoint(e.addr)
                .outlier
                .lock()
                .ejected_until
                .is_none_or(|t| t <= now)
        };
        let healthy: Vec<&Endpoint> = endpoints.iter().filter(|e| is_healthy(e)).collect();
        let pool: Vec<&Endpoint> = if (healthy.len() as f64) * 100.0
            < self.config.panic_threshold * endpoints.len() as f64
        {
            // Panic mode: too few healthy hosts, so Envoy balances over all.
            endpoints.iter().collect()
        } else {
            let chosen = pick_priority(endpoints, &healthy);
            let pool: Vec<&Endpoint> = healthy
                .into_iter()
                .filter(|e| e.priority == chosen)
                .collect();
            if self.config.locality_weighted {
                pick_locality(endpoints, pool)
            } else {
                pool
            }
        };
        let fresh: Vec<&Endpoint> = if exclude.is_empty() {
            Vec::new()
        } else {
            pool.iter()
                .copied()
                .filter(|e| !exclude.contains(&e.addr))
                .collect()
        };
        let candidates = if fresh.is_empty() { pool } else { fresh };
        if candidates.is_empty() {
            return None;
        }
        if let Some(h) = hash {
            // Rendezvous hashing: stable per key, and only keys of a removed
            // host move.
            return candidates
                .iter()
                .max_by_key(|e| {
                    let mut s = DefaultHasher::new();
                    (h, e.addr).hash(&mut s);
                    s.finish()
                })
                .map(|e| e.addr);
        }
        let chosen = match self.config.lb {
            Lb::RoundRobin => {
                candidates[self.rr.fetch_add(1, Ordering::Relaxed) % candidates.len()]
            }
            Lb::Random | Lb::Hash => candidates[weighted_index(&candidates)],
            Lb::LeastRequest => {
                // Power of two choices, Envoy's default for LEAST_REQUEST.
                let a = candidates[weighted_index(&candidates)];
                let b = candidates[weighted_index(&candidates)];
                let load = |e: &Endpoint| self.endpoint(e.addr).active.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        };
        Some(chosen.addr)
    }

    /// Marks a request in flight on `addr` until the guard drops.
    pub(crate) fn start(&self, addr: SocketAddr) -> ActiveGuard {
        let ep = self.endpoint(addr);
        ep.active.fetch_add(1, Ordering::Relaxed);
        ep.requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard { ep }
    }

    /// Records an attempt's outcome: counters and outlier detection.
    pub(crate) fn record(&self, addr: SocketAddr, outcome: Outcome, endpoint_count: usize) {
        let s = &self.stats;
        match outcome {
            Outcome::Status(code) => {
                let counter = match code {
                    200..=299 => &s.upstream_rq_2xx,
                    300..=399 => &s.upstream_rq_3xx,
                    400..=499 => &s.upstream_rq_4xx,
                    _ => &s.upstream_rq_5xx,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::ConnectFailure => {
                s.upstream_cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Timeout => {
                s.upstream_rq_per_try_timeout
                    .fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Reset => {}
        }
        let Some(od) = self.config.outlier else {
            return;
        };
        let ep = self.endpoint(addr);
        let mut o = ep.outlier.lock();
        // Locally originated failures count as 503s, as Envoy does unless
        // split_external_local_origin_errors is set.
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(c) => (c >= 500, matches!(c, 502..=504)),
            _ => (true, true),
        };
        o.consecutive_5xx = if is_5xx { o.consecutive_5xx + 1 } else { 0 };
        o.consecutive_gateway = if is_gateway {
            o.consecutive_gateway + 1
        } else {
            0
        };
        let tripped = od
            .consecutive_5xx
            .is_some_and(|n| n > 0 && o.consecutive_5xx >= n)
            || od
                .consecutive_gateway
                .is_some_and(|n| n > 0 && o.consecutive_gateway >= n);
        if !tripped || o.ejected_until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        drop(o);
        let now = Instant::now();
        let ejected = self.ejections_active();
        let max = (endpoint_count * od.max_ejection_percent as usize)
            .div_ceil(100)
            .max(1);
        if ejected >= max {
            return;
        }
        let mut o = ep.outlier.lock();
        o.ejections += 1;
        o.ejected_until = Some(now + od.base_ejection * o.ejections);
        o.consecutive_5xx = 0;
        o.consecutive_gateway = 0;
        s.outlier_detection_ejections_enforced_total
            .fetch_add(1, Ordering::Relaxed);
        tracing::info!(cluster = %self.config.name, endpoint = %addr, until = ?o.ejected_until, "outlier ejected");
    }

    /// Endpoints ejected now (Envoy's `outlier_detection.ejections_active`).
    pub(crate) fn ejections_active(&self) -> usize {
        let now = Instant::now();
        self.endpoint_state
            .lock()
            .values()
            .filter(|e| e.outlier.lock().ejected_until.is_some_and(|t| t > now))
            .count()
    }

    pub(crate) fn is_ejected(&self, addr: SocketAddr) -> bool {
        self.endpoint(addr)
            .outlier
            .lock()
            .ejected_until
            .is_some_and(|t| t > Instant::now())
    }

    pub(crate) fn endpoint_requests(&self, addr: SocketAddr) -> u64 {
        self.endpoint(addr).requests.load(Ordering::Relaxed)
    }
}

pub(crate) struct ActiveGuard {
    ep: Arc<EndpointState>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.ep.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn weighted_index(candidates: &[&Endpoint]) -> usize {
    let total: u64 = candidates.iter().map(|e| u64::from(e.weight.max(1))).sum();
    let mut pick = fastrand::u64(..total.max(1));
    for (i, e) in candidates.iter().enumerate() {
        let w = u64::from(e.weight.max(1));
        if pick < w {
            return i;
        }
        pick -= w;
    }
    candidates.len() - 1
}

/// A stable hash of a request's hash key (header value, cookie, address).
pub(crate) fn hash_key(key: &str) -> u64 {
    let mut s = DefaultHasher::new();
    key.hash(&mut s);
    s.finish()
}

/// Why an exchange with an upstream failed: before the request could be
/// sent (connect, TLS) or after.
#[derive(Debug)]
pub(crate) enum SendError {
    Connect(BoxError),
    Exchange(BoxError),
}

impl SendError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => write!(f, "connect: {e}"),
            SendError::Exchange(e) => write!(f, "exchange: {e}"),
        }
    }
}

/// Connects plaintext for `http://` and with the mesh's mutual TLS for
/// `https://` (endpoints that have a sidecar), checking the server's
/// identity against the cluster's list (secure naming). ALPN offers h2, so
/// sidecar to sidecar traffic is HTTP/2 when both speak it.
#[derive(Clone)]
pub(crate) struct MeshConnector {
    http: HttpConnector,
    mtls: Option<Arc<(crate::identity::Watch, crate::config::UpstreamMtls)>>,
    /// TLS origination's settings with this connector's ALPN, and the SNI.
    origination: Option<(Arc<rustls::ClientConfig>, String)>,
    /// The one application protocol offered; none when empty (raw TCP).
    alpn: &'static [u8],
    /// Connections opened, for Envoy's `upstream_cx_total`, and for its
    /// `upstream_cx_http1_total` or `upstream_cx_http2_total` by an HTTP pool.
    opened: Arc<AtomicU64>,
    codec_opened: Option<Arc<AtomicU64>>,
    connect_timeout: std::time::Duration,
    /// The mTLS client settings for the current certificate, built once
    /// rather than per connection: building parses the private key, and a
    /// shared config keeps one session cache, so reconnects resume.
    mtls_config: Arc<Mutex<Option<MtlsConfig>>>,
}

type MtlsConfig = (Arc<crate::identity::Active>, Arc<rustls::ClientConfig>);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl MeshConnector {
    /// A connection to `addr`, over TLS when `secure`. The cluster's
    /// connect timeout covers the TLS handshake too, as Envoy's does: a
    /// server that accepts and never answers fails the attempt.
    async fn open(&self, addr: SocketAddr, secure: bool) -> Result<MeshStream, BoxError> {
        let scheme = if secure { "https" } else { "http" };
        let uri: http::Uri = format!("{scheme}://{addr}/").parse()?;
        tokio::time::timeout(
            self.connect_timeout,
            tower_service::Service::call(&mut self.clone(), uri),
        )
        .await
        .map_err(|_| -> BoxError { "connect timeout".into() })?
    }

    /// Builds the origination settings for this connector's ALPN once, not
    /// per connection.
    fn originating(self, tls: Option<&crate::config::Origination>) -> Self {
        let origination = tls.map(|tls| {
            let mut config = (*tls.config).clone();
            config.alpn_protocols = offered(self.alpn);
            (Arc::new(config), tls.sni.clone())
        });
        Self {
            origination,
            ..self
        }
    }
}

impl tower_service::Service<http::Uri> for MeshConnector {
    type Response = MeshStream;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<MeshStream, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let secure = uri.scheme_str() == Some("https");
        let host = plain_host(&uri);
        let plain: http::Uri = match uri.authority() {
            Some(a) => format!("http://{a}/").parse().unwrap_or(uri),
            None => uri,
        };
        let connecting = self.http.call(plain);
        let mtls = self.mtls.clone();
        let origination = self.origination.clone();
        let alpn = self.alpn;
        let opened = self.opened.clone();
        let codec_opened = self.codec_opened.clone();
        let mtls_config = self.mtls_config.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            opened.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = &codec_opened {
                n.fetch_add(1, Ordering::Relaxed);
            }
            if !secure {
                return Ok(MeshStream::Plain(tcp));
            }
            if let Some((config, sni)) = origination {
                // Without an SNI the address is the name, which sends none.
                let sni = if sni.is_empty() { host } else { sni };
                let name = rustls::pki_types::ServerName::try_from(sni.clone())
                    .map_err(|e| -> BoxError { format!("SNI {sni:?}: {e}").into() })?;
                let mut stream = crate::tls::connect(config, name, tcp.into_inner())
                    .await
                    .map_err(|e| -> BoxError { format!("TLS handshake: {e}").into() })?;
                drop(stream.take_peer_certificates());
                return Ok(MeshStream::Tls(Box::new(hyper_util::rt::TokioIo::new(
                    stream,
                ))));
            }
            let Some(mtls) = mtls else {
                return Err("this cluster has no mutual TLS settings".into());
            };
            let (identity, settings) = &*mtls;
            let active = match &*identity.borrow() {
                crate::identity::Status::Ready(a) => a.clone(),
                crate::identity::Status::Pending(why) => {
                    return Err(format!("no workload certificate yet: {why}").into());
                }
            };
            let cached = mtls_config
                .lock()
                .as_ref()
                .filter(|(certificate, _)| Arc::ptr_eq(certificate, &active))
                .map(|(_, config)| config.clone());
            let config = match cached {
                Some(config) => config,
                None => {
                    let config = Arc::new(active.creds.client_config(
                        settings.allowed.clone(),
                        &[alpn][..usize::from(!alpn.is_empty())],
                    )?);
                    *mtls_config.lock() = Some((active.clone(), config.clone()));
                    config
                }
            };
            // The SNI names the destination for gateways that route on it;
            // the certificate check itself is by SPIFFE identity.
            let sni = if settings.sni.is_empty() {
                "mesh.local"
            } else {
                settings.sni.as_str()
            };
            let name = rustls::pki_types::ServerName::try_from(sni.to_owned())
                .map_err(|e| -> BoxError { format!("SNI {sni:?}: {e}").into() })?;
            let mut tls = crate::tls::connect(config, name, tcp.into_inner())
                .await
                .map_err(|e| -> BoxError { format!("mTLS handshake: {e}").into() })?;
            // The verifier has checked the server's identity; nothing reads
            // its chain again.
            drop(tls.take_peer_certificates());
            Ok(MeshStream::Tls(Box::new(hyper_util::rt::TokioIo::new(tls))))
        })
    }
}

fn offered(alpn: &[u8]) -> Vec<Vec<u8>> {
    if alpn.is_empty() {
        Vec::new()
    } else {
        vec![alpn.to_vec()]
    }
}

/// The host of a URI without brackets, as a TLS server name.
fn plain_host(uri: &http::Uri) -> String {
    uri.host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned()
}

/// A connection to an endpoint as plain bytes.
pub(crate) trait TcpIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> TcpIo for T {}

pub(crate) enum MeshStream {
    Plain(hyper_util::rt::TokioIo<tokio::net::TcpStream>),
    // Boxed: a TLS session is large and pooled connections are many.
    Tls(Box<hyper_util::rt::TokioIo<crate::tls::ClientTls>>),
}

impl hyper::rt::Read for MeshStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            MeshStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for MeshStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MeshStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            MeshStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    // Without these hyper flattens: it copied every request body into its
    // write buffer (one 64 KiB allocation and copy per 64 KiB request) and
    // sent head and body in one write; now both go out in one writev, and
    // over mTLS in one record where they fit.
    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MeshStream::Plain(s) => std::pin::Pin::new(s).poll_write_vectored(cx, bufs),
            MeshStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MeshStream::Plain(s) => s.is_write_vectored(),
            MeshStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            MeshStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            MeshStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            MeshStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// Runs `sweep` over a connection pool every `timeout` (at least 100 ms),
/// for the idle timeout. Ends with the pool, or once `sweep` returns false
/// (the pool is empty), so that an unused pool keeps no task.
fn spawn_sweeper<T: Send + 'static>(
    pool: std::sync::Weak<Mutex<T>>,
    timeout: std::time::Duration,
    mut sweep: impl FnMut(&mut T, Instant) -> bool + Send + 'static,
) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(timeout.max(std::time::Duration::from_millis(100))).await;
            let Some(pool) = pool.upgrade() else { return };
            if !sweep(&mut pool.lock(), Instant::now()) {
                return;
            }
        }
    });
}
