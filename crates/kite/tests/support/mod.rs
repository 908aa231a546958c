//! A local mesh for end-to-end tests: `kite control`, Envoy proxies driven
//! by it, BookInfo apps, all as real processes on loopback addresses of
//! their own.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kite_control::{bootstrap::Bootstrap, proxy::ProxyKind};
use serde_json::Value;

pub mod bookinfo;
pub mod up;

pub const SAMPLES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/istio-samples/samples"
);

pub fn sample(rel: &str) -> String {
    format!("{SAMPLES}/{rel}")
}

/// A child process, killed when dropped; its output goes to a log file that
/// is printed if the test fails.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process now (its log is still printed if the test fails).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Ctrl-C, as a user stops `kite up`; waits up to `limit` for the exit.
    pub fn interrupt(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status();
        self.wait(limit)
    }

    /// Waits for the process to exit on its own.
    pub fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("----- {} ({}) -----", self.name, self.log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub fn spawn(name: &str, dir: &Path, cmd: &mut Command) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {name}: {e}"));
    Proc {
        name: name.to_owned(),
        child,
        log,
    }
}

pub fn kite() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kite"));
    cmd.env_remove("HTTP_PROXY").env_remove("http_proxy");
    cmd
}

/// Envoy from `$ENVOY`, else the repository's `.venv` (what `.ci/run`
/// installs), else PATH.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/envoy");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("envoy")
}

/// One pod: a sidecar on `pod_ip`, its app on `app_ip`, both port 9080.
pub struct Pod {
    pub name: String,
    pub app: String,
    pub version: String,
    pub service_account: String,
    pub pod_ip: IpAddr,
    pub app_ip: IpAddr,
}

/// Which proxy runs beside each workload and as the gateway.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sidecar {
    Envoy,
    Kite,
}

/// How `Mesh::start_with` sets the mesh up; `Default` is what
/// `Mesh::start` does.
#[derive(Clone, Debug, Default)]
pub struct MeshOptions {
    /// Kite sidecars only: every pod and client added afterwards gets a
    /// workload identity (a token for its service account, the mesh root,
    /// `--ca`), and its WorkloadEntry is labelled
    /// `security.istio.io/tlsMode: istio`, so peers reach it with mutual TLS.
    pub identity: bool,
    /// `kite control --workload-cert-ttl <secs>`; the control plane's
    /// default (24 h) when `None`.
    pub workload_cert_ttl: Option<u64>,
}

/// A proxy's credential files for its workload identity.
#[derive(Clone, Debug)]
pub struct Creds {
    pub token: PathBuf,
    pub root: PathBuf,
}

pub struct Mesh {
    pub sidecar: Sidecar,
    pub dir: PathBuf,
    pub api: SocketAddr,
    pub xds: SocketAddr,
    /// The control plane's CA (gRPC over TLS).
    pub ca: SocketAddr,
    /// Whether pods added from now on get a workload identity.
    pub identity: bool,
    net: u8,
    next_host: u8,
    pub procs: Vec<Proc>,
    pub pods: Vec<Pod>,
    pub gateway: Option<IpAddr>,
}

impl Mesh {
    /// Starts a control plane on a loopback /24 of this test's own.
    pub async fn start(test: &str, sidecar: Sidecar) -> Mesh {
        Self::start_with(test, sidecar, MeshOptions::default()).await
    }

    /// `start`, with the options given.
    pub async fn start_with(test: &str, sidecar: Sidecar, options: MeshOptions) -> Mesh {
        assert!(
            !options.identity || sidecar == Sidecar::Kite,
            "workload identities are for Kite sidecars only"
        );
        let net = u8::try_from(std::process::id() % 100).unwrap() * 2
            + 20
            + u8::from(sidecar == Sidecar::Kite);
        let dir = std::env::temp_dir().join(format!("kite-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let cp = IpAddr::V4(Ipv4Addr::new(127, 61, net, 250));
        let api = SocketAddr::new(cp, 15014);
        let xds = SocketAddr::new(cp, 15010);
        let ca = SocketAddr::new(cp, 15012);
        let mut cmd = kite();
        cmd.args([
            "control",
            "--xds",
            &xds.to_string(),
            "--api",
            &api.to_string(),
            "--ca",
            &ca.to_string(),
        ])
        .arg("--ca-dir")
        .arg(dir.join("ca"))
        .env("KITE_LOG", "info");
        if let Some(ttl) = options.workload_cert_ttl {
            cmd.args(["--workload-cert-ttl", &ttl.to_string()]);
        }
        let control = spawn("control", &dir, &mut cmd);
        let mesh = Mesh {
            sidecar,
            dir,
            api,
            xds,
            ca,
            identity: options.identity,
            net,
            next_host: 1,
            procs: vec![control],
            pods: Vec::new(),
            gateway: None,
        };
        mesh.wait_http(api, "/ready").await;
        mesh
    }

    fn ip(&mut self) -> IpAddr {
        let ip = IpAddr::V4(Ipv4Addr::new(127, 61, self.net, self.next_host));
        self.next_host += 1;
        ip
    }

    /// `kite apply -f <paths>` against this mesh; panics with kite's output
    /// on failure.
    pub fn apply(&self, paths: &[&str]) -> String {
        self.kite_ctl("apply", paths)
    }

    pub fn delete(&self, paths: &[&str]) -> String {
        self.kite_ctl("delete", paths)
    }

    /// Runs `kite <args>` against this mesh; panics unless it succeeds.
    pub fn kite_out(&self, args: &[&str]) -> String {
        let (ok, text) = self.kite_run(args);
        assert!(ok, "kite {args:?} failed:\n{text}");
        text
    }

    /// Runs `kite <args>` against this mesh; panics unless it fails.
    pub fn kite_fails(&self, args: &[&str]) -> String {
        let (ok, text) = self.kite_run(args);
        assert!(!ok, "kite {args:?} should have failed:\n{text}");
        text
    }

    fn kite_run(&self, args: &[&str]) -> (bool, String) {
        let out = kite()
            .args(args)
            .env("KITE_CONTROL_PLANE", format!("http://{}", self.api))
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// The store's revision, from the debug API.
    pub async fn revision(&self) -> u64 {
        let r = get(self.api, "/debug/connections", &[]).await.unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["revision"].as_u64().unwrap()
    }

    fn kite_ctl(&self, verb: &str, paths: &[&str]) -> String {
        let mut cmd = kite();
        cmd.arg(verb)
            .env("KITE_CONTROL_PLANE", format!("http://{}", self.api));
        for p in paths {
            cmd.args(["-f", p]);
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kite {verb} {paths:?} failed:\n{text}"
        );
        text
    }

    /// Registers a pod (as a WorkloadEntry), starts its Envoy sidecar and
    /// then its BookInfo app, pointed at the sidecar through HTTP_PROXY.
    pub async fn add_pod(&mut self, app: &str, version: &str, service_account: &str) {
        self.add_pod_running_as(app, version, service_account, service_account)
            .await;
    }

    /// `add_pod`, except that the sidecar runs as `actual_sa` (its
    /// `--service-account` and, with identity, the service account its token
    /// and certificate are for) while the WorkloadEntry registers
    /// `registered_sa`: an impostor when the two differ.
    pub async fn add_pod_running_as(
        &mut self,
        app: &str,
        version: &str,
        registered_sa: &str,
        actual_sa: &str,
    ) {
        let pod_ip = self.ip();
        let app_ip = self.ip();
        let name = format!("{app}-{version}-pod{}", self.pods.len());
        let tls_label = if self.identity {
            "\n    security.istio.io/tlsMode: istio"
        } else {
            ""
        };
        let we = format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  address: {pod_ip}\n  labels:\n    app: {app}\n    version: {version}{tls_label}\n  serviceAccount: {registered_sa}\n"
        );
        let path = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, we).unwrap();
        self.apply(&[path.to_str().unwrap()]);
        let labels: BTreeMap<String, String> = [("app", app), ("version", version)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let creds = self.identity_for(&name, actual_sa).await;
        self.start_proxy(
            &name,
            ProxyKind::Sidecar,
            pod_ip,
            Some(app_ip),
            labels,
            actual_sa,
            creds.as_ref(),
        );
        self.wait_sidecar(pod_ip).await;
        let app_proc = spawn(
            &format!("{name}-app"),
            &self.dir.clone(),
            kite()
                .args([
                    "bookinfo",
                    app,
                    "--version",
                    version,
                    "--listen",
                    &format!("{app_ip}:9080"),
                ])
                .env("HOSTNAME", &name)
                .env("HTTP_PROXY", format!("http://{pod_ip}:15001")),
        );
        self.procs.push(app_proc);
        self.wait_http(SocketAddr::new(app_ip, 9080), "/health")
            .await;
        self.pods.push(Pod {
            name,
            app: app.to_owned(),
            version: version.to_owned(),
            service_account: actual_sa.to_owned(),
            pod_ip,
            app_ip,
        });
    }

    /// Takes a pod added by `add_pod` out of the mesh: deletes its
    /// WorkloadEntry, then stops its app and its sidecar.
    pub fn remove_pod(&mut self, name: &str) {
        let index = self
            .pods
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"));
        let path = self.dir.join(format!("{name}.yaml"));
        self.delete(&[path.to_str().unwrap()]);
        let own = |p: &Proc| {
            p.name
                .strip_prefix(name)
                .is_some_and(|rest| ["-app", "-envoy", "-kite-proxy"].contains(&rest))
        };
        for p in self.procs.iter_mut().filter(|p| own(p)) {
            p.stop();
        }
        self.procs.retain(|p| !own(p));
        self.pods.remove(index);
    }

    /// Kills the control plane (`procs[0]`, with its CA); proxies keep
    /// running on what they already have.
    pub fn stop_control_plane(&mut self) {
        let control = &mut self.procs[0];
        assert_eq!(control.name, "control", "procs[0] is the control plane");
        control.stop();
    }

    /// With identity on, mints a token for `default/<service_account>` and
    /// writes it (`<pod>.token`) and the mesh root (`root-cert.pem`) under
    /// `dir`.
    async fn identity_for(&self, pod: &str, service_account: &str) -> Option<Creds> {
        if !self.identity {
            return None;
        }
        Some(self.credentials(pod, "default", service_account).await)
    }

    /// `POST /apis/tokens` for `namespace/service_account`; writes the token
    /// to `<dir>/<file_stem>.token` and the mesh root to
    /// `<dir>/root-cert.pem`.
    pub async fn credentials(
        &self,
        file_stem: &str,
        namespace: &str,
        service_account: &str,
    ) -> Creds {
        let body = serde_json::json!({"namespace": namespace, "serviceAccount": service_account});
        let r = send(
            self.api,
            "POST",
            "/apis/tokens",
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await
        .unwrap();
        assert_eq!(
            r.status,
            200,
            "minting a token for {namespace}/{service_account}: {}",
            r.text()
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let token = self.dir.join(format!("{file_stem}.token"));
        std::fs::write(&token, v["token"].as_str().unwrap()).unwrap();
        let root = self.dir.join("root-cert.pem");
        std::fs::write(&root, v["root"].as_str().unwrap()).unwrap();
        Creds { token, root }
    }

    /// Waits for a new sidecar: its outbound port, and with identity its
    /// readiness (certificate and first config).
    async fn wait_sidecar(&self, pod_ip: IpAddr) {
        self.wait_tcp(SocketAddr::new(pod_ip, 15001)).await;
        if self.identity {
            match self.sidecar {
                Sidecar::Kite => {
                    self.wait_http(SocketAddr::new(pod_ip, 15021), "/healthz/ready")
                        .await;
                }
                // Envoy's own readiness: initialised, secrets included.
                Sidecar::Envoy => {
                    self.wait_http(SocketAddr::new(pod_ip, 15000), "/ready")
                        .await
                }
            }
        }
    }

    /// A sidecar with no app behind it: a client pod for driving requests
    /// through the mesh by hand.
    pub async fn add_client(&mut self, app: &str) -> IpAddr {
        let pod_ip = self.ip();
        let app_ip = self.ip();
        let name = format!("{app}-v1-pod{}", self.pods.len());
        let labels: BTreeMap<String, String> = [("app", app), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let creds = self.identity_for(&name, "default").await;
        self.start_proxy(
            &name,
            ProxyKind::Sidecar,
            pod_ip,
            Some(app_ip),
            labels,
            "default",
            creds.as_ref(),
        );
        self.wait_sidecar(pod_ip).await;
        self.pods.push(Pod {
            name,
            app: app.to_owned(),
            version: "v1".to_owned(),
            service_account: "default".to_owned(),
            pod_ip,
            app_ip,
        });
        pod_ip
    }

    /// A free loopback address in this mesh's network, for test servers.
    pub fn spare_ip(&mut self) -> IpAddr {
        self.ip()
    }

    /// An Envoy ingress gateway labelled as Istio's (`istio: ingressgateway`).
    /// It gets no workload identity, even with `MeshOptions::identity`.
    pub fn add_gateway(&mut self) -> IpAddr {
        let ip = self.ip();
        let labels = [("istio", "ingressgateway"), ("app", "istio-ingressgateway")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self.start_proxy(
            "istio-ingressgateway-0",
            ProxyKind::Router,
            ip,
            None,
            labels,
            "istio-ingressgateway",
            None,
        );
        self.gateway = Some(ip);
        ip
    }

    /// Starts the mesh's proxy (Envoy or Kite) for a workload; `creds`
    /// gives a Kite proxy its workload identity.
    #[allow(clippy::too_many_arguments)]
    fn start_proxy(
        &mut self,
        name: &str,
        kind: ProxyKind,
        ip: IpAddr,
        app_ip: Option<IpAddr>,
        labels: BTreeMap<String, String>,
        service_account: &str,
        creds: Option<&Creds>,
    ) {
        let namespace = if kind == ProxyKind::Router {
            "istio-system"
        } else {
            "default"
        };
        let boot = Bootstrap {
            kind,
            ip,
            pod: name.to_owned(),
            namespace: namespace.to_owned(),
            labels,
            service_account: service_account.to_owned(),
            app_ip,
            xds: self.xds,
            admin: SocketAddr::new(ip, 15000),
        };
        let proxy = match self.sidecar {
            Sidecar::Envoy => {
                let path = self.dir.join(format!("{name}-envoy.json"));
                let mut bootstrap = boot.to_json();
                if let Some(creds) = creds {
                    // Envoy's credential for its certificate over SDS.
                    let token = std::fs::read_to_string(&creds.token).unwrap();
                    bootstrap["node"]["metadata"]["KITE_TOKEN"] =
                        Value::String(token.trim().to_owned());
                }
                std::fs::write(&path, bootstrap.to_string()).unwrap();
                spawn(
                    &format!("{name}-envoy"),
                    &self.dir.clone(),
                    Command::new(envoy_bin()).args([
                        "-c",
                        path.to_str().unwrap(),
                        "--disable-hot-restart",
                        "--concurrency",
                        "1",
                        "--log-level",
                        "warning",
                    ]),
                )
            }
            Sidecar::Kite => {
                let labels: Vec<String> = boot
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_kite-proxy"));
                cmd.env_remove("HTTP_PROXY").env_remove("http_proxy");
                cmd.args([
                    "--ip",
                    &ip.to_string(),
                    "--pod",
                    name,
                    "--namespace",
                    namespace,
                ])
                .args([
                    "--labels",
                    &labels.join(","),
                    "--service-account",
                    service_account,
                ])
                .args(["--xds", &self.xds.to_string()])
                .env("KITE_LOG", "info");
                if let Some(app) = app_ip {
                    cmd.args(["--app-ip", &app.to_string()]);
                }
                if kind == ProxyKind::Router {
                    cmd.arg("--gateway");
                }
                if let Some(creds) = creds {
                    cmd.args(["--ca", &self.ca.to_string(), "--token-file"])
                        .arg(&creds.token)
                        .arg("--ca-root")
                        .arg(&creds.root);
                }
                spawn(&format!("{name}-kite-proxy"), &self.dir.clone(), &mut cmd)
            }
        };
        self.procs.push(proxy);
    }

    pub async fn wait_tcp(&self, addr: SocketAddr) {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("nothing listens on {addr} after 10 s");
    }

    pub async fn wait_http(&self, addr: SocketAddr, path: &str) {
        for _ in 0..200 {
            if let Ok(r) = get(addr, path, &[]).await
                && r.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("http://{addr}{path} is not answering 200 after 10 s");
    }

    /// Waits until every connected proxy has ACKed the latest version of
    /// every type it was sent, and returns the connection list. Panics on a
    /// NACK.
    pub async fn synced(&self, proxies: usize) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            let r = get(self.api, "/debug/connections", &[]).await.unwrap();
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let list = v["proxies"].as_array().cloned().unwrap_or_default();
            for p in &list {
                for (kind, s) in p["types"].as_object().into_iter().flatten() {
                    assert!(
                        s["lastNack"].is_null(),
                        "{} NACKed {kind}: {}",
                        p["node"],
                        s["lastNack"]
                    );
                }
            }
            let caught_up = v["revision"] == v["translatedRevision"];
            let all_acked = caught_up
                && list.len() == proxies
                && list
                    .iter()
                    .all(|p| p["generation"] == p["publishedGeneration"])
                && list.iter().all(|p| {
                    p["types"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .all(|(_, s)| s["ackedVersion"] == s["sentVersion"])
                });
            if all_acked {
                return v;
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("proxies did not all ACK within 10 s: {last:#}");
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> std::io::Result<Resp> {
    send(addr, "GET", path, headers, Bytes::new()).await
}

/// One HTTP/1.1 exchange on a new connection. `target` may be absolute-form
/// (for a proxy) or a path.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> std::io::Result<Resp> {
    let io = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| io(&e))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder().method(method).uri(target);
        let has_host = headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !has_host {
            let host = target
                .strip_prefix("http://")
                .and_then(|t| t.split('/').next())
                .map(str::to_owned)
                .unwrap_or_else(|| addr.to_string());
            req = req.header("host", host);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let rsp = sender
            .send_request(req.body(Full::new(body)).map_err(|e| io(&e))?)
            .await
            .map_err(|e| io(&e))?;
        let status = rsp.status().as_u16();
        let headers = rsp.headers().clone();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| io(&e))?
            .to_bytes();
        Ok(Resp {
            status,
            headers,
            body,
        })
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .map_err(|_| io(&"timed out after 60 s"))?
}
