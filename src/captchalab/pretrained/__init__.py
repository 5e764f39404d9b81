"""The generalist model shipped with captchalab: `captchalab predict IMAGES` without `--model`,
`captchalab.load()` without a path, and `--model pretrained` anywhere a run is taken.

model/ is a run folder like any other (model.keras, config.json, calibration.json), rebuilt by
`make pretrained` (see the Makefile and docs/transfer.md) through `python -m
captchalab.pretrained.build RUN`."""
