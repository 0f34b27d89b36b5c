//! Workloads and quality measures shared by `benches/attention.rs` and
//! `examples/knn_report.rs` (../shared/ALGORITHMS.md section 5A: recall@k of the true
//! top-k keys, softmax mass covered by the retrieved set, relative output error and
//! row cosine against exact attention).
#![allow(dead_code)]

/// A small LCG, so the figures are reproducible.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * 0.5 + 0.5) * n as f32) as usize % n.max(1)
    }
}

/// `(q, k, v)`, `L x d` each, uniform in `[-1, 1)`: the worst case for k-NN attention
/// (flat softmax).
pub fn random(l: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = Lcg(seed);
    let mut g = |n: usize| (0..n).map(|_| r.uniform()).collect::<Vec<f32>>();
    (g(l * d), g(l * d), g(l * d))
}

/// Keys are random unit vectors; each query is a scaled copy of one key (every third
/// query: of two keys) plus noise, so its softmax is concentrated on a few keys, as in
/// trained attention: the source keys score about 16 after `1/sqrt(d)`, the others
/// about N(0, 2^2) (2.8^2 for two-key queries).
pub fn peaked(l: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    peaked_with(l, d, seed, 3)
}

/// [`peaked`] with every query made from one key (its softmax holds ~99.7% on it).
pub fn peaked_one(l: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    peaked_with(l, d, seed, usize::MAX)
}

/// Every `two_every`-th query is made from two keys, the others from one.
fn peaked_with(l: usize, d: usize, seed: u64, two_every: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut r = Lcg(seed);
    let mut k: Vec<f32> = (0..l * d).map(|_| r.uniform()).collect();
    for row in k.chunks_mut(d) {
        let n = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= n);
    }
    let v: Vec<f32> = (0..l * d).map(|_| r.uniform()).collect();
    let amp = 16.0 * (d as f32).sqrt();
    let mut q = vec![0.0; l * d];
    for i in 0..l {
        let (a, b) = (r.below(l), r.below(l));
        let two = i % two_every == 0 && two_every != usize::MAX;
        for c in 0..d {
            let noise = 0.1 * r.uniform();
            q[i * d + c] = if two { amp * (k[a * d + c] + k[b * d + c]) + noise } else { amp * k[a * d + c] + noise };
        }
    }
    (q, k, v)
}

/// Quality of an approximate output against exact attention.
#[derive(Clone, Copy, Debug, Default)]
pub struct Quality {
    /// Fraction of the exact top-k keys (by `q . k`) the k-NN search retrieved.
    pub recall: f64,
    /// Mean softmax mass (of the full exact softmax) held by the retrieved keys.
    pub mass: f64,
    /// `||o - o_hat|| / ||o||` over the whole output.
    pub rel_err: f64,
    /// Mean row cosine of `o` and `o_hat`.
    pub cosine: f64,
}

/// Recall and mass on (at most 256 evenly spaced) query rows, re-querying an index
/// built with the same parameters (hence the same index), plus output error and
/// cosine over all rows.
#[allow(clippy::too_many_arguments)]
pub fn quality(
    q: &[f32],
    k: &[f32],
    exact: &[f32],
    approx: &[f32],
    l: usize,
    s: usize,
    d: usize,
    params: &floe_kernels::attention::knn::KnnParams,
    scale: f32,
) -> Quality {
    use floe_kernels::attention::knn::{KnnIndex, TopK};
    use floe_kernels::attention::Rows;
    let index = KnnIndex::build(Rows::new(k, s, d), params, None);
    let mut top = TopK::new(params.k);
    let step = l.div_ceil(256).max(1);
    let (mut recall, mut mass, mut rows) = (0.0f64, 0.0f64, 0usize);
    for i in (0..l).step_by(step) {
        let qi = &q[i * d..(i + 1) * d];
        index.query(qi, s, params.k, &mut top);
        let scores: Vec<f64> = (0..s)
            .map(|j| qi.iter().zip(&k[j * d..(j + 1) * d]).map(|(a, b)| (*a * *b) as f64).sum::<f64>() * scale as f64)
            .collect();
        let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = scores.iter().map(|x| (x - m).exp()).sum();
        mass += top.ids().iter().map(|&j| (scores[j as usize] - m).exp()).sum::<f64>() / total;
        let mut order: Vec<usize> = (0..s).collect();
        let kk = params.k.min(s);
        order.select_nth_unstable_by(kk - 1, |a, b| scores[*b].total_cmp(&scores[*a]));
        recall += order[..kk].iter().filter(|j| top.ids().contains(&(**j as u32))).count() as f64 / kk as f64;
        rows += 1;
    }
    let (mut num, mut den, mut cos) = (0.0f64, 0.0f64, 0.0f64);
    for i in 0..l {
        let (x, y) = (&exact[i * d..(i + 1) * d], &approx[i * d..(i + 1) * d]);
        let dot: f64 = x.iter().zip(y).map(|(a, b)| *a as f64 * *b as f64).sum();
        let nx: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum();
        let ny: f64 = y.iter().map(|a| (*a as f64).powi(2)).sum();
        num += x.iter().zip(y).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>();
        den += nx;
        cos += dot / (nx.sqrt() * ny.sqrt()).max(1e-30);
    }
    let rows = rows.max(1) as f64;
    Quality {
        recall: recall / rows,
        mass: mass / rows,
        rel_err: (num / den.max(1e-30)).sqrt(),
        cosine: cos / l.max(1) as f64,
    }
}
