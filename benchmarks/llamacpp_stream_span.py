"""What a llama.cpp decoding call costs against where its rows' sequences sit, and what moving a
sequence costs. The engine gives each sequence a KV stream of its own (``kv_unified=False``);
llama.cpp then splits a call into one forward pass per run of consecutive sequence ids among its
rows (``split_equal`` groups only consecutive ids), so rows in streams 0, 5 and 11 cost three
passes where rows in 0, 1 and 2 cost one. This is why :mod:`roro_sdk.local.llamacpp` moves a
joining row's cache next to the busy streams (``_compact``): the benchmark shows the cost it
avoids and the copy it pays instead.

Per model (the registry's Q4_K_M GGUF files): a context of 12 streams of 4096 cells, each holding
a ``--prompt``-token trajectory; then ms per decoding call for rows in contiguous streams against
the same number of rows spread out, and ms for copying a stream into another (applied before the
next call, so it is timed with a 1-row call and shown beside that call alone).

    python benchmarks/llamacpp_stream_span.py [--threads 2] [--prompt 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _result import machine, write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script

STREAMS, CELLS = 12, 4096
LAYOUTS = {"3 rows, streams 0-2": [0, 1, 2], "3 rows, streams 0, 5, 11": [0, 5, 11],
           "6 rows, streams 0-5": [0, 1, 2, 3, 4, 5], "6 rows, even streams 0-10": [0, 2, 4, 6, 8, 10],
           "1 row, stream 0": [0], "2 rows, streams 0 and 11": [0, 11], "12 rows, streams 0-11": list(range(12))}


def measure(model: str, threads: int, prompt: int, repeats: int) -> dict:
    import llama_cpp.llama_cpp as L

    from roro_sdk.local.registry import ensure_local_gguf

    L.llama_backend_init()
    m = L.llama_model_load_from_file(str(ensure_local_gguf(model)).encode(), L.llama_model_default_params())
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_seq_max = STREAMS * CELLS, 512, 512, STREAMS
    cp.n_threads = cp.n_threads_batch = threads
    cp.kv_unified, cp.flash_attn_type, cp.no_perf = False, 0, True  # as the engine sets them
    ctx = L.llama_init_from_model(m, cp)
    mem = L.llama_get_memory(ctx)
    b = L.llama_batch_init(512, 0, 1)

    def put(i: int, tok: int, pos: int, seq: int, logits: bool) -> None:
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = tok, pos, 1, logits
        b.seq_id[i][0] = seq

    def decode(n: int) -> None:
        b.n_tokens = n
        if L.llama_decode(ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    for s in range(STREAMS):  # every stream holds a trajectory of `prompt` tokens
        for at in range(0, prompt, 256):
            n = min(256, prompt - at)
            for k in range(n):
                put(k, 100 + (k + s) % 50, at + k, s, False)
            decode(n)
    pos = {s: prompt for s in range(STREAMS)}

    def call_ms(seqs: list[int]) -> float:
        t0 = time.perf_counter()
        for _ in range(repeats):
            for i, s in enumerate(seqs):
                put(i, 200, pos[s], s, True)
                pos[s] += 1
            decode(len(seqs))
        return (time.perf_counter() - t0) / repeats * 1000

    rows = {name: call_ms(seqs) for name, seqs in LAYOUTS.items()}
    t0 = time.perf_counter()
    for _ in range(repeats):  # stream 11 into stream 3, then one row in stream 3
        L.llama_memory_seq_cp(mem, 11, 3, -1, -1)
        pos[3] = pos[11]
        put(0, 200, pos[3], 3, True)
        pos[3] += 1
        decode(1)
    copy_and_call = (time.perf_counter() - t0) / repeats * 1000
    L.llama_batch_free(b)
    L.llama_free(ctx)
    L.llama_model_free(m)
    return {"model": model, "calls_ms": rows, "copy_stream_and_1_row_call_ms": copy_and_call,
            "1_row_call_ms": rows["1 row, stream 0"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="qwen2.5-coder-0.5b-instruct,qwen2.5-coder-1.5b-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=600, help="tokens each stream holds")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "llamacpp_stream_span.json"))
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    results = [measure(m, args.threads, args.prompt, args.repeats) for m in args.models.split(",")]
    out = write_result(args.out, {"benchmark": "llamacpp_stream_span", "streams": STREAMS, "cells_per_stream": CELLS,
                                  "prompt_tokens": args.prompt, "threads": args.threads, "results": results,
                                  "machine": machine(load_before)})
    for r in results:
        print(f"\n{r['model']}: ms per decoding call ({args.threads} threads, {STREAMS} streams of {args.prompt} tokens)")
        for name, ms in r["calls_ms"].items():
            print(f"  {name:<28} {ms:7.1f}")
        print(f"  copy a stream + 1-row call  {r['copy_stream_and_1_row_call_ms']:7.1f} (1-row call alone {r['1_row_call_ms']:.1f})")
    print(f"load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
