"""Datasets of queries: JSONL files in common formats, reasoning-gym generators, a bundled sample.

``load_dataset`` takes one string so the CLI and configs can name any source:

- ``sample``: 20 bundled arithmetic word problems (offline, instant);
- ``rg:NAME`` or ``reasoning_gym:NAME``: a seeded reasoning-gym generator (``pip install reasoning-gym``);
- ``sim`` or ``sim:<preset>,<field>=<value>``: the synthetic test bench (:mod:`roro_sdk.sim`);
- a path to a ``.jsonl`` file in GSM8K (``question`` + ``answer`` ending in ``#### 42``), MATH
  (``problem`` + ``solution`` with ``\\boxed{}``, or ``answer``) or plain ``question``/``answer`` form
  (or a ``.json`` file holding a list of such records). A spec ending in ``.jsonl``/``.json`` is
  always a file (``simple.jsonl`` is not a sim spec); any other existing path is one too, unless
  it is exactly one of the names above (write ``./sample`` for a file called ``sample``).

``limit`` means the same for every source: the first ``limit`` queries, a positive integer.
``None`` means every query of a file or of the sample, and :data:`DEFAULT_GENERATED` (20)
problems of a generator (``rg:``, ``sim``), which has no end.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from ._files import read_text_file
from .answers import extract_answer
from .errors import DatasetError
from .types import Query

DEFAULT_GENERATED = 20
_FILE_SUFFIXES = (".jsonl", ".json")


def check_limit(limit: int | None) -> int | None:
    """``limit`` if it is None or a positive integer; anything else is a :class:`DatasetError`
    (``0`` or ``-1`` used to mean "none" for one source and "all but the last" for another)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise DatasetError(f"limit must be a positive integer (or none for every query), got {limit!r}")
    return limit


def is_sim_spec(spec: str) -> bool:
    """Whether a dataset or pool spec asks for the sim bench: ``sim`` or ``sim:...`` (not ``simple.jsonl``)."""
    spec = spec.strip()
    return spec == "sim" or spec.startswith("sim:")


def is_file_spec(spec: str) -> bool:
    """Whether a dataset spec names a file by its form: it ends in .jsonl or .json."""
    return Path(spec).suffix.lower() in _FILE_SUFFIXES


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
    """Queries from a JSON-lines file (or a ``.json`` file holding a list of records)."""
    limit = check_limit(limit)
    p = Path(path)
    text = read_text_file(p, what="dataset file", error=DatasetError)
    out: list[Query] = []
    for lineno, rec in _records(p, text):
        if not isinstance(rec, dict):
            raise DatasetError(f"{p}:{lineno}: expected a JSON object per record")
        out.append(query_from_record(rec, index=lineno - 1, source=str(p), fmt=fmt))
        if limit is not None and len(out) >= limit:
            break
    ids = [q.id for q in out]
    if len(set(ids)) != len(ids):
        raise DatasetError(f"{p}: query ids are not unique; give each line a distinct 'id' or drop the field")
    return out


def _records(p: Path, text: str) -> list[tuple[int, Any]]:
    """(line number, or 1-based index for a JSON list; record) pairs of a dataset file."""
    if p.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
        return list(enumerate(data, 1))
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p}:{lineno}: not valid JSON ({e.msg}); a dataset file holds one JSON object per line") from None
    return out


def sample_queries(limit: int | None = None) -> list[Query]:
    """The bundled sample: 20 short arithmetic word problems with integer answers."""
    limit = check_limit(limit)
    text = resources.files("roro_sdk.data").joinpath("sample.jsonl").read_text(encoding="utf-8")
    out = [query_from_record(json.loads(line), index=i, source="sample") for i, line in enumerate(text.splitlines()) if line.strip()]
    return out[:limit] if limit is not None else out


def reasoning_gym_queries(name: str, n: int, seed: int = 0) -> list[Query]:
    """``n`` seeded problems from a reasoning-gym generator (e.g. ``gsm_symbolic``, ``basic_arithmetic``)."""
    if check_limit(n) is None:
        raise DatasetError("reasoning_gym_queries needs n, the number of problems")
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
    limit = check_limit(limit)
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetError("the dataset is empty: use 'sample', 'rg:<generator>', 'sim[:preset]' or a path to a .jsonl file")
    if is_file_spec(spec):  # before the name checks: 'simple.jsonl' is a file, not a sim spec
        return load_jsonl(spec, limit=limit)
    if spec == "sample":
        return sample_queries(limit)
    for prefix in ("rg:", "reasoning_gym:", "reasoning-gym:"):
        if spec.startswith(prefix):
            return reasoning_gym_queries(spec[len(prefix):], n=limit or DEFAULT_GENERATED, seed=seed)
    if is_sim_spec(spec):
        from .sim import sim_queries  # the synthetic bench, only when asked for by name

        return sim_queries(spec, n=limit or DEFAULT_GENERATED, seed=seed)
    if Path(spec).exists():
        return load_jsonl(spec, limit=limit)
    raise DatasetError(f"unknown dataset {spec!r}: use 'sample', 'rg:<generator>', 'sim[:preset]' or a path to a .jsonl file")
