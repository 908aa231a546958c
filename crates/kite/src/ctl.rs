//! `kite control`, and the commands that talk to it: `apply`, `delete`,
//! `get`, `proxy-status`.

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kite_config::{Kind, load_paths};
use serde_json::Value;

#[derive(clap::Args)]
pub(crate) struct ControlArgs {
    /// Plaintext xDS (ADS over gRPC)
    #[arg(long, env = "KITE_XDS_ADDR", default_value = "127.0.0.1:15010")]
    xds: SocketAddr,
    /// HTTP API and debug endpoints
    #[arg(long, env = "KITE_API_ADDR", default_value = "127.0.0.1:15014")]
    api: SocketAddr,
    /// Configuration to load at start (files or directories)
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// The certificate authority's gRPC address (TLS); `none` runs without one
    #[arg(long, env = "KITE_CA_ADDR", default_value = "127.0.0.1:15012")]
    ca: String,
    /// Where the CA keeps its root, or Istio's plug-in cacerts files
    /// (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem)
    #[arg(long, default_value = ".kite/ca")]
    ca_dir: PathBuf,
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Lifetime of workload certificates, in seconds
    #[arg(long, default_value_t = 24 * 3600)]
    workload_cert_ttl: u64,
}

#[derive(clap::Args)]
pub(crate) struct Target {
    /// The control plane's API address
    #[arg(
        long,
        env = "KITE_CONTROL_PLANE",
        default_value = "http://127.0.0.1:15014",
        global = true
    )]
    control_plane: String,
}

#[derive(clap::Args)]
pub(crate) struct FilesArgs {
    /// Files or directories (`-` for standard input)
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Namespace for objects that name none, like `kubectl apply -n`
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub(crate) struct GetArgs {
    /// Kind, short name or plural (vs, dr, gw, se, svc, …); omit for all
    kind: Option<String>,
    /// Namespace (default: all)
    #[arg(short, long)]
    namespace: Option<String>,
    /// Output: table or json
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn control(args: ControlArgs) -> anyhow::Result<ExitCode> {
    let control = Arc::new(kite_control::Control::default());
    if !args.files.is_empty() {
        let loaded = load_paths(&args.files)?;
        for d in &loaded.diagnostics {
            eprintln!("{d}");
        }
        if loaded.has_errors() {
            bail!("the initial configuration has errors; nothing was started");
        }
        control.store.apply(loaded.objects);
    }
    let ca = if args.ca == "none" {
        None
    } else {
        Some(kite_control::citadel::CaConfig {
            addr: args
                .ca
                .parse()
                .with_context(|| format!("--ca {:?} is not host:port", args.ca))?,
            dir: args.ca_dir.clone(),
            trust_domain: args.trust_domain.clone(),
            workload_ttl: std::time::Duration::from_secs(args.workload_cert_ttl),
        })
    };
    let config = kite_control::Config {
        xds_addr: args.xds,
        api_addr: args.api,
        ca,
    };
    kite_control::run(config, control, crate::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn apply(args: FilesArgs, delete: bool) -> anyhow::Result<ExitCode> {
    // Validate locally first so mistakes are reported with the user's own
    // file names before anything is sent.
    let loaded = kite_config::load_paths_in(&args.files, &args.namespace)?;
    let mut failed = false;
    for d in &loaded.diagnostics {
        if d.severity >= kite_config::Severity::Warning {
            eprintln!("{d}");
        }
        failed |= d.is_error();
    }
    if failed && !delete {
        eprintln!("Error: invalid configuration; nothing was applied");
        return Ok(ExitCode::FAILURE);
    }
    let body: String = loaded
        .objects
        .iter()
        .map(|o| serde_json::to_string(&o.to_json()).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let endpoint = if delete {
        "/apis/delete"
    } else {
        "/apis/apply"
    };
    let (status, reply) = request(&args.target.control_plane, "POST", endpoint, Some(body)).await?;
    // The control plane saw the objects re-serialized; point its findings
    // back at the user's own files.
    let sources: std::collections::HashMap<String, String> = loaded
        .objects
        .iter()
        .map(|o| (o.object_ref().to_string(), o.source.to_string()))
        .collect();
    let print_diagnostics = |reply: &Value| print_diagnostics(reply, &sources);
    if !status.is_success() {
        print_diagnostics(&reply);
        bail!(
            "{}",
            reply["error"]
                .as_str()
                .unwrap_or("the control plane refused the request")
        );
    }
    if delete {
        for entry in reply["deleted"].as_array().into_iter().flatten() {
            println!("{} deleted", object_label(entry));
        }
        for entry in reply["notFound"].as_array().into_iter().flatten() {
            println!("{} not found", object_label(entry));
        }
    } else {
        for entry in reply["applied"].as_array().into_iter().flatten() {
            println!(
                "{} {}",
                object_label(entry),
                entry["action"].as_str().unwrap_or_default()
            );
        }
        print_diagnostics(&reply);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let mut query = Vec::new();
    if let Some(kind) = &args.kind {
        let kind = Kind::from_cli(kind)
            .map(|k| k.name().to_owned())
            .unwrap_or_else(|| kind.clone());
        query.push(format!("kind={kind}"));
    }
    if let Some(ns) = &args.namespace {
        query.push(format!("namespace={ns}"));
    }
    let path = format!("/apis/objects?{}", query.join("&"));
    let (status, reply) = request(&args.target.control_plane, "GET", &path, None).await?;
    if !status.is_success() {
        bail!("{}", reply["error"].as_str().unwrap_or("request failed"));
    }
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&reply["items"])?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<22} {:<16} {:<32} VERSION", "KIND", "NAMESPACE", "NAME");
    for item in reply["items"].as_array().into_iter().flatten() {
        println!(
            "{:<22} {:<16} {:<32} {}",
            item["kind"].as_str().unwrap_or_default(),
            item["metadata"]["namespace"].as_str().unwrap_or_default(),
            item["metadata"]["name"].as_str().unwrap_or_default(),
            item["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Like `istioctl proxy-status`: every connected proxy and what it ACKed.
pub(crate) async fn proxy_status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (_, reply) = request(
        &args.target.control_plane,
        "GET",
        "/debug/connections",
        None,
    )
    .await?;
    let proxies = reply["proxies"].as_array().cloned().unwrap_or_default();
    let width = proxies
        .iter()
        .filter_map(|p| p["node"].as_str().map(str::len))
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<width$} {:<26} {:<26} {:<26} {:<26} {:<26}",
        "NAME", "CDS", "EDS", "LDS", "RDS", "VHDS"
    );
    for proxy in &proxies {
        let state = |t: &str| {
            let s = &proxy["types"][t];
            match (
                s["ackedVersion"].as_str(),
                s["sentVersion"].as_str(),
                s["lastNack"].is_null(),
            ) {
                (_, _, false) => format!("NACKED ({})", s["nacks"]),
                (Some(a), Some(sent), _) if !a.is_empty() && a == sent => format!("SYNCED {a}"),
                (_, Some(_), _) => "STALE".to_owned(),
                _ => "NOT SENT".to_owned(),
            }
        };
        // Only Kite's sidecars fetch virtual hosts, once their app calls.
        let vhds = if proxy["types"]["VHDS"].is_null() {
            "-".to_owned()
        } else {
            state("VHDS")
        };
        println!(
            "{:<width$} {:<26} {:<26} {:<26} {:<26} {:<26}",
            proxy["node"].as_str().unwrap_or_default(),
            state("CDS"),
            state("EDS"),
            state("LDS"),
            state("RDS"),
            vhds
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn object_label(entry: &Value) -> String {
    format!(
        "{}/{} ({})",
        entry["namespace"].as_str().unwrap_or_default(),
        entry["name"].as_str().unwrap_or_default(),
        entry["kind"].as_str().unwrap_or_default()
    )
}

fn print_diagnostics(reply: &Value, sources: &std::collections::HashMap<String, String>) {
    for d in reply["diagnostics"].as_array().into_iter().flatten() {
        let object = d["object"].as_str().unwrap_or_default();
        let Some(source) = sources.get(object) else {
            eprintln!("{}", d["text"].as_str().unwrap_or_default());
            continue;
        };
        let field = d["field"].as_str().unwrap_or_default();
        eprintln!(
            "{} [{}] ({object} {source}){}{} {}",
            d["level"].as_str().unwrap_or_default(),
            d["code"].as_str().unwrap_or_default(),
            if field.is_empty() { "" } else { " " },
            if field.is_empty() {
                String::new()
            } else {
                format!("{field}:")
            },
            d["message"].as_str().unwrap_or_default()
        );
    }
}

/// One JSON request to the control plane's API.
pub(crate) async fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<(http::StatusCode, Value)> {
    let authority = base
        .strip_prefix("http://")
        .unwrap_or(base)
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .with_context(|| {
            format!("cannot reach the control plane at {base} (is `kite control` running?)")
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/yaml")
        .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let rsp = sender.send_request(req).await?;
    let status = rsp.status();
    let bytes = rsp.into_body().collect().await?.to_bytes();
    let value = serde_json::from_slice(&bytes).with_context(|| {
        format!("the control plane answered {status} with a body that is not JSON")
    })?;
    Ok((status, value))
}

#[derive(clap::Args)]
pub(crate) struct ScaleArgs {
    /// The Deployment: `deployment/NAME` or `NAME`
    deployment: String,
    /// How many pods it should run
    #[arg(long)]
    replicas: u32,
    /// Its namespace
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub(crate) struct RolloutArgs {
    /// What to do: `restart` replaces the Deployment's pods one by one
    #[arg(value_parser = ["restart"])]
    action: String,
    /// The Deployment: `deployment/NAME` or `NAME`
    deployment: String,
    /// Its namespace
    #[arg(short, long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    target: Target,
}

/// The Deployment named like kubectl names it, as the control plane holds it.
async fn deployment(base: &str, namespace: &str, reference: &str) -> anyhow::Result<Value> {
    let name = reference
        .strip_prefix("deployment/")
        .or_else(|| reference.strip_prefix("deployments/"))
        .or_else(|| reference.strip_prefix("deploy/"))
        .unwrap_or(reference);
    let path = format!("/apis/objects?kind=Deployment&namespace={namespace}");
    let (status, reply) = request(base, "GET", &path, None).await?;
    if !status.is_success() {
        bail!("{}", reply["error"].as_str().unwrap_or("request failed"));
    }
    reply["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["metadata"]["name"] == name)
        .cloned()
        .with_context(|| format!("no Deployment {namespace}/{name}"))
}

async fn reapply(base: &str, object: &Value) -> anyhow::Result<()> {
    let mut object = object.clone();
    if let Some(meta) = object["metadata"].as_object_mut() {
        meta.remove("resourceVersion");
    }
    let (status, reply) = request(base, "POST", "/apis/apply", Some(object.to_string())).await?;
    if !status.is_success() {
        bail!(
            "{}",
            reply["error"]
                .as_str()
                .unwrap_or("the control plane refused the change")
        );
    }
    Ok(())
}

/// Like `kubectl scale`: sets a Deployment's replicas; `kite up` starts or
/// drains pods to match.
pub(crate) async fn scale(args: ScaleArgs) -> anyhow::Result<ExitCode> {
    let base = &args.target.control_plane;
    let mut d = deployment(base, &args.namespace, &args.deployment).await?;
    d["spec"]["replicas"] = Value::from(args.replicas);
    reapply(base, &d).await?;
    println!(
        "deployment {}/{} scaled to {}",
        args.namespace,
        d["metadata"]["name"].as_str().unwrap_or_default(),
        args.replicas
    );
    Ok(ExitCode::SUCCESS)
}

/// Like `kubectl rollout restart`: stamps the pod template, so `kite up`
/// replaces the pods one by one, each new one ready before an old one goes.
pub(crate) async fn rollout(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let base = &args.target.control_plane;
    let mut d = deployment(base, &args.namespace, &args.deployment).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let template = &mut d["spec"]["template"];
    if !template["metadata"].is_object() {
        template["metadata"] = serde_json::json!({});
    }
    if !template["metadata"]["annotations"].is_object() {
        template["metadata"]["annotations"] = serde_json::json!({});
    }
    template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
        Value::from(crate::proxy_config::rfc3339(now.as_secs()));
    reapply(base, &d).await?;
    println!(
        "deployment {}/{} restarted",
        args.namespace,
        d["metadata"]["name"].as_str().unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
