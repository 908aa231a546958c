//! PeerAuthentication: which mTLS a workload's inbound side accepts.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, de};

use super::validate_targeting;
use crate::common::{Ctx, Validate, WorkloadSelector};

/// Which mTLS a workload's inbound side accepts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Mtls>,
    /// Keyed by container (not Service) port. Keys may be written as numbers
    /// or, as JSON forces, as strings.
    #[serde(
        default,
        deserialize_with = "port_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub port_level_mtls: BTreeMap<u32, Mtls>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mtls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the enclosing scope; at the top it behaves as PERMISSIVE.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

// === impl PeerAuthentication ===

impl PeerAuthentication {
    /// The top-level mode; an absent `mtls` means UNSET.
    pub fn mode(&self) -> MtlsMode {
        self.mtls.map_or(MtlsMode::Unset, |m| m.mode)
    }
}

impl Validate for PeerAuthentication {
    fn validate(&self, cx: &mut Ctx<'_>) {
        validate_targeting(cx, self.selector.as_ref(), None, &[]);
        let has_labels = self
            .selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if !self.port_level_mtls.is_empty() && !has_labels {
            cx.error(
                "spec.portLevelMtls",
                "mesh- and namespace-wide PeerAuthentication cannot have port-level mTLS: \
                 portLevelMtls needs a selector with matchLabels",
            );
        }
        for &port in self.port_level_mtls.keys() {
            cx.port(format!("spec.portLevelMtls.{port}"), port);
        }
    }
}

/// `portLevelMtls` keys: YAML writes them as numbers, JSON as strings.
fn port_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u32, Mtls>, D::Error> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct PortKey(u32);

    impl<'de> Deserialize<'de> for PortKey {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl de::Visitor<'_> for Visitor {
                type Value = PortKey;

                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a port number")
                }

                fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortKey, E> {
                    u32::try_from(v)
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("port {v} is outside 1–65535")))
                }

                fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortKey, E> {
                    u32::try_from(v)
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("port {v} is outside 1–65535")))
                }

                fn visit_str<E: de::Error>(self, v: &str) -> Result<PortKey, E> {
                    v.parse()
                        .map(PortKey)
                        .map_err(|_| E::custom(format!("port {v:?} is not a number")))
                }
            }
            d.deserialize_any(Visitor)
        }
    }

    let map = Option::<BTreeMap<PortKey, Mtls>>::deserialize(d)?.unwrap_or_default();
    Ok(map.into_iter().map(|(k, v)| (k.0, v)).collect())
}
