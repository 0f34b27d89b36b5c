//! Runs ONNX backend node tests (`model.onnx` + `test_data_set_*/{input,output}_*.pb`)
//! through the importer and executor, and compares with the stored outputs:
//! floats within `rtol 1e-3, atol 1e-7` (NaN equals NaN), integers and bools exactly.

use crate::onnx;
use floe_engine::exec::Bindings;
use floe_engine::{DType, Plan, Session, Tensor};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const RTOL: f64 = 1e-3;
pub const ATOL: f64 = 1e-7;

/// Per-case absolute tolerances where ONNX's stored outputs carry float32 rounding
/// noise around exact zeros (the same cases onnxruntime's backend test runner
/// overrides in onnx_backend_test_series_overrides.jsonc). Prefix match.
pub const ATOL_OVERRIDES: &[(&str, f64)] = &[
    // inverse DFT of a float32 spectrum: the reference's zeros are ~2e-7, floe's exact
    ("test_dft_inverse", 1e-5),
];

fn atol_for(case: &str) -> f64 {
    ATOL_OVERRIDES.iter().find(|(p, _)| case.starts_with(p)).map_or(ATOL, |&(_, a)| a)
}

/// The outcome of one case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Unsupported(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed(_) => "failed",
            Outcome::Unsupported(_) => "unsupported",
        }
    }
}

/// Test case directories (those holding a `model.onnx`) under `root`, sorted.
pub fn list_cases(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    Ok(v)
}

fn read_pb(path: &Path) -> Result<Tensor, Outcome> {
    let bytes = std::fs::read(path).map_err(|e| Outcome::Failed(format!("{}: {e}", path.display())))?;
    let proto = tract_onnx::pb::TensorProto::decode(bytes.as_slice())
        .map_err(|e| Outcome::Unsupported(format!("{}: not a TensorProto: {e}", path.display())))?;
    onnx::tensor::tensor_from_proto(&proto, path.parent()).map_err(|e| match e {
        onnx::tensor::TensorError::Unsupported(m) => Outcome::Unsupported(format!("test data: {m}")),
        other => Outcome::Failed(format!("{}: {other:?}", path.display())),
    })
}

fn numbered(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|p| {
                    let name = p.file_name()?.to_str()?.to_string();
                    let n = name.strip_prefix(prefix)?.strip_suffix(".pb")?.parse().ok()?;
                    Some((n, p))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// The inputs of every `test_data_set_*` of a case, in set order.
pub fn case_inputs(dir: &Path) -> Result<Vec<Vec<Tensor>>, Outcome> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    sets.sort();
    sets.iter().map(|s| numbered(s, "input_").iter().map(|p| read_pb(p)).collect()).collect()
}

/// Compares one output; `Err` says where it differs.
pub fn compare(name: &str, got: &Tensor, want: &Tensor, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("output '{name}': dtype {} (expected {})", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!("output '{name}': shape {:?} (expected {:?})", got.shape(), want.shape()));
    }
    if want.dtype().is_float() {
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let ok = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + RTOL * b.abs();
            if !ok {
                return Err(format!("output '{name}'[{i}] = {a}, expected {b} (rtol {RTOL}, atol {atol})"));
            }
        }
    } else if got.bytes() != want.bytes() {
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        let i = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!("output '{name}'[{i}] = {}, expected {}", g[i], w[i]));
    }
    Ok(())
}

/// Runs every data set of one case.
pub fn run_case(dir: &Path) -> Outcome {
    run_case_with(dir, &|g| Ok(g.clone()))
}

/// Turns an imported graph into the graph to run (e.g. convert, write, load back).
pub type Prepare<'a> = dyn Fn(&floe_engine::Graph) -> Result<floe_engine::Graph, String> + 'a;

/// Like [`run_case`], running the graph `prepare` makes of the imported one.
pub fn run_case_with(dir: &Path, prepare: &Prepare<'_>) -> Outcome {
    let model = match onnx::load(dir.join("model.onnx")) {
        Ok(m) => m,
        Err(e) if e.is_unsupported() => return Outcome::Unsupported(e.to_string()),
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Failed("no test_data_set_* directory".into());
    }
    let prepared = match prepare(&model.graph) {
        Ok(g) => g,
        Err(m) => return Outcome::Failed(m),
    };
    let g = &prepared;
    for set in sets {
        let inputs: Vec<Tensor> = match numbered(&set, "input_").iter().map(|p| read_pb(p)).collect() {
            Ok(v) => v,
            Err(o) => return o,
        };
        let wants: Vec<Tensor> = match numbered(&set, "output_").iter().map(|p| read_pb(p)).collect() {
            Ok(v) => v,
            Err(o) => return o,
        };
        if inputs.len() != g.inputs.len() {
            return Outcome::Failed(format!("{} inputs in data, model has {}", inputs.len(), g.inputs.len()));
        }
        let mut b = Bindings::default();
        for (&id, t) in g.inputs.iter().zip(&inputs) {
            b.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
        }
        let plan = match Plan::new(g, &b) {
            Ok(p) => Arc::new(p),
            Err(e) => return classify(e),
        };
        let outs = match Session::new(plan.clone()).run(inputs) {
            Ok(o) => o,
            Err(e) => return classify(e),
        };
        if outs.len() != wants.len() {
            return Outcome::Failed(format!("{} outputs, expected {}", outs.len(), wants.len()));
        }
        for ((got, want), name) in outs.iter().zip(&wants).zip(plan.output_names()) {
            let case = dir.file_name().unwrap_or_default().to_string_lossy();
            if let Err(m) = compare(name, got, want, atol_for(&case)) {
                return Outcome::Failed(format!("{}: {m}", set.file_name().unwrap_or_default().to_string_lossy()));
            }
        }
    }
    Outcome::Passed
}

fn classify(e: floe_engine::Error) -> Outcome {
    fn is_unsupported(e: &floe_engine::Error) -> bool {
        match e {
            floe_engine::Error::Unsupported(_) => true,
            floe_engine::Error::Node { source, .. } => is_unsupported(source),
            _ => false,
        }
    }
    if is_unsupported(&e) {
        Outcome::Unsupported(e.to_string())
    } else {
        Outcome::Failed(e.to_string())
    }
}

/// Runs a case, turning a panic into a failure (a panic is always a bug).
pub fn run_case_guarded(dir: &Path) -> Outcome {
    let d = dir.to_path_buf();
    match std::panic::catch_unwind(move || run_case(&d)) {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Outcome::Failed(format!("panicked: {msg}"))
        }
    }
}

/// Parses an expectations file (`name status` per line, `#` comments).
pub fn parse_expectations(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// True for dtypes the conformance data may carry that floe stores.
pub fn dtype_supported(d: DType) -> bool {
    DType::ALL.contains(&d)
}
