"""The model pool: one reasoning step from one model, over LiteLLM.

The pool owns everything about *calling* a model: prompt assembly per generation mode, step
delimiting, token counting, pricing, retries of transient failures, the fallback model, and the
cost bound that budgets are checked against *before* each request is sent.

What a caller can rely on:

* Every request (each retry and the fallback's included) is announced to ``before_call`` first,
  which may refuse it, and every completion the provider returned (so maybe billed) is reported
  to ``on_paid``, including those thrown away as empty or malformed.
* A 200 response with no choices or no message, and (for callers that ask, as routing does) an
  empty completion, are transient faults: retried, then the fallback model, then
  :class:`TransientModelError`.
* Error messages never carry the value of an environment variable that holds a key (the pool's
  ``api_key_env`` variables and any ``*_API_KEY``/``*_KEY``/``*_TOKEN``/``*_SECRET`` variable);
  the provider's exception stays chained as the cause, with the same values redacted.
* The cost bound of a request (:meth:`ModelPool.call_cost_bound`) prices
  :meth:`ModelPool.input_token_bound` input tokens and the request's full ``max_tokens`` output
  tokens (a hard cap the provider enforces). The input bound is exact for roro-sdk's own
  providers (a ``roro_local`` model's tokenizer, the ``roro_sim`` bench's accounting);
  otherwise it is LiteLLM's token count (the model's own tokenizer when LiteLLM knows it, else
  cl100k) times ``1 + INPUT_TOKEN_MARGIN`` plus ``TEMPLATE_TOKENS_PER_MESSAGE`` a message for
  chat-template markers, and UTF-8 bytes when no tokenizer works. So a budget checked with it
  holds whenever the provider bills at most that many input tokens; a provider whose tokenizer
  splits the prompt more finely than the margin covers can exceed it by those extra tokens.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from ._env import LITELLM_CALL_DEFAULTS, import_litellm
from .errors import (
    ConfigError,
    MissingAPIKeyError,
    ModelCallError,
    PermanentModelError,
    PoolFileError,
    RoroError,
    TransientModelError,
    UnknownModelError,
    UnpricedModelError,
)
from .prompts import PromptTemplate
from .redaction import redact_exception_chain, redact_secrets
from .types import CallRecord, ModelSpec, Usage

BeforeCall = Callable[[str, list, int], None]  # (model name, messages, max_tokens); raises to refuse
OnPaid = Callable[["Generation"], None]

# Custom LiteLLM providers that roro-sdk registers on first use (module, function).
_PROVIDER_HOOKS = {
    "roro_local": ("roro_sdk.local", "register_local_provider"),
    "roro_sim": ("roro_sdk.sim", "register_sim_provider"),
}
_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 529}
# Chat templates add role markers around each message; 16 tokens a message covers the common ones.
TEMPLATE_TOKENS_PER_MESSAGE = 16
# BPE tokenizers of the common model families split English prose within ~25% of each other, so a
# count with a different tokenizer than the provider's is inflated by this share.
INPUT_TOKEN_MARGIN = 0.25


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
    discarded: str | None = None  # why the pool threw this completion away (empty, malformed), if it did

    @property
    def confidence(self) -> float | None:
        """Mean token probability of the step, the STEER/TRIM confidence signal."""
        if not self.token_logprobs:
            return None
        return float(sum(math.exp(lp) for lp in self.token_logprobs) / len(self.token_logprobs))

    @property
    def usage(self) -> Usage:
        return Usage(input_tokens=self.input_tokens, output_tokens=self.output_tokens, cost_usd=self.cost_usd, priced=self.priced)

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


class _UnusableCompletion(Exception):
    """A 200 response that cannot be used (empty, malformed): a transient fault, retried."""


def _status_of(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _UnusableCompletion):
        return True
    litellm = import_litellm()
    ex = litellm.exceptions
    if isinstance(exc, (ex.Timeout, ex.APIConnectionError, ex.RateLimitError, ex.InternalServerError,
                        ex.ServiceUnavailableError, ex.BadGatewayError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(exc, (ex.AuthenticationError, ex.PermissionDeniedError, ex.BadRequestError, ex.NotFoundError)):
        return False
    return _status_of(exc) in _TRANSIENT_STATUS


def litellm_price(model: str) -> tuple[float, float] | None:
    """``(input, output)`` dollars per 1M tokens from LiteLLM's own price map, or None if it does
    not know ``model`` (roro-sdk's own providers are never in it)."""
    if model.split("/", 1)[0] in _PROVIDER_HOOKS:
        return None
    litellm = import_litellm()
    try:
        info = litellm.get_model_info(model)
    except Exception:  # LiteLLM raises for any model it has no entry for
        return None
    prices = (info.get("input_cost_per_token"), info.get("output_cost_per_token"))
    if any(not isinstance(p, (int, float)) or not math.isfinite(p) or p < 0 for p in prices):
        return None
    return prices[0] * 1e6, prices[1] * 1e6


def _priced_by_litellm(spec: ModelSpec) -> ModelSpec:
    if spec.input_price_per_m is not None or spec.output_price_per_m is not None:
        return spec  # the user's (even partial) prices are never overridden
    prices = litellm_price(spec.model)
    if prices is None:
        return spec
    return spec.model_copy(update={"input_price_per_m": prices[0], "output_price_per_m": prices[1], "price_source": "litellm"})


class ModelPool:
    """A named set of models that can each write one reasoning step.

    Models are ordered from cheapest to most expensive (by output price, then input price; the
    given order breaks ties), so ``pool.small`` and ``pool.large`` mean what routers expect.
    A model given without prices takes LiteLLM's price when LiteLLM knows it
    (``spec.price_source == "litellm"``); one nobody can price is refused unless ``allow_unpriced``.
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
                spec = m if isinstance(m, ModelSpec) else ModelSpec.model_validate(m)
            except ConfigError as e:
                raise PoolFileError(f"model #{i} of the pool is invalid: {e}") from e
            specs.append(_priced_by_litellm(spec))
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
        unpriced = [f"{s.name} ({s.model})" for s in specs if not s.priced]
        if unpriced and not allow_unpriced:
            raise UnpricedModelError(
                f"no price for {', '.join(unpriced)}, and LiteLLM's price map does not know it either: "
                "set input_price_per_m and output_price_per_m "
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

    def redact(self, text: str) -> str:
        """``text`` without the values of this pool's key variables or any other secret variable."""
        return redact_secrets(text, [s.api_key_env for s in self.specs if s.api_key_env])

    # ----- cost estimates ---------------------------------------------------------------------
    def messages(self, name: str, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        return self.prompt.messages(self[name].mode, question, steps)

    def input_token_bound(self, name: str, messages: Sequence[dict[str, Any]]) -> int:
        """The input tokens a request with ``messages`` is budgeted at (see the module docstring)."""
        spec = self[name]
        exact = _own_provider_prompt_tokens(spec, messages)
        if exact is not None:
            return exact
        try:
            counted = import_litellm().token_counter(model=spec.model, messages=list(messages))
        except Exception:  # no tokenizer at all: UTF-8 bytes bound any byte-level BPE's tokens
            counted = sum(len(str(m.get("content") or "").encode("utf-8")) for m in messages)
            return counted + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)
        return math.ceil(counted * (1 + INPUT_TOKEN_MARGIN)) + TEMPLATE_TOKENS_PER_MESSAGE * len(messages)

    def call_cost_bound(self, name: str, messages: Sequence[dict[str, Any]], max_tokens: int) -> float:
        """The most a request may cost: its input bound plus ``max_tokens`` output tokens."""
        return self[name].cost(self.input_token_bound(name, messages), max_tokens)

    def max_input_tokens(self, name: str, question: str, steps: Sequence[str]) -> int:
        """:meth:`input_token_bound` of the step request after ``steps``."""
        return self.input_token_bound(name, self.messages(name, question, steps))

    def max_step_cost(self, name: str, question: str, steps: Sequence[str], max_tokens: int | None = None) -> float:
        """:meth:`call_cost_bound` of the step request after ``steps``."""
        return self.call_cost_bound(name, self.messages(name, question, steps), max_tokens or self[name].max_tokens_per_step)

    # ----- generation -------------------------------------------------------------------------
    def request_params(self, name: str, *, max_tokens: int | None = None, logprobs: bool = False,
                       top_logprobs: int | None = None) -> dict[str, Any]:
        """The LiteLLM parameters of a step request to model ``name`` (everything but the
        messages), as :meth:`agenerate` sends them; a store keys recorded calls on them."""
        spec = self[name]
        return self._kwargs(spec, max_tokens or spec.max_tokens_per_step, logprobs, top_logprobs)

    def _kwargs(self, spec: ModelSpec, max_tokens: int, logprobs: bool, top_logprobs: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": spec.model,
            "max_tokens": max_tokens,
            "temperature": spec.sampling.temperature,
            "top_p": spec.sampling.top_p,
            "stop": [self.prompt.delimiter],
            "timeout": spec.timeout_s,
            "num_retries": 0,  # tenacity retries here; two retry layers would multiply waits
            **LITELLM_CALL_DEFAULTS,
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
    def _ensure_provider(model: str) -> Any:
        """Register roro-sdk's own LiteLLM provider of ``model`` (if it is one); returns its handler."""
        provider = model.split("/", 1)[0]
        hook = _PROVIDER_HOOKS.get(provider)
        if hook:
            import importlib

            return getattr(importlib.import_module(hook[0]), hook[1])()
        return None

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
        allow_empty: bool = True,
        before_call: BeforeCall | None = None,
        on_paid: OnPaid | None = None,
    ) -> Generation:
        """Ask model ``name`` for the next step after ``steps``.

        Transient failures (and 200 responses without choices or message, and empty completions
        unless ``allow_empty``) are retried with backoff; when retries run out and the model has
        a fallback, the fallback writes the step (recorded in ``fallback_from``). Permanent
        failures raise :class:`PermanentModelError` at once.

        ``before_call(model_name, messages, max_tokens)`` runs before every request, the
        fallback's included, and refuses it by raising (a :class:`RoroError`, which propagates
        as it is). ``on_paid(generation)`` receives every completion obtained, cache hits and
        discarded ones (``generation.discarded`` says why) included, so a caller can account
        for every call that may be billed.
        """
        spec = self[name]
        try:
            return await self._call_with_retries(spec, question, steps, max_tokens, logprobs, top_logprobs, messages, cut,
                                                 overrides, allow_empty, before_call, on_paid)
        except TransientModelError:
            if not (use_fallback and spec.fallback):
                raise
            gen = await self.agenerate(spec.fallback, question, steps, max_tokens=max_tokens, logprobs=logprobs,
                                       top_logprobs=top_logprobs, messages=messages, use_fallback=False, cut=cut,
                                       overrides=overrides, allow_empty=allow_empty, before_call=before_call,
                                       on_paid=on_paid)
            gen.fallback_from = name
            gen.retries += spec.max_retries
            return gen

    def generate(self, name: str, question: str, steps: Sequence[str], **kw: Any) -> Generation:
        """Synchronous :meth:`agenerate`."""
        from ._sync import run_sync

        return run_sync(self.agenerate(name, question, steps, **kw))

    async def _call_with_retries(self, spec, question, steps, max_tokens, logprobs, top_logprobs, messages, cut, overrides,
                                 allow_empty, before_call, on_paid) -> Generation:
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
            key = self.cache.key(kwargs, msgs, cut=cut)
            hit = self.cache.get(key, request=kwargs, model=spec.name)
            if hit is not None and not allow_empty and not str(hit.get("text") or "").strip() and getattr(self.cache, "deterministic", False):
                # a store of greedy calls (a routing tree): a retry would write the same, so the
                # call is paid once and fails as the live retries would
                if before_call is not None:
                    before_call(spec.name, msgs, max_tokens)
                gen = self._from_cache(spec, hit, time.perf_counter() - t0)
                gen.discarded = f"empty completion (finish_reason={gen.finish_reason})"
                if on_paid is not None:
                    on_paid(gen)
                raise TransientModelError(f"model {spec.name!r} failed after 1 attempt(s): {gen.discarded} (as recorded)",
                                          model=spec.name)
            if hit is not None and (allow_empty or str(hit.get("text") or "").strip()):
                if before_call is not None:
                    before_call(spec.name, msgs, max_tokens)  # a hit is accounted at current prices
                gen = self._from_cache(spec, hit, time.perf_counter() - t0)
                if on_paid is not None:
                    on_paid(gen)
                return gen
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(spec.max_retries + 1),
                wait=wait_exponential_jitter(initial=self.retry.initial_s, max=self.retry.max_s, jitter=self.retry.jitter_s),
                retry=retry_if_exception(_is_transient),
                reraise=True,
            ):
                with attempt:
                    attempts += 1
                    if before_call is not None:
                        before_call(spec.name, msgs, max_tokens)
                    t0 = time.perf_counter()
                    resp = await litellm.acompletion(messages=msgs, **kwargs)
                    gen = self._parse(spec, resp, msgs, time.perf_counter() - t0, attempts - 1, cut)
                    if gen.discarded is None and not allow_empty and not gen.text.strip():
                        gen.discarded = f"empty completion (finish_reason={gen.finish_reason})"
                    if on_paid is not None:
                        on_paid(gen)
                    if gen.discarded is not None:
                        raise _UnusableCompletion(gen.discarded)
        except RoroError:
            raise  # a refusal from before_call (a budget) or a typed error: not the provider's
        except Exception as e:
            raise self._call_error(spec, e, attempts) from e
        if key is not None:
            self.cache.put(key, {"text": gen.text, "input_tokens": gen.input_tokens, "output_tokens": gen.output_tokens,
                                 "cost_usd": gen.cost_usd, "latency_s": gen.latency_s, "finish_reason": gen.finish_reason,
                                 "token_logprobs": gen.token_logprobs, "top_logprobs": gen.top_logprobs}, model=spec.name,
                           request=kwargs)
        return gen

    def _call_error(self, spec: ModelSpec, e: Exception, attempts: int) -> ModelCallError:
        names = [s.api_key_env for s in self.specs if s.api_key_env]
        redact_exception_chain(e, names)
        detail = str(e)[:300] if isinstance(e, _UnusableCompletion) else f"{type(e).__name__}: {str(e)[:300]}"
        detail = redact_secrets(detail, names)
        status = _status_of(e)
        if _is_transient(e):
            return TransientModelError(f"model {spec.name!r} failed after {attempts} attempt(s): {detail}", model=spec.name, status_code=status)
        return PermanentModelError(f"model {spec.name!r} rejected the request: {detail}", model=spec.name, status_code=status)

    @staticmethod
    def _from_cache(spec: ModelSpec, rec: dict[str, Any], latency: float) -> Generation:
        return Generation(model=spec.name, text=rec["text"], input_tokens=rec["input_tokens"], output_tokens=rec["output_tokens"],
                          cost_usd=spec.cost(rec["input_tokens"], rec["output_tokens"]), priced=spec.priced, latency_s=latency,
                          finish_reason=rec.get("finish_reason"), token_logprobs=rec.get("token_logprobs"),
                          top_logprobs=rec.get("top_logprobs"), raw={"cached": True, "recorded_latency_s": rec.get("latency_s")},
                          cached=True)

    def _parse(self, spec: ModelSpec, resp: Any, msgs: list[dict[str, str]], latency: float, retries: int, cut: bool) -> Generation:
        """A Generation from any response; one that cannot be used has ``discarded`` set (its
        tokens still count: the provider may have billed them)."""
        choices = _get(resp, "choices") or []
        choice = choices[0] if choices else None
        message = _get(choice, "message") if choice is not None else None
        content = _get(message, "content") if message is not None else _get(choice, "text") if choice is not None else None
        discarded = None
        if choice is None:
            discarded = "malformed response: no choices"
        elif message is None and _get(choice, "text") is None:
            discarded = "malformed response: a choice without a message"
        raw_text = content if isinstance(content, str) else ""
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
        try:
            lps, tops = _read_logprobs(_get(choice, "logprobs") if choice is not None else None)
        except (TypeError, ValueError):  # logprobs that are not numbers: treated as absent
            lps, tops = None, None
        return Generation(
            model=spec.name,
            text=text,
            input_tokens=in_tok,
            output_tokens=out_tok,
            cost_usd=spec.cost(in_tok, out_tok),
            priced=spec.priced,
            latency_s=latency,
            retries=retries,
            finish_reason=_get(choice, "finish_reason") if choice is not None else None,
            token_logprobs=lps,
            top_logprobs=tops,
            raw=resp,
            discarded=discarded,
        )


def _own_provider_prompt_tokens(spec: ModelSpec, messages: Sequence[dict[str, Any]]) -> int | None:
    """The exact input tokens one of roro-sdk's own providers will report, else None. A provider's
    handler offers ``count_prompt_tokens(name, messages, api_base)`` (``roro_local``: the model's
    tokenizer and chat template; ``roro_sim``: the bench's token accounting), so the pool needs no
    import of the providers above it."""
    handler = ModelPool._ensure_provider(spec.model)  # None for a model of no roro provider
    counter = getattr(handler, "count_prompt_tokens", None)
    if counter is None:
        return None
    try:
        return int(counter(spec.model.partition("/")[2], list(messages), spec.api_base))
    except Exception:  # not answerable here: the call itself will report why; count generically
        return None


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
