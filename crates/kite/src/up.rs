//! `kite up`: BookInfo on this machine. Each workload runs as a process on a
//! loopback address of its own, like a pod IP, so all of them use port 9080.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use kite_bookinfo::Client;
use tokio::process::{Child, Command};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Directory for logs and state
    #[arg(long, default_value_os_t = crate::default_state_dir())]
    state_dir: PathBuf,
    /// The reviews version productpage talks to (v1: no stars, v2: black, v3: red)
    #[arg(long, default_value = "v2", value_parser = ["v1", "v2", "v3"])]
    reviews_version: String,
}

struct Workload {
    name: String,
    service: &'static str,
    version: String,
    ip: Ipv4Addr,
    env: Vec<(&'static str, String)>,
}

struct Running {
    workload: Workload,
    child: Child,
    log: PathBuf,
}

const PORT: u16 = 9080;

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    let logs = args.state_dir.join("logs");
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("creating the log directory {}", logs.display()))?;
    let exe = std::env::current_exe().context("locating the kite binary")?;
    let mut running = Vec::new();
    let result = async {
        for workload in workloads(&args.reviews_version) {
            let started = start(&exe, &logs, workload)?;
            let addr = SocketAddr::new(IpAddr::V4(started.workload.ip), PORT);
            running.push(started);
            let Some(last) = running.last_mut() else {
                unreachable!()
            };
            wait_ready(last, addr).await?;
        }
        print_table(&running);
        wait_for_stop(&mut running).await
    }
    .await;
    for r in &mut running {
        let _ = r.child.start_kill();
    }
    for r in &mut running {
        let _ = r.child.wait().await;
    }
    eprintln!("stopped {} workloads", running.len());
    result
}

fn workloads(reviews_version: &str) -> Vec<Workload> {
    let ip = |last| Ipv4Addr::new(127, 10, 0, last);
    let (productpage, details, ratings, reviews) = (ip(1), ip(2), ip(3), ip(4));
    let pod = |deployment: &str| format!("{deployment}-{}", pod_suffix());
    let reviews_name = format!("reviews-{reviews_version}");
    vec![
        Workload {
            name: "details-v1".into(),
            service: "details",
            version: "v1".into(),
            ip: details,
            env: vec![("HOSTNAME", pod("details-v1"))],
        },
        Workload {
            name: "ratings-v1".into(),
            service: "ratings",
            version: "v1".into(),
            ip: ratings,
            env: vec![("HOSTNAME", pod("ratings-v1"))],
        },
        Workload {
            name: reviews_name.clone(),
            service: "reviews",
            version: reviews_version.into(),
            ip: reviews,
            env: vec![
                ("HOSTNAME", pod(&reviews_name)),
                ("RATINGS_HOSTNAME", ratings.to_string()),
            ],
        },
        Workload {
            name: "productpage-v1".into(),
            service: "productpage",
            version: "v1".into(),
            ip: productpage,
            env: vec![
                ("HOSTNAME", pod("productpage-v1")),
                ("DETAILS_HOSTNAME", details.to_string()),
                ("REVIEWS_HOSTNAME", reviews.to_string()),
                ("RATINGS_HOSTNAME", ratings.to_string()),
            ],
        },
    ]
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

fn start(exe: &PathBuf, logs: &std::path::Path, workload: Workload) -> anyhow::Result<Running> {
    let log = logs.join(format!("{}.log", workload.name));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("bookinfo")
        .arg(workload.service)
        .arg("--version")
        .arg(&workload.version)
        .arg("--listen")
        .arg(SocketAddr::new(IpAddr::V4(workload.ip), PORT).to_string())
        .stdin(Stdio::null())
        .stdout(
            file.try_clone()
                .context("duplicating the log file handle")?,
        )
        .stderr(file)
        .kill_on_drop(true);
    // The demo's apps reach each other directly; a proxy from the user's
    // shell must not capture them.
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "NO_PROXY",
        "no_proxy",
        "SERVICE_VERSION",
        "BOOKINFO_LISTEN",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(workload.env.iter().map(|(k, v)| (k, v)));
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", workload.name))?;
    Ok(Running {
        workload,
        child,
        log,
    })
}

async fn wait_ready(r: &mut Running, addr: SocketAddr) -> anyhow::Result<()> {
    let client = Client::default();
    let url = format!("http://{addr}/health");
    for _ in 0..200 {
        if let Some(status) = r.child.try_wait()? {
            bail!(
                "{} exited with {status} before it was ready; its log {} says:\n{}",
                r.workload.name,
                r.log.display(),
                std::fs::read_to_string(&r.log).unwrap_or_default()
            );
        }
        if let Ok(reply) = client
            .get(&url, Default::default(), Duration::from_secs(1))
            .await
            && reply.status.is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} did not become ready on {addr} within 10 s; see {}",
        r.workload.name,
        r.log.display()
    )
}

fn print_table(running: &[Running]) {
    println!(
        "{:<34} {:<12} {:<8} {:<18} LOG",
        "WORKLOAD", "SERVICE", "VERSION", "ADDRESS"
    );
    for r in running {
        let w = &r.workload;
        let host = w
            .env
            .iter()
            .find(|(k, _)| *k == "HOSTNAME")
            .map_or(w.name.as_str(), |(_, v)| v.as_str());
        println!(
            "{:<34} {:<12} {:<8} {:<18} {}",
            host,
            w.service,
            w.version,
            format!("{}:{PORT}", w.ip),
            r.log.display()
        );
    }
    println!();
    println!("BookInfo is up: http://127.10.0.1:{PORT}/productpage");
    println!("Press Ctrl-C to stop.");
}

/// Returns when the user stops the demo, or with an error when a workload
/// dies on its own.
async fn wait_for_stop(running: &mut [Running]) -> anyhow::Result<()> {
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = check.tick() => {
                for r in running.iter_mut() {
                    if let Some(status) = r.child.try_wait()? {
                        bail!("{} exited with {status}; see {}", r.workload.name, r.log.display());
                    }
                }
            }
        }
    }
}
