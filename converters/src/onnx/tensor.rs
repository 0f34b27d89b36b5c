//! `TensorProto` -> [`Tensor`]: raw_data or the typed repeated fields, and external
//! data files (ONNX "External Data" spec: location/offset/length, relative to the
//! model's directory).

use floe_engine::{DType, Tensor};
use std::path::Path;
use tract_onnx::pb::TensorProto;

/// Maps an ONNX `TensorProto.DataType` code to a floe dtype; `Err` names the type.
pub fn dtype_from_onnx(code: i32) -> Result<DType, String> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        other => return Err(format!("element type {}", onnx_type_name(other))),
    })
}

/// The ONNX name of a data type code.
pub fn onnx_type_name(code: i32) -> String {
    match code {
        0 => "UNDEFINED",
        8 => "STRING",
        14 => "COMPLEX64",
        15 => "COMPLEX128",
        16 => "BFLOAT16",
        17 => "FLOAT8E4M3FN",
        18 => "FLOAT8E4M3FNUZ",
        19 => "FLOAT8E5M2",
        20 => "FLOAT8E5M2FNUZ",
        21 => "UINT4",
        22 => "INT4",
        23 => "FLOAT4E2M1",
        24 => "FLOAT8E8M0",
        25 => "UINT2",
        26 => "INT2",
        _ => {
            return dtype_from_onnx(code).map(|d| d.name().to_string()).unwrap_or_else(|_| format!("type code {code}"))
        }
    }
    .to_string()
}

/// Where a tensor's problem lies, for the importer to wrap with the file name.
#[derive(Debug)]
pub enum TensorError {
    /// The element type is valid ONNX but not supported by floe.
    Unsupported(String),
    /// The external data file is missing or too short.
    External { file: String, msg: String },
    /// The tensor is malformed.
    Invalid(String),
}

/// Decodes a `TensorProto`. `base_dir` resolves external data.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, TensorError> {
    let dtype = dtype_from_onnx(t.data_type).map_err(TensorError::Unsupported)?;
    let mut shape = Vec::with_capacity(t.dims.len());
    for &d in &t.dims {
        if d < 0 {
            return Err(TensorError::Invalid(format!("negative dim {d}")));
        }
        shape.push(d as usize);
    }
    let numel = floe_engine::tensor::checked_numel(&shape).map_err(|e| TensorError::Invalid(e.to_string()))?;
    let nbytes = numel
        .checked_mul(dtype.size())
        .filter(|&n| n <= floe_engine::tensor::MAX_TENSOR_BYTES)
        .ok_or_else(|| TensorError::Invalid(format!("shape {shape:?} is too large")))?;
    let inv = |e: floe_engine::Error| TensorError::Invalid(e.to_string());
    if t.data_location == Some(1) {
        let raw = read_external(t, base_dir, nbytes)?;
        return Tensor::from_bytes(dtype, &shape, &raw).map_err(inv);
    }
    if !t.raw_data.is_empty() || numel == 0 {
        if t.raw_data.len() != nbytes {
            return Err(TensorError::Invalid(format!(
                "raw_data has {} bytes, {dtype} x {shape:?} needs {nbytes}",
                t.raw_data.len()
            )));
        }
        return Tensor::from_bytes(dtype, &shape, &t.raw_data).map_err(inv);
    }
    let count = |n: usize| {
        if n == numel {
            Ok(())
        } else {
            Err(TensorError::Invalid(format!("{n} values stored for shape {shape:?} ({numel} elements)")))
        }
    };
    match dtype {
        DType::F32 => {
            count(t.float_data.len())?;
            Tensor::from_slice(&shape, &t.float_data).map_err(inv)
        }
        DType::F64 => {
            count(t.double_data.len())?;
            Tensor::from_slice(&shape, &t.double_data).map_err(inv)
        }
        DType::I64 => {
            count(t.int64_data.len())?;
            Tensor::from_slice(&shape, &t.int64_data).map_err(inv)
        }
        DType::U64 => {
            count(t.uint64_data.len())?;
            Tensor::from_slice(&shape, &t.uint64_data).map_err(inv)
        }
        DType::U32 => {
            count(t.uint64_data.len())?;
            let v: Vec<u32> = t.uint64_data.iter().map(|&x| x as u32).collect();
            Tensor::from_vec(&shape, v).map_err(inv)
        }
        DType::F16 => {
            count(t.int32_data.len())?;
            let v: Vec<half::f16> = t.int32_data.iter().map(|&x| half::f16::from_bits(x as u16)).collect();
            Tensor::from_vec(&shape, v).map_err(inv)
        }
        DType::I32 => {
            count(t.int32_data.len())?;
            Tensor::from_slice(&shape, &t.int32_data).map_err(inv)
        }
        DType::I8 | DType::U8 | DType::I16 | DType::U16 | DType::Bool => {
            count(t.int32_data.len())?;
            let i64s: Vec<i64> = t.int32_data.iter().map(|&x| x as i64).collect();
            Tensor::from_vec(&shape, i64s).and_then(|x| x.cast(dtype)).map_err(inv)
        }
    }
}

fn read_external(t: &TensorProto, base_dir: Option<&Path>, nbytes: usize) -> Result<Vec<u8>, TensorError> {
    let get = |k: &str| t.external_data.iter().find(|e| e.key == k).map(|e| e.value.clone());
    let location = get("location").ok_or_else(|| TensorError::Invalid("external data without a location".into()))?;
    let ext = |msg: String| TensorError::External { file: location.clone(), msg };
    let rel = Path::new(&location);
    if rel.is_absolute() || rel.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err(ext("location must be a relative path inside the model's directory".into()));
    }
    let parse = |k: &str| -> Result<Option<u64>, TensorError> {
        get(k).map(|v| v.parse::<u64>().map_err(|_| ext(format!("{k} '{v}' is not a number")))).transpose()
    };
    let offset = parse("offset")?.unwrap_or(0);
    let length = parse("length")?;
    let path = base_dir.unwrap_or(Path::new(".")).join(rel);
    let data = std::fs::read(&path).map_err(|e| ext(format!("cannot read {}: {e}", path.display())))?;
    let len = length.unwrap_or(nbytes as u64);
    if len != nbytes as u64 {
        return Err(ext(format!("length {len} does not match the tensor's {nbytes} bytes")));
    }
    let start = offset as usize;
    let end = start.checked_add(nbytes).filter(|&e| e <= data.len()).ok_or_else(|| {
        ext(format!("needs bytes {start}..{} but the file has {} bytes", start.saturating_add(nbytes), data.len()))
    })?;
    Ok(data[start..end].to_vec())
}
