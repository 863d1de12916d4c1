"""Scale-out on Ray: throughput of 1, 2 (and 4) workers on latency-bound work, and the per-query
overhead of the Ray path against the local path; all in one run, side by side.

Work: the sim bench, every step held for a fixed simulated latency *inside the worker* (a blocking
sleep, as a local model holds its process while it writes a step). So one process writes one step
at a time whatever its concurrency, and the only way to more steps per second is more processes:
what ``--ray`` adds. Each configuration starts its workers and waits until they are ready before
the clock starts (start-up is reported apart).

Overhead: the same queries with no latency, local ``run_many`` against one Ray worker at the same
concurrency; (Ray wall - local wall) / queries is what the Ray path costs per query (task
dispatch, pickling the query and the trajectory, the driver's bookkeeping).

    python benchmarks/ray_scaling.py [--queries 48 --latency-ms 20 --workers 1,2,4]

Writes benchmarks/results/ray_scaling.json. Needs ``pip install "roro-sdk[ray]"``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from roro_sdk import Decision, Router, RoutingState, StepwiseRuntime  # noqa: E402
from roro_sdk._sync import run_sync  # noqa: E402
from roro_sdk.scale import QueryRunner, RayOptions  # noqa: E402
from roro_sdk.sim import SimConfig, sim_pool, sim_queries  # noqa: E402


class HeldStep(Router):
    """all-small, each step holding its process for ``latency_s`` (a blocking sleep)."""

    name = "held-step"

    def __init__(self, latency_s: float):
        self.latency_s = latency_s

    def decide(self, state: RoutingState) -> Decision:
        if self.latency_s:
            time.sleep(self.latency_s)
        return Decision(state.pool.small, {state.pool.small: 1.0}, "fixed")


def on_ray(pool, router, queries, workers: int, concurrency: int) -> tuple[float, float, list]:
    t0 = time.perf_counter()
    with QueryRunner(pool, [router], ray=RayOptions(workers=workers), concurrency=concurrency, max_steps=16) as runner:
        run_sync(runner.wait_ready())
        startup = time.perf_counter() - t0
        t1 = time.perf_counter()
        trajs = run_sync(runner.arun(router, queries))
        return time.perf_counter() - t1, startup, trajs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=48)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--overhead-queries", type=int, default=400)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "ray_scaling.json"))
    args = ap.parse_args()
    import ray

    counts = [int(w) for w in args.workers.split(",")]
    # logical CPUs for the largest worker count: the work is a sleep, so workers need not own a core
    ray.init(num_cpus=max(counts), include_dashboard=False, logging_level="ERROR")
    cfg = SimConfig.careful()
    pool, queries = sim_pool(cfg), sim_queries(n=args.queries, config=cfg)
    load_before = open("/proc/loadavg").read().split()[:3]

    router = HeldStep(args.latency_ms / 1000)
    rows = []
    for w in counts:
        wall, startup, trajs = on_ray(pool, router, queries, w, args.concurrency)
        steps = sum(len(t.steps) for t in trajs)
        rows.append({"workers": w, "wall_s": round(wall, 3), "startup_s": round(startup, 2), "steps": steps,
                     "steps_per_s": round(steps / wall, 1), "queries_per_s": round(len(trajs) / wall, 2)})
        print(f"workers {w}: {wall:6.2f} s  {steps / wall:7.1f} steps/s  (start-up {startup:.1f} s)", flush=True)
    base = rows[0]["steps_per_s"]
    for r in rows:
        r["speedup_vs_1"] = round(r["steps_per_s"] / base, 2)
    ideal = 1000 / args.latency_ms
    local_t0 = time.perf_counter()
    StepwiseRuntime(pool, router, max_steps=16).run_many(queries, concurrency=args.concurrency)
    local_wall = time.perf_counter() - local_t0

    # overhead per query: no latency, local path vs one warm Ray worker, same concurrency
    fast = HeldStep(0.0)
    oq = sim_queries(n=args.overhead_queries, config=cfg, seed=1)
    StepwiseRuntime(pool, fast, max_steps=16).run_many(oq[:20], concurrency=args.concurrency)  # warm litellm
    t0 = time.perf_counter()
    StepwiseRuntime(pool, fast, max_steps=16).run_many(oq, concurrency=args.concurrency)
    local_fast = time.perf_counter() - t0
    ray_fast, _, _ = on_ray(pool, fast, oq, 1, args.concurrency)
    overhead_ms = (ray_fast - local_fast) / len(oq) * 1000
    print(f"local path (latency-bound): {local_wall:.2f} s; one process writes at most {ideal:.0f} steps/s")
    print(f"overhead: local {local_fast / len(oq) * 1000:.2f} ms/query, Ray (1 worker) {ray_fast / len(oq) * 1000:.2f} "
          f"ms/query -> {overhead_ms:+.2f} ms/query")
    result = {
        "benchmark": "ray_scaling", "ray": ray.__version__, "queries": args.queries, "latency_ms": args.latency_ms,
        "concurrency_per_worker": args.concurrency, "cpus": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": open("/proc/loadavg").read().split()[:3],
        "rows": rows, "local_latency_bound_wall_s": round(local_wall, 3), "ideal_steps_per_s_per_process": ideal,
        "overhead": {"queries": len(oq), "local_wall_s": round(local_fast, 3), "ray_1_worker_wall_s": round(ray_fast, 3),
                     "per_query_ms": round(overhead_ms, 3)},
    }
    ray.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
