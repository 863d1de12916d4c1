"""scripts/record_trees.sh, run against a stand-in for Python: it seeds a working copy from the
committed tree once, records into it with the committed trees' computation (torch, float32) and
the settings that fill a CPU's batches, and copies the complete prefix back only when asked. The
commands it prints are parsed by roro's own argument parser, so a renamed flag fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from roro_sdk.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "record_trees.sh"
ENV_KEYS = ("RORO_LOCAL_BACKEND", "RORO_LOCAL_DTYPE", "RORO_LOCAL_MAX_BATCH", "RORO_LOCAL_PREFIX_CACHE_MB", "MALLOC_ARENA_MAX",
            "HF_HUB_OFFLINE")

FAKE = textwrap.dedent(f"""\
    #!{sys.executable}
    import json, os, sys
    with open(os.environ["FAKE_LOG"], "a") as f:
        f.write(json.dumps({{"args": sys.argv[1:], "env": {{k: os.environ.get(k) for k in {ENV_KEYS!r}}}}}) + "\\n")
    """)


def _run(tmp_path, *args, **env):
    fake = tmp_path / "python"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    # the script's own knobs, which a developer may have exported, are not the test's
    own = ("LIMIT", "SNAPSHOT", "DRY_RUN", "CONCURRENCY", "QUERY_WINDOW", "RORO_LOCAL_MAX_BATCH", "RORO_LOCAL_PREFIX_CACHE_MB",
           "MALLOC_ARENA_MAX")
    full = {k: v for k, v in os.environ.items() if k not in own}
    full.update(PY=str(fake), FAKE_LOG=str(log), WORK=str(tmp_path / "work"), **env)
    p = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=60)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return p, calls


@pytest.mark.parametrize("which, seed, limit, routers", [("train", "0", "300", False), ("test", "1000", "100", True)])
def test_records_into_a_working_copy_seeded_from_the_committed_tree(tmp_path, which, seed, limit, routers):
    p, calls = _run(tmp_path, which)
    assert p.returncode == 0, p.stderr
    work = tmp_path / "work" / f"gsm_symbolic-{which}"
    committed = ROOT / "data" / "trees" / "qwen2.5-coder-0.5b-1.5b" / f"gsm_symbolic-{which}"
    assert {f.name for f in work.iterdir()} == {"manifest.json", "queries.jsonl", "calls.jsonl.gz"}
    assert (work / "queries.jsonl").read_bytes() == (committed / "queries.jsonl").read_bytes()
    [call] = calls
    args = call["args"]
    assert args[:3] == ["-m", "roro_sdk", "record-tree"]
    ns = build_parser().parse_args(args[2:])
    assert (ns.out, ns.dataset, ns.seed, ns.limit, ns.depth) == (str(work), "rg:gsm_symbolic", int(seed), int(limit), 1)
    assert (ns.concurrency, ns.query_window) == (72, 24)
    assert bool(ns.routers) is routers
    assert call["env"] == {"RORO_LOCAL_BACKEND": "torch", "RORO_LOCAL_DTYPE": "float32", "RORO_LOCAL_MAX_BATCH": "48",
                           "RORO_LOCAL_PREFIX_CACHE_MB": "2048", "MALLOC_ARENA_MAX": "2", "HF_HUB_OFFLINE": "1"}
    # a second run continues the working copy: nothing is copied over what it recorded
    (work / "calls.jsonl").write_text("recorded\n")
    p, _ = _run(tmp_path, which, LIMIT="7")
    assert p.returncode == 0 and (work / "calls.jsonl").read_text() == "recorded\n"


def test_snapshot_only_when_asked_and_bad_input_is_refused(tmp_path):
    p, calls = _run(tmp_path, "test", SNAPSHOT="1")
    assert p.returncode == 2 and "run without SNAPSHOT first" in p.stderr and not calls
    (tmp_path / "work" / "gsm_symbolic-test").mkdir(parents=True)
    p, calls = _run(tmp_path, "test", SNAPSHOT="1", LIMIT="80")
    assert p.returncode == 0, p.stderr
    snap = build_parser().parse_args(calls[0]["args"][2:])
    assert (snap.action, snap.limit) == ("snapshot", 80)
    assert snap.out.endswith("data/trees/qwen2.5-coder-0.5b-1.5b/gsm_symbolic-test")
    assert calls[1]["args"][2:4] == ["tree", "info"]
    for args, env in ((["both"], {}), ([], {}), (["train"], {"LIMIT": "0"}), (["train"], {"LIMIT": "x"})):
        p, calls = _run(tmp_path, *args, **env)
        assert p.returncode == 2 and p.stderr and not calls, (args, env)
    # a working folder without a manifest (a copy that was interrupted) is not recorded into from scratch
    p, calls = _run(tmp_path, "test")
    assert p.returncode == 2 and "without a manifest" in p.stderr and not calls
