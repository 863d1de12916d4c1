"""The evaluation harness on the sim bench: runs, sweeps, random curve, analysis, report files, CLI."""

from __future__ import annotations

import json

import pytest

from roro_sdk.cache import GenerationCache
from roro_sdk.cli import main
from roro_sdk.errors import ConfigError, DatasetError, RoroError
from roro_sdk.eval import EvalResults, Sweep, evaluate, parse_values, rebuild_report, write_report
from roro_sdk.routers import ConfidenceRouter
from roro_sdk.sim import SimConfig, SimOptimalRouter, sim_pool, sim_queries

CFG = SimConfig(p_hard=0.5)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> EvalResults:
    pool = sim_pool(CFG, cache=GenerationCache(tmp_path_factory.mktemp("cache")))  # repeated calls are free
    qs = sim_queries(n=12, config=CFG)
    return evaluate(pool, qs, ["steer:0.8", ("optimal", SimOptimalRouter(CFG))],
                    sweeps=["trim:0.5..0.9/3", Sweep("steer-custom", [0.7, 0.9], lambda v: ConfidenceRouter(v, name=f"c{v}"))],
                    random_seeds=2, random_grid=(0.0, 0.5, 1.0), concurrency=8, bootstrap=300, dataset="sim")


def test_runs_references_and_roles(results):
    labels = [r.label for r in results.runs]
    assert labels[:2] == ["all-small", "all-large"]  # added as references
    assert {"steer:0.8", "optimal", "trim:0.5", "trim:0.7", "trim:0.9", "c0.7", "c0.9", "random:0.5 #2"} <= set(labels)
    small, large = results.run("all-small"), results.run("all-large")
    assert small.role == "reference" and small.large_step_share == 0 and large.large_step_share == 1
    assert large.accuracy > small.accuracy and large.mean_cost_usd > small.mean_cost_usd
    for r in results.runs:
        assert r.n == 12 and len(r.queries) == 12
        assert r.accuracy_ci[0] <= r.accuracy <= r.accuracy_ci[1]
        assert r.mean_cost_ci[0] <= r.mean_cost_usd <= r.mean_cost_ci[1]
        assert r.total_cost_usd == pytest.approx(sum(q.cost_usd for q in r.queries))
        assert r.input_tokens_by_model and r.wall_s > 0 and r.cache is not None
    # random(p=0) is all-small exactly, whatever the seed, and costs the same although every call was cached
    rand0 = results.run("random:0 #1")
    assert [q.correct for q in rand0.queries] == [q.correct for q in small.queries]
    assert rand0.total_cost_usd == pytest.approx(small.total_cost_usd)
    assert rand0.cache["misses"] == 0 and rand0.cache["hits"] > 0 and small.cache["hits"] == 0


def test_analysis(results):
    a = results.analysis
    assert a.small_accuracy == results.run("all-small").accuracy
    fams = {c.family: c for c in a.curves}
    assert set(fams) == {"steer:0.8", "optimal", "trim", "steer-custom"}
    assert [p.knob for p in fams["trim"].points] == [0.5, 0.7, 0.9]
    for c in a.curves:
        assert 0 <= c.share["auc"] <= 1 and set(c.share["cpt"]) == {"20%", "50%", "80%"}
        assert c.cost is not None and c.cpt_usd is not None
    rc = a.random_curve
    assert rc is not None and [p.knob for p in rc.points] == [0.0, 0.5, 1.0]
    assert rc.points[0].accuracy == a.small_accuracy and rc.points[-1].accuracy == a.large_accuracy
    best = max(r.accuracy for r in results.runs)
    assert a.oracle.accuracy >= best
    assert a.oracle.curve[-1] == (a.oracle.mean_cost_usd, a.oracle.accuracy)
    front = a.frontier
    assert all(x.mean_cost_usd < y.mean_cost_usd and x.accuracy < y.accuracy for x, y in zip(front, front[1:]))
    assert front[0].label in ("all-small", "random:0 (mean of 2)")


def test_results_round_trip_and_report_files(results, tmp_path):
    paths = write_report(results, tmp_path / "rep")
    assert paths["figure"].stat().st_size > 10_000 and paths["figure"].read_bytes()[:4] == b"\x89PNG"
    md = paths["markdown"].read_text()
    for needle in ("## Routers", "APGR", "CPT(50%)", "Pareto frontier", "oracle", "tradeoff.png", "trim", "[95% CI]"):
        assert needle in md
    loaded = EvalResults.load(tmp_path / "rep")
    assert loaded.model_dump() == results.model_dump()
    assert json.loads((tmp_path / "rep" / "results.json").read_text())["schema"] == "roro-eval/1"
    paths["markdown"].unlink()
    rebuild_report(tmp_path / "rep", plots=False)
    assert "## Routers" in paths["markdown"].read_text()
    (tmp_path / "bad.json").write_text(json.dumps({"schema": "other/9"}))
    with pytest.raises(DatasetError, match="schema"):
        EvalResults.load(tmp_path / "bad.json")
    with pytest.raises(DatasetError):
        EvalResults.load(tmp_path / "missing")


def test_sweep_specs_and_errors():
    assert parse_values("0.5..0.9/5") == [0.5, 0.6, 0.7, 0.8, 0.9]
    assert parse_values("1,2.5") == [1.0, 2.5]
    assert [r.name for _, r in Sweep.parse("steer:0.6,0.8").routers()] == ["steer:0.6", "steer:0.8"]
    for bad in ("steer", "steer:", "nope:0.5", "steer:a,b", "steer:0.5..0.9/1", "steer:1.5"):
        with pytest.raises(RoroError):
            Sweep.parse(bad)
    with pytest.raises(ConfigError):
        evaluate(sim_pool(CFG), [], ["all-small"])


def test_cli_eval_report_and_rebuild(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["eval", "--dataset", "sim:p_hard=0.5", "--limit", "6", "--router", "all-small,all-large,random:0.5",
                 "--sweep", "steer:0.6,0.9", "--random-seeds", "1", "--random-grid", "0,1", "--report", str(out),
                 "--bootstrap", "100", "--cache", str(tmp_path / "cache")]) == 0
    text = capsys.readouterr().out
    assert "curve steer" in text and "report:" in text and "cache" in text
    res = EvalResults.load(out)
    assert {r.role for r in res.runs} == {"router", "sweep", "random"}
    assert res.run("random:1 #1").cache["hits"] > 0  # all-large answered it already
    assert main(["report", str(out)]) == 0
    assert (out / "tradeoff.png").exists()
    assert main(["cache", "stats", "--path", str(tmp_path / "cache")]) == 0
    assert main(["cache", "clear", "--path", str(tmp_path / "cache")]) == 0
    assert "removed" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
