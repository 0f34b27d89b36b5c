//! Element-wise loops over f32 slices.

/// Binary arithmetic kinds with a same-shape fast path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// `out[i] = f(x[i])`.
pub fn map_f32(x: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = f(v);
    }
}

/// `out[i] = a[i] op b[i]` for equal-length slices.
pub fn binary_f32(kind: BinaryKind, a: &[f32], b: &[f32], out: &mut [f32]) {
    let it = out.iter_mut().zip(a.iter().zip(b));
    match kind {
        BinaryKind::Add => it.for_each(|(o, (x, y))| *o = x + y),
        BinaryKind::Sub => it.for_each(|(o, (x, y))| *o = x - y),
        BinaryKind::Mul => it.for_each(|(o, (x, y))| *o = x * y),
        BinaryKind::Div => it.for_each(|(o, (x, y))| *o = x / y),
    }
}
