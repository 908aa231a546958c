//! The mesh the benchmark loads, and reading the control plane (its API, /proc).

use super::*;

// === the mesh ===

pub(crate) fn namespace(i: usize) -> String {
    format!("ns-{i:02}")
}

/// Service `s` lives in namespace `s % namespaces`.
pub(crate) fn service_name(s: usize) -> String {
    format!("svc-{s:05}")
}

/// Pod addresses from 127.16.0.1 on, 254 per /24, like `kite up` hands out
/// loopback addresses.
pub(crate) fn pod_ip(index: usize) -> Ipv4Addr {
    let hi = 16 + index / (254 * 256);
    let mid = (index / 254) % 256;
    let lo = index % 254 + 1;
    Ipv4Addr::new(
        127,
        u8::try_from(hi).unwrap_or(255),
        u8::try_from(mid).unwrap_or(0),
        u8::try_from(lo).unwrap_or(1),
    )
}

pub(crate) struct Pod {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) service: usize,
    pub(crate) ip: Ipv4Addr,
}

pub(crate) struct Mesh {
    pub(crate) services: usize,
    pub(crate) namespaces: usize,
    pub(crate) pods: Vec<Pod>,
}

impl Mesh {
    pub(crate) fn new(args: &Args) -> Self {
        // Endpoints spread evenly, the first services taking the remainder.
        let per = args.endpoints / args.services;
        let extra = args.endpoints % args.services;
        let mut pods = Vec::with_capacity(args.endpoints);
        for s in 0..args.services {
            for k in 0..per + usize::from(s < extra) {
                let index = pods.len();
                pods.push(Pod {
                    name: format!(
                        "{}-{:08x}-{k}",
                        service_name(s),
                        index * 2_654_435_761 % (1 << 32)
                    ),
                    namespace: namespace(s % args.namespaces),
                    service: s,
                    ip: pod_ip(index),
                });
            }
        }
        Self {
            services: args.services,
            namespaces: args.namespaces,
            pods,
        }
    }

    pub(crate) fn service_json(&self, s: usize) -> Value {
        let name = service_name(s);
        let mut ports = vec![json!({"name": "http", "port": 8080, "targetPort": 8080})];
        // Some services also serve gRPC, as real fleets mix protocols.
        if s.is_multiple_of(10) {
            ports.push(json!({"name": "grpc", "port": 9090, "targetPort": 9090}));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace(s % self.namespaces), "labels": {"app": name}},
            "spec": {"selector": {"app": name}, "ports": ports},
        })
    }

    pub(crate) fn labels(&self, pod: &Pod) -> BTreeMap<String, String> {
        [
            ("app", service_name(pod.service)),
            ("version", "v1".to_owned()),
            // What `kite up` (and Istio's injector) marks pods with a
            // sidecar with, so clients reach them over mutual TLS.
            ("security.istio.io/tlsMode", "istio".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A pod registered as `kite up` registers one.
    pub(crate) fn workload_entry_json(&self, pod: &Pod) -> Value {
        json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            "spec": {
                "address": pod.ip.to_string(),
                "labels": self.labels(pod),
                "serviceAccount": service_name(pod.service),
            },
        })
    }

    /// Which pod simulated sidecar `i` is: spread over services and so over
    /// namespaces.
    pub(crate) fn proxy_pod(&self, i: usize, proxies: usize) -> &Pod {
        let index = (i * self.pods.len() / proxies + i) % self.pods.len();
        &self.pods[index]
    }
}

// === control-plane API and /proc ===

pub(crate) async fn api(
    base: &str,
    method: &str,
    path: &str,
    body: String,
) -> anyhow::Result<Value> {
    let stream = tokio::net::TcpStream::connect(base)
        .await
        .with_context(|| format!("connecting to the control plane's API at {base}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, base)
        .header(http::header::CONTENT_TYPE, "application/yaml")
        .body(Full::new(Bytes::from(body)))?;
    let rsp = sender
        .send_request(req)
        .await
        .with_context(|| format!("{method} {path}"))?;
    let status = rsp.status();
    let bytes = rsp.into_body().collect().await?.to_bytes();
    let value: Value = serde_json::from_slice(&bytes).with_context(|| {
        format!("{method} {path} answered {status} with a body that is not JSON")
    })?;
    if !status.is_success() {
        bail!("{method} {path} answered {status}: {value}");
    }
    Ok(value)
}

pub(crate) async fn apply(base: &str, objects: &[Value]) -> anyhow::Result<()> {
    let body = objects
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n---\n");
    api(base, "POST", "/apis/apply?file=scale", body).await?;
    Ok(())
}

/// CPU (user + system) the process has used, from /proc/<pid>/stat.
pub(crate) fn cpu_ms(pid: u32, clk_tck: u64) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name may hold spaces; fields count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path} has no command name"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: field {} is not a number", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) * 1000 / clk_tck)
}

/// Resident memory from /proc/<pid>/status, in MiB.
pub(crate) fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmRSS:")
}

/// The most resident memory since the process started, or since
/// [`reset_peak_rss`].
pub(crate) fn peak_rss_mib(pid: u32) -> anyhow::Result<f64> {
    status_mib(pid, "VmHWM:")
}

/// Starts the peak that [`peak_rss_mib`] reports over (Linux 4.0 and later).
pub(crate) fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("writing {path}"))
}

fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{path} has no {field}"))?;
    Ok(kb / 1024.0)
}
