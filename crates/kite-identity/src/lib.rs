//! Workload identity for the mesh: SPIFFE ids, the certificate authority
//! that signs them (Istio's Citadel), the CSR protocol between proxies and
//! the CA (Istio's `IstioCertificateService`), and the rustls configuration
//! for mutual TLS between sidecars.
#![forbid(unsafe_code)]

pub mod ca;
pub mod proto;
pub mod spiffe;
pub mod tls;

pub use crate::{ca::Ca, spiffe::SpiffeId};
