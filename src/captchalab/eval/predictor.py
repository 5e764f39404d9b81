"""Inference on a trained run: `captchalab.load(RUN).predict(images)`.

Images may be file paths, encoded bytes, PIL images or numpy arrays (uint8 RGB or grey); the
model does its own grey conversion and downscale, so what goes in is the picture as it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from captchalab.core.charset import Charset, parse_charset
from captchalab.core.errors import DataError, UsageError
from captchalab.core.images import open_rgb
from captchalab.core.runconfig import read_run_config


@dataclass(frozen=True)
class Prediction:
    text: str
    confidence: float  # greedy: product of the chosen per-step probabilities; beam: exp(-score)


# The views an image is read at (see Recognizer.read): (value allowed, most values, what a
# value is). scales: widths, shares of the image's width; blurs: Gaussian sigmas in px.
VIEW_RULES = {
    "scales": (lambda v: 0 < v <= 1, 8, "shares of the image's width in (0, 1], e.g. 1,0.85,0.7"),
    "blurs": (lambda v: 0 <= v <= 4, 4, "Gaussian blurs (sigma in px) in [0, 4], e.g. 0,1"),
}


def check_views(param: str, values) -> tuple[float, ...]:
    """`values` as the tuple of floats the views `param` ("scales" or "blurs") allow."""
    ok, most, what = VIEW_RULES[param]
    out = tuple(float(v) for v in values)
    if not 1 <= len(out) <= most or not all(ok(v) for v in out):
        raise UsageError(f"{param}: {','.join(f'{v:g}' for v in out) or 'none'} is not allowed; "
                         f"give 1 to {most} {what}", param=param)
    return out


def blur(batch: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> each image Gaussian-blurred with `sigma` px (0: as it is)."""
    from PIL import Image, ImageFilter

    if sigma <= 0:
        return batch
    return np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(sigma)))
                     for im in batch])


def squeeze(batch: np.ndarray, share: float) -> np.ndarray:
    """uint8 RGB [N,H,W,3] -> each image scaled to `share` of its width (bilinear), centred
    on a canvas of its own median colour: glyphs drawn wider than the model learnt them become
    as narrow as it expects. share 1: the batch as it is."""
    from PIL import Image

    if share >= 1:
        return batch
    n, h, w, _ = batch.shape
    nw = max(1, round(w * share))
    x0 = (w - nw) // 2
    out = np.empty_like(batch)
    out[:] = np.median(batch.reshape(n, -1, 3), axis=1).astype(np.uint8)[:, None, None, :]
    for i, im in enumerate(batch):
        out[i, :, x0:x0 + nw] = np.asarray(
            Image.fromarray(im).resize((nw, h), Image.Resampling.BILINEAR))
    return out


def read_config(run_dir: str) -> dict:
    """config.json of a run written by `captchalab train`; refuses anything else."""
    cfg_path, model_path = (os.path.join(run_dir, n) for n in ("config.json", "model.keras"))
    if not os.path.isfile(cfg_path) or not os.path.isfile(model_path):
        raise UsageError(f"model {run_dir} is not a trained captchalab run "
                         "(needs config.json and model.keras)", param="model")
    return read_run_config(run_dir)


def load_keras_model(run_dir: str):
    from captchalab.core.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    import captchalab.core.layers  # noqa: F401  (registers Preprocess for deserialisation)

    path = os.path.join(run_dir, "model.keras")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises ValueError, KeyError, OSError, …
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "safe_mode" in str(e):
            raise DataError(f"{path} was refused by Keras safe mode: it holds code (a Lambda "
                            "layer or a function) that loading would run; captchalab never "
                            "writes such models") from None
        raise DataError(f"{path} cannot be loaded ({type(e).__name__}: {msg[:160]}); retrain, "
                        "or restore the file") from None


def _name(image, i: int) -> str:
    return str(image) if isinstance(image, (str, os.PathLike)) else f"image {i}"


def to_rgb(image, size: tuple[int, int] | None = None, name: str = "image") -> np.ndarray:
    """One image (path, bytes, PIL image or array) -> uint8 RGB [H,W,3].

    size: (width, height) to resize to (bilinear) when the image differs; None keeps it as is.
    Arrays: uint8 [H,W], [H,W,1], [H,W,3] (RGB) or [H,W,4] (alpha dropped), or float in [0,1].
    """
    from PIL import Image

    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        image = open_rgb(image, name)
    if isinstance(image, Image.Image):
        im = image.convert("RGB")
        if size and im.size != tuple(size):
            im = im.resize(tuple(size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)
    a = np.asarray(image)
    if a.dtype.kind == "f":
        if a.size and (a.min() < 0 or a.max() > 1):
            raise UsageError(f"{name}: float pixels must lie in [0, 1] (or pass uint8 0-255)")
        a = np.round(a * 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise UsageError(f"{name}: pixels of type {a.dtype}; give uint8 (0-255) or float in [0, 1]")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    elif a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.ndim != 3 or a.shape[-1] != 3:
        raise UsageError(f"{name}: array of shape {a.shape}; give [H,W], [H,W,1], [H,W,3] "
                         "or [H,W,4]")
    if size and (a.shape[1], a.shape[0]) != tuple(size):
        return to_rgb(Image.fromarray(a), size, name)
    return a


def check_size(a: np.ndarray, size: tuple[int, int], name: str, run_dir: str) -> None:
    """Refuse an image whose size is not the model's (width, height)."""
    w, h = size
    if a.shape[:2] != (h, w):
        raise UsageError(f"{name} is {a.shape[1]}x{a.shape[0]}; the model in {run_dir} "
                         f"reads {w}x{h} images (resize them, e.g. --resize)")


def read_file(path, size: tuple[int, int], run_dir: str, resize: bool, skip_bad: bool, warn):
    """An image file as uint8 RGB at the model's `size`, or None when it is unreadable and
    `skip_bad` (a `warn` line says so); unreadable without `skip_bad`, or of another size
    without `resize`: UsageError naming the file."""
    try:
        a = to_rgb(path, size if resize else None, str(path))
    except UsageError as e:
        if not skip_bad:
            raise UsageError(f"{e} (--skip-bad skips such files)") from None
        warn(f"warning: skipped {e}")
        return None
    check_size(a, size, str(path), run_dir)
    return a


class Recognizer:
    """A trained run ready to read captchas. Use `captchalab.load(run_dir)`."""

    def __init__(self, run_dir: str, scales=None, blurs=None, length=None, charset=None):
        self.run_dir = run_dir
        self.config = read_config(run_dir)
        # widths and blurs every image is read at, the most confident reading kept (see
        # `read`): given, or the run's own (config.json "inference"; the shipped model has
        # some), or one width and no blur
        own = self.config.get("inference", {})
        self.scales = check_views("scales", scales or own.get("scales") or (1.0,))
        self.blurs = check_views("blurs", blurs or own.get("blurs") or (0.0,))
        self.data_kind = self.config.get("data_kind", "image")
        if self.data_kind == "audio" and not self.one_view:
            raise UsageError("scales and blurs change images; they do not apply to audio models",
                             param="scales" if self.scales != (1.0,) else "blurs")
        self.model = load_keras_model(run_dir)
        self.charset = Charset.from_json(self.config["charset"])
        self.kind = self.config.get("kind", "ctc")
        # readings of this many characters (min, max) only, when the captchas are known to
        # have them: the most probable path of that length (core.ctc.length_ids)
        from captchalab.gen.recipe import parse_length

        self.length = None if length is None else parse_length(
            str(length) if isinstance(length, (str, int)) else "-".join(map(str, length)))
        if self.length and self.kind != "ctc":
            raise UsageError(f"length: this run ({self.config['arch']}) reads a fixed number of "
                             "positions; --length applies to CTC models", param="length")
        # readings in these characters only (a site's own charset, a subset of the model's):
        # the other classes' logits are pushed to READ_OFF, so no decoder picks them and every
        # probability is renormalised over the rest
        self.read_chars, self._off = read_mask(self.charset, charset)
        from captchalab.eval.calibration import read_temperature

        # confidence calibration fitted after training (calibration.json); 1.0 = none
        self.temperature = read_temperature(run_dir)
        self._features = None  # the feature model, built on first use
        import tensorflow as tf

        if self.data_kind == "audio":
            self.size = None
            self._forward = tf.function(
                lambda x: self.model(x, training=False), reduce_retracing=True,
                input_signature=[{"audio": tf.TensorSpec([None, None], tf.uint8),
                                  "audio_length": tf.TensorSpec([None], tf.int32)}])
            self._forward_one = None
            return
        self.size = (self.config["image"]["width"], self.config["image"]["height"])

        w, h = self.size
        self._forward = tf.function(
            lambda x: self.model(x, training=False), reduce_retracing=True,
            input_signature=[tf.TensorSpec([None, h, w, 3], tf.uint8)])
        # one image at a time: XLA fuses the small ops, ~1.7 ms instead of ~4.5 on 2 CPU cores
        # (compiled on first use, ~1 s); batches stay on the plain graph, which is faster there
        self._forward_one = tf.function(
            lambda x: self.model(x, training=False), jit_compile=True,
            input_signature=[tf.TensorSpec([1, h, w, 3], tf.uint8)])

    def __repr__(self) -> str:
        if self.size is None:
            return (f"Recognizer({self.run_dir!r}, arch={self.config['arch']}, audio "
                    f"{self.config['audio']['rate']} Hz, charset={self.charset.chars!r})")
        w, h = self.size
        return (f"Recognizer({self.run_dir!r}, arch={self.config['arch']}, {w}x{h}, "
                f"charset={self.charset.chars!r})")

    def batch(self, items) -> np.ndarray | dict:
        """The model's input for a list of decoded items: images stacked [N,H,W,3]; audio clips
        (uint8 PCM) padded with silence to the longest, with their lengths."""
        if self.data_kind != "audio":
            return np.stack(items)
        n = max(len(a) for a in items)
        pcm = np.full((len(items), n), 128, np.uint8)
        for i, a in enumerate(items):
            pcm[i, :len(a)] = a
        return {"audio": pcm, "audio_length": np.array([len(a) for a in items], np.int32)}

    def decode_item(self, item, name: str, resize: bool = False):
        """One image or clip as the model reads it: uint8 RGB [H,W,3] at the model's size, or
        uint8 PCM [N] (a WAV path or bytes, or an array: uint8 PCM, or float in [-1, 1])."""
        if self.data_kind == "audio":
            return to_pcm(item, name)
        a = to_rgb(item, self.size if resize else None, name)
        self.check_size(a, name)
        return a

    def features(self, images) -> np.ndarray:
        """(n, 2 * channels) float32: for each image (resized to the model's input), the mean
        and standard deviation over positions of the model's first sequence layer (the first
        ReLU over time and channels, past the conv trunk) — what fit-style matches fonts by."""
        if self._features is None:
            import keras

            layer = next((x for x in self.model.layers if isinstance(x, keras.layers.ReLU)
                          and len(x.output.shape) == 3), None)
            if layer is None or self.data_kind == "audio":
                raise UsageError(f"{self.run_dir} is not an image model with a sequence layer")
            self._features = keras.Model(self.model.inputs, layer.output)
        x = self.batch([self.decode_item(a, "image", resize=True) for a in images])
        out = self._features.predict(x, verbose=0, batch_size=128)
        return np.concatenate([out.mean(1), out.std(1)], axis=1)

    def logits(self, batch) -> np.ndarray:
        """uint8 RGB [N,H,W,3] at the model's size (or an audio batch, see `batch`) -> logits
        [N,T,K+1] (float32); with `charset`, the classes outside it at READ_OFF."""
        out = self._raw_logits(batch)
        return out if self._off is None else out + self._off

    def _raw_logits(self, batch) -> np.ndarray:
        if isinstance(batch, dict):
            return self._forward(batch).numpy()
        if len(batch) == 1 and self._forward_one is not None:
            try:
                return self._forward_one(batch).numpy()
            except Exception:  # noqa: BLE001  (no XLA for some op on this platform)
                self._forward_one = None
        return self._forward(batch).numpy()

    def decode(self, logits, beam_width: int = 0):
        """Logits -> (texts, confidences) with this model's kind and charset."""
        from captchalab.core.ctc import decode_output

        return decode_output(self.kind, logits, self.charset, beam_width, self.length)

    def read(self, batch: np.ndarray, beam_width: int = 0, tta: bool = False):
        """uint8 RGB [N,H,W,3] -> (texts, confidences). tta: read each image at every phase of
        the model's downscale grid (`core.ctc.tta_shifts`: 4 views at the default 1/2), each
        clip at 3 speeds x 4 phases of the model's output step (`audio_views`), and combine
        the views (`core.ctc.decode_views`); costs that many forward passes.
        Confidences are scaled by the run's fitted temperature either way. With several
        `scales` or `blurs`, each image is also read squeezed to those shares of its width
        (`squeeze`) and blurred (`blur`), every width with every blur, and its most confident
        reading is kept: one forward pass (or tta's) per pair."""
        if self.one_view:
            return self._read_view(batch, beam_width, tta)
        views = [self._read_view(blur(squeeze(batch, s), b), beam_width, tta)
                 for s in self.scales for b in self.blurs]
        best = np.argmax(np.stack([conf for _, conf in views]), axis=0)
        return ([views[k][0][i] for i, k in enumerate(best)],
                np.array([views[k][1][i] for i, k in enumerate(best)]))

    @property
    def one_view(self) -> bool:
        """Whether every image is read once, as it is (no other widths or blurs)."""
        return self.scales == (1.0,) and self.blurs == (0.0,)

    def _read_view(self, batch: np.ndarray, beam_width: int, tta: bool):
        if not tta:  # confidence: p(text), scaled by the fitted temperature
            from captchalab.eval.calibration import sequence_confidence

            logits = self.logits(batch)
            texts, _ = self.decode(logits, beam_width)
            return texts, sequence_confidence(self.kind, logits, texts, self.charset,
                                              self.temperature)
        from captchalab.core.ctc import decode_views, shift, tta_shifts

        if isinstance(batch, dict):
            from captchalab.train.models import audio_stride

            views = [self.logits(v) for v in audio_views(  # one pass each: 12 x 32 clips
                batch, audio_stride(self.config["arch"]), TTA_PHASES, TTA_SPEEDS)]
        else:
            shifts = tta_shifts(self.config.get("train", {}).get("downscale", 1))
            logits = self.logits(np.concatenate([shift(batch, dy, dx) for dy, dx in shifts]))
            views = np.split(logits, len(shifts))
        return decode_views(self.kind, views, self.charset, beam_width, self.temperature,
                            self.length)

    def check_size(self, a: np.ndarray, name: str) -> None:
        check_size(a, self.size, name, self.run_dir)

    def _read_clips(self, clips, beam_width: int, tta: bool = False,
                    batch_size: int = 0) -> list[Prediction]:
        """Predictions for decoded clips, in their order, read in batches of one length."""
        out: list[Prediction | None] = [None] * len(clips)
        for idx in by_length([len(c) for c in clips], min(batch_size or AUDIO_BATCH, AUDIO_BATCH)):
            texts, conf = self.read(self.batch([clips[i] for i in idx]), beam_width, tta)
            for i, t, c in zip(idx, texts, conf, strict=True):
                out[i] = Prediction(t, float(c))
        return out

    def predict(self, images, *, batch_size: int = 256, beam_width: int = 0,
                resize: bool = False, tta: bool = False):
        """Read one image or a sequence of them.

        images: a path, bytes, PIL image or numpy array, a list of these, or an array
        [N,H,W,3]. resize: scale images of another size to the model's; otherwise they are
        refused. tta: test-time augmentation (see `read`). Returns a Prediction for one image,
        a list of them for several.
        """
        from PIL import Image

        single = (isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image))
                  or (isinstance(images, np.ndarray)
                      and images.ndim <= (1 if self.data_kind == "audio" else 3)))
        items = [images] if single else list(images)
        if self.data_kind == "audio":  # all decoded first: batches of clips of one length
            clips = [self.decode_item(im, _name(im, i)) for i, im in enumerate(items)]
            out = self._read_clips(clips, beam_width, tta, batch_size)
            return out[0] if single else out
        out: list[Prediction] = []
        for lo in range(0, len(items), batch_size):
            chunk = items[lo:lo + batch_size]
            arrays = [self.decode_item(im, _name(im, i), resize)
                      for i, im in enumerate(chunk, start=lo)]
            texts, conf = self.read(self.batch(arrays), beam_width, tta)
            out.extend(Prediction(t, float(c)) for t, c in zip(texts, conf, strict=True))
        return out[0] if single else out

    def predict_files(self, paths, *, batch_size: int = 256, beam_width: int = 0,
                      resize: bool = False, skip_bad: bool = False, tta: bool = False,
                      warn=print):
        """(predictions, the paths they belong to) for image files; an unreadable file stops the
        run naming it, or with `skip_bad` is skipped with a `warn` line."""
        preds, kept, arrays, names = [], [], [], []

        def flush():
            if self.data_kind == "audio":
                preds.extend(self._read_clips(arrays, beam_width, tta))
            else:
                texts, conf = self.read(self.batch(arrays), beam_width, tta)
                preds.extend(Prediction(t, float(c)) for t, c in zip(texts, conf, strict=True))
            kept.extend(names)
            arrays.clear()
            names.clear()

        if self.data_kind == "audio":  # read in batches of clips of about one length
            batch_size = AUDIO_BATCH * AUDIO_SORT_BATCHES
        for path in paths:
            a = (read_clip(path, skip_bad, warn) if self.data_kind == "audio"
                 else read_file(path, self.size, self.run_dir, resize, skip_bad, warn))
            if a is None:
                continue
            arrays.append(a)
            names.append(str(path))
            if len(arrays) == batch_size:
                flush()
        if arrays:
            flush()
        if not preds:
            raise UsageError(f"none of the given files is a readable "
                             f"{'WAV file' if self.data_kind == 'audio' else 'image'}")
        return preds, kept


AUDIO_BATCH = 32  # clips per forward pass (~20 s each)
AUDIO_SORT_BATCHES = 8  # files: this many batches are read in, sorted by length, then read


TTA_PHASES = 4  # audio test-time augmentation: phases of the output step per speed
TTA_SPEEDS = (1.0, 0.94, 1.06)  # ... and the whole clip a little slower and faster


def at_speed(pcm: np.ndarray, speed: float) -> np.ndarray:
    """uint8 PCM played `speed` times as fast (band-limited resampling to len / speed
    samples; pitch moves with it, as the library's own speed changes do)."""
    if speed == 1.0:
        return pcm
    from captchalab.gen.audio import resample

    y = resample((pcm.astype(np.float32) - 128) / 128, max(1, round(len(pcm) / speed)))
    return np.clip(np.round(y * 128 + 128), 0, 255).astype(np.uint8)


def audio_views(batch: dict, stride: int, phases: int,
                speeds: tuple[float, ...] = (1.0,)) -> list[dict]:
    """An audio batch (see `Recognizer.batch`) as len(speeds) x phases views: each clip
    resampled to every speed, then with k * stride / phases samples of silence before it, so
    its sounds fall at another phase of the model's output step of `stride` samples (what
    `core.ctc.tta_shifts` does to images across the downscale grid). Every view is padded to
    one length, so the logits line up step for step. The first view is the batch as it is,
    padded further."""
    pcm, lengths = batch["audio"], batch["audio_length"]
    clips = [[at_speed(pcm[i, :n], s) for i, n in enumerate(lengths)] for s in speeds]
    offsets = [k * stride // phases for k in range(phases)]
    width = max(pcm.shape[1], *(len(c) for cs in clips for c in cs)) + offsets[-1]
    views = []
    for cs in clips:
        for off in offsets:
            out = np.full((len(cs), width), 128, np.uint8)
            for i, c in enumerate(cs):
                out[i, off:off + len(c)] = c
            views.append({"audio": out,
                          "audio_length": np.array([len(c) + off for c in cs], np.int32)})
    return views


def by_length(lengths, batch_size: int) -> list[list[int]]:
    """Indices of clips in batches of `batch_size`, shortest first: each batch is padded to its
    longest clip, so clips of about one length waste no steps on silence (~20 % of a batch of
    randomly drawn library captchas). Audio models read a clip the same however it is padded
    (LogMel exact), so the order changes the speed, not the readings."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[lo:lo + batch_size] for lo in range(0, len(order), batch_size)]


def to_pcm(item, name: str = "clip") -> np.ndarray:
    """One clip (WAV path or bytes, or an array) -> uint8 8-bit unsigned PCM at 8 kHz.
    Arrays: uint8 PCM as is, int16 PCM, or float in [-1, 1]; 1-D (mono)."""
    from captchalab.gen.audio import parse_wav, read_pcm8

    if isinstance(item, (str, os.PathLike)):
        return read_pcm8(str(item))
    if isinstance(item, (bytes, bytearray, memoryview)):
        return parse_wav(bytes(item), name)
    a = np.asarray(item)
    if a.ndim != 1 or a.size == 0:
        raise UsageError(f"{name}: array of shape {a.shape}; give mono audio as a 1-D array")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.int16:
        return ((a.astype(np.int32) >> 8) + 128).astype(np.uint8)
    if a.dtype.kind == "f":
        if a.min() < -1 or a.max() > 1:
            raise UsageError(f"{name}: float audio must lie in [-1, 1]")
        return np.clip(np.round(a * 128 + 128), 0, 255).astype(np.uint8)
    raise UsageError(f"{name}: audio of type {a.dtype}; give uint8 PCM, int16 PCM or float "
                     "in [-1, 1]")


def read_clip(path, skip_bad: bool, warn):
    """A WAV file as uint8 PCM, or None when unreadable and `skip_bad` (a `warn` line says so)."""
    try:
        return to_pcm(path, str(path))
    except UsageError as e:
        if not skip_bad:
            raise UsageError(f"{e} (--skip-bad skips such files)") from None
        warn(f"warning: skipped {e}")
        return None


def expand_paths(paths, exts=None) -> list[str]:
    """Files as given, folders replaced by the image files (or files ending in `exts`) inside
    them (sorted, recursive)."""
    from captchalab.gen.folders import IMAGE_EXTS

    exts = exts or IMAGE_EXTS
    out = []
    for p in paths:
        if os.path.isdir(p):
            found = sorted(os.path.join(root, n) for root, _, files in os.walk(p)
                           for n in files if n.lower().endswith(exts))
            if not found:
                what = "WAV files" if exts == (".wav",) else "images"
                raise UsageError(f"{p}: folder holds no {what} ({', '.join(exts)})")
            out.extend(found)
        elif os.path.exists(p):
            out.append(str(p))
        else:
            raise UsageError(f"{p}: no such file or folder")
    return out


def load(run_dir: str, scales=None, blurs=None, length=None, charset=None) -> Recognizer:
    """The trained model in `run_dir` (written by `captchalab train`), ready to `.predict`.
    scales, blurs: widths and Gaussian blurs to read each image at (see Recognizer.read);
    default: the run's own. length: N, (min, max) or "MIN-MAX": only readings of that many
    characters, for captchas known to have them (CTC models); default: any. charset: a spec
    ("0-9", "digits", "abcde2345678") of the only characters the captchas use, a subset of the
    model's: readings use no others; default: all the model's."""
    return Recognizer(str(run_dir), scales, blurs, length, charset)


READ_OFF = -1e4  # added to the logits of classes outside a reading charset: exp() underflows


def read_mask(model: Charset, spec) -> tuple[str | None, np.ndarray | None]:
    """(the characters read, [K+1] float32 to add to logits: 0 for the blank and each of them,
    READ_OFF for the model's other classes) for a charset `spec`; (None, None) for all."""
    if spec is None:
        return None, None
    chars = parse_charset(spec)
    missing = model.missing(chars)
    if missing:
        raise UsageError(f"charset: '{spec}' has {missing!r}, which the model cannot "
                         f"read (its charset: {model.chars!r}); give a subset of it",
                         param="charset")
    off = np.full(len(model) + 1, READ_OFF, np.float32)
    off[0] = 0.0
    off[model.encode(chars)] = 0.0
    return chars, off
