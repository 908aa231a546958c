//! Istio's BookInfo sample services, rebuilt to behave on the wire exactly as
//! the upstream images do: same routes, JSON bodies, status codes, HTML
//! markers, timeouts, retries and header propagation. The mesh's demo and its
//! conformance tests run on them.
#![forbid(unsafe_code)]

mod client;
pub mod details;
mod env;
pub mod fortio;
pub mod helloworld;
pub mod httpbin;
pub mod productpage;
mod propagate;
pub mod ratings;
pub mod reviews;
mod server;
mod session;
pub mod tcp_echo;

use std::{net::SocketAddr, sync::Arc};

pub use crate::{
    client::{Client, ClientError},
    env::Env,
    server::ServeError,
};

/// One of the four BookInfo services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
    /// Istio's httpbin sample (go-httpbin), for the security and
    /// resilience tasks.
    Httpbin,
    /// Istio's helloworld sample, for locality load balancing.
    Helloworld,
    /// Istio's tcp-echo sample, for TCP traffic shifting.
    TcpEcho,
    /// The fortio client pod's echo server (`fortio load` is [`fortio::load`]).
    Fortio,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{service} has no version {version:?} (known: {known})")]
    UnknownVersion {
        service: &'static str,
        version: String,
        known: &'static str,
    },
    #[error("{service} {version} is not supported: {reason}")]
    Unsupported {
        service: &'static str,
        version: String,
        reason: &'static str,
    },
    #[error("environment variable {name}={value:?}: {reason}")]
    BadEnv {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("{service}: {reason}")]
    BadArgs {
        service: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Serve(#[from] ServeError),
}

// === impl Service ===

impl Service {
    pub const ALL: [Service; 8] = [
        Service::Productpage,
        Service::Details,
        Service::Reviews,
        Service::Ratings,
        Service::Httpbin,
        Service::Helloworld,
        Service::TcpEcho,
        Service::Fortio,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Productpage => "productpage",
            Service::Details => "details",
            Service::Reviews => "reviews",
            Service::Ratings => "ratings",
            Service::Httpbin => "httpbin",
            Service::Helloworld => "helloworld",
            Service::TcpEcho => "tcp-echo",
            Service::Fortio => "fortio",
        }
    }

    /// Binds `listen` and serves until `shutdown` resolves. `version` is the
    /// image version (`v1`, `v2`, …); its build-time defaults apply unless the
    /// environment overrides them, as with the upstream images. `args` are
    /// the container's arguments, for the images that take them (tcp-echo:
    /// its ports and prefix, served on `listen`'s address).
    pub async fn run(
        self,
        version: &str,
        listen: SocketAddr,
        args: &[String],
        env: &Env,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        match self {
            Service::Productpage => {
                serve(
                    listen,
                    productpage::Productpage::from_env(version, env)?,
                    shutdown,
                )
                .await
            }
            Service::Details => {
                serve(listen, details::Details::from_env(version, env)?, shutdown).await
            }
            Service::Reviews => {
                serve(listen, reviews::Reviews::from_env(version, env)?, shutdown).await
            }
            Service::Ratings => {
                serve(listen, ratings::Ratings::from_env(version, env)?, shutdown).await
            }
            Service::Httpbin => {
                serve(listen, httpbin::Httpbin::from_env(version, env)?, shutdown).await
            }
            Service::Helloworld => {
                serve(
                    listen,
                    helloworld::Helloworld::from_env(version, env)?,
                    shutdown,
                )
                .await
            }
            Service::Fortio => {
                let listener = server::bind(listen).await?;
                server::serve_with(
                    listener,
                    Arc::new(fortio::Echo),
                    server::Protocols::Http1AndH2c,
                    shutdown,
                )
                .await?;
                Ok(())
            }
            Service::TcpEcho => {
                tcp_echo::TcpEcho::from_args(args)?
                    .run(listen.ip(), shutdown)
                    .await
            }
        }
    }
}

async fn serve<A: server::App>(
    listen: SocketAddr,
    app: A,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), Error> {
    let listener = server::bind(listen).await?;
    server::serve(listener, Arc::new(app), shutdown).await?;
    Ok(())
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Service {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.name() == s)
            .ok_or_else(|| format!("unknown BookInfo service {s:?}"))
    }
}
