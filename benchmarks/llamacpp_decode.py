"""Raw batched decoding of the llama.cpp engine: tokens/s at batch 1, 4 and 8, repacked kernels on
and off, on the registry's GGUF models, for whichever llama.cpp build is installed (its instruction
set is in the result). What it answers: how much the build (AVX2 or AVX-512 VNNI) and llama.cpp's
repacked kernels speed up decoding, apart from any scheduling.

Each measurement: ``batch`` requests sharing a ~450-token prompt (cached once, so what is timed is
decoding), 64 greedy tokens each, through one ``LlamaCppEngine``. Compare builds by running it with
each one's ``llama_cpp`` first on ``PYTHONPATH`` (``--label`` names the run):

    python benchmarks/llamacpp_decode.py [--models qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct] [--label avx512]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from _result import machine, write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May? Explain step by step in detail. ") * 3


def measure(model: str, repack: bool, batches: list[int], tokens: int) -> list[dict]:
    from local_batch_invariance import llamacpp_engine  # noqa: PLC0415 -- benchmarks/ is on sys.path

    from roro_sdk.local.rows import GenerationRequest

    engine = llamacpp_engine(model, threads=None, max_batch_size=max(batches), repack=repack)
    out = []
    try:
        engine.generate([GenerationRequest(messages=[{"role": "user", "content": QUESTION}], max_tokens=4, temperature=0)])
        for bs in batches:
            reqs = [GenerationRequest(messages=[{"role": "user", "content": QUESTION + f" Case {i}."}],
                                      max_tokens=tokens, temperature=0) for i in range(bs)]
            t0 = time.perf_counter()
            res = engine.generate(reqs)
            wall = time.perf_counter() - t0
            n = sum(r.completion_tokens for r in res)
            out.append({"model": model, "repack": repack, "batch": bs, "tokens": n, "wall_s": wall, "tokens_per_s": n / wall})
            print(f"{model:<30} repack={int(repack)} batch {bs:>2}: {n / wall:6.1f} tokens/s", flush=True)
    finally:
        engine.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--batches", default="1,4,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--label", default="installed")
    ap.add_argument("--out", help="default: benchmarks/results/llamacpp_decode_LABEL.json")
    args = ap.parse_args(argv)
    import llama_cpp

    system = llama_cpp.llama_print_system_info().decode()
    load_before = os.getloadavg()
    rows = []
    for model in args.models.split(","):
        for repack in (False, True):
            rows += measure(model, repack, [int(b) for b in args.batches.split(",")], args.tokens)
    result = {"benchmark": "llamacpp_decode", "label": args.label, "llama_cpp": llama_cpp.__version__,
              "llama_system_info": system, "results": rows,
              "machine": machine(load_before)}
    out = write_result(args.out or ROOT / "benchmarks" / "results" / f"llamacpp_decode_{args.label}.json", result)
    print(f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
