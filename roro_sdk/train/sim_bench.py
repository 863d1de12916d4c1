"""The sim bench's pieces for training: synthetic preference data, tiny local models, labelers
from step records, a rule Judge, and where a router's escalations went. TEST BENCH material for
the tests, the examples and ``roro train-judge --demo``; never for real work.

* :func:`sim_preference_data`: a learnable preference set (known rule: escalate on exactly the
  hard steps), collected on the sim bench and paired by :func:`roro_sdk.pairs.build_pairs`.
* :func:`tiny_judge_and_rubricor`: a LocalJudge and a library-mode LocalRubricor on two tiny random
  models sharing a word-level tokenizer built from the data (:func:`tokenizer_corpus`).
* :func:`record_criterion_labeler` / :func:`sim_demo_labeler`: per-criterion labels from the sim's
  step records, for the alternating trainer's calibration term.
* :func:`sim_rule_judge`: the sim bench's ground-truth process judge, for testing the GRPO trainer.
* :func:`sim_escalation_shares`: the share of hard and of easy steps routed to the large model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..judge import JUDGE_INSTRUCTION, FunctionJudge, LocalJudge
from ..pairs import PairSet, criterion_labeler, record_step_verifier
from ..rubric import DEFAULT_CRITERIA, LOCAL_RUBRICOR_INSTRUCTION, Criterion, LocalRubricor
from ..trajectory_text import render_trajectory
from ..types import Trajectory


_RECORD_LABELER = criterion_labeler(record_step_verifier, cheapest="small")


def record_criterion_labeler(criterion: Criterion, traj: Trajectory) -> float | None:
    """Labels for a few library criteria from step records (``Step 3 [hard]: mistake``, as the sim
    bench writes them); None for any other criterion. An example of a step-verifier labeler for
    the calibration term (:func:`~roro_sdk.pairs.criterion_labeler`); the cheapest model of the
    trajectory's pool is taken to be ``small``."""
    return _RECORD_LABELER(criterion, traj)


def tokenizer_corpus(trajectories: Sequence[Trajectory], library: Sequence[Criterion] = ()) -> list[str]:
    """Texts that cover what the local Judge and Rubricor read: for :func:`roro_sdk.hf.word_tokenizer`
    when building tiny models for tests and the synthetic example."""
    texts = [JUDGE_INSTRUCTION, LOCAL_RUBRICOR_INSTRUCTION, "Criterion Met? Candidate Include? Step ok? hard rule principle"]
    texts += [c.text for c in list(library) + list(DEFAULT_CRITERIA)]
    texts += [render_trajectory(t) for t in trajectories]
    return texts


SIM_DEMO_DISTRACTORS: tuple[Criterion, ...] = (
    Criterion(kind="principle", text="The trajectory is written in French."),
    Criterion(kind="principle", text="Every step mentions the weather."),
)


def sim_demo_library() -> list[Criterion]:
    """The candidate library of the synthetic demo: three routing criteria the sim's step records
    can check, and two distractors that are never met (the Rubricor should learn to drop them)."""
    return [DEFAULT_CRITERIA[0], DEFAULT_CRITERIA[1], DEFAULT_CRITERIA[3], *SIM_DEMO_DISTRACTORS]


def sim_demo_labeler(criterion: Criterion, traj: Trajectory) -> float | None:
    """:func:`record_criterion_labeler` plus "never met" for the demo's distractors."""
    if criterion.text in {d.text for d in SIM_DEMO_DISTRACTORS}:
        return 0.0
    return record_criterion_labeler(criterion, traj)


def sim_preference_data(n_queries: int = 48, *, seed: int = 0, out: str | Path | None = None,
                        policies: Sequence[str] = ("all-small", "all-large", "random:0.3", "random:0.7"),
                        sim_config: Any = None, pair_config: Any = None, concurrency: int = 16) -> PairSet:
    """A learnable synthetic preference set from the sim bench (a TEST BENCH).

    Default sim: ``SimConfig.careful`` (the small model errs exactly on hard steps, nothing
    recovers), 2-5 steps, 40% hard: a trajectory is correct iff the large model wrote every hard
    step, so the known rule is "escalate on exactly the hard steps". Trajectories are collected
    with :func:`roro_sdk.collect.collect` (to ``out``, or a temporary file) and paired into
    outcome and cost pairs, balanced per kind, by :func:`roro_sdk.pairs.build_pairs`."""
    import tempfile

    from ..collect import collect
    from ..pairs import PairConfig, build_pairs
    from ..sim import SimConfig, sim_pool, sim_queries
    from ..trajectories import read_trajectories

    cfg = sim_config or SimConfig.careful(min_steps=2, max_steps=5, p_hard=0.4, seed=seed)
    queries = sim_queries(n=n_queries, seed=seed, config=cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(out) if out is not None else Path(tmp) / "trajectories.jsonl"
        collect(queries, sim_pool(cfg), list(policies), out=path, seed=seed, concurrency=concurrency)
        trajs = read_trajectories(path)
    pc = pair_config or PairConfig(kinds=["outcome", "cost"], max_pairs_per_query=3, balance_kinds=True, seed=seed)
    return build_pairs(trajs, pc, step_verifier=record_step_verifier)


def tiny_judge_and_rubricor(data: PairSet | Sequence[Trajectory], library: Sequence[Criterion] | None = None, *,
                            seed: int = 0, judge_kw: dict[str, Any] | None = None,
                            rubricor_kw: dict[str, Any] | None = None) -> tuple[LocalJudge, LocalRubricor]:
    """A LocalJudge and a library-mode LocalRubricor on two tiny random Qwen2 models (hidden 64,
    2 layers) sharing a word-level tokenizer built from the data: the test and demo setup.
    Short prompts keep them fast: the question is cut to its first 48 characters, no step costs."""
    from ..hf import tiny_causal_lm, word_tokenizer

    trajs = list(data.trajectories.values()) if isinstance(data, PairSet) else list(data)
    lib = list(library) if library is not None else sim_demo_library()
    tok = word_tokenizer(tokenizer_corpus(trajs, lib))
    jkw = {"render_kw": {"show_cost": False, "max_question_chars": 48}, "instruction": "Judge the routing.", **(judge_kw or {})}
    rkw = {"instruction": "Choose criteria.", "max_question_tokens": 16, **(rubricor_kw or {})}
    judge = LocalJudge(tiny_causal_lm(tok, seed=seed), tok, **jkw)
    rubricor = LocalRubricor(tiny_causal_lm(tok, seed=seed + 1), tok, library=lib, **rkw)
    return judge, rubricor


def sim_rule_judge() -> FunctionJudge:
    """The sim bench's ground-truth process judge: full marks for escalating exactly on the hard
    steps (a stand-in for a trained Judge when testing the trainer; never for real work)."""
    from ..sim import grade_routing, is_hard_step

    def score(query, rubric, traj: Trajectory) -> float:
        g = grade_routing(traj)
        n = max(1, len([s for s in traj.steps if "Answer" not in s.text]))
        return max(0.0, 1.0 - (g["missed"] + g["wasted"]) / n)

    def step(s, traj: Trajectory) -> float:
        if "Answer" in s.text:
            return 1.0
        return 1.0 if (s.model == "large") == is_hard_step(traj.query, s.index) else 0.0

    return FunctionJudge(score_fn=score, step_fn=step, name="sim-rule")


def sim_escalation_shares(trajectories: Sequence[Trajectory], large: str) -> dict[str, float]:
    """``hard_steps_to_large`` and ``easy_steps_to_large``: the share of the hard (easy) steps of
    sim bench trajectories that ``large`` wrote (answer steps left out; 0 when there are none)."""
    from ..sim import is_hard_step

    hard = easy = hard_large = easy_large = 0
    for t in trajectories:
        for st in t.steps:
            if "Answer" in st.text:
                continue
            h = is_hard_step(t.query, st.index)
            hard, easy = hard + h, easy + (not h)
            hard_large += h and st.model == large
            easy_large += (not h) and st.model == large
    return {"hard_steps_to_large": hard_large / hard if hard else 0.0,
            "easy_steps_to_large": easy_large / easy if easy else 0.0}
