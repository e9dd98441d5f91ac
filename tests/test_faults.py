"""Faults at random: commands killed with SIGKILL at seeded random moments and run again until they finish.

Each ends where an uninterrupted run ends, with every file whole and no temporary file left. CI runs these as
their own step (`pytest -m faults`, about three minutes), outside the suite.
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors import safe_open

from muse_styledrop import weights

pytestmark = pytest.mark.faults
CONFIG = Path(__file__).parent.parent / "configs" / "style_one_shot.py"
STEPS, EVERY, PER_CALL = 60, 10, 5


def run(cmd: list[str], kill_at: str = "", timeout: float = 300) -> subprocess.CompletedProcess:
  env = {**os.environ, "MUSE_STYLEDROP_KILL_AT": kill_at}
  return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def killed(cmd: list[str], kill_at: str) -> None:
  result = run(cmd, kill_at)
  assert result.returncode == -signal.SIGKILL, f"{kill_at} was never reached: {result.stderr[-1500:]}"


def assert_whole(folder: Path, finished: bool = False) -> None:
  """Every PNG decodes, every JSON parses, every safetensors file reads whole; when `finished`, no temporary file
  (ours or Orbax's) is left and every metrics line is one record. Unfinished saves in progress are skipped."""
  for p in sorted(folder.rglob("*")):
    unfinished = any(part.endswith(".tmp") or "orbax-checkpoint-tmp" in part for part in p.parts)
    assert not (finished and unfinished), f"left behind: {p}"
    if unfinished or not p.is_file():
      continue
    if p.suffix == ".png":
      Image.open(p).load()
    elif p.suffix == ".json":
      json.loads(p.read_text())
    elif p.suffix == ".safetensors":
      with safe_open(str(p), framework="numpy") as f:
        [f.get_tensor(k) for k in f.keys()]  # noqa: SIM118 - safe_open is no mapping
    elif p.name == "metrics.jsonl" and finished:
      steps = [json.loads(line)["step"] for line in p.read_text().splitlines()]
      assert steps == sorted(set(steps)), f"{p}: steps logged twice or out of order: {steps}"


def train_command(amused_dir: Path, style_image: Path, workdir: Path) -> list[str]:
  return [
    sys.executable,
    "-m",
    "muse_styledrop.train",
    f"--config={CONFIG}:runlocal",
    f"--workdir={workdir}",
    f"--config.base_model={amused_dir}",
    f"--config.style_images={style_image}",
    "--config.content_prompts=a house",
    "--config.mesh.data=1",
    "--config.optimizer.learning_rate=0.003",
    "--config.checkpoint.use_async=True",  # a kill at `save` lands while Orbax is still writing
    f"--config.checkpoint.every={EVERY}",
    f"--config.steps={STEPS}",
    f"--config.steps_per_call={PER_CALL}",
    "--config.batch_size=8",
  ]


@pytest.fixture(scope="module")
def uninterrupted(amused_dir, style_image, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  result = run(train_command(amused_dir, style_image, workdir))
  assert result.returncode == 0, result.stderr[-2000:]
  return workdir


def kill_plan(seed: int) -> list[str]:
  """Ten moments: five while training (after the n-th call, or while the n-th checkpoint is being written), then
  one each at the end: the final drawing, and the replacement of samples.png, the adapter and summary.json."""
  rng = random.Random(seed)
  during = [rng.choice(["step@1", "step@2", "step@3", "save@1", "save@2"]) for _ in range(5)]
  end = ["draw@1", "write samples.png@1", "write adapter.safetensors@1", "write adapter.json@1", "write summary.json@1"]
  rng.shuffle(end)
  return during + end


@pytest.mark.xdist_group("round1")  # with the feedback test: one worker, one uninterrupted round 1
def test_train_killed_at_ten_random_moments_ends_as_an_uninterrupted_run(
  amused_dir, style_image, uninterrupted, tmp_path
):
  workdir = tmp_path / "run"
  cmd = train_command(amused_dir, style_image, workdir)
  for moment in kill_plan(seed=20261205):
    killed(cmd, moment)
    assert_whole(workdir)
    assert not (workdir / "adapter.json").exists() or (workdir / "adapter.safetensors").exists()
  result = run(cmd)
  assert result.returncode == 0, result.stderr[-2000:]
  assert_whole(workdir, finished=True)
  want, _ = weights.read_adapter(uninterrupted)
  got, meta = weights.read_adapter(workdir)
  assert meta["step"] == STEPS and set(got) == set(want)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6, err_msg=k)

  # a finished run exported again and killed between the two files: the weights and their record stay one export
  killed(cmd, "write adapter.json@1")
  again, record = weights.read_adapter(workdir)
  assert record == meta and all(np.array_equal(again[k], got[k]) for k in got)
  run(cmd)
  assert_whole(workdir, finished=True)


def feedback_command(base: Path, adapter: Path, out: Path, prompts: Path) -> list[str]:
  return [
    sys.executable,
    "-m",
    "muse_styledrop.feedback",
    f"--base_model={base}",
    f"--adapter={adapter}",
    f"--out={out}",
    f"--prompts_file={prompts}",
    "--select=random",
    "--per_prompt=3",
    "--keep=1",
  ]


def snapshot(folder: Path) -> dict[str, bytes]:
  return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.xdist_group("round1")
def test_feedback_killed_while_writing_ends_as_an_uninterrupted_run(amused_dir, uninterrupted, tmp_path):
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("a house\na cat\n")
  straight = tmp_path / "straight"
  assert run(feedback_command(amused_dir, uninterrupted, straight, prompts)).returncode == 0
  out = tmp_path / "out"
  cmd = feedback_command(amused_dir, uninterrupted, out, prompts)
  for moment in ("write *.png@4", "write pool.json@1"):  # while the pool is written
    killed(cmd, moment)
    assert_whole(out)
  assert run(cmd).returncode == 0
  assert_whole(out, finished=True)
  assert snapshot(out) == snapshot(straight)
  killed(cmd, "write selected/@1")  # a second choice stopped before it replaced the first: the first stays whole
  assert snapshot(out / "selected") == snapshot(straight / "selected")
  assert run(cmd).returncode == 0
  assert_whole(out, finished=True)


def test_pretrain_killed_at_random_moments_ends_as_an_uninterrupted_run(tmp_path):
  sys.path.insert(0, str(Path(__file__).parent))
  from test_pretrain import tiny_vq  # noqa: PLC0415

  from muse_styledrop.shapes import dataset  # noqa: PLC0415

  root = tmp_path / "shapes"
  root.mkdir()
  dataset.save(dataset.render(48, first_seed=0, styles=("flat", "neon", "stripes"), workers=1), root / "train.npz")
  dataset.save(dataset.render(16, first_seed=100, styles=("flat", "neon", "stripes"), workers=1), root / "test.npz")
  c = tiny_vq((root / "train.npz", root / "test.npz"), steps=16)
  c.checkpoint.every, c.checkpoint.use_async = 8, True
  config = tmp_path / "tiny_vq.py"
  config.write_text(
    f"import ml_collections\n\n\ndef get_config():\n  return ml_collections.ConfigDict({c.to_dict()!r})\n"
  )
  command = lambda out: [sys.executable, "-m", "muse_styledrop.pretrain", f"--config={config}", f"--workdir={out}"]
  assert run(command(tmp_path / "straight")).returncode == 0
  rng = random.Random(7)
  cmd = command(tmp_path / "run")
  moments = [rng.choice(["step@1", "step@3"]), "save@1", "write diffusion_pytorch_model.safetensors@1"]
  moments.append("write export/@1")
  for moment in moments:
    killed(cmd, moment)
    assert_whole(tmp_path / "run")
  assert run(cmd).returncode == 0
  assert_whole(tmp_path / "run", finished=True)
  assert snapshot(tmp_path / "run" / "export") == snapshot(tmp_path / "straight" / "export")
