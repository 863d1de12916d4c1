"""Record a routing tree once, then evaluate every router on it with zero model calls, against the
exact best possible routing.

Offline. By default on the sim bench (seconds); ``--tree PATH`` replays a tree already recorded,
e.g. the committed real-model tree (no model is loaded, no call is made):

    python examples/routing_tree.py                                   # sim: record, replay, report
    python examples/routing_tree.py --tree data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-test

Recording a real tree is ``roro record-tree`` (see docs/trees.md); it takes hours of CPU for the
local pool, which is why trees are recorded once and committed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roro_sdk.eval import evaluate, write_report  # noqa: E402
from roro_sdk.tree import RoutingTree, best_plan_mix, best_under_share, record_tree  # noqa: E402

ROUTERS = ["steer:0.8", "specreason:0.5", "trim:0.5"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", default=None, help="replay this recorded tree instead of recording a sim one")
    ap.add_argument("--queries", type=int, default=40, help="sim queries to record")
    ap.add_argument("--depth", type=int, default=2, help="sim tree: routing decisions branched over")
    ap.add_argument("--out", default="runs/routing_tree")
    a = ap.parse_args()
    out = Path(a.out)

    if a.tree is None:  # record a sim tree: every model writes every step of the first `depth` steps
        from roro_sdk.sim import parse_sim_spec, sim_pool, sim_queries

        spec = "sim:min_steps=2,max_steps=4"
        res = record_tree(sim_pool(parse_sim_spec(spec)), sim_queries(spec, n=a.queries, seed=7), out / "tree",
                          depth=a.depth, max_steps=12, routers=ROUTERS, compact=True)
        print(f"recorded {res.calls} tree steps and {res.router_live_calls} router calls in {res.wall_s:.1f} s")
        tree = RoutingTree(out / "tree")
        routers = ROUTERS
    else:
        tree = RoutingTree(a.tree)
        routers = [r for r in tree.manifest.recording.side_call_routers if not r.startswith("random")]

    pool = tree.pool()  # replay: a call the tree does not hold is an error, never a model call
    rec = tree.manifest.recording
    results = evaluate(pool, tree.queries, routers, max_steps=rec.max_steps, dataset=str(tree.folder), bootstrap=500)
    misses = pool.cache.stats.misses
    print(f"{len(tree.queries)} queries replayed, {pool.cache.stats.hits} calls answered by the tree, {misses} outside it")
    b = results.analysis.best_possible
    print(f"{'router':<16} {'accuracy':>8} {'$/query':>10} {'share of achievable gain':>25}")
    for r in results.runs:
        share = b.gain_share.get(r.label)
        print(f"{r.label:<16} {r.accuracy:8.1%} {r.mean_cost_usd:10.3g} {'-' if share is None else f'{share:.0%}':>25}")
    print(f"{'best possible':<16} {b.accuracy:8.1%} {b.mean_cost_usd:10.3g}   (exact, inside the tree)")
    # under a cap on the large model's share of output tokens: the best a router can do knowing
    # each query's outcomes, and knowing nothing of the query (a fixed random mix of plans)
    trees, kw = tree.query_trees(pool=pool), dict(names=pool.names, free_steps=tree.free_steps)
    knows, blind = best_under_share(trees, pool.large, 0.3, **kw), best_plan_mix(trees, pool.large, 0.3, **kw)
    if knows is not None and blind is not None:
        print(f"{pool.large} at most 30% of output tokens: best possible {knows.accuracy:.1%}, "
              f"best blind mix of plans {blind.accuracy:.1%}")
    paths = write_report(results, out / "report", plots=False)
    print(f"report: {paths['markdown']}")


if __name__ == "__main__":
    main()
