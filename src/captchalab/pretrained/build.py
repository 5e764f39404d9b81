"""`python -m captchalab.pretrained.build RUN`: make the run in RUN the shipped model.

Copies what using a run needs (model.keras, config.json and calibration.json) into
captchalab/pretrained/model/, after checking that it is small enough to ship and reads every
character of 0-9a-z. The copied config.json gets the widths the shipped model reads every
image at and the blurs ("inference": {"scales": …, "blurs": …};
docs/transfer.md#reading-at-several-widths)."""

from __future__ import annotations

import json
import os
import shutil
import sys

from captchalab.core.errors import UsageError
from captchalab.core.runconfig import PRETRAINED_DIR, read_run_config

MAX_BYTES = 5 * 1024 * 1024  # what a pip install of captchalab may carry
CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"
FILES = ("model.keras", "config.json", "calibration.json")
# every image is also read squeezed to 85 % and 70 % of its width, each width also blurred
# (sigma 1 px), the most confident reading kept: captchas scaled to 160x60 from other sizes
# have wider glyphs than the model learnt, and grain it trips on
SCALES = [1.0, 0.85, 0.7]
BLURS = [0.0, 1.0]


def build(run_dir: str, dest: str = PRETRAINED_DIR) -> list[str]:
    """Copy the run's files to `dest` (replacing what was there); returns the files copied."""
    config = read_run_config(run_dir)
    missing = "".join(c for c in CHARSET if c not in config["charset"]["chars"])
    if missing:
        raise UsageError(f"{run_dir} cannot read {missing!r}; the shipped model reads {CHARSET}")
    files = [f for f in FILES if os.path.isfile(os.path.join(run_dir, f))]
    if "model.keras" not in files:
        raise UsageError(f"{run_dir} has no model.keras (it finished no epoch)")
    size = sum(os.path.getsize(os.path.join(run_dir, f)) for f in files)
    if size > MAX_BYTES:
        raise UsageError(f"{run_dir} is {size / 2**20:.1f} MB; the shipped model must fit in "
                         f"{MAX_BYTES / 2**20:.0f} MB (a smaller --arch)")
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for f in files:
        shutil.copyfile(os.path.join(run_dir, f), os.path.join(tmp, f))
    with open(os.path.join(tmp, "config.json")) as fh:
        config = json.load(fh)
    config["inference"] = {**config.get("inference", {}), "scales": SCALES, "blurs": BLURS}
    with open(os.path.join(tmp, "config.json"), "w") as fh:
        json.dump(config, fh, indent=2)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return files


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m captchalab.pretrained.build RUN", file=sys.stderr)
        return 2
    try:
        files = build(argv[0])
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    size = sum(os.path.getsize(os.path.join(PRETRAINED_DIR, f)) for f in files)
    print(f"wrote {PRETRAINED_DIR}: {', '.join(files)} ({size / 2**20:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
