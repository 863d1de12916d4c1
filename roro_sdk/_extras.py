"""Optional dependencies: import them through :func:`require`, which names the extra to install.

Why: ``pip install roro-sdk`` is the core (LiteLLM pools, routers, evaluation). Local models,
training, reasoning-gym data and plots need extras; without one, a user should read one line
that says which ``pip install`` fixes it, not a torch ``ModuleNotFoundError`` traceback from
deep inside the SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from .errors import MissingExtraError

#: extra name -> what it is for (completes "roro-sdk needs <package> for ...").
EXTRAS: dict[str, str] = {
    "local": "local models",
    "llamacpp": "the llama.cpp engine (or set RORO_LOCAL_BACKEND=torch)",
    "train": "training",
    "data": "reasoning-gym datasets",
    "plot": "plots",
    "server": "roro serve",
    "ray": "scale-out on Ray (--ray)",
}

# Import name -> distribution name, where they differ.
_DISTRIBUTIONS = {"reasoning_gym": "reasoning-gym", "math_verify": "math-verify", "llama_cpp": "llama-cpp-python"}


def missing_extra_message(module: str, extra: str) -> str:
    """The one line a user reads when ``module`` (of extra ``extra``) is not installed."""
    root = module.split(".")[0]
    package = _DISTRIBUTIONS.get(root, root)
    return f'roro-sdk needs {package} for {EXTRAS[extra]}: pip install "roro-sdk[{extra}]"'


def require(module: str, *, extra: str) -> ModuleType:
    """Import and return ``module``; raise :class:`MissingExtraError` naming ``extra`` if it is missing.

    Only a missing ``module`` (or a missing parent package of it) becomes the one-line error; a
    module that is installed but fails to import for another reason keeps its own error as the
    cause, since reinstalling the extra is then only a guess.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and (module == e.name or module.startswith(e.name + ".")):
            raise MissingExtraError(missing_extra_message(module, extra), name=module, extra=extra) from None
        raise MissingExtraError(
            f"{missing_extra_message(module, extra)} (importing {module} failed: {e})", name=module, extra=extra
        ) from e


def lazy_names(package: str, lazy: dict[str, str],
               namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of a package whose ``lazy`` names (name -> module)
    need an extra: each is imported on first use and kept in ``namespace`` (the package's globals);
    an ImportError becomes one line naming the extra."""

    def __getattr__(name: str) -> Any:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:
            value = getattr(importlib.import_module(module), name)
        except MissingExtraError:
            raise  # already one line naming the extra
        except ImportError as e:
            raise ImportError(f"{package}.{name} needs the train extra ({e.name or e}): pip install 'roro-sdk[train]'") from e
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(lazy))

    return __getattr__, __dir__
