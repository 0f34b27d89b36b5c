//! A light look at an ONNX file without converting it: what `floe inspect` shows
//! even for models floe cannot run (inputs, outputs, op histogram, unsupported ops).

use super::{find_unsupported, registry::Registry, ImportError, UnsupportedOp};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tract_onnx::pb::{GraphProto, ModelProto};

/// Facts read straight from the protobuf.
#[derive(Debug, Clone)]
pub struct ProtoSummary {
    pub ir_version: i64,
    pub producer: String,
    pub opsets: Vec<(String, i64)>,
    pub op_histogram: BTreeMap<String, usize>,
    pub unsupported: Vec<UnsupportedOp>,
    pub node_count: usize,
}

fn count(g: &GraphProto, h: &mut BTreeMap<String, usize>, n: &mut usize) {
    for node in &g.node {
        *n += 1;
        let key = if node.domain.is_empty() || node.domain == "ai.onnx" {
            node.op_type.clone()
        } else {
            format!("{}:{}", node.domain, node.op_type)
        };
        *h.entry(key).or_insert(0) += 1;
        for a in &node.attribute {
            for sub in a.g.iter().chain(a.graphs.iter()) {
                count(sub, h, n);
            }
        }
    }
}

/// Decodes `path` and summarises it.
pub fn summarize(path: &Path) -> Result<ProtoSummary, ImportError> {
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io { path: path.to_path_buf(), source })?;
    let model = ModelProto::decode(bytes.as_slice())
        .map_err(|e| ImportError::Decode { path: path.to_path_buf(), msg: e.to_string() })?;
    let g = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Decode { path: path.to_path_buf(), msg: "the model holds no graph".into() })?;
    let mut opsets: HashMap<String, i64> = HashMap::new();
    for o in &model.opset_import {
        opsets.insert(if o.domain == "ai.onnx" { String::new() } else { o.domain.clone() }, o.version);
    }
    let mut op_histogram = BTreeMap::new();
    let mut node_count = 0;
    count(g, &mut op_histogram, &mut node_count);
    let mut unsupported = Vec::new();
    find_unsupported(g, &Registry::onnx(), &opsets, &mut unsupported);
    unsupported.sort();
    unsupported.dedup_by(|a, b| a.op_type == b.op_type && a.domain == b.domain);
    let mut opsets: Vec<(String, i64)> = opsets.into_iter().collect();
    opsets.sort();
    Ok(ProtoSummary {
        ir_version: model.ir_version,
        producer: model.producer_name.clone(),
        opsets,
        op_histogram,
        unsupported,
        node_count,
    })
}
