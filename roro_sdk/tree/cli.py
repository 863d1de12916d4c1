"""``roro record-tree`` and ``roro tree``: record a routing tree, and read what is exactly best in it.

Registered through ``roro_sdk.cli._COMMAND_MODULES``; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from .._cli_common import add_ray_arguments, choose_pool, load_queries, print_table, ray_from_args


def cmd_record_tree(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .record import record_tree

    if args.token_budget is not None or args.cost_budget is not None:
        raise ConfigError("record-tree records runs without budgets (a budget cuts steps short, so its steps differ); "
                          "apply --token-budget/--cost-budget when you replay the tree")
    ray = ray_from_args(args)  # a bad --ray is refused before anything is loaded
    queries = load_queries(args)
    pool = choose_pool(args)
    routers = [r.strip() for r in args.routers.split(",") if r.strip()] if args.routers else []
    dataset = {"dataset": args.dataset, "seed": args.seed, "n": len(queries)}
    res = record_tree(pool, queries, args.out, depth=args.depth, max_steps=args.max_steps, concurrency=args.concurrency,
                      query_window=args.query_window, cost_cap=args.cost_cap, routers=routers, seed=args.seed,
                      dataset=dataset, progress=not args.quiet, compact=args.compact, ray=ray)
    print(f"record-tree: {res.queries} queries, {res.calls} tree steps ({res.live_calls} made now), "
          f"{res.router_live_calls} router calls made now, {len(res.errors)} errors; {res.wall_s:.1f} s, "
          f"{res.steps_per_s:.2f} calls/s, {res.tokens_per_s:.1f} output tokens/s; ${res.cost_usd:.6f} spent now")
    for e in res.errors[:5]:
        print(f"  error: {e}")
    if not res.complete:
        print(f"STOPPED: {res.stopped}")
    print(f"tree: {args.out}")
    return 0 if res.complete else 3


def cmd_tree_info(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..tasks import check_limit
    from .replay import RoutingTree

    cap = args.share_cap
    if not 0 <= cap <= 1:
        raise ConfigError(f"--share-cap is a share of output tokens between 0 and 1, e.g. 0.3 (got {cap})")
    tree = RoutingTree(args.path)
    m = tree.manifest
    limit = check_limit(args.limit)
    queries = tree.queries[:limit] if limit is not None else tree.queries
    trees = tree.query_trees(queries)
    from .paths import best_frontier

    pool = m.make_pool()
    front = best_frontier(trees)
    names = pool.names
    rows = [("routing", "accuracy", "$/query", "queries")]
    for label, models in [("all-" + n, [n]) for n in names]:
        leaves = [t.routing(models) for t in trees]
        have = [l for l in leaves if l is not None]
        if have:
            rows.append((label, f"{sum(bool(l.correct) for l in have) / len(have):.1%}",
                         f"{sum(l.cost_usd for l in have) / len(have):.3e}", str(len(have))))
    cc = [t.cheapest_correct for t in trees if t.leaves]
    n = max(1, len(cc))
    if front:
        rows.append(("best possible (cheapest correct)", f"{front[-1].accuracy:.1%}", f"{front[-1].mean_cost_usd:.3e}", str(len(cc))))
    from .token_share import best_plan_mix, best_under_share

    kw = dict(names=names, free_steps=tree.free_steps)
    knows, blind = best_under_share(trees, pool.large, cap, **kw), best_plan_mix(trees, pool.large, cap, **kw)
    info = {"tree": str(tree.folder), "pool": names, "depth": m.recording.depth, "max_steps": m.recording.max_steps,
            "queries": len(queries), "calls": len(tree.store), "leaves": sum(len(t.leaves) for t in trees),
            "missing_branches": sum(t.missing for t in trees), "roro_version": m.roro_version, "weights": m.weights,
            "reachable_correct": sum(c is not None for c in cc) / n,
            "frontier": [(p.mean_cost_usd, p.accuracy) for p in front],
            "token_share": {"model": pool.large, "cap": cap, "best_possible": knows and asdict(knows),
                            "best_blind_mix": blind and asdict(blind)},
            "stats": m.stats}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"tree {tree.folder}: pool {', '.join(names)}; depth {m.recording.depth}, max_steps {m.recording.max_steps}; "
          f"{len(queries)} queries, {info['calls']} recorded calls, {info['leaves']} complete routings, "
          f"{info['missing_branches']} branches not recorded")
    print_table(rows)
    print(f"best possible frontier: {len(front)} points from ${front[0].mean_cost_usd:.3e} ({front[0].accuracy:.1%}) "
          f"to ${front[-1].mean_cost_usd:.3e} ({front[-1].accuracy:.1%})" if front else "no complete routing recorded")
    if knows is not None:
        print(f"with {pool.large} writing at most {cap:.0%} of output tokens ({knows.queries} queries holding every plan): "
              f"best possible {knows.accuracy:.1%} ({knows.share:.0%} of tokens); a router that knows nothing of the "
              f"query at best {_mix_text(blind)}")
    elif front:
        print(f"with {pool.large} writing at most {cap:.0%} of output tokens: no routing fits, or no query holds every plan")
    return 0


def _mix_text(b: Any) -> str:
    if b is None:
        return "cannot stay under the cap"
    mix = " + ".join(f"{w:.2f} x {plan}" for plan, w in b.plans.items())
    return f"{b.accuracy:.1%} ({mix}, plans = models of the free steps)"


def cmd_tree_leaves(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..tasks import check_limit
    from ..trajectories import write_trajectories
    from .labels import leaf_trajectories
    from .replay import RoutingTree

    if not args.out:
        raise ConfigError("roro tree leaves needs --out FILE: the trajectories JSONL to write (replaced)")
    tree = RoutingTree(args.path)
    limit = check_limit(args.limit)
    queries = tree.queries[:limit] if limit is not None else tree.queries
    trajs = leaf_trajectories(tree, queries)
    n = write_trajectories(args.out, trajs, append=False)
    right = sum(bool(t.correct) for t in trajs)
    print(f"tree leaves: {n} routings of {len(queries)} queries ({right} correct), zero model calls -> {args.out}")
    return 0


def cmd_tree_snapshot(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from .snapshot import snapshot_tree

    if not args.out:
        raise ConfigError("roro tree snapshot needs --out FOLDER: where the pinned copy goes (replaced)")
    tree = snapshot_tree(args.path, args.out, limit=args.limit)
    size = sum(p.stat().st_size for p in tree.folder.iterdir() if p.is_file())
    print(f"tree snapshot: the first {len(tree.queries)} complete queries of {args.path} -> {args.out} "
          f"({size / 1e3:.0f} KB, compacted and pinned)")
    return 0


def cmd_tree(args: argparse.Namespace) -> int:
    return {"leaves": cmd_tree_leaves, "snapshot": cmd_tree_snapshot}.get(args.action, cmd_tree_info)(args)


def add_commands(sub: Any, common: Any) -> None:
    p = sub.add_parser("record-tree", help="record the routing tree of a dataset (resumable; then replay it with --pool tree:PATH)")
    p.add_argument("--out", required=True, help="tree folder (created; an existing tree is continued)")
    p.add_argument("--dataset", default=None, help="'sample' (the default), 'rg:<generator>', 'sim[:preset]' or a .jsonl file")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--depth", type=int, default=1,
                   help="routing decisions branched over before each branch is completed by each single model (default 1)")
    p.add_argument("--routers", default="",
                   help="comma-separated router specs run over the tree to record their side calls, e.g. "
                        "steer:0.8,specreason:0.5,trim:0.5")
    p.add_argument("--concurrency", type=int, default=16, help="calls in flight (a local engine batches them; default 16)")
    p.add_argument("--query-window", type=int, default=None,
                   help="queries in flight, started in order (default: --concurrency); fewer keep a stopped recording's "
                        "complete prefix long while many calls fill the engine's batches")
    p.add_argument("--cost-cap", type=float, default=None, help="dollars of live calls; recording stops before passing it")
    p.add_argument("--compact", action="store_true", help="when complete, compress the calls into calls.jsonl.gz")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common(p)
    add_ray_arguments(p)
    p.set_defaults(func=cmd_record_tree)

    p = sub.add_parser("tree", help="summarise a recorded routing tree and its exact best possible routing")
    p.add_argument("action", choices=["info", "leaves", "snapshot"],
                   help="info: what the tree holds and its best possible routing; leaves: write every routing a "
                        "router can take in it as trajectories (--out), for 'roro pairs --process tree:PATH'; "
                        "snapshot: copy the complete queries of a tree still being recorded into --out, compacted "
                        "and pinned (--limit: at most N)")
    p.add_argument("path", help="tree folder")
    p.add_argument("--limit", type=int, default=None, help="only the first N queries")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, help="leaves: the trajectories JSONL to write; snapshot: the folder (replaced)")
    p.add_argument("--share-cap", type=float, default=0.3,
                   help="info: the most accurate routing with the pool's large model writing at most this share of "
                        "output tokens, knowing each query's outcomes and knowing nothing of it (default 0.3)")
    p.set_defaults(func=cmd_tree)
