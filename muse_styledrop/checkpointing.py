"""The one place that talks to Orbax: training checkpoints under workdir/checkpoints.

A checkpoint holds the trainable weights (the adapter, or every weight when
pretraining), the optimizer state, the step, the data RNG, and metadata (the
base model's fingerprint, the adapter config, the style phrase and training
prompts, the config). Never the frozen base. Saves are asynchronous and
atomic (Orbax writes to a temporary directory and renames it); a run started
again with the same workdir resumes from the latest one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from muse_styledrop import faults, files


class CheckpointMismatch(ValueError):
  """A checkpoint that belongs to another base model or adapter layout."""


class Checkpointer:
  def __init__(self, directory: Path, max_to_keep: int = 2, use_async: bool = True):
    directory = files.path(directory)
    self.directory = directory if files.is_remote(directory) else directory.absolute()
    options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep,
      enable_async_checkpointing=use_async,
      create=True,
      cleanup_tmp_directories=True,  # a save a killed run left unfinished is removed, never restored
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Start writing `state` (a pytree of arrays) and `meta` (JSON) as checkpoint `step`."""
    self.manager.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True
    )
    faults.point("save")

  def restore(self, step: int, like: Any) -> tuple[Any, dict]:
    """The state of checkpoint `step`, with the structure, shapes and shardings of `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      out = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
      )
    except (ValueError, KeyError) as e:
      raise CheckpointMismatch(
        f"the checkpoint at {self.directory / str(step)} does not fit this run's adapter "
        f"and optimizer ({e}); use another --workdir or the config it was made with"
      ) from e
    return out["state"], out["meta"]

  def meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
