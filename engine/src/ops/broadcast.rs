//! Numpy-style multidirectional broadcasting (ONNX "Broadcasting" doc).

use crate::error::{Error, Result};
use crate::shape::{Dim, Shape};

/// The broadcast shape of several concrete shapes.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return Err(Error::Shape(format!("shapes {:?} cannot be broadcast together", shapes)));
            }
        }
    }
    Ok(out)
}

/// The broadcast shape of symbolic shapes (unknown where it cannot tell).
pub fn broadcast_facts(shapes: &[&Shape]) -> Result<Shape> {
    let rank = shapes.iter().map(|s| s.rank()).max().unwrap_or(0);
    let mut out = vec![Dim::Fixed(1); rank];
    for s in shapes {
        let off = rank - s.rank();
        for (i, d) in s.0.iter().enumerate() {
            let o = &mut out[off + i];
            *o = match (&*o, d) {
                (Dim::Fixed(1), d) => d.clone(),
                (o, Dim::Fixed(1)) => o.clone(),
                (Dim::Fixed(a), Dim::Fixed(b)) if a != b => {
                    return Err(Error::Shape(format!("dims {a} and {b} cannot be broadcast together")))
                }
                (a, b) if a == b => a.clone(),
                (Dim::Fixed(a), _) => Dim::Fixed(*a),
                (_, Dim::Fixed(b)) => Dim::Fixed(*b),
                _ => Dim::Unknown,
            };
        }
    }
    Ok(Shape(out))
}

/// Strides (in elements) to read `shape` as if it had `out` shape (0 on broadcast dims).
pub fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let own = super::strides(shape);
    let off = out.len() - shape.len();
    (0..out.len()).map(|i| if i < off || shape[i - off] == 1 { 0 } else { own[i - off] }).collect()
}

/// For every element of `out` (row-major), the source offset into a tensor of
/// `shape` broadcast to `out`. Calls `f(out_index, src_offset)`.
pub fn for_each_offset(shape: &[usize], out: &[usize], mut f: impl FnMut(usize, usize)) {
    let st = broadcast_strides(shape, out);
    let n: usize = out.iter().product();
    if n == 0 {
        return;
    }
    let mut idx = vec![0usize; out.len()];
    let mut off = 0usize;
    for i in 0..n {
        f(i, off);
        // increment the multi-index
        for d in (0..out.len()).rev() {
            idx[d] += 1;
            off += st[d];
            if idx[d] < out[d] {
                break;
            }
            off -= st[d] * idx[d];
            idx[d] = 0;
        }
    }
}

/// Offsets of each input for every output element, for two inputs.
pub fn binary_offsets(a: &[usize], b: &[usize], out: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let n: usize = out.iter().product();
    let mut oa = Vec::with_capacity(n);
    let mut ob = Vec::with_capacity(n);
    for_each_offset(a, out, |_, o| oa.push(o));
    for_each_offset(b, out, |_, o| ob.push(o));
    (oa, ob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_follows_numpy() {
        assert_eq!(broadcast_shapes(&[&[2, 1, 3], &[4, 1]]).unwrap(), vec![2, 4, 3]);
        assert!(broadcast_shapes(&[&[2, 3], &[4]]).is_err());
        let mut offs = vec![];
        for_each_offset(&[3, 1], &[3, 2], |_, o| offs.push(o));
        assert_eq!(offs, vec![0, 0, 1, 1, 2, 2]);
    }
}
