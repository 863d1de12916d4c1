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
        raise PoolFileError("--pool is empty: give a pool file, or 'sim[:preset]', or leave --pool out for the local pool")
    sim = pool_for(args)
    if sim is not None:
        return sim
    return ModelPool.from_file(args.pool) if getattr(args, "pool", None) else default_pool()


def print_table(rows: list[tuple[str, ...]]) -> None:
    """Rows of strings as aligned columns; the first row is the header, underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for j, r in enumerate(rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if j == 0:
            print("  ".join("-" * w for w in widths))
