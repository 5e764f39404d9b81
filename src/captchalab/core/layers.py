"""Layers saved inside model.keras. `Preprocess` makes every model take raw RGB images, so
training, `eval`, `predict` and exported models cannot disagree on how pixels are prepared."""

from __future__ import annotations

import keras
from keras import ops

GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights (PIL "L", tf.image.rgb_to_grayscale)


@keras.saving.register_keras_serializable(package="captchalab")
class Preprocess(keras.layers.Layer):
    """uint8 RGB [B,H,W,3] at the dataset's size -> float32 grey [B,H//d,W//d,c] in [0,1].

    resample "box" (c = 1): each d x d block averaged, an exact area resize, and an op every
    runtime has (TFLite has no area or antialiased resize). "fold" (c = d*d): each d x d block's
    grey pixels stacked as channels (space-to-depth), so nothing is averaged away and the first
    convolution learns its own downscale. Both drop the last H % d rows and W % d columns.
    Always float32, also under mixed precision: the next layer casts.
    """

    def __init__(self, downscale: int = 1, resample: str = "box", **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.downscale = int(downscale)
        self.resample = resample

    def call(self, images):
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
        return {**super().get_config(), "downscale": self.downscale, "resample": self.resample}


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


def augmenter(seed: int = 0):
    """Train-time augmentation (active only when the model is called with training=True):
    small shifts and zoom, contrast changes. float32 even under mixed precision."""
    from keras import layers

    return keras.Sequential([
        layers.RandomTranslation(0.06, 0.04, fill_mode="nearest", seed=seed, dtype="float32"),
        layers.RandomZoom(0.08, fill_mode="nearest", seed=seed + 1, dtype="float32"),
        layers.RandomContrast(0.3, value_range=(0.0, 1.0), seed=seed + 2, dtype="float32"),
    ], name="augment")
