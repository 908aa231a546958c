//! `kite`: the command line of the Kite service mesh.
#![deny(unsafe_code)]

mod analyze;
mod ctl;
mod proxy_config;
mod up;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kite::{init_tracing, proxy, shutdown_signal};
use kite_bookinfo::{Env, Service};

#[derive(Parser)]
#[command(
    name = "kite",
    version,
    about = "Kite: an Istio-compatible service mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one of the sample services (BookInfo's productpage, details, reviews, ratings; httpbin, helloworld, tcp-echo, fortio)
    Bookinfo(BookinfoArgs),
    /// Send a fixed number of requests over keep-alive connections and count the status codes, like fortio load
    Load(LoadArgs),
    /// Run the BookInfo demo on this machine, each workload on its own loopback address
    Up(up::Args),
    /// Validate Istio and Kubernetes configuration files and cross-check them, like istioctl analyze
    Analyze(analyze::Args),
    /// Run the control plane: config store, registry, xDS (ADS) server and HTTP API
    Control(ctl::ControlArgs),
    /// Apply configuration to the control plane (validated first; all or nothing)
    Apply(ctl::FilesArgs),
    /// Delete the objects named in files from the control plane
    Delete(ctl::FilesArgs),
    /// List objects in the control plane
    Get(ctl::GetArgs),
    /// Set a Deployment's replicas, like kubectl scale (kite up starts or drains pods to match)
    Scale(ctl::ScaleArgs),
    /// Restart a Deployment's pods one by one, like kubectl rollout restart
    Rollout(ctl::RolloutArgs),
    /// Connected proxies and the config versions they ACKed, like istioctl proxy-status
    ProxyStatus(ctl::StatusArgs),
    /// Run Kite's proxy as a sidecar or, with --gateway, an ingress gateway
    Proxy(proxy::Args),
    /// Show a proxy's listeners, routes, clusters or endpoints, like istioctl proxy-config
    ProxyConfig(proxy_config::Args),
}

#[derive(clap::Args)]
struct BookinfoArgs {
    /// The service to run
    #[arg(value_parser = parse_service)]
    service: Service,
    /// The image version whose defaults apply (reviews: v1, v2, v3; ratings: v1, v-faulty, v-delayed, v-unavailable, v-unhealthy; details: v1, v2; productpage: v1, v-flooding)
    #[arg(long, env = "SERVICE_VERSION", default_value = "v1")]
    version: String,
    /// Address to listen on
    #[arg(long, env = "BOOKINFO_LISTEN", default_value = "0.0.0.0:9080")]
    listen: SocketAddr,
    /// The container's arguments (tcp-echo: `<port,port,...> <prefix>`)
    #[arg(trailing_var_arg = true)]
    args: Vec<String>,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Connections, each with its own sequence of requests
    #[arg(short = 'c', long, default_value_t = 8)]
    connections: usize,
    /// Requests per second over all connections; 0 is as fast as possible
    #[arg(long, default_value_t = 8.0)]
    qps: f64,
    /// Total number of requests
    #[arg(short = 'n', long, default_value_t = 40)]
    requests: usize,
    /// Per-request timeout in seconds
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Also write each request's latency to this file, in microseconds, one
    /// per line (for percentiles over several runs pooled)
    #[arg(long, value_name = "FILE")]
    latencies: Option<PathBuf>,
    /// The URL to load (through HTTP_PROXY when it is set, as a pod's app reaches its sidecar)
    url: http::Uri,
}

fn parse_service(s: &str) -> Result<Service, String> {
    s.parse()
}

/// mimalloc, without transparent huge pages. In bench/, mimalloc took
/// glibc's malloc/free (14 % of a sidecar's samples) down; huge pages cost
/// about 10 MiB of resident memory per idle sidecar and 28 MiB more with
/// 1,000 connections, and once the proxy's HTTP/1.1 pool and LTO were in,
/// alternating runs with and without them differed by less than their noise.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Freed memory goes back to the system about a second after it was freed,
/// idle or not (`purge.rs`). mimalloc 3 returns what has been free for its
/// delay (1 s by default) only when the program calls into it, which for
/// an idle process meant at its next busy moment: at
/// scale the control plane frees hundreds of MiB after a push (the route
/// tables it replaced, the requests it read), and its resident memory
/// stayed 200 MiB above what it held once the push was done. Returning
/// memory at once instead cost a push a page fault for every page of every
/// large request buffer, a quarter of a push's CPU
/// (bench/results/2026-11-27-control-plane.md). So memory freed in a burst
/// is reused within it: the delay is 100 ms, and a thread of its own
/// purges once a second. The proxy, which frees memory with every request,
/// keeps mimalloc's delay (a shorter one cost a sidecar a fifth more CPU
/// per 64 KiB request, bench/results/2026-11-28.md), and the thread.
#[cfg(feature = "mimalloc")]
#[path = "purge.rs"]
mod purge;

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    init_tracing();
    #[cfg(feature = "mimalloc")]
    {
        // mimalloc's own setting, if given, stands.
        if !matches!(cli.command, Command::Proxy(_))
            && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none()
        {
            purge::set_purge_delay(100);
        }
        purge::purge_every_second();
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    match cli.command {
        Command::Analyze(args) => analyze::run(args),
        Command::Bookinfo(args) => runtime()?
            .block_on(bookinfo(args))
            .map(|()| ExitCode::SUCCESS),
        Command::Load(args) => runtime()?.block_on(load(args)),
        Command::Up(args) => runtime()?.block_on(up::run(args)),
        Command::Control(args) => runtime()?.block_on(ctl::control(args)),
        Command::Apply(args) => runtime()?.block_on(ctl::apply(args, false)),
        Command::Delete(args) => runtime()?.block_on(ctl::apply(args, true)),
        Command::Get(args) => runtime()?.block_on(ctl::get(args)),
        Command::Scale(args) => runtime()?.block_on(ctl::scale(args)),
        Command::Rollout(args) => runtime()?.block_on(ctl::rollout(args)),
        Command::ProxyStatus(args) => runtime()?.block_on(ctl::proxy_status(args)),
        Command::Proxy(args) => proxy::runtime(args.concurrency)?.block_on(proxy::run(args)),
        Command::ProxyConfig(args) => runtime()?.block_on(proxy_config::run(args)),
    }
}

async fn bookinfo(args: BookinfoArgs) -> anyhow::Result<()> {
    let env = Env::from_process();
    args.service
        .run(
            &args.version,
            args.listen,
            &args.args,
            &env,
            shutdown_signal(),
        )
        .await
        .with_context(|| format!("{} {}", args.service, args.version))
}

async fn load(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let options = kite_bookinfo::fortio::LoadOptions {
        connections: args.connections,
        qps: args.qps,
        requests: args.requests,
        url: args.url,
        timeout: std::time::Duration::try_from_secs_f64(args.timeout)
            .context("--timeout must be a positive number of seconds")?,
    };
    let report = kite_bookinfo::fortio::load(options, &Env::from_process()).await?;
    if let Some(path) = &args.latencies {
        let lines: String = report
            .latencies
            .iter()
            .map(|l| format!("{}\n", l.as_micros()))
            .collect();
        std::fs::write(path, lines).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// Where `kite up` keeps its logs and state unless told otherwise.
pub(crate) fn default_state_dir() -> PathBuf {
    PathBuf::from(".kite")
}
