//! Istio's BookInfo sample services, rebuilt to behave on the wire exactly as
//! the upstream images do: same routes, JSON bodies, status codes, HTML
//! markers, timeouts, retries and header propagation. The mesh's demo and its
//! conformance tests run on them.
#![forbid(unsafe_code)]

mod client;
pub mod details;
mod env;
pub mod httpbin;
pub mod productpage;
mod propagate;
pub mod ratings;
pub mod reviews;
mod server;
mod session;

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
    #[error(transparent)]
    Serve(#[from] ServeError),
}

// === impl Service ===

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Productpage,
        Service::Details,
        Service::Reviews,
        Service::Ratings,
        Service::Httpbin,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Productpage => "productpage",
            Service::Details => "details",
            Service::Reviews => "reviews",
            Service::Ratings => "ratings",
            Service::Httpbin => "httpbin",
        }
    }

    /// Binds `listen` and serves until `shutdown` resolves. `version` is the
    /// image version (`v1`, `v2`, …); its build-time defaults apply unless the
    /// environment overrides them, as with the upstream images.
    pub async fn run(
        self,
        version: &str,
        listen: SocketAddr,
        env: &Env,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let listener = server::bind(listen).await?;
        match self {
            Service::Productpage => {
                let app = productpage::Productpage::from_env(version, env)?;
                server::serve(listener, Arc::new(app), shutdown).await?
            }
            Service::Details => {
                let app = details::Details::from_env(version, env)?;
                server::serve(listener, Arc::new(app), shutdown).await?
            }
            Service::Reviews => {
                let app = reviews::Reviews::from_env(version, env)?;
                server::serve(listener, Arc::new(app), shutdown).await?
            }
            Service::Ratings => {
                let app = ratings::Ratings::from_env(version, env)?;
                server::serve(listener, Arc::new(app), shutdown).await?
            }
            Service::Httpbin => {
                let app = httpbin::Httpbin::from_env(version, env)?;
                server::serve(listener, Arc::new(app), shutdown).await?
            }
        }
        Ok(())
    }
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
