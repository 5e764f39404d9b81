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
    for key, kind in REQUIRED.items():
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
