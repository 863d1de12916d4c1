"""Reward composition for router training.

Default (DESIGN.md section 1): ``r = r_outcome + lambda_p * judge_score * gate - lambda_c * cost_norm``

- ``r_outcome`` is 1 for a correct answer, 0 otherwise;
- ``judge_score`` is the Judge's rubric-guided process score in [0, 1];
- ``gate`` is 1 when the answer is correct (with ``gate=True``), so a good-looking process cannot
  rescue a wrong answer; with ``gate=False`` the process term always counts;
- ``cost_norm`` is the trajectory's dollar cost divided by the largest cost in its group (the G
  rollouts of one query), so it lies in [0, 1] whatever the prices and query length.

``lambda_p = 0`` is the outcome-only ablation. What GRPO makes of the rewards (group-normalised
advantages, step-level process advantages) is part of the trainer, :mod:`roro_sdk.train.grpo`.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from .types import Trajectory


class RewardWeights(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lambda_p: float = Field(0.5, ge=0.0, description="weight of the Judge's process score; 0 = outcome-only")
    lambda_c: float = Field(0.3, ge=0.0, description="weight of the group-normalised cost")
    gate: bool = Field(True, description="count the process score only for correct answers")


class RewardParts(BaseModel):
    outcome: float
    process: float
    cost_norm: float
    total: float


def group_rewards(trajs: Sequence[Trajectory], process_scores: Sequence[float | None], w: RewardWeights) -> list[RewardParts]:
    """Rewards of the G rollouts of one query (cost is normalised within the group)."""
    costs = [t.cost_usd for t in trajs]
    top = max(costs) if costs else 0.0
    out = []
    for t, p, c in zip(trajs, process_scores, costs):
        outcome = 1.0 if t.correct else 0.0
        process = 0.0 if p is None else float(p)
        gate = outcome if w.gate else 1.0
        cost_norm = c / top if top > 0 else 0.0
        out.append(RewardParts(outcome=outcome, process=process, cost_norm=cost_norm,
                               total=outcome + w.lambda_p * process * gate - w.lambda_c * cost_norm))
    return out


# Moved next to the GRPO loop (roro_sdk.train.grpo); kept importable from here for one release.
_MOVED_TO_GRPO = ("group_advantages", "step_advantages")


def __getattr__(name: str):
    if name in _MOVED_TO_GRPO:
        import importlib
        import warnings

        warnings.warn(f"roro_sdk.rewards.{name} moved to roro_sdk.train.grpo.{name}; import it from there",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("roro_sdk.train.grpo"), name)
    raise AttributeError(f"module 'roro_sdk.rewards' has no attribute {name!r}")
