//! `kite analyze`: validate and cross-check configuration files the way
//! `istioctl analyze` does.

use std::{path::PathBuf, process::ExitCode};

use kite_config::{Diagnostic, Severity, analyze, load_paths};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Files or directories to analyze (`-` reads standard input); directories are read recursively
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Print findings at or above this level
    #[arg(long, default_value = "info", value_parser = parse_severity)]
    output_threshold: Severity,
    /// Exit non-zero when a finding is at or above this level
    #[arg(long, default_value = "error", value_parser = parse_severity)]
    failure_threshold: Severity,
    /// Output format
    #[arg(short, long, default_value = "text", value_parser = ["text", "json"])]
    output: String,
}

/// istioctl's exit code when analyzers find issues, so scripts carry over.
const ISSUES_FOUND: u8 = 79;

fn parse_severity(s: &str) -> Result<Severity, String> {
    match s.to_ascii_lowercase().as_str() {
        "info" => Ok(Severity::Info),
        "warning" | "warn" => Ok(Severity::Warning),
        "error" => Ok(Severity::Error),
        _ => Err(format!("{s:?}: expected info, warning or error")),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut loaded = load_paths(&args.files)?;
    let cross = analyze::analyze(&loaded.objects.iter().collect::<Vec<_>>());
    loaded.diagnostics.extend(cross);
    let mut shown: Vec<&Diagnostic> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity >= args.output_threshold)
        .collect();
    shown.sort_by(|a, b| {
        (b.severity, &a.source.file, a.source.line).cmp(&(
            a.severity,
            &b.source.file,
            b.source.line,
        ))
    });
    if args.output == "json" {
        let json: Vec<_> = shown.iter().map(|d| d.to_json()).collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if shown.is_empty() {
        println!(
            "\u{2714} No validation issues found when analyzing {} object(s).",
            loaded.objects.len()
        );
    } else {
        for d in &shown {
            println!("{d}");
        }
    }
    let failing = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity >= args.failure_threshold)
        .count();
    if failing > 0 {
        eprintln!(
            "Error: analyzers found {failing} issue(s) at or above {:?}.",
            args.failure_threshold
        );
        return Ok(ExitCode::from(ISSUES_FOUND));
    }
    Ok(ExitCode::SUCCESS)
}
