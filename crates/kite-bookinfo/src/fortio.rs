//! Istio's fortio client pod (`samples/httpbin/sample-client`): its server
//! echoes requests, and `load` drives a fixed number of requests over a few
//! keep-alive connections, as `fortio load -c <n> -qps <q> -n <n>` does in
//! the circuit-breaking task, and reports the status codes the same way.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    sync::{Mutex, mpsc},
};

use crate::{
    Env, Error,
    server::{self, App, Request, Response},
};

/// `fortio server`'s echo: the request body back, with `?status=<code>` and
/// `?delay=<duration>` honoured. It serves HTTP/1.1 and h2c. A gRPC call
/// (`content-type: application/grpc…`, any method) gets its framed
/// messages back as the response, with `grpc-status: 0` in the trailers: a
/// unary echo for any service and method.
pub struct Echo;

impl App for Echo {
    async fn handle(&self, req: Request) -> Response {
        let mut status = StatusCode::OK;
        for (key, value) in req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
        {
            match key {
                "status" => {
                    status = value
                        .parse()
                        .ok()
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .unwrap_or(status)
                }
                "delay" => {
                    if let Some(d) = parse_duration(value) {
                        tokio::time::sleep(d.min(Duration::from_secs(10))).await;
                    }
                }
                _ => {}
            }
        }
        let grpc = req
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        if grpc {
            let mut rsp = server::with_type(StatusCode::OK, "application/grpc", req.into_body());
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            rsp.extensions_mut().insert(server::Trailers(trailers));
            return rsp;
        }
        server::with_type(status, "application/octet-stream", req.into_body())
    }
}

fn parse_duration(s: &str) -> Option<Duration> {
    let (number, scale) = if let Some(ms) = s.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(secs) = s.strip_suffix('s') {
        (secs, 1.0)
    } else {
        (s, 1.0)
    };
    Duration::try_from_secs_f64(number.parse::<f64>().ok()? * scale).ok()
}

/// What `fortio load` is told.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Connections, each driven by its own worker (`-c`).
    pub connections: usize,
    /// Requests per second over all connections; 0 is as fast as possible.
    pub qps: f64,
    /// Total requests (`-n`).
    pub requests: usize,
    pub url: Uri,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// Status codes seen (`None`: no HTTP response), sockets opened, elapsed,
/// and each request's latency. At a fixed rate a latency counts from when
/// the request was due, not when it went out, so a stall shows in every
/// request it delayed (no coordinated omission).
#[derive(Debug, Default)]
pub struct LoadReport {
    pub codes: BTreeMap<Option<u16>, usize>,
    pub sockets: usize,
    pub connections: usize,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    pub fn count(&self, code: u16) -> usize {
        self.codes.get(&Some(code)).copied().unwrap_or(0)
    }

    /// The latency below which `q` (0–1) of the requests finished.
    pub fn percentile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let Some(last) = sorted.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        sorted[((last as f64) * q).round() as usize]
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.codes.values().sum();
        writeln!(
            f,
            "Sockets used: {} (for perfect keepalive, would be {})",
            self.sockets, self.connections
        )?;
        for (code, n) in &self.codes {
            let pct = 100.0 * *n as f64 / total.max(1) as f64;
            match code {
                Some(c) => writeln!(f, "Code {c} : {n} ({pct:.1} %)")?,
                None => writeln!(f, "Code -1 : {n} ({pct:.1} %)")?,
            }
        }
        let ms = |q: f64| self.percentile(q).as_secs_f64() * 1000.0;
        writeln!(
            f,
            "Latency ms: p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3}",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999)
        )?;
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "All done {total} calls {:.3} ms avg, {:.1} qps",
            1000.0 * secs * self.connections as f64 / total.max(1) as f64,
            total as f64 / secs.max(f64::EPSILON)
        )
    }
}

/// Sends `requests` requests over `connections` keep-alive connections,
/// through the `HTTP_PROXY` of `env` when it names one (as the pod's app
/// reaches its sidecar in local mode).
pub async fn load(options: LoadOptions, env: &Env) -> Result<LoadReport, Error> {
    let authority = options
        .url
        .authority()
        .map(|a| a.to_string())
        .ok_or_else(|| Error::BadArgs {
            service: "fortio",
            reason: format!("{} has no host", options.url),
        })?;
    let proxy = ["http_proxy", "HTTP_PROXY"]
        .iter()
        .find_map(|name| env.get(name).filter(|v| !v.is_empty()))
        .and_then(crate::client::parse_proxy);
    let target = match proxy {
        Some(_) => options.url.to_string(),
        None => options
            .url
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.to_string()),
    };
    let connect_to = proxy.unwrap_or_else(|| {
        if authority.contains(':') {
            authority.clone()
        } else {
            format!("{authority}:80")
        }
    });
    let next = Arc::new(AtomicUsize::new(0));
    let sockets = Arc::new(AtomicUsize::new(0));
    let codes = Arc::new(Mutex::new(BTreeMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(options.requests)));
    let start = Instant::now();
    let paced = (options.qps > 0.0).then(|| pace(options.requests, options.qps, start));
    let workers: Vec<_> = (0..options.connections.max(1))
        .map(|_| {
            let (next, sockets, codes, latencies, paced) = (
                next.clone(),
                sockets.clone(),
                codes.clone(),
                latencies.clone(),
                paced.clone(),
            );
            let (connect_to, authority, target) =
                (connect_to.clone(), authority.clone(), target.clone());
            let options = options.clone();
            tokio::spawn(async move {
                let mut conn: Option<SendRequest<Full<Bytes>>> = None;
                loop {
                    // At a fixed rate, latency counts from when the request
                    // was due, not from when it went out: a late request
                    // is measured late (no coordinated omission).
                    let due = match &paced {
                        Some(due) => match due.lock().await.recv().await {
                            Some(due) => due,
                            None => return,
                        },
                        None if next.fetch_add(1, Ordering::Relaxed) >= options.requests => return,
                        None => Instant::now(),
                    };
                    if conn.as_ref().is_none_or(|c| c.is_closed()) {
                        conn = open(&connect_to).await;
                        if conn.is_some() {
                            sockets.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let code = match conn.as_mut() {
                        Some(sender) => {
                            exchange(sender, &target, &authority, options.timeout).await
                        }
                        None => None,
                    };
                    if code.is_none() {
                        conn = None;
                    }
                    let latency = due.elapsed();
                    latencies.lock().await.push(latency);
                    *codes.lock().await.entry(code).or_insert(0) += 1;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let codes = std::mem::take(&mut *codes.lock().await);
    let latencies = std::mem::take(&mut *latencies.lock().await);
    Ok(LoadReport {
        codes,
        latencies,
        sockets: sockets.load(Ordering::Relaxed),
        connections: options.connections.max(1),
        elapsed: start.elapsed(),
    })
}

/// Each request's due time at `qps`, handed out when it comes, from a
/// thread of its own. tokio's timer rounds a deadline up to its next
/// millisecond tick: paced by it, every request went out up to a
/// millisecond or two late, and the lateness counted as latency (the
/// direct loopback path's median read 1.3-1.6 ms in `bench/run.sh`). A
/// thread's sleep wakes within tens of microseconds.
fn pace(requests: usize, qps: f64, start: Instant) -> Arc<Mutex<mpsc::UnboundedReceiver<Instant>>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for i in 0..requests {
            let due = start + Duration::from_secs_f64(i as f64 / qps);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if tx.send(due).is_err() {
                return;
            }
        }
    });
    Arc::new(Mutex::new(rx))
}

async fn open(addr: &str) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &str,
    authority: &str,
    timeout: Duration,
) -> Option<u16> {
    let attempt = async {
        sender.ready().await.ok()?;
        let req = http::Request::get(target)
            .header(header::HOST, authority)
            .header(header::USER_AGENT, "fortio.org/fortio-kite")
            .body(Full::new(Bytes::new()))
            .ok()?;
        let rsp = sender.send_request(req).await.ok()?;
        let status = rsp.status().as_u16();
        rsp.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The echo on a free loopback port.
    async fn echo_server(protocols: server::Protocols) -> std::net::SocketAddr {
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(server::serve_with(
            listener,
            Arc::new(Echo),
            protocols,
            std::future::pending(),
        ));
        addr
    }

    /// `requests` as fast as `connections` keep-alive connections go.
    async fn load_closed(url: String, connections: usize, requests: usize) -> LoadReport {
        load(
            LoadOptions {
                connections,
                qps: 0.0,
                requests,
                url: url.parse().unwrap(),
                timeout: Duration::from_secs(5),
            },
            &Env::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn load_counts_codes_over_keepalive_connections() {
        let addr = echo_server(server::Protocols::Http1).await;
        let report = load_closed(format!("http://{addr}/echo?status=503"), 2, 10).await;
        assert_eq!(report.count(503), 10, "{report}");
        assert_eq!(report.sockets, 2, "{report}");
        assert_eq!(report.latencies.len(), 10);
        assert!(report.percentile(0.5) <= report.percentile(0.999));
        assert!(report.to_string().contains("Latency ms: p50 "), "{report}");
        assert!(report.to_string().contains("Code 503 : 10 (100.0 %)"));
    }

    /// At a fixed rate every request is sent, none before it is due: the
    /// run lasts at least until the last one's time.
    #[tokio::test]
    async fn load_at_a_fixed_rate_keeps_the_schedule() {
        let addr = echo_server(server::Protocols::Http1).await;
        let report = load(
            LoadOptions {
                connections: 4,
                qps: 400.0,
                requests: 40,
                url: format!("http://{addr}/echo").parse().unwrap(),
                timeout: Duration::from_secs(5),
            },
            &Env::default(),
        )
        .await
        .unwrap();
        assert_eq!(report.count(200), 40, "{report}");
        assert_eq!(report.latencies.len(), 40);
        assert!(
            report.elapsed >= Duration::from_secs_f64(39.0 / 400.0),
            "{report}"
        );
    }

    /// A unary gRPC call over h2c: the framed message back, and
    /// `grpc-status: 0` in the trailers.
    #[tokio::test]
    async fn echoes_grpc_over_h2c() {
        let addr = echo_server(server::Protocols::Http1AndH2c).await;
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let message = Bytes::from_static(b"\0\0\0\0\x03abc");
        let req = http::Request::post(format!("http://{addr}/kite.Echo/Echo"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Full::new(message.clone()))
            .unwrap();
        let rsp = sender.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/grpc");
        let body = rsp.into_body().collect().await.unwrap();
        let trailers = body.trailers().cloned().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(body.to_bytes(), message);

        // HTTP/1.1 still works on the same port, without trailers.
        let report = load_closed(format!("http://{addr}/"), 1, 2).await;
        assert_eq!(report.count(200), 2, "{report}");
    }
}
