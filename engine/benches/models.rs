//! End-to-end latency of the differential-test models (examples/models) in floe
//! and in tract-onnx, same process, same inputs (the committed reference inputs),
//! single-threaded.
//!
//!     cargo bench -p floe-engine --bench models

use criterion::{criterion_group, criterion_main, Criterion};
use floe_engine::exec::Bindings;
use floe_engine::{npy, Plan, Session, Tensor};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::prelude::*;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models")
}

fn inputs(name: &str) -> Vec<Tensor> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(models_dir().join(name))
        .expect("reference data")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("input_")))
        .collect();
    files.sort();
    files.iter().map(|p| npy::read(p).expect("npy")).collect()
}

fn floe_session(name: &str, ins: &[Tensor]) -> Session {
    let mut m = floe_convert::load(models_dir().join(format!("{name}.onnx"))).expect("import");
    floe_convert::pipeline::optimize(&mut m.graph).expect("optimize");
    let mut b = Bindings::default();
    for (&id, t) in m.graph.inputs.iter().zip(ins) {
        b.shapes.insert(m.graph.values[id].name.clone(), t.shape().to_vec());
    }
    Session::new(Arc::new(Plan::new(&m.graph, &b).expect("plan")))
}

type TractPlan = Arc<TypedRunnableModel>;

fn tract_plan(name: &str, ins: &[Tensor]) -> (TractPlan, TVec<TValue>) {
    let mut model = tract_onnx::onnx().model_for_path(models_dir().join(format!("{name}.onnx"))).expect("tract load");
    let mut values = TVec::new();
    for (i, t) in ins.iter().enumerate() {
        let data = t.as_slice::<f32>().expect("f32 inputs");
        let tt = tract_ndarray::ArrayD::from_shape_vec(t.shape(), data.to_vec()).expect("shape").into_tensor();
        model = model.with_input_fact(i, f32::fact(t.shape()).into()).expect("fact");
        values.push(tt.into());
    }
    let plan = model.into_optimized().expect("optimize").into_runnable().expect("runnable");
    (plan, values)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("models_1_thread");
    g.sample_size(30);
    for name in ["mlp", "keyword_cnn", "transformer_encoder", "gru", "lstm"] {
        let ins = inputs(name);
        let mut s = floe_session(name, &ins);
        g.bench_function(format!("{name}/floe"), |b| b.iter(|| black_box(s.run(ins.clone()).expect("run"))));
        let (plan, values) = tract_plan(name, &ins);
        g.bench_function(format!("{name}/tract"), |b| {
            b.iter(|| black_box(plan.run(values.clone()).expect("tract run")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
