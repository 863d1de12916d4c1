"""The router interface: before each step, decide which model of the pool writes it.

A router sees a :class:`RoutingState` and returns a :class:`Decision`. Routers that need to look
at a draft first (SpecReason, TRIM, STEER) call models through ``state.generate``, which checks
the cost budget *before* each call and records the call's cost, so nothing a router spends is
hidden from the trajectory.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RouterError
from ..pool import Generation, ModelPool
from ..types import Query, Step, Usage

__all__ = ["Router", "Decision", "RoutingState", "BudgetExhausted"]


class BudgetExhausted(Exception):
    """Internal signal: the next call would overshoot the cost budget, so the run stops here."""


@dataclass
class Decision:
    """Which model writes the next step, with the router's probabilities and reason.

    ``step`` is set when the router already holds the text of the step (an accepted draft), so
    the runtime records it instead of calling a model again. ``side_calls`` are the other calls
    the router made for this step (rejected drafts, verifications); their cost counts.
    """

    model: str
    probabilities: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    step: Generation | None = None
    side_calls: list[tuple[str, Generation]] = field(default_factory=list)


@dataclass
class RoutingState:
    """What a router may look at before a step. Routers must treat it as read-only."""

    query: Query
    steps: list[Step]
    pool: ModelPool
    max_steps: int
    cost_budget: float | None = None
    token_budget: int | None = None
    spent: Usage = field(default_factory=Usage)
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def step_index(self) -> int:
        return len(self.steps)

    @property
    def step_texts(self) -> list[str]:
        return [s.text for s in self.steps]

    @property
    def remaining_cost(self) -> float | None:
        return None if self.cost_budget is None else self.cost_budget - self.spent.cost_usd

    @property
    def remaining_tokens(self) -> int | None:
        return None if self.token_budget is None else self.token_budget - self.spent.output_tokens

    def can_afford(self, model: str, max_tokens: int | None = None) -> bool:
        if self.cost_budget is None:
            return True
        return self.pool.max_step_cost(model, self.query.question, self.step_texts, max_tokens) <= self.remaining_cost + 1e-15

    def step_max_tokens(self, model: str) -> int:
        cap = self.pool[model].max_tokens_per_step
        rem = self.remaining_tokens
        return cap if rem is None else max(0, min(cap, rem))

    async def generate(self, model: str, *, purpose: str = "draft", max_tokens: int | None = None,
                       steps: Sequence[str] | None = None, **kw: Any) -> Generation:
        """Call a model on this query, budget-checked; the cost is added to ``spent``.

        Raises :class:`BudgetExhausted` when the call could overshoot the cost budget.
        """
        steps = self.step_texts if steps is None else list(steps)
        max_tokens = max_tokens or self.step_max_tokens(model)
        if max_tokens <= 0:
            raise BudgetExhausted("token budget")
        if self.cost_budget is not None:
            estimate = self.pool.max_step_cost(model, self.query.question, steps, max_tokens)
            if kw.get("messages") is not None:
                estimate = self.pool[model].cost(
                    sum(len(m["content"].encode()) + 16 for m in kw["messages"]), max_tokens)
            if estimate > self.remaining_cost + 1e-15:
                raise BudgetExhausted(f"{purpose} with {model} could cost ${estimate:.6f}, ${self.remaining_cost:.6f} left")
        gen = await self.pool.agenerate(model, self.query.question, steps, max_tokens=max_tokens, **kw)
        self.spent = self.spent + Usage(input_tokens=gen.input_tokens, output_tokens=gen.output_tokens,
                                        cost_usd=gen.cost_usd, priced=gen.priced)
        return gen


class Router(ABC):
    """Decides, before each step, which model writes it. Subclasses implement ``decide`` (pure
    policies) or ``adecide`` (policies that call models first)."""

    name: str = "router"

    def decide(self, state: RoutingState) -> Decision:
        raise RouterError(f"{type(self).__name__} only decides asynchronously; use adecide()")

    async def adecide(self, state: RoutingState) -> Decision:
        return self.decide(state)

    def check(self, pool: ModelPool) -> None:
        """Raise :class:`RouterError` if this router cannot work with ``pool`` (called before any query)."""

    def models_used(self) -> list[str]:
        return []

    def _require(self, pool: ModelPool, *names: str | None) -> None:
        for n in names:
            if n is not None and n not in pool:
                raise RouterError(f"{self.name}: model {n!r} is not in the pool ({', '.join(pool.names)})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def one_hot(pool_names: Sequence[str], chosen: str) -> dict[str, float]:
    return {n: 1.0 if n == chosen else 0.0 for n in pool_names}


