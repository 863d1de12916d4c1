"""Local provider throughput: 8 concurrent queries batched vs the same 8 one at a time, one run.

Both sides go through ``litellm.acompletion(model="roro_local/<model>")`` with greedy decoding and
no stop string, so every query generates exactly ``--max-tokens`` tokens and tokens/s compare
like for like:

- *one at a time*: the queries are awaited one after another (each runs as a batch of one);
- *batched*: the queries are gathered concurrently; the provider's batcher collects them into
  one batched decode (``--max-batch`` rows).

The two sides alternate for ``--repeats`` rounds (this machine is shared and noisy; the ratio is
the figure to read). Writes ``benchmarks/results/local_batching.json`` and prints a table.

    python benchmarks/local_batching.py [--model qwen2.5-coder-0.5b-instruct] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from _result import machine, write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = [
    "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "Sara has 25 stickers and gives 7 to her friend. How many does she have now?",
    "A book costs 12 dollars. How much do 5 books cost?",
    "There are 48 students split evenly into 6 groups. How many students are in each group?",
    "Ben reads 15 pages a day. How many pages does he read in a week?",
    "A rectangle is 8 cm long and 5 cm wide. What is its area?",
    "Lucy had 100 dollars, spent 35 on shoes and 20 on a shirt. How much is left?",
]
SYSTEM = "You are a careful math tutor who shows reasoning before the answer."


def messages(q: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q + " Think step by step."}]


async def run_side(litellm, model: str, qs: list[str], max_tokens: int, batched: bool) -> dict:
    kw = dict(model=f"roro_local/{model}", max_tokens=max_tokens, temperature=0)
    t0 = time.perf_counter()
    if batched:
        rs = await asyncio.gather(*[litellm.acompletion(messages=messages(q), **kw) for q in qs])
    else:
        rs = [await litellm.acompletion(messages=messages(q), **kw) for q in qs]
    wall = time.perf_counter() - t0
    toks = sum(r.usage.completion_tokens for r in rs)
    sizes = sorted({r._hidden_params["roro_local"]["batch_size"] for r in rs})
    return {"wall_s": wall, "completion_tokens": toks, "tokens_per_s": toks / wall, "batch_sizes": sizes}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct", help="registry or registered name")
    ap.add_argument("--model-path", help="a Hugging Face folder to register as --model")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--queries", type=int, default=8)
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dtype", default=None, help="bfloat16 (default) or float32")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "local_batching.json"))
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from roro_sdk._env import import_litellm
    from roro_sdk.local import (
        REGISTRY, get_local_engine, list_local_models, pip_install_command, register_local_model,
        register_local_provider,
    )

    litellm = import_litellm()
    opts = {"max_batch_size": args.max_batch, **({"dtype": args.dtype} if args.dtype else {})}
    if args.model_path:
        register_local_model(args.model, args.model_path, **opts)
    elif args.model in REGISTRY:
        if not any(i.name == args.model and i.installed for i in list_local_models()):
            print(f"{args.model} is not installed: {pip_install_command(REGISTRY[args.model])}", file=sys.stderr)
            return 2
        from roro_sdk.local import ensure_local_model

        register_local_model(args.model, ensure_local_model(args.model), **opts)
    register_local_provider()

    t0 = time.perf_counter()
    engine = get_local_engine(args.model)
    load_s = time.perf_counter() - t0
    qs = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.queries)]
    load_before = os.getloadavg()

    async def measure() -> list[dict]:
        await run_side(litellm, args.model, qs[:1], 4, batched=False)  # warm-up
        rounds = []
        for _ in range(args.repeats):
            one = await run_side(litellm, args.model, qs, args.max_tokens, batched=False)
            bat = await run_side(litellm, args.model, qs, args.max_tokens, batched=True)
            rounds.append({"one_at_a_time": one, "batched": bat, "speedup": bat["tokens_per_s"] / one["tokens_per_s"]})
        return rounds

    rounds = asyncio.run(measure())
    result = {
        "benchmark": "local_batching",
        "model": args.model,
        "dtype": str(next(engine.model.parameters()).dtype),
        "queries": args.queries,
        "max_tokens": args.max_tokens,
        "max_batch_size": args.max_batch,
        "load_s": load_s,
        "rounds": rounds,
        "speedup_median": sorted(r["speedup"] for r in rounds)[len(rounds) // 2],
        "machine": machine(load_before, torch_threads=torch.get_num_threads(), torch=torch.__version__),
    }
    out = write_result(args.out, result)

    print(f"model {args.model} ({result['dtype']}), {args.queries} queries x {args.max_tokens} tokens, "
          f"load {load_s:.1f} s, load average {load_before[0]:.1f} -> {result['machine']['loadavg_after'][0]:.1f}")
    print(f"{'round':>5} | {'one at a time tok/s':>19} | {'batched tok/s':>13} | {'speedup':>7} | batch sizes")
    for i, r in enumerate(rounds):
        print(f"{i:>5} | {r['one_at_a_time']['tokens_per_s']:>19.1f} | {r['batched']['tokens_per_s']:>13.1f} | "
              f"{r['speedup']:>6.2f}x | {r['batched']['batch_sizes']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
