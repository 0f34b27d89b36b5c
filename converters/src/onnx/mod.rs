//! ONNX importer: `ModelProto` (decoded with tract-onnx's generated prost types)
//! -> floe [`Graph`], op by op through the [`registry`], opset-aware.
//!
//! Every unsupported op in the model (subgraphs included) is reported in one
//! error; malformed input gives an error naming the file, node and value.

pub mod error;
pub mod lowering;
pub mod ops;
pub mod registry;
pub mod summary;
pub mod tensor;

pub use error::{ImportError, UnsupportedOp};

use floe_engine::passes::fold_constants::merge_facts;
use floe_engine::passes::{infer_and_fold, FoldOptions};
use floe_engine::{Dim, Fact, Graph, Shape, ValueId};
use lowering::{Lowering, Val};
use prost::Message;
use registry::{ConvError, Convert, NodeCtx, Registry};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tensor::{dtype_from_onnx, tensor_from_proto, TensorError};
use tract_onnx::pb::{type_proto, GraphProto, ModelProto, ValueInfoProto};

/// A model imported into floe's IR.
#[derive(Clone, Debug)]
pub struct ImportedModel {
    pub graph: Graph,
    /// Opset of the default ONNX domain.
    pub opset: i64,
    /// Every (domain, version) the model imports.
    pub opsets: Vec<(String, i64)>,
    pub ir_version: i64,
    pub producer: String,
    pub path: PathBuf,
}

/// Reads and imports an `.onnx` file (external data resolved next to it).
pub fn load(path: impl AsRef<Path>) -> Result<ImportedModel, ImportError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    load_bytes(&bytes, path, path.parent())
}

/// Imports a serialized `ModelProto`. `path` is used in messages; `base_dir`
/// resolves external data.
pub fn load_bytes(bytes: &[u8], path: &Path, base_dir: Option<&Path>) -> Result<ImportedModel, ImportError> {
    let p = path.to_path_buf();
    let model = ModelProto::decode(bytes).map_err(|e| ImportError::Decode { path: p.clone(), msg: e.to_string() })?;
    let graph_proto = model.graph.as_ref().ok_or_else(|| ImportError::Decode {
        path: p.clone(),
        msg: "the model holds no graph (file empty or truncated?)".into(),
    })?;
    let mut opsets: HashMap<String, i64> = HashMap::new();
    for o in &model.opset_import {
        let d = if o.domain == "ai.onnx" { String::new() } else { o.domain.clone() };
        opsets.insert(d, o.version);
    }
    let uses_default = graph_proto.node.iter().any(|n| n.domain.is_empty() || n.domain == "ai.onnx");
    let opset = match opsets.get("") {
        Some(&v) => v,
        None if !uses_default => 0,
        None => {
            return Err(ImportError::Decode {
                path: p.clone(),
                msg: "the model declares no opset for the default ONNX domain (file truncated?)".into(),
            })
        }
    };
    let registry = Registry::onnx();
    let mut unsupported = Vec::new();
    find_unsupported(graph_proto, &registry, &opsets, &mut unsupported);
    let mut imp =
        Importer { registry: &registry, opsets: &opsets, base_dir, path: p.clone(), unsupported, error: None };
    let graph = imp.graph(graph_proto, &[]);
    if !imp.unsupported.is_empty() {
        let mut ops = imp.unsupported;
        ops.sort();
        ops.dedup_by(|a, b| a.op_type == b.op_type && a.domain == b.domain && a.detail == b.detail);
        return Err(ImportError::Unsupported { path: p, ops });
    }
    if let Some(e) = imp.error {
        return Err(e);
    }
    let mut graph = graph.ok_or_else(|| ImportError::Model { path: p.clone(), msg: "import failed".into() })?;
    graph.validate().map_err(|e| ImportError::Model { path: p.clone(), msg: e.to_string() })?;
    infer_and_fold(&mut graph, FoldOptions::default()).map_err(|e| match e {
        floe_engine::Error::Node { node, op, source } => {
            ImportError::Node { path: p.clone(), node, op, msg: source.to_string() }
        }
        other => ImportError::Model { path: p.clone(), msg: other.to_string() },
    })?;
    let mut opsets: Vec<(String, i64)> = opsets.into_iter().collect();
    opsets.sort();
    Ok(ImportedModel {
        graph,
        opset,
        opsets,
        ir_version: model.ir_version,
        producer: model.producer_name.clone(),
        path: p,
    })
}

fn find_unsupported(g: &GraphProto, reg: &Registry, opsets: &HashMap<String, i64>, out: &mut Vec<UnsupportedOp>) {
    for n in &g.node {
        let dom = if n.domain == "ai.onnx" { "" } else { n.domain.as_str() };
        let version = opsets.get(dom).copied().unwrap_or(0);
        let known =
            n.op_type == "Constant" && dom.is_empty() || reg.get(dom, &n.op_type).is_some_and(|d| version >= d.since);
        if !known {
            out.push(UnsupportedOp {
                op_type: n.op_type.clone(),
                domain: dom.to_string(),
                opset: version,
                detail: None,
                node: n.name.clone(),
            });
        }
        for a in &n.attribute {
            if let Some(sub) = &a.g {
                find_unsupported(sub, reg, opsets, out);
            }
            for sub in &a.graphs {
                find_unsupported(sub, reg, opsets, out);
            }
        }
    }
}

/// Names a graph uses but does not define (its captures from outer scopes), in
/// order of first use, including those of nested subgraphs.
pub fn free_names(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    for i in &g.input {
        defined.insert(&i.name);
    }
    for t in &g.initializer {
        defined.insert(&t.name);
    }
    let mut out: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut use_name = |n: &str, defined: &HashSet<&str>, out: &mut Vec<String>| {
        if !n.is_empty() && !defined.contains(n) && seen.insert(n.to_string()) {
            out.push(n.to_string());
        }
    };
    for node in &g.node {
        for i in &node.input {
            use_name(i, &defined, &mut out);
        }
        for a in &node.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                for f in free_names(sub) {
                    use_name(&f, &defined, &mut out);
                }
            }
        }
        for o in &node.output {
            defined.insert(o);
        }
    }
    for o in &g.output {
        use_name(&o.name, &defined, &mut out);
    }
    out
}

fn fact_of(v: &ValueInfoProto) -> Result<Fact, String> {
    let Some(tp) = &v.r#type else { return Ok(Fact::unknown()) };
    match &tp.value {
        Some(type_proto::Value::TensorType(t)) => {
            let dtype = if t.elem_type == 0 { None } else { Some(dtype_from_onnx(t.elem_type)?) };
            let shape = t.shape.as_ref().map(|s| {
                Shape(
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimValue(n)) if *n >= 0 => {
                                Dim::Fixed(*n as usize)
                            }
                            Some(tract_onnx::pb::tensor_shape_proto::dimension::Value::DimParam(p))
                                if !p.is_empty() =>
                            {
                                Dim::Sym(p.clone())
                            }
                            _ => Dim::Unknown,
                        })
                        .collect(),
                )
            });
            Ok(Fact { dtype, shape })
        }
        _ => Err("a non-tensor type (sequence, map or optional)".into()),
    }
}

/// A converter's result.
enum Converted {
    Op(floe_engine::Op),
    Lower(Lowering),
}

/// Adds the nodes of a lowering of node `name`, whose inputs and outputs are
/// `inputs` / `outputs` (ids in `g`). Fails if a value is used before it is written
/// or if an output of the ONNX node is never written (a converter bug).
fn add_lowering(
    g: &mut Graph,
    name: &str,
    low: Lowering,
    inputs: &[Option<ValueId>],
    outputs: &[ValueId],
) -> Result<(), String> {
    let consts: Vec<ValueId> = low.consts.into_iter().map(|(l, t)| g.add_const(format!("{name}/{l}"), t)).collect();
    let temps: Vec<ValueId> = low.temps.iter().map(|l| g.add_value(format!("{name}/{l}"), Fact::unknown())).collect();
    let mut written = vec![false; temps.len()];
    let mut out_written = vec![false; outputs.len()];
    for n in low.nodes {
        let mut ins = Vec::with_capacity(n.inputs.len());
        for v in &n.inputs {
            ins.push(match *v {
                None => None,
                Some(Val::Input(i)) => inputs.get(i).copied().flatten(),
                Some(Val::Const(c)) => Some(consts[c]),
                Some(Val::Temp(t)) if written[t] => Some(temps[t]),
                Some(Val::Temp(t)) => {
                    return Err(format!("lowering: '{}' reads '{}' before it is written", n.label, low.temps[t]))
                }
                Some(Val::Output(k)) if out_written.get(k) == Some(&true) => Some(outputs[k]),
                Some(Val::Output(k)) => {
                    return Err(format!("lowering: '{}' reads output {k} before it is written", n.label))
                }
            });
        }
        // drop trailing omitted inputs so arity checks see what is really there
        while matches!(ins.last(), Some(None)) {
            ins.pop();
        }
        let mut outs = Vec::with_capacity(n.outputs.len());
        for v in &n.outputs {
            match *v {
                Val::Temp(t) => {
                    written[t] = true;
                    outs.push(temps[t]);
                }
                Val::Output(k) if k < outputs.len() => {
                    out_written[k] = true;
                    outs.push(outputs[k]);
                }
                other => return Err(format!("lowering: '{}' cannot write {other:?}", n.label)),
            }
        }
        g.add_node(format!("{name}/{}", n.label), n.op, ins, outs);
    }
    match out_written.iter().position(|w| !w) {
        Some(k) => Err(format!("output {k} is not produced by the lowering of this node")),
        None => Ok(()),
    }
}

struct Importer<'a> {
    registry: &'a Registry,
    opsets: &'a HashMap<String, i64>,
    base_dir: Option<&'a Path>,
    path: PathBuf,
    unsupported: Vec<UnsupportedOp>,
    /// First hard error (reported if nothing is unsupported).
    error: Option<ImportError>,
}

impl Importer<'_> {
    fn fail(&mut self, e: ImportError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn node_err(&self, node: &str, op: &str, msg: String) -> ImportError {
        ImportError::Node { path: self.path.clone(), node: node.to_string(), op: op.to_string(), msg }
    }

    fn unsupported_value(&mut self, what: &str, msg: String, node: &str) {
        self.unsupported.push(UnsupportedOp {
            op_type: what.to_string(),
            domain: String::new(),
            opset: *self.opsets.get("").unwrap_or(&0),
            detail: Some(msg),
            node: node.to_string(),
        });
    }

    /// Imports one graph; `captures` are outer names appended as extra inputs.
    fn graph(&mut self, gp: &GraphProto, captures: &[String]) -> Option<Graph> {
        let mut g = Graph::default();
        let mut names: HashMap<String, usize> = HashMap::new();
        let value_info: HashMap<&str, &ValueInfoProto> =
            gp.value_info.iter().chain(gp.output.iter()).map(|v| (v.name.as_str(), v)).collect();
        for t in &gp.initializer {
            match tensor_from_proto(t, self.base_dir) {
                Ok(tensor) => {
                    let id = g.add_const(t.name.clone(), tensor);
                    names.insert(t.name.clone(), id);
                }
                Err(TensorError::Unsupported(m)) => {
                    self.unsupported_value("initializer", format!("'{}': {m}", t.name), &t.name)
                }
                Err(TensorError::External { file, msg }) => {
                    let e = ImportError::ExternalData { path: self.path.clone(), tensor: t.name.clone(), file, msg };
                    self.fail(e)
                }
                Err(TensorError::Invalid(m)) => {
                    let e =
                        ImportError::Model { path: self.path.clone(), msg: format!("initializer '{}': {m}", t.name) };
                    self.fail(e)
                }
            }
        }
        for i in &gp.input {
            if names.contains_key(&i.name) {
                continue; // an initializer given as input (IR < 4): treat as constant
            }
            let fact = match fact_of(i) {
                Ok(f) => f,
                Err(m) => {
                    self.unsupported_value("input", format!("'{}': {m}", i.name), &i.name);
                    Fact::unknown()
                }
            };
            let id = g.add_value(i.name.clone(), fact);
            names.insert(i.name.clone(), id);
            g.inputs.push(id);
        }
        for c in captures {
            let id = g.add_value(c.clone(), Fact::unknown());
            names.insert(c.clone(), id);
            g.inputs.push(id);
        }
        for (ni, node) in gp.node.iter().enumerate() {
            let node_name = if node.name.is_empty() { format!("{}_{ni}", node.op_type) } else { node.name.clone() };
            let dom = if node.domain == "ai.onnx" { "" } else { node.domain.as_str() };
            let opset = self.opsets.get(dom).copied().unwrap_or(0);
            if node.op_type == "Constant" && dom.is_empty() {
                match ops::constant::constant_value(node) {
                    Ok(t) => {
                        if let Some(out) = node.output.first() {
                            let id = g.add_const(out.clone(), t);
                            names.insert(out.clone(), id);
                        }
                    }
                    Err(ConvError::Unsupported(m)) => self.unsupported.push(UnsupportedOp {
                        op_type: "Constant".into(),
                        domain: String::new(),
                        opset,
                        detail: Some(m),
                        node: node_name.clone(),
                    }),
                    Err(ConvError::Invalid(m)) => {
                        let e = self.node_err(&node_name, "Constant", m);
                        self.fail(e)
                    }
                }
                continue;
            }
            let Some(def) = self.registry.get(dom, &node.op_type).cloned() else { continue };
            if opset < def.since {
                continue; // already listed as unsupported
            }
            let sub_caps: Vec<String> = {
                let mut v: Vec<String> = Vec::new();
                for a in &node.attribute {
                    for sub in a.g.iter().chain(a.graphs.iter()) {
                        for f in free_names(sub) {
                            if !v.contains(&f) {
                                v.push(f);
                            }
                        }
                    }
                }
                v
            };
            let converted = {
                let cell = std::cell::RefCell::new(&mut *self);
                let caps = sub_caps.clone();
                let importer = |sub: &GraphProto| -> Result<Graph, ConvError> {
                    let mut me = cell.borrow_mut();
                    me.graph(sub, &caps).ok_or_else(|| ConvError::Invalid("subgraph import failed".into()))
                };
                // Inferred facts of the graph so far, computed once and only if asked for.
                let inferred: std::cell::OnceCell<Option<Graph>> = std::cell::OnceCell::new();
                let facts = |i: usize| -> Fact {
                    let Some(&id) = node.input.get(i).filter(|n| !n.is_empty()).and_then(|n| names.get(n)) else {
                        return Fact::unknown();
                    };
                    let declared = &g.values[id].fact;
                    if declared.dtype.is_some() && declared.shape.as_ref().is_some_and(|s| s.as_fixed().is_some()) {
                        return declared.clone();
                    }
                    // On a copy (weights are shared, not copied); a failure here is
                    // reported by the final inference over the whole graph.
                    let inf = inferred.get_or_init(|| {
                        let mut copy = g.clone();
                        infer_and_fold(&mut copy, FoldOptions::default()).ok().map(|_| copy)
                    });
                    inf.as_ref().map_or_else(|| declared.clone(), |c| merge_facts(declared, &c.values[id].fact))
                };
                let ctx = NodeCtx { node, opset, subgraph: &importer, facts: &facts };
                match def.convert {
                    Convert::Op(f) => f(&ctx).map(Converted::Op),
                    Convert::Lower(f) => f(&ctx).map(Converted::Lower),
                }
            };
            let converted = match converted {
                Ok(c) => c,
                Err(ConvError::Unsupported(m)) => {
                    self.unsupported.push(UnsupportedOp {
                        op_type: node.op_type.clone(),
                        domain: dom.to_string(),
                        opset,
                        detail: Some(m),
                        node: node_name.clone(),
                    });
                    continue;
                }
                Err(ConvError::Invalid(m)) => {
                    let e = self.node_err(&node_name, &node.op_type, m);
                    self.fail(e);
                    continue;
                }
            };
            let mut inputs = Vec::with_capacity(node.input.len() + sub_caps.len());
            for name in node.input.iter().chain(sub_caps.iter()) {
                if name.is_empty() {
                    inputs.push(None);
                    continue;
                }
                match names.get(name) {
                    Some(&id) => inputs.push(Some(id)),
                    None => {
                        let e = self.node_err(&node_name, &node.op_type, format!("input '{name}' is not defined by any earlier node, initializer or graph input (dangling value)"));
                        self.fail(e);
                        inputs.push(None);
                    }
                }
            }
            // drop trailing omitted inputs so arity checks see what is really there
            while sub_caps.is_empty() && matches!(inputs.last(), Some(None)) {
                inputs.pop();
            }
            let mut outputs = Vec::with_capacity(node.output.len());
            for (oi, name) in node.output.iter().enumerate() {
                let fact = value_info.get(name.as_str()).and_then(|v| fact_of(v).ok()).unwrap_or_else(Fact::unknown);
                let vname = if name.is_empty() { format!("{node_name}:unused{oi}") } else { name.clone() };
                let id = g.add_value(vname, fact);
                if !name.is_empty() {
                    names.insert(name.clone(), id);
                }
                outputs.push(id);
            }
            match converted {
                Converted::Op(op) => g.add_node(node_name, op, inputs, outputs),
                Converted::Lower(low) => {
                    if let Err(m) = add_lowering(&mut g, &node_name, low, &inputs, &outputs) {
                        let e = self.node_err(&node_name, &node.op_type, m);
                        self.fail(e);
                    }
                }
            }
        }
        for o in &gp.output {
            match names.get(&o.name) {
                Some(&id) => {
                    if let Ok(f) = fact_of(o) {
                        let v = &mut g.values[id];
                        v.fact = floe_engine::passes::fold_constants::merge_facts(&f, &v.fact);
                    }
                    g.outputs.push(id)
                }
                None => {
                    if self.unsupported.is_empty() {
                        let e = ImportError::Model {
                            path: self.path.clone(),
                            msg: format!("graph output '{}' is not produced by any node (dangling value)", o.name),
                        };
                        self.fail(e);
                    }
                }
            }
        }
        Some(g)
    }
}

#[cfg(test)]
mod lowering_tests {
    use super::*;
    use floe_engine::ops::elementwise::{BinaryOp, ElementwiseOp};

    fn graph_with_io() -> (Graph, Vec<Option<ValueId>>, Vec<ValueId>) {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::unknown());
        g.inputs.push(x);
        let y = g.add_value("y", Fact::unknown());
        (g, vec![Some(x)], vec![y])
    }

    #[test]
    fn lowering_wires_inputs_constants_temps_and_outputs_under_the_node_name() {
        let (mut g, ins, outs) = graph_with_io();
        let mut low = Lowering::new();
        let two = low.constant("two", floe_engine::Tensor::scalar(2.0f32));
        let add = ElementwiseOp::Binary(BinaryOp::Add);
        let t = low.node("double", add.clone(), vec![Some(Val::Input(0)), Some(Val::Input(0))]);
        low.node_to("plus_two", add, vec![Some(t), Some(two)], vec![Val::Output(0)]);
        add_lowering(&mut g, "n", low, &ins, &outs).unwrap();
        assert_eq!(g.nodes.len(), 2);
        assert_eq!(g.nodes[0].name, "n/double");
        assert_eq!(g.nodes[1].outputs, outs);
        assert_eq!(g.values[g.nodes[1].inputs[0].unwrap()].name, "n/double");
        assert_eq!(g.values[g.nodes[1].inputs[1].unwrap()].name, "n/two");
    }

    #[test]
    fn lowering_that_leaves_an_output_unwritten_is_an_error() {
        let (mut g, ins, outs) = graph_with_io();
        let mut low = Lowering::new();
        low.node("neg", ElementwiseOp::Binary(BinaryOp::Sub), vec![Some(Val::Input(0)), Some(Val::Input(0))]);
        let e = add_lowering(&mut g, "n", low, &ins, &outs).unwrap_err();
        assert!(e.contains("output 0"), "{e}");
    }

    #[test]
    fn lowering_that_reads_a_temporary_before_writing_it_is_an_error() {
        let (mut g, ins, outs) = graph_with_io();
        let mut low = Lowering::new();
        let t = low.temp("later");
        low.node_to(
            "use",
            ElementwiseOp::Binary(BinaryOp::Add),
            vec![Some(t), Some(Val::Input(0))],
            vec![Val::Output(0)],
        );
        let e = add_lowering(&mut g, "n", low, &ins, &outs).unwrap_err();
        assert!(e.contains("before it is written"), "{e}");
    }
}
