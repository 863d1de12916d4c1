"""The sim models' behaviour: pure functions from (task, prefix, model, seeds) to the next step.

Every random draw is a hash of (config seed, sampling seed, task id, step index, model, purpose),
not a stateful RNG: the same request always gets the same step, whatever ran before or
concurrently, so trajectories are reproducible, cacheable and exactly analysable.

Step records (1-based step numbers, as a person would write them)::

    Step 3 [hard]: mistake       this step is wrong; the answer is wrong unless a later step recovers
    Step 4 [easy]: carried       this step is fine but an earlier mistake is still uncorrected
    Step 5 [easy]: recovered     this step fixed the earlier mistake
    Step 6 [hard]: ok            right, and nothing is pending
    Answer: 417                  the reference answer iff no mistake is pending
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .config import SimConfig
from .tasks import SimTask, coin, next_hint, step_hint  # noqa: F401  (re-exported: they were defined here)

RECORD_RE = re.compile(r"Step (\d+) \[(easy|hard)\]: (ok|mistake|recovered|carried)\b")
_PENDING = {"ok": False, "recovered": False, "mistake": True, "carried": True}


@dataclass(frozen=True)
class StepOutcome:
    """What model ``model`` writes as reasoning step ``k`` given whether a mistake is pending."""

    verdict: str  # ok | mistake | recovered | carried
    confidence: float

    @property
    def pending(self) -> bool:
        return _PENDING[self.verdict]


def step_outcome(task: SimTask, k: int, pending: bool, model: str, config: SimConfig, sampling_seed: int | None = None) -> StepOutcome:
    """The outcome of reasoning step ``k`` (0-based) written by ``model`` (the rule of the bench)."""
    m = config.model(model)
    hard = task.hard[k]
    base = (config.seed, "-" if sampling_seed is None else sampling_seed, task.id, k, model)
    mistake = coin(*base, "err") < m.error(hard)
    if mistake:
        verdict = "mistake"
    elif pending:
        verdict = "recovered" if coin(*base, "rec") < m.recovery else "carried"
    else:
        verdict = "ok"
    conf = (m.confidence_hard if hard else m.confidence_easy) - (m.mistake_confidence_drop if mistake else 0.0)
    conf += m.confidence_noise * (2.0 * coin(*base, "conf") - 1.0)
    return StepOutcome(verdict, min(max(conf, 0.01), 0.999))


def read_records(text: str) -> list[tuple[int, bool, str]]:
    """The step records in ``text``: (1-based number, hard, verdict)."""
    return [(int(n), d == "hard", v) for n, d, v in RECORD_RE.findall(text)]


def pending_after(verdicts: Sequence[str]) -> bool:
    """Whether a mistake is still uncorrected after these step verdicts."""
    pending = False
    for v in verdicts:
        pending = _PENDING[v]
    return pending


def write_step(task: SimTask, k: int, pending: bool, model: str, config: SimConfig, sampling_seed: int | None,
               max_tokens: int | None) -> tuple[str, int, float, str]:
    """(text, completion tokens, confidence, finish reason) of step ``k`` (``k >= n_steps``: the answer).

    A call cut short by ``max_tokens`` (a STEER probe) shows the start of the step but not its
    verdict: the verdict is the conclusion of the step, written last.
    """
    if k >= task.n_steps:
        answer = task.answer
        if pending:
            answer += 1 + int(coin(config.seed, sampling_seed, task.id, "wrong") * 9)
        text, need, conf = f"Answer: {answer}", config.answer_tokens, 0.99 if not pending else 0.9
    else:
        out = step_outcome(task, k, pending, model, config, sampling_seed)
        record = f"Step {k + 1} [{'hard' if task.hard[k] else 'easy'}]:"
        text = f"{record} {out.verdict}" + next_hint(task, k, config)
        need, conf = config.tokens_per_step, out.confidence
    if max_tokens is not None and max_tokens < need:
        if k < task.n_steps:
            text = record  # the verdict (and the hint) conclude a step: a cut-off step shows neither
        return text, max(int(max_tokens), 1), conf, "length"
    return text, need, conf, "stop"


def verdict_digit(task: SimTask, k: int, draft: str, prior_pending: bool, verifier: str, config: SimConfig,
                  sampling_seed: int | None) -> int:
    """A 0-9 score for a proposed step (SpecReason's verify prompt): high for a good step, low for a
    mistake or a step that carries one; wrong with probability ``config.verifier_error``."""
    recs = read_records(draft)
    if recs:
        good = not _PENDING[recs[-1][2]]
    elif "Answer:" in draft:
        good = not prior_pending
    else:
        good = False  # an unreadable or cut-off draft is not a step to keep
    if coin(config.seed, sampling_seed, task.id, k, verifier, "verify") < config.verifier_error:
        good = not good
    return 8 if good else 2


def logprob(p: float) -> float:
    return math.log(min(max(p, 1e-9), 1.0))
