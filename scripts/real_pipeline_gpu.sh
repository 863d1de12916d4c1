#!/usr/bin/env bash
# Deprecated: scripts/real_pipeline.sh with JOBS=all does this (every Judge seed, then every router,
# side by side on one GPU). Kept so the fourth run's commands in docs/reports/real.md still work;
# it maps this script's old variable names onto real_pipeline.sh's.
#   JSEEDS -> JUDGE_SEEDS, LIMIT -> TRAIN_QUERIES, R -> OUT (report in OUT/report), JSTEPS -> JUDGE_STEPS
echo "real_pipeline_gpu.sh is deprecated: use JOBS=all bash scripts/real_pipeline.sh" >&2
R=${R:-runs/real-gpu}
JUDGE_STEPS=${JUDGE_STEPS:-${JSTEPS:-}}
RUBRICOR_STEPS=${RUBRICOR_STEPS:-${JSTEPS:+1}}
export JUDGE_SEEDS=${JUDGE_SEEDS:-${JSEEDS:-"0 1 2"}} TRAIN_QUERIES=${TRAIN_QUERIES:-${LIMIT:-1000}} \
  OUT=${OUT:-$R} REPORT=${REPORT:-$R/report} JUDGE_STEPS RUBRICOR_STEPS JOBS=${JOBS:-all}
exec bash "$(dirname "$0")/real_pipeline.sh"
