"""CTC decoding with blank = 0 (the charset's convention, and keras.ops.ctc_decode's mask_index)."""

from __future__ import annotations

import functools

import numpy as np

from captchalab.core.charset import BLANK_ID, Charset
from captchalab.core.errors import UsageError


def decode(logits, charset: Charset, beam_width: int = 0,
           length: tuple[int, int] | None = None):
    """Logits [B,T,K+1] -> (texts, confidences). Greedy when beam_width <= 1, else beam search;
    given `length` (min, max), the most probable path whose reading has that many characters
    (`length_ids`; not with beam search).

    Confidence: greedy or by length, the product of the chosen per-step probabilities; beam,
    exp(-path score).
    """
    logits = np.asarray(logits, dtype=np.float32)
    check_decoding(beam_width, length)
    if length is not None:
        ids, conf = length_ids(logits, *length)
    elif beam_width and beam_width > 1:
        import keras  # only beam search needs it; greedy decoding is plain numpy

        b, t, _ = logits.shape
        lengths = np.full((b,), t, dtype=np.int32)
        paths, scores = keras.ops.ctc_decode(logits, lengths, strategy="beam_search",
                                             beam_width=beam_width, top_paths=1,
                                             mask_index=BLANK_ID)
        ids = np.asarray(paths[0])
        conf = np.exp(-np.asarray(scores)[:, 0]) if scores is not None else np.ones(b)
    else:
        ids, conf = greedy_ids(logits)
    texts = [charset.decode(int(i) for i in row if i > 0) for row in ids]
    return texts, conf


def softmax(logits) -> np.ndarray:
    """Probabilities over the last axis, in float32."""
    z = np.asarray(logits, dtype=np.float32)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def greedy_ids(logits):
    """Best class per step, repeats merged, blanks dropped; returns (ids padded with -1, conf)."""
    probs = softmax(logits)
    best = probs.argmax(-1)
    conf = probs.max(-1).prod(-1)
    out = np.full(best.shape, -1, dtype=np.int64)
    for r, row in enumerate(best):
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        kept = row[keep & (row != BLANK_ID)]
        out[r, :len(kept)] = kept
    return out, conf


def check_decoding(beam_width: int, length) -> None:
    """Refuse a beam search together with a known length (not combined)."""
    if length and beam_width and beam_width > 1:
        raise UsageError("--length reads the most probable path of that length; it does not "
                         "combine with --beam-width over 1", param="length")


def length_ids(logits, lo: int, hi: int):
    """The most probable path (one class per step) whose reading - repeats merged, blanks
    dropped - has lo..hi characters: Viterbi over (characters read so far, last class). Returns
    (ids padded with -1 [B, T], path probabilities [B]); where no path that long fits in the
    steps (hi characters need at least hi steps, more for repeats), the greedy reading."""
    logp = _log_softmax(np.asarray(logits, np.float32)).astype(np.float64)
    b, t, k = logp.shape
    rows, chars = np.arange(b), np.arange(1, k)
    score = np.full((b, hi + 1, k), -np.inf)  # [sample, characters read, last class]
    score[:, 0, BLANK_ID] = logp[:, 0, BLANK_ID]
    if hi:
        score[:, 1, 1:] = logp[:, 0, 1:]
    came_k = np.zeros((t, b, hi + 1, k), np.int16)  # the state each step came from
    came_c = np.zeros((t, b, hi + 1, k), np.int16)
    for step in range(1, t):
        new = np.full_like(score, -np.inf)
        # a blank: after anything, as many characters read
        came_c[step, :, :, BLANK_ID] = score.argmax(-1)
        came_k[step, :, :, BLANK_ID] = np.arange(hi + 1)
        new[:, :, BLANK_ID] = score.max(-1) + logp[:, step, None, BLANK_ID]
        # character c with n read: c held on (n, c), or a new one after a blank or another
        # character (n - 1); the best other character is the best, or the second best for it
        before = score[:, :-1]
        order = np.argsort(-before[:, :, 1:], -1)[:, :, :2] + 1
        first, second = order[..., :1], order[..., -1:]  # one character class: no other
        other_c = np.where(chars == first, second, first)
        other = np.where(other_c == chars, -np.inf, np.take_along_axis(before, other_c, -1))
        options = np.stack([score[:, 1:, 1:],
                            np.broadcast_to(before[:, :, BLANK_ID:BLANK_ID + 1], other.shape),
                            other])
        pick = options.argmax(0)
        new[:, 1:, 1:] = options.max(0) + logp[:, step, None, 1:]
        n = np.arange(1, hi + 1)[:, None]
        came_k[step, :, 1:, 1:] = np.where(pick == 0, n, n - 1)
        came_c[step, :, 1:, 1:] = np.where(pick == 0, chars, np.where(pick == 1, BLANK_ID, other_c))
        score = new
    end = score[:, lo:hi + 1].reshape(b, -1)
    best = end.argmax(-1)
    n, c = best // k + lo, best % k
    path = np.zeros((b, t), np.int64)
    for step in range(t - 1, -1, -1):
        path[:, step] = c
        n, c = came_k[step, rows, n, c], came_c[step, rows, n, c]
    ids, conf = greedy_ids(logits)
    found = np.isfinite(end[rows, best])
    for r in np.flatnonzero(found):
        row = path[r]
        keep = np.r_[True, row[1:] != row[:-1]] & (row != BLANK_ID)
        ids[r] = -1
        ids[r, :keep.sum()] = row[keep]
    conf = np.where(found, np.exp(end[rows, best]), conf)
    return ids, conf


def decode_heads(logits, charset: Charset):
    """Per-position logits [B,L,K+1] -> (texts, confidences = product of the chosen probabilities)."""
    probs = softmax(logits)
    ids = probs.argmax(-1)
    return [charset.decode(int(i) for i in row) for row in ids], probs.max(-1).prod(-1)


def decode_output(kind: str, logits, charset: Charset, beam_width: int = 0,
                  length: tuple[int, int] | None = None):
    """Decode a model's logits by its kind ('ctc' or 'heads', see train.models.kind)."""
    if kind == "heads":
        return decode_heads(logits, charset)
    return decode(logits, charset, beam_width, length)


def tta_shifts(downscale: int) -> list[tuple[int, int]]:
    """The (dy, dx) pixel shifts test-time augmentation reads an image at: every phase of the
    model's d x d downscale grid (d = 2: 4 views), or 1 px shifts for a model at full size."""
    n = max(int(downscale), 2)
    return [(dy, dx) for dy in range(n) for dx in range(n)]


def shift(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """uint8 [N,H,W,C] moved down by dy and right by dx pixels, the edge repeated into the gap
    (what `core.layers.Jitter` does at train time)."""
    if not dy and not dx:
        return images
    h, w = images.shape[1:3]
    return np.pad(images, ((0, 0), (dy, 0), (dx, 0), (0, 0)), mode="edge")[:, :h, :w]


def _log_softmax(v: np.ndarray) -> np.ndarray:
    z = v - v.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@functools.cache
def _ctc_nll():
    """keras.ops.ctc_loss compiled once for any batch, label length and T: run eagerly, its
    forward-backward recursion is a Python loop over the time steps (~120 ms a call)."""
    import keras
    import tensorflow as tf

    spec = [tf.TensorSpec([None, None], tf.int32), tf.TensorSpec([None, None, None], tf.float32),
            tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)]
    return tf.function(lambda target, logits, target_len, logit_len: keras.ops.ctc_loss(
        target, logits, target_len, logit_len, mask_index=BLANK_ID), input_signature=spec,
        jit_compile=True)


BUCKET = 16  # time steps and label lengths are padded to a multiple of this
BLANK_LOGIT = 30.0  # a step with this logit for the blank and 0 elsewhere is a certain blank


def pad_blanks(logits, t: int) -> np.ndarray:
    """Logits [B,T,K+1] made T=`t` steps long with certain blanks, which change neither the
    greedy reading nor any CTC likelihood (clips of different lengths, compiled shapes)."""
    logits = np.asarray(logits, np.float32)
    b, have, k = logits.shape
    if have >= t:
        return logits
    blank = np.zeros((b, t - have, k), np.float32)
    blank[..., BLANK_ID] = BLANK_LOGIT
    return np.concatenate([logits, blank], axis=1)


def log_likelihood(logits, texts, charset: Charset) -> np.ndarray:
    """log p(text | logits) under CTC (all alignments summed) for each row of logits [B,T,K+1].

    Steps are padded to a multiple of BUCKET with certain blanks (which change no likelihood)
    and labels to a multiple of BUCKET, so the compiled recursion is reused across batches
    whose T differs (audio clips of different lengths) instead of compiled again for each."""
    b, t, _ = np.shape(logits)
    logits = pad_blanks(logits, t + (-t % BUCKET))
    ids = [charset.encode(x) for x in texts]
    width = max(1, max(map(len, ids)))
    target = np.zeros((b, width + (-width % BUCKET)), np.int32)
    for r, row in enumerate(ids):
        target[r, :len(row)] = row
    loss = _ctc_nll()(target, logits, np.array([len(r) for r in ids], np.int32),
                      np.full((b,), logits.shape[1], np.int32))
    return -np.asarray(loss, np.float64)


def decode_views(kind: str, views, charset: Charset, beam_width: int = 0,
                 temperature: float = 1.0, length: tuple[int, int] | None = None,
                 mean: bool = False):
    """Test-time augmentation: logits of the same images seen several ways (a list of
    [B,T,K+1]) -> (texts, confidences).

    CTC: each view proposes its decoding; every proposal is scored by its CTC log-likelihood
    under every view, and the highest sum wins. Confidence: the geometric mean over views of
    p(text) with logits divided by `temperature` (the run's calibration; it never changes the
    text). mean: the highest mean of p(text) over views wins instead, and is the confidence
    (views that need not agree: other models, other widths). `heads`: per-position
    log-probabilities averaged over views, then argmax.
    """
    views = [np.asarray(v, np.float32) for v in views]
    n = len(views)
    if kind == "heads":
        ids = sum(_log_softmax(v) for v in views).argmax(-1)
        logp = sum(_log_softmax(v / temperature) for v in views) / n
        return ([charset.decode(int(i) for i in row) for row in ids],
                np.exp(np.take_along_axis(logp, ids[..., None], -1)[..., 0].sum(-1)))
    proposals = [decode(v, charset, beam_width, length)[0] for v in views]
    pairs = sorted({(i, p[i]) for p in proposals for i in range(len(p))})
    rows = np.array([i for i, _ in pairs])
    texts = [x for _, x in pairs]
    ll = log_likelihood(np.concatenate([v[rows] / (temperature if mean else 1.0)
                                        for v in views]), texts * n,
                        charset).reshape(n, -1)  # one call for every view
    total = np.logaddexp.reduce(ll, axis=0) - np.log(n) if mean else ll.sum(0)
    best: dict[int, tuple[float, str]] = {}
    for i, x, score in zip(rows, texts, total, strict=True):
        if i not in best or score > best[i][0]:
            best[int(i)] = (float(score), x)
    b = len(views[0])
    chosen = [best[i][1] for i in range(b)]
    scores = np.array([best[i][0] for i in range(b)])
    if mean:
        return chosen, np.exp(scores)
    if temperature != 1.0:
        scores = log_likelihood(np.concatenate(views) / temperature, chosen * n,
                                charset).reshape(n, -1).sum(0)
    return chosen, np.exp(scores / n)


def decode_batches(forward, ds, kind: str, charset: Charset, truth_charset: Charset | None = None,
                   beam_width: int = 0):
    """For each (images, ids) batch of `ds`: (ids, logits, truths, texts, confidences).

    Truths travel with the images, so no order is assumed; `truth_charset` decodes the labels
    when the data's charset differs from the model's (a subset of it).
    """
    truth_charset = truth_charset or charset
    for images, ids in ds:
        logits = forward(images)
        texts, conf = decode_output(kind, np.asarray(logits), charset, beam_width)
        yield ids, logits, [truth_charset.decode(r) for r in np.asarray(ids)], texts, conf
