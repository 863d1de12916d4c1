"""roro-sdk: route each reasoning step to the right model.

The public API lives in this one namespace; modules starting with ``_`` are private.
Importing roro_sdk is fast, offline and changes nothing in the process (no environment variable,
no other library's globals): LiteLLM, torch and transformers load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._extras import lazy_names
from ._version import __version__

from .answers import check_answer, extract_answer
from .cache import GenerationCache
from .defaults import default_pool
from .errors import (
    BudgetError,
    ConfigError,
    DatasetError,
    LogprobsUnavailableError,
    MissingExtraError,
    MissingAPIKeyError,
    ModelCallError,
    ModelUnavailableError,
    OutputValidationError,
    PermanentModelError,
    PoolFileError,
    ProcessScoringError,
    RoroError,
    RouterError,
    RunExistsError,
    TrainingConfigError,
    TransientModelError,
    UnknownModelError,
    UnpricedModelError,
    UnsafeWeightsError,
)
from .eval import RouterSummary, aevaluate, evaluate, summarize
from .judge import FunctionJudge, Judge, JudgeResult, LiteLLMJudge, LocalJudge, judge_from_config
from .pairs import PairConfig, PairSet, PreferencePair, build_pairs, read_pairs, write_pairs
from .pool import Generation, ModelPool, RetryPolicy
from .prompts import PromptTemplate
from .routers import (
    BudgetGuard,
    ConfidenceRouter,
    Decision,
    FixedRouter,
    QueryLevelRouter,
    RandomRouter,
    Router,
    RoutingState,
    SpecReasonRouter,
    TrimRouter,
    make_router,
)
from .rewards import RewardWeights
from .rubric import (
    Criterion,
    FunctionRubricor,
    LiteLLMRubricor,
    LocalRubricor,
    Rubric,
    Rubricor,
    StaticRubricor,
    rubricor_from_config,
)
from .runtime import StepwiseRuntime
from .tasks import load_dataset, load_jsonl
from .trajectories import read_trajectories, write_trajectories
from .types import CallRecord, ModelSpec, Query, SamplingParams, Step, Trajectory, Usage

from .train.grpo_config import GRPOConfig, load_grpo_config

if TYPE_CHECKING:  # pragma: no cover
    from .policy.router import PolicyRouter, PolicyTemplate
    from .train.grpo import evaluate_router, train_router


# Names whose modules need torch/transformers (the ``train`` extra): imported on first use, so
# ``import roro_sdk`` stays light and works on the core install. They are public but kept out of
# ``__all__``, so ``from roro_sdk import *`` works without torch too.
_LAZY = {
    "PolicyRouter": "roro_sdk.policy.router",
    "PolicyTemplate": "roro_sdk.policy.router",
    "train_router": "roro_sdk.train.grpo",
    "evaluate_router": "roro_sdk.train.grpo",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "__version__",
    # data types
    "ModelSpec",
    "SamplingParams",
    "Usage",
    "CallRecord",
    "Step",
    "Query",
    "Trajectory",
    # pool and runtime
    "ModelPool",
    "Generation",
    "RetryPolicy",
    "PromptTemplate",
    "StepwiseRuntime",
    "default_pool",
    # routers
    "Router",
    "Decision",
    "RoutingState",
    "FixedRouter",
    "RandomRouter",
    "QueryLevelRouter",
    "BudgetGuard",
    "ConfidenceRouter",
    "SpecReasonRouter",
    "TrimRouter",
    "make_router",
    # process rewards: rubrics, Rubricors, Judges, preference pairs
    "Criterion",
    "Rubric",
    "Rubricor",
    "StaticRubricor",
    "FunctionRubricor",
    "LiteLLMRubricor",
    "LocalRubricor",
    "rubricor_from_config",
    "Judge",
    "JudgeResult",
    "FunctionJudge",
    "LiteLLMJudge",
    "LocalJudge",
    "judge_from_config",
    "PreferencePair",
    "PairConfig",
    "PairSet",
    "build_pairs",
    "read_pairs",
    "write_pairs",
    # the router trainer's config (PolicyRouter, PolicyTemplate, train_router and evaluate_router
    # need the train extra: see _LAZY)
    "RewardWeights",
    "GRPOConfig",
    "load_grpo_config",
    # evaluation and the generation cache
    "evaluate",
    "aevaluate",
    "summarize",
    "RouterSummary",
    "GenerationCache",
    # answers, datasets, trajectory files
    "extract_answer",
    "check_answer",
    "load_dataset",
    "load_jsonl",
    "read_trajectories",
    "write_trajectories",
    # errors
    "RoroError",
    "ConfigError",
    "PoolFileError",
    "UnknownModelError",
    "MissingAPIKeyError",
    "UnpricedModelError",
    "BudgetError",
    "ModelCallError",
    "TransientModelError",
    "PermanentModelError",
    "ModelUnavailableError",
    "RouterError",
    "LogprobsUnavailableError",
    "DatasetError",
    "OutputValidationError",
    "TrainingConfigError",
    "RunExistsError",
    "UnsafeWeightsError",
    "ProcessScoringError",
    "MissingExtraError",
]
