"""What an evaluator is given and what it gives back."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from flax import nnx

from muse_styledrop.data import StyleSet
from muse_styledrop.pipeline import Pipeline
from muse_styledrop.sampling import SamplingSettings


@dataclasses.dataclass
class Run:
  """A trained adapter to measure: the loaded base, the weights to draw with, and what the adapter learned from."""

  pipe: Pipeline
  settings: SamplingSettings  # how the run draws (its config's sample block)
  style: StyleSet  # the pictures, content texts and style phrase it learned from
  adapter: int | None = 0  # the bank entry that holds it; None: the base alone (every weight trained)
  state: nnx.State | None = None  # the transformer's weights now (None: as loaded)


@dataclasses.dataclass
class Result:
  """An evaluator's answer: `metrics` join summary.json, `bands` (title, uint8 pictures) form samples.png,
  `record` (JSON) joins evaluation.json, and `pictures` (who drew them -> uint8 pictures) are what it measured."""

  metrics: dict[str, Any]
  bands: list[tuple[str, np.ndarray]] = dataclasses.field(default_factory=list)
  record: dict[str, Any] = dataclasses.field(default_factory=dict)
  pictures: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def merge_metrics(results) -> dict:
  """Several evaluators' metrics as one dict; what each says of one model ('adapter', 'base') joins one entry."""
  merged: dict[str, Any] = {}
  for result in results:
    for key, value in result.metrics.items():
      if isinstance(value, dict) and isinstance(merged.get(key), dict):
        merged[key] = {**merged[key], **value}
      else:
        merged[key] = value
  return merged


@dataclasses.dataclass
class Component:
  """A pretrained component to measure: the model as trained, where it was exported, and what else it needs."""

  model: Any
  export: Path
  workdir: Path
  tokenizer: Any = None  # CLIP's


class Evaluator(Protocol):
  """Called with a `Run` (StyleDrop training) or a `Component` (pretraining), as its config's trainer gives."""

  def __call__(self, run: Run | Component) -> Result: ...
