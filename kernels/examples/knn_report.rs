//! Prints the kernel-level figures of ../shared/ALGORITHMS.md section 5 (A and C) for
//! IceFormer k-NN attention against the exact kernel, on one thread:
//! L, exact ms, knn ms (index build included), speed-up, recall@k, softmax mass
//! covered, relative output error and row cosine, for random and peaked workloads
//! (`peaked`: a third of the queries mix two keys; `peaked1`: one key each).
//!
//!     cargo run --release -p floe-kernels --example knn_report -- [L,L,...] [key=value,...]
//!
//! e.g. `-- 1024,4096 k=20,construction_scan=true`, or `-- 4096 preset=recommended`
//! (`KnnParams::recommended()`, the figures of docs/attention.md; the default is
//! IceFormer's parameters). d = 64, S = L, non-causal. Times
//! are on-CPU time of the thread (the machine may be shared), median of a few runs.
//! `KNN_ONLY=1` skips timing `attention_head`; `KNN_WORKLOADS=peaked,random` picks
//! workloads; `KNN_PROFILE=1` splits build and queries.

use floe_kernels::attention::exact::{attention_head, HeadParams};
use floe_kernels::attention::knn::{knn_attention_group, KnnParams, KnnStats};
use floe_kernels::attention::{Rows, Visibility};
use floe_kernels::gemm::{self, MatRef};
use std::time::Instant;

#[path = "../benches/attention_data.rs"]
mod attention_data;
use attention_data::{peaked, peaked_one, quality, random};

/// CPU time of this thread in ms (Linux `schedstat`), else wall time: the machine
/// may be shared, and on-CPU time is what the kernels cost.
fn now_ms(start: Instant) -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<f64>().ok()))
        .map_or_else(|| start.elapsed().as_secs_f64() * 1e3, |ns| ns / 1e6)
}

/// Median over `reps` of the per-call CPU time, each rep looping enough calls to last
/// about 100 ms (the CPU clock ticks every few ms on some kernels).
fn median_ms(mut f: impl FnMut(), reps: usize) -> f64 {
    let origin = Instant::now();
    let s = now_ms(origin);
    let w = Instant::now();
    f();
    let once = (now_ms(origin) - s).max(w.elapsed().as_secs_f64() * 1e3 * 0.5).max(1e-3);
    let iters = ((100.0 / once) as usize).clamp(1, 1000);
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = now_ms(origin);
            for _ in 0..iters {
                f();
            }
            (now_ms(origin) - s) / iters as f64
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let lens: Vec<usize> = args
        .first()
        .map(|a| a.split(',').map(|x| x.parse().expect("lengths")).collect())
        .unwrap_or_else(|| vec![1024, 2048, 4096, 8192, 16384]);
    let params = KnnParams::parse(args.get(1).map_or("", |s| s.as_str())).expect("knn parameters");
    let d = 64;
    let scale = 1.0 / (d as f32).sqrt();
    println!("params: {params:?}");
    println!(
        "workload |     L | exact ms | unfused ms |  knn ms | build ms | vs exact | vs unfused | scored/q | recall@k |  mass  | rel err | cosine"
    );
    let only = std::env::var("KNN_WORKLOADS").ok();
    for (name, gen) in [("random", random as fn(usize, usize, u64) -> _), ("peaked", peaked), ("peaked1", peaked_one)] {
        if only.as_deref().is_some_and(|w| !w.split(',').any(|x| x == name)) {
            continue;
        }
        for &l in &lens {
            let (q, k, v) = gen(l, d, 1);
            let reps = if l >= 8192 { 3 } else { 5 };
            let (qr, kr, vr) = (Rows::new(&q, l, d), Rows::new(&k, l, d), Rows::new(&v, l, d));
            // Exact output for the quality figures (and the unfused timing): sgemm
            // `Q K^T` for 512 query rows at a time, softmax per row, sgemm `P V`.
            let mut exact = vec![0.0; l * d];
            let mut scores = vec![0.0; 512 * l];
            let skip = std::env::var_os("KNN_ONLY").is_some();
            let mut unfused = || {
                for r0 in (0..l).step_by(512) {
                    let rows = 512.min(l - r0);
                    let sc = &mut scores[..rows * l];
                    let qb = MatRef::new(&q[r0 * d..(r0 + rows) * d], rows, d);
                    gemm::sgemm(scale, qb, MatRef::new(&k, l, d).t(), 0.0, sc);
                    sc.chunks_mut(l).for_each(floe_kernels::softmax::softmax_f32);
                    gemm::sgemm(
                        1.0,
                        MatRef::new(sc, rows, l),
                        MatRef::new(&v, l, d),
                        0.0,
                        &mut exact[r0 * d..(r0 + rows) * d],
                    );
                }
            };
            // KNN_ONLY: the exact output only, untimed.
            let t_unfused = if skip {
                unfused();
                f64::NAN
            } else {
                median_ms(unfused, reps)
            };
            // `attention_head` (the tiled kernel once merged); once only for big L.
            let hp = HeadParams { scale, softcap: 0.0, visibility: Visibility::all(l) };
            let mut o = vec![0.0; l * d];
            let t_exact = if skip {
                f64::NAN
            } else {
                median_ms(|| attention_head(qr, kr, vr, None, &hp, &mut o, d), if l >= 4096 { 1 } else { 3 })
            };
            let mut approx = vec![0.0; l * d];
            let mut stats = KnnStats::default();
            let t_knn = median_ms(
                || {
                    stats = KnnStats::default();
                    knn_attention_group(
                        &[qr],
                        kr,
                        vr,
                        scale,
                        Visibility::all(l),
                        &params,
                        &mut [&mut approx[..]],
                        d,
                        Some(&mut stats),
                    )
                },
                reps,
            );
            if std::env::var_os("KNN_PROFILE").is_some() {
                use floe_kernels::attention::knn::{KnnIndex, TopK};
                let o = Instant::now();
                let t = now_ms(o);
                let index = KnnIndex::build(kr, &params, None);
                let tb = now_ms(o) - t;
                let mut top = TopK::new(params.k);
                let mut sink = 0usize;
                let t = now_ms(o);
                index.query_batch(qr, l, params.k, &mut top, |_, t| sink += t.len());
                let tq = now_ms(o) - t;
                let t = now_ms(o);
                for i in 0..l {
                    index.query(qr.row(i), l, params.k, &mut top);
                    sink += top.len();
                }
                let tq1 = now_ms(o) - t;
                println!("  profile L={l}: build {tb:.2} ms, query_batch {tq:.2} ms, query {tq1:.2} ms ({sink})");
            }
            let qa = quality(&q, &k, &exact, &approx, l, l, d, &params, scale);
            println!(
                "{name:>8} | {l:>5} | {t_exact:>8.2} | {t_unfused:>10.2} | {t_knn:>7.2} | {:>8.2} | {:>7.2}x | {:>9.2}x | {:>8.0} | {:>8.3} | {:>6.3} | {:>7.4} | {:>6.4}",
                stats.build_ns as f64 / 1e6,
                t_exact / t_knn,
                t_unfused / t_knn,
                stats.scored_per_query(),
                qa.recall,
                qa.mass,
                qa.rel_err,
                qa.cosine
            );
        }
    }
}
