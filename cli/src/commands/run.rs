//! `floe run MODEL`: one inference, outputs summarised and saved as .npy.

use super::{parse_dims, parse_pairs, random_tensor, stats, Rng};
use anyhow::{bail, Context, Result};
use clap::Args;
use floe_engine::exec::Bindings;
use floe_engine::{Plan, Session};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct RunArgs {
    /// The model (.onnx or .floe).
    model: PathBuf,
    /// An input as NAME=FILE.npy (repeat for several). Inputs not given are random.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Value of a symbolic dim, e.g. --dim T=100 (repeat for several).
    #[arg(long = "dim", value_name = "SYM=N")]
    dims: Vec<String>,
    /// Where to write one NAME.npy per output.
    #[arg(long, value_name = "DIR", default_value = "floe-out")]
    output_dir: PathBuf,
    /// Seed for random inputs (floats uniform in [-1, 1), integers in [0, 10)).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: RunArgs) -> Result<ExitCode> {
    let symbols = parse_dims(&a.dims)?;
    let model = super::load_model(&a.model)?;
    let g = model.graph();
    let mut given: HashMap<String, floe_engine::Tensor> = HashMap::new();
    for (name, file) in parse_pairs(&a.inputs, "--input")? {
        if !g.inputs.iter().any(|&i| g.values[i].name == name) {
            let names: Vec<&str> = g.inputs.iter().map(|&i| g.values[i].name.as_str()).collect();
            bail!("--input {name}=...: the model has no input '{name}' (inputs: {})", names.join(", "));
        }
        let t = floe_engine::npy::read(file.as_ref())?;
        given.insert(name, t);
    }
    let mut b = Bindings { symbols, ..Default::default() };
    for (k, t) in &given {
        b.shapes.insert(k.clone(), t.shape().to_vec());
    }
    let plan = Arc::new(Plan::new(g, &b).with_context(|| format!("{}: cannot plan the model", a.model.display()))?);
    let mut rng = Rng::new(a.seed);
    let mut inputs = Vec::new();
    for p in plan.inputs() {
        let t = match given.remove(&p.name) {
            Some(t) => t,
            None => random_tensor(p.dtype, &p.shape, &mut rng)?,
        };
        println!("input  {:<20} {} {:?}  {}", p.name, p.dtype, p.shape, stats(&t));
        inputs.push(t);
    }
    let start = std::time::Instant::now();
    let outs = Session::new(plan.clone()).run(inputs).with_context(|| format!("{}: run failed", a.model.display()))?;
    let took = start.elapsed();
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("cannot create {}", a.output_dir.display()))?;
    for (name, t) in plan.output_names().iter().zip(&outs) {
        println!("output {:<20} {} {:?}  {}", name, t.dtype(), t.shape(), stats(t));
        let file: String = name
            .chars()
            .map(|c| if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' { c } else { '_' })
            .collect();
        let path = a.output_dir.join(format!("{file}.npy"));
        floe_engine::npy::write(&path, t)?;
    }
    println!("ran in {:.3} ms; outputs written to {}", took.as_secs_f64() * 1e3, a.output_dir.display());
    Ok(ExitCode::SUCCESS)
}
