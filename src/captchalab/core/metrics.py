"""Recognition metrics: pure functions of truth and prediction strings, and of confidences
(calibration, risk-coverage). numpy only, no TensorFlow."""

from __future__ import annotations

import numpy as np
from rapidfuzz.distance import Levenshtein


def sequence_accuracy(truths, preds) -> float:
    """Fraction of samples whose whole predicted string equals the truth."""
    pairs = list(zip(truths, preds, strict=True))
    return sum(t == p for t, p in pairs) / len(pairs) if pairs else 0.0


def aligned_pairs(truth: str, pred: str) -> list[tuple[str, str]]:
    """(truth char, predicted char) along a minimal edit alignment, in order; '' stands for the
    missing side of a deletion (truth char dropped) or an insertion (extra predicted char)."""
    pairs, i, j = [], 0, 0
    for op in Levenshtein.editops(truth, pred):
        while i < op.src_pos:  # matches up to the edit
            pairs.append((truth[i], pred[j]))
            i, j = i + 1, j + 1
        if op.tag == "replace":
            pairs.append((truth[i], pred[j]))
            i, j = i + 1, j + 1
        elif op.tag == "delete":
            pairs.append((truth[i], ""))
            i += 1
        else:
            pairs.append(("", pred[j]))
            j += 1
    pairs.extend(zip(truth[i:], pred[j:], strict=True))
    return pairs


def position_hits(truth: str, pred: str) -> list[bool]:
    """For each truth position: did the alignment keep that character?"""
    return [p == t for t, p in aligned_pairs(truth, pred) if t]


def kept_characters(truth: str, pred: str) -> int:
    """Truth characters the minimal edit alignment keeps (neither replaced nor deleted)."""
    return sum(position_hits(truth, pred))


def character_accuracy(truths, preds) -> float:
    """Truth characters recognised (aligned by minimal edits) / all truth characters."""
    total = correct = 0
    for t, p in zip(truths, preds, strict=True):
        total += len(t)
        correct += kept_characters(t, p)
    return correct / total if total else 0.0


def character_error_rate(truths, preds) -> float:
    """Sum of edit distances / sum of truth lengths (can exceed 1 with many insertions)."""
    total = edits = 0
    for t, p in zip(truths, preds, strict=True):
        total += len(t)
        edits += Levenshtein.distance(t, p)
    return edits / total if total else 0.0


def summary(truths, preds) -> dict:
    return {"seq_acc": sequence_accuracy(truths, preds),
            "char_acc": character_accuracy(truths, preds),
            "cer": character_error_rate(truths, preds)}


def calibration_error(confidences, correct, bins: int = 15) -> tuple[float, list[dict]]:
    """Expected calibration error: the sample-weighted mean |accuracy - mean confidence| over
    `bins` equal-width confidence bins (Guo et al. 2017), and the bins that are not empty."""
    conf = np.asarray(confidences, dtype=float)
    hit = np.asarray(correct, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            c, a = float(conf[sel].mean()), float(hit[sel].mean())
            ece += sel.sum() / len(conf) * abs(a - c)
            rows.append({"lo": float(edges[b]), "hi": float(edges[b + 1]),
                         "samples": int(sel.sum()), "confidence": c, "accuracy": a})
    return float(ece), rows


def risk_coverage(confidences, correct, coverages=(0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)):
    """Answer only the most confident share of samples: for each coverage, the accuracy of the
    answers kept and the confidence threshold that keeps them."""
    conf = np.asarray(confidences, dtype=float)
    order = np.argsort(-conf, kind="stable")
    hit = np.asarray(correct, dtype=float)[order]
    out = []
    for cov in coverages:
        k = max(1, int(round(cov * len(conf))))
        out.append({"coverage": float(cov), "kept": k, "accuracy": float(hit[:k].mean()),
                    "threshold": float(conf[order][k - 1])})
    return out
