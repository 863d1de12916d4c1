"""Trajectory files: append-only JSON lines, one trajectory per line.

Appending (never rewriting) means a crash loses at most the line being written; a torn last line
is skipped on read with a warning instead of failing the whole file, and moved aside to
``<file>.torn`` before anything is appended after it (:func:`repair_torn_tail`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._files import output_file, read_text_file
from .errors import DatasetError
from .types import Trajectory


def write_trajectories(path: str | Path, trajectories: Iterable[Trajectory], *, append: bool = True) -> int:
    p = output_file(path, what="trajectory file", error=DatasetError)
    if append:
        repair_torn_tail(p)  # else the first new line would be glued to a torn one
    n = 0
    with open(p, "a" if append else "w", encoding="utf-8") as fh:
        for t in trajectories:
            fh.write(t.to_jsonl() + "\n")
            n += 1
        fh.flush()
    return n


class TrajectoryAppender:
    """Appends one trajectory per line as each finishes, flushed at once: a killed run keeps every
    trajectory that finished before the kill. Use as a context manager, or call :meth:`close`."""

    def __init__(self, path: str | Path):
        self.path = output_file(path, what="trajectory file", error=DatasetError)
        repair_torn_tail(self.path)  # else the first new line would be glued to a torn one
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, traj: Trajectory) -> None:
        self._fh.write(traj.to_jsonl() + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> TrajectoryAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_torn_tail(path: str | Path) -> int:
    """Make ``path`` end in a newline so the next append starts a line of its own; returns the
    bytes taken out of it.

    A last line without its newline is either complete (it parses as JSON: an editor or another
    tool dropped the newline) and is kept, newline added, or torn (a writer was killed mid-line).
    A torn tail is moved aside to ``<path>.torn`` (appended, fsynced) before it is cut off, so
    nothing is ever deleted.
    """
    p = Path(path)
    if not p.is_file():
        return 0
    with open(p, "rb+") as fh:
        start, tail = _unterminated_tail(fh)
        if not tail:
            return 0
        if is_complete_line(tail):
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())
            return 0
        torn = p.with_name(p.name + ".torn")
        with open(torn, "ab") as aside:
            aside.write(tail + b"\n")
            aside.flush()
            os.fsync(aside.fileno())
        fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())
    warnings.warn(f"{p}: moved a torn last line ({len(tail)} bytes, left by an interrupted writer) to {torn}", stacklevel=2)
    return len(tail)


def _unterminated_tail(fh: Any) -> tuple[int, bytes]:
    """(offset, bytes) of the text after the last newline of an open binary file."""
    size = fh.seek(0, os.SEEK_END)
    pos, chunk = size, 1 << 16
    while pos > 0:
        start = max(0, pos - chunk)
        fh.seek(start)
        i = fh.read(pos - start).rfind(b"\n")
        if i >= 0:
            start += i + 1
            break
        pos = start
    else:
        start = 0
    fh.seek(start)
    return start, fh.read(size - start)


def is_complete_line(line: bytes) -> bool:
    """Whether a JSON-lines record is whole: a JSON object. No proper prefix of a JSON object
    parses, so a line cut short by a killed writer never passes."""
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False


def iter_trajectories(path: str | Path) -> Iterator[Trajectory]:
    p = Path(path)
    text = read_text_file(p, what="trajectory file", error=DatasetError)
    lines = text.split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield Trajectory.from_jsonl(line)
        except ValidationError as e:
            if lineno == len(lines):  # no newline after it: a writer was interrupted mid-line
                warnings.warn(f"{p}:{lineno}: skipping a torn last line (the writer was interrupted)", stacklevel=2)
                return
            raise DatasetError(f"{p}:{lineno}: not a valid trajectory: {e.errors()[0]['msg']}") from None


def read_trajectories(path: str | Path) -> list[Trajectory]:
    return list(iter_trajectories(path))
