//! General matrix multiply, `c = act(alpha * a @ b + beta * c + bias) + residual`, f32.
//!
//! One blocked driver ([`driver`]: pack A and B panels, cache blocking, B panels
//! optionally packed once ahead of time as [`PackedB`]) and small per-ISA
//! micro-kernels (`arch/*`) that compute an `MR x NR` tile from packed panels. The
//! micro-kernel is chosen once per process ([`selected`]), from the best the CPU
//! supports: AVX-512F, then AVX2+FMA, then NEON, then the portable generic kernel.
//! Skinny products (few rows, the streaming case) skip packing (`skinny`). The
//! bias, activation and residual of a layer are applied as each tile is stored
//! ([`Epilogue`]). Inside a rayon pool the product is split into row or column
//! blocks, one per thread; each block is computed exactly as it would be alone, so
//! results do not depend on the thread count.

mod driver;
mod epilogue;
pub mod reference;
mod skinny;

use driver::ASource;
pub(crate) use driver::KC;
pub use driver::{BSource, PackedA, PackedB};
pub use epilogue::{Activation, Bias, Epilogue};
pub use reference::MatRef;

use crate::parallel;
use std::marker::PhantomData;
use std::sync::OnceLock;

/// Computes one `mr x nr` tile: `out[i * nr + j] = sum_p a[p * mr + i] * b[p * nr + j]`
/// for `p < kc`, from packed panels (`a.len() >= kc * mr`, `b.len() >= kc * nr`,
/// `out.len() >= mr * nr`; implementations check this).
pub type MicroKernelFn = fn(kc: usize, a: &[f32], b: &[f32], out: &mut [f32]);

/// [`MicroKernelFn`] reading A unpacked, row-major: element (i, p) at `a[i * lda + p]`
/// (`kc > 0`, `a.len() >= (mr - 1) * lda + kc`; implementations check this).
pub type RowsKernelFn = fn(kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]);

/// The first `rows` (`1..=SKINNY_ROWS`) rows of a [`RowsKernelFn`] tile, written
/// to `out` with row stride `nr` (`a.len() >= (rows - 1) * lda + kc`, `kc > 0`):
/// skinny products against pre-packed B panels (streaming, one frame at a time).
pub type FewRowsFn = fn(rows: usize, kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]);

/// A micro-kernel and its register tile.
#[derive(Clone, Copy, Debug)]
pub struct MicroKernel {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    pub run: MicroKernelFn,
    /// The same tile with A read in place (no packing), where the ISA has it: the
    /// driver uses it when each A panel would be reused by only a few B panels.
    pub run_rows: Option<RowsKernelFn>,
    /// A tile of only a few rows, where the ISA has it: the skinny path runs it
    /// on pre-packed B panels instead of accumulating rows of B in memory.
    pub run_few: Option<FewRowsFn>,
}

/// Every micro-kernel this CPU can run, best first (the generic one always last).
pub fn available() -> Vec<MicroKernel> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push(crate::arch::x86_64::AVX512);
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            v.push(crate::arch::x86_64::AVX2_FMA);
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            v.push(crate::arch::aarch64::NEON);
        }
    }
    // armv7 builds with `--cfg floe_neon` also pass `+neon`, so the whole binary
    // assumes NEON and there is nothing to detect at run time.
    #[cfg(all(target_arch = "arm", floe_neon))]
    v.push(crate::arch::arm::NEON_V7);
    v.push(crate::arch::generic::GENERIC);
    v
}

/// The micro-kernel used by [`sgemm`], decided once.
pub fn selected() -> MicroKernel {
    static K: OnceLock<MicroKernel> = OnceLock::new();
    *K.get_or_init(|| available()[0])
}

/// Rows at or below which a product streams B instead of packing it.
pub const SKINNY_ROWS: usize = 4;

/// Products smaller than this (`m * n * k`, about 10 us on one core) run on one
/// thread: waking the pool costs more than splitting saves.
const PARALLEL_MIN_WORK: usize = 1 << 20;

/// `c = alpha * a @ b + beta * c` with `c` row-major `m x n` (contiguous), using
/// the selected micro-kernel.
pub fn sgemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    sgemm_ex(selected(), alpha, a, BSource::Mat(b), beta, c, &Epilogue::NONE)
}

/// [`sgemm`] with an explicit micro-kernel (tests compare every ISA path).
pub fn sgemm_with(kernel: MicroKernel, alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: &mut [f32]) {
    sgemm_ex(kernel, alpha, a, BSource::Mat(b), beta, c, &Epilogue::NONE)
}

/// `c = epilogue(alpha * a @ b + beta * c)` with B packed ahead of time (by its kernel).
pub fn sgemm_packed(alpha: f32, a: MatRef<'_>, b: &PackedB, beta: f32, c: &mut [f32], epi: &Epilogue<'_>) {
    sgemm_ex(b.kernel(), alpha, a, BSource::Packed(b, 0), beta, c, epi)
}

/// `c = epilogue(alpha * a @ b + beta * c)` with A packed ahead of time (for `kernel`):
/// a left operand reused by many products (attention's key blocks, convolution
/// weights). Large products split their columns across the pool's threads; inside
/// [`parallel::serial`] everything runs on the calling thread.
///
/// # Panics
/// If shapes disagree or a slice is shorter than its shape claims.
pub fn sgemm_a_packed(
    kernel: MicroKernel,
    alpha: f32,
    a: &PackedA,
    b: BSource<'_>,
    beta: f32,
    c: &mut [f32],
    epi: &Epilogue<'_>,
) {
    let (k, n) = match b {
        BSource::Mat(bm) => (bm.rows, bm.cols),
        BSource::Packed(pb, jp0) => {
            assert_eq!(jp0, 0, "a packed B is split by the driver only");
            assert_eq!(pb.kernel().nr, kernel.nr, "B was packed for another kernel");
            (pb.k(), pb.n())
        }
    };
    let m = a.rows();
    assert_eq!(a.mr(), kernel.mr, "A was packed for another kernel");
    assert_eq!(a.cols(), k, "inner dimensions differ");
    assert!(c.len() >= m * n, "output too small");
    epi.check(m, n);
    if m == 0 || n == 0 {
        return;
    }
    let threads = if m * n * k >= PARALLEL_MIN_WORK { parallel::threads() } else { 1 };
    let parts = threads.min(n.div_ceil(kernel.nr)).max(1);
    let base = SyncPtr(c.as_mut_ptr());
    let block = |i: usize| {
        let cols = parallel::split_range(n, parts, kernel.nr, i);
        if cols.is_empty() {
            return;
        }
        let b_sub = match b {
            BSource::Mat(bm) => {
                BSource::Mat(MatRef { data: &bm.data[cols.start * bm.col_stride..], cols: cols.len(), ..bm })
            }
            BSource::Packed(pb, _) => BSource::Packed(pb, cols.start / kernel.nr),
        };
        // SAFETY: `c` holds at least m * n floats (asserted above) and the column
        // blocks of one call are disjoint (`split_range`), so each block is the only
        // writer of its elements while `c` is mutably borrowed.
        let mut cb = unsafe { CBlock::new(base.get().add(cols.start), m, cols.len(), n) };
        let e = epi.offset(0, cols.start, n);
        driver::gemm(kernel, alpha, ASource::Packed(a), b_sub, beta, &mut cb, &e);
    };
    if parts == 1 {
        block(0);
    } else {
        parallel::for_each_index(parts, &block);
    }
}

/// The general entry point: `c = epilogue(alpha * a @ b + beta * c)`, `c` row-major
/// `m x n`. Panics if a slice is shorter than its shape claims (callers check shapes).
pub fn sgemm_ex(
    kernel: MicroKernel,
    alpha: f32,
    a: MatRef<'_>,
    b: BSource<'_>,
    beta: f32,
    c: &mut [f32],
    epi: &Epilogue<'_>,
) {
    let (k, n) = match b {
        BSource::Mat(bm) => (bm.rows, bm.cols),
        BSource::Packed(pb, jp0) => {
            assert_eq!(jp0, 0, "a packed B is split by the driver only");
            assert_eq!((pb.kernel().mr, pb.kernel().nr), (kernel.mr, kernel.nr), "B was packed for another kernel");
            (pb.k(), pb.n())
        }
    };
    let m = a.rows;
    assert_eq!(a.cols, k, "inner dimensions differ");
    assert!(c.len() >= m * n, "output too small");
    epi.check(m, n);
    if m == 0 || n == 0 {
        return;
    }
    let skinny = m <= SKINNY_ROWS || m * n * k < 4096;
    let threads = if m * n * k >= PARALLEL_MIN_WORK { parallel::threads() } else { 1 };
    // Rows split in whole micro-tiles; skinny products and short-and-wide ones split columns.
    let split_rows = !skinny && m >= threads * kernel.mr * 2;
    let parts = if split_rows { threads } else { threads.min(n.div_ceil(kernel.nr)) }.max(1);
    let base = SyncPtr(c.as_mut_ptr());
    let block = |i: usize| {
        let (rows, cols) = if split_rows {
            (parallel::split_range(m, parts, kernel.mr, i), 0..n)
        } else {
            (0..m, parallel::split_range(n, parts, kernel.nr, i))
        };
        if rows.is_empty() || cols.is_empty() {
            return;
        }
        let a_sub = MatRef { data: &a.data[rows.start * a.row_stride..], rows: rows.len(), ..a };
        let b_sub = match b {
            BSource::Mat(bm) => {
                BSource::Mat(MatRef { data: &bm.data[cols.start * bm.col_stride..], cols: cols.len(), ..bm })
            }
            BSource::Packed(pb, _) => BSource::Packed(pb, cols.start / kernel.nr),
        };
        // SAFETY: `c` holds at least m * n floats (asserted above) and the blocks of
        // one call are disjoint (`split_range` partitions rows or columns), so each
        // block is the only writer of its elements while `c` is mutably borrowed.
        let mut cb = unsafe { CBlock::new(base.get().add(rows.start * n + cols.start), rows.len(), cols.len(), n) };
        let e = epi.offset(rows.start, cols.start, n);
        if skinny {
            skinny::gemm(alpha, a_sub, b_sub, beta, &mut cb, &e);
        } else {
            driver::gemm(kernel, alpha, ASource::Mat(a_sub), b_sub, beta, &mut cb, &e);
        }
    };
    if parts == 1 {
        block(0);
    } else {
        parallel::for_each_index(parts, &block);
    }
}

/// The output pointer shared by the blocks of one call (each writes only its own).
#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: the pointer is only dereferenced through `CBlock`s of disjoint regions.
unsafe impl Sync for SyncPtr {}
unsafe impl Send for SyncPtr {}

impl SyncPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// A `rows x cols` block of a row-major output with row stride `ld`.
pub(crate) struct CBlock<'a> {
    ptr: *mut f32,
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    _output: PhantomData<&'a mut [f32]>,
}

impl CBlock<'_> {
    /// # Safety
    /// `ptr + i * ld + j` must be valid for writes for every `i < rows`, `j < cols`,
    /// and no one else may access those elements while the block lives.
    unsafe fn new(ptr: *mut f32, rows: usize, cols: usize, ld: usize) -> Self {
        CBlock { ptr, rows, cols, ld, _output: PhantomData }
    }

    /// Row `i` of the block (`cols` long).
    pub(crate) fn row_mut(&mut self, i: usize) -> &mut [f32] {
        assert!(i < self.rows, "row {i} outside a block of {} rows", self.rows);
        // SAFETY: i < rows, so the row lies inside the region `new` was promised.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(i * self.ld), self.cols) }
    }

    pub(crate) fn scale(&mut self, beta: f32) {
        for i in 0..self.rows {
            let r = self.row_mut(i);
            if beta == 0.0 {
                r.fill(0.0);
            } else if beta != 1.0 {
                r.iter_mut().for_each(|v| *v *= beta);
            }
        }
    }

    /// Applies the epilogue to the block as it stands (an empty inner dimension).
    pub(crate) fn finish_all(&mut self, epi: &Epilogue<'_>) {
        if epi.is_none() {
            return;
        }
        let mut acc = vec![0f32; self.cols];
        for i in 0..self.rows {
            let ld = self.ld;
            let row = self.row_mut(i);
            acc.copy_from_slice(row);
            epi.finish(i, 0, ld, &mut acc, row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    /// A small deterministic generator (no test-only dependencies).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn every_isa_path_matches_naive_on_ragged_shapes() {
        // Property test over shapes that are not multiples of any tile (and some that are).
        let shapes = [
            (1, 1, 1),
            (3, 5, 7),
            (17, 33, 65),
            (64, 64, 64),
            (13, 300, 47),
            (100, 7, 129),
            (5, 513, 3),
            (33, 17, 250),
        ];
        for kernel in available() {
            for (seed, &(m, k, n)) in shapes.iter().enumerate() {
                let a = values(m * k, seed as u64 + 1);
                let b = values(k * n, seed as u64 + 100);
                let want = naive(&a, &b, m, k, n);
                for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (2.0, -0.5)] {
                    let init = values(m * n, 7);
                    let mut c = init.clone();
                    sgemm_with(kernel, alpha, MatRef::new(&a, m, k), MatRef::new(&b, k, n), beta, &mut c);
                    for i in 0..m * n {
                        let w = alpha as f64 * want[i] + beta as f64 * init[i] as f64;
                        assert!(
                            (c[i] as f64 - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{} {m}x{k}x{n} [{i}]: {} vs {w}",
                            kernel.name,
                            c[i]
                        );
                    }
                }
                // transposed views of both operands
                let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
                let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
                let mut c = vec![0.0; m * n];
                sgemm_with(kernel, 1.0, MatRef::new(&at, k, m).t(), MatRef::new(&bt, n, k).t(), 0.0, &mut c);
                for i in 0..m * n {
                    assert!(
                        (c[i] as f64 - want[i]).abs() <= 1e-4 * (1.0 + want[i].abs()),
                        "{} transposed {m}x{k}x{n}",
                        kernel.name
                    );
                }
            }
        }
    }

    #[test]
    fn selected_kernel_is_the_first_available() {
        assert_eq!(selected().name, available()[0].name);
        assert_eq!(available().last().unwrap().name, "generic");
    }

    /// `act(a @ b + bias) + residual` in f64, the definition the epilogue fuses.
    fn fused_reference(
        a: &[f32],
        b: &[f32],
        (m, k, n): (usize, usize, usize),
        bias: &[f32],
        per_row: bool,
        act: Activation,
        residual: &[f32],
    ) -> Vec<f64> {
        let mut c = naive(a, b, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let mut v = c[i * n + j] + if per_row { bias[i] } else { bias[j] } as f64;
                v = match act {
                    Activation::None => v,
                    Activation::Relu => v.max(0.0),
                    Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                    Activation::Tanh => v.tanh(),
                    Activation::Gelu => 0.5 * v * (1.0 + crate::math::erf_f64(v / std::f64::consts::SQRT_2)),
                    Activation::Silu => v / (1.0 + (-v).exp()),
                };
                c[i * n + j] = v + residual[i * n + j] as f64;
            }
        }
        c
    }

    #[test]
    fn packed_b_and_fused_epilogues_match_the_unfused_definition_on_every_kernel() {
        let shapes = [(1, 9, 5), (4, 300, 33), (7, 64, 64), (24, 64, 192), (13, 513, 47), (50, 20, 100)];
        let acts = [
            Activation::None,
            Activation::Relu,
            Activation::Gelu,
            Activation::Silu,
            Activation::Sigmoid,
            Activation::Tanh,
        ];
        for kernel in available() {
            for (si, &(m, k, n)) in shapes.iter().enumerate() {
                let a = values(m * k, si as u64 + 3);
                let b = values(k * n, si as u64 + 30);
                let packed = PackedB::new(kernel, MatRef::new(&b, k, n));
                for (ai, &act) in acts.iter().enumerate() {
                    let per_row = ai % 2 == 1;
                    let bias = values(if per_row { m } else { n }, 5);
                    let residual = values(m * n, 6);
                    let want = fused_reference(&a, &b, (m, k, n), &bias, per_row, act, &residual);
                    let epi = Epilogue {
                        bias: if per_row { Bias::Rows(&bias) } else { Bias::Cols(&bias) },
                        activation: act,
                        residual: Some(&residual),
                    };
                    for use_packed in [false, true] {
                        let mut c = vec![f32::NAN; m * n];
                        let bsrc =
                            if use_packed { BSource::Packed(&packed, 0) } else { BSource::Mat(MatRef::new(&b, k, n)) };
                        sgemm_ex(kernel, 1.0, MatRef::new(&a, m, k), bsrc, 0.0, &mut c, &epi);
                        for i in 0..m * n {
                            assert!(
                                (c[i] as f64 - want[i]).abs() <= 2e-4 * (1.0 + want[i].abs()),
                                "{} {m}x{k}x{n} {act:?} packed={use_packed} [{i}]: {} vs {}",
                                kernel.name,
                                c[i],
                                want[i]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_the_thread_count() {
        let pools: Vec<_> =
            [2, 3].iter().map(|&t| rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("pool")).collect();
        for &(m, k, n) in &[(1, 256, 1000), (3, 128, 77), (100, 70, 90), (257, 300, 129), (16, 512, 512)] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            let packed = PackedB::new(selected(), MatRef::new(&b, k, n));
            let epi = Epilogue { bias: Bias::Cols(&bias), activation: Activation::Relu, residual: None };
            let run = || {
                let mut c1 = vec![0.0; m * n];
                sgemm_ex(
                    selected(),
                    1.0,
                    MatRef::new(&a, m, k),
                    BSource::Mat(MatRef::new(&b, k, n)),
                    0.0,
                    &mut c1,
                    &epi,
                );
                let mut c2 = vec![0.0; m * n];
                sgemm_packed(1.0, MatRef::new(&a, m, k), &packed, 0.0, &mut c2, &epi);
                (c1, c2)
            };
            let one = run();
            // Packed and streamed B may sum in another order (the few-rows kernel
            // splits the inner dimension), so they agree to rounding only.
            for (x, y) in one.0.iter().zip(&one.1) {
                assert!(
                    (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                    "{m}x{k}x{n}: packed and unpacked B differ: {x} vs {y}"
                );
            }
            for p in &pools {
                assert_eq!(p.install(run), one, "{m}x{k}x{n} on {} threads", p.current_num_threads());
            }
        }
    }

    #[test]
    fn an_empty_inner_dimension_still_applies_beta_and_the_epilogue() {
        let mut c = vec![1.0f32, -2.0, 3.0, -4.0];
        let bias = [0.5f32, 0.5];
        let epi = Epilogue { bias: Bias::Cols(&bias), activation: Activation::Relu, residual: None };
        sgemm_ex(selected(), 1.0, MatRef::new(&[], 2, 0), BSource::Mat(MatRef::new(&[], 0, 2)), 2.0, &mut c, &epi);
        assert_eq!(c, vec![2.5, 0.0, 6.5, 0.0]);
    }

    #[test]
    fn skinny_products_on_packed_b_match_the_reference_on_every_kernel() {
        // 1..=SKINNY_ROWS rows and a few more (groups of rows; a full tile plus a
        // few-rows tail, in place or with packed A panels when B is wide), inner
        // dimensions across KC slices, ragged panels, transposed A (copied rows),
        // alpha/beta, and the fused epilogue.
        let mut case = 0u64;
        for kernel in available() {
            for m in [1, 2, 3, 4, 5, 9, 13, 16, 28] {
                for (k, n) in [(1, 1), (7, 31), (64, 33), (300, 100), (600, 64), (70, 300)] {
                    case += 1;
                    let (a, b, init) = (values(m * k, case), values(k * n, case + 100), values(m * n, case + 200));
                    let bias = values(n, case + 300);
                    let transposed = case.is_multiple_of(3);
                    let am = if transposed { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
                    let (alpha, beta) = ([1.0f32, -0.5][case as usize % 2], [0.0f32, 1.0, 0.25][case as usize % 3]);
                    let bm = MatRef::new(&b, k, n);
                    let mut want = init.clone();
                    reference::sgemm(alpha, am, bm, beta, &mut want);
                    for (i, w) in want.iter_mut().enumerate() {
                        *w = (*w + bias[i % n]).max(0.0);
                    }
                    let pb = PackedB::new(kernel, bm);
                    let epi = Epilogue { bias: Bias::Cols(&bias), activation: Activation::Relu, residual: None };
                    let mut c = init.clone();
                    sgemm_ex(kernel, alpha, am, BSource::Packed(&pb, 0), beta, &mut c, &epi);
                    for i in 0..m * n {
                        assert!(
                            (c[i] - want[i]).abs() <= 1e-4 * (1.0 + want[i].abs()),
                            "{} {m}x{k}x{n} transposed={transposed} alpha={alpha} beta={beta} [{i}]: {} vs {}",
                            kernel.name,
                            c[i],
                            want[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn property_every_isa_path_matches_the_reference_on_random_shapes() {
        // 60 seeded random problems: ragged m, k, n (rarely tile multiples), random
        // alpha/beta, plain or transposed operands, packed or streamed B.
        let mut seed = 0x5EEDu64;
        let mut next = |hi: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % hi as u64) as usize
        };
        for case in 0..60 {
            let (m, k, n) = (1 + next(70), 1 + next(300), 1 + next(90));
            let (alpha, beta) = ([1.0f32, 0.5, -2.0][next(3)], [0.0f32, 1.0, 0.25][next(3)]);
            let (ta, tb, packed) = (next(2) == 1, next(2) == 1, next(2) == 1);
            let a = values(m * k, case as u64);
            let b = values(k * n, case as u64 + 1000);
            let init = values(m * n, case as u64 + 2000);
            let am = if ta { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
            let bm = if tb { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
            let mut want = init.clone();
            reference::sgemm(alpha, am, bm, beta, &mut want);
            for kernel in available() {
                let mut c = init.clone();
                let pb = PackedB::new(kernel, bm);
                let src = if packed { BSource::Packed(&pb, 0) } else { BSource::Mat(bm) };
                sgemm_ex(kernel, alpha, am, src, beta, &mut c, &Epilogue::NONE);
                for i in 0..m * n {
                    assert!(
                        (c[i] - want[i]).abs() <= 1e-4 * (1.0 + want[i].abs()),
                        "{} case {case}: {m}x{k}x{n} ta={ta} tb={tb} packed={packed} [{i}] {} vs {}",
                        kernel.name,
                        c[i],
                        want[i]
                    );
                }
            }
        }
    }

    #[test]
    fn prepacked_a_matches_the_reference_with_and_without_overwrite() {
        let mut seed = 11u64;
        let mut vals = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect()
        };
        for kernel in available() {
            for &(m, k, n) in &[(1, 1, 1), (13, 64, 37), (30, 300, 70), (5, 257, 3)] {
                let (a, b, c0) = (vals(m * k), vals(k * n), vals(m * n));
                let mut pa = PackedA::default();
                pa.repack(kernel, MatRef::new(&a, m, k));
                let pb = PackedB::new(kernel, MatRef::new(&b, k, n));
                for beta in [0.0, 1.0, 0.5] {
                    let (mut got, mut want) = (c0.clone(), c0.clone());
                    sgemm_a_packed(kernel, 0.7, &pa, BSource::Packed(&pb, 0), beta, &mut got, &Epilogue::NONE);
                    reference::sgemm(0.7, MatRef::new(&a, m, k), MatRef::new(&b, k, n), beta, &mut want);
                    let err = got.iter().zip(&want).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
                    assert!(err < 1e-4, "{} {m}x{k}x{n} beta {beta}: {err}", kernel.name);
                }
            }
        }
    }
}
