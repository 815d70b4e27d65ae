# micro-dualnet: `make demo` runs the pipeline on the bundled sample, `make test` runs the suite.
# Both create .venv once (Python 3.10+; python3.11 preferred) and install the pinned CPU torch first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# torchvision's wheel, downloaded (never installed) into $(VENV)/reference/: tests/test_backbone.py checks our ResNets
# against the plain-Python models/resnet.py inside it. 0.28.0 is the release that requires torch 2.13.0.
TORCHVISION_REFERENCE ?= 0.28.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
STORE ?= cache
PYTEST_ARGS ?=

.PHONY: setup test demo bench bench-pose bench-pose-ablation bench-model bench-predict bench-scale lint reproduce-ma52 reproduce-imigue
# reproduce-*: NPROC > 1 trains under torchrun (one process per GPU); RUN_ARGS adds `dualnet run` options, e.g.
# RUN_ARGS="--set model.preset=tiny --set train.epochs=2" for a CPU smoke run.
NPROC ?= 1
RUN_ARGS ?=
LAUNCH = $(if $(filter 1,$(NPROC)),$(PY),$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC))

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[pose,dev]"
	$(PY) -m pip install --quiet --no-deps "rtmlib>=0.0.13"
	rm -rf $(VENV)/reference
	$(PY) -m pip download --quiet --no-deps --only-binary=:all: -d $(VENV)/reference \
		"torchvision==$(TORCHVISION_REFERENCE)"
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
	$(PY) -m cli.demo_summary --store $(STORE)

bench: $(STAMP)
	$(PY) bench/bench_extract.py --rounds 3 --out bench/results/extract.json
	$(PY) bench/bench_tubes.py --out bench/results/tubes.json

bench-pose: $(STAMP)  # JHMDB 3 splits, SHREC'17 14/28, 3 seeds: the pose stream and a plain temporal CNN
	$(PY) bench/bench_pose.py --out bench/results/pose.json $(POSE_ARGS)

bench-pose-ablation: $(STAMP)  # the paper's path and MAC rows: x, y on JHMDB split 1 and SHREC'17 14; x, y, z on SHREC'17 14
	$(PY) bench/bench_pose.py --ablation --no-depth --out bench/results/pose_2d.json $(POSE_ARGS)
	$(PY) bench/bench_pose.py --ablation --datasets shrec14 --out bench/results/pose_ablation_depth.json $(POSE_ARGS)

bench-model: $(STAMP)  # parameters, GFLOPs, CPU step time and memory per preset and SEM; what an H100 would need
	$(PY) bench/bench_model.py --out bench/results/model.json

lint: $(STAMP)
	$(VENV)/bin/ruff check dualnet pipelines cli tests bench tools
	$(VENV)/bin/lint-imports --no-logo --no-cache

bench-scale: $(STAMP)
	$(PY) bench/bench_scale.py --out bench/results/scale.json

bench-predict: $(STAMP)
	$(PY) bench/bench_predict.py --out bench/results/predict.json

# One experiment end to end: cut/extract/tubes (one process), train (NPROC processes), eval (one process).
define reproduce
	test -n "$(2)" || { echo "set $(3)=<dataset root> (see the README)"; exit 2; }
	$(VENV)/bin/dualnet run configs/$(1).toml --root "$(2)" --store $(STORE) --stages cut,extract,tubes $(RUN_ARGS)
	$(LAUNCH) -m cli run configs/$(1).toml --root "$(2)" --store $(STORE) --stages train $(RUN_ARGS)
	$(VENV)/bin/dualnet run configs/$(1).toml --root "$(2)" --store $(STORE) --stages eval $(RUN_ARGS)
endef

reproduce-ma52: $(STAMP)
	$(call reproduce,ma52,$(MA52_ROOT),MA52_ROOT)

reproduce-imigue: $(STAMP)
	$(call reproduce,imigue,$(IMIGUE_ROOT),IMIGUE_ROOT)
