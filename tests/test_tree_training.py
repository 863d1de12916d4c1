"""Training on a routing tree: committed steps, every routing as a trajectory, exact step labels,
and GRPO whose rollouts all stay inside the tree (sim bench trees and tiny random routers)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from roro_sdk.cli import main  # noqa: E402
from roro_sdk.errors import TrainingConfigError  # noqa: E402
from roro_sdk.pairs import build_pairs, read_pairs  # noqa: E402
from roro_sdk.policy.router import PolicyRouter  # noqa: E402
from roro_sdk.runtime import StepwiseRuntime  # noqa: E402
from roro_sdk.sim import parse_sim_spec, sim_pool, sim_queries  # noqa: E402
from roro_sdk.trajectories import read_trajectories  # noqa: E402
from roro_sdk.tree import Leaf, QueryTree, RoutingTree, record_tree  # noqa: E402
from roro_sdk.tree.labels import RoutingPlan, TreeStepVerifier, leaf_trajectories, node_values, tree_step_verifier  # noqa: E402
from roro_sdk.train.grpo import build_policy, train_router  # noqa: E402
from roro_sdk.train.grpo_config import load_grpo_config  # noqa: E402
from roro_sdk.types import Query  # noqa: E402

SPEC = "sim:min_steps=3,max_steps=5"


@pytest.fixture(scope="module")
def tree1(tmp_path_factory):
    """A depth-1 sim tree (the depth of the committed real trees): two free choices, then committed."""
    pool = sim_pool(parse_sim_spec(SPEC))
    qs = sim_queries(SPEC, n=12, seed=11)
    folder = tmp_path_factory.mktemp("tree") / "d1"
    assert record_tree(pool, qs, folder, depth=1, max_steps=12).complete
    return pool, qs, folder


def test_every_routing_of_the_tree_as_a_trajectory_with_zero_calls(tree1):
    _, qs, folder = tree1
    tree = RoutingTree(folder)
    pool = tree.pool()
    trajs = leaf_trajectories(tree, pool=pool)
    assert pool.cache.stats.misses == 0
    by_q = {}
    for t in trajs:
        by_q.setdefault(t.query.id, []).append(t)
    for qt in tree.query_trees():
        got = sorted((tuple(s.model for s in t.steps), t.correct, round(t.cost_usd, 12)) for t in by_q[qt.query.id])
        want = sorted((l.routing, l.correct, round(l.cost_usd, 12)) for l in qt.leaves)
        assert got == want  # exactly the tree's routings, each once, with its outcome and cost
    for t in trajs:  # the steps after the two free choices are committed
        assert [s.forced for s in t.steps] == [i >= 2 for i in range(len(t.steps))]
    assert [t.id for t in leaf_trajectories(tree)] == [t.id for t in trajs]  # content-derived ids


def _tree(routings_correct: dict[tuple[str, ...], bool]) -> QueryTree:
    leaves = [Leaf(routing=r, stop="answer", answer=None, correct=ok, cost_usd=float(r.count("L")) + 0.1 * len(r),
                   output_tokens={}) for r, ok in routings_correct.items()]
    return QueryTree(query=Query(id="q", question="what?"), leaves=leaves)


def _traj(models):
    from roro_sdk.types import Step, Trajectory

    return Trajectory(query=Query(id="q~3", question="what?"), router="r",
                      steps=[Step(index=i, model=m, text=f"s{i}") for i, m in enumerate(models)])


def test_step_labels_come_from_the_exact_node_values():
    # step 1: only a large first step can still end right -> hard; a small first step is the mistake
    qt = _tree({("S", "S", "S"): False, ("S", "L", "L"): False, ("L", "S", "S"): True, ("L", "L", "L"): True})
    v = node_values(qt)
    assert v[()].reachable and v[("L",)].cheapest_correct_usd == pytest.approx(1.3) and not v[("S",)].reachable
    ver = TreeStepVerifier([qt], cheapest="S")
    first_small = ver(_traj(["S", "S", "S"]), 0)
    assert first_small.hard is True and first_small.mistake is True
    first_large = ver(_traj(["L", "S", "S"]), 0)
    assert first_large.hard is True and first_large.mistake is False
    # step 2 after L: both children still reach a right answer -> easy, no mistake
    assert ver(_traj(["L", "S", "S"]), 1).hard is False
    # step 2 after S: nothing is reachable any more -> no hard/easy label
    assert ver(_traj(["S", "L", "L"]), 1).hard is None
    # a committed step (no recorded sibling) and a query the tree lacks: no label
    assert ver(_traj(["L", "S", "S"]), 2) is None
    assert ver(_traj(["L"]).model_copy(update={"query": Query(id="x", question="other")}), 0) is None


def test_tree_labels_make_process_pairs_through_the_cli(tree1, tmp_path, capsys):
    _, _, folder = tree1
    out = tmp_path / "leaves.jsonl"
    assert main(["tree", "leaves", str(folder), "--out", str(out)]) == 0
    assert "zero model calls" in capsys.readouterr().out
    trajs = read_trajectories(out)
    pairs_file = tmp_path / "pairs.jsonl"
    assert main(["pairs", "--trajectories", str(out), "--out", str(pairs_file), "--process", f"tree:{folder}"]) == 0
    pairs = read_pairs(pairs_file)
    assert {p.kind for p in pairs} >= {"outcome", "cost"}
    again = build_pairs(trajs, step_verifier=tree_step_verifier(RoutingTree(folder)))
    assert sorted(p.id for p in again.pairs) == sorted(p.id for p in pairs)
    by_id = {t.id: t for t in trajs}
    for p in again.by_kind("process"):  # the chosen one routed more of its labelled steps right
        assert by_id[p.chosen_id].correct == by_id[p.rejected_id].correct
        assert p.chosen_process > p.rejected_process


def test_a_router_with_free_steps_commits_and_learners_skip_committed_steps(tree1, tmp_path):
    pool, qs, _ = tree1
    cfg = load_grpo_config(dataset=SPEC, out_dir=str(tmp_path / "x"), policy={"free_steps": 2})
    router = build_policy(cfg, pool.names, qs)
    assert router.free_steps == 2
    traj = StepwiseRuntime(pool, router, max_steps=12).run(qs[0])
    assert len(traj.steps) >= 3
    assert {s.model for s in traj.steps[1:]} == {traj.steps[1].model}  # the second choice is kept to the end
    assert [s.forced for s in traj.steps] == [i >= 2 for i in range(len(traj.steps))]
    assert router.forward_calls == 2  # a committed step costs no forward pass
    enc = router.encode_trajectory(traj)
    assert enc.actions == [pool.names.index(s.model) for s in traj.steps[:2]]
    assert len(enc.ids) == enc.positions[-1] + 1  # nothing after the last choice is encoded
    again = PolicyRouter.load(router.save(tmp_path / "saved"))
    assert again.free_steps == 2
    with pytest.raises(Exception, match="free_steps"):
        PolicyRouter(router.model, router.tokenizer, pool.names, free_steps=0)


def test_plan_router_routes_by_plan_then_commits(tree1):
    pool, qs, _ = tree1
    t = StepwiseRuntime(pool, RoutingPlan([pool.large, pool.small]), max_steps=12).run(qs[0])
    assert [s.model for s in t.steps] == [pool.large] + [pool.small] * (len(t.steps) - 1)
    assert t.router == f"plan:{pool.large}>{pool.small}"


def test_grpo_on_a_tree_commits_after_its_depth_and_never_leaves_it(tree1, tmp_path):
    _, _, folder = tree1
    base = dict(dataset=f"tree:{folder}", pool=f"tree:{folder}", train_queries=8, eval_queries=4, updates=2,
                queries_per_update=2, group_size=4, minibatch_size=8, lr=1e-2, max_steps=12, judge="none",
                rewards={"lambda_p": 0.0}, checkpoint_every=1, concurrency=16)
    res = train_router(load_grpo_config(**base, out_dir=str(tmp_path / "run")))
    assert res.router.free_steps == 2  # depth 1: the tree records every model's first two steps
    assert PolicyRouter.load(tmp_path / "run" / "router").free_steps == 2
    assert all(m["rollout_errors"] == 0 for m in res.history), "a rollout left the tree"
    with pytest.raises(TrainingConfigError, match="free_steps <= 2"):
        train_router(load_grpo_config(**base, out_dir=str(tmp_path / "b"), policy={"free_steps": 3}))
    with pytest.raises(TrainingConfigError, match="max_steps <= 12"):
        train_router(load_grpo_config(**{**base, "max_steps": 13}, out_dir=str(tmp_path / "c")))


def test_identical_rollouts_share_one_forward_and_one_judgement(tree1, tmp_path):
    from roro_sdk.judge import FunctionJudge
    from roro_sdk.train.grpo import _decision_log_probs, _encode

    _, _, folder = tree1
    seen = []

    def score(query, rubric, traj):
        seen.append(tuple((s.model, s.text) for s in traj.steps))
        return 0.5

    cfg = load_grpo_config(dataset=f"tree:{folder}", pool=f"tree:{folder}", train_queries=4, eval_queries=0, updates=2,
                           queries_per_update=2, group_size=8, minibatch_size=16, lr=1e-2, max_steps=12,
                           out_dir=str(tmp_path / "run"), concurrency=16)
    res = train_router(cfg, judge=FunctionJudge(score_fn=score))
    assert len(seen) == len(set(seen))  # no rollout content judged twice in the run
    assert len(seen) <= 4 * 4  # at most the 4 routings of each of the 4 queries
    # the batched log-probs with shared forwards equal those of each rollout alone
    router = res.router
    trajs = StepwiseRuntime(RoutingTree(folder).pool(), router.with_mode("sample", seed=1), max_steps=12).run_many(
        [q.model_copy(update={"id": f"{q.id}~{j}"}) for q in RoutingTree(folder).queries[:2] for j in range(6)])
    b, _ = _encode(router, trajs, torch.device("cpu"))
    with torch.no_grad():
        chosen, full = _decision_log_probs(router, b)
        for i, t in enumerate(trajs):
            one, _ = _decision_log_probs(router, _encode(router, [t], torch.device("cpu"))[0])
            n = one.shape[1]
            torch.testing.assert_close(chosen[i, :n], one[0], atol=1e-5, rtol=1e-5)


def test_group_advantages_without_std_scaling_keep_cost_differences_small():
    from roro_sdk.train.grpo import group_advantages

    cost_only = [0.7, 0.7, 0.7, 0.97]  # all right, one cheaper: a cost difference of 0.27
    assert max(abs(a) for a in group_advantages(cost_only)) > 1.5  # std scaling: as big as an outcome flip
    assert group_advantages(cost_only, scale=False) == pytest.approx([-0.0675] * 3 + [0.2025])
    assert group_advantages([], scale=False) == [] and group_advantages([1.0, 1.0], scale=False) == [0.0, 0.0]


def test_grpo_with_a_cost_term_learns_the_best_plan_of_a_sim_tree(tmp_path):
    """The sim tree's best plan with lambda_c = 0.3 is large-large (100% right; every other plan is
    right on under half the problems). With Dr. GRPO advantages the router learns it on every seed;
    with std-scaled advantages the cost-only groups are blown up and runs drifted to the small model (the diagnosis
    of docs/reports/real.md)."""
    spec = "sim:careful,hint_accuracy=0.95,min_steps=3,max_steps=5"
    pool = sim_pool(parse_sim_spec(spec))
    record_tree(pool, sim_queries(spec, n=24, seed=0), tmp_path / "train", depth=1, max_steps=12)
    record_tree(pool, sim_queries(spec, n=16, seed=1000), tmp_path / "test", depth=1, max_steps=12)
    held = RoutingTree(tmp_path / "test")
    for seed in (0, 1, 2):
        cfg = load_grpo_config(dataset=f"tree:{tmp_path / 'train'}", pool=f"tree:{tmp_path / 'train'}", train_queries=24,
                               eval_queries=0, updates=12, queries_per_update=4, group_size=8, minibatch_size=32, lr=1e-2,
                               advantage_norm="none", max_steps=12, judge="none", rewards={"lambda_p": 0.0, "lambda_c": 0.3},
                               seed=seed, out_dir=str(tmp_path / f"run{seed}"))
        router = train_router(cfg).router
        trajs = StepwiseRuntime(held.pool(), router, max_steps=12).run_many(held.queries)
        accuracy = sum(bool(t.correct) for t in trajs) / len(trajs)
        small = StepwiseRuntime(held.pool(), RoutingPlan([pool.small]), max_steps=12).run_many(held.queries)
        assert accuracy >= sum(bool(t.correct) for t in small) / len(small) + 0.25, seed  # well above all-small


def test_decision_entropy_counts_valid_decisions_only():
    from roro_sdk.train.grpo import _decision_entropy

    logp = torch.log(torch.tensor([[[0.5, 0.5], [1.0 - 1e-9, 1e-9]], [[0.9, 0.1], [0.5, 0.5]]]))
    mask = torch.tensor([[True, False], [False, False]])
    assert float(_decision_entropy(logp, mask)) == pytest.approx(0.6931, abs=1e-4)  # only the uniform decision
    assert float(_decision_entropy(logp, torch.zeros(2, 2, dtype=torch.bool))) == 0.0  # no decision: no bonus


def test_an_entropy_bonus_keeps_a_router_exploring(tree1, tmp_path):
    """Without a bonus a router at this learning rate collapses onto one model within a few updates
    (the failure of one real-tree seed); a bonus that outweighs the advantages keeps the routing
    distribution near uniform, so both models keep being sampled."""
    _, _, folder = tree1
    base = dict(dataset=f"tree:{folder}", pool=f"tree:{folder}", train_queries=12, eval_queries=0, updates=8,
                queries_per_update=4, group_size=8, minibatch_size=32, lr=1e-2, max_steps=12, judge="none",
                kl_coef=0.0, advantage_norm="none", rewards={"lambda_p": 0.0, "lambda_c": 0.3}, concurrency=16)
    late = {}
    for coef in (0.0, 1.0):
        for s in (0, 1):
            h = train_router(load_grpo_config(**base, entropy_coef=coef, seed=s, out_dir=str(tmp_path / f"e{coef}-{s}"))).history
            late[(coef, s)] = sum(m["entropy"] for m in h[-3:]) / 3
    assert min(late[(1.0, s)] for s in (0, 1)) > 0.55, late  # ln 2 = 0.693: uniform over the two models
    assert sum(late[(1.0, s)] for s in (0, 1)) > sum(late[(0.0, s)] for s in (0, 1)) + 0.2, late


def test_tree_labels_criteria_for_the_judges_calibration_term(tmp_path, capsys):
    from roro_sdk.pairs import criterion_labeler
    from roro_sdk.rubric import Criterion

    # step 1 is hard (only a large first step can still end right); step 2 after L is easy
    qt = _tree({("S", "S", "S"): False, ("S", "L", "L"): False, ("L", "S", "S"): True, ("L", "L", "L"): True})
    label = criterion_labeler(TreeStepVerifier([qt], cheapest="S"), cheapest="S")
    hard = Criterion(kind="hard_rule", text="Every hard step is written by the large model.")
    easy = Criterion(kind="principle", text="Easy steps are written by the small model, with no wasted escalations.")
    other = Criterion(kind="principle", text="Steps are short, clear and do not repeat.")
    assert (label(hard, _traj(["L", "S", "S"])), label(easy, _traj(["L", "S", "S"]))) == (1.0, 1.0)
    assert label(hard, _traj(["S", "S", "S"])) == 0.0  # the hard first step stayed small
    assert label(easy, _traj(["L", "L", "L"])) == 0.0  # the easy second step was escalated
    assert label(other, _traj(["L", "S", "S"])) is None  # not something the tree decides
    # the CLI refuses an unknown labeler before loading anything
    assert main(["train-judge", "--trajectories", "t.jsonl", "--pairs", "p.jsonl", "--out", str(tmp_path / "j"),
                 "--labeler", "bogus"]) == 2
    assert "tree:PATH" in capsys.readouterr().err


def test_tree_criterion_labeler_on_a_recorded_tree(tree1):
    from roro_sdk.rubric import Criterion
    from roro_sdk.tree import tree_criterion_labeler

    _, _, folder = tree1
    tree = RoutingTree(folder)
    label = tree_criterion_labeler(tree)
    crit = Criterion(kind="hard_rule", text="Every hard step is written by the large model.")
    got = [label(crit, t) for t in leaf_trajectories(tree)]
    assert set(got) <= {0.0, 1.0, None} and 0.0 in got and 1.0 in got  # both verdicts occur on a real tree
