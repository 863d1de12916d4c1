"""Memory of the local engine over a long run: the prefix KV cache stays within its bound.

500 distinct queries (a shared preamble, a different question each, ``--steps`` steps per query,
each step continuing the previous one, as the runtime does) through one engine at concurrency 8,
with a small ``--cache-mb`` bound so that the run stores many times the bound. Reports the peak
RSS and the cache's bytes every 50 queries, and the growth of RSS from the first checkpoint to the
last. Uses a randomly initialised model (``--hidden``, ``--layers``; KV of 16 KB per token at the
defaults, fp32) so the run takes minutes, not hours, and needs no weights.

``--engine llamacpp`` runs the same queries through the llama.cpp engine on the registry's real
0.5B GGUF (shorter steps by default, so that it also takes minutes): its KV cells are allocated
once at load (``prefix_cache_mb`` over its sequences, at least 4096 cells each), so the check is
that RSS stays flat while the run computes many times the tokens those cells hold.

    python benchmarks/local_memory.py [--queries 500] [--cache-mb 64] [--engine torch|llamacpp]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _result import machine, write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script


def rss_mb() -> float:
    """The current resident set (Linux), else the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _CellsView:
    """The llama.cpp engine's KV as the torch cache reports it: tokens held now, bytes allocated."""

    def __init__(self, engine):
        self.engine = engine
        self.bytes = engine.n_cells * engine.kv_bytes_per_token

    @property
    def tokens(self) -> int:
        return sum(len(s.tokens) for s in self.engine._seqs)

    class stats:  # noqa: N801 -- the torch cache's ``stats.evicted_tokens``; cells are reused in place
        evicted_tokens = 0


def torch_engine(args):
    from roro_sdk.hf import tiny_causal_lm
    from roro_sdk.local import LocalEngine
    from tests.test_local_engine import build_tokenizer

    tok = build_tokenizer()
    model = tiny_causal_lm(tok, hidden_size=args.hidden, num_layers=args.layers, num_heads=4, num_kv_heads=4,
                           max_positions=4096, init_std=0.2).float()
    engine = LocalEngine(model, tok, name="memory", prefix_cache_mb=args.cache_mb, window_s=0.0)
    return engine, engine.scheduler.prefix_cache, 2 * args.layers * 4 * (args.hidden // 4) * 4


def llamacpp_engine(args):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from local_batch_invariance import llamacpp_engine as build  # noqa: PLC0415

    engine = build(args.model, name="memory", threads=None, prefix_cache_mb=args.cache_mb)
    return engine, _CellsView(engine), engine.kv_bytes_per_token


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--steps", type=int, help="steps per query (default 3; 2 with --engine llamacpp)")
    ap.add_argument("--tokens", type=int, help="new tokens per step (default 8; 4 with --engine llamacpp)")
    ap.add_argument("--cache-mb", type=float, default=64)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--engine", choices=["torch", "llamacpp"], default="torch")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="registry model for --engine llamacpp")
    ap.add_argument("--out", help="default: benchmarks/results/local_memory[_llamacpp].json")
    args = ap.parse_args(argv)
    real = args.engine == "llamacpp"
    args.steps = args.steps or (2 if real else 3)
    args.tokens = args.tokens or (4 if real else 8)
    if args.out is None:
        suffix = "" if args.engine == "torch" else "_llamacpp"
        args.out = str(ROOT / "benchmarks" / "results" / f"local_memory{suffix}.json")

    import torch

    from roro_sdk.local import GenerationRequest

    if args.engine == "torch":
        engine, cache, kv_per_token = torch_engine(args)
    else:
        engine, cache, kv_per_token = llamacpp_engine(args)
    preamble = "You are a careful math tutor who shows reasoning before the answer. " * 6
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
        "benchmark": "local_memory", "engine": args.engine, "queries": args.queries, "steps": args.steps, "cache_limit_mb": args.cache_mb,
        "kv_bytes_per_token": kv_per_token, "tokens_computed": stored,
        "unbounded_cache_would_be_mb": stored * kv_per_token / 2**20, "points": points,
        "rss_growth_mb": points[-1]["rss_mb"] - points[0]["rss_mb"], "max_cache_mb": max(p["cache_mb"] for p in points),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "wall_s": wall,
        "stats": vars(engine.stats),
        "machine": machine(load_before, torch=torch.__version__),
    }
    engine.close()
    out = write_result(args.out, result)
    print(f"cache bound {args.cache_mb} MB; max cache {result['max_cache_mb']:.1f} MB; an unbounded cache would hold "
          f"{result['unbounded_cache_would_be_mb']:.0f} MB; RSS growth {points[0]['queries']}->{args.queries} queries: "
          f"{result['rss_growth_mb']:+.0f} MB; {wall:.0f} s")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
