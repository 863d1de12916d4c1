"""transformers' and peft's screen noise while roro-sdk loads a model: progress bars, and notices
that name an internal of theirs rather than anything a user can act on. Each load is one log line
of roro-sdk's instead. Everything is restored on exit; other warnings stay visible."""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable, Iterator

_lock = threading.Lock()
_holders: dict[str, int] = {}
_restore: dict[str, Callable[[], None]] = {}


@contextlib.contextmanager
def _held(name: str, turn: Callable[[], Callable[[], None]]) -> Iterator[None]:
    """A process-wide switch held by nested or concurrent blocks (a pool loads its models on
    several threads at once): the first block in turns it (``turn`` returns how to undo that), the
    last one out undoes it. Saving and restoring per block would let the first load to finish
    switch the bars back on under a load still running."""
    with _lock:
        if _holders.get(name, 0) == 0:
            _restore[name] = turn()
        _holders[name] = _holders.get(name, 0) + 1
    try:
        yield
    finally:
        with _lock:
            _holders[name] -= 1
            if _holders[name] == 0:
                _restore.pop(name)()


def _bars_off() -> Callable[[], None]:
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    gguf_bar = _gguf_bar_off()

    def undo() -> None:
        gguf_bar()
        if was_on:
            hf_logging.enable_progress_bar()

    return undo


def _gguf_bar_off() -> Callable[[], None]:
    """transformers' GGUF reader (5.x) draws its de-quantising bar with tqdm directly, past the
    switch above; its module's ``tqdm`` is swapped for a disabled one until undone."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # no gguf support installed: nothing draws that bar
        return lambda: None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is None:
        return lambda: None
    gguf_utils.tqdm = functools.partial(bar, disable=True)

    def undo() -> None:
        gguf_utils.tqdm = bar

    return undo


def _notices_off() -> Callable[[], None]:
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity(max(verbosity, hf_logging.ERROR))
    return lambda: hf_logging.set_verbosity(verbosity)


@contextlib.contextmanager
def quiet_progress_bars(*, notices: bool = False) -> Iterator[None]:
    """No transformers/hub progress bars inside the block. ``notices=True`` also drops
    transformers' warning-level log lines (for loads of the registry's own pinned files, e.g. its
    note that a packed GGUF loads fastest in float32, which a conversion cannot act on)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_held("bars", _bars_off))
        if notices:
            stack.enter_context(_held("notices", _notices_off))
        yield


@contextlib.contextmanager
def quiet_peft_internals() -> Iterator[None]:
    """peft (0.21) reads ``model.is_gradient_checkpointing``, which transformers 5 deprecates with a
    FutureWarning on every adapter load; the notice is for peft's authors, not our users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
