//! `floe compare MODEL_A MODEL_B`: runs two models (e.g. one .floe file converted
//! with exact attention and one with another `--attention` setting, or an ONNX file
//! and its .floe) on the same inputs and reports, per output, the max absolute
//! error, the cosine similarity and the top-1 agreement along the last axis, plus
//! the median latency of each and their ratio.

use super::{parse_dims, parse_pairs, random_tensor, Rng};
use anyhow::{bail, Context, Result};
use clap::Args;
use floe_engine::exec::Bindings;
use floe_engine::{Plan, Session, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct CompareArgs {
    /// The reference model (.onnx or .floe).
    model_a: PathBuf,
    /// The model compared against it; it must have the same inputs.
    model_b: PathBuf,
    /// An input as NAME=FILE.npy (repeat for several). Inputs not given are random.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Value of a symbolic dim, e.g. --dim T=100 (repeat for several).
    #[arg(long = "dim", value_name = "SYM=N")]
    dims: Vec<String>,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Timed runs per model (after one warm-up run); latency is their median.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Threads per session (default: physical cores).
    #[arg(long)]
    threads: Option<usize>,
}

/// Plans `path` for the given input shapes and symbols.
fn plan(path: &Path, symbols: &HashMap<String, usize>, given: &HashMap<String, Tensor>) -> Result<Arc<Plan>> {
    let model = super::load_model(path)?;
    let g = model.graph();
    for name in given.keys() {
        if !g.inputs.iter().any(|&i| &g.values[i].name == name) {
            bail!("{}: --input {name}: the model has no input '{name}'", path.display());
        }
    }
    let mut b = Bindings { symbols: symbols.clone(), ..Default::default() };
    for (k, t) in given {
        b.shapes.insert(k.clone(), t.shape().to_vec());
    }
    Ok(Arc::new(Plan::new(g, &b).with_context(|| format!("{}: cannot plan the model", path.display()))?))
}

/// Outputs of one run and the median latency of `runs` more.
fn time(
    plan: &Arc<Plan>,
    inputs: &[Tensor],
    runs: usize,
    threads: Option<usize>,
    path: &Path,
) -> Result<(Vec<Tensor>, f64)> {
    let mut session = match threads {
        Some(t) => Session::with_options(plan.clone(), floe_engine::exec::SessionOptions { threads: t }),
        None => Session::new(plan.clone()),
    };
    let outs = session.run(inputs.to_vec()).with_context(|| format!("{}: run failed", path.display()))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        session.run_borrowed(inputs, |_, _| {}).with_context(|| format!("{}: run failed", path.display()))?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((outs, times[times.len() / 2]))
}

/// (max |a - b|, cosine(a, b), top-1 agreement over rows of the last axis).
pub fn compare(a: &Tensor, b: &Tensor) -> (f64, f64, f64) {
    let (x, y) = (a.to_f64_vec(), b.to_f64_vec());
    let max_abs = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
    let dot: f64 = x.iter().zip(&y).map(|(p, q)| p * q).sum();
    let (nx, ny) = (x.iter().map(|p| p * p).sum::<f64>().sqrt(), y.iter().map(|q| q * q).sum::<f64>().sqrt());
    let cosine = if nx == 0.0 && ny == 0.0 { 1.0 } else { dot / (nx * ny) };
    let width = a.shape().last().copied().unwrap_or(1).max(1);
    let argmax =
        |r: &[f64]| r.iter().enumerate().fold((0, f64::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0;
    let rows = x.len() / width;
    let agree = x.chunks(width).zip(y.chunks(width)).filter(|(p, q)| argmax(p) == argmax(q)).count();
    (max_abs, cosine, if rows == 0 { 1.0 } else { agree as f64 / rows as f64 })
}

pub fn run(a: CompareArgs) -> Result<ExitCode> {
    let symbols = parse_dims(&a.dims)?;
    let mut given = HashMap::new();
    for (name, file) in parse_pairs(&a.inputs, "--input")? {
        given.insert(name, floe_engine::npy::read(file.as_ref())?);
    }
    let (pa, pb) = (plan(&a.model_a, &symbols, &given)?, plan(&a.model_b, &symbols, &given)?);
    let (ins_a, ins_b): (Vec<_>, Vec<_>) = (pa.inputs().collect(), pb.inputs().collect());
    let mut rng = Rng::new(a.seed);
    let mut inputs = Vec::new();
    for p in &ins_a {
        let Some(q) = ins_b.iter().find(|q| q.name == p.name) else {
            bail!("{} has input '{}' but {} does not", a.model_a.display(), p.name, a.model_b.display());
        };
        if (q.dtype, &q.shape) != (p.dtype, &p.shape) {
            bail!(
                "input '{}': {} {:?} in {} but {} {:?} in {}",
                p.name,
                p.dtype,
                p.shape,
                a.model_a.display(),
                q.dtype,
                q.shape,
                a.model_b.display()
            );
        }
        inputs.push(match given.get(&p.name) {
            Some(t) => t.clone(),
            None => random_tensor(p.dtype, &p.shape, &mut rng)?,
        });
    }
    if ins_b.len() != inputs.len() {
        bail!("{} has {} inputs, {} has {}", a.model_a.display(), inputs.len(), a.model_b.display(), ins_b.len());
    }
    // B's inputs in B's order
    let inputs_b: Vec<Tensor> = ins_b
        .iter()
        .map(|q| inputs[ins_a.iter().position(|p| p.name == q.name).expect("checked above")].clone())
        .collect();
    let (outs_a, ta) = time(&pa, &inputs, a.runs, a.threads, &a.model_a)?;
    let (outs_b, tb) = time(&pb, &inputs_b, a.runs, a.threads, &a.model_b)?;
    if outs_a.len() != outs_b.len() {
        bail!("{} has {} outputs, {} has {}", a.model_a.display(), outs_a.len(), a.model_b.display(), outs_b.len());
    }
    println!("{:<24} {:>14} {:>12} {:>10}", "output", "max abs error", "cosine", "top-1");
    for ((name, x), y) in pa.output_names().iter().zip(&outs_a).zip(&outs_b) {
        if x.shape() != y.shape() {
            bail!(
                "output '{name}': shape {:?} in {} but {:?} in {}",
                x.shape(),
                a.model_a.display(),
                y.shape(),
                a.model_b.display()
            );
        }
        let (e, c, t) = compare(x, y);
        println!("{name:<24} {e:>14.3e} {c:>12.6} {:>9.1}%", t * 100.0);
    }
    println!(
        "latency (median of {}): A {:.3} ms, B {:.3} ms; B/A = {:.3} (speed-up of B over A: {:.2}x)",
        a.runs.max(1),
        ta * 1e3,
        tb * 1e3,
        tb / ta,
        ta / tb
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_identical_scaled_and_swapped_outputs() {
        let a = Tensor::from_vec(&[2, 3], vec![1.0f32, 3.0, 2.0, 0.0, -1.0, 5.0]).unwrap();
        let (e, c, t) = compare(&a, &a);
        assert_eq!((e, t), (0.0, 1.0));
        assert!((c - 1.0).abs() < 1e-12);
        let b = Tensor::from_vec(&[2, 3], vec![2.0f32, 6.0, 4.0, 0.0, -2.0, 10.0]).unwrap();
        let (e, c, t) = compare(&a, &b);
        assert_eq!((e, t), (5.0, 1.0));
        assert!((c - 1.0).abs() < 1e-12);
        // second row's argmax moves from 2 to 0
        let d = Tensor::from_vec(&[2, 3], vec![1.0f32, 3.0, 2.0, 9.0, -1.0, 5.0]).unwrap();
        let (e, c, t) = compare(&a, &d);
        assert_eq!((e, t), (9.0, 0.5));
        assert!(c < 0.99);
    }
}
