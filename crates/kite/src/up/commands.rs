//! What each process of a pod runs: its sidecar (Kite's proxy or Envoy,
//! with the credential for the pod's identity) and its app (the built-in
//! stand-in for an image of Istio's samples, or the command the pod names).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use kite_config::{Object, k8s::Container};
use kite_control::{bootstrap::Bootstrap, proxy::ProxyKind};
use tokio::process::Command;

use super::{Args, Pod};

/// Annotation naming the local command that stands in for a container
/// image Kite has no built-in app for; `$PORT` and `$HOST` are set.
const COMMAND_ANNOTATION: &str = "kite.io/command";

pub(super) fn envoy_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(".venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("envoy")
}

/// The command for a workload's proxy, holding the credential for its
/// identity alone: Kite's proxy presents it to the CA itself; Envoy's
/// bootstrap carries it in its node metadata (`KITE_TOKEN`), and the control
/// plane serves the certificate over SDS only to a node that holds it.
pub(super) async fn proxy_command(
    args: &Args,
    exe: &Path,
    boot: &Bootstrap,
    logs: &Path,
    name: &str,
    api: &str,
) -> anyhow::Result<Command> {
    let (token, root) = workload_credentials(
        api,
        &args.state_dir,
        &boot.pod,
        &boot.namespace,
        &boot.service_account,
    )
    .await?;
    let mut cmd = start_proxy_command(args, exe, boot, logs, name, &token)?;
    if args.sidecar == "kite" {
        cmd.args([
            "--ca",
            &SocketAddr::new(IpAddr::V4(args.control_ip), 15012).to_string(),
        ])
        .arg("--token-file")
        .arg(token)
        .arg("--ca-root")
        .arg(root);
    }
    Ok(cmd)
}

/// Asks the CA for a token bound to the pod's service account and writes it
/// (mode 0600) and the mesh root beside the pod's logs; returns their paths.
pub(super) async fn workload_credentials(
    api: &str,
    state_dir: &Path,
    pod: &str,
    namespace: &str,
    service_account: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let body =
        serde_json::json!({"namespace": namespace, "serviceAccount": service_account}).to_string();
    let (status, reply) = crate::ctl::request(api, "POST", "/apis/tokens", Some(body)).await?;
    if !status.is_success() {
        bail!("the CA refused a token for {pod}: {reply}");
    }
    let dir = state_dir.join("identity");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let token = dir.join(format!("{pod}.token"));
    write_private(&token, reply["token"].as_str().unwrap_or_default())?;
    let root = dir.join("root-cert.pem");
    std::fs::write(&root, reply["root"].as_str().unwrap_or_default())
        .with_context(|| format!("writing {}", root.display()))?;
    Ok((token, root))
}

pub(super) fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Worker threads of every sidecar and gateway, Kite's or Envoy's alike so
/// that the two compare like for like: one per pod on a local machine.
const PROXY_CONCURRENCY: &str = "1";

pub(super) fn start_proxy_command(
    args: &Args,
    exe: &Path,
    boot: &Bootstrap,
    logs: &Path,
    name: &str,
    token_file: &Path,
) -> anyhow::Result<Command> {
    let cmd = if args.sidecar == "envoy" {
        let path = logs.join(format!("{name}.bootstrap.json"));
        let mut bootstrap = boot.to_json();
        let token = std::fs::read_to_string(token_file)
            .with_context(|| format!("reading {}", token_file.display()))?;
        bootstrap["node"]["metadata"]["KITE_TOKEN"] =
            serde_json::Value::String(token.trim().to_owned());
        write_private(&path, &bootstrap.to_string())?;
        let mut cmd = Command::new(envoy_binary());
        cmd.arg("-c").arg(&path).args([
            "--disable-hot-restart",
            "--concurrency",
            PROXY_CONCURRENCY,
            "--log-level",
            "warning",
        ]);
        cmd
    } else {
        let labels: Vec<String> = boot
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // The sidecar's own binary, built beside `kite`; a `kite` copied
        // without it runs its `proxy` command, which is the same proxy.
        let sidecar = exe.with_file_name("kite-proxy");
        let mut cmd = if sidecar.is_file() {
            Command::new(sidecar)
        } else {
            let mut cmd = Command::new(exe);
            cmd.arg("proxy");
            cmd
        };
        cmd.args(["--ip", &boot.ip.to_string(), "--pod", &boot.pod])
            .args([
                "--namespace",
                &boot.namespace,
                "--labels",
                &labels.join(","),
            ])
            .args([
                "--service-account",
                &boot.service_account,
                "--xds",
                &boot.xds.to_string(),
            ]);
        if let Some(app) = boot.app_ip {
            cmd.args(["--app-ip", &app.to_string()]);
        }
        if boot.kind == ProxyKind::Router {
            cmd.arg("--gateway");
        }
        cmd.args(["--concurrency", PROXY_CONCURRENCY]);
        cmd
    };
    Ok(cmd)
}

/// The app a container stands for: BookInfo's images map to the built-in
/// services; anything else runs the command its pod annotation names.
pub(super) fn app_command(
    exe: &Path,
    deployment: &Object,
    container: &Container,
    annotations: &BTreeMap<String, String>,
    pod: &Pod,
) -> anyhow::Result<Command> {
    let listen = SocketAddr::new(IpAddr::V4(pod.app_ip), pod.port).to_string();
    let mut cmd = if let Some((service, version)) = sample_image(&container.image) {
        let mut cmd = Command::new(exe);
        cmd.args([
            "bookinfo",
            &service,
            "--version",
            &version,
            "--listen",
            &listen,
        ]);
        if service == "tcp-echo" {
            cmd.arg("--").args(&container.args);
        }
        cmd
    } else if let Some(command) = annotations.get(COMMAND_ANNOTATION) {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", command])
            .env("PORT", pod.port.to_string())
            .env("HOST", pod.app_ip.to_string());
        cmd
    } else if let Some(program) = container
        .command
        .first()
        .filter(|p| Path::new(p.as_str()).is_file())
    {
        // A container whose command this machine has too (Istio's curl
        // client pod runs `/bin/sleep infinity`) runs as it is.
        let mut cmd = Command::new(program);
        cmd.args(&container.command[1..]).args(&container.args);
        cmd
    } else {
        bail!(
            "Deployment {}/{}: no built-in app for image {:?}; add the annotation {COMMAND_ANNOTATION} to its pod template with a local command to run instead",
            deployment.meta.namespace,
            deployment.meta.name,
            container.image
        );
    };
    // Nothing of kite up's own environment that the apps read leaks in;
    // the container's environment then applies as written.
    cmd.env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("SERVICE_VERSION")
        .env_remove("BOOKINFO_LISTEN");
    for env in &container.env {
        if let Some(value) = &env.value {
            cmd.env(&env.name, value);
        }
    }
    cmd.env("HOSTNAME", &pod.name);
    if pod.sidecar {
        // The local mesh captures the app's outbound traffic through its
        // sidecar's HTTP proxy.
        cmd.env("HTTP_PROXY", format!("http://{}:15001", pod.ip));
    }
    Ok(cmd)
}

/// The built-in app (service, version) an image of Istio's samples stands
/// for: BookInfo's four services, httpbin (go-httpbin, kennethreitz's
/// before it), helloworld, tcp-echo and the fortio client.
pub(super) fn sample_image(image: &str) -> Option<(String, String)> {
    let name = image.rsplit('/').next()?.split(':').next()?;
    let owned = |s: &str, v: &str| Some((s.to_owned(), v.to_owned()));
    if let Some(rest) = name.strip_prefix("examples-bookinfo-") {
        let (service, version) = rest.split_once('-')?;
        return matches!(service, "productpage" | "details" | "reviews" | "ratings")
            .then(|| (service.to_owned(), version.to_owned()));
    }
    if let Some(version) = name.strip_prefix("examples-helloworld-") {
        return owned("helloworld", version);
    }
    match name {
        "go-httpbin" | "httpbin"
            if image.contains("go-httpbin") || image.contains("kennethreitz/httpbin") =>
        {
            owned("httpbin", "v1")
        }
        "tcp-echo-server" => owned("tcp-echo", "v1"),
        "fortio" => owned("fortio", "v1"),
        _ => None,
    }
}
