"""Reference routers for the sim bench that READ THE HIDDEN GROUND TRUTH: ceilings, not baselines.

``SimOptimalRouter`` follows :func:`~roro_sdk.sim.optimal_routing` (the best fixed routing in
expectation); ``SimOracleRouter`` follows :func:`~roro_sdk.sim.oracle_routing` (the cheapest
routing that is right with the draws this run will make). Put them in a sim report to show how
far a real router is from the best possible; never compare them as if they were deployable.
"""

from __future__ import annotations

from ..routers.base import Decision, Router, RoutingState, one_hot
from .config import SimConfig
from .optimal import optimal_routing, oracle_routing
from .tasks import task_of


class _Planned(Router):
    def __init__(self, config: SimConfig, name: str):
        self.config, self.name = config, name

    def _plan(self, state: RoutingState) -> list[str]:
        raise NotImplementedError

    def decide(self, state: RoutingState) -> Decision:
        key = ("sim-plan", id(self))
        if key not in state.memo:
            state.memo[key] = [m if m in state.pool else state.pool.large for m in self._plan(state)]
        plan = state.memo[key]
        m = plan[min(state.step_index, len(plan) - 1)]
        return Decision(m, one_hot(state.pool.names, m), f"{self.name}: planned step {state.step_index}")


class SimOptimalRouter(_Planned):
    """Routes each step as the expected-optimal fixed routing does (``lambda_c`` as in optimal_routing)."""

    def __init__(self, config: SimConfig, *, lambda_c: float = 0.0, name: str | None = None):
        super().__init__(config, name or ("sim-optimal" if lambda_c == 0 else f"sim-optimal:{lambda_c:g}"))
        self.lambda_c = lambda_c

    def _plan(self, state: RoutingState) -> list[str]:
        return optimal_routing(task_of(state.query), self.config, lambda_c=self.lambda_c,
                               models=[m for m in state.pool.names if m in self.config.models])[0]


class SimOracleRouter(_Planned):
    """Routes each step as the cheapest routing that ends right with this run's draws (falls back
    to all-large when no routing can be right). Assumes the pool's sampling seed is unset."""

    def __init__(self, config: SimConfig, *, name: str = "sim-oracle"):
        super().__init__(config, name)

    def _plan(self, state: RoutingState) -> list[str]:
        task = task_of(state.query)
        found = oracle_routing(task, self.config, models=[m for m in state.pool.names if m in self.config.models])
        return found[0] if found else [state.pool.large] * (task.n_steps + 1)
