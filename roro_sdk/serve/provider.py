"""The ``roro`` LiteLLM provider: ``litellm.completion(model="roro/<route>", ...)`` runs the routed
system in this process, with the server's routes, budgets and response shape (``usage.cost``,
the ``roro`` field; streamed steps carry theirs in ``delta.provider_specific_fields["roro"]``).

    from roro_sdk.serve import ServeConfig, register_roro_provider
    register_roro_provider(ServeConfig(pool="sim", routes={"steer": "steer:0.8"}))
    litellm.completion(model="roro/steer", messages=[{"role": "user", "content": "..."}])

The LiteLLM proxy loads a handler by its import path: ``roro_sdk.serve.litellm_proxy.handler``
reads its config from ``$RORO_SERVE_CONFIG`` on first use (docs/serve.md).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from .._env import import_litellm, register_litellm_provider
from ..errors import ConfigError, InvalidRequestError, UnknownRouteError
from ..types import Step, Trajectory
from .config import ServeConfig
from .openai_format import FINISH_REASON, ChatRequest, parse_chat_request, roro_body, step_body, step_delta, usage_body
from .service import RoutedService, upstream_failed

PROVIDER = "roro"
CONFIG_ENV = "RORO_SERVE_CONFIG"
# LiteLLM's own parameters that reach a custom provider; the rest of optional_params is the request's
_PASSED = {"max_tokens", "max_completion_tokens", "n", "stream_options", "tools", "functions", "roro"}
_handler: Any = None
_lock = threading.Lock()


def service_from(source: ServeConfig | RoutedService | str | Path | None) -> RoutedService:
    if isinstance(source, RoutedService):
        return source
    if isinstance(source, ServeConfig):
        return RoutedService.from_config(source)
    if source is None:
        source = os.environ.get(CONFIG_ENV)
        if not source:
            raise ConfigError(f"the roro LiteLLM provider has no routes: call register_roro_provider(config) or set "
                              f"{CONFIG_ENV} to a serve config file")
    return RoutedService.from_config(ServeConfig.from_file(source))


class _LoopThread:
    """One event loop in a daemon thread for the synchronous calls: LiteLLM keeps its async clients
    and a logging task per loop, so a fresh loop per call (asyncio.run) would rebuild the first
    and leave the second pending when the loop closes."""

    def __init__(self) -> None:
        self._loop: Any = None
        self._lock = threading.Lock()

    def submit(self, coro: Any) -> Any:
        import asyncio

        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, daemon=True, name="roro-provider-loop").start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop)


def _body(model: str, messages: list, optional_params: dict[str, Any] | None) -> dict[str, Any]:
    params = dict(optional_params or {})
    body: dict[str, Any] = {k: v for k, v in params.items() if k in _PASSED}
    extra = params.get("extra_body") or {}
    if isinstance(extra, dict):
        body.update({k: v for k, v in extra.items() if k in _PASSED})
    return {**body, "model": model, "messages": [m if isinstance(m, dict) else dict(m) for m in messages]}


def _make_handler():
    import_litellm()  # first: litellm imported offline
    from litellm import CustomLLM
    from litellm.llms.custom_llm import CustomLLMError
    from litellm.types.utils import Choices, Message, Usage

    def request(model: str, messages: list, optional_params: dict | None) -> ChatRequest:
        try:
            return parse_chat_request(_body(model, messages, optional_params))
        except UnknownRouteError as e:
            raise CustomLLMError(status_code=404, message=str(e)) from None
        except InvalidRequestError as e:
            raise CustomLLMError(status_code=400, message=str(e)) from None

    def failure(traj: Trajectory) -> Exception:
        return CustomLLMError(status_code=502 if upstream_failed(traj) else 500,
                              message=f"routing failed after {len(traj.steps)} step(s): {traj.error}")

    def prepared(service: RoutedService, req: ChatRequest):
        try:
            return service.prepare(req)
        except UnknownRouteError as e:
            raise CustomLLMError(status_code=404, message=str(e)) from None
        except ConfigError as e:  # a bad budget
            raise CustomLLMError(status_code=400, message=str(e)) from None

    def fill(resp: Any, route: str, traj: Trajectory, delimiter: str) -> Any:
        if traj.stop_reason == "error":
            raise failure(traj)
        u = usage_body(traj)
        resp.choices = [Choices(index=0, finish_reason=FINISH_REASON.get(traj.stop_reason or "", "stop"),
                                message=Message(role="assistant", content=traj.text(delimiter)))]
        resp.model = f"{PROVIDER}/{route}"
        resp.usage = Usage(prompt_tokens=u["prompt_tokens"], completion_tokens=u["completion_tokens"],  # type: ignore[attr-defined]
                           total_tokens=u["total_tokens"], cost=u["cost"], cost_priced=u["cost_priced"])
        resp.roro = roro_body(route, traj)
        resp._hidden_params["response_cost"] = u["cost"]
        return resp

    def step_chunk(step: Step, delimiter: str) -> dict[str, Any]:
        return {"text": step_delta(step, delimiter), "is_finished": False, "finish_reason": "", "usage": None, "index": 0,
                "provider_specific_fields": {"roro": {"step": step_body(step)}}}

    def last_chunk(route: str, traj: Trajectory) -> dict[str, Any]:
        if traj.stop_reason == "error":
            raise failure(traj)
        u = usage_body(traj)
        return {"text": "", "is_finished": True, "finish_reason": FINISH_REASON.get(traj.stop_reason or "", "stop"),
                "usage": {k: u[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}, "index": 0,
                "provider_specific_fields": {"roro": roro_body(route, traj, steps=False)}}

    class RoroLiteLLM(CustomLLM):
        """LiteLLM handler of ``roro/<route>``: each call is one request of :class:`RoutedService`."""

        def __init__(self, service: RoutedService | None = None):
            super().__init__()
            self._service = service
            self._sync_loop = _LoopThread()

        @property
        def service(self) -> RoutedService:
            if self._service is None:  # the proxy's handler: configured by $RORO_SERVE_CONFIG
                with _lock:
                    if self._service is None:
                        self._service = service_from(None)
            return self._service

        @service.setter
        def service(self, value: RoutedService) -> None:
            self._service = value

        def completion(self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kw: Any):
            svc = self.service
            req = request(model, messages, optional_params)
            route, traj = self._sync_loop.submit(svc.run(req, prepared=prepared(svc, req))).result()
            return fill(kw["model_response"], route, traj, svc.pool.prompt.delimiter)

        async def acompletion(self, model: str, messages: list, *args: Any, optional_params: dict | None = None, **kw: Any):
            svc = self.service
            req = request(model, messages, optional_params)
            route, traj = await svc.run(req, prepared=prepared(svc, req))
            return fill(kw["model_response"], route, traj, svc.pool.prompt.delimiter)

        def streaming(self, model: str, messages: list, *args: Any, optional_params: dict | None = None,
                      **kw: Any) -> Iterator[dict]:
            svc = self.service
            req = request(model, messages, optional_params)
            events: queue.Queue = queue.Queue()
            future = self._sync_loop.submit(svc.run(req, on_step=events.put, prepared=prepared(svc, req)))
            future.add_done_callback(lambda _: events.put(None))
            try:
                while (step := events.get()) is not None:
                    yield step_chunk(step, svc.pool.prompt.delimiter)
                yield last_chunk(*future.result())
            finally:
                future.cancel()  # the caller stopped reading: stop paying for steps

        async def astreaming(self, model: str, messages: list, *args: Any, optional_params: dict | None = None,
                             **kw: Any) -> AsyncIterator[dict]:
            import asyncio

            svc = self.service
            req = request(model, messages, optional_params)
            events: asyncio.Queue = asyncio.Queue()
            task = asyncio.ensure_future(svc.run(req, on_step=events.put_nowait, prepared=prepared(svc, req)))
            task.add_done_callback(lambda _: events.put_nowait(None))
            try:
                while (step := await events.get()) is not None:
                    yield step_chunk(step, svc.pool.prompt.delimiter)
                yield last_chunk(*task.result())
            finally:
                task.cancel()

    return RoroLiteLLM


def make_handler(service: RoutedService | None = None) -> Any:
    """A LiteLLM ``CustomLLM`` for ``roro/<route>`` over ``service`` (None: ``$RORO_SERVE_CONFIG``)."""
    return _make_handler()(service)


def register_roro_provider(source: ServeConfig | RoutedService | str | Path | None = None) -> RoutedService:
    """Make ``litellm.completion(model="roro/<route>")`` run the routed system in this process.

    ``source``: a :class:`ServeConfig`, a serve config file, a :class:`RoutedService` (to share
    one with a server), or None for ``$RORO_SERVE_CONFIG``. Calling it again replaces the routes.
    Returns the service (its ``routes.names`` are the models, its ``metrics`` what ran)."""
    global _handler
    service = service_from(source)
    with _lock:
        if _handler is None:
            _handler = make_handler(service)
        else:
            _handler.service = service
        register_litellm_provider(PROVIDER, _handler)
    return service
