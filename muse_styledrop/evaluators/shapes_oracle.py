"""The shapes world's evaluator: the oracle grades an adapter's pictures of new prompts against the base's.

For a style learned on the embedded base (or any base that draws the world's 64x64 pictures), it draws `prompts`
new single-object scenes (none in the reference's shape or colour) with the style phrase, three ways: with the
adapter (the run's StyleDrop guidance), with the base alone (classifier-free guidance), and as the world's own
pictures through the base's tokenizer (the tokens' ceiling: what a generator that put every token right would
score). The oracle reads shape, colour and style in each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from muse_styledrop import data, files, images
from muse_styledrop.evaluators.base import Result, Run
from muse_styledrop.shapes import grading, oracle
from muse_styledrop.shapes.render import STYLES, render
from muse_styledrop.shapes.world import Scene

POOL_SEED = 4321  # the feedback pool's scenes; the evaluation draws its own from `seed`
# The oracle's style probability for a reference, averaged over its eight rotations and mirror images, under which
# the reference's style is one the oracle was not trained on (docs/research/oracle_outside_world.md).
STYLE_CONFIDENCE = 0.93


class Evaluator:
  def __init__(self, prompts: int, seed: int, style: str = "", oracle_dir: str = "", reference: str = ""):
    """`style`: the style the adapter should draw ('' = what the oracle reads in the reference); `reference`: the
    picture graded against ('' = the run's first style picture; round 2: round 1's); `oracle_dir`: '' = shipped."""
    if prompts < 1:
      raise ValueError(f"config.evals.shapes_oracle.prompts={prompts} must be at least 1")
    if style and style not in grading.STYLES_LIST:
      raise ValueError(
        f"config.evals.shapes_oracle.style={style!r} is not a shapes-world style; use one of {grading.STYLES_LIST}"
      )
    if reference and not files.path(reference).is_file():
      raise FileNotFoundError(
        f"config.evals.shapes_oracle.reference={reference} does not exist; give round 1's style picture"
      )
    directory = Path(oracle_dir) if oracle_dir else oracle.ORACLE_DIR
    self.grader = oracle.Grader(oracle.load(directory))
    self.prompts, self.seed, self.style, self.reference = prompts, seed, style, reference

  def __call__(self, run: Run) -> Result:
    pipe = run.pipe
    side = pipe.grid_hw[0] * pipe.downscale
    if side != grading.SIDE:
      print(f"shapes_oracle: this base draws {side}px pictures, not the shapes world's {grading.SIDE}px; not graded")
      return Result(metrics={})
    reference = files.path(self.reference or run.style.paths[0])
    seen = grading.read_reference(self.grader, reference)
    in_world = bool(self.style) or seen["style_confidence"] >= STYLE_CONFIDENCE
    style = (self.style or seen["style"]) if in_world else None
    scenes = grading.eval_scenes(self.prompts, self.seed, (seen["shape"], seen["colour"]))
    prompts = [data.join_prompt(s.content(), run.style.style_phrase) for s in scenes]
    draw = lambda adapter, settings: pipe.draw(prompts, settings, seed=self.seed, adapter=adapter, state=run.state)
    pictures = {
      "adapter": draw(run.adapter, run.settings),
      # the base with the same text guidance the adapter's StyleDrop guidance gives it (lambda_b)
      "base": draw(None, run.settings.replace(guidance_scale=run.settings.lambda_b)),
    }
    if in_world:
      pictures["ceiling"] = tokens_ceiling(pipe, scenes, style, self.seed)
    styles = [style] * len(scenes) if in_world else None
    grades = {who: grading.grade(p, scenes, styles, self.grader) for who, p in pictures.items()}
    evaluated = style or (
      f"outside the shapes world (the oracle reads {seen['style']} with confidence {seen['style_confidence']:.2f}, "
      f"under {STYLE_CONFIDENCE}): shape and colour only"
    )
    record = {
      "style": evaluated,
      "style_phrase": run.style.style_phrase,
      **grades,
      "prompts": prompts,
      "reads": {who: grading.oracle_reads(p, self.grader) for who, p in pictures.items()},
      "reference": {"path": str(reference), "oracle_reads": seen},
    }

    def label(who):
      content = f"{grades[who]['content_accuracy']:.0%} shape+colour"
      return f"{grades[who]['style_accuracy']:.0%} style, {content}" if in_world else content

    picture = images.to_uint8(images.load_image(reference, side))
    bands = [
      (f"reference: {reference.name}", picture[None]),
      (f"StyleDrop adapter: {label('adapter')} ({style or 'a style outside the shapes world'})", pictures["adapter"]),
      (f"base + style phrase: {label('base')}", pictures["base"]),
    ]
    if in_world:
      bands.append(
        (
          f"the world's own pictures of these prompts through the VQ (the tokens' ceiling): {label('ceiling')}",
          pictures["ceiling"],
        )
      )
    metrics = {**grades, "evaluated_style": evaluated}
    return Result(metrics=metrics, bands=bands, record=record, pictures=pictures)


def tokens_ceiling(pipe, scenes: list[Scene], style: str, seed: int) -> np.ndarray:
  """The scenes drawn by the world in `style`, passed through the base's VQ (encode, decode)."""
  truth = np.stack([render(scene, style, seed + i) for i, scene in enumerate(scenes)])
  return pipe.decode_tokens(pipe.encode_images(truth / 255.0))


def pool_prompts(count: int = 30) -> list[str]:
  """The feedback pool's content prompts on the shapes world: `count` single-object scenes."""
  return [s.content() for s in grading.eval_scenes(count, POOL_SEED)]


def style_phrases() -> list[str]:
  """Every shapes-world style phrase ("in mosaic tile style"), held-out ones included."""
  return list(STYLES.values())
