"""First-class test doubles: a local OpenAI-compatible server and scripted routers.

``FakeOpenAIServer`` serves ``/v1/chat/completions`` on 127.0.0.1 with scripted models, so tests
and benchmarks exercise LiteLLM's real HTTP path without a key or a network. It can inject
429/5xx errors and timeouts per model, add a fixed latency, report usage, and return logprobs.

    with FakeOpenAIServer({"small": FakeModel(answer="41"), "large": FakeModel(answer="42")}) as srv:
        pool = ModelPool([srv.spec("small", price=(0.1, 0.4)), srv.spec("large", price=(1, 4))])
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .routers.base import Decision, Router, RoutingState, one_hot
from .types import ModelSpec

__all__ = ["FakeModel", "FakeOpenAIServer", "ScriptedRouter", "count_prefix_steps"]


@dataclass
class FakeModel:
    """A scripted model: writes ``steps`` numbered steps, then ``Answer: <answer>``.

    ``confidence`` is the probability reported for each token when logprobs are asked for;
    ``verdict`` is the digit it answers to a SpecReason-style "Reply with a single digit" prompt.
    ``step_text`` may be a function ``(step_index, request) -> str`` for custom scripts.
    ``reply`` may be a function ``(request) -> str`` that answers *any* request with arbitrary
    content (structured-output tests: garbage, truncated JSON, wrong types, empty text).
    ``alternatives`` maps an output word to its top-logprob alternatives ``{token: probability}``
    (returned when ``top_logprobs`` is asked for), e.g. ``{"true}": {"true}": 0.8, "false}": 0.2}}``.
    """

    answer: str = "42"
    steps: int = 3
    confidence: float = 0.9
    verdict: str = "8"
    step_text: Callable[[int, dict], str] | None = None
    words_per_step: int = 8
    logprobs: bool = True
    reply: Callable[[dict], str] | None = None
    alternatives: dict[str, dict[str, float]] | None = None


def count_prefix_steps(messages: list[dict[str, Any]], delimiter: str = "\n\n") -> int:
    """How many steps a request already holds (prefix mode: the trailing assistant text; chat
    mode: the 'Steps so far' block that roro-sdk's prompt template writes)."""
    last = messages[-1] if messages else {}
    if last.get("role") == "assistant":
        return len([p for p in str(last.get("content", "")).split(delimiter) if p.strip()])
    m = re.search(r"Steps so far:\n\n(.*?)\n\nWrite only the next step", str(last.get("content", "")), re.S)
    return len([p for p in m.group(1).split(delimiter) if p.strip()]) if m else 0


def _words(messages: Iterable[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content") or "").split()) + 4 for m in messages)


class FakeOpenAIServer:
    """An OpenAI-compatible chat-completions server on 127.0.0.1 (an aiohttp app in a thread).

    ``inject(model, [429, 500, "timeout", "reset", 200, ...])`` queues outcomes for that model's next
    requests; ``latency_s`` delays every answer; ``requests`` records every request body.
    Faults of a 200 response: ``"empty"`` (content ""), ``"null_content"`` (content null),
    ``"no_choices"`` (``choices: []``), ``"no_message"`` (a choice without a message); and
    ``"echo_key"``: a 401 whose error message echoes the request's Authorization header, as some
    providers do.
    """

    def __init__(self, models: dict[str, FakeModel] | None = None, *, latency_s: float = 0.0,
                 timeout_sleep_s: float = 5.0, port: int = 0, record: bool = True):
        self.models = models or {"small": FakeModel(answer="41"), "large": FakeModel(answer="42")}
        self.latency_s, self.timeout_sleep_s, self.port = latency_s, timeout_sleep_s, port
        self.record = record
        self.requests: list[dict[str, Any]] = []
        self.calls: dict[str, int] = defaultdict(int)
        self._plans: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None

    # ----- lifecycle -----
    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, name: str, *, price: tuple[float, float] | None = (1.0, 2.0), mode: str = "chat", **kw: Any) -> ModelSpec:
        """A :class:`ModelSpec` for one of this server's models, routed through LiteLLM's OpenAI path."""
        prices = {"input_price_per_m": price[0], "output_price_per_m": price[1]} if price else {}
        return ModelSpec(name=kw.pop("alias", name), model=f"openai/{name}", api_base=self.api_base, mode=mode, **prices, **kw)

    def inject(self, model: str, outcomes: Iterable[int | str]) -> None:
        with self._lock:
            self._plans[model].extend(outcomes)

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            from aiohttp import web

            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._handle)
            app.router.add_get("/v1/models", self._models)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True, name="fake-openai-server")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeOpenAIServer did not start")

    def stop(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    # ----- handlers -----
    async def _models(self, request):
        from aiohttp import web

        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    async def _handle(self, request):
        from aiohttp import web

        body = await request.json()
        model = str(body.get("model", ""))
        with self._lock:
            if self.record:
                self.requests.append(body)
            self.calls[model] += 1
            plan = self._plans[model].popleft() if self._plans[model] else 200
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if plan == "timeout":
            await asyncio.sleep(self.timeout_sleep_s)
        elif plan == "reset":
            request.transport.close()
            return web.Response(status=500)
        elif plan == "echo_key":
            auth = request.headers.get("Authorization", "")
            return web.json_response({"error": {"message": f"invalid credentials: {auth}", "type": "invalid_request_error",
                                                "code": 401}}, status=401)
        elif isinstance(plan, int) and plan != 200:
            return web.json_response({"error": {"message": f"injected {plan}", "type": "injected", "code": plan}}, status=plan)
        if model not in self.models:
            return web.json_response({"error": {"message": f"model {model} not found", "type": "invalid_request_error"}}, status=404)
        out = self._complete(model, body)
        if plan in _FAULTS_200:
            _malform(out, plan)
        return web.json_response(out)

    def _complete(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        fm = self.models[model]
        msgs = body.get("messages", [])
        last = str(msgs[-1].get("content", "")) if msgs else ""
        if fm.reply is not None:
            text = fm.reply(body)
        elif "Reply with a single digit" in last:
            text = fm.verdict
        else:
            k = count_prefix_steps(msgs)
            if fm.step_text is not None:
                text = fm.step_text(k, body)
            elif k >= fm.steps:
                text = f"Answer: {fm.answer}"
            else:
                filler = " ".join(["so"] * max(0, fm.words_per_step - 4))
                text = f"{model} step {k + 1}: {filler}".strip()
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        words = text.split()
        finish = "stop"
        if max_tokens is not None and len(words) > int(max_tokens):
            words, finish = words[: int(max_tokens)], "length"
            text = " ".join(words)
        out: dict[str, Any] = {
            "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": _words(msgs), "completion_tokens": len(words), "total_tokens": _words(msgs) + len(words)},
        }
        if body.get("logprobs") and fm.logprobs:
            lp = math.log(max(fm.confidence, 1e-9))
            top_n = int(body.get("top_logprobs") or 0)
            content = []
            for w in words:
                tops = [{"token": w, "logprob": lp, "bytes": None}]
                if fm.alternatives and w in fm.alternatives:
                    tops = [{"token": t, "logprob": math.log(max(p, 1e-12)), "bytes": None}
                            for t, p in fm.alternatives[w].items()][: max(top_n, 1)]
                elif top_n > 1 and w.isdigit():
                    rest = math.log(max(1 - fm.confidence, 1e-9) / 9)
                    tops += [{"token": str(d), "logprob": rest, "bytes": None} for d in range(10) if str(d) != w][: top_n - 1]
                content.append({"token": w, "logprob": lp, "bytes": None, "top_logprobs": tops})
            out["choices"][0]["logprobs"] = {"content": content}
        return out


_FAULTS_200 = ("empty", "null_content", "no_choices", "no_message")


def _malform(out: dict[str, Any], fault: str) -> None:
    """Turn a good completion into the 200-response fault ``fault`` (see FakeOpenAIServer)."""
    choice = out["choices"][0]
    if fault in ("empty", "null_content"):
        choice["message"]["content"] = "" if fault == "empty" else None
        choice.pop("logprobs", None)
        out["usage"]["completion_tokens"] = 0
        out["usage"]["total_tokens"] = out["usage"]["prompt_tokens"]
    elif fault == "no_choices":
        out["choices"] = []
    elif fault == "no_message":
        del choice["message"]


class ScriptedRouter(Router):
    """A router that follows a fixed list of model names (then repeats the last): for tests."""

    def __init__(self, script: list[str], name: str = "scripted"):
        if not script:
            raise ValueError("ScriptedRouter needs at least one model name")
        self.script, self.name = list(script), name

    def check(self, pool) -> None:
        self._require(pool, *set(self.script))

    def decide(self, state: RoutingState) -> Decision:
        m = self.script[min(state.step_index, len(self.script) - 1)]
        return Decision(m, one_hot(state.pool.names, m), f"script step {state.step_index}")


def main() -> None:  # pragma: no cover - used by benchmarks to serve from a separate process
    import argparse

    ap = argparse.ArgumentParser(description="serve FakeOpenAIServer (small/large scripted models)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=8)
    a = ap.parse_args()
    models = {"small": FakeModel(answer="41", steps=a.steps), "large": FakeModel(answer="42", steps=a.steps)}
    srv = FakeOpenAIServer(models, latency_s=a.latency_ms / 1000, port=a.port, record=False)
    srv.start()
    print(srv.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
