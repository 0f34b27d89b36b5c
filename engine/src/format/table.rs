//! How tensors inside the graph (constants, op attributes such as
//! ConstantOfShape's value) serialize: as an index into the file's tensor table,
//! never inline, so the metadata stays small and weights stay in the data section.
//!
//! `Tensor`'s serde impls only work inside [`collect`] (writing) or [`resolve`]
//! (loading), which install the table for the current thread.

use crate::tensor::Tensor;
use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::{Cell, RefCell};

thread_local! {
    static SINK: RefCell<Option<Vec<Tensor>>> = const { RefCell::new(None) };
    static SOURCE: RefCell<Option<Vec<Tensor>>> = const { RefCell::new(None) };
    static LAYOUT: Cell<u32> = const { Cell::new(super::FORMAT_VERSION) };
}

/// Runs `f` (a graph serialization or deserialization) in the layout of format
/// `version`: types whose stored layout changed between versions (e.g.
/// `KnnConfig`) read and write the older one via [`layout_version`].
pub fn with_layout<R>(version: u32, f: impl FnOnce() -> R) -> R {
    let old = LAYOUT.with(|l| l.replace(version));
    let r = f();
    LAYOUT.with(|l| l.set(old));
    r
}

/// The format version being read or written ([`with_layout`]); the current one
/// outside a `.floe` read or write.
pub fn layout_version() -> u32 {
    LAYOUT.with(|l| l.get())
}

/// Runs `f` (a serialization) collecting every tensor it serializes, in order.
pub fn collect<R>(f: impl FnOnce() -> R) -> (R, Vec<Tensor>) {
    SINK.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let r = f();
    let tensors = SINK.with(|s| s.borrow_mut().take()).unwrap_or_default();
    (r, tensors)
}

/// Runs `f` (a deserialization) with `tensors` as the table indices refer to.
pub fn resolve<R>(tensors: Vec<Tensor>, f: impl FnOnce() -> R) -> R {
    SOURCE.with(|s| *s.borrow_mut() = Some(tensors));
    let r = f();
    SOURCE.with(|s| *s.borrow_mut() = None);
    r
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let idx = SINK.with(|sink| {
            sink.borrow_mut().as_mut().map(|v| {
                v.push(self.clone());
                v.len() - 1
            })
        });
        match idx {
            Some(i) => (i as u32).serialize(s),
            None => Err(S::Error::custom("tensors serialize only while writing a .floe file")),
        }
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let i = u32::deserialize(d)? as usize;
        SOURCE.with(|src| match src.borrow().as_ref() {
            Some(v) => v.get(i).cloned().ok_or_else(|| {
                D::Error::custom(format!("tensor index {i} is outside the tensor table ({} entries)", v.len()))
            }),
            None => Err(D::Error::custom("tensors deserialize only while loading a .floe file")),
        })
    }
}
