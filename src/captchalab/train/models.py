"""Recognizers. CTC models read the image as a sequence of columns (blank = class 0); the `heads`
arm is the classic fixed-length CNN with one softmax per character position.

Keras is imported inside the builders so that the checks run before TensorFlow loads."""

from __future__ import annotations

import itertools
import operator
from typing import NamedTuple

from captchalab.core.errors import UsageError, suggest


class ArchSpec(NamedTuple):
    filters: tuple[int, ...]  # conv filters per block
    pools: tuple[tuple[int, int], ...]  # max-pool (h, w) after each block
    units: int  # width of the per-column features (and of the RNN / temporal convolutions)
    rnn_layers: int  # bidirectional GRU layers (0: none)
    kind: str  # "ctc" or "heads"
    help: str


ARCHS = {
    "crnn": ArchSpec((32, 64, 96), ((2, 2), (2, 1), (2, 1)), 96, 1, "ctc",
                     "3 conv blocks + 1 bidirectional GRU (the default before commit e987e7a)"),
    "small": ArchSpec((16, 32, 64), ((2, 2), (2, 2), (2, 1)), 64, 1, "ctc",
                      "narrow CNN + 1 bidirectional GRU: fastest, least accurate"),
    "large": ArchSpec((32, 64, 128, 128), ((2, 2), (2, 2), (2, 1), (2, 1)), 128, 2, "ctc",
                      "4 conv blocks + 2 bidirectional GRU layers: for harder styles, ~3x slower"),
    "crnn-conv": ArchSpec((32, 64, 96), ((2, 2), (2, 1), (2, 1)), 96, 0, "ctc",
                          "crnn's CNN + 2 temporal convolutions (width 5) instead of the GRU "
                          "(default: ~1.3x faster steps on CPU and the best accuracy within a "
                          "time budget)"),
    "heads": ArchSpec((32, 64, 128), ((2, 2), (2, 2), (2, 2)), 256, 0, "heads",
                      "CNN + one softmax head per character position, cross-entropy (fixed "
                      "length only; comparison arm)"),
}


# Audio: the model's first layer turns 8 kHz PCM into a log mel spectrogram (32 mels, 64 ms
# windows every 32 ms); the conv blocks pool (time, mel), so one output step covers 8 frames
# (256 ms).
# Coarse steps are what make CTC learn here: at 64 ms steps (~290 per 18 s clip, 6 labels) the
# loss sat on the all-blank plateau for 6 minutes; at 256 ms one batch was learnt by heart in
# 150 steps (docs/audio.md). `audio-fine` keeps 128 ms steps for densely spoken captchas.
AUDIO_ARCHS = {
    "audio-conv": ArchSpec((16, 32, 64), ((2, 2), (2, 2), (2, 2)), 128, 0, "ctc",
                           "log-mel CNN + 2 temporal convolutions (width 5), 256 ms steps: "
                           "the audio default"),
    "audio-crnn": ArchSpec((16, 32, 64), ((2, 2), (2, 2), (2, 2)), 128, 1, "ctc",
                           "log-mel CNN + 1 bidirectional GRU over the unpadded steps"),
    "audio-fine": ArchSpec((16, 32, 64), ((2, 2), (2, 2), (1, 2)), 128, 0, "ctc",
                           "audio-conv at 128 ms steps, for captchas with short gaps"),
    "audio-cmn": ArchSpec((16, 32, 64), ((2, 2), (2, 2), (2, 2)), 128, 0, "ctc",
                          "audio-conv with each mel band's mean over the clip subtracted: a "
                          "voice's or a channel's fixed colouring removed (read held-out voices "
                          "worse than audio-conv; docs/audio.md)"),
}
AUDIO_NORMALIZED = {"audio-cmn"}  # LogMel(normalize=True)
AUTO = "auto"  # --arch default: crnn-conv for images, audio-conv for audio


def resolve_arch(arch: str, data_kind: str) -> str:
    """The arch a run uses: `auto` picks the kind's default; an arch of the other kind is
    refused."""
    if arch == AUTO:
        return "audio-conv" if data_kind == "audio" else "crnn-conv"
    check_arch(arch)
    if (arch in AUDIO_ARCHS) != (data_kind == "audio"):
        allowed = AUDIO_ARCHS if data_kind == "audio" else ARCHS
        raise UsageError(f"arch: {arch} reads {'audio' if arch in AUDIO_ARCHS else 'images'}; "
                         f"the data is {data_kind} (allowed: {', '.join(allowed)})", param="arch")
    return arch


def check_arch(arch: str) -> None:
    if arch not in ARCHS and arch not in AUDIO_ARCHS and arch != AUTO:
        names = [*ARCHS, *AUDIO_ARCHS]
        raise UsageError(f"arch: unknown '{arch}'{suggest(arch, names)} "
                         f"(allowed: {AUTO}, {', '.join(names)})", param="arch")


def kind(arch: str) -> str:
    """'ctc' (logits [B,T,K+1], CTC loss) or 'heads' (logits [B,L,K+1], cross-entropy)."""
    return (ARCHS.get(arch) or AUDIO_ARCHS[arch]).kind


def time_steps(arch: str, width: int) -> int:
    """Output time steps T of a CTC `arch` for an input `width` px wide."""
    t = width
    for _, pw in ARCHS[arch].pools:
        t //= pw
    return t


def check_time_steps(arch: str, width: int, max_len: int) -> int:
    """CTC needs T >= L + repeats; refuse unless T >= 2 * max_len."""
    t = time_steps(arch, width)
    if t < 2 * max_len:
        raise UsageError(
            f"arch {arch} at input width {width} px gives {t} time steps, fewer than "
            f"2 x max label length {max_len}; use a wider image or less --downscale", param="arch")
    return t


def check_data(arch: str, input_shape, length: tuple[int, int]) -> None:
    """Refuse a model/data pairing that cannot work, before anything is written."""
    check_arch(arch)
    if kind(arch) == "heads":
        if length[0] != length[1]:
            raise UsageError(f"arch heads needs fixed-length labels; the data has lengths "
                             f"{length[0]}-{length[1]} (use a CTC arch: crnn-conv, crnn, small or large)",
                             param="arch")
    else:
        check_time_steps(arch, input_shape[1], length[1])


def _trunk(x, filters, pools, after_block=None):
    """Conv blocks (conv, batch norm, ReLU, max pool); after_block(x, i) is applied to block
    i's output (audio: zero the steps past each clip's end)."""
    from keras import layers

    for i, (f, p) in enumerate(zip(filters, pools, strict=True)):
        x = layers.Conv2D(f, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)  # eval statistics keep up at high lr
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(p)(x)
        if after_block is not None:
            x = after_block(x, i)
    return x


def freeze_blocks(model, n: int) -> None:
    """Leave the first `n` conv blocks (from the input) untrained: their convolution and batch
    normalisation (which then keeps its moving statistics and runs in inference mode)."""
    from keras import layers

    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, layers.Conv2D)]
    for i in convs[:n]:
        model.layers[i].trainable = False
        model.layers[i + 1].trainable = False  # its BatchNormalization (see _trunk)


RESAMPLE = ("fold", "box")  # Preprocess resample modes, the default first


def model_shape(image_hw, downscale: int, resample: str = RESAMPLE[0]) -> tuple[int, int, int]:
    """(height, width, channels): what the layers after `Preprocess` see for images of
    `image_hw` (channels: 1, or d*d when `resample` is "fold")."""
    c = downscale * downscale if resample == "fold" else 1
    return (image_hw[0] // downscale, image_hw[1] // downscale, c)


def build_model(arch: str, image_hw, downscale: int, num_classes: int, length: tuple[int, int],
                augment: bool = False, seed: int = 0, dropout: float = 0.0, jitter: int = 0,
                resample: str = RESAMPLE[0], standardize: bool = False):
    """uint8 RGB images [B,H,W,3] (the dataset's size) -> float32 logits (also under mixed
    precision). Grey conversion and the 1/downscale resize are the model's first layer.

    CTC archs: [B,T,num_classes], class 0 the blank. `heads`: [B,L,num_classes], class 0 never a
    target, so decoding is the same id -> character mapping everywhere.
    augment: random shifts, zoom and (unless standardized) contrast after preprocessing, in
    training only.
    dropout: CTC archs: dropout rate on the per-column features entering the RNN (training only).
    jitter: random shifts of up to this many pixels at the dataset's resolution, before the
    downscale (training only).
    resample: how `Preprocess` reduces the resolution ("box" average or "fold" into channels).
    standardize: `Preprocess` scales each image to mean 0, standard deviation 1.
    """
    import keras
    from keras import layers

    from captchalab.core.layers import Jitter, Preprocess, augmenter

    check_data(arch, model_shape(image_hw, downscale, resample), length)
    filters, pools, units, rnn_layers, k, _ = ARCHS[arch]  # an ArchSpec
    inp = keras.Input((image_hw[0], image_hw[1], 3), dtype="uint8", name="image")
    x = Jitter(jitter, seed=seed, name="jitter")(inp) if jitter else inp
    x = Preprocess(downscale, resample, standardize, name="preprocess")(x)
    if augment:
        x = augmenter(seed, standardized=standardize)(x)
    x = _trunk(x, filters, pools)
    if k == "heads":
        x = layers.Flatten()(x)
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(0.3)(x)
        x = layers.Dense(length[1] * num_classes)(x)
        x = layers.Reshape((length[1], num_classes))(x)
        logits = layers.Activation("linear", dtype="float32", name="logits")(x)
        return keras.Model(inp, logits, name=arch)
    # (B, h, T, C) -> (B, T, h*C): each column of the feature map is one time step
    x = layers.Permute((2, 1, 3))(x)
    x = layers.Reshape((x.shape[1], x.shape[2] * x.shape[3]))(x)
    x = layers.Dense(units, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout, seed=seed)(x)
    for _ in range(rnn_layers):
        x = layers.Bidirectional(layers.GRU(units, return_sequences=True))(x)
    if arch == "crnn-conv":  # context along the sequence from convolutions, not recurrence
        for _ in range(2):
            x = layers.Conv1D(units, 5, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.ReLU()(x)
    logits = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(inp, logits, name=arch)


AUDIO_FRONT = {"rate": 8000, "fft": 512, "hop": 256, "mels": 32}


def audio_stride(arch: str) -> int:
    """Audio samples per output step of an audio `arch`."""
    t = AUDIO_FRONT["hop"]
    for pt, _ in AUDIO_ARCHS[arch].pools:
        t *= pt
    return t


def build_audio_model(arch: str, num_classes: int, dropout: float = 0.0, seed: int = 0,
                      augment: bool = False):
    """(uint8 PCM [B,N] at 8 kHz, clip lengths [B]) -> float32 logits [B,T,num_classes], one step
    per `audio_stride(arch)` samples, class 0 the blank. The log mel spectrogram is the model's
    first layer (`LogMel`), so nothing outside the model prepares audio; steps past a clip's
    end are zeroed after every layer that mixes steps (and masked from the GRU), so a clip
    reads exactly the same however its batch was padded. augment: SpecAugment's frequency
    masking on the training batches (`BandMask`: two runs of up to 6 of the 32 mel bands per
    clip)."""
    import keras
    from keras import layers

    from captchalab.core.layers import BandMask, BlankPadding, LogMel, MaskSteps

    filters, pools, units, rnn_layers, _, _ = AUDIO_ARCHS[arch]
    hop = AUDIO_FRONT["hop"]
    pcm = keras.Input((None,), dtype="uint8", name="audio")
    lengths = keras.Input((), dtype="int32", name="audio_length")
    x = LogMel(**AUDIO_FRONT, normalize=arch in AUDIO_NORMALIZED, exact=True,
               name="logmel")(pcm, lengths)

    def masked(x, stride):  # zero what lies past each clip's end, as a convolution pads
        return MaskSteps(stride, hop)(x, lengths)[0]

    if augment:
        x = masked(BandMask(2, 6, seed=seed, name="band_mask")(x), hop)
    strides = list(itertools.accumulate((pt for pt, _ in pools), operator.mul, initial=hop))[1:]
    x = _trunk(x, filters, pools, after_block=lambda x, i: masked(x, strides[i]))
    stride = audio_stride(arch)
    mels = AUDIO_FRONT["mels"]
    for _, pm in pools:
        mels //= pm
    x = layers.Reshape((-1, mels * filters[-1]))(x)  # [B, T, mel bands x channels]
    x = layers.Dense(units, activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout, seed=seed)(x)
    x, mask = MaskSteps(stride, hop, name="mask")(x, lengths)
    for _ in range(rnn_layers):
        x = layers.Bidirectional(layers.GRU(units, return_sequences=True))(x, mask=mask)
    if not rnn_layers:
        for _ in range(2):
            x = layers.Conv1D(units, 5, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = masked(layers.ReLU()(x), stride)
    x = layers.Dense(num_classes, dtype="float32", name="logits")(x)
    logits = BlankPadding(stride, hop, name="blank_padding")(x, lengths)
    return keras.Model({"audio": pcm, "audio_length": lengths}, logits, name=arch)


def loss_for(arch: str):
    import keras

    if kind(arch) == "heads":  # the sparse form of categorical cross-entropy on one-hot labels
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return keras.losses.CTC()  # labels padded with 0 = blank
