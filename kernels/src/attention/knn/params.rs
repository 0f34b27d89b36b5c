//! The knobs of IceFormer k-NN attention, with the paper's / README defaults
//! (../shared/ALGORITHMS.md section 1.3, "README / example.py parameters"), and a
//! name-based setter so a CLI string such as `k=20,levels=3,seed=7` maps onto them.

/// Parameters of the Prioritized-DCI index and of the k-NN attention built on it.
///
/// Defaults are IceFormer's README values; only `seed` is ours (IceFormer seeds
/// from the clock, so its runs are not reproducible).
#[derive(Clone, Debug, PartialEq)]
pub struct KnnParams {
    /// Keys each query attends to (`top_k`; IceFormer README: 20). A query that sees
    /// at most `k` keys attends to all of them, exactly.
    pub k: usize,
    /// `L_c`: composite indices. A key becomes a candidate once it has been pulled
    /// from every simple index of one composite index, so more composites mean more
    /// chances (more recall, more work).
    pub num_comp_indices: usize,
    /// `m`: simple indices (1-D random projections) per composite index.
    pub num_simp_indices: usize,
    /// Levels of the tree. Each key lives on one level; a key is promoted to the next
    /// level with probability `n^(-1/levels)`, so cells hold about `n^(1/levels)`
    /// children.
    pub levels: usize,
    /// Construction: parents kept per level while looking for a new key's parent.
    /// `usize::MAX` (`construction_field_of_view=all`) keeps them all: with
    /// `construction_scan`, every key is then attached to its exact nearest key one
    /// level up, computed by one GEMM per block of keys (the fast bulk build).
    pub construction_field_of_view: usize,
    /// Construction: fraction of a cell retrieved before the search may stop
    /// (`num_points_to_retrieve = ceil(prop * cell size)`).
    pub construction_prop_to_retrieve: f32,
    /// Construction: score every child of a cell of at most [`super::CLOSEST`] keys
    /// (as the query does) instead of IceFormer's projection-ordered search that
    /// stops after `ceil(prop * cell)` candidates. Off = IceFormer; on = exact
    /// parents within the visited cells (better trees on unclustered keys).
    pub construction_scan: bool,
    /// Query: parents kept per level and expanded on the next one. `None` = `k`.
    pub query_field_of_view: Option<usize>,
    /// Query (ours, 0 = off = IceFormer): keep at least this fraction of the
    /// candidate parents of a level, `ceil(prop * candidates)`, when that is more
    /// than `query_field_of_view`. Recall depends on the fraction of a level that
    /// is expanded, so one value serves every sequence length where a fixed field
    /// of view would not (see [`KnnParams::recommended`]).
    pub query_prop_field_of_view: f32,
    /// Query: fraction of a cell retrieved (exact dot computed) before the search
    /// of that cell may stop.
    pub query_prop_to_retrieve: f32,
    /// Query: projections to visit per simple index before the search may stop
    /// (`num_projs_to_visit = max(num_to_visit * m, ceil(prop_to_visit * cell * m))`).
    /// `None` = the number of keys (the README passes the sequence length).
    pub num_to_visit: Option<usize>,
    /// Query: fraction of a cell's projections to visit (see `num_to_visit`).
    pub prop_to_visit: f32,
    /// Seed of the projection directions and of the level draws of a bulk build.
    pub seed: u64,
}

impl Default for KnnParams {
    fn default() -> Self {
        KnnParams {
            k: 20,
            num_comp_indices: 2,
            num_simp_indices: 4,
            levels: 3,
            construction_field_of_view: 5,
            construction_prop_to_retrieve: 0.002,
            construction_scan: false,
            query_field_of_view: None,
            query_prop_field_of_view: 0.0,
            query_prop_to_retrieve: 0.8,
            num_to_visit: None,
            prop_to_visit: 1.0,
            seed: 0x1CE_F0E,
        }
    }
}

fn parse_usize(key: &str, value: &str) -> Result<usize, String> {
    value.trim().parse::<usize>().map_err(|e| format!("knn parameter `{key}`: `{value}` is not a count ({e})"))
}

fn parse_pos(key: &str, value: &str) -> Result<usize, String> {
    match parse_usize(key, value)? {
        0 => Err(format!("knn parameter `{key}` must be at least 1")),
        v => Ok(v),
    }
}

fn parse_prop(key: &str, value: &str) -> Result<f32, String> {
    let v =
        value.trim().parse::<f32>().map_err(|e| format!("knn parameter `{key}`: `{value}` is not a number ({e})"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("knn parameter `{key}` must be a finite number >= 0, got `{value}`"))
    }
}

fn parse_opt(key: &str, value: &str) -> Result<Option<usize>, String> {
    match value.trim() {
        "auto" | "none" | "" => Ok(None),
        v => parse_pos(key, v).map(Some),
    }
}

impl KnnParams {
    /// Our recommended preset for prefill (`preset=recommended` in a list), chosen
    /// on the peaked workload of `kernels/benches/attention_data.rs` (d = 64,
    /// L = S from 1K to 16K; docs/attention.md has the figures): IceFormer's
    /// defaults except
    ///
    /// - `k = 8`: on peaked attention the weight sits on a few keys, so 8 keep the
    ///   output (cosine 1.0000 against exact with an exhaustive search) at a smaller
    ///   per-query heap;
    /// - `construction_scan = true`, `construction_field_of_view = all`: every key is
    ///   attached to its exact nearest key one level up (one GEMM per block of keys),
    ///   the tree quality recall depends on;
    /// - `levels = 2`: `sqrt(n)` parents of about `sqrt(n)` keys each (64 x 64 at
    ///   L = 4096). Big cells are scanned at the int8 and FMA rate with little
    ///   per-cell bookkeeping; three levels scan fewer keys for the same cosine but
    ///   spend more per key (measured slower at every length from 1K to 16K);
    /// - `query_field_of_view = 24`, `query_prop_field_of_view = 0.34`: a query
    ///   expands its best 34% of the parents (at least 24), which keeps the output
    ///   cosine >= 0.99 at every length tried (0.30 gave 0.9892 at L = 8192).
    pub fn recommended() -> Self {
        KnnParams {
            k: 8,
            construction_scan: true,
            construction_field_of_view: usize::MAX,
            levels: 2,
            query_field_of_view: Some(24),
            query_prop_field_of_view: 0.34,
            ..KnnParams::default()
        }
    }

    /// Sets one field by name (`k`, `num_comp_indices` or `lc`, `num_simp_indices` or
    /// `m`, `levels`, `construction_field_of_view`, `construction_prop_to_retrieve`, `construction_scan`,
    /// `query_field_of_view` or `field_of_view`, `query_prop_to_retrieve` or
    /// `prop_to_retrieve`, `query_prop_field_of_view` or `prop_field_of_view`,
    /// `num_to_visit`, `prop_to_visit`, `seed`), or replaces them all by a preset
    /// (`preset=iceformer`, the defaults, or `preset=recommended`, see
    /// [`KnnParams::recommended`]; later items apply on top). Optional counts
    /// accept `auto`; `construction_field_of_view` accepts `all`. The error names the key and the offending value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        match key.trim() {
            "k" | "top_k" => self.k = parse_pos(key, value)?,
            "num_comp_indices" | "lc" => self.num_comp_indices = parse_pos(key, value)?,
            "num_simp_indices" | "m" => self.num_simp_indices = parse_pos(key, value)?,
            "levels" | "num_levels" => self.levels = parse_pos(key, value)?,
            "construction_field_of_view" => {
                self.construction_field_of_view = match value.trim() {
                    "all" => usize::MAX,
                    v => parse_pos(key, v)?,
                }
            }
            "construction_prop_to_retrieve" => self.construction_prop_to_retrieve = parse_prop(key, value)?,
            "construction_scan" => {
                self.construction_scan = match value.trim() {
                    "1" | "true" | "on" => true,
                    "0" | "false" | "off" => false,
                    v => return Err(format!("knn parameter `construction_scan`: `{v}` is not a boolean")),
                }
            }
            "query_field_of_view" | "field_of_view" => self.query_field_of_view = parse_opt(key, value)?,
            "query_prop_field_of_view" | "prop_field_of_view" => {
                self.query_prop_field_of_view = parse_prop(key, value)?
            }
            "query_prop_to_retrieve" | "prop_to_retrieve" => self.query_prop_to_retrieve = parse_prop(key, value)?,
            "num_to_visit" => self.num_to_visit = parse_opt(key, value)?,
            "prop_to_visit" => self.prop_to_visit = parse_prop(key, value)?,
            "preset" => {
                *self = match value.trim() {
                    "iceformer" | "default" => KnnParams::default(),
                    "recommended" => KnnParams::recommended(),
                    v => return Err(format!("knn parameter `preset`: unknown preset `{v}` (iceformer, recommended)")),
                }
            }
            "seed" => {
                self.seed = value.trim().parse::<u64>().map_err(|e| format!("knn parameter `seed`: `{value}` ({e})"))?
            }
            other => return Err(format!("unknown knn parameter `{other}`")),
        }
        Ok(())
    }

    /// Applies a comma-separated list of `key=value` pairs (`"k=20,levels=3,seed=7"`)
    /// on top of `self`. Empty items are ignored.
    pub fn apply(&mut self, list: &str) -> Result<(), String> {
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) =
                item.split_once('=').ok_or_else(|| format!("knn parameter `{item}` is not of the form key=value"))?;
            self.set(key, value)?;
        }
        Ok(())
    }

    /// The defaults with `list` applied (see [`KnnParams::apply`]).
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut p = KnnParams::default();
        p.apply(list)?;
        Ok(p)
    }

    /// `L_c * m`: random projections of the index.
    pub fn num_indices(&self) -> usize {
        self.num_comp_indices * self.num_simp_indices
    }

    /// The query field of view (`k` unless set).
    pub fn query_fov(&self) -> usize {
        self.query_field_of_view.unwrap_or(self.k).max(1)
    }

    /// Parents kept among `candidates` of one level: the field of view, or the
    /// `query_prop_field_of_view` fraction of them when that is more.
    pub fn query_fov_for(&self, candidates: usize) -> usize {
        // A hair below the product before `ceil`: `0.2f32` is a little above 0.2,
        // and 0.2 of 320 candidates should keep 64, not 65.
        let prop = (self.query_prop_field_of_view as f64 * candidates as f64 * (1.0 - 1e-6)).ceil();
        self.query_fov().max(prop.min(usize::MAX as f64) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_iceformer_readme_values() {
        let p = KnnParams::default();
        assert_eq!((p.k, p.num_comp_indices, p.num_simp_indices, p.levels), (20, 2, 4, 3));
        assert_eq!((p.construction_field_of_view, p.construction_prop_to_retrieve), (5, 0.002));
        assert_eq!((p.query_fov(), p.query_prop_to_retrieve, p.num_to_visit, p.prop_to_visit), (20, 0.8, None, 1.0));
        assert_eq!((p.construction_scan, p.query_prop_field_of_view), (false, 0.0));
    }

    #[test]
    fn a_cli_list_sets_fields_by_name_and_rejects_bad_items() {
        let p = KnnParams::parse("k=8, levels=2,seed=7,lc=3,m=5,field_of_view=12,prop_to_retrieve=1").unwrap();
        assert_eq!((p.k, p.levels, p.seed, p.num_comp_indices, p.num_simp_indices), (8, 2, 7, 3, 5));
        assert_eq!((p.query_fov(), p.query_prop_to_retrieve), (12, 1.0));
        assert!(KnnParams::parse("k=0").is_err());
        assert!(KnnParams::parse("k").is_err());
        assert!(KnnParams::parse("bogus=1").unwrap_err().contains("bogus"));
        assert!(KnnParams::parse("prop_to_visit=-1").is_err());
        assert_eq!(KnnParams::parse("num_to_visit=auto").unwrap().num_to_visit, None);
        let p = KnnParams::parse("construction_field_of_view=all,prop_field_of_view=0.25").unwrap();
        assert_eq!((p.construction_field_of_view, p.query_prop_field_of_view), (usize::MAX, 0.25));
        assert!(KnnParams::parse("preset=fast").unwrap_err().contains("fast"));
    }

    #[test]
    fn a_preset_replaces_every_field_and_later_items_apply_on_top() {
        let p = KnnParams::parse("seed=3,preset=recommended,k=10").unwrap();
        assert_eq!(p, KnnParams { k: 10, ..KnnParams::recommended() });
        assert_eq!(KnnParams::parse("k=3,preset=iceformer").unwrap(), KnnParams::default());
    }

    #[test]
    fn the_proportional_field_of_view_keeps_a_fraction_of_the_candidates_or_the_fixed_one() {
        let p = KnnParams { query_field_of_view: Some(64), query_prop_field_of_view: 0.2, ..Default::default() };
        assert_eq!((p.query_fov_for(16), p.query_fov_for(320), p.query_fov_for(621)), (64, 64, 125));
        assert_eq!(KnnParams::default().query_fov_for(10_000), 20, "off by default");
    }
}
