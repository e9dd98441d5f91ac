r"""StyleDrop round 1: one style image, the paper's recipe (Adam, batch 8, H=4 shared adapter).

By default it learns the shipped reference picture (a held-out style of the
shapes world, which the embedded base never saw) on the embedded base, then
grades 24 new prompts in that style with the oracle (summary.json: adapter vs
base). The paper's own numbers for aMUSEd-sized bases: the `:paper` variant.

  python -m muse_styledrop.train --config=configs/style_one_shot.py
  python -m muse_styledrop.train --config=configs/style_one_shot.py:runlocal   # a few steps, for a laptop or tests

Override any field: --config.style_images=me.png --config.content_prompts="a house" \
  --config.style_descriptor="in watercolor painting style" --config.base_model=/path/to/amused-256
"""

import ml_collections

from muse_styledrop import shapes
from muse_styledrop.shapes import references


def shipped_reference(style: str) -> dict[str, str]:
  """A held-out style's shipped picture, its content text and its style phrase."""
  return dict(
    image=str(references.SHIPPED / f"{style}.png"),
    content=references.REFERENCES[style].content(),
    style=shapes.STYLES[style],
  )


REFERENCE = shipped_reference("mosaic")  # docs/shapes.md: why mosaic (every held-out style's table)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "style_one_shot"
  c.base_model = ""  # an aMUSEd-layout directory; empty = the embedded base
  c.style_images = REFERENCE["image"]  # a path, comma-separated paths, or a folder (+ captions.txt)
  c.content_prompts = REFERENCE["content"]  # one content text per image, separated by '|'
  c.style_descriptor = REFERENCE["style"]
  c.trainable = "adapter"  # 'adapter' (StyleDrop) or 'all' (pretraining / full fine-tune)
  # blocks=True: also on the U-ViT's block attentions (our extension, on by default for the embedded base: with
  # lambda_a 0.75 and token temperature 0.3 the six held-out styles' mean style is 49% against the paper's sites'
  # 40%, content 66% both; docs/shapes_log.md "Session 14"). `:paper` (and LoRA) set it False.
  c.adapter = dict(kind="bottleneck", hidden=4, shared=True, rank=16, alpha=16.0, bank_size=1, blocks=True, head=False)
  # The paper's Adam 3e-5 for 1000 steps is for a 3B-parameter Muse (and aMUSEd: the `paper` variant). The embedded
  # base is 4M parameters with an adapter of 5.4K: 3e-3 for 600 steps learns its style within the README's 5
  # minutes on 32x32 tokens, and grades better than 1000 steps (less of the reference's content);
  # docs/shapes_log.md "Session 13".
  c.optimizer = dict(learning_rate=3e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, warmup_steps=0)
  c.batch_size = 8
  c.steps = 600
  c.steps_per_call = 10  # optimizer steps per jitted call (one host round trip)
  c.seed = 0
  c.text_dropout = 0.0
  # hues=k: k hue-turned copies of each image, captioned with the style phrase alone or ('content') their image's
  # text (docs/training.md); off: on the embedded base they teach halftone's dots in other colours (0% -> 21%) and
  # cost mosaic (92% -> 75%).
  c.augment = dict(enabled=True, crops=2, hues=0, hue_caption="phrase")
  c.mesh = dict(data=-1, fsdp=1, model=1)
  c.distributed = False  # True on a multi-host pod: jax.distributed.initialize() first
  c.checkpoint = dict(every=100, use_async=True)
  # Oracle grading on the shapes world (skipped for other bases unless style names a shapes style).
  # style '' = what the oracle reads in the reference; reference '' = the first style image (round 2: round 1's).
  c.evaluate = dict(prompts=24, style="", seed=1234, oracle="", reference="")
  c.sample = dict(
    every=250,
    prompts=["a blue circle", "a green heart", "a purple square", "a yellow triangle"],
    per_prompt=1,
    negative_prompt="",
    # The paper's round-1 range is 0..2; 0.75 keeps content with the block adapters (docs/shapes_log.md "Session 14").
    lambda_a=0.75,
    lambda_a_end=ml_collections.config_dict.placeholder(float),  # set: lambda_a goes linearly to it over the steps
    lambda_b=2.0,
    steps=12,
    # The embedded base draws clean shapes near its likeliest tokens: no confidence noise, token temperature 0.3
    # (aMUSEd's noise 4.5 and softmax draws speckle its backgrounds; 0.1 loses the adapters' textures;
    # docs/shapes_log.md "Session 14").
    # `paper` restores aMUSEd's.
    temperature=(0.0, 0.0),  # confidence noise, annealed
    token_temperature=0.3,  # divides the logits tokens are drawn from (1: diffusers' rule)
    seed=0,
  )
  if arg == "runlocal":
    c.steps = 20
    c.steps_per_call = 5
    c.batch_size = 2
    c.checkpoint.every = 10
    c.sample.every = 0
    c.sample.steps = 4
    c.sample.prompts = ["a house", "a cat"]
  elif arg == "round2":  # PAPER.md section 5: a new H=32 unshared adapter on round 1's kept pictures
    # python -m muse_styledrop.feedback --adapter=runs/style_one_shot --select=random|clip|human  (writes these)
    c.name = "style_round2"
    c.style_images = "runs/feedback/selected"  # pictures + captions.txt (their content texts)
    c.content_prompts = ""
    c.evaluate.reference = REFERENCE["image"]  # grade the same new prompts as round 1
    c.adapter.hidden, c.adapter.shared = 32, False
  elif arg == "paper":  # the paper's recipe and prompts, for an aMUSEd-sized --config.base_model
    c.optimizer.learning_rate = 3e-5
    c.steps = 1000
    c.adapter.blocks = False  # the paper's sites only
    c.sample.lambda_a = 1.0
    c.evaluate.prompts = 0
    c.sample.prompts = ["a house", "a cat", "a tree", "a car"]
    c.sample.steps = 36
    c.sample.lambda_b, c.sample.temperature, c.sample.token_temperature = 5.0, (4.5, 0.0), 1.0
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of style_one_shot; use runlocal, round2, paper or none")
  return c
