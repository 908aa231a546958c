//! Kite's sidecar (or, with `--gateway`, ingress gateway): `kite-proxy`,
//! and `kite proxy` with the same arguments.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    process::ExitCode,
};

use anyhow::Context as _;
use kite_control::{bootstrap::Bootstrap, proxy::ProxyKind};

#[derive(clap::Args)]
pub struct Args {
    /// The workload's (pod's) address; listeners bind here
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// The pod name (part of the node id)
    #[arg(long)]
    pub pod: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Workload labels, `k=v,k=v`
    #[arg(long, value_parser = parse_labels, default_value = "")]
    pub labels: BTreeMap<String, String>,
    #[arg(long, default_value = "default")]
    pub service_account: String,
    /// Where the app listens (local mode); inbound traffic is forwarded there
    #[arg(long)]
    pub app_ip: Option<IpAddr>,
    /// The control plane's xDS address
    #[arg(long, env = "KITE_XDS_ADDR", default_value = "127.0.0.1:15010")]
    pub xds: SocketAddr,
    /// Run as a gateway (Istio's `router` node type) instead of a sidecar
    #[arg(long)]
    pub gateway: bool,
    #[arg(long, default_value_t = 15000)]
    pub admin_port: u16,
    #[arg(long, default_value_t = 15021)]
    pub ready_port: u16,
    /// The mesh CA (gRPC over TLS); with --token and --ca-root the proxy
    /// obtains a workload certificate for its service account
    #[arg(long, env = "KITE_CA_ADDR")]
    pub ca: Option<String>,
    /// File holding the credential that entitles this proxy to its identity
    #[arg(long, env = "KITE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The mesh root certificate (PEM file)
    #[arg(long, env = "KITE_CA_ROOT")]
    pub ca_root: Option<std::path::PathBuf>,
    #[arg(long, default_value = "cluster.local")]
    pub trust_domain: String,
    /// Worker threads, as Envoy's --concurrency and Istio's
    /// ProxyConfig.concurrency; 0 is one per core
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
}

/// The proxy's async runtime. One worker runs everything on one thread:
/// no work stealing and no wake-ups across threads, which costs less CPU
/// per request than a shared pool of two (measured in bench/).
pub fn runtime(concurrency: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if concurrency == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if concurrency > 1 {
        builder.worker_threads(concurrency);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("label {kv:?} is not key=value"))
        })
        .collect()
}

impl Args {
    fn bootstrap(&self) -> Bootstrap {
        Bootstrap {
            kind: if self.gateway {
                ProxyKind::Router
            } else {
                ProxyKind::Sidecar
            },
            ip: self.ip,
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            labels: self.labels.clone(),
            service_account: self.service_account.clone(),
            app_ip: self.app_ip,
            xds: self.xds,
            admin: SocketAddr::new(self.ip, self.admin_port),
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let boot = args.bootstrap();
    let identity = match (&args.ca, &args.token_file, &args.ca_root) {
        (Some(ca), Some(token), Some(root)) => Some(kite_proxy::identity::IdentityConfig {
            ca: ca.clone(),
            token: std::fs::read_to_string(token)
                .with_context(|| format!("reading the token {}", token.display()))?
                .trim()
                .to_owned(),
            root_pem: std::fs::read_to_string(root)
                .with_context(|| format!("reading the mesh root {}", root.display()))?,
            id: kite_identity::SpiffeId::new(
                &args.trust_domain,
                &args.namespace,
                &args.service_account,
            ),
        }),
        (None, None, None) => None,
        _ => anyhow::bail!("--ca, --token-file and --ca-root go together"),
    };
    let mut node = boot.node();
    if let Some(meta) = node.metadata.as_mut() {
        let text = |s: &str| envoy_types::pb::google::protobuf::Value {
            kind: Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(
                s.to_owned(),
            )),
        };
        // Kite's proxy obtains its certificate from the CA itself, so the
        // control plane sends it no SDS secrets.
        meta.fields.insert("KITE_PROXY".to_owned(), text("true"));
        if identity.is_some() {
            // Tells the control plane to configure mutual TLS for this proxy.
            meta.fields.insert("KITE_IDENTITY".to_owned(), text("true"));
        }
    }
    let config = kite_proxy::Config {
        node,
        xds: format!("http://{}", args.xds),
        admin: SocketAddr::new(args.ip, args.admin_port),
        ready: SocketAddr::new(args.ip, args.ready_port),
        identity,
    };
    kite_proxy::run(config, crate::shutdown_signal())
        .await
        .context("kite proxy")?;
    Ok(ExitCode::SUCCESS)
}
