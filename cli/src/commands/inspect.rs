//! `floe inspect MODEL`: what a model takes, gives and is made of.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InspectArgs {
    /// The model (.onnx).
    model: PathBuf,
}

pub fn run(a: InspectArgs) -> Result<ExitCode> {
    let s = floe_convert::onnx::summary::summarize(&a.model)?;
    println!("model:     {}", a.model.display());
    println!("ir:        {}  producer: {}", s.ir_version, if s.producer.is_empty() { "?" } else { &s.producer });
    let ops: Vec<String> =
        s.opsets.iter().map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d })).collect();
    println!("opsets:    {}", ops.join(", "));
    match floe_convert::onnx::load(&a.model) {
        Ok(m) => {
            let g = &m.graph;
            println!("inputs:");
            for &i in &g.inputs {
                println!("  {:<24} {}", g.values[i].name, g.values[i].fact);
            }
            println!("outputs:");
            for &o in &g.outputs {
                println!("  {:<24} {}", g.values[o].name, g.values[o].fact);
            }
            let (n, b) = g.parameter_stats();
            println!("parameters: {n} ({:.2} MB)", b as f64 / 1e6);
        }
        Err(e) if e.is_unsupported() => {}
        Err(e) => return Err(e.into()),
    }
    println!("ops ({} nodes):", s.node_count);
    for (op, c) in &s.op_histogram {
        println!("  {op:<28} {c}");
    }
    if s.unsupported.is_empty() {
        println!("unsupported ops: none");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("unsupported ops:");
        for u in &s.unsupported {
            println!("  {u}");
        }
        Ok(ExitCode::FAILURE)
    }
}
