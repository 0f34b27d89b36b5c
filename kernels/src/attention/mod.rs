//! Attention kernels for one (batch, head) at a time, as pure functions on slices.
//!
//! - [`exact`]: scaled-dot-product attention tiled over keys with an online softmax,
//!   so the `L x S` score matrix never exists (memory `O(L * d)`).
//! - [`knn`]: IceFormer k-nearest-neighbour attention (Prioritized DCI over the
//!   MIPS-to-NN transformed keys; ../shared/ALGORITHMS.md section 1).
//!
//! Operands are strided rows ([`Rows`]), so heads can be read straight out of a
//! `[B, S, H * D]` or `[B, H, S, D]` tensor without a transpose.

pub mod exact;
pub mod knn;
pub(crate) mod rows;

/// `rows` rows of `cols` values; row `i` starts at `data[i * stride]`.
/// A stride of 0 repeats row 0 (a broadcast bias row).
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> Rows<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Rows { data, rows, cols, stride: cols }
    }

    /// Row `i` (panics when out of bounds, like slice indexing).
    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        let o = i * self.stride;
        &self.data[o..o + self.cols]
    }

    /// Rows `range` of this view.
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> Rows<'a> {
        assert!(range.end <= self.rows, "rows {range:?} of {}", self.rows);
        let start = (range.start * self.stride).min(self.data.len());
        Rows { data: &self.data[start..], rows: range.len(), ..*self }
    }

    /// True when every row lies inside `data`.
    pub fn in_bounds(&self) -> bool {
        self.rows == 0 || (self.rows - 1) * self.stride + self.cols <= self.data.len()
    }
}

/// Which keys each query sees: always a prefix of the keys.
///
/// Query `i` sees keys `0 .. min(valid_keys, i + past + 1)` when causal (upper-left
/// aligned after `past` cached keys, as ONNX `Attention` and torch SDPA define it),
/// else `0 .. valid_keys` (the rest is key padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Visibility {
    pub valid_keys: usize,
    pub causal_past: Option<usize>,
}

impl Visibility {
    /// Every one of `keys` keys visible to every query.
    pub fn all(keys: usize) -> Self {
        Visibility { valid_keys: keys, causal_past: None }
    }

    /// Causal with `past` cached keys before the first query.
    pub fn causal(keys: usize, past: usize) -> Self {
        Visibility { valid_keys: keys, causal_past: Some(past) }
    }

    /// How many leading keys query `i` sees.
    #[inline]
    pub fn visible(&self, i: usize) -> usize {
        match self.causal_past {
            Some(p) => self.valid_keys.min(i.saturating_add(p).saturating_add(1)),
            None => self.valid_keys,
        }
    }
}
