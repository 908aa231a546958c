//! Telemetry: access logging as Istio's `envoy` provider does it (a line
//! per request on the proxy's stdout), switched on and off by Telemetry
//! objects: a workload's own (selector) first, then its namespace's, then
//! the root namespace's; the narrowest that says anything decides.

use envoy_types::pb::envoy::{
    config::{
        accesslog::v3::{AccessLog, access_log},
        listener::v3::{Listener, filter::ConfigType},
    },
    extensions::{
        access_loggers::file::v3::FileAccessLog,
        filters::network::http_connection_manager::v3::HttpConnectionManager,
    },
};
use kite_config::{Object, Spec, analyze::ROOT_NAMESPACE, telemetry::Telemetry};

use super::{Ctx, any};

pub(super) fn access_log(cx: &Ctx<'_>) -> bool {
    let scopes: Vec<(&Object, &Telemetry)> = cx
        .objects(|s| match s {
            Spec::Telemetry(t) => Some(&**t),
            _ => None,
        })
        .filter(|(_, t)| !t.access_logging.is_empty())
        .collect();
    let ns = cx.proxy.namespace.as_str();
    let selected = |t: &Telemetry| {
        t.selector.as_ref().is_some_and(|s| {
            !s.match_labels.is_empty() && crate::registry::contains(&cx.labels, &s.match_labels)
        })
    };
    let pick = scopes
        .iter()
        .find(|(o, t)| o.meta.namespace == ns && selected(t))
        .or_else(|| {
            scopes
                .iter()
                .find(|(o, t)| o.meta.namespace == ns && t.selector.is_none())
        })
        .or_else(|| {
            scopes
                .iter()
                .find(|(o, t)| o.meta.namespace == ROOT_NAMESPACE && t.selector.is_none())
        });
    pick.is_some_and(|(_, t)| {
        t.access_logging.iter().any(|a| {
            a.disabled != Some(true)
                && (a.providers.is_empty() || a.providers.iter().any(|p| p.name == "envoy"))
        })
    })
}

/// Adds the `envoy` provider's file access log to every HTTP connection
/// manager of the listener.
pub(super) fn log_access(l: &mut Listener) {
    for chain in &mut l.filter_chains {
        for filter in &mut chain.filters {
            let Some(ConfigType::TypedConfig(cfg)) = &filter.config_type else {
                continue;
            };
            if !cfg.type_url.ends_with("HttpConnectionManager") {
                continue;
            }
            let Ok(mut hcm) =
                <HttpConnectionManager as prost::Message>::decode(cfg.value.as_slice())
            else {
                continue;
            };
            hcm.access_log.push(AccessLog {
                name: "envoy.access_loggers.file".to_owned(),
                config_type: Some(access_log::ConfigType::TypedConfig(any(&FileAccessLog {
                    path: "/dev/stdout".to_owned(),
                    ..Default::default()
                }))),
                ..Default::default()
            });
            filter.config_type = Some(ConfigType::TypedConfig(any(&hcm)));
        }
    }
}
