//! Axis permutation (ONNX Transpose) of a dense row-major tensor, for any `Copy`
//! element.
//!
//! A [`TransposePlan`] simplifies the permutation once: size-1 axes are dropped and
//! axes that stay adjacent and in order are merged, so e.g. `[N, C, H, W] -> [N, H,
//! W, C]` becomes a 2-D transpose of `C x HW` per batch. What remains runs as one
//! of two inner loops under a walk over the other axes:
//! - the innermost source axis stays innermost: contiguous runs copied with
//!   `copy_from_slice`;
//! - otherwise: a cache-blocked 2-D transpose between the output's innermost axis
//!   and the axis the source's innermost one moved to (tiles of
//!   [`TILE`] x [`TILE`], so both sides touch whole cache lines).

/// Side of the square tiles of the blocked 2-D transpose (16 f32 = one 64-byte line).
pub const TILE: usize = 16;

/// A permutation of a fixed shape, simplified once and run many times without
/// allocating.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransposePlan {
    /// Output axes walked by the outer loops: (size, source stride, output stride).
    outer: Vec<(usize, usize, usize)>,
    inner: Inner,
    len: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Inner {
    /// Copy `run` contiguous elements.
    Runs { run: usize },
    /// `dst[a + b * db] = src[a * sa + b]` for `a < na`, `b < nb`.
    Tile { na: usize, sa: usize, nb: usize, db: usize },
}

impl TransposePlan {
    /// Plans `dst = src.permute(perm)` for a source of `shape` (output axis `i` is
    /// source axis `perm[i]`). `None` if `perm` is not a permutation of the axes or
    /// the element count overflows.
    pub fn new(shape: &[usize], perm: &[usize]) -> Option<TransposePlan> {
        let r = shape.len();
        let mut seen = vec![false; r];
        if perm.len() != r || perm.iter().any(|&p| p >= r || std::mem::replace(&mut seen[p], true)) {
            return None;
        }
        let len = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        if len == 0 {
            return Some(TransposePlan { outer: Vec::new(), inner: Inner::Runs { run: 0 }, len });
        }
        // Drop size-1 axes, renumbering the rest in source order.
        let mut new_index = vec![usize::MAX; r];
        let mut k = 0;
        for (a, &d) in shape.iter().enumerate() {
            if d > 1 {
                new_index[a] = k;
                k += 1;
            }
        }
        let kept_shape: Vec<usize> = shape.iter().copied().filter(|&d| d > 1).collect();
        let kept_perm: Vec<usize> = perm.iter().map(|&p| new_index[p]).filter(|&p| p != usize::MAX).collect();
        // Merge runs of output axes whose source axes are consecutive: each run
        // is one source axis of the collapsed problem. groups: (first source axis, size).
        let mut groups: Vec<(usize, usize)> = Vec::new();
        for (i, &p) in kept_perm.iter().enumerate() {
            if i > 0 && kept_perm[i - 1] + 1 == p {
                groups.last_mut().expect("i > 0 has a group").1 *= kept_shape[p];
            } else {
                groups.push((p, kept_shape[p]));
            }
        }
        // Collapsed source axes are the groups in source order.
        let mut by_source: Vec<usize> = (0..groups.len()).collect();
        by_source.sort_by_key(|&g| groups[g].0);
        let mut cperm = vec![0; groups.len()];
        for (src_axis, &g) in by_source.iter().enumerate() {
            cperm[g] = src_axis;
        }
        let cshape: Vec<usize> = by_source.iter().map(|&g| groups[g].1).collect();
        let src_strides = row_major_strides(&cshape);
        let out_shape: Vec<usize> = groups.iter().map(|g| g.1).collect();
        let out_strides = row_major_strides(&out_shape);
        let axes: Vec<(usize, usize, usize)> =
            (0..groups.len()).map(|i| (out_shape[i], src_strides[cperm[i]], out_strides[i])).collect();
        let n = axes.len();
        if n == 0 {
            return Some(TransposePlan { outer: Vec::new(), inner: Inner::Runs { run: 1 }, len });
        }
        if cperm[n - 1] == n - 1 {
            return Some(TransposePlan {
                outer: axes[..n - 1].to_vec(),
                inner: Inner::Runs { run: axes[n - 1].0 },
                len,
            });
        }
        // The source's innermost axis moved to output axis j < n - 1.
        let j = cperm.iter().position(|&p| p == n - 1).expect("a permutation holds every axis");
        let inner = Inner::Tile { na: axes[n - 1].0, sa: axes[n - 1].1, nb: axes[j].0, db: axes[j].2 };
        let outer = axes.iter().enumerate().filter(|&(i, _)| i != j && i != n - 1).map(|(_, &a)| a).collect();
        Some(TransposePlan { outer, inner, len })
    }

    /// Elements of the source (and of the output).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rank after dropping size-1 axes and merging the ones that stay adjacent
    /// (0 or 1: a plain copy).
    pub fn collapsed_rank(&self) -> usize {
        self.outer.len()
            + match self.inner {
                Inner::Runs { run } => (run > 1) as usize,
                Inner::Tile { .. } => 2,
            }
    }

    /// Writes the permutation of `src` into `dst`.
    ///
    /// # Panics
    /// If `src` or `dst` does not hold [`len`](Self::len) elements.
    pub fn run<T: Copy>(&self, src: &[T], dst: &mut [T]) {
        assert!(
            src.len() == self.len && dst.len() == self.len,
            "transpose planned for {} elements, got src {} and dst {}",
            self.len,
            src.len(),
            dst.len()
        );
        if self.len > 0 {
            self.walk(0, 0, 0, src, dst);
        }
    }

    fn walk<T: Copy>(&self, d: usize, so: usize, d_off: usize, src: &[T], dst: &mut [T]) {
        if d == self.outer.len() {
            return self.inner_at(so, d_off, src, dst);
        }
        let (n, ss, ds) = self.outer[d];
        for i in 0..n {
            self.walk(d + 1, so + i * ss, d_off + i * ds, src, dst);
        }
    }

    #[inline]
    fn inner_at<T: Copy>(&self, so: usize, d_off: usize, src: &[T], dst: &mut [T]) {
        match self.inner {
            Inner::Runs { run } => dst[d_off..d_off + run].copy_from_slice(&src[so..so + run]),
            Inner::Tile { na, sa, nb, db } => {
                let (src, dst) = (&src[so..], &mut dst[d_off..]);
                for b0 in (0..nb).step_by(TILE) {
                    let b1 = (b0 + TILE).min(nb);
                    for a0 in (0..na).step_by(TILE) {
                        let a1 = (a0 + TILE).min(na);
                        if a1 - a0 == TILE && b1 - b0 == TILE {
                            square_tile(&src[a0 * sa + b0..], sa, &mut dst[b0 * db + a0..], db);
                            continue;
                        }
                        for b in b0..b1 {
                            let row = &mut dst[b * db + a0..b * db + a1];
                            for (a, o) in (a0..a1).zip(row) {
                                *o = src[a * sa + b];
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst[b * db + a] = src[a * sa + b]` for `a, b < TILE`: the tile's rows are read
/// into fixed-size arrays first, so the transposing loop has constant bounds and
/// no index checks (the compiler turns it into register shuffles).
#[inline(always)]
fn square_tile<T: Copy>(src: &[T], sa: usize, dst: &mut [T], db: usize) {
    let Some(&first) = src.first() else { return };
    let mut block = [[first; TILE]; TILE];
    for (a, row) in block.iter_mut().enumerate() {
        row.copy_from_slice(&src[a * sa..a * sa + TILE]);
    }
    for b in 0..TILE {
        let out: &mut [T; TILE] = (&mut dst[b * db..b * db + TILE]).try_into().expect("TILE elements");
        for (a, o) in out.iter_mut().enumerate() {
            *o = block[a][b];
        }
    }
}

fn row_major_strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// `dst = src` with its axes permuted: output axis `i` is source axis `perm[i]` of
/// a row-major source of `shape` (ONNX Transpose). Plans and runs once; hold a
/// [`TransposePlan`] to run the same permutation repeatedly.
///
/// # Panics
/// If `perm` is not a permutation of the axes of `shape`, or `src`/`dst` do not
/// hold `shape`'s element count.
pub fn permute<T: Copy>(src: &[T], shape: &[usize], perm: &[usize], dst: &mut [T]) {
    let plan = TransposePlan::new(shape, perm)
        .unwrap_or_else(|| panic!("perm {perm:?} is not a permutation of the axes of {shape:?}"));
    plan.run(src, dst);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Independent reference: maps every output index to its source index.
    fn naive<T: Copy + Default>(src: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        let (ss, os) = (row_major_strides(shape), row_major_strides(&out_shape));
        let mut dst = vec![T::default(); src.len()];
        for (i, o) in dst.iter_mut().enumerate() {
            let s: usize = (0..perm.len()).map(|d| (i / os[d]) % out_shape[d] * ss[perm[d]]).sum();
            *o = src[s];
        }
        dst
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn permute_matches_index_mapping_for_random_shapes_and_perms() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..3000 {
            let rank = 1 + case % 6;
            // small dims with plenty of 1s; now and then one past a tile edge
            let shape: Vec<usize> = (0..rank)
                .map(|_| match rng.below(8) {
                    0 | 1 => 1,
                    2 => TILE + 1 + rng.below(TILE),
                    _ => 2 + rng.below(4),
                })
                .collect();
            if shape.iter().product::<usize>() > 1 << 16 {
                continue;
            }
            let mut perm: Vec<usize> = (0..rank).collect();
            for i in (1..rank).rev() {
                perm.swap(i, rng.below(i + 1));
            }
            let n: usize = shape.iter().product();
            let src: Vec<u32> = (0..n as u32).collect();
            let mut dst = vec![u32::MAX; n];
            permute(&src, &shape, &perm, &mut dst);
            assert_eq!(dst, naive(&src, &shape, &perm), "shape {shape:?} perm {perm:?}");
        }
    }

    #[test]
    fn every_element_width_permutes_alike() {
        let (shape, perm) = ([3, 1, 17, 5], [2, 0, 3, 1]);
        let n = 3 * 17 * 5;
        let src8: Vec<u8> = (0..n).map(|v| v as u8).collect();
        let mut d8 = vec![0u8; n];
        permute(&src8, &shape, &perm, &mut d8);
        assert_eq!(d8, naive(&src8, &shape, &perm));
        let src64: Vec<u64> = (0..n as u64).collect();
        let mut d64 = vec![0u64; n];
        permute(&src64, &shape, &perm, &mut d64);
        assert_eq!(d64, naive(&src64, &shape, &perm));
    }

    #[test]
    fn adjacent_axes_merge_and_unit_axes_vanish() {
        // NCHW -> NHWC is a C x HW transpose per batch
        let p = TransposePlan::new(&[2, 3, 4, 5], &[0, 2, 3, 1]).unwrap();
        assert_eq!(p.collapsed_rank(), 3);
        assert!(matches!(p.inner, Inner::Tile { na: 3, sa: 20, nb: 20, db: 3 }));
        // moving only size-1 axes is a copy
        let p = TransposePlan::new(&[1, 6, 1, 7], &[2, 1, 0, 3]).unwrap();
        assert_eq!((p.collapsed_rank(), p.inner), (1, Inner::Runs { run: 42 }));
        // the innermost axis staying innermost copies contiguous runs
        let p = TransposePlan::new(&[2, 3, 8], &[1, 0, 2]).unwrap();
        assert_eq!(p.inner, Inner::Runs { run: 8 });
    }

    #[test]
    fn invalid_perms_are_refused() {
        assert!(TransposePlan::new(&[2, 3], &[0, 0]).is_none());
        assert!(TransposePlan::new(&[2, 3], &[0]).is_none());
        assert!(TransposePlan::new(&[2, 3], &[0, 2]).is_none());
        assert!(TransposePlan::new(&[], &[]).is_some());
    }
}
