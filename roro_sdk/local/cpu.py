"""Turn-taking on the CPU for every local engine, whatever runs its model (torch or llama.cpp).

Kept free of torch and llama.cpp imports so both engines share one lock.
"""

from __future__ import annotations

import collections
import threading


class FairLock:
    """A lock taken in arrival order. ``threading.Lock`` lets the thread that releases it take it
    again at once, so one engine's decode loop could starve another engine waiting for the CPU."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._queue: collections.deque[object] = collections.deque()
        self._held = False

    def __enter__(self) -> "FairLock":
        me = object()
        with self._cv:
            self._queue.append(me)
            try:
                while self._held or self._queue[0] is not me:
                    self._cv.wait()
            except BaseException:  # interrupted while waiting: leave the queue, or it jams for everyone
                self._queue.remove(me)
                self._cv.notify_all()
                raise
            self._queue.popleft()
            self._held = True
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cv:
            self._held = False
            self._cv.notify_all()


#: Engines whose model is on the CPU take turns: two models computing at once would split the
#: same cores between two thread pools and both run slower than one after the other.
CPU_LOCK = FairLock()
