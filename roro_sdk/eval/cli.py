"""Command-line glue for evaluation: ``roro eval --report``, ``roro report DIR``, ``roro cache``.

Kept here, next to what it drives, so ``roro_sdk/cli.py`` only wires arguments to these functions.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """The evaluation options of ``roro eval`` (on top of the runtime ones)."""
    p.add_argument("--sweep", action="append", default=[], metavar="KIND:VALUES",
                   help="sweep a router's knob into a curve: steer:0.5,0.7,0.9 or trim:0.1..0.9/9 (repeatable)")
    p.add_argument("--random-seeds", type=int, default=0, metavar="N",
                   help="add the random(p) baseline curve, averaged over N seeds (default: off)")
    p.add_argument("--random-grid", default="0,0.25,0.5,0.75,1", metavar="VALUES", help="p values of the random curve")
    p.add_argument("--report", default=None, metavar="DIR",
                   help="write results.json, report.md and tradeoff.png into DIR (adds all-small/all-large if missing)")
    p.add_argument("--no-plots", action="store_true", help="with --report: skip the PNG (no matplotlib needed)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--cache", nargs="?", const="", default=None, metavar="PATH",
                   help="answer repeated identical calls from an on-disk cache (default path: the user cache folder)")


def add_subcommands(sub: Any) -> None:
    """``roro report`` and ``roro cache``."""
    p = sub.add_parser("report", help="rebuild report.md and tradeoff.png from a saved evaluation folder")
    p.add_argument("dir", help="folder holding results.json (written by 'roro eval --report DIR')")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("cache", help="show or clear the generation cache")
    p.add_argument("action", choices=["stats", "clear"])
    p.add_argument("--path", default=None, help="cache file or folder (default: the user cache folder)")
    p.add_argument("--model", default=None, help="with clear: only entries of this pool model name")
    p.set_defaults(func=cmd_cache)


def pool_for(args: argparse.Namespace):
    """A sim pool when ``--pool sim[:spec]`` is given, or when the dataset is a sim bench and no
    pool is; otherwise None (the caller uses its default)."""
    from ..tasks import is_sim_spec

    src = getattr(args, "pool", None) or getattr(args, "dataset", None) or ""
    if is_sim_spec(src) and not Path(src).exists():
        from ..sim import parse_sim_spec, sim_pool

        return sim_pool(parse_sim_spec(src))
    return None


def attach_cache(args: argparse.Namespace, pool) -> None:
    if getattr(args, "cache", None) is None:
        return
    from ..cache import GenerationCache

    pool.cache = GenerationCache(args.cache or None)


def wants_report(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "report", None) or getattr(args, "sweep", None) or getattr(args, "random_seeds", 0))


def _print_run(r) -> None:
    from .report import accuracy_text, cost_text

    hits = "" if r.cache is None else f"  cache {int(r.cache['hits'])}/{int(r.cache['hits'] + r.cache['misses'])}"
    print(f"  {r.label:<24} acc {accuracy_text(r.accuracy, r.n_checked, r.accuracy_ci)}  "
          f"${cost_text(r.mean_cost_usd, r.priced, '.3g')}/q  large {r.large_step_share:4.0%}  {r.wall_s:6.1f}s{hits}", flush=True)


def run_eval_report(args: argparse.Namespace, pool, queries: list, routers: list, ray=None) -> int:
    """``roro eval`` with sweeps, the random curve or ``--report``: evaluate, print, write the report
    (on Ray workers with ``ray``, :class:`~roro_sdk.scale.RayOptions`)."""
    from .._files import write_text_file
    from .compare import evaluate, parse_values
    from .report import num, pct, write_report

    print(f"dataset: {args.dataset} ({len(queries)} queries); pool: {', '.join(pool.names)}", flush=True)
    res = evaluate(pool, queries, routers, sweeps=args.sweep, random_seeds=args.random_seeds,
                   random_grid=parse_values(args.random_grid), concurrency=args.concurrency, max_steps=args.max_steps,
                   token_budget=args.token_budget, cost_budget=args.cost_budget, bootstrap=args.bootstrap, seed=args.seed,
                   dataset=args.dataset, progress=False, trajectories_out=args.out, on_run=_print_run,
                   ray=ray)
    a = res.analysis
    for c in a.curves + ([a.random_curve] if a.random_curve else []):
        if c.share:
            print(f"  curve {c.family:<22} AUC {c.share['auc']:.3f}  APGR {num(c.share['apgr'])}  "
                  f"CPT(50%) {pct(c.share['cpt']['50%'])}  CPT(80%) {pct(c.share['cpt']['80%'])}")
    if a.oracle:
        print(f"  per-query oracle: {a.oracle.accuracy:.1%} at ${a.oracle.mean_cost_usd:.3g}/q")
    for note in a.notes:
        print(f"  note: {note}")
    if args.report:
        paths = write_report(res, args.report, plots=not args.no_plots)
        print(f"report: {paths['markdown']}")
    if args.summary_json:
        write_text_file(args.summary_json, res.model_dump_json(indent=1, by_alias=True), what="--summary-json file")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import rebuild_report

    paths = rebuild_report(args.dir, plots=not args.no_plots)
    print(f"report: {paths['markdown']}")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from ..cache import GenerationCache, cache_file

    path = cache_file(args.path)
    if not path.is_file():  # looking must not create an empty cache (or its folders)
        print(f"no generation cache at {path}")
        return 0
    cache = GenerationCache(path)
    if args.action == "clear":
        n = cache.clear(model=args.model)
        print(f"removed {n} entries from {cache.path}")
    else:
        info = cache.info()
        print(f"{info['path']}: {info['entries']} entries, {info['bytes'] / 1e6:.1f} MB")
        for model, n in sorted(info["by_model"].items()):
            print(f"  {model or '(unnamed)'}: {n}")
    cache.close()
    return 0
