"""Metrics a person and TensorBoard can read: JSON lines and event files, no TensorFlow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax


class MetricWriter:
  """Writes `metrics.jsonl` and TensorBoard events under a workdir; only process 0 writes."""

  def __init__(self, workdir: Path):
    self.active = jax.process_index() == 0
    self._tb = None
    if self.active:
      workdir.mkdir(parents=True, exist_ok=True)
      self._jsonl = open(workdir / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
      try:
        from tensorboardX import SummaryWriter  # noqa: PLC0415

        self._tb = SummaryWriter(str(workdir / "tensorboard"))
      except ImportError:  # optional: JSON lines are the record
        self._tb = None

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.active:
      return
    self._jsonl.write(json.dumps({"step": int(step), "time": time.time(), **metrics}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in metrics.items():
        self._tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self.active:
      self._jsonl.close()
      if self._tb is not None:
        self._tb.close()
