"""Preference pairs: the outcome / cost / process rules, caps, statistics, files and the CLI."""

from __future__ import annotations

import asyncio

import pytest

from roro_sdk.cli import main
from roro_sdk.judge import FunctionJudge
from roro_sdk.pairs import (
    PairConfig,
    build_pairs,
    judge_process_scores,
    pair_id,
    read_pairs,
    record_step_verifier,
    routing_process_score,
    write_pairs,
)
from roro_sdk.rubric import StaticRubricor
from roro_sdk.trajectories import write_trajectories
from roro_sdk.types import Query, Step, Trajectory

Q = Query(id="q1", question="[sim task q1] steps: E H E", answer="7")
PRICE = {"small": 1e-5, "large": 1e-4}


def traj(tid: str, models: str, verdicts: str = "ooo", correct: bool | None = True, query: Query = Q,
         diffs: str = "ehe", error: bool = False) -> Trajectory:
    """models like 'sls' (small/large per step); verdicts 'o' ok, 'm' mistake, 'c' carried, 'r' recovered."""
    names = {"o": "ok", "m": "mistake", "c": "carried", "r": "recovered"}
    steps = [Step(index=i, model="small" if m == "s" else "large",
                  text=f"Step {i + 1} [{'hard' if d == 'h' else 'easy'}]: {names[v]}", input_tokens=5, output_tokens=5,
                  cost_usd=PRICE["small" if m == "s" else "large"])
             for i, (m, v, d) in enumerate(zip(models, verdicts, diffs))]
    steps.append(Step(index=len(steps), model="small", text="Answer: 7", cost_usd=1e-6, input_tokens=5, output_tokens=1))
    return Trajectory(id=tid, query=query, router=f"r-{tid}", steps=steps, answer="7", correct=correct,
                      stop_reason="error" if error else "answer", error="boom" if error else None)


def test_outcome_cost_and_process_rules():
    right = traj("right", "sls")                            # large on the hard step: correct, cheap
    wasteful = traj("waste", "lll")                         # correct, 3x the large cost
    wrong = traj("wrong", "sss", "omc", correct=False)      # small on the hard step: wrong
    wrong_b = traj("wrong_b", "ssl", "omc", correct=False)  # wrong too; escalated on an easy step
    ps = build_pairs([right, wasteful, wrong, wrong_b], step_verifier=record_step_verifier)
    kinds = {(p.kind, p.chosen_id, p.rejected_id) for p in ps.pairs}
    assert ("outcome", "right", "wrong") in kinds and ("outcome", "waste", "wrong") in kinds
    assert ("outcome", "right", "wrong_b") in kinds
    assert ("cost", "right", "waste") in kinds
    # wrong vs wrong_b: same outcome, cost ratio ~0.2 apart... wrong_b costs much more -> no cost pair (both wrong),
    # and not "similar cost" -> no process pair either
    assert not any({p.chosen_id, p.rejected_id} == {"wrong", "wrong_b"} for p in ps.pairs)
    assert ps.stats.per_kind["outcome"].n == 4 and ps.stats.per_kind["cost"].n == 1
    p = next(p for p in ps.pairs if p.kind == "cost")
    assert p.chosen_cost < p.rejected_cost and p.id == pair_id("cost", "right", "waste")
    assert set(ps.trajectories) == {"right", "waste", "wrong", "wrong_b"}


def test_cost_margin_and_process_pairs_with_similar_cost():
    a = traj("a", "sls", diffs="ehe")             # escalated on the hard step
    b = traj("b", "lss", diffs="ehe")             # escalated on an easy step instead, same cost, same outcome
    loose = build_pairs([a, b], step_verifier=record_step_verifier)
    assert [(p.kind, p.chosen_id) for p in loose.pairs] == [("process", "a")]
    p = loose.pairs[0]
    assert p.chosen_process > p.rejected_process and loose.stats.per_kind["process"].mean_process_gap > 0
    # without process scores, no process pair; the reason is reported
    none = build_pairs([a, b])
    assert not none.pairs and any("process" in k for k in none.stats.skipped)
    # cost margin: a 20% margin does not pair costs 10% apart
    c = traj("c", "sls")
    d = c.model_copy(update={"id": "d", "steps": [s.model_copy(update={"cost_usd": s.cost_usd * 1.1}) for s in c.steps]})
    d = d.model_copy(update={"steps": d.steps[:-1] + [d.steps[-1].model_copy(update={"text": "Answer: 7 (checked)"})]})
    assert not [p for p in build_pairs([c, d], PairConfig(cost_margin=0.2)).pairs if p.kind == "cost"]
    assert [p.kind for p in build_pairs([c, d], PairConfig(cost_margin=0.05)).pairs] == ["cost"]


def test_routing_process_score_counts_recovery():
    good = traj("g", "sls", "ooo")
    late = traj("l", "ssl", "mcr", diffs="hee")     # hard step on small (mistake), no escalation right after
    quick = traj("k", "sls", "mro", diffs="hee")    # escalated right after the mistake
    sg, sl, sq = (routing_process_score(t, cheapest="small") for t in (good, late, quick))
    assert sg == 1.0 and sq > sl
    assert routing_process_score(Trajectory(query=Q)) is None


def test_skips_errors_unknown_identical_and_caps():
    base = [traj(f"t{i}", "sls" if i % 2 else "sss", "ooo" if i % 2 else "omc", correct=bool(i % 2)) for i in range(8)]
    err = traj("err", "lll", error=True)
    unk = traj("unk", "ssl", "omc", correct=None)
    dup = base[0]
    ps = build_pairs(base + [err, unk, dup], PairConfig(max_pairs_per_query=3, kinds=["outcome", "cost"]))
    assert ps.stats.skipped == {"model error": 1, "correctness unknown": 1, "duplicate id": 1}
    assert "err" not in ps.trajectories and all(p.kind != "outcome" or "unk" not in (p.chosen_id, p.rejected_id) for p in ps.pairs)
    # identical routings never pair (t1, t3, ... are the same run under different ids)
    assert not any(p.chosen_id in ("t1", "t3", "t5", "t7") and p.rejected_id in ("t1", "t3", "t5", "t7") for p in ps.pairs)
    out = ps.stats.per_kind["outcome"]
    assert out.n == 3 and out.before_cap == 16
    again = build_pairs(base + [err, unk, dup], PairConfig(max_pairs_per_query=3, kinds=["outcome", "cost"]))
    assert [p.id for p in again.pairs] == [p.id for p in ps.pairs]  # deterministic


def test_balance_kinds_and_file_roundtrip(tmp_path):
    trajs = []
    for qi in range(4):
        q = Query(id=f"q{qi}", question=f"[sim task q{qi}] steps: E H E", answer="7")
        trajs += [traj(f"{qi}a", "sls", query=q), traj(f"{qi}b", "lll", query=q),
                  traj(f"{qi}c", "sss", "omc", correct=False, query=q), traj(f"{qi}d", "sll", query=q)]
    ps = build_pairs(trajs, PairConfig(balance_kinds=True, kinds=["outcome", "cost"]))
    n = {k: v.n for k, v in ps.stats.per_kind.items()}
    assert n["outcome"] == n["cost"] > 0
    path = tmp_path / "pairs.jsonl"
    assert write_pairs(path, ps.pairs) == len(ps.pairs)
    assert read_pairs(path) == ps.pairs


def test_judge_process_scores_with_a_function_judge():
    a, b = traj("a", "sls"), traj("b", "lss")
    judge = FunctionJudge(lambda c, t: 1.0 if t.steps[1].model == "large" else 0.2)
    scores = asyncio.run(judge_process_scores([a, b], judge, StaticRubricor()))
    assert scores == {"a": 1.0, "b": pytest.approx(0.2)}
    ps = build_pairs([a, b], process_scores=scores)
    assert [(p.kind, p.chosen_id) for p in ps.pairs] == [("process", "a")]


def test_pairs_cli(tmp_path, capsys):
    trajs = [traj("a", "sls"), traj("b", "lll"), traj("c", "sss", "omc", correct=False), traj("d", "lss")]
    tpath = tmp_path / "t.jsonl"
    write_trajectories(tpath, trajs)
    out = tmp_path / "p.jsonl"
    rc = main(["pairs", "--trajectories", str(tpath), "--out", str(out), "--stats-json", str(tmp_path / "s.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "outcome" in text and "cost" in text and "process" in text
    pairs = read_pairs(out)
    assert {p.kind for p in pairs} == {"outcome", "cost", "process"}
    assert (tmp_path / "s.json").read_text().startswith("{")
