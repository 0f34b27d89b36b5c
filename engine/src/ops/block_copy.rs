//! `BlockCopy`: the prepared kernel of Concat and of single-axis Slice. Both move
//! rows of contiguous bytes: for every index before the axis, one block per input.

use super::Kernel;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// One input's part: `rows` blocks of `len` bytes from `src + r * src_stride`
/// to `dst + r * dst_stride`.
#[derive(Clone, Debug)]
struct Part {
    input: usize,
    src: usize,
    src_stride: usize,
    dst: usize,
    dst_stride: usize,
    len: usize,
    rows: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct BlockCopy {
    parts: Vec<Part>,
    /// Bytes each input must have, and the output.
    in_bytes: Vec<usize>,
    out_bytes: usize,
}

/// (rows before `axis`, bytes of one step along it).
fn geometry(shape: &[usize], axis: usize, elem: usize) -> (usize, usize) {
    (shape[..axis].iter().product(), shape[axis + 1..].iter().product::<usize>() * elem)
}

impl BlockCopy {
    /// Concatenation of inputs of `shapes` along `axis`.
    pub(crate) fn concat(shapes: &[Vec<usize>], axis: usize, elem: usize) -> Option<BlockCopy> {
        let first = shapes.first()?;
        if shapes.iter().any(|s| s.len() != first.len() || axis >= s.len()) {
            return None;
        }
        let total: usize = shapes.iter().map(|s| s[axis]).sum();
        let (rows, step) = geometry(first, axis, elem);
        let mut at = 0;
        let mut parts = Vec::with_capacity(shapes.len());
        for (i, s) in shapes.iter().enumerate() {
            let len = s[axis] * step;
            parts.push(Part { input: i, src: 0, src_stride: len, dst: at, dst_stride: total * step, len, rows });
            at += len;
        }
        let in_bytes = shapes.iter().map(|s| s.iter().product::<usize>() * elem).collect();
        Some(BlockCopy { parts, in_bytes, out_bytes: rows * total * step })
    }

    /// `count` steps from `start` along `axis` of an input of `shape`.
    pub(crate) fn slice(shape: &[usize], axis: usize, start: usize, count: usize, elem: usize) -> Option<BlockCopy> {
        if axis >= shape.len() || start + count > shape[axis] {
            return None;
        }
        let (rows, step) = geometry(shape, axis, elem);
        let len = count * step;
        let part =
            Part { input: 0, src: start * step, src_stride: shape[axis] * step, dst: 0, dst_stride: len, len, rows };
        Some(BlockCopy {
            parts: vec![part],
            in_bytes: vec![shape.iter().product::<usize>() * elem],
            out_bytes: rows * len,
        })
    }
}

impl Kernel for BlockCopy {
    fn run(&self, inputs: &[Option<&Tensor>], outputs: &mut [Tensor]) -> Result<()> {
        let out = outputs.first_mut().ok_or_else(|| Error::Invalid("no output to write".into()))?;
        if out.bytes().len() != self.out_bytes {
            return Err(Error::Invalid(format!("output of {} bytes, planned {}", out.bytes().len(), self.out_bytes)));
        }
        for (i, &want) in self.in_bytes.iter().enumerate() {
            let got = inputs.get(i).copied().flatten().map(|t| t.bytes().len());
            if got != Some(want) {
                return Err(Error::Invalid(format!("input {i} of {got:?} bytes, planned {want}")));
            }
        }
        let dst = out.bytes_mut();
        for p in &self.parts {
            let src = inputs[p.input].expect("checked above").bytes();
            for r in 0..p.rows {
                let (s, d) = (p.src + r * p.src_stride, p.dst + r * p.dst_stride);
                dst[d..d + p.len].copy_from_slice(&src[s..s + p.len]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        Tensor::from_vec(shape, (0..n).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn concat_and_slice_copy_the_right_rows() {
        let (a, b) = (t(&[2, 1, 2]), t(&[2, 2, 2]));
        let k = BlockCopy::concat(&[vec![2, 1, 2], vec![2, 2, 2]], 1, 4).unwrap();
        let mut out = [Tensor::zeros(crate::DType::F32, &[2, 3, 2]).unwrap()];
        k.run(&[Some(&a), Some(&b)], &mut out).unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[0., 1., 0., 1., 2., 3., 2., 3., 4., 5., 6., 7.]);
        let k = BlockCopy::slice(&[2, 3, 2], 1, 1, 2, 4).unwrap();
        let mut s = [Tensor::zeros(crate::DType::F32, &[2, 2, 2]).unwrap()];
        k.run(&[Some(&out[0])], &mut s).unwrap();
        assert_eq!(s[0].as_slice::<f32>().unwrap(), &[0., 1., 2., 3., 4., 5., 6., 7.]);
        // wrong sizes are errors, not out-of-bounds copies
        assert!(k.run(&[Some(&a)], &mut s).is_err());
        assert!(BlockCopy::slice(&[2, 3, 2], 1, 2, 2, 4).is_none());
    }
}
