# Regulatory-documentation-first validation toolkit: every target writes real files under OUT.
# Variables: OUT (run folder, default build), DATA (demo | a data folder), PARAMS (params.yaml),
# TRUSTED (allowed-signers file for make audit), WAIT=1 (wait for another make on the same OUT);
# audit: INPUTS=1 re-hashes every input image, INPUTS=0 none (default: when estimated under a minute),
# RELEASE=1 fails on a requirement not verified by make verify; verify: TESTS (test files, default all).
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

OUT ?= build
DATA ?= demo
PARAMS ?= params.yaml
HELDOUT ?=
BATCH ?=
NEW ?=
SHARDS ?=
FILES ?=
TESTS ?=
override HELDOUT := $(value HELDOUT)
override BATCH := $(value BATCH)
override NEW := $(value NEW)
override FILES := $(value FILES)
override SHARDS := $(value SHARDS)
override TESTS := $(value TESTS)
MAKE_HELDOUT := $(HELDOUT)
MAKE_BATCH := $(BATCH)
MAKE_NEW := $(NEW)
MAKE_FILES := $(FILES)
MAKE_SHARDS := $(SHARDS)
MAKE_TESTS := $(TESTS)
export MAKE_HELDOUT MAKE_BATCH MAKE_NEW MAKE_FILES MAKE_SHARDS MAKE_TESTS
PYTEST_ARGS ?=
BENCH ?=
INPUTS ?=
TRUSTED ?=
WAIT ?=
REPLAY ?=
RELEASE ?=

VENV := .venv
PY := $(VENV)/bin/python
READY := $(VENV)/.installed
EV := $(OUT)/evidence
P := $(OUT)/params
MK := $(OUT)/.make/stages.mk

.PHONY: help venv lock submission eda train plan validate workflow audit heldout monitor pccp-check infer test verify bench clean

# One make at a time on OUT: a goal that reads or writes OUT reruns this make under an exclusive
# lock on OUT/.lock (flock) with OUT_LOCKED=1. A second make on the same OUT exits at once with one
# line (WAIT=1: waits for the first) before it reads any params or stage rule, so it never touches
# the first run's files. Dry runs (-n, -q) take no lock.
UNLOCKED_GOALS := help venv lock test bench
GOALS := $(or $(MAKECMDGOALS),$(.DEFAULT_GOAL))
ifeq ($(OUT_LOCKED)$(findstring n,$(firstword -$(MAKEFLAGS)))$(findstring q,$(firstword -$(MAKEFLAGS))),)
LOCK_GOALS := $(filter-out $(UNLOCKED_GOALS),$(GOALS))
endif

ifneq ($(LOCK_GOALS),)
.PHONY: $(GOALS) locked
$(GOALS): locked ; @:
locked:
	@mkdir -p "$(OUT)"
	@flock $(if $(WAIT),,-n -E 75) "$(OUT)/.lock" $(MAKE) --no-print-directory OUT_LOCKED=1 $(GOALS) || { \
	  rc=$$?; test $$rc -ne 75 || { rc=2; echo "error: another make is working on OUT=$(OUT) (it holds $(OUT)/.lock): wait for it, rerun with WAIT=1 to wait, or use another OUT" >&2; }; exit $$rc; }
else

help: ## list the described targets
	@echo "usage: make TARGET [OUT=build] [DATA=demo|<folder>] [PARAMS=params.yaml]"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

venv: $(READY) ## create .venv and install the hashed lock requirements/test.txt and the project into it

# pip itself comes from its own lock first: the pip that python3 -m venv bundles may not resolve
# locked extras (fonttools[woff] of weasyprint) in --require-hashes mode.
# The lock holds every package with its sha256 (setuptools included, so the project's own build
# uses the locked one too); the project itself is then installed without resolving anything.
$(READY): requirements/pip.txt requirements/runtime.txt requirements/test.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --require-hashes -r requirements/pip.txt
	$(PY) -m pip install --disable-pip-version-check --require-hashes -r requirements/test.txt
	$(PY) -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Lock files for Python 3.11 on Linux x86_64, resolved against PyPI; a tool used here only (not a
# dependency of the project). The command each file was made with is the comment at its top.
UV ?= uv
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28

lock: ## regenerate the hashed lock files requirements/{pip,runtime,test}.txt from requirements/pip.in and pyproject.toml (needs uv)
	@command -v $(UV) >/dev/null || { echo "error: make lock needs uv: pip install uv (in any venv but .venv), or set UV=<path to uv>" >&2; exit 2; }
	$(UV) pip compile requirements/pip.in --generate-hashes $(LOCK_TARGET) --output-file requirements/pip.txt
	$(UV) pip compile pyproject.toml --generate-hashes $(LOCK_TARGET) --output-file requirements/runtime.txt
	$(UV) pip compile pyproject.toml --extra test --constraint requirements/runtime.txt --generate-hashes $(LOCK_TARGET) --output-file requirements/test.txt

# Before any stage: validate and stamp the params (OUT/params/<section>.json, rewritten only when a
# section changed), record DATA, and generate the stage rules (OUT/.make/stages.mk) from the stage
# table in evidence/stages.py. A stage reruns when its params section, DATA, a record it needs or a
# code file its records hash changed, and says which.
STAGE_GOALS := $(filter-out help venv lock test verify bench clean audit pccp-check,$(or $(MAKECMDGOALS),help))
ifneq ($(STAGE_GOALS),)
ifneq ($(wildcard $(PY)),)
ifneq ($(shell $(PY) -m evidence.make prepare --params "$(PARAMS)" --out "$(OUT)" --data "$(DATA)" >&2 && echo ok),ok)
$(error stopped before any stage ran: fix the error above)
endif
endif
include $(MK)
endif

$(MK): | $(READY)
	@$(PY) -m evidence.make prepare --params "$(PARAMS)" --out "$(OUT)" --data "$(DATA)"

submission: $(STAGE_submission) ## build the validation plan (locked first) and the 510(k) submission (Markdown, HTML, PDF)
eda: $(STAGE_eda) ## cohort manifest, patient-level split and dataset evidence
train: $(STAGE_model.train) ## train the model on the training split
plan: $(STAGE_submission.plan) ## render and lock the validation plan (validation.plan_lock) before any test-split score exists
validate: $(STAGE_validation.evaluate) ## predict val, lock the threshold and the plan, then score and evaluate the test split
workflow: $(STAGE_model.workflow) ## run the DICOM header checks on the workflow files

audit: | $(READY) ## verify the evidence trail, its log, signatures and inputs, recompute the metrics, replay the model on test images (TRUSTED=<allowed signers>, INPUTS=1, REPLAY=--all, RELEASE=1)
	$(PY) -m evidence audit --out $(OUT) --inputs $(if $(filter 1,$(INPUTS)),always,$(if $(filter 0,$(INPUTS)),never,auto))$(if $(TRUSTED), --trusted "$(TRUSTED)")$(if $(filter 1,$(RELEASE)), --release)
	$(PY) -m submission.check --out $(OUT)
	$(PY) -m model.replay --out $(OUT) $(REPLAY)

# HELDOUT, BATCH, NEW, FILES and SHARDS reach the commands through the environment, never through a recipe's
# text: a value is data (a name with spaces is one path; `;`, `$(...)`, quotes and backticks run
# nothing). FILES is one path per line (a single path may hold spaces); make expands none of them.
heldout: $(STAGE_submission.plan) ## rerun the locked device on a held-out clinical set: make heldout HELDOUT=<dir> [SHARDS=N local processes]
	@test -n "$$MAKE_HELDOUT" || { echo "error: set HELDOUT=<folder with DICOM files and labels.csv>" >&2; exit 2; }
	if [ -n "$$MAKE_SHARDS" ]; then $(PY) -m validation.shards --shards "$$MAKE_SHARDS" --out "$(OUT)" --heldout "$$MAKE_HELDOUT" --params "$(PARAMS)"; \
	else $(PY) -m validation.heldout --out "$(OUT)" --heldout "$$MAKE_HELDOUT" --params "$(PARAMS)"; fi

monitor: $(STAGE_validation.monitoring_plan) ## compare a production batch with the validation baseline: make monitor BATCH=<DICOM folder, or notifications/infer JSON-lines file> (fails when an alert fires)
	@test -n "$$MAKE_BATCH" || { echo "error: set BATCH=<a folder of DICOM files, or node/notifications.jsonl or a model.infer output file>" >&2; exit 2; }
	$(PY) -m validation.monitor --out "$(OUT)" --batch="$$MAKE_BATCH" --params "$(PARAMS)"

# pccp-check rebuilds nothing in the cleared run OUT (no stage, no params stamp): the candidate is
# judged by the plan the cleared run holds, locked with its validation plan; it writes only OUT/pccp/.
pccp-check: | $(READY) ## judge a candidate run against this cleared run under the change control plan: make pccp-check NEW=<candidate run> (outside the plan: the command exits 3, make reports Error 3)
	@test -n "$$MAKE_NEW" || { echo "error: set NEW=<the candidate's run folder>" >&2; exit 2; }
	$(PY) -m validation.pccp --out "$(OUT)" --new "$$MAKE_NEW" --params "$(PARAMS)"

infer: $(STAGE_validation.threshold) ## classify DICOM files with the locked model: make infer FILES=<path, or one path per line>
	@test -n "$$MAKE_FILES" || { echo "error: set FILES=<a DICOM file or folder, or several, one per line>" >&2; exit 2; }
	@mapfile -t files < <(printf '%s\n' "$$MAKE_FILES" | sed '/^$$/d'); $(PY) -m model.infer --run "$(OUT)" -- "$${files[@]}"

# The device as a DICOM node (model.node): receives CR/DX from the modality or PACS, results back to PACS.
LISTEN ?= 127.0.0.1:11112
AET ?= PNEUMO_TRIAGE
PACS ?=
PACS_AET ?=
WORKLIST ?=
.PHONY: node latency
latency: $(STAGE_validation.latency) ## time to notification through the DICOM node over loopback (record workflow.latency)
node: $(STAGE_model.workflow) ## run the device as a DICOM node: make node PACS=host:port PACS_AET=AET [LISTEN= AET= WORKLIST=url]
	@test -n "$(PACS)" -a -n "$(PACS_AET)" || { echo "error: set PACS=<host:port> and PACS_AET=<its AE title>" >&2; exit 2; }
	$(PY) -m model.node --out $(OUT) --listen $(LISTEN) --aet $(AET) --pacs $(PACS) --pacs-aet $(PACS_AET) $(if $(WORKLIST),--worklist-url $(WORKLIST))

test: | $(READY) ## run the test suite
	$(PY) -m pytest $(PYTEST_ARGS)

# The tests run with the make variables of this make removed from their environment (they start
# makes of their own); TESTS is split on white space, never run. A failing test still writes the
# record (its requirements are then not verified) and make exits with pytest's status.
verify: | $(READY) ## run the tests (TESTS="test files", default all) with JUnit XML and write record verification.tests
	@mkdir -p "$(OUT)/verification"
	@read -r -d '' -a tests <<< "$$MAKE_TESTS" || true; \
	rc=0; env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL $(PY) -m pytest $(PYTEST_ARGS) --junitxml "$(OUT)/verification/junit.xml" -o junit_family=xunit1 "$${tests[@]}" || rc=$$?; \
	if [ $$rc -le 1 ]; then $(PY) -m design.verify --out "$(OUT)" || exit $$?; fi; exit $$rc

bench: | $(READY) ## run the benchmarks, ratios measured in one run (BENCH="names"; the names and the default, all: bench/__main__.py)
	$(PY) -m bench $(BENCH)

clean: ## remove the run folder (OUT)
	rm -rf $(OUT)
endif
