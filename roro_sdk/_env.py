"""Offline-safe defaults for the libraries roro-sdk drives.

Set before litellm, tiktoken or transformers are imported: litellm otherwise fetches a price map
from the network at import, tiktoken downloads its encodings, and a hub lookup retries for ~47 s.
Only defaults are set (``setdefault``): a user's explicit environment always wins.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

_DONE = False


def litellm_tokenizers_dir() -> str | None:
    """Folder where litellm ships tiktoken's cl100k/o200k encodings (found without importing litellm)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return str(folder) if folder.is_dir() else None


def apply_offline_defaults() -> None:
    global _DONE
    if _DONE:
        return
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        folder = litellm_tokenizers_dir()
        if folder:
            os.environ["TIKTOKEN_CACHE_DIR"] = folder
    _DONE = True


def import_litellm():
    """Import litellm quietly with offline defaults applied (it is slow: ~3 s, so import lazily)."""
    apply_offline_defaults()
    import litellm

    litellm.suppress_debug_info = True
    litellm.telemetry = False
    litellm.drop_params = True
    return litellm


def register_litellm_provider(name: str, handler: object) -> None:
    """Put ``handler`` into ``litellm.custom_provider_map`` under ``name`` (replacing an earlier
    entry), and make LiteLLM see it at once rather than on its next call."""
    litellm = import_litellm()
    for item in litellm.custom_provider_map:
        if item.get("provider") == name:
            item["custom_handler"] = handler
            break
    else:
        litellm.custom_provider_map.append({"provider": name, "custom_handler": handler})
    from litellm.utils import custom_llm_setup

    custom_llm_setup()
