"""Training data from a routing tree: every recorded routing as a trajectory, and step labels
read from the exact value of each node.

A node's value here is whether a correct answer is still reachable below it (some recorded
routing through it ends correct) and the cheapest such routing's cost. That gives each routing
decision an exact label, with no Judge and no guess (:class:`TreeStepVerifier`):

* a step is **hard** when the cheapest model's child of the node it is chosen at can no longer
  reach a correct answer while another model's child can (escalating is what keeps the answer);
  **easy** when the cheapest model's child still can (escalating there only costs); unlabelled
  when no child can (nothing routing does helps, so the step says nothing about the router);
* a step is a **mistake** when a correct answer was reachable before it and is not after it.

Only the steps the tree records every model's choice for (the first ``depth + 1``) have
siblings; committed steps after them are not labelled. These labels feed
:func:`roro_sdk.pairs.build_pairs` (``roro pairs --process tree:PATH``) as the step verifier, so
process pairs on real model outputs come from the tree's exact values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..pairs import StepLabel
from ..routers.base import Decision, Router, RoutingState, one_hot
from ..types import Query, Trajectory
from .paths import QueryTree

if TYPE_CHECKING:  # pragma: no cover
    from ..pool import ModelPool
    from .replay import RoutingTree


@dataclass(frozen=True)
class NodeValue:
    """What is still achievable below a node: a correct answer (and its cheapest cost), and the
    cheapest routing of any outcome."""

    reachable: bool
    cheapest_correct_usd: float | None
    cheapest_usd: float


def node_values(tree: QueryTree) -> dict[tuple[str, ...], NodeValue]:
    """The value of every node of one query's tree, keyed by the models of the steps leading to it
    (``()`` is the root); computed exactly from the recorded complete routings."""
    acc: dict[tuple[str, ...], tuple[bool, float | None, float]] = {}
    for leaf in tree.leaves:
        for n in range(len(leaf.routing) + 1):
            key = leaf.routing[:n]
            ok, best_ok, cheapest = acc.get(key, (False, None, float("inf")))
            if leaf.correct:
                ok = True
                best_ok = leaf.cost_usd if best_ok is None else min(best_ok, leaf.cost_usd)
            acc[key] = (ok, best_ok, min(cheapest, leaf.cost_usd))
    return {k: NodeValue(*v) for k, v in acc.items()}


class TreeStepVerifier:
    """A step verifier (``(trajectory, step index) -> StepLabel | None``) from routing trees: see
    the module docstring. ``cheapest``: the pool's cheapest model (the one escalation is from)."""

    def __init__(self, trees: Sequence[QueryTree], cheapest: str):
        self.cheapest = cheapest
        self.values = {t.query.id: node_values(t) for t in trees}
        self.questions = {t.query.question: t.query.id for t in trees}

    def _values_of(self, traj: Trajectory) -> dict[tuple[str, ...], NodeValue] | None:
        v = self.values.get(traj.query.id)
        if v is None:  # a rollout id ("q~3") or a renamed query: the question identifies it
            qid = self.questions.get(traj.query.question)
            v = self.values.get(qid) if qid is not None else None
        return v

    def __call__(self, traj: Trajectory, index: int) -> StepLabel | None:
        values = self._values_of(traj)
        if values is None:
            return None
        path = tuple(s.model for s in traj.steps[: index + 1])
        node, child = values.get(path[:-1]), values.get(path)
        siblings = {k[-1]: v for k, v in values.items() if len(k) == len(path) and k[:-1] == path[:-1]}
        if node is None or child is None or len(siblings) < 2 or self.cheapest not in siblings:
            return None  # outside the tree, or a committed step: no alternative was recorded
        small_ok = siblings[self.cheapest].reachable
        other_ok = any(v.reachable for m, v in siblings.items() if m != self.cheapest)
        hard = None if not (small_ok or other_ok) else not small_ok
        return StepLabel(hard=hard, mistake=node.reachable and not child.reachable)


class RoutingPlan(Router):
    """Routes step ``i`` to ``plan[i]``, and every step after the plan to its last model (the
    completion rule of a routing tree); each step after the plan is a committed step."""

    def __init__(self, plan: Sequence[str], *, name: str | None = None):
        if not plan:
            raise ValueError("a routing plan needs at least one model")
        self.plan = list(plan)
        self.name = name or "plan:" + ">".join(self.plan)

    def check(self, pool: ModelPool) -> None:
        self._require(pool, *self.plan)

    def decide(self, state: RoutingState) -> Decision:
        i = len(state.steps)
        m = self.plan[min(i, len(self.plan) - 1)]
        return Decision(m, one_hot(state.pool.names, m), f"plan step {i + 1}", forced=i >= len(self.plan))


def leaf_trajectories(tree: RoutingTree, queries: Sequence[Query] | None = None, *, pool: ModelPool | None = None,
                      concurrency: int = 16) -> list[Trajectory]:
    """Every routing a router can take inside ``tree`` (each model choice of the first
    ``depth + 1`` steps, then the last model), run on its replay pool: zero model calls, the
    recorded steps, usage and costs. Trajectory ids are content-derived (query id and plan), so
    the same tree always gives the same ids; the router name is the plan (``plan:A>B``)."""
    import itertools

    from ..runtime import StepwiseRuntime

    qs = list(tree.queries if queries is None else queries)
    replay = pool or tree.pool()
    rec = tree.manifest.recording
    out: list[Trajectory] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for plan in itertools.product(replay.names, repeat=tree.free_steps):
        runtime = StepwiseRuntime(replay, RoutingPlan(plan), max_steps=rec.max_steps, stop_on_repeat=rec.stop_on_repeat)
        for t in runtime.run_many(qs, concurrency=concurrency):
            routing = tuple(s.model for s in t.steps)
            # a failed branch (not in the tree, or an empty step) is no routing; a run that ended
            # before the plan did is the same routing as another plan's
            if t.stop_reason == "error" or (t.query.id, routing) in seen:
                continue
            seen.add((t.query.id, routing))
            t.id = hashlib.sha1(f"{t.query.id}\x1f{'>'.join(routing)}".encode()).hexdigest()[:16]
            out.append(t)
    return out


def tree_step_verifier(tree: RoutingTree, queries: Sequence[Query] | None = None, *,
                       pool: ModelPool | None = None) -> TreeStepVerifier:
    """:class:`TreeStepVerifier` over ``tree``'s queries (default: all), its cheapest model the pool's."""
    p = pool or tree.manifest.make_pool()
    return TreeStepVerifier(tree.query_trees(queries, pool=p), p.small)


def tree_criterion_labeler(tree: RoutingTree, queries: Sequence[Query] | None = None, *, pool: ModelPool | None = None):
    """Exact labels of the library criteria a routing tree decides ("every hard step is written by
    the large model", "easy steps ... small model", "no mistake is left uncorrected", "reaches a
    final answer"), for the calibration term of the Judge phase (``roro train-judge --labeler
    tree:PATH``): per-criterion supervision where the pairs give one comparison each. Training
    trees only, as :func:`tree_judge`."""
    from ..pairs import criterion_labeler

    verifier = tree_step_verifier(tree, queries, pool=pool)
    return criterion_labeler(verifier, cheapest=verifier.cheapest)


def tree_judge(tree: RoutingTree, queries: Sequence[Query] | None = None, *, pool: ModelPool | None = None):
    """A process Judge from a routing tree's exact step labels (``judge: tree:PATH`` in a GRPO
    config): a trajectory's score is the share of its labelled routing decisions that were right
    (:func:`~roro_sdk.pairs.routing_process_score` with :class:`TreeStepVerifier`); a step's score is
    1 when routed right, 0 when wrong. Where the tree labels no decision of a trajectory (nothing
    reachable, or a query outside the tree) the score is a neutral 0.5, the same for every rollout
    of that query, so it moves no advantage. It knows what a trained Judge can only estimate: use
    it on training trees, as the exact upper bound of the process reward, never on held-out ones."""
    from ..judge import FunctionJudge
    from ..pairs import routing_process_score

    verifier = tree_step_verifier(tree, queries, pool=pool)

    def score(query: Query, rubric: object, traj: Trajectory) -> float:
        s = routing_process_score(traj, verifier, cheapest=verifier.cheapest)
        return 0.5 if s is None else s

    def step(s, traj: Trajectory) -> float:
        label = verifier(traj, s.index)
        if label is None or label.hard is None:
            return 0.5
        return float((s.model != verifier.cheapest) == label.hard)

    return FunctionJudge(score_fn=score, step_fn=step, name=f"tree-labels:{tree.folder.name}")
