"""The ``roro_sim`` LiteLLM provider and the sim model pool.

Why a LiteLLM provider rather than a stub router: sim models are reached through the same pool,
LiteLLM call, usage accounting, retries and cache as real models, so the bench tests the whole
path a router takes, in microseconds per step instead of seconds.

Which :class:`SimConfig` answers a call is named by ``api_base="sim://<config key>"`` (set by
:func:`sim_pool` / :func:`register_sim_config`); without an ``api_base`` the default config
answers. Putting the config in ``api_base`` also puts it in every cache key.
"""

from __future__ import annotations

import threading
from typing import Any

from ..pool import ModelPool
from ..errors import RoroError
from ..types import ModelSpec, SamplingParams
from .config import SimConfig
from .engine import logprob, pending_after, read_records, verdict_digit, write_step
from .tasks import HEADER_RE, SimTask

PROVIDER = "roro_sim"
_DEFAULT_KEY = "default"
_configs: dict[str, SimConfig] = {_DEFAULT_KEY: SimConfig()}
_lock = threading.Lock()
_handler: Any = None
_VERIFY_MARKER = "single digit"
_PROPOSED = "Proposed next step:"


class SimRequestError(RoroError, ValueError):
    """A request the sim cannot answer; ``status_code`` is what LiteLLM reports (400/404)."""

    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code


def register_sim_config(config: SimConfig) -> str:
    """Make ``config`` reachable by the provider in this process; returns its ``api_base``."""
    key = config.key()
    with _lock:
        _configs[key] = config
    return f"sim://{key}"


def sim_config_for(api_base: str | None) -> SimConfig | None:
    """The config a sim pool's ``api_base`` names in this process (None when it names none), so a
    pool can be rebuilt in another process (a Ray worker) with :func:`register_sim_config`."""
    key = (api_base or "").removeprefix("sim://").strip("/") or _DEFAULT_KEY
    return _configs.get(key)


def _config_for(api_base: str | None) -> SimConfig:
    if not api_base:
        return _configs[_DEFAULT_KEY]
    key = api_base.removeprefix("sim://").strip("/")
    cfg = _configs.get(key)
    if cfg is None:
        raise SimRequestError(404, f"roro_sim: no sim config {key!r} in this process; build the pool with "
                                   "roro_sdk.sim.sim_pool(config) or call register_sim_config(config) first")
    return cfg


def _content(msg: Any) -> str:
    c = msg.get("content") if isinstance(msg, dict) else getattr(msg, "content", None)
    if isinstance(c, list):  # content parts
        return "".join(str(p.get("text", "")) if isinstance(p, dict) else str(p) for p in c)
    return str(c or "")


def sim_complete(model: str, messages: list[Any], params: dict[str, Any], api_base: str | None = None) -> dict[str, Any]:
    """The sim's answer to one chat request, as plain data (text, usage, logprobs, finish reason).

    Steps so far are the step records after the task header (prefix mode: in the trailing
    assistant message; chat mode: in the user turn). A request whose last message asks for a
    "single digit" is a verification (SpecReason's prompt): the sim scores the proposed step.
    """
    cfg = _config_for(api_base)
    if model not in cfg.models:
        raise SimRequestError(404, f"roro_sim: unknown sim model {model!r}; this config has: {', '.join(cfg.models)}")
    if int(params.get("n") or 1) != 1:
        raise SimRequestError(400, "roro_sim supports n=1 only")
    texts = [_content(m) for m in messages]
    start = next((i for i in range(len(texts) - 1, -1, -1) if HEADER_RE.search(texts[i])), None)
    if start is None:
        raise SimRequestError(400, "roro_sim: no '[sim task <id>] steps: ...' header in the messages; sim models only "
                                   "answer sim tasks (roro_sdk.sim.sim_queries or load_dataset('sim'))")
    task = SimTask.from_text(texts[start])
    assert task is not None
    seed = params.get("seed")
    seed = None if seed is None else int(seed)
    max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
    max_tokens = None if max_tokens is None else int(max_tokens)
    body = "\n\n".join(texts[start:])
    if _VERIFY_MARKER in texts[-1]:
        before, _, draft = body.partition(_PROPOSED)
        verdicts = [v for _, _, v in read_records(before)]
        k = len(verdicts)
        digit = verdict_digit(task, k, draft, pending_after(verdicts), model, cfg, seed)
        text, out_tokens, conf, finish = str(digit), 1, 0.85, "stop"
        in_tokens = cfg.prompt_tokens + (k + 1) * cfg.tokens_per_step + 60
    else:
        verdicts = [v for _, _, v in read_records(body)]
        k = len(verdicts)
        text, out_tokens, conf, finish = write_step(task, k, pending_after(verdicts), model, cfg, seed, max_tokens)
        in_tokens = cfg.prompt_tokens + k * cfg.tokens_per_step
    out: dict[str, Any] = {"text": text, "prompt_tokens": in_tokens, "completion_tokens": out_tokens, "finish_reason": finish,
                           "logprobs": None}
    if params.get("logprobs"):
        lp = logprob(conf)
        top_n = int(params.get("top_logprobs") or 0)
        content = []
        for tok in text.split():
            tops = [{"token": tok, "logprob": lp, "bytes": None}]
            if top_n > 1 and tok.isdigit() and len(tok) == 1:
                rest = logprob((1.0 - conf) / 9.0)
                tops += [{"token": str(d), "logprob": rest, "bytes": None} for d in range(10) if str(d) != tok][: top_n - 1]
            content.append({"token": tok, "logprob": lp, "bytes": None, "top_logprobs": tops})
        out["logprobs"] = content
    return out


def _make_handler():
    from .._env import import_litellm

    import_litellm()  # first, so litellm is imported offline (no fetch of its price map)
    from litellm import CustomLLM
    from litellm.llms.custom_llm import CustomLLMError
    from litellm.types.utils import ChoiceLogprobs, Choices, Message, Usage

    class RoroSimLLM(CustomLLM):
        """LiteLLM handler: sync and async calls both run :func:`sim_complete` inline (no I/O)."""

        def completion(self, model: str, messages: list, api_base: str | None = None, *args: Any,
                       optional_params: dict | None = None, **kwargs: Any):
            try:
                res = sim_complete(model, messages, optional_params or {}, api_base)
            except SimRequestError as e:
                raise CustomLLMError(status_code=e.status_code, message=str(e)) from None
            resp = kwargs["model_response"]
            resp.choices = [Choices(index=0, finish_reason=res["finish_reason"], message=Message(role="assistant", content=res["text"]),
                                    logprobs=ChoiceLogprobs(content=res["logprobs"]) if res["logprobs"] is not None else None)]
            resp.model = f"{PROVIDER}/{model}"
            resp.usage = Usage(prompt_tokens=res["prompt_tokens"], completion_tokens=res["completion_tokens"],  # type: ignore[attr-defined]
                               total_tokens=res["prompt_tokens"] + res["completion_tokens"])
            return resp

        async def acompletion(self, model: str, messages: list, api_base: str | None = None, *args: Any, **kwargs: Any):
            return self.completion(model, messages, api_base, *args, **kwargs)

        @staticmethod
        def count_prompt_tokens(model: str, messages: list, api_base: str | None = None) -> int:
            """The prompt tokens a call would report (the pool budgets with it before the call)."""
            return int(sim_complete(model, messages, {}, api_base)["prompt_tokens"])

    return RoroSimLLM()


def register_sim_provider():
    """Register ``roro_sim`` with LiteLLM (idempotent); the pool calls this on first use."""
    global _handler
    from .._env import register_litellm_provider

    with _lock:
        if _handler is None:
            _handler = _make_handler()
        register_litellm_provider(PROVIDER, _handler)
    return _handler


def sim_pool(config: SimConfig | None = None, models: tuple[str, ...] | list[str] = ("small", "large"), *,
             mode: str = "prefix", **pool_kwargs: Any) -> ModelPool:
    """A :class:`ModelPool` of sim models (priced from ``config``), reached through LiteLLM.

    Sampling is greedy (temperature 0): the sim is deterministic anyway, and greedy calls may be
    answered from a :class:`~roro_sdk.cache.GenerationCache` (pass ``cache=`` here).
    ``mode="chat"`` exercises the chat prompt path instead of the prefix one.
    """
    cfg = config or SimConfig()
    api_base = register_sim_config(cfg)
    specs = []
    for name in models:
        m = cfg.model(name)
        specs.append(ModelSpec(name=name, model=f"{PROVIDER}/{name}", api_base=api_base, mode=mode,  # type: ignore[arg-type]
                               input_price_per_m=m.input_price_per_m, output_price_per_m=m.output_price_per_m,
                               max_tokens_per_step=max(cfg.tokens_per_step, cfg.answer_tokens),
                               sampling=SamplingParams(temperature=0.0, top_p=1.0), max_retries=0))
    return ModelPool(specs, **pool_kwargs)
