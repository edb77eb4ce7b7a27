# `make demo` and `make test` do all set-up on a fresh clone; a second run reuses .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.conceptlab-installed
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-slow bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# Keep a torch that is already installed; otherwise take the CPU build 2.13.0.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/conceptlab demo --out demo-output
	@echo "Results: demo-output/index.html"
	@echo "The studio (generate, train, edit and evaluate in a browser): $(VENV)/bin/conceptlab studio, then open http://127.0.0.1:7860"

# Tests run in TEST_WORKERS processes (pytest-xdist), one module per worker at a time so that a module's fixtures
# (a launched studio, a trained run) are built once; --durations names the slowest, to keep the suite under 10 minutes.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=12

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) -m benchmarks.run

# On a machine with a CUDA GPU: every feature at SD-1.5 and SDXL sizes, timed, into gpu-check.json.
# Elsewhere it says there is no GPU and exits 0.
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(PY) -m benchmarks.gpu_check --out gpu-check.json

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) demo-output bench-output

# Docs: regenerate the CLI and API references and the results pages; run every example in README.md and docs/.
.PHONY: docs test-docs
docs: $(STAMP)
	$(PY) scripts/docs.py all

test-docs: $(STAMP)
	$(PY) -m pytest -q tests/docs -m "slow or not slow"
