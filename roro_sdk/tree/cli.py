"""``roro record-tree`` and ``roro tree``: record a routing tree, and read what is exactly best in it.

Registered through ``roro_sdk.cli._COMMAND_MODULES``; heavy imports happen inside the commands.
"""

from __future__ import annotations

import argparse
import json
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
                      cost_cap=args.cost_cap, routers=routers, seed=args.seed, dataset=dataset, progress=not args.quiet,
                      compact=args.compact, ray=ray)
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
    from ..tasks import check_limit
    from .replay import RoutingTree

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
    info = {"tree": str(tree.folder), "pool": names, "depth": m.recording.depth, "max_steps": m.recording.max_steps,
            "queries": len(queries), "calls": len(tree.store), "leaves": sum(len(t.leaves) for t in trees),
            "missing_branches": sum(t.missing for t in trees), "roro_version": m.roro_version, "weights": m.weights,
            "reachable_correct": sum(c is not None for c in cc) / n,
            "frontier": [(p.mean_cost_usd, p.accuracy) for p in front], "stats": m.stats}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"tree {tree.folder}: pool {', '.join(names)}; depth {m.recording.depth}, max_steps {m.recording.max_steps}; "
          f"{len(queries)} queries, {info['calls']} recorded calls, {info['leaves']} complete routings, "
          f"{info['missing_branches']} branches not recorded")
    print_table(rows)
    print(f"best possible frontier: {len(front)} points from ${front[0].mean_cost_usd:.3e} ({front[0].accuracy:.1%}) "
          f"to ${front[-1].mean_cost_usd:.3e} ({front[-1].accuracy:.1%})" if front else "no complete routing recorded")
    return 0


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
    p.add_argument("--concurrency", type=int, default=16)
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
    p.set_defaults(func=cmd_tree)
