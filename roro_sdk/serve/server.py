"""Starting and stopping the server: in the foreground (``roro serve``) or in a background thread
(tests, notebooks, the docs), with the same security checks either way.

Shutdown (SIGTERM, SIGINT, :meth:`BackgroundServer.stop`) stops accepting, lets in-flight
requests finish for up to ``limits.shutdown_timeout_s``, then closes the trajectory log; every
trajectory finished by then is on disk (each line is written when its request completes).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..pool import ModelPool
from .app import create_app
from .auth import check_exposure, is_loopback, load_api_keys
from .config import ServeConfig
from .service import RoutedService

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'  # no header: a key never reaches the log


def _listen(host: str, port: int) -> socket.socket:
    try:
        return socket.create_server((host, port), backlog=2048)
    except OSError as e:
        from ..errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def _prepare(config: ServeConfig, pool: ModelPool | None, service: RoutedService | None):
    keys = load_api_keys(config.api_key_env, config.api_key_file)
    check_exposure(config.host, keys, config.api_key_env, config.api_key_file)
    service = service or RoutedService.from_config(config, pool=pool)
    return keys, service


def describe(config: ServeConfig, service: RoutedService, keys: list[str], port: int) -> str:
    """The start-up line: where, which routes, whether keys are needed (never the keys)."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    auth = f"API key required ({len(keys)} configured)" if keys else "no API key (loopback only)"
    log_ = f"; trajectory log: {service.trajectory_log}" if service.trajectory_log else ""
    return (f"roro serve: http://{host}:{port}/v1 -- routes: {', '.join(service.routes.names)}; pool: "
            f"{', '.join(service.pool.names)}; {auth}{log_}")


def run_server(config: ServeConfig, *, pool: ModelPool | None = None, announce: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until SIGINT/SIGTERM (``roro serve``)."""
    keys, service = _prepare(config, pool, None)
    sock = _listen(config.host, config.port)
    port = sock.getsockname()[1]
    (announce or (lambda s: print(s, flush=True)))(describe(config, service, keys, port))
    if config.access_log:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    app = create_app(service, api_keys=keys, limits=config.limits)
    _freeze_startup_objects()
    web.run_app(app, sock=sock, shutdown_timeout=config.limits.shutdown_timeout_s, print=None,
                access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
                access_log_format=ACCESS_LOG_FORMAT)


def _freeze_startup_objects() -> None:
    """Keep the import-time objects out of the garbage collector's full passes. LiteLLM alone leaves
    ~390k objects; a full collection over them took 230 ms here, a pause every request in flight
    waits out. Frozen (the process is ours: ``roro serve``), a full pass only walks new objects."""
    from .._env import import_litellm

    import_litellm()  # the first request would import it; import it before the freeze instead
    gc.collect()
    gc.freeze()


@dataclass
class BackgroundServer:
    """A server in a thread of this process. ``url`` is ``http://127.0.0.1:<port>`` (add ``/v1``
    for an OpenAI client); ``service`` its :class:`RoutedService` (routes, metrics)."""

    url: str
    port: int
    service: RoutedService
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _runner: web.AppRunner = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        """Graceful: in-flight requests finish (up to the shutdown timeout), then the log closes."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            await self._runner.cleanup()
            # what else runs on this loop (LiteLLM's logging worker) ends with it, not as a warning
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(config: ServeConfig | None = None, *, pool: ModelPool | None = None,
                 service: RoutedService | None = None) -> BackgroundServer:
    """Start a server in a background thread and return once it accepts connections.

    ``config.port=0`` picks a free port. The same checks as ``roro serve`` apply (keys beyond loopback).
    """
    config = config or ServeConfig(port=0)
    keys, service = _prepare(config, pool, service)
    sock = _listen(config.host, config.port)
    port = sock.getsockname()[1]
    app = create_app(service, api_keys=keys, limits=config.limits)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.limits.shutdown_timeout_s)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
        except BaseException as e:  # reported to the caller, not lost in the thread
            failure.append(e)
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True, name=f"roro-serve-{port}")
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    host = "127.0.0.1" if is_loopback(config.host) and ":" not in config.host else config.host
    return BackgroundServer(url=f"http://{host}:{port}", port=port, service=service, _loop=loop, _runner=runner,
                            _thread=thread)
