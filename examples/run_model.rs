//! Runs an ONNX model through the Rust API on its reference input and checks the
//! result against onnxruntime's output shipped next to it.
//!
//! cargo run -p floe-convert --example run_model [-- examples/models/mlp.onnx]

use floe_engine::exec::Bindings;
use floe_engine::{npy, Plan, Session};
use std::path::PathBuf;
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let model_path =
        std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| root.join("examples/models/mlp.onnx"));
    let model = floe_convert::load(&model_path)?;
    let data = model_path.with_extension("");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    files.sort();
    let inputs: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("input_"))
        .map(|p| npy::read(p))
        .collect::<Result<_, _>>()?;
    let wants: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().contains("output_"))
        .map(|p| npy::read(p))
        .collect::<Result<_, _>>()?;
    let g = &model.graph;
    let mut b = Bindings::default();
    for (&id, t) in g.inputs.iter().zip(&inputs) {
        b.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
    }
    let plan = Arc::new(Plan::new(g, &b)?);
    let outs = Session::new(plan.clone()).run(inputs)?;
    for ((name, got), want) in plan.output_names().iter().zip(&outs).zip(&wants) {
        let err = got.to_f64_vec().iter().zip(want.to_f64_vec()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        println!("{name}: shape {:?}, max |floe - onnxruntime| = {err:.2e}", got.shape());
    }
    Ok(())
}
