"""Compare routers on a dataset: accuracy with 95% intervals, cost, sweeps, RouteLLM's metrics, a report.

    python examples/evaluate_routers.py                      # the sim bench: offline, ~1 minute
    python examples/evaluate_routers.py --pool pool.yaml --dataset data.jsonl --limit 50
    python examples/evaluate_routers.py --local --limit 4    # the embedded local models (slow on a CPU)

Writes results.json, report.md and tradeoff.png into --out, then shows how to read the results
back in Python. The cache makes a second run of the same command almost free.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roro_sdk import GenerationCache, ModelPool, default_pool, load_dataset  # noqa: E402
from roro_sdk.eval import EvalResults, evaluate, write_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pool", default=None, help="pool file; default: the sim pool (or the local models with --local)")
    ap.add_argument("--dataset", default=None, help="dataset spec; default: sim (or sample with --local)")
    ap.add_argument("--local", action="store_true", help="use the embedded local small/large models")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--out", default="runs/evaluate_routers")
    a = ap.parse_args()

    if a.local:
        pool, dataset = default_pool(), a.dataset or "sample"
        routers, sweeps, seeds = ["all-small", "all-large", "random:0.5"], [], 0  # every run costs minutes here
    else:
        dataset = a.dataset or "sim"
        if a.pool:
            pool = ModelPool.from_file(a.pool)
        else:
            from roro_sdk.sim import parse_sim_spec, sim_pool

            pool = sim_pool(parse_sim_spec(dataset))
        routers, sweeps, seeds = ["all-small", "all-large", "specreason:7"], ["steer:0.6..0.9/4", "trim:0.5..0.9/3"], 2
    pool.cache = GenerationCache(Path(a.out) / "cache")  # identical greedy calls are paid once
    queries = load_dataset(dataset, limit=a.limit)

    res = evaluate(pool, queries, routers, sweeps=sweeps, random_seeds=seeds, concurrency=8, dataset=dataset,
                   on_run=lambda r: print(f"{r.label:<16} {r.accuracy:6.1%} [{r.accuracy_ci[0]:.0%}, {r.accuracy_ci[1]:.0%}]  "
                                          f"${r.mean_cost_usd:.3g}/query  large steps {r.large_step_share:.0%}", flush=True))
    paths = write_report(res, a.out)
    print(f"\nreport: {paths['markdown']}")

    # Everything is in results.json, in one schema: read it back and ask your own questions.
    back = EvalResults.load(a.out)
    a_ = back.analysis
    for c in a_.curves:
        if c.share and c.share["apgr"] is not None:
            cpt80 = c.share["cpt"]["80%"]
            print(f"{c.family:<16} APGR {c.share['apgr']:.3f}  CPT(80%) {'not reached' if cpt80 is None else f'{cpt80:.1%}'}")
    if a_.oracle:
        print(f"oracle ceiling: {a_.oracle.accuracy:.1%} at ${a_.oracle.mean_cost_usd:.3g}/query")
    cheapest_good = min((r for r in back.runs if a_.large_accuracy is not None and r.accuracy >= a_.large_accuracy),
                        key=lambda r: r.mean_cost_usd, default=None)
    if cheapest_good is not None:
        print(f"cheapest run at least as accurate as all-large: {cheapest_good.label} (${cheapest_good.mean_cost_usd:.3g}/query)")


if __name__ == "__main__":
    main()
