"""Routers that look at the small model's output before deciding: STEER, SpecReason and TRIM.

All three spend calls on the side (probes, drafts, verifications); those calls go through
``state.generate`` so they are budget-checked and their cost lands in the step's ``side_calls``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable

from ..errors import LogprobsUnavailableError, RouterError
from ..pool import Generation, ModelPool
from .base import Decision, Router, RoutingState


def _need_logprobs(gen: Generation, who: str) -> list[float]:
    if not gen.token_logprobs:
        raise LogprobsUnavailableError(
            f"{who} needs token log-probabilities, but model {gen.model!r} returned none; use a provider "
            "that supports logprobs (OpenAI-compatible servers, vLLM, local models) or another router"
        )
    return gen.token_logprobs


def draft_confidence(gen: Generation) -> float:
    """Mean token probability of a draft."""
    lps = _need_logprobs(gen, "confidence scoring")
    return sum(math.exp(x) for x in lps) / len(lps)


def draft_min_probability(gen: Generation) -> float:
    """Probability of the draft's least likely token: the weakest point of the step."""
    return math.exp(min(_need_logprobs(gen, "confidence scoring")))


class _SmallLarge(Router):
    def __init__(self, small: str | None, large: str | None):
        self.small, self.large = small, large

    def _pair(self, pool: ModelPool) -> tuple[str, str]:
        return self.small or pool.small, self.large or pool.large

    def check(self, pool: ModelPool) -> None:
        self._require(pool, self.small, self.large)
        if len(pool) < 2 and not (self.small and self.large):
            raise RouterError(f"{self.name} needs a pool of at least two models")


class ConfidenceRouter(_SmallLarge):
    """STEER-style: before each step the small model writes a short probe (``probe_tokens``) with
    log-probabilities; if its mean token probability is at or above ``threshold`` the small model
    writes the step, otherwise the large one does. ``probe_tokens=None`` probes with the whole step
    and keeps it when confident (no second call)."""

    def __init__(self, threshold: float = 0.8, *, probe_tokens: int | None = 8, small: str | None = None,
                 large: str | None = None, name: str | None = None):
        super().__init__(small, large)
        if not 0.0 <= threshold <= 1.0:
            raise RouterError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold, self.probe_tokens = threshold, probe_tokens
        self.name = name or f"steer:{threshold:g}"

    async def adecide(self, state: RoutingState) -> Decision:
        small, large = self._pair(state.pool)
        probe = await state.generate(small, purpose="probe", max_tokens=self.probe_tokens, logprobs=True)
        conf = draft_confidence(probe)
        probs = {small: conf, large: 1.0 - conf}
        if conf >= self.threshold:
            if self.probe_tokens is None:
                return Decision(small, probs, f"confidence {conf:.2f} >= {self.threshold}: kept small draft", step=probe)
            return Decision(small, probs, f"confidence {conf:.2f} >= {self.threshold}", side_calls=[("probe", probe)])
        return Decision(large, probs, f"confidence {conf:.2f} < {self.threshold}: escalate", side_calls=[("probe", probe)])


_DIGIT = re.compile(r"[0-9]")


class SpecReasonRouter(_SmallLarge):
    """SpecReason-style draft-and-verify: the small model drafts the step; the large model scores it
    0-9 in one short call; at or above ``threshold`` the draft is kept, otherwise the large model
    rewrites the step. With log-probabilities the score is the expected digit, which avoids ties."""

    VERIFY_PROMPT = (
        "Here is a problem and a partial solution.\n\nProblem: {question}\n\nSteps so far:\n{steps}\n\n"
        "Proposed next step:\n{draft}\n\nRate how correct and useful the proposed next step is, from 0 "
        "(wrong) to 9 (certainly correct and useful). Reply with a single digit."
    )

    def __init__(self, threshold: float = 7.0, *, small: str | None = None, large: str | None = None, name: str | None = None):
        super().__init__(small, large)
        if not 0.0 <= threshold <= 9.0:
            raise RouterError(f"threshold must be within [0, 9], got {threshold}")
        self.threshold = threshold
        self.name = name or f"specreason:{threshold:g}"

    @staticmethod
    def parse_score(gen: Generation) -> float | None:
        if gen.top_logprobs:
            first = gen.top_logprobs[0]
            digits = {t.strip(): math.exp(lp) for t, lp in first.items() if t.strip().isdigit() and len(t.strip()) == 1}
            mass = sum(digits.values())
            if mass > 0:
                return sum(int(d) * p for d, p in digits.items()) / mass
        m = _DIGIT.search(gen.text)
        return float(m.group()) if m else None

    async def adecide(self, state: RoutingState) -> Decision:
        small, large = self._pair(state.pool)
        draft = await state.generate(small, purpose="draft")
        steps = "\n\n".join(state.step_texts) or "(none yet)"
        msgs = [{"role": "user", "content": self.VERIFY_PROMPT.format(question=state.query.question, steps=steps, draft=draft.text)}]
        verdict = await state.generate(large, purpose="verify", max_tokens=2, messages=msgs, logprobs=True,
                                       top_logprobs=10, cut=False, overrides={"stop": None, "temperature": 0.0})
        score = self.parse_score(verdict)
        if score is None:
            score = 0.0  # an unreadable verdict must not let an unchecked draft through
        p_accept = score / 9.0
        probs = {small: p_accept, large: 1.0 - p_accept}
        if score >= self.threshold:
            return Decision(small, probs, f"verifier score {score:.1f} >= {self.threshold}: draft kept", step=draft,
                            side_calls=[("verify", verdict)])
        return Decision(large, probs, f"verifier score {score:.1f} < {self.threshold}: rewrite",
                        side_calls=[("draft", draft), ("verify", verdict)])


StepScorer = Callable[[RoutingState, Generation], "float | Awaitable[float]"]


class TrimRouter(_SmallLarge):
    """TRIM-style continue-or-regenerate: the small model drafts the step; a step scorer (default:
    the probability of the draft's weakest token; plug in a process reward model) decides whether
    to continue with it or to regenerate the step with the large model."""

    def __init__(self, threshold: float = 0.3, *, scorer: StepScorer | None = None, small: str | None = None,
                 large: str | None = None, name: str | None = None):
        super().__init__(small, large)
        if not math.isfinite(threshold):
            raise RouterError(f"threshold must be a finite number, got {threshold}")
        self.threshold = threshold
        self.scorer = scorer or (lambda state, gen: draft_min_probability(gen))
        self.name = name or f"trim:{threshold:g}"

    async def adecide(self, state: RoutingState) -> Decision:
        small, large = self._pair(state.pool)
        draft = await state.generate(small, purpose="draft", logprobs=True)
        score = self.scorer(state, draft)
        if hasattr(score, "__await__"):
            score = await score  # type: ignore[misc]
        score = float(score)
        probs = {small: min(max(score, 0.0), 1.0), large: 1.0 - min(max(score, 0.0), 1.0)}
        if score >= self.threshold:
            return Decision(small, probs, f"step score {score:.2f} >= {self.threshold}: continue", step=draft)
        return Decision(large, probs, f"step score {score:.2f} < {self.threshold}: regenerate", side_calls=[("draft", draft)])
