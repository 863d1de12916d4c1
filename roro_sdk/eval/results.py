"""The one JSON schema of an evaluation (``results.json``), documented field by field.

Why one schema: ``roro eval`` writes it, ``roro report DIR`` rebuilds the Markdown and plots from
it alone, and anyone can compare two evaluations with a few lines of Python. Runs keep a small
record per query, so every derived number (intervals, curves, oracle) can be recomputed.
Schema changes bump ``SCHEMA``; readers refuse a file of another major version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._files import read_text_file
from ..errors import DatasetError

SCHEMA = "roro-eval/1"
Role = Literal["router", "sweep", "random", "reference"]


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueryRecord(_M):
    """One query of one run: enough to recompute accuracy, cost, intervals and the oracle."""

    id: str
    correct: bool | None = Field(description="None when the query has no reference answer")
    cost_usd: float = Field(description="steps and side calls, at the pool's prices (cache hits included)")
    steps: int
    large_steps: int
    output_tokens: int
    latency_s: float
    error: bool = False


class RunResult(_M):
    """One router (or one knob value of a sweep, or one seed of the random curve) on the dataset."""

    label: str = Field(description="unique within the results, e.g. 'steer:0.8' or 'random:0.25 #1'")
    router: str = Field(description="the router's own name")
    family: str = Field(description="curve this run belongs to: the sweep name, or the router name for a single point")
    role: Role
    knob: float | None = None
    seed: int | None = None
    n: int
    n_checked: int
    accuracy: float = Field(description="share correct of the n_checked queries; 0.0 (shown as n/a) when n_checked is 0")
    accuracy_ci: tuple[float | None, float | None] = Field(description="(None, None) when no answer was checked")
    mean_cost_usd: float
    mean_cost_ci: tuple[float, float]
    total_cost_usd: float
    priced: bool
    mean_steps: float
    steps_by_model: dict[str, int]
    tokens_by_model: dict[str, int] = Field(description="output tokens per model, side calls included")
    input_tokens_by_model: dict[str, int]
    large_step_share: float
    large_token_share: float
    latency_mean_s: float
    latency_p50_s: float
    latency_p95_s: float
    wall_s: float
    queries_per_s: float
    errors: int
    stop_reasons: dict[str, int]
    cache: dict[str, float] | None = Field(None, description="cache hits/misses and savings during this run")
    queries: list[QueryRecord]


class CurvePoint(_M):
    label: str
    knob: float | None = None
    accuracy: float
    mean_cost_usd: float
    large_step_share: float
    cost_x: float | None = Field(None, description="cost normalised: 0 = all-small, 1 = all-large")


class CurveResult(_M):
    """A family of runs as a curve, with RouteLLM's metrics on both axes.

    ``share``: x = share of steps written by the large model. ``cost``: x = normalised cost;
    ``cpt_usd`` gives the CPT thresholds back in dollars per query.
    """

    family: str
    role: Role
    points: list[CurvePoint]
    share: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    cpt_usd: dict[str, float | None] | None = None


class OracleResult(_M):
    """Per query, the cheapest observed run that was correct (else the cheapest run)."""

    accuracy: float
    mean_cost_usd: float
    large_step_share: float
    curve: list[tuple[float, float]] = Field(description="(mean cost, accuracy): best accuracy reachable at each budget")


class BestPossible(_M):
    """The exact best routing inside a recorded routing tree (``--pool tree:PATH``), for the same
    queries: what no router over that tree can beat."""

    tree: str
    depth: int = Field(description="routing decisions branched over before single-model completion (see docs/trees.md)")
    accuracy: float = Field(description="every query on its cheapest correct routing, where it has one")
    mean_cost_usd: float
    curve: list[tuple[float, float]] = Field(description="(mean cost, accuracy): the best achievable frontier")
    gain_share: dict[str, float | None] = Field(default_factory=dict, description=(
        "per run: (its accuracy - all-small's) / (best accuracy at its cost - all-small's)"))


class Analysis(_M):
    """Everything derived from the runs (rebuilt by ``roro report``)."""

    small_label: str | None = None
    large_label: str | None = None
    small_accuracy: float | None = None
    large_accuracy: float | None = None
    small_cost_usd: float | None = None
    large_cost_usd: float | None = None
    curves: list[CurveResult] = Field(default_factory=list)
    random_curve: CurveResult | None = None
    frontier: list[CurvePoint] = Field(default_factory=list)
    oracle: OracleResult | None = None
    best_possible: BestPossible | None = None
    notes: list[str] = Field(default_factory=list)


class EvalResults(_M):
    """A whole evaluation: settings, runs, analysis."""

    schema_: str = Field(SCHEMA, alias="schema")
    created: str
    roro_version: str
    dataset: str
    n_queries: int
    pool: dict[str, Any] = Field(description="{small, large, models: [{name, model, mode, input_price_per_m, output_price_per_m}]}")
    settings: dict[str, Any]
    runs: list[RunResult]
    analysis: Analysis = Field(default_factory=Analysis)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def run(self, label: str) -> RunResult:
        for r in self.runs:
            if r.label == label:
                return r
        raise KeyError(f"no run {label!r}; runs: {', '.join(r.label for r in self.runs)}")

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.model_dump_json(by_alias=True) + "\n", encoding="utf-8")  # compact: runs hold a record per query
        return p

    @classmethod
    def load(cls, path: str | Path) -> EvalResults:
        p = Path(path)
        if p.is_dir():
            p = p / "results.json"
        text = read_text_file(p, what="evaluation results", error=DatasetError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{p}: not valid JSON ({e.msg}, line {e.lineno})") from None
        schema = str(data.get("schema", "")) if isinstance(data, dict) else ""
        if schema.split("/")[0] != SCHEMA.split("/")[0] or schema.split("/")[-1].split(".")[0] != SCHEMA.split("/")[-1]:
            raise DatasetError(f"{p}: schema {schema!r} is not {SCHEMA!r}; rerun 'roro eval' with this version")
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise DatasetError(f"{p}: invalid results file: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None
