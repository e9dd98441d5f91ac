"""CLIP text and style scores of an adapter's pictures of new prompts, beside the base's with the style phrase.

Each content prompt of the set is drawn `samples_per_prompt` times with the
style phrase appended, with the adapter (the run's StyleDrop guidance) and,
on the same prompts and seeds, with the base alone (classifier-free guidance
at the adapter's text weight lambda_b). The text score compares a picture with
its content prompt (without the style phrase), the style score with the style
reference.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from muse_styledrop import data, files, images
from muse_styledrop.clip_scores import CLIPModelError, CLIPScorer, summary
from muse_styledrop.evaluators.base import Result, Run
from muse_styledrop.prompts import read_prompts

CLIP_FOLDER = "clip"  # a base model directory's CLIPModel for scores, where it ships one


class Evaluator:
  def __init__(
    self,
    prompts: str = "evaluation",
    samples_per_prompt: int = 1,
    seed: int = 1234,
    clip_model: str = "",
    compare_base: bool = True,
    reference: str = "",
    batch: int = 64,
  ):
    """`prompts`: a prompt set's name or a file (one content prompt a line); `clip_model`: a CLIPModel directory
    ('' = the base model's clip/ folder); `reference`: the style picture ('' = the run's style pictures)."""
    if samples_per_prompt < 1:
      raise ValueError(f"config.evals.clip.samples_per_prompt={samples_per_prompt} must be at least 1")
    self.contents = read_prompts(prompts)
    if clip_model and not (files.path(clip_model) / "config.json").is_file():
      raise CLIPModelError(
        f"{clip_model} is not a CLIP model directory (no config.json); give a transformers CLIPModel directory"
      )
    self.prompts, self.samples_per_prompt, self.seed = prompts, samples_per_prompt, seed
    self.clip_model, self.compare_base, self.reference, self.batch = clip_model, compare_base, reference, batch

  def clip_dir(self, base: Path | None) -> Path | None:
    """The CLIP to score with: the one named, else the base model's clip/ folder; None when there is neither."""
    if self.clip_model:
      return files.path(self.clip_model)
    found = None if base is None else files.path(base) / CLIP_FOLDER
    return found if found is not None and (found / "config.json").is_file() else None

  def __call__(self, run: Run) -> Result:
    clip_dir = self.clip_dir(run.pipe.path)
    if clip_dir is None:
      print(f"clip: the base {run.pipe.path} ships no clip/ folder and evals.clip.clip_model is empty; not scored")
      return Result(metrics={})
    scorer = CLIPScorer(clip_dir)
    n = self.samples_per_prompt
    contents = [c for c in self.contents for _ in range(n)]
    prompts = [data.join_prompt(c, run.style.style_phrase) for c in contents]
    side = run.pipe.grid_hw[0] * run.pipe.downscale
    references = [files.path(self.reference)] if self.reference else run.style.paths
    reference = np.stack([images.to_uint8(images.load_image(p, side)) for p in references])
    draw = lambda adapter, settings: run.pipe.draw(
      prompts, settings, seed=self.seed, adapter=adapter, state=run.state, batch=self.batch, progress="clip scores"
    )
    pictures = {"adapter": draw(run.adapter, run.settings)}
    if self.compare_base:
      pictures["base"] = draw(None, run.settings.replace(guidance_scale=run.settings.lambda_b))
    metrics, per_picture, bands = {}, {}, [(f"style reference: {references[0].name}", reference[:1])]
    for who, p in pictures.items():
      text, style = scorer.text_scores(p, contents), scorer.style_scores(p, reference)
      metrics[who] = {"clip_text": summary(text), "clip_style": summary(style)}
      per_picture[who] = {"clip_text": np.round(text, 5).tolist(), "clip_style": np.round(style, 5).tolist()}
      first = p[::n][:8]
      title = "StyleDrop adapter" if who == "adapter" else "base + style phrase"
      text_mean, style_mean = metrics[who]["clip_text"]["mean"], metrics[who]["clip_style"]["mean"]
      bands.append((f"{title}: CLIP text {text_mean:.3f}, style {style_mean:.3f}", first))
    record = {"prompts": prompts, "contents": contents, "reference": [str(p) for p in references], **per_picture}
    return Result(metrics=metrics, bands=bands, record=record, pictures=pictures)
