"""Trajectory files: append-only JSON lines, one trajectory per line.

Appending (never rewriting) means a crash loses at most the line being written; a torn last line
is skipped on read with a warning instead of failing the whole file.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import ValidationError

from .errors import DatasetError
from .types import Trajectory

__all__ = ["write_trajectories", "read_trajectories", "iter_trajectories"]


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory], *, append: bool = True) -> int:
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as fh:
        for t in trajectories:
            fh.write(t.to_jsonl() + "\n")
            n += 1
        fh.flush()
    return n


def iter_trajectories(path: str | Path) -> Iterator[Trajectory]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"trajectory file not found: {p}")
    lines = p.read_text(encoding="utf-8").split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield Trajectory.from_jsonl(line)
        except ValidationError as e:
            if lineno >= len(lines) - 1 and not p.read_text(encoding="utf-8").endswith("\n"):
                warnings.warn(f"{p}:{lineno}: skipping a torn last line (the writer was interrupted)", stacklevel=2)
                return
            raise DatasetError(f"{p}:{lineno}: not a valid trajectory: {e.errors()[0]['msg']}") from None


def read_trajectories(path: str | Path) -> list[Trajectory]:
    return list(iter_trajectories(path))
