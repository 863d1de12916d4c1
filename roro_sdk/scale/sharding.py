"""Work items over Ray workers, results streamed back to a driver-side sink: the one engine under
``roro eval/collect --ray`` and the GRPO trainer's rollouts.

    group = WorkerGroup(make_worker, options, concurrency=8)   # make_worker: picklable, () -> fn
    await group.arun(items, sink)        # sink(i, result) on the driver as each result arrives
    group.close()

``make_worker()`` runs once in each worker (build the pool, load local models there) and returns
``fn(item) -> result`` (sync or async). The driver hands out items one at a time, at most
``concurrency`` in flight per worker, so fast workers take more (no static shards to straggle)
and each result reaches ``sink`` -- the same append-only file and progress bar as the local path --
the moment it exists. Nothing is written by workers: the driver is the only writer, so a killed
worker can never tear a line, and what reached the sink is what a re-run skips.

Failures: a worker that dies (its process killed, out of memory, a node lost) fails the items in
flight on it; they go back in the queue and a replacement worker is started (``max_worker_restarts``
per run). Any of those items may have killed it, so each is tried again *alone* on a worker; an
item is tried at most ``max_attempts`` times (a death while it ran alone, or an exception from
``fn``, counts one), then ``give_up(i, item, why)`` makes the result recorded in its place (an
error trajectory): one poison query never stops the run, nor takes its neighbours with it.

Context: ``arun(..., context=value)`` sends ``value`` (the GRPO router's LoRA weights) to each
worker once per call, not once per item: workers keep the last version and ``fn.update(value)`` is
called when a new one arrives.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._extras import require
from ..errors import RayClusterError, RayConfigError
from .options import RayOptions

log = logging.getLogger("roro_sdk.scale")

Sink = Callable[[int, Any], None]
GiveUp = Callable[[int, Any, str], Any]


def import_ray():
    """The ``ray`` module, or one line naming the extra: ``pip install "roro-sdk[ray]"``."""
    return require("ray", extra="ray")


def connect(options: RayOptions):
    """Ray, initialised: the instance already running in this process as it is, else ``ray.init``
    with ``options.address`` (see :class:`RayOptions`). Returns the ``ray`` module."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    kw: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    kw.update(options.init)
    address = None if options.address == "auto" else options.address
    try:
        ray.init(address=address, **kw)
    except Exception as e:  # ConnectionError, TimeoutError, ValueError ... all mean "no cluster there"
        where = "a Ray instance on this machine" if address in (None, "local") else f"Ray at {address}"
        raise RayClusterError(f"could not start or reach {where}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                              ) from e
    return ray


class _Worker:
    """The Ray actor: one ``make_worker()`` per process, then items one call each."""

    def __init__(self, make_worker: Callable[[], Any]):
        from .._version import __version__

        self.version = __version__
        self.ctx_version: int | None = None
        self.ctx_lock: asyncio.Lock | None = None
        try:
            self.fn, self.error = make_worker(), None
        except Exception as e:  # reported by ready(), so the driver says why in one line
            self.fn, self.error = None, f"{type(e).__name__}: {e}"

    def ready(self) -> dict[str, Any]:
        return {"error": self.error, "version": self.version, "pid": os.getpid()}

    def pid(self) -> int:
        return os.getpid()

    async def run(self, item: Any, ctx: tuple[int, list] | None) -> Any:
        if ctx is not None and ctx[0] != self.ctx_version:
            import ray

            self.ctx_lock = self.ctx_lock or asyncio.Lock()
            async with self.ctx_lock:  # concurrent items of a new version fetch and apply it once
                if ctx[0] != self.ctx_version:
                    self.fn.update(await ctx[1][0])  # in a list, so Ray did not resolve it per call
                    self.ctx_version = ctx[0]
        out = self.fn(item)
        return await out if inspect.isawaitable(out) else out


@dataclass
class _Slot:
    """One worker position: its current actor, and how many items it has in flight."""

    index: int
    actor: Any = None
    generation: int = 0
    ready: bool = False
    inflight: int = 0
    solo: bool = False  # running a suspect alone: takes nothing else until it is back
    pid: int | None = None


@dataclass
class RunStats:
    """What one :meth:`WorkerGroup.arun` did."""

    items: int = 0
    done: int = 0
    given_up: int = 0
    skipped: int = 0
    retried: int = 0
    worker_restarts: int = 0
    errors: list[str] = field(default_factory=list)


class WorkerGroup:
    """A set of Ray workers built once and fed items by :meth:`arun` (any number of calls)."""

    def __init__(self, make_worker: Callable[[], Any], options: RayOptions, *, concurrency: int = 8):
        if not isinstance(options, RayOptions):
            raise RayConfigError(f"options must be RayOptions, not {type(options).__name__}")
        self.options = options
        self.concurrency = options.concurrency or concurrency
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise RayConfigError(f"concurrency must be a positive integer, got {self.concurrency!r}")
        self.ray = connect(options)
        self.make_worker = make_worker
        self._remote = self.ray.remote(num_cpus=options.num_cpus, num_gpus=options.num_gpus,
                                       max_concurrency=self.concurrency, max_restarts=0)(_Worker)
        self.slots = [_Slot(i) for i in range(self._worker_count())]
        self._factory_ref = self.ray.put(make_worker)  # pickled once, not once per (re)started worker
        self._ready: dict[Any, _Slot] = {}
        self._ctx: tuple[int, list] | None = None
        self._ctx_version = 0
        self.restarts = 0
        for s in self.slots:
            self._ready[self._start(s)] = s

    # ----- workers ------------------------------------------------------------------------------
    def _worker_count(self) -> int:
        o = self.options
        if o.workers is not None:
            return o.workers
        total = self.ray.cluster_resources()
        fits = []
        if o.num_cpus > 0:
            fits.append(int(total.get("CPU", 0) // o.num_cpus))
        if o.num_gpus > 0:
            fits.append(int(total.get("GPU", 0) // o.num_gpus))
        n = min(fits) if fits else 1
        if n < 1:
            raise RayConfigError(f"the Ray cluster ({_resources(total)}) cannot hold one worker of num_cpus={o.num_cpus:g}, "
                                 f"num_gpus={o.num_gpus:g}; lower them or add nodes")
        return n

    def _start(self, slot: _Slot) -> Any:
        """Start the slot's (next) actor; returns the ref of its ready() report."""
        slot.actor = self._remote.remote(self._factory_ref)
        slot.generation += 1
        slot.ready, slot.inflight, slot.solo, slot.pid = False, 0, False, None
        return slot.actor.ready.remote()

    def _replace(self, slot: _Slot, why: str) -> Any:
        if self.restarts >= self.options.max_worker_restarts:
            raise RayClusterError(f"worker {slot.index} died and the run has used its {self.options.max_worker_restarts} "
                                  f"worker restarts (last: {why}); finished results are kept, a re-run resumes")
        self.restarts += 1
        log.warning("roro: Ray worker %d died (%s); starting a replacement", slot.index, why)
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone
            pass
        return self._start(slot)

    def _check_ready(self, slot: _Slot, info: dict[str, Any]) -> None:
        from .._version import __version__

        if info["error"]:
            raise RayClusterError(f"a Ray worker could not be set up: {info['error']}")
        if info["version"] != __version__:
            raise RayClusterError(f"a Ray worker runs roro-sdk {info['version']}, this driver {__version__}: install the "
                                  "same version on every node")
        slot.ready, slot.pid = True, info["pid"]

    @property
    def size(self) -> int:
        return len(self.slots)

    def pids(self) -> list[int | None]:
        """Process ids of the workers that are ready (tests kill one of them)."""
        return [s.pid for s in self.slots]

    async def wait_ready(self) -> None:
        """Wait until every worker has built its pool (so a caller's timing starts with warm workers)."""
        for ref, slot in list(self._ready.items()):
            try:
                info = await _future(ref)
            except Exception:  # died while starting: arun replaces it
                continue
            del self._ready[ref]
            self._check_ready(slot, info)

    # ----- items ----------------------------------------------------------------------------------
    async def arun(self, items: Sequence[Any], sink: Sink, *, give_up: GiveUp | None = None,
                   admit: Callable[[int], bool] | None = None, context: Any = None) -> RunStats:
        """Run every item; ``sink(i, result)`` gets each result on the driver as it arrives.

        ``admit(i)``, asked just before item ``i`` is sent, may refuse it (a cost cap was reached):
        it is then skipped, never run. ``give_up(i, item, why)`` makes the result recorded for an
        item that failed ``max_attempts`` times (default: raise :class:`RayClusterError`).
        ``context``: sent to every worker once (``fn.update(context)``) before its next item.
        """
        ray = self.ray
        stats = RunStats(items=len(items))
        if context is not None:
            self._ctx_version += 1
            self._ctx = (self._ctx_version, [ray.put(context)])
        queue = deque(range(len(items)))
        attempts = [0] * len(items)
        # Items that were in flight on a worker that died: any of them may have killed it, so each
        # is tried again alone on a worker; only a death while alone counts against its attempts.
        suspects: set[int] = set()
        running: dict[asyncio.Future, tuple[_Slot, int, int, bool]] = {}  # future -> (slot, generation, item, solo)
        readying = {_future(ref): (slot, ref) for ref, slot in self._ready.items()}
        self._ready.clear()

        def fail(i: int, why: str) -> None:
            attempts[i] += 1
            if attempts[i] < self.options.max_attempts:
                stats.retried += 1
                queue.appendleft(i)
                return
            stats.given_up += 1
            stats.errors.append(why)
            if give_up is None:
                raise RayClusterError(f"item {i} failed {attempts[i]} times; last: {why}")
            sink(i, give_up(i, items[i], why))

        def restart(slot: _Slot, why: str) -> None:
            ref = self._replace(slot, why)
            stats.worker_restarts += 1
            readying[_future(ref)] = (slot, ref)

        def send(slot: _Slot, i: int, solo: bool) -> None:
            ref = slot.actor.run.remote(items[i], self._ctx)
            running[_future(ref)] = (slot, slot.generation, i, solo)
            slot.inflight += 1
            slot.solo = solo

        while queue or running:
            for slot in self.slots:
                while queue and slot.ready and not slot.solo and slot.inflight < self.concurrency:
                    i = queue[0]
                    if i in suspects:
                        if slot.inflight == 0:
                            send(slot, queue.popleft(), True)
                        break
                    queue.popleft()
                    if attempts[i] == 0 and admit is not None and not admit(i):
                        stats.skipped += 1
                        continue
                    send(slot, i, False)
            if not running and not readying:
                if queue:  # every worker gone and none starting: cannot happen unless restarts ran out
                    raise RayClusterError("no Ray worker is left to run the remaining items")
                break
            done, _ = await asyncio.wait([*running, *readying], return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                if fut in readying:
                    slot, _ref = readying.pop(fut)
                    try:
                        self._check_ready(slot, fut.result())
                    except RayClusterError:
                        raise
                    except Exception as e:  # the new worker died before it was ready
                        restart(slot, _why(e))
                    continue
                slot, gen, i, solo = running.pop(fut)
                if gen == slot.generation:
                    slot.inflight -= 1
                    slot.solo = slot.solo and not solo
                try:
                    result = fut.result()
                except ray.exceptions.RayActorError as e:  # the worker died under the item
                    if solo:
                        fail(i, f"worker died while running it alone: {_why(e)}")
                    else:
                        suspects.add(i)
                        stats.retried += 1
                        queue.appendleft(i)
                    if gen == slot.generation:  # the first of its items to report the death restarts it
                        restart(slot, _why(e))
                    continue
                except Exception as e:  # fn raised (ray.exceptions.RayTaskError), or its result did not unpickle
                    fail(i, _why(e))
                    continue
                stats.done += 1
                suspects.discard(i)
                sink(i, result)
        for fut, (slot, ref) in readying.items():  # workers still starting: keep them for the next call
            fut.cancel()
            self._ready[ref] = slot
        return stats

    def close(self) -> None:
        """Stop the workers (the Ray instance itself is left running for whoever started it)."""
        for s in self.slots:
            if s.actor is not None:
                try:
                    self.ray.kill(s.actor, no_restart=True)
                except Exception:
                    pass
                s.actor = None

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def arun_sharded(items: Sequence[Any], make_worker: Callable[[], Any], sink: Sink, *, options: RayOptions,
                       concurrency: int = 8, give_up: GiveUp | None = None,
                       admit: Callable[[int], bool] | None = None) -> RunStats:
    """One-shot :class:`WorkerGroup`: start the workers, run ``items``, stop them. See the module
    docstring for the contract of ``make_worker``, ``sink``, ``give_up`` and ``admit``."""
    with WorkerGroup(make_worker, options, concurrency=concurrency) as group:
        return await group.arun(items, sink, give_up=give_up, admit=admit)


def _why(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


def _resources(total: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(total.items()) if k in ("CPU", "GPU")) or "no CPU or GPU"


def _future(ref: Any) -> asyncio.Future:
    """An ObjectRef as an asyncio future of the running loop."""
    return asyncio.wrap_future(ref.future())
