"""Run a coroutine from synchronous code, also when an event loop is already running (Jupyter);
run an async function over many items with bounded concurrency, one failure per item."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from .errors import RoroError

T = TypeVar("T")
R = TypeVar("R")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop is running in this thread (a notebook): run ours in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        return ex.submit(asyncio.run, coro).result()


async def gather_settled(fn: Callable[[T], Awaitable[R]], items: Sequence[T], concurrency: int) -> list[R | RoroError]:
    """``fn(item)`` for every item, at most ``concurrency`` at a time, in order: each entry is the
    result or the typed :class:`RoroError` that item raised (the other items go on)."""
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(item: T) -> R | RoroError:
        async with sem:
            try:
                return await fn(item)
            except RoroError as e:
                return e

    return list(await asyncio.gather(*(one(it) for it in items)))
