//! IceFormer k-NN attention (Mao & Li, ICLR 2024; ../shared/ALGORITHMS.md section 1):
//! each query attends only to the `k` keys with the largest `q . k`, found by a
//! Prioritized-DCI index (Li & Malik, ICML 2017) over the keys under the MIPS ->
//! nearest-neighbour transform, and weighted by a softmax over those keys' exact
//! scores. It needs no retraining, so a pretrained model's `Sdpa` can be lowered to it
//! (section 4.1) when the keys are many and the mask is causal or key padding.
//!
//! - [`KnnParams`]: the knobs, IceFormer's defaults (`params.rs`).
//! - [`KnnIndex`]: one index per (batch, kv-head): bulk build, incremental insert,
//!   k-NN query with exact dots (`index.rs`, where the algorithm is described).
//! - [`knn_attention_group`]: attention of the `g` query heads that share one kv head
//!   (GQA; `g = 1` is plain multi-head attention).
//! - [`TopK`]: a query's retrieved keys with their exact dots, plus the reusable
//!   search buffers; [`KnnStats`]: work counters for benches.
//!
//! Speed comes from the data layout, not from the search alone: each cell stores its
//! children transposed (scored by broadcast-FMA over contiguous memory), the keys
//! above level 0 are scored for a block of queries by one GEMM, and the finest cells
//! are visited cell-major so a cell is read once per block (`index.rs`).
//!
//! Semantics (section 1.1): `o_i = sum_{j in S_i} softmax_j(scale * q_i . k_j) v_j` over
//! the retrieved set `S_i` (no correction for the mass outside it). When query `i`
//! sees at most `k` keys, `S_i` is all of them and the output is exact attention.
//! A query that sees no key gets a zero row (IceFormer's calloc'd output; exact
//! attention gives NaN there).

mod index;
mod params;
mod quant;
mod simd;

pub use index::{KnnIndex, CLOSEST, QUERY_BLOCK};
pub use params::KnnParams;

use super::{Rows, Visibility};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The result of one k-NN query, and the reusable buffers of the search (keep one per
/// thread and pass it to every query: no allocation once warm).
#[derive(Clone, Debug, Default)]
pub struct TopK {
    k: usize,
    ids: Vec<u32>,
    dots: Vec<f32>,
    /// The smallest kept dot once `k` are kept (`-inf` before): the bar to pass.
    min_val: f32,
    /// Keys whose exact dot product the last query computed.
    scored: usize,
    scratch: index::Scratch,
    order: Vec<(f32, u32)>,
}

impl TopK {
    /// An empty list for up to `k` keys.
    pub fn new(k: usize) -> Self {
        TopK { k, ..Default::default() }
    }

    /// Retrieved key ids, best first.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Their exact dot products with the query, descending.
    pub fn dots(&self) -> &[f32] {
        &self.dots
    }

    /// Number of retrieved keys.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when nothing was retrieved.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Keys whose exact dot product the last query computed (its work).
    pub fn scored(&self) -> usize {
        self.scored
    }

    fn reset(&mut self, k: usize) {
        self.k = k;
        self.ids.clear();
        self.dots.clear();
        self.scored = 0;
        self.min_val = f32::NEG_INFINITY;
    }

    /// Keeps the `k` largest dots: a binary min-heap on the dot while filling.
    #[inline(always)]
    fn push(&mut self, id: u32, dot: f32) {
        let n = self.ids.len();
        if n < self.k {
            self.ids.push(id);
            self.dots.push(dot);
            let mut i = n;
            while i > 0 {
                let p = (i - 1) / 2;
                if dot < self.dots[p] {
                    self.dots[i] = self.dots[p];
                    self.ids[i] = self.ids[p];
                    i = p;
                } else {
                    break;
                }
            }
            self.dots[i] = dot;
            self.ids[i] = id;
        } else if dot > self.dots[0] {
            let mut i = 0;
            loop {
                let l = 2 * i + 1;
                if l >= n {
                    break;
                }
                let c = if l + 1 < n && self.dots[l + 1] < self.dots[l] { l + 1 } else { l };
                if self.dots[c] < dot {
                    self.dots[i] = self.dots[c];
                    self.ids[i] = self.ids[c];
                    i = c;
                } else {
                    break;
                }
            }
            self.dots[i] = dot;
            self.ids[i] = id;
        }
        if self.ids.len() == self.k {
            self.min_val = self.dots[0];
        }
    }

    /// Offers every `(score, id)` with `id < visible`.
    fn offer(&mut self, cand: &[(f32, u32)], visible: usize) {
        self.scored += cand.len();
        for &(sc, id) in cand {
            self.offer_one(id, sc, visible);
        }
    }

    /// Offers one key (a cheap rejection once the list is full).
    #[inline(always)]
    fn offer_one(&mut self, id: u32, dot: f32, visible: usize) {
        if dot > self.min_val && (id as usize) < visible {
            self.push(id, dot);
        }
    }

    /// Restores a list saved from `ids()`/`dots()` in internal (unsorted) order.
    fn load(&mut self, ids: &[u32], dots: &[f32], k: usize, scored: usize) {
        self.reset(k);
        self.ids.extend_from_slice(ids);
        self.dots.extend_from_slice(dots);
        self.scored = scored;
        if self.ids.len() == k && k > 0 {
            self.min_val = self.dots[0];
        }
    }

    /// Fills an empty list from at most `k` keys sorted by ascending dot (an
    /// ascending array is a min-heap, the order `push` keeps).
    fn load_sorted_ascending(&mut self, keys: &[(f32, u32)], k: usize, scored: usize) {
        self.reset(k);
        self.ids.extend(keys.iter().map(|e| e.1));
        self.dots.extend(keys.iter().map(|e| e.0));
        self.scored = scored;
        if self.ids.len() == k && k > 0 {
            self.min_val = self.dots[0];
        }
    }

    /// Sorts the kept keys by dot, descending (ties by id).
    fn finish(&mut self) {
        self.order.clear();
        self.order.extend(self.dots.iter().copied().zip(self.ids.iter().copied()));
        self.order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.ids.clear();
        self.dots.clear();
        for &(d, id) in &self.order {
            self.ids.push(id);
            self.dots.push(d);
        }
    }
}

/// Work counters of [`knn_attention_group`] (for benches and reports).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnnStats {
    /// Query rows answered (over all heads of the group).
    pub queries: u64,
    /// Exact key scores computed, summed over queries.
    pub scored: u64,
    /// Keys retrieved (attended to), summed over queries.
    pub retrieved: u64,
    /// Nanoseconds spent building the index (and inserting, for causal).
    pub build_ns: u64,
}

impl KnnStats {
    /// Mean exact scores per query.
    pub fn scored_per_query(&self) -> f64 {
        self.scored as f64 / self.queries.max(1) as f64
    }
}

/// Softmax over the retrieved keys (scores `scale * dot`, max-subtracted), then the
/// weighted sum of their value rows into `out` (`v.cols` values). No key: zeros.
fn attend(top: &TopK, scale: f32, v: &Rows<'_>, out: &mut [f32], w: &mut Vec<f32>) {
    out.iter_mut().for_each(|x| *x = 0.0);
    if top.is_empty() {
        return;
    }
    w.clear();
    w.extend(top.dots().iter().map(|&x| x * scale));
    // The vectorized softmax (max-subtracted, as section 1.1 asks).
    crate::vecmath::selected().softmax_row(w);
    for (&id, &a) in top.ids().iter().zip(w.iter()) {
        for (o, &x) in out.iter_mut().zip(v.row(id as usize)) {
            *o += a * x;
        }
    }
}

/// Query rows per parallel task.
const ROWS_PER_TASK: usize = 256;

/// k-NN attention of one (batch, kv-head) and the `g = queries.len()` query heads that
/// share it (GQA). `queries[h]` is `L x d`, `k` is `S x d`, `v` is `S x dv`; query
/// `i` sees keys `0 .. visibility.visible(i)`. Output row `i` of head `h` is written at
/// `outs[h][i * out_stride ..][.. dv]` (strided like [`super::exact::attention_head`]).
///
/// Non-causal: one bulk build over the `valid_keys` keys, then the queries in blocks
/// ([`KnnIndex::query_batch`]), in parallel over blocks; every row's result is the
/// same whatever the blocks, so the output does not depend on the thread count. Causal: bulk
/// build of the keys the first query sees, then key `j` is inserted before the first
/// query that sees it (IceFormer's incremental path; `M^2` is taken over all valid
/// keys up front, as IceFormer does, so no rebuild happens). `scale` multiplies the
/// dots before the softmax; a negative scale ranks by `-q . k`, as the softmax does.
#[allow(clippy::too_many_arguments)]
pub fn knn_attention_group(
    queries: &[Rows<'_>],
    k: Rows<'_>,
    v: Rows<'_>,
    scale: f32,
    visibility: Visibility,
    params: &KnnParams,
    outs: &mut [&mut [f32]],
    out_stride: usize,
    stats: Option<&mut KnnStats>,
) {
    knn_attention_group_cached(queries, k, v, scale, visibility, params, outs, out_stride, stats, &mut None);
}

/// [`knn_attention_group`] that carries its index from one call to the next (decode
/// with a KV cache, ALGORITHMS.md section 1.4). When `cache` holds an index built
/// with `params` over a prefix of this call's valid keys, bit for bit
/// ([`KnnIndex::indexes_prefix_of`]), the call reuses it: the keys after that prefix
/// are inserted (causal: each before the first query that sees it), none is
/// re-indexed. Otherwise the index is built as [`knn_attention_group`] builds it.
/// Either way `cache` holds the call's index afterwards, and the result is the one a
/// single causal call over the whole sequence gives when every call is causal and
/// the first key has the largest norm (so the `M^2` bounds agree; a later key above
/// the cached bound rebuilds the index, section 1.4). Returns whether the cached
/// index was reused.
#[allow(clippy::too_many_arguments)]
pub fn knn_attention_group_cached(
    queries: &[Rows<'_>],
    k: Rows<'_>,
    v: Rows<'_>,
    scale: f32,
    visibility: Visibility,
    params: &KnnParams,
    outs: &mut [&mut [f32]],
    out_stride: usize,
    stats: Option<&mut KnnStats>,
    cache: &mut Option<KnnIndex>,
) -> bool {
    assert_eq!(queries.len(), outs.len(), "one output per query head");
    assert!(k.in_bounds() && v.in_bounds(), "an operand is shorter than its shape");
    assert_eq!(v.rows, k.rows, "k and v lengths differ");
    let (d, dv) = (k.cols, v.cols);
    let l = queries.first().map_or(0, |q| q.rows);
    for (q, o) in queries.iter().zip(outs.iter()) {
        assert!(q.in_bounds() && q.cols == d && q.rows == l, "query heads must be L x d");
        assert!(l == 0 || (l - 1) * out_stride + dv <= o.len(), "output too small");
    }
    let valid = visibility.valid_keys.min(k.rows);
    let kk = params.k.max(1);
    let (sign, scale_abs) = if scale < 0.0 { (-1.0f32, -scale) } else { (1.0, scale) };
    let started = std::time::Instant::now();
    let counters = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
    let mut build_ns;
    let mut reused = cache.take().filter(|ix| ix.len() <= valid && ix.indexes_prefix_of(k, params));
    let reuse = reused.is_some();

    let answer = |index: &KnnIndex,
                  q: &[f32],
                  visible: usize,
                  top: &mut TopK,
                  qbuf: &mut Vec<f32>,
                  out: &mut [f32],
                  w: &mut Vec<f32>| {
        let q = if sign < 0.0 {
            qbuf.clear();
            qbuf.extend(q.iter().map(|x| -x));
            &qbuf[..]
        } else {
            q
        };
        index.query(q, visible, kk, top);
        counters[0].fetch_add(1, Ordering::Relaxed);
        counters[1].fetch_add(top.scored() as u64, Ordering::Relaxed);
        counters[2].fetch_add(top.len() as u64, Ordering::Relaxed);
        attend(top, scale_abs, &v, &mut out[..dv], w);
    };

    match visibility.causal_past {
        None => {
            let index = match reused.take() {
                Some(mut index) => {
                    for j in index.len()..valid {
                        index.insert(k.row(j));
                    }
                    index
                }
                None => KnnIndex::build(k.slice_rows(0..valid), params, None),
            };
            build_ns = started.elapsed().as_nanos() as u64;
            // Big blocks let `query_batch` group rows that read the same cells; one
            // block per thread and head (at least ROWS_PER_TASK rows).
            let threads = crate::parallel::threads().max(1);
            let rows_per_task = l.div_ceil(threads).max(ROWS_PER_TASK);
            let tasks_per_head = l.div_ceil(rows_per_task);
            let chunks: Vec<Mutex<&mut [f32]>> = outs
                .iter_mut()
                .flat_map(|o| o.chunks_mut(rows_per_task * out_stride.max(1)).take(tasks_per_head))
                .map(Mutex::new)
                .collect();
            crate::parallel::for_each_index(chunks.len(), &|t| {
                let (h, c) = (t / tasks_per_head.max(1), t % tasks_per_head.max(1));
                let mut slot = chunks[t].lock().unwrap_or_else(|e| e.into_inner());
                let (mut top, mut qbuf, mut w) = (TopK::new(kk), Vec::new(), Vec::new());
                let rows = c * rows_per_task..((c + 1) * rows_per_task).min(l);
                let block = queries[h].slice_rows(rows);
                let block = if sign < 0.0 {
                    qbuf.clear();
                    (0..block.rows).for_each(|r| qbuf.extend(block.row(r).iter().map(|x| -x)));
                    Rows::new(&qbuf, block.rows, d)
                } else {
                    block
                };
                // Counted locally, added to the shared counters once per task.
                let mut count = [0u64; 3];
                index.query_batch(block, valid, kk, &mut top, |r, top| {
                    count[0] += 1;
                    count[1] += top.scored() as u64;
                    count[2] += top.len() as u64;
                    attend(top, scale_abs, &v, &mut slot[r * out_stride..][..dv], &mut w);
                });
                for (c, n) in counters.iter().zip(count) {
                    c.fetch_add(n, Ordering::Relaxed);
                }
            });
            *cache = Some(index);
        }
        Some(_) => {
            let mut index = match reused.take() {
                Some(mut index) => {
                    // The promotion ratio follows the sequence length seen so far.
                    index.expect_total(valid);
                    index
                }
                None => {
                    let bound = (0..valid).map(|j| simd::dot(k.row(j), k.row(j))).fold(0.0f32, f32::max);
                    let first = if l == 0 { 0 } else { visibility.visible(0).min(valid) };
                    let mut index = KnnIndex::build(k.slice_rows(0..first), params, Some(bound));
                    index.expect_total(valid);
                    index
                }
            };
            build_ns = started.elapsed().as_nanos() as u64;
            let (mut top, mut qbuf, mut w) = (TopK::new(kk), Vec::new(), Vec::new());
            for i in 0..l {
                let vis = visibility.visible(i).min(valid);
                if index.len() < vis {
                    let t = std::time::Instant::now();
                    for j in index.len()..vis {
                        index.insert(k.row(j));
                    }
                    build_ns += t.elapsed().as_nanos() as u64;
                }
                for (h, o) in outs.iter_mut().enumerate() {
                    answer(&index, queries[h].row(i), vis, &mut top, &mut qbuf, &mut o[i * out_stride..], &mut w);
                }
            }
            *cache = Some(index);
        }
    }
    if let Some(st) = stats {
        st.queries += counters[0].load(Ordering::Relaxed);
        st.scored += counters[1].load(Ordering::Relaxed);
        st.retrieved += counters[2].load(Ordering::Relaxed);
        st.build_ns += build_ns;
    }
    reuse
}
