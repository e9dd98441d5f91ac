r"""StyleDrop round 1: one style image, the paper's recipe (Adam 3e-5, batch 8, 1000 steps, H=4 shared adapter).

  python -m muse_styledrop.train --config=configs/style_one_shot.py
  python -m muse_styledrop.train --config=configs/style_one_shot.py:runlocal   # a few steps, for a laptop or tests

Override any field: --config.style_images=me.png --config.content_prompts="a house" \
  --config.style_descriptor="in watercolor painting style" --config.base_model=/path/to/amused-256
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "style_one_shot"
  c.base_model = ""  # an aMUSEd-layout directory; empty = the embedded base
  c.style_images = ""  # a path, comma-separated paths, or a folder (+ captions.txt)
  c.content_prompts = ""  # one content text per image, separated by '|'
  c.style_descriptor = "in watercolor painting style"
  c.trainable = "adapter"  # 'adapter' (StyleDrop) or 'all' (pretraining / full fine-tune)
  c.adapter = dict(kind="bottleneck", hidden=4, shared=True, rank=16, alpha=16.0, bank_size=1)
  c.optimizer = dict(learning_rate=3e-5, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, grad_clip=1.0, warmup_steps=0)
  c.batch_size = 8
  c.steps = 1000
  c.steps_per_call = 10  # optimizer steps per jitted call (one host round trip)
  c.seed = 0
  c.text_dropout = 0.0
  c.augment = dict(enabled=True, crops=2)
  c.mesh = dict(data=-1, fsdp=1, model=1)
  c.distributed = False  # True on a multi-host pod: jax.distributed.initialize() first
  c.checkpoint = dict(every=100, use_async=True)
  c.sample = dict(
    every=250,
    prompts=["a house", "a cat", "a tree", "a car"],
    per_prompt=1,
    negative_prompt="",
    lambda_a=1.0,
    lambda_b=5.0,
    steps=36,
    temperature=(4.5, 0.0),
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
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of style_one_shot; use runlocal or none")
  return c
