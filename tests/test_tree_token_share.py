"""The token-share bounds of a routing tree (roro_sdk.tree.token_share) against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from roro_sdk.tree import RoutingTree
from roro_sdk.tree.paths import Leaf, QueryTree
from roro_sdk.tree.token_share import best_plan_mix, best_under_share, plans_of
from roro_sdk.types import Query

NAMES = ["s", "l"]


def random_tree(rng: random.Random, i: int) -> QueryTree:
    """A depth-1 tree as greedy decoding makes it: each first step either ends the run (one leaf
    for both plans that start with it) or is continued by each model; each leaf its own outcome,
    tokens and cost."""
    leaves = []
    for first in NAMES:
        ends = rng.random() < 0.2
        for second in ([first] if ends else NAMES):
            toks = {first: rng.randint(5, 40)}
            if not ends:
                toks[second] = toks.get(second, 0) + rng.randint(1, 120)
            cost = sum(t * (1 if m == "s" else 3) for m, t in toks.items()) * 1e-6
            leaves.append(Leaf(routing=(first,) if ends else (first, second), stop="answer", answer=None,
                               correct=rng.random() < 0.4, cost_usd=cost, output_tokens=toks))
    return QueryTree(query=Query(id=f"q{i}", question="x"), leaves=leaves)


def share(leaves) -> float:
    tot = sum(sum(leaf.output_tokens.values()) for leaf in leaves)
    return sum(leaf.output_tokens.get("l", 0) for leaf in leaves) / tot if tot else 0.0


@pytest.mark.parametrize("cap", [0.0, 0.2, 0.3, 0.6, 1.0])
def test_best_under_share_is_the_brute_force_optimum(cap):
    rng = random.Random(int(cap * 10))
    plans = plans_of(NAMES, 2)
    for _ in range(25):
        trees = [random_tree(rng, i) for i in range(5)]
        got = best_under_share(trees, "l", cap, names=NAMES, free_steps=2)
        options = [[t.routing(p) for p in plans] for t in trees]
        feasible = [c for c in itertools.product(*options) if share(c) <= cap + 1e-12]
        if not feasible:
            assert got is None
            continue
        best = max(sum(bool(leaf.correct) for leaf in c) for c in feasible) / len(trees)
        assert got.deterministic_accuracy == pytest.approx(best)  # one plan per query
        # a draw may split one query between two plans: at most one query more, never less
        assert best - 1e-12 <= got.accuracy <= best + 1 / len(trees) + 1e-12
        assert got.share <= cap + 1e-12 and got.queries == 5 and sum(got.plans.values()) == pytest.approx(5)


def test_a_draw_between_two_plans_can_beat_every_fixed_choice():
    """One query: all-small wrong (no large tokens), the large model right at half the tokens.
    Under a 25% cap no fixed choice is right, a fair draw between the two is right half the time."""
    t = QueryTree(query=Query(id="q", question="x"), leaves=[
        Leaf(routing=("l", "l"), stop="answer", answer="1", correct=True, cost_usd=2e-6, output_tokens={"l": 10}),
        Leaf(routing=("l", "s"), stop="answer", answer="1", correct=True, cost_usd=2e-6, output_tokens={"l": 10, "s": 10}),
        Leaf(routing=("s", "l"), stop="answer", answer="2", correct=False, cost_usd=2e-6, output_tokens={"s": 10, "l": 10}),
        Leaf(routing=("s", "s"), stop="answer", answer="2", correct=False, cost_usd=1e-6, output_tokens={"s": 20})])
    knows = best_under_share([t], "l", 0.25, names=NAMES, free_steps=2)
    blind = best_plan_mix([t], "l", 0.25, names=NAMES, free_steps=2)
    assert knows.deterministic_accuracy == 0.0 and knows.accuracy == pytest.approx(0.5) and knows.share == pytest.approx(0.25)
    assert blind.accuracy == pytest.approx(0.5)
    # a pool whose only model is capped away: nothing fits
    only = QueryTree(query=Query(id="q", question="x"), leaves=[t.leaves[0]])
    assert best_under_share([only], "l", 0.5, names=["l"], free_steps=2) is None
    assert best_plan_mix([only], "l", 0.5, names=["l"], free_steps=2) is None
    assert best_under_share([only], "l", 1.0, names=["l"], free_steps=2).accuracy == 1.0


@pytest.mark.parametrize("cap", [0.1, 0.3, 0.5, 0.9])
def test_best_plan_mix_is_the_best_blind_mix(cap):
    rng = random.Random(100 + int(cap * 10))
    plans = plans_of(NAMES, 2)
    for _ in range(25):
        trees = [random_tree(rng, i) for i in range(8)]
        got = best_plan_mix(trees, "l", cap, names=NAMES, free_steps=2)
        per = []
        for p in plans:
            leaves = [t.routing(p) for t in trees]
            per.append((sum(bool(leaf.correct) for leaf in leaves) / 8,
                        sum(leaf.output_tokens.get("l", 0) for leaf in leaves),
                        sum(sum(leaf.output_tokens.values()) for leaf in leaves)))
        best = None  # a fine grid over mixes of the four plans
        for w in itertools.product(range(21), repeat=3):
            if sum(w) > 20:
                continue
            ps = [x / 20 for x in w] + [(20 - sum(w)) / 20]
            big = sum(p * s[1] for p, s in zip(ps, per))
            tot = sum(p * s[2] for p, s in zip(ps, per))
            if big <= cap * tot + 1e-9:
                acc = sum(p * s[0] for p, s in zip(ps, per))
                best = acc if best is None else max(best, acc)
        if best is None:
            assert got is None or got.share <= cap + 1e-9  # the grid may miss a mix exactly at the cap
            continue
        assert got is not None and got.accuracy >= best - 1e-9  # no grid mix beats it
        assert got.share <= cap + 1e-9 and sum(got.plans.values()) == pytest.approx(1.0)
        # and it is achieved by the mix it names
        acc = sum(w * per[plans.index(tuple(k.split(",")))][0] for k, w in got.plans.items())
        assert acc == pytest.approx(got.accuracy)


def test_a_knowing_router_is_never_below_a_blind_one():
    rng = random.Random(7)
    for _ in range(40):
        trees = [random_tree(rng, i) for i in range(rng.randint(1, 12))]
        for cap in (0.0, 0.1, 0.2, 0.5, 1.0):
            knows = best_under_share(trees, "l", cap, names=NAMES, free_steps=2)
            blind = best_plan_mix(trees, "l", cap, names=NAMES, free_steps=2)
            if blind is not None:
                assert knows.accuracy >= blind.accuracy - 1e-9


def test_a_plan_reaches_its_leaf_by_the_completion_rule_or_a_run_that_ended_sooner():
    t = QueryTree(query=Query(id="q", question="x"), leaves=[
        Leaf(routing=("s",), stop="answer", answer="1", correct=True, cost_usd=1e-6, output_tokens={"s": 5}),
        Leaf(routing=("l", "s", "s"), stop="answer", answer="2", correct=False, cost_usd=2e-6, output_tokens={"l": 5, "s": 9}),
        Leaf(routing=("l", "l", "l"), stop="answer", answer="3", correct=True, cost_usd=3e-6, output_tokens={"l": 14})])
    assert t.routing(("s", "l")).answer == "1" and t.routing(("s", "s")).answer == "1"  # ended after step 1
    assert t.routing(("l", "s")).answer == "2" and t.routing(("l", "l")).answer == "3"
    # a tree missing a plan is left out of both bounds
    t2 = QueryTree(query=Query(id="q2", question="x"), leaves=t.leaves[1:])
    assert best_under_share([t2], "l", 0.5, names=NAMES, free_steps=2) is None
    assert best_under_share([t, t2], "l", 0.5, names=NAMES, free_steps=2).queries == 1
    with pytest.raises(ValueError, match="between 0 and 1"):
        best_plan_mix([t], "l", 30, names=NAMES, free_steps=2)


def test_tree_signals_script_on_the_committed_held_out_tree(tmp_path):
    """scripts/tree_signals.py reads signals and plan outcomes from a real tree with no model."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tree = root / "data" / "trees" / "qwen2.5-coder-0.5b-1.5b" / "gsm_symbolic-test"
    out = tmp_path / "signals.json"
    p = subprocess.run([sys.executable, str(root / "scripts" / "tree_signals.py"), str(tree), "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                                                                         "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["problems"] == len(RoutingTree(tree).queries) and len(res["targets"]) == 4
    for t in res["targets"].values():
        assert all(a is None or 0 <= a <= 1 for a in t["auc"].values()) and "question chars" in t["auc"]
    assert res["best_plan_mix"]["accuracy"] <= res["best_under_share"]["accuracy"]
    assert "AUC of each signal" in p.stdout
