"""Examples and example configs keep working: every script in examples/ runs, with small settings."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roro_sdk import ModelPool

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_EXAMPLES = ["offline_fake_server.py", "custom_router.py", "serve_offline.py"]
# Small settings so each runs in seconds; "{out}" is a temporary folder. The defaults are the
# documented full runs.
SMALL_ARGS = {
    "offline_fake_server.py": [],
    "custom_router.py": [],
    "serve_offline.py": [],
    "evaluate_routers.py": ["--limit", "6", "--out", "{out}"],
    "sim_bench.py": ["--queries", "8", "--out", "{out}"],
    "process_vs_outcome.py": ["--seeds", "0", "--updates", "1", "--eval-queries", "4", "--runs", "{out}/runs", "--out", "{out}/table.json"],
    "train_judge_sim.py": ["--queries", "8", "--rounds", "1", "--out", "{out}"],
    "train_router_sim.py": ["--updates", "1", "--eval-queries", "4", "--out", "{out}"],
    "routing_tree.py": ["--queries", "8", "--out", "{out}"],
    "train_router_on_tree.py": ["--queries", "8", "--updates", "2", "--out", "{out}"],
    "scale_out_ray.py": ["--queries", "6", "--out", "{out}"],
}
# The real local models (minutes on a CPU): run with the local_models tests, skipped without them.
LOCAL_EXAMPLES = {"local_pool.py": ["What is 2 + 3?"]}


def _run(name: str, args: list[str], out: Path) -> subprocess.CompletedProcess:
    argv = [a.replace("{out}", str(out)) for a in args]
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *argv], capture_output=True, text=True,
                          timeout=300, cwd=out)


def test_every_example_is_run():
    scripts = {p.name for p in (ROOT / "examples").glob("*.py")}
    assert scripts == set(SMALL_ARGS) | set(LOCAL_EXAMPLES), "give each example small arguments here"


@pytest.mark.parametrize("name", OFFLINE_EXAMPLES)
def test_offline_examples_run(name, tmp_path):
    r = _run(name, [], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


@pytest.mark.parametrize("name", [n for n in SMALL_ARGS if n not in OFFLINE_EXAMPLES])
def test_examples_run_with_small_settings(name, tmp_path, monkeypatch, capsys):
    """In this process, as ``__main__``: a subprocess would re-import LiteLLM and torch for each
    (~8 s apiece here); the two above run as real subprocesses, which checks a fresh start."""
    import torch

    threads = torch.get_num_threads()  # an example may set it for itself
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [name, *(a.replace("{out}", str(tmp_path)) for a in SMALL_ARGS[name])])
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
    assert capsys.readouterr().out.strip()


@pytest.mark.local_models
@pytest.mark.parametrize("name", sorted(LOCAL_EXAMPLES))
def test_local_model_examples_run(name, tmp_path):
    from roro_sdk.local import list_local_models

    if not all(i.installed for i in list_local_models()):
        pytest.skip("the local model packages are not installed (bash scripts/setup.sh)")
    r = _run(name, LOCAL_EXAMPLES[name], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "answer:" in r.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_pool_configs_parse(path):
    data = yaml.safe_load(path.read_text())
    if "models" not in data:
        pytest.skip("not a pool file")
    assert len(ModelPool.from_file(path)) >= 1


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs" / "real").glob("*.yaml")), ids=lambda p: p.name)
def test_real_pipeline_configs_validate(path):
    """The stage configs of scripts/real_pipeline.sh are valid (a typo would surface hours into a run)."""
    from roro_sdk.train import JudgeTrainingConfig
    from roro_sdk.train.grpo_config import GRPOConfig

    data = yaml.safe_load(path.read_text())
    if path.name.startswith("grpo_"):
        cfg = GRPOConfig.model_validate(data)
        assert cfg.pool == cfg.dataset and cfg.pool.startswith("tree:")  # replayed: zero model calls
        assert (ROOT / cfg.pool.removeprefix("tree:") / "manifest.json").is_file()
    else:
        JudgeTrainingConfig(**data["training"])
        assert set(data) <= {"training", "judge_options", "rubricor_options"}


@pytest.mark.parametrize("script", ["real_pipeline.sh", "real_pipeline_gpu.sh"])
def test_real_pipeline_scripts_parse(script):
    """The pipeline scripts are valid bash; the pipeline uses only the stage configs checked above
    (tests/test_real_pipeline_script.py runs it against a stand-in Python)."""
    import subprocess

    path = ROOT / "scripts" / script
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    if script == "real_pipeline.sh":
        for name in ("judge.yaml", "grpo_$variant.yaml"):
            assert name in path.read_text()
