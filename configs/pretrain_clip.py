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
  c.seed = 0
  c.checkpoint = dict(every_seconds=180, use_async=True)
  if arg == "runlocal":
    c.steps, c.steps_per_call, c.batch_size = 20, 10, 8
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; use runlocal or none")
  return c
