"""The shape of a routing tree and the exact best routing over it.

A node is a query plus the steps written so far (and which model wrote each). Its children are
the next step of each model allowed there (:func:`next_models`: every model for the first
``depth + 1`` steps, then only the model of the branch), found in the store under the key of that
step request. A node ends exactly where :class:`~roro_sdk.runtime.StepwiseRuntime` stops a run
without budgets (:func:`stop_after`): an answer marker, a repeated step, ``max_steps``, or an
empty step (a failed step, which a live run would end in an error).

The exact analysis walks every recorded routing of each query (:func:`leaves`) and needs no model:

* per query the cheapest correct routing (the best any router could do on it);
* the best achievable accuracy-cost frontier (:func:`best_frontier`): since a query is either
  right or wrong, the best routing set at any cost weight takes, per query, either its cheapest
  routing or its cheapest correct one; the frontier is their upper concave hull, built by
  switching queries in order of accuracy gained per dollar.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..answers import check_answer, extract_answer, find_marked_answer
from ..pool import ModelPool
from ..types import Query

Lookup = Callable[[str | None], "dict[str, Any] | None"]


def next_models(path: Sequence[str], names: Sequence[str], depth: int) -> list[str]:
    """The models that write the next step after ``path`` (the models of the steps so far)."""
    return list(names) if len(path) <= depth else [path[-1]]


def stop_after(texts: Sequence[str], *, max_steps: int, stop_on_repeat: bool = True) -> str | None:
    """Why a run whose steps are ``texts`` stops after the last one (the runtime's rules), or None."""
    last = texts[-1]
    if not last.strip():
        return "error"
    if find_marked_answer(last) is not None:
        return "answer"
    key = " ".join(last.split())
    if stop_on_repeat and key in {" ".join(t.split()) for t in texts[:-1]}:
        return "repeat"
    if len(texts) >= max_steps:
        return "max_steps"
    return None


def step_key(pool: ModelPool, store: Any, model: str, question: str, steps: Sequence[str]) -> str | None:
    """The store key of ``model``'s step request after ``steps``, as the pool would send it."""
    return store.key(pool.request_params(model), pool.messages(model, question, steps), cut=True)


@dataclass(frozen=True)
class Leaf:
    """One complete recorded routing of a query."""

    routing: tuple[str, ...]
    stop: str
    answer: str | None
    correct: bool | None
    cost_usd: float
    output_tokens: dict[str, int]


@dataclass
class QueryTree:
    """Every recorded routing of one query; ``missing``: branches the tree does not (yet) hold."""

    query: Query
    leaves: list[Leaf] = field(default_factory=list)
    missing: int = 0
    nodes: int = 0

    @property
    def cheapest(self) -> Leaf:
        """The cheapest routing (a correct one first among equally cheap ones)."""
        return min(self.leaves, key=lambda l: (l.cost_usd, not l.correct, l.routing))

    @property
    def cheapest_correct(self) -> Leaf | None:
        ok = [l for l in self.leaves if l.correct]
        return min(ok, key=lambda l: (l.cost_usd, l.routing)) if ok else None

    def routing(self, models: Sequence[str]) -> Leaf | None:
        """The leaf of a fixed-model routing prefix, e.g. all-small = ``[small]``, extended by the
        completion rule (the last model continues); a run that ended within the prefix is its leaf too."""
        for l in self.leaves:
            n = len(l.routing)
            if l.routing == tuple(models[:n]) + (models[-1],) * max(0, n - len(models)):
                return l
        return None


def walk(pool: ModelPool, store: Any, query: Query, *, depth: int, max_steps: int, stop_on_repeat: bool = True,
         checker: Callable[[str | None, Query], bool | None] | None = None) -> QueryTree:
    """All recorded routings of ``query`` (no model is called)."""
    check = checker or (lambda a, q: None if q.answer is None else check_answer(a, q.answer))
    out = QueryTree(query=query)
    delim = pool.prompt.delimiter
    stack: list[tuple[tuple[str, ...], tuple[str, ...], float, dict[str, int]]] = [((), (), 0.0, {})]
    while stack:
        path, texts, cost, toks = stack.pop()
        for m in next_models(path, pool.names, depth):
            rec = store.lookup(step_key(pool, store, m, query.question, texts))
            if rec is None:
                out.missing += 1
                continue
            r = rec["r"]
            out.nodes += 1
            p2, t2 = path + (m,), texts + (r["text"],)
            c2 = cost + pool[m].cost(int(r["input_tokens"]), int(r["output_tokens"]))
            k2 = dict(toks)
            k2[m] = k2.get(m, 0) + int(r["output_tokens"])
            why = stop_after(t2, max_steps=max_steps, stop_on_repeat=stop_on_repeat)
            if why is None:
                stack.append((p2, t2, c2, k2))
                continue
            # a failed (empty) step is not part of the run: the runtime still reads the answer of the steps before it
            kept = t2[:-1] if why == "error" else t2
            answer = extract_answer(delim.join(kept)) if kept else None
            out.leaves.append(Leaf(routing=p2, stop=why, answer=answer, correct=check(answer, query), cost_usd=c2,
                                   output_tokens=k2))
    out.leaves.sort(key=lambda l: l.routing)
    return out


@dataclass(frozen=True)
class FrontierPoint:
    mean_cost_usd: float
    accuracy: float
    switched: int = 0  # queries routed to their cheapest correct routing at this point


def best_frontier(trees: Sequence[QueryTree]) -> list[FrontierPoint]:
    """The best achievable (mean cost, accuracy) points over ``trees``: from every query on its
    cheapest routing to every query that can be right on its cheapest correct routing. Exact: the
    upper concave hull of what per-query routing choices inside the trees achieve; each vertex is
    achieved by a deterministic choice, points between adjacent vertices by mixing the two."""
    usable = [t for t in trees if t.leaves]
    if not usable:
        return []
    n = len(usable)
    base_cost = sum(t.cheapest.cost_usd for t in usable)
    base_acc = sum(bool(t.cheapest.correct) for t in usable)
    moves = []
    for t in usable:
        best = t.cheapest_correct
        if best is not None and not t.cheapest.correct:
            moves.append((best.cost_usd - t.cheapest.cost_usd, 1))
    moves.sort(key=lambda m: m[0])  # one query gained per move: cheapest gains first is the steepest hull
    pts = [FrontierPoint(base_cost / n, base_acc / n, 0)]
    for i, (dc, da) in enumerate(moves, 1):
        base_cost += dc
        base_acc += da
        point = FrontierPoint(base_cost / n, base_acc / n, i)
        if dc <= 0 and pts:  # a gain at no extra cost: the same point, more accurate
            pts[-1] = point
        else:
            pts.append(point)
    return pts


def best_at_cost(frontier: Sequence[FrontierPoint], cost: float) -> float | None:
    """The best accuracy achievable at mean cost ``cost`` (mixing adjacent frontier points); None
    below the cheapest point."""
    if not frontier or cost < frontier[0].mean_cost_usd - 1e-15:
        return None  # cheaper than every recorded routing: nothing is achievable there
    if cost <= frontier[0].mean_cost_usd:
        return frontier[0].accuracy
    for a, b in zip(frontier, frontier[1:]):
        if cost <= b.mean_cost_usd:
            span = b.mean_cost_usd - a.mean_cost_usd
            return a.accuracy if span <= 0 else a.accuracy + (b.accuracy - a.accuracy) * (cost - a.mean_cost_usd) / span
    return frontier[-1].accuracy


def best_for_weight(trees: Sequence[QueryTree], lambda_usd: float) -> FrontierPoint:
    """The routing set maximising ``accuracy - lambda_usd * mean cost`` (cost weight in accuracy
    per dollar per query): each query takes the leaf with the highest ``correct - lambda * cost``."""
    usable = [t for t in trees if t.leaves]
    picks = [max(t.leaves, key=lambda l: (bool(l.correct) - lambda_usd * l.cost_usd, -l.cost_usd)) for t in usable]
    n = max(1, len(picks))
    return FrontierPoint(sum(l.cost_usd for l in picks) / n, sum(bool(l.correct) for l in picks) / n,
                         sum(1 for l, t in zip(picks, usable) if l.correct and not t.cheapest.correct))


def gain_share(accuracy: float, cost: float, small_accuracy: float, frontier: Sequence[FrontierPoint]) -> float | None:
    """A router's share of the achievable gain: (its accuracy - all-small's) over (the best
    accuracy achievable at its cost - all-small's); None where nothing is achievable above all-small."""
    best = best_at_cost(frontier, cost)
    if best is None or best - small_accuracy <= 1e-12:
        return None
    return (accuracy - small_accuracy) / (best - small_accuracy)
