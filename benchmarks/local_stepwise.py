"""The stepwise workload on the embedded default pool, engine against engine, in one run.

Realistic, not a micro-benchmark: ``--queries`` reasoning-gym word problems (fixed seed), the
routers all-small, all-large and random:0.5, ``--concurrency`` trajectories at a time, the real
default pool (Qwen2.5-Coder 0.5B small, 1.5B large, bf16, 2 threads). Each *arm* runs in its own
subprocess (a clean peak RSS, engines loaded once):

- ``static``: the engine before this work (fixed batches, every step re-prefills its prompt);
- ``continuous``: continuous batching with prefix KV reuse (the default);
- ``generate``: the anchor, plain ``transformers`` ``model.generate`` on the first-step prompts
  at batch ``--concurrency`` (greedy, ``--anchor-tokens`` new tokens, no stop), output tokens/s;
- ``llamacpp``: the llama.cpp engine (:mod:`roro_sdk.local.llamacpp`) on the same models' Q4_K_M
  GGUF files: continuous batching over llama.cpp sequences with prefix reuse (the default backend
  where ``llama_cpp`` imports);
- ``llamacpp-spread``: the llama.cpp engine without stream compaction (each row decodes in the
  stream its cache sits in, wherever that is; what the engine did before);
- ``llamacpp-exact``: the same engine in exact mode (``prefix_cache_mb=0``: no reuse, decode
  calls of at most 7 rows; every result a pure function of its request);
- ``llamacpp-single``: llama-cpp-python's high-level ``Llama``, one sequence at a time with its
  own prompt-prefix reuse (``benchmarks/llamacpp_backend.py``; what was measured before the engine).
  The llama.cpp arms run only when ``llama_cpp`` imports (it builds from source: scripts/setup.sh).

Per arm and router: steps/s, output tokens/s, prompt tokens computed per step (prefill) against
new tokens per step, accuracy, and where the time went (``compute_share``: the models' forward
calls against the wall clock; ``by_model``: each model's prompt and decode seconds, rows per
decode call and its rates); per arm: load time and peak RSS. Ratios against ``static`` and
the anchor come from the same run. Writes ``benchmarks/results/local_stepwise.json``.

    python benchmarks/local_stepwise.py [--queries 16] [--arms static,continuous,generate,llamacpp,llamacpp-exact]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _result import machine, write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script

ROUTERS = "all-small,all-large,random:0.5"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def queries(args):
    from roro_sdk.tasks import load_dataset

    return load_dataset(args.dataset, limit=args.queries, seed=args.seed)


def engines_stats(names) -> dict:
    from dataclasses import asdict

    from roro_sdk.local import get_local_engine

    return {n: asdict(get_local_engine(n).stats) for n in names}


def _model_split(before: dict, after: dict) -> dict:
    """One model's share of a run: prompt and decode work, and its rate at each."""
    d = {k: after[k] - before[k] for k in ("requests", "prefill_tokens", "prefill_s", "decode_steps", "decode_rows",
                                           "decode_s")}
    d["prefill_tokens_per_s"] = d["prefill_tokens"] / d["prefill_s"] if d["prefill_s"] else None
    d["decode_rows_per_step"] = d["decode_rows"] / d["decode_steps"] if d["decode_steps"] else None
    d["decode_tokens_per_s"] = d["decode_rows"] / d["decode_s"] if d["decode_s"] else None
    return d


def run_routers(args, arm: str) -> dict:
    """The eval harness over the default pool; per run, the engines' counters around it."""
    from roro_sdk import default_pool
    from roro_sdk.defaults import DEFAULT_LARGE, DEFAULT_SMALL
    from roro_sdk.eval import evaluate
    from roro_sdk.local import get_local_engine

    names = [DEFAULT_SMALL, DEFAULT_LARGE]
    t0 = time.perf_counter()
    for n in names:
        get_local_engine(n)
    load_s = time.perf_counter() - t0
    pool = default_pool()
    qs = queries(args)
    marks = [engines_stats(names)]
    res = evaluate(pool, qs, routers=args.routers.split(","), references=False, concurrency=args.concurrency,
                   bootstrap=200, on_run=lambda r: marks.append(engines_stats(names)))
    runs = []
    for run, before, after in zip(res.runs, marks, marks[1:]):
        d = {k: sum(after[n][k] - before[n][k] for n in names) for k in after[names[0]]}
        steps = round(run.mean_steps * run.n)
        out_tokens = sum(run.tokens_by_model.values())
        runs.append({
            "router": run.label, "wall_s": run.wall_s, "steps": steps, "accuracy": run.accuracy, "errors": run.errors,
            "output_tokens": out_tokens, "steps_per_s": steps / run.wall_s, "output_tokens_per_s": out_tokens / run.wall_s,
            "requests": d["requests"], "prompt_tokens": d["prompt_tokens"], "prefill_tokens": d["prefill_tokens"],
            "reused_tokens": d["reused_tokens"], "completion_tokens": d["completion_tokens"],
            "mean_decode_batch": d["decode_rows"] / max(d["decode_steps"], 1),
            "prefill_per_request": d["prefill_tokens"] / max(d["requests"], 1),
            "new_per_request": d["completion_tokens"] / max(d["requests"], 1),
            # where the time went: the models' forward calls against the wall clock, per model
            "prefill_s": d["prefill_s"], "decode_s": d["decode_s"],
            "compute_share": (d["prefill_s"] + d["decode_s"]) / run.wall_s,
            "by_model": {n: _model_split(before[n], after[n]) for n in names},
            "answers": [q.correct for q in run.queries],
        })
    total_wall = sum(r["wall_s"] for r in runs)
    return {"arm": arm, "load_s": load_s, "runs": runs, "steps_per_s": sum(r["steps"] for r in runs) / total_wall,
            "output_tokens_per_s": sum(r["output_tokens"] for r in runs) / total_wall}


def arm_generate(args) -> dict:
    """The anchor: plain generate at batch ``concurrency`` on the first-step prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from roro_sdk.defaults import DEFAULT_LARGE, DEFAULT_SMALL
    from roro_sdk.local import ensure_local_model
    from roro_sdk.prompts import PromptTemplate

    template = PromptTemplate()
    qs = queries(args)
    out = {"arm": "generate", "models": {}}
    for name in (DEFAULT_SMALL, DEFAULT_LARGE):
        path = str(ensure_local_model(name))
        t0 = time.perf_counter()
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, local_files_only=True).eval()
        load_s = time.perf_counter() - t0
        texts = [tok.apply_chat_template(template.messages("prefix", q.question, []), continue_final_message=True,
                                         tokenize=False) for q in qs]
        n_tokens, wall = 0, 0.0
        for i in range(0, len(texts), args.concurrency):
            enc = tok(texts[i : i + args.concurrency], return_tensors="pt", padding=True, add_special_tokens=False)
            t0 = time.perf_counter()
            with torch.inference_mode():
                gen = model.generate(**enc, max_new_tokens=args.anchor_tokens, min_new_tokens=args.anchor_tokens,
                                     do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
            wall += time.perf_counter() - t0
            n_tokens += (gen.shape[1] - enc["input_ids"].shape[1]) * gen.shape[0]
        out["models"][name] = {"load_s": load_s, "output_tokens": n_tokens, "wall_s": wall,
                               "output_tokens_per_s": n_tokens / wall}
        del model
    return out


def arm_llamacpp(args) -> dict:
    from llamacpp_backend import install  # noqa: PLC0415 - benchmarks/ is on sys.path when run as a script

    load_s = install(threads=args.threads or 2)
    result = run_routers(args, "llamacpp-single")
    result["load_s"] = load_s
    return result


def run_arm(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.arm == "generate":
        result = arm_generate(args)
    elif args.arm == "llamacpp-single":
        result = arm_llamacpp(args)
    else:
        from roro_sdk.local import configure_local, register_local_provider

        settings = {"static": dict(backend="torch", batching="static"),
                    "continuous": dict(backend="torch", batching="continuous"),
                    "llamacpp": dict(backend="llamacpp"),
                    "llamacpp-exact": dict(backend="llamacpp", prefix_cache_mb=0),
                    "llamacpp-spread": dict(backend="llamacpp")}
        if args.arm == "llamacpp-spread":  # the placement before stream compaction: each row stays in its cache's stream
            from roro_sdk.local.llamacpp import LlamaCppEngine

            LlamaCppEngine._compact = lambda self, dst, src, extends: (dst, src)
        configure_local(**settings[args.arm])
        register_local_provider()
        result = run_routers(args, args.arm)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def ratios(arms: dict) -> dict:
    out = {}
    base = arms.get("static")
    anchor = arms.get("generate")
    for name, a in arms.items():
        if "runs" not in a:
            continue
        r = {}
        if base:
            r["steps_per_s_vs_static"] = a["steps_per_s"] / base["steps_per_s"]
            r["wall_vs_static"] = sum(x["wall_s"] for x in a["runs"]) / sum(x["wall_s"] for x in base["runs"])
        if anchor:
            small = anchor["models"][min(anchor["models"])]  # 0.5b sorts first
            r["small_output_tokens_per_s_vs_generate"] = (
                next(x for x in a["runs"] if x["router"] == "all-small")["output_tokens_per_s"] / small["output_tokens_per_s"]
                if any(x["router"] == "all-small" for x in a["runs"]) else None)
        out[name] = r
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=16)
    ap.add_argument("--dataset", default="rg:gsm_symbolic")
    ap.add_argument("--seed", type=int, default=1000, help="generator seed (held out from the quick start's seed 0)")
    ap.add_argument("--routers", default=ROUTERS)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--anchor-tokens", type=int, default=48, help="new tokens per row for the generate anchor")
    ap.add_argument("--arms", default="static,continuous,generate,llamacpp,llamacpp-exact")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm, write --arm-out
    ap.add_argument("--arm-out", help=argparse.SUPPRESS)
    ap.add_argument("--python", default=sys.executable, help="interpreter for the arms (llamacpp needs llama_cpp)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "local_stepwise.json"))
    args = ap.parse_args(argv)

    if args.arm:
        Path(args.arm_out).write_text(json.dumps(run_arm(args)))
        return 0

    load_before = os.getloadavg()
    arms: dict[str, dict] = {}
    for arm in args.arms.split(","):
        if arm.startswith("llamacpp") and subprocess.run([args.python, "-c", "import llama_cpp"], capture_output=True).returncode:
            print(f"{arm}: skipped (llama_cpp does not import; see docs/benchmarks/local.md to build it)")
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            tmp = f.name
        cmd = [args.python, __file__, "--arm", arm, "--arm-out", tmp, "--queries", str(args.queries), "--dataset",
               args.dataset, "--seed", str(args.seed), "--routers", args.routers, "--concurrency", str(args.concurrency),
               "--anchor-tokens", str(args.anchor_tokens), "--threads", str(args.threads)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}"})
        if proc.returncode:
            print(f"arm {arm} failed (exit {proc.returncode})", file=sys.stderr)
            return proc.returncode
        arms[arm] = json.loads(Path(tmp).read_text())
        arms[arm]["arm_wall_s"] = time.perf_counter() - t0
        os.unlink(tmp)
        print(f"arm {arm}: {arms[arm]['arm_wall_s']:.0f} s, load average now {os.getloadavg()[0]:.1f}", flush=True)

    import torch

    result = {
        "benchmark": "local_stepwise", "dataset": args.dataset, "seed": args.seed, "queries": args.queries,
        "routers": args.routers, "concurrency": args.concurrency, "arms": arms, "ratios": ratios(arms),
        "machine": machine(load_before, threads=args.threads, torch=torch.__version__),
    }
    out = write_result(args.out, result)
    print_table(result)
    print(f"wrote {out}")
    return 0


def print_table(result: dict) -> None:
    m = result["machine"]
    print(f"\n{result['queries']} x {result['dataset']} (seed {result['seed']}), concurrency {result['concurrency']}, "
          f"load average {m['loadavg_before'][0]:.1f} -> {m['loadavg_after'][0]:.1f}")
    print(f"{'arm':<14} {'router':<12} {'wall s':>7} {'steps':>5} {'steps/s':>7} {'out tok/s':>9} "
          f"{'prefill/req':>11} {'new/req':>7} {'batch':>5} {'acc':>5} {'compute':>7}")
    for name, a in result["arms"].items():
        for r in a.get("runs", []):
            print(f"{name:<14} {r['router']:<12} {r['wall_s']:>7.1f} {r['steps']:>5} {r['steps_per_s']:>7.2f} "
                  f"{r['output_tokens_per_s']:>9.1f} {r['prefill_per_request']:>11.1f} {r['new_per_request']:>7.1f} "
                  f"{r['mean_decode_batch']:>5.1f} {r['accuracy']:>5.2f} {r.get('compute_share', 0):>7.0%}")
        for model, g in a.get("models", {}).items():
            print(f"{name:<14} {model[:12]:<12} {g['wall_s']:>7.1f} {'':>5} {'':>7} {g['output_tokens_per_s']:>9.1f}")
        print(f"{'':<14} peak RSS {a['peak_rss_mb']:.0f} MB" + (f", load {a['load_s']:.1f} s" if "load_s" in a else ""))
    for name, r in result["ratios"].items():
        print(f"{name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None))


if __name__ == "__main__":
    raise SystemExit(main())
