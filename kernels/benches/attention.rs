//! Attention kernels on one thread, d = 64 (criterion; `harness = false`):
//!
//! (a) the exact kernel `exact::attention_head` (tiled, online softmax) against the
//!     hand-fused unfused path (sgemm `Q K^T` with `alpha = scale` into an `L x S`
//!     buffer, `softmax_f32` per row, sgemm `P V`), L = S in {128, 512, 2048, 8192};
//! (c) decode, `attention_decode`: a few queries (1, 4, 8, 16) causal after a KV
//!     cache of S - L keys, S in {4096, 16384}: `attention_head` (which reads the
//!     keys in place for at most `DECODE_MAX_QUERIES` queries) against the tiled
//!     kernel and the unfused path;
//! (d) `attention_knn_decode`: 16 k-NN decode steps after S = 4096 / 16384 keys
//!     (peaked, `preset=recommended`), each reusing the previous step's index
//!     (insert one key, one query), against exact attention over the same steps,
//!     and one step that builds its index again;
//! (b) IceFormer k-NN attention (index build included, as IceFormer counts it)
//!     against `attention_head`, L = S in {1K, 2K, 4K, 8K, 16K}, on random and on
//!     peaked Q/K/V (benches/attention_data.rs). For each L the quality figures of
//!     ../shared/ALGORITHMS.md section 5A (recall@k, softmax mass covered, relative
//!     output error, row cosine) and a quick speed-up are printed once, outside the
//!     timing loops.
//!
//!     cargo bench -p floe-kernels --bench attention [-- filter]
//!
//! `KNN_PARAMS="k=20,construction_scan=true"` overrides the k-NN parameters (default:
//! IceFormer's); `KNN_PARAMS=preset=recommended` runs `KnnParams::recommended()`, the
//! preset docs/attention.md reports figures for. `examples/knn_report.rs` prints the
//! same table without criterion.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use floe_kernels::attention::exact::{attention_head, attention_head_tiled, HeadParams};
use floe_kernels::attention::knn::{knn_attention_group, knn_attention_group_cached, KnnParams, KnnStats};
use floe_kernels::attention::{Rows, Visibility};
use floe_kernels::gemm::{self, MatRef};
use std::hint::black_box;
use std::time::{Duration, Instant};

mod attention_data;
use attention_data::{peaked, quality, random};

const D: usize = 64;

/// Runs `f` with a one-thread pool registered (the pool is built once).
fn one_thread<R>(f: impl FnOnce() -> R) -> R {
    static POOL: std::sync::OnceLock<std::sync::Arc<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool =
        POOL.get_or_init(|| std::sync::Arc::new(rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool")));
    floe_kernels::parallel::with_pool(Some(pool), f)
}

fn exact(q: &[f32], k: &[f32], v: &[f32], l: usize, out: &mut [f32]) {
    let hp = HeadParams { scale: 1.0 / (D as f32).sqrt(), softcap: 0.0, visibility: Visibility::all(l) };
    attention_head(Rows::new(q, l, D), Rows::new(k, l, D), Rows::new(v, l, D), None, &hp, out, D)
}

fn unfused(q: &[f32], k: &[f32], v: &[f32], l: usize, scores: &mut [f32], out: &mut [f32]) {
    let scale = 1.0 / (D as f32).sqrt();
    gemm::sgemm(scale, MatRef::new(q, l, D), MatRef::new(k, l, D).t(), 0.0, scores);
    for row in scores.chunks_mut(l) {
        floe_kernels::softmax::softmax_f32(row);
    }
    gemm::sgemm(1.0, MatRef::new(scores, l, l), MatRef::new(v, l, D), 0.0, out);
}

fn knn(q: &[f32], k: &[f32], v: &[f32], l: usize, p: &KnnParams, out: &mut [f32], stats: Option<&mut KnnStats>) {
    let (qr, kr, vr) = (Rows::new(q, l, D), Rows::new(k, l, D), Rows::new(v, l, D));
    knn_attention_group(&[qr], kr, vr, 1.0 / (D as f32).sqrt(), Visibility::all(l), p, &mut [out], D, stats)
}

fn time_once(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn settings(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, l: usize) {
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(if l >= 8192 { 1 } else { 300 }));
    g.measurement_time(Duration::from_secs(if l >= 8192 { 1 } else { 3 }));
}

fn exact_vs_unfused(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_exact");
    for l in [128usize, 512, 2048, 8192] {
        settings(&mut g, l);
        let (q, k, v) = random(l, D, 1);
        let mut out = vec![0.0; l * D];
        let mut scores = vec![0.0; l * l];
        g.bench_with_input(BenchmarkId::new("attention_head", l), &l, |b, &l| {
            b.iter(|| one_thread(|| exact(&q, &k, &v, l, black_box(&mut out))))
        });
        g.bench_with_input(BenchmarkId::new("unfused_sgemm_softmax_sgemm", l), &l, |b, &l| {
            b.iter(|| one_thread(|| unfused(&q, &k, &v, l, &mut scores, black_box(&mut out))))
        });
    }
    g.finish();
}

fn knn_vs_exact(c: &mut Criterion) {
    let params = KnnParams::parse(&std::env::var("KNN_PARAMS").unwrap_or_default()).expect("KNN_PARAMS");
    eprintln!("k-NN parameters: {params:?}");
    let mut g = c.benchmark_group("attention_knn");
    for (name, gen) in [("random", random as fn(usize, usize, u64) -> _), ("peaked", peaked)] {
        for l in [1024usize, 2048, 4096, 8192, 16384] {
            settings(&mut g, l);
            let (q, k, v) = gen(l, D, 1);
            let (mut o, mut o_hat) = (vec![0.0; l * D], vec![0.0; l * D]);
            let mut stats = KnnStats::default();
            let t_exact = one_thread(|| time_once(|| exact(&q, &k, &v, l, &mut o)));
            let t_knn = one_thread(|| time_once(|| knn(&q, &k, &v, l, &params, &mut o_hat, Some(&mut stats))));
            let qa = quality(&q, &k, &o, &o_hat, l, l, D, &params, 1.0 / (D as f32).sqrt());
            eprintln!(
                "{name} L={l}: exact {t_exact:.2} ms, knn {t_knn:.2} ms (build {:.2} ms), speed-up {:.2}x, \
                 scored/query {:.0}, recall@{} {:.3}, mass {:.3}, rel err {:.4}, cosine {:.4}",
                stats.build_ns as f64 / 1e6,
                t_exact / t_knn,
                stats.scored_per_query(),
                params.k,
                qa.recall,
                qa.mass,
                qa.rel_err,
                qa.cosine
            );
            g.bench_with_input(BenchmarkId::new(format!("exact_{name}"), l), &l, |b, &l| {
                b.iter(|| one_thread(|| exact(&q, &k, &v, l, black_box(&mut o))))
            });
            g.bench_with_input(BenchmarkId::new(format!("knn_{name}"), l), &l, |b, &l| {
                b.iter(|| one_thread(|| knn(&q, &k, &v, l, &params, black_box(&mut o_hat), None)))
            });
        }
    }
    g.finish();
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_decode");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    for s in [4096usize, 16384] {
        let (q, k, v) = random(s, D, 3);
        for l in [1usize, 4, 8, 16] {
            let hp = HeadParams { scale: 0.125, softcap: 0.0, visibility: Visibility::causal(s, s - l) };
            let (qr, kr, vr) = (Rows::new(&q[..l * D], l, D), Rows::new(&k, s, D), Rows::new(&v, s, D));
            let mut out = vec![0.0; l * D];
            let mut scores = vec![0.0; l * s];
            let id = |name: &str| BenchmarkId::new(name, format!("{l}x{s}"));
            g.bench_function(id("attention_head"), |b| {
                b.iter(|| one_thread(|| attention_head(qr, kr, vr, None, &hp, black_box(&mut out), D)))
            });
            g.bench_function(id("tiled"), |b| {
                b.iter(|| one_thread(|| attention_head_tiled(qr, kr, vr, None, &hp, black_box(&mut out), D)))
            });
            // Unfused, without a causal mask (every query of a decode step sees
            // nearly every key): sgemm, softmax per row, sgemm.
            g.bench_function(id("unfused_sgemm_softmax_sgemm"), |b| {
                b.iter(|| {
                    one_thread(|| {
                        gemm::sgemm(0.125, MatRef::new(&q[..l * D], l, D), MatRef::new(&k, s, D).t(), 0.0, &mut scores);
                        scores.chunks_mut(s).for_each(floe_kernels::softmax::softmax_f32);
                        gemm::sgemm(1.0, MatRef::new(&scores, l, s), MatRef::new(&v, s, D), 0.0, black_box(&mut out));
                    })
                })
            });
        }
    }
    g.finish();
}

fn knn_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention_knn_decode");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(2));
    let p = KnnParams::recommended();
    const STEPS: usize = 16;
    fn rows(x: &[f32], n: usize) -> Rows<'_> {
        Rows::new(&x[..n * D], n, D)
    }
    for s in [4096usize, 16384] {
        let (q, k, v) = peaked(s + STEPS, D, 5);
        let mut out = vec![0.0; D];
        // Step `t`: query `t` over keys `0..=t`, causal after `t` cached keys.
        let step = |t: usize, cache: &mut Option<_>, out: &mut [f32]| {
            let (qr, vis) = (Rows::new(&q[t * D..(t + 1) * D], 1, D), Visibility::causal(t + 1, t));
            knn_attention_group_cached(
                &[qr],
                rows(&k, t + 1),
                rows(&v, t + 1),
                0.125,
                vis,
                &p,
                &mut [out],
                D,
                None,
                cache,
            )
        };
        // The index the cache holds after step s - 1 (keys 0..s).
        let mut prev = None;
        step(s - 1, &mut prev, &mut out);
        let id = |name: &str| BenchmarkId::new(name, format!("{STEPS}_steps_after_{s}"));
        g.bench_function(id("knn_reusing_the_index"), |b| {
            b.iter_batched_ref(
                || prev.clone(),
                |cache| one_thread(|| (s..s + STEPS).for_each(|t| _ = step(t, cache, black_box(&mut out)))),
                criterion::BatchSize::LargeInput,
            )
        });
        g.bench_function(id("exact"), |b| {
            b.iter(|| {
                one_thread(|| {
                    for t in s..s + STEPS {
                        let hp = HeadParams { scale: 0.125, softcap: 0.0, visibility: Visibility::causal(t + 1, t) };
                        let qr = Rows::new(&q[t * D..(t + 1) * D], 1, D);
                        attention_head(qr, rows(&k, t + 1), rows(&v, t + 1), None, &hp, black_box(&mut out), D);
                    }
                })
            })
        });
        g.bench_function(BenchmarkId::new("knn_rebuilding_the_index", format!("1_step_after_{s}")), |b| {
            b.iter(|| one_thread(|| step(s, &mut None, black_box(&mut out))))
        });
    }
    g.finish();
}

criterion_group!(benches, exact_vs_unfused, knn_vs_exact, decode, knn_decode);
criterion_main!(benches);
