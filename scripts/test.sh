#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite, offline. VENV as in scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
exec "${VENV:-.venv}/bin/python" -m pytest -q -p no:cacheprovider "$@"
