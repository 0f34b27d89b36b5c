"""Reference data for floe's audio front end (cli/src/audio/), written to
cli/tests/data/audio/. Needs only numpy and the standard library; the outputs are
committed, so CI never runs this.

The log-mel references are computed in float64 from the textbook formulas (periodic
Hann/Hamming, Kaldi's Povey window, HTK and Slaney mel scales, Slaney area norm,
numpy's rfft), independently of the Rust code they check. The WAV files cover the
sample formats floe decodes and the errors it must report.

    python scripts/make_audio_refs.py
"""

import os
import struct
import wave

import numpy as np

OUT = os.path.join(os.path.dirname(__file__), "..", "cli", "tests", "data", "audio")
SR = 16000


# ---- mel filterbank (librosa.filters.mel / torchaudio melscale_fbanks construction)

def hz_to_mel(f, scale):
    f = np.asarray(f, dtype=np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    lin = f / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(f < 1000.0, lin, log)


def mel_to_hz(m, scale):
    m = np.asarray(m, dtype=np.float64)
    if scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    lin = m * (200.0 / 3)
    log = 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0))
    return np.where(m < 15.0, lin, log)


def mel_filterbank(sr, n_fft, n_mels, f_min, f_max, scale, norm):
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    pts = mel_to_hz(np.linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2), scale)
    fb = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, mid, hi = pts[m], pts[m + 1], pts[m + 2]
        rise = (freqs - lo) / (mid - lo)
        fall = (hi - freqs) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(rise, fall))
        if norm == "slaney":
            fb[m] *= 2.0 / (hi - lo)
    return fb


# ---- windows and the log-mel pipeline

def window(kind, n):
    k = np.arange(n)
    if kind == "hann":
        return 0.5 - 0.5 * np.cos(2 * np.pi * k / n)
    if kind == "hamming":
        return 0.54 - 0.46 * np.cos(2 * np.pi * k / n)
    if kind == "povey":
        return (0.5 - 0.5 * np.cos(2 * np.pi * k / (n - 1))) ** 0.85
    raise ValueError(kind)


def log_mel(x, sr, n_fft, win_length, hop, win, n_mels, f_min, f_max, power, log, eps, center, scale, norm):
    x = np.asarray(x, dtype=np.float64)
    if center != "none":
        x = np.pad(x, n_fft // 2, mode="reflect" if center == "reflect" else "constant")
    w = np.zeros(n_fft)
    left = (n_fft - win_length) // 2
    w[left:left + win_length] = window(win, win_length)
    n_frames = 1 + (len(x) - n_fft) // hop
    frames = np.stack([x[t * hop:t * hop + n_fft] * w for t in range(n_frames)])
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** power
    mel = spec @ mel_filterbank(sr, n_fft, n_mels, f_min, f_max, scale, norm).T
    if log == "ln":
        return np.log(mel + eps)
    if log == "ln-clamp":
        return np.log(np.maximum(mel, eps))
    if log == "db":
        return 10.0 * np.log10(np.maximum(mel, eps))
    return mel


# ---- WAV writing

def write_pcm(name, frames_int, width, rate=SR, channels=1):
    """frames_int: signed integers (interleaved); 8-bit is stored unsigned, as WAV says."""
    a = np.asarray(frames_int, dtype=np.int64)
    if width == 1:
        raw = (a + 128).astype(np.uint8).tobytes()
    elif width == 3:
        b = (a & 0xFFFFFF).astype("<u4").tobytes()
        raw = b"".join(b[i:i + 3] for i in range(0, len(b), 4))
    else:
        raw = a.astype({2: "<i2", 4: "<i4"}[width]).tobytes()
    with wave.open(os.path.join(OUT, name), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(raw)


def write_float(name, samples, dtype="<f4", rate=SR, channels=1):
    """IEEE float WAV (format tag 3), which the wave module cannot write."""
    data = np.asarray(samples, dtype=dtype).tobytes()
    bits = np.dtype(dtype).itemsize * 8
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", len(body)) + body)


def main():
    os.makedirs(OUT, exist_ok=True)
    save = lambda name, a: np.save(os.path.join(OUT, name), np.asarray(a, dtype=np.float32))

    # Filterbanks: torchaudio-like (HTK, no norm) and librosa-like (Slaney, area norm).
    save("fb_htk_sr16000_nfft400_mels40.npy", mel_filterbank(SR, 400, 40, 0.0, 8000.0, "htk", None))
    save("fb_slaney_sr16000_nfft256_mels32_f20_7600.npy", mel_filterbank(SR, 256, 32, 20.0, 7600.0, "slaney", "slaney"))

    # 0.5 s of a 100 Hz -> 6 kHz linear chirp plus white noise, 16-bit.
    rng = np.random.default_rng(6)
    t = np.arange(SR // 2) / SR
    chirp = 0.5 * np.sin(2 * np.pi * (100 * t + 0.5 * (6000 - 100) / 0.5 * t**2))
    pcm = np.clip(np.round((chirp + 0.05 * rng.standard_normal(len(t))) * 32768), -32768, 32767).astype(np.int16)
    write_pcm("chirp_noise_16k.wav", pcm, 2)
    x = pcm / 32768.0
    configs = {
        # floe's defaults: torchaudio MelSpectrogram(n_fft=400, hop=160, n_mels=40, center=False), ln(x + 1e-6)
        "logmel_default.npy": (400, 400, 160, "hann", 40, 0.0, 8000.0, 2.0, "ln", 1e-6, "none", "htk", None),
        # librosa-like: Slaney scale and norm, magnitude, dB, reflect centring, short Hamming window
        "logmel_slaney_hamming_reflect_db.npy":
            (512, 400, 160, "hamming", 32, 20.0, 7600.0, 1.0, "db", 1e-10, "reflect", "slaney", "slaney"),
        # Kaldi-like window and log, zero centring
        "logmel_povey_zero_lnclamp.npy":
            (400, 400, 160, "povey", 40, 0.0, 8000.0, 2.0, "ln-clamp", float(np.finfo(np.float32).eps), "zero", "htk", None),
    }
    for name, c in configs.items():
        save(name, log_mel(x, SR, *c))

    # Decoding: k/128 for k in -128..127 is exact in every format.
    k = np.arange(-128, 128)
    write_pcm("pcm8.wav", k, 1)
    write_pcm("pcm16.wav", k * 256, 2)
    write_pcm("pcm24.wav", k * 65536, 3)
    write_pcm("pcm32.wav", k * 16777216, 4)
    write_float("float32.wav", k / 128.0)
    # Stereo 16-bit: left k/128, right 0.5; mono is their mean.
    write_pcm("stereo16.wav", np.stack([k * 256, np.full_like(k, 16384)], axis=1).ravel(), 2, channels=2)
    # Errors: 64-bit float (unsupported), a data chunk cut short, no samples, 8 kHz, not a WAV.
    write_float("float64.wav", k / 128.0, dtype="<f8")
    with open(os.path.join(OUT, "pcm16.wav"), "rb") as f:
        whole = f.read()
    with open(os.path.join(OUT, "truncated16.wav"), "wb") as f:
        f.write(whole[:44 + 100])
    write_pcm("empty16.wav", np.zeros(0, dtype=np.int64), 2)
    write_pcm("rate8k.wav", k * 256, 2, rate=8000)
    with open(os.path.join(OUT, "not_a_wav.wav"), "wb") as f:
        f.write(b"this is a text file, not RIFF/WAVE audio\n")


if __name__ == "__main__":
    main()
