"""Regression tests for issue 9's runtime faults: answers that crash a batch, budgets that overshoot
or waste, malformed and empty completions, costs that vanish, keys in errors, bad model specs."""

from __future__ import annotations

import math
import time
import traceback

import pytest

from roro_sdk import (
    BudgetGuard,
    ConfidenceRouter,
    ConfigError,
    FixedRouter,
    ModelPool,
    ModelSpec,
    PermanentModelError,
    Query,
    RoroError,
    RouterError,
    SpecReasonRouter,
    Step,
    StepwiseRuntime,
    Trajectory,
    UnpricedModelError,
    check_answer,
    summarize,
)
from roro_sdk.answers import MAX_EXPONENT, parse_number
from roro_sdk.pool import TEMPLATE_TOKENS_PER_MESSAGE, redact_secrets
from roro_sdk.routers import BudgetExhausted, Decision, Router
from roro_sdk.testing import FakeModel, FakeOpenAIServer

from .conftest import FAST_RETRY


def queries(n: int, answer: str | None = None) -> list[Query]:
    return [Query(id=f"q{i}", question=f"question {i}", answer=answer) for i in range(n)]


# ----- 1. one answer string must not kill a batch -------------------------------------------------
@pytest.mark.parametrize("pred", ["1e400", "-1e400", "1e100000000", "1e-100000000", "\\frac{1e400}{3}", "9" * 5000])
def test_huge_numbers_neither_raise_nor_hang(pred):
    t0 = time.perf_counter()
    assert check_answer(pred, "7") is False
    assert check_answer(pred, pred) is True  # still equal to itself (as a number or as text)
    assert time.perf_counter() - t0 < 20  # Fraction("1e100000000") alone took minutes


def test_numbers_past_the_limits_are_not_parsed_but_large_ones_compare_exactly():
    assert parse_number(f"1e{MAX_EXPONENT + 1}") is None
    assert check_answer("1e400", "1.0000000001e400") is True
    assert check_answer("1e400", "2e400") is False


def test_an_overflowing_answer_does_not_abort_run_many(server, pool):
    server.models["small"] = FakeModel(answer="1e400", steps=1)
    trajs = StepwiseRuntime(pool, FixedRouter()).run_many(queries(3, answer="7"), concurrency=1)
    assert [t.stop_reason for t in trajs] == ["answer"] * 3 and not any(t.correct for t in trajs)


def test_a_raising_checker_fails_only_that_query(pool):
    def checker(answer, query):
        if query.id == "q1":
            raise ZeroDivisionError("checker bug")
        return True

    trajs = StepwiseRuntime(pool, FixedRouter(), checker=checker).run_many(queries(3), concurrency=1)
    assert [t.stop_reason for t in trajs] == ["answer", "error", "answer"]
    assert "checker bug" in trajs[1].error and trajs[1].correct is None


# ----- 2. every call, the fallback included, is checked against the budget ---------------------------
def test_fallback_model_is_budget_checked_before_it_is_called(server):
    pool = ModelPool([server.spec("small", price=(0.1, 0.4), max_retries=1, fallback="large"),
                      server.spec("large", price=(10.0, 40.0))], retry=FAST_RETRY)
    small_bound, large_bound = pool.max_step_cost("small", "q", []), pool.max_step_cost("large", "q", [])
    budget = (small_bound + large_bound) / 2  # the small step fits; the 100x dearer fallback does not
    server.inject("small", [500, 500])
    t = StepwiseRuntime(pool, FixedRouter(), cost_budget=budget).run("q")
    assert t.stop_reason == "cost_budget" and t.cost_usd <= budget
    assert server.calls["large"] == 0 and "large" in t.metadata["budget_stop"]


# ----- 3. malformed 200 responses are transient faults -------------------------------------------
@pytest.mark.parametrize("fault", ["no_choices", "no_message", "empty", "null_content"])
def test_malformed_or_empty_completion_is_retried(server, pool, fault):
    server.inject("small", [fault])
    t = StepwiseRuntime(pool, FixedRouter()).run("q")
    assert t.stop_reason == "answer" and t.steps[0].retries == 1 and t.steps[0].text


@pytest.mark.parametrize("fault", ["no_choices", "empty"])
def test_a_response_that_stays_malformed_fails_only_that_query(server, fault):
    pool = ModelPool([server.spec("small", price=(0.1, 0.4), max_retries=1)], retry=FAST_RETRY)
    server.inject("small", [fault, fault])
    trajs = StepwiseRuntime(pool, FixedRouter()).run_many(queries(3), concurrency=1)
    assert [t.stop_reason for t in trajs] == ["error", "answer", "answer"]
    assert "failed after 2 attempt(s)" in trajs[0].error


def test_empty_probe_under_steer_is_retried_not_fatal(server, pool):
    server.inject("small", ["empty"])
    trajs = StepwiseRuntime(pool, ConfidenceRouter(0.6, probe_tokens=4)).run_many(queries(3), concurrency=1)
    assert [t.stop_reason for t in trajs] == ["answer"] * 3


def test_router_failures_of_any_kind_fail_only_their_query(pool):
    class Flaky(Router):
        name = "flaky"

        def decide(self, state):
            if state.query.id == "q0":
                raise RouterError("cannot decide")
            if state.query.id == "q1":
                raise KeyError("a programming error")
            return Decision("small")

    trajs = StepwiseRuntime(pool, Flaky()).run_many(queries(3), concurrency=2)
    assert [t.stop_reason for t in trajs] == ["error", "error", "answer"]
    assert trajs[0].error == "cannot decide" and trajs[1].error.startswith("KeyError")
    with pytest.raises(RouterError):  # a single run still raises by default
        StepwiseRuntime(pool, Flaky()).run(Query(id="q0", question="q"))


# ----- 5. every paid call is in the trajectory's cost ----------------------------------------------
def test_probe_paid_before_a_budget_stop_is_in_the_cost(pool):
    router = ConfidenceRouter(0.6, probe_tokens=4)  # the small model's confidence 0.5 escalates to large
    probe_bound = pool.call_cost_bound("small", pool.messages("small", "q", []), 4)
    budget = probe_bound + pool.max_step_cost("large", "q", []) / 2
    t = StepwiseRuntime(pool, router, cost_budget=budget).run("q")
    assert t.stop_reason == "cost_budget" and not t.steps
    assert [c.purpose for c in t.side_calls] == ["probe"]
    assert 0 < t.cost_usd <= budget and t.cost_usd == pytest.approx(t.metadata["spent_usd"])
    assert summarize([t], large="large").total_cost_usd == t.cost_usd
    assert Trajectory.from_jsonl(t.to_jsonl()).cost_usd == t.cost_usd


def test_unpriced_calls_flag_the_usage_even_without_steps(server):
    server.models["small"] = FakeModel(step_text=lambda k, body: "")
    pool = ModelPool([server.spec("small", price=None, max_retries=0)], allow_unpriced=True, retry=FAST_RETRY)
    t = StepwiseRuntime(pool, FixedRouter()).run("q", raise_on_error=False)
    assert t.stop_reason == "error" and t.usage.priced is False
    assert summarize([t], large="small").priced is False


# ----- 6. budgets that neither waste nor break ---------------------------------------------------
def test_budget_bound_is_a_token_count_not_bytes(server):
    server.models["small"] = FakeModel(steps=6)
    pool = ModelPool([server.spec("small", price=(1.0, 4.0), max_tokens_per_step=32)], retry=FAST_RETRY)
    question = "What is the total price of 3 pens at 4 dollars each and 2 books at 7 dollars each?"
    full = StepwiseRuntime(pool, FixedRouter()).run(question)
    first = full.steps[0]
    assert pool.max_step_cost("small", question, []) <= 3 * first.cost_usd  # bytes as tokens: ~4.7x
    msgs = pool.messages("small", question, [])
    assert pool.input_token_bound("small", msgs) >= first.input_tokens + TEMPLATE_TOKENS_PER_MESSAGE * len(msgs)
    t = StepwiseRuntime(pool, FixedRouter(), cost_budget=1.5 * full.cost_usd).run(question)
    assert t.stop_reason == "answer" and len(t.steps) == len(full.steps)


def test_budget_guard_falls_back_to_the_cheap_model_in_the_sim():
    from roro_sdk.sim import SimConfig, sim_pool, sim_queries

    cfg = SimConfig()
    pool, qs = sim_pool(cfg), sim_queries(n=20, config=cfg)
    small_cost = sum(t.cost_usd for t in StepwiseRuntime(pool, FixedRouter()).run_many(qs)) / len(qs)
    budget = 3 * small_cost
    trajs = StepwiseRuntime(pool, BudgetGuard(SpecReasonRouter(7)), cost_budget=budget).run_many(qs)
    assert all(t.cost_usd <= budget + 1e-12 for t in trajs)
    assert sum(t.stop_reason == "answer" for t in trajs) >= 5  # before: 20/20 stopped at the budget
    assert any("budget guard" in s.reason for t in trajs for s in t.steps)


# ----- 7. keys never reach an error message; causes stay chained -----------------------------------
def test_an_echoed_key_is_redacted_everywhere(server, monkeypatch, tmp_path):
    secret = "sk-very-secret-1234567890"
    monkeypatch.setenv("RORO_SECRET_KEY", secret)
    pool = ModelPool([server.spec("small", price=(0, 0), api_key_env="RORO_SECRET_KEY")], retry=FAST_RETRY)
    server.inject("small", ["echo_key"])
    with pytest.raises(PermanentModelError) as e:
        pool.generate("small", "q", [])
    assert "invalid credentials" in str(e.value) and secret not in str(e.value)
    assert e.value.__cause__ is not None  # the provider's error stays chained ...
    assert secret not in "".join(traceback.format_exception(e.value))  # ... and redacted too
    server.inject("small", ["echo_key"])
    out = tmp_path / "t.jsonl"
    (t,) = StepwiseRuntime(pool, FixedRouter()).run_many(["q"], out=out)
    assert t.stop_reason == "error" and "[REDACTED]" in t.error and secret not in t.error
    assert secret not in out.read_text()


def test_common_key_variables_are_redacted(monkeypatch):
    monkeypatch.setenv("SOMEPROVIDER_API_KEY", "abcdefgh12345678")
    assert redact_secrets("key abcdefgh12345678 used") == "key [REDACTED] used"


# ----- 8. bad model specs are config errors; any float round-trips -----------------------------------
@pytest.mark.parametrize("price", [-1.0, math.inf, math.nan])
def test_bad_prices_raise_config_errors_naming_the_field(price):
    with pytest.raises(ConfigError, match="input_price_per_m") as e:
        ModelSpec(name="a", model="openai/a", input_price_per_m=price, output_price_per_m=1.0)
    assert isinstance(e.value, ValueError)
    with pytest.raises(ConfigError, match="max_tokens_per_step"):
        ModelSpec.model_validate({"name": "a", "model": "openai/a", "max_tokens_per_step": 0})


def test_non_finite_floats_round_trip_through_jsonl():
    t = Trajectory(query=Query(question="q"), steps=[Step(index=0, model="m", text="x", cost_usd=math.inf,
                                                           confidence=math.nan)])
    back = Trajectory.from_jsonl(t.to_jsonl())
    assert back.steps[0].cost_usd == math.inf and math.isnan(back.steps[0].confidence)


# ----- 9. LiteLLM's prices when the user gives none ------------------------------------------------
def test_litellm_price_is_used_and_marked():
    pool = ModelPool([ModelSpec(name="mini", model="openai/gpt-4o-mini"),
                      ModelSpec(name="mine", model="openai/gpt-4o-mini", input_price_per_m=1, output_price_per_m=2)])
    assert (pool["mini"].input_price_per_m, pool["mini"].output_price_per_m) == pytest.approx((0.15, 0.6))
    assert pool["mini"].price_source == "litellm" and pool["mine"].price_source == "user"
    assert pool["mine"].input_price_per_m == 1
    with pytest.raises(UnpricedModelError, match="nobody-knows-me"):
        ModelPool([ModelSpec(name="x", model="openai/nobody-knows-me")])


# ----- 10. one exception tree ---------------------------------------------------------------------------
def test_budget_exhausted_is_a_roro_error():
    assert issubclass(BudgetExhausted, RoroError)


def test_fake_server_faults_are_what_they_say():
    with FakeOpenAIServer() as srv:
        srv.inject("small", ["no_choices"])
        import httpx

        r = httpx.post(f"{srv.api_base}/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": "q"}]})
        assert r.status_code == 200 and r.json()["choices"] == []


# ----- bad router specs are one-line RouterErrors ------------------------------------------------------
@pytest.mark.parametrize("spec,msg", [("trim:nan", "within"), ("query:-5", "within"), ("steer:inf", "within"),
                                      ("policy:/no/such/folder", "does not exist")])
def test_bad_router_specs_are_refused_with_the_reason(spec, msg):
    from roro_sdk import make_router

    with pytest.raises(RoroError, match=msg):
        make_router(spec)
