"""The training loop both trainers share: jitted calls of many steps, metrics read one call late, a NaN guard,
checkpoints, a progress bar, and a clean close."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from tqdm import tqdm

from muse_styledrop import faults
from muse_styledrop.metrics import MetricWriter


class TrainingDiverged(ValueError):
  """The loss or gradients became NaN/Inf: a user's setting (the learning rate) to change, so one line, exit 2."""


def record_metrics(
  step_done: int, metrics, *, workdir: Path, bar, writer: MetricWriter, steps_per_call: int, saved: int | None
) -> dict:
  """Fetch one call's metrics, stop on NaN/Inf (the last good checkpoint stays), show and write them."""
  metrics = jax.device_get(metrics)
  if not metrics.pop("finite"):
    kept = f"checkpoint {saved} in {workdir / 'checkpoints'} is kept" if saved else "no checkpoint was saved yet"
    raise TrainingDiverged(
      f"training diverged: the loss or gradients became NaN/Inf in steps {step_done - steps_per_call + 1}-"
      f"{step_done}; {kept}; lower config.optimizer.learning_rate and run the same command again to resume"
    )
  metrics = {k: float(v) for k, v in metrics.items()}
  bar.set_postfix(loss=f"{metrics['loss']:.4f}")
  writer.write(step_done, metrics)
  return metrics


def run(
  call: Callable[[Any, int], tuple[Any, dict]],
  state: Any,
  *,
  step: int,
  total_steps: int,
  steps_per_call: int,
  workdir: Path,
  checkpointer,
  meta: dict,
  save_due: Callable[[int, float], bool],
  after_call: Callable[[int, Any], None] | None = None,
  max_seconds: float = 0,
  desc: str = "train",
) -> tuple[Any, int, dict, float]:
  """Run `call(state, step) -> (state, metrics)` from `step` to `total_steps`, `steps_per_call` at a time.

  A call's metrics (with a boolean 'finite') are read on the host one call later, so the device never waits;
  they are read at once before a checkpoint, so no unchecked weights are saved. `checkpointer` saves (state, meta)
  when `save_due(step, seconds since the last save)`, at the end, and when `max_seconds` (> 0) have passed (then
  the loop stops early); it is closed (its saves finished) however the loop ends.
  Returns (state, step reached, the last metrics, seconds).
  """
  writer = MetricWriter(workdir, resumed_at=step)
  bar = tqdm(
    total=total_steps, initial=step, desc=desc, unit="step", dynamic_ncols=True, disable=jax.process_index() != 0
  )
  saved = checkpointer.latest_step()
  log = lambda pending: record_metrics(
    *pending, workdir=workdir, bar=bar, writer=writer, steps_per_call=steps_per_call, saved=saved
  )
  start, pending, last = time.perf_counter(), None, {}
  last_save = time.monotonic()
  try:
    while step < total_steps:
      state, metrics = call(state, step)
      faults.point("step")
      step += steps_per_call
      if pending is not None:
        last = log(pending)
      pending = (step, metrics)
      bar.update(steps_per_call)
      out_of_time = bool(max_seconds) and time.perf_counter() - start > max_seconds
      if save_due(step, time.monotonic() - last_save) or step == total_steps or out_of_time:
        last, pending = log(pending), None
        checkpointer.save(step, state, meta)
        saved, last_save = step, time.monotonic()
      if after_call is not None and step < total_steps:
        after_call(step, state)
      if out_of_time:
        break
    if pending is not None:
      last = log(pending)
  finally:
    bar.close()
    writer.close()
    checkpointer.close()
  return state, step, last, time.perf_counter() - start
