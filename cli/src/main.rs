//! `floe`: run, inspect and test ONNX models on CPU.

#[cfg(feature = "audio")]
mod audio;
mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// floe: an inference engine for edge CPUs. Imports ONNX models, runs them,
/// inspects them and checks them against ONNX's conformance tests.
#[derive(Parser)]
#[command(name = "floe", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an ONNX model to a .floe file: optimised graph, weights quantized
    /// (--quantize f16|int8) and laid out for memory-mapped loading, recording the
    /// board preset it is for (--target).
    #[cfg(feature = "onnx")]
    Convert(commands::convert::ConvertArgs),
    /// Run a model once and print each output's name, shape and statistics
    /// (inputs from .npy files, or random with a fixed seed).
    Run(commands::run::RunArgs),
    /// Stream inputs through a model chunk by chunk (--chunk N frames per push),
    /// carrying each op's state between pushes; prints each chunk's outputs and the
    /// per-push latency percentiles, and with --output-dir writes the outputs.
    Stream(commands::stream::StreamArgs),
    /// Time a model: load, latency percentiles (median line), throughput, peak
    /// memory and a per-op time table.
    Bench(commands::bench::BenchArgs),
    /// Run two models on the same inputs: per-output max abs error, cosine and
    /// top-1 agreement, and the latency ratio (e.g. two .floe files converted with
    /// different --attention settings).
    Compare(commands::compare::CompareArgs),
    /// Show a model's inputs and outputs (with symbolic dims), op histogram,
    /// parameter count and bytes, opsets, and any unsupported ops.
    Inspect(commands::inspect::InspectArgs),
    /// Run ONNX backend node tests (a directory of test_* case folders) and report
    /// passed / failed / unsupported.
    #[cfg(feature = "onnx")]
    Conformance(commands::conformance::ConformanceArgs),
    /// List the supported ONNX ops and their opset ranges.
    #[cfg(feature = "onnx")]
    Ops(commands::ops::OpsArgs),
    /// List the board presets (target triple, kernel family).
    Targets(commands::targets::TargetsArgs),
    /// Commands of a full build (convert, conformance, ops) in a runtime-only one.
    #[cfg(not(feature = "onnx"))]
    #[command(external_subcommand)]
    Other(Vec<String>),
}

fn main() -> ExitCode {
    // A panic is a bug in floe; report it as such, without Rust's panic banner.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        if msg.contains("Broken pipe") {
            // stdout closed early (e.g. piped into `head`): stop quietly like other tools
            std::process::exit(141);
        }
        let loc = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
        eprintln!("floe: internal error{loc}: {msg}. This is a bug in floe; please report it.");
    }));
    let cli = Cli::parse();
    let result = match cli.command {
        #[cfg(feature = "onnx")]
        Command::Convert(a) => commands::convert::run(a),
        Command::Run(a) => commands::run::run(a),
        Command::Stream(a) => commands::stream::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Inspect(a) => commands::inspect::run(a),
        Command::Compare(a) => commands::compare::run(a),
        #[cfg(feature = "onnx")]
        Command::Conformance(a) => commands::conformance::run(a),
        #[cfg(feature = "onnx")]
        Command::Ops(a) => commands::ops::run(a),
        Command::Targets(a) => commands::targets::run(a),
        #[cfg(not(feature = "onnx"))]
        Command::Other(args) => commands::without_onnx(&args[0]),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
