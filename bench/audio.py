"""Audio captchas: time to accuracy from an empty folder, and inference speed (`make bench-audio`).

For each target it runs, timed together: `captchalab gen --kind audio` of the train/val data,
then `captchalab train --time-budget` (the target's budget minus the measured generation time
and a start-up allowance). The test split (same seed, so its labels are disjoint from train's)
is rendered separately and untimed: it is the yardstick, not part of the method. The best model
(by val) is scored on it with `captchalab eval`, and again with `--tta` (each clip read at 4
phases of the model's output step and 3 speeds; untimed, 12x the reading).

Targets (trained on the library's built-in voice only; test split: its default randomness):
  digits  6 digits (the library's own default captcha), budget 10 minutes
  alnum   0-9A-Z, length 4-6, budget 15 minutes
  voices  6 digits, trained on `--style voices` (another speaker per captcha), budget 20 minutes
and, not by default, engines never heard (`--targets no-espeak,no-cmu,no-piper`): 6 digits,
budget 10 minutes each, trained on the built-in voice plus the training pools of two of the
three TTS families that `make voices` writes, and scored on the held-out voices of the third
(`never_heard` in results.json).
digits, alnum and the no-* targets train in two stages, both inside the budget: first on
captchas with short gaps (`--gap 0.3-1`, the built-in voice only: half as long, and CTC
leaves its all-blank plateau in a third of the time; alnum on lengths 1-6, which leave it
within the first epoch), then `--init-from` that run on the library's defaults (with the pools'
voices for no-*) (docs/audio.md, "Two stages", "Shorter captchas first").
Then: inference speed of the first target's model, clips/s through
`captchalab.load(RUN).predict` on its 1 000 test clips (batches of 32 clips of about one
length); and every model on 1 000 six-digit captchas spoken by each voice under --voices
(default bench/out/voices, which `make voices` writes from TTS engines; never trained on).

Prints a table, writes bench/out/audio/results.json and a PNG of val sequence accuracy against
wall-clock time since the empty folder.
Usage: python bench/audio.py [--targets digits,alnum,voices,no-espeak,no-cmu,no-piper]
                             [--voices DIR]
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

from voices import FAMILIES, FAMILY  # bench/voices.py: the TTS families of `make voices`

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
TARGETS = {  # name: (charset, length, budget minutes, train samples, goal, training style,
    #                 warm-up: (gen options, train samples, share of the training time) or None,
    #                 train options)
    "digits": ("0-9", "6", 10, 10000, 0.995, "default", (["--gap", "0.3-1"], 20000, 0.6), []),
    "alnum": ("0-9A-Z", "4-6", 15, 10000, 0.98, "default",
              (["--length", "1-6", "--gap", "0.3-1"], 20000, 0.6), []),
    # another speaker per captcha (pitch, formants, tempo, timbre): for voices never heard; its
    # goal is on the held-out voices (0.90), its test split the library's defaults as for all
    "voices": ("0-9", "6", 20, 20000, None, "voices", None, []),
}
# Engines never heard: the built-in voice plus the training pools (`make voices`) of two TTS
# families, scored on the held-out voices of the third. Warm-up on the built-in voice alone.
POOLS = {}
for _left in FAMILIES:
    POOLS[f"no-{_left}"] = [f for f in FAMILIES if f != _left]
    TARGETS[f"no-{_left}"] = ("0-9", "6", 10, 12000, None, "default",
                              (["--gap", "0.3-1"], 10000, 0.4), [])
STAGE2_LR = 1e-3  # the second stage refines: at the first stage's 3e-3 its first epoch undoes
#                   part of what the first stage learnt (val 0.87 against 0.93 at 1e-3)


def cli(*args, capture=False):
    p = subprocess.run([sys.executable, "-m", "captchalab", *map(str, args)], check=True,
                       env=ENV, capture_output=capture, text=True)
    return p.stdout


def history(run, offset):
    """[(seconds since the empty folder, val sequence accuracy)] per epoch of a run."""
    with open(os.path.join(run, "history.csv")) as f:
        return [(offset + float(r["time"]), float(r["val_seq_acc"])) for r in csv.DictReader(f)]


def run_target(name, args):
    chars, length, budget, n_train, goal, style, warm, train_opts = TARGETS[name]
    n_train = args.train or n_train
    work = os.path.join(args.out, name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    data, test, run = (os.path.join(work, x) for x in ("data", "test", "run"))
    common = ["--kind", "audio", "--charset", chars, "-q"]
    # the yardstick, untimed
    cli("gen", "--out", test, *common, "--length", length, "--test", args.test)
    t0 = time.time()
    if warm:
        warm_opts, n_warm, share = warm
        warm_data, warm_run = os.path.join(work, "warm-data"), os.path.join(work, "warm-run")
        warm_opts = warm_opts if "--length" in warm_opts else ["--length", length, *warm_opts]
        n_warm = args.warm_train or args.train or n_warm
        cli("gen", "--out", warm_data, *common, *warm_opts, "--train", n_warm,
            "--val", args.val)
    voices = [x for f in POOLS.get(name, []) for x in ("--voices", pool_folder(args.voices, f))]
    cli("gen", "--out", data, *common, "--length", length, "--style", style, "--train", n_train,
        "--val", args.val, *(["--voices", "builtin", *voices] if voices else []))
    gen_s = time.time() - t0
    left = budget * 60 * args.scale - gen_s - args.startup * (2 if warm else 1)
    warm_hist = []
    if warm:
        t1 = time.time()
        cli("train", "--data", warm_data, "--out", warm_run, *train_opts,
            "--time-budget", f"{max(left * share, 1):.0f}s", "-q")
        warm_hist = history(warm_run, t1 - t0)
        t2 = time.time()
        left -= t2 - t1 - args.startup
        cli("train", "--data", data, "--out", run, "--init-from", warm_run, "--lr", STAGE2_LR,
            *train_opts, "--time-budget", f"{max(left, 1):.0f}s", "-q")
        hist = history(run, t2 - t0)
    else:
        cli("train", "--data", data, "--out", run, *train_opts,
            "--time-budget", f"{max(left, 1):.0f}s", "-q")
        hist = history(run, gen_s)
    total = time.time() - t0
    rep = json.loads(cli("eval", "--model", run, "--data", test, "--split", "test", "--json",
                         capture=True))
    s = rep["summary"]
    # read again with test-time augmentation (4 phases of the output step x 3 speeds), untimed
    tta = json.loads(cli("eval", "--model", run, "--data", test, "--split", "test", "--tta",
                         "--json", "--out", os.path.join(work, "eval-tta"), capture=True))
    return {"target": name, "charset": chars, "length": length, "budget_min": budget * args.scale,
            "train_samples": n_train, "train_options": train_opts, "warm_up": warm and {
                "gen": warm[0], "train_samples": n_warm, "share": warm[2]},
            "gen_s": round(gen_s, 1), "total_s": round(total, 1),
            "test_samples": s["samples"], "seq_acc": s["seq_acc"],
            "seq_acc_ci95": s.get("seq_acc_ci95"), "char_acc": s["char_acc"], "goal": goal,
            "tta": {k: tta["summary"].get(k) for k in ("seq_acc", "seq_acc_ci95", "char_acc")},
            "history": hist, "warm_history": warm_hist, "run": run, "test": test}


def inference_speed(run, test):
    """Clips per second through Recognizer.predict (batches of AUDIO_BATCH clips)."""
    import captchalab
    from captchalab.eval.predictor import AUDIO_BATCH as batch
    from captchalab.gen import shards as sh
    from captchalab.gen.audio import parse_wav

    m = sh.read_manifest(test)
    clips = [parse_wav(r["audio/wav"], "clip") for r in sh.iter_split(test, m, "test")]
    rec = captchalab.load(run)
    rec.predict(clips[:4 * batch])  # warm-up: tracing
    t = time.perf_counter()
    rec.predict(clips)  # batches of clips of about one length (predictor.by_length)
    dt = time.perf_counter() - t
    seconds = sum(len(c) for c in clips) / 8000
    return {"clips": len(clips), "batch": batch, "clips_per_s": len(clips) / dt,
            "audio_s_per_s": seconds / dt}


def pool_folder(voices, family):
    """The training pool of a TTS family that `make voices` writes next to the held-out voices."""
    path = os.path.join(voices, f"pool-{family}")
    if not os.path.isdir(path):
        sys.exit(f"error: no training pool {path}: write the pools with `make voices` (or "
                 f"python bench/voices.py --out {voices} --pools)")
    return path


def family(voice):
    """The TTS family of a held-out voice folder's name (espeak-m3 -> espeak), or None."""
    return FAMILY.get(voice.split("-")[0])


def voice_folders(path):
    """A voice folder, or a folder of them (as `make voices` writes; its training pools, pool-*,
    left out): [(name, folder)]."""
    from captchalab.gen.audio import find_voice

    subs = sorted(os.path.join(path, d) for d in os.listdir(path)
                  if len(d) > 1 and not d.startswith("pool-")
                  and os.path.isdir(os.path.join(path, d)))
    folders = subs or [path]
    for f in folders:
        find_voice(f)  # refuses a folder that is not a voice, naming it
    return [(os.path.basename(os.path.normpath(f)), f) for f in folders]


def held_out(runs, voices, args):
    """Each model on 1 000 captchas (6 digits, the library's default randomness) per voice:
    {voice: {model: result}}."""
    out = {}
    for name, folder in voice_folders(voices):
        test = os.path.join(args.out, "heldout", name)
        if not os.path.exists(os.path.join(test, "dataset_info.json")):
            cli("gen", "--out", test, "--kind", "audio", "--voices", folder, "--test", args.test,
                "--overwrite", "-q")
        out[name] = {}
        for model, run in runs.items():
            rep = json.loads(cli("eval", "--model", run, "--data", test, "--json", capture=True))
            s = rep["summary"]
            out[name][model] = {"samples": s["samples"], "seq_acc": s["seq_acc"],
                                "seq_acc_ci95": s.get("seq_acc_ci95"), "char_acc": s["char_acc"]}
    return out


def never_heard(held, runs):
    """Each leave-one-family-out model on the voices of the family it left out:
    {model: {family, voices, seq_acc (mean), min, max, char_acc (mean)}}."""
    out = {}
    for model in runs:
        if model not in POOLS:
            continue
        left = model.removeprefix("no-")
        rows = [r[model] for v, r in held.items() if family(v) == left]
        if rows:
            seq = [r["seq_acc"] for r in rows]
            out[model] = {"family": left, "voices": len(rows), "seq_acc": sum(seq) / len(seq),
                          "min": min(seq), "max": max(seq),
                          "char_acc": sum(r["char_acc"] for r in rows) / len(rows)}
    return out


def plot(results, path):
    from captchalab.core.plot import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        t, acc = zip(*r["history"], strict=True)
        line, = ax.plot([x / 60 for x in t], acc, marker="o", ms=3,
                        label=f"{r['target']} ({r['charset']}, length {r['length']})")
        if r.get("warm_history"):  # the first stage, scored on its own (short-gap) val split
            wt, wacc = zip(*r["warm_history"], strict=True)
            ax.plot([x / 60 for x in wt], wacc, marker="o", ms=3, mfc="none", ls="--", lw=1,
                    color=line.get_color())
        if r["goal"] is not None:
            ax.axhline(r["goal"], color=line.get_color(), ls=":", lw=1)
        ax.plot([r["total_s"] / 60], [r["seq_acc"]], marker="*", ms=12, color=line.get_color())
    ax.set_xlabel("minutes since the empty folder (gen + train)")
    ax.set_ylabel("sequence accuracy")
    ax.set_title("Audio captchas, 2 CPU cores: val per epoch (o; hollow, dashed: first stage on "
                 "short gaps), test at the end (*), goal (:)", fontsize=8)
    ax.set_ylim(0, 1.01)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_held_out(held, samples, path):
    """Sequence and character accuracy (95 % interval on sequences) per held-out voice (x) and
    model (bars)."""
    import numpy as np

    from captchalab.core.plot import pyplot

    plt = pyplot()
    voices = list(held)
    models = list(held[voices[0]])
    width = 0.8 / len(models)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.5, 0.8 * len(voices) + 2), 6), sharex=True)
    for i, m in enumerate(models):
        x = np.arange(len(voices)) + (i - (len(models) - 1) / 2) * width
        acc = [held[v][m]["seq_acc"] for v in voices]
        ci = [held[v][m]["seq_acc_ci95"] or (a, a) for v, a in zip(voices, acc, strict=True)]
        err = np.array([[a - lo for a, (lo, _) in zip(acc, ci, strict=True)],
                        [hi - a for a, (_, hi) in zip(acc, ci, strict=True)]])
        # a leave-one-family-out model's bars on the family it never heard are hatched
        hatch = ["//" if m in POOLS and family(v) == m.removeprefix("no-") else None
                 for v in voices]
        bars = axes[0].bar(x, acc, width, yerr=err, capsize=2, hatch=hatch, edgecolor="white")
        colour = bars.patches[0].get_facecolor()
        axes[0].bar([0], [0], 0, color=colour, label=f"the {m} model")  # an unhatched legend key
        axes[1].bar(x, [held[v][m]["char_acc"] for v in voices], width, hatch=hatch,
                    edgecolor="white", color=colour)
    axes[0].axhline(0.9, color="k", ls=":", lw=1, label="goal 0.90")
    axes[0].set_ylabel(f"sequence accuracy\n({samples} captchas)")
    axes[1].set_ylabel("character accuracy")
    axes[1].set_xticks(range(len(voices)), voices, rotation=25, ha="right", fontsize=8)
    for ax in axes:
        ax.set_ylim(0, 1.02)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[0].set_title("6 digits spoken by held-out TTS voices (library's default randomness)"
                      + ("; hatched: a family the model never heard"
                         if any(m in POOLS for m in models) else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--targets", default="digits,alnum,voices")
    ap.add_argument("--train", type=int, default=0, help="train samples (default: per target)")
    ap.add_argument("--warm-train", type=int, default=0,
                    help="train samples of the first stage (default: --train, else per target)")
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every budget (smoke runs)")
    ap.add_argument("--startup", type=float, default=10.0,
                    help="seconds kept back for start-up and exit of the train command")
    ap.add_argument("--voices", default="bench/out/voices",
                    help="voice folders never trained on (`make voices` writes them here), or "
                         "one voice folder: every model is scored on 6-digit captchas each "
                         "voice speaks")
    ap.add_argument("--out", default="bench/out/audio")
    ap.add_argument("--png", default="docs/img/audio-time-to-accuracy.png")
    ap.add_argument("--voices-png", default="docs/img/audio-held-out-voices.png")
    args = ap.parse_args()
    names = [t for t in args.targets.split(",") if t]
    unknown = [t for t in names if t not in TARGETS]
    if unknown:
        sys.exit(f"error: unknown target {unknown[0]!r} (allowed: {', '.join(TARGETS)})")
    os.makedirs(args.out, exist_ok=True)
    results = [run_target(t, args) for t in names]
    print(f"\n{'target':8} {'budget':>7} {'gen s':>6} {'total s':>8} {'seq acc':>8} "
          f"{'95% CI':>15} {'char acc':>8} {'goal':>6} {'tta':>7}")
    for r in results:
        lo, hi = r["seq_acc_ci95"] or (float("nan"),) * 2
        print(f"{r['target']:8} {r['budget_min']:>5.1f}m {r['gen_s']:>6.1f} {r['total_s']:>8.1f} "
              f"{r['seq_acc']:>8.4f} {f'{lo:.4f}-{hi:.4f}':>15} {r['char_acc']:>8.4f} "
              + (f"{r['goal']:>6.3f}" if r["goal"] is not None else f"{'-':>6}")
              + f" {r['tta']['seq_acc']:>7.4f}")
    out = {"results": results}
    first = results[0]
    out["inference"] = inference_speed(first["run"], first["test"])
    print(f"inference ({first['target']} model, batches of {out['inference']['batch']}): "
          f"{out['inference']['clips_per_s']:.0f} clips/s "
          f"({out['inference']['audio_s_per_s']:.0f} s of audio per s)")
    if args.voices and os.path.isdir(args.voices):
        runs = {r["target"]: r["run"] for r in results}
        out["held_out"] = held_out(runs, args.voices, args)
        print(f"\nheld-out voices ({args.test} captchas of 6 digits each), sequence accuracy:")
        print(f"{'voice':16} " + " ".join(f"{m:>8}" for m in runs))
        for voice, row in out["held_out"].items():
            print(f"{voice:16} " + " ".join(f"{row[m]['seq_acc']:>8.4f}" for m in runs))
        print(f"{'mean':16} " + " ".join(
            f"{sum(r[m]['seq_acc'] for r in out['held_out'].values()) / len(out['held_out']):>8.4f}"
            for m in runs))
        out["never_heard"] = never_heard(out["held_out"], runs)
        for model, r in out["never_heard"].items():
            print(f"{model}: {r['family']} voices never heard ({r['voices']}), sequence accuracy "
                  f"mean {r['seq_acc']:.4f} (min {r['min']:.4f}, max {r['max']:.4f}), "
                  f"character accuracy {r['char_acc']:.4f}")
    else:
        print(f"held-out voices: not measured ({args.voices} is not a folder; build it with "
              "`make voices`, or give --voices DIR)")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(out, f, indent=2)
    os.makedirs(os.path.dirname(args.png) or ".", exist_ok=True)
    plot(results, args.png)
    print(f"wrote {args.out}/results.json and {args.png}")
    if out.get("held_out"):
        plot_held_out(out["held_out"], args.test, args.voices_png)
        print(f"wrote {args.voices_png}")


if __name__ == "__main__":
    main()
