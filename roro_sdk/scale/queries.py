"""Routers over many queries on Ray workers: the ``--ray`` twin of
:meth:`StepwiseRuntime.arun_many <roro_sdk.runtime.StepwiseRuntime.arun_many>` (``roro eval``).

Same contract as the local path: results in input order, each passed to ``on_result`` on the
driver the moment it arrives (so ``--out`` gets it at once), a failing query is an error
trajectory, never fatal; a query whose worker kept dying under it is recorded as such an error.
One :class:`QueryRunner` keeps its workers (and their loaded models) across the routers of an
evaluation, which run one after another as on the local path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..pool import ModelPool
from ..routers.base import Router
from ..runtime import AccuracyBar, StepwiseRuntime, as_query
from ..types import Query, Trajectory
from .options import RayOptions
from .pools import pool_recipe
from .sharding import WorkerGroup


@dataclass
class QueryWorker:
    """Built once per worker: the pool (from its recipe) and one runtime per router; then items
    ``(router index, query) -> trajectory``."""

    make_pool: Callable[[], Any]
    routers: list[Router]
    runtime_kwargs: dict[str, Any]

    def __call__(self) -> Callable[[tuple[int, Query]], Any]:
        from .._env import import_litellm

        import_litellm()  # here, at set-up (~3 s), not inside the first query's timing
        pool = self.make_pool()
        runtimes = [StepwiseRuntime(pool, r, **self.runtime_kwargs) for r in self.routers]

        async def run(item: tuple[int, Query]) -> Trajectory:
            k, q = item
            return await runtimes[k].arun(q, raise_on_error=False)

        return run


def error_trajectory(query: Query, router: str, why: str) -> Trajectory:
    """What is recorded for a query that could not be run at all (its worker kept dying under it)."""
    return Trajectory(query=query, router=router, stop_reason="error", error=f"scale-out: {why}",
                      metadata={"error_type": "RayWorkerError"})


class QueryRunner:
    """Ray workers that can run any of ``routers`` over ``pool``; :meth:`arun` one router at a time.

    ``pool``: a :class:`~roro_sdk.ModelPool` (rebuilt in each worker, :func:`pool_recipe`) or a
    ``() -> ModelPool`` callable that runs there. ``runtime_kwargs``: ``max_steps``,
    ``token_budget``, ``cost_budget``, ``checker``, as for :class:`StepwiseRuntime`."""

    def __init__(self, pool: Any, routers: Sequence[Router], *, ray: RayOptions, concurrency: int = 8,
                 **runtime_kwargs: Any):
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
        self.routers = list(routers)
        driver_pool = pool if isinstance(pool, ModelPool) else pool()
        for r in self.routers:  # the local path's checks (router vs pool, budgets, keys), before any worker starts
            StepwiseRuntime(driver_pool, r, **runtime_kwargs)
        driver_pool.check_keys()
        self.group = WorkerGroup(QueryWorker(pool_recipe(pool), self.routers, runtime_kwargs), ray, concurrency=concurrency)

    async def arun(self, router: Router, queries: Iterable[Query | str | dict], *, progress: bool = False,
                   on_result: Callable[[Trajectory], None] | None = None) -> list[Trajectory]:
        k = next((i for i, r in enumerate(self.routers) if r is router), None)
        if k is None:
            raise ConfigError(f"router {router.name!r} was not given to this QueryRunner")
        qs = [as_query(q) for q in queries]
        results: list[Trajectory | None] = [None] * len(qs)
        bar = AccuracyBar(len(qs), router.name) if progress else None

        def sink(i: int, t: Trajectory) -> None:
            results[i] = t
            if on_result is not None:
                on_result(t)
            if bar is not None:
                bar.add(t)

        try:
            await self.group.arun([(k, q) for q in qs], sink, give_up=lambda i, item, why: error_trajectory(item[1], router.name, why))
        finally:
            if bar is not None:
                bar.close()
        return [t for t in results if t is not None]

    async def wait_ready(self) -> None:
        """Wait until every worker has built its pool: a run's wall time then excludes start-up."""
        await self.group.wait_ready()

    def close(self) -> None:
        self.group.close()

    def __enter__(self) -> QueryRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def arun_queries(pool: Any, router: Router, queries: Iterable[Query | str | dict], *, ray: RayOptions,
                       concurrency: int = 8, progress: bool = False, on_result: Callable[[Trajectory], None] | None = None,
                       **runtime_kwargs: Any) -> list[Trajectory]:
    """One router over ``queries`` on Ray workers started for this call; see :class:`QueryRunner`."""
    with QueryRunner(pool, [router], ray=ray, concurrency=concurrency, **runtime_kwargs) as runner:
        return await runner.arun(router, queries, progress=progress, on_result=on_result)
