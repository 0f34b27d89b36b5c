//! Graph passes: each a function over a graph, one per file.

pub mod dead_nodes;
pub mod fold_constants;
pub mod shape_values;

pub use dead_nodes::remove_dead_nodes;
pub use fold_constants::{infer_and_fold, FoldOptions};
