//! The `.floe` file: round trip, validation before any view, corruption never panics.

use floe_engine::exec::Bindings;
use floe_engine::format::{self, Model, ModelInfo, Quantization};
use floe_engine::ops::elementwise::{BinaryOp, ElementwiseOp, UnaryOp};
use floe_engine::ops::matmul::MatMulOp;
use floe_engine::{DType, Fact, Graph, Plan, Session, Shape, Tensor};
use std::sync::Arc;

fn info() -> ModelInfo {
    ModelInfo {
        producer: "test".into(),
        source: "test.onnx".into(),
        target: "generic".into(),
        quantization: Quantization::None,
        quantized: vec![],
        opset: 17,
        stream: None,
    }
}

/// y = relu(x @ w + b), with weights of odd sizes so padding is exercised.
fn small_graph() -> Graph {
    let mut g = Graph::default();
    let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[2, 3])));
    g.inputs = vec![x];
    let w = g.add_const("w", Tensor::from_vec(&[3, 5], (0..15).map(|i| i as f32 * 0.1 - 0.7).collect()).unwrap());
    let b = g.add_const("b", Tensor::from_vec(&[5], vec![0.5f32, -0.5, 0.25, 0.0, 1.0]).unwrap());
    let m = g.add_value("m", Fact::unknown());
    g.add_node("mm", MatMulOp::MatMul.into(), vec![Some(x), Some(w)], vec![m]);
    let a = g.add_value("a", Fact::unknown());
    g.add_node("add", ElementwiseOp::Binary(BinaryOp::Add).into(), vec![Some(m), Some(b)], vec![a]);
    let y = g.add_value("y", Fact::unknown());
    g.add_node("relu", ElementwiseOp::Unary(UnaryOp::Relu).into(), vec![Some(a)], vec![y]);
    g.outputs = vec![y];
    g
}

fn run(g: &Graph) -> Vec<f32> {
    let plan = Arc::new(Plan::new(g, &Bindings::default()).unwrap());
    let x = Tensor::from_vec(&[2, 3], vec![1.0f32, -2.0, 0.5, 0.0, 3.0, -1.0]).unwrap();
    Session::new(plan).run(vec![x]).unwrap()[0].as_slice::<f32>().unwrap().to_vec()
}

#[test]
fn round_trip_is_bit_identical_and_weights_are_borrowed() {
    let g = small_graph();
    let bytes = format::to_bytes(&g, &info()).unwrap();
    let m = Model::from_bytes(bytes, "small.floe").unwrap();
    assert_eq!(m.info, info());
    let w = m.graph.values.iter().find(|v| v.name == "w").unwrap().konst.as_ref().unwrap();
    assert!(w.is_borrowed(), "weights must be views into the file, not copies");
    assert_eq!(run(&g), run(&m.graph));
    for e in &m.tensors {
        assert_eq!(e.offset % 64, 0);
    }
    assert!(m.tensors.iter().any(|e| e.name == "w"));
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    let bytes = format::to_bytes(&small_graph(), &info()).unwrap();
    for cut in 0..bytes.len() {
        let err = Model::from_bytes(bytes[..cut].to_vec(), "cut.floe").err().expect("truncated file accepted");
        assert!(err.to_string().contains("cut.floe"), "{err}");
    }
}

#[test]
fn flipped_bytes_never_panic_and_any_accepted_file_validates() {
    let bytes = format::to_bytes(&small_graph(), &info()).unwrap();
    let mut accepted = 0;
    for i in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[i] ^= mask;
            if let Ok(m) = Model::from_bytes(b, "flip.floe") {
                accepted += 1;
                m.graph.validate().unwrap();
                // a model that loads must also plan and run without panicking
                if let Ok(p) = Plan::new(&m.graph, &Bindings::default()) {
                    let _ = Session::new(Arc::new(p)).run(vec![Tensor::zeros(DType::F32, &[2, 3]).unwrap()]);
                }
            }
        }
    }
    // only flips inside the data section (weights) or padding can be accepted
    assert!(accepted > 0);
}

#[test]
fn newer_format_version_is_refused_with_the_version_we_read() {
    let mut bytes = format::to_bytes(&small_graph(), &info()).unwrap();
    bytes[8..12].copy_from_slice(&(format::FORMAT_VERSION + 1).to_le_bytes());
    let msg = Model::from_bytes(bytes, "new.floe").err().unwrap().to_string();
    assert!(
        msg.contains(&format!("this floe reads version {}", format::FORMAT_VERSION)) && msg.contains("newer"),
        "{msg}"
    );
}

#[test]
fn model_serves_sessions_on_several_threads() {
    let bytes = format::to_bytes(&small_graph(), &info()).unwrap();
    let m = Arc::new(Model::from_bytes(bytes, "shared.floe").unwrap());
    let want = run(&small_graph());
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || run(&m.graph))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}
