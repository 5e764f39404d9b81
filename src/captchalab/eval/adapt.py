"""`captchalab adapt`: from folders of a site's captchas to a model that reads them, in one command.

It plays the best arm of the label-efficiency study (docs/adapt.md) through the same commands a
user would type, printing each: `train --init-from BASE` on the labelled captchas (fine-tuning),
then rounds of self-training — `import --label-with` the last run reads the unlabelled captchas,
and `train` again on the labels with its confident readings as a share of every batch, each
round after the first starting from the round before's run; each round keeps a growing share
of the readings, the most confident first (curriculum labelling). Without labels the rounds
train on the readings alone. With a pretraining budget it
first fits a look-alike style (`fit-style`), renders it (`gen`) and trains the base on the
renderings, and starts from that. Every stage is scored on the labelled captchas held out as
val (real captchas, never trained on), so the user sees what each stage bought; the last
stage's run is copied to OUT/model.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import dataclass

from captchalab.core.errors import UsageError
from captchalab.core.storage import write_atomic


@dataclass
class AdaptPlan:
    """What `adapt` was asked to do, with the defaults of the study's best arm."""

    out: str
    labelled: str = ""
    unlabelled: str = ""
    base: str = "pretrained"
    charset: str = ""  # default: the base run's
    length: str = ""  # default: the labels' lengths
    rounds: int = 3
    renderings: int = 20000
    # none: from the model shipped at d33e6bc, pretraining on the fitted style bought nothing
    # at 100 labels, at twice the compute, and read below the model as it is without labels
    pretrain_budget: str = "0"
    finetune_budget: str = "60s"
    min_confidence: float = 0.0  # a floor under curriculum_share's shares
    pseudo_share: float = 0.5
    match_fonts: int = 8
    fonts: str = ""
    seed: int = 0
    command: str = ""


MIN_LABELS = 10


def hold_out(items: list[tuple[str, str, str]], seed: int) -> list[tuple[str, str, str]]:
    """(path, label, split) with a val split: kept when the folder gives one (labels.csv's split
    column or a val/ subfolder), else a fifth of the captchas (at least 10, at most half) drawn
    at random from `seed`; the rest train. Test items stay test (scored, never trained on)."""
    if any(s == "val" for _, _, s in items):
        return items
    pool = [i for i, (_, _, s) in enumerate(items) if s != "test"]
    n_val = max(len(pool) // 5, min(10, len(pool) // 2))
    val = set(random.Random(seed).sample(pool, n_val))
    return [(p, lab, "val" if i in val else ("test" if s == "test" else "train"))
            for i, (p, lab, s) in enumerate(items)]


def labels_length(items) -> str:
    """N or MIN-MAX: the lengths of the labels (train and val)."""
    lengths = sorted({len(lab) for _, lab, s in items if s != "test"})
    return str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"


def curriculum_share(r: int) -> float:
    """Round r keeps this share of the unlabelled captchas, the most confident readings first
    (of those at --min-confidence): 0.3, 0.5, 0.7, then 0.9. Ranks, not a confidence: without
    labels the base's confidence is calibrated on its own renderings, and with 100 labels the
    shares kept more right pseudo-labels than a threshold of 0.5 (docs/adapt.md#without-labels,
    #ranks-with-labels)."""
    return round(min(0.9, 0.1 + 0.2 * r), 2)


def check_inputs(plan: AdaptPlan, overwrite: bool = False) -> None:
    """Refuse, before anything is written: no folder, a folder that is not one, an OUT in use
    (unless `overwrite`), an OUT that is a file."""
    if not plan.labelled and not plan.unlabelled:
        raise UsageError("adapt needs the site's captchas: --labelled FOLDER (labelled) and/or "
                         "--unlabelled FOLDER (any number, no labels needed)")
    if not plan.labelled and not plan.rounds:
        raise UsageError("--rounds 0 needs --labelled: without labels the rounds are what "
                         "adapts the model", param="rounds")
    for opt, path in (("labelled", plan.labelled), ("unlabelled", plan.unlabelled)):
        if path and not os.path.isdir(path):
            raise UsageError(f"--{opt} {path} is not a folder", param=opt)
    if os.path.exists(plan.out) and not os.path.isdir(plan.out):
        raise UsageError(f"out {plan.out} is a file; give a folder", param="out")
    if os.path.isdir(plan.out) and os.listdir(plan.out) and not overwrite:
        raise UsageError(f"out {plan.out} exists and is not empty; give a new folder or "
                         "--overwrite to replace it", param="out")


def run_adapt(plan: AdaptPlan, cli, echo=print) -> dict:
    """Do `plan`: `cli(args)` runs one captchalab command in this process (echoed first as a
    command line). Returns what OUT/adapt.json holds."""
    from captchalab.core.charset import parse_charset
    from captchalab.core.runconfig import read_run_config, resolve_run
    from captchalab.gen.folders import IMAGE_EXTS, import_folder, list_labelled

    base = resolve_run(plan.base)
    src = read_run_config(base)
    if src.get("data_kind", "image") != "image":
        raise UsageError(f"base {plan.base} reads audio; adapt is for image captchas",
                         param="base")
    chars = parse_charset(plan.charset).chars if plan.charset else src["charset"]["chars"]
    items = []
    if plan.labelled:
        items = hold_out(list_labelled(plan.labelled, "train", exts=IMAGE_EXTS), plan.seed)
        n = sum(s != "test" for _, _, s in items)
        if n < MIN_LABELS:
            raise UsageError(f"--labelled {plan.labelled}: {n} labelled captchas; adapt needs at "
                             f"least {MIN_LABELS} (a fifth is held out to score the stages)",
                             param="labelled")
        extra = "".join(sorted({c for _, lab, _ in items for c in lab} - set(chars)))
        if extra:
            raise UsageError(f"--labelled {plan.labelled}: the labels use {extra!r}, which "
                             f"charset {chars!r} does not hold; give --charset with them",
                             param="charset")
    length = plan.length or (labels_length(items) if items else "")
    pretraining = not skip_pretraining(plan.pretrain_budget)
    alone = not items and not pretraining  # the rounds train on the readings alone
    rounds = plan.rounds if plan.unlabelled else 0
    out = plan.out
    os.makedirs(out, exist_ok=True)
    record = {"command": plan.command, "base": base, "labelled": plan.labelled,
              "pretrain_budget": plan.pretrain_budget,
              "unlabelled": plan.unlabelled, "charset": chars, "length": length or "any",
              "min_confidence": plan.min_confidence, "pseudo_share": plan.pseudo_share, "stages": []}
    p = lambda *parts: os.path.join(out, *parts)  # noqa: E731
    t0 = time.perf_counter()

    def stage(name, args, run=None):
        t, args = time.perf_counter(), [str(a) for a in args]
        command = "captchalab " + " ".join(args)
        echo(f"$ {command}")
        cli(args)
        entry = {"stage": name, "command": command, "seconds": round(time.perf_counter() - t, 1)}
        if run and items:
            entry["held_out"] = score(run, labels_val, length)
            echo(f"{name}: {describe(entry['held_out'])}")
        record["stages"].append(entry)
        write_atomic(p("adapt.json"), json.dumps(record, indent=1) + "\n")
        return run

    labels_val = []
    if items:  # first: bad labels or images stop it before minutes of work
        t = time.perf_counter()
        m = import_folder(plan.labelled, p("labels"), charset=chars, split="train",
                          command=f"captchalab adapt --labelled {plan.labelled}", items=items)
        labels_val = [(path, lab) for path, lab, s in items if s == "val"]
        counts = {s: v["count"] for s, v in m["splits"].items()}
        echo(f"imported {plan.labelled} into {p('labels')}: "
             + ", ".join(f"{s} {n}" for s, n in counts.items()))
        record["stages"].append({"stage": "labels", "seconds": round(time.perf_counter() - t, 1),
                                 "counts": counts})
        record["stages"].append({"stage": "base", "seconds": 0.0,
                                 "held_out": score(base, labels_val, length)})
        echo(f"base {plan.base} as it is: {describe(record['stages'][-1]['held_out'])}")
    new_head = ["--new-head"] if set(chars) - set(src["charset"]["chars"]) else []
    if pretraining:
        site = plan.unlabelled or plan.labelled
        stage("fit-style", ["fit-style", site, "--out", p("style.toml"), "--match-fonts",
                            plan.match_fonts, *(["--fonts", plan.fonts] if plan.fonts else [])])
        stage("renderings", ["gen", "--out", p("renderings"), "--style-file", p("style.toml"),
                             "--charset", chars, "--length",
                             length or f"{src['length'][0]}-{src['length'][1]}", "--train",
                             plan.renderings, "--val", 500, "--seed", plan.seed, "-q"])
    size = _site_size(p("renderings") if pretraining else p("labels") if items
                      else plan.unlabelled)
    resize = size != (src["image"]["width"], src["image"]["height"])
    train = ["--lr", "1e-3", "--seed", plan.seed, "-q", *(["--resize"] if resize else [])]
    pretrain = base
    if pretraining:
        pretrain = stage("pretrain", ["train", "--data", p("renderings"), "--out",
                                      p("runs", "pretrain"), "--init-from", base, "--time-budget",
                                      plan.pretrain_budget, *new_head, *train],
                         p("runs", "pretrain"))
        new_head = []
    run = pretrain
    if items:
        run = stage("fine-tune", ["train", "--data", p("labels"), "--out", p("runs", "fine-tune"),
                                  "--init-from", pretrain, "--time-budget", plan.finetune_budget,
                                  *new_head, *train], p("runs", "fine-tune"))
        if new_head:  # the rounds start from runs that read the new charset
            pretrain, new_head = run, []
    data = p("labels") if items else p("renderings")
    for r in range(1, rounds + 1):
        pseudo = p(f"pseudo-{r}")
        ranks = ["--most-confident", curriculum_share(r), *(["--val-share", 0.1] if alone else [])]
        try:
            stage(f"pseudo-labels {r}", ["import", plan.unlabelled, "--out", pseudo,
                                         "--label-with", run, "--min-confidence", plan.min_confidence,
                                         *ranks, "--charset", chars,
                                         *(["--length", length] if length else [])])
        except UsageError as e:  # no reading confident enough: the rounds end here
            echo(f"self-training stopped before round {r}: {e}")
            record["stopped"] = f"before round {r}: {e}"
            break
        if alone and r == 1:
            doubt(_lowest_kept(pseudo), record, echo)
        init = pretrain if r == 1 else run
        mix = ["--data", pseudo] if alone else ["--data", data, "--mix-data",
                                                  f"{pseudo}:{plan.pseudo_share}"]
        run = stage(f"round {r}", ["train", *mix, "--out", p("runs", f"round-{r}"),
                                   "--init-from", init, "--time-budget", plan.finetune_budget,
                                   *train], p("runs", f"round-{r}"))
    shutil.rmtree(p("model"), ignore_errors=True)
    shutil.copytree(run, p("model"), ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    record["model"] = p("model")
    record["read_with"] = (f"captchalab predict --model {p('model')}"
                           + (f" --length {length}" if length else "")
                           + (" --resize" if resize else "") + " IMAGES")
    record["from_stage"] = record["stages"][-1]["stage"]
    record["seconds"] = round(time.perf_counter() - t0, 1)
    write_atomic(p("adapt.json"), json.dumps(record, indent=1) + "\n")
    return record


UNSURE = 0.5  # docs/adapt.md#without-labels: where round 1's cut fell below, nothing was gained


def doubt(lowest: float, record: dict, echo) -> None:
    """Without labels: say so when the base reads the site's captchas with little confidence.
    In the study the most confident 30 % reached down to 0.86-0.87 on the two generators the
    rounds lifted by 9-10 points, and to 0.12-0.27 on the two they did not move."""
    if lowest < UNSURE:
        note = (f"the base is unsure of these captchas (its most confident readings reach down "
                f"to {lowest:.2f}); self-training on its readings alone gained nothing on such "
                "captchas in the study (docs/adapt.md#without-labels): label some (--labelled)")
        echo(f"note: {note}")
        record["note"] = note


def _lowest_kept(data: str) -> float:
    from captchalab.gen import shards as sh

    return sh.read_manifest(data)["origin"]["labelled_by"]["lowest_kept_confidence"]


def skip_pretraining(budget: str) -> bool:
    """--pretrain-budget 0: no fitted style, no renderings, no pretraining."""
    return budget.strip().lower() in ("0", "0s", "0m", "0h")


def _site_size(path: str) -> tuple[int, int]:
    """The size of a dataset's images, or of the first image in a folder of them (an import
    refuses mixed sizes, so it is the pseudo-labels' size too)."""
    from captchalab.eval.predictor import expand_paths
    from captchalab.gen import shards as sh

    if os.path.isfile(os.path.join(path, sh.MANIFEST)):
        m = sh.read_manifest(path)
        return m["image"]["width"], m["image"]["height"]
    from PIL import Image

    with Image.open(expand_paths([path])[0]) as im:
        return im.size


def score(run: str, val: list[tuple[str, str]], length: str) -> dict:
    """Sequence and character accuracy of `run` on the held-out labelled captchas, read as
    `length` characters when given (as `predict --length` would)."""
    import tensorflow as tf

    from captchalab.eval.predictor import load
    from captchalab.eval.report import accuracy

    tf.get_logger().setLevel("ERROR")  # a model per stage: retracing is expected
    rec = load(run, length=length or None)
    preds = rec.predict([path for path, _ in val], resize=True)
    acc = accuracy([lab for _, lab in val], [q.text for q in preds])
    return {"samples": len(val), "seq_acc": round(acc["seq_acc"], 4),
            "seq_acc_ci95": [round(x, 4) for x in acc["seq_acc_ci95"]],
            "char_acc": round(acc["char_acc"], 4)}


def describe(held: dict) -> str:
    lo, hi = held["seq_acc_ci95"]
    return (f"{held['seq_acc']:.3f} [{lo:.3f}, {hi:.3f}] of {held['samples']} held-out labelled "
            f"captchas (characters {held['char_acc']:.3f})")
