"""Layers saved inside model.keras. `Preprocess` makes every model take raw RGB images, so
training, `eval`, `predict` and exported models cannot disagree on how pixels are prepared."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from captchalab.core.charset import BLANK_ID
from captchalab.core.ctc import BLANK_LOGIT

GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights (PIL "L", tf.image.rgb_to_grayscale)


STD_FLOOR = 0.02  # added to an image's grey standard deviation (0-1 scale) before dividing


@keras.saving.register_keras_serializable(package="captchalab")
class Preprocess(keras.layers.Layer):
    """uint8 RGB [B,H,W,3] at the dataset's size -> float32 grey [B,H//d,W//d,c] in [0,1].

    resample "box" (c = 1): each d x d block averaged, an exact area resize, and an op every
    runtime has (TFLite has no area or antialiased resize). "fold" (c = d*d): each d x d block's
    grey pixels stacked as channels (space-to-depth), so nothing is averaged away and the first
    convolution learns its own downscale. Both drop the last H % d rows and W % d columns.
    Always float32, also under mixed precision: the next layer casts.

    standardize: each image's output is shifted to mean 0 and scaled to standard deviation 1
    (with a floor), so that dark, light, faint and contrasty captchas reach the convolutions
    alike; models saved before this option read [0, 1] grey.
    """

    def __init__(self, downscale: int = 1, resample: str = "box", standardize: bool = False,
                 **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.downscale = int(downscale)
        self.resample = resample
        self.standardize = bool(standardize)

    def call(self, images):
        x = self._grey(images)
        if not self.standardize:
            return x
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        sd = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2, 3), keepdims=True))
        return (x - mean) / (sd + STD_FLOOR)

    def _grey(self, images):
        x = ops.cast(images, "float32")
        d = self.downscale
        grey = ops.convert_to_tensor([g / 255.0 for g in GREY])
        if d == 1:
            return ops.sum(x * grey, axis=-1, keepdims=True)
        if self.resample == "box":  # pooling before the grey sum: the same, ~3x faster
            x = ops.average_pool(x, pool_size=d, strides=d, padding="valid")
            return ops.sum(x * grey, axis=-1, keepdims=True)
        h, w = ops.shape(x)[1] // d, ops.shape(x)[2] // d
        x = ops.sum(x[:, :h * d, :w * d] * grey, axis=-1)  # [B, h*d, w*d]
        x = ops.reshape(x, (-1, h, d, w, d))
        return ops.reshape(ops.transpose(x, (0, 1, 3, 2, 4)), (-1, h, w, d * d))

    def compute_output_shape(self, input_shape):
        b, h, w, _ = input_shape
        d = self.downscale
        c = d * d if self.resample == "fold" else 1
        return (b, None if h is None else h // d, None if w is None else w // d, c)

    def get_config(self):
        return {**super().get_config(), "downscale": self.downscale, "resample": self.resample,
                "standardize": self.standardize}


def _take_rows(x, index, b, n, row):
    """x viewed as [b, n, row]: for each batch item i, its rows index[i] ([b, n] in 0..n-1)."""
    flat = ops.reshape(x, (b * n, row))
    at = ops.reshape(ops.arange(b)[:, None] * n + index, (-1,))
    return ops.take(flat, at, axis=0)


@keras.saving.register_keras_serializable(package="captchalab")
class Jitter(keras.layers.Layer):
    """Train-time only: shift each image by a random whole number of pixels in [-pixels, pixels],
    rows and columns drawn apart, the border pixel repeated into the gap. In front of
    `Preprocess`, so a shift of 1 px moves the image against the downscale's d x d grid: the
    model sees every sampling phase, not only the one the renderer happens to use.
    Identity at inference; uint8 in, uint8 out.
    """

    def __init__(self, pixels: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pixels = int(pixels)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training or self.pixels == 0:
            return images
        b, h, w, c = (ops.shape(images)[i] for i in range(4))
        p = self.pixels
        dy = keras.random.randint((b, 1), -p, p + 1, seed=self.generator)
        dx = keras.random.randint((b, 1), -p, p + 1, seed=self.generator)
        rows = ops.clip(ops.arange(h)[None, :] - dy, 0, h - 1)  # [B, H]: source row of each row
        cols = ops.clip(ops.arange(w)[None, :] - dx, 0, w - 1)
        # plain Keras ops (every backend): whole rows, then whole columns, gathered from the
        # flattened batch; ~as fast as tf.gather(batch_dims=1), where take_along_axis was 10x slower
        x = _take_rows(images, rows, b, h, w * c)
        x = ops.transpose(ops.reshape(x, (b, h, w, c)), (0, 2, 1, 3))
        x = _take_rows(x, cols, b, w, h * c)
        return ops.transpose(ops.reshape(x, (b, w, h, c)), (0, 2, 1, 3))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pixels": self.pixels, "seed": self.seed}


def augmenter(seed: int = 0, standardized: bool = False):
    """Train-time augmentation (active only when the model is called with training=True):
    small shifts and zoom, and contrast changes unless the input is `standardized`. float32
    even under mixed precision.

    Standardized images get no contrast change: standardization has already taken contrast
    away, and RandomContrast clips to its value range [0, 1], which zeroed every pixel below
    an image's mean (fine-tuning the shipped model with it fell from 0.48 to 0.02)."""
    from keras import layers

    steps = [
        layers.RandomTranslation(0.06, 0.04, fill_mode="nearest", seed=seed, dtype="float32"),
        layers.RandomZoom(0.08, fill_mode="nearest", seed=seed + 1, dtype="float32"),
    ]
    if not standardized:
        steps.append(layers.RandomContrast(0.3, value_range=(0.0, 1.0), seed=seed + 2,
                                           dtype="float32"))
    return keras.Sequential(steps, name="augment")


# --- audio ----------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="captchalab")
class LogMel(keras.layers.Layer):
    """Audio models' first layer: 8-bit unsigned PCM [B,N] (uint8, 128 = silence) and the true
    length of each clip [B] -> log mel spectrogram [B,T,mels,1] float32, T = N // hop + 1.
    Frames past a clip's length (the batch's padding) are set to the value of silence, so
    padding looks the same whatever the batch. Always float32, also under mixed precision.

    normalize: subtract from each mel band its mean over the clip's own frames (cepstral mean
    normalisation), so a fixed colouring of the whole clip - a voice's brightness, a channel's
    equaliser, the overall level - is gone before the model sees it; padded frames are then 0.

    exact: the clip is followed by fft/2 samples of silence before the STFT (so its last frames
    read silence, not a reflection of the clip, whether or not the batch padded it), silence is
    0 (log(1 + power / FLOOR)), and padded frames are 0 - what a convolution pads with - so a
    model that zeroes padded steps after every layer (`MaskSteps(hop=...)`) reads a clip exactly
    the same however its batch was padded. Models built before it have exact=False."""

    FLOOR = 1e-4  # power added before the log: silence, and the value of padded frames

    def __init__(self, rate: int = 8000, fft: int = 256, hop: int = 128, mels: int = 40,
                 normalize: bool = False, exact: bool = False, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.rate, self.fft, self.hop, self.mels = int(rate), int(fft), int(hop), int(mels)
        self.normalize, self.exact = bool(normalize), bool(exact)
        self.mel = keras.layers.MelSpectrogram(
            fft_length=self.fft, sequence_stride=self.hop, sampling_rate=self.rate,
            num_mel_bins=self.mels, power_to_db=False, dtype="float32")

    def build(self, pcm_shape, lengths_shape=None):
        self.built = True  # no weights: the mel filters are computed from the config

    def call(self, pcm, lengths):
        x = (ops.cast(pcm, "float32") - 128.0) / 128.0
        if self.exact:  # past each clip's end: silence, then fft/2 more of it
            x = ops.pad(x * ops.squeeze(frame_mask(ops.shape(x)[1], 1, lengths), -1),
                        [[0, 0], [0, self.fft // 2]])
        s = ops.transpose(self.mel(x), (0, 2, 1))  # [B, T, mels]
        logs = ops.log(s + self.FLOOR)
        if self.exact:
            logs = logs - float(np.log(self.FLOOR))  # silence: 0
        valid = frame_mask(ops.shape(logs)[1], self.hop, lengths)  # [B, T, 1]
        if self.normalize:
            frames = ops.maximum(ops.sum(valid, axis=1, keepdims=True), 1.0)  # [B, 1, 1]
            mean = ops.sum(valid * logs, axis=1, keepdims=True) / frames  # [B, 1, mels]
            return ops.expand_dims(valid * (logs - mean), -1)
        if self.exact:
            return ops.expand_dims(valid * logs, -1)
        floor = float(np.log(self.FLOOR))
        return ops.expand_dims(valid * logs + (1.0 - valid) * floor, -1)

    def compute_output_shape(self, pcm_shape, lengths_shape=None):
        b, n = pcm_shape
        if n is not None and self.exact:
            n += self.fft // 2
        return (b, None if n is None else n // self.hop + 1, self.mels, 1)

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "fft": self.fft, "hop": self.hop,
                "mels": self.mels, "normalize": self.normalize, "exact": self.exact}


@keras.saving.register_keras_serializable(package="captchalab")
class BandMask(keras.layers.Layer):
    """Train-time only, SpecAugment's frequency masking: in each clip of a log mel batch
    [B,T,mels,1], `count` runs of 0..`width` adjacent mel bands are set to the clip's mean, so
    the model cannot lean on a few bands of one voice. Identity at inference."""

    def __init__(self, count: int = 2, width: int = 6, seed: int | None = None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.count, self.width, self.seed = int(count), int(width), seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or self.count == 0 or self.width == 0:
            return x
        b, mels = ops.shape(x)[0], ops.shape(x)[2]
        bands = ops.expand_dims(ops.arange(mels), 0)  # [1, mels]
        masked = ops.zeros((b, mels), "bool")
        for _ in range(self.count):
            lo = keras.random.randint((b, 1), 0, mels, seed=self.generator)
            width = keras.random.randint((b, 1), 0, self.width + 1, seed=self.generator)
            masked = ops.logical_or(masked, ops.logical_and(bands >= lo, bands < lo + width))
        keep = ops.reshape(1.0 - ops.cast(masked, "float32"), (b, 1, mels, 1))
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        return x * keep + mean * (1.0 - keep)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "count": self.count, "width": self.width,
                "seed": self.seed}


def frame_mask(t, stride: int, lengths, hop: int = 0):
    """[B, t, 1] float32, 1 where valid: step i covers audio from sample i * stride on, valid
    when that is inside the clip. hop > 0: steps pool stride/hop frames of `hop` samples, and a
    step is valid when all its frames are (frame j valid when j * hop is inside the clip) - the
    steps a clip has when nothing pads it. (Built with expand_dims on numbers: TFLite's builtin
    StridedSlice cannot add an axis to a bool tensor.)"""
    n = ops.expand_dims(ops.cast(lengths, "int32"), 1)  # [B, 1]
    if hop:
        n = (n + hop - 1) // hop // (stride // hop)  # valid frames, pooled: valid steps
        stride = 1
    steps = ops.expand_dims(ops.arange(t) * stride, 0)  # [1, t]
    return ops.expand_dims(ops.cast(steps < n, "float32"), -1)


@keras.saving.register_keras_serializable(package="captchalab")
class MaskSteps(keras.layers.Layer):
    """Steps [B,T,C] (or [B,T,F,C]) and clip lengths [B] -> the steps with those past each
    clip's end zeroed (one step = `stride` audio samples; `hop` as in `frame_mask`), and the
    [B,T] mask itself for recurrent layers."""

    def __init__(self, stride: int, hop: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.stride, self.hop = int(stride), int(hop)

    def call(self, x, lengths):
        valid = frame_mask(ops.shape(x)[1], self.stride, lengths, self.hop)  # [B, T, 1]
        v = ops.cast(valid, x.dtype)
        return x * (ops.expand_dims(v, -1) if len(x.shape) == 4 else v), \
            ops.squeeze(valid, -1) > 0.5

    def compute_output_shape(self, x_shape, lengths_shape=None):
        return x_shape, x_shape[:2]

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "hop": self.hop}


@keras.saving.register_keras_serializable(package="captchalab")
class BlankPadding(keras.layers.Layer):
    """Logits [B,T,K+1] and clip lengths [B] -> the same logits, with every step past a clip's
    end made a certain blank (class 0): a clip reads and scores the same whatever it was
    padded to in its batch. float32 in and out."""

    def __init__(self, stride: int, hop: int = 0, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.stride, self.hop = int(stride), int(hop)

    def call(self, logits, lengths):
        valid = frame_mask(ops.shape(logits)[1], self.stride, lengths, self.hop)  # [B, T, 1]
        k = ops.shape(logits)[-1]
        blank = ops.expand_dims(ops.expand_dims(ops.one_hot(BLANK_ID, k) * BLANK_LOGIT, 0), 0)
        return valid * logits + (1.0 - valid) * blank

    def compute_output_shape(self, logits_shape, lengths_shape=None):
        return logits_shape

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "hop": self.hop}
