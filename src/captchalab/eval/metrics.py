"""Recognition metrics: pure functions of truth and prediction strings (no TensorFlow)."""

from __future__ import annotations

from rapidfuzz.distance import Levenshtein


def sequence_accuracy(truths, preds) -> float:
    """Fraction of samples whose whole predicted string equals the truth."""
    pairs = list(zip(truths, preds, strict=True))
    return sum(t == p for t, p in pairs) / len(pairs) if pairs else 0.0


def kept_characters(truth: str, pred: str) -> int:
    """Truth characters the minimal edit alignment keeps (neither replaced nor deleted)."""
    ops = Levenshtein.editops(truth, pred)
    return len(truth) - sum(op.tag in ("replace", "delete") for op in ops)


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
