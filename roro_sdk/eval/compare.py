"""Run several routers, sweeps and the random baseline on one dataset with one pool.

    from roro_sdk.eval import evaluate, Sweep
    res = evaluate(pool, queries, ["all-small", "all-large", "steer:0.8"],
                   sweeps=["trim:0.2..0.9/8"], random_seeds=3)
    write_report(res, "reports/mine")

Runs go one after another (each with ``concurrency`` queries in flight), so wall time, cache
savings and latency belong to one run each. The all-small and all-large references are added
when missing: every trade-off metric is measured between them.
"""

from __future__ import annotations

import copy
import datetime as _dt
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, RouterError
from ..pool import ModelPool
from ..routers import FixedRouter, RandomRouter, Router, make_router
from ..runtime import StepwiseRuntime, as_query
from ..trajectories import TrajectoryAppender
from ..types import Query, Trajectory
from .analysis import LARGE, SMALL, analyze
from .metrics import bootstrap_ci
from .results import EvalResults, QueryRecord, RunResult
from .summary import summarize

def parse_values(text: str) -> list[float]:
    """Knob values: ``0.5,0.7,0.9`` or ``0.5..0.9/5`` (5 evenly spaced values, ends included)."""
    text = text.strip()
    try:
        if ".." in text:
            span, _, count = text.partition("/")
            lo, _, hi = span.partition("..")
            n = int(count) if count else 5
            if not 2 <= n <= 1000:  # each value is a whole evaluation run
                raise ConfigError(f"a range needs 2 to 1000 values, got /{n}")
            values = [round(float(v), 10) for v in np.linspace(float(lo), float(hi), n)]
        else:
            values = [float(v) for v in text.split(",") if v.strip()]
    except ConfigError:
        raise
    except ValueError:
        raise ConfigError(f"cannot read knob values {text!r}: use '0.5,0.7,0.9' or '0.5..0.9/5'") from None
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"knob values must be finite numbers, got {text!r}")
    return values


@dataclass
class Sweep:
    """A router family swept over one knob; each value is one point of its curve.

    ``factory(value) -> Router``; without one, ``family`` must be a router kind that
    :func:`~roro_sdk.routers.make_router` knows (``steer``, ``trim``, ``specreason``, ``query``,
    ``random``) and the router is ``make_router(f"{family}:{value}")``.
    """

    family: str
    values: Sequence[float]
    factory: Callable[[float], Router] | None = None

    @classmethod
    def parse(cls, spec: str, *, seed: int = 0) -> Sweep:
        """``steer:0.5,0.7,0.9`` or ``trim:0.1..0.9/9``."""
        kind, sep, values = spec.partition(":")
        kind = kind.strip()
        if not sep or not values.strip():
            raise ConfigError(f"sweep {spec!r}: expected KIND:V1,V2,... or KIND:LO..HI/N, e.g. steer:0.5..0.95/6")
        sweep = cls(kind, parse_values(values), lambda v: make_router(f"{kind}:{v:g}", seed=seed))
        sweep.routers()  # fail now on an unknown kind or a value out of range, not after other runs
        return sweep

    def routers(self) -> list[tuple[float, Router]]:
        make = self.factory or (lambda v: make_router(f"{self.family}:{v:g}"))
        if not self.values:
            raise ConfigError(f"sweep {self.family!r} has no values")
        return [(float(v), make(float(v))) for v in self.values]


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else 0.0


def run_result(trajs: Sequence[Trajectory], *, label: str, family: str, role: str, large: str, knob: float | None = None,
               seed: int | None = None, wall_s: float = 0.0, cache: dict[str, float] | None = None,
               bootstrap: int = 2000, ci_level: float = 0.95, ci_seed: int = 0) -> RunResult:
    """A :class:`RunResult` from one router's trajectories (built on :func:`summarize`)."""
    s = summarize(trajs, large=large, router=trajs[0].router if trajs else label)
    records, in_tok = [], {}
    for t in trajs:
        for st in t.steps:
            in_tok[st.model] = in_tok.get(st.model, 0) + st.input_tokens
            for c in st.side_calls:
                in_tok[c.model] = in_tok.get(c.model, 0) + c.input_tokens
        dangling = float((t.metadata.get("unrecorded_side_usage") or {}).get("cost_usd", 0.0))
        records.append(QueryRecord(id=t.query.id, correct=t.correct, cost_usd=float(f"{t.cost_usd + dangling:.10g}"),
                                   steps=len(t.steps), large_steps=t.steps_by_model().get(large, 0),
                                   output_tokens=t.usage.output_tokens, latency_s=round(t.wall_time_s, 4),
                                   error=t.stop_reason == "error"))
    checked = [float(bool(r.correct)) for r in records if r.correct is not None]
    costs = [r.cost_usd for r in records]
    lat = [r.latency_s for r in records]
    n = len(records)
    return RunResult(
        label=label, router=s.router, family=family, role=role, knob=knob, seed=seed, n=n, n_checked=s.n_checked,
        accuracy=s.accuracy, accuracy_ci=(None, None) if not checked else bootstrap_ci(checked, n_boot=bootstrap, level=ci_level,
                                                                                       seed=ci_seed),
        mean_cost_usd=sum(costs) / n if n else 0.0, mean_cost_ci=bootstrap_ci(costs, n_boot=bootstrap, level=ci_level, seed=ci_seed),
        total_cost_usd=sum(costs), priced=s.priced, mean_steps=s.mean_steps, steps_by_model=s.steps_by_model,
        tokens_by_model=s.tokens_by_model, input_tokens_by_model=in_tok, large_step_share=s.large_step_share,
        large_token_share=s.large_token_share, latency_mean_s=sum(lat) / n if n else 0.0, latency_p50_s=_percentile(lat, 50),
        latency_p95_s=_percentile(lat, 95), wall_s=wall_s, queries_per_s=n / wall_s if wall_s > 0 else 0.0, errors=s.errors,
        stop_reasons=s.stop_reasons, cache=cache, queries=records,
    )


def _plan(routers: Iterable[Any], sweeps: Iterable[Sweep | str], random_seeds: int, random_grid: Sequence[float],
          references: bool, seed: int) -> list[tuple[str, str, str, Router, float | None, int | None]]:
    """(label, family, role, router, knob, seed) for every run, references first."""
    plan: list[tuple[str, str, str, Router, float | None, int | None]] = []
    for item in routers:
        if isinstance(item, str):
            r = make_router(item, seed=seed)
            label = r.name
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Router):
            label, r = str(item[0]), item[1]
        elif isinstance(item, Router):
            r, label = item, item.name
        else:
            raise RouterError(f"a router must be a spec string, a Router or (label, Router), not {type(item).__name__}")
        plan.append((label, label, "router", r, None, None))
    families = {p[1] for p in plan}
    if references:
        refs = [(n, n, "reference", r, None, None) for n, r in ((SMALL, FixedRouter(name=SMALL)), (LARGE, FixedRouter(tier=-1)))
                if n not in families]
        plan = refs + plan
    for sw in sweeps:
        sw = Sweep.parse(sw, seed=seed) if isinstance(sw, str) else sw
        for v, r in sw.routers():
            plan.append((r.name, sw.family, "sweep", r, v, None))
    for p in random_grid if random_seeds > 0 else ():
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"random grid values must be within [0, 1], got {p}")
        for s in range(random_seeds):
            r = RandomRouter(p_large=p, seed=seed + 1000 * (s + 1))
            plan.append((f"{r.name} #{s + 1}", "random", "random", r, float(p), s + 1))
    seen: dict[str, int] = {}
    out = []
    for label, *rest in plan:
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label} ({seen[label]})", *rest))
    return out  # type: ignore[return-value]


def _check_settings(*, random_seeds: int, random_grid: Sequence[float], bootstrap: int, ci_level: float) -> None:
    """Before the first run: these would otherwise fail (or silently do nothing) after hours of runs."""
    if isinstance(random_seeds, bool) or not isinstance(random_seeds, int) or random_seeds < 0:
        raise ConfigError(f"random_seeds must be a whole number >= 0 (0: no random curve), got {random_seeds!r}")
    if random_seeds and not random_grid:
        raise ConfigError("random_seeds > 0 needs at least one p value in random_grid")
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 1:
        raise ConfigError(f"bootstrap must be a positive number of resamples, got {bootstrap!r}")
    if not 0.0 < ci_level < 1.0:
        raise ConfigError(f"ci_level must be within (0, 1), got {ci_level!r}")


async def _run(pool: ModelPool, qs: list[Query], label: str, family: str, role: str, router: Router, knob: float | None,
               rseed: int | None, writer: TrajectoryAppender | None, *, concurrency: int, max_steps: int,
               token_budget: int | None, cost_budget: float | None, progress: bool, bootstrap: int, ci_level: float,
               seed: int, runner: Any = None) -> RunResult:
    """One router on every query; each trajectory is appended to ``writer`` as soon as it finishes."""
    rt = StepwiseRuntime(pool, router, max_steps=max_steps, token_budget=token_budget, cost_budget=cost_budget)
    before = copy.copy(pool.cache.stats) if pool.cache is not None else None

    def finished(t: Trajectory) -> None:
        t.metadata["eval_label"] = label
        if writer is not None:
            writer.write(t)

    t0 = time.perf_counter()
    if runner is None:
        trajs = await rt.arun_many(qs, concurrency=concurrency, progress=progress, on_result=finished)
    else:
        trajs = await runner.arun(router, qs, progress=progress, on_result=finished)
    wall = time.perf_counter() - t0
    cache = pool.cache.stats.minus(before).as_dict() if pool.cache is not None else None
    return run_result(trajs, label=label, family=family, role=role, large=pool.large, knob=knob, seed=rseed, wall_s=wall,
                      cache=cache, bootstrap=bootstrap, ci_level=ci_level, ci_seed=seed)


async def aevaluate(pool: ModelPool, queries: Sequence[Query | str | dict], routers: Iterable[Any] = (), *,
                    sweeps: Iterable[Sweep | str] = (), random_seeds: int = 0,
                    random_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), references: bool = True,
                    concurrency: int = 8, max_steps: int = 24, token_budget: int | None = None,
                    cost_budget: float | None = None, bootstrap: int = 2000, ci_level: float = 0.95, seed: int = 0,
                    dataset: str = "custom", progress: bool = False, trajectories_out: str | Path | None = None,
                    on_run: Callable[[RunResult], None] | None = None, ray: Any = None) -> EvalResults:
    """Evaluate routers on ``queries`` with ``pool``; see :func:`evaluate`."""
    from .._version import __version__

    qs = [as_query(q) for q in queries]
    if not qs:
        raise ConfigError("evaluate needs at least one query")
    _check_settings(random_seeds=random_seeds, random_grid=random_grid, bootstrap=bootstrap, ci_level=ci_level)
    plan = _plan(routers, sweeps, random_seeds, random_grid, references, seed)
    if not plan:
        raise ConfigError("nothing to evaluate: give routers, sweeps or random_seeds")
    for _, _, _, router, _, _ in plan:  # fail before the first run, not after an hour of them
        router.check(pool)
    tree = _replayed_tree(pool)
    if tree is not None and max_steps > tree.manifest.recording.max_steps:
        raise ConfigError(f"{tree.folder} was recorded with max_steps {tree.manifest.recording.max_steps}; evaluate it with "
                          f"max_steps <= that (got {max_steps}): longer runs are not in the tree")
    runs: list[RunResult] = []
    runner = None
    if ray is not None:  # one set of workers for every run of the plan; they keep their models loaded
        from ..scale import QueryRunner, ray_options

        runner = QueryRunner(pool, [p[3] for p in plan], ray=ray_options(ray), concurrency=concurrency,
                             max_steps=max_steps, token_budget=token_budget, cost_budget=cost_budget)
        await runner.wait_ready()
    writer = TrajectoryAppender(trajectories_out) if trajectories_out is not None else None
    try:
        for label, family, role, router, knob, rseed in plan:
            runs.append(await _run(pool, qs, label, family, role, router, knob, rseed, writer, concurrency=concurrency,
                                   max_steps=max_steps, token_budget=token_budget, cost_budget=cost_budget,
                                   progress=progress, bootstrap=bootstrap, ci_level=ci_level, seed=seed, runner=runner))
            if on_run is not None:
                on_run(runs[-1])
    finally:
        if writer is not None:
            writer.close()
        if runner is not None:
            runner.close()
    if pool.cache is not None:
        pool.cache.flush()
    settings = {"max_steps": max_steps, "token_budget": token_budget, "cost_budget": cost_budget, "concurrency": concurrency,
                "bootstrap": bootstrap, "ci_level": ci_level, "seed": seed, "random_seeds": random_seeds,
                "random_grid": list(random_grid) if random_seeds else [],
                "cache": str(pool.cache.path) if pool.cache is not None else None}
    models = [{"name": s.name, "model": s.model, "mode": s.mode, "input_price_per_m": s.input_price_per_m,
               "output_price_per_m": s.output_price_per_m} for s in pool.specs]
    res = EvalResults(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), roro_version=__version__,
                      dataset=dataset, n_queries=len(qs), pool={"small": pool.small, "large": pool.large, "models": models},
                      settings=settings, runs=runs)
    res.analysis = analyze(runs)
    if tree is not None:  # the runs replayed a recorded tree: the exact best possible over it, for these queries
        from .analysis import best_possible

        res.analysis.best_possible = best_possible(tree, qs, pool, runs, res.analysis.small_accuracy, max_steps=max_steps)
        if token_budget is not None or cost_budget is not None:
            res.analysis.notes.append("the best possible routing is computed without the budgets the routers ran under")
    return res


def _replayed_tree(pool: ModelPool):
    from ..tree import RoutingTree

    return RoutingTree.of_pool(pool)


def evaluate(pool: ModelPool, queries: Sequence[Query | str | dict], routers: Iterable[Any] = (), **kw: Any) -> EvalResults:
    """Run ``routers`` (spec strings like ``"steer:0.8"``, :class:`Router` objects, or
    ``(label, Router)``), ``sweeps`` (:class:`Sweep` or ``"steer:0.5..0.95/6"``) and, with
    ``random_seeds > 0``, the random(p) baseline over ``random_grid`` averaged over that many
    seeds; then analyse (:func:`~roro_sdk.eval.analysis.analyze`). Returns :class:`EvalResults`.

    Keywords: ``references`` (add all-small/all-large when missing, default True),
    ``concurrency``, ``max_steps``, ``token_budget``, ``cost_budget``, ``bootstrap`` (resamples
    for the 95% intervals), ``ci_level``, ``seed``, ``dataset`` (a name for the report),
    ``progress``, ``trajectories_out`` (JSONL file that each trajectory is appended to as soon
    as it finishes, so a killed evaluation keeps every finished one),
    ``on_run`` (called with each finished :class:`RunResult`), ``ray`` (``"auto"``, a Ray
    address or :class:`~roro_sdk.scale.RayOptions`: the queries of each run go to Ray workers,
    results come back here in the same order and files; ``pip install "roro-sdk[ray]"``).
    """
    from .._sync import run_sync

    return run_sync(aevaluate(pool, queries, routers, **kw))
