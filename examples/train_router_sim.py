"""Train a tiny LoRA router with GRPO on the sim bench, offline, then compare it with the baselines.

    python examples/train_router_sim.py          # ~1-3 minutes on 2 CPU cores
    python examples/train_router_sim.py --updates 2 --eval-queries 8 --out /tmp/router   # a smoke run
"""

import argparse
from pathlib import Path

from roro_sdk import FixedRouter, StepwiseRuntime
from roro_sdk.eval import summarize
from roro_sdk.train import load_grpo_config, pool_and_queries, train_router

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--updates", type=int, default=None, help="default: the config file's")
ap.add_argument("--eval-queries", type=int, default=None, help="default: the config file's")
ap.add_argument("--out", default="runs/example-router-sim")
a = ap.parse_args()
overrides = {k: v for k, v in {"updates": a.updates, "eval_queries": a.eval_queries}.items() if v is not None}
config_file = Path(__file__).resolve().parent / "configs" / "train_router_sim.yaml"  # from any working folder
cfg = load_grpo_config(config_file, out_dir=a.out, overwrite=True, **overrides)
result = train_router(cfg, log=lambda r: print(f"update {r['update']:2d} reward {r['reward']:.3f} accuracy {r['accuracy']:.2f} "
                                                 f"large share {r['large_share']:.2f} entropy {r['entropy']:.3f}"))
pool, _, eval_qs = pool_and_queries(cfg)
for name, router in [("all-small", FixedRouter()), ("all-large", FixedRouter(tier=-1))]:
    s = summarize(StepwiseRuntime(pool, router).run_many(eval_qs), large=pool.large)
    print(f"{name:10} accuracy {s.accuracy:.2f}  $/query {s.mean_cost_usd:.2e}  large steps {s.large_step_share:.2f}")
ev = result.eval
print(f"{'learned':10} accuracy {ev['accuracy']:.2f}  $/query {ev['mean_cost_usd']:.2e}  large steps {ev['large_step_share']:.2f}  "
      f"hard->large {ev['hard_steps_to_large']:.2f}  easy->large {ev['easy_steps_to_large']:.2f}")
print("router saved in", result.router_dir)
