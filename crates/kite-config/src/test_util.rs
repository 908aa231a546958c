//! Helpers shared by the unit tests of the resource modules (`networking`,
//! `security`, `telemetry`, `k8s`): reading Istio's samples, splitting YAML
//! streams, and deserializing + validating a value the way the loader does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, de::DeserializeOwned};

use crate::{
    common::{Ctx, Validate},
    diag::Severity,
};

/// Istio's `samples/` and `manifests/` checkout shared by the tests.
pub(crate) const SAMPLES: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/istio-samples");

/// Every non-empty YAML document under [`SAMPLES`] (files ending `.yaml` or
/// `.yml`, walked recursively, in sorted path order), with its file.
pub(crate) fn sample_docs() -> Vec<(PathBuf, serde_yaml::Value)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
            {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(Path::new(SAMPLES), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no samples under {SAMPLES}");
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("sample file");
        docs.extend(yaml_docs(&text).into_iter().map(|d| (file.clone(), d)));
    }
    docs
}

/// The non-null documents of a YAML stream.
pub(crate) fn yaml_docs(text: &str) -> Vec<serde_yaml::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde_yaml::Value::deserialize(doc).expect("valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `doc[key]` as a string, or `""` when it is missing or not a string.
pub(crate) fn str_field<'a>(doc: &'a serde_yaml::Value, key: &str) -> &'a str {
    doc.get(key)
        .and_then(serde_yaml::Value::as_str)
        .unwrap_or_default()
}

/// Deserializes a spec and validates it; returns every error as
/// (field, message), with deserialization failures located like the
/// loader does (under `spec`).
pub(crate) fn errors<T: DeserializeOwned + Validate>(
    spec: serde_yaml::Value,
) -> Vec<(String, String)> {
    errors_at::<T>(spec, "spec")
}

/// Like [`errors`], but deserialization failures are located under `prefix`
/// instead of `spec`: `""` for types whose fields sit at the top level of the
/// object (a Kubernetes `Secret`'s `data`, `type`, …).
pub(crate) fn errors_at<T: DeserializeOwned + Validate>(
    value: serde_yaml::Value,
    prefix: &str,
) -> Vec<(String, String)> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Err(e) => {
            let path = e.path().to_string();
            let field = match (prefix, path.as_str()) {
                (p, ".") => p.to_owned(),
                ("", path) => path.to_owned(),
                (p, path) => format!("{p}.{path}"),
            };
            vec![(field, e.inner().to_string())]
        }
        Ok(spec) => {
            let mut cx = Ctx::new("default");
            spec.validate(&mut cx);
            cx.findings()
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(|f| (f.field.clone(), f.message.clone()))
                .collect()
        }
    }
}
