# whaleid: `make demo` runs the main job on built-in synthetic data; `make test` runs the suite.
# Both create .venv and install everything on first use.
PY      := .venv/bin/python
STAMP   := .venv/.installed-stamp
DATA    := data/synthetic
LAUNCH  := $(PY) -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no
DEMO_RUN := runs/demo

.PHONY: venv demo test data-small data-tiny clean bench help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)  ## create .venv with pinned torch and the project

$(DATA)/small/test_labels.csv: $(STAMP) tools/synthesize.py
	$(PY) -m tools.synthesize --preset small --out $(DATA)/small

data-small: $(DATA)/small/test_labels.csv  ## generate the small synthetic survey (~2k images)

demo: $(STAMP) $(DATA)/small/test_labels.csv  ## synthesize data, train and evaluate on 2 cores (minutes)
	$(LAUNCH) core/run.py --config configs/synthetic_cpu.yaml output_dir=$(DEMO_RUN)

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q tests

clean:  ## remove runs and generated data (keeps .venv)
	rm -rf runs $(DATA)
