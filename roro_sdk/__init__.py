"""roro-sdk: route each reasoning step to the right model.

The public API lives in this one namespace; modules starting with ``_`` are private.
Importing roro_sdk is fast and offline: LiteLLM, torch and transformers load only when used.
"""

from __future__ import annotations

from ._env import apply_offline_defaults

apply_offline_defaults()

from .answers import check_answer, extract_answer  # noqa: E402
from .defaults import default_pool  # noqa: E402
from .errors import (  # noqa: E402
    BudgetError,
    ConfigError,
    DatasetError,
    LogprobsUnavailableError,
    MissingAPIKeyError,
    ModelCallError,
    ModelUnavailableError,
    OutputValidationError,
    PermanentModelError,
    PoolFileError,
    RoroError,
    RouterError,
    TrainingConfigError,
    TransientModelError,
    UnknownModelError,
    UnpricedModelError,
)
from .pool import Generation, ModelPool, RetryPolicy  # noqa: E402
from .prompts import PromptTemplate  # noqa: E402
from .routers import (  # noqa: E402
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
from .runtime import StepwiseRuntime  # noqa: E402
from .tasks import load_dataset, load_jsonl  # noqa: E402
from .trajectories import read_trajectories, write_trajectories  # noqa: E402
from .types import CallRecord, ModelSpec, Query, SamplingParams, Step, Trajectory, Usage  # noqa: E402

__version__ = "0.1.0"

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
]
