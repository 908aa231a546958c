//! Findings about configuration, located as precisely as the input allows.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// Where an object came from: the file (or `-` for standard input, or an
/// API request), the 0-based index of the YAML document in it, and the line
/// the document starts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Source {
    pub file: String,
    pub document: usize,
    pub line: usize,
}

/// `Kind namespace/name`, as istioctl prints it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// istioctl's analyzer code where one fits (`IST0101`), else `KITE…`.
    pub code: &'static str,
    pub source: Source,
    pub object: Option<ObjectRef>,
    /// Path into the object, e.g. `spec.http[0].route[1].destination.subset`.
    pub field: String,
    pub message: String,
}

pub mod codes {
    pub const REFERENCED_RESOURCE_NOT_FOUND: &str = "IST0101";
    pub const SCHEMA_VALIDATION_ERROR: &str = "IST0106";
    pub const CONFLICTING_MESH_GATEWAY_VS_HOSTS: &str = "IST0109";
    pub const CONFLICTING_SIDECAR_WORKLOAD_SELECTORS: &str = "IST0110";
    pub const MULTIPLE_SIDECARS_WITHOUT_SELECTOR: &str = "IST0111";
    pub const VS_DESTINATION_PORT_SELECTOR_REQUIRED: &str = "IST0112";
    pub const PORT_NAME_NOT_UNDER_NAMING_CONVENTION: &str = "IST0118";
    pub const VS_INEFFECTIVE_MATCH: &str = "IST0131";
    pub const VS_HOST_NOT_FOUND_IN_GATEWAY: &str = "IST0132";
    pub const DR_SUBSET_NOT_SELECT_PODS: &str = "IST0173";
    /// The input is not YAML/JSON or not a Kubernetes-style object.
    pub const PARSE_ERROR: &str = "KITE0001";
    /// A field Kite reads but does not act on yet.
    pub const NOT_HONOURED: &str = "KITE0002";
    /// A kind Kite does not use.
    pub const UNUSED_KIND: &str = "KITE0003";
    /// Two policies that cannot both apply.
    pub const CONFLICTING_POLICIES: &str = "KITE0004";
    /// Two objects of the same kind, namespace and name.
    pub const DUPLICATE_OBJECT: &str = "KITE0005";
}

// === impl Diagnostic ===

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The finding as `kite analyze -o json` and the control plane's API
    /// report it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "level": format!("{:?}", self.severity),
            "code": self.code,
            "file": self.source.file,
            "line": self.source.line,
            "document": self.source.document,
            "object": self.object.as_ref().map(ToString::to_string),
            "field": self.field,
            "message": self.message,
            "text": self.to_string(),
        })
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "Error",
            Severity::Warning => "Warning",
            Severity::Info => "Info",
        };
        write!(f, "{severity} [{}] (", self.code)?;
        if let Some(object) = &self.object {
            write!(f, "{object} ")?;
        }
        write!(f, "{})", self.source)?;
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} document {}", self.file, self.line, self.document)
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}
