"""The sim bench: tasks, the roro_sim provider through the real pool/LiteLLM path, and exact optima."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from roro_sdk import ConfigError, PermanentModelError, StepwiseRuntime, load_dataset
from roro_sdk.errors import DatasetError
from roro_sdk.routers import FixedRouter, SpecReasonRouter, make_router
from roro_sdk.sim import (
    SimConfig,
    SimModel,
    SimOptimalRouter,
    SimOracleRouter,
    SimTask,
    brute_force_routing,
    grade_routing,
    is_hard_step,
    optimal_routing,
    oracle_routing,
    parse_sim_spec,
    realized_correct,
    routing_cost,
    routing_objective,
    routing_p_correct,
    routing_regret,
    sim_complete,
    sim_pool,
    sim_queries,
    task_of,
)
from roro_sdk.testing import ScriptedRouter

CAREFUL = SimConfig.careful()


def run(pool, router, queries, **kw):
    return StepwiseRuntime(pool, router, max_steps=40, **kw).run_many(queries, concurrency=8)


# ----- tasks and specs ---------------------------------------------------------------------------
def test_queries_are_seeded_and_carry_the_task():
    a, b = sim_queries(n=5, seed=1), sim_queries(n=8, seed=1)
    assert [q.model_dump() for q in a] == [q.model_dump() for q in b[:5]]  # task i does not depend on n
    assert [q.question for q in sim_queries(n=5, seed=2)] != [q.question for q in a]
    q = a[0]
    assert q.question.startswith(f"[sim task {q.id}] steps: ")
    task = task_of(q)
    assert q.metadata["difficulties"] == ["hard" if h else "easy" for h in task.hard]
    assert q.answer == str(task.answer)
    assert all(is_hard_step(q, k) == task.hard[k] for k in range(task.n_steps))
    assert not is_hard_step(q, task.n_steps)
    cfg = SimConfig()
    assert all(cfg.min_steps <= task_of(x).n_steps <= cfg.max_steps for x in sim_queries(n=50))


def test_specs_presets_and_errors():
    assert parse_sim_spec("sim") == SimConfig()
    assert parse_sim_spec("sim:careful") == SimConfig.careful()
    cfg = parse_sim_spec("sim:careful,p_hard=0.6,max_steps=4,min_steps=2")
    assert (cfg.p_hard, cfg.max_steps, cfg.models["small"].error_hard) == (0.6, 4, 1.0)
    for bad in ("sim:nope", "sim:colour=3", "simx", "sim:min_steps=9,max_steps=3"):
        with pytest.raises(ConfigError):
            parse_sim_spec(bad)
    assert len(load_dataset("sim:careful", limit=3)) == 3
    with pytest.raises(DatasetError):
        task_of("no header here")


# ----- provider through the pool -----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["prefix", "chat"])
def test_careful_bench_all_large_right_all_small_right_only_without_hard_steps(mode):
    pool = sim_pool(CAREFUL, mode=mode)
    qs = sim_queries(n=12, config=CAREFUL)
    large = run(pool, FixedRouter(tier=-1), qs)
    small = run(pool, FixedRouter(), qs)
    assert all(t.correct for t in large)
    assert [t.correct for t in small] == [not any(task_of(q).hard) for q in qs]
    for t in large:
        task = task_of(t)
        assert len(t.steps) == task.n_steps + 1 and t.stop_reason == "answer"
        assert [("[hard]" in s.text) for s in t.steps[:-1]] == list(task.hard)


def test_trajectories_match_the_exact_rules_and_costs():
    """What the provider writes for any routing is what realized_correct / routing_cost compute."""
    cfg = SimConfig(seed=5)
    pool = sim_pool(cfg)
    rng = random.Random(0)
    for q in sim_queries(n=10, config=cfg):
        task = task_of(q)
        routing = [rng.choice(["small", "large"]) for _ in range(task.n_steps + 1)]
        (t,) = run(pool, ScriptedRouter(routing), [q])
        assert [s.model for s in t.steps] == routing
        assert t.correct == realized_correct(task, routing, cfg)
        assert t.cost_usd == pytest.approx(routing_cost(task, routing, cfg), rel=1e-12)
        for k, s in enumerate(t.steps):
            assert s.input_tokens == cfg.prompt_tokens + k * cfg.tokens_per_step
            assert s.output_tokens == (cfg.answer_tokens if k == task.n_steps else cfg.tokens_per_step)


def test_reproducible_and_sampling_seed_changes_draws():
    cfg = SimConfig(p_hard=0.8)
    qs = sim_queries(n=10, config=cfg)
    texts = lambda pool: [t.text() for t in run(pool, FixedRouter(), qs)]  # noqa: E731
    assert texts(sim_pool(cfg)) == texts(sim_pool(cfg))
    seeded = sim_pool(cfg)
    for s in seeded.specs:
        s.sampling.seed = 123
    assert texts(seeded) != texts(sim_pool(cfg))


def test_logprobs_give_confidence_signal_and_probes_hide_the_verdict():
    cfg = SimConfig()
    q = SimTask("t-1", (False, True, False, True)).to_query()
    conf = {True: [], False: []}
    for k, hard in enumerate(task_of(q).hard):
        msgs = [{"role": "user", "content": q.question}]
        if k:
            prior = "\n\n".join(f"Step {i + 1} [{'hard' if task_of(q).hard[i] else 'easy'}]: ok" for i in range(k))
            msgs.append({"role": "assistant", "content": prior + "\n\n"})
        full = sim_complete("small", msgs, {"logprobs": True}, None)
        assert full["text"].startswith(f"Step {k + 1} [") and full["finish_reason"] == "stop"
        conf[hard].append(math.exp(full["logprobs"][0]["logprob"]))
        probe = sim_complete("small", msgs, {"logprobs": True, "max_tokens": 8}, None)
        assert probe["finish_reason"] == "length" and probe["completion_tokens"] == 8
        assert not any(v in probe["text"] for v in ("ok", "mistake", "carried", "recovered"))
    assert min(conf[False]) > max(conf[True])  # 0.9 +- 0.15 easy vs 0.7 +- 0.15 hard, no mistakes here
    routers_conf = run(sim_pool(cfg), make_router("steer:0.8"), sim_queries(n=10, config=cfg))
    assert all(t.stop_reason == "answer" for t in routers_conf)


def test_specreason_verifier_scores_drafts():
    cfg = CAREFUL  # verifier_error 0: the verdict is exact
    pool = sim_pool(cfg)
    qs = sim_queries(n=10, config=cfg)
    trajs = run(pool, SpecReasonRouter(7), qs)
    assert all(t.correct for t in trajs)
    for t in trajs:
        task = task_of(t)
        assert [s.model == "large" for s in t.steps[:-1]] == list(task.hard)  # drafts of hard steps are rejected


def test_bad_requests_fail_permanently():
    pool = sim_pool(CAREFUL)
    with pytest.raises(PermanentModelError, match="sim task"):
        pool.generate("small", "What is 2 + 2?", [])
    with pytest.raises(ConfigError):
        sim_pool(CAREFUL, models=("small", "huge"))
    q = sim_queries(n=1)[0]
    with pytest.raises(Exception, match="no sim config"):
        sim_complete("small", [{"role": "user", "content": q.question}], {}, "sim://0123456789abcdef")


# ----- exact optima --------------------------------------------------------------------------------
def _random_config(rng: random.Random) -> SimConfig:
    def m(price):
        return SimModel(error_easy=rng.uniform(0, 0.3), error_hard=rng.uniform(0.1, 0.9), recovery=rng.uniform(0, 0.8),
                        input_price_per_m=price, output_price_per_m=4 * price)
    return SimConfig(models={"small": m(0.1), "mid": m(0.4), "large": m(1.0)}, tokens_per_step=rng.randint(5, 60))


def test_optimal_routing_equals_brute_force_on_small_cases():
    rng = random.Random(7)
    for case in range(40):
        cfg = _random_config(rng)
        task = SimTask(f"bf-{case}", tuple(rng.random() < 0.5 for _ in range(rng.randint(1, 6))))
        lam = rng.choice([0.0, 0.05, 0.3, 1.0])
        models = ["small", "large"] if case % 2 else None
        r_dp, c_dp, p_dp = optimal_routing(task, cfg, lambda_c=lam, models=models)
        r_bf, c_bf, p_bf = brute_force_routing(task, cfg, lambda_c=lam, models=models)
        assert routing_objective(task, r_dp, cfg, lam) == pytest.approx(routing_objective(task, r_bf, cfg, lam), abs=1e-9)
        assert c_dp == pytest.approx(c_bf, rel=1e-9) and p_dp == pytest.approx(p_bf, abs=1e-9)
        assert c_dp == pytest.approx(routing_cost(task, r_dp, cfg)) and p_dp == pytest.approx(routing_p_correct(task, r_dp, cfg))
    long_task = SimTask("long", tuple(i % 3 == 0 for i in range(40)))
    routing, _, _ = optimal_routing(long_task, SimConfig(), lambda_c=0.2)  # exact for long tasks too, and fast
    assert len(routing) == 41


def test_expected_accuracy_matches_the_draws():
    cfg = SimConfig(models={"small": SimModel(error_easy=0.1, error_hard=0.6, recovery=0.3),
                            "large": SimModel(error_easy=0.05, error_hard=0.2, recovery=0.6, input_price_per_m=1, output_price_per_m=4)})
    task = SimTask("mc", (True, False, True, True, False))
    routing = ["small", "large", "small", "large", "small", "small"]
    n = 4000
    hits = sum(realized_correct(task, routing, cfg, sampling_seed=s) for s in range(n))
    p = routing_p_correct(task, routing, cfg)
    assert abs(hits / n - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_careful_preset_optimum_is_large_exactly_on_hard_steps():
    for q in sim_queries(n=10, config=CAREFUL):
        task = task_of(q)
        routing, cost, p = optimal_routing(q, CAREFUL)
        assert routing[:-1] == ["large" if h else "small" for h in task.hard] and routing[-1] == "small"
        assert p == 1.0 and cost < routing_cost(task, ["large"] * (task.n_steps + 1), CAREFUL)


def test_oracle_is_the_cheapest_realized_correct_routing():
    cfg = SimConfig(p_hard=0.6)
    for q in sim_queries(n=6, config=cfg):
        task = task_of(q)
        correct = [(routing_cost(task, r, cfg), list(r)) for r in itertools.product(["small", "large"], repeat=task.n_steps + 1)
                   if realized_correct(task, r, cfg)]
        found = oracle_routing(task, cfg)
        if not correct:
            assert found is None
            continue
        assert found is not None and found[1] == pytest.approx(min(correct)[0])
        assert realized_correct(task, found[0], cfg)


def test_regret_grading_and_reference_routers():
    pool = sim_pool(CAREFUL)
    qs = sim_queries(n=10, config=CAREFUL)
    best = run(pool, SimOptimalRouter(CAREFUL), qs)
    wasteful = run(pool, FixedRouter(tier=-1), qs)
    oracle = run(pool, SimOracleRouter(CAREFUL), qs)
    assert all(t.correct for t in best + wasteful + oracle)
    assert all(routing_regret(t, CAREFUL) == pytest.approx(0.0, abs=1e-12) for t in best)
    assert all(grade_routing(t)["careful"] for t in best)
    assert sum(t.cost_usd for t in best) < sum(t.cost_usd for t in wasteful)
    assert all(grade_routing(t)["wasted"] == task_of(t).n_steps - sum(task_of(t).hard) for t in wasteful)
    assert all(routing_regret(t, CAREFUL, lambda_c=0.5) > 0 for t in wasteful)
    small = run(pool, FixedRouter(), qs)
    assert all((routing_regret(t, CAREFUL) > 0) == any(task_of(t).hard) for t in small)
    assert all(grade_routing(t)["missed"] == sum(task_of(t).hard) for t in small)


def test_hints_announce_the_next_step():
    """``hint_accuracy`` (used by the trainer): the question ends with 'next: hard|easy' about the
    first step, each step with one about the next step; no hints without it."""
    exact = SimConfig.careful(hint_accuracy=1.0)
    (t,) = run(sim_pool(exact), FixedRouter(tier=-1), sim_queries(n=1, config=exact))
    task = task_of(t)
    assert t.query.question.endswith(f"next: {'hard' if task.hard[0] else 'easy'}")  # the first step's hint
    for k, s in enumerate(t.steps[:-2]):
        assert s.text.endswith(f"next: {'hard' if task.hard[k + 1] else 'easy'}")
    assert "next:" not in t.steps[-2].text and t.correct
    noisy = SimConfig.careful(hint_accuracy=0.5, max_steps=12, min_steps=12)
    right = wrong = 0
    for t in run(sim_pool(noisy), FixedRouter(tier=-1), sim_queries(n=20, config=noisy)):
        for k, s in enumerate(t.steps[:-2]):
            shown_hard = s.text.endswith("next: hard")
            right += shown_hard == task_of(t).hard[k + 1]
            wrong += shown_hard != task_of(t).hard[k + 1]
    assert 0.3 < right / (right + wrong) < 0.7  # 0.5 carries no information
    assert "next:" not in sim_queries(n=1, config=SimConfig.careful())[0].question
