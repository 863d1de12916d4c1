"""Memory of the local engine over a long run: the prefix KV cache stays within its bound.

500 distinct queries (a shared preamble, a different question each, ``--steps`` steps per query,
each step continuing the previous one, as the runtime does) through one engine at concurrency 8,
with a small ``--cache-mb`` bound so that the run stores many times the bound. Reports the peak
RSS and the cache's bytes every 50 queries, and the growth of RSS from the first checkpoint to the
last. Uses a randomly initialised model (``--hidden``, ``--layers``; KV of 16 KB per token at the
defaults, fp32) so the run takes minutes, not hours, and needs no weights.

    python benchmarks/local_memory.py [--queries 500] [--cache-mb 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """The current resident set (Linux), else the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=8, help="new tokens per step")
    ap.add_argument("--cache-mb", type=float, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "local_memory.json"))
    args = ap.parse_args(argv)

    import torch

    from roro_sdk.hf import tiny_causal_lm
    from roro_sdk.local import GenerationRequest, LocalEngine
    from tests.test_local_engine import build_tokenizer

    tok = build_tokenizer()
    model = tiny_causal_lm(tok, hidden_size=args.hidden, num_layers=args.layers, num_heads=4, num_kv_heads=4,
                           max_positions=4096, init_std=0.2).float()
    engine = LocalEngine(model, tok, name="memory", prefix_cache_mb=args.cache_mb, window_s=0.0)
    cache = engine.scheduler.prefix_cache
    preamble = "You are a careful math tutor who shows reasoning before the answer. " * 6
    kv_per_token = 2 * args.layers * 4 * (args.hidden // 4) * 4
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    points = []
    for start in range(0, args.queries, 8):
        ids = range(start, min(start + 8, args.queries))
        prefixes = {i: "" for i in ids}
        for _ in range(args.steps):
            reqs = []
            for i in ids:
                msgs = [{"role": "system", "content": preamble},
                        {"role": "user", "content": f"Question {i}: what is {i} times {i % 13 + 2} plus {i * 7}?"}]
                if prefixes[i]:
                    msgs.append({"role": "assistant", "content": prefixes[i]})
                reqs.append(GenerationRequest(messages=msgs, max_tokens=args.tokens, temperature=0))
            for i, r in zip(ids, engine.generate(reqs)):
                prefixes[i] += r.text + "\n\n"
        done = min(start + 8, args.queries)
        if done % 48 == 0 or done == args.queries:
            points.append({"queries": done, "rss_mb": rss_mb(), "cache_mb": cache.bytes / 2**20,
                           "cache_tokens": cache.tokens, "evicted_tokens": cache.stats.evicted_tokens})
            print(f"{done:>4} queries: RSS {points[-1]['rss_mb']:.0f} MB, cache {points[-1]['cache_mb']:.1f} MB "
                  f"({points[-1]['cache_tokens']} tokens), evicted {points[-1]['evicted_tokens']} tokens", flush=True)
    wall = time.perf_counter() - t0
    stored = engine.stats.prefill_tokens + engine.stats.completion_tokens
    result = {
        "benchmark": "local_memory", "queries": args.queries, "steps": args.steps, "cache_limit_mb": args.cache_mb,
        "kv_bytes_per_token": kv_per_token, "tokens_computed": stored,
        "unbounded_cache_would_be_mb": stored * kv_per_token / 2**20, "points": points,
        "rss_growth_mb": points[-1]["rss_mb"] - points[0]["rss_mb"], "max_cache_mb": max(p["cache_mb"] for p in points),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall,
        "stats": vars(engine.stats),
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }
    engine.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"cache bound {args.cache_mb} MB; max cache {result['max_cache_mb']:.1f} MB; an unbounded cache would hold "
          f"{result['unbounded_cache_would_be_mb']:.0f} MB; RSS growth {points[0]['queries']}->{args.queries} queries: "
          f"{result['rss_growth_mb']:+.0f} MB; {wall:.0f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
