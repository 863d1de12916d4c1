"""Evaluating routers: summaries, accuracy-cost trade-offs, reports."""

from .summary import RouterSummary, summarize

__all__ = ["RouterSummary", "summarize"]
