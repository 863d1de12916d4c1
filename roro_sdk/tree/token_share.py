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
from typing import Sequence

from .paths import Leaf, QueryTree


@dataclass(frozen=True)
class ShareBound:
    accuracy: float
    mean_cost_usd: float
    share: float  # the model's share of all output tokens of the routings taken (expected, for a mix)
    queries: int
    plans: dict[str, float] = field(default_factory=dict)  # plan -> queries on it, or its weight in a mix


def plan_label(plan: Sequence[str]) -> str:
    return ",".join(plan)


def plan_leaf(tree: QueryTree, plan: Sequence[str]) -> Leaf | None:
    """The leaf a router following ``plan`` reaches: the plan's models on the free steps, the
    last one after (the completion rule); a run that ended sooner is the plan's leaf too."""
    for leaf in tree.leaves:
        n = len(leaf.routing)
        want = tuple(plan[:n]) + (plan[-1],) * max(0, n - len(plan))
        if leaf.routing == want:
            return leaf
    return None


def plans_of(names: Sequence[str], free_steps: int) -> list[tuple[str, ...]]:
    return list(itertools.product(names, repeat=free_steps))


def _complete(trees: Sequence[QueryTree], plans: Sequence[tuple[str, ...]]) -> list[tuple[QueryTree, list[Leaf]]]:
    out = []
    for t in trees:
        leaves = [plan_leaf(t, p) for p in plans]
        if all(leaf is not None for leaf in leaves):
            out.append((t, leaves))  # type: ignore[arg-type]
    return out


def _tokens(leaf: Leaf, model: str) -> tuple[int, int]:
    return leaf.output_tokens.get(model, 0), sum(leaf.output_tokens.values())


def best_under_share(trees: Sequence[QueryTree], model: str, cap: float, *, names: Sequence[str],
                     free_steps: int) -> ShareBound | None:
    """The most accurate choice of one plan per query with ``model`` writing at most ``cap`` of
    all output tokens (among equally accurate choices, the one furthest inside the cap). Exact: a
    dynamic programme over the number of correct queries, each state keeping the smallest total
    of ``model tokens - cap * all tokens`` that reaches it. None without a complete query, or
    when no choice fits the cap."""
    if not 0 <= cap <= 1:
        raise ValueError(f"cap is a share of output tokens, between 0 and 1 (got {cap})")
    plans = plans_of(names, free_steps)
    rows = _complete(trees, plans)
    if not rows:
        return None
    inf = float("inf")
    best: list[float] = [0.0]              # best[k]: the smallest excess with k queries correct
    back: list[list[int]] = []             # per query, per k: the plan taken
    for _, leaves in rows:
        excess = [b - cap * t for b, t in (_tokens(leaf, model) for leaf in leaves)]
        right = [i for i, leaf in enumerate(leaves) if leaf.correct]
        wrong = [i for i, leaf in enumerate(leaves) if not leaf.correct]
        nxt = [inf] * (len(best) + 1)
        pick = [-1] * (len(best) + 1)
        for k, e in enumerate(best):
            if e == inf:
                continue
            for i in wrong:
                if e + excess[i] < nxt[k]:
                    nxt[k], pick[k] = e + excess[i], i
            for i in right:
                if e + excess[i] < nxt[k + 1]:
                    nxt[k + 1], pick[k + 1] = e + excess[i], i
        best = nxt
        back.append(pick)
    fits = [k for k, e in enumerate(best) if e <= 1e-9]
    if not fits:
        return None
    k = max(fits)
    chosen: list[int] = []
    for (_, leaves), pick in zip(reversed(rows), reversed(back)):
        i = pick[k]
        chosen.append(i)
        k -= bool(leaves[i].correct)
    chosen.reverse()
    taken = [leaves[i] for (_, leaves), i in zip(rows, chosen)]
    counts: dict[str, float] = {}
    for i in chosen:
        counts[plan_label(plans[i])] = counts.get(plan_label(plans[i]), 0) + 1
    big = sum(_tokens(leaf, model)[0] for leaf in taken)
    tot = sum(_tokens(leaf, model)[1] for leaf in taken)
    n = len(rows)
    return ShareBound(sum(bool(leaf.correct) for leaf in taken) / n, sum(leaf.cost_usd for leaf in taken) / n,
                      big / tot if tot else 0.0, n, counts)


def best_plan_mix(trees: Sequence[QueryTree], model: str, cap: float, *, names: Sequence[str],
                  free_steps: int) -> ShareBound | None:
    """The most accurate router that knows nothing of the query: one random mix of plans for
    every query, with ``model`` writing at most ``cap`` of the expected output tokens. Exact: a
    linear programme over the plans, whose optimum is one plan or two mixed at the cap. None
    without a complete query, or when no plan fits the cap."""
    if not 0 <= cap <= 1:
        raise ValueError(f"cap is a share of output tokens, between 0 and 1 (got {cap})")
    plans = plans_of(names, free_steps)
    rows = _complete(trees, plans)
    if not rows:
        return None
    n = len(rows)
    stats = []
    for j in range(len(plans)):
        leaves = [lv[j] for _, lv in rows]
        big = sum(_tokens(leaf, model)[0] for leaf in leaves)
        tot = sum(_tokens(leaf, model)[1] for leaf in leaves)
        stats.append((sum(bool(leaf.correct) for leaf in leaves), sum(leaf.cost_usd for leaf in leaves), big, tot))
    candidates: list[dict[int, float]] = [{j: 1.0} for j, s in enumerate(stats) if s[2] - cap * s[3] <= 1e-9]
    for i, j in itertools.permutations(range(len(plans)), 2):
        wi, wj = (stats[i][2] - cap * stats[i][3]), (stats[j][2] - cap * stats[j][3])
        if wi < 0 < wj:  # the mix of i and j that sits exactly at the cap
            p = wj / (wj - wi)
            candidates.append({i: p, j: 1 - p})

    def value(mix: dict[int, float]) -> tuple[float, float]:
        return (sum(p * stats[j][0] for j, p in mix.items()), -sum(p * stats[j][1] for j, p in mix.items()))

    if not candidates:
        return None
    mix = max(candidates, key=value)
    big = sum(p * stats[j][2] for j, p in mix.items())
    tot = sum(p * stats[j][3] for j, p in mix.items())
    return ShareBound(value(mix)[0] / n, -value(mix)[1] / n, big / tot if tot else 0.0, n,
                      {plan_label(plans[j]): p for j, p in sorted(mix.items(), key=lambda x: -x[1])})
