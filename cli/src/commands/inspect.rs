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
    println!("target:    {}  quantization: {}", m.target.preset, i.quantization);
    let t = &m.target;
    if t.has_requirements() {
        let cpu = if t.arch.is_empty() { "any CPU".to_string() } else { t.arch.clone() };
        let features =
            if t.cpu_features.is_empty() { String::new() } else { format!(" with {}", t.cpu_features.join(", ")) };
        println!("kernels:   {} ({cpu}{features})", t.kernels);
    }
    match super::check_target(&m) {
        Ok(None) => println!("this CPU:  runs its kernels ({})", floe_targets::host_preset().name),
        Ok(Some(w)) => println!("this CPU:  {w}"),
        Err(e) => println!("this CPU:  cannot run it: {e}"),
    }
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
    #[cfg(not(feature = "onnx"))]
    {
        // Without the importer only .floe files load: this reports a missing file
        // or that ONNX needs a full build.
        super::load_model(&a.model).and_then(|_| inspect_floe(&a))
    }
    #[cfg(feature = "onnx")]
    inspect_onnx(&a)
}

#[cfg(feature = "onnx")]
fn inspect_onnx(a: &InspectArgs) -> Result<ExitCode> {
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
