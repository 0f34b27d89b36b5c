//! [`WavArgs`]: the command-line flags of audio input, for `#[command(flatten)]` into
//! a subcommand (`floe stream --wav FILE.wav`), and their translation to [`MelParams`].

use super::{read_wav, Center, LogMel, LogScale, MelNorm, MelParams, MelScale, Result, Wav, Window};
use std::path::PathBuf;

/// Audio input: a WAV file and the log-mel front end that turns it into the model's
/// input. Defaults: 16 kHz, 25 ms Hann frames every 10 ms (n_fft 400), 40 HTK mel
/// bands from 0 Hz to Nyquist, power spectrum, ln(x + 1e-6), no centring — the
/// torchaudio MelSpectrogram recipe of common keyword-spotting models. Match them to
/// how the model was trained.
#[derive(Debug, Clone, clap::Args)]
pub struct WavArgs {
    /// WAV file to feed (PCM 8/16/24/32-bit or 32-bit float; channels are averaged).
    #[arg(long, value_name = "FILE")]
    pub wav: Option<PathBuf>,
    /// Feed the samples themselves (input [1, samples]), not log-mel features, for
    /// models that take raw audio; the feature flags below are then unused.
    #[arg(long)]
    pub raw_audio: bool,
    /// Sample rate the model expects, Hz. A WAV at another rate is an error: floe does
    /// not resample.
    #[arg(long, value_name = "HZ", default_value_t = 16000)]
    pub sample_rate: u32,
    /// Mel bands: features per frame (the model input's last dimension).
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub n_mels: usize,
    /// FFT size in samples; each frame has n_fft samples.
    #[arg(long, value_name = "N", default_value_t = 400)]
    pub n_fft: usize,
    /// Window length in samples, at most n_fft [default: n_fft].
    #[arg(long, value_name = "N")]
    pub win_length: Option<usize>,
    /// Samples between frames (160 = 10 ms at 16 kHz).
    #[arg(long, value_name = "N", default_value_t = 160)]
    pub hop_length: usize,
    /// Analysis window (hann and hamming are periodic, as in torch and librosa).
    #[arg(long, value_enum, default_value_t = Window::Hann)]
    pub window: Window,
    /// Lowest filterbank frequency, Hz.
    #[arg(long, value_name = "HZ", default_value_t = 0.0)]
    pub f_min: f32,
    /// Highest filterbank frequency, Hz [default: sample_rate / 2].
    #[arg(long, value_name = "HZ")]
    pub f_max: Option<f32>,
    /// Mel scale: htk (torchaudio's default) or slaney (librosa's).
    #[arg(long, value_enum, default_value_t = MelScale::Htk)]
    pub mel_scale: MelScale,
    /// Filter normalisation: none (peak 1, torchaudio's default) or slaney (equal
    /// area, librosa's default).
    #[arg(long, value_enum, default_value_t = MelNorm::None)]
    pub mel_norm: MelNorm,
    /// Exponent of the magnitude spectrum: 2 power, 1 magnitude.
    #[arg(long, value_name = "P", default_value_t = 2.0)]
    pub power: f32,
    /// Log of the mel energies: ln = ln(x + eps), ln-clamp = ln(max(x, eps)) (Kaldi,
    /// Whisper), db = 10 log10(max(x, eps)) (librosa power_to_db), none.
    #[arg(long, value_enum, default_value_t = LogArg::Ln)]
    pub log: LogArg,
    /// The eps of --log [default: 1e-6 for ln, 1.1920929e-7 for ln-clamp, 1e-10 for db].
    #[arg(long, value_name = "EPS")]
    pub log_eps: Option<f32>,
    /// Pad the signal's ends so frame t is centred on sample t*hop (torch.stft
    /// center=True): none, reflect or zero. With padding, the last frames of a stream
    /// come only when it ends.
    #[arg(long, value_enum, default_value_t = Center::None)]
    pub center: Center,
}

/// The `--log` choices; the eps comes from `--log-eps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogArg {
    /// ln(x + eps).
    Ln,
    /// ln(max(x, eps)).
    LnClamp,
    /// 10 log10(max(x, eps)).
    Db,
    /// No log: mel energies.
    None,
}

impl WavArgs {
    /// The front end the flags describe (not yet validated: [`LogMel::new`] does that).
    pub fn mel_params(&self) -> MelParams {
        let log = match self.log {
            LogArg::Ln => LogScale::Ln { offset: self.log_eps.unwrap_or(1e-6) },
            LogArg::LnClamp => LogScale::LnClamped { floor: self.log_eps.unwrap_or(f32::EPSILON) },
            LogArg::Db => LogScale::Db { floor: self.log_eps.unwrap_or(1e-10) },
            LogArg::None => LogScale::None,
        };
        MelParams {
            sample_rate: self.sample_rate,
            n_fft: self.n_fft,
            win_length: self.win_length.unwrap_or(self.n_fft),
            hop_length: self.hop_length,
            window: self.window,
            n_mels: self.n_mels,
            f_min: self.f_min,
            f_max: self.f_max,
            power: self.power,
            log,
            center: self.center,
            mel_scale: self.mel_scale,
            norm: self.mel_norm,
        }
    }

    /// The front end, checked and ready ([`LogMel::new`] of [`WavArgs::mel_params`]).
    pub fn log_mel(&self) -> Result<LogMel> {
        LogMel::new(self.mel_params())
    }

    /// Reads `path` and checks it is at `--sample-rate`.
    pub fn read(&self, path: &std::path::Path) -> Result<Wav> {
        let wav = read_wav(path)?;
        wav.expect_sample_rate(self.sample_rate)?;
        Ok(wav)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        wav: WavArgs,
    }

    fn parse(args: &[&str]) -> WavArgs {
        Cli::try_parse_from(std::iter::once("floe").chain(args.iter().copied())).unwrap().wav
    }

    #[test]
    fn flag_defaults_are_the_default_params() {
        let args = parse(&[]);
        assert_eq!(args.mel_params(), MelParams::default());
        assert!(args.wav.is_none() && !args.raw_audio);
    }

    #[test]
    fn flags_set_every_param() {
        let args = parse(&[
            "--wav",
            "a.wav",
            "--sample-rate",
            "8000",
            "--n-mels",
            "64",
            "--n-fft",
            "512",
            "--win-length",
            "256",
            "--hop-length",
            "80",
            "--window",
            "povey",
            "--f-min",
            "20",
            "--f-max",
            "3800",
            "--mel-scale",
            "slaney",
            "--mel-norm",
            "slaney",
            "--power",
            "1",
            "--log",
            "db",
            "--log-eps",
            "1e-8",
            "--center",
            "reflect",
        ]);
        let want = MelParams {
            sample_rate: 8000,
            n_fft: 512,
            win_length: 256,
            hop_length: 80,
            window: Window::Povey,
            n_mels: 64,
            f_min: 20.0,
            f_max: Some(3800.0),
            power: 1.0,
            log: LogScale::Db { floor: 1e-8 },
            center: Center::Reflect,
            mel_scale: MelScale::Slaney,
            norm: MelNorm::Slaney,
        };
        assert_eq!(args.mel_params(), want);
        assert_eq!(args.wav.as_deref(), Some(std::path::Path::new("a.wav")));
        assert_eq!(parse(&["--n-fft", "512"]).mel_params().win_length, 512, "window defaults to n_fft");
        assert_eq!(parse(&["--log", "ln-clamp"]).mel_params().log, LogScale::LnClamped { floor: f32::EPSILON });
    }

    #[test]
    fn reading_checks_the_sample_rate() {
        let file = crate::audio::test_data::path("rate8k.wav");
        assert!(parse(&[]).read(&file).unwrap_err().to_string().contains("does not resample"));
        assert_eq!(parse(&["--sample-rate", "8000"]).read(&file).unwrap().samples.len(), 256);
    }
}
