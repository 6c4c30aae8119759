# `make repro` runs the whole pipeline; `make test` runs the test suite.
# Both create .venv on first use and (re)install the project when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed

export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_USAGE_STATS_ENABLED := 0
export GX_ANALYTICS_ENABLED := False

.PHONY: repro test lint install clean-store snapshot

install: $(STAMP)

# uv installs the same pinned set from the same sources as pip (tools/pip_sources.py reads
# pip's config) in well under a minute; pip is the fallback if uv cannot be had.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	( $(BIN)/python -m pip install --disable-pip-version-check -q uv==0.13.9 \
	  && $(BIN)/uv pip install --python $(BIN)/python --index-strategy unsafe-best-match \
	     $$($(BIN)/python tools/pip_sources.py) -e '.[dev]' ) \
	|| $(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	touch $(STAMP)

repro: $(STAMP)
	dvc repro

# One scheduled run (cron, CI): `make snapshot SNAPSHOT=2026-12-01`; empty SNAPSHOT = today (UTC).
snapshot: $(STAMP)
	mmrec snapshot $(if $(SNAPSHOT),--snapshot $(SNAPSHOT))

test: $(STAMP)
	python -m pytest

lint: $(STAMP)
	ruff check .

clean-store:
	rm -rf store models reports/per_user .ray_results
