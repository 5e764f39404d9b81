"""Label-efficiency study: from a folder of someone's captchas to a model that reads them.

For each foreign generator (standing in for "a site's captchas"; the `transfer` extra) and each
number N of labelled captchas of it, full-sequence accuracy on 1 000 of its captchas (the
transfer bench's set) for four arms:

  scratch     `train` on the N labels alone, from random weights
  pretrained  the shipped model as is (N = 0), then `train --init-from pretrained` on the N
  fitted      `fit-style` on 100 unlabelled captchas of the generator, `gen` 20 000 samples of
              the fitted style, `train --init-from pretrained` on them (N = 0), then fine-tuned
              on the N (labels are what is scarce; unlabelled captchas are free to collect)
  self-trained  the fitted arm's fine-tuned run labels 2 000 unlabelled captchas of the generator
              (`import --label-with RUN --min-confidence 0.5`), and the fitted pretraining is
              fine-tuned again on the N with those pseudo-labels as half of every batch
              (`--mix-data`); --rounds times, each round's run labelling for the next. At N = 0
              the fitted run itself labels them (at --zero-min-confidence: its confidence was
              calibrated on renderings, not on the site's captchas), and the rounds train on
              the fitted renderings with the pseudo-labels as half of every batch. Rounds
              after the first start from the round before's run (--self-init fitted: each
              from the fitted pretraining, as until 2026-12-05)
  adapt       `captchalab adapt` with its defaults (the command as a user runs it, end to end):
              the N labels (their val fifth as its held-out split) and the 2 000 unlabelled
              captchas; no pretraining, three self-training rounds from the base on the most
              confident 30 / 50 / 70 % of the readings (at N = 0 on those alone). The
              fine-tuning budget and length are the bench's options

Of the N labels, a fifth (at least 10) is the run's val split and the rest its train split, as a
user would hold out some. Each cell: sequence accuracy with its 95 % Wilson interval and the
seconds of compute that arm took all told (the fitted arm includes fitting, generating and
pretraining); a self-trained cell also lists, per round, the pseudo-labels kept, the share of
them that is right and that round's accuracy. Printed, and written as OUT/adapt.json (after
each generator; generators it holds with the same settings are kept when the bench is run again)
and OUT/adapt.png, plus OUT/curves.png: each trained arm's val accuracy against minutes of
training at the largest N.

    python bench/adapt.py                      # ~4 hours on 2 cores (every N, both)
    python bench/adapt.py --labels 0,100 --generator wheezy-captcha
    python bench/adapt.py --arms pretrained --labels 20000 --finetune-budget 15m   # labels to spare

`--arms` picks some of the arms (self-trained needs fitted): with labels to spare, what the
compute budget buys when labels are not what is scarce.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from transfer import EXTRA, FOREIGN, foreign_set, load_set, score  # noqa: E402

ARMS = ("scratch", "pretrained", "fitted", "self-trained", "adapt")


def cli(*args):
    """Run `captchalab ARGS` (quietly); returns the seconds it took."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "captchalab", *map(str, args)],
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"captchalab {' '.join(map(str, args))} failed:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t


def labelled_folder(pool: str, n: int, work: str) -> str:
    """The first n captchas of `pool` in a folder: a fifth (>= 10) in val/, the rest in train/."""
    names = sorted(f for f in os.listdir(pool) if f.endswith(".png"))[:n]
    n_val = max(10, n // 5)
    folder = os.path.join(work, f"labels-{n}")
    shutil.rmtree(folder, ignore_errors=True)
    for i, name in enumerate(names):
        split = "val" if i < n_val else "train"
        os.makedirs(os.path.join(folder, split), exist_ok=True)
        shutil.copyfile(os.path.join(pool, name), os.path.join(folder, split, name))
    return folder


def labelled_data(pool: str, n: int, work: str) -> tuple[str, float]:
    """The first n captchas of `pool` as a dataset: a fifth (>= 10) val, the rest train."""
    folder = labelled_folder(pool, n, work)
    data = folder + "-data"
    shutil.rmtree(data, ignore_errors=True)
    return data, cli("import", folder, "--out", data, "--charset", "0-9a-z")


def train(data, out, budget, init=None, lr=None, mix=None):
    shutil.rmtree(out, ignore_errors=True)
    args = ["train", "--data", data, "--out", out, "--time-budget", budget, "-q"]
    if init:
        args += ["--init-from", init, "--lr", lr or "1e-3"]
    if mix:
        args += ["--mix-data", mix]
    return cli(*args)


def self_train(a, data, start, fitted, unl, truths, work, min_confidence, test):
    """Rounds of pseudo-labelling `unl` with the last run and fine-tuning `fitted` on `data`
    with them mixed in. Returns (last run, seconds, [per round: {kept, precision, seq_acc}]),
    seq_acc: that round's run on `test` (scored outside the timed compute)."""
    from captchalab.gen import shards as sh

    run, t, rounds = start, 0.0, []
    for r in range(1, a.rounds + 1):
        pseudo = os.path.join(work, f"pseudo-{r}")
        t += cli("import", unl, "--out", pseudo, "--label-with", run, "--min-confidence",
                 min_confidence, "--length", a.pseudo_length, "--overwrite")
        m = sh.read_manifest(pseudo)
        got = {os.path.basename(x["source/file"]): x["label/text"]
               for x in sh.iter_split(pseudo, m, "train")}
        precision = sum(truths[f] == v for f, v in got.items()) / max(1, len(got))
        init = fitted if a.self_init == "fitted" or r == 1 else run
        run = os.path.join(work, f"round-{r}")
        t += train(data, run, a.finetune_budget, init=init, mix=f"{pseudo}:{a.pseudo_share}")
        acc = accuracy(run, test)
        rounds.append({"kept": len(got), "precision": round(precision, 3),
                       "seq_acc": round(acc["seq_acc"], 3),
                       **({"seq_acc_length_4": round(acc["length_4"]["seq_acc"], 3)}
                          if "length_4" in acc else {})})
    return run, t, rounds


KNOWN = {"known_length": False}  # --known-length: also read the test set as 4 characters


def accuracy(run, test) -> dict:
    """`score` of `run` on `test`; with --known-length, also reading each captcha as one of 4
    characters (`eval --length 4`), under "length_4"."""
    import captchalab

    labels, images, _ = test
    preds = [p.text for p in captchalab.load(run).predict(list(images))]
    out = score(labels, preds)
    if KNOWN["known_length"]:
        preds = [p.text for p in captchalab.load(run, length=4).predict(list(images))]
        out["length_4"] = {k: v for k, v in score(labels, preds).items() if k != "n"}
    return out


def study(name, a, test, work) -> dict:
    """{arm: {N: cell}} for generator `name`."""
    pool = os.path.join(work, "pool")
    if not os.path.isdir(pool) or len(os.listdir(pool)) != max(a.labels + [a.unlabelled]):
        shutil.rmtree(pool, ignore_errors=True)
        foreign_set(name, max(a.labels + [a.unlabelled]), pool, tag="adapt")
    out = {arm: {} for arm in a.arms}
    if "pretrained" in a.arms:
        out["pretrained"][0] = {**accuracy(a.base, test), "seconds": 0.0}
    starts = {"scratch": (None, a.scratch_budget), "pretrained": (a.base, a.finetune_budget)}
    if "fitted" in a.arms:
        fitted, fitted_cost, fdata = fitted_arm(name, a, test, work, pool, out)
        starts["fitted"] = (fitted, a.finetune_budget)
    if "self-trained" in a.arms or "adapt" in a.arms:
        unl, truths = unlabelled(name, a, work)
    if "adapt" in a.arms:
        for n in a.labels:
            labelled = ["--labelled", labelled_folder(pool, n, work)] if n else []
            run = os.path.join(work, f"adapt-{n}")
            t = cli("adapt", *labelled, "--unlabelled", unl, "--out", run, "--base", a.base,
                    "--finetune-budget", a.finetune_budget, "--length", a.pseudo_length,
                    "--overwrite")
            out["adapt"][n] = {**accuracy(os.path.join(run, "model"), test),
                               "seconds": round(t, 1)}
            print(f"{name} N={n}: adapt {out['adapt'][n]['seq_acc']:.3f} ({t:.0f} s)", flush=True)
    if "self-trained" in a.arms:
        if 0 in a.labels:
            run, t, rounds = self_train(a, fdata, fitted, fitted, unl, truths,
                                        os.path.join(work, "self-0"), a.zero_min_confidence,
                                        test)
            out["self-trained"][0] = {**accuracy(run, test),
                                      "seconds": round(fitted_cost + t, 1), "rounds": rounds}
            print(f"{name} N=0: self-trained {out['self-trained'][0]['seq_acc']:.3f} "
                  f"(per round: {rounds})", flush=True)
    starts = {arm: start for arm, start in starts.items() if arm in a.arms}
    if not starts and "self-trained" not in a.arms:
        return out
    for n in [n for n in a.labels if n > 0]:
        data, t_import = labelled_data(pool, n, work)
        for arm, (init, budget) in starts.items():
            run = os.path.join(work, f"{arm}-{n}")
            t = t_import + train(data, run, budget, init=init)
            t += fitted_cost if arm == "fitted" else 0.0
            out[arm][n] = {**accuracy(run, test), "seconds": round(t, 1)}
        if "self-trained" in a.arms:
            run, t, rounds = self_train(a, data, os.path.join(work, f"fitted-{n}"), fitted, unl,
                                        truths, os.path.join(work, f"self-{n}"),
                                        a.min_confidence, test)
            out["self-trained"][n] = {**accuracy(run, test),
                                      "seconds": round(out["fitted"][n]["seconds"] + t, 1),
                                      "rounds": rounds}
        print(f"{name} N={n}: " + ", ".join(f"{arm} {out[arm][n]['seq_acc']:.3f}"
                                            for arm in a.arms if n in out[arm] and arm != "adapt"),
              flush=True)
    return out


def fitted_arm(name, a, test, work, pool, out):
    """fit-style on the unlabelled captchas and pretraining on renderings of it (N = 0).
    Returns (fitted run, its seconds, the renderings)."""
    unl = os.path.join(work, "unlabelled")
    shutil.rmtree(unl, ignore_errors=True)
    os.makedirs(unl)
    for f in sorted(os.listdir(pool))[:a.unlabelled]:
        shutil.copyfile(os.path.join(pool, f), os.path.join(unl, f"{f.split('_')[0]}.png"))
    style = os.path.join(work, "fitted.toml")
    t = cli("fit-style", unl, "--out", style, "--overwrite", "--match-fonts", a.match_fonts)
    fdata = os.path.join(work, "fitted-data")
    t += cli("gen", "--out", fdata, "--style-file", style, "--train", a.fitted_samples,
             "--val", 500, "--overwrite", "-q")
    fitted = os.path.join(work, "fitted-run")
    t += train(fdata, fitted, a.pretrain_budget, init=a.base)
    out["fitted"][0] = {**accuracy(fitted, test), "seconds": round(t, 1)}
    print(f"{name} N=0: fitted {out['fitted'][0]['seq_acc']:.3f} ({t:.0f} s)", flush=True)
    return fitted, t, fdata


def unlabelled(name, a, work):
    """The captchas self-training labels: (a folder of INDEX.png, {INDEX.png: truth}). The
    bench knows their labels (to report the pseudo-labels' precision); the runs do not."""
    pool = os.path.join(work, f"unlabelled-{a.unlabelled_pool}")
    if not os.path.isdir(pool) or len(os.listdir(pool)) != a.unlabelled_pool:
        shutil.rmtree(pool, ignore_errors=True)
        foreign_set(name, a.unlabelled_pool, pool, tag="unlabelled")
    truths, files = {}, os.path.join(work, "unlabelled-files")
    shutil.rmtree(files, ignore_errors=True)
    os.makedirs(files)
    for f in sorted(os.listdir(pool)):
        index, label = f[:-4].split("_")
        shutil.copyfile(os.path.join(pool, f), os.path.join(files, f"{index}.png"))
        truths[f"{index}.png"] = label
    return files, truths


def plot(results, samples, path):
    from captchalab.core.plot import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(max(7.0, 5.5 * len(results)), 4.2),
                             squeeze=False)
    for ax, (name, arms) in zip(axes[0], results.items(), strict=True):
        for arm, cells in arms.items():
            if not cells:  # self-trained with --rounds 0
                continue
            ns = sorted(cells, key=int)
            x = [max(int(n), 10) for n in ns]  # N = 0 drawn at 10 on the log axis
            acc = [cells[n]["seq_acc"] for n in ns]
            lo = [a - cells[n]["seq_acc_ci95"][0] for a, n in zip(acc, ns, strict=True)]
            hi = [cells[n]["seq_acc_ci95"][1] - a for a, n in zip(acc, ns, strict=True)]
            line = ax.errorbar(x, acc, yerr=[lo, hi], marker="o", capsize=2, label=arm)
            if all("length_4" in cells[n] for n in ns):  # --known-length: dashed, same colour
                ax.plot(x, [cells[n]["length_4"]["seq_acc"] for n in ns], ls="--", marker="o",
                        mfc="none", color=line[0].get_color(), label=f"{arm}, read as 4")
        ax.set_xscale("log")
        ticks = sorted({max(int(n), 10) for c in arms.values() for n in c})
        ax.set_xticks(ticks, ["0" if t == 10 else str(t) for t in ticks])
        ax.set_ylim(0, 1)
        ax.set_xlabel("labelled captchas N (0 drawn at the left)")
        ax.set_ylabel("full-sequence accuracy")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"Accuracy against labels ({samples} test captchas each, 95 % intervals)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", action="append", choices=sorted(FOREIGN),
                    help="foreign generator (repeat)  [default: wheezy-captcha, claptcha]")
    ap.add_argument("--labels", default="0,50,100,250,500,1000,2000",
                    help="numbers N of labelled captchas")
    ap.add_argument("--arms", default=",".join(ARMS),
                    help="arms to run (self-trained needs fitted), e.g. pretrained with "
                         "--labels 20000 for what the budget buys with labels to spare")
    ap.add_argument("--base", default="pretrained", help="run the pretrained arms start from")
    ap.add_argument("--samples", type=int, default=1000, help="test captchas per generator")
    ap.add_argument("--unlabelled", type=int, default=100, help="captchas fit-style sees")
    ap.add_argument("--fitted-samples", type=int, default=20000)
    ap.add_argument("--match-fonts", type=int, default=8,
                    help="fit-style's font families kept (0: the whole pool)")
    ap.add_argument("--pretrain-budget", default="4m")
    ap.add_argument("--finetune-budget", default="60s")
    ap.add_argument("--scratch-budget", default="90s")
    ap.add_argument("--unlabelled-pool", type=int, default=2000,
                    help="unlabelled captchas the self-trained arm labels")
    ap.add_argument("--rounds", type=int, default=9,
                    help="self-training rounds (0: no arm); nine fit the 20-minute budget at "
                         "N = 100 (~78 s each on 2 cores)")
    ap.add_argument("--self-init", choices=("fitted", "last"), default="last",
                    help="self-training: each round starts from the fitted pretraining, or "
                         "from the round before's run")
    ap.add_argument("--min-confidence", type=float, default=0.5,
                    help="self-training: readings kept as pseudo-labels")
    ap.add_argument("--zero-min-confidence", type=float, default=0.9,
                    help="self-training at N = 0: readings of the fitted run kept")
    ap.add_argument("--pseudo-length", default="4",
                    help="self-training: the captchas' length, each read as a reading of it "
                         "(import --length; the generators' labels have 4)")
    ap.add_argument("--known-length", action="store_true",
                    help="also score every run reading the test captchas as 4 characters "
                         "(eval --length 4), outside the timed compute")
    ap.add_argument("--pseudo-share", type=float, default=0.5,
                    help="self-training: share of each batch from the pseudo-labels")
    ap.add_argument("--out", default="bench/out/adapt")
    ap.add_argument("--sets", default="bench/out/transfer/sets",
                    help="where the test sets are (shared with bench/transfer.py)")
    a = ap.parse_args()
    a.labels = sorted({int(n) for n in a.labels.split(",")})
    asked = set(a.arms.split(","))
    if asked - set(ARMS) or ("self-trained" in asked and "fitted" not in asked):
        sys.exit(f"error: --arms {a.arms}: pick from {','.join(ARMS)}; self-trained needs fitted")
    a.arms = [arm for arm in ARMS if arm in asked and not (arm == "self-trained" and not a.rounds)]
    KNOWN["known_length"] = a.known_length
    try:
        for mod in ("claptcha", "wheezy.captcha", "multicolorcaptcha"):
            __import__(mod)
    except ImportError as e:
        sys.exit(f"error: {e.name} is missing; the adapt bench needs its extra: {EXTRA}")
    from captchalab.core.runconfig import resolve_run

    a.base = resolve_run(a.base)
    a.generator = a.generator or ["wheezy-captcha", "claptcha"]
    done = earlier(a)
    results = {}
    for name in a.generator:
        if name in done:
            print(f"{name}: kept from {a.out}/adapt.json (same settings)", flush=True)
            results[name] = done[name]
            continue
        test_dir = os.path.join(a.sets, f"{name}-{a.samples}")
        if not os.path.isdir(test_dir) or len(os.listdir(test_dir)) != a.samples:
            foreign_set(name, a.samples, test_dir)
        results[name] = study(name, a, load_set(test_dir), os.path.join(a.out, name))
        write_json(a, {**done, **results})
    print(f"\nfull-sequence accuracy (95 % interval) [seconds], {a.samples} test captchas")
    for name, arms in results.items():
        print(name)
        for arm, cells in arms.items():
            print(f"  {arm:11s}" + "".join(
                f"  N={n}: {c['seq_acc']:.3f} ({c['seq_acc_ci95'][0]:.3f}-"
                f"{c['seq_acc_ci95'][1]:.3f}) [{c['seconds']:.0f}]"
                + (f" len4 {c['length_4']['seq_acc']:.3f}" if "length_4" in c else "")
                for n, c in cells.items()))
    write_json(a, {**done, **results})  # generators studied before and not asked now stay
    plot(results, a.samples, os.path.join(a.out, "adapt.png"))
    curves(a, results, os.path.join(a.out, "curves.png"))
    print(f"wrote {a.out}/adapt.json, adapt.png and curves.png")


def write_json(a, results):
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "adapt.json"), "w") as f:
        json.dump({"settings": vars(a), "results": results}, f, indent=2)


def earlier(a) -> dict:
    """Generators already studied in OUT/adapt.json with the same settings: a study that was
    stopped, or is asked for more generators, goes on from there."""
    path = os.path.join(a.out, "adapt.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        old = json.load(f)
    def rest(settings):
        return {k: v for k, v in settings.items() if k != "generator"}
    return old["results"] if rest(old["settings"]) == rest(vars(a)) else {}


def curves(a, results, path):
    """Val sequence accuracy against minutes of training, per generator, for each trained arm
    at the largest N (its labels' val fifth): how the budget was spent."""
    from captchalab.core.plot import pyplot

    n = max(a.labels)
    runs = {name: {arm: h for arm in ("scratch", "pretrained", "fitted")
                   if os.path.exists(h := os.path.join(a.out, name, f"{arm}-{n}", "history.csv"))}
            for name in results}
    if not any(runs.values()):
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, arms in runs.items():
        for arm, h in arms.items():
            with open(h) as f:
                rows = list(csv.DictReader(f))
            ax.plot([float(r["time"]) / 60 for r in rows],
                    [float(r["val_seq_acc"]) for r in rows], marker="o", ms=3,
                    label=f"{name}, {arm}")
    ax.set_ylim(0, 1)
    ax.set_xlim(left=0)
    ax.set_xlabel("minutes of training")
    ax.set_ylabel(f"val full-sequence accuracy ({max(10, n // 5)} captchas)")
    ax.set_title(f"Trained on N = {n} labelled captchas of each generator")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
