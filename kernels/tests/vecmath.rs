//! Vector math, softmax and normalisation kernels: every instruction-set path against
//! the scalar path and against f64 definitions (`vecmath::reference`, std/libm f64).

use floe_kernels::vecmath::{self, available, reference, Func, Isa};

/// A small deterministic generator (no test-only dependencies).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next() >> 40) as f32 / (1u64 << 24) as f32)
    }
    fn values(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Inputs that stress the edges of every algorithm.
fn specials() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::NAN,
        -f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        -f32::MIN_POSITIVE,
        1e-45,
        -1e-45,
        1e-40,
        -3e-39,
        1e-20,
        0.625,
        0.921875,
        -0.921875,
        0.921875 * std::f32::consts::SQRT_2,
        3.92,
        9.0,
        10.5,
        17.5,
        88.72283,
        88.7229,
        -87.33,
        -103.9,
        -104.0,
        -150.0,
        1e10,
        -1e10,
        1e30,
        -1e30,
    ];
    let more: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(more);
    v
}

/// One ulp of the f32 binade holding `v` (the subnormal spacing below 2^-126).
fn ulp_of(v: f64) -> f64 {
    let a = v.abs().min(f32::MAX as f64);
    let e = ((a.to_bits() >> 52) as i64 - 1023).max(-126);
    f64::from_bits(((e - 23 + 1023) as u64) << 52)
}

/// Error of `got` against the f64 value `want` in ulps; infinite when one is NaN and
/// the other not, or when one overflowed where the rounded f64 value does not.
fn ulp_error(got: f32, want: f64) -> f64 {
    if got.is_nan() || want.is_nan() {
        return if got.is_nan() && want.is_nan() { 0.0 } else { f64::INFINITY };
    }
    if got.is_infinite() || (want as f32).is_infinite() {
        return if got == want as f32 { 0.0 } else { f64::INFINITY };
    }
    (got as f64 - want).abs() / ulp_of(want)
}

/// Input ranges of the documented bounds (`docs/vector-math.md`).
const RANGES: [(f32, f32); 7] = [
    (f32::NEG_INFINITY, -10.0),
    (-10.0, -4.0),
    (-4.0, -1.0),
    (-1.0, 1.0),
    (1.0, 4.0),
    (4.0, 10.0),
    (10.0, f32::INFINITY),
];

fn range_of(x: f32) -> usize {
    RANGES.iter().position(|&(lo, hi)| x > lo && x <= hi).unwrap_or(0)
}

/// The documented max error in ulps per input range (`RANGES`), for every path, measured
/// over all 2^32 inputs by `examples/vecmath_accuracy.rs` (NaN inputs excluded).
fn documented_ulps(f: Func) -> [f64; 7] {
    match f {
        Func::Exp => [1.02; 7],
        Func::Tanh => [1.52; 7],
        Func::Erf => [1.75; 7],
        Func::Sigmoid => [2.85; 7],
        Func::Silu => [53.0, 3.7, 3.6, 2.9, 2.1, 2.0, 1.35],
        Func::Gelu => [130.0, 66.0, 16.0, 2.7, 1.85, 0.82, 0.01],
        Func::GeluTanh => [215.0, 211.0, 23.0, 3.65, 2.25, 1.1, 0.01],
    }
}

#[test]
fn every_path_is_within_the_documented_ulp_bounds_on_a_strided_sweep_of_all_f32() {
    // Every 257th bit pattern (16.7M inputs, all signs and binades) plus the specials.
    const STRIDE: u64 = 257;
    let mut x: Vec<f32> = (0..(1u64 << 32) / STRIDE).map(|i| f32::from_bits((i * STRIDE) as u32)).collect();
    x.extend(specials());
    let mut out = vec![0.0f32; x.len()];
    for f in Func::ALL {
        let want: Vec<f64> = x.iter().map(|&v| reference::of(f)(v as f64)).collect();
        let bound = documented_ulps(f);
        for isa in available() {
            isa.map(f, &x, &mut out);
            for i in 0..x.len() {
                let e = ulp_error(out[i], want[i]);
                assert!(
                    e <= bound[range_of(x[i])],
                    "{} {}({:e}) = {:e}, f64 {:e}: {e} ulp",
                    isa.name(),
                    f.name(),
                    x[i],
                    out[i],
                    want[i]
                );
            }
        }
    }
}

#[test]
fn every_path_matches_scalar_and_f64_on_every_tail_length() {
    let scalar = vecmath::scalar();
    let mut rng = Rng::new(1);
    for isa in available() {
        for f in Func::ALL {
            for len in 0..70 {
                let mut x = rng.values(len, -12.0, 12.0);
                // sprinkle specials so they land in full vectors and in tails
                for (i, s) in specials().into_iter().enumerate() {
                    if len > 0 && i % 3 == len % 3 {
                        x[(i * 7) % len] = s;
                    }
                }
                let (mut got, mut want) = (vec![0.0; len], vec![0.0; len]);
                isa.map(f, &x, &mut got);
                scalar.map(f, &x, &mut want);
                for i in 0..len {
                    let (g, w) = (got[i], want[i]);
                    // Both are within the documented bound of f64, so of each other within twice it.
                    let bound = documented_ulps(f)[range_of(x[i])];
                    assert!(
                        ulp_error(g, w as f64) <= 2.0 * bound,
                        "{} vs scalar, {}({:e}) len {len}: {g:e} vs {w:e}",
                        isa.name(),
                        f.name(),
                        x[i]
                    );
                    let e = ulp_error(g, reference::of(f)(x[i] as f64));
                    assert!(
                        e <= documented_ulps(f)[range_of(x[i])],
                        "{} {}({:e}): {e} ulp",
                        isa.name(),
                        f.name(),
                        x[i]
                    );
                }
                let mut inplace = x.clone();
                isa.map_in_place(f, &mut inplace);
                assert!(
                    inplace.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{} {} in place differs from out of place at len {len}",
                    isa.name(),
                    f.name()
                );
            }
        }
    }
}

#[test]
fn a_result_does_not_depend_on_the_slice_length_or_offset() {
    let mut rng = Rng::new(2);
    let x = rng.values(80, -10.0, 10.0);
    for isa in available() {
        for f in Func::ALL {
            let mut whole = vec![0.0; x.len()];
            isa.map(f, &x, &mut whole);
            for start in 0..5 {
                for len in 0..70 {
                    let mut part = vec![0.0; len];
                    isa.map(f, &x[start..start + len], &mut part);
                    for i in 0..len {
                        assert_eq!(part[i].to_bits(), whole[start + i].to_bits(), "{} {}", isa.name(), f.name());
                    }
                }
            }
        }
    }
}

#[test]
fn specials_saturate_and_propagate_exactly() {
    let inf = f32::INFINITY;
    // (function, input, exact output); `None` output means NaN.
    #[rustfmt::skip]
    let cases: &[(Func, f32, Option<f32>)] = &[
        (Func::Exp, f32::NAN, None), (Func::Exp, inf, Some(inf)), (Func::Exp, -inf, Some(0.0)),
        (Func::Exp, 0.0, Some(1.0)), (Func::Exp, -0.0, Some(1.0)), (Func::Exp, 1e-45, Some(1.0)),
        (Func::Exp, 88.7229, Some(inf)), (Func::Exp, 1e30, Some(inf)), (Func::Exp, -104.0, Some(0.0)),
        (Func::Exp, -1e30, Some(0.0)),
        (Func::Tanh, f32::NAN, None), (Func::Tanh, inf, Some(1.0)), (Func::Tanh, -inf, Some(-1.0)),
        (Func::Tanh, 9.1, Some(1.0)), (Func::Tanh, -9.1, Some(-1.0)), (Func::Tanh, f32::MAX, Some(1.0)),
        (Func::Tanh, 1e-40, Some(1e-40)), (Func::Tanh, -1e-45, Some(-1e-45)),
        (Func::Erf, f32::NAN, None), (Func::Erf, inf, Some(1.0)), (Func::Erf, -inf, Some(-1.0)),
        (Func::Erf, 3.92, Some(1.0)), (Func::Erf, -4.0, Some(-1.0)), (Func::Erf, f32::MIN, Some(-1.0)),
        (Func::Sigmoid, f32::NAN, None), (Func::Sigmoid, inf, Some(1.0)), (Func::Sigmoid, -inf, Some(0.0)),
        (Func::Sigmoid, 0.0, Some(0.5)), (Func::Sigmoid, 17.5, Some(1.0)), (Func::Sigmoid, -104.0, Some(0.0)),
        (Func::Sigmoid, f32::MIN, Some(0.0)),
        (Func::Silu, f32::NAN, None), (Func::Silu, inf, Some(inf)), (Func::Silu, -inf, Some(0.0)),
        (Func::Silu, 1e30, Some(1e30)), (Func::Silu, f32::MIN, Some(0.0)),
        (Func::Gelu, f32::NAN, None), (Func::Gelu, inf, Some(inf)), (Func::Gelu, -inf, Some(0.0)),
        (Func::Gelu, 1e30, Some(1e30)), (Func::Gelu, f32::MIN, Some(0.0)), (Func::Gelu, -15.0, Some(0.0)),
        (Func::GeluTanh, f32::NAN, None), (Func::GeluTanh, inf, Some(inf)), (Func::GeluTanh, -inf, Some(0.0)),
        (Func::GeluTanh, 1e30, Some(1e30)), (Func::GeluTanh, f32::MIN, Some(0.0)),
    ];
    for isa in available() {
        for &(f, x, want) in cases {
            let mut out = [0.0f32; 1];
            isa.map(f, &[x], &mut out);
            match want {
                None => assert!(out[0].is_nan(), "{} {}({x:e}) = {:e}, want NaN", isa.name(), f.name(), out[0]),
                Some(w) => assert_eq!(out[0], w, "{} {}({x:e})", isa.name(), f.name()),
            }
        }
        // Odd functions keep the sign of zero.
        for f in [Func::Tanh, Func::Erf, Func::Gelu, Func::GeluTanh, Func::Silu] {
            let mut out = [1.0f32; 2];
            isa.map(f, &[0.0, -0.0], &mut out);
            assert_eq!(out.map(f32::to_bits), [0.0f32.to_bits(), (-0.0f32).to_bits()], "{} {}", isa.name(), f.name());
        }
    }
}

#[test]
fn exp_overflows_exactly_where_the_rounded_result_does() {
    // Walk the f32 neighbours of ln(f32::MAX) and of the underflow edge.
    let edges = [88.722_84f32, -87.336_54, -103.972_08];
    for isa in available() {
        for &e in &edges {
            let mut x = e;
            for _ in 0..40 {
                x = f32::from_bits(x.to_bits() - 20);
            }
            for _ in 0..80 {
                let mut out = [0.0f32];
                isa.map(Func::Exp, &[x], &mut out);
                let want = (x as f64).exp();
                assert!(ulp_error(out[0], want) <= 1.02, "{} exp({x:e}) = {:e}, f64 {want:e}", isa.name(), out[0]);
                x = f32::from_bits(x.to_bits() + 1);
            }
        }
    }
}

fn naive_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

#[test]
fn softmax_and_log_softmax_match_f64_on_every_path_and_length() {
    let mut rng = Rng::new(3);
    for isa in available() {
        for len in (1..70).chain([255, 1000, 4099]) {
            for (lo, hi) in [(-5.0, 5.0), (-80.0, 80.0), (1e4, 1e4 + 20.0)] {
                let mut x = rng.values(len, lo, hi);
                if len > 3 {
                    x[len / 2] = f32::NEG_INFINITY; // a masked position
                }
                let want = naive_softmax(&x);
                let mut p = x.clone();
                isa.softmax_row(&mut p);
                let mut lp = x.clone();
                isa.log_softmax_row(&mut lp);
                for i in 0..len {
                    let w = want[i];
                    // f32 sums of `len` terms: the error grows with the row.
                    let tol = (2e-6 + 2e-9 * len as f64) * w + 1e-30;
                    assert!((p[i] as f64 - w).abs() <= tol, "{} softmax len {len}: {} vs {w}", isa.name(), p[i]);
                    let lw = w.ln();
                    if lw.is_finite() {
                        assert!(
                            (lp[i] as f64 - lw).abs() <= 1e-6 * (1.0 + lw.abs()) + 4e-7 * hi.abs() as f64,
                            "{} log_softmax len {len} [{i}]: {} vs {lw}",
                            isa.name(),
                            lp[i]
                        );
                    } else {
                        assert_eq!(lp[i], f32::NEG_INFINITY);
                    }
                }
            }
        }
        let mut empty: [f32; 0] = [];
        isa.softmax_row(&mut empty);
        isa.log_softmax_row(&mut empty);
    }
}

#[test]
fn the_online_softmax_step_over_columns_matches_f64_on_every_path_and_width() {
    let mut rng = Rng::new(5);
    for isa in available() {
        for width in [1usize, 5, 16, 20, 32, 33] {
            for rows in [1usize, 3, 4, 7, 13] {
                let mut tile = rng.values(rows * width, -30.0, 30.0);
                tile[0] = f32::NEG_INFINITY; // a masked score
                                             // column 1 is all masked (a query that sees none of these keys)
                if width > 1 {
                    (0..rows).for_each(|r| tile[r * width + 1] = f32::NEG_INFINITY);
                }
                // running state: column 0 fresh, the others from an earlier tile
                let mut max = rng.values(width, -20.0, 20.0);
                max[0] = f32::NEG_INFINITY;
                let mut sum = rng.values(width, 1.0, 5.0);
                sum[0] = 0.0;
                let mut acc = rng.values(3 * width, -2.0, 2.0);
                let (t0, m0, s0, a0) = (tile.clone(), max.clone(), sum.clone(), acc.clone());
                isa.online_softmax_cols(&mut tile, width, &mut max, &mut sum, &mut acc);
                for c in 0..width {
                    let col_max = (0..rows).map(|r| t0[r * width + c] as f64).fold(f64::NEG_INFINITY, f64::max);
                    let m = col_max.max(m0[c] as f64);
                    let shift = if m == f64::NEG_INFINITY { 0.0 } else { m };
                    let corr = (m0[c] as f64 - shift).exp();
                    let close = |got: f32, want: f64| (got as f64 - want).abs() <= 2e-6 * want.abs() + 1e-30;
                    let name = isa.name();
                    assert_eq!(max[c] as f64, m, "{name} width {width} rows {rows} col {c}: max");
                    let mut total = 0.0;
                    for r in 0..rows {
                        let w = (t0[r * width + c] as f64 - shift).exp();
                        total += w;
                        assert!(
                            close(tile[r * width + c], w),
                            "{name} w{width} r{rows} [{r}][{c}]: {} vs {w}",
                            tile[r * width + c]
                        );
                    }
                    let want_sum = s0[c] as f64 * corr + total;
                    assert!(close(sum[c], want_sum), "{name} w{width} r{rows} col {c}: sum {} vs {want_sum}", sum[c]);
                    for r in 0..3 {
                        let want = a0[r * width + c] as f64 * corr;
                        assert!(
                            close(acc[r * width + c], want),
                            "{name} acc [{r}][{c}]: {} vs {want}",
                            acc[r * width + c]
                        );
                    }
                }
                if width > 1 {
                    assert!((0..rows).all(|r| tile[r * width + 1] == 0.0), "masked scores give exactly 0");
                }
            }
        }
    }
}

fn naive_mean_var(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    (mean, x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n)
}

#[test]
fn mean_var_and_norm_rows_match_f64_on_every_path_and_length() {
    let mut rng = Rng::new(4);
    for isa in available() {
        for len in (1..70).chain([384, 1000, 4099]) {
            for (lo, hi) in [(-1.0, 1.0), (100.0, 101.0), (-3e3, 5e3)] {
                let x = rng.values(len, lo, hi);
                let gamma = rng.values(len, 0.5, 1.5);
                let beta = rng.values(len, -1.0, 1.0);
                let (m, v) = naive_mean_var(&x);
                let (gm, gv) = isa.mean_var(&x);
                let spread = (hi - lo) as f64;
                assert!((gm as f64 - m).abs() <= 1e-6 * (m.abs() + spread), "{} mean len {len}", isa.name());
                // f32 sums of `len` shifted terms (one partial sum on the scalar path):
                // rounding grows like len * 2^-24 relative to the sum of squares.
                let tol = (2e-6 + 2e-8 * len as f64) * (v + 1e-3 * spread * spread);
                assert!((gv as f64 - v).abs() <= tol, "{} var len {len}: {gv} vs {v}", isa.name());

                let eps = 1e-5;
                let mut out = vec![0.0; len];
                for with_beta in [true, false] {
                    isa.layer_norm_row(&x, &gamma, with_beta.then_some(&beta[..]), eps, &mut out);
                    for i in 0..len {
                        let b = if with_beta { beta[i] as f64 } else { 0.0 };
                        let w = (x[i] as f64 - m) / (v + eps as f64).sqrt() * gamma[i] as f64 + b;
                        assert!(
                            (out[i] as f64 - w).abs() <= 5e-5 * (1.0 + w.abs()),
                            "{} layer_norm len {len}",
                            isa.name()
                        );
                    }
                }
                isa.rms_norm_row(&x, &gamma, eps, &mut out);
                let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / len as f64;
                for i in 0..len {
                    let w = x[i] as f64 / (ms + eps as f64).sqrt() * gamma[i] as f64;
                    assert!((out[i] as f64 - w).abs() <= 2e-6 * (1.0 + w.abs()), "{} rms_norm len {len}", isa.name());
                }
            }
        }
        assert_eq!(isa.mean_var(&[]), (0.0, 0.0));
    }
}

#[test]
fn public_functions_and_unary_f32_use_the_selected_path() {
    use floe_kernels::elementwise::{unary_f32, UnaryKind};
    let x: Vec<f32> = (-50..50).map(|i| i as f32 * 0.3).collect();
    let isa: &Isa = vecmath::selected();
    assert_eq!(isa.name(), available()[0].name());
    type Pair = (Func, fn(&[f32], &mut [f32]), fn(&mut [f32]));
    let fns: [Pair; 7] = [
        (Func::Exp, vecmath::exp, vecmath::exp_in_place),
        (Func::Tanh, vecmath::tanh, vecmath::tanh_in_place),
        (Func::Erf, vecmath::erf, vecmath::erf_in_place),
        (Func::Sigmoid, vecmath::sigmoid, vecmath::sigmoid_in_place),
        (Func::Silu, vecmath::silu, vecmath::silu_in_place),
        (Func::Gelu, vecmath::gelu, vecmath::gelu_in_place),
        (Func::GeluTanh, vecmath::gelu_tanh, vecmath::gelu_tanh_in_place),
    ];
    for (f, out_of_place, in_place) in fns {
        let (mut a, mut b) = (vec![0.0; x.len()], x.clone());
        out_of_place(&x, &mut a);
        in_place(&mut b);
        assert_eq!(a, b, "{}", f.name());
        for (v, got) in x.iter().zip(&a) {
            assert!(ulp_error(*got, reference::of(f)(*v as f64)) <= documented_ulps(f)[range_of(*v)], "{}", f.name());
        }
    }
    for (kind, f) in [
        (UnaryKind::Exp, Func::Exp),
        (UnaryKind::Tanh, Func::Tanh),
        (UnaryKind::Erf, Func::Erf),
        (UnaryKind::Sigmoid, Func::Sigmoid),
        (UnaryKind::Gelu, Func::Gelu),
        (UnaryKind::GeluTanh, Func::GeluTanh),
        (UnaryKind::Silu, Func::Silu),
    ] {
        let mut out = vec![0.0; x.len()];
        unary_f32(kind, &x, &mut out);
        for (v, got) in x.iter().zip(&out) {
            assert!(ulp_error(*got, reference::of(f)(*v as f64)) <= documented_ulps(f)[range_of(*v)], "{kind:?}");
        }
    }
}
