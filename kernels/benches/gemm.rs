//! f32 GEMM throughput (criterion reports FLOP/s as "elements"/s): every micro-kernel
//! this CPU supports through the shared driver, the `matrixmultiply` crate and a
//! naive loop, on square sizes and on skinny products (M = 1, 4, 16).
//!
//!     cargo bench -p floe-kernels --bench gemm

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use floe_kernels::gemm::{self, MatRef};
use std::hint::black_box;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        .collect()
}

fn naive(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0;
            for p in 0..k {
                s += a[i * k + p] * b[p * n + j];
            }
            c[i * n + j] = s;
        }
    }
}

fn run(c: &mut Criterion, group: &str, shapes: &[(usize, usize, usize)]) {
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    for &(m, k, n) in shapes {
        let (a, b) = (data(m * k, 1), data(k * n, 2));
        let mut out = vec![0f32; m * n];
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let label = format!("{m}x{k}x{n}");
        for kernel in gemm::available() {
            g.bench_with_input(BenchmarkId::new(format!("floe-{}", kernel.name), &label), &(), |bch, _| {
                bch.iter(|| {
                    gemm::sgemm_with(
                        kernel,
                        1.0,
                        MatRef::new(&a, m, k),
                        MatRef::new(&b, k, n),
                        0.0,
                        black_box(&mut out),
                    )
                })
            });
        }
        let packed = gemm::PackedB::new(gemm::selected(), MatRef::new(&b, k, n));
        g.bench_with_input(BenchmarkId::new(format!("floe-packed-{}", packed.kernel().name), &label), &(), |bch, _| {
            bch.iter(|| {
                gemm::sgemm_packed(1.0, MatRef::new(&a, m, k), &packed, 0.0, black_box(&mut out), &gemm::Epilogue::NONE)
            })
        });
        g.bench_with_input(BenchmarkId::new("matrixmultiply", &label), &(), |bch, _| {
            bch.iter(|| unsafe {
                // SAFETY: the pointers cover m*k, k*n and m*n floats with the strides given.
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    out.as_mut_ptr(),
                    n as isize,
                    1,
                )
            })
        });
        if m * k * n <= 256 * 256 * 256 {
            g.bench_with_input(BenchmarkId::new("naive", &label), &(), |bch, _| {
                bch.iter(|| naive(&a, &b, black_box(&mut out), m, k, n))
            });
        }
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let square: Vec<_> = [64, 128, 256, 512, 1024].iter().map(|&s| (s, s, s)).collect();
    run(c, "gemm_square", &square);
    let mut skinny = Vec::new();
    for m in [1, 4, 16] {
        for kn in [256, 512, 1024] {
            skinny.push((m, kn, kn));
        }
    }
    run(c, "gemm_skinny", &skinny);
    // The layer sizes of the small speech models floe targets (24 frames, d = 64).
    run(c, "gemm_small", &[(24, 64, 64), (24, 64, 192), (24, 128, 64), (32, 120, 49)]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
