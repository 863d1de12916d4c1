#!/usr/bin/env bash
# Stage 1 of scripts/real_pipeline.sh: grow the default pool's committed routing trees toward the
# issue's 300 training and 100 held-out gsm_symbolic problems, then snapshot them into data/trees/.
#
#   bash scripts/record_trees.sh test            # the held-out tree (seed 1000, side calls of 4 routers)
#   bash scripts/record_trees.sh train           # the training tree (seed 0, no side calls)
#   LIMIT=80 bash scripts/record_trees.sh test   # a shorter slice
#   SNAPSHOT=1 bash scripts/record_trees.sh test # no recording: copy the complete prefix into data/trees/
#   DRY_RUN=1 ...                                # print the commands only
#
# Resumable: stop it at any time (Ctrl-C, kill, a reboot) and run it again; every recorded call is
# answered from the working copy. The working copy is WORK/<tree> (default
# ~/.cache/roro-sdk/trees; a relative WORK is taken from the repository's root), seeded from the
# committed tree the first time. Nothing is committed: after SNAPSHOT=1, check `roro tree info`
# and commit data/trees/ yourself.
#
# Settings: the committed trees were computed on the torch engine in float32, and a tree refuses
# another computation, so these do too. The number of problems in flight is what fills a CPU's
# decode batches: 24 problems, up to 72 calls, 48 rows and 2 GB of prefix cache per model. More
# problems record faster but were killed for memory on a 23.5 GiB machine; docs/trees.md ("On a
# CPU, fill the batches") has the measurements. A kill loses only the calls in flight: run the
# script again. On a smaller machine: QUERY_WINDOW=12 CONCURRENCY=32 RORO_LOCAL_MAX_BATCH=32
# RORO_LOCAL_PREFIX_CACHE_MB=3072 (about 13 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-}
case "$which" in
  train) seed=0; limit=${LIMIT:-300}; routers=() ;;
  test) seed=1000; limit=${LIMIT:-100}; routers=(--routers steer:0.8,specreason:0.6,trim:0.5,random:0.5) ;;
  *) echo "usage: bash scripts/record_trees.sh train|test   (see the header of this script)" >&2; exit 2 ;;
esac
[[ "$limit" =~ ^[1-9][0-9]*$ ]] || { echo "LIMIT must be a positive number, not '$limit'" >&2; exit 2; }
PY=${PY:-.venv/bin/python}
committed=data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-$which
work=${WORK:-${RORO_CACHE_DIR:-$HOME/.cache/roro-sdk}/trees}/gsm_symbolic-$which
export HF_HUB_OFFLINE=1 LITELLM_LOCAL_MODEL_COST_MAP=True TOKENIZERS_PARALLELISM=false
export RORO_LOCAL_BACKEND=torch RORO_LOCAL_DTYPE=float32
export RORO_LOCAL_MAX_BATCH=${RORO_LOCAL_MAX_BATCH:-48} RORO_LOCAL_PREFIX_CACHE_MB=${RORO_LOCAL_PREFIX_CACHE_MB:-2048}
# glibc's default per-thread arenas keep more of the freed KV memory
export MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-2}
run() { if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi; }

if [[ -n "${SNAPSHOT:-}" ]]; then
  [[ -d "$work" ]] || { echo "no recording in $work yet: run without SNAPSHOT first" >&2; exit 2; }
  run "$PY" -m roro_sdk tree snapshot "$work" --out "$committed" --limit "$limit"
  run "$PY" -m roro_sdk tree info "$committed"
  exit 0
fi
if [[ ! -f "$work/manifest.json" ]]; then  # seeded whole or not at all: a half copy would record from scratch
  [[ -e "$work" ]] && { echo "$work exists without a manifest: remove it or set WORK" >&2; exit 2; }
  run mkdir -p "$work.tmp"
  run cp "$committed/manifest.json" "$committed/queries.jsonl" "$committed/calls.jsonl.gz" "$work.tmp/"
  run mv "$work.tmp" "$work"
fi
run "$PY" -m roro_sdk record-tree --out "$work" --dataset rg:gsm_symbolic --seed "$seed" --limit "$limit" --depth 1 \
  ${routers[@]+"${routers[@]}"} --concurrency "${CONCURRENCY:-72}" --query-window "${QUERY_WINDOW:-24}"
echo "recorded into $work; copy its complete problems with: SNAPSHOT=1 bash scripts/record_trees.sh $which"
