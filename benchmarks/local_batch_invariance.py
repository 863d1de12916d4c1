"""How much greedy output depends on batch composition, per engine, on a real model.

The same ``--prompts`` first-step prompts (reasoning-gym word problems) are generated greedily
three ways: each alone from scratch (the reference), all together through the engine (batch
``--batch``, cold prefix cache), and again (warm cache: prompts fully reused). Per engine it
reports the share of outputs identical to the reference token for token, where the others first
diverge, and the largest logprob difference on the tokens before that. Engines (``--kinds``):
a torch dtype (``float32``, ``bfloat16``: reference = the static path, batch of one, no cache),
``llamacpp`` (the llama.cpp engine with prefix reuse; reference = exact mode, one at a time) and
``llamacpp-exact`` (exact mode batched against exact mode alone). Writes
``benchmarks/results/local_batch_invariance.json``.

    python benchmarks/local_batch_invariance.py [--model qwen2.5-coder-0.5b-instruct] [--kinds float32,bfloat16,llamacpp,llamacpp-exact]
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


def compare(ref, got) -> dict:
    same = [a.token_ids == b.token_ids for a, b in zip(ref, got)]
    first = []
    for a, b in zip(ref, got):
        if a.token_ids != b.token_ids:
            first.append(next((i for i, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y),
                              min(len(a.token_ids), len(b.token_ids))))
    lp = [abs(x["logprob"] - y["logprob"]) for a, b in zip(ref, got) for x, y in zip(a.logprobs or [], b.logprobs or [])
          if x["token"] == y["token"]]
    return {"identical": sum(same), "of": len(same), "first_divergence_tokens": first,
            "max_logprob_diff_before_divergence": max(lp, default=0.0)}


def llamacpp_engine(model: str, **kw):
    """The llama.cpp engine on registry model ``model`` (2 threads unless ``threads=`` says; the
    other benchmarks on llama.cpp build theirs here too)."""
    from transformers import AutoTokenizer

    from roro_sdk.local.llamacpp import LlamaCppEngine
    from roro_sdk.local.registry import ensure_local_gguf, ensure_local_model

    kw.setdefault("name", model)
    kw.setdefault("threads", 2)
    return LlamaCppEngine(ensure_local_gguf(model), AutoTokenizer.from_pretrained(str(ensure_local_model(model))), **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--kinds", "--dtypes", dest="kinds", default="float32,bfloat16,llamacpp,llamacpp-exact")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=2000)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "local_batch_invariance.json"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    from roro_sdk.local import GenerationRequest, LocalEngine, ensure_local_model
    from roro_sdk.prompts import PromptTemplate
    from roro_sdk.tasks import load_dataset

    template = PromptTemplate()
    qs = load_dataset("rg:gsm_symbolic", limit=args.prompts, seed=args.seed)
    reqs = [GenerationRequest(messages=template.messages("prefix", q.question, []), max_tokens=args.tokens,
                              temperature=0, logprobs=True) for q in qs]
    load_before = os.getloadavg()
    out = {}
    for dtype in args.kinds.split(","):
        if dtype.startswith("llamacpp"):
            alone_engine = llamacpp_engine(args.model, prefix_cache_mb=0, max_batch_size=1)
            t0 = time.perf_counter()
            ref = [alone_engine.generate([r])[0] for r in reqs]
            t_alone = time.perf_counter() - t0
            alone_engine.close()
            engine = llamacpp_engine(args.model, max_batch_size=args.batch, window_s=0.05,
                                     **({"prefix_cache_mb": 0} if dtype == "llamacpp-exact" else {}))
        else:
            engine = LocalEngine.from_pretrained(str(ensure_local_model(args.model)), dtype=dtype,
                                                 max_batch_size=args.batch, window_s=0.05)
            t0 = time.perf_counter()
            ref = [engine.generate_static([r])[0] for r in reqs]
            t_alone = time.perf_counter() - t0
        t0 = time.perf_counter()
        cold = engine.generate(reqs)
        t_cold = time.perf_counter() - t0
        warm = engine.generate(reqs)
        out[dtype] = {"batched_cold_cache": compare(ref, cold), "batched_warm_cache": compare(ref, warm),
                      "alone_s": t_alone, "batched_s": t_cold}
        c, w = out[dtype]["batched_cold_cache"], out[dtype]["batched_warm_cache"]
        print(f"{dtype}: batched (cold cache) identical to alone {c['identical']}/{len(reqs)}, warm cache "
              f"{w['identical']}/{len(reqs)}; first divergence at tokens {c['first_divergence_tokens']} / "
              f"{w['first_divergence_tokens']}; max logprob difference before it {c['max_logprob_diff_before_divergence']:.2g} / "
              f"{w['max_logprob_diff_before_divergence']:.2g}", flush=True)
        engine.close()
        del engine
    result = {"benchmark": "local_batch_invariance", "model": args.model, "prompts": args.prompts, "batch": args.batch,
              "tokens": args.tokens, "results": out,
              "machine": machine(load_before, torch=torch.__version__)}
    path = write_result(args.out, result)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
