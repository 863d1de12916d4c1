"""A trajectory as text, for a Judge's prompt: one template, documented in
:func:`render_trajectory_pieces`.

The LiteLLM Judge puts :func:`render_trajectory` in its prompt; the local Judge encodes the pieces
one by one (so it can drop the oldest steps of a long trajectory and read per-step scores after
each step's marker); the tiny test models build their vocabulary from it.
"""

from __future__ import annotations

from typing import Any

from .types import Trajectory


def _fmt_cost(c: float) -> str:
    return f"${c:.2g}" if c else "$0"


def render_trajectory_pieces(traj: Trajectory, *, show_cost: bool = True, show_answer: bool = True,
                             max_step_chars: int = 400, max_question_chars: int = 2000,
                             step_marker: str | None = None) -> list[str]:
    """The rendered trajectory as pieces (header, one per step, footer); joined they are
    :func:`render_trajectory`. The template (every line is one piece but the first):

        Question: {question}
        Step 1 ({model}, {cost}): {text}
        Step 2 ({model}, {cost}): {text}
        ...
        Final answer: {answer or none} (stop: {stop_reason})
        Total cost: {cost}; steps by model: {model} {count}, ...

    Texts are flattened to one line; the question is cut at ``max_question_chars`` and each step
    at ``max_step_chars``. ``step_marker`` (e.g.
    ``"Step ok?"``) is appended on its own line after each step: a local Judge reads per-step
    scores there."""
    q = " ".join(traj.query.question.split())
    if len(q) > max_question_chars:
        q = q[:max_question_chars] + " ..."
    pieces = [f"Question: {q}"]
    for s in traj.steps:
        text = " ".join(s.text.split())
        if len(text) > max_step_chars:
            text = text[:max_step_chars] + " ..."
        meta = f"{s.model}, {_fmt_cost(s.usage.cost_usd)}" if show_cost else s.model
        line = f"\nStep {s.index + 1} ({meta}): {text}"
        if step_marker:
            line += f"\n{step_marker}"
        pieces.append(line)
    tail = ""
    if show_answer:
        tail += f"\nFinal answer: {traj.answer if traj.answer is not None else 'none'} (stop: {traj.stop_reason or 'unknown'})"
    by_model = ", ".join(f"{m} {n}" for m, n in traj.steps_by_model().items())
    tail += f"\nTotal cost: {_fmt_cost(traj.cost_usd)}; " if show_cost else "\n"
    tail += f"steps by model: {by_model or 'none'}"
    if tail:
        pieces.append(tail)
    return pieces


def render_trajectory(traj: Trajectory, **kw: Any) -> str:
    """The trajectory as text, for a Judge prompt (see :func:`render_trajectory_pieces`)."""
    return "".join(render_trajectory_pieces(traj, **kw))
