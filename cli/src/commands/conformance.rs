//! `floe conformance DIR`: ONNX backend node tests, with an optional expectations
//! file so regressions (a case that passed and no longer does) fail loudly.

use anyhow::{Context, Result};
use clap::Args;
use floe_convert::conformance::{list_cases, parse_expectations, run_case_guarded, Outcome};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ConformanceArgs {
    /// Directory of test cases (e.g. onnx/backend/test/data/node).
    dir: PathBuf,
    /// Only run cases whose name contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Expectations file (`name status` lines): fail if a listed `passed` case no longer passes.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// Write the observed statuses to this expectations file.
    #[arg(long, value_name = "FILE")]
    write_expect: Option<PathBuf>,
    /// Also print each unsupported case and why.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(a: ConformanceArgs) -> Result<ExitCode> {
    let cases = list_cases(&a.dir).with_context(|| format!("cannot read {}", a.dir.display()))?;
    let expected: HashMap<String, String> = match &a.expect {
        Some(p) => {
            parse_expectations(&std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?)
                .into_iter()
                .collect()
        }
        None => HashMap::new(),
    };
    let (mut passed, mut failed, mut unsupported) = (0, 0, 0);
    let mut regressions = Vec::new();
    let mut lines = Vec::new();
    for dir in cases {
        let name = dir.file_name().unwrap_or_default().to_string_lossy().to_string();
        if a.filter.as_ref().is_some_and(|f| !name.contains(f.as_str())) {
            continue;
        }
        let o = run_case_guarded(&dir);
        match &o {
            Outcome::Passed => passed += 1,
            Outcome::Failed(m) => {
                failed += 1;
                println!("FAILED {name}: {m}");
            }
            Outcome::Unsupported(m) => {
                unsupported += 1;
                if a.verbose {
                    println!("unsupported {name}: {m}");
                }
            }
        }
        if expected.get(&name).is_some_and(|s| s == "passed") && o != Outcome::Passed {
            regressions.push(name.clone());
        }
        lines.push(format!("{name} {}", o.label()));
    }
    println!(
        "conformance: {passed} passed, {failed} failed, {unsupported} unsupported ({} cases)",
        passed + failed + unsupported
    );
    if let Some(p) = &a.write_expect {
        let text =
            format!("# ONNX node conformance expectations (floe conformance --write-expect)\n{}\n", lines.join("\n"));
        std::fs::write(p, text).with_context(|| format!("cannot write {}", p.display()))?;
    }
    if !regressions.is_empty() {
        println!("REGRESSIONS (expected to pass): {}", regressions.join(", "));
    }
    Ok(if failed > 0 || !regressions.is_empty() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
