"""Configuration of the synthetic routing bench: tasks, sim models, prices, tokens, seeds.

Why a config object: every number that decides who wins on the bench (how often the small model
errs on a hard step, what a large step costs, how often a later step repairs a mistake) is a
field here, so a test or a trainer check can build exactly the situation it needs and compute
the right answer from the same numbers (:mod:`roro_sdk.sim.optimal`).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ConfigDict, Field, model_validator

from ..errors import ConfigError
from ..types import ConfigModel


class _Model(ConfigModel):
    # bad values raise ConfigError naming the field (ConfigModel), not pydantic's ValidationError
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimModel(_Model):
    """One sim model: its error rates by step difficulty, its recovery rate, its prices, and the
    confidence it reports (token probability) so confidence-based routers have a signal.

    ``recovery``: probability that a correct step written by this model, after an earlier mistake
    that is still uncorrected, repairs it (the answer is right again unless a new mistake follows).
    ``confidence_*``: the token probability reported in logprobs on easy / hard steps, minus
    ``mistake_confidence_drop`` when the step is a mistake, plus uniform noise of
    +-``confidence_noise``; clipped to [0.01, 0.999].
    """

    error_easy: float = Field(0.02, ge=0.0, le=1.0)
    error_hard: float = Field(0.5, ge=0.0, le=1.0)
    recovery: float = Field(0.1, ge=0.0, le=1.0)
    input_price_per_m: float = Field(0.1, ge=0.0)
    output_price_per_m: float = Field(0.4, ge=0.0)
    confidence_easy: float = Field(0.95, gt=0.0, le=1.0)
    confidence_hard: float = Field(0.6, gt=0.0, le=1.0)
    mistake_confidence_drop: float = Field(0.1, ge=0.0, le=1.0)
    confidence_noise: float = Field(0.05, ge=0.0, le=0.5)

    def error(self, hard: bool) -> float:
        return self.error_hard if hard else self.error_easy


def _default_models() -> dict[str, SimModel]:
    return {
        "small": SimModel(error_easy=0.02, error_hard=0.5, recovery=0.1, input_price_per_m=0.1, output_price_per_m=0.4,
                          confidence_easy=0.9, confidence_hard=0.7, confidence_noise=0.15),
        "large": SimModel(error_easy=0.01, error_hard=0.05, recovery=0.5, input_price_per_m=1.0, output_price_per_m=4.0,
                          confidence_easy=0.97, confidence_hard=0.9, confidence_noise=0.03),
    }


class SimConfig(_Model):
    """The synthetic routing bench. A TEST BENCH, never a model of any real workload.

    A task is ``n`` reasoning steps (``min_steps``..``max_steps``), each hard with probability
    ``p_hard``, then one answer step. Step ``k`` written by model ``m`` is a mistake with
    probability ``models[m].error(hard)``; the answer is right iff every mistake was followed by a
    recovery (see :class:`SimModel`). Every random draw is a hash of (config ``seed``, sampling
    seed, task id, step index, model, purpose), so a trajectory is a pure function of the routing.

    Token accounting, per call: ``tokens_per_step`` output tokens for a reasoning step,
    ``answer_tokens`` for the answer step, and ``prompt_tokens + k * tokens_per_step`` input
    tokens at step ``k`` (the question plus the prefix so far): both generation modes re-send the
    prefix, so both pay for it.
    """

    min_steps: int = Field(3, ge=1, le=64)
    max_steps: int = Field(8, ge=1, le=64)
    p_hard: float = Field(0.3, ge=0.0, le=1.0)
    models: dict[str, SimModel] = Field(default_factory=_default_models)
    tokens_per_step: int = Field(40, ge=1, le=8192)
    answer_tokens: int = Field(6, ge=1, le=1024)
    prompt_tokens: int = Field(120, ge=0)
    verifier_error: float = Field(0.1, ge=0.0, le=1.0, description="chance a verify call (SpecReason prompt) misjudges a step")
    hint_accuracy: float | None = Field(
        None, ge=0.5, le=1.0,
        description="when set, the question ends with 'next: hard|easy' about the first reasoning step and every "
                    "reasoning step ends with one about the following step, right with this probability (0.5 = no "
                    "information): the observable context a real router reads before a step")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SimConfig:
        if self.min_steps > self.max_steps:
            raise ValueError(f"min_steps ({self.min_steps}) must not exceed max_steps ({self.max_steps})")
        if not self.models:
            raise ValueError("a sim config needs at least one model")
        for name in self.models:
            if not name or "/" in name or "," in name or any(c.isspace() for c in name):
                raise ValueError(f"sim model name {name!r} must be a simple word (no '/', ',' or spaces)")
        return self

    def key(self) -> str:
        """A short content hash: two equal configs share a key (and so cache entries)."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    def model(self, name: str) -> SimModel:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(f"sim model {name!r} is not configured; this config has: {', '.join(self.models)}") from None

    def step_cost(self, model: str, k: int, n_steps: int) -> float:
        """Dollar cost of step ``k`` (0-based; ``k == n_steps`` is the answer step) written by ``model``."""
        m = self.model(model)
        out = self.answer_tokens if k >= n_steps else self.tokens_per_step
        return (m.input_price_per_m * (self.prompt_tokens + k * self.tokens_per_step) + m.output_price_per_m * out) / 1e6

    def with_overrides(self, **changes: Any) -> SimConfig:
        try:
            return SimConfig.model_validate({**self.model_dump(), **changes})
        except ConfigError as e:  # ConfigModel already named the field; say where it came from
            raise ConfigError(f"invalid sim config: {e}") from None

    # ----- presets --------------------------------------------------------------------------
    @classmethod
    def careful(cls, **changes: Any) -> SimConfig:
        """Exact preset: the small model never errs on easy steps and always errs on hard ones; the
        large model never errs; nothing recovers. The answer is right iff the large model wrote
        every hard step, so the optimal routing is *large exactly on the hard steps*: a wasteful
        router (large on easy steps too) gets the same outcome at a higher cost, which a judge can
        tell apart from the per-step ``[easy]``/``[hard]`` records."""
        models = {
            "small": SimModel(error_easy=0.0, error_hard=1.0, recovery=0.0, input_price_per_m=0.1, output_price_per_m=0.4,
                              confidence_easy=0.95, confidence_hard=0.55, mistake_confidence_drop=0.0, confidence_noise=0.02),
            "large": SimModel(error_easy=0.0, error_hard=0.0, recovery=0.0, input_price_per_m=1.0, output_price_per_m=4.0,
                              confidence_easy=0.97, confidence_hard=0.9, mistake_confidence_drop=0.0, confidence_noise=0.02),
        }
        base = cls(models=models, verifier_error=0.0)
        return base.with_overrides(**changes) if changes else base

    @classmethod
    def hard(cls, **changes: Any) -> SimConfig:
        """More and harder steps: a wider gap between all-small and all-large."""
        base = cls(min_steps=4, max_steps=10, p_hard=0.5)
        return base.with_overrides(**changes) if changes else base


SIM_PRESETS = {"default": SimConfig, "careful": SimConfig.careful, "hard": SimConfig.hard}


def _coerce(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def parse_sim_spec(spec: str, config: SimConfig | None = None) -> SimConfig:
    """A config from a dataset/pool spec: ``sim``, ``sim:careful``, ``sim:hard,p_hard=0.6`` or
    ``sim:min_steps=2,max_steps=4,seed=3``. ``config`` (when given) replaces the preset; the
    spec's ``key=value`` overrides still apply on top."""
    head, _, tail = spec.strip().partition(":")
    if head != "sim":
        raise ConfigError(f"not a sim spec: {spec!r} (expected 'sim' or 'sim:<preset>,<field>=<value>,...')")
    base = config
    overrides: dict[str, Any] = {}
    for part in (p.strip() for p in tail.split(",") if p.strip()):
        if "=" in part:
            k, _, v = part.partition("=")
            if k.strip() not in SimConfig.model_fields or k.strip() == "models":
                raise ConfigError(f"sim spec {spec!r}: unknown field {k.strip()!r}; settable: "
                                  + ", ".join(f for f in SimConfig.model_fields if f != "models"))
            overrides[k.strip()] = _coerce(v.strip())
        elif part in SIM_PRESETS:
            if base is None:
                base = SIM_PRESETS[part]()
        else:
            raise ConfigError(f"sim spec {spec!r}: unknown preset {part!r}; presets: {', '.join(SIM_PRESETS)}")
    base = base or SimConfig()
    return base.with_overrides(**overrides) if overrides else base
