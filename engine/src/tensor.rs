//! `Tensor`: a dtype, a concrete shape and bytes that are either owned or borrowed.
//!
//! Borrowed bytes are how weights are used in place from a memory-mapped `.floe`
//! file: any `Arc<dyn AsRef<[u8]>>` (an `Mmap`, a `Vec<u8>`) can back a tensor.
//! Owned bytes live in a `Vec<u64>` so every view is at least 8-byte aligned, which
//! covers every dtype. Clones share storage (reshape and identity are free);
//! mutation goes through `as_mut_slice`, which copies first if the bytes are shared.

use crate::dtype::{DType, Element};
use crate::error::{Error, Result};
use std::fmt;
use std::sync::Arc;

/// Where a tensor's bytes live.
#[derive(Clone)]
pub enum Storage {
    /// Heap bytes owned by this process (8-byte aligned words; `len` bytes used).
    Owned(Arc<Vec<u64>>),
    /// A byte range of a shared, immutable source such as a memory map.
    Borrowed { source: Arc<dyn AsRef<[u8]> + Send + Sync>, offset: usize },
}

/// A shape stored inline up to rank 6 (so making a tensor or a view of one
/// allocates nothing for its shape), on the heap beyond.
#[derive(Clone)]
enum Dims {
    Inline { rank: u8, dims: [usize; 6] },
    Heap(Vec<usize>),
}

impl Dims {
    fn new(shape: &[usize]) -> Dims {
        if shape.len() <= 6 {
            let mut dims = [0; 6];
            dims[..shape.len()].copy_from_slice(shape);
            Dims::Inline { rank: shape.len() as u8, dims }
        } else {
            Dims::Heap(shape.to_vec())
        }
    }

    fn as_slice(&self) -> &[usize] {
        match self {
            Dims::Inline { rank, dims } => &dims[..*rank as usize],
            Dims::Heap(v) => v,
        }
    }
}

/// A dense, row-major tensor.
#[derive(Clone)]
pub struct Tensor {
    dtype: DType,
    shape: Dims,
    storage: Storage,
    /// Length in bytes (= numel * dtype size).
    len: usize,
}

/// Number of elements of a shape, or an error if it overflows `usize`.
pub fn checked_numel(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::Invalid(format!("shape {shape:?} has more elements than this machine can address")))
}

/// Largest tensor (in bytes) floe will allocate: guards against absurd shapes in
/// malformed models turning into an abort on allocation failure.
pub const MAX_TENSOR_BYTES: usize = if usize::BITS >= 64 { 1 << 36 } else { isize::MAX as usize };

impl Tensor {
    /// A zero-filled tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Result<Tensor> {
        let numel = checked_numel(shape)?;
        let len = numel
            .checked_mul(dtype.size())
            .filter(|&l| l <= MAX_TENSOR_BYTES)
            .ok_or_else(|| Error::Invalid(format!("tensor of shape {shape:?} and dtype {dtype} is too large")))?;
        Ok(Tensor {
            dtype,
            shape: Dims::new(shape),
            storage: Storage::Owned(Arc::new(vec![0u64; len.div_ceil(8)])),
            len,
        })
    }

    /// A tensor from typed values; `data.len()` must match the shape.
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor> {
        Self::from_slice(shape, &data)
    }

    /// A tensor from typed values (copied).
    pub fn from_slice<T: Element>(shape: &[usize], data: &[T]) -> Result<Tensor> {
        let mut t = Tensor::zeros(T::DTYPE, shape)?;
        if data.len() != t.numel() {
            return Err(Error::Invalid(format!(
                "{} values given for shape {shape:?} ({} elements)",
                data.len(),
                t.numel()
            )));
        }
        t.as_mut_slice::<T>()?.copy_from_slice(data);
        Ok(t)
    }

    /// A bool tensor from `bool` values.
    pub fn from_bools(shape: &[usize], data: &[bool]) -> Result<Tensor> {
        let bytes: Vec<u8> = data.iter().map(|&b| b as u8).collect();
        let mut t = Tensor::zeros(DType::Bool, shape)?;
        if bytes.len() != t.numel() {
            return Err(Error::Invalid(format!("{} values given for shape {shape:?}", bytes.len())));
        }
        t.bytes_mut().copy_from_slice(&bytes);
        Ok(t)
    }

    /// A scalar (rank 0) tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        Tensor::from_slice(&[], &[v]).expect("a scalar always fits")
    }

    /// A tensor from raw little-endian bytes (copied).
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Tensor> {
        let mut t = Tensor::zeros(dtype, shape)?;
        if bytes.len() != t.len {
            return Err(Error::Invalid(format!(
                "{} bytes given for a {dtype} tensor of shape {shape:?} ({} bytes)",
                bytes.len(),
                t.len
            )));
        }
        t.bytes_mut().copy_from_slice(bytes);
        Ok(t)
    }

    /// A tensor of `dtype` x `shape` that reuses `old`'s heap buffer when it owns
    /// one, no one else shares it and it holds at least the bytes needed; else a
    /// new zeroed buffer of `capacity_bytes` (at least the bytes needed). Contents
    /// are unspecified: the caller overwrites every element.
    pub fn recycle(old: Option<Tensor>, dtype: DType, shape: &[usize], capacity_bytes: usize) -> Result<Tensor> {
        let len = checked_numel(shape)?
            .checked_mul(dtype.size())
            .filter(|&l| l <= MAX_TENSOR_BYTES)
            .ok_or_else(|| Error::Invalid(format!("tensor of shape {shape:?} and dtype {dtype} is too large")))?;
        if let Some(Tensor { storage: Storage::Owned(mut words), .. }) = old {
            if Arc::get_mut(&mut words).is_some_and(|w| w.len() * 8 >= len) {
                return Ok(Tensor { dtype, shape: Dims::new(shape), storage: Storage::Owned(words), len });
            }
        }
        let words = vec![0u64; len.max(capacity_bytes).div_ceil(8)];
        Ok(Tensor { dtype, shape: Dims::new(shape), storage: Storage::Owned(Arc::new(words)), len })
    }

    /// A tensor that borrows `len` bytes at `offset` of `source` without copying.
    /// Fails if the range is outside the source or does not match dtype x shape.
    pub fn borrowed(
        dtype: DType,
        shape: &[usize],
        source: Arc<dyn AsRef<[u8]> + Send + Sync>,
        offset: usize,
    ) -> Result<Tensor> {
        let len = checked_numel(shape)?
            .checked_mul(dtype.size())
            .ok_or_else(|| Error::Invalid(format!("shape {shape:?} overflows")))?;
        let avail = (*source).as_ref().len();
        if offset.checked_add(len).is_none_or(|end| end > avail) {
            return Err(Error::Invalid(format!(
                "tensor bytes {offset}..{} lie outside a source of {avail} bytes",
                offset.saturating_add(len)
            )));
        }
        Ok(Tensor { dtype, shape: Dims::new(shape), storage: Storage::Borrowed { source, offset }, len })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        self.shape.as_slice()
    }

    pub fn rank(&self) -> usize {
        self.shape().len()
    }

    pub fn numel(&self) -> usize {
        self.len / self.dtype.size()
    }

    /// True if the bytes are a view into a shared source (e.g. a memory map).
    pub fn is_borrowed(&self) -> bool {
        matches!(self.storage, Storage::Borrowed { .. })
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Owned(words) => &bytemuck::cast_slice::<u64, u8>(words)[..self.len],
            Storage::Borrowed { source, offset } => &(**source).as_ref()[*offset..*offset + self.len],
        }
    }

    /// Mutable bytes; copies first if the storage is shared or borrowed.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if self.is_borrowed() {
            let mut words = vec![0u64; self.len.div_ceil(8)];
            bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..self.len].copy_from_slice(self.bytes());
            self.storage = Storage::Owned(Arc::new(words));
        }
        let len = self.len;
        match &mut self.storage {
            Storage::Owned(words) => {
                &mut bytemuck::cast_slice_mut::<u64, u8>(Arc::make_mut(words).as_mut_slice())[..len]
            }
            Storage::Borrowed { .. } => unreachable!("converted to owned above"),
        }
    }

    fn check_dtype<T: Element>(&self) -> Result<()> {
        let ok = T::DTYPE == self.dtype || (self.dtype == DType::Bool && T::DTYPE == DType::U8);
        if ok {
            Ok(())
        } else {
            Err(Error::DType { expected: T::DTYPE.name().to_string(), actual: self.dtype })
        }
    }

    /// A typed view. `bool` tensors are viewed as `u8`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        self.check_dtype::<T>()?;
        bytemuck::try_cast_slice(self.bytes())
            .map_err(|e| Error::Invalid(format!("cannot view tensor bytes as {}: {e}", T::DTYPE)))
    }

    /// A mutable typed view (copy-on-write if shared).
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        self.check_dtype::<T>()?;
        bytemuck::try_cast_slice_mut(self.bytes_mut())
            .map_err(|e| Error::Invalid(format!("cannot view tensor bytes as {}: {e}", T::DTYPE)))
    }

    /// The same bytes under another shape with the same element count (no copy).
    pub fn reshaped(&self, shape: &[usize]) -> Result<Tensor> {
        if checked_numel(shape)? != self.numel() {
            return Err(Error::Invalid(format!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                self.shape(),
                self.numel()
            )));
        }
        let mut t = self.clone();
        t.shape = Dims::new(shape);
        Ok(t)
    }

    /// Values as f64 (lossy for 64-bit integers beyond 2^53); bools as 0/1.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        if self.dtype == DType::Bool {
            return self.bytes().iter().map(|&b| (b != 0) as u8 as f64).collect();
        }
        crate::dispatch_numeric!(self.dtype, T => {
            self.as_slice::<T>().map(|s| s.iter().map(|v| v.to_f64()).collect()).unwrap_or_default()
        }, bool => unreachable!("handled above"))
    }

    /// Values as i64 (for shape-like tensors: int64, int32, ... and bool).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        if self.dtype == DType::Bool {
            return Ok(self.bytes().iter().map(|&b| (b != 0) as i64).collect());
        }
        crate::dispatch_numeric!(self.dtype, T => {
            Ok(self.as_slice::<T>()?.iter().map(|v| v.to_i64()).collect())
        }, bool => unreachable!("handled above"))
    }

    /// Converts to another dtype with ONNX `Cast` semantics.
    pub fn cast(&self, to: DType) -> Result<Tensor> {
        if to == self.dtype {
            return Ok(self.clone());
        }
        let mut out = Tensor::zeros(to, self.shape())?;
        cast_into(self, &mut out)?;
        Ok(out)
    }
}

fn cast_into(src: &Tensor, dst: &mut Tensor) -> Result<()> {
    let to = dst.dtype;
    if to == DType::Bool {
        let vals = src.to_f64_vec();
        for (d, v) in dst.bytes_mut().iter_mut().zip(vals) {
            *d = (v != 0.0) as u8;
        }
        return Ok(());
    }
    let src_int = src.dtype.is_int() || src.dtype == DType::Bool;
    crate::dispatch_numeric!(to, D => {
        let out = dst.as_mut_slice::<D>()?;
        if src_int && to.is_int() {
            // integer -> integer: wrap like C (two's complement truncation).
            for (o, v) in out.iter_mut().zip(src.to_i64_vec()?) {
                *o = D::from_i64(v);
            }
        } else if src.dtype == DType::U64 {
            let s = src.as_slice::<u64>()?;
            for (o, &v) in out.iter_mut().zip(s) {
                *o = D::from_f64(v as f64);
            }
        } else {
            for (o, v) in out.iter_mut().zip(src.to_f64_vec()) {
                *o = float_to::<D>(v);
            }
        }
    }, bool => unreachable!("handled above"));
    Ok(())
}

/// f64 -> element with ONNX semantics: NaN becomes 0 for integers; floats round.
fn float_to<D: Element>(v: f64) -> D {
    if D::DTYPE.is_int() {
        if v.is_nan() {
            return D::zero();
        }
        // Truncate toward zero, then wrap into the target width through i64/u64.
        let t = v.trunc();
        if D::DTYPE == DType::U64 {
            return D::from_f64(t);
        }
        D::from_i64(t as i64)
    } else {
        D::from_f64(v)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let vals = self.to_f64_vec();
        let shown: Vec<f64> = vals.iter().take(8).copied().collect();
        write!(f, "Tensor({} {:?} {:?}{})", self.dtype, self.shape(), shown, if vals.len() > 8 { " ..." } else { "" })
    }
}

impl PartialEq for Tensor {
    fn eq(&self, other: &Self) -> bool {
        self.dtype == other.dtype && self.shape() == other.shape() && self.bytes() == other.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_tensor_views_source_without_copy_and_checks_bounds() {
        let bytes: Vec<u8> = (0..16u8).collect();
        let src: Arc<dyn AsRef<[u8]> + Send + Sync> = Arc::new(bytes);
        let t = Tensor::borrowed(DType::U8, &[2, 4], src.clone(), 8).unwrap();
        assert!(t.is_borrowed());
        assert_eq!(t.as_slice::<u8>().unwrap(), &[8, 9, 10, 11, 12, 13, 14, 15]);
        assert!(Tensor::borrowed(DType::U8, &[9], src.clone(), 8).is_err());
        assert!(Tensor::borrowed(DType::U8, &[1], src, usize::MAX).is_err());
    }

    #[test]
    fn mutation_of_shared_storage_copies_first() {
        let a = Tensor::from_slice(&[3], &[1.0f32, 2.0, 3.0]).unwrap();
        let mut b = a.clone();
        b.as_mut_slice::<f32>().unwrap()[0] = 9.0;
        assert_eq!(a.as_slice::<f32>().unwrap(), &[1.0, 2.0, 3.0]);
        assert_eq!(b.as_slice::<f32>().unwrap(), &[9.0, 2.0, 3.0]);
    }

    #[test]
    fn wrong_dtype_view_is_an_error() {
        let a = Tensor::from_slice(&[1], &[1i64]).unwrap();
        assert!(a.as_slice::<f32>().is_err());
    }

    #[test]
    fn absurd_shapes_are_refused() {
        assert!(Tensor::zeros(DType::F32, &[usize::MAX, 2]).is_err());
        assert!(Tensor::zeros(DType::F32, &[usize::MAX / 4]).is_err());
    }

    #[test]
    fn cast_follows_onnx_rules() {
        let a = Tensor::from_slice(&[4], &[1.7f32, -1.7, f32::NAN, 300.0]).unwrap();
        let b = a.cast(DType::I32).unwrap();
        assert_eq!(b.as_slice::<i32>().unwrap(), &[1, -1, 0, 300]);
        let c = a.cast(DType::Bool).unwrap();
        assert_eq!(c.bytes(), &[1, 1, 1, 1]);
    }
}
