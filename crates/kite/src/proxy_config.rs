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
                    "TCP" => format!("Cluster: {}", s(&l["cluster"])),
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

/// The shortest three domains, then how many more there are.
fn domains(list: &[Value]) -> String {
    let mut names: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    names.sort_by_key(|d| d.len());
    match names.len() {
        0 => "-".to_owned(),
        n if n > 3 => format!("{} +{} more", names[..3].join(", "), n - 3),
        _ => names.join(", "),
    }
}

fn routes_table(format: Format, route_configs: &[Value]) -> String {
    let mut configs: Vec<&Value> = route_configs.iter().collect();
    configs.sort_by_key(|rc| s(&rc["name"]));
    let mut rows = Vec::new();
    for rc in configs {
        for vh in rc["virtual_hosts"].as_array().into_iter().flatten() {
            let domain_list = vh["domains"].as_array().cloned().unwrap_or_default();
            for r in vh["routes"].as_array().into_iter().flatten() {
                let (matcher, dest) = match format {
                    Format::Kite => kite_route(r),
                    Format::Envoy => envoy_route(r),
                };
                rows.push(vec![
                    or_dash(s(&rc["name"])),
                    or_dash(s(&vh["name"])),
                    domains(&domain_list),
                    or_dash(&matcher),
                    or_dash(s(&r["name"])),
                    or_dash(&dest),
                ]);
            }
        }
    }
    table(
        &[
            "NAME",
            "VHOST NAME",
            "DOMAINS",
            "MATCH",
            "ROUTE",
            "DESTINATION",
        ],
        &rows,
    )
}

/// Clusters with their share of the traffic when there are several.
fn weighted<'a>(clusters: impl Iterator<Item = &'a Value>) -> String {
    let list: Vec<(&str, u64)> = clusters
        .map(|c| (s(&c["name"]), c["weight"].as_u64().unwrap_or(0)))
        .collect();
    let total: u64 = list.iter().map(|(_, w)| w).sum();
    match list.as_slice() {
        [(name, _)] => (*name).to_owned(),
        _ => list
            .iter()
            .map(|(name, w)| {
                let percent = (w * 100 + total / 2).checked_div(total).unwrap_or(0);
                format!("{name} ({percent}%)")
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// (match, destination) of a route in Kite's dump, where matchers are
/// written in Rust's debug notation: `Prefix("/")`,
/// `end-userSome(Exact("jason"))`.
fn kite_route(r: &Value) -> (String, String) {
    let mut conds = Vec::new();
    let path = s(&r["match"]);
    conds.push(match debug_call(path) {
        Some(("Prefix", p)) => format!("{p}*"),
        Some(("Exact", p)) => p,
        Some(("Regex", p)) => format!("regex {}", strip_anchors(&p)),
        _ => path.to_owned(),
    });
    for h in r["headers"].as_array().into_iter().flatten().map(s) {
        let (name, matcher) = match h.find("Some(") {
            Some(i) => (&h[..i], debug_call(&h[i..]).map(|(_, m)| m)),
            None => (h.strip_suffix("None").unwrap_or(h), None),
        };
        conds.push(match matcher.as_deref().and_then(debug_call) {
            Some((kind, v)) => header_cond(name, kind, &v, false),
            None => name.to_owned(),
        });
    }
    let action = &r["action"];
    let mut dest = if let Some(clusters) = action["clusters"].as_array() {
        weighted(clusters.iter())
    } else if action.get("redirect").is_some() {
        "redirect".to_owned()
    } else if let Some(status) = action["direct_response"].as_u64() {
        format!("direct response {status}")
    } else {
        String::new()
    };
    if !r["fault"].is_null() {
        dest.push_str(" [fault]");
    }
    (conds.join(" "), dest)
}

/// `Variant(inner)` → (`Variant`, inner), with a quoted inner string
/// unquoted.
fn debug_call(v: &str) -> Option<(&str, String)> {
    let open = v.find('(')?;
    let inner = v[open + 1..].strip_suffix(')')?;
    let inner = if inner.starts_with('"') {
        serde_json::from_str::<String>(inner).unwrap_or_else(|_| inner.trim_matches('"').to_owned())
    } else if let Some((_, regex)) = debug_call(inner).filter(|(k, _)| *k == "Regex") {
        regex
    } else {
        inner.to_owned()
    };
    Some((&v[..open], inner))
}

/// Kite anchors its regexes as `^(?:…)$`; show the pattern as written.
fn strip_anchors(re: &str) -> &str {
    re.strip_prefix("^(?:")
        .and_then(|r| r.strip_suffix(")$"))
        .unwrap_or(re)
}

fn header_cond(name: &str, kind: &str, v: &str, invert: bool) -> String {
    let not = if invert { "!" } else { "" };
    match kind {
        "Exact" | "exact" => format!("{not}{name}={v}"),
        "Prefix" | "prefix" => format!("{not}{name}={v}*"),
        "Suffix" | "suffix" => format!("{not}{name}=*{v}"),
        "Contains" | "contains" => format!("{not}{name}=*{v}*"),
        "Regex" | "safe_regex" => format!("{not}{name}~{}", strip_anchors(v)),
        _ => format!("{not}{name}"),
    }
}

/// (match, destination) of a route in Envoy's dump.
fn envoy_route(r: &Value) -> (String, String) {
    let m = &r["match"];
    let mut conds = Vec::new();
    if let Some(p) = m["prefix"].as_str() {
        conds.push(format!("{p}*"));
    } else if let Some(p) = m["path"].as_str() {
        conds.push(p.to_owned());
    } else if let Some(p) = m["path_separated_prefix"].as_str() {
        conds.push(format!("{p}/*"));
    } else if let Some(p) = m["safe_regex"]["regex"].as_str() {
        conds.push(format!("regex {p}"));
    }
    for h in m["headers"].as_array().into_iter().flatten() {
        let name = s(&h["name"]);
        let invert = h["invert_match"].as_bool().unwrap_or(false);
        let sm = if h["string_match"].is_object() {
            &h["string_match"]
        } else {
            h
        };
        let cond = if let Some(v) = sm["exact"].as_str().or(sm["exact_match"].as_str()) {
            header_cond(name, "exact", v, invert)
        } else if let Some(v) = sm["prefix"].as_str().or(sm["prefix_match"].as_str()) {
            header_cond(name, "prefix", v, invert)
        } else if let Some(v) = sm["suffix"].as_str().or(sm["suffix_match"].as_str()) {
            header_cond(name, "suffix", v, invert)
        } else if let Some(v) = sm["contains"].as_str().or(sm["contains_match"].as_str()) {
            header_cond(name, "contains", v, invert)
        } else if let Some(v) = sm["safe_regex"]["regex"]
            .as_str()
            .or(sm["safe_regex_match"]["regex"].as_str())
        {
            header_cond(name, "safe_regex", v, invert)
        } else {
            header_cond(name, "present", "", invert)
        };
        conds.push(cond);
    }
    let mut dest = if r["route"].is_object() {
        let route = &r["route"];
        if let Some(c) = route["cluster"].as_str() {
            c.to_owned()
        } else if let Some(list) = route["weighted_clusters"]["clusters"].as_array() {
            weighted(list.iter())
        } else if let Some(h) = route["cluster_header"].as_str() {
            format!("cluster from header {h}")
        } else {
            String::new()
        }
    } else if r["redirect"].is_object() {
        let rd = &r["redirect"];
        let target = format!(
            "{}{}",
            s(&rd["host_redirect"]),
            rd["path_redirect"]
                .as_str()
                .or(rd["prefix_rewrite"].as_str())
                .unwrap_or_default()
        );
        if target.is_empty() {
            "redirect".to_owned()
        } else {
            format!("redirect {target}")
        }
    } else if let Some(status) = r["direct_response"]["status"].as_u64() {
        format!("direct response {status}")
    } else {
        String::new()
    };
    let has_fault = r["typed_per_filter_config"]
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k.contains("fault")));
    if has_fault {
        dest.push_str(" [fault]");
    }
    (conds.join(" "), dest)
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
fn rfc3339(secs: u64) -> String {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_847_338), "2026-11-28T06:28:58Z");
    }

    use super::*;

    fn proxy(node: &str) -> Proxy {
        Proxy::from_node_id(node).unwrap()
    }

    #[test]
    fn node_ids() {
        let p = proxy("sidecar~127.10.0.7~productpage-v1-xyz.default~default.svc.cluster.local");
        assert_eq!(p.ip, "127.10.0.7".parse::<IpAddr>().unwrap());
        assert_eq!(p.pod, "productpage-v1-xyz");
        assert_eq!(p.namespace, "default");
        assert!(Proxy::from_node_id("garbage").is_none());
    }

    #[test]
    fn picking_workloads() {
        let all = vec![
            proxy("sidecar~127.0.0.2~reviews-v1-a.default~default.svc.cluster.local"),
            proxy("sidecar~127.0.0.3~reviews-v1-a.test~test.svc.cluster.local"),
            proxy(
                "router~127.0.0.4~istio-ingressgateway-0.istio-system~istio-system.svc.cluster.local",
            ),
        ];
        let cp = "http://cp";
        assert_eq!(
            pick(&all, "reviews-v1-a.test", None, cp)
                .unwrap()
                .ip
                .to_string(),
            "127.0.0.3"
        );
        assert_eq!(
            pick(&all, "reviews-v1-a", Some("default"), cp)
                .unwrap()
                .ip
                .to_string(),
            "127.0.0.2"
        );
        assert_eq!(
            pick(&all, "istio-ingressgateway-0", None, cp).unwrap().pod,
            "istio-ingressgateway-0"
        );
        assert_eq!(pick(&all, &all[1].node, None, cp).unwrap(), all[1]);
        let ambiguous = pick(&all, "reviews-v1-a", None, cp)
            .unwrap_err()
            .to_string();
        assert!(ambiguous.contains("ambiguous"), "{ambiguous}");
        let unknown = pick(&all, "nope", None, cp).unwrap_err().to_string();
        assert!(unknown.contains("reviews-v1-a.default"), "{unknown}");
        assert!(
            unknown.contains("istio-ingressgateway-0.istio-system"),
            "{unknown}"
        );
        let none = pick(&[], "nope", None, cp).unwrap_err().to_string();
        assert!(none.contains("no proxy is connected"), "{none}");
    }

    #[test]
    fn cluster_names() {
        assert_eq!(
            istio_cluster("outbound|9080|v1|reviews.default.svc.cluster.local"),
            (
                "reviews.default.svc.cluster.local".into(),
                "9080".into(),
                "v1".into(),
                "outbound".into()
            )
        );
        assert_eq!(
            istio_cluster("inbound|9080||"),
            ("-".into(), "9080".into(), "-".into(), "inbound".into())
        );
        assert_eq!(istio_cluster("xds-grpc").0, "xds-grpc");
        assert_eq!(upper_snake("LeastRequest"), "LEAST_REQUEST");
        assert_eq!(upper_snake("ROUND_ROBIN"), "ROUND_ROBIN");
    }

    #[test]
    fn kite_routes() {
        let r = json!({"action": {"clusters": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}, "fault": null,
            "headers": ["end-userSome(Exact(\"jason\"))", "x-presentNone"], "match": "Prefix(\"/\")", "name": ""});
        assert_eq!(
            kite_route(&r),
            (
                "/* end-user=jason x-present".into(),
                "a (50%), b (50%)".into()
            )
        );
        let r = json!({"action": {"direct_response": 502}, "fault": null, "headers": [],
            "match": "Regex(Regex(\"^(?:/api/v1/products.*)$\"))", "name": "x"});
        assert_eq!(
            kite_route(&r),
            (
                "regex /api/v1/products.*".into(),
                "direct response 502".into()
            )
        );
        let r = json!({"action": {"clusters": [{"name": "a", "weight": 1}]}, "fault": "Fault {..}",
            "headers": [], "match": "Exact(\"/login\")"});
        assert_eq!(kite_route(&r), ("/login".into(), "a [fault]".into()));
    }

    #[test]
    fn envoy_routes() {
        let r = json!({"match": {"prefix": "/", "headers": [{"name": "end-user", "string_match": {"exact": "jason"}}]},
            "route": {"cluster": "outbound|9080|v2|reviews.default.svc.cluster.local"}});
        assert_eq!(
            envoy_route(&r),
            (
                "/* end-user=jason".into(),
                "outbound|9080|v2|reviews.default.svc.cluster.local".into()
            )
        );
        let r = json!({"match": {"path": "/x"}, "route": {"weighted_clusters": {"clusters": [
            {"name": "a", "weight": 80}, {"name": "b", "weight": 20}]}}});
        assert_eq!(envoy_route(&r), ("/x".into(), "a (80%), b (20%)".into()));
    }

    #[test]
    fn domain_lists() {
        let d = json!([
            "reviews.default.svc.cluster.local:9080",
            "reviews.default.svc:9080",
            "reviews.default:9080",
            "reviews:9080"
        ]);
        assert_eq!(
            domains(d.as_array().unwrap()),
            "reviews:9080, reviews.default:9080, reviews.default.svc:9080 +1 more"
        );
        assert_eq!(domains(json!(["*"]).as_array().unwrap()), "*");
    }

    #[test]
    fn envoy_dump_sections() {
        let dump = json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
                {"name": "virtualOutbound", "active_state": {"listener": {"name": "virtualOutbound",
                    "address": {"socket_address": {"address": "127.0.0.9", "port_value": 15001}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {"rds": {"route_config_name": "http_proxy"}}}]}]}}},
                {"name": "tcp", "active_state": {"listener": {"name": "tcp",
                    "address": {"socket_address": {"address": "0.0.0.0", "port_value": 3306}},
                    "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                        "typed_config": {"cluster": "outbound|3306||mysql.default.svc.cluster.local"}}]}]}}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "static_clusters": [{"cluster": {"name": "xds-grpc", "type": "STATIC"}}],
                "dynamic_active_clusters": [{"cluster": {"name": "outbound|9080|v1|reviews.default.svc.cluster.local", "type": "EDS", "lb_policy": "LEAST_REQUEST"}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": [
                {"route_config": {"name": "http_proxy", "virtual_hosts": []}}]}
        ]});
        let d = Dump::parse(&dump).unwrap();
        assert_eq!(d.format, Format::Envoy);
        assert_eq!(
            (d.listeners.len(), d.clusters.len(), d.routes.len()),
            (2, 2, 1)
        );
        let t = listeners_table(d.format, &d.listeners);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "ADDRESS     PORT    TYPE   DESTINATION");
        assert_eq!(
            lines[1],
            "0.0.0.0     3306    TCP    Cluster: outbound|3306||mysql.default.svc.cluster.local"
        );
        assert_eq!(lines[2], "127.0.0.9   15001   HTTP   Route: http_proxy");
        let t = clusters_table(d.format, &d.clusters);
        assert!(t.contains("reviews.default.svc.cluster.local   9080   v1       outbound    EDS      LEAST_REQUEST"), "{t}");
        assert!(t.contains("xds-grpc"), "{t}");
        assert!(Dump::parse(&json!({"x": 1})).is_err());
    }

    #[test]
    fn kite_clusters_text() {
        let body = "inbound|9080||::127.0.0.2:9080::health_flags::healthy\n\
                    inbound|9080||::127.0.0.2:9080::weight::1\n\
                    outbound|9080|v2|reviews.default.svc.cluster.local::[::1]:9080::health_flags::/failed_outlier_check\n\
                    outbound|9080|v2|reviews.default.svc.cluster.local::[::1]:9080::rq_total::7\n\
                    outbound|9080|v2|reviews.default.svc.cluster.local::observability_name::x\n";
        let e = Endpoints::parse(body.as_bytes());
        assert_eq!(e.rows.len(), 2);
        assert_eq!(e.rows[1].address, "[::1]:9080");
        assert!(!e.rows[1].outlier_ok);
        assert_eq!(e.rows[1].status, "HEALTHY");
        assert_eq!(e.raw[1]["rq_total"], 7);
        let t = endpoints_table(&e.rows);
        assert!(
            t.contains("127.0.0.2:9080   HEALTHY   OK              inbound|9080||"),
            "{t}"
        );
    }

    #[test]
    fn envoy_clusters_json() {
        let body = json!({"cluster_statuses": [{"name": "c", "host_statuses": [
            {"address": {"socket_address": {"address": "127.0.0.5", "port_value": 9080}},
             "health_status": {"eds_health_status": "HEALTHY", "failed_outlier_check": true}}]}]});
        let e = Endpoints::parse(body.to_string().as_bytes());
        assert_eq!(
            e.rows,
            vec![EndpointRow {
                address: "127.0.0.5:9080".into(),
                status: "HEALTHY".into(),
                outlier_ok: false,
                cluster: "c".into()
            }]
        );
    }
}
