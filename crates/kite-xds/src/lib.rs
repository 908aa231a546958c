//! xDS plumbing shared by Kite's control plane and proxy: resource type
//! URLs, versioned per-proxy snapshots, and the state-of-the-world ADS
//! server with per-stream ACK/NACK tracking, and VHDS over delta xDS.
#![forbid(unsafe_code)]

pub mod ads;
pub mod client;
mod request;
mod snapshot;
pub mod vhds;

pub use envoy_types::pb;

pub use crate::request::{Request, RequestError};
pub use crate::snapshot::{Held, Names, Selection, Snapshot, TypeResources};
pub use crate::vhds::{VirtualHosts, VirtualHostsBuilder};

/// The resource types Kite serves, in the order a push sends them: clusters
/// before their endpoints, listeners before their routes, as Envoy warms.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
    /// Served over delta xDS only ([`crate::vhds`]), never in a push.
    pub const VIRTUAL_HOST: &str = "type.googleapis.com/envoy.config.route.v3.VirtualHost";

    pub const PUSH_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

    /// Listeners and clusters are always requested whole; routes, endpoints
    /// and secrets by name.
    pub fn is_wildcard(type_url: &str) -> bool {
        type_url == CLUSTER || type_url == LISTENER
    }

    /// `CDS`, `EDS`, … for logs and tables.
    pub fn short(type_url: &str) -> &'static str {
        match type_url {
            CLUSTER => "CDS",
            ENDPOINT => "EDS",
            LISTENER => "LDS",
            ROUTE => "RDS",
            SECRET => "SDS",
            VIRTUAL_HOST => "VHDS",
            _ => "unknown",
        }
    }
}
