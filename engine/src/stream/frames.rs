//! Frame arithmetic on tensors along one axis: slicing, concatenation and
//! shifting a window, byte-wise for any dtype.

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// (rows before the axis, bytes of one frame-row after it).
fn split(shape: &[usize], axis: usize, dsize: usize) -> (usize, usize) {
    let outer = shape[..axis].iter().product();
    let inner = shape[axis + 1..].iter().product::<usize>() * dsize;
    (outer, inner)
}

/// Frames `start..start + len` of `t` along `axis`.
pub fn slice(t: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let shape = t.shape();
    if axis >= shape.len() || start + len > shape[axis] {
        return Err(Error::Invalid(format!("frames {start}..{} out of range for shape {shape:?}", start + len)));
    }
    let (outer, inner) = split(shape, axis, t.dtype().size());
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    let mut out = Tensor::zeros(t.dtype(), &out_shape)?;
    let src = t.bytes();
    let dst = out.bytes_mut();
    for o in 0..outer {
        let s = (o * shape[axis] + start) * inner;
        dst[o * len * inner..(o + 1) * len * inner].copy_from_slice(&src[s..s + len * inner]);
    }
    Ok(out)
}

/// Concatenation of `parts` along `axis` (all other dims equal).
pub fn concat(parts: &[Tensor], axis: usize) -> Result<Tensor> {
    let first = parts.first().ok_or_else(|| Error::Invalid("nothing to concatenate".into()))?;
    let total: usize = parts.iter().map(|p| p.shape()[axis]).sum();
    let mut shape = first.shape().to_vec();
    shape[axis] = total;
    let (outer, inner) = split(&shape, axis, first.dtype().size());
    let mut out = Tensor::zeros(first.dtype(), &shape)?;
    let dst = out.bytes_mut();
    let mut at = 0;
    for p in parts {
        let len = p.shape()[axis];
        let src = p.bytes();
        for o in 0..outer {
            let d = (o * total + at) * inner;
            dst[d..d + len * inner].copy_from_slice(&src[o * len * inner..(o + 1) * len * inner]);
        }
        at += len;
    }
    Ok(out)
}

/// Shifts `window` left by `x`'s frames along `axis` and writes `x` at its end
/// (`x` has at most as many frames as the window).
pub fn shift_in(window: &mut Tensor, x: &Tensor, axis: usize) -> Result<()> {
    let (w, n) = (window.shape()[axis], x.shape()[axis]);
    if n > w || window.dtype() != x.dtype() {
        return Err(Error::Invalid(format!("cannot shift {:?} into a window {:?}", x.shape(), window.shape())));
    }
    let (outer, inner) = split(window.shape(), axis, x.dtype().size());
    let src = x.bytes();
    let dst = window.bytes_mut();
    for o in 0..outer {
        let row = &mut dst[o * w * inner..(o + 1) * w * inner];
        row.copy_within(n * inner.., 0);
        row[(w - n) * inner..].copy_from_slice(&src[o * n * inner..(o + 1) * n * inner]);
    }
    Ok(())
}

/// A copy of `t` with `axis` grown to `len`, the old frames at the end and
/// zeros before them.
pub fn grow_front(t: &Tensor, axis: usize, len: usize) -> Result<Tensor> {
    let old = t.shape()[axis];
    let mut shape = t.shape().to_vec();
    shape[axis] = len;
    let mut out = Tensor::zeros(t.dtype(), &shape)?;
    let (outer, inner) = split(&shape, axis, t.dtype().size());
    let src = t.bytes();
    let dst = out.bytes_mut();
    for o in 0..outer {
        let d = (o * len + len - old) * inner;
        dst[d..d + old * inner].copy_from_slice(&src[o * old * inner..(o + 1) * old * inner]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn slice_then_concat_is_identity() {
        let x = t(&[2, 5, 3]);
        let parts = [slice(&x, 1, 0, 2).unwrap(), slice(&x, 1, 2, 3).unwrap()];
        assert_eq!(parts[0].as_slice::<f32>().unwrap(), &[0., 1., 2., 3., 4., 5., 15., 16., 17., 18., 19., 20.]);
        let y = concat(&parts, 1).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), x.as_slice::<f32>().unwrap());
        assert!(slice(&x, 1, 4, 2).is_err());
    }

    #[test]
    fn shift_in_keeps_the_newest_frames() {
        let mut w = Tensor::zeros(crate::DType::F32, &[1, 4]).unwrap();
        shift_in(&mut w, &Tensor::from_vec(&[1, 3], vec![1f32, 2., 3.]).unwrap(), 1).unwrap();
        shift_in(&mut w, &Tensor::from_vec(&[1, 2], vec![4f32, 5.]).unwrap(), 1).unwrap();
        assert_eq!(w.as_slice::<f32>().unwrap(), &[2., 3., 4., 5.]);
        assert!(shift_in(&mut w, &t(&[1, 5]), 1).is_err());
    }

    #[test]
    fn grow_front_pads_before() {
        let g = grow_front(&t(&[2, 2]), 1, 4).unwrap();
        assert_eq!(g.as_slice::<f32>().unwrap(), &[0., 0., 0., 1., 0., 0., 2., 3.]);
    }
}
