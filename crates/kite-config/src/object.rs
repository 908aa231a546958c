//! A loaded configuration object: its kind, metadata and typed spec.

use serde::{Deserialize, Serialize};

use crate::{
    common::{Ctx, Labels, Validate},
    diag::{ObjectRef, Source},
    k8s, networking, security, telemetry,
};

/// The kinds Kite understands. Everything else loads as [`Spec::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    ServiceEntry,
    Sidecar,
    WorkloadEntry,
    WorkloadGroup,
    PeerAuthentication,
    RequestAuthentication,
    AuthorizationPolicy,
    Telemetry,
    Namespace,
    Service,
    ServiceAccount,
    Deployment,
    Pod,
    Secret,
}

/// What an `apiVersion` + `kind` pair names.
#[derive(Debug, PartialEq)]
pub enum KindLookup {
    Known(Kind),
    /// A kind Kite knows, under a version its API group does not serve.
    UnservedVersion {
        kind: Kind,
        served: &'static [&'static str],
    },
    /// Not a kind Kite uses (CRDs of other projects, Gateway API for now).
    Other,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub annotations: Labels,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
}

// The large, rare specs are boxed: at scale the store holds tens of
// thousands of objects (nearly all Services and WorkloadEntries), and an
// inline DestinationRule made every one of them 1.2 KB.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    VirtualService(networking::VirtualService),
    DestinationRule(Box<networking::DestinationRule>),
    Gateway(networking::Gateway),
    ServiceEntry(networking::ServiceEntry),
    Sidecar(Box<networking::Sidecar>),
    WorkloadEntry(networking::WorkloadEntry),
    WorkloadGroup(Box<networking::WorkloadGroup>),
    PeerAuthentication(security::PeerAuthentication),
    RequestAuthentication(security::RequestAuthentication),
    AuthorizationPolicy(Box<security::AuthorizationPolicy>),
    Telemetry(Box<telemetry::Telemetry>),
    Namespace,
    Service(k8s::ServiceSpec),
    ServiceAccount,
    Deployment(Box<k8s::DeploymentSpec>),
    Pod(k8s::PodSpec),
    Secret(k8s::Secret),
    /// A kind Kite does not use, kept as it was written.
    Other(serde_json::Value),
}

/// One object from a file or the API.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub api_version: String,
    /// As written (`VirtualService`), also for kinds Kite does not use.
    pub kind_name: String,
    pub kind: Option<Kind>,
    pub meta: ObjectMeta,
    pub spec: Spec,
    pub source: Source,
}

// === impl Kind ===

const NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const SECURITY: &[&str] = &["v1", "v1beta1"];
const TELEMETRY: &[&str] = &["v1", "v1alpha1"];
const CORE: &[&str] = &["v1"];
const APPS: &[&str] = &["v1"];

impl Kind {
    pub const ALL: [Kind; 17] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Telemetry,
        Kind::Namespace,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::Deployment,
        Kind::Pod,
        Kind::Secret,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Deployment => "Deployment",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
        }
    }

    /// The API group (empty for core) and the versions it serves.
    pub fn group(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Kind::VirtualService
            | Kind::DestinationRule
            | Kind::Gateway
            | Kind::ServiceEntry
            | Kind::Sidecar
            | Kind::WorkloadEntry
            | Kind::WorkloadGroup => ("networking.istio.io", NETWORKING),
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                ("security.istio.io", SECURITY)
            }
            Kind::Telemetry => ("telemetry.istio.io", TELEMETRY),
            Kind::Deployment => ("apps", APPS),
            Kind::Namespace | Kind::Service | Kind::ServiceAccount | Kind::Pod | Kind::Secret => {
                ("", CORE)
            }
        }
    }

    /// Short names and plurals accepted on the command line (`kite get vs`).
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Kind::VirtualService => &["vs", "virtualservices"],
            Kind::DestinationRule => &["dr", "destinationrules"],
            Kind::Gateway => &["gw", "gateways"],
            Kind::ServiceEntry => &["se", "serviceentries"],
            Kind::Sidecar => &["sidecars"],
            Kind::WorkloadEntry => &["we", "workloadentries"],
            Kind::WorkloadGroup => &["wg", "workloadgroups"],
            Kind::PeerAuthentication => &["pa", "peerauthentications"],
            Kind::RequestAuthentication => &["ra", "requestauthentications"],
            Kind::AuthorizationPolicy => &["ap", "authorizationpolicies"],
            Kind::Telemetry => &["telemetries"],
            Kind::Namespace => &["ns", "namespaces"],
            Kind::Service => &["svc", "services"],
            Kind::ServiceAccount => &["sa", "serviceaccounts"],
            Kind::Deployment => &["deploy", "deployments"],
            Kind::Pod => &["po", "pods"],
            Kind::Secret => &["secrets"],
        }
    }

    pub fn from_cli(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            k.name().eq_ignore_ascii_case(&lower) || k.aliases().contains(&lower.as_str())
        })
    }

    pub fn lookup(api_version: &str, kind: &str) -> KindLookup {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let Some(known) = Kind::ALL
            .into_iter()
            .find(|k| k.name() == kind && k.group().0 == group)
        else {
            return KindLookup::Other;
        };
        let served = known.group().1;
        if served.contains(&version) {
            KindLookup::Known(known)
        } else {
            KindLookup::UnservedVersion {
                kind: known,
                served,
            }
        }
    }

    pub fn namespaced(self) -> bool {
        self != Kind::Namespace
    }

    /// Whether the object's body is `spec:` (most kinds) or sits at the top
    /// level (`Secret`'s `data`), or is absent.
    pub(crate) fn body(self) -> Body {
        match self {
            Kind::Namespace | Kind::ServiceAccount => Body::None,
            Kind::Secret => Body::TopLevel,
            _ => Body::Spec,
        }
    }
}

pub(crate) enum Body {
    Spec,
    TopLevel,
    None,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

// === impl Object ===

impl Object {
    pub fn object_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: self.kind_name.clone(),
            namespace: self.meta.namespace.clone(),
            name: self.meta.name.clone(),
        }
    }

    /// Identity within the store: kind, namespace, name.
    pub fn key(&self) -> (String, String, String) {
        (
            self.kind_name.clone(),
            self.meta.namespace.clone(),
            self.meta.name.clone(),
        )
    }

    /// Runs the kind's own validation.
    pub fn validate(&self, cx: &mut Ctx<'_>) {
        match &self.spec {
            Spec::VirtualService(s) => s.validate(cx),
            Spec::DestinationRule(s) => s.validate(cx),
            Spec::Gateway(s) => s.validate(cx),
            Spec::ServiceEntry(s) => s.validate(cx),
            Spec::Sidecar(s) => s.validate(cx),
            Spec::WorkloadEntry(s) => s.validate(cx),
            Spec::WorkloadGroup(s) => s.validate(cx),
            Spec::PeerAuthentication(s) => s.validate(cx),
            Spec::RequestAuthentication(s) => s.validate(cx),
            Spec::AuthorizationPolicy(s) => s.validate(cx),
            Spec::Telemetry(s) => s.validate(cx),
            Spec::Service(s) => s.validate(cx),
            Spec::Deployment(s) => s.validate(cx),
            Spec::Pod(s) => s.validate(cx),
            Spec::Secret(s) => s.validate(cx),
            Spec::Namespace | Spec::ServiceAccount | Spec::Other(_) => {}
        }
    }

    /// The object as a Kubernetes-style JSON document.
    pub fn to_json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "apiVersion": self.api_version,
            "kind": self.kind_name,
            "metadata": self.meta,
        });
        let body = serde_json::to_value(&self.spec).unwrap_or(serde_json::Value::Null);
        match (self.kind.map(Kind::body), body) {
            (Some(Body::None), _) | (_, serde_json::Value::Null) => {}
            (Some(Body::TopLevel), serde_json::Value::Object(fields))
            | (None, serde_json::Value::Object(fields)) => {
                if let serde_json::Value::Object(doc) = &mut doc {
                    doc.extend(fields);
                }
            }
            (_, body) => doc["spec"] = body,
        }
        doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At scale the store holds tens of thousands of objects, nearly all
    /// Services and WorkloadEntries: a large spec inline (a
    /// DestinationRule's is about 1 KB) would be paid by every one.
    #[test]
    fn an_object_is_as_small_as_its_common_kinds_allow() {
        let common = [
            size_of::<k8s::ServiceSpec>(),
            size_of::<networking::WorkloadEntry>(),
            size_of::<networking::ServiceEntry>(),
        ];
        let largest_common = common.into_iter().max().unwrap_or_default();
        assert!(
            size_of::<Spec>() <= largest_common + 16,
            "Spec is {} bytes; its common kinds need {largest_common}",
            size_of::<Spec>()
        );
    }
}
