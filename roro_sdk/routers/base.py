"""The router interface: before each step, decide which model of the pool writes it.

A router sees a :class:`RoutingState` and returns a :class:`Decision`. Routers that need to look
at a draft first (SpecReason, TRIM, STEER) call models through ``state.generate``, which checks
the budgets *before* every request the pool sends for it (retries and the fallback model
included) and records every completion the provider returned, so nothing a router spends is
hidden from the trajectory.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import RoroError, RouterError
from ..pool import Generation, ModelPool
from ..types import Query, Step, Usage


class BudgetExhausted(RoroError):
    """The next call could overshoot a budget, so the run stops here (the runtime turns it into
    ``stop_reason="cost_budget"`` or ``"token_budget"``; ``kind`` says which)."""

    def __init__(self, message: str, *, kind: str = "cost"):
        super().__init__(message)
        self.kind = kind


@dataclass
class Decision:
    """Which model writes the next step, with the router's probabilities and reason.

    ``step`` is set when the router already holds the text of the step (an accepted draft), so
    the runtime records it instead of calling a model again. ``side_calls`` are the other calls
    the router made for this step (rejected drafts, verifications); their cost counts.
    ``forced``: the router had no choice (it is committed to a model); learners skip the step.
    """

    model: str
    probabilities: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    step: Generation | None = None
    side_calls: list[tuple[str, Generation]] = field(default_factory=list)
    forced: bool = False


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
    # Every completion paid for since the runtime last recorded a step, as (purpose, generation);
    # the runtime moves them into the trajectory, so none is lost whatever the router reports.
    paid_calls: list[tuple[str, Generation]] = field(default_factory=list)

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
        """Whether a step request to ``model`` passes the cost check that :meth:`generate` makes."""
        if self.cost_budget is None:
            return True
        return self.pool.max_step_cost(model, self.query.question, self.step_texts, max_tokens) <= self.remaining_cost + 1e-15

    def step_max_tokens(self, model: str) -> int:
        cap = self.pool[model].max_tokens_per_step
        rem = self.remaining_tokens
        return cap if rem is None else max(0, min(cap, rem))

    async def generate(self, model: str, *, purpose: str = "draft", max_tokens: int | None = None,
                       steps: Sequence[str] | None = None, **kw: Any) -> Generation:
        """Call a model on this query; every request it takes is budget-checked first.

        Each request the pool sends (retries and the fallback model included) must fit the
        remaining budgets by :meth:`ModelPool.call_cost_bound`, else :class:`BudgetExhausted`.
        Every completion returned is added to ``spent`` and ``paid_calls``. An empty or malformed
        completion is a transient fault (retried, then the fallback) unless ``allow_empty=True``.
        """
        steps = self.step_texts if steps is None else list(steps)
        max_tokens = max_tokens or self.step_max_tokens(model)
        if max_tokens <= 0:
            raise BudgetExhausted("token budget", kind="token")

        def before_call(name: str, messages: list, n_tokens: int) -> None:
            self.check_call(name, messages, n_tokens, purpose)

        def on_paid(gen: Generation) -> None:
            self.spent = self.spent + gen.usage
            self.paid_calls.append((purpose if gen.discarded is None else f"{purpose} (discarded: {gen.discarded})", gen))

        kw.setdefault("allow_empty", False)
        return await self.pool.agenerate(model, self.query.question, steps, max_tokens=max_tokens,
                                         before_call=before_call, on_paid=on_paid, **kw)

    def check_call(self, model: str, messages: list, max_tokens: int, purpose: str = "call") -> None:
        """Raise :class:`BudgetExhausted` unless a request of ``max_tokens`` output tokens with
        ``messages`` to ``model`` fits the remaining token and cost budgets."""
        rem_tokens = self.remaining_tokens
        if rem_tokens is not None and max_tokens > rem_tokens:
            raise BudgetExhausted("token budget", kind="token")
        if self.cost_budget is not None:
            bound = self.pool.call_cost_bound(model, messages, max_tokens)
            if bound > self.remaining_cost + 1e-15:
                raise BudgetExhausted(f"{purpose} with {model} could cost ${bound:.6f}, ${self.remaining_cost:.6f} left")


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


