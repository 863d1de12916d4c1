"""The queries of a tree: ``queries.jsonl``, appended once per new query id, read in order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetError
from ..trajectories import is_complete_line, repair_torn_tail
from ..types import Query

QUERIES = "queries.jsonl"


def read_queries(folder: str | Path) -> list[Query]:
    """Every query recorded in the tree at ``folder``, in the order they were first recorded."""
    p = Path(folder) / QUERIES
    if not p.is_file():
        raise DatasetError(f"{folder} holds no queries ({QUERIES} is missing); record a tree with 'roro record-tree'")
    out, seen = [], set()
    with open(p, "rb") as fh:
        for line in fh:
            if not line.strip() or not is_complete_line(line.rstrip(b"\n")):
                continue
            try:
                q = Query.model_validate(json.loads(line))
            except ValueError as e:  # ValidationError is a ValueError
                raise DatasetError(f"{p}: a line is not a query ({str(e).splitlines()[0]}); restore the file") from None
            if q.id not in seen:
                seen.add(q.id)
                out.append(q)
    return out


def append_queries(folder: str | Path, queries: Sequence[Query]) -> int:
    """Add the queries whose id the tree does not have yet; returns how many were added. Two
    different questions under one id are refused (their steps would be mixed up)."""
    p = Path(folder) / QUERIES
    known = {q.id: q for q in read_queries(folder)} if p.is_file() else {}
    new = []
    for q in queries:
        old = known.get(q.id)
        if old is not None:
            if old.question != q.question:
                raise DatasetError(f"query id {q.id!r} is already in {folder} with another question; give it another id")
            continue
        known[q.id] = q
        new.append(q)
    if new:
        p.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(p)
        with open(p, "a", encoding="utf-8") as fh:
            for q in new:
                fh.write(q.model_dump_json() + "\n")
            fh.flush()
    return len(new)
