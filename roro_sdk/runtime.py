"""The stepwise loop: ask the router, let the chosen model write the next step, record, repeat.

A run stops at the first of: an answer marker in a step, ``max_steps``, the token budget, the
cost budget (checked *before* each request, so a call that could overshoot is never made; see
:mod:`roro_sdk.pool` for the bound), a repeated step, or an error (which fails that query only).

Errors: a model that stays unusable after retries and its fallback (failures, empty or malformed
completions), a router that cannot decide, an answer checker that raises -- each ends that
query with ``stop_reason="error"`` and ``traj.error`` (secrets redacted), never the batch.
Every paid call is in the trajectory: in the step it served (``Step.side_calls``) or, when no
step came of it, in ``Trajectory.side_calls``; ``traj.usage``/``cost_usd`` sum them all.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path

from pydantic import ValidationError

from .answers import check_answer, extract_answer, find_marked_answer
from .errors import BudgetError, ConfigError, ModelCallError, RoroError, RouterError
from .pool import Generation, ModelPool
from .routers.base import BudgetExhausted, Decision, Router, RoutingState
from .trajectories import TrajectoryAppender
from .types import Query, Step, StopReason, Trajectory

Checker = Callable[[str | None, Query], "bool | None"]
# Called with each step as soon as it is recorded (a server streams it); may be a coroutine function.
OnStep = Callable[[Step], "Awaitable[None] | None"]


def as_query(q: Query | str | dict) -> Query:
    """A :class:`Query` from a query, a question string or a dict; invalid input is a ConfigError."""
    if isinstance(q, Query):
        return q
    try:
        if isinstance(q, str):
            return Query(question=q)
        if isinstance(q, dict):
            return Query.model_validate(q)
    except ValidationError as e:
        raise ConfigError("; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
    raise ConfigError(f"a query must be a Query, a dict or a question string, not {type(q).__name__}")


def _default_checker(answer: str | None, query: Query) -> bool | None:
    return None if query.answer is None else check_answer(answer, query.answer)


def _check_budget(name: str, value: float | int | None) -> None:
    if value is None:
        return
    if isinstance(value, float) and math.isnan(value) or value < 0:
        raise BudgetError(f"{name} must be a non-negative number, got {value}")
    if name == "token_budget" and value == 0:  # (a cost budget of 0 still runs free models)
        raise BudgetError("token_budget must be at least 1: with 0 no step can be written; leave it unset for no limit")


class StepwiseRuntime:
    """Runs queries step by step with a router over a pool.

    >>> rt = StepwiseRuntime(pool, FixedRouter(), max_steps=16, cost_budget=0.01)
    >>> traj = rt.run("What is 17 * 3?")
    """

    def __init__(
        self,
        pool: ModelPool,
        router: Router,
        *,
        max_steps: int = 24,
        token_budget: int | None = None,
        cost_budget: float | None = None,
        stop_on_repeat: bool = True,
        checker: Checker | None = None,
    ) -> None:
        if not isinstance(pool, ModelPool):
            raise ConfigError(f"pool must be a ModelPool, not {type(pool).__name__}")
        if not isinstance(router, Router):
            raise ConfigError(f"router must be a Router, not {type(router).__name__}")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
        _check_budget("token_budget", token_budget)
        _check_budget("cost_budget", cost_budget)
        router.check(pool)
        self.pool, self.router = pool, router
        self.max_steps, self.token_budget, self.cost_budget = max_steps, token_budget, cost_budget
        self.stop_on_repeat = stop_on_repeat
        self.checker = checker or _default_checker

    # ----- one query ---------------------------------------------------------------------------
    async def arun(self, query: Query | str | dict, *, raise_on_error: bool = True, on_step: OnStep | None = None) -> Trajectory:
        """Route one query to the end. An error (a model's, a router's, the checker's, or any
        other exception) is recorded in the trajectory (``stop_reason="error"``, ``error``, and
        the exception's class name in ``metadata["error_type"]``) and then raised, unless
        ``raise_on_error=False``, which returns the trajectory instead.

        ``on_step(step)`` is called with each step as soon as it is recorded, before the router
        is asked for the next one (an exception it raises fails the query like any other)."""
        q = as_query(query)
        self.pool.check_keys()
        traj = Trajectory(query=q, router=self.router.name)
        state = RoutingState(query=q, steps=traj.steps, pool=self.pool, max_steps=self.max_steps,
                             cost_budget=self.cost_budget, token_budget=self.token_budget)
        t0 = time.perf_counter()
        failure: Exception | None = None
        try:
            traj.stop_reason = await self._loop(state, traj, on_step)
        except Exception as e:  # one query's failure of any kind is that query's, never the batch's
            failure = e
            self._fail(traj, e)
        traj.wall_time_s = time.perf_counter() - t0
        self._keep_unrecorded_calls(traj, state)
        try:
            self._finish(traj, state)
        except Exception as e:  # a checker that raises on one answer fails that query only
            if failure is None:
                failure = e
                self._fail(traj, e, what="checking the answer")
        if failure is not None and raise_on_error:
            raise failure
        return traj

    def run(self, query: Query | str | dict, **kw) -> Trajectory:
        from ._sync import run_sync

        return run_sync(self.arun(query, **kw))

    async def _loop(self, state: RoutingState, traj: Trajectory, on_step: OnStep | None = None) -> StopReason:
        seen: set[str] = set()
        while True:
            if len(traj.steps) >= self.max_steps:
                return "max_steps"
            if state.remaining_tokens is not None and state.remaining_tokens <= 0:
                return "token_budget"
            try:
                decision = await self.router.adecide(state)
                gen = decision.step or await self._write(state, decision)
            except BudgetExhausted as e:
                traj.metadata["budget_stop"] = str(e)
                return "token_budget" if e.kind == "token" else "cost_budget"
            if not gen.text.strip():
                # an empty step is a failed step, not an answer: the query is retried on resume
                raise ModelCallError(f"model {gen.model!r} wrote an empty step {len(traj.steps)}", model=gen.model)
            step = self._record(state, decision, gen)
            traj.steps.append(step)
            if on_step is not None:
                pending = on_step(step)
                if inspect.isawaitable(pending):
                    await pending
            if find_marked_answer(step.text) is not None:
                return "answer"
            key = " ".join(step.text.split())
            if self.stop_on_repeat and key in seen:
                return "repeat"
            seen.add(key)

    async def _write(self, state: RoutingState, d: Decision) -> Generation:
        if d.model not in self.pool:
            raise RouterError(f"{self.router.name} chose {d.model!r}, which is not in the pool ({', '.join(self.pool.names)})")
        return await state.generate(d.model, purpose="step")

    def _record(self, state: RoutingState, d: Decision, gen: Generation) -> Step:
        """The step, with every call paid for it: those the router reports and those it does not."""
        seen = {id(g) for _, g in state.paid_calls}
        for purpose, g in [("step", gen), *d.side_calls]:
            if id(g) not in seen:  # made outside state.generate: it counts all the same
                seen.add(id(g))
                state.spent = state.spent + g.usage
                state.paid_calls.append((purpose, g))
        side = [g.as_call_record(purpose) for purpose, g in state.paid_calls if g is not gen]
        state.paid_calls.clear()
        return Step(
            index=len(state.steps), model=gen.model, text=gen.text, input_tokens=gen.input_tokens,
            output_tokens=gen.output_tokens, cost_usd=gen.cost_usd, priced=gen.priced, latency_s=gen.latency_s,
            probabilities=d.probabilities, reason=d.reason, retries=gen.retries, fallback_from=gen.fallback_from,
            finish_reason=gen.finish_reason, confidence=gen.confidence, side_calls=side, forced=d.forced,
        )

    @staticmethod
    def _keep_unrecorded_calls(traj: Trajectory, state: RoutingState) -> None:
        """Calls paid for a step that was never taken (a budget stop, an error) stay in the trajectory."""
        traj.side_calls.extend(g.as_call_record(purpose) for purpose, g in state.paid_calls)
        state.paid_calls.clear()

    def _fail(self, traj: Trajectory, e: Exception, what: str = "") -> None:
        msg = str(e) if isinstance(e, RoroError) else f"{type(e).__name__}: {e}"
        traj.stop_reason = "error"
        traj.error = self.pool.redact(f"{what}: {msg}" if what else msg)
        traj.metadata["error_type"] = type(e).__name__  # lets a server tell an upstream failure from a bug

    def _finish(self, traj: Trajectory, state: RoutingState) -> None:
        traj.metadata["spent_usd"] = state.spent.cost_usd
        text = traj.text(self.pool.prompt.delimiter)
        traj.answer = extract_answer(text) if text else None
        traj.correct = self.checker(traj.answer, traj.query)

    # ----- many queries --------------------------------------------------------------------------
    async def arun_many(
        self,
        queries: Iterable[Query | str | dict],
        *,
        concurrency: int = 8,
        progress: bool = False,
        out: str | Path | None = None,
        on_result: Callable[[Trajectory], None] | None = None,
    ) -> list[Trajectory]:
        """Route many queries, at most ``concurrency`` at a time; results come back in input order.

        With ``out`` each finished trajectory is appended to that JSONL file at once, so a crash
        loses at most the queries in flight. A failing query is recorded, never fatal to the rest.
        """
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
        qs = [as_query(q) for q in queries]
        self.pool.check_keys()
        sem = asyncio.Semaphore(concurrency)
        bar = AccuracyBar(len(qs), self.router.name) if progress else None
        fh = TrajectoryAppender(out) if out else None
        results: list[Trajectory | None] = [None] * len(qs)

        async def one(i: int, q: Query) -> None:
            async with sem:
                t = await self.arun(q, raise_on_error=False)
            results[i] = t
            if fh is not None:
                fh.write(t)
            if on_result is not None:
                on_result(t)
            if bar is not None:
                bar.add(t)

        try:
            await asyncio.gather(*(one(i, q) for i, q in enumerate(qs)))
        finally:
            if fh is not None:
                fh.close()
            if bar is not None:
                bar.close()
        return [t for t in results if t is not None]

    def run_many(self, queries: Sequence[Query | str | dict], **kw) -> list[Trajectory]:
        from ._sync import run_sync

        return run_sync(self.arun_many(queries, **kw))


class AccuracyBar:
    """A progress bar over queries showing the running accuracy (``roro eval``'s, local or on Ray)."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, desc=desc, unit="q", dynamic_ncols=True)
        self._correct = 0

    def add(self, traj: Trajectory) -> None:
        self._correct += bool(traj.correct)
        self._bar.set_postfix(acc=f"{self._correct / (self._bar.n + 1):.2f}", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()
