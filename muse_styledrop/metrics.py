"""Metrics a person and TensorBoard can read: JSON lines and event files, no TensorFlow.

In a cloud workdir (an object cannot be appended to) both are kept whole and uploaded again at each write: the
event files are written to a local folder first, then copied to WORKDIR/tensorboard through files.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import jax

from muse_styledrop import files


def _kept_lines(text: str, resumed_at: int | None) -> list[str]:
  """The whole lines of a metrics file (a last line a killed run left half-written is cut), without those for
  steps after `resumed_at`, which the resumed run logs again."""
  lines = text.splitlines(keepends=True)
  if lines and not lines[-1].endswith("\n"):
    lines.pop()
  return [x for x in lines if resumed_at is None or json.loads(x).get("step", 0) <= resumed_at]


class MetricWriter:
  """Writes `metrics.jsonl` and TensorBoard events under a workdir; only process 0 writes."""

  def __init__(self, workdir: Path, resumed_at: int | None = None):
    """`resumed_at`: the step a run resumes from; lines a killed run wrote for later steps are dropped, so each
    step is logged once."""
    self.active = jax.process_index() == 0
    self._tb = self._jsonl = self._tb_local = None
    if not self.active:
      return
    workdir = files.path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._path, self._tb_dir = workdir / "metrics.jsonl", workdir / "tensorboard"
    if files.is_remote(workdir):
      self._lines = _kept_lines(self._path.read_text() if self._path.exists() else "", resumed_at)
      self._tb_local = Path(tempfile.mkdtemp(prefix="muse_styledrop_tensorboard_"))
    else:
      if self._path.is_file():
        text = self._path.read_text()
        kept = "".join(_kept_lines(text, resumed_at))
        if kept != text:
          files.write_text(kept, self._path)
      self._jsonl = open(self._path, "a")  # noqa: SIM115 - closed in close()
    try:
      from tensorboardX import SummaryWriter  # noqa: PLC0415

      self._tb = SummaryWriter(str(self._tb_local or self._tb_dir))
    except ImportError:  # optional: JSON lines are the record
      self._tb = None

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.active:
      return
    line = json.dumps({"step": int(step), "time": time.time(), **metrics}) + "\n"
    if self._jsonl is None:
      self._lines.append(line)
      files.write_text("".join(self._lines), self._path)
    else:
      self._jsonl.write(line)
      self._jsonl.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(k, v, step)
      if self._tb_local is not None:
        self._tb.flush()
        self._upload_events()

  def _upload_events(self) -> None:
    for f in self._tb_local.iterdir():
      files.write_bytes(f.read_bytes(), self._tb_dir / f.name)

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
    if self._tb_local is not None:
      if self._tb is not None:
        self._upload_events()
      shutil.rmtree(self._tb_local, ignore_errors=True)
