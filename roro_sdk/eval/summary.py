"""Per-router summary of a set of trajectories: accuracy, cost, tokens, large-model share."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from ..types import Trajectory


class RouterSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    router: str
    n: int
    accuracy: float
    n_checked: int
    total_cost_usd: float
    mean_cost_usd: float
    priced: bool
    mean_steps: float
    steps_by_model: dict[str, int]
    tokens_by_model: dict[str, int]
    large_step_share: float
    large_token_share: float
    mean_latency_s: float
    errors: int
    stop_reasons: dict[str, int]


def summarize(trajs: Sequence[Trajectory], *, large: str, router: str | None = None) -> RouterSummary:
    """Summary of trajectories from one router; ``large`` names the expensive model of the pool."""
    n = len(trajs)
    checked = [t for t in trajs if t.correct is not None]
    steps: dict[str, int] = {}
    toks: dict[str, int] = {}
    stops: dict[str, int] = {}
    for t in trajs:
        for k, v in t.steps_by_model().items():
            steps[k] = steps.get(k, 0) + v
        for k, v in t.tokens_by_model().items():
            toks[k] = toks.get(k, 0) + v
        stops[t.stop_reason or "unknown"] = stops.get(t.stop_reason or "unknown", 0) + 1
    total_steps, total_toks = sum(steps.values()), sum(toks.values())
    cost = sum(t.cost_usd for t in trajs)
    return RouterSummary(
        router=router or (trajs[0].router if trajs else ""),
        n=n,
        accuracy=sum(bool(t.correct) for t in checked) / len(checked) if checked else 0.0,
        n_checked=len(checked),
        total_cost_usd=cost,
        mean_cost_usd=cost / n if n else 0.0,
        priced=all(t.usage.priced for t in trajs),
        mean_steps=total_steps / n if n else 0.0,
        steps_by_model=steps,
        tokens_by_model=toks,
        large_step_share=steps.get(large, 0) / total_steps if total_steps else 0.0,
        large_token_share=toks.get(large, 0) / total_toks if total_toks else 0.0,
        mean_latency_s=sum(t.wall_time_s for t in trajs) / n if n else 0.0,
        errors=sum(t.stop_reason == "error" for t in trajs),
        stop_reasons=stops,
    )
