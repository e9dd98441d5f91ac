r"""Pretrain the embedded base's small CLIP (text and image towers, contrastive) on every style.

  python -m muse_styledrop.pretrain --config=configs/pretrain_clip.py --workdir=runs/pretrain_clip

Its tokenizer is built from the captions' words and every style phrase (each
word one token) over all 256 bytes, so any text tokenises; it is saved as
files transformers loads. Data: docs/shapes.md "How it was trained".
"""

import ml_collections

from muse_styledrop.configs import sharding_rules, with_variants
from muse_styledrop.pipeline import EMBEDDED_BASE


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pretrain_clip"
  c.model = "clip"
  c.data = dict(train="data/shapes_all_24k.npz")
  c.max_length = 32
  c.vocabulary_prompts = "shapes_styles"
  # a base model directory whose text_encoder and tokenizer stay as they are, the image tower trained to meet them
  # ('' = both towers trained, with a tokenizer built from the captions)
  c.locked_text = ""  # a prompt set whose words the tokenizer keeps whole too ('' = none)
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
  c.mesh = dict(data=-1, fsdp=1, model=1)  # device mesh axis sizes; -1: the devices left (docs/scale.md)
  c.distributed = dict(enabled=False, coordinator_address="", num_processes=0, process_id=-1)  # docs/scale.md
  c.sharding = dict(rules=sharding_rules())
  c.max_seconds = 0.0  # > 0: stop training after this many seconds (checkpointed), then export and measure
  c.checkpoint = dict(every_seconds=180, use_async=True)
  c.evals = dict(shapes_clip=dict(test="data/shapes_test_4k.npz"))
  return with_variants(c, arg, VARIANTS, "pretrain_clip")


def runlocal(c):
  c.steps, c.steps_per_call, c.batch_size = 20, 10, 8


def image_tower_for_embedded_base(c):
  """The image tower shipped beside the embedded base's text encoder (its clip/ folder), for CLIP scores."""
  c.name = "pretrain_clip_image_tower"
  c.locked_text = str(EMBEDDED_BASE)


VARIANTS = {"runlocal": runlocal, "image_tower_for_embedded_base": image_tower_for_embedded_base}
