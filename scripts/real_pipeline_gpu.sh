#!/usr/bin/env bash
# The RoRo pipeline on the committed real routing trees on one GPU: scripts/real_pipeline.sh's
# stages 2-4, with every Judge seed and then every router (variant x seed) trained side by side,
# one process each (a 135M model leaves an H200 mostly idle, so side by side is what fills it).
# Measured on one H200 (docs/reports/real.md, fourth run): 3 Judge seeds 68 s, 9 routers x 30
# updates 72 s, evaluation 40 s; 8 Judge seeds 130 s, 9 routers x 100 updates 146 s.
#
#   bash scripts/real_pipeline_gpu.sh                          # 3 Judge seeds, 30 updates
#   JSEEDS="0 1 2 3 4 5 6 7" UPDATES=100 R=runs/real-gpu100 bash scripts/real_pipeline_gpu.sh
set -u
cd "$(dirname "$0")/.."
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
PY=${PY:-.venv/bin/python}
LIMIT=${LIMIT:-1000}                  # the first N problems of the training tree (default: all)
EVAL_BASELINES=${EVAL_BASELINES:-}     # baselines of stage 4 (default: real_eval.py's list)
UPDATES=${UPDATES:-30}
JSEEDS=${JSEEDS:-"0 1 2"}
SEEDS=${SEEDS:-"0 1 2"}
JSTEPS=${JSTEPS:-}                     # a quick pass: Judge steps per seed (and one Rubricor step)
R=${R:-runs/real-gpu}
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

ROOT=data/trees/qwen2.5-coder-0.5b-1.5b
TRAIN=$ROOT/gsm_symbolic-train
TEST=$ROOT/gsm_symbolic-test
mkdir -p $R
# 2. every routing of the training tree, and its preference pairs with exact step labels
$PY -m roro_sdk tree leaves $TRAIN --limit ${LIMIT:-1000} --out $R/leaves.jsonl || exit 5
$PY -m roro_sdk pairs --trajectories $R/leaves.jsonl --out $R/pairs.jsonl --process tree:$TRAIN --stats-json $R/pairs_stats.json || exit 5
echo "[$(el) s] stage 2 done"

# 3a. one Judge per seed, side by side, on one held-out split; the best on its held-out pairs is kept
jargs=()
pids=()
[ -n "$JSTEPS" ] && jargs=(--judge-steps "$JSTEPS" --rubricor-steps 1)
s=$(date +%s)
rm -f "$R"/judge-scores-*.jsonl   # scores of an earlier Judge: refused against a new one
for js in $JSEEDS; do
  rm -rf "$R/judge-s$js"
  OMP_NUM_THREADS=2 $PY -m roro_sdk train-judge --trajectories $R/leaves.jsonl --pairs $R/pairs.jsonl \
    --judge smollm2-135m-instruct --rubricor smollm2-135m-instruct --config examples/configs/real/judge.yaml \
    --labeler tree:$TRAIN --seed $js --split-seed 0 --device auto ${jargs[@]+"${jargs[@]}"} --out $R/judge-s$js \
    > $R/judge-s$js.log 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || echo "a Judge training failed (exit $?): see $R/judge-s*.log"; done
echo "[$(el) s] stage 3a: $(( $(date +%s) - s )) s for $(echo $JSEEDS | wc -w) Judge seeds side by side"
for js in $JSEEDS; do grep -E "^round|^[a-z]+ +[0-9]|Error|error" $R/judge-s$js.log | tail -8 | sed "s/^/judge-s$js: /"; done
done_j=()
for js in $JSEEDS; do [ -f $R/judge-s$js/round_1/judge/adapter_model.safetensors ] && done_j+=($R/judge-s$js); done
JUDGE=none
if [ ${#done_j[@]} -gt 0 ]; then
  if ! JUDGE=$($PY -m roro_sdk pick-judge "${done_j[@]}" --json $R/judge-pick.json); then
    echo "roro pick-judge failed (above); the RoRo variant is left out"
    JUDGE=none
  else
    echo "$JUDGE"
    JUDGE=$(echo "$JUDGE" | tail -1)
  fi
fi
echo "chosen Judge: $JUDGE"

# 3b. GRPO routers, every variant and seed side by side
VARIANTS="outcome process"
pids=()
[ "$JUDGE" != none ] && VARIANTS="outcome roro process"
s=$(date +%s)
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    extra=()
    [ $variant = process ] && extra=(--set "judge=tree:$TRAIN")
    [ $variant = roro ] && extra=(--set "judge=$JUDGE" --set "judge_cache=$R/judge-scores-s$seed.jsonl")
    OMP_NUM_THREADS=1 $PY -m roro_sdk train-router --config examples/configs/real/grpo_$variant.yaml \
      --set "dataset=tree:$TRAIN" --set "pool=tree:$TRAIN" ${extra[@]+"${extra[@]}"} --set seed=$seed \
      --set updates=$UPDATES --set entropy_coef=0.05 --set train_queries=${LIMIT:-1000} --out $R/$variant-s$seed --overwrite \
      > $R/$variant-s$seed.log 2>&1 &
    pids+=($!)
  done
done
for p in "${pids[@]}"; do wait "$p" || echo "a router training failed (exit $?): see $R/*-s*.log"; done
echo "[$(el) s] stage 3b: $(( $(date +%s) - s )) s for $VARIANTS x seeds $SEEDS side by side"
args=()
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    grep -E "^update +[0-9]*[05] |saved|Error" $R/$variant-s$seed.log | tail -3 | sed "s/^/$variant-s$seed: /"
    [ -f $R/$variant-s$seed/router/router.json ] && args+=(--router "$variant=$R/$variant-s$seed/router")
  done
done

# 4. every router on the held-out tree against the exact best possible
s=$(date +%s)
OMP_NUM_THREADS=8 $PY scripts/real_eval.py --tree $TEST "${args[@]}" --device auto ${EVAL_BASELINES:+--baselines $EVAL_BASELINES} \
  --report $R/report --json $R/report/results.json
echo "[$(el) s] stage 4: $(( $(date +%s) - s )) s"

echo "[$(el) s] done: $R"
