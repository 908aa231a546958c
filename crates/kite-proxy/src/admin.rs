//! Admin (Envoy's 15000) and readiness (Istio's 15021) endpoints.

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kite_xds::type_url;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::{Action, Discovery, ListenerKind},
    state::{Applier, State},
    upstream::Upstreams,
};

pub(crate) struct Admin {
    pub(crate) state: watch::Receiver<Arc<State>>,
    pub(crate) connected: watch::Receiver<bool>,
    pub(crate) applier: Arc<Applier>,
    pub(crate) upstreams: Arc<Upstreams>,
    /// The workload certificate, when the proxy has an identity.
    pub(crate) identity: Option<crate::identity::Watch>,
}

pub(crate) async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let admin = admin.clone();
            async move { Ok::<_, std::convert::Infallible>(admin.handle(req.uri().path())) }
        });
        crate::spawn_connection(
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc),
        );
    }
}

pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

impl Admin {
    /// Ready once listeners and clusters have been received; a proxy that
    /// has never reached its control plane says so.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        if let Some(identity) = &self.identity
            && let crate::identity::Status::Pending(why) = &*identity.borrow()
        {
            return Err(why.clone());
        }
        let state = self.state.borrow();
        let got = |t| state.versions.get(t).copied().unwrap_or(0) > 0;
        if got(type_url::LISTENER) && got(type_url::CLUSTER) {
            Ok(())
        } else if *self.connected.borrow() {
            Err(
                "connected to the control plane; waiting for the first listeners and clusters"
                    .into(),
            )
        } else {
            Err("not connected to the control plane yet".into())
        }
    }

    fn handle(&self, path: &str) -> Response<Full<Bytes>> {
        match path {
            "/ready" | "/healthz/ready" => match self.readiness() {
                Ok(()) => text(StatusCode::OK, "LIVE\n".into()),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/config_dump" => json_rsp(&self.config_dump()),
            "/clusters" => text(StatusCode::OK, self.clusters()),
            "/stats" => text(StatusCode::OK, self.stats()),
            "/certs" => json_rsp(&self.certs()),
            "/" => text(
                StatusCode::OK,
                "kite proxy admin: /ready /config_dump /clusters /stats\n".into(),
            ),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// The workload certificate in force, like Envoy's `/certs`.
    fn certs(&self) -> Value {
        let Some(identity) = &self.identity else {
            return json!({"certificates": [], "note": "this proxy has no workload identity"});
        };
        match &*identity.borrow() {
            crate::identity::Status::Pending(why) => json!({"certificates": [], "pending": why}),
            crate::identity::Status::Ready(a) => {
                let secs = |t: std::time::SystemTime| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                };
                json!({"certificates": [{
                    "identity": a.id.to_string(),
                    "issuer": a.issuer,
                    "valid_from": secs(a.not_before),
                    "expires": secs(a.not_after),
                    "chain": a.chain_pem,
                }]})
            }
        }
    }

    fn config_dump(&self) -> Value {
        let state = self.state.borrow().clone();
        let listeners: Vec<Value> = state
            .listeners
            .values()
            .map(|l| match &l.kind {
                ListenerKind::Http(h) => json!({"name": l.name, "address": l.addr.to_string(), "type": "HTTP", "route_config": h.route_config, "use_remote_address": h.use_remote_address}),
                ListenerKind::Tcp { clusters, by_sni, .. } => json!({"name": l.name, "address": l.addr.to_string(), "type": "TCP", "clusters": clusters.iter().chain(by_sni.iter().flat_map(|r| &r.clusters)).map(|(name, weight)| json!({"name": name, "weight": weight})).collect::<Vec<_>>(), "sni": by_sni.iter().map(|r| json!({"server_names": r.names, "clusters": r.clusters.iter().map(|(n, _)| n).collect::<Vec<_>>()})).collect::<Vec<_>>()}),
            })
            .collect();
        let routes: Vec<Value> = state
            .routes
            .values()
            .map(|rc| {
                json!({
                    "name": rc.name,
                    // Those fetched by VHDS so far, then the table's own.
                    "virtual_hosts": state
                        .vhosts
                        .range(format!("{}/", rc.name)..)
                        .take_while(|(name, _)| rc.vhds && name.starts_with(&format!("{}/", rc.name)))
                        .map(|(_, vh)| &**vh)
                        .chain(&rc.vhosts)
                        .map(|vh| json!({
                        "name": vh.name,
                        "domains": vh.domains,
                        "routes": vh.routes.iter().map(|r| json!({
                            "name": r.name,
                            "match": format!("{:?}", r.matcher.path),
                            "headers": r.matcher.headers.iter().map(|h| format!("{}{:?}", h.name, h.matcher)).collect::<Vec<_>>(),
                            "action": match &r.action {
                                Action::Route(a) => json!({"clusters": a.clusters.iter().map(|c| json!({"name": c.name, "weight": c.weight})).collect::<Vec<_>>(), "timeout": a.timeout.map(|t| t.as_secs_f64()), "retries": a.retry.as_ref().map(|p| p.num_retries)}),
                                Action::Redirect(r) => json!({"redirect": format!("{r:?}")}),
                                Action::Direct { status, .. } => json!({"direct_response": status}),
                            },
                            "fault": r.fault.as_ref().map(|f| format!("{f:?}")),
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let clusters: Vec<Value> = state
            .clusters
            .values()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": match c.discovery { Discovery::Eds(_) => "EDS", Discovery::Static(_) => "STATIC", Discovery::DynamicForward => "DYNAMIC_FORWARD_PROXY", Discovery::Dns(_) => "STRICT_DNS" },
                    "lb_policy": format!("{:?}", c.lb),
                    "connect_timeout": c.connect_timeout.as_secs_f64(),
                    "circuit_breakers": format!("{:?}", c.limits),
                    "outlier_detection": c.outlier.map(|o| format!("{o:?}")),
                    "endpoints": self.endpoints(&state, c).iter().map(|e| json!({"address": e.addr.to_string(), "weight": e.weight, "locality": e.locality})).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "versions": state.versions.iter().map(|(t, v)| (type_url::short(t).to_owned(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "listeners": listeners,
            "routes": routes,
            "clusters": clusters,
            "rejected": *self.applier.rejections.lock(),
        })
    }

    /// A cluster's endpoints; a DNS cluster's as last resolved.
    fn endpoints(
        &self,
        state: &crate::state::State,
        c: &Arc<crate::config::Cluster>,
    ) -> Arc<Vec<crate::config::Endpoint>> {
        match &c.discovery {
            Discovery::Dns(_) => self.upstreams.get(c).resolved().unwrap_or_default(),
            _ => state.cluster_endpoints(c),
        }
    }

    /// Envoy's `/clusters` text format: one line per endpoint fact.
    fn clusters(&self) -> String {
        let state = self.state.borrow().clone();
        let mut out = String::new();
        for c in state.clusters.values() {
            let rt = self.upstreams.get(c);
            for e in self.endpoints(&state, c).iter() {
                let health = if rt.is_ejected(e.addr) {
                    "/failed_outlier_check"
                } else {
                    "healthy"
                };
                out.push_str(&format!("{}::{}::health_flags::{health}\n", c.name, e.addr));
                out.push_str(&format!("{}::{}::weight::{}\n", c.name, e.addr, e.weight));
                out.push_str(&format!(
                    "{}::{}::locality::{}\n",
                    c.name, e.addr, e.locality
                ));
                out.push_str(&format!(
                    "{}::{}::rq_total::{}\n",
                    c.name,
                    e.addr,
                    rt.endpoint_requests(e.addr)
                ));
            }
        }
        out
    }

    fn stats(&self) -> String {
        let mut out = String::new();
        if let Some(identity) = &self.identity {
            // Istio's agent exports the certificate's expiry the same way.
            let (expiry, ready) = match &*identity.borrow() {
                crate::identity::Status::Ready(a) => (
                    a.not_after
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0),
                    1,
                ),
                crate::identity::Status::Pending(_) => (0, 0),
            };
            out.push_str(&format!("server.cert_expiry_timestamp_seconds: {expiry}\n"));
            out.push_str(&format!("server.cert_ready: {ready}\n"));
            out.push_str(&format!(
                "server.cert_renewal_failures: {}\n",
                crate::identity::RENEWAL_FAILURES.load(Ordering::Relaxed)
            ));
        }
        for rt in self.upstreams.all() {
            let s = &rt.stats;
            for (name, v) in [
                ("upstream_rq_total", &s.upstream_rq_total),
                ("upstream_rq_2xx", &s.upstream_rq_2xx),
                ("upstream_rq_3xx", &s.upstream_rq_3xx),
                ("upstream_rq_4xx", &s.upstream_rq_4xx),
                ("upstream_rq_5xx", &s.upstream_rq_5xx),
                ("upstream_rq_timeout", &s.upstream_rq_timeout),
                (
                    "upstream_rq_per_try_timeout",
                    &s.upstream_rq_per_try_timeout,
                ),
                ("upstream_rq_retry", &s.upstream_rq_retry),
                ("upstream_rq_retry_overflow", &s.upstream_rq_retry_overflow),
                (
                    "upstream_rq_pending_overflow",
                    &s.upstream_rq_pending_overflow,
                ),
                ("upstream_cx_connect_fail", &s.upstream_cx_connect_fail),
                ("upstream_cx_total", &*s.upstream_cx_total),
                ("upstream_cx_http1_total", &*s.upstream_cx_http1_total),
                ("upstream_cx_http2_total", &*s.upstream_cx_http2_total),
                ("ssl.fail_verify_san", &s.ssl_fail_verify_san),
                (
                    "outlier_detection.ejections_enforced_total",
                    &s.outlier_detection_ejections_enforced_total,
                ),
            ] {
                out.push_str(&format!(
                    "cluster.{}.{name}: {}\n",
                    rt.config.name,
                    v.load(Ordering::Relaxed)
                ));
            }
            out.push_str(&format!(
                "cluster.{}.outlier_detection.ejections_active: {}\n",
                rt.config.name,
                rt.ejections_active()
            ));
        }
        out
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain"),
    );
    rsp
}

fn json_rsp(v: &Value) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(v).unwrap_or_default(),
    )));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    rsp
}
