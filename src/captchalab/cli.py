"""The `captchalab` command: one thin command per verb; heavy libraries load inside commands."""

from __future__ import annotations

import functools
import os
import shlex
import sys

import click

from captchalab.core.charset import parse_charset
from captchalab.core.ctc import check_decoding
from captchalab.core.errors import DataError, RunFailed, UsageError
from captchalab.core.runconfig import resolve_run
from captchalab.gen.recipe import GenRequest as _GEN  # defaults
from captchalab.gen.recipe import parse_length
from captchalab.gen.style import KNOBS
from captchalab.train.config import TrainConfig as _TRAIN  # defaults (no TensorFlow import)
from captchalab.train.models import RESAMPLE

AUDIO_KNOB_HELP = {  # gen --kind audio (gen.audio.AUDIO_KNOBS; kept here so --help loads no numpy)
    "speed": "Speed factor of each character's recording (library 0.9-1.2).",
    "level": "Loudness factor of each character (library 0.8-1.2).",
    "gap": "Seconds of babble before each character (library 1-3).",
    "babble_speed": "Speed factor of each babble piece (library 0.8-1.6).",
    "babble_level": "Loudness of the babble (library 0.2-0.6; 0 = none).",
    "babble_gap": "Pause between babble pieces, s (library 0-0.1).",
    "floor": "White-noise floor, peak-to-peak in 8-bit steps (library 4).",
    "snr": "Added noise at this signal-to-noise ratio, dB (100 = none).",
    "pink": "Probability that the added noise is pink rather than white.",
    "bandpass": "Probability of a telephone band-pass (300-3400 Hz).",
    "reverb": "Reverberation time RT60 of a synthetic room, s (0 = dry).",
    "pitch": "Another speaker per captcha: pitch shift, semitones, formants kept (0 = as "
             "recorded).",
    "formant": "Another speaker: formant frequencies times this, pitch kept (1 = as recorded).",
    "tempo": "Another speaker: speaking-time factor, pitch kept (1 = as recorded).",
    "timbre": "Another speaker: random smooth equaliser, peak-to-peak dB (0 = none).",
    "brightness": "Another speaker: spectral slope, dB gained from 0 Hz to 4 kHz, babble too "
            "(positive: brighter; 0 = as recorded).",
}
IMAGE_ONLY = ("size", "fonts", "font_sizes", "smooth", "mix", *KNOBS)
RECIPE_OPTIONS = ("train", "val", "test", "charset", "length", "size", "fonts", "font_sizes",
                  "style", "style_file", "smooth", "seed", "shard_size", "mix", *KNOBS, "kind",
                  "voices", *AUDIO_KNOB_HELP)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="captchalab")
def cli():
    """Synthetic captcha datasets, CTC recognizers and robustness studies.

    Start with `captchalab gen --out data --train 10000 --val 1000 --test 1000`.
    """


def main(argv=None) -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback."""
    try:
        rv = cli.main(args=argv, prog_name="captchalab", standalone_mode=False)
    except UsageError as e:
        click.echo(f"error: {e.for_cli()}", err=True)
        sys.exit(2)
    except (RunFailed, DataError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help())
        sys.exit(2)
    except click.UsageError as e:
        ctx = f"{e.ctx.command_path}: " if e.ctx else ""
        click.echo(f"error: {ctx}{e.format_message()} (see --help)", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except OSError as e:  # the machine, not the data: a full disk, a read-only folder, …
        where = f" ({e.filename})" if e.filename else ""
        click.echo(f"error: {e.strerror or e}{where}; nothing already finished was removed, and "
                   "gen and train continue with --resume", err=True)
        sys.exit(1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


def parse_view_list(param: str, text: str) -> tuple[float, ...]:
    """--scales W1,W2,… or --blurs S1,S2,…: the views eval, predict and robust read at."""
    from captchalab.eval.predictor import VIEW_RULES, check_views

    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{param}: {text!r} is not a list of numbers; give {VIEW_RULES[param][2]}",
                         param=param) from None
    return check_views(param, values)


def _view_options(f, once=False):
    """--scales and --blurs, for eval, predict and robust (the model's own views by default);
    once: for import --label-with (one view by default: the calibrated confidence)."""
    def default(one, shipped):
        if once:
            return f"  [default: {one}, once: the confidence is calibrated on one view]"
        return (f"  [default: the model's own; the shipped model and runs started from it: "
                f"{shipped}; other runs: {one}]")

    f = click.option("--blurs", callback=lambda c, p, v: v and parse_view_list("blurs", v),
                     metavar="S1,S2,…",
                     help="Read every image (at every width) also blurred with these Gaussian "
                     "sigmas, px, and keep the most confident reading." + default("0", "0,1"))(f)
    return click.option("--scales", callback=lambda c, p, v: v and parse_view_list("scales", v),
                        metavar="W1,W2,…",
                        help="Read every image also squeezed to these shares of its width and "
                        "keep the most confident reading (one pass per width)."
                        + default("1", "1,0.85,0.7"))(f)


_length_option = click.option(  # eval and predict; checked before anything loads
    "--length", "read_length", metavar="N|MIN-MAX",
    callback=lambda ctx, param, value: value and parse_length(value),
    help="Only readings of this many characters, for captchas known to have them: the most "
    "probable reading of that length (CTC models).  [default: any]")
_read_charset_option = click.option(  # eval and predict; checked before anything loads
    "--charset", "read_charset", metavar="SPEC",
    callback=lambda ctx, param, value: value and parse_charset(value) and value,
    help="Only these characters, for captchas known to use no others (e.g. 0-9, digits, "
    "abcde2345678; a subset of the model's): readings never use the rest.  [default: all the "
    "model's]")


def _command_line() -> str:
    return "captchalab " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _knob_options(f):
    for name, text in reversed(list(AUDIO_KNOB_HELP.items())):
        f = click.option(f"--{name.replace('_', '-')}", name, metavar="V|LO-HI",
                         help=f"Audio: {text}")(f)
    for name, knob in reversed(list(KNOBS.items())):
        f = click.option(f"--{name.replace('_', '-')}", name, metavar="V|LO-HI",
                         help=f"{knob.help}.")(f)
    return f


@cli.command()
@click.option("--out", "out", required=True, type=click.Path(), help="Dataset folder to write, or a URL fsspec opens (gs://…, s3://…).")
@click.option("--train", type=int, help="Samples in the train split.")
@click.option("--val", type=int, help="Samples in the val split.")
@click.option("--test", type=int, help="Samples in the test split.")
@click.option("--kind", type=click.Choice(["image", "audio"]), default="image", show_default=True,
              help="Image captchas (ImageCaptcha) or audio captchas (AudioCaptcha, 8 kHz WAV).")
@click.option("--charset", default=_GEN.charset, show_default=True,
              help="Characters: ranges and literals ('0-9A-Z', 'ABCDEF23') or digits/lower/upper/alnum/hex.  [audio: 0-9]")
@click.option("--length", default=_GEN.length, show_default=True, help="Label length: N or MIN-MAX.  [audio: 6]")
@click.option("--voices", multiple=True, type=click.Path(),
              help="Audio: a voice folder (one sub-folder of WAV files per character), or "
                   "builtin (the library's 0-9, A-Z); repeatable.  [default: builtin]")
@click.option("--size", default=_GEN.size, show_default=True, help="Image WIDTHxHEIGHT, px.")
@click.option("--style", "style", default="default", show_default=True,
              help="Preset: default (the library's own), easy, hard, fonts, varied, universal; "
                   "audio: default, hard, voices.")
@click.option("--style-file", type=click.Path(), help="TOML or JSON of style keys (and `preset`).")
@click.option("--fonts", help="Comma list: builtin, dejavu, dejavu-sans, dejavu-serif, "
              "dejavu-mono, stix, pool, held-out, a family (captchalab fonts), font files, "
              "folders, globs; SPEC:SHARE gives a spec that share of the samples "
              "(builtin:0.5,pool).  [preset: builtin]")
@click.option("--mix", metavar="PRESET:SHARE[,…]",
              help="Draw this share of the samples from another preset (its own fonts and "
              "knobs), e.g. universal:0.5; several: default:0.3,fonts:0.3.")
@click.option("--font-sizes", help="Comma list of sizes in px the library picks from per "
              "character.  [preset: 42,50,56]")
@click.option("--smooth/--no-smooth", default=None, help="The library's final SMOOTH filter.")
@_knob_options
@click.option("--seed", default=0, show_default=True, type=int, help="Dataset seed.")
@click.option("--shard-size", default=_GEN.shard_size, show_default=True, type=int,
              help="Records per shard.")
@click.option("--workers", type=int,
              help="Render processes (with --engine ray and no --address: CPUs of the local "
                   "Ray instance).  [default: all cores]")
@click.option("--engine", default="local", show_default=True,
              help="local: a process pool on this machine; ray: Ray tasks (pip install "
                   "'captchalab[ray]'), same output.")
@click.option("--address", help="With --engine ray: the cluster to join (e.g. ray://head:10001 "
                                "or auto); without it a local Ray instance is started.")
@click.option("--resume", is_flag=True, help="Finish an interrupted run in --out.")
@click.option("--overwrite", is_flag=True, help="Replace the dataset in --out.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def gen(ctx, out, train, val, test, kind, charset, length, voices, size, style, style_file, fonts,
        mix, font_sizes, smooth, seed, shard_size, workers, engine, address, resume, overwrite,
        quiet, **knobs):
    """Render labelled captchas into sharded TFRecords plus dataset_info.json.

    Every sample is a pure function of (seed, split, index): the same command gives
    byte-identical records whatever --workers and --shard-size are. Knobs take a fixed
    value (30) or a range drawn per sample (10-40).
    """
    from captchalab.gen.generate import generate
    from captchalab.gen.recipe import GenRequest, build_recipe
    from captchalab.gen.shards import read_manifest
    from captchalab.gen.style import resolve_style, style_file_size, style_label

    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other; give one")
    given = [p for p in RECIPE_OPTIONS
             if ctx.get_parameter_source(p) == click.core.ParameterSource.COMMANDLINE]
    if resume and given and train is val is test is None:
        flags = ", ".join("--" + g.replace("_", "-") for g in given)
        raise UsageError(f"--resume continues the interrupted run with its stored settings; "
                         f"give --resume with only --out (drop {flags}), or repeat the whole "
                         "original command")
    if resume and not given:
        recipe = _stored_recipe(read_manifest(out) if _has_manifest(out) else None, out)
    elif kind == "audio":
        recipe = _audio_recipe(ctx, given, train, val, test, charset, length, voices, style,
                               style_file, seed, shard_size, knobs)
    else:
        if voices or any(knobs.get(k) is not None for k in AUDIO_KNOB_HELP):
            flag = "--voices" if voices else "--" + next(
                k for k in AUDIO_KNOB_HELP if knobs.get(k) is not None).replace("_", "-")
            raise UsageError(f"{flag} applies to audio captchas; add --kind audio")
        knobs = {k: v for k, v in knobs.items() if k not in AUDIO_KNOB_HELP}
        overrides = {k: v for k, v in knobs.items() if v is not None}
        if fonts is not None:
            overrides["fonts"] = fonts
        if font_sizes is not None:
            overrides["font_sizes"] = font_sizes
        if smooth is not None:
            overrides["smooth"] = smooth
        if mix is not None:
            overrides["mix"] = mix
        resolved = resolve_style(style, style_file, overrides)
        if ctx.get_parameter_source("size") != click.core.ParameterSource.COMMANDLINE:
            size = style_file_size(style_file) or size
        req = GenRequest(charset=charset, length=length, size=size, style=resolved,
                         style_name=style_label(style, style_file),
                         counts={"train": train, "val": val, "test": test},
                         seed=seed, shard_size=shard_size)
        recipe = build_recipe(req)
    m, st = generate(recipe, out, workers=workers, resume=resume, overwrite=overwrite,
                     command=_command_line(), progress=not quiet, engine=engine, address=address)
    rate = st.rendered / st.seconds if st.seconds > 0 else 0.0
    counts = ", ".join(f"{s} {v['count']}" for s, v in m["splits"].items())
    reused = f"; {st.reused_shards} shards kept from before" if st.reused_shards else ""
    unit = "captchas" if m.get("kind") == "audio" else "img"
    click.echo(f"wrote {out}: {counts} ({st.rendered} rendered in {st.seconds:.1f} s, "
               f"{rate:.0f} {unit}/s{reused})")


def _audio_recipe(ctx, given, train, val, test, charset, length, voices, style, style_file,
                  seed, shard_size, knobs):
    from captchalab.gen.audio import resolve_audio_style
    from captchalab.gen.recipe import GenRequest, build_audio_recipe
    from captchalab.gen.style import style_label

    wrong = [g for g in given if g in IMAGE_ONLY]
    if wrong:
        raise UsageError(f"--{wrong[0].replace('_', '-')} applies to image captchas, not "
                         "--kind audio (audio options: --voices, --style default|hard|voices, "
                         f"--{', --'.join(k.replace('_', '-') for k in AUDIO_KNOB_HELP)})")
    overrides = {k: knobs[k] for k in AUDIO_KNOB_HELP if knobs.get(k) is not None}
    resolved = resolve_audio_style(style, style_file, overrides)
    if "charset" not in given:
        charset = "0-9"
    if "length" not in given:
        length = "6"
    req = GenRequest(charset=charset, length=length, style_name=style_label(style, style_file),
                     counts={"train": train, "val": val, "test": test}, seed=seed,
                     shard_size=shard_size)
    return build_audio_recipe(req, resolved, list(voices))


def _has_manifest(out):
    from captchalab.core import storage
    return storage.exists(storage.join(out, "dataset_info.json"))


def _stored_recipe(manifest, out):
    from captchalab.gen.recipe import Recipe
    if manifest is None:
        raise UsageError(f"--resume: {out} holds no interrupted dataset (no dataset_info.json)")
    if manifest.get("source") != "generated":
        raise UsageError(f"--resume: {out} was imported, not generated; nothing to resume")
    return Recipe.from_json(manifest)


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("-q", "--quiet", is_flag=True, help="Only print problems.")
def verify(data_dir, quiet):
    """Read every record and check counts and sha256 against the manifest (exit 1 on a problem)."""
    from captchalab.gen.verify import verify_dataset

    problems = verify_dataset(data_dir, echo=None if quiet else click.echo)
    for p in problems:
        click.echo(f"problem: {p}", err=True)
    if problems:
        click.echo(f"{data_dir}: {len(problems)} problem(s)", err=True)
        return 1
    click.echo(f"{data_dir}: ok")
    return 0


@cli.command()
@click.argument("data_dir", type=click.Path())
@click.option("--out", "out", type=click.Path(), help="PNG to write.  [default: DATA_DIR/preview.png]")
@click.option("-n", "--count", default=24, show_default=True, type=click.IntRange(1, 400),
              help="Samples on the sheet.")
@click.option("--split", default=None, help="Split to show.  [default: the first one]")
@click.option("--sample", "sample", metavar="SPLIT:INDEX",
              help="Re-render this sample from the seed and compare it with the stored record.")
def show(data_dir, out, count, split, sample):
    """Write a contact sheet of samples with their labels, or check one sample re-renders."""
    from captchalab.gen.preview import contact_sheet, rerender_check

    if sample:
        ok, path, msg = rerender_check(data_dir, sample, out)
        click.echo(f"{msg}; side by side in {path}")
        return 0 if ok else 1
    path = contact_sheet(data_dir, out, count, split)
    click.echo(f"wrote {path}")
    return 0


@cli.command()
def fonts():
    """List the font sets and families `--fonts` takes (held-out families are test-only)."""
    import os

    from captchalab.gen import fonts as f

    for name, files in f.NAMED_SETS.items():
        click.echo(f"set     {name:20s} {len(files()):4d} files")
    for slug in f.families():
        files = ", ".join(os.path.basename(p) for p in f.family_files(slug))
        mark = "held-out" if slug in f.HELD_OUT else "family "
        click.echo(f"{mark} {slug:20s} {files}")
    return 0


@cli.command("export")
@click.argument("data_dir", required=False, type=click.Path())
@click.option("--png", "--wav", "png_dir", type=click.Path(),
              help="Dataset export: folder for SPLIT/INDEX_LABEL.png (audio: .wav) files and "
                   "labels.csv.")
@click.option("--split", "splits", multiple=True, help="Splits to export.  [default: all]")
@click.option("--model", "run_dir", type=click.Path(),
              help="Model export: run folder written by `captchalab train`, or `pretrained`.")
@click.option("--format", "fmt", default="savedmodel", show_default=True,
              help="Model format: savedmodel, tflite or onnx (onnx needs captchalab[onnx]).")
@click.option("--out", "out", type=click.Path(),
              help="Model export folder.  [default: MODEL/export/FORMAT]")
@click.option("--overwrite", is_flag=True, help="Replace a model export already in --out.")
def export_(data_dir, png_dir, splits, run_dir, fmt, out, overwrite):
    """Write a dataset out as PNG files (DATA_DIR --png DIR), or a trained model for serving
    (--model RUN --format savedmodel|tflite|onnx)."""
    if run_dir:
        if data_dir or png_dir or splits:
            raise UsageError("export either a dataset (DATA_DIR --png DIR) or a model "
                             "(--model RUN --format F), not both")
        from captchalab.eval.export import export_model

        path = export_model(resolve_run(run_dir), fmt, out, overwrite)
        click.echo(f"wrote {path} (+ captchalab.json: charset and decoding)")
        return
    if not data_dir or not png_dir:
        raise UsageError("export needs DATA_DIR --png DIR (a dataset) or --model RUN (a model)")
    from captchalab.gen.folders import export_png

    n = export_png(data_dir, png_dir, splits or None)
    what = "WAV files" if _kind_of(data_dir) == "audio" else "images"
    click.echo(f"wrote {n} {what} and labels.csv to {png_dir}")


def _kind_of(data_dir):
    from captchalab.gen.shards import read_manifest
    return read_manifest(data_dir).get("kind", "image")


@cli.command()
@click.option("--labelled", type=click.Path(),
              help="Folder of the site's labelled captchas (labels.csv, LABEL.png or "
              "NAME_LABEL.png); a fifth (at least 10) is held out to score every stage, unless "
              "the folder has a val split.")
@click.option("--unlabelled", type=click.Path(),
              help="Folder of more of the site's captchas, no labels needed: self-training "
              "reads them (and with --pretrain-budget, the style is fitted on them).")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Work folder (new or empty): the style, renderings, every stage's run, "
              "adapt.json, and the result in OUT/model.")
@click.option("--base", default="pretrained", show_default=True, type=click.Path(),
              help="Run to start from (`pretrained`: the model shipped with captchalab).")
@click.option("--charset", help="Characters the model reads; the labels must be among them.  "
              "[default: the base run's]")
@click.option("--length", metavar="N|MIN-MAX",
              callback=lambda ctx, param, value: value and (parse_length(value), value)[1],
              help="Characters per captcha of the site.  [default: the labels' lengths; "
              "without labels, any]")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(0),
              help="Self-training rounds on --unlabelled.")
@click.option("--renderings", default=20000, show_default=True, type=click.IntRange(10),
              help="Captchas rendered in the fitted style to pretrain on.")
@click.option("--pretrain-budget", default="0", show_default=True,
              help="Time pretraining on renderings of a fitted style first (0: no fitted "
              "style, no renderings, no pretraining; measured no better: docs/adapt.md).")
@click.option("--finetune-budget", default="60s", show_default=True,
              help="Time of fine-tuning and of each self-training round.")
@click.option("--min-confidence", default=0.0, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="A floor under the rounds' shares: round R keeps the most confident 0.3, "
              "0.5, 0.7, then 0.9 of --unlabelled, of the readings at least this confident.")
@click.option("--pseudo-share", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Share of every self-training batch drawn from the pseudo-labels.")
@click.option("--match-fonts", default=8, show_default=True, type=click.IntRange(0),
              help="As in fit-style: font families of the pool matched to the captchas.")
@click.option("--fonts", help="As in fit-style: the site's font files or folder, if known.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--overwrite", is_flag=True, help="Replace what --out holds.")
def adapt(labelled, unlabelled, out, base, charset, length, rounds, renderings, pretrain_budget,
          finetune_budget, min_confidence, pseudo_share, match_fonts, fonts, seed, overwrite):
    """Adapt a model to a site's captchas in one command: fine-tune on the labelled captchas,
    self-train on the unlabelled ones (without labels: on its most confident readings alone;
    with --pretrain-budget, first pretrain on renderings of a style fitted to them)."""
    import shutil

    from captchalab.eval.adapt import (
        AdaptPlan,
        check_inputs,
        describe,
        run_adapt,
        skip_pretraining,
    )
    from captchalab.train.config import parse_duration

    for name, value in (("pretrain-budget", pretrain_budget),
                        ("finetune-budget", finetune_budget)):
        if name == "pretrain-budget" and skip_pretraining(value):
            continue
        try:
            parse_duration(value)
        except UsageError:
            raise UsageError(f"--{name}: {value!r} is not a duration (300, 90s, 5m, 1.5h)",
                             param=name.replace("-", "_")) from None
    plan = AdaptPlan(out=out, labelled=labelled or "", unlabelled=unlabelled or "", base=base,
                     charset=charset or "", length=length or "", rounds=rounds,
                     renderings=renderings, pretrain_budget=pretrain_budget,
                     finetune_budget=finetune_budget, min_confidence=min_confidence,
                     pseudo_share=pseudo_share, match_fonts=match_fonts, fonts=fonts or "",
                     seed=seed, command=_command_line())
    check_inputs(plan, overwrite)
    if overwrite and os.path.isdir(out):
        shutil.rmtree(out)

    def step(args):
        rv = cli.main(args=args, prog_name="captchalab", standalone_mode=False)
        if isinstance(rv, int) and rv:
            raise RunFailed(f"captchalab {' '.join(args)} exited with {rv}")

    record = run_adapt(plan, step, echo=click.echo)
    last = record["stages"][-1]
    held = f": {describe(last['held_out'])}" if "held_out" in last else ""
    click.echo(f"model: {record['model']} (from {record['from_stage']}{held}); "
               f"{record['seconds'] / 60:.1f} minutes all told; stages in {out}/adapt.json")
    click.echo(f"read with: {record['read_with']}")


@cli.command("fit-style")
@click.argument("folder", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(),
              help="Style file to write (TOML; use it with gen --style-file).")
@click.option("--fonts", help="Font file or folder the captchas use, if known (then no font is "
              "matched); a folder with look-alikes beside them pretrains better than one font.")
@click.option("--match-fonts", "match", default=8, show_default=True, type=click.IntRange(0),
              help="Keep the N font families whose renderings look most like the folder "
              "(0: draw from all of builtin, dejavu, stix and the pool).")
@click.option("--sheet", type=click.Path(),
              help="Contact sheet, real beside rendered.  [default: OUT with .png]")
@click.option("--samples", default=200, show_default=True, type=click.IntRange(20),
              help="Renderings compared with the folder.")
@click.option("--overwrite", is_flag=True, help="Replace --out and the sheet.")
def fit_style_(folder, out, fonts, match, sheet, samples, overwrite):
    """Write a style file whose renderings resemble a folder of captchas (labelled or not)."""
    from captchalab.core.storage import write_atomic
    from captchalab.gen.fitstyle import UNFITTED, contact_sheet, fit_style, to_toml

    sheet = sheet or os.path.splitext(out)[0] + ".png"
    for path in (out, sheet):
        if os.path.exists(path) and not overwrite:
            raise UsageError(f"{path} exists; give --overwrite to replace it", param="out")
    features = None
    if match and not fonts:
        import captchalab
        features = captchalab.load().features
    fit = fit_style(folder, fonts=fonts, samples=samples, match=match, features=features)
    matched = ("fonts matched (feature distance): "
               + ", ".join(f"{f} {d:.2f}" for f, d in fit.fonts)) if fit.fonts else ""
    header = (f"fitted by `captchalab fit-style` from {fit.count} images in {folder}\n"
              f"distance real vs rendered: {fit.distance['mean']:.3f} (library default style: "
              f"{fit.baseline['mean']:.3f}); standardised mean difference of image statistics\n"
              + (matched + "\n" if matched else "")
              + f"not fitted: {'; '.join(UNFITTED)}")
    write_atomic(out, to_toml(fit.keys, header))
    contact_sheet(fit, sheet)
    worst = sorted((k for k in fit.distance if k != "mean"), key=lambda k: -fit.distance[k])[:3]
    click.echo(f"wrote {out} and {sheet}: {fit.count} images, {fit.keys['size']}")
    click.echo(f"distance real vs rendered {fit.distance['mean']:.3f} (library default style "
               f"{fit.baseline['mean']:.3f}); largest: "
               + ", ".join(f"{k} {fit.distance[k]:.2f}" for k in worst))
    if matched:
        click.echo(matched)
    click.echo(f"not fitted: {'; '.join(UNFITTED)}")


@cli.command("import")
@click.argument("folder", type=click.Path())
@click.option("--out", "out", required=True, type=click.Path(), help="Dataset folder to write.")
@click.option("--charset", help="Charset of the labels (with --label-with: the model reads "
              "these characters only).  [default: the characters they use; with --label-with, "
              "the model's]")
@click.option("--size", help="Resize every image to WIDTHxHEIGHT.  [default: all must match]")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="Split for images when labels.csv has no split column.  [default: test; "
              "train with --label-with]")
@click.option("--shard-size", default=_GEN.shard_size, show_default=True, type=int,
              help="Records per shard.")
@click.option("--label-with", "label_with", type=click.Path(), metavar="RUN",
              help="Label the folder's captchas with this model's readings (pseudo-labels for "
              "self-training; any labels of the folder are ignored); `pretrained`: the shipped "
              "model.")
@click.option("--min-confidence", default=0.5, show_default=True,
              type=click.FloatRange(0, 1, max_open=True),
              help="With --label-with: keep readings at least this confident.")
@click.option("--most-confident", default=1.0, show_default=True,
              type=click.FloatRange(0, 1, min_open=True), metavar="SHARE",
              help="With --label-with: keep at most this share of the folder, the most "
              "confident readings first (ranks need no calibration that fits the site).")
@click.option("--length", metavar="N|MIN-MAX",
              help="With --label-with: the site's captchas have this many characters; read "
              "each as the most probable reading of that length.")
@click.option("--val-share", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              metavar="SHARE", help="Hold out this share of the captchas (at random, seed 0) as "
              "the val split that `train` needs; the rest train.")
@functools.partial(_view_options, once=True)
@click.option("--overwrite", is_flag=True, help="Replace the dataset in --out.")
@click.pass_context
def import_(ctx, folder, out, charset, size, split, shard_size, label_with, min_confidence,
            most_confident, length, val_share, scales, blurs, overwrite):
    """Turn a folder of labelled images (labels.csv, LABEL.png or NAME_LABEL.png), or of labelled
    WAV files (mono, 8 kHz, 8 or 16 bit), into shards; or a folder of unlabelled ones, labelled
    by a model (--label-with)."""
    from click.core import ParameterSource

    from captchalab.gen.folders import import_folder

    items = origin = None
    if val_share and (split or "train") != "train":
        raise UsageError(f"--val-share holds out part of the train split; with --split {split} "
                         "there is none (give --split train)", param="val_share")
    if label_with:
        from captchalab.eval.pseudolabel import pseudo_labels
        from captchalab.gen.generate import prepare_out_dir

        run = resolve_run(label_with)
        keep = parse_length(length) if length else None
        prepare_out_dir(out, resume=False, overwrite=overwrite, resumable=False)  # before reading
        items, origin = pseudo_labels(folder, run, min_confidence, split=split or "train",
                                      length=keep, warn=lambda m: click.echo(m, err=True),
                                      scales=scales, blurs=blurs, charset=charset,
                                      most_confident=most_confident)
        charset = charset or origin["labelled_by"]["charset"]
    else:
        for key in ("min_confidence", "most_confident", "length", "scales", "blurs"):
            if ctx.get_parameter_source(key) == ParameterSource.COMMANDLINE:
                raise UsageError(f"--{key.replace('_', '-')} applies to --label-with RUN")
    m = import_folder(folder, out, charset=charset, size=size,
                      split=split or ("train" if val_share else "test"), shard_size=shard_size,
                      overwrite=overwrite, command=_command_line(), items=items, origin=origin,
                      val_share=val_share or 0.0)
    counts = ", ".join(f"{s} {v['count']}" for s, v in m["splits"].items())
    kept = (f" ({origin['labelled_by']['kept']} of {origin['labelled_by']['read']} read with "
            f"confidence >= {min_confidence}"
            + (f", at most the most confident {most_confident:g}" if most_confident < 1 else "")
            + ")" if origin else "")
    click.echo(f"wrote {out}: {counts}{kept}; charset {m['charset']['chars']!r}")


@cli.command()
@click.option("--data", type=click.Path(),
              help="Dataset folder (train and val splits; with --on-the-fly, val and the recipe).")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Run folder to write (new or empty), or to continue with --resume.")
@click.option("--resume", is_flag=True,
              help="Continue --out from its last checkpoint with its stored settings.")
@click.option("--arch", default=_TRAIN.arch, show_default=True,
              help="Model: crnn-conv, crnn, small, large, heads; audio: audio-conv, audio-crnn, "
                   "audio-fine, audio-cmn; auto: crnn-conv for images, audio-conv for audio.")
@click.option("--epochs", default=_TRAIN.epochs, show_default=True, type=click.IntRange(1),
              help="Passes over train (on the fly: of --epoch-samples).")
@click.option("--steps", default=_TRAIN.steps, show_default=True, type=click.IntRange(0),
              help="Optimizer steps in all (overrides --epochs when > 0).")
@click.option("--time-budget", help="Train for this long (300, 90s, 5m, 1.5h) instead of "
              "--epochs; the cosine schedule then runs over time.")
@click.option("--batch-size", default=_TRAIN.batch_size, type=click.IntRange(0),
              help="Samples per step.  [default: 64 images, 32 audio clips]")
@click.option("--lr", default=_TRAIN.lr, show_default=True, type=float, help="Peak learning rate (Adam).")
@click.option("--schedule", default=_TRAIN.schedule, show_default=True,
              type=click.Choice(["cosine", "constant"]), help="Learning-rate schedule.")
@click.option("--downscale", default=_TRAIN.downscale, show_default=True, type=click.IntRange(1),
              help="Train at 1/N of the dataset's resolution.")
@click.option("--resample", default=_TRAIN.resample, show_default=True,
              type=click.Choice(RESAMPLE),
              help="How the model reduces the resolution: fold (stack each NxN block as N*N "
              "channels) or box (average each NxN block).")
@click.option("--standardize/--no-standardize", default=None,
              help="Scale each image to mean 0, standard deviation 1 in the model's first "
              "layer.  [default: on for styles with a scene, e.g. universal]")
@click.option("--seed", default=_TRAIN.seed, show_default=True, type=int)
@click.option("--patience", default=_TRAIN.patience, show_default=True, type=click.IntRange(0),
              help="Early stopping on val sequence accuracy after N epochs without gain (0 = off).")
@click.option("--augment", is_flag=True, help="Random shifts, zoom and contrast on train batches; "
              "audio: masks of a few mel bands per clip.")
@click.option("--jitter", default=_TRAIN.jitter, show_default=True, type=int,
              help="Shift train images by up to N px at random (before the downscale; 0 = off).")
@click.option("--dropout", default=_TRAIN.dropout, show_default=True, type=float,
              help="CTC archs: dropout rate on the features entering the RNN.")
@click.option("--cache", is_flag=True, help="Decode the train split into memory once, before training.")
@click.option("--mix-data", metavar="DIR:SHARE",
              help="Draw this share of every train batch from another dataset's train split "
              "(same image size, the model's characters), e.g. pseudo-labels from `import "
              "--label-with`: site-pseudo:0.5; val stays --data's.")
@click.option("--mixed-precision", is_flag=True,
              help="float16 (GPU) / bfloat16 (CPU) compute, float32 logits.")
@click.option("--jit", is_flag=True, help="XLA-compile the train step.")
@click.option("--cpu-devices", default=_TRAIN.cpu_devices, show_default=True, type=click.IntRange(1),
              help="Split the CPU into N logical devices (MirroredStrategy over them; for tests).")
@click.option("--on-the-fly", is_flag=True,
              help="Train on freshly rendered samples; none is ever repeated.")
@click.option("--style", help="With --on-the-fly and no --data: preset to render.  [default: default]")
@click.option("--style-file", type=click.Path(),
              help="With --on-the-fly and no --data: TOML or JSON of style keys, as in gen.")
@click.option("--mix", metavar="PRESET:SHARE[,…]",
              help="With --on-the-fly and no --data: draw this share of the samples from another "
              "preset, e.g. universal:0.5 (several: default:0.3,fonts:0.3).")
@click.option("--curriculum", type=click.IntRange(0), metavar="SAMPLES",
              help="With --on-the-fly and no --data: start from the default preset (or --mix's) "
              "and reach the style after this many samples (0 = off).  [default: 100000 for "
              "styles with a scene, else 0]")
@click.option("--epoch-samples", default=_TRAIN.epoch_samples, show_default=True, type=click.IntRange(1),
              help="With --on-the-fly: samples per epoch.")
@click.option("--val-samples", default=_TRAIN.val_samples, show_default=True, type=click.IntRange(1),
              help="With --on-the-fly and no --data: val samples rendered once.")
@click.option("--gen-workers", default=_TRAIN.gen_workers, show_default=True, type=click.IntRange(0),
              help="With --on-the-fly: render processes (0 = all cores).")
@click.option("--init-from", "init_from", type=click.Path(),
              help="Start from this run's weights (fine-tuning; `pretrained`: the shipped "
              "model); its --arch, --downscale and "
              "--resample are used unless given. The data's charset must be the run's or a "
              "subset (or give --new-head), its image size the run's (or give --resize).")
@click.option("--new-head", is_flag=True,
              help="With --init-from: a new output layer for the data's own charset.")
@click.option("--resize", is_flag=True,
              help="With --init-from: resize images of another size to the run's.")
@click.option("--freeze", default=_TRAIN.freeze, show_default=True, type=int,
              help="With --init-from: keep the first N conv blocks as they are.")
@click.option("-q", "--quiet", is_flag=True, help="No per-step progress.")
@click.pass_context
def train(ctx, data, out, resume, quiet, **opts):
    """Train a recognizer on a dataset or a live stream; val accuracy is measured every epoch."""
    from click.core import ParameterSource

    from captchalab.train.config import TrainConfig, parse_duration
    from captchalab.train.rundir import resume_config
    from captchalab.train.train import train as run_training

    if resume:
        given = [f"--{k.replace('_', '-')}" for k in opts
                 if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE]
        if given:
            raise UsageError(f"--resume continues {out} with its stored settings; "
                             f"{', '.join(given)} cannot change them (start a new run)")
        cfg = resume_config(out, data)
    else:
        opts["style"] = opts["style"] or ""
        opts["style_file"] = opts["style_file"] or ""
        opts["mix"] = opts["mix"] or ""
        opts["mix_data"] = opts["mix_data"] or ""
        opts["init_from"] = resolve_run(opts["init_from"]) if opts["init_from"] else ""
        if opts["init_from"]:  # the source run's architecture unless given
            from captchalab.core.runconfig import read_run_config
            from captchalab.train.train import ARCH_SETTINGS, LEGACY_SETTINGS

            src = read_run_config(opts["init_from"])
            for key in ARCH_SETTINGS:
                if ctx.get_parameter_source(key) != ParameterSource.COMMANDLINE:
                    opts[key] = (src["arch"] if key == "arch" else
                                 src["train"].get(key, LEGACY_SETTINGS.get(key, opts[key])))
        budget = opts.pop("time_budget")
        cfg = TrainConfig(data=data or "", out=out, **opts,
                          time_budget=parse_duration(budget) if budget else 0.0)
    verbose = 0 if quiet else (1 if sys.stdout.isatty() else 2)
    best = run_training(cfg, command=_command_line(), verbose=verbose, resume=resume)
    click.echo(f"best epoch {best['epoch']}: val sequence accuracy {best['val_seq_acc']:.4f}, "
               f"character accuracy {best['val_char_acc']:.4f}, CER {best['val_cer']:.4f}; "
               f"model in {out}/model.keras")
    from captchalab.train.train import cluster_role

    role = cluster_role()
    if cfg.data and (role is None or role["chief"]):  # a second or two, after the budget
        from captchalab.eval.evaluate import calibrate_run

        info = calibrate_run(cfg.out, cfg.data, resize=cfg.resize)
        click.echo(f"confidence calibrated on {info['samples']} val samples: temperature "
                   f"{info['temperature']:.3f}, calibration error {info['ece_before']:.4f} -> "
                   f"{info['ece_after']:.4f} ({cfg.out}/calibration.json)")


@cli.command("eval")
@click.option("--model", "run_dir", required=True, type=click.Path(),
              help="Run folder written by `captchalab train`, or `pretrained` (the model shipped "
              "with captchalab).")
@click.option("--data", type=click.Path(), help="Dataset folder (scores --split).")
@click.option("--images", type=click.Path(),
              help="Folder of labelled images instead (labels.csv, LABEL.png or NAME_LABEL.png).")
@click.option("--split", default="test", show_default=True, help="Split of --data to score.")
@click.option("--beam-width", default=0, show_default=True, type=click.IntRange(0),
              help="CTC beam search width (0 or 1 = greedy).")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: read each image at every phase of the model's "
              "downscale grid (4 views at 1/2), each clip at 4 phases of its output step and 3 "
              "speeds (12 views), and combine them; that many times slower.")
@_view_options
@_length_option
@_read_charset_option
@click.option("--out", "out", type=click.Path(),
              help="Report folder.  [default: MODEL/eval/DATA-SPLIT or MODEL/eval/IMAGES]")
@click.option("--resize", is_flag=True, help="Scale images of another size to the model's.")
@click.option("--skip-bad", is_flag=True,
              help="With --images: skip unreadable files with a warning instead of stopping.")
@click.option("--json", "as_json", is_flag=True, help="Print report.json instead of the summary.")
def eval_(run_dir, data, images, split, beam_width, tta, scales, blurs, read_length,
          read_charset, out, resize, skip_bad, as_json):
    """Score a model: accuracy with 95% CIs, CER, per position and length, confusions, errors."""
    import json

    from captchalab.eval.evaluate import evaluate
    from captchalab.eval.report import summary_text

    if images is None and skip_bad:
        raise UsageError("--skip-bad applies to --images only")
    check_decoding(beam_width, read_length)
    report, files = evaluate(resolve_run(run_dir), data=data, images=images, split=split,
                             beam_width=beam_width, tta=tta, scales=scales, blurs=blurs,
                             length=read_length, charset=read_charset, out=out,
                             resize=resize, skip_bad=skip_bad)
    if as_json:
        click.echo(json.dumps(report, indent=1, ensure_ascii=False))
        return
    click.echo(summary_text(report))
    click.echo(f"report: {files['markdown']} (+ report.json, confusion.png, errors.png)")


@cli.command()
@click.option("--model", "run_dir", type=click.Path(),
              help="Run folder written by `captchalab train`.  [default: pretrained, the model "
              "shipped with captchalab]")
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--min-confidence", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Answer only readings at least this confident; others print REJECTED "
                   "(JSON: text null, rejected true). With a calibrated run, the chance that an "
                   "answer is right.")
@click.option("--beam-width", default=0, show_default=True, type=click.IntRange(0),
              help="CTC beam search width (0 or 1 = greedy).")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: read each image at every phase of the model's "
              "downscale grid (4 views at 1/2), each clip at 4 phases of its output step and 3 "
              "speeds (12 views), and combine them; that many times slower.")
@_view_options
@_length_option
@_read_charset_option
@click.option("--resize", is_flag=True, help="Scale images of another size to the model's.")
@click.option("--skip-bad", is_flag=True,
              help="Skip unreadable files with a warning instead of stopping.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
def predict(run_dir, images, beam_width, tta, scales, blurs, read_length, read_charset, resize,
            skip_bad, as_json, min_confidence):
    """Read captchas: prints FILE, text and confidence per image (folders are read whole)."""
    import json
    import tempfile

    from captchalab.eval.predictor import expand_paths, load, read_config
    from captchalab.gen.folders import AUDIO_EXTS

    if "-" in images and len(images) > 1:
        raise UsageError("predict -: reads one image from stdin; give '-' alone")
    check_decoding(beam_width, read_length)
    run = resolve_run(run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if images == ("-",):  # the bytes go through the same file checks as any image
            paths = [os.path.join(tmp, "stdin")]
            with open(paths[0], "wb") as f:
                f.write(sys.stdin.buffer.read())
        else:
            audio = read_config(run).get("data_kind") == "audio"
            paths = expand_paths(images, AUDIO_EXTS if audio else None)
        rec = load(run, scales, blurs, read_length, read_charset)
        preds, kept = rec.predict_files(paths, beam_width=beam_width, resize=resize,
                                        skip_bad=skip_bad, tta=tta,
                                        warn=lambda m: click.echo(m, err=True))
    if images == ("-",):
        kept = ["-"]
    for path, p in zip(kept, preds, strict=True):
        rejected = p.confidence < min_confidence  # ask for another captcha instead
        if as_json:
            click.echo(json.dumps({"file": path, "text": None if rejected else p.text,
                                   "confidence": round(p.confidence, 6),
                                   **({"rejected": True} if rejected else {})},
                                  ensure_ascii=False))
        else:
            click.echo(f"{path}\t{'REJECTED' if rejected else p.text}\t{p.confidence:.4f}")


@cli.command()
@click.option("--model", "runs", multiple=True, required=True, type=click.Path(),
              help="Run folder written by `captchalab train`, or `pretrained` (repeat to compare "
              "models).")
@click.option("--sweep", "sweeps", multiple=True, metavar="NAME=V1,V2,…",
              help="Vary one thing: a style knob (rotate, noise-dots, …) or fonts, length, "
                   "charset, size; for audio models an audio knob (snr, speed, gap, bandpass, "
                   "reverb, …), voices (voice folders or builtin), length, charset. Repeatable.")
@click.option("--corruptions",
              help="all, none, or a comma list (gaussian-noise, jpeg, elastic, …); image "
                   "models only.  [default: all for image models, none for audio]")
@click.option("--severities", default="1-5", show_default=True, help="Corruption severities, 1-5.")
@click.option("--samples", default=500, show_default=True, type=int, help="Test samples per set.")
@click.option("--baseline", type=click.Path(), help="Run that mCE is relative to.")
@click.option("--base", "base_data", type=click.Path(),
              help="Dataset whose style the sets start from.  [default: the first model's]")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Study folder: robust.json, robust.md, PNGs, and the rendered sets (reused).")
@click.option("--workers", type=click.IntRange(1), help="Render processes.  [default: all cores]")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: every model reads each image at every phase of its "
              "downscale grid (4 views at 1/2), each clip at 4 phases of its output step and 3 "
              "speeds (12 views); that many times slower.")
@_view_options
@click.option("-q", "--quiet", is_flag=True, help="No per-set lines.")
def robust(runs, sweeps, corruptions, severities, samples, baseline, base_data, out, workers,
           tta, scales, blurs, quiet):
    """Accuracy as knobs, fonts, lengths, charset, size and corruptions change (audio models:
    audio knobs, voices, length, charset); several models."""
    from captchalab.eval.corruptions import parse_corruptions, parse_severities
    from captchalab.eval.robust import parse_sweep, study

    parsed = [parse_sweep(s) for s in sweeps]
    names = None if corruptions is None else parse_corruptions(corruptions)
    sevs = parse_severities(severities)
    r = study([resolve_run(r) for r in runs], sweeps=parsed, corruptions=names, severities=sevs, samples=samples,
              out=out, baseline=baseline and resolve_run(baseline), base_data=base_data, workers=workers, tta=tta,
              scales=scales, blurs=blurs, echo=(lambda m: None) if quiet else (lambda m: click.echo(m, err=True)))
    for name, s in r["summary"].items():
        line = f"{name}: clean sequence accuracy {s['clean_seq_acc']:.4f}"
        if "mean_corruption_seq_acc" in s:
            line += f", mean under corruption {s['mean_corruption_seq_acc']:.4f}"
        if s.get("mCE") is not None:
            line += f", mCE {s['mCE']:.3f}"
        click.echo(line)
    click.echo(f"report: {os.path.join(out, 'robust.md')} (+ robust.json and plots)")


if __name__ == "__main__":
    main()
