//! `floe targets`: the board presets.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct TargetsArgs {}

pub fn run(_a: TargetsArgs) -> Result<ExitCode> {
    println!("{:<16} {:<32} {:<14} description", "preset", "triple", "kernels");
    for p in floe_targets::PRESETS {
        let triple = if p.triple.is_empty() { "(host)" } else { p.triple };
        println!("{:<16} {:<32} {:<14} {}", p.name, triple, p.kernels.to_string(), p.description);
    }
    Ok(ExitCode::SUCCESS)
}
