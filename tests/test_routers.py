"""Every baseline router's decisions, through the real pool and server."""

from __future__ import annotations

import pytest

from roro_sdk import (
    BudgetGuard,
    ConfidenceRouter,
    FixedRouter,
    LogprobsUnavailableError,
    ModelPool,
    Query,
    QueryLevelRouter,
    RandomRouter,
    RouterError,
    SpecReasonRouter,
    StepwiseRuntime,
    TrimRouter,
    make_router,
)
from roro_sdk.testing import FakeModel

from .conftest import FAST_RETRY


def models(t):
    return [s.model for s in t.steps]


def test_fixed_routers(pool3):
    assert set(models(StepwiseRuntime(pool3, FixedRouter()).run("q"))) == {"small"}
    assert set(models(StepwiseRuntime(pool3, FixedRouter(tier=-1)).run("q"))) == {"large"}
    assert set(models(StepwiseRuntime(pool3, FixedRouter("medium")).run("q"))) == {"medium"}


def test_random_router_weights_over_three_tiers(pool3):
    r = RandomRouter({"small": 0.0, "medium": 1.0, "large": 0.0})
    t = StepwiseRuntime(pool3, r).run("q")
    assert set(models(t)) == {"medium"}
    assert t.steps[0].probabilities == {"small": 0.0, "medium": 1.0, "large": 0.0}
    with pytest.raises(RouterError):
        RandomRouter(p_large=1.5)


def test_random_share_is_close_to_p(pool):
    qs = [Query(id=f"q{i}", question="q") for i in range(60)]
    trajs = StepwiseRuntime(pool, RandomRouter(p_large=0.25, seed=0)).run_many(qs, concurrency=16)
    steps = [m for t in trajs for m in models(t)]
    assert 0.15 < steps.count("large") / len(steps) < 0.35


@pytest.mark.parametrize("threshold,expected", [(0.4, "small"), (0.6, "large")])
def test_steer_escalates_under_threshold(pool, threshold, expected):
    # the small model reports confidence 0.5 on every token
    t = StepwiseRuntime(pool, ConfidenceRouter(threshold, probe_tokens=4)).run("q")
    assert set(models(t)) == {expected}
    assert all(s.side_calls and s.side_calls[0].purpose == "probe" for s in t.steps)
    assert t.steps[0].probabilities["small"] == pytest.approx(0.5)


def test_steer_whole_step_probe_keeps_the_draft(pool, server):
    t = StepwiseRuntime(pool, ConfidenceRouter(0.4, probe_tokens=None)).run("q")
    assert set(models(t)) == {"small"} and not any(s.side_calls for s in t.steps)
    assert server.calls["large"] == 0


def test_steer_needs_logprobs(server):
    server.models["small"] = FakeModel(logprobs=False)
    pool = ModelPool([server.spec("small", price=(0, 0)), server.spec("large", price=(1, 1))], retry=FAST_RETRY)
    with pytest.raises(LogprobsUnavailableError, match="log-probabilities"):
        StepwiseRuntime(pool, ConfidenceRouter()).run("q")


@pytest.mark.parametrize("verdict,kept", [("9", True), ("8", True), ("3", False)])
def test_specreason_keeps_or_rewrites(server, verdict, kept):
    server.models["large"] = FakeModel(answer="42", verdict=verdict, confidence=0.95)
    pool = ModelPool([server.spec("small", price=(0.1, 0.4)), server.spec("large", price=(1, 4))], retry=FAST_RETRY)
    t = StepwiseRuntime(pool, SpecReasonRouter(7)).run("q")
    first = t.steps[0]
    if kept:
        assert first.model == "small" and [c.purpose for c in first.side_calls] == ["verify"]
    else:
        assert first.model == "large" and [c.purpose for c in first.side_calls] == ["draft", "verify"]
    # the verifier's cost counts
    assert t.usage.cost_usd > sum(s.cost_usd for s in t.steps)


@pytest.mark.parametrize("threshold,expected", [(0.4, "small"), (0.6, "large")])
def test_trim_continue_or_regenerate(pool, threshold, expected):
    t = StepwiseRuntime(pool, TrimRouter(threshold)).run("q")
    assert set(models(t)) == {expected}


def test_trim_with_custom_async_scorer(pool):
    async def scorer(state, draft):
        return 1.0 if state.step_index % 2 == 0 else 0.0

    t = StepwiseRuntime(pool, TrimRouter(0.5, scorer=scorer)).run("q")
    assert models(t) == ["small", "large", "small", "large"]


def test_query_level_router_decides_once(pool):
    r = QueryLevelRouter(0.5, scorer=lambda q: 0.9 if "hard" in q else 0.1)
    assert set(models(StepwiseRuntime(pool, r).run("a hard one"))) == {"large"}
    assert set(models(StepwiseRuntime(pool, r).run("an easy one"))) == {"small"}
    bad = QueryLevelRouter(0.5, scorer=lambda q: 7.0)
    with pytest.raises(RouterError, match="within \\[0, 1\\]"):
        StepwiseRuntime(pool, bad).run("q")


def test_budget_guard_forces_cheap_model_when_budget_runs_low(server):
    pool = ModelPool([server.spec("small", price=(0.1, 0.4), max_tokens_per_step=16),
                      server.spec("large", price=(1, 4), max_tokens_per_step=16)], retry=FAST_RETRY)
    big = StepwiseRuntime(pool, FixedRouter(tier=-1)).run("q")
    budget = big.cost_usd * 1.5
    t = StepwiseRuntime(pool, BudgetGuard(FixedRouter(tier=-1), min_fraction=0.5), cost_budget=budget).run("q")
    assert models(t)[0] == "large" and "small" in models(t)
    assert t.cost_usd <= budget


@pytest.mark.parametrize("spec,cls", [
    ("all-small", FixedRouter), ("all-large", FixedRouter), ("random:0.3", RandomRouter), ("steer:0.7", ConfidenceRouter),
    ("specreason:6", SpecReasonRouter), ("trim:0.2", TrimRouter), ("query:0.4", QueryLevelRouter), ("budget:random:0.5", BudgetGuard),
])
def test_make_router(spec, cls):
    assert isinstance(make_router(spec), cls)


@pytest.mark.parametrize("spec,msg", [("nonsense", "unknown router"), ("random:abc", "not a number"), ("steer:3", "within")])
def test_make_router_errors(spec, msg):
    with pytest.raises(RouterError, match=msg):
        make_router(spec)
