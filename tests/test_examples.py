"""Examples and example configs keep working."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from roro_sdk import ModelPool

ROOT = Path(__file__).resolve().parents[1]
OFFLINE_EXAMPLES = ["offline_fake_server.py", "custom_router.py"]


@pytest.mark.parametrize("name", OFFLINE_EXAMPLES)
def test_offline_examples_run(name):
    r = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_example_pool_configs_parse(path):
    data = yaml.safe_load(path.read_text())
    if "models" not in data:
        pytest.skip("not a pool file")
    assert len(ModelPool.from_file(path)) >= 1
