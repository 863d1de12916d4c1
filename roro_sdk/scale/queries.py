"""One router over many queries on Ray workers: the ``--ray`` twin of
:meth:`StepwiseRuntime.arun_many <roro_sdk.runtime.StepwiseRuntime.arun_many>` (``roro eval``).

Same contract as the local path: results in input order, each passed to ``on_result`` on the
driver the moment it arrives (so ``--out`` gets it at once), a failing query is an error
trajectory, never fatal. A query whose worker kept dying under it is recorded as such an error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..pool import ModelPool
from ..routers.base import Router
from ..runtime import StepwiseRuntime, as_query
from ..types import Query, Trajectory
from .options import RayOptions
from .pools import pool_recipe
from .sharding import WorkerGroup


@dataclass
class QueryWorker:
    """Built once per worker: the pool (from its recipe) and one runtime; then ``query -> trajectory``."""

    make_pool: Callable[[], Any]
    router: Router
    runtime_kwargs: dict[str, Any]

    def __call__(self) -> Callable[[Query], Any]:
        runtime = StepwiseRuntime(self.make_pool(), self.router, **self.runtime_kwargs)

        async def run(q: Query) -> Trajectory:
            return await runtime.arun(q, raise_on_error=False)

        return run


def error_trajectory(query: Query, router: str, why: str) -> Trajectory:
    """What is recorded for a query that could not be run at all (its worker kept dying under it)."""
    return Trajectory(query=query, router=router, stop_reason="error", error=f"scale-out: {why}",
                      metadata={"error_type": "RayWorkerError"})


async def arun_queries(pool: Any, router: Router, queries: Iterable[Query | str | dict], *, ray: RayOptions,
                       concurrency: int = 8, progress: bool = False, on_result: Callable[[Trajectory], None] | None = None,
                       **runtime_kwargs: Any) -> list[Trajectory]:
    """Route ``queries`` with ``router`` over Ray workers; see :meth:`StepwiseRuntime.arun_many`.

    ``pool``: a :class:`~roro_sdk.ModelPool` (rebuilt in each worker, :func:`pool_recipe`) or a
    ``() -> ModelPool`` callable that runs there. ``runtime_kwargs``: ``max_steps``,
    ``token_budget``, ``cost_budget``, ``checker``, as for :class:`StepwiseRuntime`."""
    qs = [as_query(q) for q in queries]
    # the same checks as the local path (router vs pool, budgets, keys), here, before any worker starts
    StepwiseRuntime(pool if isinstance(pool, ModelPool) else pool(), router, **runtime_kwargs).pool.check_keys()
    results: list[Trajectory | None] = [None] * len(qs)
    bar = _progress(len(qs), router.name) if progress else None
    correct = 0

    def sink(i: int, t: Trajectory) -> None:
        nonlocal correct
        results[i] = t
        if on_result is not None:
            on_result(t)
        if bar is not None:
            correct += bool(t.correct)
            bar.set_postfix(acc=f"{correct / (bar.n + 1):.2f}", refresh=False)
            bar.update(1)

    group = WorkerGroup(QueryWorker(pool_recipe(pool), router, runtime_kwargs), ray, concurrency=concurrency)
    try:
        await group.arun(qs, sink, give_up=lambda i, q, why: error_trajectory(q, router.name, why))
    finally:
        group.close()
        if bar is not None:
            bar.close()
    return [t for t in results if t is not None]


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="q", dynamic_ncols=True)

