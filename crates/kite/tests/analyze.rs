//! `kite analyze` as a user runs it: every Istio sample file is clean in the
//! context it is meant for, and each broken input in `corpus/` gets exactly
//! the errors its `# expect:` lines name.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::{SAMPLES, kite};

fn analyze(files: &[&Path]) -> (i32, Vec<Value>, String) {
    let mut cmd = kite();
    cmd.args(["analyze", "-o", "json"]);
    for f in files {
        cmd.arg("-f").arg(f);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let diags: Vec<Value> = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("analyze output is not JSON ({e}): {stdout}"));
    (
        out.status.code().unwrap_or(-1),
        diags,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn every_sample_is_clean_in_context() {
    let samples = Path::new(SAMPLES);
    // The workloads, destination rules and gateways the routing samples are
    // written against, as the Istio tasks apply them first.
    let context: Vec<PathBuf> = [
        "bookinfo/platform/kube/bookinfo.yaml",
        "bookinfo/networking/destination-rule-all.yaml",
        "bookinfo/networking/bookinfo-gateway.yaml",
        "helloworld/helloworld.yaml",
        "httpbin/httpbin.yaml",
        "tcp-echo/tcp-echo-services.yaml",
        "tcp-echo/tcp-echo-all-v1.yaml",
    ]
    .iter()
    .map(|p| samples.join(p))
    .collect();
    let files = yaml_files(samples);
    assert!(files.len() > 50, "samples not found under {SAMPLES}");
    let mut failures = Vec::new();
    for file in &files {
        let mut args: Vec<&Path> = context.iter().map(PathBuf::as_path).collect();
        args.push(file);
        let (code, diags, stderr) = analyze(&args);
        let errors: Vec<&Value> = diags.iter().filter(|d| d["level"] == "Error").collect();
        // cert-manager's resolver Service is installed by cert-manager,
        // which the samples do not include.
        let expected_missing = file.ends_with("certmanager-gateway.yaml")
            && errors.len() == 1
            && errors[0]["message"] == "Referenced host not found: \"cert-manager-resolver\"";
        if (code != 0 || !errors.is_empty()) && !expected_missing {
            failures.push(format!(
                "{}: exit {code}\n{errors:#?}\n{stderr}",
                file.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

struct Expect {
    level: String,
    code: String,
    field: Option<String>,
    fragment: String,
}

fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|l| {
            let (head, fragment) = l
                .split_once(" | ")
                .expect("`# expect: LEVEL CODE FIELD | text`");
            let mut parts = head.split_whitespace();
            let level = parts.next().unwrap().to_owned();
            let code = parts.next().unwrap().to_owned();
            let field = parts.next().filter(|f| *f != "-").map(str::to_owned);
            Expect {
                level,
                code,
                field,
                fragment: fragment.to_owned(),
            }
        })
        .collect()
}

#[test]
fn broken_inputs_get_precise_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let files = yaml_files(&dir);
    assert!(files.len() >= 10);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = expectations(&text);
        assert!(
            !expected.is_empty(),
            "{} has no # expect: lines",
            file.display()
        );
        let (code, diags, stderr) = analyze(&[&file]);
        let name = file.file_name().unwrap().to_string_lossy();
        let matches = |e: &Expect, d: &Value| {
            d["level"] == e.level.as_str()
                && d["code"] == e.code.as_str()
                && e.field.as_deref().is_none_or(|f| d["field"] == f)
                && d["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains(&e.fragment)
                && d["file"].as_str().unwrap_or_default().ends_with(&*name)
        };
        for e in &expected {
            assert!(
                diags.iter().any(|d| matches(e, d)),
                "{name}: expected {} {} {:?} containing {:?}; got {diags:#?}",
                e.level,
                e.code,
                e.field,
                e.fragment
            );
        }
        for d in diags.iter().filter(|d| d["level"] == "Error") {
            assert!(
                expected.iter().any(|e| matches(e, d)),
                "{name}: unexpected error {d:#}"
            );
        }
        let wants_error = expected.iter().any(|e| e.level == "Error");
        assert_eq!(code, if wants_error { 79 } else { 0 }, "{name}: {stderr}");
    }
}
