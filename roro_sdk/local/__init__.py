"""In-process Hugging Face models served to LiteLLM as ``roro_local/<name>``, plus the offline registry.

Typical use::

    from roro_sdk.local import register_local_provider, register_local_model
    register_local_provider()                       # idempotent
    register_local_model("tiny", "/path/to/hf-folder")   # optional: registry names work as is
    litellm.completion(model="roro_local/qwen2.5-coder-0.5b-instruct", messages=[...])

Importing this package imports neither torch nor litellm: the registry functions stay cheap, and
the engine/provider names below are imported on first use. See docs/local-models.md.
"""

from roro_sdk.local.registry import (
    REGISTRY,
    LocalModelEntry,
    LocalModelInfo,
    default_cache_dir,
    ensure_local_model,
    get_local_entry,
    list_local_models,
    pip_install_command,
    verify_local_model,
)
from roro_sdk.local.stops import STEP_DELIMITER, StopMatch, find_stop

__all__ = [
    "PROVIDER",
    "REGISTRY",
    "STEP_DELIMITER",
    "AsyncBatcher",
    "GenerationRequest",
    "GenerationResult",
    "LocalEngine",
    "LocalModelEntry",
    "LocalModelInfo",
    "LocalProviderError",
    "LocalSettings",
    "RoroLocalLLM",
    "StopMatch",
    "clear_local_engines",
    "configure_local",
    "default_cache_dir",
    "ensure_local_model",
    "find_stop",
    "get_local_engine",
    "get_local_entry",
    "list_local_models",
    "pip_install_command",
    "register_local_model",
    "register_local_provider",
    "verify_local_model",
]

_LAZY = {
    "AsyncBatcher": "roro_sdk.local.batching",
    "GenerationRequest": "roro_sdk.local.engine",
    "GenerationResult": "roro_sdk.local.engine",
    "LocalEngine": "roro_sdk.local.engine",
}


def __getattr__(name: str):
    """Import torch/litellm-heavy parts on first use, so ``list_local_models`` stays cheap."""
    import importlib

    if name in _LAZY:
        module = _LAZY[name]
    elif name in __all__:
        module = "roro_sdk.local.provider"
    else:
        raise AttributeError(f"module 'roro_sdk.local' has no attribute {name!r}")
    _require_local_extra()
    return getattr(importlib.import_module(module), name)


def _require_local_extra() -> None:
    """One line naming the ``local`` extra when it is missing, before any torch import can fail."""
    from roro_sdk._extras import require

    for module in ("torch", "transformers"):
        require(module, extra="local")
