"""``roro_sdk.serve``: the routed system as an OpenAI-compatible server and as a LiteLLM provider.

    roro serve --pool sim --route steer-0.8=steer:0.8      # then any OpenAI client, model="steer-0.8"

    from roro_sdk.serve import ServeConfig, start_server, register_roro_provider
    server = start_server(ServeConfig(pool="sim", routes={"steer-0.8": "steer:0.8"}, port=0))
    register_roro_provider(server.service)                  # litellm.completion(model="roro/steer-0.8")

See docs/serve.md. The server needs aiohttp (``roro-sdk[server]``; LiteLLM installs it anyway).
"""

from __future__ import annotations

from ..errors import InvalidRequestError, UnknownRouteError
from .config import ServeBudgets, ServeConfig, ServeLimits, parse_route
from .openai_format import ChatRequest, parse_chat_request
from .service import RoutedService, RouteTable

# The server's and the provider's parts need aiohttp / litellm: imported on first use.
_LAZY = {
    "create_app": "roro_sdk.serve.app",
    "start_server": "roro_sdk.serve.server",
    "run_server": "roro_sdk.serve.server",
    "BackgroundServer": "roro_sdk.serve.server",
    "register_roro_provider": "roro_sdk.serve.provider",
}


def __getattr__(name: str):
    import importlib

    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'roro_sdk.serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ServeConfig",
    "ServeLimits",
    "ServeBudgets",
    "parse_route",
    "RoutedService",
    "RouteTable",
    "ChatRequest",
    "parse_chat_request",
    "create_app",
    "start_server",
    "run_server",
    "BackgroundServer",
    "register_roro_provider",
    "InvalidRequestError",
    "UnknownRouteError",
]
