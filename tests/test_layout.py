"""The package's layers: who may import whom, and what importing a module may not do."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "muse_styledrop"
COMMANDS = ("train", "sample", "feedback", "pretrain", "parity", "cli")


def imports(path: Path) -> set[str]:
  """Every muse_styledrop module a file imports, at any depth of its code."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
  return {m for m in found if m.startswith("muse_styledrop")}


def modules(*exclude: str):
  for path in sorted(PACKAGE.rglob("*.py")):
    rel = path.relative_to(PACKAGE).as_posix()
    if not rel.startswith(exclude):
      yield rel, imports(path)


def test_only_the_world_and_its_evaluators_import_the_shapes_world():
  bad = [rel for rel, found in modules("shapes/", "evaluators/shapes_") if any(".shapes" in m for m in found)]
  assert bad == []


def test_imports_never_run_back_up_the_layers():
  commands = {f"muse_styledrop.{c}" for c in COMMANDS}
  for rel, found in modules():
    if rel.startswith(("shapes/", "pretraining/", "models/", "evaluators/")) or rel in ("sampling.py", "pipeline.py"):
      assert not found & commands, (rel, found & commands)
  assert not any(m.startswith("muse_styledrop.models") for m in imports(PACKAGE / "sampling.py"))
  train = imports(PACKAGE / "train.py")
  assert not train & (commands - {"muse_styledrop.train", "muse_styledrop.cli"})


def test_the_package_reads_no_config_field_with_a_fallback():
  for path in PACKAGE.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and len(node.args) == 2:
        owner = ast.unparse(node.func.value)
        assert not owner.startswith(("config", "c.", "self.c", "c")) or owner in ("checkpoint",), (path, owner)


def test_importing_a_command_defines_no_flag_and_leaves_the_environment_alone():
  code = (
    "import os, jax; before = dict(os.environ); from absl import flags\n"
    "import muse_styledrop.sample, muse_styledrop.parity, muse_styledrop.feedback, muse_styledrop.tokenizer\n"
    "assert dict(os.environ) == before; print(sorted(flags.FLAGS))"
  )
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  ours = {"base_model", "prompt", "adapter", "reference", "select", "out", "seed", "steps", "lambda_a"}
  assert not ours & set(ast.literal_eval(result.stdout))  # only the libraries' own (absl logging's)


@pytest.mark.parametrize("variant", ["paper,round2", "runlocal,round2"])
def test_variants_compose(variant):
  from muse_styledrop.configs import style_one_shot

  c = style_one_shot.get_config(variant)
  assert (c.adapter.hidden, c.adapter.shared) == (32, False)  # round 2's adapter, whatever came first


def test_an_unknown_variant_is_one_line_and_exit_2(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "muse_styledrop.train",
      "--config=configs/style_one_shot.py:runlocal,papr",
      f"--workdir={tmp_path / 'r'}",
    ],
    capture_output=True,
    text=True,
    cwd=tmp_path,  # no configs/ here: the packaged config is found
  )
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
    "error: unknown variant 'papr' of style_one_shot; use any of runlocal, round2, paper, content, comma-separated"
  ]
  assert not (tmp_path / "r").exists()
