//! `kite proxy-config`: a connected proxy's listeners, routes, clusters or
//! endpoints as tables, like `istioctl proxy-config`.
//!
//! The workload is found in the control plane's connection list (its node
//! id carries the pod's address), then the proxy's own admin port is read:
//! `/config_dump` for listeners, routes and clusters, `/clusters` for
//! endpoints. Kite's proxy and Envoy are both understood; which one answered
//! is told by the shape of what it returns.

use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// What to show
    #[arg(value_enum)]
    section: Section,
    /// The workload: a pod name, `name.namespace`, or a proxy's node id
    workload: String,
    /// The workload's namespace, if the name alone is ambiguous
    #[arg(short, long)]
    namespace: Option<String>,
    /// Output: table, or json for the proxy's own configuration
    #[arg(short, long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// The proxy's admin port
    #[arg(long, default_value_t = 15000)]
    admin_port: u16,
    /// The control plane's API address
    #[arg(
        long,
        env = "KITE_CONTROL_PLANE",
        default_value = "http://127.0.0.1:15014"
    )]
    control_plane: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    #[value(alias = "listener", alias = "l")]
    Listeners,
    #[value(alias = "route", alias = "r")]
    Routes,
    #[value(alias = "cluster", alias = "c")]
    Clusters,
    #[value(alias = "endpoint", alias = "ep", alias = "e")]
    Endpoints,
    /// The workload certificate: identity, issuer, validity.
    #[value(alias = "secrets", alias = "s")]
    Secret,
}

/// Kite's `/certs`: the identity, issuer and validity of the certificate in
/// force (Envoy's `/certs` lists certificates by file and is read the same
/// way where the fields match).
fn secret_table(certs: &Value) -> String {
    let mut out = String::new();
    if let Some(pending) = certs["pending"].as_str() {
        return format!("no certificate yet: {pending}\n");
    }
    let list = certs["certificates"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        return "no workload certificate (the proxy has no mesh identity)\n".to_owned();
    }
    let when = |secs: &Value| {
        let s = secs.as_u64().unwrap_or(0);
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
        let left = t
            .duration_since(std::time::SystemTime::now())
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!(
            "{} (in {}h{:02}m)",
            rfc3339(s),
            left / 3600,
            (left % 3600) / 60
        )
    };
    out.push_str(&format!(
        "{:<60} {:<40} {:<28} {}\n",
        "IDENTITY", "ISSUER", "VALID FROM", "EXPIRES"
    ));
    for c in &list {
        // Envoy lists the chain it was given (SDS): identity from the
        // leaf's URI SAN, times as Envoy prints them.
        if let Some(leaf) = c["cert_chain"].as_array().and_then(|chain| chain.first()) {
            let identity = leaf["subject_alt_names"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|san| san["uri"].as_str())
                .unwrap_or("-");
            out.push_str(&format!(
                "{:<60} {:<40} {:<28} {}\n",
                identity,
                "-",
                leaf["valid_from"].as_str().unwrap_or("-"),
                leaf["expiration_time"].as_str().unwrap_or("-"),
            ));
            continue;
        }
        out.push_str(&format!(
            "{:<60} {:<40} {:<28} {}\n",
            c["identity"].as_str().unwrap_or("-"),
            c["issuer"].as_str().unwrap_or("-"),
            rfc3339(c["valid_from"].as_u64().unwrap_or(0)),
            when(&c["expires"]),
        ));
    }
    out
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let proxy = resolve(&args).await?;
    let admin = SocketAddr::new(proxy.ip, args.admin_port);
    let json_out = args.output == "json";
    let text = if args.section == Section::Secret {
        let body = admin_get(&proxy, admin, "/certs").await?;
        let certs: Value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "the proxy admin at http://{admin} answered /certs with something that is not JSON"
            )
        })?;
        if json_out {
            pretty(&certs)?
        } else {
            secret_table(&certs)
        }
    } else if args.section == Section::Endpoints {
        // Envoy honours `format=json`; Kite's proxy answers its text format.
        let body = admin_get(&proxy, admin, "/clusters?format=json").await?;
        let endpoints = Endpoints::parse(&body);
        if json_out {
            pretty(&endpoints.raw)?
        } else {
            endpoints_table(&endpoints.rows)
        }
    } else {
        let body = admin_get(&proxy, admin, "/config_dump").await?;
        let dump: Value = serde_json::from_slice(&body).with_context(|| {
            format!("the proxy admin at http://{admin} answered /config_dump with something that is not JSON")
        })?;
        let dump = Dump::parse(&dump).with_context(|| {
            format!("reading the config dump of the proxy admin at http://{admin}")
        })?;
        if let Some(n) = dump.rejected {
            eprintln!(
                "note: {} rejected {n} configuration update(s); it keeps its last good config (see `kite proxy-status`)",
                proxy.pod
            );
        }
        let items = match args.section {
            Section::Listeners => &dump.listeners,
            Section::Routes => &dump.routes,
            Section::Clusters => &dump.clusters,
            Section::Endpoints | Section::Secret => unreachable!("handled above"),
        };
        if json_out {
            pretty(&Value::Array(items.clone()))?
        } else {
            match args.section {
                Section::Listeners => listeners_table(dump.format, items),
                Section::Routes => routes_table(dump.format, items),
                _ => clusters_table(dump.format, items),
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

fn pretty(v: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

// ---------------------------------------------------------------------------
// Finding the proxy

/// A connected proxy, from its node id
/// `<type>~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`.
#[derive(Clone, Debug, PartialEq)]
struct Proxy {
    node: String,
    ip: IpAddr,
    pod: String,
    namespace: String,
}

impl Proxy {
    fn from_node_id(node: &str) -> Option<Proxy> {
        let mut parts = node.split('~');
        let (_kind, ip, pod_ns, domain) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let ip: IpAddr = ip.parse().ok()?;
        let namespace = domain.split('.').next().unwrap_or_default();
        let pod = pod_ns
            .strip_suffix(&format!(".{namespace}"))
            .filter(|_| !namespace.is_empty())
            .unwrap_or(pod_ns);
        Some(Proxy {
            node: node.to_owned(),
            ip,
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
        })
    }

    fn label(&self) -> String {
        format!("{}.{}", self.pod, self.namespace)
    }
}

async fn resolve(args: &Args) -> anyhow::Result<Proxy> {
    let (status, reply) =
        crate::ctl::request(&args.control_plane, "GET", "/debug/connections", None).await?;
    if !status.is_success() {
        bail!(
            "the control plane at {} answered {status} for its connection list: {}",
            args.control_plane,
            reply["error"].as_str().unwrap_or("request failed")
        );
    }
    let proxies: Vec<Proxy> = reply["proxies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["node"].as_str())
        .filter_map(Proxy::from_node_id)
        .collect();
    pick(
        &proxies,
        &args.workload,
        args.namespace.as_deref(),
        &args.control_plane,
    )
}

/// The one proxy `workload` names: a node id, `pod.namespace`, or a pod
/// name (in `namespace` if given).
fn pick(
    proxies: &[Proxy],
    workload: &str,
    namespace: Option<&str>,
    control_plane: &str,
) -> anyhow::Result<Proxy> {
    let matches: Vec<&Proxy> = if workload.contains('~') {
        proxies.iter().filter(|p| p.node == workload).collect()
    } else if let Some(ns) = namespace {
        proxies
            .iter()
            .filter(|p| p.namespace == ns && (p.pod == workload || p.label() == workload))
            .collect()
    } else {
        let exact: Vec<&Proxy> = proxies.iter().filter(|p| p.label() == workload).collect();
        if exact.is_empty() {
            proxies.iter().filter(|p| p.pod == workload).collect()
        } else {
            exact
        }
    };
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] if proxies.is_empty() => bail!(
            "no proxy is connected to the control plane at {control_plane}, so {workload:?} cannot be found"
        ),
        [] => {
            let mut names: Vec<String> = proxies.iter().map(Proxy::label).collect();
            names.sort();
            bail!(
                "no connected proxy matches {workload:?}{}; connected proxies (pod.namespace):\n  {}",
                namespace
                    .map(|ns| format!(" in namespace {ns}"))
                    .unwrap_or_default(),
                names.join("\n  ")
            )
        }
        many => {
            let names: Vec<String> = many.iter().map(|p| p.label()).collect();
            bail!(
                "{workload:?} is ambiguous; name one of (pod.namespace):\n  {}",
                names.join("\n  ")
            )
        }
    }
}

/// One GET to the proxy's admin port; the body, if the answer is a success.
async fn admin_get(proxy: &Proxy, admin: SocketAddr, path: &str) -> anyhow::Result<Bytes> {
    let unreachable = || {
        format!(
            "cannot reach the admin endpoint of proxy {} at http://{admin}",
            proxy.label()
        )
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(admin).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method("GET")
            .uri(path)
            .header(http::header::HOST, admin.to_string())
            .body(Empty::<Bytes>::new())?;
        let rsp = sender.send_request(req).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 15 s"))
        .and_then(|r| r)
        .with_context(unreachable)?;
    if !status.is_success() {
        bail!(
            "the proxy admin at http://{admin} answered {status} for {path}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(body)
}

// ---------------------------------------------------------------------------
// Config dumps

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    /// Kite's proxy: `{"versions", "listeners", "routes", "clusters", "rejected"}`.
    Kite,
    /// Envoy's `envoy.admin.v3.ConfigDump`.
    Envoy,
}

/// The sections of a config dump, each a list of the proxy's own objects.
#[derive(Debug)]
struct Dump {
    format: Format,
    listeners: Vec<Value>,
    routes: Vec<Value>,
    clusters: Vec<Value>,
    /// Kite's proxy: how many updates it rejected, if any.
    rejected: Option<usize>,
}

impl Dump {
    fn parse(dump: &Value) -> anyhow::Result<Dump> {
        let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
        if ["listeners", "routes", "clusters", "versions"]
            .iter()
            .all(|k| dump.get(k).is_some())
        {
            let rejected = match &dump["rejected"] {
                Value::Array(a) if !a.is_empty() => Some(a.len()),
                Value::Object(o) if !o.is_empty() => Some(o.len()),
                _ => None,
            };
            return Ok(Dump {
                format: Format::Kite,
                listeners: list(&dump["listeners"]),
                routes: list(&dump["routes"]),
                clusters: list(&dump["clusters"]),
                rejected,
            });
        }
        let Some(configs) = dump["configs"].as_array() else {
            bail!(
                "neither Kite's nor Envoy's config dump format (no `configs` and no `listeners`)"
            );
        };
        let mut out = Dump {
            format: Format::Envoy,
            listeners: Vec::new(),
            routes: Vec::new(),
            clusters: Vec::new(),
            rejected: None,
        };
        for config in configs {
            let kind = config["@type"].as_str().unwrap_or_default();
            let each = |key: &str| config[key].as_array().cloned().unwrap_or_default();
            if kind.ends_with(".ListenersConfigDump") {
                for l in each("static_listeners") {
                    out.listeners.push(l["listener"].clone());
                }
                for l in each("dynamic_listeners") {
                    let state = if l["active_state"].is_object() {
                        &l["active_state"]
                    } else {
                        &l["warming_state"]
                    };
                    if state["listener"].is_object() {
                        out.listeners.push(state["listener"].clone());
                    }
                }
            } else if kind.ends_with(".RoutesConfigDump") {
                for key in ["static_route_configs", "dynamic_route_configs"] {
                    for r in each(key) {
                        out.routes.push(r["route_config"].clone());
                    }
                }
            } else if kind.ends_with(".ClustersConfigDump") {
                for key in [
                    "static_clusters",
                    "dynamic_active_clusters",
                    "dynamic_warming_clusters",
                ] {
                    for c in each(key) {
                        out.clusters.push(c["cluster"].clone());
                    }
                }
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------------------
// Tables

/// Columns as wide as their widest cell, three spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("   ");
            }
            line.push_str(cell);
            let pad = widths[i].saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn or_dash(v: &str) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.to_owned()
    }
}

fn listeners_table(format: Format, listeners: &[Value]) -> String {
    let mut rows: Vec<(u32, String, Vec<String>)> = Vec::new();
    for l in listeners {
        let (ip, port, kinds) = match format {
            Format::Kite => {
                let address = s(&l["address"]);
                let (ip, port) = match address.parse::<SocketAddr>() {
                    Ok(a) => (a.ip().to_string(), a.port().to_string()),
                    Err(_) => (address.to_owned(), String::new()),
                };
                let dest = match s(&l["type"]) {
                    "HTTP" => format!("Route: {}", s(&l["route_config"])),
                    "TCP" => format!(
                        "Cluster: {}",
                        weighted(l["clusters"].as_array().into_iter().flatten())
                    ),
                    _ => String::new(),
                };
                (ip, port, vec![(s(&l["type"]).to_owned(), dest)])
            }
            Format::Envoy => {
                let sa = &l["address"]["socket_address"];
                let port = sa["port_value"]
                    .as_u64()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                (s(&sa["address"]).to_owned(), port, envoy_filter_chains(l))
            }
        };
        let port_num = port.parse().unwrap_or(u32::MAX);
        for (kind, dest) in kinds {
            rows.push((
                port_num,
                ip.clone(),
                vec![or_dash(&ip), or_dash(&port), or_dash(&kind), or_dash(&dest)],
            ));
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1, &a.2).cmp(&(b.0, &b.1, &b.2)));
    rows.dedup_by(|a, b| a.2 == b.2);
    let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.2).collect();
    table(&["ADDRESS", "PORT", "TYPE", "DESTINATION"], &rows)
}

/// (type, destination) for each of an Envoy listener's filter chains.
fn envoy_filter_chains(l: &Value) -> Vec<(String, String)> {
    let chains = l["filter_chains"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(Some(&l["default_filter_chain"]).filter(|c| c.is_object()));
    let mut out = Vec::new();
    for chain in chains {
        for f in chain["filters"].as_array().into_iter().flatten() {
            let config = &f["typed_config"];
            let name = s(&f["name"]);
            let kind = s(&config["@type"]);
            if name.ends_with("http_connection_manager") || kind.ends_with(".HttpConnectionManager")
            {
                let dest = if let Some(rds) = config["rds"]["route_config_name"].as_str() {
                    format!("Route: {rds}")
                } else if config["route_config"].is_object() {
                    format!("Inline Route: {}", s(&config["route_config"]["name"]))
                } else {
                    String::new()
                };
                out.push(("HTTP".to_owned(), dest));
            } else if name.ends_with("tcp_proxy") || kind.ends_with(".TcpProxy") {
                let dest = match config["cluster"].as_str() {
                    Some(c) => c.to_owned(),
                    None => weighted(
                        config["weighted_clusters"]["clusters"]
                            .as_array()
                            .into_iter()
                            .flatten(),
                    ),
                };
                out.push(("TCP".to_owned(), format!("Cluster: {dest}")));
            }
        }
    }
    if out.is_empty() {
        out.push((String::new(), String::new()));
    }
    out
}

/// `outbound|9080|v1|reviews.default.svc.cluster.local` → (FQDN, port,
/// subset, direction); names that are not Istio's keep the name alone.
fn istio_cluster(name: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = name.split('|').collect();
    match parts.as_slice() {
        [direction @ ("inbound" | "outbound"), port, subset, fqdn] => (
            or_dash(fqdn),
            or_dash(port),
            or_dash(subset),
            (*direction).to_owned(),
        ),
        _ => (name.to_owned(), "-".into(), "-".into(), "-".into()),
    }
}

/// `LeastRequest` (Kite) or `LEAST_REQUEST` (Envoy) → `LEAST_REQUEST`.
fn upper_snake(v: &str) -> String {
    if v.contains('_') || v.chars().all(|c| !c.is_lowercase()) {
        return v.to_owned();
    }
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.extend(c.to_uppercase());
    }
    out
}

fn clusters_table(format: Format, clusters: &[Value]) -> String {
    let mut rows: Vec<(String, u32, String, String, Vec<String>)> = clusters
        .iter()
        .map(|c| {
            let (fqdn, port, subset, direction) = istio_cluster(s(&c["name"]));
            let (kind, lb) = match format {
                Format::Kite => (s(&c["type"]).to_owned(), upper_snake(s(&c["lb_policy"]))),
                Format::Envoy => (
                    c["type"]
                        .as_str()
                        .or_else(|| c["cluster_type"]["name"].as_str())
                        .unwrap_or("STATIC")
                        .to_owned(),
                    c["lb_policy"].as_str().unwrap_or("ROUND_ROBIN").to_owned(),
                ),
            };
            (
                fqdn.clone(),
                port.parse().unwrap_or(0),
                subset.clone(),
                direction.clone(),
                vec![fqdn, port, subset, direction, or_dash(&kind), or_dash(&lb)],
            )
        })
        .collect();
    rows.sort_by(|a, b| (&a.0, a.1, &a.2, &a.3).cmp(&(&b.0, b.1, &b.2, &b.3)));
    let rows: Vec<Vec<String>> = rows.into_iter().map(|r| r.4).collect();
    table(
        &["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "LB"],
        &rows,
    )
}

// ---------------------------------------------------------------------------
// Endpoints

#[derive(Clone, Debug, PartialEq)]
struct EndpointRow {
    address: String,
    status: String,
    outlier_ok: bool,
    cluster: String,
}

#[derive(Debug)]
struct Endpoints {
    /// What `-o json` prints: Envoy's `cluster_statuses`, or Kite's text
    /// format turned into objects.
    raw: Value,
    rows: Vec<EndpointRow>,
}

impl Endpoints {
    fn parse(body: &[u8]) -> Endpoints {
        match serde_json::from_slice::<Value>(body) {
            Ok(v) if v.get("cluster_statuses").is_some() => Self::envoy(&v),
            _ => Self::text(&String::from_utf8_lossy(body)),
        }
    }

    /// Envoy's `/clusters?format=json`.
    fn envoy(v: &Value) -> Endpoints {
        let mut rows = Vec::new();
        for c in v["cluster_statuses"].as_array().into_iter().flatten() {
            for h in c["host_statuses"].as_array().into_iter().flatten() {
                let sa = &h["address"]["socket_address"];
                let ip = s(&sa["address"]);
                let address = match sa["port_value"].as_u64() {
                    Some(port) if ip.contains(':') => format!("[{ip}]:{port}"),
                    Some(port) => format!("{ip}:{port}"),
                    None => ip.to_owned(),
                };
                let health = &h["health_status"];
                rows.push(EndpointRow {
                    address,
                    status: health["eds_health_status"]
                        .as_str()
                        .unwrap_or("UNKNOWN")
                        .to_owned(),
                    outlier_ok: !health["failed_outlier_check"].as_bool().unwrap_or(false),
                    cluster: s(&c["name"]).to_owned(),
                });
            }
        }
        Endpoints {
            raw: v["cluster_statuses"].clone(),
            rows,
        }
    }

    /// Envoy's (and Kite's) text format:
    /// `<cluster>::<ip:port>::health_flags::healthy`, `::weight::N`, …
    fn text(body: &str) -> Endpoints {
        let mut order: Vec<(String, String)> = Vec::new();
        let mut facts: std::collections::HashMap<(String, String), serde_json::Map<String, Value>> =
            Default::default();
        for line in body.lines() {
            let mut tail = line.rsplitn(3, "::");
            let (Some(value), Some(key), Some(rest)) = (tail.next(), tail.next(), tail.next())
            else {
                continue;
            };
            let Some((cluster, address)) = rest.split_once("::") else {
                continue;
            };
            if address.parse::<SocketAddr>().is_err() {
                continue;
            }
            let id = (cluster.to_owned(), address.to_owned());
            let entry = facts.entry(id.clone()).or_insert_with(|| {
                order.push(id);
                serde_json::Map::new()
            });
            let value = value
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(value));
            entry.insert(key.to_owned(), value);
        }
        let mut raw = Vec::new();
        let mut rows = Vec::new();
        for (cluster, address) in order {
            let Some(f) = facts.remove(&(cluster.clone(), address.clone())) else {
                continue;
            };
            let flags = f
                .get("health_flags")
                .and_then(Value::as_str)
                .unwrap_or("healthy")
                .to_owned();
            let flag_set: Vec<&str> = flags.split('/').filter(|f| !f.is_empty()).collect();
            let status = if flag_set.iter().any(|f| {
                matches!(
                    *f,
                    "failed_eds_health" | "failed_active_hc" | "failed_active_health_check"
                )
            }) {
                "UNHEALTHY"
            } else if flag_set.contains(&"degraded_eds_health") {
                "DEGRADED"
            } else {
                "HEALTHY"
            };
            rows.push(EndpointRow {
                address: address.clone(),
                status: status.to_owned(),
                outlier_ok: !flag_set.contains(&"failed_outlier_check"),
                cluster: cluster.clone(),
            });
            let mut obj = serde_json::Map::new();
            obj.insert("cluster".into(), json!(cluster));
            obj.insert("address".into(), json!(address));
            obj.extend(f);
            raw.push(Value::Object(obj));
        }
        Endpoints {
            raw: Value::Array(raw),
            rows,
        }
    }
}

fn endpoints_table(endpoints: &[EndpointRow]) -> String {
    let mut list: Vec<&EndpointRow> = endpoints.iter().collect();
    let key = |e: &EndpointRow| (e.address.parse::<SocketAddr>().ok(), e.address.clone());
    list.sort_by(|a, b| (key(a), &a.cluster).cmp(&(key(b), &b.cluster)));
    let rows: Vec<Vec<String>> = list
        .into_iter()
        .map(|e| {
            vec![
                e.address.clone(),
                e.status.clone(),
                if e.outlier_ok { "OK" } else { "FAILED" }.to_owned(),
                e.cluster.clone(),
            ]
        })
        .collect();
    table(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], &rows)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`, the form Envoy's
/// `/certs` uses (civil-from-days, H. Hinnant).
pub(crate) fn rfc3339(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

mod routes;
#[cfg(test)]
mod tests;

use routes::{routes_table, weighted};
