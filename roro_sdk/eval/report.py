"""Reports of an evaluation: ``results.json`` (the data), ``report.md`` (for people), ``tradeoff.png``.

``write_report(results, dir)`` writes all three; ``rebuild_report(dir)`` re-analyses the saved
runs and rewrites the Markdown and the plot (``roro report DIR``), so a report can be refreshed
after a metric or a plot changes without calling any model.
"""

from __future__ import annotations

from pathlib import Path

from .._files import output_dir
from .analysis import analyze, with_gain_shares
from .results import CurveResult, EvalResults

RESULTS, MARKDOWN, FIGURE = "results.json", "report.md", "tradeoff.png"


def pct(x: float | None) -> str:
    """A share as a percentage, or a dash when unknown."""
    return "–" if x is None else f"{x:.1%}"


def _usd(x: float | None) -> str:
    return "–" if x is None else f"${x:.3g}"


def accuracy_text(accuracy: float, n_checked: int, ci: tuple[float | None, float | None] | None = None) -> str:
    """``62.5% [40.0%, 80.0%]``, or ``n/a`` when no answer was checked (0.0% would read as all wrong)."""
    if not n_checked:
        return "n/a (no answers to check)"
    return f"{accuracy:.1%}" + ("" if ci is None else f" [{pct(ci[0])}, {pct(ci[1])}]")


def cost_text(usd: float, priced: bool, fmt: str = ".6f") -> str:
    """A dollar figure, flagged when an unpriced model counted as $0 in it (it is then a lower bound)."""
    return format(usd, fmt) + ("" if priced else " (unpriced)")


def num(x: float | None, fmt: str = ".3f") -> str:
    """A number in ``fmt``, or a dash when unknown."""
    return "–" if x is None else format(x, fmt)


def _table(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return out


def _curve_rows(curves: list[CurveResult]) -> list[list[str]]:
    rows = [["curve", "points", "AUC", "APGR", "CPT(20%)", "CPT(50%)", "CPT(80%)", "APGR (cost)", "CPT(50%) $/query", "CPT(80%) $/query"]]
    for c in curves:
        share, cost, usd = c.share or {}, c.cost or {}, c.cpt_usd or {}
        cpt = share.get("cpt", {})
        rows.append([c.family, str(len(c.points)), num(share.get("auc")), num(share.get("apgr")),
                     pct(cpt.get("20%")), pct(cpt.get("50%")), pct(cpt.get("80%")), num(cost.get("apgr")),
                     _usd(usd.get("50%")), _usd(usd.get("80%"))])
    return rows


def render_markdown(results: EvalResults, *, figure: str | None = FIGURE) -> str:
    """The Markdown report of ``results`` (``figure``: relative path of the PNG, or None)."""
    a, r0 = results.analysis, results
    lines = [f"# Router evaluation: {r0.dataset}", ""]
    lines.append(f"{r0.n_queries} queries · created {r0.created} · roro-sdk {r0.roro_version} · "
                 f"{r0.settings.get('ci_level', 0.95):.0%} bootstrap intervals over queries ({r0.settings.get('bootstrap')} resamples)")
    lines += ["", "Pool (prices in US$ per 1M tokens):", ""]
    lines += _table([["model", "LiteLLM model", "mode", "input", "output"]] + [
        [m["name"] + (" (small)" if m["name"] == r0.pool["small"] else " (large)" if m["name"] == r0.pool["large"] else ""),
         f"`{m['model']}`", m["mode"], num(m["input_price_per_m"], "g"), num(m["output_price_per_m"], "g")]
        for m in r0.pool["models"]])
    if figure:
        lines += ["", f"![accuracy against cost]({figure})"]
    lines += ["", "## Routers", ""]
    rows = [["router", "accuracy [95% CI]", "$/query [95% CI]", "total $", "large steps", "large tokens", "steps/q",
             "output tokens by model", "latency p50/p95 s", "errors", "cache hits"]]
    for r in r0.runs:
        if r.role == "random":
            continue
        toks = ", ".join(f"{k} {v}" for k, v in sorted(r.tokens_by_model.items()))
        hits = "–" if r.cache is None else f"{int(r.cache.get('hits', 0))}/{int(r.cache.get('hits', 0) + r.cache.get('misses', 0))}"
        rows.append([r.label + (" (sweep)" if r.role == "sweep" else ""),
                     accuracy_text(r.accuracy, r.n_checked, r.accuracy_ci),
                     f"{_usd(r.mean_cost_usd)} [{_usd(r.mean_cost_ci[0])}, {_usd(r.mean_cost_ci[1])}]",
                     _usd(r.total_cost_usd) + ("" if r.priced else " (UNPRICED)"), pct(r.large_step_share),
                     pct(r.large_token_share), f"{r.mean_steps:.1f}", toks, f"{r.latency_p50_s:.3g}/{r.latency_p95_s:.3g}",
                     str(r.errors), hits])
    lines += _table(rows)
    curves = a.curves + ([a.random_curve] if a.random_curve else [])
    if curves and a.small_accuracy is not None:
        lines += ["", "## Trade-off metrics (RouteLLM)", "",
                  f"Between all-small ({pct(a.small_accuracy)}, {_usd(a.small_cost_usd)}/query) and all-large "
                  f"({pct(a.large_accuracy)}, {_usd(a.large_cost_usd)}/query). x = share of steps written by the large "
                  "model; CPT(p) is the share needed to recover p of the accuracy gap; the cost columns use x = cost "
                  "normalised between the two (CPT given back in $/query). Curves are anchored at both ends; a single "
                  "router is the curve through it. Higher AUC/APGR, lower CPT is better.", ""]
        lines += _table(_curve_rows(curves))
    if a.random_curve is not None:
        lines += ["", "Random baseline, each point the mean of its seeds:", ""]
        lines += _table([["p(large)", "accuracy", "$/query", "large steps"]] + [
            [f"{p.knob:g}", pct(p.accuracy), _usd(p.mean_cost_usd), pct(p.large_step_share)] for p in a.random_curve.points])
    if a.oracle is not None:
        o = a.oracle
        lines += ["", "## Ceiling and frontier", "",
                  f"Per-query oracle (for each query, the cheapest observed run that was correct): **{pct(o.accuracy)}** at "
                  f"{_usd(o.mean_cost_usd)}/query, {pct(o.large_step_share)} large steps."]
    if a.best_possible is not None:
        b = a.best_possible
        lines += ["", "## Best possible (exact, over the recorded routing tree)", "",
                  f"Tree `{b.tree}` (branching depth {b.depth}): every query on its cheapest correct recorded routing gives "
                  f"**{pct(b.accuracy)}** at {_usd(b.mean_cost_usd)}/query; the black line of the plot is the best "
                  "achievable accuracy at each cost. Share of the achievable gain = (accuracy - all-small's) / (best "
                  "accuracy at the same cost - all-small's).", ""]
        lines += _table([["router", "accuracy", "$/query", "best possible at that cost", "share of achievable gain"]] + [
            [r.label, pct(r.accuracy), _usd(r.mean_cost_usd), pct(_best_at(b, r.mean_cost_usd)), pct(b.gain_share.get(r.label))]
            for r in r0.runs if r.role != "random"])
    if a.frontier:
        lines += ["", "Pareto frontier of the observed points (no other point is both cheaper and more accurate):", ""]
        lines += [f"- {p.label}: {pct(p.accuracy)} at {_usd(p.mean_cost_usd)}/query" for p in a.frontier]
    cached = [r for r in r0.runs if r.cache and r.cache.get("hits")]
    if cached:
        hits = sum(int(r.cache["hits"]) for r in cached)  # type: ignore[index]
        saved = sum(r.cache["saved_cost_usd"] for r in cached)  # type: ignore[index]
        lines += ["", f"Generation cache: {hits} calls answered from the cache instead of the models, saving {_usd(saved)}; "
                      "the costs above are what the calls would cost without it."]
    if a.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in a.notes]
    lines += ["", "How to read this report: docs/evaluation.md. Rebuild it from the saved runs with `roro report <dir>`.", ""]
    return "\n".join(lines)


def _best_at(b, cost: float) -> float | None:
    from ..tree import FrontierPoint, best_at_cost

    return best_at_cost([FrontierPoint(c, a) for c, a in b.curve], cost)


def write_report(results: EvalResults, out_dir: str | Path, *, plots: bool = True, title: str | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``report.md`` and (``plots``) ``tradeoff.png`` into ``out_dir``."""
    out = output_dir(out_dir, what="report folder")
    paths = {"results": results.save(out / RESULTS)}
    if plots:
        from .plots import plot_tradeoff

        paths["figure"] = plot_tradeoff(results, out / FIGURE, title=title)
    md = out / MARKDOWN
    md.write_text(render_markdown(results, figure=FIGURE if plots else None), encoding="utf-8")
    paths["markdown"] = md
    return paths


def rebuild_report(out_dir: str | Path, *, plots: bool = True, title: str | None = None) -> dict[str, Path]:
    """Re-analyse the runs saved in ``out_dir/results.json`` and rewrite the report."""
    res = EvalResults.load(out_dir)
    bp = res.analysis.best_possible  # computed from the tree when the runs were made; kept, shares recomputed
    res.analysis = analyze(res.runs)
    if bp is not None:
        res.analysis.best_possible = with_gain_shares(bp, res.runs, res.analysis.small_accuracy)
    return write_report(res, Path(out_dir) if Path(out_dir).is_dir() else Path(out_dir).parent, plots=plots, title=title)
