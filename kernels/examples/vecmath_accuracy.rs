//! Exhaustive accuracy of the vector math functions against f64, on every
//! instruction set this CPU has: all 2^32 f32 bit patterns (or every `--stride`-th).
//!
//! `cargo run --release -p floe-kernels --example vecmath_accuracy [-- --stride N] [--func NAME]`
//!
//! For each function and path it prints the max absolute error, the max error in ulps
//! of the f64 result (ulp of the f32 binade, subnormal ulp below 2^-126) and the max
//! relative error where the f64 result is a normal f32, each with the input where it
//! happens, then the same per input range, and checks the specials: NaN -> NaN, no NaN
//! for a non-NaN input. The numbers go to `docs/vector-math.md`.

use floe_kernels::vecmath::{available, reference, Func, Isa};
use std::sync::Mutex;

/// Input ranges the per-range table is split into.
const RANGES: [(f64, f64); 7] = [
    (f64::NEG_INFINITY, -10.0),
    (-10.0, -4.0),
    (-4.0, -1.0),
    (-1.0, 1.0),
    (1.0, 4.0),
    (4.0, 10.0),
    (10.0, f64::INFINITY),
];

#[derive(Clone, Copy, Default)]
struct Worst {
    abs: (f64, f32),
    ulp: (f64, f32),
    rel: (f64, f32),
    bad_nan: u64,
}

impl Worst {
    fn add(&mut self, x: f32, got: f32, want: f64) {
        if x.is_nan() || want.is_nan() {
            if !got.is_nan() {
                self.bad_nan += 1;
            }
            return;
        }
        if got.is_nan() {
            self.bad_nan += 1;
            return;
        }
        if got as f64 == want {
            return;
        }
        let err = (got as f64 - want).abs();
        if got.is_infinite() || (want as f32).is_infinite() {
            if got == want as f32 {
                return; // overflowed exactly where the rounded result does
            }
            // Overflowed on one side only: count it as unbounded.
            self.abs = self.abs.max((f64::INFINITY, x));
            self.ulp = self.ulp.max((f64::INFINITY, x));
            return;
        }
        let ulp = ulp_of(want);
        if err > self.abs.0 {
            self.abs = (err, x);
        }
        if err / ulp > self.ulp.0 {
            self.ulp = (err / ulp, x);
        }
        if want.abs() >= f32::MIN_POSITIVE as f64 && err / want.abs() > self.rel.0 {
            self.rel = (err / want.abs(), x);
        }
    }

    fn merge(&mut self, o: &Worst) {
        for (a, b) in [(&mut self.abs, o.abs), (&mut self.ulp, o.ulp), (&mut self.rel, o.rel)] {
            if b.0 > a.0 {
                *a = b;
            }
        }
        self.bad_nan += o.bad_nan;
    }
}

trait MaxBy {
    fn max(self, o: Self) -> Self;
}
impl MaxBy for (f64, f32) {
    fn max(self, o: Self) -> Self {
        if o.0 > self.0 {
            o
        } else {
            self
        }
    }
}

/// One ulp of the f32 binade holding `v` (the subnormal spacing below 2^-126); values
/// beyond f32::MAX use the top binade.
fn ulp_of(v: f64) -> f64 {
    let a = v.abs().min(f32::MAX as f64);
    let e = ((a.to_bits() >> 52) as i64 - 1023).max(-126);
    f64::from_bits(((e - 23 + 1023) as u64) << 52)
}

fn range_of(x: f32) -> usize {
    let x = x as f64;
    RANGES.iter().position(|&(lo, hi)| x > lo && x <= hi || x == lo && lo == f64::NEG_INFINITY).unwrap_or(6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).map(|i| args[i + 1].clone());
    let stride: u64 = arg("--stride").map_or(1, |s| s.parse().expect("--stride N"));
    let only = arg("--func");
    let isas = available();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let funcs: Vec<Func> = Func::ALL.into_iter().filter(|f| only.as_deref().is_none_or(|o| o == f.name())).collect();
    println!("paths: {:?}, stride {stride}, {threads} threads", isas.iter().map(Isa::name).collect::<Vec<_>>());
    for f in funcs {
        let t0 = std::time::Instant::now();
        let want_of = reference::of(f);
        // [isa][range]
        let total = Mutex::new(vec![[Worst::default(); 7]; isas.len()]);
        std::thread::scope(|sc| {
            for t in 0..threads {
                let (isas, total) = (&isas, &total);
                sc.spawn(move || {
                    let mut local = vec![[Worst::default(); 7]; isas.len()];
                    const BLOCK: u64 = 1 << 16;
                    let n_blocks = (1u64 << 32).div_ceil(BLOCK * stride);
                    let mut x = Vec::with_capacity(BLOCK as usize);
                    let mut out = vec![0.0f32; BLOCK as usize];
                    let mut b = t;
                    while b < n_blocks {
                        x.clear();
                        let start = b * BLOCK * stride;
                        x.extend(
                            (0..BLOCK)
                                .map(|i| start + i * stride)
                                .filter(|&v| v < 1 << 32)
                                .map(|v| f32::from_bits(v as u32)),
                        );
                        let want: Vec<f64> = x.iter().map(|&v| want_of(v as f64)).collect();
                        for (k, isa) in isas.iter().enumerate() {
                            isa.map(f, &x, &mut out[..x.len()]);
                            for i in 0..x.len() {
                                local[k][range_of(x[i])].add(x[i], out[i], want[i]);
                            }
                        }
                        b += threads;
                    }
                    let mut tot = total.lock().unwrap();
                    for (k, ranges) in local.iter().enumerate() {
                        for (r, w) in ranges.iter().enumerate() {
                            tot[k][r].merge(w);
                        }
                    }
                });
            }
        });
        let total = total.into_inner().unwrap();
        for (k, isa) in isas.iter().enumerate() {
            let mut all = Worst::default();
            total[k].iter().for_each(|w| all.merge(w));
            println!(
                "{:<10} {:<9} abs {:.3e} (x={:e})  ulp {:.2} (x={:e})  rel {:.3e} (x={:e})  bad-NaN {}",
                f.name(),
                isa.name(),
                all.abs.0,
                all.abs.1,
                all.ulp.0,
                all.ulp.1,
                all.rel.0,
                all.rel.1,
                all.bad_nan
            );
            for (r, w) in total[k].iter().enumerate() {
                println!(
                    "    x in ({:>5}, {:>5}]: abs {:.3e}  ulp {:>8.2} (x={:e})  rel {:.3e}",
                    RANGES[r].0, RANGES[r].1, w.abs.0, w.ulp.0, w.ulp.1, w.rel.0
                );
            }
        }
        println!("    ({:.1} s)", t0.elapsed().as_secs_f64());
    }
}
