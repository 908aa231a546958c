//! `kite-proxy`: Kite's sidecar (or, with `--gateway`, ingress gateway) on
//! its own, as `kite up` runs it; `kite proxy` takes the same arguments.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// The same allocator as `kite`'s, for the reasons given there.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns memory freed after a burst while the sidecar is idle; see
/// `kite`'s `main.rs`.
#[cfg(feature = "mimalloc")]
#[path = "../purge.rs"]
#[allow(dead_code)] // the purge delay is the control plane's to set
mod purge;

#[derive(Parser)]
#[command(
    name = "kite-proxy",
    version,
    about = "Kite's proxy, as a sidecar or, with --gateway, an ingress gateway"
)]
struct Cli {
    #[command(flatten)]
    args: kite::proxy::Args,
}

fn main() -> anyhow::Result<ExitCode> {
    let Cli { args } = Cli::parse();
    kite::init_tracing();
    #[cfg(feature = "mimalloc")]
    purge::purge_every_second();
    kite::proxy::runtime(args.concurrency)?.block_on(kite::proxy::run(args))
}
