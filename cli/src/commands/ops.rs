//! `floe ops`: the supported ONNX ops, from the importer's registry.

use anyhow::Result;
use clap::Args;
use std::process::ExitCode;

#[derive(Args)]
pub struct OpsArgs {
    /// Print the Markdown table that docs/ops.md holds.
    #[arg(long)]
    markdown: bool,
}

pub fn run(a: OpsArgs) -> Result<ExitCode> {
    if a.markdown {
        print!("{}", floe_convert::onnx::registry::ops_markdown());
    } else {
        for d in floe_convert::onnx::registry::Registry::onnx().defs() {
            let dom = if d.domain.is_empty() { "ai.onnx" } else { d.domain };
            println!("{:<28} {:<10} opset {}-{}", d.op_type, dom, d.since, d.latest);
        }
    }
    Ok(ExitCode::SUCCESS)
}
