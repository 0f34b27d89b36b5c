//! floe-convert: model importers and the conversion pipeline.
//!
//! Today: ONNX (`onnx::load`) into floe's graph IR, opset-aware, with constant and
//! shape folding. The `.floe` writer and target lowering build on this.

pub mod conformance;
pub mod onnx;
pub mod pipeline;

pub use onnx::{load, load_bytes, ImportError, ImportedModel};
