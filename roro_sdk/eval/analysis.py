"""From runs to trade-offs: curves with RouteLLM's metrics, the random baseline, the frontier, the oracle.

Pure functions of the saved runs, so ``roro report`` can rebuild them without calling a model.
The all-small and all-large runs are the two ends every metric is measured between.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from .metrics import oracle_curve, pareto_frontier, trade_off
from .results import Analysis, BestPossible, CurvePoint, CurveResult, OracleResult, RunResult

SMALL, LARGE = "all-small", "all-large"


def _ref(runs: Sequence[RunResult], name: str) -> RunResult | None:
    return next((r for r in runs if r.family == name and r.role in ("reference", "router")), None)


def _point(r: RunResult, cost_x, label: str | None = None) -> CurvePoint:
    return CurvePoint(label=label or r.label, knob=r.knob, accuracy=r.accuracy, mean_cost_usd=r.mean_cost_usd,
                      large_step_share=r.large_step_share, cost_x=cost_x(r.mean_cost_usd))


def _curve(family: str, role, points: list[CurvePoint], weak, strong, c_small, c_large) -> CurveResult:
    cur = CurveResult(family=family, role=role, points=sorted(points, key=lambda p: (p.knob is None, p.knob, p.mean_cost_usd)))
    if weak is None or strong is None:
        return cur
    cur.share = trade_off([(p.large_step_share, p.accuracy) for p in points], weak, strong).as_dict()
    if all(p.cost_x is not None for p in points):
        cur.cost = trade_off([(p.cost_x, p.accuracy) for p in points], weak, strong).as_dict()  # type: ignore[misc]
        cur.cpt_usd = {k: None if v is None else c_small + v * (c_large - c_small) for k, v in cur.cost["cpt"].items()}
    return cur


def analyze(runs: Sequence[RunResult]) -> Analysis:
    """The :class:`Analysis` of a set of runs (see the module docstring)."""
    small, large = _ref(runs, SMALL), _ref(runs, LARGE)
    out = Analysis()
    weak = strong = c_small = c_large = None
    if small is not None and large is not None:
        weak, strong = small.accuracy, large.accuracy
        c_small, c_large = small.mean_cost_usd, large.mean_cost_usd
        out.small_label, out.large_label = small.label, large.label
        out.small_accuracy, out.large_accuracy = weak, strong
        out.small_cost_usd, out.large_cost_usd = c_small, c_large
        if strong <= weak:
            out.notes.append(f"all-large ({strong:.1%}) is not more accurate than all-small ({weak:.1%}): "
                             "APGR and CPT measure recovery of a gap that does not exist here, so they are left empty.")
        if c_large <= c_small:
            out.notes.append("all-large costs no more than all-small: the cost axis is not normalised.")
    else:
        out.notes.append("run the all-small and all-large routers to get AUC, APGR and CPT (they define the ends of the curve).")

    def cost_x(c: float) -> float | None:
        if c_small is None or c_large is None or c_large <= c_small:
            return None
        return (c - c_small) / (c_large - c_small)

    families: dict[str, list[RunResult]] = defaultdict(list)
    for r in runs:
        if r.role != "random" and r.family not in (SMALL, LARGE):
            families[r.family].append(r)
    for fam, members in families.items():
        out.curves.append(_curve(fam, members[0].role, [_point(r, cost_x) for r in members], weak, strong, c_small, c_large))

    by_p: dict[float, list[RunResult]] = defaultdict(list)
    for r in runs:
        if r.role == "random" and r.knob is not None:
            by_p[r.knob].append(r)
    if by_p:
        pts = []
        for p, rs in sorted(by_p.items()):
            k = len(rs)
            mean_cost = sum(r.mean_cost_usd for r in rs) / k
            pts.append(CurvePoint(label=f"random:{p:g} (mean of {k})", knob=p, accuracy=sum(r.accuracy for r in rs) / k,
                                  mean_cost_usd=mean_cost, large_step_share=sum(r.large_step_share for r in rs) / k,
                                  cost_x=cost_x(mean_cost)))
        seeds = max(len(rs) for rs in by_p.values())
        out.random_curve = _curve(f"random (mean of {seeds} seeds)", "random", pts, weak, strong, c_small, c_large)

    plotted = [_point(r, cost_x) for r in runs if r.role != "random"]
    plotted += out.random_curve.points if out.random_curve else []
    front = pareto_frontier([(p.mean_cost_usd, p.accuracy, p.label) for p in plotted])
    index = {p.label: p for p in plotted}
    out.frontier = [index[label] for _, _, label in front]
    out.oracle = _oracle(runs)
    if runs and all(r.n_checked == 0 for r in runs):
        out.notes.append("no query has a reference answer: accuracy is n/a, so the curves, AUC, APGR, CPT and the "
                         "oracle compare nothing; give a dataset with answers.")
    if any(not r.priced for r in runs):
        out.notes.append("some models are UNPRICED: their calls count as $0, so costs are lower bounds.")
    return out


def _oracle(runs: Sequence[RunResult]) -> OracleResult | None:
    per_query: dict[str, list[tuple[float, bool, int, int]]] = defaultdict(list)
    for r in runs:
        for q in r.queries:
            per_query[q.id].append((q.cost_usd, bool(q.correct), q.large_steps, q.steps))
    if not per_query:
        return None
    chosen = []
    for opts in per_query.values():
        good = [o for o in opts if o[1]]
        chosen.append(min(good or opts, key=lambda o: o[0]))
    curve = oracle_curve([[(c, ok) for c, ok, _, _ in opts] for opts in per_query.values()])
    steps = sum(o[3] for o in chosen)
    return OracleResult(accuracy=curve[-1][1], mean_cost_usd=curve[-1][0],
                        large_step_share=sum(o[2] for o in chosen) / steps if steps else 0.0, curve=curve)


def best_possible(tree, queries, pool, runs: Sequence[RunResult], small_accuracy: float | None, *,
                  max_steps: int | None = None) -> BestPossible:
    """The exact best routing inside ``tree`` (a :class:`~roro_sdk.tree.RoutingTree`) for
    ``queries``, priced by ``pool``, with runs cut at ``max_steps`` as the routers' were, and
    each run's share of the gain achievable at its cost."""
    from ..tree import best_frontier

    trees = tree.query_trees(queries, pool=pool, max_steps=max_steps)
    pts = best_frontier(trees)
    top = pts[-1] if pts else None
    bp = BestPossible(tree=str(tree.folder), depth=tree.manifest.recording.depth,
                      accuracy=top.accuracy if top else 0.0, mean_cost_usd=top.mean_cost_usd if top else 0.0,
                      curve=[(p.mean_cost_usd, p.accuracy) for p in pts])
    return with_gain_shares(bp, runs, small_accuracy)


def with_gain_shares(bp: BestPossible, runs: Sequence[RunResult], small_accuracy: float | None) -> BestPossible:
    from ..tree import FrontierPoint, gain_share

    if small_accuracy is None:
        return bp
    pts = [FrontierPoint(c, a) for c, a in bp.curve]
    shares = {r.label: gain_share(r.accuracy, r.mean_cost_usd, small_accuracy, pts) for r in runs if r.n_checked}
    return bp.model_copy(update={"gain_share": shares})
