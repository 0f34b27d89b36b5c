//! floe-engine: tensors, the graph IR, ops, passes and the executor.
//!
//! ```text
//! Graph --passes--> Graph' --Plan::new(input shapes)--> Session::run
//! ```

pub mod dtype;
pub mod error;
pub mod exec;
pub mod format;
pub mod graph;
pub mod npy;
pub mod ops;
pub mod passes;
pub mod shape;
pub mod stream;
pub mod tensor;

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use exec::{Plan, Session};
pub use graph::{Graph, Node, Value, ValueId};
pub use half;
pub use ops::Op;
pub use shape::{Dim, Fact, Shape};
pub use tensor::Tensor;
