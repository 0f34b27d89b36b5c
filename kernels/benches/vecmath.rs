//! Vector math throughput: every function on every instruction-set path this CPU has,
//! next to the plain scalar std/libm loop it replaces, on 4096 f32 (fits in L1, so
//! this measures compute). Criterion reports elements/s; softmax and layer norm rows
//! are timed the same way against the loops the engine used before.
//!
//! `cargo bench -p floe-kernels --bench vecmath`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use floe_kernels::vecmath::{available, Func};
use std::hint::black_box;
use std::time::Duration;

const N: usize = 4096;

/// The scalar loop each function replaces (std's `expf`/`tanhf`, libm's `erff`).
fn baseline(f: Func) -> fn(f32) -> f32 {
    match f {
        Func::Exp => f32::exp,
        Func::Tanh => f32::tanh,
        Func::Erf => libm::erff,
        Func::Sigmoid => |x| 1.0 / (1.0 + (-x).exp()),
        Func::Silu => |x| x / (1.0 + (-x).exp()),
        Func::Gelu => |x| 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        Func::GeluTanh => |x| 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044715 * x * x * x)).tanh()),
    }
}

fn inputs() -> Vec<f32> {
    // Deterministic, spread over the range activations see (-8, 8).
    (0..N).map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / (1u32 << 24) as f32 * 16.0 - 8.0).collect()
}

fn functions(c: &mut Criterion) {
    let x = inputs();
    let mut out = vec![0.0f32; N];
    for f in Func::ALL {
        let mut g = c.benchmark_group(f.name());
        g.throughput(Throughput::Elements(N as u64));
        let base = baseline(f);
        g.bench_function(BenchmarkId::from_parameter("std-libm-loop"), |b| {
            b.iter(|| {
                for (o, &v) in out.iter_mut().zip(black_box(&x)) {
                    *o = base(v);
                }
                black_box(&mut out);
            })
        });
        for isa in available() {
            g.bench_function(BenchmarkId::from_parameter(isa.name()), |b| {
                b.iter(|| isa.map(f, black_box(&x), black_box(&mut out)))
            });
        }
        g.finish();
    }
}

fn rows(c: &mut Criterion) {
    let x: Vec<f32> = inputs();
    let gamma = vec![1.1f32; N];
    let beta = vec![0.1f32; N];
    let mut g = c.benchmark_group("softmax");
    g.throughput(Throughput::Elements(N as u64));
    let mut row = x.clone();
    g.bench_function(BenchmarkId::from_parameter("std-loop"), |b| {
        b.iter(|| {
            row.copy_from_slice(&x);
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut s = 0.0f32;
            for v in row.iter_mut() {
                *v = (*v - m).exp();
                s += *v;
            }
            let inv = 1.0 / s;
            row.iter_mut().for_each(|v| *v *= inv);
            black_box(&mut row);
        })
    });
    for isa in available() {
        g.bench_function(BenchmarkId::from_parameter(isa.name()), |b| {
            b.iter(|| {
                row.copy_from_slice(&x);
                isa.softmax_row(black_box(&mut row))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("layer_norm");
    g.throughput(Throughput::Elements(N as u64));
    let mut out = vec![0.0f32; N];
    g.bench_function(BenchmarkId::from_parameter("std-loop"), |b| {
        b.iter(|| {
            let x = black_box(&x);
            let n = x.len() as f32;
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for i in 0..x.len() {
                out[i] = (x[i] - mean) * inv * gamma[i] + beta[i];
            }
            black_box(&mut out);
        })
    });
    for isa in available() {
        g.bench_function(BenchmarkId::from_parameter(isa.name()), |b| {
            b.iter(|| isa.layer_norm_row(black_box(&x), &gamma, Some(&beta), 1e-5, black_box(&mut out)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(1));
    targets = functions, rows
}
criterion_main!(benches);
