"""The Judge's scores of GRPO rollouts kept on disk, so that another seed, a resumed run or a rerun
with the same Judge reads them instead of judging again.

Why: on a recorded tree the rollouts of a depth-1 tree are a few routings per problem, and a local
Judge (a 135M LM reading ~430 tokens per routing, once per criterion) is most of a RoRo update on a
CPU (~80 s of an update's ~85 s while the rollouts are new). A score is a pure function of the
Judge, the Rubricor, the query and the rollout's text (the Rubricor writes its rubric greedily),
so a score computed once serves every later run with the same Judge.

The file is append-only JSONL: a header line names the Judge (a fingerprint of its folder's
files, or its spec), then one line per judged rollout. A line torn by a kill is skipped when read.
A file written for another Judge is refused, never mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

from .._pins import sha256_of
from ..errors import TrainingConfigError

FORMAT = 1


def judge_fingerprint(spec: str) -> str:
    """What identifies a Judge's scores: the sha256 of every file (name and content) of its folder
    (a ``roro train-judge`` run holds the Rubricor too), else the spec itself."""
    folder = Path(spec)
    if not folder.is_dir():
        return f"spec:{spec}"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    names = hashlib.sha256("\n".join(p.relative_to(folder).as_posix() for p in files).encode()).hexdigest()
    return f"files:{names}:{sha256_of(files)[0]}"


def _key(key: Any) -> str:
    return hashlib.sha256(json.dumps(key, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


class JudgedScores(MutableMapping):
    """A dict of rollout key -> ``(score, step scores)`` whose items are also appended to ``path``.

    Keys are whatever :func:`~roro_sdk.train.grpo._judged_key` makes (JSON-able tuples); on disk
    they are their sha256. Raises :class:`~roro_sdk.errors.TrainingConfigError` when ``path``
    belongs to another Judge."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: str):
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._scores: dict[str, tuple[float | None, list[float] | None]] = {}
        self.loaded = 0
        if self.path.is_file() and self.path.stat().st_size > 0:
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"format": FORMAT, "judge": fingerprint})

    def _read(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            text = f.read()
        lines = text.splitlines()
        try:
            head = json.loads(lines[0])
        except (json.JSONDecodeError, IndexError):
            head = {}
        if head.get("judge") != self.fingerprint:
            raise TrainingConfigError(
                f"judge_cache {self.path} holds the scores of another Judge (or is not a judge cache); "
                "give this run a new judge_cache path, or delete that file")
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                self._scores[rec["key"]] = (rec["score"], rec["step_scores"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # the last line of a killed run may be torn: it is judged again
        self.loaded = len(self._scores)
        if not text.endswith("\n"):
            with open(self.path, "a", encoding="utf-8") as f:  # a torn tail: the next record starts on its own line
                f.write("\n")

    def _append(self, rec: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def __getitem__(self, key: Any) -> tuple[float | None, list[float] | None]:
        return self._scores[_key(key)]

    def __contains__(self, key: object) -> bool:
        return _key(key) in self._scores

    def __setitem__(self, key: Any, value: tuple[float | None, list[float] | None]) -> None:
        k = _key(key)
        score, steps = value
        if self._scores.get(k) == (score, steps):
            return
        self._scores[k] = (score, None if steps is None else list(steps))
        self._append({"key": k, "score": score, "step_scores": self._scores[k][1]})

    def __delitem__(self, key: Any) -> None:
        raise TypeError("judged scores are append-only")

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)
