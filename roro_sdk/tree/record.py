"""Recording routing trees: every model writes the next step of every recorded prefix, level by level.

Each query's tree is expanded level by level (the steps of one level are independent, so they go
out together and a local engine batches them: continuous batching with prefix reuse, the children
of one node share its whole prompt), ``query_window`` queries at a time (``concurrency`` calls),
started in the dataset's order. So a recording stopped at any point holds its queries complete in
order but for the last ``query_window`` or so, and ``roro tree snapshot`` can keep that prefix;
expanding every query's first level before any second one would leave hours of work without one
complete query. Each finished call is appended
to ``calls.jsonl`` at once (see :mod:`.store`), so a kill loses only the calls in flight; a re-run
with the same arguments answers every recorded call from the file and records only the rest, so
it produces the same tree.

Right after each query's tree, each router of ``routers`` (e.g. STEER, SpecReason, TRIM) is run
on that query over the growing tree: every call it makes that the tree lacks (a probe, a
verification, a path that switches model after ``depth``) is made live and recorded, so that
router then replays with zero calls. Doing this per query, not after every query's tree, keeps a
stopped recording usable up to its last finished query, side calls included (a query's routers
run one after another: two escalating at the same step would otherwise pay one missing call
twice).

``cost_cap`` (dollars of live calls in this run) stops recording before a tree call that could
pass it (its :meth:`~roro_sdk.pool.ModelPool.call_cost_bound`, counting the tree calls in flight at
theirs), and before each query's run of a router; the runs of routers in flight may pass it by
their own calls. A re-run with a higher cap continues where it stopped. Steps are recorded
without the models' fallbacks: the tree holds what each model writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RoroError, TreeMismatchError
from ..pool import ModelPool
from ..runtime import StepwiseRuntime, as_query
from ..types import Query
from .manifest import RecordingSettings, TreeManifest, check_local_dtypes, check_pool, local_dtypes
from .paths import next_models, step_key, stop_after
from .queries import append_queries
from .store import TreeStore


@dataclass
class RecordResult:
    """What one ``record_tree`` call did."""

    folder: str
    queries: int
    calls: int = 0  # step requests of the tree, recorded before or now
    live_calls: int = 0  # of which made now
    router_live_calls: int = 0  # calls routers made now (side calls and paths outside the tree)
    errors: list[str] = field(default_factory=list)
    output_tokens: int = 0  # of the live calls (the tree's and the routers')
    cost_usd: float = 0.0  # of the live calls
    wall_s: float = 0.0
    complete: bool = True  # False when the cost cap stopped it or a branch failed (a re-run continues)
    stopped: str | None = None

    @property
    def steps_per_s(self) -> float:
        return (self.live_calls + self.router_live_calls) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(asdict(self), steps_per_s=self.steps_per_s, tokens_per_s=self.tokens_per_s)


def _settings_match(old: RecordingSettings, new: RecordingSettings, folder: Path) -> None:
    diffs = [f"{f}: {getattr(new, f)!r} vs recorded {getattr(old, f)!r}" for f in ("depth", "max_steps", "stop_on_repeat")
             if getattr(old, f) != getattr(new, f)]
    if diffs:
        raise TreeMismatchError(f"{folder} was recorded with other settings ({'; '.join(diffs)}); record into a new folder")


def _seed_in_key(pool: ModelPool) -> bool:
    return any(s.model.startswith("roro_sim/") for s in pool.specs)  # the sim bench's draws hash the seed


async def arecord_tree(pool: ModelPool, queries: Sequence[Query | str | dict], folder: str | Path, *, depth: int = 1,
                       max_steps: int = 24, stop_on_repeat: bool = True, concurrency: int = 16,
                       query_window: int | None = None, cost_cap: float | None = None, routers: Sequence[str] = (),
                       seed: int = 0, dataset: dict[str, Any] | None = None, progress: bool = False, compact: bool = False,
                       ray: Any = None) -> RecordResult:
    """Record (or continue recording) the routing tree of ``queries`` with ``pool`` into ``folder``.

    ``depth``: routing decisions branched over before each branch is completed by each single
    model (0: only the single-model chains). ``concurrency``: calls in flight; ``query_window``:
    queries in flight (default ``concurrency``). ``ray``: record on Ray workers (``"auto"``, an
    address or :class:`~roro_sdk.scale.RayOptions`), each query's subtree on one worker, every
    call written by this process into the same files. See the module docstring for the rest.
    """
    if ray is not None:
        from ..scale import ray_options

        ray = ray_options(ray)
    if not isinstance(depth, int) or depth < 0:
        raise ConfigError(f"depth must be a whole number >= 0, got {depth!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    if query_window is None:
        query_window = concurrency
    elif not isinstance(query_window, int) or query_window < 1:
        raise ConfigError(f"query_window must be a positive integer, got {query_window!r}")
    elif ray is not None:
        raise ConfigError("query_window applies to recording in this process; on Ray each worker takes a few queries "
                          "at a time (RayOptions.concurrency)")
    if cost_cap is not None and not cost_cap >= 0:
        raise ConfigError(f"cost_cap must be a non-negative number of dollars, got {cost_cap!r}")
    for s in pool.specs:
        if s.sampling.temperature != 0.0:
            raise ConfigError(f"model {s.name!r} samples (temperature {s.sampling.temperature}); a tree records greedy "
                              "steps only: set its sampling temperature to 0")
    pool.check_keys()
    from ..routers import make_router

    side = [make_router(r, seed=seed) for r in routers]  # a bad spec fails before anything is paid for
    folder = Path(folder)
    qs = [as_query(q) for q in queries]
    settings = RecordingSettings(depth=depth, max_steps=max_steps, stop_on_repeat=stop_on_repeat, seed_in_key=_seed_in_key(pool))
    if (folder / "manifest.json").is_file():
        manifest = TreeManifest.load(folder)
        check_pool(manifest, pool, folder=folder)
        _settings_match(manifest.recording, settings, folder)
        check_local_dtypes(manifest, folder=folder)
    else:
        manifest = TreeManifest.of_pool(pool, settings)
    append_queries(folder, qs)
    # listed before the first call: a snapshot of a killed recording must check these routers' calls
    manifest.recording.side_call_routers = sorted(set(manifest.recording.side_call_routers) | {r.strip() for r in routers})
    manifest.save(folder)
    store = TreeStore(folder, live=True, seed_in_key=settings.seed_in_key)
    stores_before = store.stores
    res = RecordResult(folder=str(folder), queries=len(qs))
    bar = _bar(progress)
    t0 = time.perf_counter()
    try:
        if ray is None:
            rpool = ModelPool(pool.specs, allow_unpriced=pool.allow_unpriced, prompt=pool.prompt, retry=pool.retry, cache=store)
            await _Recorder(rpool, store, settings, side, concurrency=concurrency, query_window=query_window,
                            cost_cap=cost_cap, res=res, bar=bar).run(qs)
        else:
            await _record_on_ray(pool, store, qs, settings, list(routers), seed, ray=ray, concurrency=concurrency,
                                 cost_cap=cost_cap, res=res, bar=bar)
    finally:
        if bar is not None:
            bar.close()
        res.complete = res.complete and not res.errors  # a failed branch is a hole: re-run to fill it
        res.wall_s = time.perf_counter() - t0
        # every live call is stored once; those that are not the tree's steps are the routers' (on Ray, a
        # query retried after its worker failed may count its first attempt's tree calls here too)
        res.router_live_calls = store.stores - stores_before - res.live_calls
        res.output_tokens, res.cost_usd = store.stored_output_tokens, store.stored_cost_usd
        store.close()
    if dataset is not None and dataset not in manifest.datasets:
        manifest.datasets.append(dataset)
    for name, dt in local_dtypes(pool).items():
        manifest.weights.setdefault(name, {})["dtype"] = dt
    if compact and res.complete:
        store.compact()
        manifest.files = file_pins(folder)
    # not the folder: the manifest lives in it, and a committed tree must not carry a recording machine's path
    stats = {k: v for k, v in res.as_dict().items() if k != "folder"}
    manifest.stats = dict(stats, calls_in_tree=len(store), bytes=tree_bytes(folder))
    manifest.save(folder)
    return res


class _Recorder:
    """Records queries over one pool whose cache is ``store`` (live), ``query_window`` at a time in
    order (``concurrency`` calls at a time): each query's tree level by level, then the side-call
    routers on it."""

    def __init__(self, rpool: ModelPool, store: TreeStore, settings: RecordingSettings, side: Sequence[Any], *,
                 concurrency: int, query_window: int | None = None, cost_cap: float | None, res: RecordResult,
                 bar: Any = None) -> None:
        self.rpool, self.store, self.settings, self.side = rpool, store, settings, list(side)
        self.cost_cap, self.res, self.bar = cost_cap, res, bar
        self.sem = asyncio.Semaphore(concurrency)
        self.window = asyncio.Semaphore(query_window or concurrency)  # queries in flight; waiters are served in order
        self.inflight: dict[str | None, asyncio.Future] = {}
        self.reserved = 0.0  # dollars of the calls in flight, at their bound

    def _stops(self, texts: tuple[str, ...]) -> bool:
        return stop_after(texts, max_steps=self.settings.max_steps, stop_on_repeat=self.settings.stop_on_repeat) is not None

    async def run(self, qs: Sequence[Query]) -> None:
        s = self.settings
        runtimes = [(r.name, StepwiseRuntime(self.rpool, r, max_steps=s.max_steps, stop_on_repeat=s.stop_on_repeat))
                    for r in self.side]
        await _all_or_cancel([self._query(q, runtimes) for q in qs])

    async def _query(self, q: Query, runtimes: list[tuple[str, StepwiseRuntime]]) -> None:
        async with self.window:
            await self._tree(q)
            for name, rt in runtimes:
                if self.res.stopped is not None:
                    break
                # one after another: two routers escalating at the same step would otherwise pay the
                # same missing call twice (router calls are not shared in flight like the tree's);
                # the other queries in the window keep the engine's batches full meanwhile
                await self._route(rt, name, q)

    async def _tree(self, q: Query) -> None:
        level: list[tuple[Query, tuple[str, ...], tuple[str, ...]]] = [(q, (), ())]
        while level:
            jobs = [(q, p, t, m) for q, p, t in level for m in next_models(p, self.rpool.names, self.settings.depth)]
            if self.bar is not None:
                self.bar.total = (self.bar.total or 0) + len(jobs)
                self.bar.refresh()
            done = await _all_or_cancel([self._expand(*j) for j in jobs])
            level = [d for d in done if d is not None]

    async def _expand(self, q: Query, path: tuple[str, ...], texts: tuple[str, ...], m: str) -> tuple | None:
        key = step_key(self.rpool, self.store, m, q.question, texts)
        if key in self.inflight:  # two paths reached the same prefix: one call serves both
            gen = await asyncio.shield(self.inflight[key])
        else:
            fut = self.inflight[key] = asyncio.get_running_loop().create_future()
            try:
                gen = await self._call(q, path, texts, m, key)
            except BaseException:
                fut.set_result(None)
                raise
            fut.set_result(gen)
            if gen is not None and self.bar is not None:
                self.bar.update(1)
        if gen is None:
            return None
        self.res.calls += 1
        t2 = texts + (gen.text,)
        return None if self._stops(t2) else (q, path + (m,), t2)

    async def _call(self, q: Query, path: tuple[str, ...], texts: tuple[str, ...], m: str, key: str | None):
        res, cap = self.res, self.cost_cap
        cached = self.store.holds(key, self.rpool.request_params(m, logprobs=True))
        async with self.sem:
            if not cached and res.stopped is not None:
                return None  # the cap was reached: no new call (recorded calls are still walked)
            bound = 0.0
            if not cached and cap is not None:
                bound = self.rpool.max_step_cost(m, q.question, list(texts))
                # the calls in flight count at their bound, so concurrent calls cannot pass the cap together
                if self.store.stored_cost_usd + self.reserved + bound > cap + 1e-15:
                    res.complete = False
                    res.stopped = (f"cost cap ${cap:g} reached (${self.store.stored_cost_usd:.6f} spent; the next call "
                                   f"could cost ${bound:.6f}); re-run with a higher cap to continue")
                    return None
            self.reserved += bound
            try:
                # no fallback: the tree holds what model m writes (a fallback's step would sit under m's branch)
                gen = await self.rpool.agenerate(m, q.question, list(texts), logprobs=True, allow_empty=True, use_fallback=False)
            except RoroError as e:  # one failing branch is recorded as an error, never fatal to the tree
                res.errors.append(self.rpool.redact(f"{q.id} {'/'.join(path + (m,))}: {e}"))
                return None
            finally:
                self.reserved -= bound
        res.live_calls += not gen.cached
        return gen

    async def _route(self, rt: StepwiseRuntime, name: str, q: Query) -> None:
        async with self.sem:
            # the cap is checked before each query's run: a run in flight may pass it by its own calls
            if self.cost_cap is not None and self.store.stored_cost_usd >= self.cost_cap:
                self.res.complete = False
                self.res.stopped = self.res.stopped or (f"cost cap ${self.cost_cap:g} reached while recording router {name}; "
                                                        "re-run with a higher cap")
                return
            t = await rt.arun(q, raise_on_error=False)
        if t.error:
            self.res.errors.append(f"{q.id} {name}: {t.error}")


@dataclass
class TreeRecordWorker:
    """Built once per Ray worker: the pool (from its recipe) over a store that reads the tree
    folder (what is recorded is not paid twice where the folder is shared) and keeps new calls in
    memory; then ``query -> (new call lines, the query's counts)``, written by the driver."""

    make_pool: Any
    folder: str
    settings: RecordingSettings
    routers: list[str]
    seed: int
    concurrency: int

    def __call__(self):
        from .._env import import_litellm
        from ..routers import make_router

        import_litellm()
        pool = self.make_pool()
        store = TreeStore(self.folder, live=True, seed_in_key=self.settings.seed_in_key, write=False)
        rpool = ModelPool(pool.specs, allow_unpriced=pool.allow_unpriced, prompt=pool.prompt, retry=pool.retry, cache=store)
        side = [make_router(r, seed=self.seed) for r in self.routers]

        async def record(q: Query) -> tuple[list[dict[str, Any]], dict[str, Any]]:
            res = RecordResult(folder=self.folder, queries=1)
            await _Recorder(rpool, store, self.settings, side, concurrency=self.concurrency, cost_cap=None, res=res).run([q])
            return store.drain(), {"calls": res.calls, "live_calls": res.live_calls, "errors": res.errors}

        return record


async def _record_on_ray(pool: ModelPool, store: TreeStore, qs: list[Query], settings: RecordingSettings,
                         routers: list[str], seed: int, *, ray: Any, concurrency: int, cost_cap: float | None,
                         res: RecordResult, bar: Any) -> None:
    """Each query's subtree on one worker; its calls come back and are appended here, so the
    files, resume and compaction are the local path's. The cost cap is checked before each query
    is handed out (a query in flight may pass it by its own calls)."""
    from ..scale import arun_sharded, pool_recipe

    # queries in flight per worker: a few, each with its own calls in flight (a local engine batches them all)
    per_worker = ray.concurrency or max(1, min(4, len(qs)))
    worker = TreeRecordWorker(pool_recipe(pool), str(store.folder), settings, routers, seed, concurrency)

    def sink(i: int, out: Any) -> None:
        lines, counts = out
        store.add_lines(lines)
        res.calls += counts["calls"]
        res.live_calls += counts["live_calls"]
        res.errors.extend(counts["errors"])
        if bar is not None:
            bar.update(1)

    def admit(i: int) -> bool:
        if cost_cap is not None and store.stored_cost_usd >= cost_cap:
            res.complete = False
            res.stopped = f"cost cap ${cost_cap:g} reached (${store.stored_cost_usd:.6f} spent); re-run with a higher cap"
            return False
        return True

    def give_up(i: int, q: Query, why: str) -> Any:
        return [], {"calls": 0, "live_calls": 0, "errors": [f"{q.id}: {why}"]}

    if bar is not None:
        bar.total = len(qs)
        bar.unit = "query"
        bar.refresh()
    await arun_sharded(qs, worker, sink, options=ray, concurrency=per_worker, admit=admit, give_up=give_up)


async def _all_or_cancel(coros: list) -> list:
    """``gather``, but the first exception cancels the rest before it propagates: no task may go on
    writing to a store that is being closed."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def record_tree(pool: ModelPool, queries: Sequence[Query | str | dict], folder: str | Path, **kw: Any) -> RecordResult:
    """Synchronous :func:`arecord_tree`."""
    from .._sync import run_sync

    return run_sync(arecord_tree(pool, queries, folder, **kw))


def file_pins(folder: str | Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of a compacted tree's data files (the manifest pins them)."""
    from roro_sdk._pins import pin

    return {name: pin(Path(folder) / name) for name in ("calls.jsonl.gz", "queries.jsonl") if (Path(folder) / name).is_file()}


def tree_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def _bar(progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=0, desc="record-tree", unit="step", dynamic_ncols=True)

