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

#[inline(always)]
fn apply(kind: BinaryKind, x: f32, y: f32) -> f32 {
    match kind {
        BinaryKind::Add => x + y,
        BinaryKind::Sub => x - y,
        BinaryKind::Mul => x * y,
        BinaryKind::Div => x / y,
    }
}

/// `out[i] = a[i] op s` (or `s op a[i]` when `scalar_first`).
pub fn binary_f32_scalar(kind: BinaryKind, a: &[f32], s: f32, scalar_first: bool, out: &mut [f32]) {
    macro_rules! run {
        ($k:expr) => {
            if scalar_first {
                out.iter_mut().zip(a).for_each(|(o, &x)| *o = apply($k, s, x))
            } else {
                out.iter_mut().zip(a).for_each(|(o, &x)| *o = apply($k, x, s))
            }
        };
    }
    // One monomorphic loop per kind so each vectorises.
    match kind {
        BinaryKind::Add => run!(BinaryKind::Add),
        BinaryKind::Sub => run!(BinaryKind::Sub),
        BinaryKind::Mul => run!(BinaryKind::Mul),
        BinaryKind::Div => run!(BinaryKind::Div),
    }
}

/// `out[i] = a[i] op b[i % b.len()]` (or `b[..] op a[i]` when `b_first`): a trailing
/// broadcast such as a bias `[N]` over `[..., N]`.
pub fn binary_f32_rows(kind: BinaryKind, a: &[f32], b: &[f32], b_first: bool, out: &mut [f32]) {
    if b.is_empty() {
        return;
    }
    for (orow, arow) in out.chunks_mut(b.len()).zip(a.chunks(b.len())) {
        macro_rules! run {
            ($k:expr) => {
                if b_first {
                    orow.iter_mut().zip(arow.iter().zip(b)).for_each(|(o, (&x, &y))| *o = apply($k, y, x))
                } else {
                    orow.iter_mut().zip(arow.iter().zip(b)).for_each(|(o, (&x, &y))| *o = apply($k, x, y))
                }
            };
        }
        match kind {
            BinaryKind::Add => run!(BinaryKind::Add),
            BinaryKind::Sub => run!(BinaryKind::Sub),
            BinaryKind::Mul => run!(BinaryKind::Mul),
            BinaryKind::Div => run!(BinaryKind::Div),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_and_row_broadcasts_match_the_definition() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let mut o = [0.0; 4];
        binary_f32_scalar(BinaryKind::Sub, &a, 1.0, true, &mut o);
        assert_eq!(o, [0.0, -1.0, -2.0, -3.0]);
        binary_f32_rows(BinaryKind::Div, &a, &[1.0, 2.0], false, &mut o);
        assert_eq!(o, [1.0, 1.0, 3.0, 2.0]);
        binary_f32_rows(BinaryKind::Sub, &a, &[10.0, 20.0], true, &mut o);
        assert_eq!(o, [9.0, 18.0, 7.0, 16.0]);
    }
}
