"""Exact answers on the sim bench: the best routing, its cost and accuracy, and a router's regret.

A *routing* is one model name per step, reasoning steps first, the answer step last
(``n_steps + 1`` names). Two optima are computed:

- :func:`optimal_routing`: the fixed routing that maximises the *expected* objective
  ``J = P(correct) - lambda_c * cost / cost(all-large)`` over the bench's randomness, ties broken by
  lower cost. Exact for any length: a backward dynamic programme over the pending-mistake state
  that keeps every routing tail not dominated on (value if no mistake is pending, value if one
  is, cost) -- the value of a tail is linear in the state distribution, so no dominated tail can
  become optimal. :func:`brute_force_routing` enumerates all routings and must agree (tests).
- :func:`oracle_routing`: with the realised draws of one task (what a run actually sees), the
  cheapest routing whose answer is right: the per-query ceiling of any router.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..types import Trajectory
from .config import SimConfig
from .engine import step_outcome
from .tasks import SimTask, task_of

_TIE = 1e-12


def _models(config: SimConfig, models: Sequence[str] | None) -> list[str]:
    names = list(models) if models else list(config.models)
    for n in names:
        config.model(n)
    return names


def _check_routing(task: SimTask, routing: Sequence[str]) -> None:
    if len(routing) != task.n_steps + 1:
        raise ConfigError(f"a routing of task {task.id} needs {task.n_steps + 1} model names (steps + answer), got {len(routing)}")


def routing_cost(task: Any, routing: Sequence[str], config: SimConfig) -> float:
    """Dollar cost of a routing (deterministic: token counts are fixed by the config)."""
    t = task_of(task)
    _check_routing(t, routing)
    return sum(config.step_cost(m, k, t.n_steps) for k, m in enumerate(routing))


def _transition(config: SimConfig, model: str, hard: bool) -> tuple[float, float]:
    """(P(mistake pending after | none before), P(pending after | pending before))."""
    m = config.model(model)
    e = m.error(hard)
    return e, 1.0 - (1.0 - e) * m.recovery


def routing_p_correct(task: Any, routing: Sequence[str], config: SimConfig) -> float:
    """Probability, over the bench's draws, that a routing ends with the right answer."""
    t = task_of(task)
    _check_routing(t, routing)
    ok = 1.0  # P(no mistake pending)
    for k, m in enumerate(routing[:-1]):
        p01, p11 = _transition(config, m, t.hard[k])
        ok = ok * (1.0 - p01) + (1.0 - ok) * (1.0 - p11)
    return ok


def _cost_ref(t: SimTask, config: SimConfig, names: list[str]) -> float:
    large = max(names, key=lambda n: (config.models[n].output_price_per_m, config.models[n].input_price_per_m))
    return sum(config.step_cost(large, k, t.n_steps) for k in range(t.n_steps + 1)) or 1.0


def routing_objective(task: Any, routing: Sequence[str], config: SimConfig, lambda_c: float = 0.0) -> float:
    """``P(correct) - lambda_c * cost / cost(all-large)`` of a routing."""
    t = task_of(task)
    ref = _cost_ref(t, config, list(config.models))
    return routing_p_correct(t, routing, config) - lambda_c * routing_cost(t, routing, config) / ref


def optimal_routing(query_or_task: Any, config: SimConfig, *, lambda_c: float = 0.0,
                    models: Sequence[str] | None = None) -> tuple[list[str], float, float]:
    """(routing, expected cost, P(correct)) of the best fixed routing (see the module docstring)."""
    t = task_of(query_or_task)
    names = _models(config, models)
    ref = _cost_ref(t, config, list(config.models))
    n = t.n_steps
    # A tail is (value if no mistake pending, value if one is, cost, routing of the tail).
    tails = []
    for m in names:
        c = config.step_cost(m, n, n)
        tails.append((1.0 - lambda_c * c / ref, -lambda_c * c / ref, c, (m,)))
    tails = _prune(tails)
    for k in range(n - 1, -1, -1):
        new = []
        for m in names:
            p01, p11 = _transition(config, m, t.hard[k])
            c = config.step_cost(m, k, n)
            pen = lambda_c * c / ref
            for v0, v1, cost, tail in tails:
                new.append(((1 - p01) * v0 + p01 * v1 - pen, (1 - p11) * v0 + p11 * v1 - pen, cost + c, (m,) + tail))
        tails = _prune(new)
    best = max(v0 for v0, _, _, _ in tails)
    v0, _, cost, routing = min((x for x in tails if x[0] >= best - _TIE), key=lambda x: x[2])
    return list(routing), cost, routing_p_correct(t, routing, config)


def _prune(tails: list[tuple[float, float, float, tuple[str, ...]]]) -> list[tuple[float, float, float, tuple[str, ...]]]:
    """Drop tails that another tail matches or beats in both state values at no higher cost."""
    tails.sort(key=lambda x: (-x[0], -x[1], x[2]))
    kept: list[tuple[float, float, float, tuple[str, ...]]] = []
    for cand in tails:
        if not any(o[0] >= cand[0] - _TIE and o[1] >= cand[1] - _TIE and o[2] <= cand[2] + 1e-18 for o in kept):
            kept.append(cand)
    return kept


def brute_force_routing(query_or_task: Any, config: SimConfig, *, lambda_c: float = 0.0,
                        models: Sequence[str] | None = None, max_steps: int = 14) -> tuple[list[str], float, float]:
    """:func:`optimal_routing` by enumerating every routing (for tests; ``n_steps <= max_steps``)."""
    t = task_of(query_or_task)
    if t.n_steps > max_steps:
        raise ConfigError(f"brute force over {len(config.models)}^{t.n_steps + 1} routings is too slow; use optimal_routing")
    names = _models(config, models)
    ref = _cost_ref(t, config, list(config.models))
    scored = []
    for routing in itertools.product(names, repeat=t.n_steps + 1):
        p = routing_p_correct(t, routing, config)
        c = routing_cost(t, routing, config)
        scored.append((p - lambda_c * c / ref, c, p, list(routing)))
    best = max(s[0] for s in scored)
    _, c, p, routing = min((s for s in scored if s[0] >= best - _TIE), key=lambda s: s[1])
    return routing, c, p


def realized_correct(task: Any, routing: Sequence[str], config: SimConfig, sampling_seed: int | None = None) -> bool:
    """Whether this routing's answer is right with the draws a run actually makes (what the
    provider would write for exactly this routing)."""
    t = task_of(task)
    _check_routing(t, routing)
    pending = False
    for k, m in enumerate(routing[:-1]):
        pending = step_outcome(t, k, pending, m, config, sampling_seed).pending
    return not pending


def oracle_routing(task: Any, config: SimConfig, *, models: Sequence[str] | None = None,
                   sampling_seed: int | None = None) -> tuple[list[str], float] | None:
    """The cheapest routing whose realised answer is right, with its cost; None if none is.

    Forward dynamic programme over (step, mistake pending): the draws are fixed, so each state has
    one cheapest way to reach it.
    """
    t = task_of(task)
    names = _models(config, models)
    best: dict[bool, tuple[float, tuple[str, ...]]] = {False: (0.0, ())}
    for k in range(t.n_steps):
        nxt: dict[bool, tuple[float, tuple[str, ...]]] = {}
        for pending, (cost, path) in best.items():
            for m in names:
                after = step_outcome(t, k, pending, m, config, sampling_seed).pending
                cand = (cost + config.step_cost(m, k, t.n_steps), path + (m,))
                if after not in nxt or cand[0] < nxt[after][0]:
                    nxt[after] = cand
        best = nxt
    if False not in best:
        return None
    cost, path = best[False]
    answer_model = min(names, key=lambda m: config.step_cost(m, t.n_steps, t.n_steps))
    return list(path) + [answer_model], cost + config.step_cost(answer_model, t.n_steps, t.n_steps)


def _routing_of(traj: Trajectory) -> list[str]:
    return [s.model for s in traj.steps]


def routing_regret(traj: Trajectory, config: SimConfig, *, lambda_c: float = 0.0) -> float:
    """Expected-objective regret of the routing a trajectory took: ``J(optimal) - J(taken)`` (>= 0).

    Only complete trajectories (every step and the answer) have a routing to score; others raise.
    Side calls (drafts, probes) are not part of the routing; their cost shows in the eval report.
    """
    t = task_of(traj)
    taken = _routing_of(traj)
    if len(taken) != t.n_steps + 1:
        raise ConfigError(f"trajectory of task {t.id} has {len(taken)} steps; a full routing has {t.n_steps + 1}")
    opt, _, _ = optimal_routing(t, config, lambda_c=lambda_c, models=sorted(set(config.models)))
    return routing_objective(t, opt, config, lambda_c) - routing_objective(t, taken, config, lambda_c)


def grade_routing(traj: Trajectory, *, large: str = "large") -> dict[str, Any]:
    """How a trajectory's escalations line up with the hard steps (for rule-based judges).

    ``careful`` is True when the large model wrote exactly the hard steps (the optimum of
    :meth:`SimConfig.careful`); ``wasted`` counts easy steps given to the large model and
    ``missed`` hard steps left to another model.
    """
    t = task_of(traj)
    hard_k = {k for k in range(t.n_steps) if t.hard[k]}
    large_k = {s.index for s in traj.steps if s.model == large and s.index < t.n_steps}
    reached = min(len(traj.steps), t.n_steps)
    missed = len({k for k in hard_k if k < reached} - large_k)
    wasted = len(large_k - hard_k)
    return {"hard_steps": len(hard_k), "hard_on_large": len(hard_k & large_k), "missed": missed, "wasted": wasted,
            "careful": missed == 0 and wasted == 0 and reached == t.n_steps}
