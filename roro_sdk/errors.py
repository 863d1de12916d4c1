"""The typed exception hierarchy of roro-sdk.

Every error the SDK raises on purpose derives from :class:`RoroError`, so an application can catch
one base class. Messages say what is wrong *and* what to do about it.
"""

from __future__ import annotations


class RoroError(Exception):
    """Base class of every error raised by roro-sdk."""


class ConfigError(RoroError, ValueError):
    """A configuration value is invalid (the message names the field and how to fix it)."""


class PoolFileError(ConfigError):
    """A pool file (YAML/TOML/JSON) is missing, malformed or describes an invalid pool."""


class UnknownModelError(ConfigError, KeyError):
    """A model name is not in the pool."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingAPIKeyError(ConfigError):
    """The environment variable named by ``ModelSpec.api_key_env`` is not set."""


class UnpricedModelError(ConfigError):
    """A model has no price and the pool was asked to refuse unpriced models."""


class BudgetError(ConfigError):
    """A budget is invalid (negative, NaN, ...)."""


class ModelCallError(RoroError):
    """A call to a model failed."""

    def __init__(self, message: str, *, model: str | None = None, status_code: int | None = None):
        super().__init__(message)
        self.model = model
        self.status_code = status_code


class TransientModelError(ModelCallError):
    """A failure that may succeed on retry (timeout, 429, 5xx, connection reset) after retries ran out."""


class PermanentModelError(ModelCallError):
    """A failure that retrying cannot fix (authentication, bad request, unknown model on the server)."""


class OutsideTreeError(ModelCallError):
    """A replayed call that the recorded routing tree does not hold (a path it never expanded, or
    logprobs it was recorded without); grow the tree to have it called live and recorded."""


class ModelUnavailableError(RoroError):
    """A local model cannot be loaded (a package is missing, a file is corrupt); the message names the fix."""


class RouterError(RoroError):
    """A router cannot make a decision with the given state or pool."""


class LogprobsUnavailableError(RouterError):
    """A confidence-based router needs token log-probabilities but the provider returned none."""


class DatasetError(RoroError, ValueError):
    """A dataset file or generator cannot be read (the message names the file/line)."""


class OutputValidationError(RoroError):
    """A model's structured output stayed invalid after the allowed number of re-asks."""


class TreeMismatchError(ConfigError):
    """A routing tree was recorded with another pool, prompt template or decoding than the one given."""


class TrainingConfigError(ConfigError):
    """A training configuration is invalid."""


class RunExistsError(TrainingConfigError):
    """A training output folder already holds a run and neither resuming nor overwriting was asked for."""


class UnsafeWeightsError(ModelUnavailableError):
    """A model or adapter folder holds only pickle weights (``.bin``/``.pt``); roro loads safetensors only."""


class ProcessScoringError(RoroError):
    """The Judge or Rubricor failed on every item it was given (a setup problem, not one bad reply)."""


class MissingExtraError(RoroError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it
    (``pip install "roro-sdk[local]"``). ``name`` is the module, ``extra`` the extra."""

    def __init__(self, message: str, *, name: str | None = None, extra: str | None = None):
        super().__init__(message, name=name)
        self.extra = extra


class InvalidRequestError(ConfigError):
    """A request to ``roro serve`` (or the ``roro/<route>`` LiteLLM provider) is malformed: bad JSON,
    a missing field, a negative budget. The server answers 400 with the message."""


class UnknownRouteError(InvalidRequestError, LookupError):
    """A request names a route (``model``) that the server does not serve. The server answers 404."""


class RayConfigError(ConfigError):
    """A scale-out setting is invalid: a ``--ray`` address that is neither ``auto`` nor
    ``host:port`` / ``ray://host:port``, a worker count below 1, a setting Ray cannot honour."""


class RayClusterError(RoroError):
    """Ray could not run the work: the cluster cannot be reached, a worker cannot be set up (its
    factory raised: a missing model, a missing package on that node), or every worker kept dying.
    Results that finished before it are already in the output file; a re-run resumes."""
