//! `floe convert MODEL.onnx -o MODEL.floe`: optimise, quantize and write a `.floe`
//! file, then report the error quantization introduced, per weight and on the
//! model's outputs for a random input.

use super::{parse_dims, random_tensor, Rng};
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use floe_convert::pipeline::{convert, ConvertOptions};
use floe_engine::exec::Bindings;
use floe_engine::format::{self, Model, Quantization, TargetRecord};
use floe_engine::ops::attention::KnnConfig;
use floe_engine::passes::lower_knn_attention::{Decision, KnnLowering};
use floe_engine::{Dim, Graph, Plan, Session, Tensor};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum QuantArg {
    /// Keep weights in f32.
    None,
    /// Store weights as f16 (half the size).
    F16,
    /// Store weights as int8 with a symmetric f32 scale per output channel (a quarter).
    Int8,
}

#[derive(Args)]
pub struct ConvertArgs {
    /// The ONNX model to convert.
    model: PathBuf,
    /// Output file (default: the model's name with .floe).
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// How to store MatMul / Gemm / Conv weights.
    #[arg(long, value_enum, default_value = "none")]
    quantize: QuantArg,
    /// Board preset the file is for (see `floe targets`): recorded in the file with
    /// the CPU its kernels need, so `floe run` can check the machine it runs on.
    #[arg(long, value_name = "PRESET", default_value = "generic")]
    target: String,
    /// Values for symbolic dims in the accuracy check, e.g. --dim T=100
    /// (unset symbols default to 8).
    #[arg(long = "dim", value_name = "SYM=N")]
    dims: Vec<String>,
    /// Seed of the random input used for the accuracy check.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prepare for streaming (`floe stream`): `T` classifies every node for
    /// chunk-by-chunk execution along the symbolic dim T (stateless, stateful with
    /// the state it carries, or blocking) and fails, naming each blocking node,
    /// if the model needs all of time at once; `windowed:N` (or `windowed:N@T`)
    /// records re-running a sliding window of N frames instead. The choice is
    /// recorded in the file as `floe stream`'s default.
    #[arg(long, value_name = "T|windowed:N[@T]")]
    stream: Option<floe_engine::stream::StreamSpec>,
    /// Attention kernel: `exact` fuses every softmax-attention pattern into one
    /// Attention op (tiled exact kernel); `unfused` leaves the exporter's MatMul /
    /// Softmax ops as they are (to measure or debug the fusion with `floe compare`;
    /// ONNX Attention ops stay ops); `knn` lowers each fused
    /// Attention over at least min_keys keys (default 1024; known at conversion) to
    /// IceFormer k-NN attention, which attends only to each query's k best-matching
    /// keys (approximate, faster on long sequences). Only causal and key-padding
    /// masks qualify: attention with a float/bool attn_mask, softcap, a KV cache or a
    /// read qk output stays exact, and each node's decision is printed. Parameters
    /// after a colon, e.g. `knn:k=32,min_keys=512,seed=7` (also lc, m, levels,
    /// prop_to_retrieve, field_of_view, ...; see docs/attention.md).
    #[arg(long, value_name = "exact|unfused|knn[:k=20,...]", default_value = "exact", value_parser = parse_attention)]
    attention: AttentionArg,
}

/// `--attention`.
#[derive(Clone, Debug)]
enum AttentionArg {
    Exact,
    Unfused,
    Knn(KnnLowering),
}

fn parse_attention(s: &str) -> Result<AttentionArg, String> {
    match s.trim().split_once(':') {
        None if s.trim() == "exact" => Ok(AttentionArg::Exact),
        None if s.trim() == "unfused" => Ok(AttentionArg::Unfused),
        None if s.trim() == "knn" => Ok(AttentionArg::Knn(KnnLowering::default())),
        Some(("knn", list)) => KnnLowering::parse(list).map(AttentionArg::Knn),
        _ => Err(format!("expected `exact`, `unfused`, `knn` or `knn:key=value,...`, got `{s}`")),
    }
}

fn progress_bar(total: u64) -> Option<indicatif::ProgressBar> {
    // Only for writes big enough to take a noticeable time.
    (total > 32 << 20).then(|| {
        let pb = indicatif::ProgressBar::new(total);
        pb.set_style(
            indicatif::ProgressStyle::with_template("writing {bar:40} {bytes}/{total_bytes} ({eta})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    })
}

/// Runs `g` on `inputs`; the plan binds shapes from the inputs themselves.
fn run_graph(g: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let mut b = Bindings::default();
    for (&id, t) in g.inputs.iter().zip(inputs) {
        b.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
    }
    let plan = Arc::new(Plan::new(g, &b)?);
    Ok(Session::new(plan).run(inputs.to_vec())?)
}

pub fn run(a: ConvertArgs) -> Result<ExitCode> {
    let quantize = match a.quantize {
        QuantArg::None => Quantization::None,
        QuantArg::F16 => Quantization::F16,
        QuantArg::Int8 => Quantization::Int8,
    };
    let out = a.output.clone().unwrap_or_else(|| a.model.with_extension("floe"));
    if out == a.model {
        bail!("the output would overwrite the input; give -o FILE");
    }
    let symbols = parse_dims(&a.dims)?;
    let start = Instant::now();
    // A spinner while importing and optimising (drawn only on a terminal).
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("converting {}", a.model.display()));
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let opts = ConvertOptions {
        quantize,
        target: a.target.clone(),
        stream: a.stream.clone(),
        attention: match &a.attention {
            AttentionArg::Knn(l) => Some(l.clone()),
            _ => None,
        },
        fuse_attention: !matches!(a.attention, AttentionArg::Unfused),
    };
    let conv = convert(&a.model, &opts);
    spinner.finish_and_clear();
    let conv = conv?;
    for p in &conv.passes {
        println!("pass {p}");
    }
    if let AttentionArg::Knn(lowering) = &a.attention {
        if conv.attention.is_empty() {
            println!("attention: no Attention node to lower");
        }
        for (name, decision) in &conv.attention {
            println!("attention {name}: {decision}");
        }
        if conv.attention.iter().any(|(_, d)| matches!(d, Decision::Lowered { .. })) {
            println!("knn parameters: {}", KnnConfig::from(&lowering.params));
        }
    }
    if let Some((spec, analysis)) = &conv.stream {
        super::stream::print_analysis(spec, analysis, &conv.graph);
    }
    let mut pb: Option<indicatif::ProgressBar> = None;
    let mut progress = |done: u64, total: u64| {
        if pb.is_none() {
            pb = progress_bar(total);
        }
        if let Some(p) = &pb {
            p.set_position(done);
        }
    };
    let preset = floe_targets::preset(&a.target).map_err(anyhow::Error::msg)?;
    let record = TargetRecord {
        preset: preset.name.to_string(),
        kernels: preset.kernels.to_string(),
        arch: preset.arch.to_string(),
        cpu_features: preset.features.iter().map(|f| f.to_string()).collect(),
    };
    let bytes = format::write_for_target(&out, &conv.graph, &conv.info, &record, &mut progress)?;
    if let Some(p) = pb {
        p.finish_and_clear();
    }
    println!(
        "wrote {} ({:.2} MB, quantization {}, target {}) in {:.2} s",
        out.display(),
        bytes as f64 / 1e6,
        quantize,
        a.target,
        start.elapsed().as_secs_f64()
    );
    for q in &conv.quantized {
        println!(
            "quantized {:<32} {}  max abs err {:.3e}  rel err {:.3e}",
            q.name, q.kind, q.max_abs_error, q.rel_error
        );
    }
    // Accuracy check: the written file against the f32 ONNX import, same input.
    let reference = floe_convert::load(&a.model)?;
    let loaded = Model::load(&out)?;
    let mut rng = Rng::new(a.seed);
    let mut inputs = Vec::new();
    for &id in &reference.graph.inputs {
        let v = &reference.graph.values[id];
        let shape: Vec<usize> = v
            .fact
            .shape
            .as_ref()
            .map(|s| {
                s.0.iter()
                    .map(|d| match d {
                        Dim::Fixed(n) => *n,
                        Dim::Sym(s) => symbols.get(s).copied().unwrap_or(8),
                        Dim::Unknown => 1,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let dtype = v.fact.dtype.context("an input without a dtype")?;
        inputs.push(random_tensor(dtype, &shape, &mut rng)?);
    }
    let want = run_graph(&reference.graph, &inputs).context("running the ONNX model for the accuracy check")?;
    let got = run_graph(&loaded.graph, &inputs).context("running the converted model")?;
    for ((w, g), &id) in want.iter().zip(&got).zip(&reference.graph.outputs) {
        let (wv, gv) = (w.to_f64_vec(), g.to_f64_vec());
        let max_abs = wv.iter().zip(&gv).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        let scale = wv.iter().map(|v| v.abs()).fold(0.0, f64::max);
        println!(
            "output {:<24} max abs err {:.3e}  rel err {:.3e}",
            reference.graph.values[id].name,
            max_abs,
            if scale > 0.0 { max_abs / scale } else { 0.0 }
        );
    }
    Ok(ExitCode::SUCCESS)
}
