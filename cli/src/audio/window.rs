//! Analysis windows, tapering each frame before its FFT.
//!
//! Hann and Hamming are *periodic* (period `N`, not `N - 1`), as `torch.hann_window`,
//! `torch.hamming_window` and `scipy.signal.get_window(.., fftbins=True)` make them, so
//! that features match models trained with torchaudio or librosa. Povey is Kaldi's
//! default (`feature-window.cc`): a symmetric Hann raised to the power 0.85.

use std::f64::consts::PI;

/// The window applied to each frame of `win_length` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Window {
    /// 0.5 - 0.5 cos(2 pi n / N); torchaudio's and librosa's default.
    Hann,
    /// 0.54 - 0.46 cos(2 pi n / N).
    Hamming,
    /// (0.5 - 0.5 cos(2 pi n / (N - 1)))^0.85; Kaldi's (and so torchaudio.compliance.kaldi's) default.
    Povey,
    /// All ones: no tapering.
    Rectangular,
}

impl Window {
    /// The `len` coefficients of the window.
    pub fn coefficients(self, len: usize) -> Vec<f32> {
        let periodic = |n: usize| 2.0 * PI * n as f64 / len as f64;
        let symmetric = |n: usize| 2.0 * PI * n as f64 / (len.max(2) - 1) as f64;
        (0..len)
            .map(|n| match self {
                Window::Hann => 0.5 - 0.5 * periodic(n).cos(),
                Window::Hamming => 0.54 - 0.46 * periodic(n).cos(),
                Window::Povey => (0.5 - 0.5 * symmetric(n).cos()).powf(0.85),
                Window::Rectangular => 1.0,
            } as f32)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed forms at known points: periodic windows are zero (Hann) or 0.08
    /// (Hamming) at n = 0 and peak at n = N/2; Povey is symmetric and zero at both ends.
    #[test]
    fn windows_match_their_closed_forms_at_known_points() {
        let hann = Window::Hann.coefficients(8);
        assert_eq!(hann[0], 0.0);
        assert!((hann[4] - 1.0).abs() < 1e-7 && (hann[2] - 0.5).abs() < 1e-7);
        let hamming = Window::Hamming.coefficients(8);
        assert!((hamming[0] - 0.08).abs() < 1e-7 && (hamming[4] - 1.0).abs() < 1e-7);
        let povey = Window::Povey.coefficients(5);
        assert!(povey[0].abs() < 1e-7 && povey[4].abs() < 1e-7 && (povey[2] - 1.0).abs() < 1e-7);
        assert!((povey[1] - 0.5f32.powf(0.85)).abs() < 1e-6);
        assert_eq!(Window::Rectangular.coefficients(3), vec![1.0; 3]);
    }
}
