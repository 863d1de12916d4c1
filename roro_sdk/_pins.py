"""sha256 pins of files: what the registry's weights, a shipped router and a routing tree's
manifest record, and how each is checked. One streamed hash, so a multi-GB GGUF is never read
into memory whole."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

_BLOCK = 1 << 22


def sha256_of(paths: Iterable[str | Path], dest: str | Path | None = None) -> tuple[str, int]:
    """sha256 hex digest and size in bytes of the concatenation of ``paths`` (one file: its own);
    also writes that concatenation to ``dest`` when given (assembling a chunked file while it is
    hashed)."""
    h = hashlib.sha256()
    size = 0
    out = open(dest, "wb") if dest is not None else None
    try:
        for p in paths:
            with open(p, "rb") as f:
                while chunk := f.read(_BLOCK):
                    h.update(chunk)
                    size += len(chunk)
                    if out is not None:
                        out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return h.hexdigest(), size


def pin(path: str | Path) -> dict[str, str | int]:
    """``{"sha256": ..., "bytes": ...}`` of one file, as the manifests record it."""
    digest, size = sha256_of([path])
    return {"sha256": digest, "bytes": size}
