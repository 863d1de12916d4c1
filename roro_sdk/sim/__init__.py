"""``roro_sdk.sim``: a synthetic routing bench. A TEST BENCH, never the default for real work.

Seeded tasks whose steps are easy or hard; sim models (``roro_sim/small``, ``roro_sim/large``,
any configured name) reached through the same pool and LiteLLM path as real models, whose chance
of a wrong step depends on the step's difficulty and the model. Costs, error rates, step counts
and recovery after a wrong step are all :class:`SimConfig` fields, and the best routing and its
cost are computable (:func:`optimal_routing`), so tests can assert a router's regret and
trainers can check that they learn to escalate exactly on hard steps.

    from roro_sdk.sim import SimConfig, sim_pool, sim_queries, optimal_routing
    cfg = SimConfig.careful()
    pool, queries = sim_pool(cfg), sim_queries(n=50, config=cfg)

See docs/sim.md.
"""

from __future__ import annotations

from .config import SIM_PRESETS, SimConfig, SimModel, parse_sim_spec
from .engine import RECORD_RE, step_outcome
from .optimal import (
    brute_force_routing,
    grade_routing,
    optimal_routing,
    oracle_routing,
    realized_correct,
    routing_cost,
    routing_objective,
    routing_p_correct,
    routing_regret,
)
from .provider import PROVIDER, register_sim_config, register_sim_provider, sim_complete, sim_pool
from .routers import SimOptimalRouter, SimOracleRouter
from .tasks import SimTask, is_hard_step, sim_queries, task_of

# The API. PROVIDER, RECORD_RE, step_outcome, register_sim_config and SIM_PRESETS are the bench's
# own parts: still importable from here (their old path), not API.
__all__ = [
    "SimConfig",
    "SimModel",
    "parse_sim_spec",
    "SimTask",
    "sim_queries",
    "task_of",
    "is_hard_step",
    "sim_pool",
    "register_sim_provider",
    "sim_complete",
    "optimal_routing",
    "brute_force_routing",
    "routing_cost",
    "routing_p_correct",
    "routing_objective",
    "realized_correct",
    "oracle_routing",
    "routing_regret",
    "grade_routing",
    "SimOptimalRouter",
    "SimOracleRouter",
]
