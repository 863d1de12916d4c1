"""Alternating Judge/Rubricor training on a learnable synthetic preference set (sim bench, tiny
random models): the Judge phase must lift held-out pairwise accuracy from about 50% to well
above, the Rubricor phase must raise its mean reward, and a run must resume from its last round."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from roro_sdk.errors import RunExistsError, TrainingConfigError  # noqa: E402
from roro_sdk.pairs import PairSet  # noqa: E402
from roro_sdk.train.judge_training import (  # noqa: E402
    AlternatingTrainer,
    JudgeTrainingConfig,
    pairwise_accuracy,
    sim_demo_labeler,
    sim_preference_data,
    tiny_judge_and_rubricor,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data() -> PairSet:
    return sim_preference_data(48, seed=0)


def test_synthetic_preferences_follow_the_known_rule(data):
    kinds = {k: s.n for k, s in data.stats.per_kind.items()}
    assert kinds["outcome"] == kinds["cost"] >= 40
    for p in data.pairs:
        c, r = data.trajectories[p.chosen_id], data.trajectories[p.rejected_id]
        if p.kind == "outcome":  # careful sim: correct iff the large model wrote every hard step
            assert c.correct and not r.correct
        else:
            assert c.correct and r.correct and c.cost_usd < r.cost_usd


def test_alternating_training_lifts_heldout_accuracy_and_rubric_reward(data, tmp_path):
    cfg = JudgeTrainingConfig.tiny(rounds=1, seed=0)
    judge, rubricor = tiny_judge_and_rubricor(data, seed=0)
    logs: list[str] = []
    first = AlternatingTrainer(judge, rubricor, data, cfg, out_dir=tmp_path, criterion_labeler=sim_demo_labeler, log=logs.append)
    assert first.heldout_pairs and not {p.query_id for p in first.heldout_pairs} & set(first.train_ids)
    h1 = first.train()
    before = h1[0]["heldout"]["accuracy"]["all"]
    assert 0.3 <= before <= 0.7, f"an untrained judge should be near chance, got {before:.1%}"
    for k in ("judge", "rubricor"):
        assert (tmp_path / "round_1" / k / "adapter_model.safetensors").is_file()
    assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["completed_rounds"] == 1 and state["latest"] == "round_1"

    # resume: fresh models (same seeds), same folder, one more round
    judge2, rubricor2 = tiny_judge_and_rubricor(data, seed=0)
    with pytest.raises(RunExistsError, match="resume"):  # never a silent resume
        AlternatingTrainer(judge2, rubricor2, data, JudgeTrainingConfig.tiny(rounds=2, seed=0), out_dir=tmp_path,
                           criterion_labeler=sim_demo_labeler, log=logs.append).train()
    second = AlternatingTrainer(judge2, rubricor2, data, JudgeTrainingConfig.tiny(rounds=2, seed=0), out_dir=tmp_path,
                                criterion_labeler=sim_demo_labeler, log=logs.append, resume=True)
    second._maybe_resume()
    assert second.completed_rounds == 1 and any("resumed" in m for m in logs)
    assert second.evaluate()["accuracy"] == pytest.approx(h1[1]["heldout"]["accuracy"])  # adapters really loaded
    hist = second.train()
    assert [h["round"] for h in hist] == [0, 1, 2]
    assert (tmp_path / "round_2" / "judge" / "adapter_model.safetensors").is_file()

    acc = [h["heldout"]["accuracy"]["all"] for h in hist]
    assert acc[1] >= 0.85 and acc[1] - before >= 0.25, f"held-out accuracy by round: {acc}"  # the Judge phase lifts it
    assert acc[2] >= 0.85, f"held-out accuracy by round: {acc}"
    for kind in ("outcome", "cost"):
        assert hist[-1]["heldout"]["accuracy"][kind] >= 0.75
    gains = [h["rubricor"]["mean_reward_after"] - h["rubricor"]["mean_reward_before"] for h in hist[1:]]
    assert sum(gains) > 0.05, f"rubricor mean reward gains per round: {gains}"  # per seed: see the test below
    assert hist[-1]["judge"]["bt_last"] < hist[1]["judge"]["bt_first"]


def test_no_training_no_lift(data):
    cfg = JudgeTrainingConfig.tiny(rounds=1, judge_steps=0, rubricor_steps=0, seed=0)
    judge, rubricor = tiny_judge_and_rubricor(data, seed=0)
    hist = AlternatingTrainer(judge, rubricor, data, cfg, log=None).train()
    assert hist[1]["heldout"]["accuracy"] == hist[0]["heldout"]["accuracy"]


def test_trainer_checks_its_inputs(data):
    judge, rubricor = tiny_judge_and_rubricor(data, seed=0)
    with pytest.raises(TrainingConfigError):
        AlternatingTrainer(judge, rubricor, PairSet(pairs=[], trajectories={}, stats=data.stats), log=None)
    with pytest.raises(TrainingConfigError):
        AlternatingTrainer(judge, rubricor, PairSet(pairs=data.pairs, trajectories={}, stats=data.stats), log=None)
    assert pairwise_accuracy({"a": 1.0, "b": 0.0, "c": 1.0}, [data.pairs[0].model_copy(update={"chosen_id": "a", "rejected_id": "b"}),
                                                             data.pairs[0].model_copy(update={"chosen_id": "a", "rejected_id": "c"})]) \
        == (0.75, 0.5)


def test_train_judge_cli_tiny_runs_and_resumes(data, tmp_path, capsys):
    from roro_sdk.cli import main
    from roro_sdk.pairs import write_pairs
    from roro_sdk.trajectories import write_trajectories

    write_trajectories(tmp_path / "t.jsonl", list(data.trajectories.values()))
    write_pairs(tmp_path / "p.jsonl", data.pairs)
    args = ["train-judge", "--trajectories", str(tmp_path / "t.jsonl"), "--pairs", str(tmp_path / "p.jsonl"),
            "--out", str(tmp_path / "run"), "--tiny", "--labeler", "sim-demo", "--judge-steps", "4", "--rubricor-steps", "2"]
    assert main(args + ["--rounds", "1"]) == 0
    assert "held-out n" in capsys.readouterr().out
    assert (tmp_path / "run" / "base" / "judge" / "model.safetensors").is_file()
    assert main(args + ["--rounds", "2", "--resume"]) == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["completed_rounds"] == 2 and len(state["history"]) == 3
    from roro_sdk.judge import LocalJudge
    from roro_sdk.train.judge_training import load_trained

    judge, rubricor = load_trained(tmp_path / "run")
    again = LocalJudge.from_pretrained(str(tmp_path / "run"))  # what the GRPO trainer's --judge accepts
    traj = next(iter(data.trajectories.values()))
    rubric = rubricor.rubric(traj.query)
    assert judge.score(None, rubric, traj).score == pytest.approx(again.score(None, rubric, traj).score)
    assert judge.render_kw == {"show_cost": False, "max_question_chars": 48}
    assert main(["train-judge", "--trajectories", str(tmp_path / "t.jsonl"), "--pairs", str(tmp_path / "p.jsonl"),
                 "--out", str(tmp_path / "x")]) == 2  # no models given: a clear error, exit status 2


def test_rubricor_phase_raises_its_mean_reward_over_seeds(data, tmp_path):
    # A learning claim over several training seeds, not one seed's trajectory: CPUs and library
    # versions change float numerics, and one seed's run can diverge where another's does not.
    # Measured here over seeds 0-5: first-round gains 0.13-0.25.
    gains = []
    for seed in (0, 1, 2):
        cfg = JudgeTrainingConfig.tiny(rounds=1, seed=seed)
        judge, rubricor = tiny_judge_and_rubricor(data, seed=seed)
        hist = AlternatingTrainer(judge, rubricor, data, cfg, out_dir=tmp_path / str(seed),
                                  criterion_labeler=sim_demo_labeler, log=lambda m: None).train()
        gains.append(hist[1]["rubricor"]["mean_reward_after"] - hist[1]["rubricor"]["mean_reward_before"])
    gains.sort()
    assert gains[1] > 0.08 and gains[0] > 0.0, f"first-round Rubricor gains over seeds 0-2: {gains}"


def test_sim_bench_helpers_keep_their_old_import_path():
    """Issue 17: the demo data, tiny models and labelers live in roro_sdk.train.sim_bench, apart
    from the AlternatingTrainer; roro_sdk.train.judge_training still exports them, and so does the
    training face (roro_sdk.train)."""
    import roro_sdk.train
    from roro_sdk.train import judge_training, sim_bench

    for name in ("SIM_DEMO_DISTRACTORS", "sim_demo_library", "sim_demo_labeler", "sim_preference_data",
                 "tiny_judge_and_rubricor", "record_criterion_labeler", "tokenizer_corpus"):
        assert getattr(judge_training, name) is getattr(sim_bench, name), name
        assert name in roro_sdk.train.__all__, name


def test_micro_batches_of_pairs_give_the_same_judge_step(data):
    """Gradients accumulated over micro-batches of one pair equal the whole step's (the Bradley-Terry
    loss is a mean over pairs), so micro_pairs lowers peak memory without changing training."""
    import torch

    after = []
    for micro in (None, 1):
        judge, rubricor = tiny_judge_and_rubricor(data, seed=0)
        cfg = JudgeTrainingConfig.tiny(rounds=1, judge_steps=2, rubricor_steps=0, pairs_per_step=4, micro_pairs=micro,
                                       format_weight=0.0, seed=0)
        trainer = AlternatingTrainer(judge, rubricor, data, cfg, log=None)  # adds the adapters
        before = {k: v.detach().clone() for k, v in judge.model.named_parameters() if "lora" in k}
        trainer.judge_phase(1)
        after.append({k: v.detach().clone() for k, v in judge.model.named_parameters() if "lora" in k})
        assert any(not torch.equal(before[k], after[-1][k]) for k in before)  # the step trained the adapter
    assert after[0].keys() == after[1].keys() and after[0]
    for k in after[0]:
        torch.testing.assert_close(after[0][k], after[1][k], atol=1e-5, rtol=1e-4)


def test_pick_judge_compares_seeds_on_one_heldout_split(data, tmp_path, capsys):
    """Several Judge seeds trained on one held-out split; 'roro pick-judge' keeps the best held-out
    accuracy, chooses none when none beats the bar, and refuses runs of different splits."""
    from roro_sdk.cli import main
    from roro_sdk.pairs import write_pairs
    from roro_sdk.train.judge_training import pick_judge_run
    from roro_sdk.trajectories import write_trajectories

    write_trajectories(tmp_path / "t.jsonl", list(data.trajectories.values()))
    write_pairs(tmp_path / "p.jsonl", data.pairs)
    base = ["train-judge", "--trajectories", str(tmp_path / "t.jsonl"), "--pairs", str(tmp_path / "p.jsonl"), "--tiny",
            "--labeler", "sim-demo", "--judge-steps", "4", "--rubricor-steps", "1", "--rounds", "1", "--device", "cpu"]
    runs = []
    for seed in (0, 1):
        runs.append(str(tmp_path / f"s{seed}"))
        assert main(base + ["--out", runs[-1], "--seed", str(seed), "--split-seed", "7"]) == 0
    states = [json.loads((tmp_path / f"s{s}" / "state.json").read_text()) for s in (0, 1)]
    assert states[0]["heldout_queries"] == states[1]["heldout_queries"]
    assert [s["config"]["seed"] for s in states] == [0, 1]
    capsys.readouterr()

    accs = [s["history"][-1]["heldout"]["accuracy"]["all"] for s in states]
    assert main(["pick-judge", *runs, "--min-accuracy", "0", "--json", str(tmp_path / "pick.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    best = runs[max(range(2), key=lambda i: (accs[i], states[i]["history"][-1]["heldout"]["margin"]["all"]))]
    assert out[-1] == best
    assert json.loads((tmp_path / "pick.json").read_text())["chosen"] == best
    assert main(["pick-judge", *runs, "--min-accuracy", "1.0"]) == 0  # nobody is above 100%
    assert capsys.readouterr().out.strip().splitlines()[-1] == "none"

    assert main(base + ["--out", str(tmp_path / "other"), "--seed", "1"]) == 0  # its own split (seed 1)
    with pytest.raises(TrainingConfigError, match="split"):
        pick_judge_run([runs[0], str(tmp_path / "other")])
    with pytest.raises(TrainingConfigError, match="state.json"):
        pick_judge_run([str(tmp_path)])


def test_resolve_device_says_what_to_fix():
    from roro_sdk.errors import ConfigError
    from roro_sdk.hf import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
