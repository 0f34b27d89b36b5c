//! Every GEMM micro-kernel this CPU can run, through the public `sgemm_with`,
//! against the generic kernel and the reference i-k-j loop: random ragged shapes
//! (M, N, K not multiples of any tile, K past the driver's depth block, M past its
//! row block, N past its column block), alpha/beta, strided sub-matrix views and
//! transposed views. `targets/cross.sh PRESET test` runs this under qemu, so the
//! NEON kernels (aarch64 and armv7) are proven on their ISA; run with --nocapture
//! to see which kernel was picked.

use floe_kernels::gemm::{self, reference, MatRef, MicroKernel};

/// xorshift64*: deterministic values in [-1, 1) without test-only dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0).collect()
    }
}

/// A `rows x cols` operand stored in a larger buffer: row-major with `pad` extra
/// columns per row, or (transposed) as the transpose of such a matrix.
struct Operand {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
    pad: usize,
    transposed: bool,
}

impl Operand {
    fn random(rng: &mut Rng, rows: usize, cols: usize) -> Operand {
        let (pad, transposed) = (rng.below(3) * 5, rng.below(2) == 1);
        let (r, c) = if transposed { (cols, rows) } else { (rows, cols) };
        Operand { data: rng.f32s(r * (c + pad)), rows, cols, pad, transposed }
    }
    fn view(&self) -> MatRef<'_> {
        let (r, c) = if self.transposed { (self.cols, self.rows) } else { (self.rows, self.cols) };
        let v = MatRef { data: &self.data, rows: r, cols: c, row_stride: c + self.pad, col_stride: 1 };
        if self.transposed {
            v.t()
        } else {
            v
        }
    }
}

/// The generic kernel: the portable path every ISA kernel must agree with.
fn generic() -> MicroKernel {
    *gemm::available().last().expect("at least the generic kernel")
}

#[test]
fn prints_the_selected_micro_kernel() {
    let names: Vec<&str> = gemm::available().iter().map(|k| k.name).collect();
    eprintln!("gemm micro-kernel: {} (available: {})", gemm::selected().name, names.join(", "));
    assert_eq!(gemm::selected().name, names[0]);
    assert_eq!(generic().name, "generic");
    // The SIMD kernel a build for these ISAs must have picked.
    #[cfg(target_arch = "aarch64")]
    assert_eq!(gemm::selected().name, "neon-8x8");
    #[cfg(all(target_arch = "arm", floe_neon))]
    assert_eq!(gemm::selected().name, "neon-armv7-6x8");
}

#[test]
fn every_kernel_matches_generic_and_reference_on_random_ragged_shapes() {
    let mut rng = Rng(0x5EED_F10E);
    // Fixed shapes for the driver's block edges (KC = 256, MC = 144, NC = 2048),
    // then random ones.
    let mut shapes = vec![(7, 1030, 19), (150, 40, 70), (6, 12, 2100), (64, 64, 64), (13, 300, 47), (5, 257, 9)];
    while shapes.len() < 30 {
        let (m, k, n) = (5 + rng.below(60), 1 + rng.below(300), 1 + rng.below(90));
        // Smaller products skip the packed driver (see `gemm::sgemm_with`).
        if m * k * n >= 4096 {
            shapes.push((m, k, n));
        }
    }
    let kernels = gemm::available();
    let mut compared = 0;
    for &(m, k, n) in &shapes {
        let a = Operand::random(&mut rng, m, k);
        let b = Operand::random(&mut rng, k, n);
        let c0 = rng.f32s(m * n);
        let (alpha, beta) = [(1.0, 0.0), (0.5, 1.0), (-1.5, 0.25), (2.0, -1.0)][rng.below(4)];
        let mut want = c0.clone();
        reference::sgemm(alpha, a.view(), b.view(), beta, &mut want);
        let mut base = c0.clone();
        gemm::sgemm_with(generic(), alpha, a.view(), b.view(), beta, &mut base);
        // Scale of each entry: |alpha| sum_p |a_ip b_pj| + |beta c_ij|; f32 sums in
        // another order differ from each other by a small multiple of it.
        let (av, bv) = (a.view(), b.view());
        let scale = |i: usize, j: usize| {
            let s: f64 = (0..k).map(|p| (av.at(i, p) as f64 * bv.at(p, j) as f64).abs()).sum();
            alpha.abs() as f64 * s + (beta as f64 * c0[i * n + j] as f64).abs()
        };
        for kernel in &kernels {
            let mut got = c0.clone();
            gemm::sgemm_with(*kernel, alpha, a.view(), b.view(), beta, &mut got);
            for i in 0..m {
                for j in 0..n {
                    let (g, r, w) = (got[i * n + j] as f64, base[i * n + j] as f64, want[i * n + j] as f64);
                    let tol = 2e-6 * (k as f64).sqrt().max(4.0) * scale(i, j) + 1e-30;
                    assert!(
                        (g - r).abs() <= tol && (g - w).abs() <= tol,
                        "{} vs generic/reference, {m}x{k}x{n} (a {}, b {}) alpha {alpha} beta {beta} at ({i}, {j}): \
                         {g} vs {r} / {w} (tolerance {tol:.3e})",
                        kernel.name,
                        if a.transposed { "transposed" } else { "row-major" },
                        if b.transposed { "transposed" } else { "row-major" },
                    );
                }
            }
            compared += 1;
        }
    }
    let names: Vec<&str> = kernels.iter().map(|k| k.name).collect();
    eprintln!(
        "compared {} against generic and reference: {compared} products on {} shapes",
        names.join(", "),
        shapes.len()
    );
}
