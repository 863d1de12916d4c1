"""scripts/real_pipeline.sh's own logic, run against a stand-in for Python: at most JOBS trainings
at once, a failed training reported and left out while the others go on, the Judge that
pick-judge chooses handed to the RoRo routers, the RoRo variant dropped when no Judge is usable,
and the old GPU script's names mapped onto the new ones. The stages' commands themselves are
tested where they live (tests/test_judge_training.py, test_grpo*.py, test_trees*.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Every call is logged as one JSON line; trainings sleep so that jobs overlap, and a training
# whose --out ends with a name listed in FAIL exits 3.
FAKE = textwrap.dedent(f"""\
    #!{sys.executable}
    import json, os, sys, time
    from pathlib import Path
    args = sys.argv[1:]
    log = Path(os.environ["FAKE_LOG"])
    def opt(name):
        return args[args.index(name) + 1] if name in args else None
    cmd = args[2] if args[:2] == ["-m", "roro_sdk"] else args[0]
    if cmd == "tree":
        cmd = "tree " + args[3]
    rec = {{"cmd": cmd, "args": args, "omp": os.environ.get("OMP_NUM_THREADS")}}
    if cmd in ("train-judge", "train-router"):
        out = Path(opt("--out"))
        rec["start"] = time.time()
        with (log.parent / "started").open("a") as f:
            f.write(str(os.getpid()) + "\\n")
        time.sleep(float(os.environ.get("FAKE_SLEEP", "1.0")))
        rec["end"] = time.time()
        with log.open("a") as f:
            f.write(json.dumps(rec) + "\\n")
        if out.name in os.environ.get("FAIL", "").split():
            print("Traceback: boom", file=sys.stderr)
            sys.exit(3)
        out.mkdir(parents=True, exist_ok=True)
        if cmd == "train-router":
            (out / "router").mkdir(exist_ok=True)
            print("update   5  reward 0.1")
            print("saved " + str(out))
        else:
            print("round 1: held-out pairwise accuracy: all 55.0%")
        sys.exit(0)
    with log.open("a") as f:
        f.write(json.dumps(rec) + "\\n")
    if cmd == "pick-judge":
        runs = [a for a in args[3:] if not a.startswith("--") and a != opt("--json")]
        print("run  accuracy")
        print(os.environ.get("PICK") or runs[-1])
    elif opt("--out"):
        Path(opt("--out")).touch()
    """)


def pipeline_env(tmp_path: Path, **env: str) -> dict[str, str]:
    fake = tmp_path / "fake python"  # a space in the path: every command quotes it
    fake.write_text(FAKE)
    fake.chmod(0o755)
    base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PY": str(fake), "FAKE_LOG": str(tmp_path / "calls.jsonl"),
            "OUT": str(tmp_path / "out dir"), "REPORT": str(tmp_path / "report"),
            "TRAIN": str(tmp_path / "train"), "TEST": str(tmp_path / "test")}
    return {**base, **env}


def run_pipeline(tmp_path: Path, script: str = "real_pipeline.sh", **env: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    log = tmp_path / "calls.jsonl"
    p = subprocess.run(["bash", str(ROOT / "scripts" / script)], env=pipeline_env(tmp_path, **env), capture_output=True,
                       text=True, timeout=120)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return p, calls


def max_overlap(calls: list[dict]) -> int:
    events = sorted([(c["start"], 1) for c in calls] + [(c["end"], -1) for c in calls])
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


def opt(call: dict, name: str) -> list[str]:
    a = call["args"]
    return [a[i + 1] for i, x in enumerate(a) if x == name]


def test_jobs_run_side_by_side_and_a_failed_judge_is_left_out(tmp_path):
    p, calls = run_pipeline(tmp_path, JOBS="2", JUDGE_SEEDS="0 1 2", SEEDS="0 1", VARIANTS="outcome roro",
                            FAIL="judge-s1", JUDGE_STEPS="50", DEVICE="cpu")
    assert p.returncode == 1, p.stdout + p.stderr  # the failure is the run's result
    out = tmp_path / "out dir"
    judges = [c for c in calls if c["cmd"] == "train-judge"]
    routers = [c for c in calls if c["cmd"] == "train-router"]
    assert len(judges) == 3 and len(routers) == 4
    assert max_overlap(judges) == 2 and max_overlap(routers) == 2  # JOBS=2: two at once, never three
    assert all(opt(c, "--judge-steps") == ["50"] and opt(c, "--device") == ["cpu"] for c in judges)
    assert all(c["omp"] == "1" for c in judges + routers)
    assert "judge-s1: FAILED (exit 3)" in p.stdout and "Traceback: boom" in p.stdout
    pick = next(c for c in calls if c["cmd"] == "pick-judge")
    assert str(out / "judge-s1") not in pick["args"] and str(out / "judge-s2") in pick["args"]
    roro = [c for c in routers if "roro" in opt(c, "--config")[0]]
    assert {s for c in roro for s in opt(c, "--set") if s.startswith("judge=")} == {f"judge={out / 'judge-s2'}"}
    caches = {s for c in roro for s in opt(c, "--set") if s.startswith("judge_cache=")}
    assert len(caches) == 2  # side by side: one cache file per seed, one writer each
    assert all("device=cpu" in opt(c, "--set") for c in routers)
    ev = next(c for c in calls if c["cmd"] == "scripts/real_eval.py")
    assert len(opt(ev, "--router")) == 4


def test_one_job_at_a_time_by_default_and_no_usable_judge_drops_roro(tmp_path):
    p, calls = run_pipeline(tmp_path, JUDGE_SEEDS="0 1", SEEDS="0 1", VARIANTS="outcome roro", PICK="none")
    assert p.returncode == 0, p.stdout + p.stderr
    trainings = [c for c in calls if c["cmd"] in ("train-judge", "train-router")]
    assert max_overlap(trainings) == 1
    routers = [c for c in calls if c["cmd"] == "train-router"]
    assert [opt(c, "--config")[0] for c in routers] == ["examples/configs/real/grpo_outcome.yaml"] * 2
    assert "the RoRo variant is left out" in p.stdout
    ev = next(c for c in calls if c["cmd"] == "scripts/real_eval.py")
    assert opt(ev, "--router") == [f"outcome={tmp_path / 'out dir'}/outcome-s{s}/router" for s in (0, 1)]


def test_a_failed_router_is_not_evaluated_and_blocks_shipping(tmp_path):
    p, calls = run_pipeline(tmp_path, SEEDS="0 1", VARIANTS="outcome", FAIL="outcome-s0", SHIP="1")
    assert p.returncode == 1
    assert "outcome-s0: FAILED" in p.stdout and "not shipping" in p.stdout
    ev = next(c for c in calls if c["cmd"] == "scripts/real_eval.py")
    assert opt(ev, "--router") == [f"outcome={tmp_path / 'out dir'}/outcome-s1/router"]
    assert not any(c["cmd"] == "scripts/ship_router.py" for c in calls)


@pytest.mark.parametrize("jobs", ["0", "-1", "two"])
def test_jobs_must_be_a_positive_number_or_all(tmp_path, jobs):
    p, calls = run_pipeline(tmp_path, JOBS=jobs)
    assert p.returncode == 2 and "JOBS must be" in p.stdout and not calls


def test_the_deprecated_gpu_script_maps_its_names(tmp_path):
    p, calls = run_pipeline(tmp_path, "real_pipeline_gpu.sh", JSEEDS="3 4", SEEDS="0", LIMIT="12", JSTEPS="2",
                            R=str(tmp_path / "gpu"), OUT="", REPORT="")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "deprecated" in p.stderr
    judges = [c for c in calls if c["cmd"] == "train-judge"]
    assert sorted(opt(c, "--seed")[0] for c in judges) == ["3", "4"]
    assert all(opt(c, "--judge-steps") == ["2"] and opt(c, "--rubricor-steps") == ["1"] for c in judges)
    assert max_overlap(judges) == 2  # JOBS=all
    assert all(opt(c, "--out")[0].startswith(str(tmp_path / "gpu")) for c in judges)
    leaves = next(c for c in calls if c["cmd"] == "tree leaves")
    assert opt(leaves, "--limit") == ["12"]
    ev = next(c for c in calls if c["cmd"] == "scripts/real_eval.py")
    assert opt(ev, "--json") == [str(tmp_path / "gpu" / "report" / "results.json")]


def test_ctrl_c_stops_the_trainings_in_progress_and_the_script(tmp_path):
    """Background jobs ignore SIGINT; the script sends them TERM and stops with 130."""
    import signal
    import time

    p = subprocess.Popen(["bash", str(ROOT / "scripts" / "real_pipeline.sh")], start_new_session=True,
                         env=pipeline_env(tmp_path, JOBS="2", JUDGE_SEEDS="0 1 2", SEEDS="0", FAKE_SLEEP="60"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started = tmp_path / "started"
    deadline = time.time() + 60
    while time.time() < deadline and not (started.exists() and len(started.read_text().split()) == 2):
        time.sleep(0.2)
    pids = [int(x) for x in started.read_text().split()]
    assert len(pids) == 2  # JOBS=2: two Judge seeds at once
    os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 130, out
    assert "interrupted" in out and "stage 3b" not in out  # no later stage ran
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert len(started.read_text().split()) == 2  # the third seed never started
