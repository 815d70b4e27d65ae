# micro-dualnet: `make demo` runs the pipeline on the bundled sample, `make test` runs the suite.
# Both create .venv once (Python 3.10+; python3.11 preferred) and install the pinned CPU torch first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STORE ?= cache
PYTEST_ARGS ?=

.PHONY: setup test demo bench bench-jhmdb lint

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[pose,dev]"
	$(PY) -m pip install --quiet --no-deps "rtmlib>=0.0.13"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	DEMO=$$($(VENV)/bin/dualnet demo-data --csv $(STORE)/demo/clips.csv) && \
	$(VENV)/bin/dualnet extract "$$DEMO" --store $(STORE) && \
	$(VENV)/bin/dualnet tubes --store $(STORE) && \
	$(VENV)/bin/dualnet show B1_nodding__0019_02_0078 --store $(STORE) && \
	$(VENV)/bin/dualnet train --dataset csv --root $(STORE)/demo/clips.csv --store $(STORE) --preset tiny \
		--epochs 10 --batch-size 3 --lr 0.003 && \
	$(VENV)/bin/dualnet eval --dataset csv --root $(STORE)/demo/clips.csv --store $(STORE) && \
	$(VENV)/bin/dualnet status --store $(STORE) && \
	$(PY) -m pipelines.demo_summary --store $(STORE)

bench: $(STAMP)
	$(PY) bench/bench_extract.py --out bench/results/extract.json
	$(PY) bench/bench_tubes.py --out bench/results/tubes.json

bench-jhmdb: $(STAMP)
	$(PY) bench/bench_jhmdb.py --out bench/results/jhmdb.json

lint: $(STAMP)
	$(VENV)/bin/ruff check dualnet pipelines cli tests bench
