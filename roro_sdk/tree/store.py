"""The calls of a recorded routing tree: an append-only store the pool answers from.

Why a store of *calls* rather than of nodes: with greedy decoding a step is a pure function of
(model, request), and a request is determined by the question and the steps before it. So the
tree needs no explicit edges: the child of a node for model ``m`` is the record stored under the
key of ``m``'s step request after that node's steps. Paths that reach the same text share their
children for free, and every other call a router makes (STEER's probe, SpecReason's verification,
TRIM's scored draft) is just one more keyed record, recorded when a router first makes it.

The key is the generation cache's (:func:`roro_sdk.cache.cache_key`) without the logprobs flags:
asking for logprobs does not change what a greedy model writes, so one record serves a request
with or without them (a request without them gets none back, as it would live; a request for more
top logprobs than were recorded is a miss). Where decoding is greedy and the provider's output does
not depend on the sampling seed (every real model), the seed is left out of the key too, so a
collection that seeds each rollout replays on the same tree.

Files: ``calls.jsonl`` (appended, one flushed line per call, so a killed recording keeps every
call that finished) and ``calls.jsonl.gz`` (the compacted, committed form); both are read, the
later line for a key wins.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..cache import CacheStats, cache_key
from ..errors import DatasetError, OutsideTreeError
from ..trajectories import is_complete_line, repair_torn_tail

CALLS = "calls.jsonl"
COMPACT = "calls.jsonl.gz"
_LOGPROB_FLAGS = ("logprobs", "top_logprobs")


def tree_key(kwargs: dict[str, Any], messages: list[Any], *, cut: bool = True, seed_in_key: bool = False) -> str | None:
    """The key a call is stored under in a tree (None for a sampling call, which no tree holds)."""
    params = {k: v for k, v in kwargs.items() if k not in _LOGPROB_FLAGS}
    if not seed_in_key and float(params.get("temperature") or 0.0) == 0.0 and "temperature" in params:
        params.pop("seed", None)
    return cache_key(params, messages, cut=cut)


def _wants(request: dict[str, Any] | None) -> tuple[bool, int]:
    request = request or {}
    return bool(request.get("logprobs")), int(request.get("top_logprobs") or 0)


def _served(rec: dict[str, Any], want_lp: bool, want_top: int) -> dict[str, Any]:
    """The record as the live call would have answered this request: logprobs only if asked for,
    top logprobs cut to as many as asked for."""
    out = dict(rec)
    if not want_lp:
        out["token_logprobs"] = out["top_logprobs"] = None
    elif out.get("top_logprobs") is not None and want_top < int(rec.get("top_n", 0)):
        out["top_logprobs"] = [_top(t, want_top) for t in out["top_logprobs"]]
    return out


def _asked(r: dict[str, Any]) -> bool:
    """Whether logprobs were asked for when the call was recorded (older lines: whether it has them)."""
    return bool(r.get("lp", r.get("token_logprobs") is not None))


def _top(t: dict[str, float], n: int) -> dict[str, float]:
    """The ``n`` most likely of ``t``, in ``t``'s own order (a router may sum them in that order)."""
    keep = {k for k, _ in sorted(t.items(), key=lambda kv: -kv[1])[:n]}
    return {k: v for k, v in t.items() if k in keep}


class TreeStore:
    """The recorded calls of one tree folder, used as the pool's ``cache``.

    ``live=False`` (replay): a call the tree does not hold raises :class:`OutsideTreeError`, so a
    replay never calls a model. ``live=True`` (recording, or growing a tree on demand): a miss
    returns None, the pool calls the model, and the result is appended to ``calls.jsonl``.
    """

    def __init__(self, folder: str | Path, *, live: bool = False, seed_in_key: bool = False, write: bool = True) -> None:
        self.folder = self.path = Path(folder)
        self.deterministic = True  # greedy calls: a recorded result is what a retry would return
        self.live, self.seed_in_key, self.write = live, seed_in_key, write
        self._unsent: list[dict[str, Any]] = []  # write=False (a Ray worker): new lines for the driver to write
        self.stats = CacheStats()  # as the generation cache counts, so evaluations report tree hits alike
        self._records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._fh = None
        self.stored_output_tokens, self.stored_cost_usd = 0, 0.0  # of the calls made live since opening
        for rec in self._read():
            self._records[rec["k"]] = rec
        self.loaded = len(self._records)

    # ----- files ---------------------------------------------------------------------------------
    def _read(self) -> Iterator[dict[str, Any]]:
        gz, plain = self.folder / COMPACT, self.folder / CALLS
        if gz.is_file():
            try:
                with gzip.open(gz, "rt", encoding="utf-8") as fh:
                    yield from (json.loads(line) for line in fh if line.strip())
            except (OSError, EOFError, ValueError) as e:
                raise DatasetError(f"{gz} is not a readable compressed call file ({e}); restore it from the repository") from None
        if plain.is_file():
            with open(plain, "rb") as fh:
                for line in fh:
                    if line.strip() and is_complete_line(line.rstrip(b"\n")):  # a torn last line is a call not yet made
                        yield json.loads(line)

    def _append(self, rec: dict[str, Any]) -> None:
        if self._fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            repair_torn_tail(self.folder / CALLS)  # a killed writer's half line stays out of the next one
            self._fh = open(self.folder / CALLS, "a", encoding="utf-8")
        self._fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def flush(self) -> None:  # the pool's cache interface; every record is flushed as written
        pass

    def compact(self) -> Path:
        """Write every call (latest per key) into ``calls.jsonl.gz`` and remove ``calls.jsonl``.
        Deterministic (sorted keys, no timestamp in the gzip header), so the same tree gives the
        same bytes. Run it when no other process is recording into the folder."""
        self.close()
        gz, plain = self.folder / COMPACT, self.folder / CALLS
        records: dict[str, dict[str, Any]] = {}
        for rec in self._read():  # the files, not this process's view: another writer's lines count too
            records[rec["k"]] = rec
        self._records = records
        tmp = gz.with_suffix(".tmp")
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as fh:
                for k in sorted(records):
                    # no sort_keys: the order of top logprobs is data (a router sums them in that order)
                    fh.write((json.dumps(records[k], ensure_ascii=False) + "\n").encode("utf-8"))
            raw.flush()
            os.fsync(raw.fileno())  # on disk before the plain file it replaces is removed
        tmp.replace(gz)
        plain.unlink(missing_ok=True)
        return gz

    # ----- the pool's cache interface --------------------------------------------------------------
    def key(self, kwargs: dict[str, Any], messages: list[Any], *, cut: bool = True) -> str | None:
        return tree_key(kwargs, messages, cut=cut, seed_in_key=self.seed_in_key)

    def holds(self, key: str | None, request: dict[str, Any] | None = None) -> bool:
        """Whether a call with ``request``'s parameters is answered from the tree (counts nothing)."""
        rec = self.lookup(key)
        if rec is None:
            return False
        want_lp, want_top = _wants(request)
        r = rec["r"]
        return (not want_lp or _asked(r)) and want_top <= int(r.get("top_n", 0))

    def lookup(self, key: str | None) -> dict[str, Any] | None:
        """The stored line of ``key`` (``{"k", "m", "r", ...}``), or None; counts nothing."""
        return None if key is None else self._records.get(key)

    def get(self, key: str | None, *, request: dict[str, Any] | None = None, model: str = "") -> dict[str, Any] | None:
        want_lp, want_top = _wants(request)
        rec = self.lookup(key)
        why = None
        if key is None:
            why = "it samples (temperature > 0 without a seed), and a tree holds greedy calls only"
        elif rec is None:
            why = "the tree never expanded this request (a path or side call it does not hold)"
        elif want_lp and not _asked(rec["r"]):
            why = "it asks for logprobs and the tree recorded this call without asking for them"
        elif want_top > int(rec["r"].get("top_n", 0)):
            why = f"it asks for {want_top} top logprobs and the tree recorded {rec['r'].get('top_n', 0)}"
        if why is not None:
            with self._lock:
                self.stats.misses += 1
            if self.live:
                return None
            raise OutsideTreeError(f"model {model!r}: call outside the recorded tree: {why}. Grow the tree with this "
                                   "router to record it (record-tree --routers, or replay with grow=True)", model=model)
        with self._lock:
            self.stats.hits += 1
            self.stats.saved_cost_usd += float(rec["r"].get("cost_usd", 0.0))
            self.stats.saved_model_time_s += float(rec["r"].get("latency_s", 0.0))
        return _served(rec["r"], want_lp, want_top)

    def put(self, key: str | None, record: dict[str, Any], *, model: str = "", request: dict[str, Any] | None = None) -> None:
        if key is None:
            return
        want_lp, want_top = _wants(request)
        # lp: logprobs were asked for (a provider that has none answers None; asking again would not help)
        r = dict(record, lp=want_lp, top_n=want_top if want_lp else 0)
        if not want_lp:
            r["token_logprobs"] = r["top_logprobs"] = None
        self.add_lines([{"k": key, "m": model, "r": r}])

    def add_lines(self, lines: list[dict[str, Any]]) -> None:
        """Add recorded calls (a Ray worker's, on the driver); a line never replaces a richer one."""
        with self._lock:
            for line in lines:
                old = self._records.get(line["k"])
                if old is not None and _asked(old["r"]) and not _asked(line["r"]):
                    continue  # a richer record of the same call is kept
                self._records[line["k"]] = line
                self.stats.stores += 1
                self.stored_output_tokens += int(line["r"].get("output_tokens") or 0)
                self.stored_cost_usd += float(line["r"].get("cost_usd") or 0.0)
                if self.write:
                    self._append(line)
                else:
                    self._unsent.append(line)

    def drain(self) -> list[dict[str, Any]]:
        """The lines added since the last drain (``write=False``)."""
        with self._lock:
            out, self._unsent = self._unsent, []
        return out

    @property
    def stores(self) -> int:
        return self.stats.stores

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[dict[str, Any]]:
        return list(self._records.values())

    def __getstate__(self) -> dict[str, Any]:  # a worker process reopens the folder
        return {"folder": self.folder, "live": self.live, "seed_in_key": self.seed_in_key, "write": self.write}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"], live=state["live"], seed_in_key=state["seed_in_key"],  # type: ignore[misc]
                      write=state.get("write", True))
