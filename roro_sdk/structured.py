"""Structured output from a chat model: ask for JSON, validate it, re-ask with the error.

The LiteLLM Rubricor and Judge both work this way (:func:`ask_structured`): a reply is bounded and
parsed (:func:`extract_json_object`), validated by the caller's function, and on failure the
model is asked again with the validation error, at most ``max_reasks`` times, before a typed
:class:`~roro_sdk.errors.OutputValidationError`. Also here: how a backend names its model
(:func:`as_model_pool`), the token log-probabilities of a reply (:func:`reply_tokens`), and the
spend of a model-calling backend (:func:`spent_of`, :func:`usage_delta`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from .errors import ConfigError, OutputValidationError
from .types import ModelSpec, Usage

if TYPE_CHECKING:  # pragma: no cover
    from .pool import Generation, ModelPool

T = TypeVar("T")

# A reply is bounded before it is parsed: json.loads recurses once per nesting level, so a reply
# nested ~1000 deep raised RecursionError (not a ValueError) out of the re-ask loop and killed a
# whole batch. Real verdicts and rubrics nest 3-4 levels and stay far below these sizes.
MAX_JSON_DEPTH = 32
MAX_JSON_CHARS = 100_000

REASK = ("Your reply could not be used: {error}\n"
         "Reply again with only the corrected JSON object, no other text.")


def short_error(e: Exception) -> str:
    """A validation error in a few words a model (or a person) can act on."""
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors()[:6]:
            loc = ".".join(str(x) for x in err.get("loc", ())) or "(root)"
            parts.append(f"{loc}: {err.get('msg')}")
        more = f" (+{e.error_count() - 6} more)" if e.error_count() > 6 else ""
        return "; ".join(parts) + more
    return str(e)[:400]


def extract_json_object(text: str) -> Any:
    """The first JSON object in ``text`` (code fences and chatter around it are ignored).

    Raises ``ValueError`` with a short reason: empty reply, no object, truncated, invalid JSON,
    nested deeper than :data:`MAX_JSON_DEPTH` or longer than :data:`MAX_JSON_CHARS`.
    """
    if not text or not text.strip():
        raise ValueError("the reply is empty; reply with one JSON object")
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object found in the reply; reply with one JSON object and nothing else")
    depth, nest, in_str, esc = 0, 0, False, False
    for i in range(start, len(text)):
        if i - start >= MAX_JSON_CHARS:
            raise ValueError(f"the JSON object is longer than {MAX_JSON_CHARS} characters; reply with a short object")
        ch = text[i]
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "{[":
            depth += ch == "{"
            nest += 1
            if nest > MAX_JSON_DEPTH:
                raise ValueError(f"the JSON is nested deeper than {MAX_JSON_DEPTH} levels; reply with a flat object")
        elif ch in "}]":
            nest -= 1
            if ch == "}":
                depth -= 1
                if depth == 0:
                    return _loads(text[start: i + 1])
    raise ValueError("the JSON object is truncated (unbalanced braces); reply with the complete object")


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"invalid JSON: {e.msg} at char {e.pos}") from None
    except RecursionError:  # pragma: no cover - the depth bound above keeps json.loads shallow
        raise ValueError("the JSON is nested too deeply; reply with a flat object") from None


async def ask_structured(pool: ModelPool, name: str, messages: list[dict[str, str]], validate: Callable[[str], T], *,
                         max_reasks: int = 2, max_tokens: int = 1024, temperature: float = 0.0, logprobs: bool = False,
                         top_logprobs: int | None = None, what: str = "output") -> tuple[T, Generation, int, Usage]:
    """Ask ``pool[name]`` and validate the reply with ``validate(text)`` (raises ``ValueError`` /
    ``ValidationError`` on bad output). On failure the model is re-asked with the error, at most
    ``max_reasks`` times; then :class:`OutputValidationError` (with ``attempts``, ``last_output``
    and ``usage`` attributes). Model-call errors propagate as they are (typed).

    Returns ``(value, generation, attempts, usage of all attempts)``."""
    if max_reasks < 0:
        raise ConfigError(f"max_reasks must be >= 0, got {max_reasks}")
    msgs = list(messages)
    usage = Usage()
    last_err, last_text = "", ""
    for attempt in range(1, max_reasks + 2):
        gen = await pool.agenerate(name, "", [], messages=msgs, cut=False, max_tokens=max_tokens, logprobs=logprobs,
                                   top_logprobs=top_logprobs, overrides={"stop": None, "temperature": temperature})
        usage = usage + Usage(input_tokens=gen.input_tokens, output_tokens=gen.output_tokens, cost_usd=gen.cost_usd,
                              priced=gen.priced)
        last_text = gen.text or ""
        try:
            return validate(last_text), gen, attempt, usage
        except (ValidationError, ValueError, TypeError, RecursionError) as e:
            last_err = short_error(e) if not isinstance(e, RecursionError) else "the reply is nested too deeply"
            msgs = msgs + [{"role": "assistant", "content": last_text or "(empty reply)"},
                           {"role": "user", "content": REASK.format(error=last_err)}]
    err = OutputValidationError(f"{what} from model {name!r} stayed invalid after {max_reasks + 1} attempt(s): "
                                f"{last_err}; last reply: {last_text[:160]!r}")
    err.attempts, err.last_output, err.usage = max_reasks + 1, last_text, usage  # type: ignore[attr-defined]
    raise err


def field_of(obj: Any, key: str) -> Any:
    """``obj[key]`` of a dict, else ``obj.key`` (None when absent): providers return OpenAI-style
    objects or plain dicts for the same response."""
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def reply_tokens(gen: Generation) -> list[tuple[str, float, dict[str, float]]] | None:
    """``(token, logprob, {alternative: logprob})`` per output token of a reply, from its raw
    response; None when the provider returned no log-probabilities."""
    try:
        lp = field_of(gen.raw.choices[0], "logprobs")
    except (AttributeError, IndexError, TypeError):
        return None
    content = field_of(lp, "content") if lp is not None else None
    if not content:
        return None
    out = []
    for t in content:
        tops = {str(field_of(x, "token")): float(field_of(x, "logprob")) for x in (field_of(t, "top_logprobs") or [])}
        out.append((str(field_of(t, "token")), float(field_of(t, "logprob")), tops))
    return out


def _truth(tok: str) -> int:
    """1 for a token that spells true/yes, 0 for false/no, -1 for anything else."""
    s = tok.strip().strip('"').lower()
    if s.startswith(("true", "yes")):
        return 1
    if s.startswith(("false", "no")):
        return 0
    return -1


def json_bool_probabilities(gen: Generation, text: str, key: str, n: int) -> list[float] | None:
    """P(true) of each of the ``n`` ``"<key>": true|false`` values in the reply ``text``, from the
    token log-probabilities: P(true) / (P(true) + P(false)) over the top alternatives at the
    value's token (or the sampled token's own probability when no alternatives came). None when
    the provider returned no log-probabilities or the values cannot be located."""
    toks = reply_tokens(gen)
    if not toks:
        return None
    spans, cursor = [], 0
    for tok, _, _ in toks:  # locate each token in the text (tokens may omit whitespace)
        j = text.find(tok, cursor) if tok else -1
        if j < 0:
            spans.append((cursor, cursor))
            continue
        spans.append((j, j + len(tok)))
        cursor = j + len(tok)
    matches = list(re.finditer(r'"' + re.escape(key) + r'"\s*:\s*"?(true|false|yes|no)', text, re.I))
    if len(matches) != n:
        return None
    probs = []
    for m in matches:
        o = m.start(1)
        idx = next((i for i, (a, b) in enumerate(spans) if a <= o < b), None)
        if idx is None:
            return None
        tok, lp, tops = toks[idx]
        p_yes = sum(math.exp(v) for k, v in tops.items() if _truth(k) == 1)
        p_no = sum(math.exp(v) for k, v in tops.items() if _truth(k) == 0)
        if p_yes + p_no > 0 and len(tops) > 1:
            probs.append(p_yes / (p_yes + p_no))
        elif _truth(tok) == 1:
            probs.append(min(1.0, math.exp(lp)))
        elif _truth(tok) == 0:
            probs.append(max(0.0, 1.0 - math.exp(lp)))
        else:
            return None
    return probs


def as_model_pool(model: ModelPool | ModelSpec | dict | str, name: str | None = None, *,
                  default_name: str = "model") -> tuple[ModelPool, str]:
    """``(pool, model name)`` from a pool (+ a name in it), a :class:`ModelSpec`, its dict, or a
    LiteLLM model string (unpriced models are accepted; their costs are flagged)."""
    from .pool import ModelPool

    if isinstance(model, ModelPool):
        return model, name or model.names[0]
    if isinstance(model, str):
        model = ModelSpec(name=default_name, model=model)
    if isinstance(model, dict):
        model = ModelSpec.model_validate({"name": default_name, **model})
    if not isinstance(model, ModelSpec):
        raise ConfigError(f"expected a ModelPool, ModelSpec, dict or LiteLLM model string, not {type(model).__name__}")
    return ModelPool([model], allow_unpriced=True), model.name


def spent_of(obj: Any, *, own: bool = False) -> Usage:
    """What a Judge or Rubricor has spent so far (its ``spent``; zero for objects without one)."""
    u = getattr(obj, "_spent" if own else "spent", None)
    return u if isinstance(u, Usage) else Usage()


def usage_delta(after: Usage, before: Usage) -> Usage:
    """``after - before``: the spend between two readings of :func:`spent_of`."""
    return Usage(input_tokens=after.input_tokens - before.input_tokens,
                 output_tokens=after.output_tokens - before.output_tokens,
                 cost_usd=after.cost_usd - before.cost_usd, priced=after.priced)
