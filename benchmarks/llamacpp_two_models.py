"""Two llama.cpp models on one CPU: taking turns (the engines' shared ``CPU_LOCK``, every thread
to the model that computes) against computing at the same time (a lock each, the threads split
between them). What it answers: whether a router that sends half the trajectories to each model
(random:0.5) would finish sooner if both models ran at once, each on its share of the cores.

Each measurement: ``batch`` distinct requests to the small model and ``batch`` to the large one,
submitted together, ``--tokens`` greedy tokens each; the time until both are done. Writes
``benchmarks/results/llamacpp_two_models.json`` and prints a table.

    python benchmarks/llamacpp_two_models.py [--batches 1,2,4] [--tokens 48] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from _result import machine, write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script

SMALL, LARGE = "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"


def both(small, large, batch: int, tokens: int, tag: str) -> dict:
    """Submit ``batch`` requests to each engine at once; seconds until each and both are done."""
    from roro_sdk.local.rows import GenerationRequest

    def reqs(kind: str) -> list:
        return [GenerationRequest(messages=[{"role": "user", "content": f"Write a long story about a {kind} ({tag}, {i})."}],
                                  max_tokens=tokens, temperature=0) for i in range(batch)]

    done: dict[str, float] = {}
    t0 = time.perf_counter()

    def run(engine, kind: str) -> None:
        engine.generate(reqs(kind))
        done[kind] = time.perf_counter() - t0

    threads = [threading.Thread(target=run, args=(small, "fox")), threading.Thread(target=run, args=(large, "owl"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"small_s": done["fox"], "large_s": done["owl"], "both_s": time.perf_counter() - t0}


def measure(mode: str, batches: list[int], tokens: int, repeats: int) -> list[dict]:
    from local_batch_invariance import llamacpp_engine  # noqa: PLC0415 -- benchmarks/ is on sys.path

    from roro_sdk.local.cpu import FairLock
    from roro_sdk.local.llamacpp import default_threads

    cores = default_threads()
    threads = cores if mode == "turns" else max(1, cores // 2)
    small = llamacpp_engine(SMALL, threads=threads)
    large = llamacpp_engine(LARGE, threads=threads)
    if mode == "parallel":  # a lock each: both compute at once
        small.lock, large.lock = FairLock(), FairLock()
    out = []
    try:
        both(small, large, 1, 4, "warm-up")
        for batch in batches:
            runs = [both(small, large, batch, tokens, f"{mode} {batch} {r}") for r in range(repeats)]
            best = min(runs, key=lambda r: r["both_s"])  # the least disturbed repeat on a shared host
            out.append({"mode": mode, "threads_per_model": threads, "batch": batch, "tokens": tokens, **best,
                        "repeats": runs})
            print(f"{mode:<8} {threads} thread(s) each, batch {batch}: both done in {best['both_s']:.1f} s "
                  f"(small {best['small_s']:.1f} s, large {best['large_s']:.1f} s)", flush=True)
    finally:
        small.close()
        large.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llamacpp_two_models.json"))
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    load_before = os.getloadavg()
    rows = measure("turns", batches, args.tokens, args.repeats) + measure("parallel", batches, args.tokens, args.repeats)
    result = {"benchmark": "llamacpp_two_models", "models": [SMALL, LARGE], "results": rows,
              "machine": machine(load_before)}
    out = write_result(args.out, result)
    print(f"\n{'batch':>5} {'turns s':>8} {'parallel s':>10} {'parallel / turns':>16}")
    for b in batches:
        t = next(r["both_s"] for r in rows if r["mode"] == "turns" and r["batch"] == b)
        p = next(r["both_s"] for r in rows if r["mode"] == "parallel" and r["batch"] == b)
        print(f"{b:>5} {t:>8.1f} {p:>10.1f} {p / t:>16.2f}")
    print(f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
