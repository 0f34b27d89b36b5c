//! The blocked GEMM driver shared by every ISA (BLIS loop order): for each
//! `NC`-wide block of columns and `KC`-deep slice of the inner dimension, B is
//! packed into `NR`-wide panels (or taken pre-packed, see [`PackedB`]); for each
//! `MC`-tall block of rows, A is packed into `MR`-tall panels; the micro-kernel
//! then computes each `MR x NR` tile and the driver stores it into C, applying the
//! epilogue on the last slice. Packing zero-pads ragged edges, so micro-kernels
//! only ever see full tiles. Packing buffers are per thread and reused, so a call
//! allocates nothing once a thread has seen its largest problem.

use super::{CBlock, Epilogue, MatRef, MicroKernel, SKINNY_ROWS};
use std::cell::RefCell;

/// Depth of a packed slice (the A panel `MR x KC` and B panel `KC x NR` stay in L1).
pub(crate) const KC: usize = 256;
/// Rows of A packed at once (an `MC x KC` block stays in L2).
const MC: usize = 144;
/// Columns of B packed at once.
const NC: usize = 2048;
/// A is read in place (not packed) when a block of C is at most this many
/// `NR`-wide panels wide (and the micro-kernel can read row-major A).
const DIRECT_MAX_PANELS: usize = 8;

thread_local! {
    /// Packing buffers of this thread: (A panels, B panels, one output tile).
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// B weights packed once for one micro-kernel: `KC`-deep slices, each split into
/// `NR`-wide panels laid out `[p][j]`, zero-padded past column `n`.
#[derive(Clone, Debug)]
pub struct PackedB {
    kernel: MicroKernel,
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs `b` (`k x n`, any strides) for `kernel`.
    pub fn new(kernel: MicroKernel, b: MatRef<'_>) -> PackedB {
        let mut packed = PackedB { kernel, k: 0, n: 0, data: Vec::new() };
        packed.repack(kernel, b);
        packed
    }

    /// Packs `b` in place of what this held, reusing its memory (no allocation once
    /// it has held a matrix as large): for operands packed once and reused across
    /// many products, such as an attention key block.
    pub fn repack(&mut self, kernel: MicroKernel, b: MatRef<'_>) {
        let (k, n, nr) = (b.rows, b.cols, kernel.nr);
        self.data.clear();
        self.data.reserve(k * n.div_ceil(nr) * nr);
        for p0 in (0..k).step_by(KC) {
            append_packed_b(b, p0, KC.min(k - p0), 0, n, nr, &mut self.data);
        }
        (self.kernel, self.k, self.n) = (kernel, k, n);
    }

    pub fn kernel(&self) -> MicroKernel {
        self.kernel
    }

    /// Rows (the inner dimension of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Bytes held (for memory reports).
    pub fn size_bytes(&self) -> usize {
        self.data.len() * 4
    }

    fn padded_n(&self) -> usize {
        self.n.div_ceil(self.kernel.nr) * self.kernel.nr
    }

    /// The `kc x nr` panels of slice `p0` starting at panel `jp`.
    pub(crate) fn panels(&self, p0: usize, kc: usize, jp: usize) -> &[f32] {
        &self.data[p0 * self.padded_n() + jp * kc * self.kernel.nr..]
    }

    /// Element (p, j) of the original matrix (for the skinny path).
    pub(super) fn panel_row(&self, p: usize, jp: usize) -> &[f32] {
        let nr = self.kernel.nr;
        let (p0, kc) = ((p / KC) * KC, KC.min(self.k - (p / KC) * KC));
        &self.panels(p0, kc, jp)[(p - p0) * nr..(p - p0 + 1) * nr]
    }
}

/// Where B comes from for one call.
#[derive(Clone, Copy, Debug)]
pub enum BSource<'a> {
    Mat(MatRef<'a>),
    /// Pre-packed, starting at panel `.1` (a column block split off for a thread).
    Packed(&'a PackedB, usize),
}

impl BSource<'_> {
    /// Row `p`, columns `j0..j0 + len` (contiguous source rows only).
    pub(crate) fn row(&self, p: usize, j0: usize, len: usize, out: &mut [f32]) {
        match *self {
            BSource::Mat(b) if b.col_stride == 1 => {
                out[..len].copy_from_slice(&b.data[p * b.row_stride + j0..][..len]);
            }
            BSource::Mat(b) => out[..len].iter_mut().enumerate().for_each(|(j, o)| *o = b.at(p, j0 + j)),
            BSource::Packed(pb, jp0) => {
                let nr = pb.kernel.nr;
                let mut j = 0;
                while j < len {
                    let col = j0 + j;
                    let (panel, within) = (jp0 + col / nr, col % nr);
                    let take = (nr - within).min(len - j);
                    out[j..j + take].copy_from_slice(&pb.panel_row(p, panel)[within..within + take]);
                    j += take;
                }
            }
        }
    }
}

/// A packed once for one micro-kernel: per `KC`-deep slice, all rows in `MR`-tall
/// panels laid out `[p][i]` (the layout the driver packs A into for every call).
/// For a left operand reused across many products (attention's query block).
#[derive(Clone, Debug, Default)]
pub struct PackedA {
    mr: usize,
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PackedA {
    /// Packs `a` (`m x k`, any strides) for `kernel`, reusing this value's memory.
    pub fn repack(&mut self, kernel: MicroKernel, a: MatRef<'_>) {
        let (m, k, mr) = (a.rows, a.cols, kernel.mr);
        let padded = m.div_ceil(mr) * mr;
        self.data.clear();
        self.data.resize(padded * k, 0.0);
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            fill_a_panels(a, 0, m, p0, kc, mr, &mut self.data[p0 * padded..p0 * padded + padded * kc]);
        }
        (self.mr, self.m, self.k) = (mr, m, k);
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    /// Panel height (the `MR` of the kernel it was packed for).
    pub fn mr(&self) -> usize {
        self.mr
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// The panels of rows `i0..` (a multiple of `MR`) in slice `p0` of depth `kc`.
    pub(crate) fn panels(&self, i0: usize, p0: usize, kc: usize) -> &[f32] {
        let padded = self.m.div_ceil(self.mr) * self.mr;
        &self.data[p0 * padded + i0 * kc..]
    }
}

/// Where A comes from for one call.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ASource<'a> {
    Mat(MatRef<'a>),
    Packed(&'a PackedA),
}

/// Packs rows `i0..i0+mc`, depth `p0..p0+kc` of A into `MR`-tall panels,
/// each laid out `[p][i]` (zero rows past the edge).
fn pack_a(a: MatRef<'_>, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(mc.div_ceil(mr) * mr * kc, 0.0);
    fill_a_panels(a, i0, mc, p0, kc, mr, out);
}

/// Tallest micro-tile packed with the row-interleaving loop.
const MAX_MR: usize = 16;

/// [`pack_a`] into a zeroed slice of exactly `mc.div_ceil(mr) * mr * kc` floats.
fn fill_a_panels(a: MatRef<'_>, i0: usize, mc: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
    for (panel, ir) in out.chunks_exact_mut(kc * mr).zip((0..mc).step_by(mr)) {
        let h = mr.min(mc - ir);
        if a.col_stride == 1 && h <= MAX_MR {
            // Row-major A: walk the `h` rows side by side, writing the panel in order.
            let mut rows: [&[f32]; MAX_MR] = [&[]; MAX_MR];
            for (i, r) in rows[..h].iter_mut().enumerate() {
                *r = &a.data[(i0 + ir + i) * a.row_stride + p0..][..kc];
            }
            for (p, dst) in panel.chunks_exact_mut(mr).enumerate() {
                for (d, r) in dst[..h].iter_mut().zip(&rows[..h]) {
                    *d = r[p];
                }
            }
        } else if a.col_stride == 1 {
            for i in 0..h {
                let row = &a.data[(i0 + ir + i) * a.row_stride + p0..][..kc];
                for (dst, &v) in panel[i..].iter_mut().step_by(mr).zip(row) {
                    *dst = v;
                }
            }
        } else if a.row_stride == 1 {
            // A is a transposed view: each depth step's rows are contiguous.
            for (p, dst) in panel.chunks_exact_mut(mr).enumerate() {
                let start = (p0 + p) * a.col_stride + i0 + ir;
                copy_row(&a.data[start..start + h], &mut dst[..h]);
            }
        } else {
            for (p, dst) in panel.chunks_exact_mut(mr).enumerate() {
                for (i, d) in dst[..h].iter_mut().enumerate() {
                    *d = a.at(i0 + ir + i, p0 + p);
                }
            }
        }
    }
}

/// Packs depth `p0..p0+kc`, columns `j0..j0+nc` of B into `NR`-wide panels,
/// each laid out `[p][j]` (zero columns past the edge). The buffer only grows, so
/// a warm call neither allocates nor clears it.
fn pack_b(b: MatRef<'_>, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, out: &mut Vec<f32>) {
    let need = nc.div_ceil(nr) * nr * kc;
    if out.len() < need {
        out.resize(need, 0.0);
    }
    fill_packed_b(b, p0, kc, j0, nc, nr, &mut out[..need]);
}

/// [`pack_b`] appending to `out`.
fn append_packed_b(b: MatRef<'_>, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, out: &mut Vec<f32>) {
    let start = out.len();
    out.resize(start + nc.div_ceil(nr) * nr * kc, 0.0);
    fill_packed_b(b, p0, kc, j0, nc, nr, &mut out[start..]);
}

/// [`pack_b`] into a slice of exactly `nc.div_ceil(nr) * nr * kc` floats (every
/// element written, padding included).
fn fill_packed_b(b: MatRef<'_>, p0: usize, kc: usize, j0: usize, nc: usize, nr: usize, out: &mut [f32]) {
    for (panel, jr) in out.chunks_exact_mut(kc * nr).zip((0..nc).step_by(nr)) {
        let w = nr.min(nc - jr);
        for (p, dst) in panel.chunks_exact_mut(nr).enumerate() {
            if b.col_stride == 1 {
                let at = (p0 + p) * b.row_stride + j0 + jr;
                copy_row(&b.data[at..at + w], &mut dst[..w]);
            } else {
                dst[..w].iter_mut().enumerate().for_each(|(j, d)| *d = b.at(p0 + p, j0 + jr + j));
            }
            dst[w..].iter_mut().for_each(|d| *d = 0.0);
        }
    }
}

/// `dst.copy_from_slice(src)`, inlined for the usual panel widths: a `memcpy`
/// call per short row costs more than the copy.
#[inline(always)]
fn copy_row(src: &[f32], dst: &mut [f32]) {
    fn fixed<const N: usize>(src: &[f32], dst: &mut [f32]) -> bool {
        match (<&[f32; N]>::try_from(src), <&mut [f32; N]>::try_from(dst)) {
            (Ok(s), Ok(d)) => {
                *d = *s;
                true
            }
            _ => false,
        }
    }
    let done = match src.len() {
        32 => fixed::<32>(src, dst),
        16 => fixed::<16>(src, dst),
        12 => fixed::<12>(src, dst),
        8 => fixed::<8>(src, dst),
        6 => fixed::<6>(src, dst),
        _ => false,
    };
    if !done {
        dst.copy_from_slice(src);
    }
}

/// `c = epilogue(alpha * a @ b + beta * c)` on one block of C (`a.rows x b.cols`).
pub(crate) fn gemm(
    kernel: MicroKernel,
    alpha: f32,
    a: ASource<'_>,
    b: BSource<'_>,
    beta: f32,
    c: &mut CBlock<'_>,
    epi: &Epilogue<'_>,
) {
    let k = match a {
        ASource::Mat(am) => am.cols,
        ASource::Packed(pa) => pa.k,
    };
    let (m, n) = (c.rows, c.cols);
    let (mr, nr) = (kernel.mr, kernel.nr);
    // One depth slice and beta = 0: each tile is stored once, no need to clear C first.
    let overwrite = beta == 0.0 && k > 0 && k <= KC;
    if !overwrite {
        c.scale(beta);
    }
    if k == 0 {
        c.finish_all(epi);
        return;
    }
    // A row-major A whose panels meet only a few B panels is read in place:
    // packing it would cost about as much as the product.
    let direct = match (a, kernel.run_rows) {
        (ASource::Mat(am), Some(f)) if am.col_stride == 1 && n.min(NC).div_ceil(nr) <= DIRECT_MAX_PANELS => {
            Some((am, f))
        }
        _ => None,
    };
    // A ragged last row panel of at most SKINNY_ROWS rows of a row-major A runs
    // as a few-rows tile read in place, not as a mostly empty full tile.
    let few = match (a, kernel.run_few) {
        (ASource::Mat(am), Some(f)) if am.col_stride == 1 => Some((am, f)),
        _ => None,
    };
    SCRATCH.with_borrow_mut(|(pa, pb, tile)| {
        tile.resize(mr * nr, 0.0);
        let mcb = (MC / mr * mr).max(mr);
        for j0 in (0..n).step_by(NC) {
            let nc = NC.min(n - j0);
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                let last = p0 + kc == k;
                let panels: &[f32] = match b {
                    BSource::Mat(bm) => {
                        pack_b(bm, p0, kc, j0, nc, nr, pb);
                        pb
                    }
                    BSource::Packed(packed, jp0) => packed.panels(p0, kc, jp0 + j0 / nr),
                };
                for i0 in (0..m).step_by(mcb) {
                    let mc = mcb.min(m - i0);
                    let tail = mc % mr;
                    let few_tail = few.is_some() && tail > 0 && tail <= SKINNY_ROWS;
                    // Rows that go through packed panels (the others are read in place).
                    let packed_rows = if few_tail { mc - tail } else { mc };
                    // Full panels of a row-major A read in place; only a ragged last one is packed.
                    let full = if direct.is_some() { mc / mr * mr } else { 0 };
                    let a_panels: &[f32] = match a {
                        ASource::Mat(am) if direct.is_some() => {
                            if packed_rows > full {
                                pack_a(am, i0 + full, packed_rows - full, p0, kc, mr, pa);
                            }
                            pa
                        }
                        ASource::Mat(am) => {
                            pack_a(am, i0, packed_rows, p0, kc, mr, pa);
                            pa
                        }
                        ASource::Packed(packed) => packed.panels(i0, p0, kc),
                    };
                    for (jp, jr) in (0..nc).step_by(nr).enumerate() {
                        let bp = &panels[jp * kc * nr..(jp + 1) * kc * nr];
                        let w = nr.min(nc - jr);
                        for (ip, ir) in (0..mc).step_by(mr).enumerate() {
                            match (direct, few) {
                                (_, Some((am, few_kernel))) if few_tail && ir + mr > mc => {
                                    let lda = am.row_stride;
                                    few_kernel(tail, kc, &am.data[(i0 + ir) * lda + p0..], lda, bp, tile);
                                }
                                (Some((am, rows_kernel)), _) if ir < full => {
                                    let lda = am.row_stride;
                                    rows_kernel(kc, &am.data[(i0 + ir) * lda + p0..], lda, bp, tile);
                                }
                                _ => {
                                    let ip = ip - full / mr;
                                    (kernel.run)(kc, &a_panels[ip * kc * mr..(ip + 1) * kc * mr], bp, tile);
                                }
                            }
                            let h = mr.min(mc - ir);
                            if overwrite && !epi.is_none() {
                                let (row, col) = (i0 + ir, j0 + jr);
                                epi.finish_tile(row, col, alpha, &mut tile[..h * nr], nr, w, c);
                                continue;
                            }
                            for i in 0..h {
                                let (row, ld) = (i0 + ir + i, c.ld);
                                let crow = &mut c.row_mut(row)[j0 + jr..j0 + jr + w];
                                let t = &mut tile[i * nr..i * nr + w];
                                if overwrite && epi.is_none() {
                                    crow.iter_mut().zip(t.iter()).for_each(|(cv, &tv)| *cv = alpha * tv);
                                } else if overwrite {
                                    t.iter_mut().for_each(|t| *t *= alpha);
                                    epi.finish(row, j0 + jr, ld, t, crow);
                                } else if last && !epi.is_none() {
                                    t.iter_mut().zip(crow.iter()).for_each(|(t, &cv)| *t = alpha * *t + cv);
                                    epi.finish(row, j0 + jr, ld, t, crow);
                                } else {
                                    crow.iter_mut().zip(t.iter()).for_each(|(cv, &tv)| *cv += alpha * tv);
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}
