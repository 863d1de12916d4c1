"""Pydantic models shared by every part of roro-sdk.

Everything that crosses a module boundary (a model's description, a step, a trajectory, usage
and cost) is one of these models, so it validates on the way in and round-trips through JSON
lines on the way out.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

GenerationMode = Literal["prefix", "chat"]
StopReason = Literal["answer", "max_steps", "token_budget", "cost_budget", "repeat", "error", "empty"]


class _Model(BaseModel):
    # inf/NaN are written as the JSON constants Infinity/NaN, which reading accepts: pydantic's
    # default (null) would write lines that can never be read back.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, ser_json_inf_nan="constants")


def _config_error(model: str, e: ValidationError) -> ConfigError:
    """One line per bad field; the input is echoed only when it is a plain number (never a key)."""
    lines = []
    for err in e.errors():
        field = ".".join(str(x) for x in err["loc"])
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, ConfigError):  # a nested config model already named its field
            lines.append(f"{model} field {field!r}: {inner}" if field else str(inner))
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if not field:  # a check across fields: its message names them
            lines.append(f"{model}: {msg}")
            continue
        got = err.get("input")
        shown = f" (got {got!r})" if isinstance(got, (int, float, bool)) or got is None else ""
        lines.append(f"{model} field {field!r}: {msg}{shown}")
    return ConfigError("; ".join(lines))


@contextmanager
def _config_errors(model: str) -> Iterator[None]:
    try:
        yield
    except ValidationError as e:
        raise _config_error(model, e) from e


class ConfigModel(_Model):
    """A configuration model: bad values raise :class:`ConfigError` naming the field, not pydantic's
    ``ValidationError`` (construction, ``model_validate``, ``model_validate_json`` and assignment)."""

    def __init__(self, **data: Any) -> None:
        with _config_errors(type(self).__name__):
            super().__init__(**data)

    @classmethod
    def model_validate(cls, obj: Any, **kw: Any):  # type: ignore[override]
        with _config_errors(cls.__name__):
            return super().model_validate(obj, **kw)

    @classmethod
    def model_validate_json(cls, json_data: Any, **kw: Any):  # type: ignore[override]
        with _config_errors(cls.__name__):
            return super().model_validate_json(json_data, **kw)

    def __setattr__(self, name: str, value: Any) -> None:
        with _config_errors(type(self).__name__):
            super().__setattr__(name, value)


_ConfigModel = ConfigModel  # the name it had before it was shared with the other config models


class SamplingParams(ConfigModel):
    """Sampling for one step. Defaults follow SpecReason's settings for reasoning models."""

    temperature: float = Field(0.6, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    seed: int | None = None


class ModelSpec(ConfigModel):
    """One model of a pool.

    ``api_key_env`` holds the *name* of an environment variable, never the key itself, so pool
    files can be committed and keys never reach logs or trajectory files.
    Prices are US dollars per one million tokens, finite and non-negative. ``None`` means
    "unknown": the pool then takes LiteLLM's price for the model when LiteLLM knows it
    (``price_source="litellm"``), and otherwise refuses the model unless told to accept unpriced
    models, and then flags every cost it computes. Prices given here have ``price_source="user"``.
    Invalid values raise :class:`~roro_sdk.errors.ConfigError` naming the field.
    """

    name: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, description="LiteLLM model string, e.g. 'openai/gpt-4o-mini'")
    api_base: str | None = None
    api_key_env: str | None = None
    input_price_per_m: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    output_price_per_m: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    price_source: Literal["user", "litellm"] | None = Field(None, description="who set the prices (None: unpriced)")
    max_tokens_per_step: int = Field(512, ge=1, le=32768)
    mode: GenerationMode = "chat"
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    fallback: str | None = Field(None, description="name of the pool model that writes the step when retries run out")
    timeout_s: float = Field(60.0, gt=0.0)
    max_retries: int = Field(3, ge=0, le=20)
    extra: dict[str, Any] = Field(default_factory=dict, description="extra kwargs passed to litellm")

    @model_validator(mode="before")
    @classmethod
    def _prices_given_are_the_users(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("price_source") is None and \
                data.get("input_price_per_m") is not None and data.get("output_price_per_m") is not None:
            data = {**data, "price_source": "user"}
        return data

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, v: str) -> str:
        if any(c.isspace() for c in v) or "," in v:
            raise ValueError(f"model name {v!r} must not contain spaces or commas (it is used on the command line)")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name_not_a_key(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.replace("_", "").isalnum() or v.startswith(("sk-", "sk_")):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                "not the key itself"
            )
        return v

    @field_validator("extra")
    @classmethod
    def _no_secrets_in_extra(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if "key" in key.lower() or "token" in key.lower() and key != "max_tokens":
                raise ValueError(f"extra[{key!r}] looks like a secret; put the key in an env var and name it in api_key_env")
        return v

    @property
    def priced(self) -> bool:
        return self.input_price_per_m is not None and self.output_price_per_m is not None

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollar cost of a call; 0.0 for an unpriced model (callers flag it via ``priced``)."""
        return (input_tokens * (self.input_price_per_m or 0.0) + output_tokens * (self.output_price_per_m or 0.0)) / 1e6


class Usage(_Model):
    """Tokens and dollars. ``priced`` is False when any part came from an unpriced model."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            priced=self.priced and other.priced,
        )

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class CallRecord(_Model):
    """One model call made on the side of a step (a draft that was thrown away, a verification)."""

    model: str
    purpose: str
    text: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    latency_s: float = 0.0

    @property
    def usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=self.cost_usd, priced=self.priced)


class Step(_Model):
    """One reasoning step of a trajectory and everything needed to audit how it was produced."""

    index: int = Field(ge=0)
    model: str
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    latency_s: float = 0.0
    probabilities: dict[str, float] = Field(default_factory=dict)
    reason: str = ""
    retries: int = 0
    fallback_from: str | None = None
    finish_reason: str | None = None
    confidence: float | None = None
    side_calls: list[CallRecord] = Field(default_factory=list)
    # The router had no choice here (a learned router committed to one model after its free
    # steps): learners skip such a step, as it says nothing about the router's judgement.
    forced: bool = False

    @property
    def usage(self) -> Usage:
        """The step's own call plus its side calls (drafts, verifications)."""
        u = Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=self.cost_usd, priced=self.priced)
        for c in self.side_calls:
            u = u + c.usage
        return u


class Query(_Model):
    """A question to reason about, with its reference answer when known."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], min_length=1)
    question: str
    answer: str | None = None
    source: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _id_from_the_question(cls, data: Any) -> Any:
        # A query without an id gets one from its text, so a run is reproducible: routers seed their
        # draws with the query id (a random id made `roro run --seed 0` route differently each time).
        if isinstance(data, dict) and data.get("id") is None and isinstance(data.get("question"), str):
            data = {**data, "id": "q-" + hashlib.sha256(data["question"].encode("utf-8")).hexdigest()[:12]}
        return data

    @field_validator("question")
    @classmethod
    def _question_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the question is empty; pass the text of the problem to solve")
        return v


class Trajectory(_Model):
    """A routed run of one query: the steps, who wrote each, why it stopped, what it cost."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    query: Query
    router: str = ""
    steps: list[Step] = Field(default_factory=list)
    answer: str | None = None
    correct: bool | None = None
    stop_reason: StopReason | None = None
    error: str | None = None
    wall_time_s: float = 0.0
    side_calls: list[CallRecord] = Field(
        default_factory=list,
        description="paid calls that belong to no step: side calls of a step that was never taken "
                    "(a budget stop or an error after a probe or draft) and discarded attempts")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _indices_in_order(self) -> Trajectory:
        for i, s in enumerate(self.steps):
            if s.index != i:
                raise ValueError(f"step {i} has index {s.index}; steps must be numbered 0, 1, 2, ...")
        return self

    @property
    def usage(self) -> Usage:
        """Every paid call: the steps, their side calls, and the side calls of no step."""
        total = Usage()
        for s in self.steps:
            total = total + s.usage
        for c in self.side_calls:
            total = total + c.usage
        return total

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    def text(self, delimiter: str = "\n\n") -> str:
        return delimiter.join(s.text for s in self.steps)

    def steps_by_model(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.model] = out.get(s.model, 0) + 1
        return out

    def tokens_by_model(self) -> dict[str, int]:
        """Output tokens written per model (side calls included, under their own model)."""
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.model] = out.get(s.model, 0) + s.output_tokens
            for c in s.side_calls:
                out[c.model] = out.get(c.model, 0) + c.output_tokens
        for c in self.side_calls:
            out[c.model] = out.get(c.model, 0) + c.output_tokens
        return out

    def share_of(self, model: str) -> float:
        """Share of steps written by ``model`` (0.0 for an empty trajectory)."""
        return self.steps_by_model().get(model, 0) / len(self.steps) if self.steps else 0.0

    def to_jsonl(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_jsonl(cls, line: str) -> Trajectory:
        return cls.model_validate_json(line)


