//! Every differential-test model and every conformance case that passes also passes
//! after convert -> write .floe -> mmap load, with f32 outputs bit-identical to
//! the same converted graph run in memory; f16 and int8 files stay within stated
//! tolerances of onnxruntime's outputs.

use floe_convert::conformance::{case_inputs, list_cases, parse_expectations, run_case_with, Outcome};
use floe_convert::pipeline::optimize;
use floe_engine::exec::Bindings;
use floe_engine::format::{self, Model, ModelInfo, Quantization};
use floe_engine::passes::quantize_weights;
use floe_engine::{npy, Graph, Plan, Session, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn info(q: Quantization) -> ModelInfo {
    ModelInfo {
        producer: "test".into(),
        source: String::new(),
        target: "generic".into(),
        quantization: q,
        quantized: vec![],
        opset: 0,
        stream: None,
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("floe-roundtrip-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Optimises and quantizes `g` as `floe convert` does.
fn convert(g: &Graph, q: Quantization) -> Result<Graph, String> {
    let mut g = g.clone();
    optimize(&mut g).map_err(|e| e.to_string())?;
    quantize_weights(&mut g, q).map_err(|e| e.to_string())?;
    Ok(g)
}

/// Writes `g` to a real file and memory-maps it back.
fn through_file(g: &Graph, name: &str, q: Quantization) -> Result<Graph, String> {
    let p = tmp(name);
    format::write(&p, g, &info(q), &mut |_, _| {}).map_err(|e| e.to_string())?;
    let m = Model::load(&p).map_err(|e| e.to_string())?;
    Ok(m.graph)
}

fn run(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut b = Bindings::default();
    for (&id, t) in g.inputs.iter().zip(inputs) {
        b.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
    }
    Session::new(Arc::new(Plan::new(g, &b).unwrap())).run(inputs.to_vec()).unwrap()
}

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models")
}

fn data(name: &str, prefix: &str) -> Vec<Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(models_dir().join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    files.sort();
    files.iter().map(|p| npy::read(p).unwrap()).collect()
}

/// Largest |got - want| relative to the largest |want| of each output.
fn rel_error(got: &[Tensor], want: &[Tensor]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
            let scale = w.iter().map(|v| v.abs()).fold(1e-12, f64::max);
            g.iter().zip(&w).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max) / scale
        })
        .fold(0.0, f64::max)
}

#[test]
fn differential_models_survive_the_file_in_every_storage_mode() {
    // (quantization, tolerance relative to the output's scale vs onnxruntime)
    let modes = [(Quantization::None, 1e-4), (Quantization::F16, 5e-3), (Quantization::Int8, 5e-2)];
    for name in ["mlp", "keyword_cnn", "transformer_encoder", "gru", "lstm"] {
        let model = floe_convert::load(models_dir().join(format!("{name}.onnx"))).unwrap();
        let (inputs, want) = (data(name, "input_"), data(name, "output_"));
        for (q, tol) in modes {
            let converted = convert(&model.graph, q).unwrap();
            let loaded = through_file(&converted, &format!("{name}-{q}.floe"), q).unwrap();
            let (mem, file) = (run(&converted, &inputs), run(&loaded, &inputs));
            assert_eq!(mem, file, "{name} ({q}): file and in-memory outputs differ");
            let err = rel_error(&file, &want);
            assert!(err <= tol, "{name} ({q}): relative error {err:.2e} > {tol:.0e}");
        }
    }
    // floe's own ops (LMUMemory, LIF, SpikeLinear) through the file, unquantized
    // (quantized weights would move membrane potentials across thresholds)
    for name in ["lmuformer_kws", "lmuformer_kws_spiking"] {
        let model = floe_convert::load(models_dir().join(format!("{name}.onnx"))).unwrap();
        let (inputs, want) = (data(name, "input_"), data(name, "output_"));
        let converted = convert(&model.graph, Quantization::None).unwrap();
        let loaded = through_file(&converted, &format!("{name}.floe"), Quantization::None).unwrap();
        let (mem, file) = (run(&converted, &inputs), run(&loaded, &inputs));
        assert_eq!(mem, file, "{name}: file and in-memory outputs differ");
        let err = rel_error(&file, &want);
        assert!(err <= 1e-4, "{name}: relative error {err:.2e} > 1e-4");
    }
}

#[test]
fn passing_conformance_cases_pass_after_the_file_round_trip() {
    let root = std::env::var_os("FLOE_ONNX_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../conformance-data/node"));
    let expect =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance_expected.txt"))
            .unwrap_or_default();
    let passing: Vec<String> =
        parse_expectations(&expect).into_iter().filter(|(_, s)| s == "passed").map(|(n, _)| n).collect();
    let cases = list_cases(&root).unwrap_or_default();
    assert!(!cases.is_empty(), "no conformance data: run `bash scripts/prepare-conformance.sh`");
    let mut failures = Vec::new();
    let mut checked = 0;
    for dir in cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if !passing.contains(&name) {
            continue;
        }
        let prepare = |g: &Graph| -> Result<Graph, String> {
            let c = convert(g, Quantization::None)?;
            let loaded = through_file(&c, &format!("{name}.floe"), Quantization::None)?;
            Ok(loaded)
        };
        checked += 1;
        if let Outcome::Failed(m) | Outcome::Unsupported(m) = run_case_with(&dir, &prepare) {
            failures.push(format!("{name}: {m}"));
            continue;
        }
        // The file must not change a single bit of what the converted graph computes.
        let imported = floe_convert::load(dir.join("model.onnx")).unwrap();
        let converted = convert(&imported.graph, Quantization::None).unwrap();
        let loaded = through_file(&converted, &format!("{name}.floe"), Quantization::None).unwrap();
        for inputs in case_inputs(&dir).unwrap_or_default() {
            let (mem, file) = (run(&converted, &inputs), run(&loaded, &inputs));
            let same = mem.len() == file.len()
                && mem
                    .iter()
                    .zip(&file)
                    .all(|(a, b)| a.dtype() == b.dtype() && a.shape() == b.shape() && a.bytes() == b.bytes());
            if !same {
                failures.push(format!("{name}: outputs after the file differ from the in-memory graph"));
            }
        }
    }
    println!("floe round trip: {checked} conformance cases checked, {} failed", failures.len());
    assert!(failures.is_empty(), "{} cases fail after the round trip:\n{}", failures.len(), failures.join("\n"));
}
