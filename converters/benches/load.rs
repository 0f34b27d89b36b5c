//! Load benchmark: a >= 50 MB transformer encoder (fixed-seed weights, generated
//! here as ONNX, converted to .floe) loaded by floe (mmap + validation) next to
//! tract-onnx loading the same ONNX file, in the same run. Also prints the
//! resident memory growth right after a floe load (before the first run).
//!
//!     cargo bench -p floe-convert --bench load

use criterion::{criterion_group, criterion_main, Criterion};
use floe_engine::format::{self, Model};
use prost::Message;
use std::hint::black_box;
use std::path::PathBuf;
use tract_onnx::pb::{
    tensor_shape_proto::{dimension::Value as DimValue, Dimension},
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use tract_onnx::prelude::Framework;

const LAYERS: usize = 5;
const D: usize = 512;
const FFN: usize = 2048;
const HEADS: usize = 8;

struct B {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    seed: u64,
    n: usize,
}

impl B {
    fn name(&mut self, p: &str) -> String {
        self.n += 1;
        format!("{p}_{}", self.n)
    }
    fn rand(&mut self) -> f32 {
        self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
    }
    fn weight(&mut self, dims: &[usize]) -> String {
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|_| self.rand()).collect();
        self.tensor(dims, &data)
    }
    fn tensor(&mut self, dims: &[usize], data: &[f32]) -> String {
        let name = self.name("w");
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: 1,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }
    fn ints(&mut self, v: &[i64]) -> String {
        let name = self.name("c");
        self.inits.push(TensorProto {
            name: name.clone(),
            dims: vec![v.len() as i64],
            data_type: 7,
            int64_data: v.to_vec(),
            ..Default::default()
        });
        name
    }
    fn op(&mut self, op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> String {
        let out = self.name(op);
        let name = self.name("n");
        self.nodes.push(NodeProto {
            op_type: op.into(),
            name,
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            attribute: attrs,
            ..Default::default()
        });
        out
    }
    fn linear(&mut self, x: &str, k: usize, n: usize) -> String {
        let w = self.weight(&[k, n]);
        let b = self.weight(&[n]);
        let m = self.op("MatMul", &[x, &w], vec![]);
        self.op("Add", &[&m, &b], vec![])
    }
    fn layer_norm(&mut self, x: &str) -> String {
        let axes = self.ints(&[-1]);
        let mean = self.op("ReduceMean", &[x, &axes], vec![]);
        let xc = self.op("Sub", &[x, &mean], vec![]);
        let sq = self.op("Mul", &[&xc, &xc], vec![]);
        let var = self.op("ReduceMean", &[&sq, &axes], vec![]);
        let eps = self.tensor(&[], &[1e-5]);
        let v = self.op("Add", &[&var, &eps], vec![]);
        let sd = self.op("Sqrt", &[&v], vec![]);
        let gamma = self.tensor(&[D], &vec![1.0; D]);
        let n = self.op("Div", &[&xc, &sd], vec![]);
        self.op("Mul", &[&n, &gamma], vec![])
    }
}

fn perm(p: &[i64]) -> Vec<AttributeProto> {
    vec![AttributeProto { name: "perm".into(), r#type: 7, ints: p.to_vec(), ..Default::default() }]
}

fn axis(a: i64) -> Vec<AttributeProto> {
    vec![AttributeProto { name: "axis".into(), r#type: 2, i: a, ..Default::default() }]
}

/// An encoder of `LAYERS` layers over `[1, 64, D]`, as ONNX bytes (~63 MB of weights).
fn transformer_onnx() -> Vec<u8> {
    let mut b = B { nodes: vec![], inits: vec![], seed: 42, n: 0 };
    let seq = 64usize;
    let dh = D / HEADS;
    let mut x = "x".to_string();
    for _ in 0..LAYERS {
        let h = b.layer_norm(&x);
        let heads = b.ints(&[1, seq as i64, HEADS as i64, dh as i64]);
        let mut qkv = Vec::new();
        for _ in 0..3 {
            let p = b.linear(&h, D, D);
            let r = b.op("Reshape", &[&p, &heads], vec![]);
            qkv.push(b.op("Transpose", &[&r], perm(&[0, 2, 1, 3])));
        }
        let kt = b.op("Transpose", &[&qkv[1]], perm(&[0, 1, 3, 2]));
        let s = b.op("MatMul", &[&qkv[0], &kt], vec![]);
        let scale = b.tensor(&[], &[(dh as f32).sqrt()]);
        let s = b.op("Div", &[&s, &scale], vec![]);
        let p = b.op("Softmax", &[&s], axis(-1));
        let c = b.op("MatMul", &[&p, &qkv[2]], vec![]);
        let c = b.op("Transpose", &[&c], perm(&[0, 2, 1, 3]));
        let merge = b.ints(&[1, seq as i64, D as i64]);
        let c = b.op("Reshape", &[&c, &merge], vec![]);
        let o = b.linear(&c, D, D);
        x = b.op("Add", &[&x, &o], vec![]);
        let h = b.layer_norm(&x);
        let f = b.linear(&h, D, FFN);
        let f = b.op("Relu", &[&f], vec![]);
        let f = b.linear(&f, FFN, D);
        x = b.op("Add", &[&x, &f], vec![]);
    }
    let last = b.nodes.last_mut().expect("nodes");
    last.output = vec!["y".into()];
    let vi = |name: &str| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: [1, seq, D]
                        .iter()
                        .map(|&d| Dimension { value: Some(DimValue::DimValue(d as i64)), ..Default::default() })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let m = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        graph: Some(GraphProto {
            node: b.nodes,
            initializer: b.inits,
            input: vec![vi("x")],
            output: vec![vi("y")],
            name: "encoder".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    m.encode_to_vec()
}

/// Resident set size in bytes (Linux /proc; 0 elsewhere).
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn files() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench-models");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let (onnx, floe) = (dir.join("encoder.onnx"), dir.join("encoder.floe"));
    if !onnx.exists() || !floe.exists() {
        std::fs::write(&onnx, transformer_onnx()).expect("write onnx");
        let conv = floe_convert::pipeline::convert(&onnx, &Default::default()).expect("convert");
        format::write(&floe, &conv.graph, &conv.info, &mut |_, _| {}).expect("write floe");
    }
    (onnx, floe)
}

fn bench_load(c: &mut Criterion) {
    let (onnx, floe) = files();
    let size = std::fs::metadata(&floe).map(|m| m.len()).unwrap_or(0);
    let before = rss();
    let m = Model::load(&floe).expect("load");
    let after = rss();
    println!(
        "floe file {:.1} MB: resident memory grew {:.2} MB on load (before any run)",
        size as f64 / 1e6,
        after.saturating_sub(before) as f64 / 1e6
    );
    drop(m);
    let mut g = c.benchmark_group("load");
    g.sample_size(20);
    g.bench_function("floe_mmap_load", |b| b.iter(|| black_box(Model::load(&floe).expect("load"))));
    g.bench_function("floe_import_onnx", |b| b.iter(|| black_box(floe_convert::load(&onnx).expect("import"))));
    g.bench_function("tract_onnx_model_for_path", |b| {
        b.iter(|| black_box(tract_onnx::onnx().model_for_path(&onnx).expect("tract load")))
    });
    g.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
