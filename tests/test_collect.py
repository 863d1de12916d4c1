"""Trajectory collection: stable ids, concurrency, cost cap, errors, and crash-safe resume (a real
``roro collect`` process is killed mid-run and resumed: exact count, no duplicate, nothing lost)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from roro_sdk.collect import collect, existing_ids, repair_torn_tail, trajectory_id
from roro_sdk.errors import ConfigError, DatasetError
from roro_sdk.pool import ModelPool
from roro_sdk.tasks import sample_queries
from roro_sdk.testing import FakeOpenAIServer
from roro_sdk.trajectories import read_trajectories

from .conftest import FAST_RETRY

POLICIES = ["all-small", "all-large", "random:0.5"]


def _pool(srv: FakeOpenAIServer, **kw) -> ModelPool:
    return ModelPool([srv.spec("small", price=(1.0, 2.0), **kw), srv.spec("large", price=(10.0, 20.0), **kw)],
                     retry=FAST_RETRY)


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


def test_collect_writes_every_run_once_with_stable_ids(tmp_path):
    qs = sample_queries(4)
    out = tmp_path / "t.jsonl"
    with FakeOpenAIServer() as srv:
        res = collect(qs, _pool(srv), POLICIES, out=out, rollouts=2, concurrency=8)
        assert res.planned == res.written == 4 * 3 * 2 and res.existing == 0 and res.errors == 0
        assert res.per_policy == {p: 8 for p in POLICIES} and res.cost_usd > 0
        trajs = read_trajectories(out)
        want = {trajectory_id(q.id, p, r) for q in qs for p in POLICIES for r in range(2)}
        assert {t.id for t in trajs} == want and len(trajs) == len(want)
        t = next(t for t in trajs if t.metadata["policy"] == "all-large")
        assert set(t.steps_by_model()) == {"large"} and t.metadata["rollout"] in (0, 1)
        # rollouts of a random policy are seeded differently
        rnd = [[s.model for s in t.steps] for t in trajs if t.metadata["policy"] == "random:0.5"]
        assert len({tuple(r) for r in rnd}) > 1
        # a second run finds everything done and calls no model
        calls = sum(srv.calls.values())
        again = collect(qs, _pool(srv), POLICIES, out=out, rollouts=2)
        assert again.written == 0 and again.existing == 24 and sum(srv.calls.values()) == calls
        # more rollouts later: only the new ones run
        more = collect(qs, _pool(srv), POLICIES, out=out, rollouts=3)
        assert more.written == 12 and len(_ids(out)) == 36 == len(set(_ids(out)))


def test_failed_runs_are_not_written_and_are_retried_on_resume(tmp_path):
    qs = sample_queries(3)
    out = tmp_path / "t.jsonl"
    with FakeOpenAIServer() as srv:
        pool = _pool(srv, max_retries=0)
        srv.inject("large", [400] * 3)  # permanent errors: 3 runs that touch the large model fail
        res = collect(qs, pool, ["all-small", "all-large"], out=out, concurrency=1)
        assert res.errors == 3 and res.written == 3
        assert len((tmp_path / "t.jsonl.errors.jsonl").read_text().splitlines()) == 3
        assert all(t.stop_reason != "error" for t in read_trajectories(out))
        res2 = collect(qs, pool, ["all-small", "all-large"], out=out)
        assert res2.written == 3 and res2.errors == 0 and len(set(_ids(out))) == 6


def test_cost_cap_stops_new_runs_and_counts_the_file(tmp_path):
    qs = sample_queries(10)
    out = tmp_path / "t.jsonl"
    with FakeOpenAIServer() as srv:
        one = collect(qs[:1], _pool(srv), ["all-large"], out=tmp_path / "probe.jsonl")
        cap = one.cost_usd * 3.5
        res = collect(qs, _pool(srv), ["all-large"], out=out, cost_cap=cap, concurrency=1)
        assert res.stopped_by_cost_cap and res.written == 4 and res.skipped_cost_cap == 6
        assert res.total_cost_usd <= cap + one.cost_usd * 1.01
        # resuming under the same cap starts nothing: the file's cost counts
        again = collect(qs, _pool(srv), ["all-large"], out=out, cost_cap=cap)
        assert again.written == 0 and again.stopped_by_cost_cap
        more = collect(qs, _pool(srv), ["all-large"], out=out, cost_cap=cap * 10)
        assert more.written == 6 and len(set(_ids(out))) == 10


def test_torn_tail_is_repaired_and_corruption_refused(tmp_path):
    p = tmp_path / "t.jsonl"
    with FakeOpenAIServer() as srv:
        collect(sample_queries(2), _pool(srv), ["all-small"], out=p)
    good = p.read_bytes()
    p.write_bytes(good + b'{"id": "torn", "query": {"que')
    with pytest.warns(UserWarning, match="torn"):
        ids, cost = existing_ids(p)
    assert len(ids) == 2 and cost > 0 and p.read_bytes() == good
    assert repair_torn_tail(p) == 0
    lines = good.decode().splitlines()
    p.write_text(lines[0] + "\n" + "not json\n" + lines[1] + "\n")
    with pytest.raises(DatasetError, match="corrupt"):
        existing_ids(p)


def test_bad_arguments_fail_before_any_call(tmp_path):
    with FakeOpenAIServer() as srv:
        pool = _pool(srv)
        with pytest.raises(ConfigError):
            collect(sample_queries(1), pool, ["all-small", "all-small"], out=tmp_path / "x.jsonl")
        with pytest.raises(Exception):
            collect(sample_queries(1), pool, ["nonsense:router"], out=tmp_path / "x.jsonl")
        with pytest.raises(ConfigError):
            collect(sample_queries(1), pool, ["all-small"], out=tmp_path / "x.jsonl", rollouts=0)
        assert sum(srv.calls.values()) == 0


def test_killed_collection_resumes_exactly(tmp_path):
    """SIGKILL a real `roro collect` mid-run, tear its last line, resume: exact count, no duplicate."""
    limit, rollouts = 8, 2
    with FakeOpenAIServer(latency_s=0.03) as srv:
        pool_file = tmp_path / "pool.yaml"
        specs = [srv.spec("small", price=(1.0, 2.0)), srv.spec("large", price=(10.0, 20.0))]
        pool_file.write_text(yaml.safe_dump({"models": [s.model_dump(exclude_none=True) for s in specs]}))
        out = tmp_path / "t.jsonl"
        cmd = [sys.executable, "-m", "roro_sdk", "collect", "--pool", str(pool_file), "--dataset", "sample",
               "--limit", str(limit), "--policies", ",".join(POLICIES), "--rollouts", str(rollouts), "--out", str(out),
               "--concurrency", "2", "-q"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):
            time.sleep(0.05)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = _ids(out)
        total = limit * len(POLICIES) * rollouts
        assert 6 <= len(before) < total, "the run must be killed mid-way"
        kept = out.read_bytes()
        with open(out, "ab") as fh:  # the kill landed mid-line
            fh.write(kept.splitlines(keepends=True)[0][:57])
        calls_before = sum(srv.calls.values())
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert f"{total - len(before)} written, {len(before)} already in" in res.stdout
        after = _ids(out)
        qs = sample_queries(limit)
        want = {trajectory_id(q.id, p, r) for q in qs for p in POLICIES for r in range(rollouts)}
        assert len(after) == total == len(set(after))     # exact count, no duplicate
        assert set(after) == want                         # nothing lost
        assert out.read_bytes().startswith(kept)          # what was written before the kill is untouched
        assert all(t.stop_reason == "answer" for t in read_trajectories(out))
        assert sum(srv.calls.values()) > calls_before


def test_rollout_pools_keep_the_generation_cache(tmp_path):
    """Rollouts re-seed the pool's sampling; the copy must keep the caller's generation cache."""
    from roro_sdk.cache import GenerationCache

    cache = GenerationCache(tmp_path / "cache.sqlite")
    with FakeOpenAIServer() as srv:
        pool = ModelPool(_pool(srv).specs, retry=FAST_RETRY, cache=cache)
        collect(sample_queries(2), pool, ["all-small"], out=tmp_path / "t.jsonl", rollouts=1)
    assert len(cache) > 0


def test_the_cost_of_failed_runs_counts_after_a_resume(tmp_path):
    # A run that fails after paid steps cost money; its cost is in the errors file, so a resumed
    # collection's total (and its cost cap) still counts it.
    qs = sample_queries(1)
    out = tmp_path / "t.jsonl"
    with FakeOpenAIServer() as srv:
        pool = _pool(srv, max_retries=0)
        srv.inject("large", [200, 400])  # one paid step, then a permanent failure
        res = collect(qs, pool, ["all-large"], out=out)
        assert res.errors == 1 and res.written == 0 and res.cost_usd > 0
        rec = json.loads((tmp_path / "t.jsonl.errors.jsonl").read_text())
        assert rec["cost_usd"] == pytest.approx(res.cost_usd)
        again = collect(qs, pool, ["all-large"], out=out)
        assert again.written == 1
        assert again.total_cost_usd == pytest.approx(res.cost_usd + again.cost_usd)
