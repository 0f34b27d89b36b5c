//! [`LogMel`]: log-mel features of a signal, whole or streamed.
//!
//! Per frame of `n_fft` samples: multiply by the window, real FFT, `|X|^power`, the
//! mel filterbank, the log (the pipeline of `torchaudio.transforms.MelSpectrogram` +
//! log, or `librosa.feature.melspectrogram` + `power_to_db`). Frame `t` starts at
//! sample `t * hop_length` of the (optionally centre-padded) signal.
//!
//! Streaming ([`LogMel::push`]) keeps the samples not yet covered by a complete
//! frame, so feeding a signal in pieces of any size gives exactly (bit for bit) the
//! frames of [`LogMel::frames`] on the whole signal. With [`Center::None`] (the
//! default) that is all; with centring, `push` pads the start as the whole-signal
//! call does, and [`LogMel::finish`] pads the end and emits the last frames, which
//! depend on samples after them.

use super::filterbank::MelFilterbank;
use super::{Center, LogScale, MelParams, Result, Wav};
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use std::sync::Arc;

/// The log-mel front end: window, filterbank and FFT plan computed once, scratch
/// buffers reused, and the remainder of a stream between calls to [`LogMel::push`].
pub struct LogMel {
    params: MelParams,
    analyzer: FrameAnalyzer,
    stream: Stream,
}

/// Turns one frame of `n_fft` samples into `n_mels` features.
struct FrameAnalyzer {
    /// `n_fft` coefficients: the window, zero-padded at both ends if shorter.
    window: Vec<f32>,
    filterbank: MelFilterbank,
    fft: Arc<dyn RealToComplex<f32>>,
    power_exponent: f32,
    log: LogScale,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

/// Samples received by [`LogMel::push`] and not yet released.
#[derive(Default)]
struct Stream {
    /// The (padded) signal from the earliest sample still needed.
    pending: Vec<f32>,
    /// Index in `pending` where the next frame starts.
    next: usize,
    /// Whether the start padding is in `pending` (always, once the stream has begun,
    /// except for reflection, which waits for `n_fft / 2 + 1` samples to mirror).
    started: bool,
}

impl LogMel {
    /// Checks `params` and precomputes the window, filterbank and FFT plan.
    pub fn new(params: MelParams) -> Result<LogMel> {
        params.validate()?;
        let analyzer = FrameAnalyzer::new(&params);
        Ok(LogMel { params, analyzer, stream: Stream::default() })
    }

    /// Features per frame.
    pub fn n_mels(&self) -> usize {
        self.params.n_mels
    }

    /// Mel bands that cover no FFT bin (too many mels for `n_fft`): always log(0 + eps).
    /// Worth a warning; torchaudio and librosa warn too.
    pub fn empty_bands(&self) -> usize {
        self.analyzer.filterbank.empty_bands()
    }

    /// Samples of centre padding at each end (0 without centring).
    fn pad(&self) -> usize {
        match self.params.center {
            Center::None => 0,
            Center::Reflect | Center::Zero => self.params.n_fft / 2,
        }
    }

    /// Features of a whole signal, `frames x n_mels` row-major: `1 + (len - n_fft) /
    /// hop` frames without centring (none if shorter than `n_fft`), `1 + (len + 2 *
    /// (n_fft / 2) - n_fft) / hop` with it. Empty input gives no frames. Does not touch
    /// the stream state.
    pub fn frames(&mut self, samples: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        if samples.is_empty() {
            return out;
        }
        let pad = self.pad() as isize;
        let padded: Vec<f32>;
        let signal = match self.params.center {
            Center::None => samples,
            Center::Zero => {
                let zeros = std::iter::repeat_n(0.0, pad as usize);
                padded = zeros.clone().chain(samples.iter().copied()).chain(zeros).collect();
                &padded
            }
            Center::Reflect => {
                padded = (-pad..samples.len() as isize + pad).map(|i| samples[reflect(i, samples.len())]).collect();
                &padded
            }
        };
        let (n_fft, hop) = (self.params.n_fft, self.params.hop_length);
        let mut start = 0;
        while start + n_fft <= signal.len() {
            self.analyzer.frame(&signal[start..start + n_fft], &mut out);
            start += hop;
        }
        out
    }

    /// Features of a decoded WAV file, after checking it is at the rate the features
    /// are defined for (floe does not resample).
    pub fn wav_frames(&mut self, wav: &Wav) -> Result<Vec<f32>> {
        wav.expect_sample_rate(self.params.sample_rate)?;
        Ok(self.frames(&wav.samples))
    }

    /// Streams `samples` in: appends to `out` (`n_mels` values per frame) every frame
    /// that is complete, keeps the rest for the next call, and returns how many frames
    /// it appended. Pieces of any size, even empty, give the frames of
    /// [`LogMel::frames`] on their concatenation (with centring, the last ones come
    /// from [`LogMel::finish`]).
    pub fn push(&mut self, samples: &[f32], out: &mut Vec<f32>) -> usize {
        if samples.is_empty() {
            return 0;
        }
        let pad = self.pad();
        let s = &mut self.stream;
        if !s.started {
            match self.params.center {
                Center::None => {}
                Center::Zero => s.pending.resize(pad, 0.0),
                // Mirroring needs the samples 1..=pad: wait for them.
                Center::Reflect if s.pending.len() + samples.len() <= pad => {
                    s.pending.extend_from_slice(samples);
                    return 0;
                }
                Center::Reflect => {
                    s.pending.extend_from_slice(samples);
                    let mirrored: Vec<f32> = s.pending[1..=pad].iter().rev().copied().collect();
                    s.pending.splice(0..0, mirrored);
                    s.started = true;
                    return self.emit(out);
                }
            }
            s.started = true;
        }
        s.pending.extend_from_slice(samples);
        self.emit(out)
    }

    /// Ends the stream: with centring, pads the end as [`LogMel::frames`] does and
    /// appends the frames that needed it; returns how many. Then the next `push` starts
    /// a new stream. Without centring there is nothing to add (samples after the last
    /// complete frame are dropped, as in the whole-signal call).
    pub fn finish(&mut self, out: &mut Vec<f32>) -> usize {
        let pad = self.pad();
        let s = &mut self.stream;
        let produced = match self.params.center {
            Center::None => 0,
            // Not begun (no samples yet, or too few to mirror): compute it as a whole signal.
            _ if !s.started => {
                let raw = std::mem::take(&mut s.pending);
                let features = self.frames(&raw);
                out.extend_from_slice(&features);
                features.len() / self.params.n_mels
            }
            Center::Zero | Center::Reflect => {
                let n = s.pending.len();
                let tail: Vec<f32> = match self.params.center {
                    Center::Reflect => (2..=pad + 1).map(|j| s.pending[n - j]).collect(),
                    _ => vec![0.0; pad],
                };
                s.pending.extend_from_slice(&tail);
                self.emit(out)
            }
        };
        self.reset();
        produced
    }

    /// Drops any partial stream, so the next `push` starts a new signal.
    pub fn reset(&mut self) {
        self.stream = Stream::default();
    }

    /// Computes every complete frame in the stream, then releases the samples no later
    /// frame (nor the end mirror, which needs the last `pad + 1`) will read.
    fn emit(&mut self, out: &mut Vec<f32>) -> usize {
        let (n_fft, hop) = (self.params.n_fft, self.params.hop_length);
        let keep = match self.params.center {
            Center::Reflect => self.pad() + 1,
            Center::None | Center::Zero => 0,
        };
        let s = &mut self.stream;
        let mut produced = 0;
        while s.next + n_fft <= s.pending.len() {
            self.analyzer.frame(&s.pending[s.next..s.next + n_fft], out);
            s.next += hop;
            produced += 1;
        }
        let release = s.next.min(s.pending.len().saturating_sub(keep));
        s.pending.drain(..release);
        s.next -= release;
        produced
    }
}

/// Index of padded position `i` in a signal of `n` samples mirrored at both ends
/// without repeating the edge (numpy's `pad(mode="reflect")`, also for pads longer
/// than the signal).
fn reflect(i: isize, n: usize) -> usize {
    if n == 1 {
        return 0;
    }
    let period = 2 * (n as isize - 1);
    let j = i.rem_euclid(period);
    (if j < n as isize { j } else { period - j }) as usize
}

impl FrameAnalyzer {
    fn new(p: &MelParams) -> FrameAnalyzer {
        let mut window = vec![0.0; p.n_fft];
        let left = (p.n_fft - p.win_length) / 2; // torch.stft centres a short window
        window[left..left + p.win_length].copy_from_slice(&p.window.coefficients(p.win_length));
        let filterbank = MelFilterbank::new(
            p.sample_rate,
            p.n_fft,
            p.n_mels,
            p.f_min as f64,
            p.f_max_hz() as f64,
            p.mel_scale,
            p.norm,
        );
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(p.n_fft);
        FrameAnalyzer {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            power: vec![0.0; p.n_fft / 2 + 1],
            window,
            filterbank,
            fft,
            power_exponent: p.power,
            log: p.log,
        }
    }

    /// Appends the `n_mels` features of `frame` (`n_fft` samples) to `out`.
    fn frame(&mut self, frame: &[f32], out: &mut Vec<f32>) {
        for ((x, s), w) in self.input.iter_mut().zip(frame).zip(&self.window) {
            *x = s * w;
        }
        self.fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .expect("FFT buffers are sized by the plan");
        let p = self.power_exponent;
        for (pw, c) in self.power.iter_mut().zip(&self.spectrum) {
            let sq = c.norm_sqr();
            *pw = if p == 2.0 {
                sq
            } else if p == 1.0 {
                sq.sqrt()
            } else {
                sq.powf(p / 2.0)
            };
        }
        let start = out.len();
        out.resize(start + self.filterbank.n_mels(), 0.0);
        let mel = &mut out[start..];
        self.filterbank.apply(&self.power, mel);
        for m in mel {
            *m = match self.log {
                LogScale::None => *m,
                LogScale::Ln { offset } => (*m + offset).ln(),
                LogScale::LnClamped { floor } => m.max(floor).ln(),
                LogScale::Db { floor } => 10.0 * m.max(floor).log10(),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::test_data::{max_abs_diff, npy, path};
    use crate::audio::{read_wav, MelNorm, MelScale, Window};

    fn chirp() -> Vec<f32> {
        read_wav(path("chirp_noise_16k.wav")).unwrap().samples
    }

    fn slaney_hamming_reflect_db() -> MelParams {
        MelParams {
            n_fft: 512,
            win_length: 400,
            window: Window::Hamming,
            n_mels: 32,
            f_min: 20.0,
            f_max: Some(7600.0),
            power: 1.0,
            log: LogScale::Db { floor: 1e-10 },
            center: Center::Reflect,
            mel_scale: MelScale::Slaney,
            norm: MelNorm::Slaney,
            ..MelParams::default()
        }
    }

    fn povey_zero_ln_clamped() -> MelParams {
        MelParams {
            window: Window::Povey,
            log: LogScale::LnClamped { floor: f32::EPSILON },
            center: Center::Zero,
            ..MelParams::default()
        }
    }

    /// References: scripts/make_audio_refs.py in float64 (the first two agree with
    /// librosa.feature.melspectrogram to 1e-6 and 4e-6 dB). Tolerances are on log values.
    #[test]
    fn log_mel_of_a_chirp_matches_numpy_reference() {
        let cases = [
            ("logmel_default.npy", MelParams::default(), 48, 1e-4),
            ("logmel_slaney_hamming_reflect_db.npy", slaney_hamming_reflect_db(), 51, 5e-4), // dB = 4.3 ln
            ("logmel_povey_zero_lnclamp.npy", povey_zero_ln_clamped(), 51, 1e-4),
        ];
        let signal = chirp();
        for (name, params, n_frames, tol) in cases {
            let (shape, want) = npy(name);
            assert_eq!(shape, [n_frames, params.n_mels], "{name}");
            let got = LogMel::new(params).unwrap().frames(&signal);
            let err = max_abs_diff(&got, &want);
            eprintln!("{name}: max abs err {err:.2e}");
            assert!(err < tol, "{name}: max abs err {err}");
        }
    }

    /// A small deterministic generator (xorshift), so the test needs no crate.
    fn piece_sizes(seed: u64, total: usize, max: usize) -> Vec<usize> {
        let mut state = seed;
        let mut sizes = Vec::new();
        let mut left = total;
        while left > 0 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state % (max as u64 + 1)) as usize; // 0 included: empty pushes
            sizes.push(n.min(left));
            left -= n.min(left);
        }
        sizes
    }

    fn streamed(mel: &mut LogMel, signal: &[f32], sizes: &[usize]) -> Vec<f32> {
        let mut out = Vec::new();
        let mut frames = 0;
        let mut at = 0;
        for &n in sizes {
            frames += mel.push(&signal[at..at + n], &mut out);
            at += n;
        }
        frames += mel.finish(&mut out);
        assert_eq!(frames * mel.n_mels(), out.len());
        out
    }

    #[test]
    fn streaming_matches_whole_signal_for_any_chunking() {
        let signal = chirp();
        let sparse_hops = MelParams { hop_length: 500, center: Center::Reflect, ..MelParams::default() }; // hop > n_fft
        let params = [MelParams::default(), slaney_hamming_reflect_db(), povey_zero_ln_clamped(), sparse_hops];
        for (i, p) in params.into_iter().enumerate() {
            let mut mel = LogMel::new(p).unwrap();
            let whole = mel.frames(&signal);
            for seed in 1..=8u64 {
                let max = [1, 7, 160, 401, 1000, 3000, 8000, 200][seed as usize - 1];
                let sizes = piece_sizes(seed * 7919 + i as u64, signal.len(), max);
                assert_eq!(streamed(&mut mel, &signal, &sizes), whole, "params {i}, pieces up to {max}");
            }
        }
    }

    /// Signals shorter than a frame or than the reflection pad, and empty ones.
    #[test]
    fn short_signals_stream_like_whole_ones() {
        let signal = chirp();
        for center in [Center::None, Center::Zero, Center::Reflect] {
            let mut mel = LogMel::new(MelParams { center, ..MelParams::default() }).unwrap();
            for len in [0, 1, 2, 150, 200, 201, 399, 400, 401, 560] {
                let whole = mel.frames(&signal[..len]);
                let want_frames = match center {
                    _ if len == 0 => 0,
                    Center::None if len < 400 => 0,
                    Center::None => 1 + (len - 400) / 160,
                    Center::Zero | Center::Reflect => 1 + len / 160,
                };
                assert_eq!(whole.len(), want_frames * 40, "{center:?} len {len}");
                assert_eq!(streamed(&mut mel, &signal[..len], &[len / 3, len - len / 3]), whole, "{center:?} {len}");
            }
        }
    }

    #[test]
    fn centred_stream_gives_every_frame_that_needs_no_end_padding_before_finish() {
        let signal = chirp();
        let mut mel = LogMel::new(slaney_hamming_reflect_db()).unwrap();
        let whole = mel.frames(&signal);
        let mut out = Vec::new();
        let early = mel.push(&signal, &mut out);
        // Frame t ends at t*160 + 256 of the signal; it must fit in the 8000 samples.
        assert_eq!(early, (8000 - 256) / 160 + 1);
        assert_eq!(out[..], whole[..out.len()]);
        assert_eq!(mel.finish(&mut out), 51 - early);
        assert_eq!(out, whole);
    }

    #[test]
    fn features_of_a_wav_at_another_rate_are_an_error() {
        let mut mel = LogMel::new(MelParams::default()).unwrap();
        let err = mel.wav_frames(&read_wav(path("rate8k.wav")).unwrap()).unwrap_err();
        assert!(matches!(err, crate::audio::AudioError::SampleRateMismatch { found: 8000, expected: 16000, .. }));
        assert_eq!(mel.wav_frames(&read_wav(path("chirp_noise_16k.wav")).unwrap()).unwrap().len(), 48 * 40);
    }

    #[test]
    fn invalid_params_are_errors_naming_the_flag() {
        let cases = [
            (MelParams { win_length: 500, ..MelParams::default() }, "--win-length"),
            (MelParams { hop_length: 0, ..MelParams::default() }, "--hop-length"),
            (MelParams { n_mels: 0, ..MelParams::default() }, "--n-mels"),
            (MelParams { f_max: Some(9000.0), ..MelParams::default() }, "--f-max"),
            (MelParams { f_min: 8000.0, ..MelParams::default() }, "--f-min"),
            (MelParams { log: LogScale::Ln { offset: 0.0 }, ..MelParams::default() }, "--log-eps"),
            (MelParams { n_fft: 1, win_length: 1, ..MelParams::default() }, "--n-fft"),
        ];
        for (params, flag) in cases {
            let msg = LogMel::new(params).err().expect(flag).to_string();
            assert!(msg.contains(flag), "{msg}");
        }
    }
}
