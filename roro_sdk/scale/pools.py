"""A pool as a recipe that rebuilds it in a Ray worker.

Why not pickle the pool: what makes it work lives in this process, not in the pool -- the sim
bench's config (``sim://<key>`` is a key into this process's table) and local models registered
with :func:`~roro_sdk.local.register_local_model` (a folder this process knows by name). The
recipe carries both and re-registers them in the worker before it builds the pool, so the worker
loads each local model once and answers sim requests exactly as here. Offline registry models
need nothing: every process finds them by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import RayConfigError
from ..pool import ModelPool
from ..types import ModelSpec

PoolSource = "ModelPool | Callable[[], ModelPool]"


@dataclass(frozen=True)
class PoolRecipe:
    """Everything a worker needs to build the same pool (picklable)."""

    specs: list[ModelSpec]
    allow_unpriced: bool = False
    prompt: Any = None
    retry: Any = None
    sim_configs: dict[str, Any] = field(default_factory=dict)      # api_base -> SimConfig
    local_models: dict[str, tuple[Any, dict]] = field(default_factory=dict)  # name -> (folder or loader, overrides)
    # a read-only store (a routing tree replayed): each worker reopens the folder, nothing is written
    cache: Any = None

    def __call__(self) -> ModelPool:
        if self.sim_configs:
            from ..sim import register_sim_config

            for api_base, cfg in self.sim_configs.items():
                register_sim_config(cfg)  # the same key: a config's key is a hash of its fields
        if self.local_models:
            from ..local.provider import register_local_model

            for name, (source, overrides) in self.local_models.items():
                register_local_model(name, source, **overrides)
        return ModelPool(self.specs, allow_unpriced=self.allow_unpriced, prompt=self.prompt, retry=self.retry, cache=self.cache)


def pool_recipe(pool: ModelPool | Callable[[], ModelPool]) -> Callable[[], ModelPool]:
    """A picklable zero-argument callable that builds ``pool`` in a worker. A callable is returned
    as it is (the caller's own recipe). A pool with a generation cache is refused: the cache is a
    file of this process, and workers writing it at once would not share it safely."""
    if not isinstance(pool, ModelPool):
        if callable(pool):
            return pool
        raise RayConfigError(f"pool must be a ModelPool or a () -> ModelPool callable, not {type(pool).__name__}")
    replay = pool.cache if pool.cache is not None and getattr(pool.cache, "live", True) is False else None
    if pool.cache is not None and replay is None:
        raise RayConfigError("a generation cache (--cache) or a growing tree (--grow-tree) cannot be used with --ray: it "
                             "is a file of the driver's process; run without it, or without --ray")
    sims: dict[str, Any] = {}
    locals_: dict[str, tuple[Any, dict]] = {}
    for s in pool.specs:
        provider, _, name = s.model.partition("/")
        if provider == "roro_sim":
            from ..sim.provider import sim_config_for

            cfg = sim_config_for(s.api_base)
            if cfg is None:
                raise RayConfigError(f"model {s.name!r}: no sim config {s.api_base!r} in this process; build the pool with "
                                     "roro_sdk.sim.sim_pool(config)")
            sims[s.api_base or ""] = cfg
        elif provider == "roro_local":
            from ..local.provider import local_registration

            reg = local_registration(name)
            if reg is not None:
                locals_[name] = reg
    return PoolRecipe(specs=list(pool.specs), allow_unpriced=pool.allow_unpriced, prompt=pool.prompt, retry=pool.retry,
                      sim_configs=sims, local_models=locals_, cache=replay)
