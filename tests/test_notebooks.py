"""Both notebooks execute top to bottom with the tiny smoke budget, so they cannot silently rot.
Their own asserts (Var_K against Var(Q)/K, rows per run) run as part of this."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "experiments" / "notebooks").glob("*.ipynb"))


def test_notebooks_are_present_and_committed_without_outputs():
    assert [p.name for p in NOTEBOOKS] == ["quickstart.ipynb", "variance.ipynb"]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has executed outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_with_smoke_budget(path, monkeypatch, tmp_path):
    # The kernel inherits this environment: the smoke flag, CPU only, and the package on the path.
    monkeypatch.setenv("PERLA_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    # Compile time dominates a smoke run; XLA's cheaper pipeline roughly halves it (results need not match).
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any failure
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in outputs)
