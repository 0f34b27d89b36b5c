//! Exact scaled-dot-product attention for one (batch, head).
//!
//! `out_i = sum_j softmax_j(s_ij) v_j` over the keys query `i` sees ([`Visibility`]),
//! with `s_ij = scale * q_i . k_j`, then `softcap * tanh(s / softcap)` when
//! `softcap > 0`, then `+ bias_ij`. A query that sees no key gets NaN (the softmax
//! of an empty or all `-inf` row is undefined; ONNX's reference gives NaN too).

use super::{Rows, Visibility};

/// Shapes and options of one head's attention.
#[derive(Clone, Copy, Debug)]
pub struct HeadParams {
    pub scale: f32,
    /// Off when `<= 0`.
    pub softcap: f32,
    pub visibility: Visibility,
}

/// Checks operand shapes; returns `(L, S, d, dv)`.
fn dims(q: &Rows, k: &Rows, v: &Rows, bias: Option<&Rows>, out_len: usize, out_stride: usize) -> (usize, usize, usize, usize) {
    let (l, s, d, dv) = (q.rows, k.rows, q.cols, v.cols);
    assert_eq!(k.cols, d, "q and k head sizes differ");
    assert_eq!(v.rows, s, "k and v lengths differ");
    assert!(q.in_bounds() && k.in_bounds() && v.in_bounds(), "an operand is shorter than its shape");
    if let Some(b) = bias {
        assert!(b.rows == l && b.cols >= s && b.in_bounds(), "bias must cover [L, S]");
    }
    assert!(l == 0 || (l - 1) * out_stride + dv <= out_len, "output too small");
    (l, s, d, dv)
}

/// Exact attention of one head, computed row by row in f64 (the yardstick the
/// tiled kernel is tested against). `out` row `i` starts at `i * out_stride`.
pub fn attention_head_naive(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    bias: Option<Rows<'_>>,
    p: &HeadParams,
    out: &mut [f32],
    out_stride: usize,
) {
    let (l, _s, _d, dv) = dims(&q, &k, &v, bias.as_ref(), out.len(), out_stride);
    for i in 0..l {
        let n = p.visibility.visible(i);
        let qi = q.row(i);
        let mut sc: Vec<f64> = (0..n)
            .map(|j| {
                let mut x = p.scale as f64 * qi.iter().zip(k.row(j)).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
                if p.softcap > 0.0 {
                    x = p.softcap as f64 * (x / p.softcap as f64).tanh();
                }
                x + bias.map_or(0.0, |b| b.row(i)[j] as f64)
            })
            .collect();
        let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        sc.iter_mut().for_each(|x| *x = (*x - m).exp());
        let total: f64 = sc.iter().sum();
        let o = &mut out[i * out_stride..i * out_stride + dv];
        for (c, slot) in o.iter_mut().enumerate() {
            let acc: f64 = sc.iter().enumerate().map(|(j, w)| w * v.row(j)[c] as f64).sum();
            *slot = (acc / total) as f32;
        }
    }
}

/// Exact attention of one head (tiled online-softmax version lands next; this is
/// the same contract).
pub fn attention_head(
    q: Rows<'_>,
    k: Rows<'_>,
    v: Rows<'_>,
    bias: Option<Rows<'_>>,
    p: &HeadParams,
    out: &mut [f32],
    out_stride: usize,
) {
    attention_head_naive(q, k, v, bias, p, out, out_stride)
}
