# whaleid: `make demo` runs the main job on built-in synthetic data; `make test` runs the suite.
# Both create .venv and install everything on first use.
PY      := .venv/bin/python
STAMP   := .venv/.installed-stamp
DEV     := .venv/.dev-stamp
DATA    := data/synthetic
NPROC   := $(shell nproc 2>/dev/null || echo 2)
# accelerate launch gives each process one CPU thread unless told otherwise: half the speed on 2 cores
LAUNCH  := $(PY) -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no --num_cpu_threads_per_process $(NPROC)
DEMO_RUN := runs/demo
# headless Chromium from Debian's package, for the tests that drive the review page and render the report
CHROMIUM := command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: Debian's chromium could not be installed; the browser tests will be skipped"

.PHONY: constraints venv runtime-twin gpu-check demo identify-demo review train-demo cv-demo seeds-demo ablation report report-check pack test-submission test data-tiny data-small data-full sheet clean bench bench-quality help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# what training, the demo and the bundle need; the suite's and the report's extras come with $(DEV)
# every package at the version the suite last passed with (constraints.txt; `make constraints` refreshes it)
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -c constraints.txt -e '.[cpu,pretrained,review,matchers]'
	touch $@

$(DEV): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[cpu,pretrained,review,matchers,dev]'
	touch $@

constraints: $(DEV)  ## after `make test` passed: write constraints.txt from what .venv holds, for the next install
	{ echo "# The versions whaleid's suite last passed with (pip constraints: pip install -c constraints.txt ...)."; \
	  echo "# Refreshed by make constraints, from .venv, after make test passed."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v -i -e '^whaleid' -e '^pyflakes'; } > constraints.txt

venv: $(DEV)  ## create .venv with pinned torch, the project and its development extras

runtime-twin: $(STAMP)  ## build .twin/, the 2022 runtime's packages in a Python 3.9 venv (submission/runtime-2022.txt), once
	$(PY) -m submission.runtime build

$(DATA)/small/test_labels.csv: $(STAMP) tools/synthesize.py
	$(PY) -m tools.synthesize --preset small --out $(DATA)/small

data-small: $(DATA)/small/test_labels.csv  ## generate the small synthetic survey (~2k images)

$(DATA)/tiny/test_labels.csv: $(STAMP) tools/synthesize.py
	$(PY) -m tools.synthesize --preset tiny --out $(DATA)/tiny

data-tiny: $(DATA)/tiny/test_labels.csv  ## generate the tiny survey that configs/smoke.yaml reads

$(DATA)/full/test_labels.csv: $(STAMP) tools/synthesize.py
	$(PY) -m tools.synthesize --preset full --out $(DATA)/full

data-full: $(DATA)/full/test_labels.csv  ## generate the full-size synthetic survey (~9k images)

demo: $(STAMP) $(DATA)/small/test_labels.csv  ## synthesize data, train, evaluate, build and check the submission
	$(MAKE) --no-print-directory train-demo
	$(MAKE) --no-print-directory pack
	$(MAKE) --no-print-directory test-submission

train-demo: $(STAMP) $(DATA)/small/test_labels.csv  ## train and evaluate configs/synthetic_cpu.yaml on 2 cores
	$(LAUNCH) core/run.py --config configs/synthetic_cpu.yaml output_dir=$(DEMO_RUN)

cv-demo: $(STAMP) $(DATA)/small/test_labels.csv  ## the demo recipe on all 5 folds: runs/cv_demo/fold<k>/ and cv.json (out-of-fold mAP)
	$(LAUNCH) core/run.py --config configs/synthetic_cpu.yaml output_dir=runs/cv_demo data.fold=all $(ARGS)

seeds-demo: $(STAMP) $(DATA)/small/test_labels.csv  ## the demo recipe on fold 0 with seeds 0, 1, 2: runs/seeds_demo/seeds.json
	$(LAUNCH) core/run.py --config configs/synthetic_cpu.yaml output_dir=runs/seeds_demo 'seeds=[0,1,2]' $(ARGS)

ablation: $(STAMP) $(DATA)/small/test_labels.csv  ## the winners' toolbox, each technique alone over 3 seeds against the earlier CPU default (configs/synthetic_cpu_gem_bn.yaml; about 2 hours on 2 cores): runs/ablation/ablation.md
	$(PY) -m tools.bench.ablate configs/ablation/toolbox.yaml --out runs/ablation --jobs 2

CV_RUN := runs/cv_demo
# the catalogue's keypoints: XFeat's learned ones (the matchers extra; the catalogue never runs in the 2022 runtime)
IDENTIFY_DETECTOR := xfeat
identify-demo: $(STAMP)  ## from RUN (default: the demo recipe cross-validated, runs/cv_demo, trained first when missing: 5 trainings, about 12 minutes on 2 cores; RUN=runs/demo is the one-fold path) to named whales: catalogue of its training whales, calibration on every fold's held-out whales with XFeat keypoints (IDENTIFY_DETECTOR=sift for SIFT), the test photos identified at 5% wrong decisions and scored: RUN/identify/
	$(if $(RUN),,test -f $(CV_RUN)/cv.json || $(MAKE) --no-print-directory cv-demo)
	$(PY) -m tools.identify_demo $(or $(RUN),$(CV_RUN)) --detector $(IDENTIFY_DETECTOR)

review: $(STAMP)  ## serve the review page of RUN's identify-demo catalogue (default runs/cv_demo) on http://127.0.0.1:8765/
	.venv/bin/whaleid review --db $(or $(RUN),$(CV_RUN))/identify/catalogue.sqlite --bundle $(or $(RUN),$(CV_RUN))/identify/bundle.zip

report: $(DEV)  ## an HTML report of RUN (default runs/demo): curves, galleries, pair explanations
	$(PY) -m tools.report $(or $(RUN),$(DEMO_RUN))

report-check: $(DEV)  ## render RUN's report in headless Chromium (installs Debian's chromium if missing), screenshot and check it
	$(CHROMIUM)
	$(PY) -m tools.report $(or $(RUN),$(DEMO_RUN))
	$(PY) -m tools.report_check $(or $(RUN),$(DEMO_RUN))/report.html --screenshot $(or $(RUN),$(DEMO_RUN))/report.png

pack: $(STAMP)  ## build submission/submission.zip from RUN (default runs/demo)
	$(PY) -m submission.build --run $(or $(RUN),$(DEMO_RUN)) --out submission/submission.zip

test-submission: $(STAMP) $(DATA)/small/test_labels.csv  ## run submission.zip like the runtime (in the 2022 twin when built) on the small synthetic test set and score it
	$(PY) -m submission.check submission/submission.zip --data $(DATA)/small/test --labels $(DATA)/small/test_labels.csv $(if $(wildcard .twin/bin/python),--runtime 2022,--runtime here)

sheet: $(STAMP)  ## redraw the README's contact sheet
	$(PY) -m tools.synthesize --sheet docs/contact_sheet.png

bench: $(STAMP) $(DATA)/full/test_labels.csv  ## benchmarks: training step vs bare loop, submission inference vs baselines
	$(PY) -m tools.bench.train_step
	$(PY) -m submission.build --run $(DEMO_RUN) --out runs/bench_submission.zip
	$(PY) -m tools.bench.inference --zip runs/bench_submission.zip --data $(DATA)/full/test
	$(PY) -m submission.check runs/bench_submission.zip --data $(DATA)/full/test --labels $(DATA)/full/test_labels.csv

bench-quality: $(STAMP)  ## the CPU recipe against a bare loop on every survey variant (about an hour on 2 cores)
	$(PY) -m tools.bench.quality

test: $(DEV)  ## run the test suite (builds the 2022 runtime twin first when a Python 3.9 is found, installs Debian's chromium for the browser tests)
	$(PY) -m submission.runtime build --if-available
	$(CHROMIUM)
	$(PY) -m pytest -q -n 2 --dist loadgroup --durations=25 tests

gpu-check: $(STAMP)  ## on a CUDA machine: every seed/winners recipe's fp16 training speed and memory, 2-GPU evaluation, the seed's bundle on a competition-sized test set, within 10 minutes: runs/gpu_check/gpu_check.{json,md}
	$(PY) -m tools.bench.gpu_check --out runs/gpu_check $(ARGS)

clean:  ## remove runs and generated data (keeps .venv)
	rm -rf runs $(DATA)
