//! Detection post-processing: NonMaxSuppression (greedy, per batch and class).
//! Reference: ONNX spec NonMaxSuppression-11 and onnx/reference/ops/op_non_max_suppression.py.

use super::{input, opt_input, EvalCtx, InferInput, OpImpl};
use crate::bail;
use crate::dtype::DType;
use crate::error::Result;
use crate::shape::{Dim, Fact, Shape};
use crate::tensor::Tensor;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum DetectionOp {
    /// `center_point_box`: boxes are `[x_center, y_center, w, h]` instead of corners.
    NonMaxSuppression { center_point_box: bool },
}

/// Corner form `(y1, x1, y2, x2)` with min <= max.
fn corners(b: &[f64], center: bool) -> (f64, f64, f64, f64) {
    if center {
        let (cx, cy, w, h) = (b[0], b[1], b[2], b[3]);
        (cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0)
    } else {
        (b[0].min(b[2]), b[1].min(b[3]), b[0].max(b[2]), b[1].max(b[3]))
    }
}

/// Intersection over union, 0 when the boxes do not overlap or are degenerate.
fn iou(a: &[f64], b: &[f64], center: bool) -> f64 {
    let (ay1, ax1, ay2, ax2) = corners(a, center);
    let (by1, bx1, by2, bx2) = corners(b, center);
    let (ix, iy) = (ax2.min(bx2) - ax1.max(bx1), ay2.min(by2) - ay1.max(by1));
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    let (aa, ab) = ((ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1));
    let union = aa + ab - inter;
    if aa <= 0.0 || ab <= 0.0 || union <= 0.0 {
        return 0.0;
    }
    inter / union
}

fn first_f64(t: Option<&Tensor>) -> Option<f64> {
    t.and_then(|t| t.to_f64_vec().first().copied())
}

fn nms(
    boxes: &Tensor,
    scores: &Tensor,
    max_out: i64,
    iou_th: f64,
    score_th: Option<f64>,
    center: bool,
) -> Result<Tensor> {
    let (bs, ss) = (boxes.shape(), scores.shape());
    if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
        bail!("NonMaxSuppression: boxes {bs:?} must be [B, N, 4] and scores {ss:?} [B, C, N]");
    }
    let (nb, nc, n) = (ss[0], ss[1], ss[2]);
    let (bv, sv) = (boxes.to_f64_vec(), scores.to_f64_vec());
    let mut selected: Vec<i64> = Vec::new();
    let max_out = max_out.max(0) as usize;
    for b in 0..nb {
        let bx = |i: usize| &bv[(b * n + i) * 4..(b * n + i) * 4 + 4];
        for c in 0..nc {
            let sc = &sv[(b * nc + c) * n..(b * nc + c + 1) * n];
            let mut cand: Vec<usize> = (0..n).filter(|&i| score_th.is_none_or(|t| sc[i] > t)).collect();
            // highest score first; ties by lower index
            cand.sort_by(|&p, &q| sc[q].total_cmp(&sc[p]).then(p.cmp(&q)));
            let mut kept: Vec<usize> = Vec::new();
            for i in cand {
                if kept.len() >= max_out {
                    break;
                }
                if kept.iter().all(|&k| iou(bx(i), bx(k), center) <= iou_th) {
                    kept.push(i);
                    selected.extend([b as i64, c as i64, i as i64]);
                }
            }
        }
    }
    let k = selected.len() / 3;
    Tensor::from_vec(&[k, 3], selected)
}

impl OpImpl for DetectionOp {
    fn name(&self) -> &'static str {
        "NonMaxSuppression"
    }

    fn infer(&self, _inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        Ok(vec![Fact::new(DType::I64, Shape(vec![Dim::Unknown, Dim::Fixed(3)]))])
    }

    fn eval(&self, _ctx: &EvalCtx, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let DetectionOp::NonMaxSuppression { center_point_box } = self;
        let max_out =
            opt_input(inputs, 2).map(|t| t.to_i64_vec()).transpose()?.and_then(|v| v.first().copied()).unwrap_or(0);
        let iou_th = first_f64(opt_input(inputs, 3)).unwrap_or(0.0);
        let score_th = first_f64(opt_input(inputs, 4));
        Ok(vec![nms(
            input(inputs, 0, "boxes")?,
            input(inputs, 1, "scores")?,
            max_out,
            iou_th,
            score_th,
            *center_point_box,
        )?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_lower_score_box_is_suppressed() {
        // box 1 overlaps box 0 with IoU 0.81; box 2 is disjoint.
        let boxes =
            Tensor::from_slice(&[1, 3, 4], &[0.0f32, 0.0, 1.0, 1.0, 0.0, 0.0, 0.9, 0.9, 5.0, 5.0, 6.0, 6.0]).unwrap();
        let scores = Tensor::from_slice(&[1, 1, 3], &[0.9f32, 0.8, 0.7]).unwrap();
        let out = nms(&boxes, &scores, 10, 0.5, None, false).unwrap();
        assert_eq!(out.as_slice::<i64>().unwrap(), &[0, 0, 0, 0, 0, 2]);
    }
}
