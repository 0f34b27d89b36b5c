//! WAV decoding to mono `f32`: the input `floe stream --wav` feeds to a model, as
//! samples (`--raw-audio`) or through [`super::LogMel`].
//!
//! Integer PCM of `b` bits is scaled by `1 / 2^(b-1)` (so 16-bit 32767 -> 0.99997,
//! -32768 -> -1.0, the convention of torchaudio.load, soundfile and librosa);
//! 32-bit float samples are taken as they are. Several channels are averaged.
//! Parsing (RIFF chunks, WAVE_FORMAT_EXTENSIBLE, unsigned 8-bit) is `hound`'s.

use super::{AudioError, Result};
use hound::{SampleFormat, WavReader};
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

/// A decoded WAV file, mixed down to one channel.
#[derive(Debug, Clone)]
pub struct Wav {
    /// The file it came from, for error messages further on.
    pub path: PathBuf,
    /// Samples per second, as the header states it.
    pub sample_rate: u32,
    /// Channels in the file (before the mix-down).
    pub channels: u16,
    /// One sample per frame, the mean of the channels, nominally in [-1, 1].
    pub samples: Vec<f32>,
}

impl Wav {
    /// Length in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.samples.len() as f64 / self.sample_rate as f64
    }

    /// Errs unless the file was sampled at `expected` Hz: floe does not resample, and
    /// features computed at the wrong rate are garbage the model cannot flag.
    pub fn expect_sample_rate(&self, expected: u32) -> Result<()> {
        if self.sample_rate == expected {
            return Ok(());
        }
        Err(AudioError::SampleRateMismatch { path: self.path.clone(), found: self.sample_rate, expected })
    }
}

/// Reads a WAV file: PCM of 8, 16, 24 or 32 bits, or 32-bit float, any channel count.
/// Errors name the file: missing, not a WAV, an unsupported encoding, truncated data,
/// or no samples at all.
pub fn read_wav(path: impl AsRef<Path>) -> Result<Wav> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => AudioError::NotFound { path: path.to_owned() },
        _ => AudioError::Io { path: path.to_owned(), source: e },
    })?;
    decode(BufReader::new(file), path)
}

/// The decoding proper, over any reader; `path` is only for messages.
fn decode<R: Read>(reader: R, path: &Path) -> Result<Wav> {
    let header_error = |e: hound::Error| match e {
        hound::Error::IoError(e) if e.kind() == ErrorKind::UnexpectedEof => {
            AudioError::NotWav { path: path.to_owned(), reason: "the file ends inside its header".into() }
        }
        e => error(e, path),
    };
    let mut reader = WavReader::new(reader).map_err(header_error)?;
    let spec = reader.spec();
    let declared = reader.len() as usize;
    let scale = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Int, bits @ 1..=32) => 1.0 / (1u64 << (bits - 1)) as f32,
        (SampleFormat::Float, 32) => 1.0,
        (format, bits) => {
            return Err(AudioError::Unsupported { path: path.to_owned(), what: format!("{bits}-bit {format:?}") })
        }
    };
    let mut interleaved = Vec::with_capacity(declared);
    let truncated = |read| AudioError::Truncated { path: path.to_owned(), declared, read };
    match spec.sample_format {
        SampleFormat::Int => {
            for s in reader.samples::<i32>() {
                interleaved.push(s.map_err(|e| eof_or(e, path, || truncated(interleaved.len())))? as f32 * scale);
            }
        }
        SampleFormat::Float => {
            for s in reader.samples::<f32>() {
                interleaved.push(s.map_err(|e| eof_or(e, path, || truncated(interleaved.len())))?);
            }
        }
    }
    let channels = spec.channels.max(1);
    let frames = interleaved.len() / channels as usize;
    if frames == 0 {
        return Err(AudioError::Empty { path: path.to_owned() });
    }
    let samples =
        interleaved.chunks_exact(channels as usize).map(|f| f.iter().sum::<f32>() / channels as f32).collect();
    Ok(Wav { path: path.to_owned(), sample_rate: spec.sample_rate, channels, samples })
}

/// A read error while decoding samples: running out of data is truncation. (hound
/// reports a short read as its own error, without an OS error code.)
fn eof_or(e: hound::Error, path: &Path, truncated: impl FnOnce() -> AudioError) -> AudioError {
    match e {
        hound::Error::IoError(io) if io.kind() == ErrorKind::UnexpectedEof || io.raw_os_error().is_none() => {
            truncated()
        }
        e => error(e, path),
    }
}

/// hound's errors in floe's words.
fn error(e: hound::Error, path: &Path) -> AudioError {
    let path = path.to_owned();
    match e {
        hound::Error::IoError(source) => AudioError::Io { path, source },
        // hound reports a float WAV of other than 32 bits as malformed; it is valid, just not ours.
        hound::Error::FormatError(reason) if reason.starts_with("bits per sample is not") => {
            AudioError::Unsupported { path, what: reason.replace("bits per sample is not", "sample width other than") }
        }
        hound::Error::FormatError(reason) => AudioError::NotWav { path, reason: reason.into() },
        hound::Error::Unsupported => AudioError::Unsupported {
            path,
            what: "an encoding other than PCM or IEEE float (A-law, ADPCM, ...)".into(),
        },
        e @ (hound::Error::TooWide | hound::Error::UnfinishedSample | hound::Error::InvalidSampleFormat) => {
            AudioError::Unsupported { path, what: e.to_string() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::test_data::path;

    /// The files hold k/128 for k in -128..127, exact in every format.
    fn ramp() -> Vec<f32> {
        (-128..128).map(|k| k as f32 / 128.0).collect()
    }

    #[test]
    fn pcm_and_float_files_decode_to_the_same_scaled_samples() {
        for name in ["pcm8.wav", "pcm16.wav", "pcm24.wav", "pcm32.wav", "float32.wav"] {
            let wav = read_wav(path(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((wav.sample_rate, wav.channels), (16000, 1), "{name}");
            assert_eq!(wav.samples, ramp(), "{name}");
        }
    }

    #[test]
    fn stereo_is_averaged_to_mono() {
        let wav = read_wav(path("stereo16.wav")).unwrap();
        assert_eq!(wav.channels, 2);
        let want: Vec<f32> = ramp().iter().map(|l| (l + 0.5) / 2.0).collect();
        assert_eq!(wav.samples, want);
    }

    /// Each bad file gives its own error, naming the file, never a panic.
    #[test]
    fn bad_files_give_errors_that_name_the_file() {
        type Case = (&'static str, fn(&AudioError) -> bool, &'static str);
        let cases: [Case; 6] = [
            ("missing.wav", |e| matches!(e, AudioError::NotFound { .. }), "no such file"),
            ("not_a_wav.wav", |e| matches!(e, AudioError::NotWav { .. }), "not a valid WAV"),
            ("float64.wav", |e| matches!(e, AudioError::Unsupported { .. }), "sample width other than 32"),
            ("truncated16.wav", |e| matches!(e, AudioError::Truncated { declared: 256, read: 50, .. }), "truncated"),
            ("empty16.wav", |e| matches!(e, AudioError::Empty { .. }), "no audio samples"),
            ("chirp_noise_16k.wav/x", |e| matches!(e, AudioError::NotFound { .. } | AudioError::Io { .. }), "chirp"),
        ];
        for (name, is_expected, text) in cases {
            let err = read_wav(path(name)).expect_err(name);
            let msg = err.to_string();
            assert!(is_expected(&err), "{name}: {err:?}");
            assert!(msg.contains(name) && msg.contains(text), "{name}: {msg}");
        }
    }

    #[test]
    fn a_wav_at_another_rate_is_a_clear_error() {
        let wav = read_wav(path("rate8k.wav")).unwrap();
        assert_eq!(wav.sample_rate, 8000);
        let msg = wav.expect_sample_rate(16000).unwrap_err().to_string();
        assert!(msg.contains("rate8k.wav") && msg.contains("8000 Hz") && msg.contains("does not resample"), "{msg}");
        wav.expect_sample_rate(8000).unwrap();
    }
}
