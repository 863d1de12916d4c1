"""The notebooks run top to bottom (nbclient, a real kernel) with small settings, and are stored
without outputs. Small settings replace the parameters cell's values (the cell tagged
``parameters``, as papermill does): a cell with these assignments runs right after it."""

from __future__ import annotations

import os
from pathlib import Path

import nbclient  # the dev extra: a missing one fails loudly rather than skipping the notebooks
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SMALL = {
    "01_quick_tour.ipynb": {"POOL": "sim", "N_QUERIES": 8, "ROUTERS": ["all-small", "all-large", "steer:0.8"]},
    "02_process_rewards.ipynb": {"N_QUERIES": 8, "ROUNDS": 1},
    "03_train_router.ipynb": {"UPDATES": 1, "TRAIN_QUERIES": 8, "EVAL_QUERIES": 4},
}


def with_parameters(nb, values: dict):
    """The notebook with a cell assigning ``values`` inserted after its parameters cell."""
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    src = "\n".join(f"{k} = {v!r}" for k, v in values.items())
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(src, metadata={"tags": ["injected-parameters"]}))
    return nb


def execute(path: Path, values: dict, cwd: Path):
    nb = with_parameters(nbformat.read(path, as_version=4), values)
    env_path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", env_path)  # the kernel imports this checkout's roro_sdk
    mp.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    try:
        nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        mp.undo()
    return nb


def test_there_are_notebooks_and_each_has_small_settings():
    assert len(NOTEBOOKS) >= 3
    assert {p.name for p in NOTEBOOKS} == set(SMALL)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    nb = execute(path, SMALL[path.name], tmp_path)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert outputs, "the notebook printed nothing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert "parameters" in [t for c in nb.cells for t in c.metadata.get("tags", [])], "tag the parameters cell"
    for i, c in enumerate(nb.cells):
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"cell {i} has outputs: python scripts/clear-notebooks.py {path.relative_to(ROOT)}"
