"""``roro_sdk.scale``: the data-parallel commands on Ray (``--ray auto|ADDRESS``; ``pip install
"roro-sdk[ray]"``). Ray is imported only when a run asks for it; the local path never needs it.

    from roro_sdk.scale import RayOptions, WorkerGroup, arun_sharded
    await arun_sharded(items, make_worker, sink, options=RayOptions(address="auto"))

:func:`arun_sharded` / :class:`WorkerGroup` are the one engine: items to workers that each build
their pool once, results streamed back to a driver-side sink (the same append-only file and
progress bar as the local path), dead workers replaced, items retried, a poison item recorded as
an error. ``roro eval``, ``roro collect`` and the GRPO trainer's rollouts are wired onto it. See
docs/scale-out.md.
"""

from __future__ import annotations

from .options import RayOptions, ray_options
from .pools import PoolRecipe, pool_recipe
from .queries import QueryRunner, QueryWorker, arun_queries, error_trajectory
from .sharding import RunStats, WorkerGroup, arun_sharded, connect, import_ray

__all__ = [
    "RayOptions",
    "ray_options",
    "WorkerGroup",
    "RunStats",
    "arun_sharded",
    "connect",
    "import_ray",
    "pool_recipe",
    "PoolRecipe",
    "QueryRunner",
    "QueryWorker",
    "arun_queries",
    "error_trajectory",
]
