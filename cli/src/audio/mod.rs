//! Audio input for `floe stream --wav FILE.wav`: WAV decoding and the log-mel front
//! end that keyword-spotting and speech models are trained on.
//!
//! - [`wav`]: any PCM (8/16/24/32-bit) or 32-bit float WAV to mono `f32` in [-1, 1].
//! - [`window`]: the analysis windows (Hann, Hamming, Povey).
//! - [`filterbank`]: triangular mel filters, HTK or Slaney scale, optional area norm.
//! - [`params`]: [`MelParams`], every knob of the front end, with torchaudio-like
//!   defaults for 16 kHz keyword spotting.
//! - [`logmel`]: [`LogMel`], frames -> window -> FFT -> power -> mel -> log, for a
//!   whole signal or streamed in pieces of any size.
//! - [`args`]: [`WavArgs`], the `--wav`/`--n-mels`/... flags, for `#[command(flatten)]`.
//!
//! floe does not resample: a WAV whose rate differs from `MelParams::sample_rate` is an
//! error that says so.

// `floe stream --wav` computes a file's frames in one call; the streaming
// interface (`LogMel::push` / `finish` / `reset`) and the inspection helpers are
// the front end's API for pushing live audio, exercised by the tests.
#![cfg_attr(not(test), allow(dead_code))]

pub mod args;
pub mod filterbank;
pub mod logmel;
pub mod params;
pub mod wav;
pub mod window;

pub use args::WavArgs;
pub use filterbank::{MelNorm, MelScale};
pub use logmel::LogMel;
pub use params::{Center, LogScale, MelParams};
pub use wav::{read_wav, Wav};
pub use window::Window;

use std::path::PathBuf;

/// What can go wrong reading audio or setting up the front end. File errors carry
/// the file's path; parameter errors name the parameter (as its command-line flag).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("{}: no such file", path.display())]
    NotFound { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid WAV file ({reason})", path.display())]
    NotWav { path: PathBuf, reason: String },
    #[error("{}: unsupported WAV format: {what} (floe reads PCM 8/16/24/32-bit and 32-bit float)", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{}: truncated: the header declares {declared} samples but the file ends after {read}", path.display())]
    Truncated { path: PathBuf, declared: usize, read: usize },
    #[error("{}: the file holds no audio samples", path.display())]
    Empty { path: PathBuf },
    #[error(
        "{}: sampled at {found} Hz but the features are for {expected} Hz; floe does not resample: \
         convert the file (e.g. `sox IN.wav -r {expected} OUT.wav`) or pass --sample-rate {found} if the \
         model was trained at that rate",
        path.display()
    )]
    SampleRateMismatch { path: PathBuf, found: u32, expected: u32 },
    #[error("invalid mel front end: {0}")]
    BadParams(String),
}

pub type Result<T> = std::result::Result<T, AudioError>;

/// The reference files of `scripts/make_audio_refs.py`, in `cli/tests/data/audio/`.
#[cfg(test)]
pub(crate) mod test_data {
    use std::path::PathBuf;

    pub fn path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/audio").join(name)
    }

    /// A float32 `.npy` reference: its shape and values.
    pub fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
        let t = floe_engine::npy::read(&path(name)).unwrap();
        (t.shape().to_vec(), t.as_slice::<f32>().unwrap().to_vec())
    }

    /// Largest `|a - b|`, after checking the lengths agree.
    pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "lengths differ");
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }
}
