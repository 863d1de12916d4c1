"""What a cap on one model's share of output tokens allows on a recorded tree, exactly.

A price-independent target reads "this accuracy with at most X% of the output tokens written by
the large model". Two bounds frame what any router can reach under such a cap:

- :func:`best_under_share`: each query's routing chosen knowing how every routing of it ends (the
  tree's best possible under the cap);
- :func:`best_plan_mix`: one mix of *plans* for every query, where a plan fixes the model of each
  free step and the completion rule the rest: what a router reaches that knows nothing of the
  query.

A router between the two used what it learned of the queries; one at the second used nothing.
Both are computed over the same queries: those whose tree holds every plan.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

from .paths import Leaf, QueryTree


@dataclass(frozen=True)
class ShareBound:
    accuracy: float
    mean_cost_usd: float
    share: float  # the model's share of all output tokens of the routings taken (expected, for a mix)
    queries: int
    plans: dict[str, float] = field(default_factory=dict)  # plan -> queries on it, or its weight in a mix
    deterministic_accuracy: float | None = None  # best_under_share: one plan per query, no draw


def plan_label(plan: Sequence[str]) -> str:
    return ",".join(plan)


def plans_of(names: Sequence[str], free_steps: int) -> list[tuple[str, ...]]:
    return list(itertools.product(names, repeat=free_steps))


def complete_plans(trees: Sequence[QueryTree], plans: Sequence[tuple[str, ...]]) -> list[tuple[QueryTree, list[Leaf]]]:
    """The queries whose tree holds every plan, each with its leaf per plan (in ``plans``' order)."""
    out = []
    for t in trees:
        leaves = [t.routing(p) for p in plans]
        if all(leaf is not None for leaf in leaves):
            out.append((t, leaves))  # type: ignore[arg-type]
    return out


def _tokens(leaf: Leaf, model: str) -> tuple[int, int]:
    return leaf.output_tokens.get(model, 0), sum(leaf.output_tokens.values())


def _excess(leaf: Leaf, model: str, cap: Fraction) -> Fraction:
    """``model``'s tokens beyond ``cap`` of the leaf's output tokens, exactly (no float tolerance)."""
    big, tot = _tokens(leaf, model)
    return big - cap * tot


def _cap(cap: float) -> Fraction:
    if not 0 <= cap <= 1:
        raise ValueError(f"cap is a share of output tokens, between 0 and 1 (got {cap})")
    return Fraction(str(cap))  # 0.3 is 3/10, not the float nearest to it


def best_under_share(trees: Sequence[QueryTree], model: str, cap: float, *, names: Sequence[str],
                     free_steps: int) -> ShareBound | None:
    """The most accurate routing with ``model`` writing at most ``cap`` of all output tokens,
    choosing each query's plan knowing how every plan of it ends. ``accuracy`` lets one query mix
    two plans (a router may draw at random, as :func:`best_plan_mix` does, so this bound is
    never below it); ``deterministic_accuracy`` takes one plan per query. Both exact.

    A query counts once right or not, so only two of its plans matter: the one with the fewest
    tokens beyond the cap (``model tokens - cap x all tokens``), and the right one with the fewest.
    Starting every query at the first, the optimum moves the queries whose right plan costs the
    fewest extra tokens, in that order, while the slack under the cap lasts (the greedy solution
    of this knapsack's relaxation, and with 0/1 values its integer part is the integer optimum).
    None without a complete query, or when no choice fits the cap."""
    c = _cap(cap)
    plans = plans_of(names, free_steps)
    rows = complete_plans(trees, plans)
    if not rows:
        return None
    start: list[int] = []
    moves: list[tuple[Fraction, float, int, int]] = []  # (extra excess, extra cost, query, plan moved to)
    for q, (_, leaves) in enumerate(rows):
        key = lambda i: (_excess(leaves[i], model, c), leaves[i].cost_usd)  # noqa: E731
        right = min((i for i, leaf in enumerate(leaves) if leaf.correct), key=key, default=None)
        wrong = min((i for i, leaf in enumerate(leaves) if not leaf.correct), key=key, default=None)
        if right is not None and (wrong is None or key(right)[0] <= key(wrong)[0]):
            start.append(right)
        else:
            start.append(wrong)  # type: ignore[arg-type]
            if right is not None:
                moves.append((key(right)[0] - key(wrong)[0], leaves[right].cost_usd - leaves[wrong].cost_usd, q, right))
    slack = -sum((_excess(rows[q][1][i], model, c) for q, i in enumerate(start)), Fraction(0))
    if slack < 0:
        return None
    weights: list[dict[int, float]] = [{i: 1.0} for i in start]
    whole = 0
    for extra, _, q, i in sorted(moves):
        if extra <= slack:
            slack -= extra
            weights[q] = {i: 1.0}
            whole += 1
        else:
            f = float(slack / extra)
            if f > 0:
                weights[q] = {start[q]: 1 - f, i: f}
            break
    n = len(rows)
    correct = sum(w * bool(rows[q][1][i].correct) for q, mix in enumerate(weights) for i, w in mix.items())
    cost = sum(w * rows[q][1][i].cost_usd for q, mix in enumerate(weights) for i, w in mix.items())
    big = sum(w * _tokens(rows[q][1][i], model)[0] for q, mix in enumerate(weights) for i, w in mix.items())
    tot = sum(w * _tokens(rows[q][1][i], model)[1] for q, mix in enumerate(weights) for i, w in mix.items())
    counts: dict[str, float] = {}
    for mix in weights:
        for i, w in mix.items():
            counts[plan_label(plans[i])] = counts.get(plan_label(plans[i]), 0) + w
    base = sum(bool(rows[q][1][i].correct) for q, i in enumerate(start))
    return ShareBound(correct / n, cost / n, big / tot if tot else 0.0, n, counts, (base + whole) / n)


def best_plan_mix(trees: Sequence[QueryTree], model: str, cap: float, *, names: Sequence[str],
                  free_steps: int) -> ShareBound | None:
    """The most accurate router that knows nothing of the query: one random mix of plans for
    every query, with ``model`` writing at most ``cap`` of the expected output tokens. Exact: a
    linear programme over the plans, whose optimum is one plan or two mixed at the cap (among
    equally accurate mixes, the cheapest). None without a complete query, or when no plan fits
    the cap."""
    c = _cap(cap)
    plans = plans_of(names, free_steps)
    rows = complete_plans(trees, plans)
    if not rows:
        return None
    n = len(rows)
    right, cost, big, tot, excess = [], [], [], [], []
    for j in range(len(plans)):
        leaves = [lv[j] for _, lv in rows]
        right.append(sum(bool(leaf.correct) for leaf in leaves))
        cost.append(sum(leaf.cost_usd for leaf in leaves))
        big.append(sum(_tokens(leaf, model)[0] for leaf in leaves))
        tot.append(sum(_tokens(leaf, model)[1] for leaf in leaves))
        excess.append(sum((_excess(leaf, model, c) for leaf in leaves), Fraction(0)))
    candidates: list[dict[int, Fraction]] = [{j: Fraction(1)} for j in range(len(plans)) if excess[j] <= 0]
    for i, j in itertools.permutations(range(len(plans)), 2):
        if excess[i] < 0 < excess[j]:  # the mix of i and j that sits exactly at the cap
            p = excess[j] / (excess[j] - excess[i])
            candidates.append({i: p, j: 1 - p})
    if not candidates:
        return None
    mix = max(candidates, key=lambda m: (sum(p * right[j] for j, p in m.items()), -sum(float(p) * cost[j] for j, p in m.items())))
    b = sum(float(p) * big[j] for j, p in mix.items())
    t = sum(float(p) * tot[j] for j, p in mix.items())
    return ShareBound(float(sum(p * right[j] for j, p in mix.items())) / n, sum(float(p) * cost[j] for j, p in mix.items()) / n,
                      b / t if t else 0.0, n, {plan_label(plans[j]): float(p) for j, p in sorted(mix.items(), key=lambda x: -x[1])})
