"""Voices no model trains on: voice folders spoken by text-to-speech engines (`make voices`).

For every voice below it writes OUT/NAME/C/tts.wav for each character C of 0-9A-Z (the
`captcha` library's voice layout, which `captchalab gen --kind audio --voices` reads): the
character's spoken name ("seven", "double you"), 8 kHz 16-bit mono, silence trimmed, peak at
0.8 of full scale. The folders are test material for `make bench-audio` only: nothing in
captchalab trains on them. eSpeak's breathy variants (f2, f5) add noise that differs slightly
from one build to the next; a dataset's manifest records the sha256 of the voices it used.

Engines (two, so that a figure is never one engine's):
  espeak  eSpeak NG from PyPI: pip install -e '.[voices]' (the espeakng-loader wheel bundles
          the library and its data; no system package)
  flite   CMU Flite from Debian: apt install flite (its kal, awb, rms and slt voices)
An engine that is missing is reported with its install command and skipped.

Usage: python bench/voices.py [--out bench/out/voices] [--engines espeak,flite] [--only A,B]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import wave

import numpy as np

RATE = 8000
NAMES = dict(zip("0123456789", ["zero", "one", "two", "three", "four", "five", "six", "seven",
                                "eight", "nine"], strict=True))
NAMES.update(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", [
    "ay", "bee", "see", "dee", "ee", "eff", "gee", "aitch", "eye", "jay", "kay", "el", "em", "en",
    "oh", "pee", "cue", "are", "ess", "tee", "you", "vee", "double you", "ex", "why", "zed"],
    strict=True))
# eSpeak NG: accent + voice variant (pitch, formants, breathiness, Klatt synthesis)
ESPEAK = {"espeak-m3": "en+m3", "espeak-f2": "en-us+f2", "espeak-klatt": "en+klatt",
          "espeak-scot-m5": "en-gb-scotland+m5", "espeak-f5": "en+f5", "espeak-croak": "en-us+croak"}
FLITE = {"flite-kal": "kal", "flite-awb": "awb", "flite-rms": "rms", "flite-slt": "slt"}
INSTALL = {"espeak": "pip install -e '.[voices]'", "flite": "apt install flite"}


def resample(x: np.ndarray, rate: int) -> np.ndarray:
    """`x` at `rate` Hz -> RATE, band-limited."""
    from captchalab.gen.audio import resample as to_length

    return to_length(x, max(1, round(len(x) * RATE / rate)))


def trim(x: np.ndarray, threshold: float = 0.03, pad_s: float = 0.02) -> np.ndarray:
    """Cut leading and trailing silence: keep from 20 ms before the first 10 ms window whose
    peak passes 3 % of the clip's peak to 20 ms after the last."""
    win = RATE // 100
    env = np.abs(x[: len(x) // win * win]).reshape(-1, win).max(axis=1)
    loud = np.flatnonzero(env > threshold * np.abs(x).max())
    if len(loud) == 0:
        return x
    pad = int(pad_s * RATE)
    return x[max(0, loud[0] * win - pad): min(len(x), (loud[-1] + 1) * win + pad)]


def write_wav(path: str, x: np.ndarray) -> None:
    x = trim(x)
    x = x / max(np.abs(x).max(), 1e-9) * 0.8
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.round(x * 32767).astype("<i2").tobytes())


class Espeak:
    """eSpeak NG through its C API (ctypes), synthesis returned in memory."""

    def __init__(self):
        import ctypes

        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        # AUDIO_OUTPUT_SYNCHRONOUS, default buffer, bundled data, espeakINITIALIZE_DONT_EXIT
        self.rate = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(),
                                               0x8000)
        if self.rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        self.chunks = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                 ctypes.c_void_p)

        def collect(wav, n, _events):
            if n > 0:
                self.chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self.callback = proto(collect)  # kept referenced while the library holds it
        self.lib.espeak_SetSynthCallback(self.callback)

    def say(self, voice: str, text: str) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak has no voice {voice!r}")
        self.chunks = []
        data = text.encode() + b"\0"
        # POS_CHARACTER, espeakCHARS_AUTO; synchronous: returns when the callback has it all
        self.lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        x = np.concatenate(self.chunks).astype(np.float64) / 32768
        return resample(x, self.rate)


def flite_say(voice: str, text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.wav")
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", path], check=True,
                       capture_output=True)
        with wave.open(path) as w:
            rate, width = w.getframerate(), w.getsampwidth()
            raw = w.readframes(w.getnframes())
    if width != 2:
        raise RuntimeError(f"flite wrote {8 * width}-bit audio; expected 16-bit")
    return resample(np.frombuffer(raw, "<i2").astype(np.float64) / 32768, rate)


def engines(wanted):
    """name -> (say(voice, text), {folder: voice}) for each engine that can run here."""
    found = {}
    for name in wanted:
        if name == "espeak":
            try:
                e = Espeak()
            except (ImportError, OSError, RuntimeError) as err:
                print(f"espeak: skipped ({err}); install it with: {INSTALL['espeak']}",
                      file=sys.stderr)
                continue
            found[name] = (e.say, ESPEAK)
        elif name == "flite":
            if shutil.which("flite") is None:
                print(f"flite: skipped (no flite program); install it with: {INSTALL['flite']}",
                      file=sys.stderr)
                continue
            found[name] = (flite_say, FLITE)
        else:
            sys.exit(f"error: unknown engine {name!r} (allowed: espeak, flite)")
    return found


def build(out: str, wanted, only=None) -> list[str]:
    """Write every voice (or those named in `only`) of the engines that can run; returns the
    voice folders written."""
    written = []
    for say, voices in engines(wanted).values():
        for folder, voice in voices.items():
            if only and folder not in only:
                continue
            d = os.path.join(out, folder)
            shutil.rmtree(d, ignore_errors=True)
            for c, text in NAMES.items():
                write_wav(os.path.join(d, c, "tts.wav"), say(voice, text))
            written.append(d)
            print(f"wrote {d} ({voice})")
    return written


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/out/voices")
    ap.add_argument("--engines", default="espeak,flite")
    ap.add_argument("--only", help="comma list of voice folders to write (default: all): "
                                   + ", ".join([*ESPEAK, *FLITE]))
    args = ap.parse_args()
    only = [v for v in (args.only or "").split(",") if v]
    unknown = [v for v in only if v not in ESPEAK and v not in FLITE]
    if unknown:
        sys.exit(f"error: unknown voice {unknown[0]!r} (allowed: {', '.join([*ESPEAK, *FLITE])})")
    written = build(args.out, [e for e in args.engines.split(",") if e], only)
    if not written:
        sys.exit("error: no TTS engine available; install one: "
                 + "; ".join(f"{k}: {v}" for k, v in INSTALL.items()))


if __name__ == "__main__":
    main()
