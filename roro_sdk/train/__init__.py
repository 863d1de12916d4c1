"""``roro_sdk.train``: the training API, in three stages (RoRo), plus the sim bench's training kit.

    from roro_sdk.train import collect, build_pairs, AlternatingTrainer, JudgeTrainingConfig
    from roro_sdk.train import load_grpo_config, train_router

1. data: :func:`collect` routed trajectories from several policies, :func:`build_pairs` turns
   them into preference pairs (``roro collect``, ``roro pairs``);
2. process rewards: :class:`AlternatingTrainer` trains a ``LocalJudge`` and a ``LocalRubricor``
   on the pairs (``roro train-judge``), :func:`load_trained` reads the result back;
3. the router: :func:`train_router` runs GRPO from a :class:`GRPOConfig` (``roro train-router``)
   and :func:`evaluate_router` scores a ``PolicyRouter`` on held-out queries.

The sim bench's helpers (:func:`sim_preference_data`, :func:`tiny_judge_and_rubricor`, ...) build
offline, learnable demos of stages 2 and 3: test-bench material, never for real work.

Importing this package is cheap and torch-free. ``train_router``, ``evaluate_router``,
``GRPOResult`` and ``build_policy`` need the ``train`` extra (torch, transformers, peft): they are
imported on first use and kept out of ``__all__``, like the root's, so ``from roro_sdk.train
import *`` works on the core install. See docs/process-rewards.md and docs/training.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._extras import lazy_names
from ..collect import CollectResult, acollect, collect, trajectory_id
from ..pairs import (
    PairConfig,
    PairSet,
    PairStats,
    PreferencePair,
    ProcessScoringStats,
    build_pairs,
    judge_process_report,
    judge_process_scores,
    read_pairs,
    record_step_verifier,
    routing_process_score,
    write_pairs,
)
from ..rewards import RewardWeights
from ..rubric import DEFAULT_CRITERIA, parse_rubric_text
from ..trajectory_text import render_trajectory
from .grpo_config import GRPOConfig, PolicyConfig, load_grpo_config, pool_and_queries
from .judge_training import AlternatingTrainer, JudgeTrainingConfig, load_trained, pairwise_accuracy
from .sim_bench import (
    SIM_DEMO_DISTRACTORS,
    record_criterion_labeler,
    sim_demo_labeler,
    sim_demo_library,
    sim_escalation_shares,
    sim_preference_data,
    sim_rule_judge,
    tiny_judge_and_rubricor,
    tokenizer_corpus,
)

if TYPE_CHECKING:  # pragma: no cover
    from .grpo import GRPOResult, build_policy, evaluate_router, train_router

# Names whose module needs torch: imported on first use (see the docstring).
_LAZY = {
    "train_router": "roro_sdk.train.grpo",
    "evaluate_router": "roro_sdk.train.grpo",
    "GRPOResult": "roro_sdk.train.grpo",
    "build_policy": "roro_sdk.train.grpo",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    # 1. data: collection and preference pairs
    "collect",
    "acollect",
    "CollectResult",
    "trajectory_id",
    "PreferencePair",
    "PairConfig",
    "PairSet",
    "PairStats",
    "build_pairs",
    "read_pairs",
    "write_pairs",
    "record_step_verifier",
    "routing_process_score",
    "judge_process_scores",
    "judge_process_report",
    "ProcessScoringStats",
    # 2. process rewards: what the Judge and Rubricor read, and their alternating trainer
    "DEFAULT_CRITERIA",
    "parse_rubric_text",
    "render_trajectory",
    "AlternatingTrainer",
    "JudgeTrainingConfig",
    "load_trained",
    "pairwise_accuracy",
    "record_criterion_labeler",
    # 3. the router's GRPO trainer (train_router, evaluate_router, GRPOResult, build_policy: _LAZY)
    "GRPOConfig",
    "PolicyConfig",
    "RewardWeights",
    "load_grpo_config",
    "pool_and_queries",
    # the sim bench's training kit (a test bench)
    "sim_preference_data",
    "sim_demo_library",
    "sim_demo_labeler",
    "SIM_DEMO_DISTRACTORS",
    "tiny_judge_and_rubricor",
    "tokenizer_corpus",
    "sim_rule_judge",
    "sim_escalation_shares",
]
