"""Routers that decide without calling a model: fixed, random, query-level, and the budget guard."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Mapping

from ..errors import RouterError
from ..pool import ModelPool
from .base import BudgetExhausted, Decision, Router, RoutingState, one_hot


class FixedRouter(Router):
    """Every step to one model. ``FixedRouter()`` with no model means the pool's cheapest ("all-small");
    ``FixedRouter("large")`` the named model; ``FixedRouter(tier=-1)`` the most expensive ("all-large")."""

    def __init__(self, model: str | None = None, *, tier: int | None = None, name: str | None = None):
        if model is not None and tier is not None:
            raise RouterError("FixedRouter takes a model name or a tier, not both")
        self.model, self.tier = model, tier
        self.name = name or (f"fixed:{model}" if model else "all-large" if tier == -1 else "all-small" if tier in (None, 0) else f"tier:{tier}")

    def _target(self, pool: ModelPool) -> str:
        if self.model is not None:
            return self.model
        try:
            return pool.names[self.tier or 0]
        except IndexError:
            raise RouterError(f"{self.name}: the pool has {len(pool)} models, no tier {self.tier}") from None

    def check(self, pool: ModelPool) -> None:
        self._require(pool, self._target(pool))

    def decide(self, state: RoutingState) -> Decision:
        m = self._target(state.pool)
        return Decision(m, one_hot(state.pool.names, m), "fixed")


class RandomRouter(Router):
    """Each step to a model drawn with fixed weights. ``RandomRouter(p_large=0.3)`` is the classic
    random(p) baseline over (small, large); ``weights={"a": 1, "b": 2, ...}`` covers N tiers.
    Draws are seeded per query, so results do not depend on concurrency or order."""

    def __init__(self, weights: Mapping[str, float] | None = None, *, p_large: float | None = None, seed: int = 0, name: str | None = None):
        if (weights is None) == (p_large is None):
            raise RouterError("RandomRouter needs exactly one of weights={...} or p_large=<0..1>")
        if p_large is not None and not 0.0 <= p_large <= 1.0:
            raise RouterError(f"p_large must be within [0, 1], got {p_large}")
        if weights is not None and (any(w < 0 or math.isnan(w) for w in weights.values()) or sum(weights.values()) <= 0):
            raise RouterError("RandomRouter weights must be non-negative with a positive sum")
        self.weights, self.p_large, self.seed = dict(weights) if weights else None, p_large, seed
        self.name = name or (f"random:{p_large:g}" if p_large is not None else "random")

    def _weights(self, pool: ModelPool) -> dict[str, float]:
        if self.weights is not None:
            return self.weights
        return {pool.small: 1.0 - self.p_large, pool.large: self.p_large} if len(pool) > 1 else {pool.small: 1.0}

    def check(self, pool: ModelPool) -> None:
        self._require(pool, *self._weights(pool))

    def decide(self, state: RoutingState) -> Decision:
        w = self._weights(state.pool)
        total = sum(w.values())
        probs = {n: w.get(n, 0.0) / total for n in state.pool.names}
        rng = state.memo.setdefault(("rng", id(self)), random.Random(f"{self.seed}:{state.query.id}"))
        m = rng.choices(list(w), weights=list(w.values()))[0]
        return Decision(m, probs, "random draw")


def length_difficulty(question: str) -> float:
    """A crude difficulty score in [0, 1] from length and how many numbers a question holds."""
    words = len(question.split())
    numbers = len(re.findall(r"\d+(?:\.\d+)?", question))
    return 1.0 / (1.0 + math.exp(-(0.04 * words + 0.35 * numbers - 3.0)))


class QueryLevelRouter(Router):
    """RouteLLM-style: the whole query goes to one model, chosen once by a difficulty scorer.

    ``scorer(question) -> [0, 1]``; at or above ``threshold`` the query goes to the large model.
    Plug in any scorer (a trained classifier, an embedding model, a call to an LLM)."""

    def __init__(self, threshold: float = 0.5, *, scorer: Callable[[str], float] = length_difficulty,
                 small: str | None = None, large: str | None = None, name: str | None = None):
        if not 0.0 <= threshold <= 1.0:  # NaN fails too
            raise RouterError(f"threshold must be within [0, 1] (scores are), got {threshold}")
        self.threshold, self.scorer, self.small, self.large = threshold, scorer, small, large
        self.name = name or f"query:{threshold:g}"

    def check(self, pool: ModelPool) -> None:
        self._require(pool, self.small, self.large)

    def decide(self, state: RoutingState) -> Decision:
        key = ("query-level", id(self))
        if key not in state.memo:
            score = float(self.scorer(state.query.question))
            if not 0.0 <= score <= 1.0 or math.isnan(score):
                raise RouterError(f"{self.name}: scorer returned {score}, expected a number within [0, 1]")
            state.memo[key] = score
        score = state.memo[key]
        small, large = self.small or state.pool.small, self.large or state.pool.large
        m = large if score >= self.threshold else small
        return Decision(m, {small: 1.0 - score, large: score} if small != large else {small: 1.0},
                        f"query difficulty {score:.2f} {'>=' if m == large else '<'} {self.threshold}")


class BudgetGuard(Router):
    """Wraps any router; forces the cheap model when the remaining cost budget runs low (below
    ``min_fraction`` of the budget), when the inner router's choice could not be afforded, or
    when the inner router could not afford a call of its own (SpecReason's verification by the
    large model, say). The run stops at the budget only when the cheap step is unaffordable too."""

    def __init__(self, inner: Router, *, min_fraction: float = 0.2, cheap: str | None = None, name: str | None = None):
        if not 0.0 <= min_fraction <= 1.0:
            raise RouterError(f"min_fraction must be within [0, 1], got {min_fraction}")
        self.inner, self.min_fraction, self.cheap = inner, min_fraction, cheap
        self.name = name or f"budget({inner.name})"

    def check(self, pool: ModelPool) -> None:
        self._require(pool, self.cheap)
        self.inner.check(pool)

    async def adecide(self, state: RoutingState) -> Decision:
        cheap = self.cheap or state.pool.small
        if state.cost_budget is not None and state.cost_budget > 0:
            if state.remaining_cost / state.cost_budget < self.min_fraction:
                return Decision(cheap, one_hot(state.pool.names, cheap), f"budget guard: under {self.min_fraction:.0%} of the budget left")
        try:
            d = await self.inner.adecide(state)
        except BudgetExhausted as e:
            if e.kind != "cost":
                raise
            return Decision(cheap, one_hot(state.pool.names, cheap), f"budget guard: {self.inner.name} could not afford a call ({e})")
        if d.step is None and not state.can_afford(d.model, state.step_max_tokens(d.model)) and d.model != cheap:
            return Decision(cheap, one_hot(state.pool.names, cheap), f"budget guard: {d.model} unaffordable", side_calls=d.side_calls)
        return d
