"""Evaluators: plug-ins a config names in `config.evals`, run by the trainer after training.

`config.evals` maps an evaluator's name to its fields, e.g.
`{"shapes_oracle": {"prompts": 24, "seed": 1234, ...}}`. A trainer builds
each one before it loads anything (so a bad field fails at once), then calls
it with what it trained (`base.Run` from StyleDrop training, `base.Component`
from pretraining) and gets back metrics, titled rows of pictures and a
record. The trainers know no dataset and no image world: only the evaluators
do.
"""

from __future__ import annotations

import importlib

from muse_styledrop.evaluators.base import Component, Evaluator, Result, Run, merge_metrics

# name -> "module:class"; imported only when a config names it
REGISTRY = {
  "clip": "muse_styledrop.evaluators.clip_scores:Evaluator",
  "shapes_oracle": "muse_styledrop.evaluators.shapes_oracle:Evaluator",
  "shapes_vq": "muse_styledrop.evaluators.shapes_components:VQQuality",
  "shapes_clip": "muse_styledrop.evaluators.shapes_components:CLIPZeroShot",
  "shapes_base": "muse_styledrop.evaluators.shapes_components:BaseQuality",
}


def build(name: str, fields: dict) -> Evaluator:
  """The evaluator `name` made from its config fields; an unknown name or field is one clear error."""
  if name not in REGISTRY:
    raise ValueError(f"config.evals names an unknown evaluator {name!r}; known: {', '.join(sorted(REGISTRY))}")
  module, cls = REGISTRY[name].split(":")
  cls = getattr(importlib.import_module(module), cls)
  try:
    return cls(**fields)
  except TypeError as e:
    raise ValueError(f"config.evals.{name}: {e}; the config file lists the evaluator's fields") from e


def from_config(evals) -> dict[str, Evaluator]:
  """Every evaluator a config's `evals` block names, in order."""
  return {name: build(name, dict(fields)) for name, fields in evals.items()}


__all__ = ["REGISTRY", "Component", "Evaluator", "Result", "Run", "build", "from_config", "merge_metrics"]
