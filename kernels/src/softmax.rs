//! Softmax and log-softmax over one contiguous row (max-subtracted for stability).

/// In-place softmax of one row.
pub fn softmax_f32(row: &mut [f32]) {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut s = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    let inv = 1.0 / s;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// In-place log-softmax of one row.
pub fn log_softmax_f32(row: &mut [f32]) {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
    let l = s.ln();
    row.iter_mut().for_each(|v| *v = *v - m - l);
}

#[cfg(test)]
mod tests {
    #[test]
    fn softmax_matches_definition() {
        let mut r = [1.0f32, 2.0, 3.0];
        super::softmax_f32(&mut r);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let s: f64 = e.iter().sum();
        for (a, b) in r.iter().zip(e) {
            assert!((*a as f64 - b / s).abs() < 1e-6);
        }
    }
}
