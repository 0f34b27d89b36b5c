//! Graph passes: each a function over a graph, one per file.

pub mod channels_last;
pub mod dead_nodes;
pub mod fold_batch_norm;
pub mod fold_constants;
pub mod fuse_activation;
pub mod fuse_attention;
pub mod fuse_gelu;
pub mod fuse_layer_norm;
pub mod fuse_linear;
pub mod fuse_linear_attention;
pub mod lower_knn_attention;
pub mod quantize_weights;
pub mod shape_values;
pub mod spike_accumulate;
pub mod util;

pub use channels_last::channels_last;
pub use dead_nodes::{drop_unused_constants, remove_dead_nodes};
pub use fold_batch_norm::fold_batch_norm;
pub use fold_constants::{infer_and_fold, FoldOptions};
pub use fuse_activation::fuse_activation;
pub use fuse_attention::fuse_attention;
pub use fuse_gelu::fuse_gelu;
pub use fuse_layer_norm::fuse_layer_norm;
pub use fuse_linear::fuse_linear;
pub use fuse_linear_attention::fuse_linear_attention;
pub use lower_knn_attention::{lower_knn_attention, KnnLowering};
pub use quantize_weights::quantize_weights;
pub use spike_accumulate::spike_accumulate;
