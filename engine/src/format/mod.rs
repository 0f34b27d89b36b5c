//! The `.floe` model file: a fixed little-endian header, the metadata (graph and
//! tensor table, postcard-encoded), and a data section where every tensor starts
//! 64-byte aligned. Loading memory-maps the file and validates every offset,
//! length, alignment, dtype and shape before any tensor view exists; weights are
//! then used in place. See docs/format.md.

pub mod header;
pub mod load;
pub mod metadata;
pub mod table;
pub mod write;

pub use header::{FORMAT_VERSION, MIN_FORMAT_VERSION};
pub use load::Model;
pub use metadata::{Layout, ModelInfo, Quantization, QuantizedTensor, TargetRecord, TensorEntry};
pub use write::{to_bytes, write, write_for_target, write_to, write_to_for_target};
