"""A training run's config.json: its format version, and how runs written by older versions are
read (one migration step per version, instead of fallbacks where values are used)."""

from __future__ import annotations

import json
import os

from captchalab.core.errors import DataError, UsageError

# 1: runs written before "config_version" existed (up to commit 0ce7b0d); 2: the same keys plus
# "config_version" (train settings every run records)
CONFIG_VERSION = 2
INPUT_VERSION = 2  # the model takes uint8 RGB at the dataset's size (config "input")

# train settings added after the first runs, with the values those runs were trained with
_V1_TRAIN = {"jitter": 0, "resample": "box"}


PRETRAINED = "pretrained"  # the name that stands for the model shipped with captchalab
# where it lives (src/captchalab/pretrained/model/, written by `make pretrained`)
PRETRAINED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              "pretrained", "model")


def resolve_run(run_dir: str | os.PathLike | None) -> str:
    """The run folder a `--model` names: None or "pretrained" stand for the shipped model
    (unless a folder named "pretrained" is there)."""
    if run_dir is not None and (str(run_dir) != PRETRAINED or os.path.exists(PRETRAINED)):
        return str(run_dir)
    if not os.path.isfile(os.path.join(PRETRAINED_DIR, "model.keras")):
        raise UsageError(f"the pretrained model is not in this installation ({PRETRAINED_DIR}); "
                         "rebuild it with `make pretrained`, or give a run folder", param="model")
    return PRETRAINED_DIR


def run_name(run_dir: str) -> str:
    """A run's short name in reports: its folder's name, "pretrained" for the shipped model."""
    if os.path.abspath(run_dir) == PRETRAINED_DIR:
        return PRETRAINED
    return os.path.basename(os.path.normpath(run_dir))


def output_home(run_dir: str) -> str:
    """Where reports about `run_dir` go by default: the run folder, or ./captchalab-pretrained
    for the shipped model (its folder belongs to the installation)."""
    same = os.path.abspath(run_dir) == PRETRAINED_DIR
    return "captchalab-pretrained" if same else run_dir


def migrate(config: dict, run_dir: str) -> dict:
    """`config` as this version reads it; refuses runs it cannot read (naming `run_dir`)."""
    version = config.get("config_version", 1)
    if not isinstance(version, int) or version > CONFIG_VERSION:
        raise UsageError(f"model {run_dir} was written by a newer captchalab (run format "
                         f"{version!r}, this one reads up to {CONFIG_VERSION}); upgrade captchalab",
                         param="model")
    if config.get("input", {}).get("version") != INPUT_VERSION:
        raise UsageError(f"model {run_dir} was trained by an older captchalab whose models "
                         "take pre-scaled grey images; retrain it with this version", param="model")
    if version == 1:
        config = {**config, "config_version": 2,
                  "train": {**_V1_TRAIN, **config.get("train", {})}}
    return config


def read_run_config(run_dir: str) -> dict:
    """config.json of the run in `run_dir`, migrated to the current version."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise UsageError(f"{run_dir} is not a captchalab run (no config.json)")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is unreadable or not JSON ({e}); retrain, or restore the "
                        "file") from None
    if not isinstance(config, dict):
        raise DataError(f"{path} is not a captchalab run config (a JSON {type(config).__name__})")
    config = migrate(config, run_dir)
    required = AUDIO_REQUIRED if config.get("data_kind") == "audio" else REQUIRED
    for key, kind in required.items():
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            raise DataError(f"{path} is damaged: it lacks {key}; retrain, or restore the "
                            "file")
    return config


# what eval, predict and export read from config.json, with its type
REQUIRED = {"charset.chars": str, "image.width": int, "image.height": int, "arch": str,
            "max_length": int}
AUDIO_REQUIRED = {"charset.chars": str, "audio.rate": int, "arch": str, "max_length": int}
