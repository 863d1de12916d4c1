"""Preference pairs from collected trajectories: outcome, cost and process pairs.

For each query, every two usable trajectories (no model error) are compared in this order, and
give at most one pair, labelled by the first rule that applies (all thresholds are
:class:`PairConfig` fields):

1. **outcome**: one is correct and the other is wrong -> the correct one is chosen.
2. **cost**: both correct and one is cheaper by at least ``cost_margin`` (relative to the dearer
   one) and ``min_cost_delta`` dollars -> the cheaper one is chosen.
3. **process**: same outcome, *similar* cost (relative difference at most ``process_cost_tolerance``)
   and process scores that differ by at least ``process_margin`` -> the better-routed one is chosen.
   Process scores come from a step verifier (:func:`routing_process_score`) or any scorer (e.g. an
   LLM Judge: :func:`judge_process_scores`); without one there are no process pairs.

The default process score (with a step verifier that labels each step hard/easy and
mistake/not) is the share of routing decisions that were right: a hard step written by a stronger
model than the cheapest, an easy step by the cheapest (no wasted escalation), and the step after
a mistake escalated (recovery). Pairs are capped per query and kind, optionally per kind overall
or balanced across kinds (deterministic, seeded).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import DatasetError, ProcessScoringError
from .structured import spent_of, usage_delta
from .types import Trajectory, Usage

PairKind = Literal["outcome", "cost", "process"]
PAIR_KINDS: tuple[PairKind, ...] = ("outcome", "cost", "process")


class PreferencePair(BaseModel):
    """A chosen/rejected pair of trajectories of one query (referenced by trajectory id)."""

    model_config = ConfigDict(extra="forbid")
    id: str
    query_id: str
    kind: PairKind
    chosen_id: str
    rejected_id: str
    chosen_router: str = ""
    rejected_router: str = ""
    chosen_cost: float = 0.0
    rejected_cost: float = 0.0
    chosen_correct: bool | None = None
    rejected_correct: bool | None = None
    chosen_process: float | None = None
    rejected_process: float | None = None
    reason: str = ""


class PairConfig(BaseModel):
    """Thresholds of the pair rules (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    kinds: list[PairKind] = Field(default_factory=lambda: list(PAIR_KINDS))
    cost_margin: float = Field(0.2, ge=0.0, lt=1.0, description="cost pairs: the cheaper costs at most (1 - margin) x the dearer")
    min_cost_delta: float = Field(0.0, ge=0.0, description="cost pairs: and at least this many dollars less")
    process_cost_tolerance: float = Field(0.25, ge=0.0, le=1.0, description="process pairs: relative cost difference at most this")
    process_margin: float = Field(0.1, gt=0.0, le=1.0, description="process pairs: process scores differ by at least this")
    max_pairs_per_query: int | None = Field(16, ge=1, description="cap per query and kind (None: no cap)")
    max_pairs_per_kind: int | None = Field(None, ge=1, description="cap per kind over all queries (None: no cap)")
    balance_kinds: bool = Field(False, description="cut every kind to the size of the smallest non-empty kind")
    seed: int = 0


class KindStats(BaseModel):
    n: int = 0
    queries: int = 0
    mean_chosen_cost: float | None = None
    mean_rejected_cost: float | None = None
    mean_cost_ratio: float | None = Field(None, description="mean chosen/rejected cost")
    mean_process_gap: float | None = None
    before_cap: int = 0


class ProcessScoringStats(BaseModel):
    """How process scoring by a Judge under a Rubricor went: what was scored, what failed and why,
    and what it cost (re-asks and failed items included)."""

    trajectories: int = 0
    scored: int = 0
    judge_failures: int = Field(0, description="trajectories the Judge failed on (after its re-asks)")
    rubric_failures: int = Field(0, description="queries whose rubric failed: their trajectories were not judged")
    unjudged: int = Field(0, description="trajectories not judged because their query's rubric failed")
    errors: dict[str, int] = Field(default_factory=dict, description="failures by error type")
    first_error: str | None = None
    judge_usage: Usage = Field(default_factory=Usage)
    rubricor_usage: Usage = Field(default_factory=Usage)

    @property
    def failed(self) -> int:
        return self.trajectories - self.scored

    @property
    def usage(self) -> Usage:
        return self.judge_usage + self.rubricor_usage


class PairStats(BaseModel):
    trajectories: int = 0
    usable: int = 0
    queries: int = 0
    queries_with_pairs: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    per_kind: dict[str, KindStats] = Field(default_factory=dict)
    process_scoring: ProcessScoringStats | None = None

    def table(self) -> list[tuple[str, ...]]:
        rows = [("kind", "pairs", "queries", "chosen $", "rejected $", "cost ratio", "process gap", "before cap")]
        f = lambda v, fmt: "-" if v is None else format(v, fmt)  # noqa: E731
        for k, s in self.per_kind.items():
            rows.append((k, str(s.n), str(s.queries), f(s.mean_chosen_cost, ".2e"), f(s.mean_rejected_cost, ".2e"),
                         f(s.mean_cost_ratio, ".2f"), f(s.mean_process_gap, ".2f"), str(s.before_cap)))
        return rows


@dataclass
class PairSet:
    """Pairs with the trajectories they reference, and the statistics of how they were built."""

    pairs: list[PreferencePair]
    trajectories: dict[str, Trajectory]
    stats: PairStats

    def by_kind(self, kind: str) -> list[PreferencePair]:
        return [p for p in self.pairs if p.kind == kind]

    def __len__(self) -> int:
        return len(self.pairs)


# ----------------------------------------------------------------------------- process scores
@dataclass(frozen=True)
class StepLabel:
    """What a step verifier says of one step: whether it was hard, whether it was a mistake."""

    hard: bool | None = None
    mistake: bool | None = None


StepVerifier = Callable[[Trajectory, int], "StepLabel | None"]
_DIFF = re.compile(r"\[(easy|hard)\]", re.I)
_MISTAKE = re.compile(r"\bmistake\b", re.I)


def record_step_verifier(traj: Trajectory, index: int) -> StepLabel | None:
    """Reads step records like the sim bench writes them (``Step 3 [hard]: mistake``): the
    ``[easy]``/``[hard]`` tag and the word ``mistake``. None for a step without a tag (the answer)."""
    text = traj.steps[index].text
    m = _DIFF.search(text)
    if m is None:
        return None
    return StepLabel(hard=m.group(1).lower() == "hard", mistake=bool(_MISTAKE.search(text)))


def model_ranking(trajectories: Iterable[Trajectory]) -> list[str]:
    """Models from cheapest to dearest by mean dollars per token over all their steps."""
    cost: dict[str, float] = defaultdict(float)
    toks: dict[str, int] = defaultdict(int)
    for t in trajectories:
        for s in t.steps:
            cost[s.model] += s.cost_usd
            toks[s.model] += s.input_tokens + s.output_tokens
    return sorted(cost, key=lambda m: (cost[m] / max(1, toks[m]), m))


def routing_process_score(traj: Trajectory, verifier: StepVerifier = record_step_verifier, *,
                          cheapest: str | None = None) -> float | None:
    """Share of right routing decisions (see the module docstring), in [0, 1]; None when the
    verifier labels no step. ``cheapest``: the pool's cheapest model (default: the cheapest model in
    this trajectory by dollars per token, which is only right when it used more than one model)."""
    if not traj.steps:
        return None
    if cheapest is None:
        cheapest = model_ranking([traj])[0]
    good = total = 0
    labels = [verifier(traj, i) for i in range(len(traj.steps))]
    for i, (s, lab) in enumerate(zip(traj.steps, labels)):
        if lab is None or lab.hard is None:
            continue
        escalated = s.model != cheapest
        total += 1
        good += escalated == lab.hard
        if lab.mistake and i + 1 < len(traj.steps) and labels[i + 1] is not None:
            total += 1
            good += traj.steps[i + 1].model != cheapest
    return good / total if total else None


def criterion_labeler(verifier: StepVerifier = record_step_verifier, *, cheapest: str = "small"
                      ) -> Callable[[Any, Trajectory], float | None]:
    """A labeler of the library criteria a step verifier decides, for the Judge phase's
    calibration term (``criterion_labeler`` of the trainer): "every hard step ..." is 1 when every
    step labelled hard was escalated from ``cheapest``, "easy steps ..." when every step labelled
    easy stayed on it, "no mistake is left ..." is the final answer's correctness, "reaches a final
    answer" whether there is one. None for any other criterion, for a trajectory the verifier
    labels no step of, and for a hard/easy criterion with no step of that kind (a vacuous "met"
    would teach the Judge to say yes)."""

    def label(criterion: Any, traj: Trajectory) -> float | None:
        text = criterion.text.lower()
        labels = [verifier(traj, i) for i in range(len(traj.steps))]
        steps = [(s, lab) for s, lab in zip(traj.steps, labels) if lab is not None and lab.hard is not None]
        if not steps:
            return None
        hard = [s for s, lab in steps if lab.hard]
        easy = [s for s, lab in steps if not lab.hard]
        if "every hard step" in text:  # no hard step: nothing to check it against (not a vacuous "met")
            return float(all(s.model != cheapest for s in hard)) if hard else None
        if "easy steps" in text:
            return float(all(s.model == cheapest for s in easy)) if easy else None
        if "no mistake is left" in text:
            return None if traj.correct is None else float(traj.correct)
        if "reaches a final answer" in text:
            return float(traj.answer is not None)
        return None

    return label


async def judge_process_scores(trajectories: Sequence[Trajectory], judge: Any, rubricor: Any, *,
                               concurrency: int = 8) -> dict[str, float]:
    """Process scores from an (LLM or local) Judge under each query's rubric: ``{trajectory id: score}``.
    Items the Judge fails on are left out (those trajectories get no process pairs); when it fails
    on every one, :class:`~roro_sdk.errors.ProcessScoringError`. :func:`judge_process_report`
    also returns the counts and the spend."""
    return (await judge_process_report(trajectories, judge, rubricor, concurrency=concurrency))[0]


async def judge_process_report(trajectories: Sequence[Trajectory], judge: Any, rubricor: Any, *, concurrency: int = 8,
                               allow_all_failed: bool = False) -> tuple[dict[str, float], ProcessScoringStats]:
    """:func:`judge_process_scores` with its :class:`ProcessScoringStats`: how many trajectories
    were scored, how many failed (by error type) and the Judge's and Rubricor's spend.

    When nothing could be scored (every rubric or every judgement failed) it raises
    :class:`~roro_sdk.errors.ProcessScoringError` naming the first error, unless
    ``allow_all_failed``: that is a setup problem (a key, a model, a config), not a bad reply."""
    trajs = list(trajectories)
    spent0 = (spent_of(judge), spent_of(rubricor))
    queries = {t.query.id: t.query for t in trajs}
    qids = list(queries)
    rubrics = await rubricor.arubric_many([queries[q] for q in qids], concurrency=concurrency)
    by_q = {q: r for q, r in zip(qids, rubrics) if not isinstance(r, Exception)}
    items = [(t.query, by_q[t.query.id], t) for t in trajs if t.query.id in by_q]
    results = await judge.ascore_many(items, concurrency=concurrency) if items else []
    scores = {it[2].id: r.score for it, r in zip(items, results) if not isinstance(r, Exception)}
    failures = [e for e in [*rubrics, *results] if isinstance(e, Exception)]
    stats = ProcessScoringStats(
        trajectories=len(trajs), scored=len(scores), judge_failures=sum(isinstance(r, Exception) for r in results),
        rubric_failures=len(qids) - len(by_q), unjudged=len(trajs) - len(items),
        first_error=f"{type(failures[0]).__name__}: {str(failures[0])[:300]}" if failures else None,
        judge_usage=usage_delta(spent_of(judge), spent0[0]), rubricor_usage=usage_delta(spent_of(rubricor), spent0[1]))
    for e in failures:
        stats.errors[type(e).__name__] = stats.errors.get(type(e).__name__, 0) + 1
    if trajs and not scores and not allow_all_failed:
        raise ProcessScoringError(
            f"process scoring failed on all {len(trajs)} trajectories ({stats.rubric_failures} of {len(qids)} rubrics "
            f"and {stats.judge_failures} judgements failed); first error: {stats.first_error}. Check the judge config "
            "(model name, API key, prices) or use --process step-records")
    return scores, stats


# ----------------------------------------------------------------------------- pairs
def pair_id(kind: str, chosen_id: str, rejected_id: str) -> str:
    return hashlib.sha1(f"{kind}\x1f{chosen_id}\x1f{rejected_id}".encode()).hexdigest()[:16]


def _make(kind: PairKind, c: Trajectory, r: Trajectory, proc: Mapping[str, float], reason: str) -> PreferencePair:
    return PreferencePair(id=pair_id(kind, c.id, r.id), query_id=c.query.id, kind=kind, chosen_id=c.id, rejected_id=r.id,
                          chosen_router=c.router, rejected_router=r.router, chosen_cost=c.cost_usd, rejected_cost=r.cost_usd,
                          chosen_correct=c.correct, rejected_correct=r.correct, chosen_process=proc.get(c.id),
                          rejected_process=proc.get(r.id), reason=reason)


def _compare(a: Trajectory, b: Trajectory, cfg: PairConfig, proc: Mapping[str, float]) -> PreferencePair | None:
    kinds = cfg.kinds
    if a.correct is not None and b.correct is not None and a.correct != b.correct:
        if "outcome" not in kinds:
            return None
        c, r = (a, b) if a.correct else (b, a)
        return _make("outcome", c, r, proc, "correct over wrong")
    ca, cb = a.cost_usd, b.cost_usd
    hi, lo = max(ca, cb), min(ca, cb)
    if a.correct and b.correct and "cost" in kinds and hi > lo and (hi - lo) >= cfg.cost_margin * hi \
            and (hi - lo) >= cfg.min_cost_delta:
        c, r = (a, b) if ca < cb else (b, a)
        return _make("cost", c, r, proc, f"both correct, {lo / hi if hi else 1:.0%} of the cost")
    if "process" in kinds and a.correct == b.correct and (hi == 0 or (hi - lo) <= cfg.process_cost_tolerance * hi):
        pa, pb = proc.get(a.id), proc.get(b.id)
        if pa is not None and pb is not None and abs(pa - pb) >= cfg.process_margin:
            c, r = (a, b) if pa > pb else (b, a)
            return _make("process", c, r, proc, f"same outcome, similar cost, process {max(pa, pb):.2f} vs {min(pa, pb):.2f}")
    return None


def build_pairs(trajectories: Iterable[Trajectory], config: PairConfig | None = None, *,
                process_scores: Mapping[str, float] | None = None,
                step_verifier: StepVerifier | None = None) -> PairSet:
    """Preference pairs per query (see the module docstring) with per-kind statistics.

    Process scores: pass ``process_scores`` ({trajectory id: score}, e.g. from
    :func:`judge_process_scores`) or a ``step_verifier`` (e.g. :func:`record_step_verifier`
    for the sim bench) to score with :func:`routing_process_score`."""
    cfg = config or PairConfig()
    trajs = list(trajectories)
    stats = PairStats(trajectories=len(trajs))
    seen: set[str] = set()
    usable: list[Trajectory] = []
    for t in trajs:
        if t.id in seen:
            stats.skipped["duplicate id"] = stats.skipped.get("duplicate id", 0) + 1
            continue
        seen.add(t.id)
        if t.stop_reason == "error" or t.error:
            stats.skipped["model error"] = stats.skipped.get("model error", 0) + 1
            continue
        if t.correct is None:
            stats.skipped["correctness unknown"] = stats.skipped.get("correctness unknown", 0) + 1
        usable.append(t)
    stats.usable = len(usable)
    proc: dict[str, float] = dict(process_scores or {})
    if step_verifier is not None:
        ranking = model_ranking(usable)
        cheapest = ranking[0] if ranking else None
        for t in usable:
            if t.id not in proc:
                s = routing_process_score(t, step_verifier, cheapest=cheapest)
                if s is not None:
                    proc[t.id] = s
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in usable:
        groups[t.query.id].append(t)
    stats.queries = len(groups)
    pairs: list[PreferencePair] = []
    per_kind_before: dict[str, int] = defaultdict(int)
    kind_queries: dict[str, set[str]] = defaultdict(set)
    for qid in sorted(groups):
        ts = sorted(groups[qid], key=lambda t: t.id)
        found: dict[str, list[PreferencePair]] = defaultdict(list)
        for i in range(len(ts)):
            for j in range(i + 1, len(ts)):
                if _same_routing(ts[i], ts[j]):
                    continue
                p = _compare(ts[i], ts[j], cfg, proc)
                if p is not None:
                    found[p.kind].append(p)
        for kind, ps in found.items():
            per_kind_before[kind] += len(ps)
            if cfg.max_pairs_per_query is not None and len(ps) > cfg.max_pairs_per_query:
                random.Random(f"{cfg.seed}:{qid}:{kind}").shuffle(ps)
                ps = sorted(ps[: cfg.max_pairs_per_query], key=lambda p: p.id)
            pairs.extend(ps)
            kind_queries[kind].add(qid)
    cap = cfg.max_pairs_per_kind
    if cfg.balance_kinds:
        sizes = [n for n in (sum(1 for p in pairs if p.kind == k) for k in cfg.kinds) if n > 0]
        cap = min([cap] + sizes if cap else sizes) if sizes else cap
    if cap is not None:
        kept: list[PreferencePair] = []
        for kind in PAIR_KINDS:
            ps = [p for p in pairs if p.kind == kind]
            if len(ps) > cap:
                random.Random(f"{cfg.seed}:kind:{kind}").shuffle(ps)
                ps = ps[:cap]
            kept.extend(ps)
        pairs = sorted(kept, key=lambda p: (p.query_id, p.kind, p.id))
        kind_queries = defaultdict(set)
        for p in pairs:
            kind_queries[p.kind].add(p.query_id)
    stats.queries_with_pairs = len({p.query_id for p in pairs})
    by_id = {t.id: t for t in usable}
    for kind in cfg.kinds:
        ps = [p for p in pairs if p.kind == kind]
        ks = KindStats(n=len(ps), queries=len(kind_queries[kind]), before_cap=per_kind_before[kind])
        if ps:
            ks.mean_chosen_cost = sum(p.chosen_cost for p in ps) / len(ps)
            ks.mean_rejected_cost = sum(p.rejected_cost for p in ps) / len(ps)
            ratios = [p.chosen_cost / p.rejected_cost for p in ps if p.rejected_cost > 0]
            ks.mean_cost_ratio = sum(ratios) / len(ratios) if ratios else None
            gaps = [p.chosen_process - p.rejected_process for p in ps
                    if p.chosen_process is not None and p.rejected_process is not None]
            ks.mean_process_gap = sum(gaps) / len(gaps) if gaps else None
        stats.per_kind[kind] = ks
    if "process" in cfg.kinds and not proc:
        stats.skipped["no process scores (pass a step verifier or scores)"] = stats.usable
    return PairSet(pairs=pairs, trajectories={p: by_id[p] for p in {x for pr in pairs for x in (pr.chosen_id, pr.rejected_id)}},
                   stats=stats)


def _same_routing(a: Trajectory, b: Trajectory) -> bool:
    return [s.model for s in a.steps] == [s.model for s in b.steps] and [s.text for s in a.steps] == [s.text for s in b.steps]


# ----------------------------------------------------------------------------- files
def write_pairs(path: str | Path, pairs: Iterable[PreferencePair]) -> int:
    """Write pairs as JSON lines (replacing the file); returns the count."""
    n = 0
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for pr in pairs:
            fh.write(pr.model_dump_json() + "\n")
            n += 1
    tmp.replace(p)
    return n


def read_pairs(path: str | Path) -> list[PreferencePair]:
    from ._files import read_text_file

    p = Path(path)
    out = []
    for lineno, line in enumerate(read_text_file(p, what="pairs file", error=DatasetError).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(PreferencePair.model_validate(json.loads(line)))
        except Exception as e:
            raise DatasetError(f"{p}:{lineno}: not a valid preference pair: {str(e)[:200]}") from None
    return out
