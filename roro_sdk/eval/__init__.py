"""Evaluating routers: summaries, accuracy-cost trade-offs (RouteLLM's AUC, APGR, CPT), reports.

    from roro_sdk.eval import evaluate, write_report
    res = evaluate(pool, queries, ["all-small", "all-large", "steer:0.8"], sweeps=["trim:0.2..0.9/8"], random_seeds=3)
    write_report(res, "reports/mine")   # results.json, report.md, tradeoff.png

See docs/evaluation.md.
"""

from .analysis import analyze
from .compare import Sweep, aevaluate, evaluate, parse_values, run_result
from .metrics import TradeOff, anchored_curve, apgr, auc, bootstrap_ci, cpt, oracle_curve, pareto_frontier, trade_off
from .report import rebuild_report, render_markdown, write_report
from .results import SCHEMA, Analysis, CurvePoint, CurveResult, EvalResults, OracleResult, QueryRecord, RunResult
from .summary import RouterSummary, summarize

# The API. analyze, run_result, render_markdown and SCHEMA are the harness's own parts: still
# importable from here (their old path), not API.
__all__ = [
    "RouterSummary",
    "summarize",
    "evaluate",
    "aevaluate",
    "Sweep",
    "parse_values",
    "write_report",
    "rebuild_report",
    "bootstrap_ci",
    "auc",
    "apgr",
    "cpt",
    "trade_off",
    "TradeOff",
    "anchored_curve",
    "pareto_frontier",
    "oracle_curve",
    "EvalResults",
    "RunResult",
    "QueryRecord",
    "CurvePoint",
    "CurveResult",
    "OracleResult",
    "Analysis",
]
