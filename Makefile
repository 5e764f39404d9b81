# `make demo` and `make test` work on a fresh machine with Python 3.10+: they build .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo

.PHONY: setup demo test test-slow lint bench-gen clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# A small dataset end to end: generate, verify every record, write a preview sheet.
demo: $(STAMP)
	$(BIN)/captchalab gen --out $(DEMO)/data --train 2000 --val 200 --test 200 --overwrite
	$(BIN)/captchalab verify $(DEMO)/data
	$(BIN)/captchalab show $(DEMO)/data --out $(DEMO)/preview.png
	$(BIN)/captchalab show $(DEMO)/data --sample test:0 --out $(DEMO)/rerender-test-0.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

bench-gen: $(STAMP)
	$(BIN)/python bench/gen_speed.py

clean:
	rm -rf $(VENV) $(DEMO) bench/out .pytest_cache
