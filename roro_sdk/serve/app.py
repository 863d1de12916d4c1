"""The HTTP face of :class:`RoutedService`: an OpenAI-compatible aiohttp application.

Why aiohttp rather than FastAPI + uvicorn: LiteLLM already depends on it, so the server adds no
package to the install (``roro-sdk[server]`` only names it), and it is the stack of the test
double (:class:`roro_sdk.testing.FakeOpenAIServer`). What FastAPI would add (request models,
OpenAPI pages) does not fit here: OpenAI-compatible errors need their own validation anyway.

Order of checks on ``POST /v1/chat/completions``: key (401), capacity (429 + Retry-After), body
size (413), JSON and fields (400), route (404), then routing; a model that still fails after
its retries and fallback is a 502, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import InvalidRequestError, RoroError, UnknownRouteError
from ..types import Step
from .auth import KeyChecker
from .config import ServeLimits
from .openai_format import (
    FINISH_REASON,
    ChatRequest,
    chunk_body,
    completion_body,
    completion_id,
    error_body,
    parse_chat_request,
    roro_body,
    step_body,
    step_delta,
    usage_body,
)
from .service import RoutedService, upstream_failed

log = logging.getLogger("roro_sdk.serve")
SERVICE = web.AppKey("service", RoutedService)
ROUTE = web.RequestKey("route", str)
_OPEN_PATHS = {"/health"}
_JSON_DUMPS = json.dumps


class _Full(Exception):
    pass


class Admission:
    """At most ``max_concurrency`` requests routed at once and ``max_queue`` waiting; past that a
    request is refused at once (the caller retries after ``Retry-After``) instead of piling up."""

    def __init__(self, limits: ServeLimits):
        self.limits = limits
        self._slots = asyncio.Semaphore(limits.max_concurrency)
        self.running = 0
        self.waiting = 0

    def __call__(self) -> _Slot:
        if self.running + self.waiting >= self.limits.max_concurrency + self.limits.max_queue:
            raise _Full()
        return _Slot(self)


class _Slot:
    def __init__(self, adm: Admission):
        self.adm = adm

    async def __aenter__(self) -> None:
        self.adm.waiting += 1
        try:
            await self.adm._slots.acquire()
        finally:
            self.adm.waiting -= 1
        self.adm.running += 1

    async def __aexit__(self, *exc: object) -> None:
        self.adm.running -= 1
        self.adm._slots.release()


def _error(status: int, message: str, *, type: str = "invalid_request_error", code: str | None = None,
           headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(error_body(message, type=type, code=code), status=status, headers=headers)


_KIND = {400: "bad_request", 401: "auth", 404: "not_found", 405: "bad_request", 413: "too_large", 429: "overloaded",
         502: "upstream", 500: "internal"}


def create_app(service: RoutedService, *, api_keys: list[str] | None = None, limits: ServeLimits | None = None,
               close_service: bool = True) -> web.Application:
    """The aiohttp application. ``api_keys``: when any is given, every path but ``/health`` needs
    ``Authorization: Bearer <key>``. ``close_service``: close the service (its log) on cleanup."""
    limits = limits or ServeLimits()
    keys = KeyChecker(api_keys or [])
    admission = Admission(limits)
    metrics = service.metrics

    @web.middleware
    async def openai_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if request.path not in _OPEN_PATHS and not keys.allows(request.headers.get("Authorization")):
            resp = _error(401, "missing or invalid API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as e:  # aiohttp's own 404/405/413: in OpenAI's error shape
                code = "request_too_large" if e.status == 413 else None
                resp = _error(e.status, e.reason if e.status != 404 else f"no such path: {request.path}", code=code)
            except Exception:
                log.exception("roro serve: internal error on %s", request.path)
                resp = _error(500, "internal server error (see the server's log)", type="server_error")
        if resp.status >= 400:
            metrics.inc("roro_errors_total", kind=_KIND.get(resp.status, "internal"))
        if request.path == "/v1/chat/completions":
            metrics.inc("roro_requests_total", route=request.get(ROUTE, "-"), code=str(resp.status))
        return resp

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        try:
            slot = admission()
        except _Full:
            return _error(429, f"the server is at capacity ({limits.max_concurrency} running, {limits.max_queue} waiting); "
                               "retry later", type="rate_limit_error", code="rate_limit_exceeded",
                          headers={"Retry-After": str(limits.retry_after_s)})
        async with slot:
            return await _complete(request)

    async def _complete(request: web.Request) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > limits.max_body_bytes:
            return _error(413, f"request body of {length} bytes is over the limit of {limits.max_body_bytes}",
                          code="request_too_large")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body is over the limit of {limits.max_body_bytes} bytes", code="request_too_large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            return _error(400, f"the request body is not valid JSON: {e}")
        try:
            req = parse_chat_request(body)
            prepared = service.prepare(req)  # the route and budgets are checked before any work
        except UnknownRouteError as e:
            return _error(404, str(e), code="model_not_found")
        except (InvalidRequestError, RoroError) as e:  # a bad budget is a BudgetError (a ConfigError)
            return _error(400, str(e))
        route = request[ROUTE] = prepared[0]
        if req.stream:
            return await _stream(request, req, prepared)
        _, traj = await service.run(req, prepared=prepared)
        if traj.stop_reason == "error":
            return _failure(traj)
        return web.json_response(completion_body(route, traj, service.pool.prompt.delimiter), dumps=_JSON_DUMPS)

    async def _stream(request: web.Request, req: ChatRequest, prepared: tuple) -> web.StreamResponse:
        # Headers go out with the first step, so a request that fails before any step still gets
        # a plain error status (502) instead of a 200 stream that ends in an error event.
        events: asyncio.Queue[Step | None] = asyncio.Queue()
        route = prepared[0]
        task = asyncio.ensure_future(service.run(req, on_step=events.put_nowait, prepared=prepared))
        task.add_done_callback(lambda _: events.put_nowait(None))
        first = await events.get()
        if first is None:
            _, traj = task.result()
            if traj.stop_reason == "error":
                return _failure(traj)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        created = int(time.time())
        delimiter = service.pool.prompt.delimiter
        chunk_id: str | None = None
        try:
            await resp.prepare(request)
            step = first
            while step is not None:
                if chunk_id is None:
                    chunk_id = f"chatcmpl-roro-s{id(task):x}{created:x}"
                    await _send(resp, chunk_body(chunk_id, route, created, {"role": "assistant", "content": ""}))
                await _send(resp, chunk_body(chunk_id, route, created, {"content": step_delta(step, delimiter)},
                                             roro={"step": step_body(step)}))
                step = await events.get()
            _, traj = task.result()
            chunk_id = chunk_id or completion_id(traj)
            if traj.stop_reason == "error":  # after some steps: the status is sent, so an error event
                await _send(resp, error_body(_failure_message(traj), type="server_error", code="upstream_error"))
            else:
                await _send(resp, chunk_body(chunk_id, route, created, {}, finish_reason=FINISH_REASON.get(traj.stop_reason or "", "stop"),
                                             roro=roro_body(route, traj, steps=False)))
                if req.include_usage:
                    last = chunk_body(chunk_id, route, created, {})
                    last["choices"], last["usage"] = [], usage_body(traj)
                    await _send(resp, last)
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            task.cancel()  # the client is gone: stop paying for steps nobody reads
            raise
        return resp

    async def models(request: web.Request) -> web.Response:
        now = int(time.time())
        return web.json_response({"object": "list", "data": [
            {"id": name, "object": "model", "created": now, "owned_by": "roro", "router": router.name}
            for name, router in ((n, service.routes.resolve(n)[1]) for n in service.routes.names)]})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "routes": service.routes.names, "in_flight": admission.running,
                                  "queued": admission.waiting})

    async def prometheus(request: web.Request) -> web.Response:
        metrics.set("roro_in_flight_requests", admission.running)
        metrics.set("roro_queued_requests", admission.waiting)
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8",
                            headers={"X-Prometheus-Format": "0.0.4"})

    def _failure(traj) -> web.Response:
        if upstream_failed(traj):
            return _error(502, _failure_message(traj), type="server_error", code="upstream_error")
        return _error(500, _failure_message(traj), type="server_error")

    def _failure_message(traj) -> str:
        return f"routing failed after {len(traj.steps)} step(s): {traj.error}"  # the runtime redacted secrets in it

    async def on_cleanup(app: web.Application) -> None:
        if close_service:
            service.close()

    app = web.Application(middlewares=[openai_errors], client_max_size=limits.max_body_bytes)
    app[SERVICE] = service
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", prometheus)
    app.on_cleanup.append(on_cleanup)
    return app


async def _send(resp: web.StreamResponse, payload: dict[str, Any]) -> None:
    await resp.write(b"data: " + _JSON_DUMPS(payload).encode("utf-8") + b"\n\n")
