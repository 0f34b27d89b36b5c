//! One module per subcommand; shared helpers for loading models and inputs.

pub mod bench;
pub mod compare;
#[cfg(feature = "onnx")]
pub mod conformance;
#[cfg(feature = "onnx")]
pub mod convert;
pub mod inspect;
#[cfg(feature = "onnx")]
pub mod ops;
pub mod run;
pub mod stream;
pub mod targets;

use anyhow::{bail, Context, Result};
use floe_engine::format::TargetRecord;
use floe_engine::{DType, Element, Tensor};
use std::collections::HashMap;

/// A model from either file kind.
pub enum LoadedModel {
    #[cfg(feature = "onnx")]
    Onnx(floe_convert::ImportedModel),
    Floe(Box<floe_engine::format::Model>),
}

impl LoadedModel {
    pub fn graph(&self) -> &floe_engine::Graph {
        match self {
            #[cfg(feature = "onnx")]
            LoadedModel::Onnx(m) => &m.graph,
            LoadedModel::Floe(m) => &m.graph,
        }
    }
}

/// What a runtime-only build (no `onnx` feature) says when asked for ONNX.
#[cfg(not(feature = "onnx"))]
const NO_ONNX: &str = "this floe was built without ONNX import (runtime only); convert the model with a full \
     build: floe convert MODEL.onnx --target PRESET";

/// A subcommand that needs the ONNX importer, asked of a runtime-only build.
#[cfg(not(feature = "onnx"))]
pub fn without_onnx(command: &str) -> Result<std::process::ExitCode> {
    match command {
        "convert" | "conformance" | "ops" => bail!("'floe {command}': {NO_ONNX}"),
        _ => bail!("unknown command '{command}' (see floe --help)"),
    }
}

/// The CPU requirements of the preset a `.floe` file was converted for: those the
/// file records, else those of the preset of that name in this floe (version 1
/// files, or files written without a record). `None` if neither says.
fn requirements(rec: &TargetRecord) -> Option<(String, String, Vec<String>)> {
    if rec.has_requirements() {
        return Some((rec.kernels.clone(), rec.arch.clone(), rec.cpu_features.clone()));
    }
    let p = floe_targets::preset(&rec.preset).ok()?;
    Some((p.kernels.to_string(), p.arch.to_string(), p.features.iter().map(|f| f.to_string()).collect()))
}

/// Checks a `.floe` file's preset against this CPU. `Ok(None)`: its kernels run
/// here; `Ok(Some(warning))`: they do not, but every weight is stored in the
/// portable plain layout, so floe runs it with this machine's kernels and the
/// results are the same (the warning names both presets); `Err`: a packed layout
/// this CPU cannot use (named both presets). See docs/cross-compiling.md.
pub fn check_target(m: &floe_engine::format::Model) -> Result<Option<String>> {
    let rec = &m.target;
    let here = floe_targets::host_preset().name;
    let Some((kernels, arch, features)) = requirements(rec) else {
        return Ok(Some(format!(
            "{} was converted for the preset '{}', which this floe does not know; running it with the kernels \
             of this machine ({here})",
            m.path.display(),
            rec.preset
        )));
    };
    let Err(why) = floe_targets::check_host(&arch, features.iter().map(String::as_str)) else {
        return Ok(None);
    };
    let what = format!("{} was converted for {} ({kernels} kernels) but {why}", m.path.display(), rec.preset);
    if m.tensors.iter().any(|t| t.layout != floe_engine::format::Layout::Plain) {
        bail!("{what}: its weights are packed for that preset; convert the model again with --target {here}");
    }
    Ok(Some(format!(
        "{what}; its weights are stored in the portable layout, so it runs with this machine's kernels \
         ({here}) and gives the same results. Convert with --target {here} to match this machine."
    )))
}

/// Loads a `.floe` file and warns (stderr) if it was converted for another preset.
pub fn load_floe(path: &std::path::Path) -> Result<floe_engine::format::Model> {
    let m = floe_engine::format::Model::load(path)?;
    if let Some(w) = check_target(&m)? {
        eprintln!("warning: {w}");
    }
    Ok(m)
}

/// True if the file starts with the `.floe` magic.
pub fn is_floe(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && magic == floe_engine::format::header::MAGIC
}

/// Loads a `.floe` file (memory-mapped) or imports an ONNX model and converts it
/// in memory with the same passes `floe convert` runs (so both give the same outputs).
pub fn load_model(path: &std::path::Path) -> Result<LoadedModel> {
    if is_floe(path) {
        return Ok(LoadedModel::Floe(Box::new(load_floe(path)?)));
    }
    #[cfg(feature = "onnx")]
    {
        let mut m = floe_convert::load(path)?;
        floe_convert::pipeline::optimize(&mut m.graph).with_context(|| format!("{}: optimising", path.display()))?;
        Ok(LoadedModel::Onnx(m))
    }
    #[cfg(not(feature = "onnx"))]
    {
        if !path.exists() {
            bail!("{}: no such file", path.display());
        }
        bail!("{} is not a .floe file: {NO_ONNX}", path.display())
    }
}

/// Parses repeated `NAME=VALUE` flags.
pub fn parse_pairs(items: &[String], flag: &str) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => bail!("{flag} expects NAME=VALUE, got '{s}'"),
        })
        .collect()
}

/// Parses `--dim T=100` flags into symbol bindings.
pub fn parse_dims(items: &[String]) -> Result<HashMap<String, usize>> {
    parse_pairs(items, "--dim")?
        .into_iter()
        .map(|(k, v)| {
            let n: usize = v.parse().with_context(|| format!("--dim {k}={v}: '{v}' is not a non-negative integer"))?;
            if n > 1 << 24 {
                bail!("--dim {k}={v} is absurdly large");
            }
            Ok((k, n))
        })
        .collect()
}

/// SplitMix64: a small, seeded generator for reproducible random inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// A random tensor: floats uniform in [-1, 1), integers in [0, 10), bools fair.
pub fn random_tensor(dtype: DType, shape: &[usize], rng: &mut Rng) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    if dtype == DType::Bool {
        let v: Vec<bool> = (0..n).map(|_| rng.next_u64() & 1 == 1).collect();
        return Ok(Tensor::from_bools(shape, &v)?);
    }
    fn fill<T: Element>(shape: &[usize], n: usize, rng: &mut Rng, float: bool) -> Result<Tensor> {
        let v: Vec<T> = (0..n)
            .map(|_| if float { T::from_f64(rng.next_f64()) } else { T::from_i64((rng.next_u64() % 10) as i64) })
            .collect();
        Ok(Tensor::from_vec(shape, v)?)
    }
    let float = dtype.is_float();
    floe_engine::dispatch_numeric!(dtype, T => fill::<T>(shape, n, rng, float), bool => unreachable!())
}

/// min / max / mean / std of a tensor's values (as f64), and NaN count.
pub fn stats(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    if v.is_empty() {
        return "empty".into();
    }
    let nan = v.iter().filter(|x| x.is_nan()).count();
    let fin: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    let n = fin.len().max(1) as f64;
    let mean = fin.iter().sum::<f64>() / n;
    let var = fin.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let min = fin.iter().copied().fold(f64::INFINITY, f64::min);
    let max = fin.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut s = format!("min {min:.6} max {max:.6} mean {mean:.6} std {:.6}", var.sqrt());
    if nan > 0 {
        s.push_str(&format!(" nan {nan}"));
    }
    s
}
