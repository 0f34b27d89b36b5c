//! `floe inspect MODEL`: what a model takes, gives and is made of.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct InspectArgs {
    /// The model (.onnx or .floe).
    model: PathBuf,
}

fn print_io(g: &floe_engine::Graph) {
    println!("inputs:");
    for &i in &g.inputs {
        println!("  {:<24} {}", g.values[i].name, g.values[i].fact);
    }
    println!("outputs:");
    for &o in &g.outputs {
        println!("  {:<24} {}", g.values[o].name, g.values[o].fact);
    }
}

fn inspect_floe(a: &InspectArgs) -> Result<ExitCode> {
    let m = floe_engine::format::Model::load(&a.model)?;
    let i = &m.info;
    println!("model:     {}", a.model.display());
    println!("format:    .floe version {} ({} bytes)", m.header.version, m.header.file_len);
    println!("producer:  {}  source: {}  opset {}", i.producer, i.source, i.opset);
    println!("target:    {}  quantization: {}", i.target, i.quantization);
    print_io(&m.graph);
    let (n, b) = m.graph.parameter_stats();
    println!("parameters: {n} ({:.2} MB stored)", b as f64 / 1e6);
    println!("ops ({} nodes):", m.graph.nodes.len());
    for (op, c) in m.graph.op_histogram() {
        println!("  {op:<28} {c}");
    }
    println!("tensors ({}):", m.tensors.len());
    println!("  {:<32} {:<8} {:<8} {:>12}  shape", "name", "dtype", "layout", "bytes");
    for t in &m.tensors {
        println!(
            "  {:<32} {:<8} {:<8} {:>12}  {:?}",
            t.name,
            t.dtype.to_string(),
            format!("{:?}", t.layout),
            t.len,
            t.shape
        );
    }
    for q in &i.quantized {
        println!(
            "quantized {:<32} {} axis {:?}  max abs err {:.3e}  rel err {:.3e}",
            q.name, q.kind, q.axis, q.max_abs_error, q.rel_error
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(a: InspectArgs) -> Result<ExitCode> {
    if super::is_floe(&a.model) {
        return inspect_floe(&a);
    }
    let s = floe_convert::onnx::summary::summarize(&a.model)?;
    println!("model:     {}", a.model.display());
    println!("ir:        {}  producer: {}", s.ir_version, if s.producer.is_empty() { "?" } else { &s.producer });
    let ops: Vec<String> =
        s.opsets.iter().map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d })).collect();
    println!("opsets:    {}", ops.join(", "));
    match floe_convert::onnx::load(&a.model) {
        Ok(m) => {
            let g = &m.graph;
            print_io(g);
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
