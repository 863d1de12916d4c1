"""The handler the LiteLLM proxy loads by import path (``custom_handler:
roro_sdk.serve.litellm_proxy.handler`` in its ``custom_provider_map``). Its routes come from the
serve config file named by ``$RORO_SERVE_CONFIG``, read on the first request."""

from __future__ import annotations

from .provider import make_handler

handler = make_handler()
