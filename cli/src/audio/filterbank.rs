//! The triangular mel filterbank: `n_mels` overlapping triangles, evenly spaced on the
//! mel scale between `f_min` and `f_max`, that pool FFT power bins into bands.
//!
//! Filter `m` rises from mel point `m` to `m + 1` and falls to `m + 2`, with the
//! `n_mels + 2` points evenly spaced in mels (Davis & Mermelstein 1980; the
//! construction of `librosa.filters.mel` and `torchaudio.functional.melscale_fbanks`).
//! Bin `k` sits at `k * sample_rate / n_fft` Hz (numpy's `rfftfreq`). Scales:
//! - HTK: `mel = 2595 log10(1 + f / 700)` (torchaudio's default, Kaldi's shape).
//! - Slaney (Auditory Toolbox): linear `mel = 3 f / 200` below 1 kHz, logarithmic
//!   above with step `ln(6.4) / 27` (librosa's default).
//!
//! The Slaney area norm scales filter `m` by `2 / (f[m+2] - f[m])` so each has about
//! the same area (librosa's `norm="slaney"`).

/// The mel scale: how hertz map to mels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MelScale {
    /// 2595 log10(1 + f/700).
    Htk,
    /// Linear below 1 kHz, logarithmic above (Slaney's Auditory Toolbox).
    Slaney,
}

/// How each triangle is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MelNorm {
    /// Peak 1 for every filter.
    None,
    /// Equal-area filters: 2 / (f[m+2] - f[m]).
    Slaney,
}

const SLANEY_F_BREAK: f64 = 1000.0;
const SLANEY_MEL_BREAK: f64 = 15.0; // 3 * 1000 / 200
const SLANEY_F_SP: f64 = 200.0 / 3.0;

fn slaney_log_step() -> f64 {
    6.4f64.ln() / 27.0
}

impl MelScale {
    /// Hertz to mels.
    pub fn mel(self, hz: f64) -> f64 {
        match self {
            MelScale::Htk => 2595.0 * (1.0 + hz / 700.0).log10(),
            MelScale::Slaney if hz < SLANEY_F_BREAK => hz / SLANEY_F_SP,
            MelScale::Slaney => SLANEY_MEL_BREAK + (hz / SLANEY_F_BREAK).ln() / slaney_log_step(),
        }
    }

    /// Mels to hertz.
    pub fn hz(self, mel: f64) -> f64 {
        match self {
            MelScale::Htk => 700.0 * (10f64.powf(mel / 2595.0) - 1.0),
            MelScale::Slaney if mel < SLANEY_MEL_BREAK => mel * SLANEY_F_SP,
            MelScale::Slaney => SLANEY_F_BREAK * (slaney_log_step() * (mel - SLANEY_MEL_BREAK)).exp(),
        }
    }
}

/// One filter: its non-zero weights, starting at FFT bin `start`.
#[derive(Debug, Clone)]
struct Band {
    start: usize,
    weights: Vec<f32>,
}

/// A mel filterbank over the `n_fft / 2 + 1` bins of a real FFT, stored sparsely (a
/// band covers a few bins) so applying it costs about two multiply-adds per bin.
#[derive(Debug, Clone)]
pub struct MelFilterbank {
    n_freqs: usize,
    bands: Vec<Band>,
}

impl MelFilterbank {
    /// The filters for `n_fft`-point frames at `sample_rate`, covering `f_min..f_max` Hz.
    pub fn new(
        sample_rate: u32,
        n_fft: usize,
        n_mels: usize,
        f_min: f64,
        f_max: f64,
        scale: MelScale,
        norm: MelNorm,
    ) -> MelFilterbank {
        let n_freqs = n_fft / 2 + 1;
        let (mel_lo, mel_hi) = (scale.mel(f_min), scale.mel(f_max));
        let points: Vec<f64> =
            (0..n_mels + 2).map(|i| scale.hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (n_mels + 1) as f64)).collect();
        let bin_hz = |k: usize| k as f64 * sample_rate as f64 / n_fft as f64;
        let bands = points
            .windows(3)
            .map(|p| {
                let (lo, mid, hi) = (p[0], p[1], p[2]);
                let scale = match norm {
                    MelNorm::None => 1.0,
                    MelNorm::Slaney => 2.0 / (hi - lo),
                };
                let weight = |k: usize| {
                    let f = bin_hz(k);
                    let rise = (f - lo) / (mid - lo);
                    let fall = (hi - f) / (hi - mid);
                    (rise.min(fall).max(0.0) * scale) as f32
                };
                let nonzero: Vec<usize> = (0..n_freqs).filter(|&k| weight(k) > 0.0).collect();
                match (nonzero.first(), nonzero.last()) {
                    (Some(&a), Some(&b)) => Band { start: a, weights: (a..=b).map(weight).collect() },
                    _ => Band { start: 0, weights: Vec::new() }, // narrower than a bin: all zero
                }
            })
            .collect();
        MelFilterbank { n_freqs, bands }
    }

    /// Number of mel bands.
    pub fn n_mels(&self) -> usize {
        self.bands.len()
    }

    /// Bands that cover no FFT bin (too many mels for `n_fft`): they always output 0.
    pub fn empty_bands(&self) -> usize {
        self.bands.iter().filter(|b| b.weights.is_empty()).count()
    }

    /// `out[m] = sum_k fb[m][k] * power[k]`, for `power` of `n_fft / 2 + 1` bins.
    pub fn apply(&self, power: &[f32], out: &mut [f32]) {
        debug_assert_eq!(power.len(), self.n_freqs);
        for (o, band) in out.iter_mut().zip(&self.bands) {
            let bins = &power[band.start..band.start + band.weights.len()];
            *o = bins.iter().zip(&band.weights).map(|(p, w)| p * w).sum();
        }
    }

    /// The dense `n_mels x (n_fft / 2 + 1)` matrix, row-major (for tests and export).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut dense = vec![0.0; self.bands.len() * self.n_freqs];
        for (row, band) in dense.chunks_exact_mut(self.n_freqs).zip(&self.bands) {
            row[band.start..band.start + band.weights.len()].copy_from_slice(&band.weights);
        }
        dense
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::test_data::{max_abs_diff, npy};

    #[test]
    fn mel_scales_invert_and_agree_on_known_points() {
        for scale in [MelScale::Htk, MelScale::Slaney] {
            for hz in [0.0, 300.0, 999.0, 1000.0, 4000.0, 8000.0] {
                assert!((scale.hz(scale.mel(hz)) - hz).abs() < 1e-6, "{scale:?} {hz}");
            }
        }
        assert!((MelScale::Htk.mel(700.0) - 2595.0 * 2f64.log10()).abs() < 1e-9);
        assert!((MelScale::Slaney.mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((MelScale::Slaney.mel(6400.0) - 42.0).abs() < 1e-9); // 15 + 27 steps of ln(6.4)/27
    }

    /// Reference: textbook formulas in float64 (scripts/make_audio_refs.py), which
    /// agree with librosa.filters.mel(htk=True, norm=None) to 0.
    #[test]
    fn htk_filterbank_matches_numpy_reference() {
        let (shape, want) = npy("fb_htk_sr16000_nfft400_mels40.npy");
        let fb = MelFilterbank::new(16000, 400, 40, 0.0, 8000.0, MelScale::Htk, MelNorm::None);
        assert_eq!(shape, [40, 201]);
        assert_eq!(fb.empty_bands(), 0);
        assert!(max_abs_diff(&fb.to_dense(), &want) < 1e-6);
    }

    /// Reference agrees with librosa.filters.mel(htk=False, norm="slaney") to 1e-9.
    #[test]
    fn slaney_filterbank_with_area_norm_matches_numpy_reference() {
        let (shape, want) = npy("fb_slaney_sr16000_nfft256_mels32_f20_7600.npy");
        let fb = MelFilterbank::new(16000, 256, 32, 20.0, 7600.0, MelScale::Slaney, MelNorm::Slaney);
        assert_eq!(shape, [32, 129]);
        assert!(max_abs_diff(&fb.to_dense(), &want) < 1e-8);
    }

    #[test]
    fn sparse_apply_equals_dense_matrix_product() {
        let fb = MelFilterbank::new(8000, 64, 10, 50.0, 3500.0, MelScale::Slaney, MelNorm::None);
        let power: Vec<f32> = (0..33).map(|k| (k as f32 * 0.37).sin().abs()).collect();
        let mut sparse = vec![0.0; 10];
        fb.apply(&power, &mut sparse);
        let dense: Vec<f32> =
            fb.to_dense().chunks(33).map(|row| row.iter().zip(&power).map(|(w, p)| w * p).sum()).collect();
        assert!(max_abs_diff(&sparse, &dense) < 1e-6);
    }

    #[test]
    fn too_many_mels_for_the_fft_leave_empty_bands_not_a_panic() {
        let fb = MelFilterbank::new(16000, 64, 80, 0.0, 8000.0, MelScale::Htk, MelNorm::None);
        assert!(fb.empty_bands() > 0);
        let mut out = vec![1.0; 80];
        fb.apply(&[1.0; 33], &mut out);
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
