#!/usr/bin/env bash
# The RoRo pipeline on the real routing trees of the default local pool, stage by stage (zero model
# calls after recording). Each stage writes under runs/real/; the report goes to docs/reports/real/.
#
#   bash scripts/real_pipeline.sh            # stages 2-4 on the committed trees, one training at a time
#   SEEDS="0" UPDATES=10 bash scripts/real_pipeline.sh   # a quick pass
#   JOBS=all UPDATES=100 JUDGE_SEEDS="0 1 2 3 4 5 6 7" bash scripts/real_pipeline.sh
#                                            # one GPU: every Judge seed, then every router, side by side
#
# JOBS is how many trainings run at once (Judge seeds in stage 3a, routers in 3b); each writes
# OUT/<name>.log. A 135M model leaves a big GPU mostly idle, so there JOBS=all is what fills it:
# on one H200 (docs/reports/real.md, fourth run) 3 Judge seeds took 68 s, 9 routers x 30 updates
# 72 s, evaluation 40 s; 8 Judge seeds 130 s, 9 routers x 100 updates 146 s.
# On a 2-core CPU JOBS=2 runs one job per core; mind the memory: a RoRo router run holds the
# router, the Judge and the Rubricor (10-12.5 GB RSS on the real tree), the other variants ~7 GB,
# and two RoRo runs side by side were OOM-killed on 24 GB. One thread per job runs best under
# contention (docs/training.md), hence OMP_NUM_THREADS=1 for the trainings unless set.
# A failed training is reported and left out; the later stages go on with the others, and the
# script exits non-zero at the end. Ctrl-C stops the trainings in progress (they resume from their
# checkpoints: --resume) and the script; for a run in the background, signal its process group
# (kill -INT -- -PGID).
#
# Stage 1 (recording, hours on a CPU; the committed trees are its output) is scripts/record_trees.sh:
#   bash scripts/record_trees.sh train; bash scripts/record_trees.sh test   # resumable
#   SNAPSHOT=1 bash scripts/record_trees.sh train   # (and test) copy the complete problems into data/trees/
set -uo pipefail
trap 'echo "interrupted"; exit 130' INT TERM  # runs once the stage in progress has stopped
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
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
JUDGE_STEPS=${JUDGE_STEPS:-}           # Judge steps per round (default: examples/configs/real/judge.yaml's)
RUBRICOR_STEPS=${RUBRICOR_STEPS:-}     # Rubricor steps per round (default: the config's)
JOBS=${JOBS:-1}                        # trainings at once: a number, or all
DEVICE=${DEVICE:-auto}                 # auto (the GPU if torch sees one), cpu or cuda
REPORT=${REPORT:-docs/reports/real}
EVAL=${EVAL:-1}                        # 0: skip stage 4 (e.g. variants trained by two jobs side by side, evaluated together after)
EVAL_BASELINES=${EVAL_BASELINES:-}     # stage 4's baselines (default: real_eval.py's list)
[[ "$JOBS" == all || "$JOBS" =~ ^[1-9][0-9]*$ ]] || { echo "JOBS must be a positive number or all, not '$JOBS'"; exit 2; }
mkdir -p "$OUT"
t() { date +%s; }
failed=0

# run_jobs: the jobs on stdin, one a line ("name<TAB>command"), at most JOBS at once; each logs to
# OUT/name.log (follow one with tail -f) and leaves its exit status in OUT/name.rc. A job runs
# until its .rc exists (not `kill -0` on a pid, which another process may reuse). Background jobs
# ignore Ctrl-C, so on INT or TERM the trainings are sent TERM (their checkpoints allow a resume).
run_jobs() {
  local names=() wrappers=() name cmd n p running
  trap 'for n in ${names[@]+"${names[@]}"}; do [[ -f "$OUT/$n.pid" ]] && kill -TERM "$(cat "$OUT/$n.pid")" 2>/dev/null; done
        for p in ${wrappers[@]+"${wrappers[@]}"}; do wait "$p"; done; exit 130' INT TERM
  while IFS=$'\t' read -r name cmd; do
    if [[ "$JOBS" != all ]]; then
      while :; do
        running=0
        for n in ${names[@]+"${names[@]}"}; do [[ -f "$OUT/$n.rc" ]] || running=$((running + 1)); done
        (( running < JOBS )) && break
        sleep 1
      done
    fi
    rm -f "$OUT/$name.rc" "$OUT/$name.pid"
    ( bash -c "$cmd" > "$OUT/$name.log" 2>&1 &
      echo $! > "$OUT/$name.pid"
      wait $!
      echo $? > "$OUT/$name.rc"
      rm -f "$OUT/$name.pid" ) &
    names+=("$name")
    wrappers+=($!)
  done
  for p in ${wrappers[@]+"${wrappers[@]}"}; do wait "$p"; done
}
job_ok() { [[ -f "$OUT/$1.rc" && "$(cat "$OUT/$1.rc")" == 0 ]]; }
report_job() {  # the job's last progress lines, or its failure
  if job_ok "$1"; then
    grep -E "$2" "$OUT/$1.log" | tail -"${3:-3}" | sed "s/^/$1: /"
  else
    echo "$1: FAILED (exit $(cat "$OUT/$1.rc" 2>/dev/null || echo '?')); last lines of $OUT/$1.log:"
    tail -5 "$OUT/$1.log" | sed "s/^/  /"
    failed=1
  fi
}
q() { printf '%q ' "$@"; }  # a command line, quoted for run_jobs

# 2. every routing of the training tree as trajectories, and preference pairs with exact step labels
s=$(t)
"$PY" -m roro_sdk tree leaves "$TRAIN" --limit "$TRAIN_QUERIES" --out "$OUT/leaves.jsonl" || exit 5
"$PY" -m roro_sdk pairs --trajectories "$OUT/leaves.jsonl" --out "$OUT/pairs.jsonl" --process "tree:$TRAIN" \
    --stats-json "$OUT/pairs_stats.json" || exit 5
echo "stage 2 (leaves, pairs): $(( $(t) - s )) s"

# 3a. the Rubricor and the Judge, trained alternately on those pairs (LoRA on SmolLM2-135M), one
# run per Judge seed on one held-out split; the run with the best held-out pairwise accuracy is the
# RoRo routers' Judge, and when none beats chance (50%) there is no usable process reward: the RoRo
# variant is then not trained (it would be the outcome-only router)
JUDGE=none
if [[ " $VARIANTS " == *" roro "* ]]; then
  [ -n "$JUDGE_SEEDS" ] || { echo "JUDGE_SEEDS is empty: give at least one Judge seed"; exit 2; }
  rm -f "$OUT"/judge-scores-*.jsonl   # scores of an earlier Judge: refused against a new one
  steps=()
  [ -n "$JUDGE_STEPS" ] && steps+=(--judge-steps "$JUDGE_STEPS")
  [ -n "$RUBRICOR_STEPS" ] && steps+=(--rubricor-steps "$RUBRICOR_STEPS")
  s=$(t)
  for js in $JUDGE_SEEDS; do
    rm -rf "$OUT/judge-s$js"
    printf 'judge-s%s\t%s\n' "$js" "OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $(q "$PY" -m roro_sdk train-judge \
      --trajectories "$OUT/leaves.jsonl" --pairs "$OUT/pairs.jsonl" --judge smollm2-135m-instruct \
      --rubricor smollm2-135m-instruct --config examples/configs/real/judge.yaml --labeler "$LABELER" \
      --seed "$js" --split-seed 0 --device "$DEVICE" ${steps[@]+"${steps[@]}"} --out "$OUT/judge-s$js")"
  done | run_jobs
  echo "stage 3a (Judge and Rubricor, seeds $JUDGE_SEEDS, $JOBS at once): $(( $(t) - s )) s"
  judges=()
  for js in $JUDGE_SEEDS; do
    report_job "judge-s$js" "^round|^[a-z]+ +[0-9]" 8
    job_ok "judge-s$js" && judges+=("$OUT/judge-s$js")
  done
  if [ ${#judges[@]} -gt 0 ]; then
    if pick=$("$PY" -m roro_sdk pick-judge "${judges[@]}" --json "$OUT/judge-pick.json"); then
      echo "$pick"
      JUDGE=$(echo "$pick" | tail -1)
    else
      echo "roro pick-judge failed (above)"
      failed=1
    fi
  fi
  if [[ "$JUDGE" == none ]]; then
    echo "stage 3a: no usable Judge (none beat chance on its held-out pairs, or none trained); the RoRo variant is left out"
    VARIANTS=$(echo " $VARIANTS " | sed 's/ roro / /')
  fi
fi

# 3b. GRPO routers per seed: outcome-only (lambda_p = 0), RoRo (the trained Judge's process
# reward) and process (the tree's exact step labels as the process reward: the upper bound a
# perfect Judge would give)
s=$(t)
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    extra=()
    [ $variant = process ] && extra=(--set "judge=tree:$TRAIN")
    if [ $variant = roro ]; then
      # the Judge's scores of the tree's routings, kept once for every later seed (judge_cache);
      # one file per seed when seeds train at once (one writer per file)
      cache="$OUT/judge-scores-$(basename "$JUDGE").jsonl"
      [[ "$JOBS" != 1 ]] && cache="$OUT/judge-scores-$(basename "$JUDGE")-s$seed.jsonl"
      extra=(--set "judge=$JUDGE" --set "judge_cache=$cache")
    fi
    [ -n "$LAMBDA_C" ] && extra+=(--set "rewards.lambda_c=$LAMBDA_C")
    printf '%s-s%s\t%s\n' "$variant" "$seed" "OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} $(q "$PY" -m roro_sdk train-router \
      --config "examples/configs/real/grpo_$variant.yaml" --set "dataset=tree:$TRAIN" --set "pool=tree:$TRAIN" \
      ${extra[@]+"${extra[@]}"} --set "seed=$seed" --set "updates=$UPDATES" --set "entropy_coef=$ENTROPY" \
      --set "train_queries=$TRAIN_QUERIES" --set "device=$DEVICE" --out "$OUT/$variant-s$seed" --overwrite)"
  done
done | run_jobs
echo "stage 3b (routers: $VARIANTS x seeds $SEEDS, $JOBS at once): $(( $(t) - s )) s"
args=()
for variant in $VARIANTS; do
  for seed in $SEEDS; do
    report_job "$variant-s$seed" "^update +[0-9]*[05] |saved"
    job_ok "$variant-s$seed" && args+=(--router "$variant=$OUT/$variant-s$seed/router")
  done
done

# 4. every baseline and each seed's router on the held-out tree, against the exact best possible
if [[ "$EVAL" == "1" ]]; then
  s=$(t)
  "$PY" scripts/real_eval.py --tree "$TEST" ${args[@]+"${args[@]}"} --device "$DEVICE" \
      ${EVAL_BASELINES:+--baselines "$EVAL_BASELINES"} --report "$REPORT" --json "$REPORT/results.json" || exit 5
  echo "stage 4 (held-out evaluation): $(( $(t) - s )) s"
fi

# 5. (SHIP=1) the router that ships as policy:default: the candidate with the best APGR on the
# training tree (never the held-out one), exported small with its provenance; it replaces the
# router that ships now only if it beats that one's APGR there (INCUMBENT=none: no such check)
if [[ "${SHIP:-0}" == "1" ]]; then
  (( failed == 0 )) || { echo "not shipping: a stage failed (above)"; exit 1; }
  cands=()
  for variant in $VARIANTS; do
    i=0
    for seed in $SEEDS; do cands+=(--candidate "$variant s$i=$OUT/$variant-s$seed"); i=$((i + 1)); done
  done
  incumbent=()
  [[ "${INCUMBENT:-policy:default}" != none ]] && incumbent=(--incumbent "${INCUMBENT:-policy:default}")
  "$PY" scripts/ship_router.py --train-tree "$TRAIN" "${cands[@]}" ${incumbent[@]+"${incumbent[@]}"} \
      --heldout "$REPORT/results.json" --out roro_sdk/data/routers/default || exit 5
fi
exit $failed
