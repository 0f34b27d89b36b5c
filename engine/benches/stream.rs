//! Per-push latency of streaming models: one frame pushed after a history of
//! 100, 1000 and 10000 frames (flat for models with O(1) state per step), next to
//! re-running the whole window of that many frames in the same process (what
//! streaming without per-op state costs). 1 thread.
//!
//!     cargo bench -p floe-engine --bench stream
//!     FLOE_STREAM_MODELS=lmuformer_kws cargo bench -p floe-engine --bench stream

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use floe_engine::exec::{Bindings, SessionOptions};
use floe_engine::stream::{StreamConfig, StreamMode, StreamOptions, StreamSession};
use floe_engine::{Graph, Plan, Session, Tensor};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Streamable models with O(1) state per frame (a KV cache grows by design).
const MODELS: &[&str] =
    &["linear_transformer", "linear_transformer_onnx", "lmuformer_kws", "lmuformer_kws_spiking", "gru_kws"];
const HISTORIES: &[usize] = &[100, 1000, 10000];

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models")
}

fn load(name: &str) -> Option<Graph> {
    let path = models_dir().join(format!("{name}.onnx"));
    if !path.exists() {
        return None;
    }
    let mut m = floe_convert::load(path).expect("import");
    floe_convert::pipeline::optimize(&mut m.graph).expect("optimize");
    Some(m.graph)
}

/// A deterministic input of `frames` frames for each graph input (time on the
/// axis the stream analysis found).
fn input(g: &Graph, s: &StreamSession, frames: usize) -> Vec<Tensor> {
    g.inputs
        .iter()
        .map(|&id| {
            let fact = &g.values[id].fact;
            let axis = s.analysis().time_axis[id];
            let shape: Vec<usize> = fact
                .shape
                .as_ref()
                .expect("declared shape")
                .0
                .iter()
                .enumerate()
                .map(|(i, d)| if Some(i) == axis { frames } else { d.fixed().unwrap_or(1) })
                .collect();
            let n: usize = shape.iter().product();
            Tensor::from_vec(&shape, (0..n).map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0).collect())
                .expect("input")
        })
        .collect()
}

fn stream(g: &Graph) -> StreamSession {
    let config = StreamConfig {
        symbol: "T".into(),
        mode: StreamMode::Stateful(StreamOptions::default()),
        bindings: Bindings::default(),
        session: SessionOptions { threads: 1 },
    };
    StreamSession::new(g, config).expect("streamable")
}

fn bench(c: &mut Criterion) {
    let only = std::env::var("FLOE_STREAM_MODELS").ok();
    for &name in MODELS {
        if only.as_ref().is_some_and(|o| !o.split(',').any(|m| m == name)) {
            continue;
        }
        let Some(g) = load(name) else { continue };
        let mut group = c.benchmark_group(format!("stream/{name}"));
        group.sample_size(20).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        for &h in HISTORIES {
            // One push of 1 frame after h frames of history.
            let mut s = stream(&g);
            let history = input(&g, &s, 100);
            for _ in 0..h / 100 {
                s.push_borrowed(&history).expect("history");
            }
            let frame = input(&g, &s, 1);
            s.push_borrowed(&frame).expect("first 1-frame push");
            group.bench_function(format!("push_1_frame/history_{h}"), |b| {
                b.iter(|| black_box(s.push_borrowed(&frame).expect("push").len()))
            });
            // The whole window of h frames, re-run.
            let window = input(&g, &s, h);
            let mut bind = Bindings::default();
            for (&id, t) in g.inputs.iter().zip(&window) {
                bind.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
            }
            let plan = Arc::new(Plan::new(&g, &bind).expect("plan"));
            let mut whole = Session::with_options(plan, SessionOptions { threads: 1 });
            group.bench_function(format!("rerun_window/history_{h}"), |b| {
                b.iter_batched_ref(
                    || (),
                    |_| black_box(whole.run_borrowed(&window, |_, _| {}).expect("run").len()),
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
