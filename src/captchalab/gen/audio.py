"""Audio captchas: the captcha library's `AudioCaptcha`, seeded per sample, its randomness as knobs.

captcha 0.7.1 builds an audio captcha from one recording per character (a voice folder), each
sped up or slowed down and made louder or softer, separated by gaps of "babble" (other
characters' recordings played backwards, softer) over a white-noise floor, after three beeps.
It works on 8-bit unsigned PCM at 8 kHz in pure-Python loops over every sample (~0.27 s for
six digits). This module runs the same algorithm on numpy arrays: `change_speed`,
`change_sound` and `mix_wave` give byte for byte what the library's functions give, every
random choice is taken from the library's `secrets` calls in the library's order (a seeded
stand-in, as for images), and with the `default` style the output equals the library's for the
same draws (tests/test_audio.py checks it against the library itself). The one exception is
the noise floor, drawn by numpy from the sample's seed in one call instead of one `secrets`
call per audio sample: the same distribution, ~100x faster.

After the library's part, optional effects: added white or pink noise at an SNR, a telephone
band-pass (300-3400 Hz) and reverb (a synthetic exponentially decaying room response).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import wave
from dataclasses import dataclass

import numpy as np

from captchalab.core.errors import UsageError, suggest
from captchalab.gen.style import Knob, _fmt, load_style_file, parse_range

RATE = 8000  # Hz: the library's sample rate (its WAVE_HEADER says 8000 Hz, 8-bit, mono)
SILENT = 128  # 8-bit unsigned PCM zero

AUDIO_KNOBS: dict[str, Knob] = {k.name: k for k in [
    Knob("speed", float, 0.5, 2, "speed factor of each character's recording (library: 0.9-1.2); "
         "below 1 shorter, above 1 longer"),
    Knob("level", float, 0, 3, "loudness factor of each character (library: 0.8-1.2)"),
    Knob("gap", float, 0, 10, "babble before each character, s (library: 1-3)"),
    Knob("babble_speed", float, 0.1, 4, "speed factor of each babble piece (library: 0.8-1.6)"),
    Knob("babble_level", float, 0, 2, "loudness of the babble (library: 0.2-0.6; 0 = none)"),
    Knob("babble_gap", float, 0, 2, "pause between babble pieces, s (library: 0-0.1)"),
    Knob("floor", int, 1, 64, "white-noise floor, peak-to-peak in 8-bit steps (library: 4)"),
    Knob("snr", float, -10, 100, "added noise, signal-to-noise ratio in dB (100 = none)"),
    Knob("pink", float, 0, 1, "probability that the added noise is pink rather than white"),
    Knob("bandpass", float, 0, 1, "probability of a telephone band-pass, 300-3400 Hz"),
    Knob("reverb", float, 0, 3, "reverberation time RT60 of a synthetic room, s (0 = dry)"),
    # another speaker: drawn once per captcha, applied to every recording it uses (the
    # characters and the babble), before the library's own speed and level changes
    Knob("pitch", float, -12, 12, "voice pitch shift, semitones, formants kept (0 = as recorded)"),
    Knob("formant", float, 0.7, 1.4, "vocal-tract scale: formant frequencies times this, pitch "
         "kept (1 = as recorded)"),
    Knob("tempo", float, 0.5, 2, "speaking-time factor, pitch kept (1 = as recorded)"),
    Knob("timbre", float, 0, 24, "random smooth equaliser, peak-to-peak dB (0 = none)"),
    Knob("brightness", float, -40, 40, "spectral slope: dB gained from 0 Hz to 4 kHz, the babble's "
         "too (positive: brighter; 0 = as recorded)"),
]}
VOICE_KNOBS = ("pitch", "formant", "tempo", "timbre", "brightness")
# the library draws speed and level in steps of 1/100, the babble's in steps of 1/10
STEPS = {"speed": 100, "level": 100, "babble_speed": 10, "babble_level": 10}
NO_NOISE_DB = 100.0


@dataclass(frozen=True)
class AudioStyle:
    """Ranges (lo, hi) drawn per sample (per character for speed and level); see AUDIO_KNOBS."""

    speed: tuple[float, float] = (0.9, 1.2)
    level: tuple[float, float] = (0.8, 1.2)
    gap: tuple[float, float] = (1.0, 3.0)
    babble_speed: tuple[float, float] = (0.8, 1.6)
    babble_level: tuple[float, float] = (0.2, 0.6)
    babble_gap: tuple[float, float] = (0.0, 0.1)
    floor: tuple[int, int] = (4, 4)
    snr: tuple[float, float] = (NO_NOISE_DB, NO_NOISE_DB)
    pink: tuple[float, float] = (0.0, 0.0)
    bandpass: tuple[float, float] = (0.0, 0.0)
    reverb: tuple[float, float] = (0.0, 0.0)
    pitch: tuple[float, float] = (0.0, 0.0)
    formant: tuple[float, float] = (1.0, 1.0)
    tempo: tuple[float, float] = (1.0, 1.0)
    timbre: tuple[float, float] = (0.0, 0.0)
    brightness: tuple[float, float] = (0.0, 0.0)

    def changes_voice(self) -> bool:
        return any(getattr(self, k) != getattr(AudioStyle, k) for k in VOICE_KNOBS)

    def to_json(self) -> dict:
        return {k: list(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict) -> AudioStyle:
        return apply_audio_overrides(cls(), d, source="style")


AUDIO_PRESETS = {
    "default": {},  # the captcha library's own AudioCaptcha
    # faster and slower, softer and louder speech, short gaps, loud babble, noise at 5-20 dB,
    # half of them through a telephone band, some rooms
    "hard": {"speed": [0.75, 1.35], "level": [0.5, 1.3], "gap": [0.3, 1.5],
             "babble_level": [0.3, 0.8], "babble_gap": [0.0, 0.05], "floor": [4, 12],
             "snr": [5, 20], "pink": 0.5, "bandpass": 0.5, "reverb": [0.0, 0.4]},
    # the library's randomness with another speaker per captcha: pitch from a fifth below to an
    # octave above (the built-in voice speaks at ~104 Hz), shorter to longer vocal tracts,
    # slower and faster speech, a coloured channel
    "voices": {"pitch": [-6, 12], "formant": [0.85, 1.25], "tempo": [0.8, 1.25],
               "timbre": [0, 12]},
}
AUDIO_STYLE_KEYS = tuple(AUDIO_KNOBS)


def apply_audio_overrides(style: AudioStyle, overrides: dict, source: str = "option") -> AudioStyle:
    changes = {}
    for raw_key, value in overrides.items():
        key = raw_key.replace("-", "_")
        if key not in AUDIO_KNOBS:
            raise UsageError(f"unknown audio style key '{raw_key}' in {source}"
                             f"{suggest(key, AUDIO_KNOBS)} (allowed: {', '.join(AUDIO_KNOBS)})")
        changes[key] = parse_range(key, value, source, knobs=AUDIO_KNOBS)
    return dataclasses.replace(style, **changes)


def audio_preset(name: str) -> AudioStyle:
    if name not in AUDIO_PRESETS:
        raise UsageError(f"style: unknown audio style '{name}'{suggest(name, AUDIO_PRESETS)} "
                         f"(allowed: {', '.join(AUDIO_PRESETS)})", param="style")
    return apply_audio_overrides(AudioStyle(), AUDIO_PRESETS[name], source=f"preset '{name}'")


def resolve_audio_style(name: str = "default", file: str | None = None,
                        overrides: dict | None = None) -> AudioStyle:
    """Preset, then style file, then command-line knobs: later ones win."""
    data = load_style_file(file) if file else {}
    name = data.pop("preset", name) if file else name
    style = audio_preset(name)
    if data:
        style = apply_audio_overrides(style, data, source=f"style file {file}")
    if overrides:
        style = apply_audio_overrides(style, overrides)
    return style


def knob_help() -> str:
    return "; ".join(f"{k} {_fmt(v.lo)}..{_fmt(v.hi)}" for k, v in AUDIO_KNOBS.items())


# --- voices ------------------------------------------------------------------------------------

BUILTIN = "builtin"


def builtin_dir() -> str:
    from captcha.audio import DATA_DIR
    return DATA_DIR


def read_pcm8(path: str) -> np.ndarray:
    """A WAV file as 8-bit unsigned PCM at 8 kHz (uint8). 16-bit files are converted; other
    rates, stereo and empty files are refused (UsageError naming the file)."""
    try:
        with wave.open(path, "rb") as w:
            ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            data = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise UsageError(f"{path}: not a readable PCM WAV file ({e})") from None
    return pcm8_from(data, ch, width, rate, path)


WAV_HEADER_BYTES = 44  # the canonical PCM header the library writes; the samples follow it


def parse_wav(data: bytes, name: str) -> np.ndarray:
    """WAV bytes -> 8-bit unsigned PCM at 8 kHz (see read_pcm8)."""
    import io
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            frames = w.readframes(n)
    except (wave.Error, EOFError) as e:
        raise UsageError(f"{name}: not a readable PCM WAV file ({e})") from None
    return pcm8_from(frames, ch, width, rate, name)


def pcm8_from(data: bytes, channels: int, width: int, rate: int, name: str) -> np.ndarray:
    expected = f"mono PCM at {RATE} Hz, 8 or 16 bit (e.g. `sox IN -r {RATE} -c 1 -b 16 OUT.wav`)"
    if channels != 1:
        raise UsageError(f"{name}: {channels} channels; expected {expected}")
    if rate != RATE:
        raise UsageError(f"{name}: {rate} Hz; expected {expected}")
    if width == 1:
        pcm = np.frombuffer(data, np.uint8)
    elif width == 2:
        pcm = ((np.frombuffer(data, "<i2").astype(np.int32) >> 8) + SILENT).astype(np.uint8)
    else:
        raise UsageError(f"{name}: {8 * width}-bit samples; expected {expected}")
    if pcm.size == 0:
        raise UsageError(f"{name}: no audio (0 samples); expected {expected}")
    return pcm


@dataclass(frozen=True)
class Voice:
    """One voice folder: a sub-folder per character holding WAV recordings of it."""

    name: str
    path: str
    files: dict  # char -> sorted list of file paths

    @property
    def chars(self) -> str:
        return "".join(sorted(self.files))

    def sha256(self) -> str:
        h = hashlib.sha256()
        for c in sorted(self.files):
            for f in self.files[c]:
                h.update(f"{c}/{os.path.basename(f)}\0".encode())
                with open(f, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
        return h.hexdigest()

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "chars": self.chars,
                "files": sum(len(v) for v in self.files.values()), "sha256": self.sha256()}


def find_voice(spec: str) -> Voice:
    """'builtin' (the library's recordings of 0-9 and A-Z) or a folder in the library's layout."""
    path = builtin_dir() if spec == BUILTIN else spec
    name = BUILTIN if spec == BUILTIN else os.path.basename(os.path.normpath(spec))
    if not os.path.isdir(path):
        raise UsageError(f"voices: {spec} is not a folder; give a folder with one sub-folder "
                         "of WAV files per character, or builtin", param="voices")
    files = {}
    for c in sorted(os.listdir(path)):
        d = os.path.join(path, c)
        if len(c) == 1 and os.path.isdir(d):
            wavs = sorted(os.path.join(d, f) for f in os.listdir(d)
                          if f.lower().endswith(".wav") and os.path.isfile(os.path.join(d, f)))
            if wavs:
                files[c] = wavs
    if not files:
        raise UsageError(f"voices: {spec} holds no voice: expected one sub-folder per character "
                         "(named by it, e.g. 7/ or A/) with WAV files inside", param="voices")
    return Voice(name, os.path.abspath(path), files)


def resolve_voices(specs, chars: str) -> list[Voice]:
    """The voices of `specs`; every character of `chars` must have a recording in one of them."""
    voices = [find_voice(s) for s in (specs or [BUILTIN])]
    have = set().union(*(v.files for v in voices))
    missing = "".join(c for c in chars if c not in have)
    if missing:
        raise UsageError(f"charset: no voice for {missing!r} (the voices have "
                         f"{''.join(sorted(have))!r}); record them into --voices folders or "
                         "use a smaller --charset", param="charset")
    for v in voices:  # refuse unreadable recordings before anything is rendered
        for fs in v.files.values():
            for f in fs:
                read_pcm8(f)
    return voices


# --- the library's operations, on numpy arrays --------------------------------------------------

def change_speed(body: np.ndarray, speed: float) -> np.ndarray:
    """captcha.audio.change_speed: sample j fills output [int(j*speed), int((j+1)*speed)),
    with the library's running sum of `speed`; the output is int(len * speed) long (its tail
    left at 0 where the sum falls short)."""
    if speed == 1:
        return body
    length = int(len(body) * speed)
    steps = np.floor(np.concatenate([[0.0], np.cumsum(np.full(len(body), speed))])).astype(np.int64)
    out = np.repeat(body, np.diff(steps))[:length]
    if len(out) < length:
        out = np.concatenate([out, np.zeros(length - len(out), np.uint8)])
    return out


def change_sound(body: np.ndarray, level: float) -> np.ndarray:
    """captcha.audio.change_sound: scale the distance from 128 by `level`, truncated, clipped."""
    if level == 1:
        return body
    v = body.astype(np.int64)
    up = np.clip(np.trunc((v - 128) * level + 128), 128, 255)
    down = np.clip(np.trunc(128 - (128 - v) * level), 0, 128)
    return np.where(v > 128, up, np.where(v < 128, down, v)).astype(np.uint8)


def mix_wave(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """captcha.audio.mix_wave: the longer of the two, with the shorter mixed into its start."""
    if len(src) > len(dst):
        dst, src = src, dst
    n = len(src)
    s, d = src.astype(np.int64), dst[:n].astype(np.int64)
    prod = s * d / 128
    mixed = np.where((s < 128) & (d < 128), np.trunc(prod), np.trunc(2 * (s + d) - prod - 256))
    out = dst.copy()
    out[:n] = mixed.astype(np.uint8)
    return out


def splice(buf: np.ndarray, pos: int, end: int, part: np.ndarray) -> np.ndarray:
    """`buf[pos:end] = part` with bytearray semantics (the buffer grows when `part` is longer)."""
    p = min(pos, len(buf))
    e = min(max(end, p), len(buf))
    if e - p == len(part):
        buf[p:e] = part
        return buf
    return np.concatenate([buf[:p], part, buf[e:]])


def draw_step(secrets, lo_hi, per: int) -> float:
    """The library's `(secrets.randbelow(k) + a) / per` for a range [lo, hi] in steps of 1/per."""
    a, b = round(lo_hi[0] * per), round(lo_hi[1] * per)
    return (secrets.randbelow(b - a + 1) + a) / per


def draw_samples(secrets, lo_hi) -> int:
    """A duration in [lo, hi] seconds as a whole number of samples, drawn like the library."""
    a, b = round(lo_hi[0] * RATE), round(lo_hi[1] * RATE)
    return secrets.randbelow(b - a + 1) + a


# --- effects ------------------------------------------------------------------------------------

def _spectrum_filter(x: np.ndarray, gain) -> np.ndarray:
    n = len(x)
    f = np.fft.rfftfreq(n, 1 / RATE)
    return np.fft.irfft(np.fft.rfft(x) * gain(f), n)


def bandpass(x: np.ndarray, lo: float = 300.0, hi: float = 3400.0, order: int = 4) -> np.ndarray:
    """Zero-phase Butterworth-shaped band-pass (magnitude response) applied in the frequency
    domain: the telephone band."""
    def gain(f):
        with np.errstate(divide="ignore"):
            low_cut = 1 / np.sqrt(1 + (lo / np.maximum(f, 1e-9)) ** (2 * order))
        return low_cut / np.sqrt(1 + (f / hi) ** (2 * order))
    return _spectrum_filter(x, gain)


def reverb(x: np.ndarray, rt60: float, rng) -> np.ndarray:
    """Convolve with a synthetic room: Gaussian noise decaying by 60 dB over `rt60` seconds after
    the direct sound; the result has the dry signal's peak level."""
    n = max(1, int(rt60 * RATE))
    t = np.arange(n) / RATE
    ir = rng.standard_normal(n) * 10 ** (-3 * t / rt60) * 0.3
    ir[0] = 1.0
    size = len(x) + n - 1
    fft_n = 1 << (size - 1).bit_length()
    y = np.fft.irfft(np.fft.rfft(x, fft_n) * np.fft.rfft(ir, fft_n), fft_n)[:len(x)]
    peak = np.abs(y).max()
    return y * (np.abs(x).max() / peak) if peak > 0 else y


def noise(n: int, pink: bool, rng) -> np.ndarray:
    """Unit-power white or pink (1/f power) Gaussian noise."""
    w = rng.standard_normal(n)
    if pink:
        w = _spectrum_filter(w, lambda f: 1 / np.sqrt(np.maximum(f, RATE / n)))
    return w / np.sqrt(np.mean(w ** 2))


# --- voice changes ------------------------------------------------------------------------------

FRAME, HOP = 256, 64  # STFT of the voice changes: 32 ms Hann windows every 8 ms
LIFTER = 24  # cepstral coefficients kept for the spectral envelope (formants, not harmonics)


def _stft(x: np.ndarray) -> np.ndarray:
    x = np.pad(x, (FRAME // 2, FRAME // 2 + HOP))
    n = 1 + (len(x) - FRAME) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, FRAME)[::HOP][:n]
    return np.fft.rfft(frames * np.hanning(FRAME), axis=1)


def _istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add; frames 4 hops apart do not overlap, so 4 strided adds do it."""
    win = np.hanning(FRAME)
    frames = np.fft.irfft(spec, FRAME, axis=1) * win
    per = FRAME // HOP
    n = FRAME + HOP * (len(spec) - 1)
    out = np.zeros(n + FRAME * per)
    norm = np.zeros_like(out)
    for o in range(per):
        part = frames[o::per].ravel()
        out[o * HOP: o * HOP + len(part)] += part
        norm[o * HOP: o * HOP + len(part)] += np.tile(win ** 2, len(frames[o::per]))
    out = out[:n] / np.maximum(norm[:n], 1e-3)
    return out[FRAME // 2: FRAME // 2 + length]


def _envelope(mag: np.ndarray) -> np.ndarray:
    """Log spectral envelope of each frame: the log magnitude's first LIFTER cepstral terms."""
    cep = np.fft.irfft(np.log(mag + 1e-6), axis=1)
    cep[:, LIFTER:-LIFTER] = 0
    return np.fft.rfft(cep, axis=1).real


def resample(x: np.ndarray, n: int) -> np.ndarray:
    """Band-limited resampling of `x` to `n` samples: its spectrum truncated or zero-padded."""
    spec = np.fft.rfft(x)
    keep = n // 2 + 1
    spec = spec[:keep] if len(spec) >= keep else np.pad(spec, (0, keep - len(spec)))
    return np.fft.irfft(spec, n) * (n / len(x))


def _lerp(a: np.ndarray, pos: np.ndarray, axis: int) -> np.ndarray:
    """`a` linearly interpolated at fractional indices `pos` along `axis` (clamped)."""
    pos = np.clip(pos, 0, a.shape[axis] - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, a.shape[axis] - 1)
    w = pos - i0
    if axis == 1:
        return a[:, i0] * (1 - w) + a[:, i1] * w
    return a[i0] * (1 - w)[:, None] + a[i1] * w[:, None]


def _frames(a: np.ndarray, n: int) -> np.ndarray:
    """Per-frame rows of `a` interpolated to `n` frames spanning the same time."""
    return _lerp(a, np.arange(n) * (len(a) - 1) / max(n - 1, 1), 0)


def _stretch(spec: np.ndarray, factor: float) -> np.ndarray:
    """Phase vocoder: the frames resampled in time by `factor` (> 1 longer), each bin's phase
    advanced by its measured frequency so that the pitch stays."""
    n_out = max(1, int(round(len(spec) * factor)))
    pos = np.minimum(np.arange(n_out) / factor, len(spec) - 1)
    i0 = np.floor(pos).astype(int)
    i1 = np.minimum(i0 + 1, len(spec) - 1)
    mag = _lerp(np.abs(spec), pos, 0)
    expected = 2 * np.pi * HOP * np.arange(spec.shape[1]) / FRAME
    dphi = np.angle(spec[i1]) - np.angle(spec[i0]) - expected
    dphi = expected + (dphi + np.pi) % (2 * np.pi) - np.pi  # per-hop advance at the true freq
    phase = np.angle(spec[0]) + np.concatenate([np.zeros((1, spec.shape[1])),
                                                np.cumsum(dphi[:-1], axis=0)])
    return mag * np.exp(1j * phase)


def change_voice(x: np.ndarray, pitch: float, formant: float, tempo: float,
                 eq_db: np.ndarray | None) -> np.ndarray:
    """Another speaker saying the same thing: float PCM `x` with its pitch moved by `pitch`
    semitones, its formants scaled by `formant`, its duration by `tempo`, and the smooth gain
    curve `eq_db` (dB, sampled uniformly from 0 Hz to Nyquist) applied; the peak is kept.

    Band-limited resampling by the pitch ratio moves pitch and formants together; a phase
    vocoder brings the duration to `tempo` times the original; then every frame is given the
    original's spectral envelope (cepstral, LIFTER terms) scaled by `formant` in frequency."""
    ratio = 2 ** (pitch / 12)
    spec = _stft(resample(x, max(FRAME, int(round(len(x) / ratio)))))
    if abs(tempo * ratio - 1) > 1e-6:
        spec = _stretch(spec, tempo * ratio)
    moved = abs(ratio - 1) > 1e-6 or abs(formant - 1) > 1e-6  # the envelope needs putting back
    spec_x = _stft(x) if ratio < 1 or moved else None
    if ratio < 1:  # lowered: nothing above ratio * Nyquist; the original's band fills it
        high = _stretch(spec_x, tempo) if abs(tempo - 1) > 1e-6 else spec_x
        high = _frames(np.abs(high), len(spec)) * np.exp(1j * np.angle(spec))
        cut = int(ratio * (FRAME // 2) * 0.95)
        spec = np.concatenate([spec[:, :cut], high[:, cut:]], axis=1)
    log_gain = np.zeros(spec.shape[1])
    if eq_db is not None:
        log_gain = np.interp(np.linspace(0, 1, spec.shape[1]), np.linspace(0, 1, len(eq_db)),
                             eq_db) * (np.log(10) / 20)
    if moved:
        bins = np.arange(spec.shape[1])
        env_x = _frames(_envelope(np.abs(spec_x)), len(spec))  # the original's, full band
        want = _lerp(env_x, bins / formant, 1)
        have = _envelope(np.abs(spec))
        log_gain = log_gain + np.clip(want - have, -3, 3)  # at most ~26 dB either way
    out = _istft(spec * np.exp(log_gain), int(round(len(x) * tempo)))
    peak = np.abs(out).max()
    return out * (np.abs(x).max() / peak) if peak > 0 else out


def voice_draws(style: AudioStyle, rng) -> dict:
    """One speaker for a captcha: pitch, formant, tempo, and an equaliser of 6 random cosine
    terms scaled to the drawn peak-to-peak dB (a fixed number of draws, used or not)."""
    d = {"pitch": float(rng.uniform(*style.pitch)), "formant": float(rng.uniform(*style.formant)),
         "tempo": float(rng.uniform(*style.tempo)), "timbre": float(rng.uniform(*style.timbre))}
    f = np.linspace(0, np.pi, 32)  # 0 Hz .. Nyquist
    k = np.arange(1, 7)[:, None]  # slower ripples weigh more (amplitude 1/k)
    amp, phase = rng.standard_normal(6)[:, None], rng.uniform(0, 2 * np.pi, 6)[:, None]
    curve = (amp / k * np.cos(k * f + phase)).sum(axis=0)
    span = curve.max() - curve.min()
    d["eq_db"] = curve / span * d["timbre"] if span > 0 and d["timbre"] > 0 else None
    d["brightness"] = float(rng.uniform(*style.brightness))  # drawn last: the draws above stay put
    d["brightness_db"] = None
    if d["brightness"] != 0:  # a straight line in dB over 0 Hz .. Nyquist, centred on 0 dB
        d["brightness_db"] = d["brightness"] * (f / np.pi - 0.5)
        d["eq_db"] = (d["brightness_db"] if d["eq_db"] is None
                     else d["eq_db"] + d["brightness_db"])
    return d


def brighten(x: np.ndarray, gain_db: np.ndarray) -> np.ndarray:
    """`x` through the gain curve `gain_db` (dB, sampled uniformly over 0 Hz .. Nyquist), its
    peak kept."""
    out = _spectrum_filter(x, lambda f: 10 ** (np.interp(f, np.linspace(0, RATE / 2,
                                                                       len(gain_db)), gain_db) / 20))
    peak = np.abs(out).max()
    return out * (np.abs(x).max() / peak) if peak > 0 else out


# --- the renderer ------------------------------------------------------------------------------

@dataclass(frozen=True)
class AudioSample:
    split: str
    index: int
    text: str
    pcm: np.ndarray  # uint8, 8-bit unsigned PCM at RATE
    draws: dict  # what was drawn: per-character speed/level/gap, effects


def wav_bytes(pcm: np.ndarray) -> bytes:
    """8-bit mono PCM -> a WAV file exactly as the library writes one (patch_wave_header)."""
    from captcha.audio import patch_wave_header
    return bytes(patch_wave_header(bytearray(pcm.tobytes())))


class AudioRenderer:
    """Renders the audio samples of one recipe; build one per process (it holds the voices)."""

    def __init__(self, chars: str, length, style: AudioStyle, voice_specs, seed: int):
        import captcha.audio as ca

        from captchalab.gen.render import SeededSecrets

        self.chars, self.length, self.style, self.seed = chars, tuple(length), style, seed
        self.voices = [find_voice(v) for v in voice_specs]
        bank: dict[str, list[np.ndarray]] = {}
        for v in self.voices:
            for c, fs in v.files.items():
                bank.setdefault(c, []).extend(read_pcm8(f) for f in fs)
        self.bank = bank
        self.choices = sorted(bank)  # the babble draws from every recorded character
        self._secrets = SeededSecrets()
        self._voice = None  # this captcha's speaker (voice_draws) when the style changes voices
        self._changed: dict[int, np.ndarray] = {}  # recording id -> as that speaker says it
        self.beep = np.frombuffer(bytes(ca.BEEP), np.uint8)
        self.end_beep = np.frombuffer(bytes(ca.END_BEEP), np.uint8)
        self.silence = np.frombuffer(bytes(ca.SILENCE), np.uint8)

    @classmethod
    def from_recipe(cls, recipe) -> AudioRenderer:
        return cls(recipe.charset["chars"], recipe.length, AudioStyle.from_json(recipe.style),
                   [v["path"] if v["name"] != BUILTIN else BUILTIN for v in recipe.voices],
                   recipe.seed)

    def label(self, split: str, index: int) -> str:
        from captchalab.gen.render import draw_label
        return draw_label(self.seed, split, index, self.chars, self.length)

    def _speaker(self, rec: np.ndarray, babble: bool = False) -> np.ndarray:
        """A recording as this captcha's speaker says it (itself when voices are not changed);
        each recording is changed once per captcha. Babble (soft, backwards) gets only the
        speaker's pitch, by resampling, which also moves its formants and duration, and its
        brightness: a third of the cost of `change_voice`, which a captcha's ~20 babble pieces would
        otherwise take."""
        v = self._voice
        if v is None:
            return rec
        key = (id(rec), babble)
        out = self._changed.get(key)
        if out is None:
            x = (rec.astype(np.float64) - SILENT) / 128
            if babble:
                n = max(2, int(round(len(x) / 2 ** (v["pitch"] / 12))))
                y = np.interp(np.linspace(0, len(x) - 1, n), np.arange(len(x)), x)
                if v["brightness_db"] is not None:  # the same voice: as bright or as dark
                    y = brighten(y, v["brightness_db"])
            else:
                y = change_voice(x, v["pitch"], v["formant"], v["tempo"], v["eq_db"])
            out = np.clip(np.round(y * 128 + SILENT), 0, 255).astype(np.uint8)
            self._changed[key] = out
        return out

    def _twist_pick(self, key: str):
        s, st = self._secrets, self.style
        voice = self._speaker(s.choice(self.bank[key]))
        speed = draw_step(s, st.speed, STEPS["speed"])
        voice = change_speed(voice, speed)
        level = draw_step(s, st.level, STEPS["level"])
        return change_sound(voice, level), speed, level

    def _noise_pick(self) -> np.ndarray:
        s, st = self._secrets, self.style
        key = s.choice(self.choices)
        voice = self._speaker(s.choice(self.bank[key]), babble=True)[::-1]
        voice = change_speed(voice, draw_step(s, st.babble_speed, STEPS["babble_speed"]))
        return change_sound(voice, draw_step(s, st.babble_level, STEPS["babble_level"]))

    def floor_noise(self, length: int, level: int, rng) -> np.ndarray:
        """create_noise(length, level): (u % level) + 128 - level // 2 for u uniform in 0..256."""
        return (rng.integers(0, 257, length) % level + (128 - level // 2)).astype(np.uint8)

    def background(self, length: int, level: int, rng) -> np.ndarray:
        """AudioCaptcha.create_background_noise: babble over the noise floor."""
        bg = self.floor_noise(length, level, rng)
        pos = 0
        while pos < length:
            sound = self._noise_pick()
            end = pos + len(sound) + 1
            bg = splice(bg, pos, end, mix_wave(sound, bg[pos:end]))
            pos = end + draw_samples(self._secrets, self.style.babble_gap)
        return bg

    def body(self, text: str, rng) -> tuple[np.ndarray, dict]:
        """AudioCaptcha.create_wave_body with this style's ranges; the draws it made."""
        voices, inters, speeds, levels = [], [], [], []
        for c in text:
            v, sp, lv = self._twist_pick(c)
            voices.append(v)
            speeds.append(sp)
            levels.append(lv)
            inters.append(draw_samples(self._secrets, self.style.gap))
        length = max(len(v) for v in voices) * len(text) + sum(inters)
        level = int(self.style.floor[0] + rng.integers(0, self.style.floor[1] - self.style.floor[0] + 1))
        bg = self.background(length, level, rng)
        pos = inters[0]
        for i, v in enumerate(voices):
            end = pos + len(v) + 1
            bg = splice(bg, pos, end, mix_wave(v, bg[pos:end]))
            pos = end + inters[i]
        out = np.concatenate([self.beep, self.silence, self.beep, self.silence, self.beep, bg,
                              self.end_beep])
        return out, {"speed": speeds, "level": levels, "gap": [i / RATE for i in inters],
                     "floor": level}

    def render(self, split: str, index: int) -> AudioSample:
        from captchalab.gen.render import derive_seed

        text = self.label(split, index)
        self._secrets.rng.seed(derive_seed(self.seed, split, index, "render"))
        rng = np.random.default_rng(derive_seed(self.seed, split, index, "noise"))
        speaker = voice_draws(self.style, np.random.default_rng(
            derive_seed(self.seed, split, index, "voice")))
        self._voice = speaker if self.style.changes_voice() else None
        self._changed = {}
        pcm, draws = self.body(text, rng)
        draws.update({k: speaker[k] for k in VOICE_KNOBS})
        pcm, fx = self.effects(pcm, np.random.default_rng(derive_seed(self.seed, split, index,
                                                                       "effects")))
        return AudioSample(split, index, text, pcm, {**draws, **fx})

    def effects(self, pcm: np.ndarray, rng) -> tuple[np.ndarray, dict]:
        """Reverb, band-pass and added noise, in that order (a room, a phone line, the line's
        noise); each drawn for every sample (a fixed number of draws) and applied only when on."""
        st = self.style
        rt60 = float(rng.uniform(*st.reverb))
        phone = bool(rng.random() < rng.uniform(*st.bandpass))
        snr = float(rng.uniform(*st.snr))
        pink = bool(rng.random() < rng.uniform(*st.pink))
        fx = {"reverb": rt60, "bandpass": int(phone), "snr": snr, "pink": int(pink)}
        if rt60 <= 0 and not phone and snr >= NO_NOISE_DB:
            return pcm, fx
        x = (pcm.astype(np.float64) - SILENT) / 128
        if rt60 > 0:
            x = reverb(x, rt60, rng)
        if phone:
            x = bandpass(x)
        if snr < NO_NOISE_DB:
            power = np.mean(x ** 2)
            x = x + noise(len(x), pink, rng) * np.sqrt(power / 10 ** (snr / 10))
        return np.clip(np.round(x * 128 + SILENT), 0, 255).astype(np.uint8), fx

    def record(self, split: str, index: int) -> bytes:
        from captchalab.core.charset import Charset
        from captchalab.gen import shards as sh

        s = self.render(split, index)
        d = s.draws
        extra = {"audio/wav": wav_bytes(s.pcm), "audio/samples": len(s.pcm),
                 "audio/rate": RATE,
                 "style/speed": [float(v) for v in d["speed"]],
                 "style/level": [float(v) for v in d["level"]],
                 "style/gap": [float(v) for v in d["gap"]], "style/floor": d["floor"],
                 "style/reverb": d["reverb"], "style/bandpass": d["bandpass"],
                 "style/snr": d["snr"], "style/pink": d["pink"],
                 **{f"style/{k}": d[k] for k in VOICE_KNOBS}}
        return sh.encode_audio_record(text=s.text, ids=Charset(self.chars).encode(s.text),
                                      split=split, index=index, seed=self.seed, extra=extra)


def spectrogram(pcm: np.ndarray, fft: int = 256, hop: int = 128) -> np.ndarray:
    """Log magnitude STFT (Hann window) of 8-bit unsigned PCM: [fft // 2 + 1, frames], in dB."""
    x = (pcm.astype(np.float64) - SILENT) / 128
    if len(x) < fft:
        x = np.pad(x, (0, fft - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, fft)[::hop] * np.hanning(fft)
    return 20 * np.log10(np.abs(np.fft.rfft(frames, axis=1)).T + 1e-4)


def spectrogram_image(pcm: np.ndarray, height: int = 96, max_width: int = 640) -> np.ndarray:
    """A spectrogram as a picture, uint8 RGB [height, <= max_width, 3]: low frequencies at the
    bottom, 60 dB of range on matplotlib's magma colours (for sheets and error galleries)."""
    from matplotlib import colormaps
    from PIL import Image

    s = spectrogram(pcm)[::-1]
    top = s.max()
    s = np.clip((s - (top - 60)) / 60, 0, 1)
    rgb = (colormaps["magma"](s)[..., :3] * 255).astype(np.uint8)
    w = min(max_width, rgb.shape[1])
    return np.asarray(Image.fromarray(rgb).resize((w, height), Image.BILINEAR))
