r"""StyleDrop round 1: one style image, the paper's recipe (Adam, batch 8, H=4 shared adapter).

By default it learns the shipped reference picture (a held-out style of the
shapes world, which the embedded base never saw) on the embedded base, then
grades 24 new prompts in that style with the oracle (summary.json: adapter vs
base). The paper's own numbers for aMUSEd-sized bases: the `:paper` variant.

  python -m muse_styledrop.train --config=configs/style_one_shot.py
  python -m muse_styledrop.train --config=configs/style_one_shot.py:runlocal   # a few steps, for a laptop or tests
  python -m muse_styledrop.train --config=configs/style_one_shot.py:content    # a subject, for composition

Override any field: --config.style_images=me.png --config.content_prompts="a house" \
  --config.style_descriptor="in watercolor painting style" --config.base_model=/path/to/amused-256
"""

from pathlib import Path

import ml_collections

from muse_styledrop.configs import sharding_rules, with_variants

# The default style picture: a held-out style of the shapes world, which the embedded base never saw
# (docs/research/held_out_styles.md: why mosaic). shapes.references.reference_run("mosaic") gives the same (tested).
REFERENCE = dict(
  image=str(Path(__file__).resolve().parents[1] / "assets" / "styles" / "mosaic.png"),
  content="a large orange star in the center",
  style="in mosaic tile style",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "style_one_shot"
  c.base_model = ""  # an aMUSEd-layout directory; empty = the embedded base
  c.style_images = REFERENCE["image"]  # a path, comma-separated paths, or a folder (+ captions.txt)
  c.content_prompts = REFERENCE["content"]  # one content text per image, separated by '|'
  c.style_descriptor = REFERENCE["style"]
  c.role = "style"  # 'style' (StyleDrop) or 'content' (one subject named by a rare word, no style phrase)
  c.trainable = "adapter"  # 'adapter' (StyleDrop) or 'all' (full fine-tune)
  # blocks: also on the U-ViT's block attentions, and head: on the logit layer's input (our extensions;
  # docs/training.md). `:paper` keeps the paper's sites only.
  c.adapter = dict(kind="bottleneck", hidden=4, shared=True, rank=16, alpha=16.0, bank_size=1, blocks=True, head=False)
  # The paper's Adam 3e-5 for 1000 steps is for a 3B-parameter Muse (`:paper`); the embedded base is 4M parameters
  # with an adapter of 5.4K, and learns its style at 3e-3 in 600 steps (docs/research/recipe.md).
  c.optimizer = dict(
    learning_rate=3e-3,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    weight_decay=0.0,
    grad_clip=1.0,
    warmup_steps=0,
    schedule="constant",
  )
  c.batch_size = 8
  c.steps = 600
  c.steps_per_call = 10  # optimizer steps per jitted call (one host round trip)
  c.seed = 0
  c.text_dropout = 0.0
  # hues=k: k hue-turned copies of each image, captioned with the style phrase alone or ('content') their
  # image's text (docs/training.md)
  c.augment = dict(enabled=True, crops=2, hues=0, hue_caption="phrase")
  c.mesh = dict(data=-1, fsdp=1, model=1)  # device mesh axis sizes; -1: the devices left (docs/scale.md)
  c.sharding = dict(rules=sharding_rules())
  c.dtype = "auto"  # the base's weights and activations: 'auto' (bf16 on TPU/GPU, fp32 on CPU), 'float32', 'bfloat16'
  # Multi-host: on with enabled=True (a TPU VM slice finds its peers) or when JAX_COORDINATOR_ADDRESS is set
  # (launch/local.py, launch/gpu_multinode.sh); empty / 0 / -1 fields come from the environment (docs/scale.md).
  c.distributed = dict(enabled=False, coordinator_address="", num_processes=0, process_id=-1)
  c.checkpoint = dict(every=100, use_async=True)
  # Evaluators run after training (muse_styledrop/evaluators). On the embedded base the oracle grades new prompts.
  c.evals = dict(shapes_oracle=dict(prompts=24, seed=1234, style="", oracle_dir="", reference=""))
  c.feedback_prompts = "shapes"  # the round-2 pool's prompt set (muse_styledrop.prompts): 'shapes' or 'paper'
  c.sample = dict(
    every=250,  # a grid of `prompts` into samples/ every so many steps (0: none)
    prompts=["a blue circle", "a green heart", "a purple square", "a yellow triangle"],
    per_prompt=1,
    seed=0,
    # The sampling settings, recorded in adapter.json (docs/sampling.md). The embedded base draws clean shapes near
    # its likeliest tokens: no confidence noise, token temperature 0.3; lambda_a 0.75 keeps content with the block
    # adapters (docs/research/recipe.md).
    steps=12,
    temperature=(0.0, 0.0),
    token_temperature=0.3,
    guidance_scale=2.0,  # the base alone: its text guidance, as lambda_b gives it under StyleDrop guidance
    lambda_a=0.75,
    lambda_a_end=ml_collections.config_dict.placeholder(float),  # set: lambda_a goes linearly to it
    lambda_b=2.0,
    negative_prompt="",
    schedule="cosine",
  )
  return with_variants(c, arg, VARIANTS, "style_one_shot")


def runlocal(c):
  """A few steps, for a laptop or tests."""
  c.steps, c.steps_per_call, c.batch_size = 20, 5, 2
  c.checkpoint.every = 10
  c.sample.every, c.sample.steps = 0, 4
  c.sample.prompts = ["a house", "a cat"]


def round2(c):
  """StyleDrop round 2: a new H=32 unshared adapter on round 1's kept pictures.

  python -m muse_styledrop.feedback --adapter=runs/style_one_shot --select=random|clip|human  (writes these)
  """
  c.name = "style_round2"
  c.style_images = "runs/feedback/selected"  # pictures + captions.txt (their content texts)
  c.content_prompts = ""
  if "shapes_oracle" in c.evals:
    c.evals.shapes_oracle.reference = REFERENCE["image"]  # grade the same new prompts as round 1
  c.adapter.hidden, c.adapter.shared = 32, False


def paper(c):
  """The paper's recipe, sites, guidance and decoding, for an aMUSEd-sized --config.base_model."""
  c.optimizer.learning_rate = 3e-5
  c.steps = 1000
  c.adapter.blocks = False
  # CLIP text and style scores on the evaluation prompts (docs/evaluation.md); a base without a clip/ folder needs
  # --config.evals.clip.clip_model=DIR, or it is not scored
  c.evals = dict(clip=dict(prompts="evaluation", samples_per_prompt=1, seed=1234, clip_model="", reference=""))
  c.feedback_prompts = "paper"
  c.sample.prompts = ["a house", "a cat", "a tree", "a car"]
  c.sample.steps = 36
  c.sample.lambda_a, c.sample.lambda_b, c.sample.guidance_scale = 1.0, 5.0, 5.0
  c.sample.temperature, c.sample.token_temperature = (4.5, 0.0), 1.0


def content(c):
  """A content adapter (DreamBooth-like): 1-6 pictures of one subject, captions that name it by a rare word and hold
  no style phrase. By default the shipped subject, a green heart called 'sks heart'; drawn with a style adapter by
  `sample --content_adapter` (docs/sampling.md).
  """
  c.name = "content_one_shot"
  c.role = "content"
  c.style_images = str(Path(__file__).resolve().parents[1] / "assets" / "content")
  c.content_prompts = ""  # from the folder's captions.txt
  c.style_descriptor = ""
  c.evals = {}
  c.sample.prompts = [
    "a sks heart in the center",
    "a small sks heart on the right",
    "a large sks heart at the bottom",
    "a sks heart on the left",
  ]


VARIANTS = {"runlocal": runlocal, "round2": round2, "paper": paper, "content": content}
