//! Streaming execution: a model runs chunk by chunk along a named time axis,
//! with each op's state carried from one push to the next.
//!
//! ```text
//! Graph --analyze(T)--> Analysis (per node: stateless / stateful / blocking)
//!       --step_graph--> StepGraph (state as explicit inputs/outputs)
//!       --StreamSession::push(chunk)--> outputs for the chunk's frames
//! ```
//!
//! `windowed:N` mode instead re-runs the whole model on a sliding window of the
//! last N frames, for models that cannot stream (the usual fallback).

mod analysis;
pub mod frames;
mod rewrite;
mod session;
mod spec;

pub use analysis::{analyze, Analysis, NodeClass, NodeReport, StateKind};
pub use rewrite::{step_graph, KvMask, StateSlot, StepGraph, StreamOptions, KV_CAPACITY};
pub use session::{StreamConfig, StreamMode, StreamSession};
pub use spec::StreamSpec;
