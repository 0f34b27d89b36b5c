//! Scalar special functions shared by all element-wise paths.

/// The error function, accurate to f64 rounding (libm's port of FreeBSD msun).
pub fn erf_f64(x: f64) -> f64 {
    libm::erf(x)
}

/// The error function in f32.
pub fn erf_f32(x: f32) -> f32 {
    libm::erff(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_matches_known_values() {
        // Abramowitz & Stegun table 7.1
        assert!((super::erf_f64(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
        assert!((super::erf_f64(-1.0) + 0.842_700_792_949_714_9).abs() < 1e-15);
        assert_eq!(super::erf_f64(0.0), 0.0);
    }
}
