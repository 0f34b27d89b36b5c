//! The two inner loops of k-NN attention, written once over
//! [`Simd`](crate::vecmath::simd::Simd) and dispatched once per process (the pattern
//! of `vecmath/dispatch.rs`):
//!
//! - [`scan_cell`]: the dot products of one query with every child of a tree cell.
//!   Children are stored transposed (one row per coordinate, the row padded to a
//!   multiple of [`BLOCK`] children), so a cell is scored with broadcast-multiply-add
//!   over contiguous memory and no horizontal reductions.
//! - [`scan_cell_rows`]: the same for [`ROWS`] queries at once (the batched query
//!   path groups the queries that expand a cell).
//! - [`dot`]: one dot product of two rows (re-parenting, tiny exact cases).
//!
//! Also the seeded generator (SplitMix64 + Box-Muller) the index draws from.

use crate::vecmath::simd::{Scalar, Simd};
use std::sync::OnceLock;

/// Children per column block of a cell's transposed storage.
pub const BLOCK: usize = 16;

/// `out[j] = sum_{c < rows} q[c] * soa[c * cap + j]` for `j < cap`.
type ScanFn = fn(q: &[f32], soa: &[f32], rows: usize, cap: usize, out: &mut [f32]);
type DotFn = fn(a: &[f32], b: &[f32]) -> f32;
type DotsFn = fn(q: &[f32], keys: &[f32], ids: &[u32], out: &mut [f32]);
type MaxIndexFn = fn(x: &[f32]) -> (f32, usize);
type MinMaxFn = fn(x: &[f32]) -> (f32, f32);
type CountFn = fn(x: &[f32], t: f32) -> usize;
type ScanRowsFn = fn(q: [&[f32]; ROWS], soa: &[f32], rows: usize, cap: usize, out: &mut [f32], maxes: &mut [f32; ROWS]);

/// Queries scored together against one cell by [`scan_cell_rows`].
pub const ROWS: usize = 8;

#[inline(always)]
fn scan_generic<S: Simd>(s: S, q: &[f32], soa: &[f32], rows: usize, cap: usize, out: &mut [f32]) {
    assert!(cap.is_multiple_of(BLOCK) && q.len() >= rows && soa.len() >= rows * cap && out.len() >= cap);
    let mut o = 0;
    while o < cap {
        // Four partial sums over the coordinates keep four FMA chains in flight.
        let (mut a0, mut a1, mut a2, mut a3) = (s.splat(0.0), s.splat(0.0), s.splat(0.0), s.splat(0.0));
        let mut c = 0;
        while c + 4 <= rows {
            a0 = s.mul_add(s.splat(q[c]), s.load(&soa[c * cap + o..]), a0);
            a1 = s.mul_add(s.splat(q[c + 1]), s.load(&soa[(c + 1) * cap + o..]), a1);
            a2 = s.mul_add(s.splat(q[c + 2]), s.load(&soa[(c + 2) * cap + o..]), a2);
            a3 = s.mul_add(s.splat(q[c + 3]), s.load(&soa[(c + 3) * cap + o..]), a3);
            c += 4;
        }
        while c < rows {
            a0 = s.mul_add(s.splat(q[c]), s.load(&soa[c * cap + o..]), a0);
            c += 1;
        }
        s.store(s.add(s.add(a0, a1), s.add(a2, a3)), &mut out[o..]);
        o += S::LANES;
    }
}

/// [`ROWS`] queries against one cell: `out[j * cap + i] = sum_c q_j[c] * soa[c * cap + i]`,
/// and `maxes[j]` = the largest of row `j`'s `cap` scores (padding columns score 0),
/// so a caller can skip a row none of whose scores passes its bar. Each cell vector
/// is loaded once for all rows (a `ROWS x LANES` register tile; eight independent
/// FMA chains cover the FMA latency on two ports).
#[inline(always)]
fn scan_rows_generic<S: Simd, const R: usize, const V: usize>(
    s: S,
    q: [&[f32]; ROWS],
    soa: &[f32],
    rows: usize,
    cap: usize,
    out: &mut [f32],
    maxes: &mut [f32; ROWS],
) {
    assert!(cap.is_multiple_of(BLOCK) && soa.len() >= rows * cap && out.len() >= ROWS * cap);
    assert!(R > 0 && ROWS.is_multiple_of(R));
    let soa = &soa[..rows * cap];
    // `R` rows per pass over the cell: the `R x V` accumulators, `V` column vectors
    // and `R` broadcasts must fit the register file, or the compiler spills an
    // accumulator and its FMA chain runs through memory (AVX2's 16 registers take
    // 4 x 2, AVX-512's and NEON's 32 take 8 x 2).
    for p in (0..ROWS).step_by(R) {
        // Rows cut to exactly `rows`: the loops below index them without checks.
        let q: [&[f32]; R] = std::array::from_fn(|j| &q[p + j][..rows]);
        let mut mx = [s.splat(f32::NEG_INFINITY); R];
        let mut o = 0;
        while o + V * S::LANES <= cap {
            let mut acc = [[s.splat(0.0); R]; V];
            for (c, row) in soa.chunks_exact(cap).enumerate() {
                let x: [S::F; V] = std::array::from_fn(|v| s.load(&row[o + v * S::LANES..]));
                for j in 0..R {
                    let b = s.splat(q[j][c]);
                    for v in 0..V {
                        acc[v][j] = s.mul_add(b, x[v], acc[v][j]);
                    }
                }
            }
            for (v, acc) in acc.iter().enumerate() {
                for (j, a) in acc.iter().enumerate() {
                    s.store(*a, &mut out[(p + j) * cap + o + v * S::LANES..]);
                    mx[j] = s.max(mx[j], *a);
                }
            }
            o += V * S::LANES;
        }
        while o < cap {
            let mut acc = [s.splat(0.0); R];
            for (c, row) in soa.chunks_exact(cap).enumerate() {
                let x = s.load(&row[o..]);
                for j in 0..R {
                    acc[j] = s.mul_add(s.splat(q[j][c]), x, acc[j]);
                }
            }
            for (j, a) in acc.iter().enumerate() {
                s.store(*a, &mut out[(p + j) * cap + o..]);
                mx[j] = s.max(mx[j], *a);
            }
            o += S::LANES;
        }
        for j in 0..R {
            maxes[p + j] = s.reduce_max(mx[j]);
        }
    }
}

/// The largest element and the position of its first occurrence (see [`max_index`]):
/// a vector max, then a scan for it.
#[inline(always)]
fn max_index_generic<S: Simd>(s: S, x: &[f32]) -> (f32, usize) {
    let mut m = s.splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + S::LANES <= x.len() {
        m = s.max(m, s.load(&x[i..]));
        i += S::LANES;
    }
    let mut best = s.reduce_max(m);
    for &v in &x[i..] {
        best = best.max(v);
    }
    (best, x.iter().position(|&v| v == best).unwrap_or(0))
}

/// `(min, max)` of `x` (`(inf, -inf)` when empty; NaNs give an unspecified result).
#[inline(always)]
fn min_max_generic<S: Simd>(s: S, x: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (s.splat(f32::INFINITY), s.splat(f32::NEG_INFINITY));
    let mut i = 0;
    while i + S::LANES <= x.len() {
        let v = s.load(&x[i..]);
        lo = s.min(lo, v);
        hi = s.max(hi, v);
        i += S::LANES;
    }
    let (mut a, mut b) = (-s.reduce_max(s.sub(s.splat(0.0), lo)), s.reduce_max(hi));
    for &v in &x[i..] {
        a = a.min(v);
        b = b.max(v);
    }
    (a, b)
}

/// How many elements of `x` are `>= t` (NaNs count as not below `t`).
#[inline(always)]
fn count_at_least_generic<S: Simd>(s: S, x: &[f32], t: f32) -> usize {
    let (tv, one, zero) = (s.splat(t), s.splat(1.0), s.splat(0.0));
    // Lane counts stay exact in f32 far beyond any cell or level size (2^24).
    let mut acc = s.splat(0.0);
    let mut i = 0;
    while i + S::LANES <= x.len() {
        acc = s.add(acc, s.select(s.lt(s.load(&x[i..]), tv), zero, one));
        i += S::LANES;
    }
    s.reduce_sum(acc) as usize + x[i..].iter().filter(|&&v| v >= t || v.is_nan()).count()
}

#[inline(always)]
fn dot_generic<S: Simd>(s: S, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (mut a0, mut a1) = (s.splat(0.0), s.splat(0.0));
    let mut i = 0;
    while i + 2 * S::LANES <= n {
        a0 = s.mul_add(s.load(&a[i..]), s.load(&b[i..]), a0);
        a1 = s.mul_add(s.load(&a[i + S::LANES..]), s.load(&b[i + S::LANES..]), a1);
        i += 2 * S::LANES;
    }
    while i + S::LANES <= n {
        a0 = s.mul_add(s.load(&a[i..]), s.load(&b[i..]), a0);
        i += S::LANES;
    }
    let mut t = s.reduce_sum(s.add(a0, a1));
    while i < n {
        t += a[i] * b[i];
        i += 1;
    }
    t
}

/// `out[i] = q . keys[ids[i]]` (rows of `q.len()` in `keys`): [`dot`] in one call.
#[inline(always)]
fn dots_generic<S: Simd>(s: S, q: &[f32], keys: &[f32], ids: &[u32], out: &mut [f32]) {
    let d = q.len();
    for (o, &id) in out.iter_mut().zip(ids) {
        let at = id as usize * d;
        *o = dot_generic(s, q, &keys[at..at + d]);
    }
}

/// Safe entry points for one instruction set; `$features` are enabled on an inner
/// function that the table below hands out only after detecting them.
macro_rules! entries {
    ($m:ident, $tok:ty, $r:literal, $v:literal $(, $features:literal)?) => {
        mod $m {
            use super::*;
            #[allow(unused_imports)]
            use crate::vecmath::*;
            pub fn scan(q: &[f32], soa: &[f32], rows: usize, cap: usize, out: &mut [f32]) {
                $(#[target_feature(enable = $features)])?
                unsafe fn inner(q: &[f32], soa: &[f32], rows: usize, cap: usize, out: &mut [f32]) {
                    // SAFETY: `kernels()` hands this entry out only after detecting the features.
                    let s = unsafe { <$tok>::new_unchecked() };
                    scan_generic(s, q, soa, rows, cap, out)
                }
                // SAFETY: as above, the CPU has the features of `$tok`.
                unsafe { inner(q, soa, rows, cap, out) }
            }
            pub fn scan_rows(
                q: [&[f32]; ROWS],
                soa: &[f32],
                rows: usize,
                cap: usize,
                out: &mut [f32],
                maxes: &mut [f32; ROWS],
            ) {
                $(#[target_feature(enable = $features)])?
                unsafe fn inner(
                    q: [&[f32]; ROWS],
                    soa: &[f32],
                    rows: usize,
                    cap: usize,
                    out: &mut [f32],
                    maxes: &mut [f32; ROWS],
                ) {
                    // SAFETY: as for `scan`.
                    let s = unsafe { <$tok>::new_unchecked() };
                    scan_rows_generic::<_, $r, $v>(s, q, soa, rows, cap, out, maxes)
                }
                // SAFETY: as for `scan`.
                unsafe { inner(q, soa, rows, cap, out, maxes) }
            }
            pub fn max_index(x: &[f32]) -> (f32, usize) {
                $(#[target_feature(enable = $features)])?
                unsafe fn inner(x: &[f32]) -> (f32, usize) {
                    // SAFETY: as for `scan`.
                    let s = unsafe { <$tok>::new_unchecked() };
                    max_index_generic(s, x)
                }
                // SAFETY: as for `scan`.
                unsafe { inner(x) }
            }
            pub fn min_max(x: &[f32]) -> (f32, f32) {
                $(#[target_feature(enable = $features)])?
                unsafe fn inner(x: &[f32]) -> (f32, f32) {
                    // SAFETY: as for `scan`.
                    let s = unsafe { <$tok>::new_unchecked() };
                    min_max_generic(s, x)
                }
                // SAFETY: as for `scan`.
                unsafe { inner(x) }
            }
            pub fn count_at_least(x: &[f32], t: f32) -> usize {
                $(#[target_feature(enable = $features)])?
                unsafe fn inner(x: &[f32], t: f32) -> usize {
                    // SAFETY: as for `scan`.
                    let s = unsafe { <$tok>::new_unchecked() };
                    count_at_least_generic(s, x, t)
                }
                // SAFETY: as for `scan`.
                unsafe { inner(x, t) }
            }
            pub fn dot(a: &[f32], b: &[f32]) -> f32 {
                $(#[target_feature(enable = $features)])?
                unsafe fn inner(a: &[f32], b: &[f32]) -> f32 {
                    // SAFETY: as for `scan`.
                    let s = unsafe { <$tok>::new_unchecked() };
                    dot_generic(s, a, b)
                }
                // SAFETY: as for `scan`.
                unsafe { inner(a, b) }
            }
            pub fn dots(q: &[f32], keys: &[f32], ids: &[u32], out: &mut [f32]) {
                $(#[target_feature(enable = $features)])?
                unsafe fn inner(q: &[f32], keys: &[f32], ids: &[u32], out: &mut [f32]) {
                    // SAFETY: as for `scan`.
                    let s = unsafe { <$tok>::new_unchecked() };
                    dots_generic(s, q, keys, ids, out)
                }
                // SAFETY: as for `scan`.
                unsafe { inner(q, keys, ids, out) }
            }
        }
    };
}

/// The scalar token has no features to prove; `new_unchecked` mirrors the others.
trait Unchecked {
    /// # Safety
    /// The CPU must have the token's features.
    unsafe fn new_unchecked() -> Self;
}
impl Unchecked for Scalar {
    unsafe fn new_unchecked() -> Self {
        Scalar
    }
}

// The literals are the rows per pass and the column vectors per step of
// `scan_rows_generic`: `ROWS x 2` where 32 vector registers hold the accumulators
// (AVX-512, NEON), `4 x 2` in AVX2's 16.
entries!(scalar, Scalar, 8, 1);
#[cfg(target_arch = "x86_64")]
entries!(avx512, crate::vecmath::x86::Avx512, 8, 2, "avx512f");
#[cfg(target_arch = "x86_64")]
entries!(avx2, crate::vecmath::x86::Avx2Fma, 4, 2, "avx2,fma");
#[cfg(target_arch = "aarch64")]
entries!(neon, crate::vecmath::neon::Neon, 8, 2, "neon");

#[derive(Clone, Copy)]
struct Kernels {
    scan: ScanFn,
    scan_rows: ScanRowsFn,
    max_index: MaxIndexFn,
    min_max: MinMaxFn,
    count_at_least: CountFn,
    dot: DotFn,
    dots: DotsFn,
}

fn kernels() -> Kernels {
    static K: OnceLock<Kernels> = OnceLock::new();
    *K.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if crate::vecmath::x86::Avx512::new().is_some() {
                return Kernels {
                    scan: avx512::scan,
                    scan_rows: avx512::scan_rows,
                    max_index: avx512::max_index,
                    min_max: avx512::min_max,
                    count_at_least: avx512::count_at_least,
                    dot: avx512::dot,
                    dots: avx512::dots,
                };
            }
            if crate::vecmath::x86::Avx2Fma::new().is_some() {
                return Kernels {
                    scan: avx2::scan,
                    scan_rows: avx2::scan_rows,
                    max_index: avx2::max_index,
                    min_max: avx2::min_max,
                    count_at_least: avx2::count_at_least,
                    dot: avx2::dot,
                    dots: avx2::dots,
                };
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if crate::vecmath::neon::Neon::new().is_some() {
                return Kernels {
                    scan: neon::scan,
                    scan_rows: neon::scan_rows,
                    max_index: neon::max_index,
                    min_max: neon::min_max,
                    count_at_least: neon::count_at_least,
                    dot: neon::dot,
                    dots: neon::dots,
                };
            }
        }
        Kernels {
            scan: scalar::scan,
            scan_rows: scalar::scan_rows,
            max_index: scalar::max_index,
            min_max: scalar::min_max,
            count_at_least: scalar::count_at_least,
            dot: scalar::dot,
            dots: scalar::dots,
        }
    })
}

/// Scores a cell: `out[j] = sum_{c < rows} q[c] * soa[c * cap + j]` for `j < cap`
/// (`cap` a multiple of [`BLOCK`]). Panics if a slice is too short.
#[inline]
pub fn scan_cell(q: &[f32], soa: &[f32], rows: usize, cap: usize, out: &mut [f32]) {
    (kernels().scan)(q, soa, rows, cap, out)
}

/// [`scan_cell`] for [`ROWS`] queries at once (`out` holds `ROWS` rows of `cap`),
/// plus each row's largest score in `maxes`. Panics if a slice is too short.
#[inline]
pub fn scan_cell_rows(
    q: [&[f32]; ROWS],
    soa: &[f32],
    rows: usize,
    cap: usize,
    out: &mut [f32],
    maxes: &mut [f32; ROWS],
) {
    (kernels().scan_rows)(q, soa, rows, cap, out, maxes)
}

/// The largest element of `x` and the position of its first occurrence (`(-inf, 0)`
/// for an empty `x`; with NaNs in `x` the pick is unspecified but in bounds).
#[inline]
pub fn max_index(x: &[f32]) -> (f32, usize) {
    (kernels().max_index)(x)
}

/// `(min, max)` of `x` (`(inf, -inf)` when empty; with NaNs in `x` the result is
/// unspecified, callers check it is finite).
#[inline]
pub fn min_max(x: &[f32]) -> (f32, f32) {
    (kernels().min_max)(x)
}

/// How many elements of `x` are `>= t` (NaNs count, as not below `t`).
#[inline]
pub fn count_at_least(x: &[f32], t: f32) -> usize {
    (kernels().count_at_least)(x, t)
}

/// `a . b` over the shorter length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// `out[i] = q . keys[ids[i] * d..][..d]` with `d = q.len()`, for `i < min(ids, out)`,
/// each as [`dot`] computes it. Panics if an id's row is past `keys`.
#[inline]
pub fn dots(q: &[f32], keys: &[f32], ids: &[u32], out: &mut [f32]) {
    (kernels().dots)(q, keys, ids, out)
}

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, seedable, good enough for random
/// projections and level draws.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box-Muller, one of the pair).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_isa_scans_and_dots_like_the_scalar_path_at_the_slice_bounds() {
        for rows in [1, 3, 4, 7, 65] {
            for cap in [BLOCK, 2 * BLOCK, 3 * BLOCK] {
                let soa: Vec<f32> = (0..rows * cap).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
                let q: Vec<f32> = (0..rows).map(|i| (i as f32 - 3.0) / 7.0).collect();
                // Exactly-sized slices: the last load ends at the last element.
                let mut want = vec![0.0; cap];
                scalar::scan(&q, &soa, rows, cap, &mut want);
                let mut got = vec![0.0; cap];
                scan_cell(&q, &soa, rows, cap, &mut got);
                for j in 0..cap {
                    let exact: f64 = (0..rows).map(|c| q[c] as f64 * soa[c * cap + j] as f64).sum();
                    assert!((got[j] as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()), "rows {rows} j {j}");
                    assert!((want[j] as f64 - exact).abs() < 1e-4 * (1.0 + exact.abs()));
                }
                // Exactly `ROWS * cap` outputs and query rows of exactly `rows`.
                let mut many = vec![0.0; ROWS * cap];
                let qs: Vec<Vec<f32>> = (0..ROWS).map(|j| q.iter().map(|x| x * (j as f32 + 1.0)).collect()).collect();
                let (mut mx, mut mx_scalar) = ([0.0; ROWS], [0.0; ROWS]);
                scan_cell_rows(std::array::from_fn(|j| &qs[j][..]), &soa, rows, cap, &mut many, &mut mx);
                let mut many_scalar = vec![0.0; ROWS * cap];
                let q_rows = std::array::from_fn(|j| &qs[j][..]);
                scalar::scan_rows(q_rows, &soa, rows, cap, &mut many_scalar, &mut mx_scalar);
                for j in 0..ROWS {
                    let want_max = many[j * cap..(j + 1) * cap].iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    assert_eq!(mx[j], want_max, "row max {j}");
                    assert!((mx_scalar[j] - want_max).abs() < 1e-4 * (1.0 + want_max.abs()));
                    for i in 0..cap {
                        let e = got[i] * (j as f32 + 1.0);
                        assert!((many[j * cap + i] - e).abs() < 1e-4 * (1.0 + e.abs()), "scan_rows rows {rows}");
                        assert!((many_scalar[j * cap + i] - e).abs() < 1e-4 * (1.0 + e.abs()));
                    }
                }
                let n = rows * cap;
                let d = dot(&soa[..n], &soa[..n]);
                let e: f64 = soa.iter().map(|x| (*x as f64).powi(2)).sum();
                assert!((d as f64 - e).abs() < 1e-3 * e);
                assert!(
                    (scalar::dot(&soa[..n - 1], &soa[..n]) as f64 - e + (soa[n - 1] as f64).powi(2)).abs() < 1e-3 * e
                );
            }
        }
    }

    #[test]
    fn dots_gathers_rows_like_dot_up_to_the_last_row() {
        for d in [1, 7, 16, 33, 64] {
            let keys: Vec<f32> = (0..5 * d).map(|i| ((i * 29 % 97) as f32 - 48.0) / 17.0).collect();
            let q: Vec<f32> = (0..d).map(|i| (i as f32 - 2.0) / 5.0).collect();
            let ids = [4u32, 0, 2, 4];
            let mut got = [0.0; 4];
            dots(&q, &keys, &ids, &mut got);
            for (g, &id) in got.iter().zip(&ids) {
                assert_eq!(*g, dot(&q, &keys[id as usize * d..(id as usize + 1) * d]), "d {d} id {id}");
            }
        }
    }

    #[test]
    #[should_panic]
    fn dots_panics_on_an_id_past_the_rows() {
        let keys = vec![0.0; 4 * 8 - 1];
        dots(&[1.0; 8], &keys, &[3], &mut [0.0]);
    }

    #[test]
    #[should_panic]
    fn a_short_cell_buffer_panics_instead_of_reading_past_it() {
        let soa = vec![0.0; 4 * BLOCK - 1];
        let mut out = vec![0.0; BLOCK];
        scan_cell(&[1.0; 4], &soa, 4, BLOCK, &mut out);
    }

    #[test]
    #[should_panic]
    fn a_short_output_of_the_multi_row_scan_panics() {
        let soa = vec![0.0; 4 * BLOCK];
        let mut out = vec![0.0; ROWS * BLOCK - 1];
        let q = [1.0f32; 4];
        scan_cell_rows([&q[..]; ROWS], &soa, 4, BLOCK, &mut out, &mut [0.0; ROWS]);
    }

    #[test]
    #[should_panic]
    fn a_short_query_row_of_the_multi_row_scan_panics() {
        let soa = vec![0.0; 4 * BLOCK];
        let mut out = vec![0.0; ROWS * BLOCK];
        let (q, short) = ([1.0f32; 4], [1.0f32; 3]);
        let mut rows = [&q[..]; ROWS];
        rows[ROWS - 1] = &short[..];
        scan_cell_rows(rows, &soa, 4, BLOCK, &mut out, &mut [0.0; ROWS]);
    }

    #[test]
    fn max_index_and_min_max_match_a_scalar_fold_at_any_length() {
        for n in [0usize, 1, 5, 16, 17, 40, 255] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7919 % 23) as f32).min(20.0)).collect();
            let want = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let at = x.iter().position(|&v| v == want).unwrap_or(0);
            assert_eq!(max_index(&x), (want, at), "n {n}");
            assert_eq!(scalar::max_index(&x), (want, at), "scalar n {n}");
        }
        for n in [0usize, 3, 16, 33] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 31 % 17) as f32) - 8.0).collect();
            let lo = x.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(min_max(&x), (lo, hi), "n {n}");
            assert_eq!(scalar::min_max(&x), (lo, hi));
            for t in [-9.0, -8.0, 0.0, 0.5, 8.0, 9.0] {
                let want = x.iter().filter(|&&v| v >= t).count();
                assert_eq!(count_at_least(&x, t), want, "n {n} t {t}");
                assert_eq!(scalar::count_at_least(&x, t), want);
            }
        }
        let with_nan = [f32::NAN, 1.0, f32::NAN, 3.0, 3.0];
        assert_eq!(scalar::max_index(&with_nan), (3.0, 3));
        assert!(max_index(&[f32::NAN; 40]).1 < 40);
    }

    #[test]
    fn splitmix_normals_look_standard() {
        let mut r = SplitMix64::new(7);
        let xs: Vec<f64> = (0..20000).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
    }
}
