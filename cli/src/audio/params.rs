//! [`MelParams`]: every setting of the log-mel front end, checked before use.
//!
//! A model only works on features computed the way it was trained, so each knob of
//! the common Python front ends is here. The defaults are a 16 kHz keyword-spotting
//! front end in torchaudio's terms: `MelSpectrogram(sample_rate=16000, n_fft=400,
//! win_length=400, hop_length=160, n_mels=40, window_fn=hann_window, power=2.0,
//! mel_scale="htk", norm=None, center=False)` followed by `log(x + 1e-6)`: 25 ms
//! frames every 10 ms, 40 bands from 0 to 8 kHz. Differences from torchaudio's own
//! defaults: 40 mels (not 128), hop 160 (not 200), and `center=False`, which is what a
//! stream can compute (see [`Center`]).

use super::{AudioError, MelNorm, MelScale, Result, Window};

/// Padding of the signal so that frame `t` is centred on sample `t * hop_length`
/// (`torch.stft(center=True)`, librosa's default) rather than starting there.
///
/// Centring pads `n_fft / 2` samples before the start and after the end. A stream
/// ([`super::LogMel::push`]) pads its start the same way, but the last frames read
/// the end padding, so they come only from [`super::LogMel::finish`]: a live stream
/// that never ends lags `n_fft / 2` samples behind. [`Center::None`], the default,
/// has no such frames: every frame is final as soon as its samples have arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Center {
    /// No padding: frame `t` covers samples `t*hop .. t*hop + n_fft`. Streamable.
    None,
    /// Mirror the signal at each end, without repeating the edge sample (torch, librosa).
    Reflect,
    /// Pad with zeros at each end.
    Zero,
}

/// How mel energies become log features.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LogScale {
    /// The mel energies themselves.
    None,
    /// `ln(x + offset)`: the usual torchaudio KWS recipe (offset 1e-6).
    Ln { offset: f32 },
    /// `ln(max(x, floor))`: Kaldi-style (floor = f32 epsilon) and Whisper.
    LnClamped { floor: f32 },
    /// `10 log10(max(x, floor))`: decibels, `librosa.power_to_db(ref=1.0, top_db=None)`
    /// (floor 1e-10).
    Db { floor: f32 },
}

/// The settings of [`super::LogMel`]; see the module doc for the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct MelParams {
    /// Rate the features are defined at; a WAV at any other rate is an error.
    pub sample_rate: u32,
    /// FFT size; each frame has `n_fft` samples and gives `n_fft / 2 + 1` bins.
    pub n_fft: usize,
    /// Window length, at most `n_fft`; a shorter window is zero-padded at both ends
    /// to `n_fft`, as `torch.stft` does.
    pub win_length: usize,
    /// Samples between the starts of consecutive frames.
    pub hop_length: usize,
    /// Analysis window.
    pub window: Window,
    /// Mel bands (features per frame).
    pub n_mels: usize,
    /// Lowest frequency of the filterbank, Hz.
    pub f_min: f32,
    /// Highest frequency, Hz; `None` is the Nyquist frequency `sample_rate / 2`.
    pub f_max: Option<f32>,
    /// Exponent of the magnitude spectrum: 2.0 power, 1.0 magnitude.
    pub power: f32,
    /// Log applied to the mel energies.
    pub log: LogScale,
    /// Padding at the signal's ends (whole-signal only).
    pub center: Center,
    /// Mel scale of the filter centres.
    pub mel_scale: MelScale,
    /// Filter normalisation.
    pub norm: MelNorm,
}

impl Default for MelParams {
    fn default() -> Self {
        MelParams {
            sample_rate: 16000,
            n_fft: 400,
            win_length: 400,
            hop_length: 160,
            window: Window::Hann,
            n_mels: 40,
            f_min: 0.0,
            f_max: None,
            power: 2.0,
            log: LogScale::Ln { offset: 1e-6 },
            center: Center::None,
            mel_scale: MelScale::Htk,
            norm: MelNorm::None,
        }
    }
}

impl MelParams {
    /// The upper band edge in Hz (`f_max`, or Nyquist when unset).
    pub fn f_max_hz(&self) -> f32 {
        self.f_max.unwrap_or(self.sample_rate as f32 / 2.0)
    }

    /// Errs, naming the flag, on settings that cannot give features.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(AudioError::BadParams(msg));
        let nyquist = self.sample_rate as f32 / 2.0;
        if self.sample_rate == 0 {
            return bad("--sample-rate must be positive".into());
        }
        if self.n_fft < 2 {
            return bad(format!("--n-fft must be at least 2, got {}", self.n_fft));
        }
        if self.win_length == 0 || self.win_length > self.n_fft {
            return bad(format!("--win-length must be in 1..=n_fft ({}), got {}", self.n_fft, self.win_length));
        }
        if self.hop_length == 0 {
            return bad("--hop-length must be positive".into());
        }
        if self.n_mels == 0 {
            return bad("--n-mels must be positive".into());
        }
        let f_max = self.f_max_hz();
        if !(self.f_min >= 0.0 && self.f_min < f_max && f_max <= nyquist) {
            return bad(format!(
                "need 0 <= --f-min < --f-max <= sample_rate/2 ({nyquist} Hz), got f_min {} and f_max {f_max}",
                self.f_min
            ));
        }
        if !(self.power > 0.0 && self.power.is_finite()) {
            return bad(format!("power must be positive, got {}", self.power));
        }
        match self.log {
            LogScale::Ln { offset: e } | LogScale::LnClamped { floor: e } | LogScale::Db { floor: e }
                if !(e > 0.0 && e.is_finite()) =>
            {
                bad(format!("--log-eps must be positive, got {e}"))
            }
            _ => Ok(()),
        }
    }
}
