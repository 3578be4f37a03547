# Regulatory-documentation-first validation toolkit: every target writes real files under OUT.
# Variables: OUT (run folder, default build), DATA (demo | a data folder), PARAMS (params.yaml).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

OUT ?= build
DATA ?= demo
PARAMS ?= params.yaml
HELDOUT ?=
FILES ?=
PYTEST_ARGS ?=
BENCH ?=

VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.installed
EV := $(OUT)/evidence
P := $(OUT)/params
src = $(shell find $(1) -name '*.py' -not -path '*/__pycache__/*' 2>/dev/null)

COHORT := $(EV)/cohort.manifest.json
SPLIT := $(EV)/split.patients.json
EDA := $(EV)/eda.dataset.json
TRAIN := $(EV)/training.run.json
PRED := $(EV)/model.predictions.json
THRESH := $(EV)/validation.threshold.json
TEST := $(EV)/validation.test.json
SAMPLE := $(EV)/validation.sample_size.json
WORKFLOW := $(EV)/workflow.dicom.json
SUBMISSION := $(OUT)/submission/traceability.json
TEMPLATES := $(shell find templates submission/data -type f 2>/dev/null)

.PHONY: help venv submission eda train validate workflow audit heldout infer test bench clean

help: ## list the described targets
	@echo "usage: make TARGET [OUT=build] [DATA=demo|<folder>] [PARAMS=params.yaml]"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

venv: $(READY) ## create .venv and install the hashed lock requirements/test.txt and the project into it

# The lock holds every package with its sha256 (setuptools included, so the project's own build
# uses the locked one too); the project itself is then installed without resolving anything.
$(READY): requirements/runtime.txt requirements/test.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --require-hashes -r requirements/test.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Lock files for Python 3.11 on Linux x86_64, resolved against PyPI; a tool used here only (not a
# dependency of the project). The command each file was made with is the comment at its top.
UV ?= uv
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

lock: ## regenerate the hashed lock files requirements/{runtime,test}.txt from pyproject.toml (needs uv)
	@command -v $(UV) >/dev/null || { echo "error: make lock needs uv: pip install uv (in any venv but .venv), or set UV=<path to uv>" >&2; exit 2; }
	$(UV) pip compile pyproject.toml --generate-hashes $(LOCK_TARGET) --output-file requirements/runtime.txt
	$(UV) pip compile pyproject.toml --extra test --constraint requirements/runtime.txt --generate-hashes $(LOCK_TARGET) --output-file requirements/test.txt

# Per-section parameter stamps and the DATA in use, refreshed when make reads this file: each is
# rewritten only when its value changed, so a stage reruns only when its own section (or DATA) did.
STAGE_GOALS := $(filter-out help venv test bench clean,$(or $(MAKECMDGOALS),help))
ifneq ($(STAGE_GOALS),)
ifneq ($(wildcard $(PY)),)
$(shell $(PY) -m evidence.params $(PARAMS) $(OUT) 1>&2)
endif
$(shell mkdir -p $(OUT)/cohort && { [ "$$(cat $(OUT)/cohort/source.txt 2>/dev/null)" = "$(DATA)" ] || echo "$(DATA)" > $(OUT)/cohort/source.txt; })
endif

$(P)/%.json: | $(READY)
	$(PY) -m evidence.params $(PARAMS) $(OUT)

$(OUT)/cohort/source.txt:
	@mkdir -p $(@D)
	echo "$(DATA)" > $@

$(COHORT): $(OUT)/cohort/source.txt $(P)/cohort.json $(call src,eda evidence) | $(READY)
	$(PY) -m eda.cohort --data "$(DATA)" --out $(OUT) --params $(PARAMS)

$(SPLIT): $(COHORT) $(P)/split.json $(call src,eda evidence)
	$(PY) -m eda.split --out $(OUT) --params $(PARAMS)

$(EDA): $(SPLIT) $(P)/eda.json $(call src,eda model evidence)
	$(PY) -m eda --out $(OUT) --params $(PARAMS)

$(TRAIN): $(SPLIT) $(P)/train.json $(call src,model evidence)
	$(PY) -m model.train --out $(OUT) --params $(PARAMS)

$(PRED): $(TRAIN) $(call src,model evidence)
	$(PY) -m model.predict --out $(OUT) --params $(PARAMS)

$(THRESH): $(PRED) $(P)/validate.json $(call src,validation evidence)
	$(PY) -m validation.threshold --out $(OUT) --params $(PARAMS)

$(TEST): $(THRESH) $(call src,validation evidence)
	$(PY) -m validation.evaluate --out $(OUT) --params $(PARAMS)

$(SAMPLE): $(P)/validate.json $(call src,validation evidence) | $(READY)
	$(PY) -m validation.sample_size --out $(OUT) --params $(PARAMS)

$(WORKFLOW): $(THRESH) $(P)/workflow.json $(call src,model evidence)
	$(PY) -m model.workflow --out $(OUT) --params $(PARAMS)

$(SUBMISSION): $(EDA) $(TEST) $(SAMPLE) $(WORKFLOW) $(P)/submission.json $(TEMPLATES) $(call src,submission evidence)
	$(PY) -m submission --out $(OUT) --params $(PARAMS)

submission: $(SUBMISSION) ## build the 510(k) submission and validation plan (Markdown, HTML, PDF)
eda: $(EDA) ## cohort manifest, patient-level split and dataset evidence
train: $(TRAIN) ## train the model on the training split
validate: $(TEST) ## predict, lock the threshold on validation, evaluate the test split

workflow: $(WORKFLOW) ## run the DICOM header checks on the workflow files

audit: | $(READY) ## verify the evidence trail and recompute the reported metrics (exit 0 only if it verifies)
	$(PY) -m evidence audit --out $(OUT)
	$(PY) -m submission.check --out $(OUT)

heldout: $(SUBMISSION) ## rerun the locked device on a held-out clinical set: make heldout HELDOUT=<dir>
	@test -n "$(HELDOUT)" || { echo "error: set HELDOUT=<folder with DICOM files and labels.csv>" >&2; exit 2; }
	$(PY) -m validation.heldout --out $(OUT) --heldout "$(HELDOUT)" --params $(PARAMS)

infer: $(THRESH) ## classify DICOM files with the locked model: make infer FILES="a.dcm dir/"
	@test -n "$(FILES)" || { echo "error: set FILES=<DICOM files or folders>" >&2; exit 2; }
	@$(PY) -m model.infer --out $(OUT) $(FILES)

test: | $(READY) ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

bench: | $(READY) ## run the benchmarks, ratios measured in one run (BENCH="eda bootstrap inference pneumoniamnist")
	$(PY) -m bench $(BENCH)

clean: ## remove the run folder (OUT)
	rm -rf $(OUT)

