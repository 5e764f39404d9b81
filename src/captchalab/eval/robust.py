"""`captchalab robust`: how accuracy falls as generator knobs, out-of-distribution axes
(fonts, lengths, charset, image size) and image corruptions change, for one or more models.
For audio models: the audio knobs (snr, speed, gap, bandpass, reverb, ...), voices (a voice
folder per value, e.g. one the model never heard), length and charset.

Every test set is rendered from the models' training recipe with one thing changed, written as
shards under OUT/sets/KEY (KEY hashes the recipe, so a set is rendered once and reused), and the
same sets are scored for every model. Corruptions are applied to the clean set, deterministically
per sample (eval/corruptions.py); they are image operations, so audio studies have none.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

from captchalab.core.errors import UsageError, suggest
from captchalab.core.runconfig import run_name
from captchalab.core.storage import write_atomic
from captchalab.gen.audio import AUDIO_KNOBS
from captchalab.gen.style import KNOBS

SCHEMA = "captchalab.robust/1"
AXES = ("fonts", "length", "charset", "size")  # out-of-distribution axes besides the knobs
SWEEPABLE = [k.replace("_", "-") for k in KNOBS] + list(AXES)
AUDIO_SWEEPABLE = [k.replace("_", "-") for k in AUDIO_KNOBS] + ["voices", "length", "charset"]


def parse_sweep(text: str) -> tuple[str, list[str]]:
    """'rotate=0,15,30' -> ('rotate', ['0', '15', '30']); knob names take - or _."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("_", "-")
    if not sep or not values.strip():
        raise UsageError(f"sweep {text!r}: write NAME=V1,V2,… e.g. rotate=0,15,30",
                         param="sweep")
    known = SWEEPABLE + [a for a in AUDIO_SWEEPABLE if a not in SWEEPABLE]
    if name not in known:
        raise UsageError(f"sweep: unknown '{name}'{suggest(name, known)} "
                         f"(allowed for image models: {', '.join(SWEEPABLE)}; for audio models: "
                         f"{', '.join(AUDIO_SWEEPABLE)})", param="sweep")
    return name, [v.strip() for v in values.split(",") if v.strip()]


def base_recipe(config: dict, run_dir: str, base_data: str | None) -> dict:
    """The recipe the model was trained on (on-the-fly recipe or its dataset's manifest)."""
    from captchalab.gen import shards as sh
    from captchalab.gen.recipe import recipe_keys

    if base_data:
        m = sh.read_manifest(base_data)
        where = base_data
    elif config.get("recipe"):
        return dict(config["recipe"])
    else:
        where = config.get("dataset")
        if not where or not os.path.isdir(where):
            raise UsageError(f"the dataset {run_dir} was trained on ({where}) is gone; give "
                             "--base DATA (a dataset with the style to start from)")
        m = sh.read_manifest(where)
    if m.get("style") is None:
        raise UsageError(f"{where} was imported, not generated: it has no style to vary; give "
                         "--base DATA with a generated dataset")
    return {k: m[k] for k in recipe_keys(m) if k in m}


def variant(base: dict, samples: int, axis: str | None = None, value: str | None = None):
    """A test-split Recipe equal to `base` (the training recipe's keys, as `base_recipe` gives
    them) except for one axis; validated as `gen` validates."""
    from captchalab.gen.recipe import GenRequest, build_recipe
    from captchalab.gen.style import Style, apply_overrides

    if base.get("kind") == "audio":
        return audio_variant(base, samples, axis, value)
    style = Style.from_json(base["style"])
    lo, hi = base["length"]
    req = dict(charset=base["charset"]["chars"], length=f"{lo}-{hi}",
               size="{}x{}".format(*base["size"]), style_name=base.get("style_name") or "custom",
               seed=base["seed"], counts={"test": samples}, shard_size=max(samples, 1))
    if axis in ("length", "charset", "size"):
        req[axis] = value
    elif axis == "fonts":
        style = apply_overrides(style, {"fonts": [value]}, source=f"--sweep fonts={value}")
    elif axis is not None:
        style = apply_overrides(style, {axis.replace("-", "_"): value},
                                source=f"--sweep {axis}={value}")
    return build_recipe(GenRequest(style=style, **req), warn=lambda _m: None)


def audio_variant(base: dict, samples: int, axis: str | None, value: str | None):
    from captchalab.gen.audio import BUILTIN, AudioStyle, apply_audio_overrides
    from captchalab.gen.recipe import GenRequest, build_audio_recipe

    style = AudioStyle.from_json(base["style"])
    voices = [BUILTIN if v["name"] == BUILTIN else v["path"] for v in base["voices"]]
    lo, hi = base["length"]
    req = dict(charset=base["charset"]["chars"], length=f"{lo}-{hi}",
               style_name=base.get("style_name") or "custom", seed=base["seed"],
               counts={"test": samples}, shard_size=max(samples, 1))
    if axis in ("length", "charset"):
        req[axis] = value
    elif axis == "voices":
        voices = [value]
    elif axis is not None:
        style = apply_audio_overrides(style, {axis: value}, source=f"--sweep {axis}={value}")
    return build_audio_recipe(GenRequest(**req), style, voices, warn=lambda _m: None)


def recipe_key(recipe) -> str:
    return hashlib.sha256(json.dumps(recipe.to_json(), sort_keys=True).encode()).hexdigest()[:16]


def render_set(recipe, sets_dir: str, workers: int | None) -> str:
    """Shards of `recipe` under sets_dir/KEY, rendered unless a complete copy is there."""
    from captchalab.gen import shards as sh
    from captchalab.gen.generate import generate

    d = os.path.join(sets_dir, recipe_key(recipe))
    if os.path.exists(os.path.join(d, sh.MANIFEST)):
        m = sh.read_manifest(d)
        if m.get("complete") and all(m.get(k) == v for k, v in recipe.to_json().items()):
            return d
    generate(recipe, d, workers=workers, overwrite=os.path.exists(d), progress=False,
             command="captchalab robust")
    return d


def read_set(d: str):
    """(uint8 images [N,H,W,3], truths, indices) of a rendered set's test split; for an audio
    set, a list of uint8 PCM clips instead of the images."""
    from captchalab.eval.predictor import to_rgb
    from captchalab.gen import shards as sh
    from captchalab.gen.audio import parse_wav

    m = sh.read_manifest(d)
    audio = m.get("kind") == "audio"
    items, truths, idx = [], [], []
    for r in sh.iter_split(d, m, "test"):
        items.append(parse_wav(r["audio/wav"], d) if audio else to_rgb(r["image/png"]))
        truths.append(r["label/text"])
        idx.append(r["sample/index"])
    return (items if audio else np.stack(items)), truths, idx


def score(recognizer, images, truths: list[str], tta: bool = False) -> dict:
    """Sequence/character accuracy (95 % Wilson intervals) and CER of a model on images (or
    clips); sets of another size (the size axis) are scaled to what the model reads. tta:
    test-time augmentation (`Recognizer.read`)."""
    from captchalab.eval.report import accuracy

    preds = recognizer.predict(list(images), resize=True, tta=tta)
    return accuracy(truths, [p.text for p in preds])


def _names(runs: list[str]) -> list[str]:
    base = [run_name(r) for r in runs]
    return base if len(set(base)) == len(base) else [os.path.normpath(r) for r in runs]


def checked_plan(runs: list[str], baseline: str | None, sweeps, samples: int, out: str,
                 base_data: str | None, corruptions: list[str] | None = None):
    """Check the models, the base recipe and every set's recipe before anything is rendered.
    corruptions: None for the default (all for image models, none for audio ones).
    Returns (runs with the baseline added, baseline, configs, base recipe, plan of sets,
    corruptions)."""
    from captchalab.core.charset import Charset
    from captchalab.eval.predictor import read_config

    if samples < 1:
        raise UsageError(f"samples: {samples}; must be at least 1", param="samples")
    if len(set(map(os.path.normpath, runs))) != len(runs):
        raise UsageError("model: the same run is given twice", param="model")
    if baseline:
        norm = [os.path.normpath(r) for r in runs]
        if os.path.normpath(baseline) not in norm:
            runs = [*runs, baseline]
        baseline = runs[[os.path.normpath(r) for r in runs].index(os.path.normpath(baseline))]
    configs = [read_config(r) for r in runs]
    audio = [r for r, c in zip(runs, configs, strict=True) if c.get("data_kind") == "audio"]
    if audio and len(audio) < len(runs):
        image = next(r for r in runs if r not in audio)
        raise UsageError(f"model: {audio[0]} reads audio and {image} images; a study compares "
                         "models of one kind", param="model")
    allowed = AUDIO_SWEEPABLE if audio else SWEEPABLE
    for axis, _ in sweeps:
        if axis not in allowed:
            kind = "audio" if audio else "image"
            raise UsageError(f"sweep: '{axis}' does not apply to {kind} models (allowed: "
                             f"{', '.join(allowed)})", param="sweep")
    if audio:
        if corruptions:
            raise UsageError("corruptions: image corruptions do not apply to audio models; "
                             "sweep snr, bandpass, reverb, speed, … instead (--corruptions "
                             "none)", param="corruptions")
        corruptions = []
    elif corruptions is None:
        from captchalab.eval.corruptions import CORRUPTIONS
        corruptions = list(CORRUPTIONS)
    if not sweeps and not corruptions:
        raise UsageError("nothing to measure: give --sweep NAME=V1,V2,…"
                         + ("" if audio else " and/or --corruptions"))
    sizes = {(c["image"]["width"], c["image"]["height"]) for c in configs if not audio}
    if len(sizes) > 1:
        raise UsageError("model: the models read different image sizes "
                         f"({', '.join('x'.join(map(str, s)) for s in sorted(sizes))}); "
                         "compare models trained on one size", param="model")
    base = base_recipe(configs[0], runs[0], base_data)
    plan = [("clean", None, None, variant(base, samples))]
    for axis, values in sweeps:
        for v in values:
            plan.append(("sweep", axis, v, variant(base, samples, axis, v)))
    for _, axis, v, recipe in plan:
        for r, c in zip(runs, configs, strict=True):
            bad = Charset.from_json(c["charset"]).missing(recipe.charset["chars"])
            if bad:
                what = f"--sweep {axis}={v}" if axis else "the base style"
                raise UsageError(f"{what} uses characters {bad!r} that the model in {r} cannot "
                                 "output; sweep the charset within the model's")
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"out {out} is a file; give a folder for the study", param="out")
    return runs, baseline, configs, base, plan, corruptions


def study(runs: list[str], *, sweeps: list[tuple[str, list[str]]],
          corruptions: list[str] | None,
          severities: list[int], samples: int, out: str, baseline: str | None = None,
          base_data: str | None = None, workers: int | None = None, tta: bool = False,
          scales=None, blurs=None, echo=None) -> dict:
    """Run the whole study and write OUT/robust.json, robust.md and the PNGs; returns the report.

    Everything is checked (models, base recipe, every set's recipe) before anything is rendered.
    corruptions: names, or None for the default (all for image models, none for audio ones).
    tta: every model reads every image with test-time augmentation.
    scales, blurs: widths and blurs every model reads each image at (see Recognizer.read);
    default: each run's own.
    """
    from captchalab.eval.corruptions import corrupt

    echo = echo or (lambda m: print(m, file=sys.stderr))
    runs, baseline, configs, base, plan, corruptions = checked_plan(
        runs, baseline, sweeps, samples, out, base_data, corruptions)
    from captchalab.eval.predictor import load

    names = _names(runs)
    models = [load(r, scales, blurs) for r in runs]
    sets_dir = os.path.join(out, "sets")
    report = {"schema": SCHEMA,
              "models": [{"name": n, "run": os.path.abspath(r), "arch": c["arch"]}
                         for n, r, c in zip(names, runs, configs, strict=True)],
              "baseline": names[runs.index(baseline)] if baseline else None,
              "samples": samples, "tta": tta,
              "scales": {n: list(m.scales) for n, m in zip(names, models, strict=True)},
              "blurs": {n: list(m.blurs) for n, m in zip(names, models, strict=True)},
              "kind": base.get("kind", "image"),
              "base": {"style_name": base.get("style_name"), "charset": base["charset"]["chars"],
                       "length": base["length"], "size": base.get("size"), "seed": base["seed"],
                       "style": base["style"],
                       **({"voices": base["voices"]} if base.get("kind") == "audio" else {})},
              "clean": None, "sweeps": {}, "corruptions": {}}

    def results(images, truths):
        return {n: score(m, images, truths, tta) for n, m in zip(names, models, strict=True)}

    clean_images = clean_truths = clean_idx = None
    for kind, axis, v, recipe in plan:
        d = render_set(recipe, sets_dir, workers)
        images, truths, idx = read_set(d)
        row = {"set": os.path.relpath(d, out), "results": results(images, truths)}
        if kind == "clean":
            report["clean"] = row
            clean_images, clean_truths, clean_idx = images, truths, idx
            echo("clean: " + _accs(row["results"]))
        else:
            report["sweeps"].setdefault(axis, []).append({"value": v, **row})
            echo(f"{axis}={v}: " + _accs(row["results"]))
    for c in corruptions:
        rows = []
        for s in severities:
            imgs = np.stack([corrupt(im, c, s, base["seed"], i)
                             for im, i in zip(clean_images, clean_idx, strict=True)])
            rows.append({"severity": s, "results": results(imgs, clean_truths)})
            echo(f"{c} {s}: " + _accs(rows[-1]["results"]))
        report["corruptions"][c] = rows
    report["summary"] = summarize(report)
    write_study(report, out)
    return report


def _accs(res: dict) -> str:
    return ", ".join(f"{n} {r['seq_acc']:.3f}" for n, r in res.items())


def summarize(report: dict) -> dict:
    """Per model: clean accuracy, mean corruption accuracy and, with a baseline, mCE.

    CE_c = sum over severities of the model's sequence error / the baseline's (ImageNet-C);
    mCE = mean of CE_c over corruptions (1.0 = as robust as the baseline, lower is better).
    """
    out = {}
    base = report["baseline"]
    for m in (x["name"] for x in report["models"]):
        row = {"clean_seq_acc": report["clean"]["results"][m]["seq_acc"]}
        cs = report["corruptions"]
        if cs:
            accs = [r["results"][m]["seq_acc"] for rows in cs.values() for r in rows]
            row["mean_corruption_seq_acc"] = float(np.mean(accs))
            # share of its clean accuracy a model keeps under corruption: comparable across
            # models whose clean accuracy differs, which mCE (absolute errors) is not
            row["retained"] = (row["mean_corruption_seq_acc"] / row["clean_seq_acc"]
                               if row["clean_seq_acc"] else None)
            if base:
                ces = []
                for rows in cs.values():
                    err_m = sum(1 - r["results"][m]["seq_acc"] for r in rows)
                    err_b = sum(1 - r["results"][base]["seq_acc"] for r in rows)
                    ces.append(err_m / err_b if err_b > 0 else float("nan"))
                row["mCE"] = float(np.nanmean(ces)) if not np.all(np.isnan(ces)) else None
                row["CE"] = dict(zip(cs, [None if np.isnan(x) else x for x in ces], strict=True))
        out[m] = row
    return out


def _num(values):
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_sweep(report: dict, axis: str, path: str) -> None:
    from captchalab.core.plot import pyplot

    plt = pyplot()
    rows = report["sweeps"][axis]
    values = [r["value"] for r in rows]
    if axis == "voices":  # folders: their names
        values = [os.path.basename(os.path.normpath(v)) for v in values]
    xs = _num(values) or list(range(len(values)))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, key, title in ((axes[0], "seq_acc", "sequence accuracy"),
                           (axes[1], "char_acc", "character accuracy")):
        for m in report["models"]:
            n = m["name"]
            ys = [r["results"][n][key] for r in rows]
            lo = [r["results"][n][f"{key}_ci95"][0] for r in rows]
            hi = [r["results"][n][f"{key}_ci95"][1] for r in rows]
            line, = ax.plot(xs, ys, "o-", label=n)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        if _num(values) is None:
            ax.set_xticks(xs, values, rotation=20)
        ax.set_xlabel(axis)
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"accuracy ({report['samples']} samples, 95% CI shaded)")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Accuracy against {axis} (everything else as trained: "
                 f"style {report['base']['style_name']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_corruptions(report: dict, heat_path: str, lines_path: str) -> None:
    from captchalab.core.plot import pyplot

    plt = pyplot()
    cs = list(report["corruptions"])
    models = [m["name"] for m in report["models"]]
    sevs = [r["severity"] for r in report["corruptions"][cs[0]]]
    fig, axes = plt.subplots(1, len(models), figsize=(1.2 + 0.75 * (len(sevs) + 1) * len(models)
                                                       + 0.8 * len(models), 0.42 * len(cs) + 1.4),
                             squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        clean = report["clean"]["results"][m]["seq_acc"]
        grid = np.array([[clean] + [r["results"][m]["seq_acc"] for r in report["corruptions"][c]]
                         for c in cs])
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(sevs) + 1), ["clean", *map(str, sevs)])
        ax.set_yticks(range(len(cs)), cs)
        ax.set_xlabel("severity")
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7)
        mca = report["summary"][m].get("mean_corruption_seq_acc")
        ce = report["summary"][m].get("mCE")
        ax.set_title(f"{m}\nmean corruption acc {mca:.3f}"
                     + (f", mCE {ce:.2f}" if ce is not None else ""), fontsize=9)
    fig.suptitle("Sequence accuracy by corruption and severity", fontsize=10)
    fig.tight_layout()
    fig.savefig(heat_path, dpi=110)
    plt.close(fig)

    cols = min(4, len(cs))
    rows = -(-len(cs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.flat[len(cs):]:
        ax.axis("off")
    for ax, c in zip(axes.flat, cs, strict=False):
        for m in models:
            ys = [report["clean"]["results"][m]["seq_acc"]] + [
                r["results"][m]["seq_acc"] for r in report["corruptions"][c]]
            ax.plot([0, *sevs], ys, "o-", ms=3, label=m)
        ax.set_title(c, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("severity (0 = clean)")
    for ax in axes[:, 0]:
        ax.set_ylabel("sequence acc")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(lines_path, dpi=110)
    plt.close(fig)


def markdown(report: dict, files: dict) -> str:
    models = [m["name"] for m in report["models"]]
    head = "| | " + " | ".join(models) + " |"
    sep = "|---|" + "---|" * len(models)

    def cells(res):
        return " | ".join(f"{res[m]['seq_acc']:.4f} / {res[m]['char_acc']:.4f}" for m in models)

    b = report["base"]
    what = (f"{b['size'][0]}x{b['size'][1]}" if b.get("size") else
            "audio, voices " + ", ".join(v["name"] for v in b.get("voices", [])))
    out = ["# Robustness study", "",
           "Models: " + ", ".join(f"{m['name']} ({m['arch']}, {m['run']})"
                                  for m in report["models"]) + ".",
           f"Base: style {b['style_name']}, charset {b['charset']!r}, length "
           f"{b['length'][0]}-{b['length'][1]}, {what}, seed {b['seed']}; "
           f"{report['samples']} test samples per set"
           + (", read with test-time augmentation" if report.get("tta") else "")
           + "".join(f", {n} read at widths {','.join(f'{v:g}' for v in s)}"
                     for n, s in report.get("scales", {}).items() if len(s) > 1)
           + "".join(f", {n} read at blurs {','.join(f'{v:g}' for v in s)}"
                     for n, s in report.get("blurs", {}).items() if len(s) > 1)
           + ". Cells: sequence / character accuracy.", "",
           "## Summary", ""]
    keys = ("mean_corruption_seq_acc", "retained", "mCE") if report["corruptions"] else ()
    out += ["| model | clean |" + "".join(f" {k} |" for k in (
        "mean corruption acc", "retained", "mCE")[:len(keys)]), "|---|---|" + "---|" * len(keys)]
    for m in models:
        s = report["summary"][m]
        cells_ = [s.get(k) for k in keys]
        out.append(f"| {m} | {s['clean_seq_acc']:.4f} |"
                   + "".join(" |" if v is None else f" {v:.4f} |" for v in cells_))
    out += ["", "## Clean", "", head, sep, f"| clean | {cells(report['clean']['results'])} |", ""]
    for axis, rows in report["sweeps"].items():
        out += [f"## {axis}", "", head.replace("| |", f"| {axis} |", 1), sep]
        out += [f"| {r['value']} | {cells(r['results'])} |" for r in rows]
        out += ["", f"![{axis}]({files['sweeps'][axis]})", ""]
    if report["corruptions"]:
        out += ["## Corruptions", "", head.replace("| |", "| corruption, severity |", 1), sep]
        for c, rows in report["corruptions"].items():
            out += [f"| {c} {r['severity']} | {cells(r['results'])} |" for r in rows]
        out += ["", f"![corruptions]({files['corruption_heatmap']})", "",
                f"![corruption curves]({files['corruption_curves']})", ""]
    return "\n".join(out) + "\n"


def write_study(report: dict, out: str) -> dict:
    os.makedirs(out, exist_ok=True)
    files = {"json": "robust.json", "markdown": "robust.md", "sweeps": {}}
    for axis in report["sweeps"]:
        files["sweeps"][axis] = f"sweep-{axis}.png"
        plot_sweep(report, axis, os.path.join(out, files["sweeps"][axis]))
    if report["corruptions"]:
        files["corruption_heatmap"] = "corruptions.png"
        files["corruption_curves"] = "corruption-curves.png"
        plot_corruptions(report, os.path.join(out, files["corruption_heatmap"]),
                         os.path.join(out, files["corruption_curves"]))
    report["files"] = files
    with open(os.path.join(out, files["markdown"]), "w") as f:
        f.write(markdown(report, files))
    write_atomic(os.path.join(out, files["json"]), json.dumps(report, indent=1))
    return files
