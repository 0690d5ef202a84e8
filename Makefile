# modelvault — every target creates .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml modelvault/_planes.c modelvault/_cdc.c modelvault/_floatcodec.c setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,s3,sklearn]'
	command -v strace >/dev/null || apt-get install -y strace  # tests/harness: fault injection
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

# BentoML in a virtualenv of its own (never in .venv): benchmarks/bench_runner.py drives its
# CorkDispatcher beside modelvault's batcher; tests/integration/test_bentoml_real.py runs
# real `bentoml models import` in it (so `make test` makes it: bentoml, numpy and
# scikit-learn, no torch), and tests/golden/bentoml/make_bentoml_golden.py runs in it.
.venv-bentoml/.installed: benchmarks/requirements-bentoml.txt
	$(PY) -m venv .venv-bentoml
	.venv-bentoml/bin/pip install --quiet --upgrade pip
	.venv-bentoml/bin/pip install --quiet -r benchmarks/requirements-bentoml.txt
	touch .venv-bentoml/.installed

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
