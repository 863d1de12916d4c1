#!/usr/bin/env bash
# The RoRo pipeline on the real routing trees of the default local pool, stage by stage (zero model
# calls after recording). Each stage writes under runs/real/; the report goes to docs/reports/real/.
#
#   bash scripts/real_pipeline.sh            # stages 2-4 on the committed trees
#   SEEDS="0" UPDATES=10 bash scripts/real_pipeline.sh   # a quick pass
#   VARIANTS=roro EVAL=0 bash scripts/real_pipeline.sh & VARIANTS="outcome process" EVAL=0 OUT=runs/real-b bash scripts/real_pipeline.sh
#                                            # two jobs, one per core; then stage 4 over both OUTs
# Memory: a RoRo router run holds the router, the Judge and the Rubricor (10-12.5 GB RSS on the
# real tree); the other variants ~7 GB. Two RoRo runs side by side were OOM-killed on 24 GB.
# A 2-core CPU runs one thread per job best under contention (docs/training.md): OMP_NUM_THREADS=1.
#
# Stage 1 (recording, hours on a CPU; the committed trees are its output) is:
#   roro record-tree --out $TRAIN --dataset rg:gsm_symbolic --seed 0 --limit 300 --depth 1 --compact
#   roro record-tree --out $TEST --dataset rg:gsm_symbolic --seed 1000 --limit 100 --depth 1 \
#       --routers steer:0.8,specreason:0.6,trim:0.5,random:0.5 --seed 1000 --compact
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True
export RORO_LOCAL_BACKEND="${RORO_LOCAL_BACKEND:-torch}"  # the committed trees were recorded on torch (float32)
PY=${PY:-.venv/bin/python}
ROOT=data/trees/qwen2.5-coder-0.5b-1.5b
TRAIN=${TRAIN:-$ROOT/gsm_symbolic-train}
TEST=${TEST:-$ROOT/gsm_symbolic-test}
SEEDS=${SEEDS:-"0 1 2"}
VARIANTS=${VARIANTS:-"outcome roro process"}
UPDATES=${UPDATES:-30}
TRAIN_QUERIES=${TRAIN_QUERIES:-1000}   # the first N problems of the training tree (default: all)
OUT=${OUT:-runs/real}
LABELER=${LABELER:-tree:$TRAIN}        # the Judge's calibration labels: the training tree's exact criterion labels (none: off)
ENTROPY=${ENTROPY:-0.05}               # GRPO's entropy bonus (0: off; without it runs collapsed onto one model)
LAMBDA_C=${LAMBDA_C:-}                 # the routers' cost weight (default: the configs' 0.3)
JUDGE_SEEDS=${JUDGE_SEEDS:-"0 1 2"}    # one Judge training per seed; the best on held-out pairs is used
REPORT=${REPORT:-docs/reports/real}
EVAL=${EVAL:-1}                        # 0: skip stage 4 (e.g. variants trained by two jobs side by side, evaluated together after)
mkdir -p "$OUT"
t() { date +%s; }

# 2. every routing of the training tree as trajectories, and preference pairs with exact step labels
s=$(t)
$PY -m roro_sdk tree leaves "$TRAIN" --limit "$TRAIN_QUERIES" --out "$OUT/leaves.jsonl"
$PY -m roro_sdk pairs --trajectories "$OUT/leaves.jsonl" --out "$OUT/pairs.jsonl" --process "tree:$TRAIN" \
    --stats-json "$OUT/pairs_stats.json"
echo "stage 2 (leaves, pairs): $(( $(t) - s )) s"

# 3a. the Rubricor and the Judge, trained alternately on those pairs (LoRA on SmolLM2-135M), one
# run per Judge seed on one held-out split; the run with the best held-out pairwise accuracy is the
# RoRo routers' Judge, and when none beats chance (50%) there is no usable process reward: the RoRo
# variant is then not trained (it would be the outcome-only router)
JUDGE="$OUT/judge"
if [[ " $VARIANTS " == *" roro "* ]]; then
  judges=()
  rm -f "$OUT"/judge-scores-*.jsonl   # scores of an earlier Judge: refused against a new one
  [ -n "$JUDGE_SEEDS" ] || { echo "JUDGE_SEEDS is empty: give at least one Judge seed"; exit 2; }
  for js in $JUDGE_SEEDS; do
    s=$(t)
    rm -rf "$OUT/judge-s$js"
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY -m roro_sdk train-judge --trajectories "$OUT/leaves.jsonl" --pairs "$OUT/pairs.jsonl" \
        --judge smollm2-135m-instruct --rubricor smollm2-135m-instruct --config examples/configs/real/judge.yaml \
        --labeler "$LABELER" --seed "$js" --split-seed 0 --out "$OUT/judge-s$js" | { grep -E "^round|^[a-z]+ +[0-9]" || true; }
    judges+=("$OUT/judge-s$js")
    echo "stage 3a (Judge and Rubricor, seed $js): $(( $(t) - s )) s"
  done
  JUDGE=$($PY -m roro_sdk pick-judge "${judges[@]}" --json "$OUT/judge-pick.json")  # set -e: a failure stops here
  echo "$JUDGE"
  JUDGE=$(echo "$JUDGE" | tail -1)
  if [[ "$JUDGE" == none ]]; then
    echo "stage 3a: no Judge beat chance on its held-out pairs; the RoRo variant is left out"
    VARIANTS=$(echo " $VARIANTS " | sed 's/ roro / /')
  fi
fi

# 3b. GRPO routers per seed: outcome-only (lambda_p = 0), RoRo (the trained Judge's process
# reward) and process (the tree's exact step labels as the process reward: the upper bound a
# perfect Judge would give)
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    s=$(t)
    extra=()
    [ $variant = process ] && extra=(--set "judge=tree:$TRAIN")
    # the Judge's scores of the tree's routings are kept once for every seed (judge_cache)
    [ $variant = roro ] && extra=(--set "judge=$JUDGE" --set "judge_cache=$OUT/judge-scores-$(basename "$JUDGE").jsonl")
    [ -n "$LAMBDA_C" ] && extra+=(--set "rewards.lambda_c=$LAMBDA_C")
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $PY -m roro_sdk train-router --config examples/configs/real/grpo_$variant.yaml --set "dataset=tree:$TRAIN" \
        --set "pool=tree:$TRAIN" ${extra[@]+"${extra[@]}"} \
        --set seed=$seed --set updates=$UPDATES --set entropy_coef=$ENTROPY --set train_queries=$TRAIN_QUERIES --out "$OUT/$variant-s$seed" --overwrite | grep -E "^update +[0-9]*[05] |saved"
    echo "stage 3b ($variant, seed $seed): $(( $(t) - s )) s"
  done
done

# 4. every router on the held-out tree against the exact best possible
if [[ "$EVAL" == "1" ]]; then
s=$(t)
args=()
for variant in $VARIANTS; do
  for seed in $SEEDS; do args+=(--router "$variant=$OUT/$variant-s$seed/router"); done
done
$PY scripts/real_eval.py --tree "$TEST" "${args[@]}" --report "$REPORT" --json "$REPORT/results.json"
echo "stage 4 (held-out evaluation): $(( $(t) - s )) s"
fi

# 5. (SHIP=1) the router that ships as policy:default: the candidate with the best APGR on the
# training tree (never the held-out one), exported small with its provenance; it replaces the
# router that ships now only if it beats that one's APGR there (INCUMBENT=none: no such check)
if [[ "${SHIP:-0}" == "1" ]]; then
  cands=()
  for variant in $VARIANTS; do
    i=0
    for seed in $SEEDS; do cands+=(--candidate "$variant s$i=$OUT/$variant-s$seed"); i=$((i + 1)); done
  done
  incumbent=()
  [[ "${INCUMBENT:-policy:default}" != none ]] && incumbent=(--incumbent "${INCUMBENT:-policy:default}")
  $PY scripts/ship_router.py --train-tree "$TRAIN" "${cands[@]}" ${incumbent[@]+"${incumbent[@]}"} \
      --heldout "$REPORT/results.json" --out roro_sdk/data/routers/default
fi
