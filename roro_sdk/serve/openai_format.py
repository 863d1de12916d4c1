"""The OpenAI chat-completions wire format, in and out: a request becomes a :class:`ChatRequest`, a
trajectory becomes a completion (or stream chunks) with ``usage`` and a ``roro`` extension field.

Shared by the HTTP server and the ``roro/<route>`` LiteLLM provider, so both answer in one shape.
Sampling parameters (temperature, top_p, stop, seed) are the pool's per model, so a request's are
ignored; parameters whose meaning cannot be honoured (``n > 1``, tools) are refused with 400.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError
from ..types import Query, Step, Trajectory

# stop reasons of the runtime -> OpenAI finish reasons ("length": a limit cut the answer short)
FINISH_REASON = {"answer": "stop", "repeat": "stop", "empty": "stop", "max_steps": "length", "token_budget": "length",
                 "cost_budget": "length", "error": "error"}
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_REFUSED = {"tools": "tool calls", "functions": "function calls", "audio": "audio output"}


@dataclass
class ChatRequest:
    """One routed request: which route, what to ask, and the budgets the caller set."""

    model: str
    query: Query
    stream: bool = False
    include_usage: bool = False
    token_budget: int | None = None
    cost_budget: float | None = None
    max_steps: int | None = None


def _text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text only
        parts = []
        for p in content:
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise InvalidRequestError(f"messages[{i}].content: only text parts are supported")
            parts.append(p["text"])
        return "".join(parts)
    if content is None:
        return ""
    raise InvalidRequestError(f"messages[{i}].content must be a string or a list of text parts")


def _question(messages: Any) -> str:
    """The last user message is the question; earlier messages, when any, go before it as context."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty list of {role, content} objects")
    turns = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            raise InvalidRequestError(f"messages[{i}] needs a role among {sorted(_ROLES)} and a content")
        turns.append((m["role"], _text(m.get("content"), i)))
    if turns[-1][0] != "user":
        raise InvalidRequestError("the last message must be the user's question (role 'user')")
    question = turns[-1][1]
    if not question.strip():
        raise InvalidRequestError("the user's question is empty")
    context = [f"{role}: {text}" for role, text in turns[:-1] if text.strip()]
    return "\n\n".join([*context, question]) if context else question


def _int(body: dict, key: str, where: str = "") -> int | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidRequestError(f"'{where}{key}' must be an integer, got {v!r}")
    if v < 1:
        raise InvalidRequestError(f"'{where}{key}' must be at least 1, got {v}")
    return v


def parse_chat_request(body: Any) -> ChatRequest:
    """A :class:`ChatRequest` from a decoded JSON body; :class:`InvalidRequestError` says what is wrong."""
    if not isinstance(body, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequestError("'model' must name a route (GET /v1/models lists them)")
    for key, what in _REFUSED.items():
        if body.get(key):
            raise InvalidRequestError(f"'{key}': {what} are not supported by the routed system")
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequestError("'n' must be 1: the routed system writes one answer per request")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be true or false")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise InvalidRequestError("'stream_options' must be an object")
    ext = body.get("roro") or {}
    if not isinstance(ext, dict):
        raise InvalidRequestError("'roro' must be an object, e.g. {\"max_cost_usd\": 0.01}")
    unknown = set(ext) - {"max_cost_usd", "max_steps", "query_id", "answer"}
    if unknown:
        raise InvalidRequestError(f"'roro' has unknown fields {sorted(unknown)}; known: max_cost_usd, max_steps, query_id, answer")
    tokens = _int(body, "max_completion_tokens") or _int(body, "max_tokens")
    cost = ext.get("max_cost_usd")
    if cost is not None:
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise InvalidRequestError(f"'roro.max_cost_usd' must be a non-negative number of dollars, got {cost!r}")
        cost = float(cost)
    query = {"question": _question(body.get("messages"))}
    for key in ("query_id", "answer"):  # a reference answer lets the log record whether the answer was right
        if ext.get(key) is not None:
            if not isinstance(ext[key], str) or not ext[key].strip():
                raise InvalidRequestError(f"'roro.{key}' must be a non-empty string")
            query["id" if key == "query_id" else key] = ext[key]
    return ChatRequest(model=model.strip(), query=Query.model_validate(query), stream=stream,
                       include_usage=bool(opts.get("include_usage")), token_budget=tokens, cost_budget=cost,
                       max_steps=_int(ext, "max_steps", "roro."))


def completion_id(traj: Trajectory) -> str:
    return f"chatcmpl-roro-{traj.id[:24]}"


def usage_body(traj: Trajectory) -> dict[str, Any]:
    """OpenAI's usage, plus ``cost`` in dollars (every paid call: steps, drafts, verifications)."""
    u = traj.usage
    return {"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens, "total_tokens": u.total_tokens,
            "cost": u.cost_usd, "cost_priced": u.priced}


def step_body(step: Step) -> dict[str, Any]:
    return {"index": step.index, "model": step.model, "text": step.text, "input_tokens": step.input_tokens,
            "output_tokens": step.output_tokens, "cost_usd": step.usage.cost_usd, "latency_s": step.latency_s,
            "reason": step.reason, "side_calls": len(step.side_calls), "retries": step.retries,
            "fallback_from": step.fallback_from}


def roro_body(route: str, traj: Trajectory, *, steps: bool = True) -> dict[str, Any]:
    """The ``roro`` extension: who wrote each step, what each cost and took, why the run stopped."""
    out: dict[str, Any] = {
        "route": route, "router": traj.router, "trajectory_id": traj.id, "query_id": traj.query.id,
        "answer": traj.answer, "stop_reason": traj.stop_reason, "n_steps": len(traj.steps),
        "steps_by_model": traj.steps_by_model(), "cost_usd": traj.cost_usd, "priced": traj.usage.priced,
        "wall_time_s": traj.wall_time_s,
    }
    if traj.correct is not None:
        out["correct"] = traj.correct
    if steps:
        out["steps"] = [step_body(s) for s in traj.steps]
    return out


def completion_body(route: str, traj: Trajectory, delimiter: str = "\n\n") -> dict[str, Any]:
    return {
        "id": completion_id(traj), "object": "chat.completion", "created": int(time.time()), "model": route,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": traj.text(delimiter)}, "logprobs": None,
                     "finish_reason": FINISH_REASON.get(traj.stop_reason or "", "stop")}],
        "usage": usage_body(traj), "roro": roro_body(route, traj),
    }


def chunk_body(chunk_id: str, route: str, created: int, delta: dict[str, Any], *, finish_reason: str | None = None,
               roro: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": route,
                           "system_fingerprint": None,
                           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if roro is not None:
        out["roro"] = roro
    return out


def step_delta(step: Step, delimiter: str = "\n\n") -> str:
    """The text a step adds to the answer: steps are joined by the pool's delimiter."""
    return (delimiter if step.index else "") + step.text


def error_body(message: str, *, type: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
