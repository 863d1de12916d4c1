"""Routing trees: recording, zero-call replay equal to live runs, the exact optimum, resume after kill -9.

The sim bench gives exact ground truth (its own oracle, :func:`roro_sdk.sim.optimal.oracle_routing`);
tiny fp32 models built from a config check the same on the real local engine.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from roro_sdk.errors import ConfigError, OutsideTreeError, TreeMismatchError
from roro_sdk.pool import ModelPool
from roro_sdk.prompts import PromptTemplate
from roro_sdk.routers import make_router
from roro_sdk.runtime import StepwiseRuntime
from roro_sdk.sim import parse_sim_spec, sim_pool, sim_queries
from roro_sdk.sim.optimal import oracle_routing
from roro_sdk.tree import (
    FrontierPoint,
    Leaf,
    QueryTree,
    RoutingTree,
    TreeStore,
    best_at_cost,
    best_for_weight,
    best_frontier,
    record_tree,
)
from roro_sdk.types import Query

SPEC = "sim:min_steps=2,max_steps=4"
ROUTERS = ["all-small", "all-large", "random:0.5", "steer:0.8", "specreason:0.5", "trim:0.5", "query:0.5"]
SIDE = [r for r in ROUTERS if r not in ("all-small", "all-large")]


# Derived from logprobs: equal to float rounding (a batch of 8 and a batch of 1 sum in another order).
_SCORES = {"latency_s", "side_calls", "probabilities", "confidence"}


def _steps(t):
    return [s.model_dump(exclude=_SCORES) | {"side": [c.model_dump(exclude={"latency_s"}) for c in s.side_calls]}
            for s in t.steps]


def assert_same_runs(live, replayed):
    assert len(live) == len(replayed)
    for a, b in zip(live, replayed):
        assert _steps(a) == _steps(b), a.query.id
        assert (a.answer, a.correct, a.stop_reason, a.usage) == (b.answer, b.correct, b.stop_reason, b.usage)
        for sa, sb in zip(a.steps, b.steps):
            assert sa.probabilities == pytest.approx(sb.probabilities, abs=1e-5)
            assert (sa.confidence is None) == (sb.confidence is None)
            if sa.confidence is not None:
                assert sa.confidence == pytest.approx(sb.confidence, abs=1e-5)


@pytest.fixture(scope="module")
def sim_tree(tmp_path_factory):
    cfg = parse_sim_spec(SPEC)
    pool = sim_pool(cfg)
    qs = sim_queries(SPEC, n=16, seed=5)
    folder = tmp_path_factory.mktemp("tree") / "sim"
    res = record_tree(pool, qs, folder, depth=5, max_steps=12, routers=SIDE, compact=True)
    assert res.complete and not res.errors
    assert str(folder) not in (folder / "manifest.json").read_text()  # a committed tree carries no local path
    return cfg, pool, qs, folder


def test_replay_equals_live_for_every_baseline_with_zero_calls(sim_tree):
    _, pool, qs, folder = sim_tree
    tree = RoutingTree(folder)
    rp = tree.pool()
    for spec in ROUTERS:
        live = StepwiseRuntime(pool, make_router(spec, seed=3), max_steps=12).run_many(qs)
        before = rp.cache.stats.misses
        rep = StepwiseRuntime(rp, make_router(spec, seed=3), max_steps=12).run_many(qs)
        assert rp.cache.stats.misses == before, spec  # every call answered by the tree
        assert_same_runs(live, rep)


def test_cheapest_correct_routing_is_the_sim_oracle(sim_tree):
    cfg, _, qs, folder = sim_tree
    trees = RoutingTree(folder).query_trees()
    assert [t.query.id for t in trees] == [q.id for q in qs]
    for q, t in zip(qs, trees):
        assert t.missing == 0
        n_steps = len(t.routing(["small"]).routing)  # a complete tree: every routing of the task is a leaf
        assert len(t.leaves) == 2 ** n_steps
        oracle = oracle_routing(q, cfg)
        best = t.cheapest_correct
        assert (oracle is None) == (best is None)
        if oracle is not None:
            assert best.cost_usd == pytest.approx(oracle[1], rel=1e-9)
            assert list(best.routing) == oracle[0]


def test_frontier_is_exact_against_brute_force():
    rng = random.Random(0)
    for _ in range(30):
        trees = []
        for i in range(4):
            leaves = [Leaf(routing=(str(j),), stop="answer", answer=None, correct=rng.random() < 0.4,
                           cost_usd=round(rng.uniform(0.1, 2.0), 3), output_tokens={}) for j in range(rng.randint(1, 4))]
            trees.append(QueryTree(query=Query(id=f"q{i}", question="x"), leaves=leaves))
        front = best_frontier(trees)
        combos = [(sum(l.cost_usd for l in c) / 4, sum(l.correct for l in c) / 4) for c in itertools.product(*(t.leaves for t in trees))]
        for cost, acc in combos:  # nothing any routing achieves lies above the frontier
            assert acc <= best_at_cost(front, cost) + 1e-12
        for p in front:  # and every vertex is achieved by some routing
            assert any(abs(c - p.mean_cost_usd) < 1e-9 and abs(a - p.accuracy) < 1e-9 for c, a in combos)
        for lam in (0.0, 0.3, 1.0, 5.0):  # the best point for a cost weight is a frontier vertex
            b = best_for_weight(trees, lam)
            assert b.accuracy - lam * b.mean_cost_usd >= max(a - lam * c for c, a in combos) - 1e-9


def test_outside_tree_is_a_typed_error_or_grows_the_tree(tmp_path):
    pool = sim_pool(parse_sim_spec(SPEC))
    qs = sim_queries(SPEC, n=3, seed=1)
    folder = tmp_path / "t"
    record_tree(pool, qs, folder, depth=0, max_steps=12)  # all-small and all-large only: no STEER probe
    tree = RoutingTree(folder)
    rt = StepwiseRuntime(tree.pool(), make_router("steer:0.8", seed=1), max_steps=12)
    trajs = rt.run_many(qs)
    assert all(t.stop_reason == "error" and t.metadata["error_type"] == "OutsideTreeError" for t in trajs)
    with pytest.raises(OutsideTreeError, match="outside the recorded tree"):
        rt.run(next(q for q, t in zip(qs, trajs) if t.stop_reason == "error"))
    n0 = len(TreeStore(folder))
    grown = StepwiseRuntime(tree.pool(grow=True), make_router("steer:0.8", seed=1), max_steps=12).run_many(qs)
    assert not any(t.error for t in grown) and len(TreeStore(folder)) > n0
    again = StepwiseRuntime(RoutingTree(folder).pool(), make_router("steer:0.8", seed=1), max_steps=12).run_many(qs)
    assert_same_runs(grown, again)


def test_mismatched_pool_and_settings_are_refused(tmp_path):
    pool = sim_pool(parse_sim_spec(SPEC))
    qs = sim_queries(SPEC, n=2, seed=1)
    folder = tmp_path / "t"
    record_tree(pool, qs, folder, depth=1, max_steps=12)
    other = ModelPool([s.model_copy(update={"max_tokens_per_step": 7}) for s in pool.specs])
    with pytest.raises(TreeMismatchError, match="max_tokens_per_step"):
        RoutingTree(folder).pool(like=other)
    with pytest.raises(TreeMismatchError, match="prompt template"):
        RoutingTree(folder).pool(like=ModelPool(pool.specs, prompt=PromptTemplate(system="Be brief.")))
    with pytest.raises(TreeMismatchError, match="depth"):
        record_tree(pool, qs, folder, depth=2, max_steps=12)
    with pytest.raises(TreeMismatchError, match="models"):
        record_tree(ModelPool(pool.specs[:1]), qs, folder, depth=1, max_steps=12)
    with pytest.raises(ConfigError, match="temperature"):
        hot = [s.model_copy(update={"sampling": s.sampling.model_copy(update={"temperature": 0.7})}) for s in pool.specs]
        record_tree(ModelPool(hot), qs, tmp_path / "hot")
    # prices are not pinned: a replay prices the recorded tokens at the pool's prices
    dear = ModelPool([s.model_copy(update={"output_price_per_m": (s.output_price_per_m or 0) * 2}) for s in pool.specs])
    RoutingTree(folder).pool(like=dear)


_RECORD_SCRIPT = textwrap.dedent("""
    import sys, time
    import roro_sdk.sim.provider as prov
    from roro_sdk.sim import parse_sim_spec, sim_pool, sim_queries
    from roro_sdk.tree import record_tree
    real = prov.sim_complete
    def slow(*a, **k):
        time.sleep(0.01)  # a real model's latency, so the recording can be killed midway
        return real(*a, **k)
    prov.sim_complete = slow
    spec = "%s"
    record_tree(sim_pool(parse_sim_spec(spec)), sim_queries(spec, n=10, seed=2), sys.argv[1], depth=2, max_steps=12,
                routers=["steer:0.8"], concurrency=2)
""" % SPEC)


def _record(folder: Path, *, kill_after_lines: int | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", _RECORD_SCRIPT, str(folder)], env=env)
    if kill_after_lines is None:
        assert proc.wait(timeout=240) == 0
        return
    calls = folder / "calls.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if calls.is_file() and calls.read_bytes().count(b"\n") >= kill_after_lines:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the recording ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _content(folder: Path) -> dict:
    return {r["k"]: {k: v for k, v in r["r"].items() if k != "latency_s"} for r in TreeStore(folder).records()}


def test_kill_9_during_recording_then_rerun_gives_the_identical_tree(tmp_path):
    _record(tmp_path / "whole")
    _record(tmp_path / "killed", kill_after_lines=40)
    partial = _content(tmp_path / "killed")
    assert 40 <= len(partial) < len(_content(tmp_path / "whole"))
    _record(tmp_path / "killed")
    assert _content(tmp_path / "killed") == _content(tmp_path / "whole")
    lines = (tmp_path / "killed" / "calls.jsonl").read_bytes().splitlines()
    assert len(lines) == len({json.loads(x)["k"] for x in lines})  # nothing recorded twice


def test_compacted_tree_is_deterministic_and_replays(sim_tree, tmp_path):
    _, pool, qs, folder = sim_tree
    assert not (folder / "calls.jsonl").exists() and (folder / "calls.jsonl.gz").is_file()
    again = tmp_path / "again"
    record_tree(pool, qs, again, depth=5, max_steps=12, routers=SIDE, compact=True)
    a, b = (folder / "calls.jsonl.gz").read_bytes(), (again / "calls.jsonl.gz").read_bytes()
    assert _strip_latency(a) == _strip_latency(b)


def _strip_latency(gz: bytes) -> list:
    import gzip

    return [{k: v for k, v in json.loads(x)["r"].items() if k != "latency_s"} for x in gzip.decompress(gz).splitlines()]


def test_cli_record_tree_info_and_eval_report_best_possible(tmp_path, capsys):
    from roro_sdk.cli import main

    out = tmp_path / "tree"
    assert main(["record-tree", "--out", str(out), "--dataset", SPEC, "--limit", "6", "--depth", "1", "--max-steps", "12",
                 "--routers", "steer:0.8", "-q", "--compact"]) == 0
    assert main(["tree", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("tree: " + str(out) + "\n", 1)[-1])
    assert info["queries"] == 6 and info["depth"] == 1 and info["missing_branches"] == 0 and info["frontier"]
    ts = info["token_share"]  # what a cap on the large model's share of tokens allows, knowing the query or not
    assert ts["cap"] == 0.3 and ts["best_possible"]["queries"] == 6 and ts["best_possible"]["share"] <= 0.3
    assert ts["best_blind_mix"] is None or ts["best_blind_mix"]["accuracy"] <= ts["best_possible"]["accuracy"]
    assert main(["tree", "info", str(out), "--share-cap", "30"]) == 2
    assert "--share-cap is a share of output tokens between 0 and 1" in capsys.readouterr().err
    rep = tmp_path / "rep"
    assert main(["eval", "--pool", f"tree:{out}", "--router", "steer:0.8", "--max-steps", "12", "--report", str(rep),
                 "--no-plots", "-q"]) == 0
    md = (rep / "report.md").read_text()
    assert "Best possible (exact, over the recorded routing tree)" in md and "share of achievable gain" in md
    assert main(["eval", "--pool", f"tree:{out}", "--router", "steer:0.8", "--max-steps", "30", "-q"]) != 0
    assert "recorded with max_steps 12" in capsys.readouterr().err
    assert main(["report", str(rep), "--no-plots"]) == 0  # a rebuilt report keeps the best possible
    assert "Best possible" in (rep / "report.md").read_text()
    assert main(["record-tree", "--out", str(tmp_path / "bad"), "--dataset", SPEC, "--depth", "-1"]) != 0
    assert "depth must be" in capsys.readouterr().err


def test_frontier_helpers_edge_cases():
    assert best_frontier([]) == [] and best_at_cost([], 1.0) is None
    pts = [FrontierPoint(1.0, 0.5), FrontierPoint(2.0, 1.0)]
    assert best_at_cost(pts, 0.5) is None and best_at_cost(pts, 1.5) == pytest.approx(0.75) and best_at_cost(pts, 9) == 1.0
    # equally cheap routings, one right and one wrong (a free pool): the right one is the cheapest
    tie = [QueryTree(query=Query(id=f"q{i}", question="x"), leaves=[
        Leaf(routing=("a",), stop="answer", answer="1", correct=False, cost_usd=0.0, output_tokens={}),
        Leaf(routing=("b",), stop="answer", answer="2", correct=True, cost_usd=0.0, output_tokens={})]) for i in range(2)]
    assert best_frontier(tie) == [FrontierPoint(0.0, 1.0, 0)] and best_at_cost(best_frontier(tie), 0.0) == 1.0


def test_replay_on_tiny_local_models_equals_the_live_run(tmp_path):
    """The real local engine (continuous batching, prefix cache) with tiny fp32 models: a tree
    recorded with logprobs at concurrency 8 replays every baseline exactly as a live run at
    concurrency 1 computes it (fp32 greedy is batch-invariant here; bf16 need not be)."""
    torch = pytest.importorskip("torch")
    from roro_sdk.hf import tiny_causal_lm
    from roro_sdk.local import clear_local_engines, register_local_model, register_local_provider
    from roro_sdk.types import ModelSpec
    from tests.test_local_engine import build_tokenizer

    tok = build_tokenizer()
    models = {}
    for i, name in enumerate(("tree-tiny-a", "tree-tiny-b")):
        models[name] = tiny_causal_lm(tok, num_kv_heads=2, max_positions=1024, init_std=0.2, seed=10 + i).float()
        register_local_model(name, lambda m=models[name]: (m, tok), batch_window_ms=5)
    register_local_provider()
    specs = [ModelSpec(name=n.removeprefix("tree-tiny-"), model=f"roro_local/{n}", mode="prefix", input_price_per_m=p,
                       output_price_per_m=2 * p, max_tokens_per_step=6, max_retries=0, sampling={"temperature": 0.0, "top_p": 1.0})
             for n, p in (("tree-tiny-a", 0.1), ("tree-tiny-b", 1.0))]
    pool = ModelPool(specs)
    qs = [Query(id=f"t{i}", question=q, answer="12") for i, q in enumerate(
        ["Tom has three boxes of four apples. How many apples?", "What is 3 times 4?", "Add 5 and 7."])]
    routers = ["all-small", "all-large", "random:0.5", "trim:0.5", "steer:0.8"]
    try:
        with torch.inference_mode():
            res = record_tree(pool, qs, tmp_path / "tiny", depth=1, max_steps=3, routers=routers[2:], concurrency=8, seed=2)
            assert res.complete and res.calls > 0
            rp = RoutingTree(tmp_path / "tiny").pool()
            for spec in routers:
                live = StepwiseRuntime(pool, make_router(spec, seed=2), max_steps=3).run_many(qs, concurrency=1)
                rep = StepwiseRuntime(rp, make_router(spec, seed=2), max_steps=3).run_many(qs)
                assert_same_runs(live, rep)
        manifest = RoutingTree(tmp_path / "tiny").manifest
        assert manifest.weights["a"]["dtype"] == "float32" and manifest.recording.depth == 1
    finally:
        clear_local_engines()


def test_cost_cap_stops_before_passing_it_and_a_rerun_continues(tmp_path):
    pool = sim_pool(parse_sim_spec(SPEC))
    qs = sim_queries(SPEC, n=6, seed=4)
    whole = record_tree(pool, qs, tmp_path / "whole", depth=1, max_steps=12)
    cap = whole.cost_usd / 3
    part = record_tree(pool, qs, tmp_path / "capped", depth=1, max_steps=12, cost_cap=cap)
    assert not part.complete and "cost cap" in part.stopped and 0 < part.cost_usd <= cap
    rest = record_tree(pool, qs, tmp_path / "capped", depth=1, max_steps=12, cost_cap=whole.cost_usd)
    assert rest.complete and rest.cost_usd == pytest.approx(whole.cost_usd - part.cost_usd, rel=1e-6)
    assert _content(tmp_path / "capped") == _content(tmp_path / "whole")


def test_collect_on_a_tree_equals_live_collection(sim_tree, tmp_path):
    from roro_sdk.collect import collect
    from roro_sdk.trajectories import read_trajectories

    _, pool, qs, folder = sim_tree
    policies = ["all-small", "all-large", "steer:0.8"]
    collect(qs, pool, policies, out=tmp_path / "live.jsonl", vary_sampling_seed=False, max_steps=12)
    collect(qs, RoutingTree(folder).pool(), policies, out=tmp_path / "tree.jsonl", vary_sampling_seed=False, max_steps=12)
    key = lambda t: (t.query.id, t.router)  # noqa: E731
    live = sorted(read_trajectories(tmp_path / "live.jsonl"), key=key)
    rep = sorted(read_trajectories(tmp_path / "tree.jsonl"), key=key)
    assert len(live) == len(qs) * len(policies)
    assert_same_runs(live, rep)


def test_growing_a_tree_in_another_dtype_is_refused(sim_tree, tmp_path):
    pytest.importorskip("torch")
    import shutil

    from roro_sdk.local import configure_local
    from roro_sdk.tree import TreeManifest

    _, _, _, folder = sim_tree
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    m = TreeManifest.load(copy)
    m.weights["small"] = {"pinned_by": "registered local model", "dtype": "float16"}
    m.save(copy)
    before = configure_local()
    try:
        configure_local(dtype="float32")
        with pytest.raises(TreeMismatchError, match="RORO_LOCAL_DTYPE=float16"):
            RoutingTree(copy).pool(grow=True)
        RoutingTree(copy).pool()  # replay computes nothing: any machine replays it
    finally:
        configure_local(dtype=before.dtype)


def test_compacted_files_are_pinned_and_verified(sim_tree, tmp_path):
    import shutil

    from roro_sdk.errors import DatasetError

    _, _, _, folder = sim_tree
    RoutingTree(folder).verify()
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    with open(copy / "queries.jsonl", "a") as fh:
        fh.write("\n")
    with pytest.raises(DatasetError, match="queries.jsonl: sha256"):
        RoutingTree(copy).verify()


COMMITTED = sorted((Path(__file__).resolve().parents[1] / "data" / "trees").glob("*/*/manifest.json"))


@pytest.mark.parametrize("manifest", COMMITTED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_committed_real_trees_are_intact_and_replay_without_models(manifest):
    """The recorded real-model trees: pinned files, every branch recorded, and the single-model
    routings replay through the runtime with zero calls (no model is loaded)."""
    tree = RoutingTree(manifest.parent)
    tree.verify()
    assert "/work/" not in manifest.read_text() and "folder" not in tree.manifest.stats  # no recording machine's path
    trees = tree.query_trees()
    assert trees and all(t.missing == 0 and t.leaves for t in trees)
    pool = tree.pool()
    qs = tree.queries[:5]
    for name in pool.names:
        trajs = StepwiseRuntime(pool, make_router(f"fixed:{name}"), max_steps=tree.manifest.recording.max_steps).run_many(qs)
        for t, qt in zip(trajs, trees):
            leaf = qt.routing([name])
            assert [s.model for s in t.steps] == list(leaf.routing) and t.correct == leaf.correct
    assert pool.cache.stats.misses == 0


def test_snapshot_copies_the_complete_prefix_of_a_tree_being_recorded(tmp_path, capsys):
    from roro_sdk.cli import main
    from roro_sdk.tree.snapshot import snapshot_tree

    spec = "sim:min_steps=3,max_steps=5"
    pool, qs = sim_pool(parse_sim_spec(spec)), sim_queries(spec, n=5, seed=4)
    full, partial = tmp_path / "full", tmp_path / "partial"
    record_tree(pool, qs, full, depth=1, max_steps=12, dataset={"dataset": spec, "seed": 4, "n": 5})
    # a recording in progress: every query listed, only the first three recorded so far
    record_tree(pool, qs[:3], partial, depth=1, max_steps=12, dataset={"dataset": spec, "seed": 4, "n": 5})
    (partial / "queries.jsonl").write_text((full / "queries.jsonl").read_text())
    before = {p.name: p.read_bytes() for p in partial.iterdir()}

    snap = snapshot_tree(partial, tmp_path / "snap")
    assert [q.id for q in snap.queries] == [q.id for q in qs[:3]]  # the first incomplete query ends it
    snap.verify()  # compacted and pinned
    assert (snap.folder / "calls.jsonl.gz").is_file() and not (snap.folder / "calls.jsonl").exists()
    assert snap.manifest.datasets == [{"dataset": spec, "seed": 4, "n": 3}]
    assert snap.manifest.stats["queries"] == 3 and snap.manifest.stats["snapshot_of_a_recording"]["queries_listed"] == 5
    want = {t.query.id: sorted((l.routing, l.correct) for l in t.leaves) for t in RoutingTree(full).query_trees()}
    assert {t.query.id: sorted((l.routing, l.correct) for l in t.leaves) for t in snap.query_trees()} == {
        q: want[q] for q in [q.id for q in qs[:3]]}
    assert {p.name: p.read_bytes() for p in partial.iterdir()} == before  # the source is only read

    assert main(["tree", "snapshot", str(partial), "--out", str(tmp_path / "snap"), "--limit", "2"]) == 0
    assert "first 2 complete queries" in capsys.readouterr().out
    assert len(RoutingTree(tmp_path / "snap").queries) == 2
    with pytest.raises(ConfigError, match="another folder"):
        snapshot_tree(partial, partial)
    with pytest.raises(ConfigError, match="not a routing tree"):
        snapshot_tree(tmp_path, tmp_path / "x")


def test_snapshot_stops_where_the_side_call_routers_have_not_run_yet(tmp_path):
    """A recording runs its side-call routers after the trees of all its queries: stopped between
    the two, a query's tree is complete but STEER's probes on it are not recorded. A snapshot
    must not keep such a query (replaying STEER on it would leave the tree)."""
    from roro_sdk.tree.snapshot import snapshot_tree

    spec = "sim:min_steps=3,max_steps=5"
    pool, qs = sim_pool(parse_sim_spec(spec)), sim_queries(spec, n=5, seed=4)
    folder = tmp_path / "tree"
    ds = {"dataset": spec, "seed": 4, "n": 5}
    record_tree(pool, qs[:3], folder, depth=1, max_steps=12, routers=["steer:0.8"], seed=4, dataset=ds)
    record_tree(pool, qs, folder, depth=1, max_steps=12, seed=4, dataset=ds)  # trees only, for all five
    assert all(not t.missing for t in RoutingTree(folder).query_trees())
    snap = snapshot_tree(folder, tmp_path / "snap")
    assert [q.id for q in snap.queries] == [q.id for q in qs[:3]]
    res = StepwiseRuntime(snap.pool(), make_router("steer:0.8", seed=4), max_steps=12).run_many(snap.queries)
    assert all(t.stop_reason != "error" for t in res)
    record_tree(pool, qs, folder, depth=1, max_steps=12, routers=["steer:0.8"], seed=4, dataset=ds)  # the rest of the run
    assert len(snapshot_tree(folder, tmp_path / "snap").queries) == 5


@pytest.mark.parametrize("routers", [[], ["steer:0.8", "trim:0.5"]])
def test_a_recording_stopped_part_way_holds_its_first_queries_complete(tmp_path, routers):
    """Queries are recorded ``concurrency`` at a time, in the dataset's order, each tree level by
    level and then its side-call routers: a recording stopped part-way (here by its cost cap; a
    kill is the same) holds complete trees and side calls for a prefix of its queries, which a
    snapshot keeps. (Expanding every query's first level before any second one left an hour of
    real recording without one complete query; running the routers after every query's tree left
    a stopped recording with none they could replay.)"""
    from roro_sdk.tree.snapshot import snapshot_tree

    spec = "sim:min_steps=4,max_steps=6"
    pool, qs = sim_pool(parse_sim_spec(spec)), sim_queries(spec, n=12, seed=5)
    whole = record_tree(pool, qs, tmp_path / "whole", depth=1, max_steps=12, concurrency=2, routers=routers)
    assert whole.router_live_calls > 0 if routers else whole.router_live_calls == 0
    # every live call is one line (a router asking more of a recorded call, e.g. top logprobs, adds a richer line)
    assert whole.live_calls + whole.router_live_calls == len((tmp_path / "whole" / "calls.jsonl").read_text().splitlines())
    part = record_tree(pool, qs, tmp_path / "part", depth=1, max_steps=12, concurrency=2, cost_cap=whole.cost_usd / 2,
                       routers=routers)
    assert part.stopped and not part.complete
    snap = snapshot_tree(tmp_path / "part", tmp_path / "snap")
    assert [q.id for q in snap.queries] == [q.id for q in qs[:len(snap.queries)]]
    assert len(snap.queries) >= 4  # half the cost: about half the queries, less the two in flight
    for spec_ in routers:
        runs = StepwiseRuntime(snap.pool(), make_router(spec_), max_steps=12).run_many(snap.queries)
        assert all(t.stop_reason != "error" for t in runs), spec_


def test_query_window_bounds_the_queries_in_flight_not_the_calls(tmp_path):
    """Many calls in flight fill a local engine's batches; a small query window keeps queries
    finishing one after another, so a stopped recording still holds a long complete prefix."""
    from roro_sdk.tree.snapshot import snapshot_tree

    spec = "sim:min_steps=4,max_steps=6"
    pool, qs = sim_pool(parse_sim_spec(spec)), sim_queries(spec, n=12, seed=5)
    whole = record_tree(pool, qs, tmp_path / "whole", depth=1, max_steps=12, concurrency=8, query_window=1)
    assert whole.complete
    want = {t.query.id: sorted((l.routing, l.correct) for l in t.leaves) for t in RoutingTree(tmp_path / "whole").query_trees()}
    other = record_tree(pool, qs, tmp_path / "other", depth=1, max_steps=12, concurrency=3)
    assert other.complete
    assert {t.query.id: sorted((l.routing, l.correct) for l in t.leaves) for t in RoutingTree(tmp_path / "other").query_trees()} == want
    part = record_tree(pool, qs, tmp_path / "part", depth=1, max_steps=12, concurrency=8, query_window=1,
                       cost_cap=whole.cost_usd / 2)
    assert part.stopped
    # half the cost: about half the queries, less the one in flight
    assert len(snapshot_tree(tmp_path / "part", tmp_path / "snap").queries) >= 5
    with pytest.raises(ConfigError, match="query_window"):
        record_tree(pool, qs, tmp_path / "bad", query_window=0)
    with pytest.raises(ConfigError, match="query_window applies"):  # Ray workers take their own queries
        record_tree(pool, qs, tmp_path / "bad", query_window=2, ray="auto")
