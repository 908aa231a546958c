//! The processes `kite up` runs: started with their output in a log file,
//! restarted after a crash with the kubelet's back-off, stopped with
//! SIGTERM and then SIGKILL.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, bail};
use kite_bookinfo::Client;
use tokio::process::{Child, Command};

pub(super) struct Proc {
    pub(super) name: String,
    /// Also its process group's id.
    pub(super) pid: u32,
    pub(super) child: Child,
    pub(super) log: PathBuf,
    /// How it was started, to start it again after it exits.
    pub(super) spec: Launch,
    /// Restarts so far, and when the next one is due once it has exited.
    pub(super) restarts: u32,
    pub(super) restart_at: Option<tokio::time::Instant>,
}

/// A command as it was spawned: program, arguments and environment changes.
#[derive(Clone)]
pub(super) struct Launch {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
}

impl Launch {
    pub(super) fn of(cmd: &Command) -> Self {
        let std = cmd.as_std();
        Self {
            program: std.get_program().to_owned(),
            args: std.get_args().map(ToOwned::to_owned).collect(),
            envs: std
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
        }
    }

    pub(super) fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }
}

/// The kubelet's restart back-off: 10 s, doubling, at most 5 min.
pub(super) fn restart_delay(restarts: u32) -> Duration {
    Duration::from_secs(10u64.saturating_mul(1 << restarts.min(5)).min(300))
}

pub(super) fn start(name: &str, cmd: Command, logs: &Path) -> anyhow::Result<Proc> {
    let log = logs.join(format!("{name}.log"));
    let file =
        std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    spawn(name, &Launch::of(&cmd), cmd, log, file)
}

/// Starts an exited process again, appending to its log.
pub(super) fn restart(p: &mut Proc) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .open(&p.log)
        .with_context(|| format!("opening {}", p.log.display()))?;
    let restarts = p.restarts + 1;
    *p = spawn(&p.name, &p.spec, p.spec.command(), p.log.clone(), file)?;
    p.restarts = restarts;
    Ok(())
}

pub(super) fn spawn(
    name: &str,
    spec: &Launch,
    mut cmd: Command,
    log: PathBuf,
    file: std::fs::File,
) -> anyhow::Result<Proc> {
    cmd.stdin(Stdio::null())
        .stdout(
            file.try_clone()
                .context("duplicating the log file handle")?,
        )
        .stderr(file)
        .kill_on_drop(true)
        // A group of its own: stopping it stops its children too, and a
        // terminal's Ctrl-C reaches kite up alone, which stops it in order.
        .process_group(0);
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Proc {
        name: name.to_owned(),
        pid: child.id().unwrap_or_default(),
        child,
        log,
        spec: spec.clone(),
        restarts: 0,
        restart_at: None,
    })
}

pub(super) async fn wait_http(mut proc: Option<&mut Proc>, url: &str) -> anyhow::Result<()> {
    let client = Client::default();
    for _ in 0..300 {
        exited(proc.as_deref_mut())?;
        if let Ok(reply) = client
            .get(url, Default::default(), Duration::from_secs(1))
            .await
            && reply.status.is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{url} did not become ready within 15 s{}",
        log_hint(proc.as_deref())
    )
}

pub(super) async fn wait_tcp(mut proc: Option<&mut Proc>, addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..300 {
        exited(proc.as_deref_mut())?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "nothing listens on {addr} after 15 s{}",
        log_hint(proc.as_deref())
    )
}

pub(super) fn exited(proc: Option<&mut Proc>) -> anyhow::Result<()> {
    let Some(p) = proc else { return Ok(()) };
    if let Some(status) = p.child.try_wait()? {
        bail!(
            "{} exited with {status} before it was ready; its log {} says:\n{}",
            p.name,
            p.log.display(),
            std::fs::read_to_string(&p.log).unwrap_or_default()
        );
    }
    Ok(())
}

pub(super) fn log_hint(proc: Option<&Proc>) -> String {
    proc.map(|p| format!("; see {}", p.log.display()))
        .unwrap_or_default()
}

/// SIGTERM, a few seconds to finish, then SIGKILL.
pub(super) async fn terminate(p: &mut Proc) {
    // Signalling through kill(1) keeps this crate free of unsafe code; the
    // negative id names the process group, so what an app's shell started
    // stops with it.
    let group = format!("-{}", p.pid);
    let signal = |sig: &str| {
        if p.pid == 0 {
            return;
        }
        let _ = std::process::Command::new("kill")
            .args([sig, "--", &group])
            .stderr(Stdio::null())
            .status();
    };
    if matches!(p.child.try_wait(), Ok(None)) {
        signal("-TERM");
        // A sidecar drains for up to 5 s before it exits.
        if tokio::time::timeout(Duration::from_secs(10), p.child.wait())
            .await
            .is_err()
        {
            let _ = p.child.kill().await;
        }
    }
    signal("-KILL");
}
