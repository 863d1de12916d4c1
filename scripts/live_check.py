"""Compare a live run of a router with its replay on a recorded routing tree (the issue's live check).

    RORO_LOCAL_BACKEND=torch roro eval --dataset tree:TREE --router policy:default --max-steps 24 --out runs/live/learned.jsonl
    python scripts/live_check.py --tree TREE --router policy:default --live runs/live/learned.jsonl \
        --json docs/reports/real/live_check.json

The live run uses the real local models (no tree), computing as the tree was recorded (the
committed trees: torch, float32; llama.cpp would write other text); the replay runs the same
router on the tree (zero model calls). Reported: accuracy, large-token share and $/query of both, and how many
trajectories and step slots differ (greedy fp32 steps are deterministic, so none should).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", required=True)
    ap.add_argument("--router", default="policy:default")
    ap.add_argument("--live", required=True, help="trajectories JSONL of the live run (roro eval --out)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from roro_sdk.routers import make_router
    from roro_sdk.runtime import StepwiseRuntime
    from roro_sdk.trajectories import read_trajectories
    from roro_sdk.tree import RoutingTree

    router = make_router(args.router)
    live = {t.query.id: t for t in read_trajectories(args.live) if t.router == router.name}  # one router's runs
    tree = RoutingTree(args.tree)
    queries = [q for q in tree.queries if q.id in live]
    if not queries:
        raise SystemExit(f"{args.live} holds no run of {router.name} on a query of {args.tree}")
    runtime = StepwiseRuntime(tree.pool(), router, max_steps=tree.manifest.recording.max_steps)
    replay = {t.query.id: t for t in runtime.run_many(queries)}
    ids = [q.id for q in queries]
    lv, rp = [live[i] for i in ids], [replay[i] for i in ids]

    def summary(ts):
        large = sum(s.output_tokens for t in ts for s in t.steps if s.model == tree.pool().large)
        total = sum(s.output_tokens for t in ts for s in t.steps)
        return {"accuracy": sum(bool(t.correct) for t in ts) / len(ts), "large_token_share": large / max(1, total),
                "mean_cost_usd": sum(t.cost_usd for t in ts) / len(ts)}

    def steps(t):
        return [(s.model, s.text) for s in t.steps]

    slots = sum(max(len(a.steps), len(b.steps)) for a, b in zip(lv, rp))
    differ = sum(1 for a, b in zip(lv, rp) for i in range(max(len(a.steps), len(b.steps)))
                 if steps(a)[i:i + 1] != steps(b)[i:i + 1])
    out = {"tree": args.tree, "router": args.router, "queries": len(ids), "live": summary(lv), "replay": summary(rp),
           "identical_trajectories": sum(steps(a) == steps(b) for a, b in zip(lv, rp)),
           "same_verdict": sum(bool(a.correct) == bool(b.correct) for a, b in zip(lv, rp)),
           "step_slots": slots, "differing_step_slots": differ,
           "live_wall_s_p50": sorted(t.wall_time_s for t in lv)[len(lv) // 2]}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    for side in ("live", "replay"):
        s = out[side]
        print(f"{side:<7} accuracy {s['accuracy']:.1%}  large tokens {s['large_token_share']:.1%}  $/query {s['mean_cost_usd']:.3e}")
    print(f"{out['identical_trajectories']}/{len(ids)} trajectories identical, {out['differing_step_slots']} of "
          f"{slots} step slots differ, {out['same_verdict']}/{len(ids)} same verdict")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
