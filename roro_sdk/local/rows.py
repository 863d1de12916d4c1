"""The engine's records: a request, its result, one row while it is generated, and counters.

Kept apart from :mod:`roro_sdk.local.engine` so the scheduler and the engine both use them
without importing each other.
"""

from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any


@dataclass
class GenerationRequest:
    """One chat completion request in the engine's terms (OpenAI meanings and defaults)."""

    messages: list[Any]
    max_tokens: int | None = None  # None: the engine's default_max_tokens
    temperature: float = 1.0  # <= 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    logprobs: bool = False
    top_logprobs: int = 0


@dataclass
class GenerationResult:
    """What one row produced. ``completion_tokens`` counts every generated token up to and
    including the one that triggered the stop (EOS and the delimiter token included: they were
    computed); ``logprobs`` covers only the tokens that contribute to ``text``."""

    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    prefix_mode: bool
    batch_size: int
    logprobs: list[dict[str, Any]] | None = None
    token_ids: list[int] = field(default_factory=list)


@dataclass
class EngineStats:
    """Counters since the engine was built (the benchmark and the tests read them).

    ``prefill_tokens`` are prompt tokens the model computed; ``reused_tokens`` are prompt tokens
    whose KV came from the prefix cache; ``decode_rows`` sums the batch size over decode steps;
    ``prefill_s`` and ``decode_s`` are the seconds the model spent computing prompts and decoding
    (the forward calls alone: what a benchmark divides by to see the hardware's rate).
    """

    requests: int = 0
    prompt_tokens: int = 0
    prefill_tokens: int = 0
    reused_tokens: int = 0
    completion_tokens: int = 0
    decode_steps: int = 0
    decode_rows: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0


@dataclass(eq=False)
class RowState:
    """One request while it is generated: what it has produced and why it stopped."""

    request: GenerationRequest
    prompt: list[int]
    prefix_mode: bool
    limit: int
    generator: Any
    context_id: int | None
    future: concurrent.futures.Future | None = None
    generated: list[int] = field(default_factory=list)
    lp_raw: list[tuple[float, list[int], list[float]]] = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    peak_batch: int = 1
    kv_len: int = 0  # KV columns computed for this row (prompt + fed tokens)


def settle(future: concurrent.futures.Future, value: Any, ok: bool) -> None:
    """Complete ``future`` with ``value`` (a result if ``ok``, else an exception), unless its
    caller cancelled it meanwhile (also between the check and the set)."""
    if future.done():
        return
    try:
        future.set_result(value) if ok else future.set_exception(value)
    except concurrent.futures.InvalidStateError:
        pass
