"""CTC decoding with blank = 0 (the charset's convention, and keras.ops.ctc_decode's mask_index)."""

from __future__ import annotations

import numpy as np

from captchalab.charset import BLANK_ID, Charset


def decode(logits, charset: Charset, beam_width: int = 0):
    """Logits [B,T,K+1] -> (texts, confidences). Greedy when beam_width <= 1, else beam search.

    Confidence: greedy, the product of the chosen per-step probabilities; beam, exp(-path score).
    """
    logits = np.asarray(logits, dtype=np.float32)
    if beam_width and beam_width > 1:
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


def greedy_ids(logits):
    """Best class per step, repeats merged, blanks dropped; returns (ids padded with -1, conf)."""
    logits = np.asarray(logits, dtype=np.float32)
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    best = probs.argmax(-1)
    conf = probs.max(-1).prod(-1)
    out = np.full(best.shape, -1, dtype=np.int64)
    for r, row in enumerate(best):
        keep = np.ones(len(row), bool)
        keep[1:] = row[1:] != row[:-1]
        kept = row[keep & (row != BLANK_ID)]
        out[r, :len(kept)] = kept
    return out, conf


def decode_heads(logits, charset: Charset):
    """Per-position logits [B,L,K+1] -> (texts, confidences = product of the chosen probabilities)."""
    logits = np.asarray(logits, dtype=np.float32)
    z = logits - logits.max(-1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    ids = probs.argmax(-1)
    return [charset.decode(int(i) for i in row) for row in ids], probs.max(-1).prod(-1)


def decode_output(kind: str, logits, charset: Charset, beam_width: int = 0):
    """Decode a model's logits by its kind ('ctc' or 'heads', see train.models.kind)."""
    if kind == "heads":
        return decode_heads(logits, charset)
    return decode(logits, charset, beam_width)


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
