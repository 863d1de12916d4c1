"""Scale-out on Ray (``--ray``): the same results as the local path, workers killed and replaced
with nothing lost or duplicated, a killed driver resumed, GRPO rollouts identical whatever the
number of workers. One Ray instance on loopback for the module (``ray.init(num_cpus=2)``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from roro_sdk.cli import main
from roro_sdk.errors import MissingExtraError, RayConfigError
from roro_sdk.routers.base import Decision, Router, RoutingState

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- without Ray
def test_import_roro_sdk_does_not_import_ray():
    code = ("import sys, roro_sdk, roro_sdk.scale, roro_sdk.collect, roro_sdk.eval, roro_sdk.cli; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch):
    from roro_sdk.scale import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra looks like
    with pytest.raises(MissingExtraError) as e:
        import_ray()
    assert str(e.value) == 'roro-sdk needs ray for scale-out on Ray (--ray): pip install "roro-sdk[ray]"'


@pytest.mark.parametrize("argv, needle", [
    (["eval", "--dataset", "sim", "--ray", "not an address"], "is not a Ray address"),
    (["collect", "--dataset", "sim", "--out", "{tmp}/c.jsonl", "--ray", "head:port"], "is not a Ray address"),
    (["eval", "--dataset", "sim", "--ray-workers", "2"], "--ray-workers need --ray"),
    (["eval", "--dataset", "sim", "--ray", "auto", "--ray-workers", "0"], "workers"),
    (["eval", "--dataset", "sim", "--ray", "auto", "--cache", "{tmp}/cache"], "cannot be used with --ray"),
])
def test_bad_ray_settings_are_one_line(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # refused before Ray is needed at all
    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "c.jsonl").exists()


def test_ray_options_parse():
    from roro_sdk.scale import RayOptions, ray_options

    assert ray_options(None) is None
    assert ray_options("auto") == RayOptions()
    assert ray_options("ray://head:10001", workers=3).workers == 3
    assert ray_options({"address": "10.0.0.5:6379", "num_gpus": 1}).num_gpus == 1
    with pytest.raises(RayConfigError):
        ray_options("http://head")


# -------------------------------------------------------------------------------- with Ray
ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """A Ray instance on loopback for this module; its address lets a second driver connect."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="ERROR")
    # test-module routers are sent to workers by value: workers need not import the tests package
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _comparable(path: Path) -> list[dict]:
    """Trajectories minus what differs between any two runs (random ids, timings)."""
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        d.pop("wall_time_s", None)
        if "policy" not in d.get("metadata", {}):  # collect's ids are stable: (query, policy, rollout)
            d.pop("id", None)
        for s in d["steps"]:
            s.pop("latency_s", None)
            for c in s.get("side_calls", []):
                c.pop("latency_s", None)
        for c in d.get("side_calls", []):
            c.pop("latency_s", None)
        out.append(d)
    return sorted(out, key=lambda d: json.dumps(d, sort_keys=True))


def test_eval_over_ray_matches_local(cluster, tmp_path, capsys):
    args = ["eval", "--dataset", "sim:careful", "--limit", "12", "--router", "all-small,random:0.5,steer:0.8", "-q"]
    assert main([*args, "--out", str(tmp_path / "local.jsonl"), "--summary-json", str(tmp_path / "local.json")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray.jsonl"), "--summary-json", str(tmp_path / "ray.json"),
                 "--ray", "auto", "--ray-workers", "2"]) == 0
    assert _comparable(tmp_path / "ray.jsonl") == _comparable(tmp_path / "local.jsonl")
    strip = lambda p: [{k: v for k, v in s.items() if k not in ("wall_s", "mean_latency_s")} for s in json.loads(p.read_text())]  # noqa: E731
    assert strip(tmp_path / "ray.json") == strip(tmp_path / "local.json")
    assert len(_comparable(tmp_path / "ray.jsonl")) == 36


def test_collect_over_ray_matches_local(cluster, tmp_path):
    from roro_sdk.sim import SimConfig, sim_pool, sim_queries
    from roro_sdk.train import collect

    cfg = SimConfig.careful()
    pool, qs = sim_pool(cfg), sim_queries(n=10, config=cfg)
    pols = ["all-small", "random:0.5"]
    local = collect(qs, pool, pols, out=tmp_path / "local.jsonl", rollouts=2, seed=3)
    on_ray = collect(qs, pool, pols, out=tmp_path / "ray.jsonl", rollouts=2, seed=3, ray={"address": "auto", "workers": 2})
    assert (on_ray.written, on_ray.errors, on_ray.per_policy) == (local.written, local.errors, local.per_policy) == (
        40, 0, {"all-small": 20, "random:0.5": 20})
    assert on_ray.cost_usd == pytest.approx(local.cost_usd)
    assert _comparable(tmp_path / "ray.jsonl") == _comparable(tmp_path / "local.jsonl")


def test_tiny_local_models_over_ray_match_local(cluster, tmp_path):
    """Real transformers models, registered in the driver by folder: each worker registers and
    loads them once. fp32 and one query at a time, so the greedy text is exactly reproducible."""
    from roro_sdk import ModelPool, ModelSpec, RandomRouter
    from roro_sdk.hf import save_model, tiny_causal_lm
    from roro_sdk.local import register_local_model
    from roro_sdk.runtime import StepwiseRuntime
    from roro_sdk.scale import RayOptions, arun_queries
    from roro_sdk._sync import run_sync
    from tests.test_local_engine import build_tokenizer

    tok = build_tokenizer()
    folder = save_model(tiny_causal_lm(tok, num_kv_heads=2, max_positions=512, init_std=0.2), tok, tmp_path / "tiny")
    register_local_model("scale-tiny-a", folder, dtype="float32", batch_window_ms=0)
    register_local_model("scale-tiny-b", folder, dtype="float32", batch_window_ms=0)
    greedy = {"temperature": 0.0, "top_p": 1.0}
    pool = ModelPool([ModelSpec(name="a", model="roro_local/scale-tiny-a", input_price_per_m=0.1, output_price_per_m=0.2,
                                max_tokens_per_step=6, sampling=greedy),
                      ModelSpec(name="b", model="roro_local/scale-tiny-b", input_price_per_m=1, output_price_per_m=2,
                                max_tokens_per_step=6, sampling=greedy)])
    router = RandomRouter(p_large=0.5, seed=1)
    qs = ["Tom has three boxes of apples.", "Each box holds four apples.", "What is 2 + 3?", "Hello world!"]
    local = StepwiseRuntime(pool, router, max_steps=3).run_many(qs, concurrency=1)
    on_ray = run_sync(arun_queries(pool, router, qs, ray=RayOptions(workers=1, concurrency=1), max_steps=3))
    assert [[(s.model, s.text) for s in t.steps] for t in on_ray] == [[(s.model, s.text) for s in t.steps] for t in local]
    assert {s.model for t in local for s in t.steps} == {"a", "b"} and all(t.steps for t in local)


class KillWorker(Router):
    """all-small, except that the worker process exits (as if killed) when it reaches ``target``:
    once (a marker file remembers it) or every time (a poison query)."""

    name = "all-small"

    def __init__(self, target: str, marker: str, always: bool = False):
        self.target, self.marker, self.always = target, marker, always

    def decide(self, state: RoutingState) -> Decision:
        if state.query.id == self.target and (self.always or not os.path.exists(self.marker)):
            Path(self.marker).write_text("killed")
            os._exit(1)
        return Decision(state.pool.small, {state.pool.small: 1.0}, "fixed")


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_killed_worker_loses_nothing_and_a_poison_query_is_an_error(cluster, tmp_path):
    """One collection, two policies: under one, a worker dies once mid-run (every run of it must
    still be written exactly once); under the other, one query kills every worker that runs it
    (recorded as an error after max_attempts, the run goes on, its neighbours are not blamed)."""
    from roro_sdk.scale import RayOptions
    from roro_sdk.sim import SimConfig, sim_pool, sim_queries
    from roro_sdk.train import collect

    cfg = SimConfig.careful()
    qs = sim_queries(n=16, config=cfg)
    once = ("killed-once", lambda r: KillWorker(qs[5].id, str(tmp_path / "killed-once")))
    poison = ("poison", lambda r: KillWorker(qs[9].id, str(tmp_path / "poisoned"), always=True))
    res = collect(qs, sim_pool(cfg), [once, poison], out=tmp_path / "c.jsonl", concurrency=4,
                  ray=RayOptions(workers=2, max_attempts=2))
    assert (tmp_path / "killed-once").exists() and (tmp_path / "poisoned").exists()  # workers did die mid-run
    ids = _ids(tmp_path / "c.jsonl")
    assert len(ids) == len(set(ids)) == res.written == 31 and res.errors == 1
    assert res.per_policy == {"killed-once": 16, "poison": 15}
    errors = [json.loads(line) for line in (tmp_path / "c.jsonl.errors.jsonl").read_text().splitlines()]
    assert [(e["query_id"], e["policy"]) for e in errors] == [(qs[9].id, "poison")]
    assert "worker died" in errors[0]["error"]


def test_driver_killed_and_rerun_resumes(cluster, tmp_path):
    """``roro collect --ray ADDRESS`` as a second driver on this module's cluster, SIGKILLed
    mid-run, then run again: every trajectory exactly once."""
    out = tmp_path / "c.jsonl"
    argv = [sys.executable, "-m", "roro_sdk", "collect", "--dataset", "sim:careful", "--limit", "20", "--rollouts", "3",
            "--policies", "all-small,all-large,random:0.5", "--concurrency", "1", "--out", str(out), "-q",
            "--ray", cluster, "--ray-workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline and p.poll() is None and (not out.exists() or len(out.read_bytes().splitlines()) < 15):
        time.sleep(0.05)
    assert p.poll() is None, "the first run finished before it could be killed: " + p.stderr.read().decode()[-1500:]
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = len(_ids(out)) if out.exists() else 0
    assert 0 < first < 180
    r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"already in {out}" in r.stdout
    ids = _ids(out)
    assert len(ids) == len(set(ids)) == 180


def test_grpo_rollouts_on_ray_match_local_for_any_number_of_workers(cluster, tmp_path):
    import torch

    from roro_sdk.train import load_grpo_config, train_router

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        kw = dict(train_queries=8, eval_queries=0, updates=2, queries_per_update=2, group_size=4, minibatch_size=8,
                  concurrency=8)
        runs = [train_router(load_grpo_config(None, out_dir=str(tmp_path / name), ray=ray_opts, **kw)).history
                for name, ray_opts in [("local", None), ("ray2", {"address": "auto", "workers": 2})]]
    finally:
        torch.set_num_threads(threads)
    keys = ("reward", "accuracy", "large_share", "loss", "kl", "entropy")
    local, two = ([[h[k] for k in keys] for h in run] for run in runs)
    assert two == local  # update 2 ran on the weights update 1 trained: they reached the workers
    assert json.loads((tmp_path / "ray2" / "config.json").read_text())["ray"]["workers"] == 2


def test_record_tree_over_ray_matches_local(cluster, tmp_path):
    """Each query's subtree on a worker, every call written by the driver: the same tree, the same
    replay; a re-run over Ray records nothing new."""
    from roro_sdk.tree import RoutingTree, TreeStore

    args = ["record-tree", "--dataset", "sim:min_steps=2,max_steps=4", "--limit", "6", "--depth", "1", "--max-steps", "12",
            "--routers", "steer:0.8", "-q"]
    assert main([*args, "--out", str(tmp_path / "local")]) == 0
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "auto", "--ray-workers", "2"]) == 0
    content = lambda f: {r["k"]: {k: v for k, v in r["r"].items() if k != "latency_s"} for r in TreeStore(f).records()}  # noqa: E731
    assert content(tmp_path / "ray") == content(tmp_path / "local")
    lines = (tmp_path / "ray" / "calls.jsonl").read_text().splitlines()
    assert len(lines) == len({json.loads(x)["k"] for x in lines})
    assert RoutingTree(tmp_path / "ray").frontier() == RoutingTree(tmp_path / "local").frontier()
    assert main([*args, "--out", str(tmp_path / "ray"), "--ray", "auto", "--ray-workers", "2"]) == 0
    assert (tmp_path / "ray" / "calls.jsonl").read_text().splitlines() == lines  # everything was already recorded


def test_eval_driver_killed_then_resumed_over_ray(cluster, tmp_path):
    """A killed `roro eval --ray` (its file cut mid-line) re-run with --resume: the rest runs on
    the workers, nothing is lost or run twice, the trajectories are the local run's."""
    args = ["eval", "--dataset", "sim:careful", "--limit", "8", "--router", "all-small,steer:0.8", "-q"]
    assert main([*args, "--out", str(tmp_path / "local.jsonl")]) == 0
    lines = (tmp_path / "local.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "ray.jsonl").write_text("".join(lines[:6]) + lines[6][:50])
    assert main([*args, "--out", str(tmp_path / "ray.jsonl"), "--resume", "--ray", "auto", "--ray-workers", "2"]) == 0
    assert _comparable(tmp_path / "ray.jsonl") == _comparable(tmp_path / "local.jsonl")
