//! Import of floe's own ops (ONNX domain `floe`): attributes map onto the engine ops,
//! the optional state inputs/outputs are wired, and bad attributes are errors naming
//! the node and the attribute.

use floe_engine::exec::Bindings;
use floe_engine::{Plan, Session, Tensor};
use prost::Message;
use std::path::PathBuf;
use std::sync::Arc;
use tract_onnx::pb::{
    attribute_proto::AttributeType,
    tensor_shape_proto::{dimension::Value as DimValue, Dimension},
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    ValueInfoProto,
};

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    let dim = dims.iter().map(|&d| Dimension { value: Some(DimValue::DimValue(d)), ..Default::default() }).collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

enum A {
    I(i64),
    F(f32),
    S(&'static str),
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: &[(&str, A)]) -> NodeProto {
    let attribute = attrs
        .iter()
        .map(|(n, a)| {
            let mut p = AttributeProto { name: n.to_string(), ..Default::default() };
            match a {
                A::I(v) => (p.i, p.r#type) = (*v, AttributeType::Int as i32),
                A::F(v) => (p.f, p.r#type) = (*v, AttributeType::Float as i32),
                A::S(v) => (p.s, p.r#type) = (v.as_bytes().to_vec(), AttributeType::String as i32),
            }
            p
        })
        .collect();
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        domain: "floe".into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

fn write(tag: &str, nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: Vec<ValueInfoProto>) -> PathBuf {
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![
            OperatorSetIdProto { domain: String::new(), version: 17 },
            OperatorSetIdProto { domain: "floe".into(), version: 1 },
        ],
        graph: Some(GraphProto { node: nodes, input: inputs, output: outputs, name: "g".into(), ..Default::default() }),
        ..Default::default()
    };
    let d = std::env::temp_dir().join(format!("floe-custom-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join("m.onnx");
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

#[test]
fn lmu_memory_and_lif_import_with_their_state_outputs_and_run() {
    let nodes = vec![
        node("LMUMemory", "mem", &["u", "s0"], &["m", "s1"], &[("order", A::I(4)), ("theta", A::F(3.0))]),
        node("LIF", "lif", &["m"], &["spk", "v"], &[("v_th", A::F(0.2)), ("time_axis", A::I(1))]),
    ];
    let p = write(
        "ok",
        nodes,
        vec![value_info("u", &[1, 5, 1]), value_info("s0", &[1, 4])],
        vec![
            value_info("m", &[1, 5, 4]),
            value_info("s1", &[1, 4]),
            value_info("spk", &[1, 5, 4]),
            value_info("v", &[1, 4]),
        ],
    );
    let g = floe_convert::load(&p).unwrap().graph;
    assert_eq!(g.op_histogram().get("LMUMemory"), Some(&1));
    let plan = Arc::new(Plan::new(&g, &Bindings::default()).unwrap());
    let u = Tensor::from_vec(&[1, 5, 1], vec![1.0f32, 0.5, -0.25, 0.0, 2.0]).unwrap();
    let s0 = Tensor::from_vec(&[1, 4], vec![0.1f32, -0.1, 0.2, 0.0]).unwrap();
    let out = Session::new(plan).run(vec![u, s0]).unwrap();
    let m = out[0].as_slice::<f32>().unwrap();
    assert_eq!(out[1].as_slice::<f32>().unwrap(), &m[16..20], "final_state is the last frame");
    assert_eq!(out[2].shape(), &[1, 5, 4]);
    assert!(out[2].as_slice::<f32>().unwrap().iter().all(|&s| s == 0.0 || s == 1.0));
    assert_eq!(out[3].shape(), &[1, 4]);
}

#[test]
fn bad_attributes_are_errors_naming_node_and_attribute() {
    type Case = (&'static str, Vec<(&'static str, A)>, &'static str);
    let cases: Vec<Case> = vec![
        ("LMUMemory", vec![("order", A::I(0)), ("theta", A::F(4.0))], "'order'"),
        ("LMUMemory", vec![("theta", A::F(4.0))], "'order'"),
        ("LMUMemory", vec![("order", A::I(4)), ("theta", A::F(0.0))], "'theta'"),
        ("LMUMemory", vec![("order", A::I(4)), ("theta", A::F(4.0)), ("dt", A::F(-1.0))], "'dt'"),
        (
            "LMUMemory",
            vec![("order", A::I(4)), ("theta", A::F(4.0)), ("discretizer", A::S("bilinear"))],
            "'discretizer'",
        ),
        ("LIF", vec![("tau", A::F(0.0))], "'tau'"),
        ("LIF", vec![("decay_input", A::I(2))], "'decay_input'"),
        ("LIF", vec![("time_axis", A::I(3))], "'time_axis'"),
    ];
    for (op, attrs, want) in cases {
        let p = write(
            "bad",
            vec![node(op, "bad_node", &["x"], &["y"], &attrs)],
            vec![value_info("x", &[1, 5, 1])],
            vec![value_info("y", &[1, 5, 1])],
        );
        let e = floe_convert::load(&p).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("bad_node") && e.contains(op) && e.contains(want), "{op} {want}: {e}");
    }
}

#[test]
fn floe_ops_lists_the_floe_domain() {
    let r = floe_convert::onnx::registry::Registry::onnx();
    for op in ["LMUMemory", "LIF"] {
        assert_eq!(r.get("floe", op).map(|d| d.domain), Some("floe"), "{op}");
    }
    assert!(floe_convert::onnx::registry::ops_markdown().contains("| LMUMemory | floe | 1-1 |"));
}
