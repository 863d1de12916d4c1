"""Trajectory collection: diverse routed runs of every query under several routing policies.

Stage 1 of the method: for each query, trajectories from several policies (random at several
mixes, all-small, all-large, the heuristic routers, a learned policy), run concurrently with a
progress bar and a cost cap, into an append-only JSON-lines file.

Crash safety: every trajectory has a stable id, ``trajectory_id(query id, policy name, rollout)``;
each finished trajectory is appended as one line, flushed and fsynced before the next is
written. On (re)start the file is read, a torn last line (the writer was killed mid-line) is moved
aside to ``<out>.torn`` (a complete last line that only lacks its newline is kept), and every id
already present is skipped: a killed run resumes with nothing lost and nothing
duplicated. Runs that failed with a model error are *not* written to the main file (they go to
``<out>.errors.jsonl``), so a resume retries them.

Diversity: rollout ``r`` of a spec policy builds its router with ``seed + r`` (so ``random:P``
draws differently per rollout) and, with ``vary_sampling_seed``, asks the models for sampling
seed ``seed + r`` (providers that honour seeds, and the sim bench, then sample differently).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .errors import ConfigError, DatasetError
from .pool import ModelPool
from .routers.base import Router
from .runtime import StepwiseRuntime, as_query
from .trajectories import is_complete_line, repair_torn_tail
from .types import Query, Trajectory

DEFAULT_POLICIES: tuple[str, ...] = ("all-small", "all-large", "random:0.25", "random:0.5", "random:0.75")
PolicyLike = "str | Router | tuple[str, Callable[[int], Router]]"


def trajectory_id(query_id: str, policy: str, rollout: int) -> str:
    """The stable id of rollout ``rollout`` of ``policy`` on query ``query_id``."""
    return hashlib.sha1(f"{query_id}\x1f{policy}\x1f{rollout}".encode()).hexdigest()[:20]


class CollectResult(BaseModel):
    """What a collection run did (this run only; ``existing`` counts what the file held before)."""

    planned: int = 0
    existing: int = 0
    written: int = 0
    errors: int = 0
    skipped_cost_cap: int = 0
    stopped_by_cost_cap: bool = False
    cost_usd: float = Field(0.0, description="spent by this run")
    total_cost_usd: float = Field(0.0, description="spent by this run plus what the file held before")
    wall_s: float = 0.0
    per_policy: dict[str, int] = Field(default_factory=dict)
    out: str = ""


def existing_ids(path: str | Path) -> tuple[set[str], float]:
    """Ids (and total cost) of the trajectories in a collection file; a torn tail is moved aside
    first (:func:`repair_torn_tail`). Any other line that is not a trajectory is corruption, not a
    crash: :class:`DatasetError`, raised before the file is changed."""
    p = Path(path)
    if p.is_dir():
        raise DatasetError(f"collection file {p} is a folder; give the path of a .jsonl file")
    if not p.is_file():
        return set(), 0.0
    trajs: list[Trajectory] = []
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if raw.strip() and (raw.endswith(b"\n") or is_complete_line(raw)):  # else a torn tail
                trajs.append(_trajectory(p, lineno, raw))
    repair_torn_tail(p)
    return {t.id for t in trajs}, sum(t.cost_usd for t in trajs)


def _trajectory(p: Path, lineno: int, raw: bytes) -> Trajectory:
    try:
        return Trajectory.from_jsonl(raw.decode("utf-8"))
    except Exception as e:
        why = " ".join(str(e).split())[:160]
        raise DatasetError(f"{p}:{lineno}: not a valid trajectory ({why}); this is not a collection file or "
                           "it is corrupt, so it cannot be resumed: give another --out") from None


def errored_cost(err_path: str | Path) -> float:
    """Dollars spent on the failed runs recorded in a collection's ``.errors.jsonl`` (0 for records
    written before costs were recorded there, and for unreadable lines)."""
    total = 0.0
    try:
        lines = Path(err_path).read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return 0.0
    for line in lines:
        try:
            cost = json.loads(line).get("cost_usd") or 0.0
        except (ValueError, AttributeError):
            continue
        if isinstance(cost, (int, float)) and math.isfinite(cost):
            total += float(cost)
    return total


class _Appender:
    """Append-only writer: one line per record, flushed and fsynced."""

    def __init__(self, path: Path, fsync: bool = True):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "ab")
        self.fsync = fsync

    def write(self, line: str) -> None:
        self.fh.write(line.encode("utf-8") + b"\n")
        self.fh.flush()
        if self.fsync:
            os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _policies(policies: Iterable[Any], seed: int) -> list[tuple[str, Callable[[int], Router]]]:
    from .routers import make_router

    out: list[tuple[str, Callable[[int], Router]]] = []
    for p in policies:
        if isinstance(p, str):
            spec = p.strip()
            make_router(spec, seed=seed)  # fail fast on a bad spec
            out.append((spec, lambda r, spec=spec: make_router(spec, seed=seed + r)))
        elif isinstance(p, Router):
            out.append((p.name, lambda r, p=p: p))
        elif isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and callable(p[1]):
            out.append((p[0], p[1]))
        else:
            raise ConfigError(f"a policy must be a router spec string, a Router, or (name, rollout -> Router); got {p!r}")
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"policy names must be unique (they are part of the trajectory ids): {names}")
    if not out:
        raise ConfigError("collect needs at least one policy")
    return out


def _pool_for_rollout(pool: ModelPool, seed: int | None) -> ModelPool:
    if seed is None:
        return pool
    specs = [s.model_copy(update={"sampling": s.sampling.model_copy(update={"seed": seed})}) for s in pool.specs]
    return ModelPool(specs, allow_unpriced=pool.allow_unpriced, prompt=pool.prompt, retry=pool.retry, cache=pool.cache)


async def acollect(
    queries: Sequence[Query | str | dict],
    pool: ModelPool,
    policies: Iterable[Any] = DEFAULT_POLICIES,
    *,
    out: str | Path,
    rollouts: int = 1,
    concurrency: int = 8,
    cost_cap: float | None = None,
    seed: int = 0,
    vary_sampling_seed: bool = True,
    progress: bool = False,
    fsync: bool = True,
    max_steps: int = 24,
    token_budget: int | None = None,
    cost_budget: float | None = None,
    checker: Callable | None = None,
    on_result: Callable[[Trajectory], None] | None = None,
    ray: Any = None,
) -> CollectResult:
    """Run every (query, policy, rollout) not yet in ``out`` and append each trajectory to it.

    ``policies``: router spec strings (``"random:0.3"``, ``"policy:PATH"``; see ``roro routers``),
    Router objects (the same router for every rollout), or ``(name, rollout -> Router)`` pairs.
    ``cost_cap``: dollars for the whole collection, *including* what ``out`` already holds; once
    reached no new run starts (runs in flight finish, so the overshoot is at most ``concurrency``
    runs; pass ``cost_budget`` to bound each run). ``cost_budget``/``token_budget``/``max_steps``
    bound each run as in :class:`StepwiseRuntime`.
    ``ray``: ``"auto"``, a Ray address or :class:`~roro_sdk.scale.RayOptions` runs the runs on Ray
    workers (``pip install "roro-sdk[ray]"``), each building ``pool`` once; results come back to
    this process and go into ``out`` exactly as on the local path (same ids, resume, cost cap, bar).
    """
    if not isinstance(rollouts, int) or rollouts < 1:
        raise ConfigError(f"rollouts must be a positive integer, got {rollouts!r}")
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigError(f"concurrency must be a positive integer, got {concurrency!r}")
    if cost_cap is not None and not cost_cap >= 0:
        raise ConfigError(f"cost_cap must be a non-negative number of dollars, got {cost_cap!r}")
    qs = [as_query(q) for q in queries]
    if len({q.id for q in qs}) != len(qs):
        raise ConfigError("query ids must be unique (they are part of the trajectory ids)")
    pols = _policies(policies, seed)
    opts = None
    if ray is not None:
        from .scale import ray_options

        opts = ray_options(ray)
    if not str(out).strip():  # Path("") is the current folder
        raise ConfigError("the collection file path (out) is empty; give the path of a .jsonl file")
    path = Path(out)
    done, prior_cost = existing_ids(path)
    pool.check_keys()
    t0 = time.perf_counter()

    tasks = [(q, name, factory, r, trajectory_id(q.id, name, r)) for q in qs for name, factory in pols for r in range(rollouts)]
    todo = [t for t in tasks if t[4] not in done]
    res = CollectResult(planned=len(tasks), existing=len(tasks) - len(todo), out=str(path))
    runtime_kw = {"max_steps": max_steps, "token_budget": token_budget, "cost_budget": cost_budget, "checker": checker}
    runtime = _Runtimes(pool, seed if vary_sampling_seed else None, runtime_kw)
    for q, name, factory, r, _ in todo:  # build (and check) every router before any call is made
        runtime(name, factory, r)

    writer = _Appender(path, fsync=fsync)
    err_path = path.with_name(path.name + ".errors.jsonl")
    prior_cost += errored_cost(err_path)  # failed runs were paid for too: the cost cap counts them
    sem = asyncio.Semaphore(concurrency)
    spent = prior_cost
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), initial=res.existing, desc="collect", unit="traj", dynamic_ncols=True)

    def capped() -> bool:
        if cost_cap is not None and spent >= cost_cap:
            res.skipped_cost_cap += 1
            res.stopped_by_cost_cap = True
            return True
        return False

    async def one(q: Query, name: str, factory: Callable[[int], Router], r: int, tid: str) -> None:
        async with sem:
            if capped():
                return
            traj = await runtime(name, factory, r).arun(q, raise_on_error=False)
        record(q, name, r, tid, traj)

    def record(q: Query, name: str, r: int, tid: str, traj: Trajectory) -> None:
        """The driver's side of one finished run, whichever path ran it: append it (or its error)."""
        nonlocal spent
        traj.id = tid
        traj.metadata.update({"policy": name, "rollout": r, "collect_seed": seed})
        spent += traj.cost_usd
        res.cost_usd += traj.cost_usd
        if traj.stop_reason == "error":
            res.errors += 1
            with open(err_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"id": tid, "query_id": q.id, "policy": name, "rollout": r, "error": traj.error,
                                     "cost_usd": traj.cost_usd}) + "\n")
        else:
            writer.write(traj.to_jsonl())
            res.written += 1
            res.per_policy[name] = res.per_policy.get(name, 0) + 1
            if on_result is not None:
                on_result(traj)
        if bar is not None:
            bar.set_postfix(cost=f"${spent:.4f}", err=res.errors, refresh=False)
            bar.update(1)

    try:
        if opts is None:
            await asyncio.gather(*(one(*t) for t in todo))
        else:
            await _collect_on_ray(pool, pols, todo, opts, concurrency, seed if vary_sampling_seed else None, runtime_kw,
                                  record, capped)
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    res.total_cost_usd = spent
    res.wall_s = time.perf_counter() - t0
    return res


class _Runtimes:
    """One runtime per (policy, rollout), built on first use: rollout ``r`` samples with seed
    ``seed + r`` when ``seed`` is given. The driver (local path) and each Ray worker hold one."""

    def __init__(self, pool: ModelPool, seed: int | None, runtime_kw: dict[str, Any]):
        self.pool, self.seed, self.kw = pool, seed, runtime_kw
        self.runtimes: dict[tuple[str, int], StepwiseRuntime] = {}

    def __call__(self, name: str, factory: Callable[[int], Router], r: int) -> StepwiseRuntime:
        key = (name, r)
        if key not in self.runtimes:
            rpool = _pool_for_rollout(self.pool, None if self.seed is None else self.seed + r)
            self.runtimes[key] = StepwiseRuntime(rpool, factory(r), **self.kw)
        return self.runtimes[key]


class CollectWorker:
    """A Ray worker's side of a collection: builds the pool once (``make_pool``), then runs items
    ``(query, policy name, rollout)`` with the same per-rollout runtimes as the local path."""

    def __init__(self, make_pool: Callable[[], ModelPool], policies: dict[str, Callable[[int], Router]],
                 seed: int | None, runtime_kw: dict[str, Any]):
        self.make_pool, self.policies, self.seed, self.runtime_kw = make_pool, policies, seed, runtime_kw

    def __call__(self) -> Callable[[tuple[Query, str, int]], Any]:
        from ._env import import_litellm

        import_litellm()  # at set-up, not inside the first run
        runtimes = _Runtimes(self.make_pool(), self.seed, self.runtime_kw)

        async def run(item: tuple[Query, str, int]) -> Trajectory:
            q, name, r = item
            return await runtimes(name, self.policies[name], r).arun(q, raise_on_error=False)

        return run


async def _collect_on_ray(pool: ModelPool, pols: list[tuple[str, Callable[[int], Router]]], todo: list, opts: Any,
                          concurrency: int, seed: int | None, runtime_kw: dict[str, Any],
                          record: Callable[..., None], capped: Callable[[], bool]) -> None:
    """The runs of ``todo`` on Ray workers; each result is ``record``-ed on this process as it arrives."""
    from .scale import arun_sharded, error_trajectory, pool_recipe

    worker = CollectWorker(pool_recipe(pool), dict(pols), seed, runtime_kw)
    items = [(q, name, r) for q, name, _, r, _ in todo]

    def sink(i: int, traj: Trajectory) -> None:
        q, name, _, r, tid = todo[i]
        record(q, name, r, tid, traj)

    await arun_sharded(items, worker, sink, options=opts, concurrency=concurrency, admit=lambda i: not capped(),
                       give_up=lambda i, item, why: error_trajectory(item[0], item[1], why))


def collect(queries: Sequence[Query | str | dict], pool: ModelPool, policies: Iterable[Any] = DEFAULT_POLICIES,
            **kw: Any) -> CollectResult:
    """Synchronous :func:`acollect`."""
    from ._sync import run_sync

    return run_sync(acollect(queries, pool, policies, **kw))
