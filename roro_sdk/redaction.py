"""Keeping keys out of what roro-sdk stores and raises.

A provider can echo the key it was sent in an error body (an "invalid key sk-..." message), and such
text lands in ``Trajectory.error``, JSONL files and tracebacks. Every error message the pool builds
passes through :func:`redact_secrets`, and a provider exception's chain through
:func:`redact_exception_chain`, before it leaves the pool.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

# Names of environment variables whose values are secrets (beyond each model's api_key_env).
_SECRET_ENV_RE = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD)$", re.IGNORECASE)
# Shorter values (flags, "1", "true") are not secrets and would mangle every message.
_MIN_SECRET_CHARS = 8
_REDACTED = "[REDACTED]"


def _secret_values(env_names: Iterable[str] = ()) -> list[str]:
    names = set(env_names) | {k for k in os.environ if _SECRET_ENV_RE.search(k)}
    values = {os.environ.get(n) or "" for n in names}
    return sorted((v for v in values if len(v) >= _MIN_SECRET_CHARS), key=len, reverse=True)


def redact_secrets(text: str, env_names: Iterable[str] = ()) -> str:
    """``text`` with the value of every secret-holding environment variable replaced by ``[REDACTED]``:
    those named in ``env_names`` and any ``*_KEY``/``*_TOKEN``/``*_SECRET``/``*PASSWORD`` variable."""
    for value in _secret_values(env_names):
        text = text.replace(value, _REDACTED)
    return text


def redact_exception_chain(exc: BaseException, env_names: Iterable[str]) -> None:
    """Redact the messages of ``exc`` and its causes in place, so a chained traceback leaks no key."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        try:
            e.args = tuple(redact_secrets(a, env_names) if isinstance(a, str) else a for a in e.args)
            if isinstance(getattr(e, "message", None), str):
                e.message = redact_secrets(e.message, env_names)  # type: ignore[attr-defined]
        except (AttributeError, TypeError):  # read-only attributes on some exception types
            pass
        e = e.__cause__ or e.__context__
