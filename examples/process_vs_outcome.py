"""Process reward where the outcome reward is silent (the RoRo argument), on the sim bench.

In the ``careful`` sim preset every answer is right when the large model writes the hard steps,
whether or not it also writes the easy ones: *careful* routing (large exactly on hard steps) and
*wasteful* routing (large everywhere) reach the same outcome. With no cost term (lambda_c = 0) the
outcome reward cannot tell them apart; the Judge's process reward can. This trains both routers
with the same seeds and reports held-out accuracy, cost and where the large model was used.

    python examples/process_vs_outcome.py [--seeds 0 1 2] [--updates 12] [--eval-queries 32] [--out docs/reports/process_vs_outcome.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from roro_sdk.train import load_grpo_config, train_router


def run(kind: str, seed: int, updates: int, out: Path, eval_queries: int = 32) -> dict:
    process = kind == "process"
    cfg = load_grpo_config(
        dataset="sim:careful,hint_accuracy=0.95", train_queries=32, eval_queries=eval_queries, updates=updates,
        queries_per_update=4, group_size=8, minibatch_size=16, lr=1e-2, seed=seed,
        rewards={"lambda_p": 0.5 if process else 0.0, "lambda_c": 0.0, "gate": True},
        judge="sim-rule" if process else "none", step_process_weight=1.0 if process else 0.0,
        out_dir=str(out / f"{kind}-seed{seed}"), overwrite=True,
    )
    return train_router(cfg).eval


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--updates", type=int, default=12)
    ap.add_argument("--eval-queries", type=int, default=32, help="held-out sim tasks per run")
    ap.add_argument("--runs", default="runs/process_vs_outcome")
    ap.add_argument("--out", default="docs/reports/process_vs_outcome.json")
    a = ap.parse_args()
    results = {kind: [run(kind, s, a.updates, Path(a.runs), a.eval_queries) for s in a.seeds] for kind in ("process", "outcome-only")}
    keys = ["accuracy", "mean_cost_usd", "large_step_share", "hard_steps_to_large", "easy_steps_to_large"]
    table = {kind: {k: (statistics.mean(r[k] for r in rs), statistics.pstdev(r[k] for r in rs)) for k in keys}
             for kind, rs in results.items()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"seeds": a.seeds, "updates": a.updates, "runs": results, "mean_std": table}, indent=2))
    print(f"held-out sim tasks, {len(a.seeds)} seeds (mean +- std)")
    print(f"{'router':14}" + "".join(f"{k:>24}" for k in keys))
    for kind, row in table.items():
        print(f"{kind:14}" + "".join(f"{m:>15.4g} +- {s:<6.2g}" for m, s in row.values()))


if __name__ == "__main__":
    main()
