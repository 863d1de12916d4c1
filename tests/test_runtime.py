"""The stepwise loop: termination, budgets, errors, many queries, trajectory files."""

from __future__ import annotations

import json

import pytest

from roro_sdk import (
    BudgetError,
    ConfigError,
    FixedRouter,
    ModelPool,
    PermanentModelError,
    Query,
    RandomRouter,
    RouterError,
    StepwiseRuntime,
    Trajectory,
    read_trajectories,
    write_trajectories,
)
from roro_sdk.testing import FakeModel, FakeOpenAIServer, ScriptedRouter

from .conftest import FAST_RETRY


def test_stops_at_answer_and_checks_it(pool):
    t = StepwiseRuntime(pool, FixedRouter(tier=-1)).run(Query(question="6*7?", answer="42"))
    assert t.stop_reason == "answer" and t.answer == "42" and t.correct is True
    assert [s.index for s in t.steps] == [0, 1, 2, 3]
    assert t.steps[-1].text == "Answer: 42"


def test_max_steps(pool):
    t = StepwiseRuntime(pool, FixedRouter(), max_steps=2).run("q")
    assert t.stop_reason == "max_steps" and len(t.steps) == 2


def test_repeated_step_stops(server):
    server.models["small"] = FakeModel(step_text=lambda k, body: "I keep saying the same thing.")
    pool = ModelPool([server.spec("small", price=(0, 0))], retry=FAST_RETRY)
    t = StepwiseRuntime(pool, FixedRouter()).run("q")
    assert t.stop_reason == "repeat" and len(t.steps) == 2


def test_empty_step_stops_as_an_error(server):
    # an empty step is a failed step (retried, then the query is an error), never a final answer
    server.models["small"] = FakeModel(step_text=lambda k, body: "")
    pool = ModelPool([server.spec("small", price=(0, 0), max_retries=1)], retry=FAST_RETRY)
    t = StepwiseRuntime(pool, FixedRouter()).run("q", raise_on_error=False)
    assert t.stop_reason == "error" and "empty completion" in t.error
    assert not t.steps and len(t.side_calls) == 2  # both paid attempts are kept


def test_token_budget_is_never_exceeded(pool):
    t = StepwiseRuntime(pool, FixedRouter(), token_budget=10).run("q")
    assert t.stop_reason == "token_budget"
    assert t.usage.output_tokens <= 10


@pytest.mark.parametrize("budget", [0.0, 1e-5, 3e-5, 1e-4, 3e-4, 1e-3])
@pytest.mark.parametrize("router", ["all-large", "random", "specreason"])
def test_cost_budget_is_never_exceeded(pool, budget, router):
    from roro_sdk import make_router

    r = make_router({"random": "random:0.5"}.get(router, router))
    t = StepwiseRuntime(pool, r, cost_budget=budget).run(Query(id="q1", question="q"))
    assert t.cost_usd <= budget + 1e-12
    assert t.stop_reason in ("answer", "cost_budget")
    if t.stop_reason == "cost_budget":
        assert "budget_stop" in t.metadata


def test_three_model_pool_and_scripted_routing(pool3):
    t = StepwiseRuntime(pool3, ScriptedRouter(["small", "medium", "large", "medium"])).run("q")
    assert [s.model for s in t.steps] == ["small", "medium", "large", "medium"]
    by = t.steps_by_model()
    assert by == {"small": 1, "medium": 2, "large": 1}
    assert t.cost_usd == pytest.approx(sum(s.cost_usd for s in t.steps))


def test_step_records_everything(pool):
    t = StepwiseRuntime(pool, RandomRouter(p_large=0.5, seed=3)).run("q")
    s = t.steps[0]
    assert set(s.probabilities) == {"small", "large"} and s.reason == "random draw"
    assert s.input_tokens > 0 and s.output_tokens > 0 and s.cost_usd > 0 and s.latency_s > 0


def test_permanent_error_fails_only_that_query(server, pool):
    server.inject("small", [401])
    rt = StepwiseRuntime(pool, FixedRouter())
    with pytest.raises(PermanentModelError):
        rt.run("q")
    server.inject("small", [401])
    trajs = rt.run_many([Query(id=f"q{i}", question="q") for i in range(4)], concurrency=1)
    assert [t.stop_reason for t in trajs].count("error") == 1
    assert sum(t.stop_reason == "answer" for t in trajs) == 3


def test_run_many_keeps_order_and_writes_jsonl(pool, tmp_path):
    out = tmp_path / "t.jsonl"
    qs = [Query(id=f"q{i}", question=f"question {i}", answer="42") for i in range(10)]
    trajs = StepwiseRuntime(pool, RandomRouter(p_large=0.5)).run_many(qs, concurrency=4, out=out)
    assert [t.query.id for t in trajs] == [q.id for q in qs]
    back = read_trajectories(out)
    assert sorted(t.id for t in back) == sorted(t.id for t in trajs)


def test_random_router_is_reproducible_whatever_the_concurrency(pool):
    qs = [Query(id=f"q{i}", question="q") for i in range(6)]
    a = StepwiseRuntime(pool, RandomRouter(p_large=0.5, seed=1)).run_many(qs, concurrency=1)
    b = StepwiseRuntime(pool, RandomRouter(p_large=0.5, seed=1)).run_many(qs, concurrency=6)
    assert [[s.model for s in t.steps] for t in a] == [[s.model for s in t.steps] for t in b]


def test_jsonl_round_trip(pool, tmp_path):
    t = StepwiseRuntime(pool, FixedRouter()).run(Query(question="q", answer="41", metadata={"k": [1, 2]}))
    p = tmp_path / "x.jsonl"
    write_trajectories(p, [t, t])
    back = read_trajectories(p)
    assert back[0] == t and back[1].model_dump() == t.model_dump()
    assert Trajectory.from_jsonl(t.to_jsonl()) == t


def test_torn_last_line_is_skipped(pool, tmp_path):
    t = StepwiseRuntime(pool, FixedRouter()).run("q")
    p = tmp_path / "x.jsonl"
    p.write_text(t.to_jsonl() + "\n" + t.to_jsonl()[:40])
    with pytest.warns(UserWarning, match="torn"):
        assert len(read_trajectories(p)) == 1


def test_no_secret_in_trajectory(server, monkeypatch, tmp_path):
    monkeypatch.setenv("RORO_SECRET_KEY", "sk-very-secret-123")
    pool = ModelPool([server.spec("small", price=(0, 0), api_key_env="RORO_SECRET_KEY")], retry=FAST_RETRY)
    t = StepwiseRuntime(pool, FixedRouter()).run("q")
    assert "sk-very-secret-123" not in t.to_jsonl()
    assert "sk-very-secret-123" not in json.dumps([s.model_dump() for s in pool.specs])


@pytest.mark.parametrize("kwargs,err,msg", [
    ({"cost_budget": -1.0}, BudgetError, "cost_budget"),
    ({"token_budget": -5}, BudgetError, "token_budget"),
    ({"cost_budget": float("nan")}, BudgetError, "cost_budget"),
    ({"max_steps": 0}, ConfigError, "max_steps"),
])
def test_bad_runtime_config(pool, kwargs, err, msg):
    with pytest.raises(err, match=msg):
        StepwiseRuntime(pool, FixedRouter(), **kwargs)


def test_empty_question(pool):
    with pytest.raises(Exception, match="question is empty"):
        StepwiseRuntime(pool, FixedRouter()).run("   ")


def test_router_with_unknown_model_fails_before_any_call(pool, server):
    with pytest.raises(RouterError, match="'gpt-9' is not in the pool"):
        StepwiseRuntime(pool, FixedRouter("gpt-9"))
    assert not server.requests
