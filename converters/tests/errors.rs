//! Every class of bad input gives an error naming the file / node / value, never a
//! panic: unsupported ops (all listed at once), truncated or corrupt protobuf,
//! missing external data, dangling values, wrong run inputs.

use floe_convert::ImportError;
use floe_engine::exec::Bindings;
use floe_engine::{Plan, Session, Tensor};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tract_onnx::pb::{
    tensor_shape_proto::{dimension::Value as DimValue, Dimension},
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};

fn value_info(name: &str, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension { value: Some(DimValue::DimValue(d)), ..Default::default() })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], domain: &str) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: name.into(),
        domain: domain.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
) -> ModelProto {
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: inits,
            input: inputs,
            output: outputs,
            name: "g".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("floe-errors-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, name: &str, m: &ModelProto) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p
}

fn mlp_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/mlp.onnx")
}

#[test]
fn unsupported_ops_are_all_listed_in_one_error() {
    let m = model(
        vec![
            node("Relu", "ok", &["x"], &["a"], ""),
            node("FancyOp", "f1", &["a"], &["b"], ""),
            node("ImageDecoder", "dec", &["b"], &["c"], ""),
            node("FancyOp", "f2", &["c"], &["d"], ""),
            node("Custom", "c1", &["d"], &["y"], "com.example"),
        ],
        vec![],
        vec![value_info("x", &[2])],
        vec![value_info("y", &[2])],
    );
    let dir = tmpdir("unsupported");
    let p = write(&dir, "m.onnx", &m);
    let err = floe_convert::load(&p).unwrap_err();
    let ImportError::Unsupported { ops, .. } = &err else { panic!("expected Unsupported, got {err}") };
    let names: Vec<&str> = ops.iter().map(|o| o.op_type.as_str()).collect();
    assert_eq!(names, vec!["Custom", "FancyOp", "ImageDecoder"], "each unsupported op once, sorted");
    let msg = err.to_string();
    assert!(
        msg.contains("m.onnx") && msg.contains("FancyOp") && msg.contains("com.example") && msg.contains("opset 17"),
        "{msg}"
    );
}

#[test]
fn truncated_model_at_any_offset_is_an_error_naming_the_file() {
    let bytes = std::fs::read(mlp_path()).unwrap();
    let dir = tmpdir("truncated");
    for cut in (0..bytes.len() - 1).step_by(7) {
        let p = dir.join("cut.onnx");
        std::fs::write(&p, &bytes[..cut]).unwrap();
        match floe_convert::load(&p) {
            Err(e) => assert!(e.to_string().contains("cut.onnx"), "cut at {cut}: {e}"),
            Ok(_) => panic!("truncation at {cut} of {} was accepted", bytes.len()),
        }
    }
}

#[test]
fn corrupt_bytes_never_panic() {
    let bytes = std::fs::read(mlp_path()).unwrap();
    for i in (0..bytes.len()).step_by(3) {
        let mut b = bytes.clone();
        b[i] ^= 0xA5;
        // Either an error or a model that validates; a panic fails the test.
        if let Ok(m) = floe_convert::load_bytes(&b, Path::new("corrupt.onnx"), None) {
            m.graph.validate().unwrap();
        }
    }
}

fn external_model() -> ModelProto {
    let w = TensorProto {
        name: "w".into(),
        dims: vec![2],
        data_type: 1,
        data_location: Some(1),
        external_data: vec![
            StringStringEntryProto { key: "location".into(), value: "weights.bin".into() },
            StringStringEntryProto { key: "offset".into(), value: "4".into() },
            StringStringEntryProto { key: "length".into(), value: "8".into() },
        ],
        ..Default::default()
    };
    model(
        vec![node("Add", "add", &["x", "w"], &["y"], "")],
        vec![w],
        vec![value_info("x", &[2])],
        vec![value_info("y", &[2])],
    )
}

#[test]
fn missing_external_data_file_is_named() {
    let dir = tmpdir("external-missing");
    let _ = std::fs::remove_file(dir.join("weights.bin"));
    let p = write(&dir, "ext.onnx", &external_model());
    let err = floe_convert::load(&p).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImportError::ExternalData { .. }), "{msg}");
    assert!(msg.contains("ext.onnx") && msg.contains("weights.bin") && msg.contains("'w'"), "{msg}");
}

#[test]
fn external_data_is_read_at_its_offset() {
    let dir = tmpdir("external-ok");
    let mut bin = vec![0u8; 4];
    bin.extend_from_slice(&1.5f32.to_le_bytes());
    bin.extend_from_slice(&(-2.0f32).to_le_bytes());
    std::fs::write(dir.join("weights.bin"), &bin).unwrap();
    let p = write(&dir, "ext.onnx", &external_model());
    let m = floe_convert::load(&p).unwrap();
    let plan = Arc::new(Plan::new(&m.graph, &Bindings::default()).unwrap());
    let out = Session::new(plan).run(vec![Tensor::from_slice(&[2], &[1.0f32, 1.0]).unwrap()]).unwrap();
    assert_eq!(out[0].as_slice::<f32>().unwrap(), &[2.5, -1.0]);
    // A short file is an error too, not a panic.
    std::fs::write(dir.join("weights.bin"), &bin[..10]).unwrap();
    assert!(matches!(floe_convert::load(&p).unwrap_err(), ImportError::ExternalData { .. }));
}

#[test]
fn dangling_value_names_node_and_value() {
    let m = model(
        vec![node("Add", "the_add", &["x", "nowhere"], &["y"], "")],
        vec![],
        vec![value_info("x", &[2])],
        vec![value_info("y", &[2])],
    );
    let dir = tmpdir("dangling");
    let p = write(&dir, "d.onnx", &m);
    let msg = floe_convert::load(&p).unwrap_err().to_string();
    assert!(msg.contains("d.onnx") && msg.contains("the_add") && msg.contains("nowhere"), "{msg}");
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"], "")],
        vec![],
        vec![value_info("x", &[2])],
        vec![value_info("z", &[2])],
    );
    let msg = floe_convert::load(write(&dir, "d2.onnx", &m)).unwrap_err().to_string();
    assert!(msg.contains("'z'"), "{msg}");
}

#[test]
fn run_input_of_wrong_shape_or_dtype_names_the_input() {
    let m = floe_convert::load(mlp_path()).unwrap();
    let plan = Arc::new(Plan::new(&m.graph, &Bindings::default().with_symbol("N", 4)).unwrap());
    let mut s = Session::new(plan);
    let msg = s.run(vec![Tensor::zeros(floe_engine::DType::F32, &[4, 15]).unwrap()]).unwrap_err().to_string();
    assert!(msg.contains("'x'") && msg.contains("[4, 16]") && msg.contains("[4, 15]"), "{msg}");
    let msg = s.run(vec![Tensor::zeros(floe_engine::DType::F64, &[4, 16]).unwrap()]).unwrap_err().to_string();
    assert!(msg.contains("'x'") && msg.contains("float32") && msg.contains("float64"), "{msg}");
    // An unbound symbolic dim is reported with the flag that sets it.
    let msg = Plan::new(&m.graph, &Bindings::default()).err().unwrap().to_string();
    assert!(msg.contains("'N'") && msg.contains("--dim N="), "{msg}");
}
