"""Collect routed trajectories on Ray workers, offline, and check they equal the local path's.

    pip install "roro-sdk[ray]"
    python examples/scale_out_ray.py [--queries 20 --workers 2 --out runs/scale-out]

Starts a one-machine Ray instance (or uses the one running in this process), runs the same
collection twice -- locally and with ``ray=`` -- and compares the two files. See docs/scale-out.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import ray

from roro_sdk.scale import RayOptions
from roro_sdk.sim import SimConfig, sim_pool, sim_queries
from roro_sdk.train import collect


def routes(path: Path) -> dict[str, list[str]]:
    """Trajectory id -> the model of each step: what must not depend on where a run ran."""
    return {d["id"]: [s["model"] for s in d["steps"]] for d in map(json.loads, path.read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="runs/scale-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for f in ("local.jsonl", "ray.jsonl"):
        (out / f).unlink(missing_ok=True)

    started = not ray.is_initialized()
    if started:  # one machine, loopback only, no dashboard
        ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="ERROR")
    try:
        cfg = SimConfig.careful()
        pool, queries = sim_pool(cfg), sim_queries(n=args.queries, config=cfg)
        policies = ["all-small", "random:0.5", "steer:0.8"]
        local = collect(queries, pool, policies, out=out / "local.jsonl", seed=0)
        on_ray = collect(queries, pool, policies, out=out / "ray.jsonl", seed=0, ray=RayOptions(workers=args.workers))
    finally:
        if started:
            ray.shutdown()
    same = routes(out / "local.jsonl") == routes(out / "ray.jsonl")
    print(f"local: {local.written} trajectories in {local.wall_s:.1f} s; Ray ({args.workers} workers): "
          f"{on_ray.written} in {on_ray.wall_s:.1f} s (worker start-up included)")
    print(f"same trajectories: {same}; cost ${local.total_cost_usd:.4f} vs ${on_ray.total_cost_usd:.4f}")
    if not same:
        raise SystemExit("the Ray path gave other trajectories than the local path")


if __name__ == "__main__":
    main()
