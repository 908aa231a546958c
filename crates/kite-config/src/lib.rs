//! Kite's view of configuration: Istio's and Kubernetes' resource types,
//! loading them from YAML or JSON, validation with exact error locations, and
//! cross-object analysis (what `kite analyze` prints). No I/O beyond reading
//! the files it is given.
#![forbid(unsafe_code)]

pub mod analyze;
pub mod common;
pub mod diag;
pub mod k8s;
pub mod load;
pub mod networking;
pub mod object;
pub mod security;
pub mod support;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod test_util;

pub use crate::{
    common::{Ctx, Duration, Labels, Percent, StringMatch, Validate},
    diag::{Diagnostic, ObjectRef, Severity, Source},
    load::{Loaded, load_paths, load_paths_in, load_str},
    object::{Kind, Object, ObjectMeta, Spec},
};
