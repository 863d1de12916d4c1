"""The routed system as a service: routes over one pool, a request in, a trajectory out.

The HTTP server and the ``roro/<route>`` LiteLLM provider both run requests through one
:class:`RoutedService`, so they share routes (built once: a learned policy loads its weights at
start-up, not per request), budgets, the trajectory log and the metrics. Each request is one
:meth:`StepwiseRuntime.arun <roro_sdk.StepwiseRuntime.arun>`; nothing here re-implements routing.
"""

from __future__ import annotations

import argparse
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .._cli_common import choose_pool
from ..errors import ConfigError, LogprobsUnavailableError, ModelCallError, RouterError, UnknownRouteError
from ..pool import ModelPool
from ..routers import expand_alias, make_router
from ..routers.base import Router
from ..runtime import OnStep, StepwiseRuntime
from ..trajectories import TrajectoryAppender
from ..types import Trajectory
from .config import ServeBudgets, ServeConfig
from .metrics import Metrics
from .openai_format import ChatRequest

# Router specs a request may name on the fly: any without weights. A policy (a folder on the
# server's disk) is loaded once at start-up as a configured route, never by a client's string.
_WEIGHTS_SPEC = "policy:"
_MAX_AD_HOC_ROUTES = 64


def _error_names(base: type[Exception]) -> set[str]:
    names, todo = set(), [base]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def upstream_failed(traj: Trajectory) -> bool:
    """Whether an error trajectory failed at a model (after retries and fallback) rather than in
    the router or the server: the difference between a 502 and a 500."""
    kind = traj.metadata.get("error_type", "")
    return kind in _error_names(ModelCallError) or kind in _error_names(LogprobsUnavailableError)


def pool_from(spec: str | dict[str, Any] | ModelPool | None) -> ModelPool:
    """A pool from a file path, ``sim[:preset]``, an inline mapping, a pool, or None (the local pool)."""
    if isinstance(spec, ModelPool):
        return spec
    if isinstance(spec, dict):
        return ModelPool.from_dict(spec, source="serve config pool")
    return choose_pool(argparse.Namespace(pool=spec))


class RouteTable:
    """Route name -> router, built and checked against the pool once. A request's ``model`` is a
    route name (``roro/`` prefix allowed) or, when ``allow_specs``, a router spec without weights
    (``steer:0.7``), built on first use and kept (at most 64)."""

    def __init__(self, pool: ModelPool, routes: Mapping[str, str | Router], *, allow_specs: bool = True, seed: int = 0):
        self.pool, self.allow_specs, self.seed = pool, allow_specs, seed
        self._routes: dict[str, Router] = {}
        for name, spec in routes.items():
            try:
                router = spec if isinstance(spec, Router) else make_router(spec, seed=seed)
                router.check(pool)
            except RouterError as e:
                raise ConfigError(f"route {name!r}: {e}") from e
            self._routes[name] = router
        self._ad_hoc: OrderedDict[str, Router] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self._routes)

    def resolve(self, model: str) -> tuple[str, Router]:
        """(route name, router) for a request's ``model``; :class:`UnknownRouteError` if none."""
        name = model.strip().removeprefix("roro/")
        router = self._routes.get(name)
        if router is not None:
            return name, router
        with self._lock:
            router = self._ad_hoc.get(name)
            if router is not None:
                self._ad_hoc.move_to_end(name)
                return name, router
        if not self.allow_specs or _WEIGHTS_SPEC in expand_alias(name):  # learned = policy:default
            raise UnknownRouteError(self._unknown(model))
        try:
            router = make_router(name, seed=self.seed)
            router.check(self.pool)
        except RouterError:
            raise UnknownRouteError(self._unknown(model)) from None
        with self._lock:
            self._ad_hoc[name] = router
            while len(self._ad_hoc) > _MAX_AD_HOC_ROUTES:
                self._ad_hoc.popitem(last=False)
        return name, router

    def _unknown(self, model: str) -> str:
        shown = model if len(model) <= 80 else model[:77] + "..."
        more = " or a router spec without weights (see 'roro routers')" if self.allow_specs else ""
        return f"no route {shown!r}; this server serves {', '.join(self.names) or 'no named route'}{more}"


class RoutedService:
    """Runs OpenAI-style requests on the routed system: one pool, named routes, per-request
    budgets under the server's ceilings, an optional append-only trajectory log, metrics."""

    def __init__(self, pool: ModelPool, routes: Mapping[str, str | Router], *, budgets: ServeBudgets | None = None,
                 allow_router_specs: bool = True, trajectory_log: str | None = None, seed: int = 0):
        pool.check_keys()  # a missing provider key fails the start, not every request
        self.pool = pool
        self.routes = RouteTable(pool, routes, allow_specs=allow_router_specs, seed=seed)
        self.budgets = budgets or ServeBudgets()
        self.metrics = Metrics()
        self._log = TrajectoryAppender(trajectory_log) if trajectory_log else None
        self._log_lock = threading.Lock()
        self.trajectory_log = str(self._log.path) if self._log else None

    @classmethod
    def from_config(cls, config: ServeConfig, *, pool: ModelPool | None = None) -> RoutedService:
        return cls(pool or pool_from(config.pool), config.routes, budgets=config.budgets,
                   allow_router_specs=config.allow_router_specs, trajectory_log=config.trajectory_log, seed=config.seed)

    def prepare(self, req: ChatRequest) -> tuple[str, StepwiseRuntime]:
        """The route's runtime with the request's budgets, each capped by the server's ceiling."""
        route, router = self.routes.resolve(req.model)
        b = self.budgets
        return route, StepwiseRuntime(self.pool, router, max_steps=_lowest(b.max_steps, req.max_steps),
                                      token_budget=_lowest(b.token_budget, req.token_budget),
                                      cost_budget=_lowest(b.cost_budget, req.cost_budget))

    async def run(self, req: ChatRequest, *, on_step: OnStep | None = None,
                  prepared: tuple[str, StepwiseRuntime] | None = None) -> tuple[str, Trajectory]:
        """Route one request to the end; an error is in the trajectory (``stop_reason="error"``).
        ``prepared``: what :meth:`prepare` returned for it (a caller that checked it first)."""
        route, rt = prepared or self.prepare(req)
        traj = await rt.arun(req.query, raise_on_error=False, on_step=on_step)
        traj.metadata["route"] = route
        self.record(route, traj)
        return route, traj

    def record(self, route: str, traj: Trajectory) -> None:
        """Log the trajectory (one line, written at once: a kill -9 keeps every finished one)."""
        if self._log is not None:
            with self._log_lock:
                self._log.write(traj)
        self.metrics.record_trajectory(route, traj)

    def close(self) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.close()
            self._log = None


def _lowest(*values: Any) -> Any:
    given = [v for v in values if v is not None]
    return min(given) if given else None
