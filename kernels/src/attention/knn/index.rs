//! The Prioritized-DCI index of one (batch, kv-head) (../shared/ALGORITHMS.md
//! sections 1.2-1.4): keys under the MIPS -> nearest-neighbour transform, a tree of
//! `levels` levels whose cells are "the children of one parent", and per cell
//! `L_c * m` simple indices (children sorted by one random projection each).
//!
//! - **Transform** (1.2). `M^2 >= max ||k||^2`; a key becomes `[k; a_k]` with
//!   `a_k = sqrt(M^2 - ||k||^2)`, so every key has norm `M`, and a query `[q/|q|; 0]`.
//!   Key-key distances (tree construction) are `||T k1 - T k2||^2 / 2 = M^2 - k1.k2 -
//!   a_1 a_2`; query ranking uses the exact `q . k` (same order as the transformed
//!   distance for a fixed query).
//! - **Build** (1.3). Levels are drawn with promotion probability `n^(-1/levels)`
//!   (redrawn until every level is populated, at most 16 times, after which keys of
//!   the fullest level are moved into the empty ones). Top-level keys form the root cell; every key of level `l` is
//!   attached to the parent found by a DCI search (construction config) over levels
//!   above `l`.
//! - **Cell search** (1.3). IceFormer pulls `CLOSEST = 128` ids at a time from the
//!   highest-priority simple index, so a cell of at most 128 children is entirely
//!   pulled before the stopping rule is first checked: the search computes every
//!   child's exact score. We do that directly, as one transposed block scan
//!   ([`super::simd::scan_cell`]). Bigger cells, and every construction search, run
//!   the prioritized traversal one projection at a time: binary-search the query's
//!   projection in each simple index, walk outwards, pop from the composite's
//!   simple index with the smallest gap; a child pulled from all `m` simple indices
//!   of one composite is a candidate and gets its exact distance; stop once there
//!   are `want` candidates and either `num_projs_to_visit` projections were visited
//!   or `num_points_to_retrieve` candidates found.
//! - **Query** (1.3, `cumu = true`). Search the root, keep the best `field_of_view`
//!   parents (more if their subtrees hold fewer than `k` keys, and at least
//!   `query_prop_field_of_view` of the candidates when set), search their cells,
//!   keep the best `field_of_view` again, ..., and at the finest level keep the best
//!   `k`. Finest-level cells are scored whole whatever their size (ours: for a
//!   cell above `CLOSEST` IceFormer stops after `query_prop_to_retrieve` = 80% of
//!   it; scoring all of it is a superset, never worse, and a scan is far cheaper
//!   than the projection walk; keys with very different norms make such cells). Every key whose exact score was computed competes for the final top `k`
//!   (IceFormer merges the expanded parents; scoring every scanned key is a
//!   superset, never worse, at no extra cost). [`KnnIndex::query_batch`] runs the
//!   same search for a block of queries: upper levels scored by one GEMM, the finest
//!   level cell by cell for all the block's rows that expand the cell (cache reuse).
//! - **Construction scan** (`KnnParams::construction_scan`, ours, off by default):
//!   score every child of the visited cells when looking for a parent, as the query
//!   does, instead of the prioritized search stopping at `ceil(0.002 * cell)`
//!   candidates. On unclustered keys IceFormer's construction picks poor parents
//!   (measured: median parent rank 17 of 240 at n = 4096, d = 64), which caps recall.
//! - **Insertion** (1.4). Key `i` goes to level `l`, the largest with `r^l | i`
//!   (`r = ceil(n_total^(1/levels))`, deterministic as IceFormer's promotion ratio),
//!   raised while the level below it would have no parent. Its parent comes from a
//!   construction search. A key placed above level 0 adopts every key of the level
//!   below that is closer to it than to its current parent (re-parenting).
//! - **Max-norm rule** (1.4, ours). The transform needs `M^2 >= ||k||^2` for every
//!   key. `build` takes an optional bound; a later key above it triggers a rebuild
//!   of the whole index with `M^2 = 1.25 * ||k||^2` (the headroom makes repeated
//!   rebuilds under slowly growing norms geometric, so rare). Results stay exact
//!   functions of the key set and the bound.

use super::params::KnnParams;
use super::quant::{self, Bounds, CellQ, GROUP};
use super::simd::{count_at_least, dot, dots, max_index, min_max, scan_cell, scan_cell_rows, SplitMix64, BLOCK, ROWS};
use super::TopK;
use crate::attention::Rows;
use crate::gemm::{self, MatRef};
use std::cmp::Ordering;

/// Ids pulled per step from a simple index in IceFormer (`CLOSEST`): cells up to this
/// size are scored exhaustively (see the module doc).
pub const CLOSEST: usize = 128;

/// Query rows per block of [`KnnIndex::query_batch`]: their heaps (`k` ids and dots
/// each), rows and upper-level scores stay in L2 while the block's cells stream by.
pub const QUERY_BLOCK: usize = 256;

/// Squared-norm headroom when a key above the bound forces a rebuild.
const REBUILD_HEADROOM: f32 = 1.25;

const NONE: u32 = u32::MAX;

/// The children of one parent (or the top-level keys, for the root).
#[derive(Clone, Debug, Default)]
struct Cell {
    ids: Vec<u32>,
    /// Column capacity of `soa`, a multiple of [`BLOCK`].
    cap: usize,
    /// `(d + 1) x cap`, row-major: row `c < d` holds coordinate `c` of each child,
    /// row `d` the augmentation `a_k`; unused columns are zero.
    soa: Vec<f32>,
    /// Per simple index, the children as `(projection, local index)` sorted by
    /// projection; empty for a cell that is only ever scanned (built on demand).
    sorted: Vec<Vec<(f32, u32)>>,
    /// Level of the children (the parent's level minus one; the root's: the top).
    child_level: u8,
    /// The int8 copy of a finest cell (see `quant.rs`), kept in step with `soa` once
    /// made; `None` for upper cells, when int8 is off, or for non-finite keys.
    q8: Option<CellQ>,
}

impl Cell {
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Appends a child. Its sorted projection lists are kept up to date only when
    /// they exist (see [`Cell::sort_projections`]).
    fn push(&mut self, id: u32, key: &[f32], aug: f32, proj: &[f32]) {
        let rows = key.len() + 1;
        let local = self.ids.len();
        // A new capacity changes the int8 layout: re-quantize then.
        let grown = local == self.cap;
        if grown {
            // Doubling (in whole blocks) keeps bulk filling linear.
            let cap = (2 * self.cap).max(BLOCK);
            let mut soa = vec![0.0; rows * cap];
            for r in 0..rows {
                soa[r * cap..r * cap + self.cap].copy_from_slice(&self.soa[r * self.cap..(r + 1) * self.cap]);
            }
            self.soa = soa;
            self.cap = cap;
        }
        for (r, x) in key.iter().chain(std::iter::once(&aug)).enumerate() {
            self.soa[r * self.cap + local] = *x;
        }
        self.ids.push(id);
        if let Some(q) = &mut self.q8 {
            if grown || !q.set(local, key, self.cap) {
                self.quantize(key.len());
            }
        }
        for (list, &p) in self.sorted.iter_mut().zip(proj) {
            let at = list.partition_point(|e| e.0 < p || (e.0 == p && e.1 < local as u32));
            list.insert(at, (p, local as u32));
        }
    }

    /// Trims the column capacity to the children rounded up to [`BLOCK`] (after a bulk
    /// fill, so scans do not pay for the growth slack).
    fn trim(&mut self, rows: usize) {
        let cap = self.len().div_ceil(BLOCK) * BLOCK;
        if cap < self.cap {
            let mut soa = vec![0.0; rows * cap];
            for r in 0..rows {
                soa[r * cap..(r + 1) * cap].copy_from_slice(&self.soa[r * self.cap..r * self.cap + cap]);
            }
            self.soa = soa;
            self.cap = cap;
            if self.q8.is_some() {
                self.quantize(rows - 1);
            }
        }
    }

    /// (Re)makes the int8 copy from `soa` (`None` if a coordinate is not finite).
    fn quantize(&mut self, d: usize) {
        self.q8 = CellQ::quantize(&self.soa, d, self.cap, self.len());
    }

    /// Builds the per-simple-index lists (one sort each) from the children's
    /// projections `kproj` (`nidx` per key). Only cells that the prioritized search
    /// may visit need them (see [`KnnIndex::needs_sorted`]).
    fn sort_projections(&mut self, kproj: &[f32], nidx: usize) {
        self.sorted = (0..nidx)
            .map(|i| {
                let mut list: Vec<(f32, u32)> =
                    self.ids.iter().enumerate().map(|(l, &id)| (kproj[id as usize * nidx + i], l as u32)).collect();
                list.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                list
            })
            .collect();
    }

    /// Removes local child `local` (the last child takes its place).
    fn swap_remove(&mut self, local: usize, rows: usize) {
        let last = self.ids.len() - 1;
        for r in 0..rows {
            self.soa[r * self.cap + local] = self.soa[r * self.cap + last];
            self.soa[r * self.cap + last] = 0.0;
        }
        self.ids.swap_remove(local);
        if let Some(q) = &mut self.q8 {
            q.swap_remove(local, last, self.cap);
        }
        for list in &mut self.sorted {
            list.retain(|e| e.1 != local as u32);
            for e in list.iter_mut() {
                if e.1 == last as u32 {
                    e.1 = local as u32;
                }
            }
        }
    }
}

/// Reusable state of one search (no allocation per query once warm).
#[derive(Clone, Debug, Default)]
pub(super) struct Scratch {
    /// `[q; 0]` or `[k; a_k]`, length `d + 1`.
    qa: Vec<f32>,
    /// The query's projections (computed when a big cell needs them).
    qproj: Vec<f32>,
    qproj_ready: bool,
    scores: Vec<f32>,
    cand: Vec<(f32, u32)>,
    expand: Vec<u32>,
    // Prioritized traversal state.
    left: Vec<isize>,
    right: Vec<isize>,
    priority: Vec<f32>,
    counts: Vec<u32>,
    checked: Vec<bool>,
    /// The selected positions of [`KnnIndex::select_block`].
    selected: Vec<u32>,
    /// Upper-level keys offered by [`KnnIndex::select_block`], kept by
    /// [`KnnIndex::keep_upper`].
    upper: Vec<(f32, u32)>,
    batch: BatchScratch,
}

/// Per-block state of [`KnnIndex::query_batch`].
#[derive(Clone, Debug, Default)]
struct BatchScratch {
    scores: Vec<f32>,
    saved_ids: Vec<u32>,
    saved_dots: Vec<f32>,
    saved_len: Vec<u32>,
    saved_scored: Vec<u32>,
    /// Each row's heap bar (see [`heap_bar`]), kept apart so rows are skipped
    /// without reading their heaps.
    bars: Vec<f32>,
    expand: Vec<u32>,
    expand_at: Vec<u32>,
    /// Rows expanding each cell (counting sort by cell): `pairs[cell_start[c]..cell_start[c + 1]]`.
    cell_start: Vec<u32>,
    fill: Vec<u32>,
    pairs: Vec<u32>,
    /// The block's rows in int8 (`quant::encode_query`: `groups * GROUP` bytes, and
    /// each row's side of the int8 threshold), and one cell's pass masks.
    q8: Vec<u8>,
    /// Each row's side of the int8 bounds.
    q8_terms: Vec<quant::QueryTerms>,
    iscores: Vec<i32>,
    masks: Vec<u16>,
    /// Per row, a heap of lower bounds on scores (`prescan_cell`).
    lb_ids: Vec<u32>,
    lb_dots: Vec<f32>,
    lb_len: Vec<u32>,
    /// `(row, id, upper bound)` of the keys that may make a top k, then the ids that
    /// pass their row's final bar grouped by row (`pass[found_start[r]..found_start[r
    /// + 1]]`) and their exact dots.
    found: Vec<(u32, u32, f32)>,
    found_start: Vec<u32>,
    pass: Vec<u32>,
    exact: Vec<f32>,
}

/// Offers `(id, dot)` to the min-heap `ids/dots[..len]` of capacity `ids.len()`
/// (the same heap as [`TopK`]'s, kept in the block's saved state).
#[inline(always)]
fn heap_offer(ids: &mut [u32], dots: &mut [f32], len: &mut u32, id: u32, dot: f32) {
    let n = *len as usize;
    if n < ids.len() {
        let mut i = n;
        while i > 0 {
            let p = (i - 1) / 2;
            if dot < dots[p] {
                dots[i] = dots[p];
                ids[i] = ids[p];
                i = p;
            } else {
                break;
            }
        }
        dots[i] = dot;
        ids[i] = id;
        *len += 1;
    } else if dot > dots[0] {
        let mut i = 0;
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let c = if l + 1 < n && dots[l + 1] < dots[l] { l + 1 } else { l };
            if dots[c] < dot {
                dots[i] = dots[c];
                ids[i] = ids[c];
                i = c;
            } else {
                break;
            }
        }
        dots[i] = dot;
        ids[i] = id;
    }
}

/// Offers a cell's scores `sc` (of the keys `ids`) to one row's heap and returns
/// the heap's new bar. Per [`CLOSEST`] keys, a branch-free pass keeps the positions
/// above the bar (most keys of a cell are below it); only those touch the heap.
#[inline(always)]
fn offer_cell(heap_ids: &mut [u32], heap_dots: &mut [f32], len: &mut u32, ids: &[u32], sc: &[f32], vis: usize) -> f32 {
    let n = ids.len().min(sc.len());
    let mut pass = [0u8; CLOSEST];
    for start in (0..n).step_by(CLOSEST) {
        let (ids, sc) = (&ids[start..n.min(start + CLOSEST)], &sc[start..n.min(start + CLOSEST)]);
        let bar = heap_bar(heap_dots, *len);
        let mut w = 0;
        for (i, &x) in sc.iter().enumerate() {
            pass[w] = i as u8;
            // NaN passes, as `heap_offer` would take it into a filling heap.
            w += ((x > bar) | x.is_nan()) as usize;
        }
        for &i in &pass[..w] {
            let (id, x) = (ids[i as usize], sc[i as usize]);
            if (id as usize) < vis {
                heap_offer(heap_ids, heap_dots, len, id, x);
            }
        }
    }
    heap_bar(heap_dots, *len)
}

/// The score a key must beat to enter a heap of capacity `dots.len()` holding `len`.
#[inline(always)]
fn heap_bar(dots: &[f32], len: u32) -> f32 {
    if len as usize == dots.len() {
        dots[0]
    } else {
        f32::NEG_INFINITY
    }
}

/// What a cell search ranks by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Exact `q . k` (larger is better), query projections normalised.
    Query,
    /// Transformed key-key distance `M^2 - x.k - a_x a_k` (smaller is better).
    Construct,
}

/// A Prioritized-DCI k-NN index over the keys of one (batch, kv-head); see the module
/// doc for the algorithm and ../shared/ALGORITHMS.md section 1.
#[derive(Clone, Debug)]
pub struct KnnIndex {
    d: usize,
    params: KnnParams,
    /// `L_c * m` unit directions in `R^(d+1)`: the first `d` coordinates of each ...
    proj: Vec<f32>,
    /// ... and its last coordinate (multiplies `a_k`).
    proj_aug: Vec<f32>,
    max_norm_sq: f32,
    keys: Vec<f32>,
    norm_sq: Vec<f32>,
    aug: Vec<f32>,
    kproj: Vec<f32>,
    level: Vec<u8>,
    parent: Vec<u32>,
    parent_dist: Vec<f32>,
    /// Cell index of each key's children (`NONE` on level 0); cell 0 is the root.
    cell_of: Vec<u32>,
    /// Keys in each key's subtree, itself included (IceFormer's finest-level count).
    subtree: Vec<u32>,
    cells: Vec<Cell>,
    by_level: Vec<Vec<u32>>,
    /// Keys above level 0, and their rows (`U x d`): [`KnnIndex::query_batch`] scores
    /// them for a block of queries with one GEMM.
    upper_ids: Vec<u32>,
    upper_keys: Vec<f32>,
    /// Position of each key in `upper_ids` (`NONE` on level 0).
    upper_pos: Vec<u32>,
    /// When `upper_by_level` (a bulk build, before any insertion above level 0):
    /// level `h >= 1` occupies `upper_ids[level_start[h]..level_start[h - 1]]`.
    level_start: Vec<u32>,
    upper_by_level: bool,
    num_levels: usize,
    /// Promotion ratio of incremental insertion.
    ratio: usize,
    /// Finest cells keep int8 copies and batched queries pre-scan them (`quant.rs`).
    int8: bool,
}

fn ratio_for(total: usize, levels: usize) -> usize {
    ((total.max(2) as f64).powf(1.0 / levels.max(1) as f64).ceil() as usize).max(2)
}

/// Descending score, then ascending id: a total order, so selections are reproducible.
fn by_score_desc(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl KnnIndex {
    /// Builds the index over `keys` (all rows; pass a row slice for key padding).
    /// `max_norm_sq_bound` is an upper bound `M^2` on squared key norms, for an index
    /// that will receive later keys (decode); `None` uses the max over `keys`.
    pub fn build(keys: Rows<'_>, params: &KnnParams, max_norm_sq_bound: Option<f32>) -> KnnIndex {
        assert!(keys.in_bounds(), "keys are shorter than their shape");
        let mut owned = Vec::with_capacity(keys.rows * keys.cols);
        for i in 0..keys.rows {
            owned.extend_from_slice(keys.row(i));
        }
        Self::build_owned(owned, keys.cols, params, max_norm_sq_bound, ratio_for(keys.rows, params.levels))
    }

    fn build_owned(keys: Vec<f32>, d: usize, params: &KnnParams, bound: Option<f32>, ratio: usize) -> KnnIndex {
        let n = keys.len().checked_div(d).unwrap_or(0);
        let nidx = params.num_indices().max(1);
        let mut rng = SplitMix64::new(params.seed);
        // Projection directions: N(0, I) in R^(d+1), normalised (dci_gen_proj_vec).
        let mut proj = vec![0.0f32; nidx * d];
        let mut proj_aug = vec![0.0f32; nidx];
        for j in 0..nidx {
            let v: Vec<f64> = (0..=d).map(|_| rng.normal()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
            for c in 0..d {
                proj[j * d + c] = (v[c] / norm) as f32;
            }
            proj_aug[j] = (v[d] / norm) as f32;
        }
        let norm_sq: Vec<f32> = keys.chunks_exact(d.max(1)).take(n).map(|k| dot(k, k)).collect();
        let max_seen = norm_sq.iter().copied().filter(|x| x.is_finite()).fold(0.0f32, f32::max);
        let max_norm_sq = bound.unwrap_or(0.0).max(max_seen);
        let aug: Vec<f32> = norm_sq.iter().map(|&s| (max_norm_sq - s).max(0.0).sqrt()).collect();
        let mut kproj = vec![0.0f32; n * nidx];
        if n > 0 && d > 0 {
            gemm::sgemm(1.0, MatRef::new(&keys, n, d), MatRef::new(&proj, nidx, d).t(), 0.0, &mut kproj);
        }
        for (row, a) in kproj.chunks_exact_mut(nidx).zip(&aug) {
            row.iter_mut().zip(&proj_aug).for_each(|(p, u)| *p += a * u);
        }
        let mut idx = KnnIndex {
            d,
            params: params.clone(),
            proj,
            proj_aug,
            max_norm_sq,
            keys,
            norm_sq,
            aug,
            kproj,
            level: vec![0; n],
            parent: vec![NONE; n],
            parent_dist: vec![0.0; n],
            cell_of: vec![NONE; n],
            subtree: vec![1; n],
            cells: vec![Cell { child_level: (params.levels.max(1) - 1) as u8, ..Default::default() }],
            by_level: Vec::new(),
            upper_ids: Vec::new(),
            upper_keys: Vec::new(),
            upper_pos: vec![NONE; n],
            level_start: Vec::new(),
            upper_by_level: false,
            num_levels: params.levels.max(1),
            ratio,
            int8: false,
        };
        idx.bulk_tree(&mut rng);
        idx.set_int8(quant::available());
        idx
    }

    /// Draws levels and attaches every key (construct_new_tree). Every level is
    /// populated whenever there are at least `levels` keys (IceFormer redraws until
    /// it is; we redraw a few times, then promote keys of the fullest level into the
    /// empty ones); with fewer keys, key `i` takes level `top - i`.
    fn bulk_tree(&mut self, rng: &mut SplitMix64) {
        let n = self.len();
        let levels = self.num_levels;
        let top = levels - 1;
        let p = (n.max(1) as f64).powf(-1.0 / levels as f64);
        let mut lv = vec![0u8; n];
        if n < levels {
            lv.iter_mut().enumerate().for_each(|(i, l)| *l = (top - i) as u8);
        } else {
            for _attempt in 0..16 {
                for l in lv.iter_mut() {
                    let mut h = 0;
                    while h < top && rng.next_f64() <= p {
                        h += 1;
                    }
                    *l = h as u8;
                }
                if (0..levels).all(|h| lv.contains(&(h as u8))) {
                    break;
                }
            }
            for h in (0..levels).rev() {
                if !lv.contains(&(h as u8)) {
                    let mut count = vec![0usize; levels];
                    lv.iter().for_each(|&l| count[l as usize] += 1);
                    let fullest = (0..levels).max_by_key(|&l| (count[l], usize::MAX - l)).unwrap_or(0) as u8;
                    let pick = lv.iter().position(|&l| l == fullest).unwrap_or(0);
                    lv[pick] = h as u8;
                }
            }
        }
        self.by_level = vec![Vec::new(); levels];
        for (i, &l) in lv.iter().enumerate() {
            self.level[i] = l;
            self.by_level[l as usize].push(i as u32);
        }
        // Keys above level 0 in level order (top first, ids ascending within a level),
        // so each level is one contiguous block of `upper_keys`.
        self.level_start = vec![0; levels + 1];
        for h in (1..levels).rev() {
            self.level_start[h] = self.upper_ids.len() as u32;
            for i in 0..self.by_level[h].len() {
                self.add_upper(self.by_level[h][i]);
            }
        }
        self.level_start[0] = self.upper_ids.len() as u32;
        self.level_start[levels] = self.level_start[levels - 1];
        self.upper_by_level = true;
        for i in 0..self.by_level[top].len() {
            let id = self.by_level[top][i];
            self.attach_raw(id, NONE, 0.0);
        }
        self.sort_cells();
        for l in (0..top).rev() {
            let members = self.by_level[l].clone();
            let found = if self.exact_construction(l) {
                self.nearest_parents(&members, l + 1)
            } else {
                self.searched_parents(&members, l)
            };
            self.attach_level(&members, &found);
            self.sort_cells();
        }
    }

    /// [`Self::attach_raw`] for every key of one level at once (same cells, same
    /// child order): children grouped by cell, each cell grown once and filled row
    /// by row (sequential writes instead of `d + 1` scattered ones per key).
    fn attach_level(&mut self, members: &[u32], found: &[(u32, f32)]) {
        let rows = self.d + 1;
        let cell_ids: Vec<u32> =
            found.iter().map(|&(p, _)| if p == NONE { 0 } else { self.cell_for(p) as u32 }).collect();
        // Counting sort by cell (stable: ids ascend within a cell, as one by one).
        let ncells = self.cells.len();
        let mut start = vec![0u32; ncells + 1];
        cell_ids.iter().for_each(|&c| start[c as usize + 1] += 1);
        for i in 0..ncells {
            start[i + 1] += start[i];
        }
        let mut fill = start[..ncells].to_vec();
        let mut order = vec![0u32; members.len()];
        for (i, &c) in cell_ids.iter().enumerate() {
            order[fill[c as usize] as usize] = i as u32;
            fill[c as usize] += 1;
        }
        for cell in 0..ncells {
            let kids = &order[start[cell] as usize..start[cell + 1] as usize];
            if kids.is_empty() {
                continue;
            }
            let c = &mut self.cells[cell];
            let (old, new) = (c.len(), c.len() + kids.len());
            let cap = new.div_ceil(BLOCK) * BLOCK;
            if cap > c.cap {
                let mut soa = vec![0.0; rows * cap];
                for r in 0..rows {
                    soa[r * cap..r * cap + old].copy_from_slice(&c.soa[r * c.cap..r * c.cap + old]);
                }
                c.soa = soa;
                c.cap = cap;
            }
            let (d, cap) = (self.d, c.cap);
            for r in 0..rows {
                let dst = &mut c.soa[r * cap + old..r * cap + new];
                for (x, &i) in dst.iter_mut().zip(kids) {
                    let id = members[i as usize] as usize;
                    *x = if r < d { self.keys[id * d + r] } else { self.aug[id] };
                }
            }
            c.ids.extend(kids.iter().map(|&i| members[i as usize]));
            // Rebuilt by `sort_cells` if the cell needs them.
            c.sorted.clear();
        }
        for (&id, &(parent, dist)) in members.iter().zip(found) {
            self.parent[id as usize] = parent;
            self.parent_dist[id as usize] = dist;
            let add = self.subtree[id as usize];
            let mut p = parent;
            while p != NONE {
                self.subtree[p as usize] += add;
                p = self.parent[p as usize];
            }
        }
    }

    /// True when a construction search for a key of `level` visits every key of
    /// `level + 1`: with the construction scan, a field of view at least as large as
    /// every level above `level + 1` expands all their cells, so the search is an
    /// exhaustive one and [`Self::nearest_parents`] computes the same result directly.
    fn exact_construction(&self, level: usize) -> bool {
        let fov = self.params.construction_field_of_view.max(1);
        self.params.construction_scan
            && self.upper_by_level
            && (level + 2..self.num_levels).all(|h| fov >= self.by_level[h].len())
    }

    /// For each key of `members`, its nearest key on `parent_level` (smallest
    /// transformed distance, ties to the smaller id): one GEMM per chunk of keys
    /// against that level's block of `upper_keys`, then an argmax per row.
    fn nearest_parents(&self, members: &[u32], parent_level: usize) -> Vec<(u32, f32)> {
        let (a, b) = (self.level_start[parent_level] as usize, self.level_start[parent_level - 1] as usize);
        let (u, d, m2) = (b - a, self.d, self.max_norm_sq);
        let mut found = vec![(NONE, 0.0f32); members.len()];
        if u == 0 {
            return found;
        }
        // Chunks of scores stay in L2; chunks run in parallel when a pool is given.
        const CHUNK: usize = 256;
        let parts: Vec<std::sync::Mutex<&mut [(u32, f32)]>> =
            found.chunks_mut(CHUNK).map(std::sync::Mutex::new).collect();
        let pids = &self.upper_ids[a..b];
        let paug: Vec<f32> = pids.iter().map(|&p| self.aug[p as usize]).collect();
        let km = MatRef::new(&self.upper_keys[a * d..b * d], u, d).t();
        crate::parallel::for_each_index(parts.len(), &|c| {
            let mut slot = parts[c].lock().unwrap_or_else(|e| e.into_inner());
            let ids = &members[c * CHUNK..c * CHUNK + slot.len()];
            let mut rows = Vec::with_capacity(ids.len() * d);
            ids.iter().for_each(|&id| rows.extend_from_slice(self.key(id)));
            let mut sc = vec![0.0f32; ids.len() * u];
            gemm::sgemm(1.0, MatRef::new(&rows, ids.len(), d), km, 0.0, &mut sc);
            for (j, out) in slot.iter_mut().enumerate() {
                let ax = self.aug[ids[j] as usize];
                // Same expression as the construction search's scores (minus the
                // transformed distance), so the pick is the same as its for finite
                // scores: the first of equal scores wins, and ids ascend.
                let row = &mut sc[j * u..(j + 1) * u];
                row.iter_mut().zip(&paug).for_each(|(x, &ap)| *x = *x + ax * ap - m2);
                let (best, at) = max_index(row);
                *out = (pids[at], -best);
            }
        });
        found
    }

    /// Parents of `members` (keys of `level`) by the construction search, in
    /// parallel chunks (IceFormer's construct_new_tree).
    fn searched_parents(&self, members: &[u32], l: usize) -> Vec<(u32, f32)> {
        let mut found = vec![(NONE, 0.0f32); members.len()];
        let chunk = 64;
        let parts: Vec<std::sync::Mutex<&mut [(u32, f32)]>> =
            found.chunks_mut(chunk).map(std::sync::Mutex::new).collect();
        let this = self;
        // With `construction_scan`, every candidate parent of a chunk of keys is
        // scored at once: one GEMM against the keys above level 0.
        let batched = this.params.construction_scan && !this.upper_ids.is_empty();
        crate::parallel::for_each_index(parts.len(), &|c| {
            let mut s = Scratch::default();
            let mut slot = parts[c].lock().unwrap_or_else(|e| e.into_inner());
            if batched {
                let (u, d) = (this.upper_ids.len(), this.d);
                let ids = &members[c * chunk..c * chunk + slot.len()];
                let mut rows = Vec::with_capacity(ids.len() * d);
                ids.iter().for_each(|&id| rows.extend_from_slice(this.key(id)));
                let mut sc = vec![0.0f32; ids.len() * u];
                let km = MatRef::new(&this.upper_keys, u, d).t();
                gemm::sgemm(1.0, MatRef::new(&rows, ids.len(), d), km, 0.0, &mut sc);
                for (j, out) in slot.iter_mut().enumerate() {
                    *out = this.find_parent_with(ids[j], l, &mut s, Some(&sc[j * u..(j + 1) * u]));
                }
            } else {
                for (j, out) in slot.iter_mut().enumerate() {
                    *out = this.find_parent(members[c * chunk + j], l, &mut s);
                }
            }
        });
        found
    }

    /// True when the prioritized search may visit `cell`: it holds keys above level
    /// 0 and is bigger than [`CLOSEST`] (smaller ones are scored in one pass), or
    /// construction uses the search.
    fn needs_sorted(&self, cell: usize) -> bool {
        // Finest cells are always scanned whole by queries, and construction never
        // searches them (parents live above level 0).
        let c = &self.cells[cell];
        c.child_level > 0 && (c.len() > CLOSEST || !self.params.construction_scan)
    }

    /// Trims every cell's capacity and builds the sorted projection lists of every
    /// cell that needs them and lacks them (after each level of a bulk build).
    fn sort_cells(&mut self) {
        let nidx = self.params.num_indices().max(1);
        for cell in 0..self.cells.len() {
            self.cells[cell].trim(self.d + 1);
            if self.cells[cell].sorted.is_empty() && self.needs_sorted(cell) {
                self.cells[cell].sort_projections(&self.kproj, nidx);
            }
        }
    }

    /// Turns the int8 pre-scan of batched queries on or off (on by default where the
    /// CPU has an int8 dot-product instruction). It filters keys that cannot enter a
    /// top k and never changes which keys are retrieved (see `quant.rs`); forcing it
    /// on elsewhere runs the scalar int8 kernel (slower than f32, for tests).
    pub fn set_int8(&mut self, on: bool) {
        self.int8 = on;
        let d = self.d;
        for c in &mut self.cells {
            c.q8 = None;
            if on && c.child_level == 0 {
                // An empty cell gets its copy with its first child (`Cell::push`).
                c.q8 = Some(CellQ::default());
                if !c.ids.is_empty() {
                    c.quantize(d);
                }
            }
        }
    }

    /// Whether batched queries pre-scan finest cells in int8 ([`Self::set_int8`]).
    pub fn int8(&self) -> bool {
        self.int8
    }

    /// Keys in the index.
    pub fn len(&self) -> usize {
        self.norm_sq.len()
    }

    /// True when the index holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Key width `d`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// Populated tree levels.
    pub fn levels(&self) -> usize {
        self.num_levels
    }

    /// The bound `M^2` in use (squared norm every key is lifted to).
    pub fn max_norm_sq(&self) -> f32 {
        self.max_norm_sq
    }

    /// Parameters the index was built with.
    pub fn params(&self) -> &KnnParams {
        &self.params
    }

    /// The indexed keys, `len() x dim()` row-major, in insertion order.
    pub fn keys(&self) -> &[f32] {
        &self.keys
    }

    /// True when the index was built with `params` over exactly the first `len()`
    /// rows of `keys` (bit for bit): it can answer queries over them and take the
    /// following rows by [`Self::insert`] (a decode step reusing its index).
    pub fn indexes_prefix_of(&self, keys: Rows<'_>, params: &KnnParams) -> bool {
        let (n, d) = (self.len(), self.d);
        keys.in_bounds()
            && keys.cols == d
            && n <= keys.rows
            && self.params == *params
            && (0..n).all(|i| {
                // No early exit inside a row: the OR of XORs vectorises.
                let (a, b) = (keys.row(i), &self.keys[i * d..(i + 1) * d]);
                a.iter().zip(b).fold(0u32, |acc, (x, y)| acc | (x.to_bits() ^ y.to_bits())) == 0
            })
    }

    /// Sets the promotion ratio of later insertions from the expected final number
    /// of keys (IceFormer derives it from the whole sequence length).
    pub fn expect_total(&mut self, total_keys: usize) {
        self.ratio = ratio_for(total_keys.max(self.len()), self.params.levels);
    }

    fn add_upper(&mut self, id: u32) {
        self.upper_pos[id as usize] = self.upper_ids.len() as u32;
        self.upper_ids.push(id);
        let (s, d) = (id as usize, self.d);
        self.upper_keys.extend_from_slice(&self.keys[s * d..(s + 1) * d]);
    }

    fn key(&self, id: u32) -> &[f32] {
        &self.keys[id as usize * self.d..(id as usize + 1) * self.d]
    }

    /// [`Self::attach_raw`], then the cell's sorted lists if it needs them.
    fn attach(&mut self, id: u32, parent: u32, dist: f32) {
        self.attach_raw(id, parent, dist);
        let cell = if parent == NONE { 0 } else { self.cell_of[parent as usize] as usize };
        if self.cells[cell].sorted.is_empty() && self.needs_sorted(cell) {
            let nidx = self.params.num_indices().max(1);
            self.cells[cell].sort_projections(&self.kproj, nidx);
        }
    }

    /// Puts key `id` into the cell of `parent` (the root for `NONE`) and updates the
    /// subtree counts; sorted lists only where they already exist.
    fn attach_raw(&mut self, id: u32, parent: u32, dist: f32) {
        let cell = if parent == NONE { 0 } else { self.cell_for(parent) };
        self.parent[id as usize] = parent;
        self.parent_dist[id as usize] = dist;
        let nidx = self.params.num_indices().max(1);
        let (s, d) = (id as usize, self.d);
        let key = &self.keys[s * d..(s + 1) * d];
        let proj = &self.kproj[s * nidx..(s + 1) * nidx];
        self.cells[cell].push(id, key, self.aug[s], proj);
        let add = self.subtree[s];
        let mut p = parent;
        while p != NONE {
            self.subtree[p as usize] += add;
            p = self.parent[p as usize];
        }
    }

    fn detach(&mut self, id: u32) {
        let parent = self.parent[id as usize];
        let cell = if parent == NONE { 0 } else { self.cell_of[parent as usize] as usize };
        let local = self.cells[cell].ids.iter().position(|&x| x == id).expect("child in its parent's cell");
        self.cells[cell].swap_remove(local, self.d + 1);
        let sub = self.subtree[id as usize];
        let mut p = parent;
        while p != NONE {
            self.subtree[p as usize] -= sub;
            p = self.parent[p as usize];
        }
        self.parent[id as usize] = NONE;
    }

    fn cell_for(&mut self, id: u32) -> usize {
        if self.cell_of[id as usize] == NONE {
            self.cell_of[id as usize] = self.cells.len() as u32;
            let child_level = self.level[id as usize].saturating_sub(1);
            // An empty finest cell gets its int8 copy with its first child (`push`).
            let q8 = (self.int8 && child_level == 0).then(CellQ::default);
            self.cells.push(Cell { child_level, q8, ..Default::default() });
        }
        self.cell_of[id as usize] as usize
    }

    /// Transformed distance `M^2 - a.b - a_a a_b` between two stored keys.
    fn key_dist(&self, a: u32, b: u32) -> f32 {
        self.max_norm_sq - dot(self.key(a), self.key(b)) - self.aug[a as usize] * self.aug[b as usize]
    }

    /// The parent of key `id` among keys on levels above `level` (dci_assign_parent:
    /// a non-cumulative multi-level search with the construction config, 1 neighbour).
    fn find_parent(&self, id: u32, level: usize, s: &mut Scratch) -> (u32, f32) {
        self.find_parent_with(id, level, s, None)
    }

    /// [`Self::find_parent`], optionally reading `key . upper_key` from `dots` (indexed
    /// like `upper_ids`) instead of scanning cells (construction scan only).
    fn find_parent_with(&self, id: u32, level: usize, s: &mut Scratch, dots: Option<&[f32]>) -> (u32, f32) {
        let nidx = self.params.num_indices().max(1);
        s.qa.clear();
        s.qa.extend_from_slice(self.key(id));
        s.qa.push(self.aug[id as usize]);
        s.qproj.clear();
        s.qproj.extend_from_slice(&self.kproj[id as usize * nidx..(id as usize + 1) * nidx]);
        s.qproj_ready = true;
        let fov = self.params.construction_field_of_view.max(1);
        let populated = self.num_levels - level - 1;
        let root_want = if populated <= 1 { 1 } else { fov };
        let mut cand = std::mem::take(&mut s.cand);
        cand.clear();
        self.construct_cell(0, root_want, s, &mut cand, dots);
        // Intermediate levels keep `fov` parents; the last one keeps the best child.
        for step in 0..populated.saturating_sub(1) {
            let want = if step + 2 == populated { 1 } else { fov };
            cand.sort_by(by_score_desc);
            cand.truncate(fov);
            let parents: Vec<u32> = cand.iter().map(|c| c.1).collect();
            cand.clear();
            for p in parents {
                if self.cell_of[p as usize] != NONE {
                    self.construct_cell(self.cell_of[p as usize] as usize, want, s, &mut cand, dots);
                }
            }
        }
        let mut best = cand.iter().copied().min_by(by_score_desc);
        s.cand = cand;
        if best.is_none() && level + 1 < self.num_levels {
            // Every expanded parent had an empty cell: fall back to a scan of the
            // parent level (rare; keeps the one-level-up invariant).
            best = self.by_level[level + 1].iter().map(|&p| (-self.key_dist(id, p), p)).min_by(by_score_desc);
        }
        // Scores are negated distances here.
        best.map_or((NONE, 0.0), |(sc, p)| (p, -sc))
    }

    /// A construction search of one cell, with the key's dots to the candidate
    /// parents precomputed when `dots` is given (every child scored, as the scan does).
    fn construct_cell(
        &self,
        cell: usize,
        want: usize,
        s: &mut Scratch,
        out: &mut Vec<(f32, u32)>,
        dots: Option<&[f32]>,
    ) {
        match dots {
            Some(row) if self.cells[cell].len() <= CLOSEST => {
                let (ax, m2) = (s.qa[self.d], self.max_norm_sq);
                out.extend(
                    self.cells[cell]
                        .ids
                        .iter()
                        .map(|&c| (row[self.upper_pos[c as usize] as usize] + ax * self.aug[c as usize] - m2, c)),
                );
            }
            _ => self.search_cell(cell, Mode::Construct, want, s, out),
        }
    }

    /// Searches one cell, appending `(score, id)` of every candidate whose exact
    /// score was computed (score = `q . k`, or minus the transformed distance).
    fn search_cell(&self, cell: usize, mode: Mode, want: usize, s: &mut Scratch, out: &mut Vec<(f32, u32)>) {
        let c = &self.cells[cell];
        let len = c.len();
        if len == 0 {
            return;
        }
        let scan = match mode {
            Mode::Query => true,
            Mode::Construct => self.params.construction_scan,
        };
        if scan && len <= CLOSEST {
            s.scores.resize(c.cap, 0.0);
            // The query's augmentation is 0: its row is skipped.
            let rows = if mode == Mode::Query { self.d } else { self.d + 1 };
            scan_cell(&s.qa, &c.soa, rows, c.cap, &mut s.scores);
            // Construction scores are minus the transformed distance.
            let shift = if mode == Mode::Construct { self.max_norm_sq } else { 0.0 };
            out.extend(c.ids.iter().zip(&s.scores).map(|(&id, &sc)| (sc - shift, id)));
            return;
        }
        if mode == Mode::Query && !s.qproj_ready {
            self.query_projections(s);
        }
        let (prop_retrieve, to_visit) = match mode {
            Mode::Query => (self.params.query_prop_to_retrieve, self.params.num_to_visit.unwrap_or(self.len())),
            Mode::Construct => (self.params.construction_prop_to_retrieve, 0),
        };
        let m = self.params.num_simp_indices.max(1);
        let lc = self.params.num_comp_indices.max(1);
        let nidx = lc * m;
        let retrieve = ((prop_retrieve as f64 * len as f64).ceil() as usize).max(1);
        let visit = (to_visit * m).max((self.params.prop_to_visit as f64 * (len * m) as f64).ceil() as usize);
        s.left.clear();
        s.right.clear();
        s.priority.clear();
        for i in 0..nidx {
            let list = &c.sorted[i];
            let qp = s.qproj[i];
            let pos = list.partition_point(|e| e.0 < qp) as isize;
            s.left.push(pos - 1);
            s.right.push(pos);
            s.priority.push(0.0);
        }
        // Priority of index i = gap of its next unvisited element.
        let next_gap = |list: &[(f32, u32)], l: isize, r: isize, qp: f32| -> (f32, bool) {
            let lg = if l >= 0 { qp - list[l as usize].0 } else { f32::INFINITY };
            let rg = if (r as usize) < list.len() { list[r as usize].0 - qp } else { f32::INFINITY };
            if rg < lg {
                (rg, true)
            } else {
                (lg, false)
            }
        };
        for i in 0..nidx {
            s.priority[i] = next_gap(&c.sorted[i], s.left[i], s.right[i], s.qproj[i]).0;
        }
        s.counts.clear();
        s.counts.resize(lc * len, 0);
        s.checked.clear();
        s.checked.resize(len, false);
        let mut candidates = 0usize;
        let mut visited = 0usize;
        while visited < len * m {
            let mut progressed = false;
            for comp in 0..lc {
                let base = comp * m;
                let mut top = usize::MAX;
                let mut best = f32::INFINITY;
                for h in 0..m {
                    if s.priority[base + h] < best {
                        best = s.priority[base + h];
                        top = base + h;
                    }
                }
                if top == usize::MAX {
                    continue;
                }
                progressed = true;
                let list = &c.sorted[top];
                let (_, right) = next_gap(list, s.left[top], s.right[top], s.qproj[top]);
                let pos = if right {
                    s.right[top] += 1;
                    (s.right[top] - 1) as usize
                } else {
                    s.left[top] -= 1;
                    (s.left[top] + 1) as usize
                };
                s.priority[top] = next_gap(list, s.left[top], s.right[top], s.qproj[top]).0;
                let local = list[pos].1 as usize;
                let cnt = &mut s.counts[comp * len + local];
                *cnt += 1;
                if *cnt as usize == m && !s.checked[local] {
                    s.checked[local] = true;
                    candidates += 1;
                    let id = c.ids[local];
                    let k = self.key(id);
                    let sc = match mode {
                        Mode::Query => dot(&s.qa[..self.d], k),
                        Mode::Construct => {
                            -(self.max_norm_sq - dot(&s.qa[..self.d], k) - s.qa[self.d] * self.aug[id as usize])
                        }
                    };
                    out.push((sc, id));
                }
            }
            visited += 1;
            if !progressed {
                break;
            }
            if candidates >= want.min(len) && (visited >= visit || candidates >= retrieve) {
                break;
            }
        }
    }

    fn query_projections(&self, s: &mut Scratch) {
        let nidx = self.params.num_indices().max(1);
        let q = &s.qa[..self.d];
        let norm = dot(q, q).sqrt();
        let inv = if norm > 0.0 && norm.is_finite() { 1.0 / norm } else { 0.0 };
        s.qproj.clear();
        for i in 0..nidx {
            s.qproj.push(dot(&self.proj[i * self.d..(i + 1) * self.d], q) * inv);
        }
        s.qproj_ready = true;
    }

    /// The (about) `k` keys with the largest `q . k` among keys `0..visible`, with
    /// their exact dot products, into `out` (sorted by dot, descending). When at most
    /// `k` keys are visible all of them are returned (exact). Keys `>= visible` may
    /// still guide the descent but are never returned.
    pub fn query(&self, q: &[f32], visible: usize, k: usize, out: &mut TopK) {
        assert_eq!(q.len(), self.d, "query width differs from the keys'");
        out.reset(k);
        let vis = visible.min(self.len());
        if vis == 0 || k == 0 {
            return;
        }
        if vis <= k {
            for j in 0..vis {
                out.push(j as u32, dot(q, self.key(j as u32)));
            }
            out.scored += vis;
            out.finish();
            return;
        }
        let mut s = std::mem::take(&mut out.scratch);
        s.qa.clear();
        s.qa.extend_from_slice(q);
        s.qa.push(0.0);
        s.qproj_ready = false;
        let fov = self.params.query_fov();
        let mut cand = std::mem::take(&mut s.cand);
        let mut expand = std::mem::take(&mut s.expand);
        cand.clear();
        let root_want = if self.num_levels <= 1 { k } else { fov };
        self.search_cell(0, Mode::Query, root_want, &mut s, &mut cand);
        for level in (0..self.num_levels.saturating_sub(1)).rev() {
            out.offer(&cand, vis);
            let fov = self.params.query_fov_for(cand.len());
            self.select_expand(&mut cand, fov, k, &mut expand);
            cand.clear();
            let want = if level == 0 { k } else { fov };
            for &p in &expand {
                let cell = self.cell_of[p as usize];
                if cell == NONE {
                    continue;
                }
                let c = &self.cells[cell as usize];
                if level == 0 {
                    // Finest level: every child scored, straight into the top k (for
                    // a cell above CLOSEST a superset of the prioritized search's
                    // >= query_prop_to_retrieve of it; see the module doc).
                    s.scores.resize(c.cap, 0.0);
                    scan_cell(&s.qa, &c.soa, self.d, c.cap, &mut s.scores);
                    out.scored += c.len();
                    for (&id, &sc) in c.ids.iter().zip(&s.scores) {
                        out.offer_one(id, sc, vis);
                    }
                } else {
                    self.search_cell(cell as usize, Mode::Query, want, &mut s, &mut cand);
                }
            }
        }
        out.offer(&cand, vis);
        s.cand = cand;
        s.expand = expand;
        out.scratch = s;
        out.finish();
    }

    /// [`KnnIndex::query`] for a block of queries that all see keys `0..visible`;
    /// calls `each(row, &top)` once per row of `q`, in an order of our choosing (rows
    /// that expand the same finest-level cells run one after the other, so those
    /// cells are read from cache). The keys above level 0 are scored for the whole
    /// block with one GEMM (`Q U^T`) instead of cell by cell; the search is otherwise
    /// the same (upper cells are scored exhaustively, as every cell of at most
    /// [`CLOSEST`] keys is). Dots may differ from [`KnnIndex::query`]'s in the last
    /// bits (another summation order), and so may near-ties.
    ///
    /// Rows go in blocks of [`QUERY_BLOCK`] (their heaps, rows and upper scores stay
    /// in L2), each in three passes: (1) per row, the descent through the upper
    /// levels on the GEMM scores (a level expanded whole is one contiguous block of
    /// scores, selected without gathering); (2) cell by cell, [`ROWS`] rows at a time
    /// scored by [`scan_cell_rows`] into per-row heaps (every cell whole, see the
    /// module doc); (3) per row, the final order, then `each`. A row's offers come
    /// in the same order whatever the block, so results do not depend on the
    /// blocking.
    pub fn query_batch(
        &self,
        q: Rows<'_>,
        visible: usize,
        k: usize,
        top: &mut TopK,
        mut each: impl FnMut(usize, &TopK),
    ) {
        assert!(q.in_bounds() && q.cols == self.d, "queries must be rows of the key width");
        let vis = visible.min(self.len());
        if vis <= k || self.num_levels <= 1 || self.upper_ids.is_empty() || k == 0 || q.rows <= 1 {
            for r in 0..q.rows {
                self.query(q.row(r), visible, k, top);
                each(r, top);
            }
            return;
        }
        let mut s = std::mem::take(&mut top.scratch);
        let mut bs = std::mem::take(&mut s.batch);
        for r0 in (0..q.rows).step_by(QUERY_BLOCK) {
            let block = q.slice_rows(r0..(r0 + QUERY_BLOCK).min(q.rows));
            self.query_block(block, vis, k, top, &mut s, &mut bs, &mut |r, t| each(r0 + r, t));
        }
        s.batch = bs;
        top.scratch = s;
    }

    /// One block of [`KnnIndex::query_batch`] (at most [`QUERY_BLOCK`] rows).
    #[allow(clippy::too_many_arguments)]
    fn query_block(
        &self,
        q: Rows<'_>,
        vis: usize,
        k: usize,
        top: &mut TopK,
        s: &mut Scratch,
        bs: &mut BatchScratch,
        each: &mut dyn FnMut(usize, &TopK),
    ) {
        let (b, u, d) = (q.rows, self.upper_ids.len(), self.d);
        bs.scores.resize(b * u, 0.0);
        let qm = MatRef { data: q.data, rows: b, cols: d, row_stride: q.stride, col_stride: 1 };
        gemm::sgemm(1.0, qm, MatRef::new(&self.upper_keys, u, d).t(), 0.0, &mut bs.scores[..b * u]);
        let mut cand = std::mem::take(&mut s.cand);
        let mut expand = std::mem::take(&mut s.expand);
        bs.saved_ids.clear();
        bs.saved_ids.resize(b * k, 0);
        bs.saved_dots.clear();
        bs.saved_dots.resize(b * k, 0.0);
        bs.saved_len.clear();
        bs.saved_scored.clear();
        bs.bars.clear();
        bs.expand.clear();
        bs.expand_at.clear();
        let top_level = self.num_levels - 1;
        for r in 0..b {
            top.reset(k);
            s.upper.clear();
            let row = &bs.scores[r * u..(r + 1) * u];
            let oracle = |id: u32| (row[self.upper_pos[id as usize] as usize], id);
            // `whole`: the candidates are every key of `level` (contiguous scores).
            let mut whole = self.upper_by_level;
            if !whole {
                cand.clear();
                cand.extend(self.cells[0].ids.iter().map(|&c| oracle(c)));
            }
            for level in (1..=top_level).rev() {
                let mut done = false;
                if whole {
                    let (a, e) = (self.level_start[level] as usize, self.level_start[level - 1] as usize);
                    let fov = self.params.query_fov_for(e - a);
                    done = self.select_block(top, &row[a..e], &self.upper_ids[a..e], fov, k, vis, s, &mut expand);
                    if !done {
                        cand.clear();
                        cand.extend(row[a..e].iter().copied().zip(self.upper_ids[a..e].iter().copied()));
                    }
                }
                if !done {
                    let fov = self.params.query_fov_for(cand.len());
                    self.offer_selected(top, &mut cand, fov, k, vis, &mut expand);
                }
                if level > 1 {
                    whole = self.upper_by_level && expand.len() == self.by_level[level].len();
                    if !whole {
                        cand.clear();
                        for &p in &expand {
                            if self.cell_of[p as usize] != NONE {
                                let c = &self.cells[self.cell_of[p as usize] as usize];
                                cand.extend(c.ids.iter().map(|&c| oracle(c)));
                            }
                        }
                    }
                }
            }
            self.keep_upper(top, s, k);
            bs.expand_at.push(bs.expand.len() as u32);
            bs.expand.extend_from_slice(&expand);
            bs.saved_len.push(top.ids.len() as u32);
            bs.saved_scored.push(top.scored as u32);
            bs.saved_ids[r * k..r * k + top.ids.len()].copy_from_slice(&top.ids);
            bs.saved_dots[r * k..r * k + top.ids.len()].copy_from_slice(&top.dots);
            bs.bars.push(heap_bar(&bs.saved_dots[r * k..(r + 1) * k], top.ids.len() as u32));
        }
        bs.expand_at.push(bs.expand.len() as u32);
        // Finest level, cell by cell: every row that expands a cell is scored against
        // it while the cell is in L1 (rows and cells in a fixed order, so each row's
        // offers come in the same order whatever the block).
        let ncells = self.cells.len();
        bs.cell_start.clear();
        bs.cell_start.resize(ncells + 1, 0);
        for &p in &bs.expand {
            let cell = self.cell_of[p as usize];
            if cell != NONE {
                bs.cell_start[cell as usize + 1] += 1;
            }
        }
        for i in 0..ncells {
            bs.cell_start[i + 1] += bs.cell_start[i];
        }
        bs.pairs.clear();
        bs.pairs.resize(bs.cell_start[ncells] as usize, 0);
        bs.fill.clear();
        bs.fill.extend_from_slice(&bs.cell_start[..ncells]);
        for r in 0..b {
            for &p in &bs.expand[bs.expand_at[r] as usize..bs.expand_at[r + 1] as usize] {
                let cell = self.cell_of[p as usize];
                if cell != NONE {
                    bs.pairs[bs.fill[cell as usize] as usize] = r as u32;
                    bs.fill[cell as usize] += 1;
                    bs.saved_scored[r] += self.cells[cell as usize].len() as u32;
                }
            }
        }
        // Finest cells with int8 copies are pre-scanned (`prescan_cell`).
        let int8 = self.int8 && self.encode_block(q, bs);
        if int8 {
            bs.found.clear();
            bs.lb_ids.clone_from(&bs.saved_ids);
            bs.lb_dots.clone_from(&bs.saved_dots);
            bs.lb_len.clone_from(&bs.saved_len);
        }
        let pairs = std::mem::take(&mut bs.pairs);
        for cell in 0..ncells {
            let c = &self.cells[cell];
            let rows = &pairs[bs.cell_start[cell] as usize..bs.cell_start[cell + 1] as usize];
            if rows.is_empty() {
                continue;
            }
            if let (true, Some(cq)) = (int8, &c.q8) {
                self.prescan_cell(c, cq, rows, vis, k, bs);
                continue;
            }
            s.scores.resize(ROWS * c.cap, 0.0);
            let mut maxes = [0.0f32; ROWS];
            for group in rows.chunks(ROWS) {
                // ROWS rows per pass over the cell (a short last group repeats a row).
                let pick = |j: usize| q.row(group[j.min(group.len() - 1)] as usize);
                scan_cell_rows(std::array::from_fn(pick), &c.soa, d, c.cap, &mut s.scores, &mut maxes);
                for (j, &r) in group.iter().enumerate() {
                    let r = r as usize;
                    // A row whose best score here cannot enter its
                    // top k is skipped without reading its heap.
                    if maxes[j] > bs.bars[r] || maxes[j].is_nan() {
                        bs.bars[r] = offer_cell(
                            &mut bs.saved_ids[r * k..(r + 1) * k],
                            &mut bs.saved_dots[r * k..(r + 1) * k],
                            &mut bs.saved_len[r],
                            &c.ids,
                            &s.scores[j * c.cap..j * c.cap + c.len()],
                            vis,
                        );
                    }
                }
            }
        }
        bs.pairs = pairs;
        if int8 {
            self.offer_found(q, k, bs);
        }
        for r in 0..b {
            let len = bs.saved_len[r] as usize;
            top.load(
                &bs.saved_ids[r * k..r * k + len],
                &bs.saved_dots[r * k..r * k + len],
                k,
                bs.saved_scored[r] as usize,
            );
            top.finish();
            each(r, top);
        }
        s.cand = cand;
        s.expand = expand;
    }

    /// Encodes the block's rows for the int8 pre-scan; false (f32 path) when a row is
    /// not finite.
    fn encode_block(&self, q: Rows<'_>, bs: &mut BatchScratch) -> bool {
        let width = quant::groups(self.d) * GROUP;
        bs.q8.resize(q.rows * width, 0);
        bs.q8_terms.clear();
        for r in 0..q.rows {
            match quant::encode_query(q.row(r), &mut bs.q8[r * width..(r + 1) * width]) {
                Some(t) => bs.q8_terms.push(t),
                None => return false,
            }
        }
        true
    }

    /// The finest-level step of [`Self::query_block`] for one cell with an int8
    /// copy (`quant.rs`). `rows` (block rows) are pre-scanned [`ROWS`] at a time,
    /// which bounds each key's exact score: `lb <= q . k <= ub`. Each row keeps a
    /// second heap of lower bounds (seeded with its exact upper-level scores), whose
    /// bar is a lower bound on the row's final k-th best score; a key with `ub` above
    /// it is kept in `bs.found`, the others cannot make the top k.
    /// [`Self::offer_found`] then computes exact dots for the kept keys that still
    /// pass the final bar: every heap ends as if all keys were offered exactly.
    #[allow(clippy::too_many_arguments)]
    fn prescan_cell(&self, c: &Cell, cq: &CellQ, rows: &[u32], vis: usize, k: usize, bs: &mut BatchScratch) {
        let (cap, len) = (c.cap, c.len());
        let width = quant::groups(self.d) * GROUP;
        let nv = cap / BLOCK;
        bs.iscores.resize(ROWS * cap, 0);
        bs.masks.resize(ROWS * nv, 0);
        for group in rows.chunks(ROWS) {
            // A short last group repeats a row (its results are not read).
            let at = |j: usize| group[j.min(group.len() - 1)] as usize;
            let bounds: [Bounds; ROWS] = std::array::from_fn(|j| Bounds::new(&bs.q8_terms[at(j)], cq));
            let thr: [i32; ROWS] = std::array::from_fn(|j| bounds[j].threshold(bs.bars[at(j)]));
            let enc: [&[u8]; ROWS] = std::array::from_fn(|j| &bs.q8[at(j) * width..(at(j) + 1) * width]);
            let hits = quant::scan_rows(enc, cq, cap, len, &thr, &mut bs.iscores, &mut bs.masks);
            for (j, &r) in group.iter().enumerate() {
                if !hits[j] {
                    continue;
                }
                let (r, b) = (r as usize, &bounds[j]);
                let (ids, hd) = (&mut bs.lb_ids[r * k..(r + 1) * k], &mut bs.lb_dots[r * k..(r + 1) * k]);
                let scores = &bs.iscores[j * cap..(j + 1) * cap];
                let mut lower_bar = b.lower_bar(bs.bars[r]);
                for (v, &m) in bs.masks[j * nv..(j + 1) * nv].iter().enumerate() {
                    let mut m = m;
                    while m != 0 {
                        let i = v * BLOCK + m.trailing_zeros() as usize;
                        m &= m - 1;
                        let id = c.ids[i];
                        if (id as usize) >= vis {
                            continue;
                        }
                        let x = scores[i];
                        if x as f64 > lower_bar {
                            heap_offer(ids, hd, &mut bs.lb_len[r], id, b.lower(x));
                            bs.bars[r] = heap_bar(hd, bs.lb_len[r]);
                            lower_bar = b.lower_bar(bs.bars[r]);
                        }
                        bs.found.push((r as u32, id, b.upper(x)));
                    }
                }
            }
        }
    }

    /// Offers the keys of `bs.found` (see [`Self::prescan_cell`]) whose upper bound
    /// passes their row's final bar to the row's heap with exact dots: grouped by
    /// row (stable: in cell order), one [`dots`] call per row.
    fn offer_found(&self, q: Rows<'_>, k: usize, bs: &mut BatchScratch) {
        let b = q.rows;
        bs.found_start.clear();
        bs.found_start.resize(b + 1, 0);
        for &(r, _, ub) in &bs.found {
            if ub > bs.bars[r as usize] {
                bs.found_start[r as usize + 1] += 1;
            }
        }
        for r in 0..b {
            bs.found_start[r + 1] += bs.found_start[r];
        }
        bs.fill.clear();
        bs.fill.extend_from_slice(&bs.found_start[..b]);
        let n = bs.found_start[b] as usize;
        bs.pass.resize(n, 0);
        for &(r, id, ub) in &bs.found {
            if ub > bs.bars[r as usize] {
                bs.pass[bs.fill[r as usize] as usize] = id;
                bs.fill[r as usize] += 1;
            }
        }
        bs.exact.resize(n, 0.0);
        for r in 0..b {
            let (a, e) = (bs.found_start[r] as usize, bs.found_start[r + 1] as usize);
            if a == e {
                continue;
            }
            dots(q.row(r), &self.keys, &bs.pass[a..e], &mut bs.exact[a..e]);
            let (ids, hd) = (&mut bs.saved_ids[r * k..(r + 1) * k], &mut bs.saved_dots[r * k..(r + 1) * k]);
            for (&id, &x) in bs.pass[a..e].iter().zip(&bs.exact[a..e]) {
                heap_offer(ids, hd, &mut bs.saved_len[r], id, x);
            }
        }
    }

    /// Offers the upper-level keys collected in `s.upper` to `top`: into an empty
    /// list, the best `k` by one selection, stored ascending (a valid min-heap)
    /// instead of one heap update per key; else one by one.
    fn keep_upper(&self, top: &mut TopK, s: &mut Scratch, k: usize) {
        let up = &mut s.upper;
        if up.is_empty() {
            return;
        }
        if !top.is_empty() {
            up.iter().for_each(|&(x, id)| top.offer_one(id, x, usize::MAX));
            return;
        }
        if up.len() > k {
            up.select_nth_unstable_by(k - 1, by_score_desc);
            up.truncate(k);
        }
        up.sort_unstable_by(|a, b| by_score_desc(b, a));
        let scored = top.scored;
        top.load_sorted_ascending(up, k, scored);
    }

    /// Selects the parents to expand among a whole level, given as contiguous
    /// `scores`/`ids` (ids ascending): the same set as [`Self::offer_selected`] (the
    /// best `fov` by score, ties to the smaller id). A few bisection steps on the
    /// score, each a vector count ([`count_at_least`]), bracket the `fov`-th best
    /// score in `[a, b)`; one pass keeps the scores `>= a`, and an exact selection
    /// runs among the few in `[a, b)` only. The keys that may make the top `k` are
    /// appended to `s.upper` (see [`Self::keep_upper`]). Returns false, doing
    /// nothing, when it does not apply (scores not finite, `fov < k`, the selected
    /// subtrees hold fewer than `k` keys, or keys are hidden): the caller then takes
    /// the general path.
    #[allow(clippy::too_many_arguments)]
    fn select_block(
        &self,
        top: &mut TopK,
        scores: &[f32],
        ids: &[u32],
        fov: usize,
        k: usize,
        vis: usize,
        s: &mut Scratch,
        expand: &mut Vec<u32>,
    ) -> bool {
        let n = scores.len();
        let (lo, hi) = min_max(scores);
        if n == 0 || !lo.is_finite() || !hi.is_finite() || fov < k || vis < self.len() {
            return false;
        }
        // Positions (into `scores`) of the selected parents.
        let mut pos = std::mem::take(&mut s.selected);
        pos.clear();
        // Scores `>= bar` may make the top k (offered), the others cannot.
        let mut bar = f32::NEG_INFINITY;
        if fov >= n {
            pos.extend(0..n as u32);
        } else {
            // Invariant: count(>= a) >= fov > count(>= b).
            let (mut a, mut b) = (lo, f32::INFINITY);
            let mut mid = lo + (hi - lo) * (1.0 - fov as f32 / n as f32);
            for _ in 0..8 {
                if !(mid > a && mid < b) {
                    break;
                }
                if count_at_least(scores, mid) >= fov {
                    a = mid;
                } else {
                    b = mid;
                }
                mid = if b.is_finite() { a + (b - a) * 0.5 } else { a + (hi - a) * 0.5 };
            }
            // Branch-free pass keeping the positions `>= a` (about `fov`), then the
            // ones `>= b` are in and the boundary `[a, b)` fills the rest.
            pos.resize(n, 0);
            let mut w = 0;
            for (i, &x) in scores.iter().enumerate() {
                pos[w] = i as u32;
                w += (x >= a) as usize;
            }
            pos.truncate(w);
            s.cand.clear();
            let mut wp = 0;
            for j in 0..pos.len() {
                let i = pos[j];
                let x = scores[i as usize];
                if x >= b {
                    pos[wp] = i;
                    wp += 1;
                } else {
                    // Ids ascend with the position: ties still go to the smaller id.
                    s.cand.push((x, i));
                }
            }
            pos.truncate(wp);
            let need = fov - wp;
            if need < s.cand.len() {
                s.cand.select_nth_unstable_by(need, by_score_desc);
            }
            pos.extend(s.cand[..need].iter().map(|c| c.1));
            // The k-th best is at least `a` when `fov >= k`... and, when at least k
            // are `>= b`, at least `b`.
            bar = if wp >= k { b } else { a };
        }
        // Every subtree holds its root: `k` parents hold at least `k` keys.
        let ok =
            pos.len() >= k || pos.iter().map(|&i| self.subtree[ids[i as usize] as usize] as usize).sum::<usize>() >= k;
        if ok {
            expand.clear();
            expand.extend(pos.iter().map(|&i| ids[i as usize]));
            // Only the selected can make the top k (as in `offer_selected`), and
            // of those only the ones scoring at least the k-th best of them.
            for &i in &pos {
                if scores[i as usize] >= bar {
                    s.upper.push((scores[i as usize], ids[i as usize]));
                }
            }
            top.scored += n;
        }
        s.selected = pos;
        ok
    }

    /// Offers `cand` to `top` and selects the parents to expand. When every key is
    /// visible and `fov >= k`, only the selected (best) candidates can make the top
    /// `k`, so only they are offered (same result, far fewer heap updates).
    fn offer_selected(
        &self,
        top: &mut TopK,
        cand: &mut [(f32, u32)],
        fov: usize,
        k: usize,
        vis: usize,
        expand: &mut Vec<u32>,
    ) {
        if vis < self.len() || fov < k {
            top.offer(cand, vis);
            self.select_expand(cand, fov, k, expand);
        } else {
            self.select_expand(cand, fov, k, expand);
            let n = expand.len().min(cand.len());
            top.offer(&cand[..n], vis);
            top.scored += cand.len() - n;
        }
    }

    /// The parents to expand: the best `fov` by score, extended until their subtrees
    /// hold at least `k` keys (IceFormer's `min_num_finest_level_points`).
    fn select_expand(&self, cand: &mut [(f32, u32)], fov: usize, k: usize, expand: &mut Vec<u32>) {
        expand.clear();
        let take = fov.min(cand.len());
        if take < cand.len() {
            // A lower bound on the take-th best score: the smallest of the maxima of
            // `take` disjoint groups (each group holds a score >= it). Everything
            // below it is out; the few that pass are selected exactly.
            let n = cand.len();
            let g = n / take;
            let mut lb = f32::INFINITY;
            let mut nan = false;
            for i in 0..take {
                let end = if i + 1 == take { n } else { (i + 1) * g };
                let m = cand[i * g..end].iter().fold(f32::NEG_INFINITY, |m, c| {
                    nan |= c.0.is_nan();
                    m.max(c.0)
                });
                lb = lb.min(m);
            }
            let mut w = n;
            if lb.is_finite() && !nan {
                // Branch-free compaction: survivors are rare and scattered.
                w = 0;
                for i in 0..n {
                    let keep = cand[i].0 >= lb;
                    cand.swap(w, i);
                    w += keep as usize;
                }
            }
            if w > take {
                cand[..w].select_nth_unstable_by(take, by_score_desc);
            }
        }
        let mut total: usize = cand[..take].iter().map(|c| self.subtree[c.1 as usize] as usize).sum();
        if total >= k {
            // Order does not matter past this point (every selected parent is
            // expanded); skip the sort.
            expand.extend(cand[..take].iter().map(|c| c.1));
            return;
        }
        cand[..take].sort_unstable_by(by_score_desc);
        expand.extend(cand[..take].iter().map(|c| c.1));
        if take < cand.len() {
            cand[take..].sort_unstable_by(by_score_desc);
            for c in &cand[take..] {
                if total >= k {
                    break;
                }
                total += self.subtree[c.1 as usize] as usize;
                expand.push(c.1);
            }
        }
    }

    /// Appends one key (incremental insertion, the causal / decode path). A key whose
    /// squared norm exceeds the bound `M^2` rebuilds the index (module doc).
    pub fn insert(&mut self, key: &[f32]) {
        assert_eq!(key.len(), self.d, "key width differs from the index's");
        let ns = dot(key, key);
        if ns > self.max_norm_sq {
            let mut keys = std::mem::take(&mut self.keys);
            keys.extend_from_slice(key);
            let (ratio, params, int8) = (self.ratio, self.params.clone(), self.int8);
            *self = Self::build_owned(keys, self.d, &params, Some(ns * REBUILD_HEADROOM), ratio);
            self.set_int8(int8);
            return;
        }
        let id = self.len() as u32;
        let nidx = self.params.num_indices().max(1);
        let aug = (self.max_norm_sq - ns).max(0.0).sqrt();
        self.keys.extend_from_slice(key);
        self.norm_sq.push(ns);
        self.aug.push(aug);
        for i in 0..nidx {
            let p = dot(&self.proj[i * self.d..(i + 1) * self.d], key) + aug * self.proj_aug[i];
            self.kproj.push(p);
        }
        self.parent.push(NONE);
        self.parent_dist.push(0.0);
        self.cell_of.push(NONE);
        self.subtree.push(1);
        let top = self.num_levels - 1;
        let mut level = 0;
        let mut step = self.ratio;
        while level < top && (id as usize).is_multiple_of(step) {
            level += 1;
            step = step.saturating_mul(self.ratio);
        }
        // A level whose parent level is empty cannot take keys yet: move up.
        while level < top && self.by_level[level + 1].is_empty() {
            level += 1;
        }
        if self.by_level[top].is_empty() {
            level = top;
        }
        self.level.push(level as u8);
        self.by_level[level].push(id);
        self.upper_pos.push(NONE);
        if level > 0 {
            self.add_upper(id);
            // Appended out of level order: the per-level blocks are gone.
            self.upper_by_level = false;
        }
        if level == top {
            self.attach(id, NONE, 0.0);
        } else {
            let mut s = Scratch::default();
            let (p, dist) = self.find_parent(id, level, &mut s);
            self.attach(id, p, dist);
        }
        if level > 0 {
            // Re-parenting: keys one level down that are closer to the new key.
            let lower = self.by_level[level - 1].clone();
            for low in lower {
                let dist = self.key_dist(low, id);
                if self.parent_dist[low as usize] - dist > 1e-8 {
                    self.detach(low);
                    self.attach(low, id, dist);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `||T_Q(q) - T_K(k)||^2` in f64 from the index's augmentation.
    fn transformed_dist(idx: &KnnIndex, q: &[f32], id: u32) -> f64 {
        let qn = q.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let k = idx.key(id);
        let mut s: f64 = q.iter().zip(k).map(|(a, b)| (*a as f64 / qn - *b as f64).powi(2)).sum();
        s += (idx.aug[id as usize] as f64).powi(2);
        s
    }

    #[test]
    fn the_mips_transform_ranks_keys_like_the_inner_product() {
        let (n, d) = (500, 16);
        let mut r = SplitMix64::new(3);
        // Keys of very different norms: the augmentation is what makes this work.
        let keys: Vec<f32> = (0..n * d).map(|i| r.normal() as f32 * (1.0 + (i / d % 7) as f32)).collect();
        let idx = KnnIndex::build(Rows::new(&keys, n, d), &KnnParams::default(), None);
        let m2 = idx.max_norm_sq() as f64;
        for _ in 0..20 {
            let q: Vec<f32> = (0..d).map(|_| r.normal() as f32).collect();
            let qn = q.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            let mut by_ip: Vec<u32> = (0..n as u32).collect();
            let ip = |j: u32| q.iter().zip(idx.key(j)).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
            by_ip.sort_by(|a, b| ip(*b).total_cmp(&ip(*a)));
            let mut by_dist = by_ip.clone();
            by_dist.sort_by(|a, b| transformed_dist(&idx, &q, *a).total_cmp(&transformed_dist(&idx, &q, *b)));
            assert_eq!(by_ip[..50], by_dist[..50]);
            // ||T_Q q - T_K k||^2 = 1 + M^2 - 2 q.k / |q| (section 1.2).
            for j in [0u32, 7, 99] {
                let want = 1.0 + m2 - 2.0 * ip(j) / qn;
                assert!((transformed_dist(&idx, &q, j) - want).abs() < 1e-3 * (1.0 + want.abs()));
            }
        }
    }

    #[test]
    fn every_key_sits_one_level_below_its_parent_and_in_its_cell() {
        let (n, d) = (3000, 8);
        let mut r = SplitMix64::new(9);
        let keys: Vec<f32> = (0..n * d).map(|_| r.normal() as f32).collect();
        for scan in [false, true] {
            let p = KnnParams { construction_scan: scan, ..Default::default() };
            let mut idx = KnnIndex::build(Rows::new(&keys, 2000, d), &p, None);
            for j in 2000..n {
                idx.insert(&keys[j * d..(j + 1) * d]);
            }
            let mut seen = 0;
            for id in 0..n as u32 {
                let par = idx.parent[id as usize];
                let cell = if par == NONE {
                    assert_eq!(idx.level[id as usize] as usize, idx.levels() - 1);
                    0
                } else {
                    assert_eq!(idx.level[par as usize], idx.level[id as usize] + 1);
                    idx.cell_of[par as usize] as usize
                };
                assert!(idx.cells[cell].ids.contains(&id));
                seen += 1;
            }
            assert_eq!(seen, idx.cells.iter().map(Cell::len).sum::<usize>());
            let top_sub: u32 = idx.cells[0].ids.iter().map(|&t| idx.subtree[t as usize]).sum();
            assert_eq!(top_sub as usize, n, "subtree counts add up");
        }
    }

    fn random_keys(n: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut r = SplitMix64::new(seed);
        (0..n * d).map(|_| r.normal() as f32).collect()
    }

    /// The `k` best ids by an f64 dot product (ties to the smaller id).
    fn brute_top(keys: &[f32], d: usize, q: &[f32], k: usize) -> Vec<u32> {
        let n = keys.len() / d;
        let mut all: Vec<(f64, u32)> = (0..n)
            .map(|j| (q.iter().zip(&keys[j * d..]).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>(), j as u32))
            .collect();
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all[..k.min(n)].iter().map(|x| x.1).collect()
    }

    #[test]
    fn exact_construction_attaches_every_key_to_its_nearest_key_one_level_up() {
        let (n, d) = (2500, 12);
        let keys = random_keys(n, d, 5);
        let p = KnnParams { construction_scan: true, construction_field_of_view: usize::MAX, ..Default::default() };
        let idx = KnnIndex::build(Rows::new(&keys, n, d), &p, None);
        assert!(idx.exact_construction(0) && idx.upper_by_level);
        let m2 = idx.max_norm_sq() as f64;
        for id in 0..n as u32 {
            let l = idx.level[id as usize] as usize;
            if l + 1 == idx.levels() {
                continue;
            }
            // Transformed distance in f64, over every key of the level above.
            let dist = |a: u32, b: u32| {
                let dot: f64 = idx.key(a).iter().zip(idx.key(b)).map(|(x, y)| *x as f64 * *y as f64).sum();
                m2 - dot - idx.aug[a as usize] as f64 * idx.aug[b as usize] as f64
            };
            let want = idx.by_level[l + 1].iter().map(|&p| dist(id, p)).fold(f64::INFINITY, f64::min);
            let got = dist(id, idx.parent[id as usize]);
            assert!(got - want <= 1e-4 * (1.0 + want.abs()), "key {id}: parent at {got}, nearest at {want}");
        }
    }

    #[test]
    fn batched_queries_with_a_full_field_of_view_return_the_brute_force_top_k() {
        // Every cell expanded: the search is exhaustive, so the result is the exact
        // top k. 700 rows span several query blocks and a short last one.
        let (n, d, l, k) = (1500, 16, 700, 7);
        let keys = random_keys(n, d, 11);
        let queries = random_keys(l, d, 12);
        for levels in [2, 3] {
            let p = KnnParams {
                k,
                levels,
                construction_scan: true,
                construction_field_of_view: usize::MAX,
                query_field_of_view: Some(n),
                ..Default::default()
            };
            let idx = KnnIndex::build(Rows::new(&keys, n, d), &p, None);
            let mut top = TopK::new(k);
            let mut seen = vec![false; l];
            idx.query_batch(Rows::new(&queries, l, d), n, k, &mut top, |r, t| {
                assert!(!seen[r], "row {r} answered twice");
                seen[r] = true;
                let want = brute_top(&keys, d, &queries[r * d..(r + 1) * d], k);
                assert_eq!(t.ids(), &want[..], "levels {levels} row {r}");
                assert_eq!(t.scored(), n, "every key scored once");
            });
            assert!(seen.iter().all(|&x| x));
        }
    }

    #[test]
    fn batched_queries_match_single_queries_and_do_not_depend_on_the_blocking() {
        let (n, d, l, k) = (3000, 16, QUERY_BLOCK + 37, 10);
        let keys = random_keys(n, d, 21);
        let queries = random_keys(l, d, 22);
        for fov in [10, 40] {
            let p = KnnParams {
                k,
                construction_scan: true,
                construction_field_of_view: usize::MAX,
                query_field_of_view: Some(fov),
                ..Default::default()
            };
            let idx = KnnIndex::build(Rows::new(&keys, n, d), &p, None);
            let (mut top, mut one) = (TopK::new(k), TopK::new(k));
            let mut whole = vec![Vec::new(); l];
            idx.query_batch(Rows::new(&queries, l, d), n, k, &mut top, |r, t| whole[r] = t.ids().to_vec());
            let mut differ = 0;
            for r in 0..l {
                let q = &queries[r * d..(r + 1) * d];
                idx.query(q, n, k, &mut one);
                differ += (one.ids() != &whole[r][..]) as usize;
                // The same row alone (a block of one row goes through `query`) and
                // inside a block of two: identical to the big block.
                let r2 = if r + 1 < l { r + 1 } else { r - 1 };
                let (lo, hi) = (r.min(r2), r.max(r2));
                let two = [&queries[lo * d..(lo + 1) * d], &queries[hi * d..(hi + 1) * d]].concat();
                idx.query_batch(Rows::new(&two, 2, d), n, k, &mut top, |j, t| {
                    let row = if j == 0 { lo } else { hi };
                    assert_eq!(t.ids(), &whole[row][..], "row {row} in a block of two");
                });
            }
            // Only near-ties may differ (other summation order of the dots).
            assert!(differ <= l / 50, "fov {fov}: {differ} rows differ from `query`");
        }
    }

    #[test]
    fn the_int8_prescan_retrieves_what_the_f32_scan_does() {
        // Keys of very different norms in shared cells, queries of several scales,
        // causal visibility, and an index grown by insertion (cells re-quantized as
        // keys arrive, one key past the norm bound forcing a rebuild). The int8
        // pre-scan (forced on: the scalar kernel where the CPU has no VNNI) must
        // retrieve the same keys as the f32 scan; only the dots' rounding differs.
        let (n0, n, d, l, k) = (1800, 2400, 24, 600, 8);
        let mut keys = random_keys(n, d, 31);
        for (i, row) in keys.chunks_mut(d).enumerate() {
            let s = [0.05, 1.0, 6.0][i % 3] * if i == 2100 { 40.0 } else { 1.0 };
            row.iter_mut().for_each(|x| *x *= s);
        }
        let mut queries = random_keys(l, d, 32);
        for (i, row) in queries.chunks_mut(d).enumerate() {
            let s = [1e-3, 1.0, 30.0][i % 3];
            row.iter_mut().for_each(|x| *x *= s);
        }
        let mut compared = 0;
        for levels in [2, 3] {
            let p = KnnParams {
                k,
                levels,
                construction_scan: true,
                construction_field_of_view: usize::MAX,
                query_field_of_view: Some(12),
                ..Default::default()
            };
            let mut grown = KnnIndex::build(Rows::new(&keys[..n0 * d], n0, d), &p, None);
            grown.set_int8(true);
            grown.expect_total(n);
            for row in keys[n0 * d..].chunks(d) {
                grown.insert(row);
            }
            assert!(grown.int8(), "a rebuild keeps the int8 setting");
            let whole = KnnIndex::build(Rows::new(&keys, n, d), &p, None);
            for idx in [grown, whole] {
                for vis in [n, 2000] {
                    let mut results = Vec::new();
                    for int8 in [true, false] {
                        let mut i = idx.clone();
                        i.set_int8(int8);
                        let mut got = vec![(Vec::new(), Vec::new(), 0); l];
                        let mut top = TopK::new(k);
                        i.query_batch(Rows::new(&queries, l, d), vis, k, &mut top, |r, t| {
                            got[r] = (t.ids().to_vec(), t.dots().to_vec(), t.scored())
                        });
                        results.push(got);
                    }
                    for (r, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
                        assert_eq!(a.2, b.2, "row {r}: scored counts");
                        assert_eq!(a.1.len(), b.1.len(), "row {r}: retrieved counts");
                        for (x, y) in a.1.iter().zip(&b.1) {
                            assert!(
                                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                                "levels {levels} vis {vis} row {r}: {a:?} vs {b:?}"
                            );
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert_eq!(compared, 2 * 2 * 2 * l);
    }

    #[test]
    fn heap_offer_keeps_the_k_best_with_the_smallest_at_the_root() {
        // Against a sort of everything offered: scores drawn from a few values (ties)
        // and from a wide range, every capacity from 1 to 20 (heaps of 1 to 5 levels).
        let mut rng = SplitMix64::new(9);
        for k in 1..=20usize {
            for distinct in [3u64, 1 << 20] {
                let (mut ids, mut dots, mut len) = (vec![0u32; k], vec![0.0f32; k], 0u32);
                let mut all = Vec::new();
                for id in 0..200u32 {
                    let x = (rng.next_u64() % distinct) as f32 - (distinct / 2) as f32;
                    heap_offer(&mut ids, &mut dots, &mut len, id, x);
                    all.push(x);
                    let n = len as usize;
                    assert_eq!(n, all.len().min(k));
                    // Min-heap order, and the kept scores are the n best offered.
                    for i in 1..n {
                        assert!(dots[(i - 1) / 2] <= dots[i], "k {k}: heap order at {i}");
                    }
                    let mut want = all.clone();
                    want.sort_by(|a, b| b.total_cmp(a));
                    let mut got = dots[..n].to_vec();
                    got.sort_by(|a, b| b.total_cmp(a));
                    assert_eq!(got, want[..n], "k {k}");
                    for i in 0..n {
                        assert_eq!(all[ids[i] as usize], dots[i], "k {k}: id {} carries its score", ids[i]);
                    }
                }
            }
        }
    }

    #[test]
    fn whole_level_selection_picks_the_best_by_score_then_smaller_id() {
        let (n, d) = (2000, 8);
        let keys = random_keys(n, d, 31);
        let p = KnnParams { construction_scan: true, ..Default::default() };
        let idx = KnnIndex::build(Rows::new(&keys, n, d), &p, None);
        let mut s = Scratch::default();
        let mut r = SplitMix64::new(4);
        for case in 0..200 {
            let m = 1 + case % 300;
            let ids: Vec<u32> = (0..m as u32).collect();
            // Coarse scores: many exact ties, including at the boundary.
            let scores: Vec<f32> = (0..m).map(|_| (r.normal() * 3.0).round() as f32).collect();
            let (fov, k) = (1 + case % 40, 1);
            let mut top = TopK::new(k);
            let mut expand = Vec::new();
            assert!(idx.select_block(&mut top, &scores, &ids, fov, k, n, &mut s, &mut expand));
            let mut want: Vec<(f32, u32)> = scores.iter().copied().zip(ids.iter().copied()).collect();
            want.sort_by(by_score_desc);
            let mut want: Vec<u32> = want[..fov.min(m)].iter().map(|x| x.1).collect();
            want.sort_unstable();
            expand.sort_unstable();
            assert_eq!(expand, want, "case {case}");
        }
    }
}
