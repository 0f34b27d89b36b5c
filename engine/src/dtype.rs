//! Element types of tensors and the `Element` trait that maps Rust types to them.
//!
//! Storage is always raw little-endian bytes (so a tensor can borrow from a memory
//! map); `Element` says which Rust type views those bytes. `bool` is stored as one
//! byte (0 or 1) and viewed as `u8`.

use half::f16;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of a tensor or graph value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    F32,
    F16,
    F64,
    I8,
    U8,
    I16,
    I32,
    I64,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    /// All dtypes, in a stable order (used by tests and the docs).
    pub const ALL: [DType; 12] = [
        DType::F32,
        DType::F16,
        DType::F64,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::F64)
    }

    pub fn is_signed_int(self) -> bool {
        matches!(self, DType::I8 | DType::I16 | DType::I32 | DType::I64)
    }

    pub fn is_unsigned_int(self) -> bool {
        matches!(self, DType::U8 | DType::U16 | DType::U32 | DType::U64)
    }

    pub fn is_int(self) -> bool {
        self.is_signed_int() || self.is_unsigned_int()
    }

    /// Lower-case name as ONNX and numpy users know it.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::F64 => "float64",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::I16 => "int16",
            DType::I32 => "int32",
            DType::I64 => "int64",
            DType::U16 => "uint16",
            DType::U32 => "uint32",
            DType::U64 => "uint64",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A Rust type that views tensor bytes of one [`DType`].
pub trait Element: bytemuck::Pod + Send + Sync + fmt::Debug + PartialEq + PartialOrd + 'static {
    const DTYPE: DType;
    /// Lossy conversion used by casts, random inputs and comparisons in tests.
    fn to_f64(self) -> f64;
    /// Conversion with the semantics of ONNX `Cast` to this type (saturating for
    /// floats into integers is not required by ONNX; we truncate toward zero like C).
    fn from_f64(v: f64) -> Self;
    /// Conversion from an i64 without going through f64 (exact for every integer type).
    fn from_i64(v: i64) -> Self;
    fn to_i64(self) -> i64;
    fn zero() -> Self;
    fn one() -> Self;
    /// Exact for every integer type (floats truncate toward zero; NaN -> 0).
    fn to_i128(self) -> i128 {
        self.to_i64() as i128
    }
    /// Wrapping conversion (two's complement) into integer types; floats convert.
    fn from_i128(v: i128) -> Self {
        Self::from_i64(v as i64)
    }
}

macro_rules! int_element {
    ($t:ty, $d:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn zero() -> Self {
                0
            }
            fn one() -> Self {
                1
            }
            fn to_i128(self) -> i128 {
                self as i128
            }
            fn from_i128(v: i128) -> Self {
                v as $t
            }
        }
    };
}
int_element!(i8, DType::I8);
int_element!(u8, DType::U8);
int_element!(i16, DType::I16);
int_element!(i32, DType::I32);
int_element!(i64, DType::I64);
int_element!(u16, DType::U16);
int_element!(u32, DType::U32);
int_element!(u64, DType::U64);

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn from_i64(v: i64) -> Self {
        v as f32
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(v: f64) -> Self {
        v
    }
    fn from_i64(v: i64) -> Self {
        v as f64
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn zero() -> Self {
        0.0
    }
    fn one() -> Self {
        1.0
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f64(self) -> f64 {
        self.to_f64()
    }
    fn from_f64(v: f64) -> Self {
        f16::from_f64(v)
    }
    fn from_i64(v: i64) -> Self {
        f16::from_f64(v as f64)
    }
    fn to_i64(self) -> i64 {
        self.to_f64() as i64
    }
    fn zero() -> Self {
        f16::ZERO
    }
    fn one() -> Self {
        f16::ONE
    }
}

/// Runs `$body` with `$t` bound to the Rust type of a numeric dtype (bool excluded).
#[macro_export]
macro_rules! dispatch_numeric {
    ($dt:expr, $t:ident => $body:expr, bool => $bool_body:expr) => {
        match $dt {
            $crate::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::DType::F16 => {
                type $t = $crate::half::f16;
                $body
            }
            $crate::DType::F64 => {
                type $t = f64;
                $body
            }
            $crate::DType::I8 => {
                type $t = i8;
                $body
            }
            $crate::DType::U8 => {
                type $t = u8;
                $body
            }
            $crate::DType::I16 => {
                type $t = i16;
                $body
            }
            $crate::DType::I32 => {
                type $t = i32;
                $body
            }
            $crate::DType::I64 => {
                type $t = i64;
                $body
            }
            $crate::DType::U16 => {
                type $t = u16;
                $body
            }
            $crate::DType::U32 => {
                type $t = u32;
                $body
            }
            $crate::DType::U64 => {
                type $t = u64;
                $body
            }
            $crate::DType::Bool => $bool_body,
        }
    };
}

/// Runs `$body` with `$t` bound to the Rust type of a float dtype; `$other` otherwise.
#[macro_export]
macro_rules! dispatch_float {
    ($dt:expr, $t:ident => $body:expr, _ => $other:expr) => {
        match $dt {
            $crate::DType::F32 => {
                type $t = f32;
                $body
            }
            $crate::DType::F16 => {
                type $t = $crate::half::f16;
                $body
            }
            $crate::DType::F64 => {
                type $t = f64;
                $body
            }
            _ => $other,
        }
    };
}
