//! The int8 pre-scan of the finest cells: a cheap filter in front of the exact
//! scores, never a change of result.
//!
//! Each finest cell keeps an int8 copy of its children, `K = round(k / s_k)` with one
//! scale per cell, and a block of queries is encoded the same way, `Q = round(q / s_q)`
//! with one scale per row. A dot-product instruction (AVX-512 VNNI `vpdpbusd`: 64
//! byte products per instruction, four times the f32 FMA rate) gives `sum_c Q_c K_c`
//! for [`ROWS`] queries against a cell. Write `q_c = s_q (Q_c + e_c)` and
//! `k_c = s_k (K_c + f_c)` (`e`, `f` the rounding errors, `|e_c|, |f_c| <= 1/2`):
//!
//! `q . k / (s_q s_k) - sum Q K = sum e_c K_c + sum (q_c / s_q) f_c`, so by
//! Cauchy-Schwarz `|q . k - s_q s_k sum Q K| <= s_q s_k (|e| |K| + |q / s_q| |f|)`
//!
//! with Euclidean norms known exactly: `|e|` and `|q / s_q|` per query row, `|K|`
//! and `|f|` per child (a cell keeps their maxima), plus the f32 rounding of the
//! exact dot itself. So a key whose int8 score plus
//! that margin does not reach a row's heap bar cannot enter its top k, and only
//! the keys that pass get an exact f32 dot ([`super::simd::dot`]) and are offered.
//! The retrieved keys and their scores are then those of an f32 scan whose dots
//! are computed by `dot` (see `KnnIndex::query_batch`).
//!
//! Layout: a cell of capacity `cap` (a multiple of [`BLOCK`]) holds `groups = ceil(d / 4)`
//! blocks of `cap x 4` bytes (group `g` of child `i` at `(g * cap + i) * 4`), so one
//! 64-byte load is four coordinates of sixteen children. x86's instructions take
//! unsigned query bytes, so queries are stored as `Q + offset` and the kernel
//! subtracts `offset * sum_c K_c` (kept per child); each kernel has its [`Code`].
//!
//! Kernels: AVX-512 VNNI (x86_64); AVX2 (`vpmaddubsw` + `vpmaddwd`: a third of
//! VNNI's rate but above two f32 FMA ports, with 7-bit queries so that no i16 pair
//! sum saturates: 16384 keys 284 -> 200 ms on Zen 3); `sdot` (aarch64 with the ARMv8.2
//! dot product, e.g. Cortex-A76 / Raspberry Pi 5; signed by signed, so it flips the
//! query bytes' top bit back to `Q` and needs no correction; Cortex-A72 / Pi 4 has
//! none); and a scalar one with the same results (the reference of the tests, used
//! only when forced: without a dot-product instruction the f32 scan is faster).

use super::simd::{dot, min_max, BLOCK, ROWS};
use std::sync::OnceLock;

/// Coordinates per 32-bit lane of the dot-product instruction.
pub const GROUP: usize = 4;

/// Below this magnitude a cell or query is quantized with scale 1 (all zeros: the
/// rounding error is then the value itself, far below 1/2).
const TINY: f32 = 1e-30;

/// How a kernel's query bytes encode `Q`: `|Q| <= qmax`, stored as the byte
/// `Q + offset`. x86's instructions multiply unsigned by signed bytes, hence the
/// offset; AVX2's `vpmaddubsw` adds two products into a saturating i16, so its
/// queries keep 6 bits and a sign (`2 * 127 * 127 < 2^15`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Code {
    pub qmax: i32,
    pub offset: i32,
}

/// The code of the dot-product instructions with full int8 queries (and of the
/// scalar reference when no kernel is picked).
const FULL: Code = Code { qmax: 127, offset: 128 };

/// The int8 copy of one cell's children (see the module doc for the layout).
#[derive(Clone, Debug, Default)]
pub struct CellQ {
    /// `groups x cap x GROUP` bytes; padding coordinates and columns are 0.
    pub data: Vec<i8>,
    /// `sum_c K_c` per column (0 for padding).
    pub sums: Vec<i32>,
    /// `k ~ scale * K`.
    pub scale: f32,
    /// `1 / scale` in f64 (the threshold's factor).
    pub inv_scale: f64,
    /// Upper bounds on the children's `|K|` and `|f|` (Euclidean norms of the int8
    /// row and of its rounding error, in units of `scale`).
    pub max_kn: f64,
    pub max_fn: f64,
}

/// Groups of [`GROUP`] coordinates covering `d`.
pub fn groups(d: usize) -> usize {
    d.div_ceil(GROUP)
}

/// An upper bound on the Euclidean norm of `x / s - X` over `d` coordinates (`X`
/// integers, possibly 0) from `sq`, the f32 sum of the squares of `x * (1 / s) - X`:
/// each `x * (1 / s)` is within `127.5 * 2^-23` of `x / s` (two roundings), so the
/// norm within `1.6e-5 sqrt(d)`, and a sum of `d` squares errs by at most
/// `d * 2^-24` relative (halved by the root).
fn f32_norm_bound(sq: f32, d: usize) -> f64 {
    let d = d as f64;
    (sq as f64).sqrt() * (1.0 + d * f32::EPSILON as f64) + 2e-5 * d.sqrt()
}

/// `round(x * inv)` (ties to even) clamped to `[-max, max]`, for `|x * inv| <= 128`:
/// adding `1.5 * 2^23` leaves the rounded integer in the low mantissa bits, so there is
/// no libm call (`f32::round` on baseline x86) and no saturating conversion, and the
/// loops that call it vectorize.
#[inline(always)]
fn round_i8(x: f32, inv: f32, max: i32) -> i8 {
    const MAGIC: f32 = 12_582_912.0;
    let t = x * inv + MAGIC;
    (t.to_bits() as i32 - MAGIC.to_bits() as i32).clamp(-max, max) as i8
}

impl CellQ {
    /// Quantizes the first `len` children of a transposed cell (`soa` holds at least
    /// `d` rows of `cap`). `None` when a coordinate is not finite (the cell is then
    /// scored in f32).
    pub fn quantize(soa: &[f32], d: usize, cap: usize, len: usize) -> Option<CellQ> {
        assert!(cap.is_multiple_of(BLOCK) && len <= cap && soa.len() >= d * cap);
        let mut max = 0.0f32;
        for c in 0..d {
            let row = &soa[c * cap..c * cap + len];
            // A NaN or infinity makes the row's square sum non-finite.
            if !dot(row, row).is_finite() {
                return None;
            }
            let (lo, hi) = min_max(row);
            max = max.max(-lo).max(hi);
        }
        let scale = if max > TINY { max / 127.0 } else { 1.0 };
        let mut q = CellQ {
            data: vec![0; groups(d) * cap * GROUP],
            sums: vec![0; cap],
            scale,
            inv_scale: 1.0 / scale as f64,
            max_kn: 0.0,
            max_fn: 0.0,
        };
        let inv = 1.0 / scale;
        // Row by row (sequential reads of `soa`), then the per-child norms.
        let (mut kn, mut fsq) = (vec![0i32; len], vec![0.0f32; len]);
        for c in 0..d {
            let base = (c / GROUP) * cap * GROUP + c % GROUP;
            let row = &soa[c * cap..c * cap + len];
            for (i, ((&x, k), f)) in row.iter().zip(&mut kn).zip(&mut fsq).enumerate() {
                let v = round_i8(x, inv, 127);
                q.data[base + i * GROUP] = v;
                q.sums[i] += v as i32;
                *k += v as i32 * v as i32;
                let e = x * inv - v as f32;
                *f += e * e;
            }
        }
        for (&k, &f) in kn.iter().zip(&fsq) {
            q.max_kn = q.max_kn.max((k as f64).sqrt());
            q.max_fn = q.max_fn.max(f32_norm_bound(f, d));
        }
        Some(q)
    }

    /// Writes child `local` from its f32 coordinates.
    fn write(&mut self, local: usize, key: &[f32], cap: usize, inv: f32) {
        let (mut sum, mut kn, mut fsq) = (0i32, 0i32, 0.0f32);
        for (c, &x) in key.iter().enumerate() {
            let v = round_i8(x, inv, 127);
            self.data[((c / GROUP) * cap + local) * GROUP + c % GROUP] = v;
            sum += v as i32;
            kn += v as i32 * v as i32;
            let e = x * inv - v as f32;
            fsq += e * e;
        }
        self.sums[local] = sum;
        self.max_kn = self.max_kn.max((kn as f64).sqrt());
        self.max_fn = self.max_fn.max(f32_norm_bound(fsq, key.len()));
    }

    /// Sets child `local` (capacity unchanged); false when the key does not fit the
    /// cell's scale or is not finite (the caller re-quantizes the cell).
    pub fn set(&mut self, local: usize, key: &[f32], cap: usize) -> bool {
        let limit = 127.0 * self.scale;
        if !key.iter().all(|x| x.abs() <= limit) {
            return false;
        }
        self.write(local, key, cap, 1.0 / self.scale);
        true
    }

    /// Moves child `last` into `local` and clears `last` (the f32 cell's swap-remove).
    /// The norm maxima stay valid bounds.
    pub fn swap_remove(&mut self, local: usize, last: usize, cap: usize) {
        for g in 0..self.data.len() / (cap * GROUP) {
            for t in 0..GROUP {
                self.data[(g * cap + local) * GROUP + t] = self.data[(g * cap + last) * GROUP + t];
                self.data[(g * cap + last) * GROUP + t] = 0;
            }
        }
        self.sums[local] = self.sums[last];
        self.sums[last] = 0;
    }
}

/// A query row's side of the bounds: `1 / s_q`, `|e|`, `|q / s_q|` (module doc) and
/// the f32 error factor of an exact dot.
#[derive(Clone, Copy, Debug, Default)]
pub struct QueryTerms {
    scale: f64,
    inv: f64,
    e: f64,
    qn: f64,
    gamma: f64,
}

/// Encodes one query row for the picked kernel: `out[c] = Q_c + offset` (its
/// [`Code`]; padding coordinates encode `Q = 0`), returns its [`QueryTerms`], or
/// `None` when a coordinate is not finite.
pub fn encode_query(q: &[f32], out: &mut [u8]) -> Option<QueryTerms> {
    encode_query_as(code(), q, out)
}

fn encode_query_as(code: Code, q: &[f32], out: &mut [u8]) -> Option<QueryTerms> {
    assert!(out.len() >= groups(q.len()) * GROUP);
    // A NaN or infinity (or a square sum past f32) makes `q . q` non-finite.
    if !dot(q, q).is_finite() {
        return None;
    }
    let (lo, hi) = min_max(q);
    let max = (-lo).max(hi).max(0.0);
    let scale = if max > TINY { max / code.qmax as f32 } else { 1.0 };
    let inv = 1.0 / scale;
    // Eight partial sums: independent chains.
    let (mut e, mut r) = ([0.0f32; 8], [0.0f32; 8]);
    for (c, o) in out.iter_mut().enumerate() {
        let x = q.get(c).copied().unwrap_or(0.0);
        // The clamp only guards the rounding of `inv`: `e` is measured on `v`.
        let v = round_i8(x, inv, code.qmax);
        let y = x * inv;
        e[c % 8] += (y - v as f32) * (y - v as f32);
        r[c % 8] += y * y;
        *o = (v as i32 + code.offset) as u8;
    }
    let d = q.len();
    // The f32 dot of `d` products errs by at most `d u / (1 - d u)` (u = 2^-24) times
    // `sum |q_c k_c| <= |q| |k|`; `2 d u = d * EPSILON` covers it below d = 2^22.
    let gamma = d as f64 * f32::EPSILON as f64;
    Some(QueryTerms {
        scale: scale as f64,
        inv: 1.0 / scale as f64,
        e: f32_norm_bound(e.iter().sum(), d),
        qn: f32_norm_bound(r.iter().sum(), d),
        gamma,
    })
}

/// What an int8 score `x = sum Q K` of one query against one cell says about the
/// exact dot: `(x - margin) s_q s_k <= fl(q . k) <= (x + margin) s_q s_k`, where
/// `fl(q . k)` is any f32 evaluation of the dot (module doc; `|k / s_k| <= |K| + |f|`).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    unit: f64,
    inv_unit: f64,
    margin: f64,
}

impl Bounds {
    #[inline]
    pub fn new(t: &QueryTerms, cell: &CellQ) -> Bounds {
        let round = t.e * cell.max_kn + t.qn * cell.max_fn;
        let f32_err = t.gamma * t.qn * (cell.max_kn + cell.max_fn);
        // Relative and absolute slack for the f64 evaluation of all this.
        let margin = (round + f32_err) * (1.0 + 1e-9) + 1e-3;
        Bounds { unit: t.scale * cell.scale as f64, inv_unit: t.inv * cell.inv_scale, margin }
    }

    /// The int8 score a key must exceed (`x > t`) for its exact dot to possibly beat
    /// `bar`: `bar / (s_q s_k) - margin`, rounded down. `i32::MIN` for a bar of `-inf`
    /// or NaN (a filling heap takes anything).
    #[inline]
    pub fn threshold(&self, bar: f32) -> i32 {
        if bar.is_nan() || bar == f32::NEG_INFINITY {
            return i32::MIN;
        }
        // `as` truncates toward zero and saturates: 2 below covers the rounding
        // down and one unit of slack.
        (bar as f64 * self.inv_unit - self.margin - 2.0) as i32
    }

    /// The int8 score above which the lower bound beats `bar` (`-inf` for a bar of
    /// `-inf`): `x > lower_bar(bar)` implies `lower(x) > bar`.
    #[inline]
    pub fn lower_bar(&self, bar: f32) -> f64 {
        // One unit above, for the rounding of `lower`.
        bar as f64 * self.inv_unit + self.margin + 1.0
    }

    /// A lower bound on the exact dot, as an f32 at or below the f64 value.
    #[inline]
    pub fn lower(&self, x: i32) -> f32 {
        let v = (x as f64 - self.margin) * self.unit;
        // Moving 2^-22 relative (plus a subnormal step) inward of the f32 rounding.
        (v - v.abs() * TO_F32 - 1e-37) as f32
    }

    /// An upper bound on the exact dot, as an f32 at or above the f64 value.
    #[inline]
    pub fn upper(&self, x: i32) -> f32 {
        let v = (x as f64 + self.margin) * self.unit;
        (v + v.abs() * TO_F32 + 1e-37) as f32
    }
}

/// More than half an f32 ulp, relative: `(v +- |v| TO_F32) as f32` rounds outward.
const TO_F32: f64 = 1.0 / (1u64 << 22) as f64;

/// `out[j * cap + i] = sum_c Q_jc K_ic` (the query bytes minus the offset) for the
/// first `len` columns (later columns are unspecified); bit `b` of
/// `masks[j * cap / 16 + v]` = whether `out[j * cap + 16 v + b] > thr[j]` (0 past
/// `len`). Returns, per row, whether it has a set bit.
type ScanFn = fn(
    q: [&[u8]; ROWS],
    cell: &CellQ,
    cap: usize,
    len: usize,
    thr: &[i32; ROWS],
    out: &mut [i32],
    masks: &mut [u16],
) -> [bool; ROWS];

fn check(q: &[&[u8]; ROWS], cell: &CellQ, cap: usize, len: usize, out: &[i32], masks: &[u16]) -> usize {
    assert!(cap.is_multiple_of(BLOCK) && len <= cap && out.len() >= ROWS * cap && cell.sums.len() >= cap);
    assert!(masks.len() >= ROWS * (cap / BLOCK), "masks hold fewer than ROWS x cap / 16");
    let groups = cell.data.len() / (cap * GROUP);
    assert_eq!(cell.data.len(), groups * cap * GROUP, "cell data is not groups x cap x 4");
    assert!(q.iter().all(|r| r.len() >= groups * GROUP), "query rows are shorter than the cell's groups");
    groups
}

/// The reference kernel (plain integer loops), for queries encoded with [`code`].
pub fn scan_scalar(
    q: [&[u8]; ROWS],
    cell: &CellQ,
    cap: usize,
    len: usize,
    thr: &[i32; ROWS],
    out: &mut [i32],
    masks: &mut [u16],
) -> [bool; ROWS] {
    scan_reference(code(), q, cell, cap, len, thr, out, masks)
}

/// [`scan_scalar`] for queries encoded with `code`.
#[allow(clippy::too_many_arguments)]
fn scan_reference(
    code: Code,
    q: [&[u8]; ROWS],
    cell: &CellQ,
    cap: usize,
    len: usize,
    thr: &[i32; ROWS],
    out: &mut [i32],
    masks: &mut [u16],
) -> [bool; ROWS] {
    let groups = check(&q, cell, cap, len, out, masks);
    let offset = code.offset;
    let nv = cap / BLOCK;
    masks[..ROWS * nv].fill(0);
    let mut hits = [false; ROWS];
    for j in 0..ROWS {
        for i in 0..len {
            let mut acc = 0i32;
            for g in 0..groups {
                for t in 0..GROUP {
                    let k = cell.data[(g * cap + i) * GROUP + t] as i32;
                    acc += (q[j][g * GROUP + t] as i32 - offset) * k;
                }
            }
            out[j * cap + i] = acc;
            hits[j] |= acc > thr[j];
            masks[j * nv + i / BLOCK] |= ((acc > thr[j]) as u16) << (i % BLOCK);
        }
    }
    hits
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::*;
    use std::arch::x86_64::*;

    pub fn scan(
        q: [&[u8]; ROWS],
        cell: &CellQ,
        cap: usize,
        len: usize,
        thr: &[i32; ROWS],
        out: &mut [i32],
        masks: &mut [u16],
    ) -> [bool; ROWS] {
        let groups = check(&q, cell, cap, len, out, masks);
        masks[..ROWS * (cap / BLOCK)].fill(0);
        // SAFETY: `kernel()` hands this entry out only after detecting avx512f,
        // avx512bw and avx512vnni; `check` proved the bounds `inner` relies on.
        unsafe { inner(q, cell, cap, len, groups, thr, out, masks) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn inner(
        q: [&[u8]; ROWS],
        cell: &CellQ,
        cap: usize,
        len: usize,
        groups: usize,
        thr: &[i32; ROWS],
        out: &mut [i32],
        masks: &mut [u16],
    ) -> [bool; ROWS] {
        let mut any = [0u16; ROWS];
        let t: [__m512i; ROWS] = std::array::from_fn(|j| _mm512_set1_epi32(thr[j]));
        let mut o = 0;
        while o < len {
            // Lanes past `len` (padding children) never count as hits.
            let live: __mmask16 = if len - o >= BLOCK { 0xFFFF } else { (1u16 << (len - o)) - 1 };
            let mut acc = [_mm512_setzero_si512(); ROWS];
            for g in 0..groups {
                // SAFETY: `(g * cap + o) * 4 + 64 <= groups * cap * 4 = data.len()`
                // because `o + 16 <= cap` (`cap` is a multiple of 16 and `o < len <= cap`).
                let x = unsafe { _mm512_loadu_si512(cell.data.as_ptr().add((g * cap + o) * GROUP).cast()) };
                for j in 0..ROWS {
                    // SAFETY: `g * 4 + 4 <= groups * 4 <= q[j].len()` (checked).
                    let b = unsafe { (q[j].as_ptr().add(g * GROUP) as *const i32).read_unaligned() };
                    acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_set1_epi32(b), x);
                }
            }
            // SAFETY: `o + 16 <= cap <= sums.len()` (checked).
            let sums = unsafe { _mm512_loadu_si512(cell.sums.as_ptr().add(o).cast()) };
            let corr = _mm512_slli_epi32::<7>(sums);
            for j in 0..ROWS {
                let v = _mm512_sub_epi32(acc[j], corr);
                // SAFETY: `j * cap + o + 16 <= ROWS * cap <= out.len()` (checked).
                unsafe { _mm512_storeu_si512(out.as_mut_ptr().add(j * cap + o).cast(), v) };
                let m = _mm512_mask_cmpgt_epi32_mask(live, v, t[j]);
                masks[j * (cap / BLOCK) + o / BLOCK] = m;
                any[j] |= m;
            }
            o += BLOCK;
        }
        any.map(|m| m != 0)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// `vpmaddubsw` sums two `u8 x i8` products into a saturating i16: queries of at
    /// most 63 in magnitude, stored `+ 64` (at most 127), keep that sum exact.
    pub const CODE: Code = Code { qmax: 63, offset: 64 };

    pub fn scan(
        q: [&[u8]; ROWS],
        cell: &CellQ,
        cap: usize,
        len: usize,
        thr: &[i32; ROWS],
        out: &mut [i32],
        masks: &mut [u16],
    ) -> [bool; ROWS] {
        let groups = check(&q, cell, cap, len, out, masks);
        masks[..ROWS * (cap / BLOCK)].fill(0);
        // Query bytes above 127 (not from `encode_query`) could saturate a pair sum:
        // wrong scores, never a wrong access.
        // SAFETY: `kernel()` hands this entry out only after detecting avx2; `check`
        // proved the bounds `inner` relies on.
        unsafe { inner(q, cell, cap, len, groups, thr, out, masks) }
    }

    /// Rows per pass: `R x 2` accumulators, two key vectors, a broadcast and the
    /// constant fit AVX2's 16 registers.
    const R: usize = 4;

    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn inner(
        q: [&[u8]; ROWS],
        cell: &CellQ,
        cap: usize,
        len: usize,
        groups: usize,
        thr: &[i32; ROWS],
        out: &mut [i32],
        masks: &mut [u16],
    ) -> [bool; ROWS] {
        let mut any = [0u16; ROWS];
        let ones = _mm256_set1_epi16(1);
        let mut o = 0;
        while o < len {
            // Lanes past `len` (padding children) never count as hits.
            let live: u16 = if len - o >= BLOCK { 0xFFFF } else { (1u16 << (len - o)) - 1 };
            // SAFETY: `o + 16 <= cap <= sums.len()` (checked).
            let sums = unsafe {
                let p = cell.sums.as_ptr().add(o);
                [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(8).cast())]
            };
            let corr = [_mm256_slli_epi32::<6>(sums[0]), _mm256_slli_epi32::<6>(sums[1])];
            for p in (0..ROWS).step_by(R) {
                let mut acc = [[_mm256_setzero_si256(); 2]; R];
                for g in 0..groups {
                    // SAFETY: `(g * cap + o) * 4 + 64 <= groups * cap * 4 = data.len()`
                    // because `o + 16 <= cap` (`cap` is a multiple of 16 and `o < len <= cap`).
                    let x = unsafe {
                        let at = cell.data.as_ptr().add((g * cap + o) * GROUP);
                        [_mm256_loadu_si256(at.cast()), _mm256_loadu_si256(at.add(32).cast())]
                    };
                    for j in 0..R {
                        // SAFETY: `g * 4 + 4 <= groups * 4 <= q[j].len()` (checked).
                        let b = unsafe { (q[p + j].as_ptr().add(g * GROUP) as *const i32).read_unaligned() };
                        let b = _mm256_set1_epi32(b);
                        for h in 0..2 {
                            let pairs = _mm256_maddubs_epi16(b, x[h]);
                            acc[j][h] = _mm256_add_epi32(acc[j][h], _mm256_madd_epi16(pairs, ones));
                        }
                    }
                }
                for j in 0..R {
                    let mut m = 0u16;
                    for h in 0..2 {
                        let v = _mm256_sub_epi32(acc[j][h], corr[h]);
                        // SAFETY: `(p + j) * cap + o + 16 <= ROWS * cap <= out.len()` (checked).
                        unsafe { _mm256_storeu_si256(out.as_mut_ptr().add((p + j) * cap + o + 8 * h).cast(), v) };
                        let gt = _mm256_cmpgt_epi32(v, _mm256_set1_epi32(thr[p + j]));
                        m |= (_mm256_movemask_ps(_mm256_castsi256_ps(gt)) as u16) << (8 * h);
                    }
                    m &= live;
                    masks[(p + j) * (cap / BLOCK) + o / BLOCK] = m;
                    any[p + j] |= m;
                }
            }
            o += BLOCK;
        }
        any.map(|m| m != 0)
    }
}

#[cfg(target_arch = "aarch64")]
mod sdot {
    use super::*;
    use std::arch::aarch64::*;

    pub fn scan(
        q: [&[u8]; ROWS],
        cell: &CellQ,
        cap: usize,
        len: usize,
        thr: &[i32; ROWS],
        out: &mut [i32],
        masks: &mut [u16],
    ) -> [bool; ROWS] {
        let groups = check(&q, cell, cap, len, out, masks);
        masks[..ROWS * (cap / BLOCK)].fill(0);
        // SAFETY: `kernel()` hands this entry out only after detecting neon and
        // dotprod; `check` proved the bounds `inner` relies on.
        unsafe { inner(q, cell, cap, len, groups, thr, out, masks) }
    }

    /// `acc + (4-byte dot products of a and b per 32-bit lane)`: ARMv8.2 `sdot` (its
    /// intrinsic is not stable Rust yet).
    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    fn dot4(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let mut acc = acc;
        // SAFETY: a register-only instruction of a feature this function enables.
        unsafe {
            std::arch::asm!(
                "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
                acc = inout(vreg) acc,
                a = in(vreg) a,
                b = in(vreg) b,
                options(pure, nomem, nostack, preserves_flags)
            );
        }
        acc
    }

    #[target_feature(enable = "neon,dotprod")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn inner(
        q: [&[u8]; ROWS],
        cell: &CellQ,
        cap: usize,
        len: usize,
        groups: usize,
        thr: &[i32; ROWS],
        out: &mut [i32],
        masks: &mut [u16],
    ) -> [bool; ROWS] {
        let mut any = [0u16; ROWS];
        // SAFETY: reads the four elements of a local array.
        let bit: uint32x4_t = unsafe { vld1q_u32([1u32, 2, 4, 8].as_ptr()) };
        // Four children (16 bytes: four coordinates each) per step.
        let mut o = 0;
        while o < len {
            let mut acc = [vdupq_n_s32(0); ROWS];
            for g in 0..groups {
                // SAFETY: `(g * cap + o) * 4 + 16 <= groups * cap * 4 = data.len()`
                // as `o + 4 <= cap` (`cap` a multiple of 16, `o` of 4, `o < len`).
                let x = unsafe { vld1q_s8(cell.data.as_ptr().add((g * cap + o) * GROUP)) };
                for j in 0..ROWS {
                    // SAFETY: `g * 4 + 4 <= groups * 4 <= q[j].len()` (checked).
                    let b = unsafe { (q[j].as_ptr().add(g * GROUP) as *const u32).read_unaligned() };
                    // Bytes are `Q + 128`: flipping the top bit gives `Q` as i8.
                    let qv = vreinterpretq_s8_u32(vdupq_n_u32(b ^ 0x8080_8080));
                    acc[j] = dot4(acc[j], x, qv);
                }
            }
            let live = (len - o).min(4);
            let live_bits: u16 = (1 << live) - 1;
            for j in 0..ROWS {
                // SAFETY: `j * cap + o + 4 <= ROWS * cap <= out.len()` (checked).
                unsafe { vst1q_s32(out.as_mut_ptr().add(j * cap + o), acc[j]) };
                let gt = vcgtq_s32(acc[j], vdupq_n_s32(thr[j]));
                let m = (vaddvq_u32(vandq_u32(gt, bit)) as u16) & live_bits;
                masks[j * (cap / BLOCK) + o / BLOCK] |= m << (o % BLOCK);
                any[j] |= m;
            }
            o += 4;
        }
        any.map(|m| m != 0)
    }
}

/// Every int8 kernel this CPU runs, fastest first.
fn kernels_here() -> Vec<(ScanFn, Code)> {
    #[allow(unused_mut)]
    let mut k: Vec<(ScanFn, Code)> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
        {
            k.push((vnni::scan, FULL));
        }
        if is_x86_feature_detected!("avx2") {
            k.push((avx2::scan, avx2::CODE));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") && std::arch::is_aarch64_feature_detected!("dotprod") {
            k.push((sdot::scan, FULL));
        }
    }
    k
}

fn kernel() -> Option<(ScanFn, Code)> {
    static K: OnceLock<Option<(ScanFn, Code)>> = OnceLock::new();
    *K.get_or_init(|| kernels_here().first().copied())
}

/// Whether this CPU has an int8 dot-product kernel (else the index scores in f32).
pub fn available() -> bool {
    kernel().is_some()
}

/// The query code of the picked kernel.
pub fn code() -> Code {
    kernel().map_or(FULL, |k| k.1)
}

/// Scores [`ROWS`] encoded queries against a cell (see [`ScanFn`]); the scalar
/// kernel where the CPU has no dot-product instruction. Panics if a slice is short.
#[inline]
pub fn scan_rows(
    q: [&[u8]; ROWS],
    cell: &CellQ,
    cap: usize,
    len: usize,
    thr: &[i32; ROWS],
    out: &mut [i32],
    masks: &mut [u16],
) -> [bool; ROWS] {
    kernel().map_or(scan_scalar as ScanFn, |k| k.0)(q, cell, cap, len, thr, out, masks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::knn::simd::SplitMix64;

    fn cell(d: usize, cap: usize, len: usize, seed: u64) -> (Vec<f32>, CellQ) {
        let mut r = SplitMix64::new(seed);
        let mut soa = vec![0.0f32; (d + 1) * cap];
        for c in 0..d {
            for i in 0..len {
                soa[c * cap + i] = (r.normal() * (1.0 + i as f64 * 0.3)) as f32;
            }
        }
        let q = CellQ::quantize(&soa, d, cap, len).expect("finite");
        (soa, q)
    }

    #[test]
    fn every_kernel_matches_the_scalar_reference_at_the_slice_bounds() {
        // The picked kernel and every other one this CPU runs (AVX2 on a VNNI machine).
        let mut all = kernels_here();
        all.push((scan_scalar as ScanFn, code()));
        for (kernel, code) in all {
            kernel_matches_the_reference(kernel, code);
        }
    }

    fn kernel_matches_the_reference(kernel: ScanFn, code: Code) {
        for d in [1, 3, 4, 7, 64, 65] {
            for (cap, len) in [(BLOCK, 1), (BLOCK, BLOCK), (2 * BLOCK, BLOCK + 3), (3 * BLOCK, 3 * BLOCK)] {
                let (_, c) = cell(d, cap, len, d as u64 * 31 + len as u64);
                let mut r = SplitMix64::new(7);
                // Exactly-sized query rows and output.
                let rows: Vec<Vec<u8>> = (0..ROWS)
                    .map(|_| {
                        let x: Vec<f32> = (0..d).map(|_| r.normal() as f32).collect();
                        let mut b = vec![0u8; groups(d) * GROUP];
                        encode_query_as(code, &x, &mut b).unwrap();
                        assert!(b.iter().all(|&v| (v as i32 - code.offset).abs() <= code.qmax));
                        b
                    })
                    .collect();
                let qs: [&[u8]; ROWS] = std::array::from_fn(|j| &rows[j][..]);
                let thr: [i32; ROWS] = std::array::from_fn(|j| [i32::MIN, 0, 500, i32::MAX][j % 4]);
                let (mut want, mut got) = (vec![0; ROWS * cap], vec![0; ROWS * cap]);
                // Exactly-sized masks, dirty on entry.
                let (mut mw, mut mg) = (vec![0xAAAA; ROWS * cap / BLOCK], vec![0x5555; ROWS * cap / BLOCK]);
                let hw = scan_reference(code, qs, &c, cap, len, &thr, &mut want, &mut mw);
                let hg = kernel(qs, &c, cap, len, &thr, &mut got, &mut mg);
                assert_eq!(mg, mw, "masks d {d} len {len}");
                for j in 0..ROWS {
                    for i in 0..cap {
                        let bit = mw[j * cap / BLOCK + i / BLOCK] >> (i % BLOCK) & 1 == 1;
                        assert_eq!(bit, i < len && want[j * cap + i] > thr[j], "mask bit {i} of row {j}");
                    }
                    assert_eq!(&got[j * cap..j * cap + len], &want[j * cap..j * cap + len], "d {d} len {len}");
                    assert_eq!(hg[j], hw[j], "hits d {d} len {len} row {j}");
                }
                assert!(!hw[3] && hw[0], "thresholds i32::MAX / MIN");
            }
        }
    }

    #[test]
    fn an_int8_kernel_is_picked_where_the_run_expects_one() {
        // `targets/cross.sh ... --extra-cpu` sets this for a CPU with a dot product
        // (CI: Cortex-A76), so the tests above cannot pass by checking only the
        // scalar reference against itself.
        if std::env::var_os("FLOE_EXPECT_INT8").is_some() {
            assert!(available(), "no int8 kernel picked on a CPU expected to have one");
        }
    }

    #[test]
    fn the_threshold_never_drops_a_key_whose_exact_dot_beats_the_bar() {
        // Full int8 queries (VNNI, sdot) and AVX2's 7-bit ones.
        for code in [FULL, Code { qmax: 63, offset: 64 }] {
            threshold_keeps_every_key_above_the_bar(code);
        }
    }

    fn threshold_keeps_every_key_above_the_bar(code: Code) {
        // Keys of very different norms in one cell, queries of several scales: every
        // key whose exact f32 dot is above the bar must pass its int8 test.
        let (d, cap, len) = (64, 4 * BLOCK, 4 * BLOCK - 5);
        let (soa, c) = cell(d, cap, len, 11);
        let mut r = SplitMix64::new(3);
        let mut checked = 0;
        for scale in [1e-3f32, 1.0, 40.0] {
            let rows: Vec<Vec<f32>> = (0..ROWS).map(|_| (0..d).map(|_| r.normal() as f32 * scale).collect()).collect();
            let enc: Vec<(Vec<u8>, QueryTerms)> = rows
                .iter()
                .map(|x| {
                    let mut b = vec![0u8; groups(d) * GROUP];
                    let t = encode_query_as(code, x, &mut b).unwrap();
                    (b, t)
                })
                .collect();
            let qs: [&[u8]; ROWS] = std::array::from_fn(|j| &enc[j].0[..]);
            let mut out = vec![0; ROWS * cap];
            let thr = [i32::MIN; ROWS];
            let mut masks = vec![0; ROWS * cap / BLOCK];
            assert_eq!(scan_reference(code, qs, &c, cap, len, &thr, &mut out, &mut masks), [true; ROWS]);
            for (j, x) in rows.iter().enumerate() {
                let dots: Vec<f32> = (0..len).map(|i| (0..d).map(|k| x[k] * soa[k * cap + i]).sum()).collect();
                for &bar in &dots {
                    let t = Bounds::new(&enc[j].1, &c).threshold(bar);
                    for i in 0..len {
                        if dots[i] >= bar {
                            assert!(out[j * cap + i] > t, "scale {scale} row {j} key {i}: dropped");
                            checked += 1;
                        }
                    }
                }
                // The filter is useful: with the best key's dot as the bar, most keys fail.
                // Each key's exact dot lies within its bounds, and a score above
                // `lower_bar(bar)` has a lower bound above `bar`.
                let b = Bounds::new(&enc[j].1, &c);
                for (i, &dot) in dots.iter().enumerate() {
                    let x = out[j * cap + i];
                    assert!(b.lower(x) <= dot && dot <= b.upper(x), "scale {scale} key {i}: {dot} outside its bounds");
                    for &bar in &dots {
                        if x as f64 > b.lower_bar(bar) {
                            assert!(b.lower(x) > bar);
                        }
                    }
                }
                let best = dots.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let t = Bounds::new(&enc[j].1, &c).threshold(best);
                let pass = (0..len).filter(|&i| out[j * cap + i] > t).count();
                assert!(pass < len / 2, "scale {scale}: {pass} of {len} pass the best key's bar");
            }
        }
        assert!(checked > 1000);
        let mut bytes = vec![0u8; groups(d) * GROUP];
        let b = Bounds::new(&encode_query_as(code, &vec![1.0; d], &mut bytes).unwrap(), &c);
        assert_eq!(b.threshold(f32::NEG_INFINITY), i32::MIN);
        assert_eq!(b.lower_bar(f32::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn set_and_swap_remove_keep_the_copy_equal_to_a_fresh_quantization() {
        let (d, cap, len) = (9, BLOCK, 10);
        let (mut soa, mut c) = cell(d, cap, len, 5);
        // A key inside the scale is written in place.
        let key: Vec<f32> = (0..d).map(|i| (i as f32 - 4.0) * 0.1).collect();
        assert!(c.set(len, &key, cap));
        (0..d).for_each(|i| soa[i * cap + len] = key[i]);
        // Move child `len` to 2 (swap-remove of 2 with `len` as the last).
        c.swap_remove(2, len, cap);
        (0..d).for_each(|i| {
            soa[i * cap + 2] = soa[i * cap + len];
            soa[i * cap + len] = 0.0;
        });
        let fresh = CellQ::quantize(&soa, d, cap, len).unwrap();
        assert_eq!(c.data, fresh.data);
        assert_eq!(c.sums, fresh.sums);
        assert!(c.max_kn >= fresh.max_kn && c.max_fn >= fresh.max_fn);
        // A key beyond the scale, or not finite, asks for a re-quantization.
        assert!(!c.set(3, &vec![1e6; d], cap));
        assert!(!c.set(3, &vec![f32::NAN; d], cap));
        assert!(CellQ::quantize(&[f32::INFINITY; BLOCK], 1, BLOCK, 1).is_none());
    }

    #[test]
    #[should_panic]
    fn a_short_query_row_panics_instead_of_reading_past_it() {
        let (_, c) = cell(8, BLOCK, BLOCK, 1);
        let short = [0u8; 7];
        let mut out = vec![0; ROWS * BLOCK];
        scan_rows([&short[..]; ROWS], &c, BLOCK, BLOCK, &[0; ROWS], &mut out, &mut [0; ROWS]);
    }
}
