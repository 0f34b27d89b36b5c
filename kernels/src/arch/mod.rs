//! Per-ISA micro-kernels. Each exports `MicroKernel` constants; the shared driver
//! in `gemm::driver` does everything else.

/// Defines `fn $name` as a [`crate::gemm::FewRowsFn`]: checks the operands, then
/// runs `$tile::<[$flag,] R>(kc, a, lda, b, out)` for `R = rows` (1..=SKINNY_ROWS),
/// a tile function of the ISA reading a row-major A in place, `NR` floats per
/// output row. The same entry for every ISA; only the tile differs.
#[allow(unused_macros)]
macro_rules! few_rows_entry {
    ($name:ident, $nr:expr, $tile:ident $(, $flag:literal)?) => {
        fn $name(rows: usize, kc: usize, a: &[f32], lda: usize, b: &[f32], out: &mut [f32]) {
            use $crate::gemm::SKINNY_ROWS;
            assert!((1..=SKINNY_ROWS).contains(&rows) && kc > 0, "1..={SKINNY_ROWS} rows, kc > 0");
            assert!(a.len() >= (rows - 1) * lda + kc, "A rows too short");
            assert!(b.len() >= kc * $nr && out.len() >= rows * $nr, "packed panel too short");
            let (a, b, o) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
            // SAFETY: the ISA is available (the kernel is listed by
            // `gemm::available()` only then), and the operands hold every element
            // the tile reads and writes for `rows` rows (checked above).
            unsafe {
                match rows {
                    1 => $tile::<$($flag,)? 1>(kc, a, lda, b, o),
                    2 => $tile::<$($flag,)? 2>(kc, a, lda, b, o),
                    3 => $tile::<$($flag,)? 3>(kc, a, lda, b, o),
                    _ => $tile::<$($flag,)? 4>(kc, a, lda, b, o),
                }
            }
        }
    };
}

#[cfg(target_arch = "aarch64")]
pub mod aarch64;
#[cfg(all(target_arch = "arm", floe_neon))]
pub mod arm;
pub mod generic;
#[cfg(target_arch = "x86_64")]
pub mod x86_64;
