"""Evaluate the baselines and trained routers on a held-out routing tree (zero model calls).

    python scripts/real_eval.py --tree data/trees/.../gsm_symbolic-test \
        --router outcome=runs/real/outcome-s0/router --router outcome=runs/real/outcome-s1/router ... \
        --report docs/reports/real --json docs/reports/real/results.json

Routers sharing a name (``outcome=...`` given once per seed) are reported per seed
(``outcome s0``) and summarised across seeds in the JSON (mean, min and max of each metric).
Beside each router: its *information gain*, its accuracy above the best mix of fixed plans at its
own large-token share (``roro_sdk.tree.token_share.best_plan_mix``: about 0 for a router that
learned a mix of plans but not which query needs which model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

BASELINES = ["all-small", "all-large", "random:0.5", "steer:0.8", "specreason:0.6", "trim:0.5", "query:0.5"]
METRICS = ["accuracy", "mean_cost_usd", "large_token_share", "apgr", "gain_share", "information_gain"]


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", required=True)
    ap.add_argument("--router", action="append", default=[], help="NAME=FOLDER of a trained policy router (repeat per seed)")
    ap.add_argument("--baselines", default=",".join(BASELINES))
    ap.add_argument("--seed", type=int, default=None, help="router seed (default: the tree's recording seed)")
    ap.add_argument("--report", default=None, help="folder for report.md and the plot")
    ap.add_argument("--json", default=None, help="results JSON")
    ap.add_argument("--device", default="cpu", help="where the trained routers run: cpu, cuda or auto")
    ap.add_argument("--share-cap", type=float, default=0.3,
                    help="the large model's share of output tokens for the two bounds reported beside the routers")
    args = ap.parse_args()

    from roro_sdk.eval import evaluate, write_report
    from roro_sdk.hf import resolve_device
    from roro_sdk.policy.router import PolicyRouter
    from roro_sdk.tree import RoutingTree
    from roro_sdk.tree.token_share import best_plan_mix, best_under_share

    tree = RoutingTree(args.tree)
    pool, queries = tree.pool(), tree.queries
    routers: list = [b for b in args.baselines.split(",") if b]
    names: dict[str, list[str]] = defaultdict(list)
    device = resolve_device(args.device)
    for spec in args.router:
        name, _, folder = spec.partition("=")
        label = f"{name} s{len(names[name])}"
        names[name].append(label)
        r = PolicyRouter.load(folder).to(device)
        r.name = name
        routers.append((label, r))
    t0 = time.perf_counter()
    # the seed the tree's router side calls were recorded with: a seeded router (random) then
    # replays its recorded paths instead of leaving the tree
    seed = args.seed if args.seed is not None else tree.recording_seed
    res = evaluate(pool, queries, routers, max_steps=tree.manifest.recording.max_steps, progress=False, seed=seed,
                   dataset=f"tree:{tree.folder.name} ({len(queries)} held-out queries)", bootstrap=2000)
    wall = time.perf_counter() - t0
    curves = {c.family: c for c in res.analysis.curves}
    gains = res.analysis.best_possible.gain_share if res.analysis.best_possible else {}
    # what any router can reach with the large model under the cap: knowing each query's outcomes,
    # and knowing nothing of the query (one mix of plans for all)
    qtrees = tree.query_trees(queries, pool=pool)
    kw = dict(names=pool.names, free_steps=tree.free_steps)
    knows = best_under_share(qtrees, pool.large, args.share_cap, **kw)
    blind = best_plan_mix(qtrees, pool.large, args.share_cap, **kw)
    # the bounds count the queries whose tree holds every plan; a router's run counts them all
    same_queries = knows is not None and knows.queries == len(queries)
    if not same_queries:
        print("information gain: n/a (not every query's tree holds every plan)")
    rows = {}
    for run in res.runs:
        c = curves.get(run.family)
        # a router's information gain: its accuracy above the best blind mix of plans at its own
        # large-token share (about 0: it learned a mix of plans, not which query needs which)
        at = best_plan_mix(qtrees, pool.large, min(1.0, run.large_token_share + 1e-9), **kw) if same_queries else None
        rows[run.label] = {
            "accuracy": run.accuracy, "accuracy_ci": run.accuracy_ci, "mean_cost_usd": run.mean_cost_usd,
            "mean_cost_ci": run.mean_cost_ci, "large_token_share": run.large_token_share, "errors": run.errors,
            "apgr": (c.share or {}).get("apgr") if c is not None and len(c.points) == 1 else None,
            "gain_share": gains.get(run.label), "model_calls": (run.cache or {}).get("misses"),
            "blind_mix_accuracy": None if at is None else at.accuracy,
            "information_gain": None if at is None else run.accuracy - at.accuracy,
        }
    seeds = {}
    for name, labels in names.items():
        seeds[name] = {}
        for m in METRICS:
            vals = [rows[lab][m] for lab in labels if rows[lab][m] is not None]
            if vals:
                seeds[name][m] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    bp = res.analysis.best_possible
    out = {
        "tree": str(args.tree), "queries": len(queries), "wall_s": wall,
        "best_possible": None if bp is None else {"accuracy": bp.accuracy, "mean_cost_usd": bp.mean_cost_usd},
        "token_share": {"model": pool.large, "cap": args.share_cap, "best_possible": knows and asdict(knows),
                        "best_blind_mix": blind and asdict(blind)},
        "routers": rows, "across_seeds": seeds,
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(), "load_average": os.getloadavg(),
    }
    if args.report:
        write_report(res, args.report, title="Routers on the held-out real routing tree")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"{'router':<22} {'accuracy':>9} {'$/query':>10} {'large tok':>9} {'APGR':>6} {'gain':>6} {'info':>6}")
    for label, r in rows.items():
        f = lambda v, fmt: "n/a" if v is None else format(v, fmt)  # noqa: E731
        print(f"{label:<22} {r['accuracy']:>9.1%} {r['mean_cost_usd']:>10.3e} {r['large_token_share']:>9.1%} "
              f"{f(r['apgr'], '6.2f'):>6} {f(r['gain_share'], '6.2f'):>6} {f(r['information_gain'], '+6.3f'):>6}")
    if bp is not None:
        print(f"{'best possible':<22} {bp.accuracy:>9.1%} {bp.mean_cost_usd:>10.3e}")
    for label, b in ((f"best, large <= {args.share_cap:.0%}", knows), (f"blind mix, <= {args.share_cap:.0%}", blind)):
        if b is not None:
            print(f"{label:<22} {b.accuracy:>9.1%} {b.mean_cost_usd:>10.3e} {b.share:>9.1%}")
    for name, s in seeds.items():
        print(f"{name} over {s['accuracy']['n']} seeds: accuracy {s['accuracy']['mean']:.1%} "
              f"[{s['accuracy']['min']:.1%}, {s['accuracy']['max']:.1%}], large tokens {s['large_token_share']['mean']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
