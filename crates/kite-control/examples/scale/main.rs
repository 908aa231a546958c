//! Control plane at scale: loads a large mesh into a running `kite control`
//! through its HTTP API (as `kite apply` does), connects many simulated
//! sidecars over real ADS gRPC streams, waits for all of them to ACK their
//! initial config, then applies changes and measures how long it takes until
//! every affected sidecar has received and ACKed the new version, and what
//! the control-plane process spent on it (CPU from /proc/<pid>/stat, RSS
//! from /proc/<pid>/status).
//!
//! `bench/control-plane.sh` builds and runs it; run by hand:
//! `cargo run --release -p kite-control --example scale -- --pid <kite control pid>`.
//!
//! The simulated sidecars behave like Envoy on ADS: a wildcard CDS and LDS
//! request, EDS names from the EDS clusters received, RDS names from the
//! listeners' HTTP connection managers, every response ACKed at once. They
//! decode only what that needs, so that the simulator's own CPU, on the same
//! machine, disturbs the measurement as little as possible. As Kite's proxy,
//! each also keeps a VHDS stream subscribed to the hosts its app calls
//! (`--hosts-per-proxy`): among them every host a VirtualService change
//! touches, so that each change affects every sidecar.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::Ipv4Addr,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use envoy_types::pb::envoy::{
    config::listener::v3::{Listener, filter::ConfigType},
    extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, http_connection_manager::RouteSpecifier,
    },
    service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kite_control::{bootstrap::Bootstrap, proxy::ProxyKind};
use kite_xds::type_url;
use parking_lot::{Mutex, RwLock};
use prost::Message;
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long the control plane is left at rest before its memory is
/// sampled.
const SETTLE: Duration = Duration::from_secs(3);

/// Objects per apply request: the API takes bodies of up to 16 MiB.
const APPLY_CHUNK: usize = 2_000;

#[derive(Clone, Debug)]
struct Args {
    api: String,
    xds: String,
    services: usize,
    endpoints: usize,
    namespaces: usize,
    proxies: usize,
    changes: usize,
    vs_changes: usize,
    /// Hosts each sidecar's app calls, fetched by VHDS.
    hosts_per_proxy: usize,
    /// The control plane's process, for CPU and RSS; without it those
    /// columns stay empty.
    pid: Option<u32>,
    clk_tck: u64,
    /// Simulated sidecars connecting at once: a fleet that starts together
    /// still comes up over a little while.
    connect_parallelism: usize,
    sync_timeout: Duration,
    change_timeout: Duration,
}

impl Args {
    fn parse() -> anyhow::Result<Self> {
        let mut args = Args {
            api: "127.0.0.1:15014".into(),
            xds: "127.0.0.1:15010".into(),
            services: 10_000,
            endpoints: 50_000,
            namespaces: 20,
            proxies: 1_000,
            changes: 5,
            vs_changes: 0,
            hosts_per_proxy: 10,
            pid: None,
            clk_tck: 100,
            connect_parallelism: 100,
            sync_timeout: Duration::from_secs(600),
            change_timeout: Duration::from_secs(120),
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let value = it.next().with_context(|| format!("{flag} needs a value"))?;
            let number = || {
                value
                    .parse::<usize>()
                    .with_context(|| format!("{flag} {value:?} is not a number"))
            };
            match flag.as_str() {
                "--api" => args.api = value.clone(),
                "--xds" => args.xds = value.clone(),
                "--services" => args.services = number()?,
                "--endpoints" => args.endpoints = number()?,
                "--namespaces" => args.namespaces = number()?,
                "--proxies" => args.proxies = number()?,
                "--changes" => args.changes = number()?,
                "--vs-changes" => args.vs_changes = number()?,
                "--hosts-per-proxy" => args.hosts_per_proxy = number()?,
                "--pid" => args.pid = Some(u32::try_from(number()?)?),
                "--clk-tck" => args.clk_tck = u64::try_from(number()?)?,
                "--connect-parallelism" => args.connect_parallelism = number()?.max(1),
                "--sync-timeout" => args.sync_timeout = Duration::from_secs(number()? as u64),
                "--change-timeout" => args.change_timeout = Duration::from_secs(number()? as u64),
                other => bail!("unknown flag {other}"),
            }
        }
        if args.services == 0 || args.namespaces == 0 || args.endpoints < args.services {
            bail!("need at least one service, one namespace and an endpoint per service");
        }
        if args.proxies > args.endpoints {
            bail!(
                "each simulated sidecar is one of the endpoints' pods: --proxies must not exceed --endpoints"
            );
        }
        Ok(args)
    }
}

mod mesh;
mod sidecar;

use mesh::*;
use sidecar::*;

// === the run ===

struct Measured {
    to_all_acked: Duration,
    cpu_ms: Option<u64>,
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            eprintln!("timed out after {timeout:?} waiting for {what}");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

async fn measure_change(
    args: &Args,
    shared: &Shared,
    id: u64,
    type_url: &'static str,
    resource: String,
    needle: String,
    objects: Vec<Value>,
) -> anyhow::Result<Option<Measured>> {
    let cpu_before = args.pid.map(|p| cpu_ms(p, args.clk_tck)).transpose()?;
    let expectation = Arc::new(Expectation {
        id,
        type_url,
        resource,
        needle: needle.into_bytes(),
        start: Instant::now(),
        acked: AtomicUsize::new(0),
        last_ack_ns: AtomicU64::new(0),
    });
    *shared.expectation.write() = Some(expectation.clone());
    apply(&args.api, &objects).await?;
    let all = args.proxies;
    let ok = wait_for(
        "every sidecar to ACK the change",
        args.change_timeout,
        || expectation.acked.load(Ordering::Acquire) >= all,
    )
    .await;
    let cpu_after = args.pid.map(|p| cpu_ms(p, args.clk_tck)).transpose()?;
    if !ok {
        eprintln!(
            "change {id}: {} of {all} sidecars ACKed it",
            expectation.acked.load(Ordering::Acquire)
        );
        return Ok(None);
    }
    Ok(Some(Measured {
        to_all_acked: Duration::from_nanos(expectation.last_ack_ns.load(Ordering::Acquire)),
        cpu_ms: cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b)),
    }))
}

/// The service changed by change `c` (0-based): different services, in
/// different namespaces, every time.
fn changed_service(args: &Args, c: usize) -> usize {
    (c * 7_919 + 13) % args.services
}

/// The VHDS aliases sidecar `i` subscribes to: the services the
/// VirtualService changes touch, then others, spread over the mesh.
fn aliases(args: &Args, i: usize) -> Vec<String> {
    let mut services: Vec<usize> = (args.changes..args.changes + args.vs_changes)
        .map(|c| changed_service(args, c))
        .collect();
    let mut k = 0;
    while services.len() < args.hosts_per_proxy.min(args.services) && k < 4 * args.services {
        let s = (i * 31 + k * 977 + 1) % args.services;
        k += 1;
        if !services.contains(&s) {
            services.push(s);
        }
    }
    services
        .into_iter()
        .map(|s| {
            format!(
                "http_proxy/{}.{}:8080",
                service_name(s),
                namespace(s % args.namespaces)
            )
        })
        .collect()
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> Option<T> {
    v.sort();
    v.get(v.len() / 2).copied()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let mesh = Mesh::new(&args);
    api(&args.api, "GET", "/debug/connections", String::new())
        .await
        .context("is `kite control` running?")?;

    // Load: Services first, then their pods, in request-sized chunks.
    let load_start = Instant::now();
    let mut objects: Vec<Value> = (0..mesh.services).map(|s| mesh.service_json(s)).collect();
    objects.extend(mesh.pods.iter().map(|p| mesh.workload_entry_json(p)));
    for chunk in objects.chunks(APPLY_CHUNK) {
        apply(&args.api, chunk).await?;
    }
    let load_time = load_start.elapsed();
    drop(objects);
    eprintln!(
        "loaded {} services and {} endpoints in {load_time:.2?}",
        mesh.services,
        mesh.pods.len()
    );
    // Let translation of the loaded config settle before measuring memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_loaded = args.pid.map(rss_mib).transpose()?;

    // Connect the fleet, each sidecar on a connection of its own.
    let shared = Arc::new(Shared::default());
    let fleet_start = Instant::now();
    let cpu_before_sync = args.pid.map(|p| cpu_ms(p, args.clk_tck)).transpose()?;
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("http://{}", args.xds))?.tcp_nodelay(true);
    let connecting = Arc::new(tokio::sync::Semaphore::new(args.connect_parallelism));
    for i in 0..args.proxies {
        let permit = connecting.clone().acquire_owned().await?;
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting sidecar {i} to {}", args.xds))?;
        let node = node(&args, &mesh, i);
        let shared = shared.clone();
        {
            let (channel, node, shared) = (channel.clone(), node.clone(), shared.clone());
            let aliases = aliases(&args, i);
            tokio::spawn(async move {
                let result =
                    vhds_sidecar(channel, node, shared.clone(), fleet_start, aliases).await;
                if let Err(error) = result {
                    shared.failed.fetch_add(1, Ordering::AcqRel);
                    eprintln!("sidecar {i} (VHDS): {error:#}");
                }
            });
        }
        tokio::spawn(async move {
            // The permit is held until this sidecar has its first config, so
            // at most `connect_parallelism` are syncing at once.
            let result = sidecar(channel, node, shared.clone(), fleet_start, Some(permit)).await;
            if let Err(error) = result {
                shared.failed.fetch_add(1, Ordering::AcqRel);
                eprintln!("sidecar {i}: {error:#}");
            }
        });
    }
    let synced = wait_for("every sidecar's initial sync", args.sync_timeout, || {
        let failed = shared.failed.load(Ordering::Acquire);
        shared.synced.load(Ordering::Acquire) + failed >= args.proxies
            && shared.hosts_synced.load(Ordering::Acquire) + failed >= args.proxies
    })
    .await;
    let sync_time = Duration::from_nanos(shared.last_sync_ns.load(Ordering::Acquire));
    let sync_cpu = cpu_before_sync
        .zip(args.pid.map(|p| cpu_ms(p, args.clk_tck)).transpose()?)
        .map(|(b, a)| a.saturating_sub(b));
    let failed = shared.failed.load(Ordering::Acquire);
    if !synced || failed > 0 {
        bail!(
            "{} of {} sidecars synced, {failed} failed",
            shared.synced.load(Ordering::Acquire),
            args.proxies
        );
    }
    let per_sidecar = shared.response_bytes.load(Ordering::Relaxed) / args.proxies as u64;
    eprintln!(
        "{} sidecars synced in {sync_time:.2?} ({} responses, {:.1} MiB per sidecar); control plane RSS {} MiB, simulator RSS {:.0} MiB",
        args.proxies,
        shared.responses.load(Ordering::Relaxed),
        per_sidecar as f64 / (1 << 20) as f64,
        args.pid
            .map(rss_mib)
            .transpose()?
            .map_or("?".into(), |r| format!("{r:.0}")),
        rss_mib(std::process::id())?
    );
    // The control plane hands memory freed in a burst back to the system
    // about a second after the burst: sampled at rest.
    tokio::time::sleep(SETTLE).await;
    let rss_synced = args.pid.map(rss_mib).transpose()?;
    let peak_synced = args.pid.map(peak_rss_mib).transpose()?;
    if let Some(pid) = args.pid {
        reset_peak_rss(pid)?;
    }

    // Changes: a pod added to one service each time (the common case), and
    // optionally a VirtualService for one.
    let mut endpoint_changes = Vec::new();
    let mut vs_changes = Vec::new();
    let mut id = 0;
    let mut extra_pod = mesh.pods.len();
    for c in 0..args.changes + args.vs_changes {
        id += 1;
        let s = changed_service(&args, c);
        let ns = namespace(s % mesh.namespaces);
        let host = format!("{}.{ns}.svc.cluster.local", service_name(s));
        let is_vs = c >= args.changes;
        let measured = if is_vs {
            let marker = format!("bench-change-{id}");
            let vs = json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": {"name": format!("{}-canary", service_name(s)), "namespace": ns},
                "spec": {
                    "hosts": [service_name(s)],
                    "http": [
                        {"match": [{"headers": {"x-canary": {"exact": marker}}}],
                         "route": [{"destination": {"host": service_name(s)}}],
                         "timeout": "3s"},
                        {"route": [{"destination": {"host": service_name(s)}}]},
                    ],
                },
            });
            measure_change(
                &args,
                &shared,
                id,
                type_url::VIRTUAL_HOST,
                format!("http_proxy/{host}:8080"),
                marker,
                vec![vs],
            )
            .await?
        } else {
            let pod = Pod {
                name: format!("{}-scaleup-{id}", service_name(s)),
                namespace: ns.clone(),
                service: s,
                ip: pod_ip(extra_pod),
            };
            extra_pod += 1;
            let cla = format!("outbound|8080||{host}");
            measure_change(
                &args,
                &shared,
                id,
                type_url::ENDPOINT,
                cla,
                pod.ip.to_string(),
                vec![mesh.workload_entry_json(&pod)],
            )
            .await?
        };
        let Some(m) = measured else {
            bail!("change {id} did not reach every sidecar");
        };
        eprintln!(
            "change {id} ({}): all {} sidecars ACKed after {:.1?}, control plane CPU {} ms",
            if is_vs { "VirtualService" } else { "pod added" },
            args.proxies,
            m.to_all_acked,
            m.cpu_ms.map_or("?".into(), |c| c.to_string())
        );
        if is_vs {
            vs_changes.push(m);
        } else {
            endpoint_changes.push(m);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let rss_pushed = args.pid.map(rss_mib).transpose()?;
    let peak_pushed = args.pid.map(peak_rss_mib).transpose()?;

    let mut table = String::new();
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let row = |t: &mut String, k: &str, v: String| {
        let _ = writeln!(t, "| {k:<56} | {v:>12} |");
    };
    let _ = writeln!(table, "| {:<56} | {:>12} |", "metric", "value");
    let _ = writeln!(table, "|{:-<58}|{:->14}|", "", "");
    row(&mut table, "services", mesh.services.to_string());
    row(&mut table, "endpoints", mesh.pods.len().to_string());
    row(&mut table, "namespaces", mesh.namespaces.to_string());
    row(&mut table, "proxies", args.proxies.to_string());
    row(
        &mut table,
        "load through the API (s)",
        format!("{:.1}", load_time.as_secs_f64()),
    );
    row(
        &mut table,
        "initial sync, all proxies ACKed (ms)",
        ms(sync_time),
    );
    row(
        &mut table,
        "initial sync CP CPU (ms)",
        opt(sync_cpu.map(|c| c.to_string())),
    );
    row(
        &mut table,
        "config per proxy (MiB)",
        format!("{:.1}", per_sidecar as f64 / (1 << 20) as f64),
    );
    for (label, changes) in [
        ("pod added", &endpoint_changes),
        ("VirtualService", &vs_changes),
    ] {
        if changes.is_empty() {
            continue;
        }
        let times = median(changes.iter().map(|m| m.to_all_acked).collect());
        let cpu = median(changes.iter().filter_map(|m| m.cpu_ms).collect());
        row(
            &mut table,
            &format!(
                "{label}: change to all ACKed, median of {} (ms)",
                changes.len()
            ),
            opt(times.map(ms)),
        );
        row(
            &mut table,
            &format!("{label}: push CP CPU, median (ms)"),
            opt(cpu.map(|c| c.to_string())),
        );
    }
    row(
        &mut table,
        "CP RSS after load (MiB)",
        opt(rss_loaded.map(|r| format!("{r:.0}"))),
    );
    row(
        &mut table,
        "CP RSS after initial sync (MiB)",
        opt(rss_synced.map(|r| format!("{r:.0}"))),
    );
    row(
        &mut table,
        "CP RSS after the pushes (MiB)",
        opt(rss_pushed.map(|r| format!("{r:.0}"))),
    );
    row(
        &mut table,
        "CP peak RSS, load and sync (MiB)",
        opt(peak_synced.map(|r| format!("{r:.0}"))),
    );
    row(
        &mut table,
        "CP peak RSS during the pushes (MiB)",
        opt(peak_pushed.map(|r| format!("{r:.0}"))),
    );
    row(
        &mut table,
        "simulator RSS, for reference (MiB)",
        format!("{:.0}", rss_mib(std::process::id())?),
    );
    print!("{table}");
    Ok(())
}
