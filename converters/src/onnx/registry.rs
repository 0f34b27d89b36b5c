//! The table of ONNX ops floe imports: op type, domain, opset range and the
//! function that maps a node onto a floe [`Op`] (or, for fused ops of other
//! runtimes, onto a small floe subgraph: see [`super::lowering`]). `docs/ops.md` is
//! generated from it.

use super::lowering::Lowering;
use super::tensor::tensor_from_proto;
use floe_engine::{Fact, Graph, Op, Tensor};
use std::collections::HashMap;
use tract_onnx::pb::{attribute_proto::AttributeType, AttributeProto, GraphProto, NodeProto};

/// Why a node could not be converted.
#[derive(Debug)]
pub enum ConvError {
    /// Valid ONNX that floe does not implement (listed with other unsupported ops).
    Unsupported(String),
    /// The node is malformed.
    Invalid(String),
}

pub type ConvResult<T> = Result<T, ConvError>;

/// `return Err(ConvError::Unsupported(format!(..)))`.
#[macro_export]
macro_rules! conv_unsupported {
    ($($arg:tt)*) => { return Err($crate::onnx::registry::ConvError::Unsupported(format!($($arg)*))) };
}

/// `return Err(ConvError::Invalid(format!(..)))`.
#[macro_export]
macro_rules! conv_invalid {
    ($($arg:tt)*) => { return Err($crate::onnx::registry::ConvError::Invalid(format!($($arg)*))) };
}

/// Imports a subgraph attribute (body of If/Loop/Scan) with captured outer values
/// appended to its inputs.
pub type SubgraphImporter<'a> = dyn Fn(&GraphProto) -> ConvResult<Graph> + 'a;

/// What a converter sees of one node.
pub struct NodeCtx<'a> {
    pub node: &'a NodeProto,
    /// The opset version of the node's domain in this model.
    pub opset: i64,
    pub(crate) subgraph: &'a SubgraphImporter<'a>,
    /// What is known of input `i` (see [`NodeCtx::input_fact`]).
    pub(crate) facts: &'a InputFacts<'a>,
}

/// Gives the fact of a node's input `i` (unknown when absent).
pub type InputFacts<'a> = dyn Fn(usize) -> Fact + 'a;

impl<'a> NodeCtx<'a> {
    pub fn attr(&self, name: &str) -> Option<&'a AttributeProto> {
        self.node.attribute.iter().find(|a| a.name == name)
    }

    fn typed(&self, name: &str, ty: AttributeType) -> ConvResult<Option<&'a AttributeProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.r#type == ty as i32 || a.r#type == 0 => Ok(Some(a)),
            Some(a) => Err(ConvError::Invalid(format!("attribute '{name}' has type {} (expected {:?})", a.r#type, ty))),
        }
    }

    pub fn int(&self, name: &str) -> ConvResult<Option<i64>> {
        Ok(self.typed(name, AttributeType::Int)?.map(|a| a.i))
    }

    pub fn int_or(&self, name: &str, default: i64) -> ConvResult<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    pub fn float(&self, name: &str) -> ConvResult<Option<f32>> {
        Ok(self.typed(name, AttributeType::Float)?.map(|a| a.f))
    }

    pub fn float_or(&self, name: &str, default: f32) -> ConvResult<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    pub fn ints(&self, name: &str) -> ConvResult<Option<Vec<i64>>> {
        Ok(self.typed(name, AttributeType::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> ConvResult<Option<Vec<f32>>> {
        Ok(self.typed(name, AttributeType::Floats)?.map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str) -> ConvResult<Option<String>> {
        Ok(self.typed(name, AttributeType::String)?.map(|a| String::from_utf8_lossy(&a.s).into_owned()))
    }

    pub fn strings(&self, name: &str) -> ConvResult<Option<Vec<String>>> {
        Ok(self
            .typed(name, AttributeType::Strings)?
            .map(|a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()))
    }

    pub fn tensor(&self, name: &str) -> ConvResult<Option<Tensor>> {
        match self.typed(name, AttributeType::Tensor)? {
            None => Ok(None),
            Some(a) => match &a.t {
                None => Err(ConvError::Invalid(format!("attribute '{name}' holds no tensor"))),
                Some(t) => tensor_from_proto(t, None).map(Some).map_err(|e| match e {
                    super::tensor::TensorError::Unsupported(m) => {
                        ConvError::Unsupported(format!("attribute '{name}': {m}"))
                    }
                    other => ConvError::Invalid(format!("attribute '{name}': {other:?}")),
                }),
            },
        }
    }

    /// Imports the graph attribute `name` (required).
    pub fn graph(&self, name: &str) -> ConvResult<Graph> {
        let a = self
            .typed(name, AttributeType::Graph)?
            .ok_or_else(|| ConvError::Invalid(format!("missing graph attribute '{name}'")))?;
        let g = a.g.as_ref().ok_or_else(|| ConvError::Invalid(format!("attribute '{name}' holds no graph")))?;
        (self.subgraph)(g)
    }

    /// Number of inputs as written in the node (trailing empty names included).
    pub fn n_inputs(&self) -> usize {
        self.node.input.len()
    }

    pub fn n_outputs(&self) -> usize {
        self.node.output.len()
    }

    /// True if input `i` is present and non-empty.
    pub fn has_input(&self, i: usize) -> bool {
        self.node.input.get(i).is_some_and(|s| !s.is_empty())
    }

    /// True if output `k` is present and non-empty (the model reads it).
    pub fn has_output(&self, k: usize) -> bool {
        self.node.output.get(k).is_some_and(|s| !s.is_empty())
    }

    /// The dtype and shape of input `i` as far as they are known at import: declared
    /// (graph inputs, initializers, `value_info`) or else inferred over the graph
    /// imported so far. For converters whose lowering depends on an input's rank
    /// (e.g. a 1-D key-length mask vs a 2-D 0/1 mask); unknown if `i` is absent.
    pub fn input_fact(&self, i: usize) -> Fact {
        (self.facts)(i)
    }
}

/// Maps a node onto one floe op with the node's inputs and outputs.
pub type ConvertFn = fn(&NodeCtx) -> ConvResult<Op>;

/// Maps a node onto a small floe subgraph (see [`super::lowering`]).
pub type LowerFn = fn(&NodeCtx) -> ConvResult<Lowering>;

/// How an op is converted.
#[derive(Clone, Copy)]
pub enum Convert {
    /// One ONNX node -> one floe node, inputs and outputs unchanged.
    Op(ConvertFn),
    /// One ONNX node -> several floe nodes.
    Lower(LowerFn),
}

/// One importable op.
#[derive(Clone)]
pub struct OpDef {
    pub op_type: &'static str,
    /// "" is the default ONNX domain (`ai.onnx`).
    pub domain: &'static str,
    /// Lowest opset version handled.
    pub since: i64,
    /// Newest op version whose semantics the converter implements.
    pub latest: i64,
    pub convert: Convert,
}

/// All importable ops, keyed by (domain, op type).
#[derive(Default)]
pub struct Registry {
    defs: HashMap<(&'static str, &'static str), OpDef>,
}

impl Registry {
    /// Registers `op_type` in the default domain for opsets `since..` (semantics up
    /// to version `latest`).
    pub fn add(&mut self, op_type: &'static str, since: i64, latest: i64, convert: ConvertFn) {
        self.defs.insert(("", op_type), OpDef { op_type, domain: "", since, latest, convert: Convert::Op(convert) });
    }

    /// Registers `op_type` of another `domain` (e.g. floe's own `"floe"`) for that
    /// domain's versions `since..`, converted onto one floe op.
    pub fn add_in(&mut self, domain: &'static str, op_type: &'static str, since: i64, latest: i64, convert: ConvertFn) {
        self.defs.insert((domain, op_type), OpDef { op_type, domain, since, latest, convert: Convert::Op(convert) });
    }

    /// Registers `op_type` of `domain` (e.g. `"com.microsoft"`), converted by a
    /// lowering onto several floe nodes.
    pub fn add_lowering(
        &mut self,
        domain: &'static str,
        op_type: &'static str,
        since: i64,
        latest: i64,
        lower: LowerFn,
    ) {
        let def = OpDef { op_type, domain, since, latest, convert: Convert::Lower(lower) };
        self.defs.insert((domain, op_type), def);
    }

    pub fn get(&self, domain: &str, op_type: &str) -> Option<&OpDef> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.defs.iter().find(|((d, o), _)| *d == domain && *o == op_type).map(|(_, v)| v)
    }

    /// Every def, sorted by domain then op type.
    pub fn defs(&self) -> Vec<&OpDef> {
        let mut v: Vec<&OpDef> = self.defs.values().collect();
        v.sort_by_key(|d| (d.domain, d.op_type));
        v
    }

    /// The full registry.
    pub fn onnx() -> Registry {
        let mut r = Registry::default();
        super::ops::register_all(&mut r);
        r
    }
}

/// A Markdown table of the supported ops (the content of `docs/ops.md`).
pub fn ops_markdown() -> String {
    let r = Registry::onnx();
    let mut s = String::from(
        "# Supported ONNX ops\n\nGenerated from the importer's registry (`floe_convert::onnx::registry`);\n\
         `cargo test` fails when this file is stale. Regenerate with\n\
         `cargo run -p floe -- ops --markdown > docs/ops.md`.\n\n\
         `Constant` nodes become constants at import. \"Opsets\" is the range of opset versions\n\
         whose semantics the importer implements for the op (newest version listed last).\n\
         floe's own ops (domain `floe`: `LMUMemory`, `LIF`) are described in\n\
         [custom-ops.md](custom-ops.md).\n\n\
         | Op | Domain | Opsets |\n|---|---|---|\n",
    );
    for d in r.defs() {
        let dom = if d.domain.is_empty() { "ai.onnx" } else { d.domain };
        s.push_str(&format!("| {} | {} | {}-{} |\n", d.op_type, dom, d.since, d.latest));
    }
    s.push_str(&format!("\n{} ops.\n", r.defs().len()));
    s
}
