"""Evaluation throughput on the sim bench, and what the generation cache saves on a repeated sweep.

Three figures, one run (this machine is shared and noisy: read the ratios):

1. *provider*: sim steps per second of the ``roro_sim`` model function alone (no LiteLLM);
2. *evaluation*: queries and model calls per second of ``roro_sdk.eval.evaluate`` for a few
   routers (the whole path: runtime, router, pool, LiteLLM, sim provider, analysis), cache off;
3. *cache*: one sweep (the references, a STEER threshold sweep, the random curve) run twice with
   the cache off and twice with it on (a cold pass that fills it, a warm pass that reuses it), the
   sides alternating; the ratio of the repeated sweep's wall time, on vs off, is the figure.

Writes ``benchmarks/results/eval_throughput.json`` and prints a table.

    python benchmarks/eval_throughput.py [--queries 60] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from roro_sdk.cache import GenerationCache  # noqa: E402
from roro_sdk.eval import evaluate  # noqa: E402
from roro_sdk.sim import SimConfig, sim_complete, sim_pool, sim_queries  # noqa: E402

SWEEP = {"routers": [], "sweeps": ["steer:0.6..0.95/6"], "random_seeds": 2, "random_grid": (0.0, 0.5, 1.0)}


def provider_steps_per_s(cfg: SimConfig, n: int) -> float:
    qs = sim_queries(n=50, config=cfg)
    msgs = []
    for q in qs:
        prefix = "\n\n".join(f"Step {i + 1} [easy]: ok" for i in range(3))
        msgs.append([{"role": "user", "content": q.question}, {"role": "assistant", "content": prefix + "\n\n"}])
    t0 = time.perf_counter()
    for i in range(n):
        sim_complete("small", msgs[i % len(msgs)], {"logprobs": True}, None)
    return n / (time.perf_counter() - t0)


def sweep(pool, qs, concurrency: int) -> tuple[float, object]:
    t0 = time.perf_counter()
    res = evaluate(pool, qs, SWEEP["routers"], sweeps=SWEEP["sweeps"], random_seeds=SWEEP["random_seeds"],
                   random_grid=SWEEP["random_grid"], concurrency=concurrency, bootstrap=500, dataset="sim")
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=60)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--provider-steps", type=int, default=20000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_throughput.json"))
    a = ap.parse_args()

    cfg = SimConfig()
    qs = sim_queries(n=a.queries, config=cfg)
    warm = sim_pool(cfg)
    evaluate(warm, qs[:4], ["all-small"], references=False, bootstrap=10)  # import LiteLLM, register the provider

    prov = provider_steps_per_s(cfg, a.provider_steps)

    per_router = []
    res = evaluate(sim_pool(cfg), qs, ["all-small", "all-large", "random:0.5", "steer:0.8", "trim:0.7", "specreason:7"],
                   concurrency=a.concurrency, bootstrap=500, dataset="sim")
    for r in res.runs:
        steps = sum(r.steps_by_model.values())
        per_router.append({"router": r.label, "queries_per_s": r.queries_per_s, "steps": steps, "steps_per_s": steps / r.wall_s,
                           "wall_s": r.wall_s, "accuracy": r.accuracy})

    with tempfile.TemporaryDirectory() as tmp:
        cache = GenerationCache(Path(tmp) / "bench.sqlite")
        off_pool, on_pool = sim_pool(cfg), sim_pool(cfg, cache=cache)
        off1, res_off = sweep(off_pool, qs, a.concurrency)
        cold, res_cold = sweep(on_pool, qs, a.concurrency)
        off2, _ = sweep(off_pool, qs, a.concurrency)
        warm_s, res_warm = sweep(on_pool, qs, a.concurrency)
        hits = int(sum(r.cache["hits"] for r in res_warm.runs))
        misses = int(sum(r.cache["misses"] for r in res_warm.runs))
        cold_hits = int(sum(r.cache["hits"] for r in res_cold.runs))
        same = [r.accuracy for r in res_off.runs] == [r.accuracy for r in res_warm.runs] and \
            [round(r.total_cost_usd, 12) for r in res_off.runs] == [round(r.total_cost_usd, 12) for r in res_warm.runs]
        entries = len(cache)
        cache.close()

    off = (off1 + off2) / 2
    out = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "queries": a.queries,
        "concurrency": a.concurrency,
        "provider_steps_per_s": prov,
        "evaluate": per_router,
        "sweep": {
            "runs": len(res_off.runs),
            "queries_per_pass": len(res_off.runs) * a.queries,
            "off_s": [off1, off2],
            "on_cold_s": cold,
            "on_warm_s": warm_s,
            "cold_pass_hits": cold_hits,
            "warm_pass_hits": hits,
            "warm_pass_misses": misses,
            "cache_entries": entries,
            "repeated_sweep_ratio_on_vs_off": (cold + warm_s) / (off1 + off2),
            "warm_pass_ratio_on_vs_off": warm_s / off,
            "cold_pass_ratio_on_vs_off": cold / off,
            "identical_results": same,
        },
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")

    print(f"sim provider alone: {prov:,.0f} steps/s")
    print(f"\nevaluate() on the sim bench, {a.queries} queries, concurrency {a.concurrency}, cache off:")
    print(f"{'router':<14} {'queries/s':>10} {'steps/s':>9} {'wall s':>8} {'accuracy':>9}")
    for r in per_router:
        print(f"{r['router']:<14} {r['queries_per_s']:>10.1f} {r['steps_per_s']:>9.0f} {r['wall_s']:>8.2f} {r['accuracy']:>9.1%}")
    s = out["sweep"]
    print(f"\nsweep of {s['runs']} runs x {a.queries} queries (references, steer x6, random x3 x2 seeds):")
    print(f"  cache off:  {off1:.1f} s, {off2:.1f} s")
    print(f"  cache on:   {cold:.1f} s cold ({cold_hits} hits inside the first pass), {warm_s:.1f} s warm "
          f"({hits} hits, {misses} misses)")
    print(f"  repeated sweep (two passes) on/off: {s['repeated_sweep_ratio_on_vs_off']:.2f}x wall time; "
          f"warm pass alone: {s['warm_pass_ratio_on_vs_off']:.3f}x; identical results: {same}")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
