"""Routers: decide, before each reasoning step, which model of the pool writes it."""

from __future__ import annotations

import math

from ..errors import RouterError
from .base import BudgetExhausted, Decision, Router, RoutingState
from .drafting import ConfidenceRouter, SpecReasonRouter, TrimRouter
from .simple import BudgetGuard, FixedRouter, QueryLevelRouter, RandomRouter, length_difficulty

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
    "policy:default": "the learned router shipped for the default local pool (alias: learned)",
}


def expand_alias(spec: str) -> str:
    """A spec with its aliases spelled out (``learned`` -> ``policy:default``, inside ``budget:``
    too): what a caller checks before loading, e.g. a server that refuses routers with weights."""
    kind, sep, rest = spec.strip().partition(":")
    if kind == "budget" and sep:
        return f"budget:{expand_alias(rest)}"
    return "policy:default" if spec.strip() == "learned" else spec.strip()


# Knob of each numeric spec kind: (default, lowest, highest), the range its router reads.
_KNOBS: dict[str, tuple[float, float, float]] = {
    "random": (0.5, 0.0, 1.0),
    "steer": (0.8, 0.0, 1.0),
    "specreason": (7.0, 0.0, 9.0),
    "trim": (0.3, 0.0, 1.0),
    "query": (0.5, 0.0, 1.0),
}


def _knob(spec: str, kind: str, arg: str) -> float:
    default, lo, hi = _KNOBS[kind]
    if not arg.strip():
        return default
    try:
        value = float(arg)
    except ValueError:
        raise RouterError(f"router spec {spec!r}: {arg!r} is not a number; use {kind}:<{lo:g}..{hi:g}>") from None
    if not lo <= value <= hi:  # NaN fails this too
        raise RouterError(f"router spec {spec!r}: {kind} takes a number within [{lo:g}, {hi:g}], got {arg!r}")
    return value


def make_router(spec: str, *, seed: int = 0) -> Router:
    """A router from a short spec string (the CLI's ``--router``); see :data:`ROUTER_SPECS`."""
    known = ", ".join(ROUTER_SPECS)
    if not isinstance(spec, str) or not spec.strip():
        raise RouterError(f"empty router spec; use one of: {known}")
    spec = spec.strip()
    if spec in ("all-small", "small"):
        return FixedRouter(name="all-small")
    if spec in ("all-large", "large"):
        return FixedRouter(tier=-1)
    spec = expand_alias(spec)
    kind, _, arg = spec.partition(":")
    arg = arg.strip()
    if kind in ("fixed", "budget", "policy") and not arg:
        raise RouterError(f"router spec {spec!r} needs a value after '{kind}:'; known: {known}")
    if kind == "fixed":
        return FixedRouter(arg)
    if kind == "budget":
        return BudgetGuard(make_router(arg, seed=seed))
    if kind == "policy":
        from pathlib import Path

        from .shipped import SHIPPED_ROUTERS, shipped_router_dir, verify_manifest

        if arg in SHIPPED_ROUTERS:  # a folder of that name is reached as policy:./NAME
            folder = shipped_router_dir(arg)
            verify_manifest(folder)
            from ..policy.router import PolicyRouter

            router = PolicyRouter.load(folder)
            router.name = f"policy:{arg}"
            return router
        if not Path(arg).expanduser().is_dir():  # before the import: say what is missing, not that torch is
            raise RouterError(f"router spec {spec!r}: the policy folder {arg} does not exist; give a folder saved by "
                              "'roro train-router' (or PolicyRouter.save)")
        from ..policy.router import PolicyRouter

        return PolicyRouter.load(Path(arg).expanduser())
    # (default, lowest, highest) of each numeric knob: the range its router reads
    knobs = {"random": (0.5, 0.0, 1.0), "steer": (0.8, 0.0, 1.0), "specreason": (7.0, 0.0, 9.0),
             "trim": (0.3, 0.0, 1.0), "query": (0.5, 0.0, 1.0)}
    if kind not in knobs:
        raise RouterError(f"unknown router {spec!r}; known: {known}")
    default, lo, hi = knobs[kind]
    try:
        value = float(arg) if arg else default
    except ValueError:
        raise RouterError(f"router spec {spec!r}: {arg!r} is not a number; use {kind}:<{lo:g}..{hi:g}>") from None
    if not lo <= value <= hi:  # NaN fails this comparison too
        raise RouterError(f"router spec {spec!r}: {kind} takes a number within [{lo:g}, {hi:g}], got {arg!r}")
    if kind == "random":
        return RandomRouter(p_large=value, seed=seed)
    if kind == "steer":
        return ConfidenceRouter(value)
    if kind == "specreason":
        return SpecReasonRouter(value)
    if kind == "trim":
        return TrimRouter(value)
    return QueryLevelRouter(value)
