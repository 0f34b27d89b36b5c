//! `floe bench MODEL`: load time, then latency percentiles, throughput, peak memory
//! and a per-op time table over repeated runs on random inputs.

use super::{load_model, parse_dims, random_tensor, Rng};
use anyhow::{Context, Result};
use clap::Args;
use floe_engine::exec::Bindings;
use floe_engine::exec::{physical_cores, SessionOptions};
use floe_engine::{Plan, Session};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct BenchArgs {
    /// The model (.onnx or .floe).
    model: PathBuf,
    /// Timed runs.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Untimed warm-up runs first.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Value of a symbolic dim, e.g. --dim T=100 (repeat for several).
    #[arg(long = "dim", value_name = "SYM=N")]
    dims: Vec<String>,
    /// Only measure loading (repeated --runs times) and resident memory after it.
    #[arg(long)]
    load_only: bool,
    /// Threads the kernels may use (default: one per physical core; 1 runs
    /// everything on the calling thread).
    #[arg(long)]
    threads: Option<usize>,
    /// How many rows of the per-op table to print.
    #[arg(long, default_value_t = 15)]
    top: usize,
}

/// A field of /proc/self/status in bytes (Linux; 0 elsewhere).
fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .map_or(0, |kb: u64| kb * 1024)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let symbols = parse_dims(&a.dims)?;
    let rss0 = proc_status_kb("VmRSS:");
    let t = Instant::now();
    let model = load_model(&a.model)?;
    let load = t.elapsed();
    let rss1 = proc_status_kb("VmRSS:");
    println!("load: {:.3} ms, resident memory +{:.2} MB", ms(load), rss1.saturating_sub(rss0) as f64 / 1e6);
    if a.load_only {
        let mut times = Vec::with_capacity(a.runs.max(1));
        for _ in 0..a.runs.max(1) {
            let t = Instant::now();
            drop(load_model(&a.model)?);
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "median: {:.3} ms (load, {} runs; min {:.3} ms)",
            ms(percentile(&times, 0.5)),
            times.len(),
            ms(times[0])
        );
        return Ok(ExitCode::SUCCESS);
    }
    let g = model.graph();
    let t = Instant::now();
    let plan = Arc::new(Plan::new(g, &Bindings { symbols, ..Default::default() }).context("cannot plan the model")?);
    println!("plan: {:.3} ms", ms(t.elapsed()));
    let mut rng = Rng::new(0);
    let inputs: Vec<_> = plan.inputs().map(|p| random_tensor(p.dtype, &p.shape, &mut rng)).collect::<Result<_>>()?;
    let threads = a.threads.unwrap_or_else(physical_cores).max(1);
    let mut session = Session::with_options(plan.clone(), SessionOptions { threads });
    let (kernels, nodes) = plan.kernel_coverage();
    println!(
        "threads: {}  prepared kernels: {kernels}/{nodes} nodes  planned buffers: {:.1} KB",
        session.threads(),
        plan.buffer_bytes() as f64 / 1e3
    );
    for _ in 0..a.warmup {
        session.run_borrowed(&inputs, |_, _| {})?;
    }
    let runs = a.runs.max(1);
    let mut times = Vec::with_capacity(runs);
    let mut per_node = vec![Duration::ZERO; plan.graph().nodes.len()];
    for _ in 0..runs {
        let t = Instant::now();
        session.run_borrowed(&inputs, |i, d| per_node[i] += d)?;
        times.push(t.elapsed());
    }
    times.sort();
    let total: Duration = times.iter().sum();
    println!("runs: {runs} (after {} warm-up)", a.warmup);
    println!("median: {:.3} ms", ms(percentile(&times, 0.5)));
    println!(
        "p90: {:.3} ms  p99: {:.3} ms  min: {:.3} ms  max: {:.3} ms",
        ms(percentile(&times, 0.9)),
        ms(percentile(&times, 0.99)),
        ms(times[0]),
        ms(times[runs - 1])
    );
    println!("throughput: {:.1} runs/s", runs as f64 / total.as_secs_f64());
    println!("peak memory: {:.1} MB (resident high-water mark)", proc_status_kb("VmHWM:") as f64 / 1e6);
    let mut by_op: BTreeMap<&str, (Duration, usize)> = BTreeMap::new();
    for (n, d) in plan.graph().nodes.iter().zip(&per_node) {
        let e = by_op.entry(n.op.name()).or_default();
        e.0 += *d;
        e.1 += 1;
    }
    let node_total: Duration = per_node.iter().sum();
    let mut rows: Vec<_> = by_op.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .0));
    println!("{:<28} {:>6} {:>12} {:>7}", "op", "nodes", "ms/run", "share");
    for (op, (d, n)) in rows.iter().take(a.top) {
        let share = if node_total.is_zero() { 0.0 } else { d.as_secs_f64() / node_total.as_secs_f64() * 100.0 };
        println!("{op:<28} {n:>6} {:>12.4} {share:>6.1}%", ms(*d) / runs as f64);
    }
    Ok(ExitCode::SUCCESS)
}
