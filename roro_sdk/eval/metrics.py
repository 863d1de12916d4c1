"""Accuracy-cost trade-off metrics, as RouteLLM defines them, plus bootstrap intervals and frontiers.

Definitions (RouteLLM: Ong et al., "RouteLLM: Learning to Route LLMs with Preference Data",
arXiv 2406.18665, section 4; reference code ``routellm/evals/evaluate.py`` of lm-sys/RouteLLM).
A router swept over its knob gives a curve of points ``(x, accuracy)`` where ``x`` is the share
of calls to the strong (large) model in [0, 1]; ``weak`` and ``strong`` are the accuracies of
all-weak and all-strong routing.

- ``AUC``: the area under that curve, by the trapezoid rule over ``x`` (``np.trapz(acc, pct/100)``).
- ``APGR`` (average performance gap recovered): ``(AUC - weak_auc) / (strong_auc - weak_auc)``,
  where ``weak_auc``/``strong_auc`` are the areas of the constant weak/strong accuracy over the
  same ``x`` range -- the mean, over ``x``, of PGR = (acc - weak) / (strong - weak).
- ``CPT(p)`` (call-performance threshold): the smallest ``x`` at which the curve reaches
  ``weak + p * (strong - weak)``, by linear interpolation between points (RouteLLM:
  ``np.interp(target, accuracies, strong_pcts)``, which equals this on a monotone curve; on a
  non-monotone curve ``np.interp`` is undefined and the first crossing is what the words mean).

Ours, and why: RouteLLM's threshold sweeps always include the all-weak (x=0) and all-strong
(x=1) ends. Step-level sweeps (a confidence threshold) may not reach them, so by default
:func:`trade_off` anchors the curve at ``(0, weak)`` and ``(1, strong)`` -- a router is credited
with at least mixing the two extremes -- and integrates over exactly [0, 1]. The same metrics
are computed with ``x`` = cost normalised between all-small (0) and all-large (1) cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError

Point = tuple[float, float]


def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0,
                 stat: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (or ``stat`` applied row-wise) of ``values``.

    Resamples the queries with replacement ``n_boot`` times (seeded, so reports are repeatable)
    and returns the ``(1-level)/2`` and ``(1+level)/2`` quantiles. Empty input gives (nan, nan);
    one value gives a zero-width interval.
    """
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be within (0, 1), got {level}")
    if n_boot < 1:
        raise ConfigError(f"n_boot must be positive, got {n_boot}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    samples = x[idx]
    stats = samples.mean(axis=1) if stat is None else stat(samples)
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def _sorted(points: Sequence[Point]) -> list[Point]:
    pts = [(float(x), float(y)) for x, y in points if not (math.isnan(x) or math.isnan(y))]
    if not pts:
        raise ConfigError("a trade-off curve needs at least one point")
    return sorted(pts)


def auc(points: Sequence[Point]) -> float:
    """Trapezoid area under ``(x, accuracy)`` points, sorted by ``x`` (RouteLLM's AUC)."""
    pts = _sorted(points)
    return float(sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in zip(pts, pts[1:])))


def apgr(points: Sequence[Point], weak: float, strong: float) -> float | None:
    """RouteLLM's APGR of a curve; None when ``strong == weak`` or the curve has no width."""
    pts = _sorted(points)
    span = pts[-1][0] - pts[0][0]
    if span <= 0 or strong == weak:
        return None
    return (auc(pts) - weak * span) / ((strong - weak) * span)


def cpt(points: Sequence[Point], weak: float, strong: float, fraction: float) -> float | None:
    """RouteLLM's CPT: the smallest ``x`` where the curve reaches ``weak + fraction*(strong-weak)``.

    None when the curve never reaches it or there is no gap (``strong <= weak``).
    """
    if strong <= weak:
        return None
    target = weak + fraction * (strong - weak)
    pts = _sorted(points)
    if pts[0][1] >= target - 1e-12:
        return pts[0][0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if y1 >= target - 1e-12 and y1 > y0:
            return x0 + (target - y0) / (y1 - y0) * (x1 - x0)
    return None


def anchored_curve(points: Sequence[Point], weak: float, strong: float, lo: float = 0.0, hi: float = 1.0) -> list[Point]:
    """The curve through ``(lo, weak)``, the points within [lo, hi], and ``(hi, strong)``.

    Points outside [lo, hi] (on the cost axis: a router cheaper than all-small or dearer than
    all-large) are left out of the area: within the all-large budget they add nothing the anchor
    does not, and the plot still shows them.
    """
    pts = [(lo, weak)] + [(float(x), float(y)) for x, y in points if lo <= x <= hi] + [(hi, strong)]
    return sorted(set(pts))


@dataclass
class TradeOff:
    """Trade-off metrics of one curve on one axis (``cpt`` maps 0.2/0.5/0.8 to an x or None)."""

    auc: float
    apgr: float | None
    cpt: dict[str, float | None]

    def as_dict(self) -> dict[str, object]:
        return {"auc": self.auc, "apgr": self.apgr, "cpt": self.cpt}


def trade_off(points: Sequence[Point], weak: float, strong: float, *, anchor: bool = True,
              fractions: Sequence[float] = (0.2, 0.5, 0.8)) -> TradeOff:
    """AUC, APGR and CPT of a curve (anchored at the extremes by default; see module docstring)."""
    pts = anchored_curve(points, weak, strong) if anchor else _sorted(points)
    return TradeOff(auc=auc(pts), apgr=apgr(pts, weak, strong),
                    cpt={f"{int(round(f * 100))}%": cpt(pts, weak, strong, f) for f in fractions})


def pareto_frontier(points: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The points ``(cost, accuracy, label)`` that no other point beats on both (cheaper or equal
    cost and higher accuracy), sorted by cost. Equal points keep the first label."""
    out: list[tuple[float, float, str]] = []
    best = -math.inf
    for c, a, label in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best + 1e-12:
            out.append((c, a, label))
            best = a
    return out


def oracle_curve(options: Sequence[Sequence[tuple[float, bool]]]) -> list[Point]:
    """The per-query oracle's accuracy-cost curve: ``(mean cost, accuracy)`` points.

    ``options[q]`` lists ``(cost, correct)`` of every run of query ``q``. The oracle starts from
    the cheapest run of every query and upgrades queries to their cheapest *correct* run in order
    of extra cost; taking the cheapest upgrades first is optimal for any budget (each upgrade is
    worth exactly one correct answer), so every point is the best accuracy any mix of the
    observed runs reaches at that cost. The last point is the oracle's ceiling.
    """
    if not options:
        return []
    base_cost, base_correct, upgrades = 0.0, 0, []
    for opts in options:
        if not opts:
            raise ConfigError("every query needs at least one run for the oracle")
        cheapest = min(opts, key=lambda o: (o[0], not o[1]))
        base_cost += cheapest[0]
        if cheapest[1]:
            base_correct += 1
            continue
        good = [c for c, ok in opts if ok]
        if good:
            upgrades.append(min(good) - cheapest[0])
    n = len(options)
    pts = [(base_cost / n, base_correct / n)]
    cost, correct = base_cost, base_correct
    for d in sorted(upgrades):
        cost, correct = cost + d, correct + 1
        pts.append((cost / n, correct / n))
    return pts
