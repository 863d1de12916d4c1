"""The sim routing bench end to end: baselines, threshold sweeps, the random curve, the exact
optimum as a ceiling, each router's regret, and a report with the trade-off picture.

Offline and fast (the sim models answer in microseconds; LiteLLM's own overhead dominates):

    python examples/sim_bench.py                          # report in runs/sim_bench/
    python examples/sim_bench.py --out docs/reports/sim   # regenerate the committed example

The sim is a TEST BENCH with known answers, not a model of any real workload: use it to check
that a router or a trainer does what it should, then evaluate on real data (evaluate_routers.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roro_sdk import GenerationCache, read_trajectories  # noqa: E402
from roro_sdk.eval import Sweep, evaluate, write_report  # noqa: E402
from roro_sdk.sim import SimConfig, SimOptimalRouter, grade_routing, routing_regret, sim_pool, sim_queries  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", default="runs/sim_bench")
    ap.add_argument("--image", default=None, help="also copy the PNG here (e.g. docs/img/sim_tradeoff.png)")
    a = ap.parse_args()

    cfg = SimConfig()  # small: 50% error on hard steps; large: 5%, 10x the price
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trajectories = out / "trajectories.jsonl"
    trajectories.unlink(missing_ok=True)
    with GenerationCache(out / "cache.sqlite") as cache:  # sweeps repeat many calls: pay once
        pool = sim_pool(cfg, cache=cache)
        queries = sim_queries(n=a.queries, config=cfg)
        res = evaluate(
            pool, queries,
            ["specreason:7"],
            sweeps=["steer:0.6..0.95/8", "trim:0.5..0.95/4",
                    # the exact expected optimum for each price of cost (reads the hidden difficulties: a ceiling)
                    Sweep("sim-optimal (hidden truth)", [0.0, 0.05, 0.1, 0.2, 0.4, 0.8],
                          lambda lam: SimOptimalRouter(cfg, lambda_c=lam))],
            random_seeds=3, concurrency=16, dataset=f"sim (default config, seed {cfg.seed})",
            trajectories_out=trajectories,
            on_run=lambda r: print(f"{r.label:<40} accuracy {r.accuracy:6.1%}  ${r.mean_cost_usd:.3g}/query  "
                                   f"large steps {r.large_step_share:4.0%}", flush=True),
        )
        cache.clear()  # the example's cache is not worth keeping
    paths = write_report(res, out, title=f"sim bench: {a.queries} tasks, small/large")
    (out / "cache.sqlite").unlink(missing_ok=True)
    for extra in out.glob("cache.sqlite-*"):
        extra.unlink()

    # Exact answers: the expected-objective regret of each router's routing, and how its
    # escalations line up with the (hidden) hard steps.
    regret: dict[str, list[float]] = defaultdict(list)
    wasted: dict[str, int] = defaultdict(int)
    missed: dict[str, int] = defaultdict(int)
    for t in read_trajectories(trajectories):
        label = t.metadata["eval_label"]
        if label.startswith("random") or t.stop_reason != "answer":
            continue
        regret[label].append(routing_regret(t, cfg, lambda_c=0.2))
        g = grade_routing(t, large=pool.large)
        wasted[label] += g["wasted"]
        missed[label] += g["missed"]
    print(f"\n{'router':<40} {'regret (lambda_c=0.2)':>22} {'easy steps on large':>20} {'hard steps on small':>20}")
    for label, rs in regret.items():
        print(f"{label:<40} {sum(rs) / len(rs):>22.4f} {wasted[label]:>20} {missed[label]:>20}")
    trajectories.unlink()
    print(f"\nreport: {paths['markdown']}")
    if a.image:
        Path(a.image).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths["figure"], a.image)
        print(f"picture: {a.image}")


if __name__ == "__main__":
    main()
