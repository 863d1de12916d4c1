"""Local Judge throughput on CPU: trajectories scored per second, batched vs one by one, one run.

The Judge reads P(yes) from next-token logits (no generation). Variants, all in one process and
interleaved over ``--repeats`` passes (this machine is shared and noisy: read the ratios):

* ``one-by-one``   ``judge.score(...)`` per trajectory (one forward per trajectory; its criteria
                   share the trajectory's KV cache);
* ``batched-B``    ``judge.score_many(...)`` with B trajectories per forward;
* ``shared-B``     the shared layout (all criteria in one sequence), batched;
* ``naive``        one full prompt per (trajectory, criterion), one by one: no batching and no
                   prefix sharing (the reference a plain implementation would start from).

Trajectories are sim-shaped (``Step k [hard]: ok`` records, 3-8 steps, per-step costs shown);
the rubric has 8 criteria (``DEFAULT_CRITERIA``). Model: a random Qwen2-shaped causal LM built
from a config (``--hidden``, ``--layers``) with a word-level tokenizer.

Writes ``benchmarks/results/judge_throughput.json`` and prints a table.

    python benchmarks/judge_throughput.py [--n 64] [--threads 1] [--hidden 64 --layers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _result import write_result  # noqa: E402 -- benchmarks/ is on sys.path when run as a script

import torch  # noqa: E402

from roro_sdk.hf import tiny_causal_lm, token_logits, word_tokenizer  # noqa: E402
from roro_sdk.judge import JUDGE_INSTRUCTION, LocalJudge, render_trajectory  # noqa: E402
from roro_sdk.rubric import DEFAULT_CRITERIA, Rubric  # noqa: E402
from roro_sdk.types import Query, Step, Trajectory  # noqa: E402


def make_trajectories(n: int, seed: int = 0) -> list[Trajectory]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(3, 8)
        hard = [rng.random() < 0.4 for _ in range(k)]
        q = Query(id=f"b{i}", question=f"[sim task b{i}] steps: {' '.join('H' if h else 'E' for h in hard)}\n"
                                      "This is a synthetic routing task (roro-sdk sim bench, not a real problem).")
        steps = []
        for j, h in enumerate(hard):
            m = "large" if rng.random() < 0.4 else "small"
            v = "mistake" if (h and m == "small" and rng.random() < 0.5) else "ok"
            steps.append(Step(index=j, model=m, text=f"Step {j + 1} [{'hard' if h else 'easy'}]: {v}", input_tokens=100,
                              output_tokens=40, cost_usd=(2.6e-4 if m == "large" else 2.6e-5)))
        steps.append(Step(index=k, model="small", text=f"Answer: {rng.randint(10, 999)}", input_tokens=100, output_tokens=6,
                          cost_usd=1.2e-5))
        out.append(Trajectory(id=f"t{i}", query=q, steps=steps, answer="1", stop_reason="answer"))
    return out


def naive_score(judge: LocalJudge, rubric: Rubric, traj: Trajectory) -> list[float]:
    ps = []
    for c in rubric.criteria:
        text = f"{JUDGE_INSTRUCTION}\n{render_trajectory(traj)}\nCriterion [{c.tag}]: {c.text}\nMet?"
        ids = torch.tensor([judge.tokenizer.encode(text, add_special_tokens=False)])
        yn = token_logits(judge.model, ids, torch.ones_like(ids), [[ids.shape[1] - 1]], [judge.yes_ids, judge.no_ids])
        ps.append(float(torch.sigmoid(yn[0, 0] - yn[0, 1])))
    return ps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="trajectories per timed pass")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch-sizes", default="8,32")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "judge_throughput.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    trajs = make_trajectories(args.n)
    rubric = Rubric(criteria=list(DEFAULT_CRITERIA))
    tok = word_tokenizer([render_trajectory(t) for t in trajs] + [c.text for c in DEFAULT_CRITERIA] + [JUDGE_INSTRUCTION])
    model = tiny_causal_lm(tok, hidden_size=args.hidden, num_layers=args.layers, num_heads=max(1, args.hidden // 16))
    judge = LocalJudge(model, tok)
    shared = LocalJudge(model, tok, layout="shared")
    items = [(None, rubric, t) for t in trajs]
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    n_tokens = sum(len(judge._item(*it).prefix) for it in items) / len(items)

    def one_by_one() -> list[float]:
        with torch.no_grad():
            return [judge.score_batch([it])[0].score for it in items]

    variants = {"one-by-one": one_by_one}
    for b in sizes:
        variants[f"batched-{b}"] = (lambda b=b: [r.score for r in LocalJudge(model, tok, batch_size=b).score_batch(items)])
        variants[f"shared-{b}"] = (lambda b=b: [r.score for r in LocalJudge(model, tok, layout="shared", batch_size=b).score_batch(items)])
    n_naive = max(4, args.n // 8)
    variants["naive"] = lambda: [naive_score(judge, rubric, t) for t in trajs[:n_naive]]

    # correctness first: batched == one by one == naive (separate layout)
    ref = one_by_one()
    assert all(abs(a - b) < 1e-4 for a, b in zip(ref, variants[f"batched-{sizes[-1]}"]())), "batched != one by one"
    with torch.no_grad():
        nv = naive_score(judge, rubric, trajs[0])
    assert all(abs(a - b) < 1e-4 for a, b in zip(nv, judge.score_batch([items[0]])[0].p_met)), "prefix sharing != naive"
    _ = shared.score_batch(items[:2])

    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    rows = []
    base = None
    for name, ts in times.items():
        n = n_naive if name == "naive" else args.n
        tps = n / min(ts)
        if name == "one-by-one":
            base = tps
        rows.append({"variant": name, "trajectories": n, "best_s": min(ts), "median_s": sorted(ts)[len(ts) // 2],
                     "trajectories_per_s": tps})
    for r in rows:
        r["vs_one_by_one"] = r["trajectories_per_s"] / base
    result = {"benchmark": "judge_throughput", "model": f"random qwen2, hidden {args.hidden}, {args.layers} layers",
              "criteria": len(rubric), "mean_trajectory_tokens": n_tokens, "threads": args.threads,
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
              "rows": rows}
    write_result(args.out, result)
    print(f"local Judge, {result['model']}, {len(rubric)} criteria, ~{n_tokens:.0f} tokens per trajectory prompt, "
          f"{args.threads} thread(s)")
    print(f"{'variant':<14}{'traj/s':>10}{'vs one-by-one':>15}{'best s':>9}")
    for r in rows:
        print(f"{r['variant']:<14}{r['trajectories_per_s']:>10.1f}{r['vs_one_by_one']:>14.2f}x{r['best_s']:>9.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
