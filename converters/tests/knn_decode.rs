//! Decode with a KV cache through k-NN attention, end to end: the ONNX `Attention`
//! (opset 23) with past_key / past_value of examples/models/attention_kv_cache.onnx
//! (scripts/make_long_attention.py) is converted with `--attention knn`, written to a
//! `.floe` file and loaded back, then prefilled and decoded token by token, each
//! step feeding its present_key / present_value back as the next past.
//!
//! References: the exact conversion of the same model (present outputs equal, Y
//! near exact on a peaked workload), and one causal k-NN call over the whole
//! sequence (Y equal bit for bit: each step reused the index of the step before and
//! inserted its key, which a counter confirms).

use floe_convert::pipeline::{convert, ConvertOptions};
use floe_engine::exec::Bindings;
use floe_engine::format::{self, Model};
use floe_engine::ops::attention::AttentionOp;
use floe_engine::passes::KnnLowering;
use floe_engine::{Graph, Op, Plan, Session, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const D: usize = 16;
const HQ: usize = 2;

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/attention_kv_cache.onnx")
}

/// Converts the model (k-NN when `knn` is given), through a real `.floe` file.
fn converted(knn: Option<&str>, file: &str) -> Graph {
    let opts = ConvertOptions { attention: knn.map(|l| KnnLowering::parse(l).unwrap()), ..Default::default() };
    let c = convert(&model(), &opts).unwrap();
    if knn.is_some() {
        assert!(c.attention.iter().any(|(_, d)| d.to_string().starts_with("lowered")), "{:?}", c.attention);
    }
    let dir = std::env::temp_dir().join(format!("floe-knn-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    format::write(&path, &c.graph, &c.info, &mut |_, _| {}).unwrap();
    Model::load(&path).unwrap().graph
}

fn run(g: &Graph, inputs: Vec<Tensor>) -> Vec<Tensor> {
    let mut b = Bindings::default();
    for (&id, t) in g.inputs.iter().zip(&inputs) {
        b.shapes.insert(g.values[id].name.clone(), t.shape().to_vec());
    }
    Session::new(Arc::new(Plan::new(g, &b).unwrap())).run(inputs).unwrap()
}

/// Unit keys (key 0 twice as long, the largest norm of the sequence) and queries
/// that are 12 sqrt(d) times one earlier key plus noise: peaked causal attention.
fn workload(total: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut s = 0x5eedu64;
    let mut r = move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut k: Vec<f32> = (0..total * D).map(|_| r()).collect();
    for row in k.chunks_mut(D) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    k[..D].iter_mut().for_each(|x| *x *= 2.0);
    let v: Vec<f32> = (0..total * D).map(|_| r()).collect();
    let mut q = vec![0.0f32; HQ * total * D];
    for h in 0..HQ {
        for i in 0..total {
            let j = ((r() * 0.5 + 0.5) * (i + 1) as f32) as usize % (i + 1);
            for c in 0..D {
                q[(h * total + i) * D + c] = 12.0 * (D as f32).sqrt() * k[j * D + c] + 0.05 * r();
            }
        }
    }
    (q, k, v)
}

/// Rows `r` of each head of `x` (`heads` heads of `total` rows) as `[1, heads, r, D]`.
fn rows(x: &[f32], heads: usize, total: usize, r: std::ops::Range<usize>) -> Tensor {
    let mut out = Vec::new();
    (0..heads).for_each(|h| out.extend_from_slice(&x[(h * total + r.start) * D..(h * total + r.end) * D]));
    Tensor::from_vec(&[1, heads, r.len(), D], out).unwrap()
}

/// Prefill `0..pre`, then one step per token up to `total`; returns Y per query
/// head, `[HQ][total * D]`, and the last present_key / present_value.
fn decode(
    g: &Graph,
    (q, k, v): &(Vec<f32>, Vec<f32>, Vec<f32>),
    pre: usize,
    total: usize,
) -> (Vec<Vec<f32>>, Vec<Tensor>) {
    let mut y = vec![Vec::new(); HQ];
    let empty = Tensor::from_vec(&[1, 1, 0, D], Vec::<f32>::new()).unwrap();
    let mut past = vec![empty.clone(), empty];
    let mut start = 0;
    for end in std::iter::once(pre).chain(pre + 1..=total) {
        let r = start..end;
        let inputs = vec![
            rows(q, HQ, total, r.clone()),
            rows(k, 1, total, r.clone()),
            rows(v, 1, total, r.clone()),
            past[0].clone(),
            past[1].clone(),
        ];
        let mut outs = run(g, inputs);
        let ys = outs.remove(0);
        for (h, yh) in y.iter_mut().enumerate() {
            yh.extend_from_slice(&ys.as_slice::<f32>().unwrap()[h * r.len() * D..(h + 1) * r.len() * D]);
        }
        past = outs;
        start = end;
    }
    (y, past)
}

fn knn_cache(g: &Graph) -> &floe_engine::ops::attention::KnnCache {
    g.nodes
        .iter()
        .find_map(|n| match &n.op {
            Op::Attention(AttentionOp::KnnAttention { cache, .. }) => Some(cache),
            _ => None,
        })
        .expect("a KnnAttention node")
}

#[test]
fn knn_decode_through_a_floe_file_reuses_the_index_and_equals_one_causal_pass() {
    // Both lengths give the promotion ratio ceil(n^(1/3)) = 11.
    let (pre, total) = (1100, 1110);
    let data = workload(total);
    let knn = converted(Some("min_keys=0,k=8,seed=3,construction_scan=on"), "knn.floe");
    let (y, present) = decode(&knn, &data, pre, total);
    assert_eq!(knn_cache(&knn).reused(), (total - pre) as u64, "each decode step reused the index");

    // One causal call over the whole sequence (empty past) on a fresh load.
    let whole = converted(Some("min_keys=0,k=8,seed=3,construction_scan=on"), "knn_whole.floe");
    let (y_whole, _) = decode(&whole, &data, total, total);
    assert_eq!(y, y_whole, "decoding step by step changed the k-NN result");

    // The exact model: the same present outputs, and Y near it on peaked attention.
    let exact = converted(None, "exact.floe");
    let (y_exact, present_exact) = decode(&exact, &data, pre, total);
    for (a, b) in present.iter().zip(&present_exact) {
        assert_eq!((a.shape(), a.as_slice::<f32>().unwrap()), (b.shape(), b.as_slice::<f32>().unwrap()));
    }
    assert_eq!(present[0].shape(), &[1, 1, total, D]);
    for h in 0..HQ {
        let mut sum = 0.0;
        for (a, b) in y[h].chunks(D).zip(y_exact[h].chunks(D)) {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let n = |x: &[f32]| x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            sum += dot / (n(a) * n(b)).max(1e-30);
        }
        // A row whose key the search misses is far off; the mean is the measure.
        let mean = sum / total as f64;
        assert!(mean > 0.99, "head {h}: mean row cosine {mean} against exact attention");
    }
}
