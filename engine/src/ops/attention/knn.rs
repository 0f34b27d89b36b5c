//! `KnnAttention`: IceFormer k-NN sparse attention (Mao & Li, ICLR 2024;
//! ../shared/ALGORITHMS.md section 1) as a graph op, the target of the
//! `lower_knn_attention` pass. Each query attends only to the `k` keys with the
//! largest `q . k`, found by a Prioritized-DCI index built per (batch, kv head), and
//! weights them by a softmax over their exact scores:
//!
//! ```text
//! Y[b, h, i] = sum_{j in S_i} softmax_j(scale * q_i . k_j) v_j     S_i = top-k(q_i . k_j), |S_i| <= k
//! ```
//!
//! There is no correction for the softmax mass outside `S_i`, so this is an
//! approximation of `Attention`; it is near exact when each query's attention is
//! peaked on a few keys. A query that sees at most `k` keys attends to all of them
//! (exact). A query that sees no key gets a zero row (exact attention gives NaN).
//!
//! Inputs: Q, K, V (all 3-D `[B, S, heads * d]` with `q_num_heads`/`kv_num_heads`,
//! or all 4-D `[B, heads, S, d]`; grouped-query heads share their kv head's index),
//! then optionally `nonpad_kv_seqlen` (`[B]` int64: the number of real keys per
//! batch; the rest is padding), then optionally a KV cache `past_key` /
//! `past_value` (4-D). Masks are limited to `is_causal` (upper-left, as ONNX
//! `Attention`) and that key padding, because DCI ranks keys by `q . k` alone: an
//! additive bias would change the ranking. Outputs: Y, then optionally
//! `present_key` / `present_value`. With a KV cache the node keeps its indexes
//! between calls ([`KnnCache`]): a decode step inserts its keys into the index of
//! the previous call instead of indexing the whole past again.
//!
//! The math is [`knn_attention`], a plain function over f32 slices on top of
//! `floe_kernels::attention::knn::knn_attention_group`, run in parallel over the
//! (batch, kv head) groups. It is seeded ([`KnnConfig::seed`]): the same inputs give
//! the same outputs, whatever the thread count.

use super::kernel::Layout;
use super::{check_float, input, opt_input, to_float_tensor, AttentionOp};
use crate::bail;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{fixed_shape, InferInput, Kernel};
use crate::shape::Fact;
use crate::tensor::Tensor;
use floe_kernels::attention::knn::{knn_attention_group_cached, KnnIndex, KnnParams};
use floe_kernels::attention::{Rows, Visibility};
use floe_kernels::parallel;
use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The k-NN and DCI parameters a `KnnAttention` node carries (and a `.floe` file
/// stores): the fields of [`KnnParams`], which stays free of serde in the kernel
/// crate. The defaults are IceFormer's README values (see [`KnnParams`] for what
/// each one does); only `seed` is ours, so that runs are reproducible.
/// `query_prop_field_of_view` is stored from `.floe` format version 5 on; nodes
/// read from older files run with it off (see the serde impls below).
#[derive(Clone, Debug, PartialEq)]
pub struct KnnConfig {
    pub k: usize,
    pub num_comp_indices: usize,
    pub num_simp_indices: usize,
    pub levels: usize,
    pub construction_field_of_view: usize,
    pub construction_prop_to_retrieve: f32,
    pub construction_scan: bool,
    pub query_field_of_view: Option<usize>,
    pub query_prop_to_retrieve: f32,
    pub num_to_visit: Option<usize>,
    pub prop_to_visit: f32,
    pub seed: u64,
    pub query_prop_field_of_view: f32,
}

/// [`KnnConfig`] as `.floe` format versions 1-4 stored it (no
/// `query_prop_field_of_view`); version 5 stores these fields, then that one.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredV4 {
    k: usize,
    num_comp_indices: usize,
    num_simp_indices: usize,
    levels: usize,
    construction_field_of_view: usize,
    construction_prop_to_retrieve: f32,
    construction_scan: bool,
    query_field_of_view: Option<usize>,
    query_prop_to_retrieve: f32,
    num_to_visit: Option<usize>,
    prop_to_visit: f32,
    seed: u64,
}

/// The first format version that stores `query_prop_field_of_view`.
const PROP_FOV_VERSION: u32 = 5;

impl serde::Serialize for KnnConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let c = self;
        let v4 = StoredV4 {
            k: c.k,
            num_comp_indices: c.num_comp_indices,
            num_simp_indices: c.num_simp_indices,
            levels: c.levels,
            construction_field_of_view: c.construction_field_of_view,
            construction_prop_to_retrieve: c.construction_prop_to_retrieve,
            construction_scan: c.construction_scan,
            query_field_of_view: c.query_field_of_view,
            query_prop_to_retrieve: c.query_prop_to_retrieve,
            num_to_visit: c.num_to_visit,
            prop_to_visit: c.prop_to_visit,
            seed: c.seed,
        };
        if crate::format::table::layout_version() < PROP_FOV_VERSION {
            v4.serialize(s)
        } else {
            (v4, c.query_prop_field_of_view).serialize(s)
        }
    }
}

impl<'de> serde::Deserialize<'de> for KnnConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (v, prop) = if crate::format::table::layout_version() < PROP_FOV_VERSION {
            (StoredV4::deserialize(d)?, 0.0)
        } else {
            <(StoredV4, f32)>::deserialize(d)?
        };
        Ok(KnnConfig {
            k: v.k,
            num_comp_indices: v.num_comp_indices,
            num_simp_indices: v.num_simp_indices,
            levels: v.levels,
            construction_field_of_view: v.construction_field_of_view,
            construction_prop_to_retrieve: v.construction_prop_to_retrieve,
            construction_scan: v.construction_scan,
            query_field_of_view: v.query_field_of_view,
            query_prop_to_retrieve: v.query_prop_to_retrieve,
            num_to_visit: v.num_to_visit,
            prop_to_visit: v.prop_to_visit,
            seed: v.seed,
            query_prop_field_of_view: prop,
        })
    }
}

impl From<&KnnParams> for KnnConfig {
    fn from(p: &KnnParams) -> Self {
        KnnConfig {
            k: p.k,
            num_comp_indices: p.num_comp_indices,
            num_simp_indices: p.num_simp_indices,
            levels: p.levels,
            construction_field_of_view: p.construction_field_of_view,
            construction_prop_to_retrieve: p.construction_prop_to_retrieve,
            construction_scan: p.construction_scan,
            query_field_of_view: p.query_field_of_view,
            query_prop_to_retrieve: p.query_prop_to_retrieve,
            num_to_visit: p.num_to_visit,
            prop_to_visit: p.prop_to_visit,
            seed: p.seed,
            query_prop_field_of_view: p.query_prop_field_of_view,
        }
    }
}

impl Default for KnnConfig {
    fn default() -> Self {
        KnnConfig::from(&KnnParams::default())
    }
}

impl KnnConfig {
    /// The kernel's parameter struct.
    pub fn params(&self) -> KnnParams {
        KnnParams {
            k: self.k,
            num_comp_indices: self.num_comp_indices,
            num_simp_indices: self.num_simp_indices,
            levels: self.levels,
            construction_field_of_view: self.construction_field_of_view,
            construction_prop_to_retrieve: self.construction_prop_to_retrieve,
            construction_scan: self.construction_scan,
            query_field_of_view: self.query_field_of_view,
            query_prop_to_retrieve: self.query_prop_to_retrieve,
            num_to_visit: self.num_to_visit,
            prop_to_visit: self.prop_to_visit,
            seed: self.seed,
            query_prop_field_of_view: self.query_prop_field_of_view,
        }
    }
}

impl std::fmt::Display for KnnConfig {
    /// The `key=value` list `KnnParams::parse` reads back (the main knobs only).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "k={},lc={},m={},levels={},prop_to_retrieve={},seed={}",
            self.k, self.num_comp_indices, self.num_simp_indices, self.levels, self.query_prop_to_retrieve, self.seed
        )?;
        if self.construction_scan {
            write!(f, ",construction_scan=on")?;
        }
        if let Some(fov) = self.query_field_of_view {
            write!(f, ",field_of_view={fov}")?;
        }
        if self.query_prop_field_of_view > 0.0 {
            write!(f, ",prop_field_of_view={}", self.query_prop_field_of_view)?;
        }
        Ok(())
    }
}

/// The indexes a `KnnAttention` node keeps from one call to the next, one per
/// (batch, kv head) group: a decode step whose past keys are the keys of the last
/// call inserts its new keys into that call's index instead of indexing the whole
/// past again (`knn_attention_group_cached`; the index is used only when it covers
/// a prefix of the call's keys bit for bit, so a stale or foreign cache costs a
/// rebuild, never a wrong answer). Not stored in `.floe` files; clones share it.
#[derive(Clone, Default)]
pub struct KnnCache(Arc<CacheState>);

#[derive(Default)]
struct CacheState {
    groups: Mutex<Vec<Option<KnnIndex>>>,
    reused: AtomicU64,
}

impl KnnCache {
    /// How many (call, group) pairs reused a cached index so far.
    pub fn reused(&self) -> u64 {
        self.0.reused.load(Ordering::Relaxed)
    }

    /// Group `g`'s index, taken out (the slot is empty until [`Self::put`]).
    fn take(&self, g: usize) -> Option<KnnIndex> {
        let mut groups = self.0.groups.lock().unwrap_or_else(|e| e.into_inner());
        groups.get_mut(g).and_then(Option::take)
    }

    fn put(&self, g: usize, index: Option<KnnIndex>, reused: bool) {
        let mut groups = self.0.groups.lock().unwrap_or_else(|e| e.into_inner());
        if groups.len() <= g {
            groups.resize_with(g + 1, || None);
        }
        groups[g] = index;
        if reused {
            self.0.reused.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for KnnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups = self.0.groups.lock().map_or(0, |g| g.iter().flatten().count());
        write!(f, "KnnCache({groups} indexes, {} reuses)", self.reused())
    }
}

/// The dims of one `KnnAttention` call, from the shapes of Q, K and V.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnnShapes {
    /// 3 (`[B, S, heads * d]`) or 4 (`[B, heads, S, d]`).
    pub rank: usize,
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub dim: usize,
    pub v_dim: usize,
}

impl KnnShapes {
    /// Checks Q, K, V shapes against each other and the head attributes.
    pub fn new(
        q: &[usize],
        k: &[usize],
        v: &[usize],
        q_num_heads: Option<usize>,
        kv_num_heads: Option<usize>,
    ) -> Result<KnnShapes> {
        let rank = q.len();
        if k.len() != rank || v.len() != rank || !(rank == 3 || rank == 4) {
            bail!("KnnAttention: Q, K and V must all be 3-D or all 4-D, got shapes {q:?}, {k:?} and {v:?}");
        }
        let s = if rank == 4 {
            for (attr, actual, what) in [(q_num_heads, q[1], "q_num_heads"), (kv_num_heads, k[1], "kv_num_heads")] {
                if attr.is_some_and(|n| n != actual) {
                    bail!("KnnAttention: {what} is {}, but the 4-D input has {actual} heads", attr.unwrap_or(0));
                }
            }
            KnnShapes {
                rank,
                batch: q[0],
                q_heads: q[1],
                kv_heads: k[1],
                q_len: q[2],
                kv_len: k[2],
                dim: q[3],
                v_dim: v[3],
            }
        } else {
            let (Some(qh), Some(kvh)) = (q_num_heads, kv_num_heads) else {
                bail!("KnnAttention: 3-D Q, K and V need the q_num_heads and kv_num_heads attributes");
            };
            if qh == 0 || kvh == 0 || !q[2].is_multiple_of(qh) || !k[2].is_multiple_of(kvh) || !v[2].is_multiple_of(kvh)
            {
                bail!(
                    "KnnAttention: hidden sizes of Q {q:?}, K {k:?}, V {v:?} are not multiples of their heads ({qh}, {kvh})"
                );
            }
            KnnShapes {
                rank,
                batch: q[0],
                q_heads: qh,
                kv_heads: kvh,
                q_len: q[1],
                kv_len: k[1],
                dim: q[2] / qh,
                v_dim: v[2] / kvh,
            }
        };
        let (kb, kh, ks, kd) =
            if rank == 4 { (k[0], k[1], k[2], k[3]) } else { (k[0], s.kv_heads, k[1], k[2] / s.kv_heads) };
        let (vb, vh, vs) = if rank == 4 { (v[0], v[1], v[2]) } else { (v[0], s.kv_heads, v[1]) };
        if kb != s.batch || vb != s.batch {
            bail!("KnnAttention: Q, K and V have batch sizes {}, {kb} and {vb}; they must be equal", s.batch);
        }
        if kd != s.dim {
            bail!("KnnAttention: Q head_size {} differs from K head_size {kd}", s.dim);
        }
        if vs != ks || vh != kh {
            bail!("KnnAttention: K {k:?} and V {v:?} differ in heads or positions");
        }
        if s.kv_heads == 0 || !s.q_heads.is_multiple_of(s.kv_heads) {
            bail!("KnnAttention: q_num_heads ({}) must be a multiple of kv_num_heads ({})", s.q_heads, s.kv_heads);
        }
        Ok(s)
    }

    /// The shape of Y: Q's, with the value head size.
    pub fn y_shape(&self) -> Vec<usize> {
        if self.rank == 4 {
            vec![self.batch, self.q_heads, self.q_len, self.v_dim]
        } else {
            vec![self.batch, self.q_len, self.q_heads * self.v_dim]
        }
    }

    fn y_len(&self) -> usize {
        self.batch * self.q_heads * self.q_len * self.v_dim
    }
}

/// k-NN attention over f32 operands laid out as `s` says (3-D or 4-D, read in
/// place), writing Y (`s.y_shape()`) into `y`. `nonpad` gives each batch's number
/// of real keys; the first `past` keys are a KV cache (causal queries see them
/// all). One task per (batch, kv head); each builds that group's index, or takes
/// it from `cache` and inserts the new keys, and answers its `q_heads / kv_heads`
/// query heads.
#[allow(clippy::too_many_arguments)]
pub fn knn_attention(
    s: &KnnShapes,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nonpad: Option<&[i64]>,
    scale: f32,
    (is_causal, past): (bool, usize),
    params: &KnnParams,
    y: &mut [f32],
    cache: Option<&KnnCache>,
) -> Result<()> {
    let (l, kv, d, dv) = (s.q_len, s.kv_len, s.dim, s.v_dim);
    let group = s.q_heads / s.kv_heads;
    let lens = [q.len(), k.len(), v.len(), y.len()];
    let want = [s.batch * s.q_heads * l * d, s.batch * s.kv_heads * kv * d, s.batch * s.kv_heads * kv * dv, s.y_len()];
    if lens != want {
        bail!("KnnAttention: operands hold {lens:?} values, the shapes need {want:?} (Q, K, V, Y)");
    }
    if let Some(n) = nonpad.filter(|n| n.len() != s.batch) {
        bail!("KnnAttention: nonpad_kv_seqlen has {} entries for a batch of {}", n.len(), s.batch);
    }
    let slab = group * l * dv;
    if slab == 0 {
        return Ok(());
    }
    let (qlay, klay, vlay) = (
        Layout::new(s.rank, s.q_heads, l, d),
        Layout::new(s.rank, s.kv_heads, kv, d),
        Layout::new(s.rank, s.kv_heads, kv, dv),
    );
    // Each group writes its heads as a contiguous [group, L, Dv] slab: Y itself when
    // 4-D, a scratch buffer scattered into the [B, L, Hq * Dv] rows when 3-D.
    let groups = |out: &mut [f32]| {
        parallel::for_each_chunk_mut(out, slab, &|gi, chunk| {
            let (b, kvh) = (gi / s.kv_heads, gi % s.kv_heads);
            let queries: Vec<Rows<'_>> = (0..group).map(|j| qlay.rows(q, b, kvh * group + j, l, d)).collect();
            let mut outs: Vec<&mut [f32]> = chunk.chunks_mut(l * dv).collect();
            let valid = nonpad.map_or(kv, |n| n[b].clamp(0, kv as i64) as usize);
            let visibility = Visibility { valid_keys: valid, causal_past: is_causal.then_some(past) };
            let (keys, vals) = (klay.rows(k, b, kvh, kv, d), vlay.rows(v, b, kvh, kv, dv));
            let mut index = cache.and_then(|c| c.take(gi));
            let reused = knn_attention_group_cached(
                &queries, keys, vals, scale, visibility, params, &mut outs, dv, None, &mut index,
            );
            if let Some(c) = cache {
                c.put(gi, index, reused);
            }
        })
    };
    if s.rank == 4 {
        groups(y);
    } else {
        let mut heads = vec![0.0f32; y.len()];
        groups(&mut heads);
        heads_to_3d(&heads, s.batch, s.q_heads, l, dv, y);
    }
    Ok(())
}

/// `[B, H, L, D]` rows into `[B, L, H * D]`.
fn heads_to_3d(heads: &[f32], batch: usize, h_count: usize, l: usize, dv: usize, y: &mut [f32]) {
    let row = h_count * dv;
    for b in 0..batch {
        for h in 0..h_count {
            for i in 0..l {
                let src = &heads[((b * h_count + h) * l + i) * dv..][..dv];
                y[(b * l + i) * row + h * dv..][..dv].copy_from_slice(src);
            }
        }
    }
}

/// `x` (`heads` heads of `seq` rows of `dim`, laid out as `rank` says) as 4-D
/// `[B, heads, P + seq, dim]`, after the `p` rows per head of the 4-D `past`.
fn heads_4d(
    x: &[f32],
    rank: usize,
    (batch, heads, seq, dim): (usize, usize, usize, usize),
    past: &[f32],
    p: usize,
) -> Vec<f32> {
    let lay = Layout::new(rank, heads, seq, dim);
    let mut out = Vec::with_capacity(batch * heads * (p + seq) * dim);
    for b in 0..batch {
        for h in 0..heads {
            out.extend_from_slice(&past[(b * heads + h) * p * dim..][..p * dim]);
            let rows = lay.rows(x, b, h, seq, dim);
            (0..seq).for_each(|i| out.extend_from_slice(rows.row(i)));
        }
    }
    out
}

/// A float tensor's values as f32 (borrowed when it already is f32).
fn f32_values(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    if t.dtype() == DType::F32 {
        Ok(Cow::Borrowed(t.as_slice::<f32>()?))
    } else {
        Ok(Cow::Owned(t.to_f64_vec().into_iter().map(|x| x as f32).collect()))
    }
}

fn nonpad_lens(t: Option<&Tensor>, batch: usize) -> Result<Option<Vec<i64>>> {
    let Some(t) = t else { return Ok(None) };
    let lens = t.to_i64_vec()?;
    if t.rank() != 1 || lens.len() != batch {
        bail!("KnnAttention: nonpad_kv_seqlen must have shape [batch] = [{batch}], got {:?}", t.shape());
    }
    Ok(Some(lens))
}

/// `KnnAttention` on tensors of any float dtype (computed in f32): the executor's
/// path when the shapes were not known at plan time, and the KV-cache path (inputs
/// past_key/past_value, outputs present_key/present_value, as ONNX `Attention`:
/// the past is 4-D `[B, kv_heads, P, head_size]`, present is past then K / V).
pub(super) fn eval_knn(op: &AttentionOp, n_outputs: usize, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
    let AttentionOp::KnnAttention { is_causal, q_num_heads, kv_num_heads, scale, knn, cache } = op else {
        bail!("eval_knn called on {op:?}");
    };
    if n_outputs == 0 || n_outputs > 3 {
        bail!("KnnAttention has 1 to 3 outputs (Y, present_key, present_value), got {n_outputs}");
    }
    let (qt, kt, vt) = (input(inputs, 0, "Q")?, input(inputs, 1, "K")?, input(inputs, 2, "V")?);
    for (t, what) in [(qt, "Q"), (kt, "K"), (vt, "V")] {
        check_float(t, what)?;
    }
    let s = KnnShapes::new(qt.shape(), kt.shape(), vt.shape(), *q_num_heads, *kv_num_heads)?;
    let lens = nonpad_lens(opt_input(inputs, 3), s.batch)?;
    let scale = scale.unwrap_or(1.0 / (s.dim as f32).sqrt());
    let (q, k, v) = (f32_values(qt)?, f32_values(kt)?, f32_values(vt)?);
    let params = knn.params();
    let past = match (opt_input(inputs, 4), opt_input(inputs, 5)) {
        (None, None) => None,
        (Some(pk), Some(pv)) => Some((pk, pv)),
        _ => bail!("KnnAttention: past_key and past_value must be given together"),
    };
    let out = |shape: &[usize], x: Vec<f32>, like: &Tensor| -> Result<Tensor> {
        if like.dtype() == DType::F32 {
            Tensor::from_vec(shape, x)
        } else {
            let x64: Vec<f64> = x.into_iter().map(f64::from).collect();
            to_float_tensor(shape, &x64, like.dtype())
        }
    };
    let mut y = vec![0.0f32; s.y_len()];
    if past.is_none() && n_outputs == 1 {
        knn_attention(&s, &q, &k, &v, lens.as_deref(), scale, (*is_causal, 0), &params, &mut y, None)?;
        return Ok(vec![out(&s.y_shape(), y, qt)?]);
    }
    // KV cache: keys and values after their past, every operand as 4-D heads.
    let (pk, pv, p) = match past {
        Some((pk, pv)) => {
            let p = pk.shape().get(2).copied().unwrap_or(0);
            let want = |dim: usize| [s.batch, s.kv_heads, p, dim];
            if pk.shape() != want(s.dim) || pv.shape() != want(s.v_dim) {
                bail!(
                    "KnnAttention: past_key {:?} and past_value {:?} must be [batch, kv_heads, past, head_size] = {:?} and {:?}",
                    pk.shape(),
                    pv.shape(),
                    want(s.dim),
                    want(s.v_dim)
                );
            }
            if pk.dtype() != kt.dtype() || pv.dtype() != vt.dtype() {
                bail!("KnnAttention: past_key/past_value dtypes must match K/V ({}, {})", kt.dtype(), vt.dtype());
            }
            (f32_values(pk)?, f32_values(pv)?, p)
        }
        None => (Cow::Borrowed(&[][..]), Cow::Borrowed(&[][..]), 0),
    };
    let (b, hq, hkv, l, n) = (s.batch, s.q_heads, s.kv_heads, s.q_len, s.kv_len);
    let k4 = heads_4d(&k, s.rank, (b, hkv, n, s.dim), &pk, p);
    let v4 = heads_4d(&v, s.rank, (b, hkv, n, s.v_dim), &pv, p);
    let q4 = if s.rank == 4 { q } else { Cow::Owned(heads_4d(&q, 3, (b, hq, l, s.dim), &[], 0)) };
    let s4 = KnnShapes { rank: 4, kv_len: p + n, ..s };
    let mut y4 = vec![0.0f32; s.y_len()];
    knn_attention(&s4, &q4, &k4, &v4, lens.as_deref(), scale, (*is_causal, p), &params, &mut y4, Some(cache))?;
    if s.rank == 4 {
        y = y4;
    } else {
        heads_to_3d(&y4, b, hq, l, s.v_dim, &mut y);
    }
    let mut outs = vec![out(&s.y_shape(), y, qt)?];
    if n_outputs > 1 {
        outs.push(out(&[b, hkv, p + n, s.dim], k4, kt)?);
    }
    if n_outputs > 2 {
        outs.push(out(&[b, hkv, p + n, s.v_dim], v4, vt)?);
    }
    Ok(outs)
}

/// The planned f32 kernel: shapes and parameters fixed at plan time.
#[derive(Debug)]
pub(super) struct KnnKernel {
    shapes: KnnShapes,
    scale: f32,
    is_causal: bool,
    params: KnnParams,
}

impl KnnKernel {
    /// The kernel for these inputs, or `None` (other dtypes, unknown shapes) to use `eval`.
    pub(super) fn plan(op: &AttentionOp, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Self>> {
        let AttentionOp::KnnAttention { is_causal, q_num_heads, kv_num_heads, scale, knn, .. } = op else {
            return Ok(None);
        };
        if inputs.len() > 4 {
            return Ok(None); // KV cache: `eval_knn`, which keeps the node's indexes
        }
        let shape = |i: usize| inputs.get(i).and_then(fixed_shape);
        let dtype = |i: usize| inputs.get(i).and_then(|x| x.fact.dtype);
        let (Some(qs), Some(ks), Some(vs)) = (shape(0), shape(1), shape(2)) else { return Ok(None) };
        if (0..3).any(|i| dtype(i) != Some(DType::F32)) || outputs.len() != 1 {
            return Ok(None);
        }
        let Ok(shapes) = KnnShapes::new(&qs, &ks, &vs, *q_num_heads, *kv_num_heads) else {
            return Ok(None); // eval reports the error
        };
        Ok(Some(KnnKernel {
            shapes,
            scale: scale.unwrap_or(1.0 / (shapes.dim as f32).sqrt()),
            is_causal: *is_causal,
            params: knn.params(),
        }))
    }
}

impl Kernel for KnnKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let (q, k, v) = (input(inputs, 0, "Q")?, input(inputs, 1, "K")?, input(inputs, 2, "V")?);
        let lens = nonpad_lens(opt_input(inputs, 3), self.shapes.batch)?;
        let Some(y) = outputs.first_mut() else { bail!("KnnAttention has no output") };
        knn_attention(
            &self.shapes,
            q.as_slice::<f32>()?,
            k.as_slice::<f32>()?,
            v.as_slice::<f32>()?,
            lens.as_deref(),
            self.scale,
            (self.is_causal, 0),
            &self.params,
            y.as_mut_slice::<f32>()?,
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::{attention, Bias, Heads};
    use crate::ops::layout::tests::Rng;
    use crate::ops::{EvalCtx, OpImpl};
    use crate::shape::Shape;
    use std::sync::Arc;

    #[test]
    fn the_config_reads_version_4_files_and_round_trips_prop_field_of_view_from_version_5() {
        use crate::format::table::with_layout;
        // The struct exactly as format version 4 derived it (an independent encoder).
        #[derive(serde::Serialize)]
        struct Old {
            k: usize,
            num_comp_indices: usize,
            num_simp_indices: usize,
            levels: usize,
            construction_field_of_view: usize,
            construction_prop_to_retrieve: f32,
            construction_scan: bool,
            query_field_of_view: Option<usize>,
            query_prop_to_retrieve: f32,
            num_to_visit: Option<usize>,
            prop_to_visit: f32,
            seed: u64,
        }
        let old = Old {
            k: 8,
            num_comp_indices: 2,
            num_simp_indices: 4,
            levels: 3,
            construction_field_of_view: usize::MAX,
            construction_prop_to_retrieve: 0.002,
            construction_scan: true,
            query_field_of_view: Some(64),
            query_prop_to_retrieve: 0.8,
            num_to_visit: None,
            prop_to_visit: 1.0,
            seed: 7,
        };
        let bytes = postcard::to_allocvec(&(old, 99u32)).unwrap();
        let (c, tail): (KnnConfig, u32) = with_layout(4, || postcard::from_bytes(&bytes)).unwrap();
        assert_eq!(tail, 99, "a version 4 config is read to its end, no further");
        let want = KnnConfig::from(&KnnParams {
            k: 8,
            construction_scan: true,
            construction_field_of_view: usize::MAX,
            query_field_of_view: Some(64),
            seed: 7,
            ..KnnParams::default()
        });
        assert_eq!(c, want);
        // Written as version 4, it is the old bytes exactly.
        assert_eq!(with_layout(4, || postcard::to_allocvec(&(&c, 99u32))).unwrap(), bytes);
        // From version 5 on the field is stored.
        let rec = KnnConfig::from(&KnnParams::recommended());
        assert_eq!(rec.query_prop_field_of_view, 0.34);
        let bytes = with_layout(5, || postcard::to_allocvec(&(&rec, 99u32))).unwrap();
        let back: (KnnConfig, u32) = with_layout(5, || postcard::from_bytes(&bytes)).unwrap();
        assert_eq!(back, (rec.clone(), 99));
        assert_eq!(rec.params().query_prop_field_of_view, 0.34);
        assert!(rec.to_string().contains("prop_field_of_view=0.34"), "{rec}");
    }

    /// A peaked workload: Gaussian-ish keys, each query a noisy copy of one key, so
    /// its attention concentrates on that key (the regime IceFormer is accurate in).
    /// Returns Q `[B, Hq, L, d]`, K and V `[B, Hkv, S, d]` / `[.., dv]` as flat f32.
    /// `visible(b, i)`: how many keys query `i` of batch `b` sees (its target is one of them).
    #[allow(clippy::too_many_arguments)]
    fn peaked(
        rng: &mut Rng,
        (b, hq, hkv): (usize, usize, usize),
        l: usize,
        s: usize,
        d: usize,
        dv: usize,
        visible: impl Fn(usize, usize) -> usize,
    ) -> [Vec<f32>; 3] {
        let mut gauss = || (0..4).map(|_| rng.f32()).sum::<f32>() / 4.0; // ~N(0, 1.33)
                                                                         // unit-norm keys, queries 12 sqrt(d) times a key: scores 12 apart from ~N(0, 12²/d)
        let mut k: Vec<f32> = (0..b * hkv * s * d).map(|_| gauss()).collect();
        for row in k.chunks_mut(d) {
            let n = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
        let v: Vec<f32> = (0..b * hkv * s * dv).map(|_| gauss()).collect();
        let mut q = Vec::with_capacity(b * hq * l * d);
        let mut pick = Rng(0x5eed_1234);
        for bi in 0..b {
            for h in 0..hq {
                let kvh = h / (hq / hkv);
                for i in 0..l {
                    let j = pick.below(visible(bi, i));
                    let key = &k[((bi * hkv + kvh) * s + j) * d..][..d];
                    q.extend(key.iter().map(|&x| 12.0 * (d as f32).sqrt() * x + 0.05 * gauss()));
                }
            }
        }
        [q, k, v]
    }

    fn knn_op(is_causal: bool, heads: Option<(usize, usize)>, seed: u64) -> AttentionOp {
        AttentionOp::KnnAttention {
            is_causal,
            q_num_heads: heads.map(|h| h.0),
            kv_num_heads: heads.map(|h| h.1),
            scale: None,
            // Exact parents within visited cells: IceFormer's own construction has
            // low recall on unclustered random keys (kernels/tests/knn_attention.rs).
            knn: KnnConfig { seed, construction_scan: true, ..KnnConfig::default() },
            cache: KnnCache::default(),
        }
    }

    /// Cosine of every `dv`-row of `got` against `want`; returns the smallest.
    fn min_row_cosine(got: &[f64], want: &[f64], dv: usize) -> f64 {
        got.chunks(dv)
            .zip(want.chunks(dv))
            .map(|(g, w)| {
                let dot: f64 = g.iter().zip(w).map(|(a, b)| a * b).sum();
                let n = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
                dot / (n(g) * n(w)).max(1e-30)
            })
            .fold(f64::INFINITY, f64::min)
    }

    /// Runs the op through its planned kernel (1 and 3 threads) and `eval`; checks
    /// they agree bit for bit and returns Y.
    fn run_planned(op: &AttentionOp, inputs: &[Option<Tensor>]) -> Tensor {
        let facts: Vec<Fact> = inputs
            .iter()
            .map(|t| t.as_ref().map_or_else(Fact::unknown, |t| Fact::new(t.dtype(), Shape::fixed(t.shape()))))
            .collect();
        let ins: Vec<InferInput<'_>> = facts.iter().map(|f| InferInput { fact: f, value: None }).collect();
        let args: Vec<Option<&Tensor>> = inputs.iter().map(Option::as_ref).collect();
        let want = op.eval(&EvalCtx { n_outputs: 1 }, &args).unwrap().remove(0);
        let inferred = op.infer(&ins, 1).unwrap();
        assert_eq!(inferred[0].shape, Some(Shape::fixed(want.shape())));
        let kernel = op.kernel(&ins, &[Fact::new(DType::F32, Shape::fixed(want.shape()))]).unwrap().expect("planned");
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap());
        for threads in [None, Some(&pool)] {
            let mut got = vec![Tensor::zeros(DType::F32, want.shape()).unwrap()];
            parallel::with_pool(threads, || kernel.run(&args, &mut got)).unwrap();
            assert_eq!(
                got[0].to_f64_vec(),
                want.to_f64_vec(),
                "kernel differs from eval (pool: {})",
                threads.is_some()
            );
        }
        want
    }

    #[test]
    fn knn_is_near_exact_on_peaked_gqa_attention_with_key_padding() {
        let (b, hq, hkv, l, s, d, dv) = (2, 4, 2, 48, 1100, 64, 16);
        let [q, k, v] = peaked(&mut Rng(0x9e37_79b9_7f4a_7c15), (b, hq, hkv), l, s, d, dv, |bi, _| [s, 900][bi]);
        let (qt, kt, vt) = (
            Tensor::from_vec(&[b, hq, l, d], q).unwrap(),
            Tensor::from_vec(&[b, hkv, s, d], k).unwrap(),
            Tensor::from_vec(&[b, hkv, s, dv], v).unwrap(),
        );
        let lens = vec![s as i64, 900];
        let nonpad = Tensor::from_vec(&[b], lens.clone()).unwrap();
        let got =
            run_planned(&knn_op(false, None, 7), &[Some(qt.clone()), Some(kt.clone()), Some(vt.clone()), Some(nonpad)]);
        let (qh, kh, vh) =
            (Heads::from_4d(&qt, "Q").unwrap(), Heads::from_4d(&kt, "K").unwrap(), Heads::from_4d(&vt, "V").unwrap());
        let (want, _) =
            attention(&qh, &kh, &vh, &Bias::none().with_nonpad(lens), 1.0 / (d as f64).sqrt(), 0.0, None).unwrap();
        let cos = min_row_cosine(&got.to_f64_vec(), &want.data, dv);
        assert!(cos >= 0.99, "worst row cosine {cos}");
    }

    #[test]
    fn causal_3d_knn_is_near_exact_and_exact_while_a_query_sees_at_most_k_keys() {
        let (hq, hkv, l, d, dv) = (2, 1, 1030, 64, 8);
        let [q, k, v] = peaked(&mut Rng(0x1234_5678_9abc_def1), (1, hq, hkv), l, l, d, dv, |_, i| i + 1);
        // 4-D [1, H, L, d] -> 3-D [1, L, H * d]
        let to3 = |x: &[f32], h: usize, c: usize| -> Tensor {
            let mut out = vec![0.0f32; x.len()];
            for hi in 0..h {
                for i in 0..l {
                    out[(i * h + hi) * c..][..c].copy_from_slice(&x[(hi * l + i) * c..][..c]);
                }
            }
            Tensor::from_vec(&[1, l, h * c], out).unwrap()
        };
        let (qt, kt, vt) = (to3(&q, hq, d), to3(&k, hkv, d), to3(&v, hkv, dv));
        let got =
            run_planned(&knn_op(true, Some((hq, hkv)), 3), &[Some(qt.clone()), Some(kt.clone()), Some(vt.clone())]);
        let (qh, kh, vh) = (
            Heads::from_3d(&qt, hq, "Q").unwrap(),
            Heads::from_3d(&kt, hkv, "K").unwrap(),
            Heads::from_3d(&vt, hkv, "V").unwrap(),
        );
        let (want, _) =
            attention(&qh, &kh, &vh, &Bias::none().with_causal(0), 1.0 / (d as f64).sqrt(), 0.0, None).unwrap();
        let want = want.to_tensor_3d(DType::F64).unwrap().to_f64_vec();
        let got = got.to_f64_vec();
        let cos = min_row_cosine(&got, &want, dv);
        assert!(cos >= 0.99, "worst row cosine {cos}");
        // The first k = 20 queries see at most 20 keys: exact up to f32 rounding.
        let row = hq * dv;
        for (a, b) in got[..20 * row].iter().zip(&want[..20 * row]) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn same_seed_same_output_and_the_node_round_trips_through_serde() {
        let (b, h, l, s, d) = (1, 1, 64, 1200, 16);
        let [q, k, v] = peaked(&mut Rng(42), (b, h, h), l, s, d, d, |_, _| s);
        let ins = [
            Some(Tensor::from_vec(&[b, h, l, d], q).unwrap()),
            Some(Tensor::from_vec(&[b, h, s, d], k).unwrap()),
            Some(Tensor::from_vec(&[b, h, s, d], v).unwrap()),
        ];
        let op = knn_op(false, None, 11);
        let bytes = postcard::to_allocvec(&crate::ops::Op::from(op.clone())).unwrap();
        let back: crate::ops::Op = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.name(), "KnnAttention");
        let crate::ops::Op::Attention(back) = back else { panic!("not an attention op") };
        let (a, b2) = (run_planned(&op, &ins), run_planned(&back, &ins));
        assert_eq!(a.to_f64_vec(), b2.to_f64_vec(), "same seed, same output");
    }

    #[test]
    fn kv_cache_decode_reuses_the_index_and_equals_one_causal_call_over_the_sequence() {
        // GQA (2 query heads on 1 kv head), 4-D: prefill 1100 tokens with an empty
        // past, then 10 decode steps each feeding the previous present_key/value.
        let (hq, hkv, pre, total, d) = (2, 1, 1100, 1110, 16);
        let [q, mut k, v] = peaked(&mut Rng(0xdec0de), (1, hq, hkv), total, total, d, d, |_, i| i + 1);
        // Key 0 has the largest norm, so every call's M^2 bound is the whole sequence's.
        k[..d].iter_mut().for_each(|x| *x *= 2.0);
        let rows = |x: &[f32], h: usize, r: std::ops::Range<usize>| -> Tensor {
            let mut out = Vec::new();
            (0..h).for_each(|hi| out.extend_from_slice(&x[(hi * total + r.start) * d..(hi * total + r.end) * d]));
            Tensor::from_vec(&[1, h, r.len(), d], out).unwrap()
        };
        // Reference: one causal call over the whole sequence, on a node of its own.
        let whole = knn_op(true, None, 5)
            .eval(
                &EvalCtx { n_outputs: 1 },
                &[Some(&rows(&q, hq, 0..total)), Some(&rows(&k, hkv, 0..total)), Some(&rows(&v, hkv, 0..total))],
            )
            .unwrap()
            .remove(0);
        let whole = whole.as_slice::<f32>().unwrap();
        let want = |h: usize, i: usize| &whole[(h * total + i) * d..][..d];

        let op = knn_op(true, None, 5);
        let AttentionOp::KnnAttention { cache, .. } = &op else { unreachable!() };
        let step = |r: std::ops::Range<usize>, past: (&Tensor, &Tensor)| {
            let ins = [rows(&q, hq, r.clone()), rows(&k, hkv, r.clone()), rows(&v, hkv, r)];
            let args = [Some(&ins[0]), Some(&ins[1]), Some(&ins[2]), None, Some(past.0), Some(past.1)];
            op.eval(&EvalCtx { n_outputs: 3 }, &args).unwrap()
        };
        let empty = Tensor::from_vec(&[1, hkv, 0, d], Vec::<f32>::new()).unwrap();
        let mut outs = step(0..pre, (&empty, &empty));
        for h in 0..hq {
            for i in 0..pre {
                assert_eq!(&outs[0].as_slice::<f32>().unwrap()[(h * pre + i) * d..][..d], want(h, i), "prefill");
            }
        }
        assert_eq!(cache.reused(), 0);
        for t in pre..total {
            let (pk, pv) = (outs.remove(1), outs.remove(1));
            outs = step(t..t + 1, (&pk, &pv));
            for h in 0..hq {
                assert_eq!(&outs[0].as_slice::<f32>().unwrap()[h * d..][..d], want(h, t), "decode step {t}");
            }
        }
        assert_eq!(cache.reused(), (total - pre) as u64, "every decode step reused the index");
        assert_eq!(outs[1].shape(), &[1, hkv, total, d]);
        assert_eq!(outs[1].as_slice::<f32>().unwrap(), rows(&k, hkv, 0..total).as_slice::<f32>().unwrap());
        assert_eq!(outs[2].as_slice::<f32>().unwrap(), rows(&v, hkv, 0..total).as_slice::<f32>().unwrap());

        // Another sequence through the same node (a changed past key) rebuilds and
        // answers as a fresh node does.
        let mut other = rows(&k, hkv, 0..total - 1).as_slice::<f32>().unwrap().to_vec();
        other[3 * d] += 0.5;
        let other = Tensor::from_vec(&[1, hkv, total - 1, d], other).unwrap();
        let pv = rows(&v, hkv, 0..total - 1);
        let got = step(total - 1..total, (&other, &pv));
        let fresh = knn_op(true, None, 5);
        let ins = [rows(&q, hq, total - 1..total), rows(&k, hkv, total - 1..total), rows(&v, hkv, total - 1..total)];
        let args = [Some(&ins[0]), Some(&ins[1]), Some(&ins[2]), None, Some(&other), Some(&pv)];
        let want_fresh = fresh.eval(&EvalCtx { n_outputs: 1 }, &args).unwrap();
        assert_eq!(got[0].as_slice::<f32>().unwrap(), want_fresh[0].as_slice::<f32>().unwrap());
        assert_eq!(cache.reused(), (total - pre) as u64, "a foreign past is not reused");
        // The past must be whole: one of the two, or a wrong shape, is an error.
        let one = op
            .eval(&EvalCtx { n_outputs: 1 }, &[Some(&ins[0]), Some(&ins[1]), Some(&ins[2]), None, Some(&other), None]);
        assert!(one.unwrap_err().to_string().contains("together"));
        let short = rows(&v, hkv, 0..3);
        let bad = op.eval(
            &EvalCtx { n_outputs: 1 },
            &[Some(&ins[0]), Some(&ins[1]), Some(&ins[2]), None, Some(&other), Some(&short)],
        );
        assert!(bad.unwrap_err().to_string().contains("past_value"));
    }

    #[test]
    fn bad_shapes_are_errors_naming_the_op() {
        let t = |s: &[usize]| Tensor::zeros(DType::F32, s).unwrap();
        let op = knn_op(false, None, 0);
        let run = |ins: &[Option<&Tensor>]| op.eval(&EvalCtx { n_outputs: 1 }, ins).unwrap_err().to_string();
        let (q, k) = (t(&[1, 3, 4, 8]), t(&[1, 2, 5, 8]));
        assert!(run(&[Some(&q), Some(&k), Some(&k)]).contains("multiple of kv_num_heads"));
        let k3 = t(&[1, 5, 8]);
        assert!(run(&[Some(&k3), Some(&k3), Some(&k3)]).contains("q_num_heads"));
        let (q, k) = (t(&[1, 2, 4, 8]), t(&[1, 2, 5, 8]));
        let bad = Tensor::from_vec(&[2], vec![1i64, 2]).unwrap();
        assert!(run(&[Some(&q), Some(&k), Some(&k), Some(&bad)]).contains("nonpad_kv_seqlen"));
    }
}
