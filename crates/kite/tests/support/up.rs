//! `kite up` as a user runs it, for the tests of Istio's tasks: the mesh
//! with the manifests given (BookInfo when none), Kite or Envoy sidecars,
//! on a pod network of the test's own; stopped with Ctrl-C when dropped.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use serde_json::Value;

use super::{Proc, Sidecar, envoy_bin, get, kite, spawn};

pub struct Up {
    pub proc: Proc,
    pub dir: PathBuf,
    pub sidecar: Sidecar,
    pub gateway_ip: IpAddr,
    pub api: SocketAddr,
}

impl Up {
    /// Starts `kite up --sidecar <sidecar> <manifests>` with pods in
    /// 127.<net>.0.0/16 (apps in the next /16) and waits until it is up.
    pub async fn start(test: &str, sidecar: Sidecar, net: u8, manifests: &[&str]) -> Up {
        let name = format!("{test}-{sidecar:?}").to_lowercase();
        let dir = std::env::temp_dir().join(format!("kite-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let gateway_ip = Ipv4Addr::new(127, net, 255, 1);
        let control_ip = Ipv4Addr::new(127, net, 255, 2);
        let mut cmd = kite();
        cmd.args(["up", "--sidecar", &format!("{sidecar:?}").to_lowercase()])
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--gateway-ip", &gateway_ip.to_string()])
            .args(["--control-ip", &control_ip.to_string()])
            .args(["--pod-net", &net.to_string()])
            .args(manifests)
            .env("ENVOY", envoy_bin());
        let mut proc = spawn("kite-up", &dir, &mut cmd);
        let mut out = String::new();
        for _ in 0..900 {
            out = std::fs::read_to_string(&proc.log).unwrap_or_default();
            if out.contains("Press Ctrl-C to stop.") {
                break;
            }
            assert!(proc.running(), "kite up exited early:\n{out}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            out.contains("Press Ctrl-C to stop."),
            "kite up did not come up in 90 s:\n{out}"
        );
        Up {
            proc,
            dir,
            sidecar,
            gateway_ip: IpAddr::V4(gateway_ip),
            api: SocketAddr::new(IpAddr::V4(control_ip), 15014),
        }
    }

    /// `kite <args>` against this mesh's control plane.
    pub fn command(&self) -> Command {
        let mut cmd = kite();
        cmd.env("KITE_CONTROL_PLANE", format!("http://{}", self.api));
        cmd
    }

    /// Runs `kite <args>`; panics unless it succeeds.
    pub fn kite(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "kite {args:?} failed:\n{text}");
        text
    }

    /// `kite apply -f` each path, then waits until every proxy ACKed.
    pub async fn apply(&self, paths: &[&str]) {
        let mut args = vec!["apply"];
        for p in paths {
            args.extend(["-f", p]);
        }
        self.kite(&args);
        self.synced().await;
    }

    /// `kite delete -f` each path, then waits until every proxy ACKed.
    pub async fn delete(&self, paths: &[&str]) {
        let mut args = vec!["delete"];
        for p in paths {
            args.extend(["-f", p]);
        }
        self.kite(&args);
        self.synced().await;
    }

    /// Writes `yaml` to `<dir>/<name>.yaml` and returns the path.
    pub fn file(&self, name: &str, yaml: &str) -> String {
        let path = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Waits until every connected proxy ACKed the latest version of every
    /// type; panics on a NACK.
    pub async fn synced(&self) {
        let mut last = Value::Null;
        for _ in 0..150 {
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
            let done = v["revision"] == v["translatedRevision"]
                && list.iter().all(|p| {
                    p["generation"] == p["publishedGeneration"]
                        && p["types"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .all(|(_, s)| s["ackedVersion"] == s["sentVersion"])
                });
            if done {
                return;
            }
            last = v;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("proxies did not all ACK within 15 s: {last:#}");
    }

    /// The (name, IP) of every running pod of `app` in `namespace`, waiting
    /// for at least `count` and for every proxy to have their endpoints.
    pub async fn pods(&self, namespace: &str, app: &str, count: usize) -> Vec<(String, IpAddr)> {
        let mut found = Vec::new();
        for _ in 0..300 {
            let out = self.kite(&["get", "workloadentries", "-n", namespace, "-o", "json"]);
            let items: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            let started = std::fs::read_to_string(&self.proc.log).unwrap_or_default();
            found = items
                .as_array()
                .into_iter()
                .flatten()
                .filter(|item| item["spec"]["labels"]["app"] == app)
                .filter_map(|item| {
                    let name = item["metadata"]["name"].as_str()?;
                    started
                        .contains(&format!("started pod {namespace}/{name} "))
                        .then(|| {
                            let ip = item["spec"]["address"].as_str()?.parse().ok()?;
                            Some((name.to_owned(), ip))
                        })
                        .flatten()
                })
                .collect();
            if found.len() >= count {
                found.sort();
                // Running, and every proxy knows the endpoints.
                self.synced().await;
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{count} running pods of {app} in {namespace} expected, found {found:?}");
    }

    /// The IP of the first running pod of `app` in `default`.
    pub async fn pod(&self, app: &str) -> IpAddr {
        self.pods("default", app, 1).await[0].1
    }

    /// A sidecar's `/stats` counter (Envoy's name), 0 when absent.
    pub async fn stat(&self, pod_ip: IpAddr, name: &str) -> u64 {
        let r = get(SocketAddr::new(pod_ip, 15000), "/stats", &[])
            .await
            .unwrap();
        r.text()
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(": ")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    }

    /// The log of a pod's app (`<pod>.app.log` under the state directory).
    pub fn app_log(&self, pod: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("state/logs/{pod}.app.log")))
            .unwrap_or_default()
    }
}

impl Up {
    /// `kite load` (fortio load) run in the fortio pod: through its sidecar.
    pub fn fortio_load(&self, fortio: IpAddr, args: &[&str]) -> String {
        let out = self
            .command()
            .arg("load")
            .args(args)
            .env("HTTP_PROXY", format!("http://{fortio}:15001"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kite load {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Requests a pod's app logged for `path`.
    pub fn logged(&self, pod: &str, path: &str) -> usize {
        self.app_log(pod)
            .lines()
            .filter(|l| l.contains(&format!("path=\"{path}\"")))
            .count()
    }
}

/// The count of `Code <code> : <n>` in fortio's report.
pub fn code_count(report: &str, code: u16) -> usize {
    report
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("Code {code} : "))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// A pod's app address: the same host in the next /16 (`kite up`'s layout).
pub fn app_ip_of(pod: IpAddr) -> IpAddr {
    let IpAddr::V4(v4) = pod else {
        panic!("IPv4 pods only")
    };
    let [a, b, c, d] = v4.octets();
    IpAddr::from([a, b + 1, c, d])
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tails(&self.dir.join("state/logs"), ".log", 12);
        }
        let _ = self.proc.interrupt(Duration::from_secs(30));
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The last `lines` lines of each log in `dir` whose name ends with
/// `suffix`, for a failing test's output.
pub fn print_log_tails(dir: &std::path::Path, suffix: &str, lines: usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    for f in files {
        let log = std::fs::read_to_string(&f).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(lines).collect();
        eprintln!("----- {} -----", f.display());
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}
