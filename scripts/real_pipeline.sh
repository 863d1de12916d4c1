#!/usr/bin/env bash
# The RoRo pipeline on the real routing trees of the default local pool, stage by stage (zero model
# calls after recording). Each stage writes under runs/real/; the report goes to docs/reports/real/.
#
#   bash scripts/real_pipeline.sh            # stages 2-4 on the committed trees
#   SEEDS="0" UPDATES=10 bash scripts/real_pipeline.sh   # a quick pass
#
# Stage 1 (recording, hours on a CPU; the committed trees are its output) is:
#   roro record-tree --out $TRAIN --dataset rg:gsm_symbolic --seed 0 --limit 300 --depth 1 --compact
#   roro record-tree --out $TEST --dataset rg:gsm_symbolic --seed 1000 --limit 100 --depth 1 \
#       --routers steer:0.8,specreason:0.6,trim:0.5,random:0.5 --seed 1000 --compact
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
PY=${PY:-.venv/bin/python}
ROOT=data/trees/qwen2.5-coder-0.5b-1.5b
TRAIN=${TRAIN:-$ROOT/gsm_symbolic-train}
TEST=${TEST:-$ROOT/gsm_symbolic-test}
SEEDS=${SEEDS:-"0 1 2"}
UPDATES=${UPDATES:-30}
TRAIN_QUERIES=${TRAIN_QUERIES:-1000}   # the first N problems of the training tree (default: all)
OUT=${OUT:-runs/real}
REPORT=${REPORT:-docs/reports/real}
mkdir -p "$OUT"
t() { date +%s; }

# 2. every routing of the training tree as trajectories, and preference pairs with exact step labels
s=$(t)
$PY -m roro_sdk tree leaves "$TRAIN" --out "$OUT/leaves.jsonl"
$PY -m roro_sdk pairs --trajectories "$OUT/leaves.jsonl" --out "$OUT/pairs.jsonl" --process "tree:$TRAIN" \
    --stats-json "$OUT/pairs_stats.json"
echo "stage 2 (leaves, pairs): $(( $(t) - s )) s"

# 3. GRPO routers: outcome-only (lambda_p = 0) and with the process reward, per seed
for variant in outcome process; do
  for seed in $SEEDS; do
    s=$(t)
    $PY -m roro_sdk train-router --config examples/configs/real/grpo_$variant.yaml --set "dataset=tree:$TRAIN" \
        --set "pool=tree:$TRAIN" $( [ $variant = process ] && echo --set "judge=tree:$TRAIN" ) \
        --set seed=$seed --set updates=$UPDATES --set train_queries=$TRAIN_QUERIES --out "$OUT/$variant-s$seed" --overwrite | grep -E "^update +[0-9]*[05] |saved"
    echo "stage 3 ($variant, seed $seed): $(( $(t) - s )) s"
  done
done

# 4. every router on the held-out tree against the exact best possible
s=$(t)
args=()
for variant in outcome process; do
  for seed in $SEEDS; do args+=(--router "$variant=$OUT/$variant-s$seed/router"); done
done
$PY scripts/real_eval.py --tree "$TEST" "${args[@]}" --report "$REPORT" --json "$REPORT/results.json"
echo "stage 4 (held-out evaluation): $(( $(t) - s )) s"
