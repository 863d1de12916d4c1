"""Where to cut a generated continuation: the step delimiter and ordinary stop strings.

Why a pure function: the decode loop calls it on every row after every token, the batched and
one-at-a-time paths must agree exactly, and it is the piece most worth testing on its own.

The step delimiter is a blank line (``"\\n\\n"``, DESIGN.md section 1). Passing ``"\\n\\n"`` in
``stop`` switches on *step* semantics instead of plain substring matching:

* a blank line is ``"\\n"``, optional spaces/tabs, ``"\\n"`` (so ``"\\n \\n"`` counts too);
* it only counts once the text holds some non-whitespace character *before* it, so leading
  newlines (a model that opens with an empty line) never produce an empty step;
* the delimiter is not returned and the kept text is right-stripped.

Every other stop string is matched literally, and excluded from the text (OpenAI semantics).
The earliest cut over all stop strings wins.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

STEP_DELIMITER = "\n\n"
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class StopMatch:
    """A stop found in a text: ``text[:cut]`` is kept (before right-stripping for a step stop)."""

    cut: int
    stop: str
    content: str  # the text to return


def _step_cut(text: str) -> int | None:
    first = _NON_SPACE.search(text)
    if first is None:
        return None
    m = _BLANK_LINE.search(text, first.end())
    return None if m is None else m.start()


def find_stop(text: str, stops: Sequence[str] | None) -> StopMatch | None:
    """The earliest stop in ``text`` for ``stops``, or ``None`` when the text may keep growing.

    >>> find_stop("\\n\\nFirst step.\\n\\nSecond", ["\\n\\n"]).content
    '\\n\\nFirst step.'
    >>> find_stop("x = 1;\\nEND", ["END"]).content
    'x = 1;\\n'
    """
    if not stops:
        return None
    best: StopMatch | None = None
    for stop in stops:
        if not stop:
            continue
        if stop == STEP_DELIMITER:
            cut = _step_cut(text)
            if cut is not None and (best is None or cut < best.cut):
                best = StopMatch(cut, stop, text[:cut].rstrip())
        else:
            cut = text.find(stop)
            if cut >= 0 and (best is None or cut < best.cut):
                best = StopMatch(cut, stop, text[:cut])
    return best
