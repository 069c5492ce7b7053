# infra-apply developer targets. Every target bootstraps .venv when it is missing.
PYTHON3 ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PY      := $(BIN)/python

.PHONY: help venv test-tools scan-tools demo test faults soak golden lint bench bench-regen render-check clean-bench \
  mermaid-check

help:
	@echo "make demo          plan the example tree against the sandbox (no account, no test tools)"
	@echo "make test          run the test suite (installs the test tools on first use)"
	@echo "make faults        fault injection: 10 kills per signal (TERM, HUP, KILL) mid-apply"
	@echo "make soak          the e2e suite 10 times under CPU load (SOAK_ROUNDS=n for another count)"
	@echo "make golden        re-render generated/ (the golden files) after a template change"
	@echo "make lint          ruff + mypy"
	@echo "make scan-tools    checkov in .venv-scan (make test runs it over every render)"
	@echo "make bench         benchmarks on a synthetic 2,000-manifest tree (bench/out/)"
	@echo "make bench-regen   regenerate the benchmark tree, then benchmark"
	@echo "make render-check  fail when generated/ is stale for examples/producer-tree"
	@echo "make mermaid-check parse every diagram the tests draw with Mermaid itself (node, npm)"

venv: $(BIN)/infra-apply

# Only created when missing: an existing venv is never reinstalled behind your back.
# The runtime and the sandbox extra: what the demo needs, none of the test tools.
$(BIN)/infra-apply:
	$(PYTHON3) -m venv $(VENV)
	$(BIN)/pip install -e '.[sandbox]'

# The test tools (pytest, mypy, ruff, moto, ...) for test, lint and bench, installed once into
# the venv; the stamp records that they are there (delete it to install them again). A newer
# pyproject.toml installs them again: a venv from before a new test tool (pytest-xdist for
# make test's -n) would otherwise fail on the option.
TEST_TOOLS := $(VENV)/.test-tools
test-tools: $(TEST_TOOLS)

$(TEST_TOOLS): pyproject.toml | $(BIN)/infra-apply
	$(BIN)/pip install -e '.[test]'
	touch $@

# Checkov (tools/scan/requirements.txt) in a venv of its own: the runtime install stays lean and
# checkov's many dependencies never meet the test tools'. tests/test_scan.py runs it.
SCAN_VENV  := .venv-scan
SCAN_TOOLS := $(SCAN_VENV)/.scan-tools
scan-tools: $(SCAN_TOOLS)

$(SCAN_TOOLS): tools/scan/requirements.txt
	[ -x $(SCAN_VENV)/bin/python ] || $(PYTHON3) -m venv $(SCAN_VENV)
	$(SCAN_VENV)/bin/pip install -r tools/scan/requirements.txt
	touch $@

# plan exits 2 when it has changes to show: that is the demo working, not failing.
demo: venv
	$(BIN)/infra-apply --root examples/producer-tree plan --sandbox \
	  --mesh-hosts examples/mesh-hosts.json; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 2 ]

# In TEST_WORKERS processes (pytest-xdist): most of the suite waits on Terraform and the sandbox
# provider rather than computing, so even 2 cores run several workers well (docs/development.md).
# worksteal, not loadfile: one long end-to-end file would otherwise finish alone on one worker
# (a module fixture may then run once per worker instead of once). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4
test: $(TEST_TOOLS) $(SCAN_TOOLS)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

# Several minutes: infra-apply killed 10 times per signal at the apply phase (tests/e2e/test_faults.py).
faults: $(TEST_TOOLS)
	$(BIN)/pytest -q -p no:cacheprovider -m faults tests/e2e/test_faults.py

# Long: the e2e suite SOAK_ROUNDS times (default 10) while two CPU-bound processes run.
SOAK_ROUNDS ?= 10
soak: $(TEST_TOOLS)
	tests/soak.sh $(SOAK_ROUNDS)

# The golden files are generated/ itself: re-render, then review the diff before committing.
golden: venv
	$(BIN)/infra-apply --root examples/producer-tree render
	@# the example tree with [alerts]: only the files differing from generated/ are kept
	rm -rf .golden-alerts .golden-alerts-tree tests/fixtures/alerts/generated && cp -R generated .golden-alerts
	cp -R examples/producer-tree .golden-alerts-tree
	cat tests/fixtures/alerts/alerts.toml >> .golden-alerts-tree/infra-apply.toml
	$(BIN)/infra-apply --root .golden-alerts-tree render --out .golden-alerts
	for f in .golden-alerts/*/*.tf; do p=$${f#.golden-alerts/}; cmp -s $$f generated/$$p && continue; \
	  mkdir -p tests/fixtures/alerts/generated/$${p%/*}; cp $$f tests/fixtures/alerts/generated/$$p; done
	rm -rf .golden-alerts .golden-alerts-tree

# Runs every checker, then fails if any of them did.
lint: $(TEST_TOOLS)
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/mypy || status=1; \
	$(BIN)/mypy bench/gen_tree.py bench/run.py || status=1; \
	exit $$status

bench: $(TEST_TOOLS)
	$(PY) bench/run.py $(BENCH_ARGS)

bench-regen: $(TEST_TOOLS)
	$(PY) bench/run.py --regen $(BENCH_ARGS)

# Mermaid itself (tools/mermaid-check, installed with npm ci on first use) on every diagram the
# tests draw; make test runs the same test but skips it where node, npm or the registry is missing.
mermaid-check: $(TEST_TOOLS)
	MERMAID_CHECK=required $(BIN)/pytest -q -p no:cacheprovider tests/report/test_mermaid_check.py

render-check: venv
	$(BIN)/infra-apply --root examples/producer-tree render --check

clean-bench:
	rm -rf bench/out
