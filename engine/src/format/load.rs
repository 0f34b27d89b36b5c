//! Loading a `.floe` file: one `mmap`, a bounds-checked header and metadata read,
//! and tensors that borrow the mapped bytes in place (no parse of weights, no copy).

use super::header::{fnv1a64, Header, ALIGN};
use super::metadata::{Metadata, ModelInfo, TargetRecord, TensorEntry};
use super::table;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::tensor::{checked_numel, Tensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A loaded model: its graph (weights borrowed from the mapped file) and what the
/// file says about it. Share it between sessions and threads behind an `Arc`.
pub struct Model {
    pub graph: Graph,
    pub info: ModelInfo,
    /// The preset the file was converted for and what its kernels need (for a
    /// version 1 file: the preset name only).
    pub target: TargetRecord,
    pub header: Header,
    pub tensors: Vec<TensorEntry>,
    pub path: PathBuf,
}

impl Model {
    /// Memory-maps and validates `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        let path = path.as_ref();
        let what = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|e| Error::Invalid(format!("{what}: {e}")))?;
        // SAFETY: the map is read-only and private to this process. floe treats the
        // file as immutable while it is loaded (as every mmap-based loader does);
        // every view into it is bounds- and alignment-checked below before use.
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::Invalid(format!("{what}: cannot map: {e}")))?;
        Self::from_source(Arc::new(map), &what, path)
    }

    /// Validates a `.floe` image held in memory (tests, embedded models).
    pub fn from_bytes(bytes: Vec<u8>, what: &str) -> Result<Model> {
        Self::from_source(Arc::new(bytes), what, Path::new(what))
    }

    fn from_source(source: Arc<dyn AsRef<[u8]> + Send + Sync>, what: &str, path: &Path) -> Result<Model> {
        let bytes: &[u8] = (*source).as_ref();
        let header = Header::parse(bytes, what)?;
        let bad = |m: String| Error::Invalid(format!("{what}: {m}"));
        let meta_bytes =
            &bytes[header.metadata_offset as usize..(header.metadata_offset + header.metadata_len) as usize];
        if fnv1a64(meta_bytes) != header.metadata_checksum {
            return Err(bad("metadata checksum mismatch (file corrupt)".into()));
        }
        let meta = Metadata::decode(meta_bytes, header.version)
            .map_err(|e| bad(format!("metadata (format version {}) does not decode: {e}", header.version)))?;
        let mut tensors = Vec::with_capacity(meta.tensors.len());
        for (i, e) in meta.tensors.iter().enumerate() {
            let shape: Vec<usize> = e
                .shape
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| bad(format!("tensor {i} dim {d} is too large"))))
                .collect::<Result<_>>()?;
            let len = checked_numel(&shape)
                .ok()
                .and_then(|n| n.checked_mul(e.dtype.size()))
                .ok_or_else(|| bad(format!("tensor {i} ('{}') shape {shape:?} overflows", e.name)))?;
            if len as u64 != e.len {
                return Err(bad(format!(
                    "tensor {i} ('{}'): {} x {shape:?} is {len} bytes, the table says {}",
                    e.name, e.dtype, e.len
                )));
            }
            if e.offset % ALIGN as u64 != 0 {
                return Err(bad(format!("tensor {i} ('{}') offset {} is not {ALIGN}-byte aligned", e.name, e.offset)));
            }
            let end = e.offset.checked_add(e.len).ok_or_else(|| bad(format!("tensor {i} range overflows")))?;
            if end > header.data_len {
                return Err(bad(format!(
                    "tensor {i} ('{}') bytes {}..{end} lie outside the data section ({} bytes)",
                    e.name, e.offset, header.data_len
                )));
            }
            tensors.push(Tensor::borrowed(e.dtype, &shape, source.clone(), (header.data_offset + e.offset) as usize)?);
        }
        let graph: Graph =
            table::resolve(tensors, || table::with_layout(header.version, || postcard::from_bytes(&meta.graph)))
                .map_err(|e| bad(format!("graph does not decode: {e}")))?;
        validate_deep(&graph).map_err(|e| bad(format!("invalid graph: {e}")))?;
        Ok(Model {
            graph,
            info: meta.info,
            target: meta.target,
            header,
            tensors: meta.tensors,
            path: path.to_path_buf(),
        })
    }
}

/// Structural validation of a graph and every subgraph in it.
fn validate_deep(g: &Graph) -> Result<()> {
    g.validate()?;
    for n in &g.nodes {
        for sub in n.op.subgraphs() {
            validate_deep(sub)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::metadata::Quantization;
    use crate::format::write::write_versioned;
    use crate::format::FORMAT_VERSION;
    use crate::ops::elementwise::{BinaryOp, ElementwiseOp};
    use crate::{DType, Fact, Shape};

    fn info(target: &str) -> ModelInfo {
        ModelInfo {
            producer: "test".into(),
            source: "t.onnx".into(),
            target: target.into(),
            quantization: Quantization::None,
            quantized: vec![],
            opset: 17,
            stream: None,
        }
    }

    /// y = x + w with a 3-element weight.
    fn graph() -> Graph {
        let mut g = Graph::default();
        let x = g.add_value("x", Fact::new(DType::F32, Shape::fixed(&[3])));
        g.inputs = vec![x];
        let w = g.add_const("w", Tensor::from_vec(&[3], vec![1.0f32, -2.0, 0.5]).unwrap());
        let y = g.add_value("y", Fact::unknown());
        g.add_node("add", ElementwiseOp::Binary(BinaryOp::Add).into(), vec![Some(x), Some(w)], vec![y]);
        g.outputs = vec![y];
        g
    }

    fn image(target: &TargetRecord, version: u32) -> Vec<u8> {
        let mut v = Vec::new();
        write_versioned(&mut v, &graph(), &info(&target.preset), target, version, &mut |_, _| {}).unwrap();
        v
    }

    fn weight(m: &Model) -> Vec<f32> {
        let w = m.graph.values.iter().find(|v| v.name == "w").unwrap().konst.as_ref().unwrap();
        w.as_slice::<f32>().unwrap().to_vec()
    }

    #[test]
    fn target_record_round_trips_in_the_current_version() {
        let rec = TargetRecord {
            preset: "rpi4-aarch64".into(),
            kernels: "neon-aarch64".into(),
            arch: "aarch64".into(),
            cpu_features: vec!["neon".into()],
        };
        let m = Model::from_bytes(image(&rec, FORMAT_VERSION), "t.floe").unwrap();
        assert_eq!(m.header.version, FORMAT_VERSION);
        assert_eq!(m.target, rec);
        assert_eq!(m.info.target, "rpi4-aarch64");
        assert_eq!(weight(&m), [1.0, -2.0, 0.5]);
    }

    #[test]
    fn version_1_files_still_load_with_the_preset_name_only() {
        let rec = TargetRecord {
            preset: "x86_64-avx2".into(),
            kernels: "avx2+fma".into(),
            arch: "x86_64".into(),
            cpu_features: vec!["avx2".into(), "fma".into()],
        };
        let m = Model::from_bytes(image(&rec, 1), "old.floe").unwrap();
        assert_eq!(m.header.version, 1);
        // Version 1 had no record: only the name survives, with no requirements.
        assert_eq!(m.target, TargetRecord::named("x86_64-avx2"));
        assert!(!m.target.has_requirements());
        assert_eq!(weight(&m), [1.0, -2.0, 0.5]);
    }

    #[test]
    fn version_2_files_still_load_without_a_stream_spec() {
        let rec = TargetRecord::named("rpi4-aarch64");
        let m = Model::from_bytes(image(&rec, 2), "v2.floe").unwrap();
        assert_eq!(m.header.version, 2);
        assert_eq!(m.info.target, "rpi4-aarch64");
        assert_eq!(m.info.stream, None);
        assert_eq!(weight(&m), [1.0, -2.0, 0.5]);
    }

    #[test]
    fn version_3_files_still_load() {
        let rec = TargetRecord::named("x86_64-avx512");
        let m = Model::from_bytes(image(&rec, 3), "v3.floe").unwrap();
        assert_eq!(m.header.version, 3);
        assert_eq!(m.target, rec);
        assert_eq!(weight(&m), [1.0, -2.0, 0.5]);
    }

    #[test]
    fn version_4_files_still_load() {
        let rec = TargetRecord::named("x86_64-avx512");
        let m = Model::from_bytes(image(&rec, 4), "v4.floe").unwrap();
        assert_eq!(m.header.version, 4);
        assert_eq!(m.target, rec);
        assert_eq!(weight(&m), [1.0, -2.0, 0.5]);
    }

    #[test]
    fn version_0_is_refused_with_the_versions_this_floe_reads() {
        let mut bytes = image(&TargetRecord::named("generic"), FORMAT_VERSION);
        bytes[8..12].copy_from_slice(&0u32.to_le_bytes());
        let msg = Model::from_bytes(bytes, "zero.floe").err().expect("version 0 must not load").to_string();
        assert!(msg.contains("format version 0 is not supported") && msg.contains("down to 1"), "{msg}");
        assert!(!msg.contains("newer"), "{msg}");
    }
}
