//! (family not implemented yet)

use super::{EvalCtx, InferInput, OpImpl};
use crate::error::Result;
use crate::shape::Fact;
use crate::tensor::Tensor;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum EinsumOp {}

impl OpImpl for EinsumOp {
    fn name(&self) -> &'static str {
        match *self {}
    }

    fn infer(&self, _inputs: &[InferInput<'_>], _n: usize) -> Result<Vec<Fact>> {
        match *self {}
    }

    fn eval(&self, _ctx: &EvalCtx, _inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        match *self {}
    }
}
