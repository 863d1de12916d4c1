"""Sim tasks: seeded step-difficulty sequences, written into the question so any model path sees them.

A task's question starts with a recognisable header, ``[sim task s0-3] steps: E H E E H``: one
letter per reasoning step (E easy, H hard). The sim models read the header (they have no other
channel to the query), and ``Query.metadata["difficulties"]`` carries the same list for code.
The header is visible to routers on purpose: a learned router that reads it is learning the
bench's one real signal, which is what a trainer sanity check wants. Baseline routers ignore it.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

from ..errors import DatasetError
from ..types import Query, Trajectory
from .config import SimConfig, parse_sim_spec

HEADER_RE = re.compile(r"\[sim task ([^\]\s]+)\] steps: ([EH](?: [EH])*)")
_INSTRUCTION = (
    "This is a synthetic routing task (roro-sdk sim bench, not a real problem). "
    "Write one step per letter above, in order, then the answer."
)


def task_answer(task_id: str) -> int:
    """The reference answer of a task: a pure function of its id, so the sim models can compute it."""
    return 10 + int.from_bytes(hashlib.blake2b(task_id.encode(), digest_size=8).digest(), "big") % 990


@dataclass(frozen=True)
class SimTask:
    """``hard[k]`` says whether reasoning step ``k`` (0-based) is hard; step ``len(hard)`` is the answer."""

    id: str
    hard: tuple[bool, ...]

    @property
    def n_steps(self) -> int:
        return len(self.hard)

    @property
    def answer(self) -> int:
        return task_answer(self.id)

    @property
    def letters(self) -> str:
        return " ".join("H" if h else "E" for h in self.hard)

    @property
    def header(self) -> str:
        return f"[sim task {self.id}] steps: {self.letters}"

    def question(self, hint: str = "") -> str:
        return f"{self.header}\n{_INSTRUCTION}{hint}"

    def to_query(self, source: str = "sim", hint: str = "") -> Query:
        """``hint``: the text that ends the question (the first step's hint, when the config gives hints)."""
        return Query(id=self.id, question=self.question(hint), answer=str(self.answer), source=source,
                     metadata={"difficulties": ["hard" if h else "easy" for h in self.hard], "n_steps": self.n_steps,
                               "sim_task": True})

    @classmethod
    def from_text(cls, text: str) -> SimTask | None:
        m = HEADER_RE.search(text)
        return None if m is None else cls(id=m.group(1), hard=tuple(c == "H" for c in m.group(2).split()))


def coin(*parts: object) -> float:
    """A uniform number in [0, 1) from a hash of ``parts``."""
    h = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64



def step_hint(task: SimTask, k: int, config: SimConfig) -> str:
    """`` next: hard|easy`` announcing reasoning step ``k`` when the config gives hints (a property
    of the task, not of any model), else ``""``. Step 0's hint ends the question, step ``k``'s
    ends step ``k - 1``: the signal sits right before the decision it is about."""
    if config.hint_accuracy is None or not 0 <= k < task.n_steps:
        return ""
    shown = task.hard[k]
    if coin(config.seed, task.id, k, "hint") >= config.hint_accuracy:
        shown = not shown
    return f" next: {'hard' if shown else 'easy'}"


def next_hint(task: SimTask, k: int, config: SimConfig) -> str:
    """The hint that ends step ``k``: about step ``k + 1`` (none after the last reasoning step)."""
    return step_hint(task, k + 1, config)


def sim_queries(spec: str = "sim", n: int = 20, seed: int = 0, config: SimConfig | None = None) -> list[Query]:
    """``n`` seeded sim tasks as queries. ``spec`` is ``sim`` or ``sim:<preset>,<field>=<value>``
    (see :func:`roro_sdk.sim.parse_sim_spec`); ``config`` replaces the preset. The same (config,
    seed, n) always gives the same tasks, and task ``i`` does not depend on ``n``."""
    if not isinstance(n, int) or n < 1:
        raise DatasetError(f"sim_queries: n must be a positive integer, got {n!r}")
    cfg = parse_sim_spec(spec, config)
    out = []
    for i in range(n):
        rng = random.Random(f"roro-sim:{cfg.seed}:{seed}:{i}")
        n_steps = rng.randint(cfg.min_steps, cfg.max_steps)
        hard = tuple(rng.random() < cfg.p_hard for _ in range(n_steps))
        task = SimTask(id=f"s{seed}-{i}", hard=hard)
        out.append(task.to_query(source=spec, hint=step_hint(task, 0, cfg)))
    return out


def task_of(obj: Any) -> SimTask:
    """The :class:`SimTask` of a query, a trajectory, a question string or a task."""
    if isinstance(obj, SimTask):
        return obj
    if isinstance(obj, Trajectory):
        obj = obj.query
    text = obj.question if isinstance(obj, Query) else obj if isinstance(obj, str) else None
    if text is None:
        raise DatasetError(f"not a sim task: {type(obj).__name__}")
    task = SimTask.from_text(text)
    if task is None:
        raise DatasetError("not a sim task: the question has no '[sim task <id>] steps: ...' header")
    return task


def is_hard_step(query: Any, k: int) -> bool:
    """Whether reasoning step ``k`` (0-based, as ``Step.index``) of a sim query is hard.

    Hidden ground truth for tests and judges: a router under evaluation must not call this.
    The answer step (``k == n_steps``) and anything after it count as easy.
    """
    task = task_of(query)
    return 0 <= k < task.n_steps and task.hard[k]
