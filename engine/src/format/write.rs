//! Writing a `.floe` file.

use super::header::{fnv1a64, Header, ALIGN, FORMAT_VERSION, HEADER_LEN};
use super::metadata::{Layout, Metadata, ModelInfo, TargetRecord, TensorEntry};
use super::table;
use crate::error::{Error, Result};
use crate::graph::Graph;
use std::io::Write;
use std::path::Path;

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

/// Names of constant values by storage address, to label the tensor table.
fn value_names(g: &Graph, out: &mut Vec<(usize, String)>) {
    for v in &g.values {
        if let Some(t) = &v.konst {
            out.push((t.bytes().as_ptr() as usize, v.name.clone()));
        }
    }
    for n in &g.nodes {
        for sub in n.op.subgraphs() {
            value_names(sub, out);
        }
    }
}

/// Serialises `graph` and its tensors into file bytes, streamed to `w`, recording
/// only the preset name of `info.target` (see [`write_to_for_target`]).
/// `progress(done, total)` is called as tensor bytes are written.
pub fn write_to(
    w: &mut impl Write,
    graph: &Graph,
    info: &ModelInfo,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    write_versioned(w, graph, info, &TargetRecord::named(&info.target), FORMAT_VERSION, progress)
}

/// [`write_to`] with the full record of the preset the file is for (what
/// `floe convert --target` writes, so a floe can check the CPU it runs on).
pub fn write_to_for_target(
    w: &mut impl Write,
    graph: &Graph,
    info: &ModelInfo,
    target: &TargetRecord,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    write_versioned(w, graph, info, target, FORMAT_VERSION, progress)
}

/// Writes format `version` (tests write version 1 to check old files still load).
pub(crate) fn write_versioned(
    w: &mut impl Write,
    graph: &Graph,
    info: &ModelInfo,
    target: &TargetRecord,
    version: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let (graph_bytes, tensors) = table::collect(|| table::with_layout(version, || postcard::to_allocvec(graph)));
    let graph_bytes = graph_bytes.map_err(|e| Error::Invalid(format!("cannot encode the graph: {e}")))?;
    let mut names = Vec::new();
    value_names(graph, &mut names);
    let mut entries = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for t in &tensors {
        let addr = t.bytes().as_ptr() as usize;
        let name =
            names.iter().find(|(a, _)| *a == addr && !t.bytes().is_empty()).map(|(_, n)| n.clone()).unwrap_or_default();
        let len = t.bytes().len() as u64;
        entries.push(TensorEntry {
            name,
            dtype: t.dtype(),
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            layout: Layout::Plain,
            offset,
            len,
        });
        offset = align_up(offset + len);
    }
    let data_len = offset;
    let meta = Metadata { info: info.clone(), target: target.clone(), tensors: entries, graph: graph_bytes };
    let meta_bytes = meta.encode(version).map_err(|e| Error::Invalid(format!("cannot encode metadata: {e}")))?;
    let data_offset = align_up(HEADER_LEN as u64 + meta_bytes.len() as u64);
    let header = Header {
        version,
        flags: 0,
        metadata_offset: HEADER_LEN as u64,
        metadata_len: meta_bytes.len() as u64,
        metadata_checksum: fnv1a64(&meta_bytes),
        data_offset,
        data_len,
        file_len: data_offset + data_len,
    };
    let io = |e: std::io::Error| Error::Invalid(format!("write failed: {e}"));
    w.write_all(&header.to_bytes()).map_err(io)?;
    w.write_all(&meta_bytes).map_err(io)?;
    let pad = [0u8; ALIGN];
    let mut pos = HEADER_LEN as u64 + meta_bytes.len() as u64;
    w.write_all(&pad[..(data_offset - pos) as usize]).map_err(io)?;
    pos = 0;
    for (t, e) in tensors.iter().zip(&meta.tensors) {
        w.write_all(&pad[..(e.offset - pos) as usize]).map_err(io)?;
        w.write_all(t.bytes()).map_err(io)?;
        pos = e.offset + e.len;
        progress(pos, data_len);
    }
    w.write_all(&pad[..(data_len - pos) as usize]).map_err(io)?;
    Ok(header.file_len)
}

/// Writes `graph` to a `.floe` file at `path` (via a temporary file renamed into
/// place), recording only the preset name of `info.target`.
pub fn write(path: &Path, graph: &Graph, info: &ModelInfo, progress: &mut dyn FnMut(u64, u64)) -> Result<u64> {
    write_for_target(path, graph, info, &TargetRecord::named(&info.target), progress)
}

/// [`write`] with the full record of the preset the file is for.
pub fn write_for_target(
    path: &Path,
    graph: &Graph,
    info: &ModelInfo,
    target: &TargetRecord,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let tmp = path.with_extension("floe.tmp");
    let io = |e: std::io::Error| Error::Invalid(format!("{}: {e}", path.display()));
    let f = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let n = write_to_for_target(&mut w, graph, info, target, progress)?;
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(n)
}

/// The file as bytes (tests, in-memory round trips).
pub fn to_bytes(graph: &Graph, info: &ModelInfo) -> Result<Vec<u8>> {
    let mut v = Vec::new();
    write_to(&mut v, graph, info, &mut |_, _| {})?;
    Ok(v)
}
