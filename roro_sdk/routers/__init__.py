"""Routers: decide, before each reasoning step, which model of the pool writes it."""

from __future__ import annotations

import math

from ..errors import RouterError
from .base import BudgetExhausted, Decision, Router, RoutingState
from .drafting import ConfidenceRouter, SpecReasonRouter, TrimRouter
from .simple import BudgetGuard, FixedRouter, QueryLevelRouter, RandomRouter, length_difficulty

__all__ = [
    "Router",
    "Decision",
    "RoutingState",
    "BudgetExhausted",
    "FixedRouter",
    "RandomRouter",
    "QueryLevelRouter",
    "BudgetGuard",
    "ConfidenceRouter",
    "SpecReasonRouter",
    "TrimRouter",
    "length_difficulty",
    "make_router",
    "ROUTER_SPECS",
]

ROUTER_SPECS = {
    "all-small": "every step to the cheapest model",
    "all-large": "every step to the most expensive model",
    "fixed:NAME": "every step to model NAME",
    "random:P": "each step to the large model with probability P (seeded)",
    "steer:T": "STEER: small model's probe confidence; escalate under T (0-1)",
    "specreason:T": "SpecReason: large model scores the small draft 0-9; keep at >= T",
    "trim:T": "TRIM: regenerate with the large model when the draft's step score < T",
    "query:T": "RouteLLM-style: whole query to the large model when difficulty >= T",
    "budget:SPEC": "any router above, forced to the cheap model when the budget runs low",
    "policy:PATH": "a learned LoRA policy router saved in folder PATH",
}


def make_router(spec: str, *, seed: int = 0) -> Router:
    """A router from a short spec string (the CLI's ``--router``); see :data:`ROUTER_SPECS`."""
    spec = spec.strip()
    if spec in ("all-small", "small"):
        return FixedRouter(name="all-small")
    if spec in ("all-large", "large"):
        return FixedRouter(tier=-1)
    kind, _, arg = spec.partition(":")
    if kind == "fixed" and arg:
        return FixedRouter(arg)
    if kind == "budget" and arg:
        return BudgetGuard(make_router(arg, seed=seed))
    if kind == "policy" and arg:
        from ..policy.router import PolicyRouter

        return PolicyRouter.load(arg)
    numeric = {
        "random": (0.5, lambda v: RandomRouter(p_large=v, seed=seed)),
        "steer": (0.8, ConfidenceRouter),
        "specreason": (7.0, SpecReasonRouter),
        "trim": (0.3, TrimRouter),
        "query": (0.5, QueryLevelRouter),
    }
    if kind in numeric:
        default, build = numeric[kind]
        return build(_number(spec, arg) if arg else default)
    known = ", ".join(ROUTER_SPECS)
    raise RouterError(f"unknown router {spec!r}; known: {known}")


def _number(spec: str, arg: str) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise RouterError(f"router spec {spec!r}: {arg!r} is not a number") from None
    if not math.isfinite(value):
        raise RouterError(f"router spec {spec!r}: {arg!r} must be a finite number")
    return value
