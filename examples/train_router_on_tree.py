"""Train a router on a recorded routing tree (zero model calls) and compare it with the baselines
on a held-out tree, against the exact best possible routing.

Offline. By default on sim bench trees recorded here (a minute); ``--real`` uses the committed
trees of the default local pool with a SmolLM2-135M router (minutes per seed on a CPU; needs
``pip install "roro-sdk[local]"`` and ``roro models install``), the first stage-3/4 pass of
``scripts/real_pipeline.sh``:

    python examples/train_router_on_tree.py                 # sim: record, train, evaluate
    python examples/train_router_on_tree.py --real --updates 30
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from roro_sdk import build_pairs  # noqa: E402
from roro_sdk.eval import evaluate  # noqa: E402
from roro_sdk.train import load_grpo_config, train_router  # noqa: E402
from roro_sdk.tree import RoutingTree, leaf_trajectories, record_tree, tree_step_verifier  # noqa: E402

REAL = Path(__file__).resolve().parents[1] / "data" / "trees" / "qwen2.5-coder-0.5b-1.5b"
BASELINES = ["all-small", "all-large", "trim:0.5", "query:0.5"]


def sim_trees(out: Path, n: int) -> tuple[Path, Path]:
    from roro_sdk.sim import parse_sim_spec, sim_pool, sim_queries

    spec = "sim:careful,hint_accuracy=0.95,min_steps=3,max_steps=5"
    pool = sim_pool(parse_sim_spec(spec))
    for name, seed, routers in (("train", 0, []), ("test", 1000, ["trim:0.5"])):
        record_tree(pool, sim_queries(spec, n=n, seed=seed), out / name, depth=1, max_steps=12, routers=routers)
    return out / "train", out / "test"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--real", action="store_true", help="the committed real trees and a SmolLM2-135M router")
    ap.add_argument("--queries", type=int, default=24, help="sim: problems per tree")
    ap.add_argument("--updates", type=int, default=12)
    ap.add_argument("--out", default="runs/train_router_on_tree")
    a = ap.parse_args()
    out = Path(a.out)
    if a.real:
        train, test = REAL / "gsm_symbolic-train", REAL / "gsm_symbolic-test"
        cfg = load_grpo_config(Path(__file__).parent / "configs" / "real" / "grpo_outcome.yaml", train_queries=40,
                               updates=a.updates, out_dir=str(out / "router"), overwrite=True,
                               dataset=f"tree:{train}", pool=f"tree:{train}")
    else:
        train, test = sim_trees(out, a.queries)
        cfg = load_grpo_config(dataset=f"tree:{train}", pool=f"tree:{train}", train_queries=a.queries, eval_queries=0,
                               updates=a.updates, queries_per_update=4, group_size=8, minibatch_size=32, lr=1e-2,
                               advantage_norm="none",
                               max_steps=12, judge="none", rewards={"lambda_p": 0.0, "lambda_c": 0.3},
                               out_dir=str(out / "router"), overwrite=True)

    # the training tree as data: every routing, and pairs labelled by the tree's exact node values
    tree = RoutingTree(train)
    pairs = build_pairs(leaf_trajectories(tree), step_verifier=tree_step_verifier(tree))
    print(f"training tree: {len(tree.queries)} problems, pairs by kind: "
          + ", ".join(f"{k} {s.n}" for k, s in pairs.stats.per_kind.items()))

    result = train_router(cfg)  # every rollout replays the tree; the router commits after 2 steps
    router = result.router
    print(f"trained in {result.updates_run} updates; the router chooses the first {router.free_steps} steps")

    held = RoutingTree(test)
    res = evaluate(held.pool(), held.queries, [*BASELINES, ("learned", router)], seed=1000,
                   max_steps=held.manifest.recording.max_steps, progress=False)
    print(f"{'router':<12} {'accuracy':>8} {'$/query':>10} {'large tokens':>12}")
    for run in res.runs:
        print(f"{run.label:<12} {run.accuracy:>8.1%} {run.mean_cost_usd:>10.3e} {run.large_token_share:>12.1%}")
    bp = res.analysis.best_possible
    print(f"{'best possible':<12} {bp.accuracy:>8.1%} {bp.mean_cost_usd:>10.3e}")


if __name__ == "__main__":
    main()
