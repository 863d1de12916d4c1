"""Datasets of queries: JSONL files in common formats, reasoning-gym generators, a bundled sample.

``load_dataset`` takes one string so the CLI and configs can name any source:

- ``sample``: 20 bundled arithmetic word problems (offline, instant);
- ``rg:NAME`` or ``reasoning_gym:NAME``: a seeded reasoning-gym generator (``pip install reasoning-gym``);
- a path to a ``.jsonl`` file in GSM8K (``question`` + ``answer`` ending in ``#### 42``), MATH
  (``problem`` + ``solution`` with ``\\boxed{}``, or ``answer``) or plain ``question``/``answer`` form.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from .answers import extract_answer
from .errors import DatasetError
from .types import Query

__all__ = ["load_dataset", "load_jsonl", "sample_queries", "reasoning_gym_queries", "query_from_record"]


def query_from_record(rec: dict[str, Any], *, index: int, source: str, fmt: str = "auto") -> Query:
    """One dataset record (GSM8K, MATH or plain) as a :class:`Query`."""
    if fmt == "auto":
        fmt = "math" if "problem" in rec else "gsm8k" if "####" in str(rec.get("answer", "")) else "plain"
    if fmt == "math":
        question = rec.get("problem")
        answer = rec.get("answer")
        if answer is None and rec.get("solution"):
            answer = extract_answer(str(rec["solution"]), fallback_last_number=False)
    elif fmt == "gsm8k":
        question = rec.get("question")
        raw = str(rec.get("answer", ""))
        answer = raw.rsplit("####", 1)[-1].strip().replace(",", "") if "####" in raw else raw.strip() or None
    elif fmt == "plain":
        question = rec.get("question") or rec.get("prompt") or rec.get("input")
        answer = rec.get("answer", rec.get("target"))
    else:
        raise DatasetError(f"unknown dataset format {fmt!r}; use auto, gsm8k, math or plain")
    if not isinstance(question, str) or not question.strip():
        raise DatasetError(f"{source}: record {index} has no question text (expected a 'question' or 'problem' field)")
    meta = {k: v for k, v in rec.items() if k not in ("question", "problem", "answer", "solution", "id")}
    return Query(id=str(rec.get("id", f"{Path(source).stem}-{index}")), question=question,
                 answer=None if answer is None else str(answer), source=source, metadata=meta)


def load_jsonl(path: str | Path, *, fmt: str = "auto", limit: int | None = None) -> list[Query]:
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset file not found: {p}")
    out: list[Query] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{p}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DatasetError(f"{p}:{lineno}: expected a JSON object per line")
            out.append(query_from_record(rec, index=lineno - 1, source=str(p), fmt=fmt))
            if limit is not None and len(out) >= limit:
                break
    ids = [q.id for q in out]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{p}: query ids are not unique; give each line a distinct 'id' or drop the field")
    return out


def sample_queries(limit: int | None = None) -> list[Query]:
    """The bundled sample: 20 short arithmetic word problems with integer answers."""
    text = resources.files("roro_sdk.data").joinpath("sample.jsonl").read_text(encoding="utf-8")
    out = [query_from_record(json.loads(line), index=i, source="sample") for i, line in enumerate(text.splitlines()) if line.strip()]
    return out[:limit] if limit is not None else out


def reasoning_gym_queries(name: str, n: int, seed: int = 0) -> list[Query]:
    """``n`` seeded problems from a reasoning-gym generator (e.g. ``gsm_symbolic``, ``basic_arithmetic``)."""
    try:
        import reasoning_gym
    except ImportError:
        raise DatasetError("reasoning-gym is not installed: pip install 'roro-sdk[data]' (or pip install reasoning-gym)") from None
    try:
        ds = reasoning_gym.create_dataset(name, size=n, seed=seed)
    except Exception as e:
        raise DatasetError(f"reasoning-gym has no usable dataset {name!r}: {e}") from None
    out = []
    for i, entry in enumerate(ds):
        meta = {"generator": name, "seed": seed}
        out.append(Query(id=f"{name}-{seed}-{i}", question=entry["question"], answer=str(entry["answer"]),
                         source=f"reasoning_gym:{name}", metadata=meta))
    return out


def load_dataset(spec: str, *, limit: int | None = None, seed: int = 0) -> list[Query]:
    """Queries from a dataset name or file (see the module docstring)."""
    if spec == "sample":
        return sample_queries(limit)
    for prefix in ("rg:", "reasoning_gym:", "reasoning-gym:"):
        if spec.startswith(prefix):
            return reasoning_gym_queries(spec[len(prefix):], n=limit or 20, seed=seed)
    if spec.startswith("sim"):
        from .sim import sim_queries  # the synthetic bench, only when asked for by name

        return sim_queries(spec, n=limit or 20, seed=seed)
    p = Path(spec)
    if p.suffix == ".jsonl" or p.exists():
        return load_jsonl(p, limit=limit)
    raise DatasetError(f"unknown dataset {spec!r}: use 'sample', 'rg:<generator>' or a path to a .jsonl file")
