"""The shapes world's measures of pretrained components: the VQ's reconstructions, CLIP's zero-shot labels, and
the whole base's own pictures, each read by the oracle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from muse_styledrop import files
from muse_styledrop.evaluators.base import Component, Result
from muse_styledrop.pipeline import Pipeline
from muse_styledrop.shapes import grading


class VQQuality:
  """PSNR of the test pictures' reconstructions, the oracle's accuracy on them, and how local the tokens are."""

  def __init__(self, test: str, oracle_dir: str = ""):
    self.test, self.grader = test, grading.grader_or_none(oracle_dir)

  def __call__(self, c: Component) -> Result:
    test = files.load_arrays(Path(self.test))
    quality = grading.vq_quality(c.model, test, self.grader)
    codes = c.workdir / "patch_codes.npz"  # an anchored VQ's codes, pasted back: its encoder's ceiling
    if codes.is_file():
      with np.load(codes) as f:
        centres = f["centres"]
      quality["patch_codes"] = grading.patch_code_quality(centres, c.model.config.downscale, test, self.grader)
    return Result(metrics=quality)


class CLIPZeroShot:
  """Zero-shot shape, colour and style accuracy of a CLIP on the test pictures."""

  def __init__(self, test: str):
    self.test = test

  def __call__(self, c: Component) -> Result:
    return Result(metrics=grading.clip_zero_shot(c.model, c.tokenizer, files.load_arrays(Path(self.test))))


class BaseQuality:
  """The exported base's own pictures of `prompts` seen-style prompts, graded under each base sampler."""

  def __init__(self, prompts: int, oracle_dir: str = ""):
    self.prompts, self.grader = prompts, grading.grader_or_none(oracle_dir)

  def __call__(self, c: Component) -> Result:
    pipe = Pipeline.from_pretrained(c.export)
    return Result(metrics=grading.base_quality(pipe, self.grader, count=self.prompts))
