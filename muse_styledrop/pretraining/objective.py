"""What a pretraining objective provides to `muse_styledrop.pretrain`.

An objective builds its model, draws host batches (stacked for a scan of
steps), gives the loss, optionally edits the weights after an update (the VQ's
dead-code restarts) and exports the result in the diffusers/transformers
layout. How good the result is, the evaluators its config names measure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flax import nnx


class Objective:
  """The base of every objective: the config and workdir, and the defaults the objectives share."""

  def __init__(self, config, workdir: Path):
    self.c = config
    self.workdir = Path(workdir)

  # the weights the optimizer trains (an nnx filter); the rest stays as built and is not checkpointed
  trainable = nnx.Param

  def init_extra(self):
    return {}

  def frozen_state(self):
    return {}

  def after_update(self, params, extra, aux, rng):
    return params, extra, {}

  def pick(self, rng: np.random.Generator, steps: int, n: int):
    return rng.integers(0, n, (steps, self.c.batch_size))
