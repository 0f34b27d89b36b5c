//! Loading a `.floe` file: one `mmap`, a bounds-checked header and metadata read,
//! and tensors that borrow the mapped bytes in place (no parse of weights, no copy).

use super::header::{fnv1a64, Header, ALIGN};
use super::metadata::{Metadata, ModelInfo, TensorEntry};
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
        let meta: Metadata =
            postcard::from_bytes(meta_bytes).map_err(|e| bad(format!("metadata does not decode: {e}")))?;
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
        let graph: Graph = table::resolve(tensors, || postcard::from_bytes(&meta.graph))
            .map_err(|e| bad(format!("graph does not decode: {e}")))?;
        validate_deep(&graph).map_err(|e| bad(format!("invalid graph: {e}")))?;
        Ok(Model { graph, info: meta.info, header, tensors: meta.tensors, path: path.to_path_buf() })
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
