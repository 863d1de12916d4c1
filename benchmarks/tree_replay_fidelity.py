"""Replay fidelity on a real recorded tree: live runs of the tree's pool against the tree's replay.

For each router, the first N queries of the tree are run live (the local models, a fresh process,
its own batch compositions) and replayed from the tree (zero calls); the script counts the steps
that differ (text or model), the trajectories whose answer differs, and the live calls that fall
outside the tree, and times both. Greedy decoding is a pure function of the prefix only for a fixed
way of computing it: fp32 here is batch-invariant in our measurements, bf16 is not
(docs/benchmarks/local.md), so a difference is reported, not hidden.

    python benchmarks/tree_replay_fidelity.py --tree data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-test \
        --limit 20 --routers all-small,all-large
    python benchmarks/tree_replay_fidelity.py --tree data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-train \
        --offset 200 --limit 12 --out benchmarks/results/tree_replay_fidelity_train200.json

Writes benchmarks/results/tree_replay_fidelity.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roro_sdk.routers import make_router  # noqa: E402
from roro_sdk.runtime import StepwiseRuntime  # noqa: E402
from roro_sdk.tree import RoutingTree  # noqa: E402


def compare(live, rep) -> dict:
    steps = differ = answers = 0
    first_diff = []
    for a, b in zip(live, rep):
        answers += a.answer != b.answer
        for i in range(max(len(a.steps), len(b.steps))):
            steps += 1
            sa = a.steps[i] if i < len(a.steps) else None
            sb = b.steps[i] if i < len(b.steps) else None
            if sa is None or sb is None or (sa.model, sa.text) != (sb.model, sb.text):
                differ += 1
                if len(first_diff) < 3:
                    first_diff.append({"query": a.query.id, "step": i, "live": sa and sa.text[:120], "tree": sb and sb.text[:120]})
    return {"steps": steps, "steps_differ": differ, "share_differ": differ / max(1, steps), "answers_differ": answers,
            "examples": first_diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--offset", type=int, default=0,
                    help="skip the tree's first queries (e.g. to check the part recorded with other batch settings)")
    ap.add_argument("--routers", default="all-small,all-large")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/tree_replay_fidelity.json")
    a = ap.parse_args()
    tree = RoutingTree(a.tree)
    if a.offset < 0 or a.offset >= len(tree.queries):
        ap.error(f"--offset must be in 0..{len(tree.queries) - 1} for this tree")
    qs = tree.queries[a.offset : a.offset + a.limit]
    live_pool = tree.manifest.make_pool()
    replay_pool = tree.pool()
    rec = tree.manifest.recording
    load0 = os.getloadavg()
    rows = {}
    for spec in [r.strip() for r in a.routers.split(",") if r.strip()]:
        t0 = time.perf_counter()
        rep = StepwiseRuntime(replay_pool, make_router(spec, seed=0), max_steps=rec.max_steps).run_many(qs, concurrency=a.concurrency)
        t_rep = time.perf_counter() - t0
        t0 = time.perf_counter()
        live = StepwiseRuntime(live_pool, make_router(spec, seed=0), max_steps=rec.max_steps).run_many(qs, concurrency=a.concurrency)
        t_live = time.perf_counter() - t0
        rows[spec] = dict(compare(live, rep), live_s=t_live, replay_s=t_rep,
                          replay_errors=sum(t.stop_reason == "error" for t in rep),
                          live_accuracy=sum(bool(t.correct) for t in live) / len(qs),
                          replay_accuracy=sum(bool(t.correct) for t in rep) / len(qs))
        r = rows[spec]
        print(f"{spec:<14} steps {r['steps']:4d}  differ {r['steps_differ']:3d} ({r['share_differ']:.1%})  answers differ "
              f"{r['answers_differ']}  live {t_live:7.1f} s  replay {t_rep:6.3f} s", flush=True)
    result = {"tree": a.tree, "offset": a.offset, "queries": len(qs), "weights": tree.manifest.weights, "concurrency": a.concurrency,
              "load_before": load0, "load_after": os.getloadavg(), "routers": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"result: {a.out}")


if __name__ == "__main__":
    main()
