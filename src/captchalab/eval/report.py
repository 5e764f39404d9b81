"""Evaluation reports: figures from (truth, prediction, confidence) per sample, written as
report.json (schema in docs/metrics.md), report.md, a confusion heatmap and an error gallery."""

from __future__ import annotations

import json
import math
import os
from collections import Counter

import numpy as np

from captchalab.core.metrics import (
    aligned_pairs,
    calibration_error,
    character_error_rate,
    kept_characters,
    risk_coverage,
)
from captchalab.core.plot import pyplot
from captchalab.core.storage import write_atomic

SCHEMA = "captchalab.eval.report/1"
TOP_CONFUSIONS = 20  # character pairs listed in the report
AUDIO_GALLERY = 12  # spectrograms, one per row
GALLERY = 24  # worst errors drawn in errors.png
ERRORS_LISTED = 1000  # errors listed in report.json, most confident first
STYLE_BINS = 5  # numeric style values with many distinct values are split into quantile bins
EPS = ""  # the missing side of an insertion or deletion (shown as ∅)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def accuracy(truths: list[str], preds: list[str]) -> dict:
    """Sequence and character accuracy, each with its 95 % Wilson interval, and CER."""
    n, chars = len(truths), sum(len(t) for t in truths)
    exact = sum(t == p for t, p in zip(truths, preds, strict=True))
    kept = sum(kept_characters(t, p) for t, p in zip(truths, preds, strict=True))
    return {"seq_acc": exact / n if n else 0.0, "seq_acc_ci95": list(wilson(exact, n)),
            "char_acc": kept / chars if chars else 0.0,
            "char_acc_ci95": list(wilson(kept, chars)),
            "cer": character_error_rate(truths, preds)}


def _group(alignments, truths, preds, idx) -> dict:
    chars = sum(len(truths[i]) for i in idx)
    kept = sum(t == p for i in idx for t, p in alignments[i] if t)
    return {"samples": len(idx),
            "seq_acc": sum(truths[i] == preds[i] for i in idx) / len(idx) if idx else 0.0,
            "char_acc": kept / chars if chars else 0.0}


def style_groups(values: list) -> list[tuple[str, list[int]]]:
    """(label, sample indices) for one per-sample value; [] when it does not vary.

    Strings and numbers with few distinct values group by value; other numbers by quantile bin.
    """
    present = [i for i, v in enumerate(values) if v is not None]
    distinct = sorted({values[i] for i in present}, key=lambda v: (str(type(v)), v))
    if len(distinct) <= 1:
        return []
    numeric = all(isinstance(v, (int, float)) for v in distinct)
    if not numeric or len(distinct) <= 8:
        return [(str(v), [i for i in present if values[i] == v]) for v in distinct]
    x = np.array([values[i] for i in present], dtype=float)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, STYLE_BINS + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    return [(f"{edges[b]:.3g}–{edges[b + 1]:.3g}", [present[j] for j in np.flatnonzero(which == b)])
            for b in range(len(edges) - 1) if np.any(which == b)]


def build_report(truths: list[str], preds: list[str], confs: list[float], names: list[str],
                 meta: dict[str, list], charset: str, context: dict) -> dict:
    """Every figure of report.json from per-sample results.

    names: what identifies each sample (file or split:index); meta: per-sample values to break
    accuracy down by (style knobs, font); charset: the model's characters (confusion axes);
    context: model/data/decoding descriptions copied into the report.
    """
    n = len(truths)
    alignments = [aligned_pairs(t, p) for t, p in zip(truths, preds, strict=True)]
    summary = {"samples": n, "characters": sum(len(t) for t in truths),
               **accuracy(truths, preds),
               "mean_confidence": float(np.mean(confs)) if n else 0.0}

    sample_hits = [[p == t for t, p in a if t] for a in alignments]
    by_position = []
    for pos in range(max((len(t) for t in truths), default=0)):
        hits = [h[pos] for h in sample_hits if len(h) > pos]
        by_position.append({"position": pos + 1, "samples": len(hits),
                            "char_acc": sum(hits) / len(hits)})
    lengths = sorted({len(t) for t in truths})
    by_length = [{"length": L, **_group(alignments, truths, preds,
                                        [i for i, t in enumerate(truths) if len(t) == L])}
                 for L in lengths]

    pairs = Counter(tp for a in alignments for tp in a)
    truth_counts = Counter(c for t in truths for c in t)
    confusions = [{"truth": t, "pred": p, "count": c,
                   "rate": c / truth_counts[t] if t else None}
                  for (t, p), c in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
                  if t != p][:TOP_CONFUSIONS]
    labels = list(charset) + sorted({c for t, p in pairs for c in (t, p)} - set(charset) - {EPS})
    labels.append(EPS)
    pos = {c: i for i, c in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for (t, p), c in pairs.items():
        matrix[pos[t]][pos[p]] += c

    by_style = {}
    for key, values in meta.items():
        groups = style_groups(values)
        if groups:
            by_style[key] = [{"value": label, **_group(alignments, truths, preds, idx)}
                             for label, idx in groups]

    wrong = sorted((i for i in range(n) if truths[i] != preds[i]), key=lambda i: -confs[i])
    errors = [{"sample": names[i], "truth": truths[i], "pred": preds[i],
               "confidence": round(float(confs[i]), 6)} for i in wrong[:ERRORS_LISTED]]
    correct = [t == p for t, p in zip(truths, preds, strict=True)]
    ece, bins = calibration_error(confs, correct)
    calibration = {"ece": ece, "bins": bins, "risk_coverage": risk_coverage(confs, correct)}
    return {"schema": SCHEMA, **context, "summary": summary, "by_position": by_position,
            "by_length": by_length, "confusions": confusions,
            "confusion_matrix": {"labels": labels, "counts": matrix},
            "by_style": by_style, "calibration": calibration, "errors": errors,
            "errors_total": len(wrong)}


def _show(c: str) -> str:
    return "∅" if c == EPS else c


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def markdown(report: dict) -> str:
    s, d = report["summary"], report["data"]
    lo, hi = s["seq_acc_ci95"]
    clo, chi = s["char_acc_ci95"]
    out = [f"# Evaluation of {report['model']['run']}", "",
           f"Data: {d['path']} ({d['what']}), {s['samples']} samples, "
           f"{report['decoding']['method']} decoding.", "",
           "| metric | value | 95 % CI |", "|---|---|---|",
           f"| sequence accuracy | {_pct(s['seq_acc'])} | {_pct(lo)} – {_pct(hi)} |",
           f"| character accuracy | {_pct(s['char_acc'])} | {_pct(clo)} – {_pct(chi)} |",
           f"| CER | {s['cer']:.4f} | |",
           f"| mean confidence | {s['mean_confidence']:.4f} | |", "",
           "## By position", "", "| position | samples | character accuracy |", "|---|---|---|"]
    out += [f"| {r['position']} | {r['samples']} | {_pct(r['char_acc'])} |"
            for r in report["by_position"]]
    out += ["", "## By label length", "",
            "| length | samples | sequence accuracy | character accuracy |", "|---|---|---|---|"]
    out += [f"| {r['length']} | {r['samples']} | {_pct(r['seq_acc'])} | {_pct(r['char_acc'])} |"
            for r in report["by_length"]]
    out += ["", "## Most confused characters", "",
            "∅ is the missing side of a deletion (truth → ∅) or an insertion (∅ → prediction).", "",
            "| truth | predicted | count | share of that truth character |", "|---|---|---|---|"]
    out += [f"| `{_show(c['truth'])}` | `{_show(c['pred'])}` | {c['count']} | "
            f"{'' if c['rate'] is None else _pct(c['rate'])} |" for c in report["confusions"]]
    out += ["", "![confusions](confusion.png)", ""]
    for key, rows in report["by_style"].items():
        out += [f"## By {key}", "", f"| {key} | samples | sequence accuracy | character accuracy |",
                "|---|---|---|---|"]
        out += [f"| {r['value']} | {r['samples']} | {_pct(r['seq_acc'])} | {_pct(r['char_acc'])} |"
                for r in rows]
        out.append("")
    cal = report["calibration"]
    out += ["## Confidence", "",
            f"Expected calibration error {cal['ece']:.4f} (temperature "
            f"{report['decoding'].get('temperature', 1.0):.3f}). Answering only the most "
            "confident share of samples:", "",
            "| coverage | accuracy of the answers kept | confidence threshold |", "|---|---|---|"]
    out += [f"| {_pct(r['coverage'])} | {_pct(r['accuracy'])} | {r['threshold']:.4f} |"
            for r in cal["risk_coverage"]]
    out += ["", "![reliability and risk-coverage](calibration.png)", ""]
    out += [f"## Errors ({report['errors_total']}, most confident first)", "",
            "![worst errors](errors.png)", "", "| sample | truth | predicted | confidence |",
            "|---|---|---|---|"]
    out += [f"| {e['sample']} | `{e['truth']}` | `{e['pred']}` | {e['confidence']:.3f} |"
            for e in report["errors"][:50]]
    return "\n".join(out) + "\n"


def summary_text(report: dict) -> str:
    """The few lines printed after an evaluation."""
    s = report["summary"]
    lo, hi = s["seq_acc_ci95"]
    clo, chi = s["char_acc_ci95"]
    lines = [f"{report['data']['what']}: {s['samples']} samples, {report['decoding']['method']}",
             f"  sequence accuracy   {s['seq_acc']:.4f}  [95% CI {lo:.4f}-{hi:.4f}]",
             f"  character accuracy  {s['char_acc']:.4f}  [95% CI {clo:.4f}-{chi:.4f}]",
             f"  CER                 {s['cer']:.4f}",
             f"  calibration error   {report['calibration']['ece']:.4f}  (accuracy "
             + ", ".join(f"{r['accuracy']:.4f} at {r['coverage']:.0%}"
                         for r in report["calibration"]["risk_coverage"]
                         if r["coverage"] in (0.9, 1.0)) + " coverage)",
             "  by position         " + "  ".join(f"{r['position']}:{r['char_acc']:.4f}"
                                                  for r in report["by_position"])]
    if report["confusions"]:
        lines.append("  top confusions      " + ", ".join(
            f"{_show(c['truth'])}->{_show(c['pred'])} {c['count']}"
            for c in report["confusions"][:6]))
    return "\n".join(lines)


def plot_confusions(report: dict, path: str) -> None:
    """Heatmap of errors: truth character (rows) against predicted (columns), matches left out."""
    plt = pyplot()
    labels = report["confusion_matrix"]["labels"]
    m = np.array(report["confusion_matrix"]["counts"], dtype=float)
    np.fill_diagonal(m, 0)
    k = len(labels)
    # at least 6.5 in wide: the title fits over small charsets (digits: 11 labels)
    fig, ax = plt.subplots(figsize=(max(6.5, 2 + 0.26 * k), 1.5 + 0.26 * k))
    shown = np.ma.masked_equal(m, 0)
    im = ax.imshow(shown, cmap="OrRd", vmin=0, vmax=max(1.0, m.max()))
    ticks = [_show(c) for c in labels]
    ax.set_xticks(range(k), ticks, fontsize=8)
    ax.set_yticks(range(k), ticks, fontsize=8)
    ax.set_xlabel("predicted (∅: truth character dropped)")
    ax.set_ylabel("truth (∅: extra character predicted)")
    for i, j in zip(*np.nonzero(m), strict=True):
        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=6,
                color="white" if m[i, j] > 0.6 * m.max() else "black")
    ax.grid(True, color="0.92", linewidth=0.5)
    ax.set_axisbelow(True)
    s = report["summary"]
    ax.set_title(f"Character confusions ({report['errors_total']} wrong of {s['samples']}; "
                 f"sequence accuracy {s['seq_acc']:.4f})", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.6, label="count")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_gallery(items: list[tuple[np.ndarray, dict]], path: str, title: str) -> None:
    """Grid of error images captioned truth -> prediction (confidence)."""
    plt = pyplot()
    h, w = items[0][0].shape[:2] if items else (60, 160)
    if w > 3 * h:  # spectrograms of audio clips: one per row
        rows, cols = max(1, len(items)), 1
        size = (10, rows * (10 * h / w + 0.5) + 0.4)
    else:
        cols = min(4, max(1, len(items)))
        rows = max(1, -(-len(items) // cols))
        size = (cols * (w / 55 + 0.2), rows * (h / 55 + 0.55))
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (img, e) in zip(axes.flat, items, strict=False):
        ax.imshow(img)
        ax.set_title(f"{e['truth']} → {e['pred'] or '∅'}  ({e['confidence']:.2f})\n{e['sample']}",
                     fontsize=8, color="firebrick")
    if not items:
        axes.flat[0].text(0.5, 0.5, "no errors", ha="center", va="center", fontsize=14)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(report: dict, path: str) -> None:
    """Reliability diagram (accuracy against confidence per bin) and risk-coverage curve."""
    plt = pyplot()
    cal = report["calibration"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="calibrated")
    mids = [(r["lo"] + r["hi"]) / 2 for r in cal["bins"]]
    a.bar(mids, [r["accuracy"] for r in cal["bins"]],
          width=[0.9 * (r["hi"] - r["lo"]) for r in cal["bins"]], alpha=0.7,
          label="accuracy in the bin")
    a.plot([r["confidence"] for r in cal["bins"]], [r["accuracy"] for r in cal["bins"]], "o",
           color="C3", ms=4, label="(mean confidence, accuracy)")
    a.set(xlabel="confidence", ylabel="full-sequence accuracy", xlim=(0, 1), ylim=(0, 1.02),
          title=f"reliability (ECE {cal['ece']:.4f})")
    a.legend(loc="upper left", fontsize=8)
    rc = cal["risk_coverage"]
    b.plot([r["coverage"] for r in rc], [r["accuracy"] for r in rc], "o-")
    b.set(xlabel="share of samples answered (most confident first)",
          ylabel="accuracy of the answers", title="risk-coverage")
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict, out_dir: str, gallery: list[tuple[np.ndarray, dict]]) -> dict:
    """report.json, report.md, confusion.png and errors.png in `out_dir`; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    files = {"json": "report.json", "markdown": "report.md", "confusions": "confusion.png",
             "errors": "errors.png", "calibration": "calibration.png"}
    report["files"] = files
    plot_confusions(report, os.path.join(out_dir, files["confusions"]))
    plot_calibration(report, os.path.join(out_dir, files["calibration"]))
    wide = bool(gallery) and gallery[0][0].shape[1] > 3 * gallery[0][0].shape[0]
    shown = min(len(gallery), AUDIO_GALLERY if wide else GALLERY)
    plot_gallery(gallery[:shown], os.path.join(out_dir, files["errors"]),
                 f"Most confident errors ({shown} of {report['errors_total']}): truth → "
                 "prediction (confidence)" + (": spectrograms, 0-4 kHz" if wide else ""))
    with open(os.path.join(out_dir, files["markdown"]), "w") as f:
        f.write(markdown(report))
    write_atomic(os.path.join(out_dir, files["json"]),
                 json.dumps(report, indent=1, ensure_ascii=False))
    return {k: os.path.join(out_dir, v) for k, v in files.items()}
