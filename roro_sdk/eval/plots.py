"""Accuracy-cost pictures of an evaluation (PNG). Needs the optional ``plot`` extra (matplotlib).

One figure, two panels: accuracy against dollars per query, and accuracy against the share of
steps the large model wrote (RouteLLM's axis). Each router is a point, each sweep a curve, with
95% intervals; the random baseline is dashed, the per-query oracle is a star (and, on the cost
panel, the best accuracy any mix of the observed runs reaches at each budget), and the Pareto
frontier of the observed points is the thick pale line underneath.

Uses matplotlib's object API with the Agg canvas: no pyplot, no global backend change, so it is
safe in servers, notebooks and threads.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .results import CurvePoint, EvalResults, RunResult


def _mpl():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("plots need matplotlib: pip install 'roro-sdk[plot]' (or pass plots=False / --no-plots)") from None
    return Figure, FigureCanvasAgg


def _ci(r: RunResult) -> tuple[float, float]:
    """The accuracy interval, zero-width when no answer was checked (no interval to draw)."""
    lo, hi = r.accuracy_ci
    return (r.accuracy if lo is None else lo, r.accuracy if hi is None else hi)


def plot_tradeoff(results: EvalResults, path: str | Path, *, title: str | None = None, dpi: int = 130) -> Path:
    """Draw the trade-off figure of ``results`` into ``path`` (PNG) and return the path."""
    Figure, Canvas = _mpl()
    a = results.analysis
    fig = Figure(figsize=(12.5, 5.2), layout="constrained")
    Canvas(fig)
    ax_cost, ax_share = fig.subplots(1, 2)
    ci = {r.label: _ci(r) for r in results.runs}
    palette = [f"C{i}" for i in range(10) if i not in (3, 7)]  # C3 (red): the oracle's; C7 (grey): the random baseline's

    def err(points: list[CurvePoint]):
        lo = [max(0.0, p.accuracy - ci.get(p.label, (p.accuracy, p.accuracy))[0]) for p in points]
        hi = [max(0.0, ci.get(p.label, (p.accuracy, p.accuracy))[1] - p.accuracy) for p in points]
        return [lo, hi]

    for ax, xkey in ((ax_cost, "mean_cost_usd"), (ax_share, "large_step_share")):
        if a.frontier and xkey == "mean_cost_usd":
            xs = [p.mean_cost_usd for p in a.frontier]
            ys = [p.accuracy for p in a.frontier]
            ax.plot(xs, ys, drawstyle="steps-post", color="#f2b134", lw=7, alpha=0.35, zorder=1, label="Pareto frontier")
        if a.random_curve is not None:
            pts = sorted(a.random_curve.points, key=lambda p: getattr(p, xkey))
            ax.plot([getattr(p, xkey) for p in pts], [p.accuracy for p in pts], ls="--", marker=".", color="C7", zorder=2,
                    label=a.random_curve.family)
        for i, cur in enumerate(a.curves):
            pts = sorted(cur.points, key=lambda p: getattr(p, xkey))
            color = palette[i % len(palette)]
            xs, ys = [getattr(p, xkey) for p in pts], [p.accuracy for p in pts]
            if len(pts) > 1:
                ax.plot(xs, ys, color=color, marker="o", ms=4, lw=1.5, zorder=3, label=cur.family)
                ax.errorbar(xs, ys, yerr=err(pts), fmt="none", ecolor=color, alpha=0.35, capsize=2, zorder=3)
            else:
                ax.errorbar(xs, ys, yerr=err(pts), fmt="D", color=color, ms=6, capsize=3, zorder=4, label=cur.family)
        for label, marker in ((a.small_label, "s"), (a.large_label, "^")):
            if label is None:
                continue
            r = results.run(label)
            x = r.mean_cost_usd if xkey == "mean_cost_usd" else r.large_step_share
            lo, hi = _ci(r)
            ax.errorbar([x], [r.accuracy], yerr=[[r.accuracy - lo], [hi - r.accuracy]], fmt=marker,
                        color="black", ms=7, capsize=3, zorder=5, label=label)
            if xkey == "large_step_share":
                ax.axhline(r.accuracy, color="black", lw=0.6, ls=":", zorder=0)
        if a.oracle is not None:
            x = a.oracle.mean_cost_usd if xkey == "mean_cost_usd" else a.oracle.large_step_share
            if xkey == "mean_cost_usd" and len(a.oracle.curve) > 1:
                ax.plot([c for c, _ in a.oracle.curve], [y for _, y in a.oracle.curve], color="C3", lw=0.8, ls=":", zorder=2)
            ax.plot([x], [a.oracle.accuracy], marker="*", ms=13, color="C3", ls="none", zorder=6, label="per-query oracle")
        if a.best_possible is not None and xkey == "mean_cost_usd" and a.best_possible.curve:
            bc = list(a.best_possible.curve)
            right = max([r.mean_cost_usd for r in results.runs] + [bc[-1][0]])
            bc.append((right, bc[-1][1]))  # spending more buys nothing over the best: flat to the right
            ax.plot([c for c, _ in bc], [y for _, y in bc], color="black", lw=1.4, zorder=3, drawstyle="default",
                    label="best possible (tree)")
        ax.grid(alpha=0.3)
        ax.set_ylabel("accuracy")
    ax_cost.set_xlabel("mean cost per query (US$)")
    ax_share.set_xlabel("share of steps written by the large model")
    ax_share.set_xlim(-0.03, 1.03)
    ax_cost.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    handles, labels = ax_cost.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
    fig.suptitle(title or f"{results.dataset}: {results.n_queries} queries, pool {results.pool['small']} / {results.pool['large']}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    return out
