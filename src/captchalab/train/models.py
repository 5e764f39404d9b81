"""CTC recognizers: a CNN reads the image into a sequence along its width, an RNN labels it."""

from __future__ import annotations

import keras
from keras import layers

from captchalab.errors import UsageError

# name -> (conv filters per block, pooling per block (h, w), rnn units, rnn layers, help)
ARCHS = {
    "crnn": ((32, 64, 128, 128), ((2, 2), (2, 2), (2, 1), (2, 1)), 128, 2,
             "CNN + 2-layer bidirectional GRU (default)"),
    "small": ((16, 32, 64), ((2, 2), (2, 2), (2, 1)), 64, 1,
              "narrow CNN + 1-layer bidirectional GRU: fastest on CPU"),
}


def time_steps(arch: str, width: int) -> int:
    """Output time steps T of `arch` for an input `width` px wide."""
    t = width
    for _, pw in ARCHS[arch][1]:
        t //= pw
    return t


def check_time_steps(arch: str, width: int, max_len: int) -> int:
    """CTC needs T >= L + repeats; refuse unless T >= 2 * max_len."""
    t = time_steps(arch, width)
    if t < 2 * max_len:
        raise UsageError(
            f"--arch {arch} at input width {width} px gives {t} time steps, fewer than "
            f"2 x max label length {max_len}; use a wider image or less --downscale")
    return t


def build_model(arch: str, input_shape, num_classes: int, max_len: int) -> keras.Model:
    """Image [B,H,W,1] -> logits [B,T,num_classes] (float32; class 0 is the CTC blank)."""
    if arch not in ARCHS:
        from captchalab.errors import suggest
        raise UsageError(f"--arch: unknown '{arch}'{suggest(arch, ARCHS)} "
                         f"(allowed: {', '.join(ARCHS)})")
    filters, pools, units, rnn_layers, _ = ARCHS[arch]
    check_time_steps(arch, input_shape[1], max_len)
    x = inp = keras.Input(input_shape, name="image")
    for f, p in zip(filters, pools, strict=True):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(p)(x)
    # (B, h, T, C) -> (B, T, h*C): each column of the feature map is one time step
    x = layers.Permute((2, 1, 3))(x)
    x = layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]))(x)
    x = layers.Dense(units, activation="relu")(x)
    for _ in range(rnn_layers):
        x = layers.Bidirectional(layers.GRU(units, return_sequences=True))(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)  # float32 under mixed precision
    return keras.Model(inp, logits, name=arch)
