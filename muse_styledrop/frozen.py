"""Jitting a frozen module once: split it, close over its graph, pass its state."""

from __future__ import annotations

import jax
from flax import nnx


def frozen_jit(fn, module: nnx.Module, out_shardings=None):
  """`fn(module, *args)` jitted over a frozen module's split state (outputs laid out as `out_shardings`).

  nnx.jit re-walks the module graph on every call, which costs seconds for a
  600M-parameter model on CPU (measured: 3 s per aMUSEd forward); splitting
  once and closing over the graphdef makes each call a plain jax.jit call.
  """
  graphdef, state = nnx.split(module)
  jitted = jax.jit(lambda state, *args: fn(nnx.merge(graphdef, state), *args), out_shardings=out_shardings)
  return lambda *args: jitted(state, *args)
