//! `Session::run_borrowed` allocates nothing after the first run on the example
//! models (every op on their path has a prepared kernel writing into planned
//! buffers), and outputs agree at 1 and N threads.

use floe_engine::exec::{Bindings, SessionOptions};
use floe_engine::{npy, Plan, Session, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Counts allocations made by the current thread.
struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counter is a
// const-initialised thread-local Cell (no allocation, no reentrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models")
}

fn load(name: &str) -> (Arc<Plan>, Vec<Tensor>) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(models_dir().join(name))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with("input_")))
        .collect();
    files.sort();
    let ins: Vec<Tensor> = files.iter().map(|p| npy::read(p).unwrap()).collect();
    let mut m = floe_convert::load(models_dir().join(format!("{name}.onnx"))).unwrap();
    floe_convert::pipeline::optimize(&mut m.graph).unwrap();
    let mut b = Bindings::default();
    for (&id, t) in m.graph.inputs.iter().zip(&ins) {
        b.shapes.insert(m.graph.values[id].name.clone(), t.shape().to_vec());
    }
    (Arc::new(Plan::new(&m.graph, &b).unwrap()), ins)
}

#[test]
fn runs_after_the_first_allocate_nothing() {
    for name in ["mlp", "keyword_cnn", "transformer_encoder", "gru", "lstm"] {
        let (plan, ins) = load(name);
        assert_eq!(plan.eval_nodes(), Vec::<&str>::new(), "{name}: nodes without a prepared kernel");
        let mut s = Session::with_options(plan, SessionOptions { threads: 1 });
        for _ in 0..2 {
            s.run_borrowed(&ins, |_, _| {}).unwrap();
        }
        let before = ALLOCS.with(Cell::get);
        for _ in 0..5 {
            s.run_borrowed(&ins, |_, _| {}).unwrap();
        }
        let n = ALLOCS.with(Cell::get) - before;
        assert_eq!(n, 0, "{name}: {n} allocations in 5 runs after warm-up");
    }
}

#[test]
fn outputs_agree_at_one_and_several_threads() {
    for name in ["mlp", "keyword_cnn", "transformer_encoder", "gru", "lstm", "lmuformer_kws", "lmuformer_kws_spiking"] {
        let (plan, ins) = load(name);
        let one = Session::with_options(plan.clone(), SessionOptions { threads: 1 }).run(ins.clone()).unwrap();
        for threads in [2, 3] {
            let many = Session::with_options(plan.clone(), SessionOptions { threads }).run(ins.clone()).unwrap();
            for (a, b) in one.iter().zip(&many) {
                let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-5 * x.abs().max(1e-3), "{name} at {threads} threads: {x} vs {y}");
                }
            }
        }
    }
}

/// `StreamSession::push_borrowed` allocates nothing once a chunk length has been
/// pushed: conv rings, delay lines, GRU state and a windowed KV cache are copied
/// into the state the session already holds.
#[test]
fn stream_pushes_after_the_first_allocate_nothing() {
    use floe_engine::stream::{frames, StreamConfig, StreamMode, StreamOptions, StreamSession};
    for (name, kv_window) in [("causal_transformer", Some(8))] {
        let (_, ins) = load(name);
        let mut m = floe_convert::load(models_dir().join(format!("{name}.onnx"))).unwrap();
        floe_convert::pipeline::optimize(&mut m.graph).unwrap();
        let config = StreamConfig {
            symbol: "T".into(),
            mode: StreamMode::Stateful(StreamOptions { kv_window }),
            bindings: Bindings::default(),
            session: SessionOptions { threads: 1 },
        };
        let mut s = StreamSession::new(&m.graph, config).unwrap();
        let chunks: Vec<Vec<Tensor>> = (0..12).map(|i| vec![frames::slice(&ins[0], 1, i * 2, 2).unwrap()]).collect();
        for c in &chunks[..4] {
            s.push_borrowed(c).unwrap();
        }
        let before = ALLOCS.with(Cell::get);
        for c in &chunks[4..] {
            s.push_borrowed(c).unwrap();
        }
        let n = ALLOCS.with(Cell::get) - before;
        assert_eq!(n, 0, "{name}: {n} allocations in 8 pushes after warm-up");
    }
}

#[test]
fn stream_session_is_send() {
    fn send<T: Send>() {}
    send::<floe_engine::stream::StreamSession>();
}

/// floe's LMUFormer ops (the LMUFormer example models also hold a Concat, which has
/// no prepared kernel yet): x -> LIF -> SpikeLinear -> LMUMemory with both state
/// inputs and outputs, and a LIF without its final_v output.
#[test]
fn lmu_lif_and_spike_linear_allocate_nothing_after_the_first_run() {
    use floe_engine::ops::lif::LifOp;
    use floe_engine::ops::lmu::{Discretizer, LmuMemoryOp};
    use floe_engine::ops::matmul::MatMulOp;
    use floe_engine::{DType, Fact, Graph, Shape};
    // a whole sequence (chunked path) and one streaming frame (the recurrence)
    for t in [24usize, 1] {
        let (c, d) = (8, 16);
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[1, t, c])));
        let v0 = g.add_value("v0", Fact::new(DType::F32, Shape::fixed(&[1, c])));
        let s0 = g.add_value("s0", Fact::new(DType::F32, Shape::fixed(&[1, d])));
        g.inputs = vec![x, v0, s0];
        let (spk, v1) = (g.add_value("spk", Fact::unknown()), g.add_value("v1", Fact::unknown()));
        g.add_node("lif", LifOp::default().into(), vec![Some(x), Some(v0)], vec![spk, v1]);
        let w = g.add_const("w", Tensor::from_vec(&[c, 1], (0..c).map(|i| i as f32 * 0.1 - 0.3).collect()).unwrap());
        let b = g.add_const("b", Tensor::from_vec(&[1], vec![0.2f32]).unwrap());
        let u = g.add_value("u", Fact::unknown());
        g.add_node(
            "fc",
            MatMulOp::Linear { activation: Default::default() }.into(),
            vec![Some(spk), Some(w), Some(b)],
            vec![u],
        );
        let (m, s1) = (g.add_value("m", Fact::unknown()), g.add_value("s1", Fact::unknown()));
        let op = LmuMemoryOp { order: d, theta: 10.0, discretizer: Discretizer::Zoh, dt: 1.0 };
        g.add_node("mem", op.into(), vec![Some(u), Some(s0)], vec![m, s1]);
        let ms = g.add_value("ms", Fact::unknown());
        g.add_node("lif2", LifOp::default().into(), vec![Some(m)], vec![ms]);
        g.outputs = vec![ms, v1, s1];
        assert_eq!(floe_engine::passes::spike_accumulate(&mut g), 1);
        let plan = Arc::new(Plan::new(&g, &Bindings::default()).unwrap());
        assert_eq!(plan.kernel_coverage(), (4, 4));
        let ins = vec![
            Tensor::from_vec(&[1, t, c], (0..t * c).map(|i| ((i * 7) % 11) as f32 * 0.3).collect()).unwrap(),
            Tensor::from_vec(&[1, c], vec![0.1f32; c]).unwrap(),
            Tensor::from_vec(&[1, d], vec![0.05f32; d]).unwrap(),
        ];
        let mut s = Session::with_options(plan, SessionOptions { threads: 1 });
        for _ in 0..2 {
            s.run_borrowed(&ins, |_, _| {}).unwrap();
        }
        let before = ALLOCS.with(Cell::get);
        for _ in 0..5 {
            s.run_borrowed(&ins, |_, _| {}).unwrap();
        }
        let n = ALLOCS.with(Cell::get) - before;
        assert_eq!(n, 0, "T = {t}: {n} allocations in 5 runs after warm-up");
    }
}

/// RNN, GRU and LSTM with every runtime input (sequence_lens, initial_h, initial_c)
/// and both layouts: the prepared kernel keeps its scratch across runs.
#[test]
fn recurrent_layers_with_runtime_states_allocate_nothing_after_the_first_run() {
    use floe_engine::ops::rnn::{Direction, RnnAttrs, RnnOp};
    use floe_engine::{DType, Fact, Graph, Shape};
    let (seq, batch, input, hidden) = (5, 2, 3, 4);
    let values = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| ((i * k) % 13) as f32 * 0.07 - 0.4).collect() };
    for batch_first in [false, true] {
        for (ci, gates) in [(0, 1), (1, 3), (2, 4)] {
            let attrs = RnnAttrs {
                hidden_size: Some(hidden),
                direction: Direction::Bidirectional,
                activations: vec![],
                clip: None,
                batch_first,
            };
            let op = match ci {
                0 => RnnOp::Rnn(attrs),
                1 => RnnOp::Gru { attrs, linear_before_reset: false },
                _ => RnnOp::Lstm { attrs, input_forget: false },
            };
            let n_out = if ci == 2 { 3 } else { 2 };
            let gh = gates * hidden;
            let x_shape = if batch_first { [batch, seq, input] } else { [seq, batch, input] };
            let state = if batch_first { [batch, 2, hidden] } else { [2, batch, hidden] };
            let mut g = Graph::default();
            let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&x_shape)));
            let lens = g.add_value("lens", Fact::new(DType::I32, Shape::fixed(&[batch])));
            let h0 = g.add_value("h0", Fact::new(DType::F32, Shape::fixed(&state)));
            let c0 = g.add_value("c0", Fact::new(DType::F32, Shape::fixed(&state)));
            g.inputs = if ci == 2 { vec![x, lens, h0, c0] } else { vec![x, lens, h0] };
            let w = g.add_const("w", Tensor::from_vec(&[2, gh, input], values(2 * gh * input, 5)).unwrap());
            let r = g.add_const("r", Tensor::from_vec(&[2, gh, hidden], values(2 * gh * hidden, 7)).unwrap());
            let b = g.add_const("b", Tensor::from_vec(&[2, 2 * gh], values(4 * gh, 3)).unwrap());
            let mut node_ins = vec![Some(x), Some(w), Some(r), Some(b), Some(lens), Some(h0)];
            if ci == 2 {
                let p = g.add_const("p", Tensor::from_vec(&[2, 3 * hidden], values(6 * hidden, 11)).unwrap());
                node_ins.extend([Some(c0), Some(p)]);
            }
            let outs: Vec<_> = ["y", "y_h", "y_c"][..n_out].iter().map(|&n| g.add_value(n, Fact::unknown())).collect();
            g.add_node("rnn", op.into(), node_ins, outs.clone());
            g.outputs = outs;
            let plan = Arc::new(Plan::new(&g, &Bindings::default()).unwrap());
            assert_eq!(plan.kernel_coverage(), (1, 1), "layer {ci} batch_first {batch_first}");
            let mut ins = vec![
                Tensor::from_vec(&x_shape, values(seq * batch * input, 3)).unwrap(),
                Tensor::from_vec(&[batch], vec![5i32, 2]).unwrap(),
                Tensor::from_vec(&state, values(2 * batch * hidden, 9)).unwrap(),
            ];
            if ci == 2 {
                ins.push(Tensor::from_vec(&state, values(2 * batch * hidden, 4)).unwrap());
            }
            let mut s = Session::with_options(plan, SessionOptions { threads: 1 });
            for _ in 0..2 {
                s.run_borrowed(&ins, |_, _| {}).unwrap();
            }
            let before = ALLOCS.with(Cell::get);
            for _ in 0..5 {
                s.run_borrowed(&ins, |_, _| {}).unwrap();
            }
            let n = ALLOCS.with(Cell::get) - before;
            assert_eq!(n, 0, "layer {ci} batch_first {batch_first}: {n} allocations in 5 runs after warm-up");
        }
    }
}
