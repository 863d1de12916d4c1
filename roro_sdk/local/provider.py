"""The ``roro_local`` LiteLLM provider: ``litellm.acompletion(model="roro_local/<name>", ...)``.

Why a LiteLLM custom provider: the pool talks to every model through LiteLLM, so local models get
the same call, response type, usage accounting and error classes as remote ones.

``<name>`` is a name given to :func:`register_local_model` (a Hugging Face folder or a loader) or
an offline registry name (:mod:`roro_sdk.local.registry`, converted on first use). Each model is
loaded once per process, lazily, under a per-name lock, and shared by sync and async callers.

Errors: LiteLLM wraps any exception a provider raises; a plain exception becomes
``litellm.APIConnectionError`` (status 500), which looks transient and would be retried. So
errors are raised as :class:`LocalProviderError` (a ``CustomLLMError`` with a status code):
unknown model / missing package / bad file -> 404 (``litellm.NotFoundError``), bad request ->
400 (``litellm.BadRequestError``), anything else -> 500. The original roro error is in
``__context__`` of what LiteLLM raises and in ``LocalProviderError.roro_error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .._env import import_litellm

import_litellm()  # before the names below: litellm imported offline (no fetch of its price map)
from litellm import CustomLLM  # noqa: E402
from litellm.llms.custom_llm import CustomLLMError  # noqa: E402
from litellm.types.utils import ChoiceLogprobs, Choices, Message, ModelResponse, Usage  # noqa: E402

from roro_sdk._quiet import quiet_progress_bars
from roro_sdk.errors import ConfigError, MissingExtraError, ModelUnavailableError, UnknownModelError
from roro_sdk.local.batching import AsyncBatcher
from roro_sdk.local.engine import GenerationRequest, GenerationResult, LocalEngine
from roro_sdk.local.registry import REGISTRY, ensure_local_model

PROVIDER = "roro_local"
log = logging.getLogger("roro_sdk.local")
Loader = Callable[[], "tuple[Any, Any]"]  # () -> (model, tokenizer)


BACKENDS = ("auto", "torch", "llamacpp")


def llamacpp_installed() -> bool:
    """Whether ``llama-cpp-python`` is importable (found without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


@dataclass(frozen=True)
class LocalSettings:
    """Defaults for local models; env vars set the process-wide defaults.

    dtype: ``RORO_LOCAL_DTYPE`` (auto: bfloat16 where the CPU computes it natively, else
    float32, which is faster there at twice the memory) -- max_batch_size:
    ``RORO_LOCAL_MAX_BATCH`` (8, rows decoded together) -- batch_window_ms:
    ``RORO_LOCAL_BATCH_WINDOW_MS`` (5, how long an idle model waits for more requests) --
    prefix_cache_mb: ``RORO_LOCAL_PREFIX_CACHE_MB`` (1024 per model, the bound on cached prompt
    KV; 0 turns prefix reuse off) -- batching: ``RORO_LOCAL_BATCHING`` (``continuous``, or
    ``static`` for the older fixed batches) -- backend: ``RORO_LOCAL_BACKEND`` (``auto``:
    llama.cpp for the registry's GGUF models when ``llama-cpp-python`` is installed, else torch;
    ``torch``; ``llamacpp``) -- default_max_tokens (512, when a request gives none) -- cache_dir:
    folder of converted models.
    """

    dtype: str = "auto"
    max_batch_size: int = 8
    batch_window_ms: float = 5.0
    default_max_tokens: int = 512
    cache_dir: str | None = None
    prefix_cache_mb: float = 1024.0
    batching: str = "continuous"
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"local backend must be one of {', '.join(BACKENDS)}, got {self.backend!r} "
                              "(RORO_LOCAL_BACKEND or the backend option)")
        if self.batching not in ("continuous", "static"):
            raise ConfigError(f"local batching must be 'continuous' or 'static', got {self.batching!r} "
                              "(RORO_LOCAL_BATCHING or the batching option)")
        if self.max_batch_size < 1 or self.batch_window_ms < 0 or self.prefix_cache_mb < 0:
            raise ConfigError("local settings: max_batch_size must be >= 1, batch_window_ms and prefix_cache_mb >= 0")

    @classmethod
    def from_env(cls) -> "LocalSettings":
        env = os.environ
        try:
            return cls(
                dtype=env.get("RORO_LOCAL_DTYPE", cls.dtype),
                max_batch_size=int(env.get("RORO_LOCAL_MAX_BATCH", cls.max_batch_size)),
                batch_window_ms=float(env.get("RORO_LOCAL_BATCH_WINDOW_MS", cls.batch_window_ms)),
                prefix_cache_mb=float(env.get("RORO_LOCAL_PREFIX_CACHE_MB", cls.prefix_cache_mb)),
                batching=env.get("RORO_LOCAL_BATCHING", cls.batching),
                backend=env.get("RORO_LOCAL_BACKEND", cls.backend),
            )
        except ValueError as exc:
            raise ConfigError(f"invalid RORO_LOCAL_* environment variable: {exc}") from None


class LocalProviderError(CustomLLMError):
    """What the provider raises so LiteLLM maps it to the right status (see module docstring)."""

    def __init__(self, status_code: int, message: str, roro_error: BaseException | None = None):
        super().__init__(status_code=status_code, message=message)
        self.roro_error = roro_error


@dataclass
class _Slot:
    source: str | Path | Loader | None  # None: an offline registry model
    overrides: dict[str, Any]
    engine: LocalEngine | None = None
    batcher: AsyncBatcher | None = None
    lock: threading.Lock = None  # type: ignore[assignment]


_settings = LocalSettings.from_env()
_slots: dict[str, _Slot] = {}
_slots_lock = threading.Lock()


def configure_local(**changes: Any) -> LocalSettings:
    """Change the process-wide defaults (fields of :class:`LocalSettings`); affects later loads."""
    global _settings
    try:
        _settings = replace(_settings, **changes)
    except TypeError as exc:
        raise ConfigError(f"configure_local: {exc}") from None
    return _settings


def register_local_model(name: str, path_or_loader: str | os.PathLike | Loader, **overrides: Any) -> None:
    """Make ``roro_local/<name>`` serve a Hugging Face folder or a loader.

    ``path_or_loader``: a folder with config, safetensors and tokenizer, or a zero-argument
    callable returning ``(model, tokenizer)``. ``overrides``: any :class:`LocalSettings` field
    for this model (``dtype``, ``max_batch_size``, ``batch_window_ms``, ``prefix_cache_mb``,
    ``batching``, ``default_max_tokens``);
    ``dtype`` applies to folders only (a loader returns its model as it built it).
    Re-registering a name drops its loaded model.
    """
    bad = set(overrides) - set(LocalSettings.__dataclass_fields__)
    if bad:
        raise ConfigError(f"register_local_model: unknown option(s) {sorted(bad)}")
    source = path_or_loader if callable(path_or_loader) else Path(path_or_loader)
    with _slots_lock:
        old = _slots.get(name)
        if old is not None and old.engine is not None:
            old.engine.close()
        _slots[name] = _Slot(source=source, overrides=overrides, lock=threading.Lock())


def local_registration(name: str) -> tuple[str | Path | Loader, dict[str, Any]] | None:
    """``(folder or loader, overrides)`` that :func:`register_local_model` gave ``name`` in this
    process; None for an offline registry model or an unknown name. Lets a pool be rebuilt in
    another process (a Ray worker), which registers the same folder there."""
    with _slots_lock:
        slot = _slots.get(name)
    if slot is None or slot.source is None:
        return None
    return slot.source, dict(slot.overrides)


def clear_local_engines() -> None:
    """Forget every loaded model (registrations stay); frees memory, mainly for tests."""
    with _slots_lock:
        for slot in _slots.values():
            if slot.engine is not None:
                slot.engine.close()
            slot.engine = slot.batcher = None


def _slot(name: str) -> _Slot:
    with _slots_lock:
        slot = _slots.get(name)
        if slot is None and name in REGISTRY:
            slot = _slots[name] = _Slot(source=None, overrides={}, lock=threading.Lock())
    if slot is None:
        known = sorted(set(_slots) | set(REGISTRY))
        raise UnknownModelError(
            f"unknown local model {name!r}; known: {', '.join(known)}. "
            "Register a Hugging Face folder with roro_sdk.local.register_local_model(name, path)."
        )
    return slot


def get_local_engine(name: str) -> Any:
    """The shared engine for ``name`` (a :class:`LocalEngine`, or a
    :class:`~roro_sdk.local.llamacpp.LlamaCppEngine` for GGUF models on the llama.cpp backend),
    loading it on first use (thread-safe)."""
    return _loaded(name)[0]


def _loaded(name: str) -> tuple[LocalEngine, AsyncBatcher]:
    slot = _slot(name)
    engine, batcher = slot.engine, slot.batcher
    if engine is not None and batcher is not None:
        return engine, batcher
    with slot.lock:
        if slot.engine is None or slot.batcher is None:
            t0 = time.perf_counter()
            with quiet_progress_bars():
                engine = _load(name, slot)
            log.info("loaded %s (%s) in %.1f s", name, engine.compute_kind, time.perf_counter() - t0)
            slot.batcher = AsyncBatcher(engine, max_batch_size=engine.max_batch_size, window_s=engine.window_s)
            slot.engine = engine
        return slot.engine, slot.batcher


def _backend_for(name: str, cfg: LocalSettings, source: Any) -> str:
    """``torch`` or ``llamacpp`` for a model: llama.cpp serves GGUF files (the registry's models,
    or a registered ``.gguf`` path); folders and loaders are torch models."""
    gguf = source is None or (isinstance(source, Path) and source.suffix == ".gguf")
    if cfg.backend == "llamacpp":
        if not gguf:
            raise ConfigError(f"local model {name!r} is a Hugging Face folder or loader; the llamacpp backend "
                              "serves GGUF files (registry models or a registered .gguf path)")
        return "llamacpp"
    if cfg.backend == "torch":
        if isinstance(source, Path) and source.suffix == ".gguf":
            raise ConfigError(f"local model {name!r} is a GGUF file; the torch backend serves folders "
                              "(set RORO_LOCAL_BACKEND=auto or llamacpp)")
        return "torch"
    return "llamacpp" if gguf and (llamacpp_installed() or source is not None) else "torch"


def expected_compute_kind(name: str) -> str:
    """What an engine for ``name`` would compute in with the current settings, without loading it
    (trees compare it with what their steps were recorded in): a torch dtype, or
    ``llama.cpp:<gguf file>``. A name not registered in this process counts as a folder model
    (a torch model with the process-wide dtype)."""
    try:
        slot = _slot(name)
    except UnknownModelError:
        slot = _Slot(source=Path(name or "."), overrides={})
    cfg = replace(_settings, **slot.overrides)
    if _backend_for(name, cfg, slot.source) == "llamacpp":
        if slot.source is None:
            from roro_sdk.local.registry import get_local_entry

            return f"llama.cpp:{get_local_entry(name).gguf_name}"
        return f"llama.cpp:{Path(slot.source).name}"
    from roro_sdk.local.engine import resolve_dtype

    return str(resolve_dtype(cfg.dtype)).removeprefix("torch.")


def _load(name: str, slot: _Slot) -> Any:
    cfg = replace(_settings, **slot.overrides)
    engine_kw = dict(name=name, default_max_tokens=cfg.default_max_tokens, max_batch_size=cfg.max_batch_size,
                     window_s=cfg.batch_window_ms / 1000, prefix_cache_mb=cfg.prefix_cache_mb, batching=cfg.batching)
    if _backend_for(name, cfg, slot.source) == "llamacpp":
        from roro_sdk.local.llamacpp import LlamaCppEngine

        gguf, tok = _gguf_and_tokenizer(name, slot.source, cfg)
        return LlamaCppEngine(gguf, tok, **engine_kw)
    source: Any = ensure_local_model(name, cfg.cache_dir) if slot.source is None else slot.source
    if callable(source):
        model, tok = source()
        return LocalEngine(model, tok, **engine_kw)
    if not Path(source).is_dir():
        raise ModelUnavailableError(f"local model {name!r}: folder {source} does not exist")
    return LocalEngine.from_pretrained(str(source), dtype=cfg.dtype, **engine_kw)


def _gguf_and_tokenizer(name: str, source: Any, cfg: LocalSettings) -> tuple[Path, Any]:
    """The GGUF file and its Hugging Face tokenizer (the converted folder's when there is one: the
    very tokenizer the torch engine uses; else read from the GGUF file)."""
    from transformers import AutoTokenizer

    from roro_sdk.local.registry import ensure_local_gguf, is_converted

    if source is None:
        gguf = ensure_local_gguf(name, cfg.cache_dir)
        folder = is_converted(name, cfg.cache_dir)
        if folder is not None:
            return gguf, AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    else:
        gguf = Path(source)
        if not gguf.is_file():
            raise ModelUnavailableError(f"local model {name!r}: GGUF file {gguf} does not exist")
    return gguf, AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)


def request_from_params(messages: list[Any], optional_params: dict[str, Any]) -> GenerationRequest:
    """Map LiteLLM's ``optional_params`` (OpenAI names; ``None`` values are already dropped)."""
    p = optional_params or {}
    if int(p.get("n") or 1) != 1:
        raise ValueError("roro_local supports n=1 only")
    if p.get("stream"):
        raise ValueError("roro_local does not stream")
    stop = p.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    max_tokens = p.get("max_tokens", p.get("max_completion_tokens"))
    return GenerationRequest(
        messages=list(messages),
        max_tokens=None if max_tokens is None else int(max_tokens),
        temperature=1.0 if p.get("temperature") is None else float(p["temperature"]),
        top_p=1.0 if p.get("top_p") is None else float(p["top_p"]),
        seed=None if p.get("seed") is None else int(p["seed"]),
        stop=list(stop) if stop else None,
        logprobs=bool(p.get("logprobs")),
        top_logprobs=int(p.get("top_logprobs") or 0),
    )


def build_response(model_response: ModelResponse, model: str, result: GenerationResult) -> ModelResponse:
    """Fill LiteLLM's response object: content, finish_reason, real usage, OpenAI logprobs."""
    choice = Choices(
        index=0,
        finish_reason=result.finish_reason,
        message=Message(role="assistant", content=result.text),
        logprobs=ChoiceLogprobs(content=result.logprobs) if result.logprobs is not None else None,
    )
    model_response.choices = [choice]
    model_response.model = model
    model_response.usage = Usage(  # type: ignore[attr-defined]
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        total_tokens=result.prompt_tokens + result.completion_tokens,
    )
    model_response._hidden_params["roro_local"] = {
        "prefix_mode": result.prefix_mode,
        "batch_size": result.batch_size,
        "token_ids": result.token_ids,
    }
    return model_response


@contextlib.contextmanager
def _mapped_errors(model: str) -> Iterator[None]:
    try:
        yield
    except LocalProviderError:
        raise
    except (UnknownModelError, ModelUnavailableError, MissingExtraError) as exc:
        raise LocalProviderError(404, str(exc), exc) from exc
    except (ValueError, ConfigError) as exc:
        raise LocalProviderError(400, f"roro_local/{model}: {exc}", exc) from exc
    except Exception as exc:  # noqa: BLE001
        raise LocalProviderError(500, f"roro_local/{model}: {type(exc).__name__}: {exc}", exc) from exc


class RoroLocalLLM(CustomLLM):
    """LiteLLM handler: ``completion`` runs a batch of one; ``acompletion`` joins the batcher."""

    @staticmethod
    def count_prompt_tokens(model: str, messages: list, api_base: str | None = None) -> int:
        """The prompt tokens a call would report: the model's tokenizer over its chat template."""
        return len(get_local_engine(model).encode(list(messages))[0])

    def completion(self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kwargs: Any):
        with _mapped_errors(model):
            request = request_from_params(messages, optional_params or {})
            result = get_local_engine(model).generate([request])[0]
        return build_response(kwargs["model_response"], model, result)

    async def acompletion(self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kwargs: Any):
        with _mapped_errors(model):
            request = request_from_params(messages, optional_params or {})
            slot = _slot(model)
            if slot.engine is not None and slot.batcher is not None:
                batcher = slot.batcher
            else:  # loading takes seconds: do it in a thread so the event loop never blocks
                _, batcher = await asyncio.to_thread(_loaded, model)
            result = await batcher.submit(request)
        return build_response(kwargs["model_response"], model, result)


    def streaming(self, model: str, *args: Any, **kwargs: Any):
        raise LocalProviderError(400, f"roro_local/{model}: streaming is not supported; call without stream=True")

    async def astreaming(self, model: str, *args: Any, **kwargs: Any):
        raise LocalProviderError(400, f"roro_local/{model}: streaming is not supported; call without stream=True")


_handler: RoroLocalLLM | None = None
_register_lock = threading.Lock()


def register_local_provider() -> RoroLocalLLM:
    """Register the ``roro_local`` provider with LiteLLM (idempotent) and return its handler."""
    global _handler
    from .._env import register_litellm_provider

    with _register_lock:
        if _handler is None:
            _handler = RoroLocalLLM()
        register_litellm_provider(PROVIDER, _handler)
    return _handler
