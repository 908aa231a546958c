//! What the `kite` command line and the `kite-proxy` sidecar binary share:
//! the sidecar's arguments and entry point, logging, and shutdown signals.
//! The sidecar has a binary of its own so that it maps only the proxy's
//! code: an idle `kite-proxy` holds about 2.5 MiB less than `kite proxy`,
//! whose binary also carries the control plane, the CLI and BookInfo.
#![forbid(unsafe_code)]

pub mod proxy;

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Logs go to stderr; `KITE_LOG` filters them (default `info`) and
/// `KITE_LOG_FORMAT=json` makes them machine-readable.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KITE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal: `kite up` writes each process's log to a
    // file that people grep.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if std::env::var("KITE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
