"""Offline-safe settings for the libraries roro-sdk drives, applied only where roro-sdk needs them.

``import roro_sdk`` changes nothing in the host process: no environment variable, no global of
another library. The settings that offline work needs are applied at the point of use instead:

* LiteLLM fetches its price map from the network *while it is imported* unless
  ``LITELLM_LOCAL_MODEL_COST_MAP`` is set; :func:`import_litellm` sets it for that import only and
  restores the environment afterwards (a user's own value always wins). LiteLLM itself points
  ``TIKTOKEN_CACHE_DIR`` at the encodings it bundles when it is imported.
* LiteLLM's ``drop_params`` is passed per call by the pool (:data:`LITELLM_CALL_DEFAULTS`), never set
  on the module, so an application's own LiteLLM calls keep their behaviour.
* Hugging Face loads of local folders pass ``local_files_only=True`` (see :mod:`roro_sdk.hf` and
  :mod:`roro_sdk.local`), so no hub lookup (and no ~47 s of retries offline) happens, without
  forcing ``HF_HUB_OFFLINE`` on an application that downloads models.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: Keyword arguments every LiteLLM call of the pool carries: providers that do not support a
#: parameter (seed, logprobs, top_p) get it dropped instead of failing the step.
LITELLM_CALL_DEFAULTS: Mapping[str, object] = {"drop_params": True}


def litellm_tokenizers_dir() -> str | None:
    """Folder where litellm ships tiktoken's cl100k/o200k encodings (found without importing litellm)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
    return str(folder) if folder.is_dir() else None


@contextmanager
def scoped_env(**defaults: str) -> Iterator[None]:
    """Set the variables that are not set yet, for the duration of the block only.

    A variable the user set is left alone; one this block set is removed again afterwards, unless
    someone changed it meanwhile (then it is theirs)."""
    added = {k: v for k, v in defaults.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k, v in added.items():
            if os.environ.get(k) == v:
                del os.environ[k]


#: Set by the ``roro`` command line (a process of its own, not a host application): LiteLLM's
#: "Give Feedback / Get Help" lines would bury the one-line errors the CLI prints.
QUIET_LITELLM = False


def import_litellm():
    """Import litellm without a network fetch of its price map (it is slow: ~3 s, so import lazily)."""
    mod = sys.modules.get("litellm")
    if mod is None or not hasattr(mod, "acompletion"):
        with scoped_env(LITELLM_LOCAL_MODEL_COST_MAP="True"):
            import litellm as mod
    if QUIET_LITELLM:
        mod.suppress_debug_info = True
    return mod


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


def apply_offline_defaults() -> None:
    """Deprecated: roro-sdk no longer changes the process environment; set variables yourself.

    Kept for one release because it was importable; it now does nothing but warn."""
    import warnings

    warnings.warn("roro_sdk._env.apply_offline_defaults() is deprecated and does nothing: roro-sdk applies "
                  "its offline settings only inside its own calls", DeprecationWarning, stacklevel=2)
