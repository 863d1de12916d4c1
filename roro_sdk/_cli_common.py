"""What the ``roro`` subcommand modules share (``cli``, ``train.cli``, ``eval.cli``): choosing the
pool from the arguments and printing a plain-text table. It sits below all of them, so no
subcommand module imports another one's private helpers."""

from __future__ import annotations

import argparse


def choose_pool(args: argparse.Namespace):
    """The pool a command runs on: ``--pool sim[:spec]`` or a sim dataset -> the sim bench; a pool
    file; else the embedded local default pool."""
    from .defaults import default_pool
    from .errors import PoolFileError
    from .eval.cli import pool_for
    from .pool import ModelPool

    if getattr(args, "pool", None) is not None and not args.pool.strip():  # not a silent fall back to the local models
        raise PoolFileError("--pool is empty: give a pool file, 'sim[:preset]' or 'tree:PATH', or leave --pool out for the local pool")
    from .tree.replay import is_tree_spec, tree_of_spec

    if is_tree_spec(getattr(args, "pool", None)):
        tree = tree_of_spec(args.pool)
        if getattr(args, "max_steps", None) is not None and not getattr(args, "grow_tree", False):
            tree.check_max_steps(args.max_steps)
        return tree.pool(grow=bool(getattr(args, "grow_tree", False)))
    sim = pool_for(args)
    if sim is not None:
        return sim
    return ModelPool.from_file(args.pool) if getattr(args, "pool", None) else default_pool()


def load_queries(args: argparse.Namespace) -> list:
    """The queries of ``--dataset`` (``--limit``, ``--seed``); with no ``--dataset``, a tree pool's
    own queries (``--pool tree:PATH``), else the bundled sample. ``--dataset tree:PATH`` names a
    tree's queries explicitly."""
    from .tasks import check_limit, load_dataset
    from .tree.replay import is_tree_spec, tree_of_spec

    spec = getattr(args, "dataset", None)
    if spec is None:
        spec = args.pool if is_tree_spec(getattr(args, "pool", None)) else "sample"
        args.dataset = spec  # named in summaries and reports
    if is_tree_spec(spec):
        limit = check_limit(getattr(args, "limit", None))
        qs = tree_of_spec(spec).queries
        return qs[:limit] if limit is not None else qs
    return load_dataset(spec, limit=getattr(args, "limit", None), seed=getattr(args, "seed", 0))


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings as aligned columns; the first row is the header, underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))


def add_ray_arguments(p: argparse.ArgumentParser) -> None:
    """``--ray auto|ADDRESS`` and the size of each worker: the one backend switch of the
    data-parallel commands (docs/scale-out.md). Without ``--ray`` the command runs locally."""
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run on Ray workers (pip install 'roro-sdk[ray]'): 'auto' (a running cluster, else one on this "
                        "machine) or a head node's host:port / ray://host:port; results go to the same files")
    p.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="with --ray: workers to start (default: as many as the cluster's CPUs, or GPUs, hold)")
    p.add_argument("--ray-cpus", type=float, default=None, metavar="X", help="with --ray: CPUs reserved per worker (default 1)")
    p.add_argument("--ray-gpus", type=float, default=None, metavar="X", help="with --ray: GPUs per worker (default 0)")


def ray_from_args(args: argparse.Namespace):
    """The :class:`~roro_sdk.scale.RayOptions` the arguments ask for, or None (the local path)."""
    from .errors import RayConfigError

    sizes = {"workers": getattr(args, "ray_workers", None), "num_cpus": getattr(args, "ray_cpus", None),
             "num_gpus": getattr(args, "ray_gpus", None)}
    if getattr(args, "ray", None) is None:
        given = [f"--ray-{k.removeprefix('num_')}" for k, v in sizes.items() if v is not None]
        if given:
            raise RayConfigError(f"{', '.join(given)} need --ray auto|ADDRESS")
        return None
    from .scale import ray_options

    return ray_options(args.ray, **sizes)
