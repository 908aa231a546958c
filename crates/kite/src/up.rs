//! `kite up`: a mesh on this machine. The control plane, then for each
//! Deployment replica a sidecar and its app, each pod on a loopback address
//! of its own (the sidecar owns the pod IP, the app listens on a second
//! address as a pod's app listens on localhost), then the ingress gateway.
//! With no manifests it runs Istio's BookInfo.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use kite_bookinfo::Client;
use kite_config::{Object, Spec, load_paths, load_str};
use kite_control::{bootstrap::Bootstrap, proxy::ProxyKind};
use tokio::process::Command;

mod commands;
mod procs;
use commands::{app_command, proxy_command};
use procs::{Proc, restart, restart_delay, start, terminate, wait_http, wait_tcp};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Manifests to run (files or directories); default: Istio's BookInfo
    /// (bookinfo.yaml, bookinfo-gateway.yaml, destination-rule-all.yaml)
    manifests: Vec<PathBuf>,
    /// Directory for logs and state
    #[arg(long, default_value_os_t = crate::default_state_dir())]
    state_dir: PathBuf,
    /// The proxy beside each workload and at the gateway
    #[arg(long, default_value = "kite", value_parser = ["kite", "envoy"])]
    sidecar: String,
    /// Address of the ingress gateway (it listens on the ports its Gateway servers name)
    #[arg(long, default_value = "127.0.0.1")]
    gateway_ip: Ipv4Addr,
    /// Address of the egress gateway (Service istio-egressgateway.istio-system);
    /// default: the ingress gateway's address plus 2
    #[arg(long)]
    egress_gateway_ip: Option<Ipv4Addr>,
    /// Address of the control plane (xDS on 15010, API on 15014)
    #[arg(long, default_value = "127.0.0.1")]
    control_ip: Ipv4Addr,
    /// Pods get addresses in 127.<N>.0.0/16, their apps in 127.<N+1>.0.0/16
    #[arg(long, default_value_t = 10)]
    pod_net: u8,
    /// Lifetime of workload certificates in seconds (they renew at half)
    #[arg(long, default_value_t = 24 * 3600)]
    workload_cert_ttl: u64,
}

/// The demo runs as Istio's demo profile does, with access logs on (the
/// `envoy` provider: a line per request in each proxy's log).
const DEMO_ACCESS_LOGS: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  accessLogging:
  - providers:
    - name: envoy
";

const BOOKINFO: [(&str, &str); 3] = [
    (
        "bookinfo.yaml",
        include_str!("../assets/bookinfo/bookinfo.yaml"),
    ),
    (
        "bookinfo-gateway.yaml",
        include_str!("../assets/bookinfo/bookinfo-gateway.yaml"),
    ),
    (
        "destination-rule-all.yaml",
        include_str!("../assets/bookinfo/destination-rule-all.yaml"),
    ),
];

#[derive(Clone)]
struct Pod {
    name: String,
    namespace: String,
    ip: Ipv4Addr,
    app_ip: Ipv4Addr,
    port: u16,
    sidecar: bool,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let logs = args.state_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("creating the log directory {}", logs.display()))?;
    let objects = manifests(&args.manifests)?;

    let exe = std::env::current_exe().context("locating the kite binary")?;
    let mut procs: Vec<Proc> = Vec::new();
    let mut cluster = Cluster {
        api_url: format!(
            "http://{}",
            SocketAddr::new(IpAddr::V4(args.control_ip), 15014)
        ),
        xds: SocketAddr::new(IpAddr::V4(args.control_ip), 15010),
        index: 0,
        pods: Vec::new(),
    };
    let result = bring_up(&args, &objects, &exe, &logs, &mut procs, &mut cluster).await;
    let outcome = match result {
        Ok(()) => wait_for_stop(&args, &exe, &logs, &mut procs, &mut cluster).await,
        Err(e) => Err(e),
    };
    // Apps first, then their sidecars and the gateway, the control plane
    // last, so every proxy can finish what it carries.
    for p in procs.iter_mut().rev() {
        terminate(p).await;
    }
    eprintln!("stopped {} processes", procs.len());
    outcome.map(|()| ExitCode::SUCCESS)
}

fn manifests(paths: &[PathBuf]) -> anyhow::Result<Vec<Object>> {
    let loaded = if paths.is_empty() {
        let mut all = kite_config::Loaded::default();
        for (name, text) in BOOKINFO {
            all.extend(load_str(name, text));
        }
        all.extend(load_str("access-logs", DEMO_ACCESS_LOGS));
        all
    } else {
        load_paths(paths)?
    };
    for d in loaded.diagnostics.iter().filter(|d| d.is_error()) {
        eprintln!("{d}");
    }
    if loaded.has_errors() {
        bail!("the manifests have errors; nothing was started");
    }
    Ok(loaded.objects)
}

/// What `kite up` runs beyond the control plane and the gateway: the pods
/// of every Deployment in the control plane, kept in step with it.
struct Cluster {
    api_url: String,
    xds: SocketAddr,
    /// Pods started so far; numbers the next pod's addresses.
    index: u32,
    pods: Vec<RunningPod>,
}

struct RunningPod {
    /// (namespace, Deployment name)
    deployment: (String, String),
    /// The pod template it was started from: a changed template (a new
    /// image, `kite rollout restart`) replaces the pod.
    template: kite_config::k8s::PodTemplateSpec,
    pod: Pod,
}

async fn bring_up(
    args: &Args,
    objects: &[Object],
    exe: &Path,
    logs: &Path,
    procs: &mut Vec<Proc>,
    cluster: &mut Cluster,
) -> anyhow::Result<()> {
    let xds = cluster.xds;
    let api = SocketAddr::new(IpAddr::V4(args.control_ip), 15014);
    let mut control = Command::new(exe);
    control.args([
        "control",
        "--xds",
        &xds.to_string(),
        "--api",
        &api.to_string(),
        "--ca",
        &SocketAddr::new(IpAddr::V4(args.control_ip), 15012).to_string(),
    ]);
    control
        .arg("--ca-dir")
        .arg(args.state_dir.join("ca"))
        .args(["--workload-cert-ttl", &args.workload_cert_ttl.to_string()]);
    procs.push(start("control", control, logs)?);
    wait_http(procs.last_mut(), &format!("http://{api}/ready")).await?;
    let api_url = format!("http://{api}");
    apply(&api_url, objects).await?;

    // Injection follows the namespaces' labels, as in the manifests.
    let namespaces: HashMap<String, BTreeMap<String, String>> = objects
        .iter()
        .filter(|o| matches!(o.spec, Spec::Namespace))
        .map(|o| (o.meta.name.clone(), o.meta.labels.clone()))
        .collect();
    for object in objects {
        let Spec::Deployment(deploy) = &object.spec else {
            continue;
        };
        for _ in 0..deploy.replicas() {
            start_pod(args, exe, logs, procs, cluster, object, &namespaces).await?;
        }
    }
    let pods: Vec<Pod> = cluster.pods.iter().map(|p| p.pod.clone()).collect();

    let gw = Bootstrap {
        kind: ProxyKind::Router,
        ip: IpAddr::V4(args.gateway_ip),
        pod: format!("istio-ingressgateway-{}", pod_suffix()),
        namespace: "istio-system".into(),
        labels: [("istio", "ingressgateway"), ("app", "istio-ingressgateway")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        service_account: "istio-ingressgateway-service-account".into(),
        app_ip: None,
        xds,
        admin: SocketAddr::new(IpAddr::V4(args.gateway_ip), 15000),
    };
    // The gateway has a mesh identity too, so it reaches STRICT workloads
    // with mutual TLS.
    let gateway = proxy_command(args, exe, &gw, logs, INGRESS_GATEWAY, &api_url).await?;
    procs.push(start(INGRESS_GATEWAY, gateway, logs)?);
    wait_proxy_ready(args, procs.last_mut(), args.gateway_ip).await?;
    let ports = gateway_ports(objects);
    for port in &ports {
        wait_tcp(
            procs.last_mut(),
            SocketAddr::new(IpAddr::V4(args.gateway_ip), *port),
        )
        .await?;
    }
    let egress = start_egress_gateway(args, exe, logs, procs, &api_url, xds).await?;
    print_table(args, &pods, &[&gw, &egress], &ports, logs);
    Ok(())
}

const INGRESS_GATEWAY: &str = "istio-ingressgateway.proxy";
const EGRESS_GATEWAY: &str = "istio-egressgateway.proxy";

/// Istio's egress gateway, as the demo profile installs it: a router proxy
/// labelled `istio: egressgateway` behind the Service
/// `istio-egressgateway.istio-system` (ports 80 and 443), for routing the
/// mesh's outbound traffic through one exit.
async fn start_egress_gateway(
    args: &Args,
    exe: &Path,
    logs: &Path,
    procs: &mut Vec<Proc>,
    api_url: &str,
    xds: SocketAddr,
) -> anyhow::Result<Bootstrap> {
    let ip = args.egress_gateway_ip.unwrap_or_else(|| {
        let [a, b, c, d] = args.gateway_ip.octets();
        Ipv4Addr::new(a, b, c, d.wrapping_add(2))
    });
    let boot = Bootstrap {
        kind: ProxyKind::Router,
        ip: IpAddr::V4(ip),
        pod: format!("istio-egressgateway-{}", pod_suffix()),
        namespace: "istio-system".into(),
        labels: [("istio", "egressgateway"), ("app", "istio-egressgateway")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        service_account: "istio-egressgateway-service-account".into(),
        app_ip: None,
        xds,
        admin: SocketAddr::new(IpAddr::V4(ip), 15000),
    };
    let service = format!(
        "apiVersion: v1
kind: Service
metadata: {{name: istio-egressgateway, namespace: istio-system, labels: {{istio: egressgateway}}}}
spec:
  selector: {{istio: egressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: 80}}
  - {{name: https, port: 443, targetPort: 443}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {}, namespace: istio-system}}
spec:
  address: {ip}
  labels: {{istio: egressgateway, app: istio-egressgateway}}
  serviceAccount: istio-egressgateway-service-account
",
        boot.pod
    );
    let loaded = load_str("istio-egressgateway", &service);
    apply(api_url, &loaded.objects).await?;
    let cmd = proxy_command(args, exe, &boot, logs, EGRESS_GATEWAY, api_url).await?;
    procs.push(start(EGRESS_GATEWAY, cmd, logs)?);
    wait_proxy_ready(args, procs.last_mut(), ip).await?;
    Ok(boot)
}

/// Whether a pod gets a sidecar, as Istio's injector decides: a pod
/// annotation `sidecar.istio.io/inject: "false"` opts out; namespace
/// `default` and namespaces labelled `istio-injection=enabled` get one.
fn injected(
    namespace: &str,
    namespaces: &HashMap<String, BTreeMap<String, String>>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    if annotations
        .get("sidecar.istio.io/inject")
        .map(String::as_str)
        == Some("false")
    {
        return false;
    }
    namespace == "default"
        || namespaces
            .get(namespace)
            .and_then(|labels| labels.get("istio-injection"))
            .is_some_and(|v| v == "enabled")
}

/// Starts one replica of `deployment`: registers it, starts its sidecar
/// (when injected) and then its app.
async fn start_pod(
    args: &Args,
    exe: &Path,
    logs: &Path,
    procs: &mut Vec<Proc>,
    cluster: &mut Cluster,
    object: &Object,
    namespaces: &HashMap<String, BTreeMap<String, String>>,
) -> anyhow::Result<()> {
    let Spec::Deployment(deploy) = &object.spec else {
        return Ok(());
    };
    let template = &deploy.template;
    let Some(container) = template.spec.containers.first() else {
        return Ok(());
    };
    cluster.index += 1;
    let sidecar = injected(
        &object.meta.namespace,
        namespaces,
        &template.metadata.annotations,
    );
    let (ip, app_ip) = pod_addresses(args.pod_net, cluster.index)?;
    // Without a sidecar the app itself owns the pod address.
    let app_ip = if sidecar { app_ip } else { ip };
    let port = container
        .ports
        .first()
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(9080);
    let pod = Pod {
        name: format!("{}-{}", object.meta.name, pod_suffix()),
        namespace: object.meta.namespace.clone(),
        ip,
        app_ip,
        port,
        sidecar,
    };
    let labels = &template.metadata.labels;
    let sa = template.spec.service_account();
    let mut registered = labels.clone();
    if sidecar {
        // As Istio's injector marks pods with a sidecar: peers reach them
        // with mutual TLS.
        registered.insert("security.istio.io/tlsMode".into(), "istio".into());
    }
    if sidecar {
        let boot = Bootstrap {
            kind: ProxyKind::Sidecar,
            ip: IpAddr::V4(ip),
            pod: pod.name.clone(),
            namespace: pod.namespace.clone(),
            labels: labels.clone(),
            service_account: sa.to_owned(),
            app_ip: Some(IpAddr::V4(app_ip)),
            xds: cluster.xds,
            admin: SocketAddr::new(IpAddr::V4(ip), 15000),
        };
        // Only this pod's sidecar gets the credential for its identity.
        let proxy = proxy_command(
            args,
            exe,
            &boot,
            logs,
            &format!("{}.proxy", pod.name),
            &cluster.api_url,
        )
        .await?;
        procs.push(start(&format!("{}.proxy", pod.name), proxy, logs)?);
        wait_proxy_ready(args, procs.last_mut(), ip).await?;
    }
    let app = app_command(exe, object, container, &template.metadata.annotations, &pod)?;
    procs.push(start(&format!("{}.app", pod.name), app, logs)?);
    if !container.ports.is_empty() {
        wait_tcp(procs.last_mut(), SocketAddr::new(IpAddr::V4(app_ip), port)).await?;
    }
    // Only a pod that is up takes traffic: its endpoint appears now, as a
    // Kubernetes endpoint does once the pod is ready.
    register(&cluster.api_url, &pod, &registered, sa).await?;
    println!(
        "started pod {}/{} at {}{}",
        pod.namespace,
        pod.name,
        pod.ip,
        if sidecar { "" } else { " (no sidecar)" }
    );
    cluster.pods.push(RunningPod {
        deployment: (object.meta.namespace.clone(), object.meta.name.clone()),
        template: template.clone(),
        pod,
    });
    Ok(())
}

/// Brings the running pods in line with the Deployments the control plane
/// holds: `kite apply` of a Deployment starts its pods, `kite delete` (or a
/// lower replica count) stops them, as a cluster would.
async fn reconcile(
    args: &Args,
    exe: &Path,
    logs: &Path,
    procs: &mut Vec<Proc>,
    cluster: &mut Cluster,
) -> anyhow::Result<()> {
    let list = |kind: &'static str| {
        let api = cluster.api_url.clone();
        async move {
            let (_, reply) =
                crate::ctl::request(&api, "GET", &format!("/apis/objects?kind={kind}"), None)
                    .await?;
            anyhow::Ok(reply["items"].as_array().cloned().unwrap_or_default())
        }
    };
    let namespaces: HashMap<String, BTreeMap<String, String>> = list("Namespace")
        .await?
        .iter()
        .filter_map(|n| {
            let labels = n["metadata"]["labels"].as_object()?;
            Some((
                n["metadata"]["name"].as_str()?.to_owned(),
                labels
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect(),
            ))
        })
        .collect();
    let mut desired: Vec<(Object, u32)> = Vec::new();
    for item in list("Deployment").await? {
        let loaded = load_str("control-plane", &item.to_string());
        for object in loaded.objects {
            if let Spec::Deployment(d) = &object.spec {
                let replicas = d.replicas();
                desired.push((object, replicas));
            }
        }
    }
    let key = |o: &Object| (o.meta.namespace.clone(), o.meta.name.clone());
    // Pods of Deployments that are gone, or beyond the replicas wanted
    // (those of an older template first), stop.
    let mut stop = Vec::new();
    let mut keep: Vec<RunningPod> = Vec::new();
    let mut pods = std::mem::take(&mut cluster.pods);
    pods.sort_by_key(|rp| {
        let current = desired.iter().find(|(o, _)| key(o) == rp.deployment);
        current.is_some_and(
            |(o, _)| matches!(&o.spec, Spec::Deployment(d) if d.template == rp.template),
        )
    });
    pods.reverse();
    for rp in pods {
        let wanted = desired
            .iter()
            .find(|(o, _)| key(o) == rp.deployment)
            .map_or(0, |(_, r)| *r);
        let running = keep
            .iter()
            .filter(|k| k.deployment == rp.deployment)
            .count();
        if u32::try_from(running).unwrap_or(u32::MAX) < wanted {
            keep.push(rp);
        } else {
            stop.push(rp);
        }
    }
    cluster.pods = keep;
    for rp in stop {
        stop_pod(args, &cluster.api_url, procs, &rp.pod).await;
    }
    for (object, replicas) in &desired {
        let Spec::Deployment(deploy) = &object.spec else {
            continue;
        };
        let mine: Vec<usize> = (0..cluster.pods.len())
            .filter(|i| cluster.pods[*i].deployment == key(object))
            .collect();
        // Start what is missing.
        for _ in u32::try_from(mine.len()).unwrap_or(u32::MAX)..*replicas {
            start_pod(args, exe, logs, procs, cluster, object, &namespaces).await?;
        }
        // A changed template rolls: one new pod up and ready, then one old
        // pod out, per pass (make before break).
        if let Some(stale) = mine
            .iter()
            .copied()
            .find(|i| cluster.pods[*i].template != deploy.template)
        {
            let old = cluster.pods.remove(stale);
            start_pod(args, exe, logs, procs, cluster, object, &namespaces).await?;
            stop_pod(args, &cluster.api_url, procs, &old.pod).await;
        }
    }
    Ok(())
}

/// Takes a pod out of service without failing requests, as Kubernetes and
/// Istio do: its endpoint leaves the registry and every proxy ACKs that,
/// requests already on their way get a moment to arrive, the sidecar drains
/// what it carries and stops, then the app.
async fn stop_pod(args: &Args, api: &str, procs: &mut Vec<Proc>, pod: &Pod) {
    let we = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "spec": {"address": pod.ip.to_string()},
    });
    let _ = crate::ctl::request(
        api,
        "POST",
        "/apis/delete?file=kite-up",
        Some(we.to_string()),
    )
    .await;
    wait_pushed(api, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    if pod.sidecar && args.sidecar == "envoy" {
        // Envoy stops at once on SIGTERM; Istio's agent waits for it.
        wait_envoy_idle(pod.ip, Duration::from_secs(5)).await;
    }
    for suffix in [".proxy", ".app"] {
        let name = format!("{}{suffix}", pod.name);
        if let Some(i) = procs.iter().position(|p| p.name == name) {
            let mut p = procs.remove(i);
            terminate(&mut p).await;
        }
    }
    println!("stopped pod {}/{}", pod.namespace, pod.name);
}

/// Pod addresses in 127.<net>.0.0/16 and app addresses in the /16 after.
fn pod_addresses(net: u8, index: u32) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let (hi, lo) = (index / 250, index % 250 + 1);
    let hi = u8::try_from(hi).context("more than 62,500 pods")?;
    let lo = u8::try_from(lo).context("address overflow")?;
    let app_net = net.checked_add(1).context("--pod-net must be below 255")?;
    Ok((
        Ipv4Addr::new(127, net, hi, lo),
        Ipv4Addr::new(127, app_net, hi, lo),
    ))
}

/// A Kubernetes-like `<replicaset hash>-<pod id>` suffix.
fn pod_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let pick = |n| {
        (0..n)
            .map(|_| char::from(ALPHABET[fastrand::usize(..ALPHABET.len())]))
            .collect::<String>()
    };
    format!("{}-{}", pick(10), pick(5))
}

async fn apply(api: &str, objects: &[Object]) -> anyhow::Result<()> {
    let body = objects
        .iter()
        .map(|o| serde_json::to_string(&o.to_json()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let (status, reply) =
        crate::ctl::request(api, "POST", "/apis/apply?file=manifests", Some(body)).await?;
    if !status.is_success() {
        bail!("the control plane refused the manifests: {reply}");
    }
    Ok(())
}

/// Each replica is a WorkloadEntry: how the registry learns pod addresses.
async fn register(
    api: &str,
    pod: &Pod,
    labels: &BTreeMap<String, String>,
    sa: &str,
) -> anyhow::Result<()> {
    let we = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "spec": {"address": pod.ip.to_string(), "labels": labels, "serviceAccount": sa},
    });
    let (status, reply) = crate::ctl::request(
        api,
        "POST",
        "/apis/apply?file=kite-up",
        Some(we.to_string()),
    )
    .await?;
    if !status.is_success() {
        bail!("registering {}: {reply}", pod.name);
    }
    Ok(())
}

/// Waits until every connected proxy has ACKed the control plane's latest
/// config, at most `limit`.
async fn wait_pushed(api: &str, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Ok((_, v)) = crate::ctl::request(api, "GET", "/debug/connections", None).await {
            let proxies = v["proxies"].as_array().cloned().unwrap_or_default();
            let acked = v["revision"] == v["translatedRevision"]
                && proxies.iter().all(|p| {
                    p["generation"] == p["publishedGeneration"]
                        && p["types"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .all(|(_, t)| t["ackedVersion"] == t["sentVersion"])
                });
            if acked {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until an Envoy sidecar serves no inbound request, at most `limit`.
async fn wait_envoy_idle(ip: Ipv4Addr, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let client = Client::default();
    let url = format!("http://{ip}:15000/stats?filter=downstream_rq_active");
    while tokio::time::Instant::now() < deadline {
        let Ok(reply) = client
            .get(&url, Default::default(), Duration::from_secs(1))
            .await
        else {
            return;
        };
        let busy = String::from_utf8_lossy(&reply.body).lines().any(|l| {
            l.starts_with("http.inbound_")
                && l.rsplit(": ")
                    .next()
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    > Some(0)
        });
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn gateway_ports(objects: &[Object]) -> Vec<u16> {
    let mut ports: Vec<u16> = objects
        .iter()
        .filter_map(|o| match &o.spec {
            Spec::Gateway(g) => Some(g),
            _ => None,
        })
        .flat_map(|g| g.servers.iter())
        .filter(|s| {
            s.port
                .as_ref()
                .is_some_and(|p| p.protocol.eq_ignore_ascii_case("http"))
        })
        .filter_map(|s| s.port.as_ref().and_then(|p| u16::try_from(p.number).ok()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

async fn wait_proxy_ready(
    args: &Args,
    proc: Option<&mut Proc>,
    ip: Ipv4Addr,
) -> anyhow::Result<()> {
    let url = if args.sidecar == "envoy" {
        format!("http://{ip}:15000/ready")
    } else {
        format!("http://{ip}:15021/healthz/ready")
    };
    wait_http(proc, &url).await
}

fn print_table(args: &Args, pods: &[Pod], gateways: &[&Bootstrap], ports: &[u16], logs: &Path) {
    println!(
        "{:<38} {:<13} {:<16} {:<16} {:<8}",
        "POD", "NAMESPACE", "POD IP", "APP", "SIDECAR"
    );
    for p in pods {
        println!(
            "{:<38} {:<13} {:<16} {:<16} {:<8}",
            p.name,
            p.namespace,
            p.ip,
            format!("{}:{}", p.app_ip, p.port),
            if p.sidecar {
                args.sidecar.as_str()
            } else {
                "none"
            }
        );
    }
    for gw in gateways {
        println!(
            "{:<38} {:<13} {:<16} {:<16} {:<8}",
            gw.pod, gw.namespace, gw.ip, "-", args.sidecar
        );
    }
    println!();
    println!("Logs: {}", logs.display());
    println!(
        "Control plane: http://{}:15014 (kite get, kite apply, kite proxy-status)",
        args.control_ip
    );
    match ports.first() {
        Some(port) => println!(
            "BookInfo is up: http://{}:{port}/productpage",
            args.gateway_ip
        ),
        None => println!("The mesh is up (no HTTP Gateway server is configured)."),
    }
    println!("Press Ctrl-C to stop.");
}

/// Returns when the user stops the mesh, or with an error when a process
/// dies on its own.
async fn wait_for_stop(
    args: &Args,
    exe: &Path,
    logs: &Path,
    procs: &mut Vec<Proc>,
    cluster: &mut Cluster,
) -> anyhow::Result<()> {
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = check.tick() => {
                for p in procs.iter_mut() {
                    let now = tokio::time::Instant::now();
                    if p.restart_at.is_some_and(|at| at <= now) {
                        restart(p)?;
                        println!("restarted {} (restart {})", p.name, p.restarts);
                        continue;
                    }
                    if p.restart_at.is_some() {
                        continue;
                    }
                    let Some(status) = p.child.try_wait()? else {
                        continue;
                    };
                    // A pod's app or sidecar that exits is started again
                    // after a back-off, as the kubelet restarts containers;
                    // the control plane and the gateway are the mesh itself.
                    if !(p.name.ends_with(".app") || p.name.ends_with(".proxy"))
                        || [INGRESS_GATEWAY, EGRESS_GATEWAY].contains(&p.name.as_str())
                    {
                        bail!("{} exited with {status}; see {}", p.name, p.log.display());
                    }
                    let delay = restart_delay(p.restarts);
                    println!(
                        "{} exited with {status}; restarting in {} s (see {})",
                        p.name,
                        delay.as_secs(),
                        p.log.display()
                    );
                    p.restart_at = Some(now + delay);
                }
                if let Err(e) = reconcile(args, exe, logs, procs, cluster).await {
                    eprintln!("kite up: {e:#}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_back_off() {
        let secs: Vec<u64> = (0..8).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn sample_images() {
        let cases = [
            (
                "registry.istio.io/release/examples-bookinfo-reviews-v2:1.20.3",
                Some(("reviews", "v2")),
            ),
            (
                "docker.io/istio/examples-bookinfo-productpage-v-flooding:1.20",
                Some(("productpage", "v-flooding")),
            ),
            ("docker.io/kennethreitz/httpbin", Some(("httpbin", "v1"))),
            (
                "docker.io/mccutchen/go-httpbin:v2.15.0",
                Some(("httpbin", "v1")),
            ),
            (
                "registry.istio.io/release/examples-helloworld-v2:1.0",
                Some(("helloworld", "v2")),
            ),
            (
                "registry.istio.io/release/tcp-echo-server:1.3",
                Some(("tcp-echo", "v1")),
            ),
            (
                "docker.io/fortio/fortio:latest_release",
                Some(("fortio", "v1")),
            ),
            ("docker.io/curlimages/curl:8.16.0", None),
            ("example.com/examples-bookinfo-mongodb:1.20", None),
        ];
        for (image, want) in cases {
            let want = want.map(|(s, v)| (s.to_owned(), v.to_owned()));
            assert_eq!(commands::sample_image(image), want, "{image}");
        }
    }

    #[test]
    fn addresses() {
        let (pod, app) = pod_addresses(10, 1).unwrap();
        assert_eq!(
            (pod.to_string(), app.to_string()),
            ("127.10.0.2".into(), "127.11.0.2".into())
        );
        let (pod, _) = pod_addresses(10, 250).unwrap();
        assert_eq!(pod.to_string(), "127.10.1.1");
    }

    #[test]
    fn embedded_manifests_are_the_samples_unchanged() {
        let samples = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/istio-samples/samples/bookinfo");
        if !samples.exists() {
            return;
        }
        for (name, text) in BOOKINFO {
            let original = ["platform/kube", "networking"]
                .iter()
                .map(|d| samples.join(d).join(name))
                .find(|p| p.exists())
                .unwrap();
            assert_eq!(std::fs::read_to_string(original).unwrap(), text, "{name}");
        }
    }
}
