"""The Colab notebook: its text form and the .ipynb say the same, the repository holds no outputs, and every cell
runs in test mode (a few steps of each run)."""

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "styledrop.ipynb"


def test_the_notebook_matches_its_text_form_and_holds_no_outputs():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  text = jupytext.read(NOTEBOOK.with_suffix(".py"))
  assert [(c.cell_type, c.source) for c in notebook.cells] == [(c.cell_type, c.source) for c in text.cells], (
    "notebooks/styledrop.ipynb and styledrop.py differ: run jupytext --sync notebooks/styledrop.py"
  )
  code = [c for c in notebook.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code), "strip the notebook's outputs"


@pytest.mark.notebook
def test_every_cell_of_the_notebook_runs_in_test_mode(tmp_path, monkeypatch):
  monkeypatch.setenv("MUSE_STYLEDROP_NOTEBOOK_TEST", "1")
  monkeypatch.setenv(
    "XLA_FLAGS", os.environ.get("XLA_FLAGS", "").replace("--xla_force_host_platform_device_count=8", "")
  )
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(
    notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
  ).execute()
  runs = tmp_path / "runs" / "notebook"
  for made in (
    "style/adapter.safetensors",
    "composed/grid.png",
    "round2/adapter.safetensors",
    "evaluation/report.html",
    "pytorch/styledrop_adapter.safetensors",
  ):
    assert (runs / made).is_file(), made
