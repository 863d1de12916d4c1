"""GRPO's rollout phase on Ray workers (``ray:`` in the config, ``roro train-router --ray``).

The policy stays in the driver, on its one GPU, and is the only copy that trains. Each worker
builds the same router once (the same base: the seeded tiny model, or the named weights) and, at
every update, receives the driver's trainable weights -- the LoRA adapter and the optional head,
a few MB -- plus the update's sampling seed, once per worker (:class:`~roro_sdk.scale.WorkerGroup`
context), not once per rollout. A rollout's draws are seeded by (update seed, rollout id, step)
(:class:`~roro_sdk.policy.router.PolicyRouter`), so the rollouts of an update are the same whatever
the number of workers. Results come back in rollout order; a rollout whose worker kept dying
under it comes back as an error trajectory, as a failed query does on the local path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..policy.router import PolicyRouter
from ..runtime import StepwiseRuntime
from ..types import Query, Trajectory


def trainable_parameters(router: PolicyRouter) -> dict[str, torch.nn.Parameter]:
    """What GRPO trains, by name: the adapter's parameters (``model.*``) and the head's (``head.*``)."""
    named = {f"model.{n}": p for n, p in router.model.named_parameters() if p.requires_grad}
    if router.head is not None:
        named.update({f"head.{n}": p for n, p in router.head.named_parameters()})
    return named


class _WorkerRollouts:
    """In a worker: the pool and a router copy; ``update`` loads new weights, calls run rollouts."""

    def __init__(self, pool: Any, router: PolicyRouter, runtime_kw: dict[str, Any]):
        if torch.cuda.is_available():  # only when Ray gave this worker a GPU (num_gpus > 0)
            router.to("cuda")
        router.model.eval()
        self.pool, self.router, self.runtime_kw = pool, router, runtime_kw
        self.params = trainable_parameters(router)
        self.runtime: StepwiseRuntime | None = None

    def update(self, context: tuple[dict[str, torch.Tensor], int]) -> None:
        state, seed = context
        if set(state) != set(self.params):
            raise RuntimeError("the driver's trainable weights do not match this worker's router; the worker built "
                               "another base model")
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(state[n].to(p.device, p.dtype))
        self.runtime = StepwiseRuntime(self.pool, self.router.with_mode("sample", seed=seed), **self.runtime_kw)

    async def __call__(self, q: Query) -> Trajectory:
        assert self.runtime is not None, "update() comes first"
        return await self.runtime.arun(q, raise_on_error=False)


class RolloutWorker:
    """Picklable set-up of a rollout worker: ``make_pool()`` and ``build_router()`` run in it."""

    def __init__(self, make_pool: Callable[[], Any], build_router: Callable[[], PolicyRouter], runtime_kw: dict[str, Any]):
        self.make_pool, self.build_router, self.runtime_kw = make_pool, build_router, runtime_kw

    def __call__(self) -> _WorkerRollouts:
        from .._env import import_litellm

        import_litellm()
        torch.set_num_threads(1)  # one worker per reserved CPU: its decisions must not fight the others'
        return _WorkerRollouts(self.make_pool(), self.build_router(), self.runtime_kw)


class RayRollouts:
    """The driver's side: workers started once per training run, fed each update's rollouts."""

    def __init__(self, options: Any, pool: Any, build_router: Callable[[], PolicyRouter], *, concurrency: int,
                 **runtime_kw: Any):
        from ..scale import WorkerGroup, pool_recipe

        self.group = WorkerGroup(RolloutWorker(pool_recipe(pool), build_router, runtime_kw), options, concurrency=concurrency)

    def run(self, router: PolicyRouter, seed: int, queries: Sequence[Query]) -> list[Trajectory]:
        """The rollouts of ``queries`` with ``router``'s current weights, sampled with ``seed``."""
        from .._sync import run_sync
        from ..scale import error_trajectory

        state = {n: p.detach().to("cpu", copy=True) for n, p in trainable_parameters(router).items()}
        out: list[Trajectory | None] = [None] * len(queries)

        def sink(i: int, t: Trajectory) -> None:
            out[i] = t

        run_sync(self.group.arun(list(queries), sink, context=(state, seed),
                                 give_up=lambda i, q, why: error_trajectory(q, router.name, why)))
        return [t for t in out if t is not None]

    def close(self) -> None:
        self.group.close()
