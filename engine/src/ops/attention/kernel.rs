//! The planned kernel of ONNX `Attention` for f32: the tiled online-softmax kernel
//! (`floe_kernels::attention::exact`) run per (batch, query head), reading heads
//! straight out of 3-D `[B, S, H * D]` or 4-D `[B, H, S, D]` operands (no transposes)
//! and writing Y in place. Masks: a float or bool `attn_mask` broadcast from the
//! right, `is_causal` (upper-left, after `past` cached keys) and `nonpad_kv_seqlen`.
//! Past keys/values are concatenated into the present outputs, which the kernel
//! then reads from.
//!
//! Falls back to the f64 reference (`eval`) for what it does not cover: other float
//! types, the `qk_matmul_output` output, and past inputs without present outputs.

use super::AttentionOp;
use crate::bail;
use crate::dtype::DType;
use crate::error::Result;
use crate::ops::{fixed_shape, InferInput, Kernel};
use crate::shape::Fact;
use crate::tensor::Tensor;
use floe_kernels::attention::exact::{attention_head, HeadParams};
use floe_kernels::attention::{Rows, Visibility};
use floe_kernels::parallel;
use std::sync::Mutex;

/// Products smaller than this (`B * Hq * L * S * (D + Dv)` multiply-adds) run on
/// the calling thread: waking a pool costs more than it saves.
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// Layout of one `[B, H, S, D]` or `[B, S, H * D]` operand: element (b, h, s, c) at
/// `b * batch + h * head + s * row + c`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    batch: usize,
    head: usize,
    row: usize,
}

impl Layout {
    pub(super) fn new(rank: usize, heads: usize, seq: usize, dim: usize) -> Layout {
        if rank == 4 {
            Layout { batch: heads * seq * dim, head: seq * dim, row: dim }
        } else {
            Layout { batch: seq * heads * dim, head: dim, row: heads * dim }
        }
    }

    pub(super) fn rows<'a>(&self, data: &'a [f32], b: usize, h: usize, seq: usize, dim: usize) -> Rows<'a> {
        Rows { data: &data[b * self.batch + h * self.head..], rows: seq, cols: dim, stride: self.row }
    }
}

/// The shapes of one planned call.
#[derive(Debug)]
pub(super) struct AttentionKernel {
    rank: usize,
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    new_len: usize,
    past: usize,
    dim: usize,
    v_dim: usize,
    scale: f32,
    softcap: f32,
    is_causal: bool,
    /// `attn_mask` dims right-aligned to 4 (`[B, Hq, L, S]` with 1 = broadcast).
    mask: Option<[usize; 4]>,
    /// A bool mask turned into 0 / -inf (reused across runs).
    mask_f32: Mutex<Vec<f32>>,
}

impl AttentionKernel {
    /// The kernel for these inputs, or `None` to use the reference.
    pub(super) fn plan(op: &AttentionOp, inputs: &[InferInput<'_>], outputs: &[Fact]) -> Result<Option<Self>> {
        let AttentionOp::Attention { is_causal, q_num_heads, kv_num_heads, scale, softcap, .. } = *op else {
            return Ok(None);
        };
        let shape = |i: usize| inputs.get(i).and_then(fixed_shape);
        let dtype = |i: usize| inputs.get(i).and_then(|x| x.fact.dtype);
        let (Some(qs), Some(ks), Some(vs)) = (shape(0), shape(1), shape(2)) else { return Ok(None) };
        if (0..3).any(|i| dtype(i) != Some(DType::F32)) || outputs.len() > 3 || outputs.is_empty() {
            return Ok(None);
        }
        let rank = qs.len();
        if ks.len() != rank || vs.len() != rank || !(rank == 3 || rank == 4) {
            return Ok(None); // eval reports the error
        }
        let (batch, q_heads, q_len, dim, kv_heads, new_len, v_dim) = if rank == 4 {
            (qs[0], qs[1], qs[2], qs[3], ks[1], ks[2], vs[3])
        } else {
            let (Some(qh), Some(kvh)) = (q_num_heads, kv_num_heads) else { return Ok(None) };
            if qh == 0 || kvh == 0 || qs[2] % qh != 0 || ks[2] % kvh != 0 || vs[2] % kvh != 0 {
                return Ok(None);
            }
            (qs[0], qh, qs[1], qs[2] / qh, kvh, ks[1], vs[2] / kvh)
        };
        let kv_ok = if rank == 4 {
            ks[0] == batch && vs[0] == batch && ks[3] == dim && vs[1] == kv_heads && vs[2] == new_len
        } else {
            ks[0] == batch && vs[0] == batch && vs[1] == new_len
        };
        if !kv_ok || kv_heads == 0 || q_heads % kv_heads != 0 {
            return Ok(None);
        }
        if [
            q_num_heads.filter(|_| rank == 4).is_some_and(|h| h != q_heads),
            kv_num_heads.filter(|_| rank == 4).is_some_and(|h| h != kv_heads),
        ]
        .iter()
        .any(|&bad| bad)
        {
            return Ok(None);
        }
        let past = match (shape(4), shape(5)) {
            (None, None) => 0,
            (Some(pk), Some(pv)) => {
                let fits = pk.len() == 4
                    && pk[..2] == [batch, kv_heads]
                    && pk[3] == dim
                    && pv.len() == 4
                    && pv[..3] == pk[..3]
                    && pv[3] == v_dim
                    && dtype(4) == Some(DType::F32)
                    && dtype(5) == Some(DType::F32);
                if !fits || outputs.len() < 3 {
                    return Ok(None);
                }
                pk[2]
            }
            _ => return Ok(None),
        };
        let total = past + new_len;
        let mask = match shape(3) {
            None => None,
            Some(m) => {
                if m.is_empty() || m.len() > 4 || !matches!(dtype(3), Some(DType::F32 | DType::Bool)) {
                    return Ok(None);
                }
                let mut d = [1usize; 4];
                d[4 - m.len()..].copy_from_slice(&m);
                let target = [batch, q_heads, q_len];
                if (0..3).any(|i| d[i] != 1 && d[i] != target[i]) || d[3] > total {
                    return Ok(None);
                }
                Some(d)
            }
        };
        if shape(6).is_some_and(|n| n != [batch]) {
            return Ok(None);
        }
        Ok(Some(AttentionKernel {
            rank,
            batch,
            q_heads,
            kv_heads,
            q_len,
            new_len,
            past,
            dim,
            v_dim,
            scale: scale.unwrap_or(1.0 / (dim as f32).sqrt()),
            softcap,
            is_causal,
            mask,
            mask_f32: Mutex::new(Vec::new()),
        }))
    }

    /// Writes past + new keys (or values) as `[B, Hkv, past + S, dim]` into `out`.
    fn present(&self, past: Option<&[f32]>, new: &[f32], dim: usize, out: &mut [f32]) {
        let total = self.past + self.new_len;
        let lay = Layout::new(self.rank, self.kv_heads, self.new_len, dim);
        for b in 0..self.batch {
            for h in 0..self.kv_heads {
                let dst = &mut out[(b * self.kv_heads + h) * total * dim..][..total * dim];
                if let Some(p) = past {
                    let n = self.past * dim;
                    dst[..n].copy_from_slice(&p[(b * self.kv_heads + h) * n..][..n]);
                }
                let src = lay.rows(new, b, h, self.new_len, dim);
                for s in 0..self.new_len {
                    dst[(self.past + s) * dim..][..dim].copy_from_slice(src.row(s));
                }
            }
        }
    }
}

impl Kernel for AttentionKernel {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let get = |i: usize| inputs.get(i).copied().flatten();
        let f32s = |i: usize| -> Result<Option<&[f32]>> { get(i).map(|t| t.as_slice::<f32>()).transpose() };
        let (Some(q), Some(k), Some(v)) = (f32s(0)?, f32s(1)?, f32s(2)?) else {
            bail!("Attention needs Q, K and V");
        };
        let total = self.past + self.new_len;
        // Keys and values the heads read: the inputs, or the present outputs holding past + new.
        let Some((y, rest)) = outputs.split_first_mut() else { bail!("Attention has no output") };
        let (mut kbuf, mut vbuf) = (None, None);
        if let [pk, rest @ ..] = rest {
            self.present(f32s(4)?, k, self.dim, pk.as_mut_slice::<f32>()?);
            kbuf = Some(&*pk);
            if let [pv, ..] = rest {
                self.present(f32s(5)?, v, self.v_dim, pv.as_mut_slice::<f32>()?);
                vbuf = Some(&*pv);
            }
        }
        let (kd, klay) = match kbuf {
            Some(t) if self.past > 0 => (t.as_slice::<f32>()?, Layout::new(4, self.kv_heads, total, self.dim)),
            _ => (k, Layout::new(self.rank, self.kv_heads, total, self.dim)),
        };
        let (vd, vlay) = match vbuf {
            Some(t) if self.past > 0 => (t.as_slice::<f32>()?, Layout::new(4, self.kv_heads, total, self.v_dim)),
            _ => (v, Layout::new(self.rank, self.kv_heads, total, self.v_dim)),
        };
        let nonpad = match get(6) {
            Some(t) => Some(t.to_i64_vec()?),
            None => None,
        };
        let mut mask_guard = self.mask_f32.lock().unwrap_or_else(|e| e.into_inner());
        let mask: Option<&[f32]> = match get(3) {
            None => None,
            Some(m) if m.dtype() == DType::Bool => {
                let bits = m.as_slice::<u8>()?;
                mask_guard.clear();
                mask_guard.extend(bits.iter().map(|&keep| if keep != 0 { 0.0 } else { f32::NEG_INFINITY }));
                Some(&mask_guard[..])
            }
            Some(m) => Some(m.as_slice::<f32>()?),
        };
        let qlay = Layout::new(self.rank, self.q_heads, self.q_len, self.dim);
        let group = self.q_heads / self.kv_heads;
        let (l, dv, rank) = (self.q_len, self.v_dim, self.rank);
        let head = |b: usize, h: usize, rows: std::ops::Range<usize>, out: &mut [f32], out_stride: usize| {
            let kvh = h / group;
            let mut valid = total;
            if let Some(n) = &nonpad {
                valid = valid.min(n[b].max(0) as usize);
            }
            let bias = mask.zip(self.mask).map(|(m, d)| {
                let pick = |x: usize, n: usize| if n == 1 { 0 } else { x };
                let plane = (pick(b, d[0]) * d[1] + pick(h, d[1])) * d[2] * d[3];
                let stride = if d[2] == 1 { 0 } else { d[3] };
                valid = valid.min(d[3]);
                Rows { data: &m[plane + pick(rows.start, d[2]) * d[3]..], rows: rows.len(), cols: d[3], stride }
            });
            let seen = valid.min(total);
            let keys = klay.rows(kd, b, kvh, seen, self.dim);
            let vals = vlay.rows(vd, b, kvh, seen, dv);
            let visibility =
                Visibility { valid_keys: seen, causal_past: self.is_causal.then_some(self.past + rows.start) };
            let qr = qlay.rows(q, b, h, l, self.dim).slice_rows(rows);
            let p = HeadParams { scale: self.scale, softcap: self.softcap, visibility };
            attention_head(qr, keys, vals, bias, &p, out, out_stride);
        };
        let yd = y.as_mut_slice::<f32>()?;
        let work = self.batch * self.q_heads * l * total * (self.dim + dv);
        let mut go = || {
            if rank == 4 {
                // one task per (batch, head): a contiguous [L, Dv] slab of Y
                parallel::for_each_chunk_mut(yd, l * dv, &|bh, slab| {
                    head(bh / self.q_heads, bh % self.q_heads, 0..l, slab, dv)
                });
            } else {
                // one task per (batch, block of query rows), every head inside
                let rows = l.div_ceil(parallel::threads().max(1)).max(1);
                let row_len = self.q_heads * dv;
                parallel::for_each_chunk_mut(yd, l * row_len, &|b, slab| {
                    parallel::for_each_chunk_mut(slab, rows * row_len, &|blk, chunk| {
                        let r0 = blk * rows;
                        let r1 = (r0 + rows).min(l);
                        for h in 0..self.q_heads {
                            head(b, h, r0..r1, &mut chunk[h * dv..], row_len);
                        }
                    });
                });
            }
        };
        if work < PARALLEL_MIN_WORK {
            parallel::serial(go);
        } else {
            go();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::QkOutput;
    use crate::ops::layout::tests::{assert_close, Rng};
    use crate::ops::{EvalCtx, OpImpl};
    use crate::shape::Shape;
    use std::sync::Arc;

    fn rand(rng: &mut Rng, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|_| rng.f32() * 0.5).collect::<Vec<f32>>()).unwrap()
    }

    fn op(is_causal: bool, heads: Option<(usize, usize)>, scale: Option<f32>, softcap: f32) -> AttentionOp {
        AttentionOp::Attention {
            is_causal,
            q_num_heads: heads.map(|h| h.0),
            kv_num_heads: heads.map(|h| h.1),
            scale,
            softcap,
            qk_output: QkOutput::Raw,
        }
    }

    /// Runs the planned kernel (at 1 and 3 threads) and the reference on `inputs`;
    /// returns false when no kernel was planned.
    fn check(op: &AttentionOp, inputs: &[Option<Tensor>], n_out: usize, what: &str) -> bool {
        let facts: Vec<Fact> = inputs
            .iter()
            .map(|t| t.as_ref().map_or_else(Fact::unknown, |t| Fact::new(t.dtype(), Shape::fixed(t.shape()))))
            .collect();
        let ins: Vec<InferInput<'_>> = facts.iter().map(|f| InferInput { fact: f, value: None }).collect();
        let args: Vec<Option<&Tensor>> = inputs.iter().map(Option::as_ref).collect();
        let want = op.eval(&EvalCtx { n_outputs: n_out }, &args).unwrap();
        let out_facts: Vec<Fact> = want.iter().map(|t| Fact::new(t.dtype(), Shape::fixed(t.shape()))).collect();
        let Some(kernel) = op.kernel(&ins, &out_facts).unwrap() else { return false };
        let pool = Arc::new(rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap());
        for threads in [None, Some(&pool)] {
            let mut got: Vec<Tensor> = want.iter().map(|t| Tensor::zeros(t.dtype(), t.shape()).unwrap()).collect();
            parallel::with_pool(threads, || kernel.run(&args, &mut got)).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (gv, wv) = (g.to_f64_vec(), w.to_f64_vec());
                // fully masked rows are NaN in both
                let same_nan = gv.iter().zip(&wv).all(|(a, b)| a.is_nan() == b.is_nan());
                assert!(same_nan, "{what}: output {i}: NaN positions differ");
                let clean = |v: &[f64]| v.iter().map(|x| if x.is_nan() { 0.0 } else { *x }).collect::<Vec<f64>>();
                let (gc, wc) = (clean(&gv), clean(&wv));
                let (gt, wt) = (Tensor::from_vec(g.shape(), gc).unwrap(), Tensor::from_vec(w.shape(), wc).unwrap());
                assert_close(&gt, &wt, 2e-5, &format!("{what}: output {i} (pool: {})", threads.is_some()));
            }
        }
        true
    }

    #[test]
    fn kernel_matches_the_reference_across_layouts_masks_gqa_and_kv_cache() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (b, hq, hkv, l, s, d, dv) = (2, 4, 2, 70, 90, 16, 8);
        // 4-D, GQA, every mask form
        let q = rand(&mut rng, &[b, hq, l, d]);
        let k = rand(&mut rng, &[b, hkv, s, d]);
        let v = rand(&mut rng, &[b, hkv, s, dv]);
        let float_mask = rand(&mut rng, &[b, 1, l, s]);
        let pad_mask =
            Tensor::from_vec(&[s], (0..s).map(|j| if j < 60 { 0.0f32 } else { f32::NEG_INFINITY }).collect::<Vec<_>>())
                .unwrap();
        let bools: Vec<u8> = (0..l * s).map(|i| (i % 7 != 0) as u8).collect();
        let bool_mask = Tensor::from_bytes(DType::Bool, &[l, s], &bools).unwrap();
        let short_mask = rand(&mut rng, &[1, hq, 1, 50]);
        let masks = [None, Some(float_mask), Some(pad_mask), Some(bool_mask), Some(short_mask)];
        for causal in [false, true] {
            for m in &masks {
                for (scale, softcap) in [(None, 0.0), (Some(0.3), 1.5)] {
                    let o = op(causal, None, scale, softcap);
                    let ins = [Some(q.clone()), Some(k.clone()), Some(v.clone()), m.clone()];
                    assert!(check(
                        &o,
                        &ins,
                        1,
                        &format!("4-D causal {causal} mask {:?}", m.as_ref().map(|t| t.shape().to_vec()))
                    ));
                }
            }
        }
        // 3-D with heads, large enough to split rows over threads; present outputs
        let (l3, s3) = (200, 150);
        let q3 = rand(&mut rng, &[1, l3, hq * 64]);
        let k3 = rand(&mut rng, &[1, s3, hkv * 64]);
        let v3 = rand(&mut rng, &[1, s3, hkv * 32]);
        for causal in [false, true] {
            let o = op(causal, Some((hq, hkv)), None, 0.0);
            let ins = [Some(q3.clone()), Some(k3.clone()), Some(v3.clone())];
            assert!(check(&o, &ins, 3, &format!("3-D causal {causal}")));
        }
        // past KV (decode of 3 new positions after 40 cached), causal, padding lengths
        let pk = rand(&mut rng, &[b, hkv, 40, d]);
        let pv = rand(&mut rng, &[b, hkv, 40, dv]);
        let (qn, kn, vn) =
            (rand(&mut rng, &[b, hq, 3, d]), rand(&mut rng, &[b, hkv, 3, d]), rand(&mut rng, &[b, hkv, 3, dv]));
        let lens = Tensor::from_vec(&[b], vec![43i64, 20]).unwrap();
        for causal in [false, true] {
            let o = op(causal, None, None, 0.0);
            let ins = [
                Some(qn.clone()),
                Some(kn.clone()),
                Some(vn.clone()),
                None,
                Some(pk.clone()),
                Some(pv.clone()),
                Some(lens.clone()),
            ];
            assert!(check(&o, &ins, 3, &format!("past causal {causal}")));
        }
        // the qk output stays on the reference
        let o = op(false, None, None, 0.0);
        assert!(!check(&o, &[Some(q.clone()), Some(k.clone()), Some(v.clone())], 4, "qk output"));
    }
}
