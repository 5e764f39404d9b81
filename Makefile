# `make demo` and `make test` work on a fresh machine with Python 3.10+: they build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo

.PHONY: setup demo test test-slow lint bench-gen bench-engines bench-input bench-infer bench-tta bench-gpu bench-transfer bench-adapt bench-audio voices pretrained clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# End to end on a small default: generate, verify, preview, train for 3 minutes, score on test.
demo: $(STAMP)
	$(BIN)/captchalab gen --out $(DEMO)/data --train 10000 --val 500 --test 1000 --overwrite -q
	$(BIN)/captchalab verify $(DEMO)/data
	$(BIN)/captchalab show $(DEMO)/data --out $(DEMO)/preview.png
	rm -rf $(DEMO)/run
	$(BIN)/captchalab train --data $(DEMO)/data --out $(DEMO)/run --time-budget 3m
	$(BIN)/captchalab eval --model $(DEMO)/run --data $(DEMO)/data --split test

# -n auto: one pytest worker per core (xdist); most tests wait on CLI subprocesses
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench-gen: $(STAMP)
	$(BIN)/python bench/gen_speed.py

bench-engines: $(STAMP)
	$(BIN)/python bench/gen_engines.py --repeats 3

bench-input: $(STAMP)
	$(BIN)/python bench/input_speed.py

bench-infer: $(STAMP)
	$(BIN)/python bench/inference.py $(if $(MODEL),--model $(MODEL))

# Transfer matrix: MODELS="default=RUN other=RUN2" and/or recipes trained on the fly,
# TRAIN=universal,universal-no-fonts BUDGET=10m, against own and foreign test sets + ddddocr;
# TRANSFER_ARGS: more bench/transfer.py options (--shards N --steps N --mix …)
BUDGET ?= 10m
bench-transfer: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[transfer]'
	$(BIN)/python bench/transfer.py $(foreach m,$(MODELS),--model $(m)) $(if $(TRAIN),--train $(TRAIN) --budget $(BUDGET)) $(TRANSFER_ARGS)

# Label-efficiency study, ~4 hours: accuracy on two foreign generators against N labels
# (scratch, shipped model, fitted style, self-training)
bench-adapt: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[transfer]'
	$(BIN)/python bench/adapt.py $(ADAPT_ARGS)

# Audio captchas, ~27 minutes: 6 digits in 10 minutes, 0-9A-Z length 4-6 in 15, inference speed
bench-audio: $(STAMP)
	$(BIN)/python bench/audio.py $(AUDIO_ARGS)

# held-out voice folders and training pools, ~5 minutes (eSpeak NG and Piper from the voices
# extra; Flite and Festival if `apt install flite festival festvox-us-slt-hts` ran)
voices: $(STAMP)
	$(BIN)/python bench/voices.py --out bench/out/voices
	$(BIN)/python bench/voices.py --out bench/out/voices --pools

# ~32 minutes: gen + train under 5, 10 and 15 minute budgets, scored on a test split
bench-tta: $(STAMP)
	$(BIN)/python bench/time_to_accuracy.py

# The shipped generalist (src/captchalab/pretrained/), 25-45 minutes on 2 cores: the data of
# src/captchalab/pretrained/recipe.toml (what it draws: the file's comment) at lengths 4-6,
# 80 000 samples rendered into shards (~4 minutes), then 9 264 steps of training on them (22-37
# minutes, as fast as the machine is); build.py copies the run and records the views it reads
# at: widths 1,0.85,0.7 x blurs 0,1 (docs/transfer.md).
PRETRAINED_WORK ?= bench/out/pretrained
pretrained: $(STAMP)
	$(BIN)/captchalab gen --out $(PRETRAINED_WORK)/data --length 4-6 --style-file src/captchalab/pretrained/recipe.toml --seed 1 --train 80000 --val 1000 --overwrite -q
	rm -rf $(PRETRAINED_WORK)/run
	$(BIN)/captchalab train --data $(PRETRAINED_WORK)/data --out $(PRETRAINED_WORK)/run --steps 9264 -q
	$(BIN)/python -m captchalab.pretrained.build $(PRETRAINED_WORK)/run

clean:
	rm -rf $(VENV) $(DEMO) bench/out .pytest_cache

# On a machine with a GPU, ~6 minutes: gen, input and step speed, time to 99 % / 99.5 %.
# Uses GPU_PYTHON (default python3) with Keras and a backend already there (docs/gpu.md).
GPU_PYTHON ?= python3
bench-gpu:
	PYTHONPATH=src$${PYTHONPATH:+:$$PYTHONPATH} KERAS_BACKEND=$${KERAS_BACKEND:-jax} \
	  $(GPU_PYTHON) bench/gpu.py $(GPU_ARGS)
