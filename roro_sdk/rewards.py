"""Reward composition for router training.

Default (DESIGN.md section 1): ``r = r_outcome + lambda_p * judge_score * gate - lambda_c * cost_norm``

- ``r_outcome`` is 1 for a correct answer, 0 otherwise;
- ``judge_score`` is the Judge's rubric-guided process score in [0, 1];
- ``gate`` is 1 when the answer is correct (with ``gate=True``), so a good-looking process cannot
  rescue a wrong answer; with ``gate=False`` the process term always counts;
- ``cost_norm`` is the trajectory's dollar cost divided by the largest cost in its group (the G
  rollouts of one query), so it lies in [0, 1] whatever the prices and query length.

``lambda_p = 0`` is the outcome-only ablation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from .types import Trajectory

__all__ = ["RewardWeights", "RewardParts", "group_rewards", "group_advantages", "step_advantages"]


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


def group_advantages(rewards: Sequence[float], eps: float = 1e-6) -> list[float]:
    """GRPO's advantage: ``(r - mean_G) / std_G`` (all zeros when the group's rewards are equal)."""
    n = len(rewards)
    mean = sum(rewards) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / n)
    if std < eps:
        return [0.0] * n
    return [(r - mean) / (std + eps) for r in rewards]


def step_advantages(traj_adv: Sequence[float], step_scores: Sequence[Sequence[float] | None], weight: float) -> list[list[float] | float]:
    """Optional step-level process advantages: each decision gets its trajectory's advantage plus
    ``weight`` x its step score normalised over all the steps of the group. Trajectories without
    step scores keep the trajectory-level advantage."""
    flat = [s for ss in step_scores if ss for s in ss]
    if weight == 0.0 or not flat:
        return list(traj_adv)
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((s - mean) ** 2 for s in flat) / len(flat)) or 1.0
    out: list[list[float] | float] = []
    for a, ss in zip(traj_adv, step_scores):
        out.append([a + weight * (s - mean) / std for s in ss] if ss else a)
    return out
