//! Reading and writing numpy `.npy` files (format versions 1.0-3.0, little-endian,
//! C order), the exchange format of `floe run --input` and of the reference data.
//! Spec: numpy/lib/format.py (NEP 1).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::F64 => "<f8",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    }
}

fn parse_descr(d: &str) -> Option<DType> {
    let d = d.trim_start_matches(['<', '|', '=']);
    Some(match d {
        "f4" => DType::F32,
        "f2" => DType::F16,
        "f8" => DType::F64,
        "i1" => DType::I8,
        "u1" => DType::U8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ => return None,
    })
}

/// Serialises a tensor as `.npy` bytes (version 1.0).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let shape = match t.shape() {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        s => format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut header = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}", descr(t.dtype()));
    let total = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + t.bytes().len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(t.bytes());
    out
}

/// Parses `.npy` bytes; errors say what is wrong (`what` names the source).
pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Tensor> {
    let err = |m: &str| Error::Invalid(format!("{what}: not a valid .npy file: {m}"));
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err("missing \\x93NUMPY magic"));
    }
    let (hlen, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(err("truncated header"));
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(err(&format!("unsupported format version {v}"))),
    };
    let header = bytes.get(start..start.saturating_add(hlen)).ok_or_else(|| err("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let i = header.find(&format!("'{key}'"))?;
        let rest = header[i + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let d = field("descr").ok_or_else(|| err("no descr"))?;
    let d = d.strip_prefix('\'').and_then(|s| s.split('\'').next()).ok_or_else(|| err("bad descr"))?;
    if d.starts_with('>') {
        return Err(err("big-endian data is not supported"));
    }
    let dtype = parse_descr(d).ok_or_else(|| err(&format!("unsupported dtype '{d}'")))?;
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err(err("Fortran-order arrays are not supported"));
    }
    let s = field("shape").ok_or_else(|| err("no shape"))?;
    let s = s.strip_prefix('(').and_then(|s| s.split(')').next()).ok_or_else(|| err("bad shape"))?;
    let shape: Vec<usize> = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<usize>().map_err(|_| err(&format!("bad dim '{p}'"))))
        .collect::<Result<_>>()?;
    let data = &bytes[start + hlen..];
    let expect = crate::tensor::checked_numel(&shape)?.saturating_mul(dtype.size());
    if data.len() != expect {
        return Err(err(&format!("{} data bytes for shape {shape:?} of {dtype} ({expect} expected)", data.len())));
    }
    Tensor::from_bytes(dtype, &shape, data)
}

/// Reads a `.npy` file.
pub fn read(path: &std::path::Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    from_bytes(&bytes, &path.display().to_string())
}

/// Writes a `.npy` file.
pub fn write(path: &std::path::Path, t: &Tensor) -> Result<()> {
    std::fs::write(path, to_bytes(t)).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation_is_an_error() {
        let t = Tensor::from_slice(&[2, 3], &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let b = to_bytes(&t);
        assert_eq!((b.len() - t.bytes().len()) % 64, 0);
        assert_eq!(from_bytes(&b, "t").unwrap(), t);
        for cut in [0, 5, 20, b.len() - 1] {
            assert!(from_bytes(&b[..cut], "t").is_err());
        }
    }
}
