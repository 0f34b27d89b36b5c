//! `floe targets`: the board presets.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct TargetsArgs {}

pub fn run(_a: TargetsArgs) -> Result<ExitCode> {
    println!("{:<16} {:<32} {:<14} {:<20} description", "preset", "triple", "kernels", "cpu features");
    let here = floe_targets::host_preset().name;
    for p in floe_targets::PRESETS {
        let triple = if p.triple.is_empty() { "(host)" } else { p.triple };
        let features = if p.features.is_empty() { "-".to_string() } else { p.features.join(",") };
        let mark = if p.name == here { " (this machine)" } else { "" };
        println!(
            "{:<16} {:<32} {:<14} {:<20} {}{mark}",
            p.name,
            triple,
            p.kernels.to_string(),
            features,
            p.description
        );
    }
    println!("cross-build for a board: targets/cross.sh PRESET build (docs/cross-compiling.md)");
    Ok(ExitCode::SUCCESS)
}
