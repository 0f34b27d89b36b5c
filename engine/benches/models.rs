//! End-to-end latency of the differential-test models (examples/models) in floe,
//! tract-onnx and rten, same process, same inputs (the committed reference
//! inputs), at 1 thread and at all physical cores; and, one thread, self-attention
//! over 2048 tokens (examples/models/attention_2048*.onnx, 2 heads of 64, random
//! inputs) as floe's fused Attention op against the same engine running the
//! exporter's MatMul/Softmax ops unfused (`--attention unfused`) and tract.
//!
//!     cargo bench -p floe-engine --bench models

use criterion::{criterion_group, criterion_main, Criterion};
use floe_engine::exec::{physical_cores, Bindings, SessionOptions};
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

fn floe_session(name: &str, ins: &[Tensor], threads: usize) -> Session {
    floe_session_with(name, ins, threads, true)
}

fn floe_session_with(name: &str, ins: &[Tensor], threads: usize, fuse_attention: bool) -> Session {
    let mut m = floe_convert::load(models_dir().join(format!("{name}.onnx"))).expect("import");
    floe_convert::pipeline::optimize_with(&mut m.graph, fuse_attention).expect("optimize");
    let mut b = Bindings::default();
    for (&id, t) in m.graph.inputs.iter().zip(ins) {
        b.shapes.insert(m.graph.values[id].name.clone(), t.shape().to_vec());
    }
    Session::with_options(Arc::new(Plan::new(&m.graph, &b).expect("plan")), SessionOptions { threads })
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
    let all = physical_cores();
    let mut counts = vec![1];
    if all > 1 {
        counts.push(all);
    }
    for threads in counts {
        let mut g = c.benchmark_group(format!("models_{threads}_thread"));
        g.sample_size(30);
        for name in ["mlp", "keyword_cnn", "transformer_encoder", "gru", "lstm"] {
            let ins = inputs(name);
            let mut s = floe_session(name, &ins, threads);
            g.bench_function(format!("{name}/floe"), |b| {
                b.iter(|| black_box(s.run_borrowed(&ins, |_, _| {}).expect("run").len()))
            });
            // tract runs on the calling thread (its default build has no thread pool).
            let (plan, values) = tract_plan(name, &ins);
            g.bench_function(format!("{name}/tract"), |b| {
                b.iter(|| black_box(plan.run(values.clone()).expect("tract run")))
            });
            rten_baseline::bench(&mut g, name, &ins, threads);
        }
        g.finish();
    }
}

fn attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_2048_1_thread");
    g.sample_size(10);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    };
    let shape = [1usize, 2, 2048, 64];
    let ins: Vec<Tensor> =
        (0..3).map(|_| Tensor::from_vec(&shape, random(shape.iter().product())).expect("tensor")).collect();
    for name in ["attention_2048", "attention_2048_causal"] {
        for (label, fuse) in [("floe", true), ("floe-unfused", false)] {
            let mut s = floe_session_with(name, &ins, 1, fuse);
            g.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| black_box(s.run_borrowed(&ins, |_, _| {}).expect("run").len()))
            });
        }
        let (plan, values) = tract_plan(name, &ins);
        g.bench_function(format!("{name}/tract"), |b| {
            b.iter(|| black_box(plan.run(values.clone()).expect("tract run")))
        });
    }
    g.finish();
}

criterion_group!(benches, bench, attention);
criterion_main!(benches);

/// rten, loading the same ONNX file, with its own thread pool of `threads`.
mod rten_baseline {
    use super::{models_dir, Tensor};
    use criterion::measurement::WallTime;
    use criterion::BenchmarkGroup;
    use std::hint::black_box;
    use std::sync::Arc;

    pub fn bench(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, ins: &[Tensor], threads: usize) {
        let model = match rten::Model::load_file(models_dir().join(format!("{name}.onnx"))) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("rten cannot load {name}: {e}");
                return;
            }
        };
        let mut opts = rten::RunOptions::default();
        opts.thread_pool = Some(Arc::new(rten::ThreadPool::with_num_threads(threads)));
        let ids: Vec<rten::NodeId> = model.input_ids().to_vec();
        let outs: Vec<rten::NodeId> = model.output_ids().to_vec();
        let data: Vec<(Vec<usize>, Vec<f32>)> =
            ins.iter().map(|t| (t.shape().to_vec(), t.as_slice::<f32>().expect("f32").to_vec())).collect();
        let run = || {
            let inputs: Vec<(rten::NodeId, rten::ValueOrView<'_>)> = ids
                .iter()
                .zip(&data)
                .map(|(&id, (shape, v))| {
                    (id, rten_tensor::TensorView::from_data(shape.as_slice(), v.as_slice()).into())
                })
                .collect();
            model.run(inputs, &outs, Some(opts.clone()))
        };
        if let Err(e) = run() {
            eprintln!("rten cannot run {name}: {e}");
            return;
        }
        g.bench_function(format!("{name}/rten"), |b| b.iter(|| black_box(run().expect("rten run").len())));
    }
}
