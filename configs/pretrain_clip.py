r"""Pretrain the embedded base's small CLIP (text and image towers, contrastive) on every style.

  python -m muse_styledrop.pretrain --config=configs/pretrain_clip.py --workdir=runs/pretrain_clip

Its tokenizer is built from the world's words (each one token) over all 256
bytes, so any text tokenises; it is saved as files transformers loads.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pretrain_clip"
  c.model = "clip"
  c.data = dict(train="data/shapes_all_24k.npz", test="data/shapes_test_4k.npz")
  c.max_length = 32
  tower = dict(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, hidden_act="gelu")
  c.clip = dict(text=dict(tower), vision=dict(tower, patch_size=8), projection_dim=128)
  c.optimizer = dict(
    learning_rate=1e-3, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1, grad_clip=1.0, warmup_steps=100, schedule="cosine"
  )
  c.batch_size = 128
  c.steps = 1000
  c.steps_per_call = 10
  c.unroll = True  # the patch embedding is a convolution: slow inside a while loop on XLA:CPU
  c.hard_negatives = 0  # g > 0: batches of whole shape groups of g pictures (a file made with dataset --group=g)
  c.seed = 0
  c.checkpoint = dict(every_seconds=180, use_async=True)
  if arg == "shape_groups":  # batches of 16 groups of 8 pictures that differ only in shape: the towers must learn it
    # python -m muse_styledrop.shapes.dataset --out=data/shapes_groups8_24k.npz --count=3000 --group=8 \
    #   --styles=all --first_seed=2000000
    c.name = "pretrain_clip_shape_groups"
    c.data.train = "data/shapes_groups8_24k.npz"
    c.hard_negatives = 8
  elif arg == "runlocal":
    c.steps, c.steps_per_call, c.batch_size = 20, 10, 8
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use shape_groups, runlocal or none")
  return c
