"""Confidence that means what it says: one temperature, fitted on a run's val split, that makes
a reading's confidence the probability that the whole sequence is right."""

from __future__ import annotations

import json
import os

import numpy as np

from captchalab.core.ctc import log_likelihood, softmax
from captchalab.core.errors import DataError

FILE = "calibration.json"  # in the run folder
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(4.0), 41))  # searched, ~7 % apart


def sequence_confidence(kind: str, logits, texts, charset, temperature: float = 1.0):
    """The probability the model gives the text it read, with logits divided by `temperature`
    (which never changes the greedy text). CTC: p(text), every alignment summed; the greedy
    path alone is far too low when characters span several steps. `heads`: the product of the
    chosen per-position probabilities."""
    logits = np.asarray(logits, np.float32) / temperature
    if kind == "heads":
        return softmax(logits).max(-1).prod(-1)
    return np.exp(log_likelihood(logits, texts, charset))


def fit_temperature(kind: str, logits, texts, charset, correct) -> float:
    """The temperature whose confidences best predict `correct` (binary cross-entropy)."""
    hit = np.asarray(correct, dtype=float)
    best, best_loss = 1.0, np.inf
    for t in TEMPERATURES:
        p = np.clip(sequence_confidence(kind, logits, texts, charset, t), 1e-7, 1 - 1e-7)
        loss = -np.mean(hit * np.log(p) + (1 - hit) * np.log(1 - p))
        if loss < best_loss:
            best, best_loss = float(t), loss
    return best


def read_temperature(run_dir: str) -> float:
    """The run's fitted temperature; 1.0 for a run without calibration.json."""
    path = os.path.join(run_dir, FILE)
    if not os.path.exists(path):
        return 1.0
    try:
        with open(path) as f:
            t = float(json.load(f)["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path} is unreadable ({type(e).__name__}); delete it to read "
                        "uncalibrated") from None
    if not 0 < t < 100:
        raise DataError(f"{path}: temperature {t} is out of range; delete it")
    return t
