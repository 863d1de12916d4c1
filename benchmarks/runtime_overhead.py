"""Runtime overhead: StepwiseRuntime against a bare litellm.acompletion loop, same server, one run.

A local OpenAI-compatible server (a separate process, so it does not share our GIL) answers
every request after a fixed latency. Both sides route Q queries x S steps at concurrency C:

- *bare*: for each query, S sequential ``litellm.acompletion`` calls with the same messages the
  runtime sends; nothing else;
- *runtime*: ``StepwiseRuntime(pool, FixedRouter()).run_many(...)`` (routing, budget checks,
  step records, answer checks, trajectories).

Reported: wall time of each, the latency-only ideal (Q*S*latency/C), CPU time per step of each
and their difference = the runtime's overhead per step. Writes benchmarks/results/runtime_overhead.json.

    python benchmarks/runtime_overhead.py [--queries 200 --steps 8 --concurrency 64 --latency-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from roro_sdk import FixedRouter, ModelPool, ModelSpec, Query, StepwiseRuntime  # noqa: E402
from roro_sdk._env import import_litellm  # noqa: E402


def start_server(latency_ms: float, steps: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "roro_sdk.testing", "--latency-ms", str(latency_ms), "--steps", str(steps)],
                            stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline().strip())
    return proc, port


async def bare_loop(pool: ModelPool, queries: list[Query], steps: int, concurrency: int) -> None:
    litellm = import_litellm()
    spec = pool["small"]
    sem = asyncio.Semaphore(concurrency)

    async def one(q: Query) -> None:
        texts: list[str] = []
        async with sem:
            for _ in range(steps):
                resp = await litellm.acompletion(model=spec.model, api_base=spec.api_base, api_key="no-key",
                                                 messages=pool.messages("small", q.question, texts), max_tokens=spec.max_tokens_per_step,
                                                 temperature=spec.sampling.temperature, top_p=spec.sampling.top_p, stop=["\n\n"], num_retries=0)
                texts.append(resp.choices[0].message.content)

    await asyncio.gather(*(one(q) for q in queries))


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "runtime_overhead.json"))
    a = ap.parse_args()

    # The scripted model writes steps-1 reasoning steps, then "Answer: ..." as step number `steps`.
    proc, port = start_server(a.latency_ms, a.steps - 1)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        pool = ModelPool([ModelSpec(name="small", model="openai/small", api_base=base, input_price_per_m=0.1, output_price_per_m=0.4)])
        queries = [Query(id=f"q{i}", question=f"Question number {i}: what is {i} + {i}?") for i in range(a.queries)]
        rt = StepwiseRuntime(pool, FixedRouter(), max_steps=a.steps)
        # warm-up: imports, connection pools, litellm's lazy initialisation
        asyncio.run(bare_loop(pool, queries[:4], 2, 4))
        rt.run_many(queries[:4], concurrency=4)

        results = {}
        for rep in range(2):  # alternate, keep the best of two: this machine is shared and noisy
            _, bw, bc = timed(lambda: asyncio.run(bare_loop(pool, queries, a.steps, a.concurrency)))
            trajs, rw, rc = timed(lambda: rt.run_many(queries, concurrency=a.concurrency))
            n_steps = sum(len(t.steps) for t in trajs)
            assert n_steps == a.queries * a.steps, (n_steps, a.queries * a.steps)
            for k, v in {"bare_wall_s": bw, "bare_cpu_s": bc, "runtime_wall_s": rw, "runtime_cpu_s": rc}.items():
                results[k] = min(results.get(k, float("inf")), v)
    finally:
        proc.terminate()
        proc.wait(10)

    n = a.queries * a.steps
    ideal = a.queries * a.steps * a.latency_ms / 1000 / a.concurrency
    out = {
        "config": vars(a) | {"out": Path(a.out).name, "python": sys.version.split()[0], "cpus": os.cpu_count()},
        "steps_total": n,
        "ideal_wall_s": ideal,
        **results,
        "bare_cpu_ms_per_step": results["bare_cpu_s"] / n * 1000,
        "runtime_cpu_ms_per_step": results["runtime_cpu_s"] / n * 1000,
        "overhead_cpu_ms_per_step": (results["runtime_cpu_s"] - results["bare_cpu_s"]) / n * 1000,
        "overhead_wall_ms_per_step": (results["runtime_wall_s"] - results["bare_wall_s"]) / n * 1000,
        "runtime_vs_bare_wall": results["runtime_wall_s"] / results["bare_wall_s"],
        "runtime_vs_ideal_wall": results["runtime_wall_s"] / ideal,
        "bare_vs_ideal_wall": results["bare_wall_s"] / ideal,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(f"{a.queries} queries x {a.steps} steps, concurrency {a.concurrency}, server latency {a.latency_ms:g} ms")
    print(f"{'':24}{'wall s':>9}{'x ideal':>9}{'cpu ms/step':>13}")
    print(f"{'latency-only ideal':24}{ideal:9.2f}{1.0:9.2f}{'':>13}")
    print(f"{'bare litellm loop':24}{results['bare_wall_s']:9.2f}{out['bare_vs_ideal_wall']:9.2f}{out['bare_cpu_ms_per_step']:13.2f}")
    print(f"{'StepwiseRuntime':24}{results['runtime_wall_s']:9.2f}{out['runtime_vs_ideal_wall']:9.2f}{out['runtime_cpu_ms_per_step']:13.2f}")
    print(f"runtime overhead per step: {out['overhead_cpu_ms_per_step']:.3f} ms CPU, {out['overhead_wall_ms_per_step']:.3f} ms wall; "
          f"runtime/bare wall = {out['runtime_vs_bare_wall']:.2f}")


if __name__ == "__main__":
    main()
