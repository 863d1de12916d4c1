"""The roro command line, against the local server through a pool file."""

from __future__ import annotations

import json

import pytest

from roro_sdk.cli import main


@pytest.fixture
def pool_file(server, tmp_path):
    p = tmp_path / "pool.yaml"
    p.write_text(
        "models:\n"
        f"  - {{name: small, model: openai/small, api_base: '{server.api_base}', input_price_per_m: 0.1, output_price_per_m: 0.4}}\n"
        f"  - {{name: large, model: openai/large, api_base: '{server.api_base}', input_price_per_m: 1, output_price_per_m: 4}}\n"
    )
    return p


def test_models(pool_file, capsys):
    assert main(["models", "--pool", str(pool_file)]) == 0
    out = capsys.readouterr().out
    assert "small" in out and "openai/large" in out and "small = small, large = large" in out


def test_run_prints_trace(pool_file, capsys):
    assert main(["run", "What is 6*7?", "--answer", "42", "--router", "all-large", "--pool", str(pool_file)]) == 0
    out = capsys.readouterr().out
    assert "[0] large: large step 1" in out and "answer: 42 (correct: True)" in out and "cost: $" in out


def test_run_json(pool_file, capsys):
    assert main(["run", "q", "--router", "all-small", "--pool", str(pool_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "41"


def test_eval_writes_results_and_summary(pool_file, tmp_path, capsys):
    out = tmp_path / "res.jsonl"
    rc = main(["eval", "--dataset", "sample", "--limit", "3", "--router", "all-small,all-large,random:0.5",
               "--pool", str(pool_file), "--out", str(out), "-q"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "all-small" in text and "all-large" in text and "random:0.5" in text and "large steps" in text
    assert len(out.read_text().splitlines()) == 9


def test_eval_together_runs_every_router_at_once_with_the_same_results(pool_file, tmp_path, capsys):
    """--together: one run of all routers at once gives each router the trajectories it gets alone
    (the local server answers deterministically), written as they finish, and resumes like the rest."""
    alone, together = tmp_path / "alone.jsonl", tmp_path / "together.jsonl"
    base = ["eval", "--dataset", "sample", "--limit", "4", "--router", "all-small,all-large,random:0.5",
            "--pool", str(pool_file), "-q", "--seed", "3"]
    assert main(base + ["--out", str(alone)]) == 0
    assert main(base + ["--out", str(together), "--together"]) == 0
    capsys.readouterr()

    def runs(path):
        out = {}
        for line in path.read_text().splitlines():
            t = json.loads(line)
            out[(t["router"], t["query"]["id"])] = [(s["model"], s["text"]) for s in t["steps"]]
        return out

    assert runs(alone) == runs(together) and len(runs(together)) == 12
    assert main(base + ["--out", str(together), "--together", "--resume"]) == 0
    assert "already in" in capsys.readouterr().out
    assert len(together.read_text().splitlines()) == 12
    assert main(base + ["--together", "--ray", "local"]) == 2
    assert "--together" in capsys.readouterr().err


@pytest.mark.parametrize("argv,msg", [
    (["run", "q", "--pool", "missing.yaml"], "pool file not found"),
    (["run", "q", "--router", "nope"], "unknown router"),
    (["run", " ", "--router", "all-small"], "question is empty"),
    (["run", "q", "--cost-budget", "-1"], "cost_budget must be a non-negative"),
    (["eval", "--dataset", "nope.jsonl"], "dataset file not found"),
])
def test_errors_are_one_clear_line(argv, msg, capsys, pool_file):
    if "--pool" not in argv:
        argv = argv + ["--pool", str(pool_file)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err


def test_eval_resume_after_a_kill_runs_only_what_is_missing(tmp_path, capsys):
    """A killed `roro eval --out` (some lines, then a torn one) continued with --resume: every
    (router, query) once, the summary the same as one uninterrupted run."""
    import json as _json

    from roro_sdk.cli import main
    from roro_sdk.trajectories import read_trajectories

    args = ["eval", "--dataset", "sim:careful", "--limit", "8", "--router", "all-small,steer:0.8", "-q"]
    assert main([*args, "--out", str(tmp_path / "whole.jsonl"), "--summary-json", str(tmp_path / "whole.json")]) == 0
    lines = (tmp_path / "whole.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "killed.jsonl").write_text("".join(lines[:5]) + lines[5][:40])  # 5 finished, then a torn line
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "killed.jsonl"), "--resume", "--summary-json", str(tmp_path / "resumed.json")]) == 0
    assert "5 of 8 queries already in" in capsys.readouterr().out
    got = read_trajectories(tmp_path / "killed.jsonl")
    assert sorted((t.router, t.query.id) for t in got) == sorted((t.router, t.query.id) for t in read_trajectories(tmp_path / "whole.jsonl"))
    strip = lambda p: [{k: v for k, v in s.items() if k not in ("wall_s", "mean_latency_s")} for s in _json.loads(p.read_text())]  # noqa: E731
    assert strip(tmp_path / "resumed.json") == strip(tmp_path / "whole.json")
    assert main([*args, "--out", str(tmp_path / "killed.jsonl"), "--resume", "--append"]) != 0  # one of the three
