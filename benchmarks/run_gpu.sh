#!/usr/bin/env bash
# One device session for the GRPO update benchmark (1.5B-shaped router, 8 x 1024 tokens, LoRA r=16):
# first the compiled-vs-eager gradient check of the fused LoRA path on this GPU, then every variant
# side by side, each in its own process, under one global time budget.
# Results (JSON, logs, nvidia-smi) go to $OUT (the device tool's folder) or benchmarks/results.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-benchmarks/results}
BUDGET=${BUDGET:-320}
PY=${PY:-python3}
VARIANTS=${VARIANTS:-fused+compile+swigluk,fused+compile+swiglu,fused+compile,fused+compile+nobuf,nolora+compile,fused,peft,fused+compile+swiglu+ckpt4,fused+perdec,peft+compile}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,driver_version --format=csv | tee "$OUT/nvidia_smi.txt"
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)"
if [ "${CHECK:-1}" = 1 ]; then
  # the package __init__ and tests/conftest.py need litellm/pydantic, absent on a bare GPU box:
  # import roro_sdk.policy through a stub package and skip the conftest
  RORO_COMPILE_TESTS=1 timeout 200 $PY - <<'PYEOF' 2>&1 | tee "$OUT/compile_check.log"
import sys, types
sys.path.insert(0, ".")
stub = types.ModuleType("roro_sdk"); stub.__path__ = ["roro_sdk"]; sys.modules["roro_sdk"] = stub
import pytest
sys.exit(pytest.main(["-q", "--noconftest", "-p", "no:cacheprovider", "tests/test_policy_scoring.py", "-k", "compile or peft"]))
PYEOF
fi
timeout $((BUDGET + 40)) $PY benchmarks/grpo_throughput.py --shape "${SHAPE:-1.5b}" --seq-len "${SEQ:-1024}" --group-size 8 \
  --steps "${STEPS:-8}" --warmup 2 --perdec-steps 2 --variants "$VARIANTS" --time-budget "$BUDGET" --out "$OUT" \
  --profile "${PROFILE:-fused+compile+swigluk,fused+compile+swiglu}" \
  2>&1 | tee "$OUT/grpo_throughput_gpu.log"
