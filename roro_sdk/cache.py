"""An opt-in on-disk cache of model calls, so sweeps and repeated evaluations do not pay twice.

Why: an accuracy-cost sweep re-runs the same queries many times, and most of its calls are the
same (the all-small and all-large references, every step a router leaves to the default model,
the same drafts). With ``ModelPool(..., cache=GenerationCache(path))`` an identical call is
answered from disk.

What counts as identical: the key hashes the LiteLLM model string, ``api_base``, the messages,
``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, the logprobs flags, any extra
provider parameters, and whether the step text is cut at the delimiter. A call that *samples*
(temperature > 0, or unset, with no seed) is never cached: each such call must be a fresh draw.

What a hit returns: the recorded text, token counts and logprobs, marked ``cached=True``; its
cost is recomputed from the recorded tokens at the pool's current prices, so reports state what
the queries *would* cost; the latency is the real (tiny) lookup time. ``stats`` counts hits and
the cost and model time they saved.

Storage: one SQLite file in WAL mode (many readers and one writer at a time, across processes;
a busy writer waits up to ``timeout_s``). Every operation is one short statement under a lock,
so asyncio tasks and threads of one process share a connection safely, and each process opens
its own. New entries are written in batches (every ``batch_size`` entries or ``flush_s``
seconds, on :meth:`flush`, :meth:`close` and at exit): one SQLite commit costs about a
millisecond here, as much as a whole sim step. Unflushed entries are served from memory; a crash
loses at most them. ``clear()`` empties the cache.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

_FORMAT = 1
# Call parameters that do not change what a model writes.
_NOT_IN_KEY = {"api_key", "timeout", "num_retries", "max_retries", "metadata", "headers", "extra_headers"}


@dataclass
class CacheStats:
    """Counts since this cache object was opened. ``saved_cost_usd``: what the hits would have
    cost; ``saved_model_time_s``: the sum of their recorded latencies (calls that ran concurrently
    overlap, so this is model time, not wall time)."""

    hits: int = 0
    misses: int = 0
    stores: int = 0
    uncacheable: int = 0
    saved_cost_usd: float = 0.0
    saved_model_time_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def minus(self, before: CacheStats) -> CacheStats:
        return CacheStats(*(a - b for a, b in zip(asdict(self).values(), asdict(before).values())))


def _close_at_exit(ref: weakref.ref) -> None:
    cache = ref()
    if cache is not None:
        cache.close()


def default_cache_path() -> Path:
    """``$RORO_CACHE_DIR/generations.sqlite``, else the user cache folder of roro-sdk."""
    folder = os.environ.get("RORO_CACHE_DIR")
    if not folder:
        from platformdirs import user_cache_dir

        folder = user_cache_dir("roro-sdk")
    return Path(folder) / "generations.sqlite"


def cache_file(path: str | os.PathLike[str] | None = None) -> Path:
    """The SQLite file a cache path names: a ``.sqlite``/``.db``/``.sqlite3`` file, or
    ``generations.sqlite`` inside a folder; None means :func:`default_cache_path`."""
    p = Path(path) if path is not None else default_cache_path()
    if p.suffix in (".sqlite", ".db", ".sqlite3"):
        return p
    if p.exists() and not p.is_dir():
        raise ConfigError(f"cache path {p} is a file but not a cache; give a folder or a .sqlite file")
    return p / "generations.sqlite"


def _sampling(kwargs: dict[str, Any]) -> bool:
    temp = kwargs.get("temperature")
    return (temp is None or float(temp) > 0.0) and kwargs.get("seed") is None


def cache_key(kwargs: dict[str, Any], messages: list[Any], *, cut: bool = True) -> str | None:
    """The cache key of a LiteLLM call, or None when the call samples and must not be cached."""
    if _sampling(kwargs):
        return None
    params = {k: v for k, v in sorted(kwargs.items()) if k not in _NOT_IN_KEY and v is not None}
    blob = json.dumps({"v": _FORMAT, "messages": messages, "params": params, "cut": cut}, sort_keys=True, default=str,
                      ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class GenerationCache:
    """A SQLite-backed cache of generations; see the module docstring.

    ``path``: a ``.sqlite``/``.db`` file, or a folder (the file ``generations.sqlite`` inside it);
    None means :func:`default_cache_path`.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, timeout_s: float = 30.0, batch_size: int = 256,
                 flush_s: float = 1.0) -> None:
        p = cache_file(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the cache folder {p.parent}: {e}") from None
        self.path = p
        self.timeout_s, self.batch_size, self.flush_s = timeout_s, max(1, batch_size), flush_s
        self.stats = CacheStats()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        self._pending: dict[str, tuple[str, str, float]] = {}
        self._last_flush = time.monotonic()
        self._connect()
        atexit.register(_close_at_exit, weakref.ref(self))

    # ----- connection ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout_s, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, model TEXT, value TEXT NOT NULL, "
                         "created REAL NOT NULL)")
        except sqlite3.Error as e:
            raise ConfigError(f"cannot open the generation cache {self.path}: {e}") from None
        self._conn, self._pid = conn, os.getpid()  # a forked child opens its own connection
        return conn

    def flush(self) -> None:
        """Write the entries still held in memory (one transaction)."""
        with self._lock:
            if not self._pending:
                return
            rows = [(k, m, v, t) for k, (m, v, t) in self._pending.items()]
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO generations (key, model, value, created) VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._pending.clear()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                try:
                    self.flush()
                finally:
                    self._conn.close()
            self._conn = None

    def __enter__(self) -> GenerationCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # picklable for process pools: reconnect on the other side
        self.flush()
        return {"path": self.path, "timeout_s": self.timeout_s, "batch_size": self.batch_size, "flush_s": self.flush_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("path"), **state)  # type: ignore[misc]

    # ----- records ------------------------------------------------------------------------------
    def key(self, kwargs: dict[str, Any], messages: list[Any], *, cut: bool = True) -> str | None:
        """The key the pool stores a call under (:func:`cache_key`)."""
        return cache_key(kwargs, messages, cut=cut)

    def get(self, key: str | None, *, request: dict[str, Any] | None = None, model: str = "") -> dict[str, Any] | None:
        """The record stored under ``key`` (a dict), or None. Counts a hit or a miss. ``request``
        and ``model`` (the call's parameters and pool name) are for stores that need them (a
        routing tree); this cache keys on everything already."""
        if key is None:
            with self._lock:
                self.stats.uncacheable += 1
            return None
        with self._lock:
            held = self._pending.get(key)
            row = (held[1],) if held else self._connect().execute("SELECT value FROM generations WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.stats.misses += 1
                return None
            rec = json.loads(row[0])
            self.stats.hits += 1
            self.stats.saved_cost_usd += float(rec.get("cost_usd", 0.0))
            self.stats.saved_model_time_s += float(rec.get("latency_s", 0.0))
            return rec

    def put(self, key: str | None, record: dict[str, Any], *, model: str = "", request: dict[str, Any] | None = None) -> None:
        """Store ``record`` (JSON-serialisable) under ``key``; a None key is ignored."""
        if key is None:
            return
        blob = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self._pending[key] = (model, blob, time.time())
            self.stats.stores += 1
            if len(self._pending) >= self.batch_size or time.monotonic() - self._last_flush >= self.flush_s:
                self.flush()

    def clear(self, *, model: str | None = None) -> int:
        """Delete every entry (or only those of one pool model name); returns how many."""
        with self._lock:
            self.flush()
            conn = self._connect()
            if model is None:
                n = conn.execute("DELETE FROM generations").rowcount
            else:
                n = conn.execute("DELETE FROM generations WHERE model = ?", (model,)).rowcount
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(n)

    def __len__(self) -> int:
        with self._lock:
            self.flush()
            return int(self._connect().execute("SELECT COUNT(*) FROM generations").fetchone()[0])

    def info(self) -> dict[str, Any]:
        """Entries per model and the file size, for ``roro cache stats``."""
        with self._lock:
            self.flush()
            rows = self._connect().execute("SELECT model, COUNT(*) FROM generations GROUP BY model").fetchall()
        size = sum(f.stat().st_size for f in self.path.parent.glob(self.path.name + "*") if f.is_file())
        return {"path": str(self.path), "entries": sum(n for _, n in rows), "by_model": dict(rows), "bytes": size}

    def __repr__(self) -> str:
        return f"GenerationCache({str(self.path)!r})"
