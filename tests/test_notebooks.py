"""The research notebooks run top to bottom (tiny size), are committed without outputs, and match the
jupytext-paired scripts they are edited as."""

from __future__ import annotations

import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ("loss_variants", "inspect_a_run")  # in order: the second inspects the first one's runs


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs_and_matches_its_script(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    script = jupytext.read(NOTEBOOKS / f"{name}.py")
    assert [c.source for c in notebook.cells] == [c.source for c in script.cells]
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_notebooks_run_top_to_bottom_at_tiny_size(tmp_path, monkeypatch):
    monkeypatch.setenv("PKD_NOTEBOOK_SIZE", "tiny")
    monkeypatch.setenv("PKD_NOTEBOOK_WORKDIR", str(tmp_path / "runs"))
    # The fast option of the loss sweep (frozen visual trunks, features computed once): a quarter less time
    # than trainable trunks, whose training through `api.train` tests/train/test_api.py covers.
    monkeypatch.setenv("PKD_NOTEBOOK_FROZEN", "1")
    start = time.perf_counter()
    for name in NAMES:
        notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        client = NotebookClient(
            notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
        )
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on any failure
        figures = [
            o
            for c in notebook.cells
            if c.cell_type == "code"
            for o in c.outputs
            if "image/png" in o.get("data", {})
        ]
        assert figures, f"{name} drew no figure"
    assert (tmp_path / "runs").is_dir()
    assert time.perf_counter() - start < 240  # the budget is 2 minutes on a quiet 2-core CPU
