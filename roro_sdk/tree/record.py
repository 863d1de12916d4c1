"""Recording routing trees: every model writes the next step of every recorded prefix, level by level.

Why level by level across all queries: the steps of one level are independent, so they go out
together (``concurrency`` at a time) and a local engine batches them (continuous batching with
prefix reuse: the children of one node share its whole prompt). Each finished call is appended
to ``calls.jsonl`` at once (see :mod:`.store`), so a kill loses only the calls in flight; a re-run
with the same arguments answers every recorded call from the file and records only the rest, so
it produces the same tree.

After the tree, each router of ``routers`` (e.g. STEER, SpecReason, TRIM) is run once over the
queries on the growing tree: every call it makes that the tree lacks (a probe, a verification, a
path that switches model after ``depth``) is made live and recorded, so that router then replays
with zero calls. ``cost_cap`` (dollars of live calls in this run) stops recording before a
tree call that could pass it (its :meth:`~roro_sdk.pool.ModelPool.call_cost_bound`, counting the
calls in flight at theirs), and before each query's run of a router; a re-run with a higher cap
continues where it stopped. Steps are recorded without the models' fallbacks: the tree holds what
each model writes.
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
                       cost_cap: float | None = None, routers: Sequence[str] = (), seed: int = 0,
                       dataset: dict[str, Any] | None = None, progress: bool = False, compact: bool = False) -> RecordResult:
    """Record (or continue recording) the routing tree of ``queries`` with ``pool`` into ``folder``.

    ``depth``: routing decisions branched over before each branch is completed by each single
    model (0: only the single-model chains). See the module docstring for the rest.
    """
    if not isinstance(depth, int) or depth < 0:
        raise ConfigError(f"depth must be a whole number >= 0, got {depth!r}")
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ConfigError(f"max_steps must be a positive integer, got {max_steps!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
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
        manifest.save(folder)
    append_queries(folder, qs)
    store = TreeStore(folder, live=True, seed_in_key=settings.seed_in_key)
    rpool = ModelPool(pool.specs, allow_unpriced=pool.allow_unpriced, prompt=pool.prompt, retry=pool.retry, cache=store)
    res = RecordResult(folder=str(folder), queries=len(qs))
    bar = _bar(progress)
    sem = asyncio.Semaphore(concurrency)
    t0 = time.perf_counter()

    inflight: dict[str | None, asyncio.Future] = {}
    reserved = [0.0]  # dollars of the calls in flight, at their bound

    async def expand(q: Query, path: tuple[str, ...], texts: tuple[str, ...], m: str) -> tuple | None:
        key = step_key(rpool, store, m, q.question, texts)
        if key in inflight:  # two paths reached the same prefix: one call serves both
            gen = await asyncio.shield(inflight[key])
            if gen is None:
                return None
            return _after(q, path + (m,), texts + (gen.text,))
        fut = inflight[key] = asyncio.get_running_loop().create_future()
        try:
            gen = await call(q, path, texts, m, key)
        except BaseException:
            fut.set_result(None)
            raise
        fut.set_result(gen)
        if gen is None:
            return None
        if bar is not None:
            bar.update(1)
        return _after(q, path + (m,), texts + (gen.text,))

    def _after(q: Query, path: tuple[str, ...], texts: tuple[str, ...]) -> tuple | None:
        res.calls += 1
        return None if stop_after(texts, max_steps=max_steps, stop_on_repeat=stop_on_repeat) else (q, path, texts)

    async def call(q: Query, path: tuple[str, ...], texts: tuple[str, ...], m: str, key: str | None):
        cached = store.holds(key, rpool.request_params(m, logprobs=True))
        async with sem:
            if not cached and res.stopped is not None:
                return None  # the cap was reached: no new call (recorded calls are still walked)
            bound = 0.0
            if not cached and cost_cap is not None:
                bound = rpool.max_step_cost(m, q.question, list(texts))
                # the calls in flight count at their bound, so concurrent calls cannot pass the cap together
                if store.stored_cost_usd + reserved[0] + bound > cost_cap + 1e-15:
                    res.complete = False
                    res.stopped = (f"cost cap ${cost_cap:g} reached (${store.stored_cost_usd:.6f} spent; the next call could "
                                   f"cost ${bound:.6f}); re-run with a higher cap to continue")
                    return None
            reserved[0] += bound
            try:
                # no fallback: the tree holds what model m writes (a fallback's step would sit under m's branch)
                gen = await rpool.agenerate(m, q.question, list(texts), logprobs=True, allow_empty=True, use_fallback=False)
            except RoroError as e:  # one failing branch is recorded as an error, never fatal to the tree
                res.errors.append(rpool.redact(f"{q.id} {'/'.join(path + (m,))}: {e}"))
                return None
            finally:
                reserved[0] -= bound
        res.live_calls += not gen.cached
        return gen

    level: list[tuple[Query, tuple[str, ...], tuple[str, ...]]] = [(q, (), ()) for q in qs]
    try:
        while level:
            jobs = [(q, p, t, m) for q, p, t in level for m in next_models(p, rpool.names, depth)]
            if bar is not None:
                bar.total = (bar.total or 0) + len(jobs)
                bar.refresh()
            done = await _all_or_cancel([expand(*j) for j in jobs])
            level = [d for d in done if d is not None]
        for router in side:
            if res.stopped is not None:
                break
            before = store.stores
            rt = StepwiseRuntime(rpool, router, max_steps=max_steps, stop_on_repeat=stop_on_repeat)

            async def run_one(q: Query, rt: StepwiseRuntime = rt, name: str = router.name) -> None:
                async with sem:
                    # the cap is checked before each query's run: a run in flight may pass it by its own calls
                    if cost_cap is not None and store.stored_cost_usd >= cost_cap:
                        res.complete = False
                        res.stopped = res.stopped or f"cost cap ${cost_cap:g} reached while recording router {name}; re-run with a higher cap"
                        return
                    t = await rt.arun(q, raise_on_error=False)
                if t.error:
                    res.errors.append(f"{q.id} {name}: {t.error}")

            await _all_or_cancel([run_one(q) for q in qs])
            res.router_live_calls += store.stores - before
    finally:
        if bar is not None:
            bar.close()
        res.complete = res.complete and not res.errors  # a failed branch is a hole: re-run to fill it
        res.wall_s = time.perf_counter() - t0
        res.output_tokens, res.cost_usd = store.stored_output_tokens, store.stored_cost_usd
        store.close()
    manifest.recording.side_call_routers = sorted(set(manifest.recording.side_call_routers) | {r.strip() for r in routers})
    if dataset is not None and dataset not in manifest.datasets:
        manifest.datasets.append(dataset)
    for name, dt in local_dtypes(pool).items():
        manifest.weights.setdefault(name, {})["dtype"] = dt
    if compact and res.complete:
        store.compact()
    manifest.stats = dict(res.as_dict(), calls_in_tree=len(store), bytes=tree_bytes(folder))
    manifest.save(folder)
    return res


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


def tree_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).iterdir() if p.is_file())


def _bar(progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=0, desc="record-tree", unit="step", dynamic_ncols=True)

