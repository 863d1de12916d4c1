"""The model pool: one reasoning step from one model, over LiteLLM.

The pool owns everything about *calling* a model: prompt assembly per generation mode, step
delimiting, token counting, pricing, retries of transient failures, the fallback model, and the
conservative cost estimate that budgets are checked against *before* a call is made.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ._env import import_litellm
from .errors import (
    MissingAPIKeyError,
    ModelCallError,
    PermanentModelError,
    PoolFileError,
    TransientModelError,
    UnknownModelError,
    UnpricedModelError,
)
from .prompts import PromptTemplate
from .types import CallRecord, ModelSpec

__all__ = ["ModelPool", "Generation", "RetryPolicy", "cut_at_delimiter"]

# Custom LiteLLM providers that roro-sdk registers on first use (module, function).
_PROVIDER_HOOKS = {
    "roro_local": ("roro_sdk.local", "register_local_provider"),
    "roro_sim": ("roro_sdk.sim", "register_sim_provider"),
}
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
# Chat templates add role markers around each message; 16 tokens a message covers the common ones.
_TEMPLATE_TOKENS_PER_MESSAGE = 16


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff for transient failures (exponential with jitter, seconds)."""

    initial_s: float = 0.5
    max_s: float = 8.0
    jitter_s: float = 0.25


@dataclass
class Generation:
    """What one step request produced (after retries and, maybe, a fallback)."""

    model: str
    text: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    priced: bool
    latency_s: float
    retries: int = 0
    fallback_from: str | None = None
    finish_reason: str | None = None
    token_logprobs: list[float] | None = None
    top_logprobs: list[dict[str, float]] | None = None
    raw: Any = field(default=None, repr=False)
    cached: bool = False  # answered from a GenerationCache: recorded tokens, cost at current prices

    @property
    def confidence(self) -> float | None:
        """Mean token probability of the step, the STEER/TRIM confidence signal."""
        if not self.token_logprobs:
            return None
        return float(sum(math.exp(lp) for lp in self.token_logprobs) / len(self.token_logprobs))

    def as_call_record(self, purpose: str) -> CallRecord:
        return CallRecord(
            model=self.model,
            purpose=purpose,
            text=self.text,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            priced=self.priced,
            latency_s=self.latency_s,
        )


def cut_at_delimiter(text: str, delimiter: str = "\n\n") -> str:
    """The step's text: up to the first delimiter that follows some non-blank text, trimmed.

    Servers that ignore ``stop`` (or stop late) would otherwise hand back several steps at once;
    leading blank lines are not a step boundary.
    """
    stripped = text.lstrip()
    idx = stripped.find(delimiter)
    if idx > 0:
        stripped = stripped[:idx]
    return stripped.rstrip()


def _status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def _is_transient(exc: BaseException) -> bool:
    litellm = import_litellm()
    ex = litellm.exceptions
    if isinstance(exc, (ex.Timeout, ex.APIConnectionError, ex.RateLimitError, ex.InternalServerError,
                        ex.ServiceUnavailableError, ex.BadGatewayError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, (ex.AuthenticationError, ex.PermissionDeniedError, ex.BadRequestError, ex.NotFoundError)):
        return False
    return _status_of(exc) in _TRANSIENT_STATUS


class ModelPool:
    """A named set of models that can each write one reasoning step.

    Models are ordered from cheapest to most expensive (by output price, then input price; the
    given order breaks ties), so ``pool.small`` and ``pool.large`` mean what routers expect.
    """

    def __init__(
        self,
        models: Iterable[ModelSpec | dict[str, Any]],
        *,
        allow_unpriced: bool = False,
        prompt: PromptTemplate | None = None,
        retry: RetryPolicy | None = None,
        cache: Any = None,
    ) -> None:
        specs: list[ModelSpec] = []
        for i, m in enumerate(models):
            try:
                specs.append(m if isinstance(m, ModelSpec) else ModelSpec.model_validate(m))
            except ValidationError as e:
                raise PoolFileError(f"model #{i} of the pool is invalid:\n{e}") from None
        if not specs:
            raise PoolFileError("a pool needs at least one model")
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise PoolFileError(f"model names must be unique; repeated: {', '.join(dupes)}")
        for s in specs:
            if s.fallback is not None and s.fallback not in names:
                raise PoolFileError(f"model {s.name!r} falls back to {s.fallback!r}, which is not in the pool ({', '.join(names)})")
            if s.fallback == s.name:
                raise PoolFileError(f"model {s.name!r} cannot fall back to itself")
        unpriced = [s.name for s in specs if not s.priced]
        if unpriced and not allow_unpriced:
            raise UnpricedModelError(
                f"no price for {', '.join(unpriced)}: set input_price_per_m and output_price_per_m "
                "(dollars per 1M tokens; 0 for a free local model), or pass allow_unpriced=True to "
                "accept them with costs flagged as unpriced"
            )
        order = sorted(range(len(specs)), key=lambda i: (specs[i].output_price_per_m or 0.0, specs[i].input_price_per_m or 0.0, i))
        self._specs: dict[str, ModelSpec] = {specs[i].name: specs[i] for i in order}
        self.allow_unpriced = allow_unpriced
        self.prompt = prompt or PromptTemplate()
        self.retry = retry or RetryPolicy()
        self.cache = cache  # a roro_sdk.cache.GenerationCache (opt-in), or None

    # ----- construction from files ---------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ModelPool:
        """Read a pool from YAML, TOML or JSON: ``{models: [...], allow_unpriced: false, prompt: {...}}``."""
        from ._files import read_text_file

        p = Path(path)
        text = read_text_file(p, what="pool file", error=PoolFileError)
        try:
            if p.suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text)
            elif p.suffix == ".toml":
                data = tomllib.loads(text)
            elif p.suffix == ".json":
                data = json.loads(text)
            else:
                raise PoolFileError(f"pool file {p} must end in .yaml, .yml, .toml or .json")
        except PoolFileError:
            raise
        except Exception as e:  # the parsers' own errors carry line numbers
            raise PoolFileError(f"cannot parse pool file {p}: {e}") from None
        return cls.from_dict(data, source=str(p))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "pool") -> ModelPool:
        if not isinstance(data, dict) or not isinstance(data.get("models"), list):
            raise PoolFileError(f"{source}: expected a mapping with a 'models' list, e.g. models: [{{name: small, model: openai/gpt-4o-mini, ...}}]")
        from ._files import parse_bool

        unknown = set(data) - {"models", "allow_unpriced", "prompt"}
        if unknown:
            raise PoolFileError(f"{source}: unknown top-level keys {sorted(unknown)}; allowed: models, allow_unpriced, prompt")
        try:
            prompt = PromptTemplate.model_validate(data["prompt"]) if data.get("prompt") else None
        except ValidationError as e:
            err = e.errors()[0]
            raise PoolFileError(f"{source}: invalid prompt section: {'.'.join(map(str, err['loc'])) or 'prompt'}: "
                                f"{err['msg'].removeprefix('Value error, ')}") from None
        allow = parse_bool(data.get("allow_unpriced", False), field="allow_unpriced", source=source, error=PoolFileError)
        try:
            return cls(data["models"], allow_unpriced=allow, prompt=prompt)
        except PoolFileError as e:
            raise PoolFileError(f"{source}: {e}") from None

    # ----- lookup ----------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._specs)

    @property
    def specs(self) -> list[ModelSpec]:
        return list(self._specs.values())

    @property
    def small(self) -> str:
        return self.names[0]

    @property
    def large(self) -> str:
        return self.names[-1]

    def __getitem__(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModelError(f"unknown model {name!r}; the pool has: {', '.join(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"ModelPool({', '.join(self.names)})"

    def check_keys(self) -> None:
        """Fail fast, naming every missing environment variable, before any query starts."""
        missing = [f"{s.api_key_env} (for {s.name})" for s in self.specs if s.api_key_env and not os.environ.get(s.api_key_env)]
        if missing:
            raise MissingAPIKeyError(f"environment variable(s) not set: {', '.join(missing)}; export them before running")

    # ----- cost estimates ---------------------------------------------------------------------
    def messages(self, name: str, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        return self.prompt.messages(self[name].mode, question, steps)

    def max_input_tokens(self, name: str, question: str, steps: Sequence[str]) -> int:
        """An upper bound on the input tokens of a step request.

        UTF-8 bytes bound the tokens of any byte-level BPE tokenizer, so the budget check can
        promise that a started step never overshoots the budget.
        """
        msgs = self.messages(name, question, steps)
        return sum(len(m["content"].encode("utf-8")) + _TEMPLATE_TOKENS_PER_MESSAGE for m in msgs)

    def max_step_cost(self, name: str, question: str, steps: Sequence[str], max_tokens: int | None = None) -> float:
        spec = self[name]
        return spec.cost(self.max_input_tokens(name, question, steps), max_tokens or spec.max_tokens_per_step)

    # ----- generation -------------------------------------------------------------------------
    def _kwargs(self, spec: ModelSpec, max_tokens: int, logprobs: bool, top_logprobs: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": spec.model,
            "max_tokens": max_tokens,
            "temperature": spec.sampling.temperature,
            "top_p": spec.sampling.top_p,
            "stop": [self.prompt.delimiter],
            "timeout": spec.timeout_s,
            "num_retries": 0,  # tenacity retries here; two retry layers would multiply waits
        }
        if spec.sampling.seed is not None:
            kw["seed"] = spec.sampling.seed
        if spec.api_base:
            kw["api_base"] = spec.api_base
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise MissingAPIKeyError(f"model {spec.name!r} needs the environment variable {spec.api_key_env}, which is not set")
            kw["api_key"] = key
        elif spec.api_base:
            kw["api_key"] = "no-key"  # OpenAI-compatible local servers need some key
        if logprobs:
            kw["logprobs"] = True
            if top_logprobs:
                kw["top_logprobs"] = top_logprobs
        kw.update(spec.extra)
        return kw

    @staticmethod
    def _ensure_provider(model: str) -> None:
        provider = model.split("/", 1)[0]
        hook = _PROVIDER_HOOKS.get(provider)
        if hook:
            import importlib

            getattr(importlib.import_module(hook[0]), hook[1])()

    async def agenerate(
        self,
        name: str,
        question: str,
        steps: Sequence[str],
        *,
        max_tokens: int | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        messages: list[dict[str, str]] | None = None,
        use_fallback: bool = True,
        cut: bool = True,
        overrides: dict[str, Any] | None = None,
    ) -> Generation:
        """Ask model ``name`` for the next step after ``steps``.

        Transient failures are retried with backoff; when retries run out and the model has a
        fallback, the fallback writes the step (recorded in ``fallback_from``). Permanent failures
        raise :class:`PermanentModelError` at once.
        """
        spec = self[name]
        try:
            return await self._call_with_retries(spec, question, steps, max_tokens, logprobs, top_logprobs, messages, cut, overrides)
        except TransientModelError:
            if not (use_fallback and spec.fallback):
                raise
            gen = await self.agenerate(spec.fallback, question, steps, max_tokens=max_tokens, logprobs=logprobs,
                                       top_logprobs=top_logprobs, messages=messages, use_fallback=False, cut=cut,
                                       overrides=overrides)
            gen.fallback_from = name
            gen.retries += spec.max_retries
            return gen

    def generate(self, name: str, question: str, steps: Sequence[str], **kw: Any) -> Generation:
        """Synchronous :meth:`agenerate`."""
        from ._sync import run_sync

        return run_sync(self.agenerate(name, question, steps, **kw))

    async def _call_with_retries(self, spec, question, steps, max_tokens, logprobs, top_logprobs, messages, cut, overrides) -> Generation:
        litellm = import_litellm()
        self._ensure_provider(spec.model)
        msgs = messages if messages is not None else self.prompt.messages(spec.mode, question, steps)
        max_tokens = max_tokens or spec.max_tokens_per_step
        kwargs = self._kwargs(spec, max_tokens, logprobs, top_logprobs)
        kwargs.update(overrides or {})
        attempts = 0
        t0 = time.perf_counter()
        key = None
        if self.cache is not None:
            from .cache import cache_key

            key = cache_key(kwargs, msgs, cut=cut)
            hit = self.cache.get(key)
            if hit is not None:
                return self._from_cache(spec, hit, time.perf_counter() - t0)
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(spec.max_retries + 1),
                wait=wait_exponential_jitter(initial=self.retry.initial_s, max=self.retry.max_s, jitter=self.retry.jitter_s),
                retry=retry_if_exception(_is_transient),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    t0 = time.perf_counter()
                    resp = await litellm.acompletion(messages=msgs, **kwargs)
        except Exception as e:
            status = _status_of(e)
            detail = f"{type(e).__name__}: {str(e)[:300]}"
            if _is_transient(e):
                raise TransientModelError(f"model {spec.name!r} failed after {attempts} attempt(s): {detail}", model=spec.name, status_code=status) from None
            raise PermanentModelError(f"model {spec.name!r} rejected the request: {detail}", model=spec.name, status_code=status) from None
        latency = time.perf_counter() - t0
        gen = self._parse(spec, resp, msgs, latency, attempts - 1, cut)
        if key is not None:
            self.cache.put(key, {"text": gen.text, "input_tokens": gen.input_tokens, "output_tokens": gen.output_tokens,
                                 "cost_usd": gen.cost_usd, "latency_s": gen.latency_s, "finish_reason": gen.finish_reason,
                                 "token_logprobs": gen.token_logprobs, "top_logprobs": gen.top_logprobs}, model=spec.name)
        return gen

    @staticmethod
    def _from_cache(spec: ModelSpec, rec: dict[str, Any], latency: float) -> Generation:
        return Generation(model=spec.name, text=rec["text"], input_tokens=rec["input_tokens"], output_tokens=rec["output_tokens"],
                          cost_usd=spec.cost(rec["input_tokens"], rec["output_tokens"]), priced=spec.priced, latency_s=latency,
                          finish_reason=rec.get("finish_reason"), token_logprobs=rec.get("token_logprobs"),
                          top_logprobs=rec.get("top_logprobs"), raw={"cached": True, "recorded_latency_s": rec.get("latency_s")},
                          cached=True)

    def _parse(self, spec: ModelSpec, resp: Any, msgs: list[dict[str, str]], latency: float, retries: int, cut: bool) -> Generation:
        choice = resp.choices[0]
        raw_text = (choice.message.content or "") if hasattr(choice, "message") else (getattr(choice, "text", "") or "")
        text = cut_at_delimiter(raw_text, self.prompt.delimiter) if cut else raw_text
        usage = getattr(resp, "usage", None)
        in_tok = int(getattr(usage, "prompt_tokens", 0) or 0) if usage else 0
        out_tok = int(getattr(usage, "completion_tokens", 0) or 0) if usage else 0
        if not in_tok or not out_tok:  # provider gave no usage: count with a tokenizer
            litellm = import_litellm()
            if not in_tok:
                in_tok = litellm.token_counter(model=spec.model, messages=msgs)
            if not out_tok and raw_text:
                out_tok = litellm.token_counter(model=spec.model, text=raw_text)
        lps, tops = _read_logprobs(getattr(choice, "logprobs", None))
        return Generation(
            model=spec.name,
            text=text,
            input_tokens=in_tok,
            output_tokens=out_tok,
            cost_usd=spec.cost(in_tok, out_tok),
            priced=spec.priced,
            latency_s=latency,
            retries=retries,
            finish_reason=getattr(choice, "finish_reason", None),
            token_logprobs=lps,
            top_logprobs=tops,
            raw=resp,
        )


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _read_logprobs(lp: Any) -> tuple[list[float] | None, list[dict[str, float]] | None]:
    """Token log-probabilities from an OpenAI-style ``logprobs`` object or dict (None if absent)."""
    if lp is None:
        return None, None
    content = _get(lp, "content")
    if content:
        lps = [float(_get(t, "logprob")) for t in content]
        tops = [{_get(x, "token"): float(_get(x, "logprob")) for x in (_get(t, "top_logprobs") or [])} for t in content]
        return lps, tops
    token_lps = _get(lp, "token_logprobs")  # legacy completions format
    if token_lps:
        return [float(x) for x in token_lps if x is not None], None
    return None, None
