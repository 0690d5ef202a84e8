# modelvault — every target creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench docs-examples clean peers-deps peers plots

$(STAMP): pyproject.toml modelvault/_planes.c modelvault/_cdc.c modelvault/_floatcodec.c setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,s3,sklearn]'
	command -v strace >/dev/null || apt-get install -y strace  # tests/harness: fault injection
	ldconfig -p | grep -q libefence || apt-get install -y electric-fence \
	  || (apt-get update && apt-get install -y electric-fence)  # tests/unit/test_cdc_native.py: guard pages
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python demo/demo.py

test: $(STAMP) lint typecheck .venv-bentoml/.installed
	$(BIN)/python -m pytest -q

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check modelvault tests benchmarks demo setup.py
	$(BIN)/ruff format --check modelvault tests benchmarks demo setup.py
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_store.py

# docs/cli.md's console examples, rewritten from what the installed mv prints
# (tests/cli/test_cli_docs_examples.py fails when they differ)
docs-examples: $(STAMP)
	$(BIN)/python tests/cli/cli_examples.py

# BentoML in a virtualenv of its own (never in .venv): benchmarks/bench_runner.py drives its
# CorkDispatcher beside modelvault's batcher; tests/integration/test_bentoml_real.py runs
# real `bentoml models import` in it (so `make test` makes it: bentoml, numpy and
# scikit-learn, no torch), and tests/golden/bentoml/make_bentoml_golden.py runs in it.
.venv-bentoml/.installed: benchmarks/requirements-bentoml.txt
	$(PY) -m venv .venv-bentoml
	.venv-bentoml/bin/pip install --quiet --upgrade pip
	.venv-bentoml/bin/pip install --quiet -r benchmarks/requirements-bentoml.txt
	touch .venv-bentoml/.installed

# benchmarks/peers/ (issue 22): modelvault beside the tools a user would pick instead.
# Debian's restic, borgbackup and casync (rsync copies borg's and casync's repositories to
# their "remote": neither has a push), DVC in .venv-dvc, BentoML in .venv-bentoml. Root
# (CI) installs the Debian packages; nothing is installed at test or benchmark time.
peers-deps: .venv-dvc/.installed .venv-bentoml/.installed
	command -v restic >/dev/null && command -v borg >/dev/null && command -v casync >/dev/null \
	  && command -v rsync >/dev/null \
	  || (apt-get update && apt-get install -y --no-install-recommends restic borgbackup casync rsync)

.venv-dvc/.installed: benchmarks/peers/requirements-dvc.txt
	$(PY) -m venv .venv-dvc
	.venv-dvc/bin/pip install --quiet --upgrade pip
	.venv-dvc/bin/pip install --quiet -r benchmarks/peers/requirements-dvc.txt
	touch .venv-dvc/.installed

# The full run (hours: see docs/benchmarks.md); a quick proof: ARGS="--size 8MiB --runs 1"
peers: $(STAMP) peers-deps
	$(BIN)/python benchmarks/peers/bench_peers.py $(ARGS)

# PNGs in docs/img/ from the committed results (benchmarks/peers/results.json, ...)
.venv-plots/.installed: benchmarks/peers/requirements-plots.txt
	$(PY) -m venv .venv-plots
	.venv-plots/bin/pip install --quiet --upgrade pip
	.venv-plots/bin/pip install --quiet -r benchmarks/peers/requirements-plots.txt
	touch .venv-plots/.installed

plots: .venv-plots/.installed
	.venv-plots/bin/python benchmarks/plots.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
