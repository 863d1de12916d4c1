"""Optional dependencies: import them through :func:`require`, which names the extra to install.

Why: ``pip install roro-sdk`` is the core (LiteLLM pools, routers, evaluation). Local models,
training, reasoning-gym data and plots need extras; without one, a user should read one line
that says which ``pip install`` fixes it, not a torch ``ModuleNotFoundError`` traceback from
deep inside the SDK.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

__all__ = ["EXTRAS", "missing_extra_message", "require"]

#: extra name -> what it is for (completes "roro-sdk needs <package> for ...").
EXTRAS: dict[str, str] = {
    "local": "local models",
    "train": "training",
    "data": "reasoning-gym datasets",
    "plot": "plots",
}

# Import name -> distribution name, where they differ.
_DISTRIBUTIONS = {"reasoning_gym": "reasoning-gym", "math_verify": "math-verify"}


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
