//! Streaming equals whole-sequence execution: every streamable test model is run
//! once on its whole reference input, then pushed through a `StreamSession` in
//! chunks of 1, 3 and 16 frames and in random splits; the concatenated stream
//! outputs, shifted by the reported delay, must match (max abs error <= 1e-4).
//! The whole-sequence run itself is checked against onnxruntime by
//! tests/differential.rs.

use floe_engine::exec::{Bindings, SessionOptions};
use floe_engine::stream::{StreamConfig, StreamMode, StreamOptions, StreamSession};
use floe_engine::{npy, Graph, Plan, Session, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models")
}

fn load(name: &str) -> (Graph, Vec<Tensor>) {
    let mut g =
        floe_convert::load(models_dir().join(format!("{name}.onnx"))).unwrap_or_else(|e| panic!("{name}: {e}")).graph;
    floe_convert::pipeline::optimize(&mut g).unwrap();
    let dir = models_dir().join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("input_"))
        .collect();
    files.sort();
    (g, files.iter().map(|p| npy::read(p).unwrap()).collect())
}

fn whole(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut b = Bindings::default();
    for (&id, t) in g.inputs.iter().zip(inputs) {
        b.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
    }
    let plan = Arc::new(Plan::new(g, &b).unwrap());
    Session::with_options(plan, SessionOptions { threads: 1 }).run(inputs.to_vec()).unwrap()
}

fn config(mode: StreamMode) -> StreamConfig {
    StreamConfig { symbol: "T".into(), mode, bindings: Bindings::default(), session: SessionOptions { threads: 1 } }
}

/// Frames `start..start+len` of `t` along `axis` (test-side, independent of the
/// engine's frame helpers).
fn frames(t: &Tensor, axis: usize, start: usize, len: usize) -> Vec<f32> {
    let s = t.shape();
    let v = t.as_slice::<f32>().unwrap();
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        let base = o * s[axis] * inner;
        out.extend_from_slice(&v[base + start * inner..base + (start + len) * inner]);
    }
    out
}

fn chunk(t: &Tensor, axis: usize, start: usize, len: usize) -> Tensor {
    let mut shape = t.shape().to_vec();
    shape[axis] = len;
    Tensor::from_vec(&shape, frames(t, axis, start, len)).unwrap()
}

/// Pushes `inputs` split at `sizes` and compares with the whole-sequence outputs.
fn check_stream(name: &str, g: &Graph, inputs: &[Tensor], want: &[Tensor], sizes: &[usize]) {
    let mut s = StreamSession::new(g, config(StreamMode::Stateful(StreamOptions::default())))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let axes = s.analysis().stream_inputs.clone();
    let in_axes: Vec<Option<usize>> =
        g.inputs.iter().map(|i| axes.iter().find(|(v, _)| v == i).map(|&(_, a)| a)).collect();
    let total = inputs[0].shape()[in_axes[0].unwrap()];
    let mut got: Vec<Vec<Tensor>> = vec![Vec::new(); want.len()];
    let mut at = 0;
    for &n in sizes.iter().cycle() {
        if at >= total {
            break;
        }
        let n = n.min(total - at);
        let chunk_in: Vec<Tensor> =
            inputs.iter().zip(&in_axes).map(|(t, a)| a.map_or_else(|| t.clone(), |a| chunk(t, a, at, n))).collect();
        let outs = s.push(&chunk_in).unwrap_or_else(|e| panic!("{name} push at {at}: {e}"));
        for (k, o) in outs.into_iter().enumerate() {
            got[k].push(o);
        }
        at += n;
    }
    let delays = s.output_delays();
    for (k, w) in want.iter().enumerate() {
        match s.output_axes()[k] {
            Some(a) => {
                let d = delays[k];
                let len = w.shape()[a] - d;
                let streamed: Vec<f32> = {
                    // concatenate the pushes along the axis, then take frames d..
                    let mut cat = Vec::new();
                    let outer: usize = w.shape()[..a].iter().product();
                    for o in 0..outer {
                        for p in &got[k] {
                            let inner: usize = p.shape()[a + 1..].iter().product();
                            let n = p.shape()[a];
                            cat.extend_from_slice(&p.as_slice::<f32>().unwrap()[o * n * inner..(o + 1) * n * inner]);
                        }
                    }
                    let full = Tensor::from_vec(w.shape(), cat).unwrap();
                    frames(&full, a, d, len)
                };
                let reference = frames(w, a, 0, len);
                let worst = streamed.iter().zip(&reference).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-4, "{name} output {k}, chunks {sizes:?}: max abs error {worst:e} (delay {d})");
            }
            None => {
                let last = got[k].last().unwrap();
                let worst = last
                    .as_slice::<f32>()
                    .unwrap()
                    .iter()
                    .zip(w.as_slice::<f32>().unwrap())
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(worst <= 1e-4, "{name} output {k} (final state), chunks {sizes:?}: max abs error {worst:e}");
            }
        }
    }
}

/// A fixed-seed pseudo-random split of `total` frames into chunks of 1..=max.
fn random_split(seed: u64, max: usize) -> Vec<usize> {
    let mut x = seed;
    (0..64)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            1 + (x % max as u64) as usize
        })
        .collect()
}

fn check_all_chunkings(name: &str, delay: usize) {
    let (g, inputs) = load(name);
    let want = whole(&g, &inputs);
    let s = StreamSession::new(&g, config(StreamMode::Stateful(StreamOptions::default()))).unwrap();
    assert!(s.output_delays().iter().all(|&d| d == delay), "{name}: delays {:?}", s.output_delays());
    for sizes in [vec![1], vec![3], vec![16], random_split(7, 9), random_split(11, 20)] {
        check_stream(name, &g, &inputs, &want, &sizes);
    }
}

#[test]
fn gru_kws_streams_like_the_whole_sequence() {
    check_all_chunkings("gru_kws", 1);
}

#[test]
fn causal_transformer_streams_like_the_whole_sequence() {
    check_all_chunkings("causal_transformer", 1);
}

#[test]
fn lmuformer_streams_like_the_whole_sequence() {
    // two k=3 look-ahead convs in the tokenizer: 2 frames of delay
    check_all_chunkings("lmuformer_kws", 2);
}

#[test]
fn spiking_lmuformer_streams_like_the_whole_sequence() {
    check_all_chunkings("lmuformer_kws_spiking", 2);
}

#[test]
fn linear_transformers_stream_like_the_whole_sequence() {
    // the plain-op Katharopoulos form (fused into the recurrent op) and ONNX LinearAttention
    check_all_chunkings("linear_transformer", 0);
    check_all_chunkings("linear_transformer_onnx", 0);
}

#[test]
fn causal_conv_with_state_streams_like_the_whole_sequence() {
    check_all_chunkings("causal_conv_block", 0);
}

#[test]
fn running_sum_streams_like_the_whole_sequence() {
    check_all_chunkings("running_sum", 0);
}

#[test]
fn gru_and_lstm_stream_with_their_final_state() {
    check_all_chunkings("gru", 0);
    check_all_chunkings("lstm", 0);
}

fn config_s(mode: StreamMode) -> StreamConfig {
    StreamConfig { symbol: "S".into(), ..config(mode) }
}

#[test]
fn non_causal_attention_is_refused_naming_the_node_and_windowed_mode_runs_it() {
    let (g, inputs) = load("transformer_encoder");
    let err = StreamSession::new(&g, config_s(StreamMode::Stateful(StreamOptions::default())))
        .err()
        .expect("non-causal attention must not stream")
        .to_string();
    assert!(err.contains("non-causal attention") && err.contains("(attention)"), "{err}");
    assert!(err.contains("windowed:N"), "{err}");

    // windowed:4, one frame per push: each push's output is the last frame of
    // the model run on the last 4 frames.
    let n = 4;
    let mut s = StreamSession::new(&g, config_s(StreamMode::Windowed(n))).unwrap();
    let total = inputs[0].shape()[1];
    for at in 0..total {
        let chunk_in: Vec<Tensor> = inputs.iter().map(|t| chunk(t, 1, at, 1)).collect();
        let out = s.push(&chunk_in).unwrap();
        if at + 1 >= n {
            let window: Vec<Tensor> = inputs.iter().map(|t| chunk(t, 1, at + 1 - n, n)).collect();
            let want = whole(&g, &window);
            let w = frames(&want[0], 1, n - 1, 1);
            let got = out[0].as_slice::<f32>().unwrap();
            let worst = got.iter().zip(&w).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-5, "frame {at}: {worst:e}");
        }
    }
}

#[test]
fn reset_starts_a_new_stream_and_state_size_is_reported() {
    let (g, inputs) = load("lmuformer_kws_spiking");
    let mut s = StreamSession::new(&g, config(StreamMode::Stateful(StreamOptions::default()))).unwrap();
    // LIF membranes and the LMU memory, conv rings: some hundreds of bytes
    assert!(s.state_bytes() > 100, "{}", s.state_bytes());
    let chunks: Vec<Tensor> = (0..5).map(|i| chunk(&inputs[0], 1, i * 4, 4)).collect();
    let first: Vec<Vec<f32>> = chunks
        .iter()
        .map(|c| s.push(std::slice::from_ref(c)).unwrap()[0].as_slice::<f32>().unwrap().to_vec())
        .collect();
    s.reset().unwrap();
    assert_eq!(s.frames(), 0);
    let again: Vec<Vec<f32>> = chunks
        .iter()
        .map(|c| s.push(std::slice::from_ref(c)).unwrap()[0].as_slice::<f32>().unwrap().to_vec())
        .collect();
    assert_eq!(first, again);
}
