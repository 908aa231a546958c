//! Reading objects from YAML or JSON text: multi-document files, `List`
//! objects, every served API version, with each problem located by file,
//! document, object and field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::{
    common::Ctx,
    diag::{Diagnostic, ObjectRef, Severity, Source, codes},
    object::{Body, Kind, KindLookup, Object, ObjectMeta, Spec},
    support,
};

/// What a load produced: the objects that passed validation, and every
/// finding (errors for the objects left out, warnings for the others).
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Object>,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no .yaml, .yml or .json files found")]
    Empty { path: String },
}

// === impl Loaded ===

impl Loaded {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    pub fn extend(&mut self, other: Loaded) {
        self.objects.extend(other.objects);
        self.diagnostics.extend(other.diagnostics);
    }
}

/// Loads files and directories (recursively, `.yaml`, `.yml`, `.json`, in
/// name order); `-` reads standard input.
pub fn load_paths(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    load_paths_in(paths, "default")
}

/// As [`load_paths`], with objects that name no namespace placed in
/// `namespace` (`kubectl apply -n`).
pub fn load_paths_in(paths: &[PathBuf], namespace: &str) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let text =
                std::io::read_to_string(std::io::stdin()).map_err(|source| LoadError::Read {
                    path: "-".into(),
                    source,
                })?;
            loaded.extend(load_one("-", &text, namespace));
            continue;
        }
        let files = config_files(path)?;
        if files.is_empty() {
            return Err(LoadError::Empty {
                path: path.display().to_string(),
            });
        }
        for file in files {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Read {
                path: name.clone(),
                source,
            })?;
            loaded.extend(load_one(&name, &text, namespace));
        }
    }
    flag_duplicates(&mut loaded);
    Ok(loaded)
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let mut files = Vec::new();
    for entry in entries {
        if entry.is_dir() {
            files.extend(config_files(&entry)?);
        } else if entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            files.push(entry);
        }
    }
    Ok(files)
}

/// Loads every document of one file's text.
pub fn load_str(file: &str, text: &str) -> Loaded {
    let mut loaded = load_one(file, text, "default");
    flag_duplicates(&mut loaded);
    loaded
}

fn load_one(file: &str, text: &str, namespace: &str) -> Loaded {
    let mut loaded = Loaded::default();
    let mut index = 0;
    for (line, chunk) in documents(text) {
        let source = Source {
            file: file.to_owned(),
            document: index,
            line,
        };
        let value: Value = match serde_yaml::from_str(chunk) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                let at = e.location().map(|l| line + l.line() - 1).unwrap_or(line);
                loaded.diagnostics.push(parse_error(
                    Source { line: at, ..source },
                    None,
                    "",
                    format!("not valid YAML: {e}"),
                ));
                index += 1;
                continue;
            }
        };
        index += 1;
        load_value(&mut loaded, source, value, namespace);
    }
    loaded
}

/// Splits at `---` separators, yielding each document with its 1-based
/// starting line.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        if trimmed == "---" || trimmed.starts_with("--- ") || trimmed == "..." {
            docs.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = n + 2;
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start..]));
    docs
}

fn load_value(loaded: &mut Loaded, source: Source, value: Value, namespace: &str) {
    let Value::Mapping(mut map) = value else {
        loaded.diagnostics.push(parse_error(
            source,
            None,
            "",
            "a document must be a mapping with apiVersion, kind and metadata".into(),
        ));
        return;
    };
    let text = |map: &serde_yaml::Mapping, key: &str| {
        map.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let api_version = text(&map, "apiVersion");
    let kind_name = text(&map, "kind");
    if kind_name == "List" || kind_name.ends_with("List") && map.contains_key("items") {
        if let Some(Value::Sequence(items)) = map.remove("items") {
            for item in items {
                load_value(loaded, source.clone(), item, namespace);
            }
        }
        return;
    }
    if api_version.is_empty() && kind_name.is_empty() && !map.contains_key("metadata") {
        // Files often sit next to config that is not config (an OpenAPI
        // document, a values file); they are noted and skipped.
        loaded.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: codes::PARSE_ERROR,
            source,
            object: None,
            field: String::new(),
            message: "not a Kubernetes-style object (no apiVersion, kind or metadata); skipped"
                .into(),
        });
        return;
    }
    if api_version.is_empty() || kind_name.is_empty() {
        let field = if api_version.is_empty() {
            "apiVersion"
        } else {
            "kind"
        };
        loaded.diagnostics.push(parse_error(
            source,
            None,
            field,
            "required: every object needs apiVersion and kind".into(),
        ));
        return;
    }
    let meta_value = map.remove("metadata").unwrap_or(Value::Null);
    let mut meta: ObjectMeta = match deserialize(meta_value, "metadata") {
        Ok(meta) => meta,
        Err((field, message)) => {
            let object = ObjectRef {
                kind: kind_name,
                ..Default::default()
            };
            loaded
                .diagnostics
                .push(parse_error(source, Some(object), &field, message));
            return;
        }
    };
    let lookup = Kind::lookup(&api_version, &kind_name);
    let kind = match &lookup {
        KindLookup::Known(k) | KindLookup::UnservedVersion { kind: k, .. } => Some(*k),
        KindLookup::Other => None,
    };
    if meta.namespace.is_empty() && kind.is_none_or(Kind::namespaced) {
        meta.namespace = namespace.into();
    }
    let object = ObjectRef {
        kind: kind_name.clone(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
    };
    let mut errors = Vec::new();
    // Names of kinds Kite does not use are their owners' business.
    if let Some(Err(reason)) = kind.map(|_| check_name(&meta.name)) {
        errors.push(("metadata.name".to_owned(), reason));
    }
    if !meta.namespace.is_empty()
        && let Err(reason) = check_label_like(&meta.namespace)
    {
        errors.push(("metadata.namespace".to_owned(), reason));
    }
    map.remove("apiVersion");
    map.remove("kind");
    // Status is written by controllers, never by users.
    map.remove("status");
    let spec = match lookup {
        KindLookup::UnservedVersion { kind, served } => {
            let (group, _) = kind.group();
            let versions: Vec<String> = served.iter().map(|v| qualified(group, v)).collect();
            errors.push((
                "apiVersion".to_owned(),
                format!(
                    "{api_version} is not served for {kind}; use {}",
                    versions.join(", ")
                ),
            ));
            None
        }
        KindLookup::Other => {
            loaded.diagnostics.push(Diagnostic {
                severity: Severity::Info,
                code: codes::UNUSED_KIND,
                source: source.clone(),
                object: Some(object.clone()),
                field: String::new(),
                message: format!("Kite does not use {kind_name} ({api_version}) yet; it is kept but has no effect"),
            });
            let json = serde_json::to_value(&map).unwrap_or(serde_json::Value::Null);
            Some(Spec::Other(json))
        }
        KindLookup::Known(kind) => match typed_body(kind, map.clone()) {
            Ok(spec) => Some(spec),
            Err((field, message)) => {
                errors.push((field, message));
                None
            }
        },
    };
    for (field, message) in errors.iter().cloned() {
        loaded.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            code: codes::SCHEMA_VALIDATION_ERROR,
            source: source.clone(),
            object: Some(object.clone()),
            field,
            message,
        });
    }
    let Some(spec) = spec else { return };
    if !errors.is_empty() {
        return;
    }
    let object = Object {
        api_version,
        kind_name,
        kind,
        meta,
        spec,
        source,
    };
    let mut cx = Ctx::new(&object.meta.namespace);
    object.validate(&mut cx);
    if let Some(kind) = kind {
        let body = serde_json::to_value(&map).unwrap_or(serde_json::Value::Null);
        support::check(kind, &body, &mut cx);
    }
    let mut failed = false;
    for finding in std::mem::take(&mut cx.findings) {
        failed |= finding.severity == Severity::Error;
        loaded.diagnostics.push(Diagnostic {
            severity: finding.severity,
            code: finding.code,
            source: object.source.clone(),
            object: Some(object.object_ref()),
            field: finding.field,
            message: finding.message,
        });
    }
    if !failed {
        loaded.objects.push(object);
    }
}

fn qualified(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

fn typed_body(kind: Kind, mut map: serde_yaml::Mapping) -> Result<Spec, (String, String)> {
    match kind.body() {
        Body::None => {
            // Namespaces and service accounts carry nothing Kite reads.
            return Ok(match kind {
                Kind::Namespace => Spec::Namespace,
                _ => Spec::ServiceAccount,
            });
        }
        Body::TopLevel => {
            return deserialize(Value::Mapping(map), "").map(Spec::Secret);
        }
        Body::Spec => {}
    }
    let spec = map.remove("spec").unwrap_or(Value::Null);
    let extra: Vec<String> = map
        .keys()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if let Some(first) = extra.first()
        && !is_k8s(kind)
    {
        return Err((
            first.clone(),
            "unknown field: only apiVersion, kind, metadata and spec are allowed here".into(),
        ));
    }
    let spec = if spec.is_null() {
        Value::Mapping(Default::default())
    } else {
        spec
    };
    Ok(match kind {
        Kind::VirtualService => Spec::VirtualService(deserialize(spec, "spec")?),
        Kind::DestinationRule => Spec::DestinationRule(deserialize(spec, "spec")?),
        Kind::Gateway => Spec::Gateway(deserialize(spec, "spec")?),
        Kind::ServiceEntry => Spec::ServiceEntry(deserialize(spec, "spec")?),
        Kind::Sidecar => Spec::Sidecar(deserialize(spec, "spec")?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(deserialize(spec, "spec")?),
        Kind::WorkloadGroup => Spec::WorkloadGroup(deserialize(spec, "spec")?),
        Kind::PeerAuthentication => Spec::PeerAuthentication(deserialize(spec, "spec")?),
        Kind::RequestAuthentication => Spec::RequestAuthentication(deserialize(spec, "spec")?),
        Kind::AuthorizationPolicy => Spec::AuthorizationPolicy(deserialize(spec, "spec")?),
        Kind::Telemetry => Spec::Telemetry(deserialize(spec, "spec")?),
        Kind::Service => Spec::Service(deserialize(spec, "spec")?),
        Kind::Deployment => Spec::Deployment(deserialize(spec, "spec")?),
        Kind::Pod => Spec::Pod(deserialize(spec, "spec")?),
        Kind::Namespace | Kind::ServiceAccount | Kind::Secret => unreachable!("handled above"),
    })
}

fn is_k8s(kind: Kind) -> bool {
    kind.group().0.is_empty() || kind.group().0 == "apps"
}

/// Deserializes `value`, reporting a failure as (field path, reason) with the
/// path prefixed by `prefix`.
fn deserialize<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix, path.as_str()) {
            (p, ".") | (p, "") => p.to_owned(),
            ("", path) => path.to_owned(),
            (p, path) if path.starts_with('[') => format!("{p}{path}"),
            (p, path) => format!("{p}.{path}"),
        };
        (field, e.into_inner().to_string())
    })
}

fn parse_error(
    source: Source,
    object: Option<ObjectRef>,
    field: &str,
    message: String,
) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        code: codes::PARSE_ERROR,
        source,
        object,
        field: field.to_owned(),
        message,
    }
}

/// A DNS-1123 subdomain, as Kubernetes requires of most object names.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("required: every object needs a name".into());
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    let ok = name.split('.').all(|part| check_label_like(part).is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
        ))
    }
}

/// A DNS-1123 label, as Kubernetes requires of namespaces.
fn check_label_like(s: &str) -> Result<(), String> {
    let valid = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid DNS label: lower-case letters, digits and '-', at most 63 characters"
        ))
    }
}

fn flag_duplicates(loaded: &mut Loaded) {
    let mut seen = std::collections::HashMap::new();
    let mut dups = Vec::new();
    for (i, object) in loaded.objects.iter().enumerate() {
        if let Some(first) = seen.insert(object.key(), i) {
            dups.push((first, i));
        }
    }
    for (first, dup) in dups {
        let (a, b) = (&loaded.objects[first], &loaded.objects[dup]);
        loaded.diagnostics.push(Diagnostic {
            severity: Severity::Warning,
            code: codes::DUPLICATE_OBJECT,
            source: b.source.clone(),
            object: Some(b.object_ref()),
            field: String::new(),
            message: format!("also defined at {}; the later definition wins", a.source),
        });
    }
}
