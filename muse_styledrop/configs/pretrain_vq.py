r"""Pretrain the embedded base's VQ tokenizer on every style (a tokenizer is a general image codec).

  python -m muse_styledrop.pretrain --config=configs/pretrain_vq.py:anchored_2px --workdir=runs/pretrain_vq_2px
  python -m muse_styledrop.pretrain --config=configs/pretrain_vq.py:anchored_2px_decoder \
    --workdir=runs/pretrain_vq_2px_decoder

The shipped tokenizer is those two stages (docs/shapes.md "How it was trained"): anchored_2px fixes each code to
the k-means centre of a 2x2 pixel patch, so a token depends on its own patch; anchored_2px_decoder then trains the
decoder alone on whole pictures, the encoder and so every token unchanged. anchored and anchored_decoder are the
same two stages on 4x4 patches, the tokens the shipped U-ViT's body first learnt on. Other variants tried are in
docs/research/tokens.md.
"""

import ml_collections

from muse_styledrop.configs import sharding_rules, with_variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pretrain_vq"
  c.model = "vq"
  c.data = dict(train="data/shapes_all_24k.npz")
  c.vq = dict(
    block_out_channels=(32, 64, 64),  # two stride-2 stages: 64x64 -> 16x16
    layers_per_block=1,
    latent_channels=32,
    vq_embed_dim=8,  # low-dimensional codes are used more evenly
    num_vq_embeddings=512,
    norm_num_groups=16,
    sample_size=64,
    mid_block_add_attention=False,
    lookup_from_codebook=True,
  )
  c.init_from = ""  # a trained VQ directory (diffusers layout) to start from; "" = a fresh init
  c.train = "all"  # "decoder": only the decoder trains, on init_from's own codes (its tokens stay the same)
  c.quantizer = "vq"  # a learned codebook; "fsq": a fixed grid codebook of fsq_levels (cannot collapse)
  c.fsq_levels = ()
  c.kmeans_pictures, c.kmeans_iters = 3000, 20  # quantizer "patch_kmeans": the k-means fit of the anchored codes
  c.code_weight = 1.0  # quantizer "patch_kmeans": weight of the cross-entropy that makes the anchored code nearest
  c.code_temperature = 1.0  # quantizer "patch_kmeans": divides the negative squared distances of that cross-entropy
  c.crop = 32  # train on random 32x32 crops (the model is convolutional)
  c.commitment = 0.25
  c.usage_decay = 0.99
  c.dead_fraction = 0.03  # restart codes used less than 3% as often as uniform
  c.optimizer = dict(
    learning_rate=2e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.0, grad_clip=1.0, warmup_steps=100, schedule="cosine"
  )
  c.batch_size = 32
  c.steps = 1500
  c.steps_per_call = 5
  c.unroll = True  # XLA:CPU runs convolutions in a scan's while loop ~30x slower; unrolled, 5 steps compile in ~30 s
  c.seed = 0
  c.mesh = dict(data=-1, fsdp=1, model=1)  # device mesh axis sizes; -1: the devices left (docs/scale.md)
  c.distributed = dict(enabled=False, coordinator_address="", num_processes=0, process_id=-1)  # docs/scale.md
  c.sharding = dict(rules=sharding_rules())
  c.checkpoint = dict(every_seconds=180, use_async=True)
  c.max_seconds = 0.0  # > 0: stop training after this many seconds (checkpointed), then export and measure
  c.evals = dict(shapes_vq=dict(test="data/shapes_test_4k.npz", oracle_dir=""))
  return with_variants(c, arg, VARIANTS, "pretrain_vq")


def anchored(c):
  """Codes anchored to the k-means codes of each 4x4 patch: local tokens."""
  c.name = "pretrain_vq_anchored"
  c.quantizer = "patch_kmeans"
  c.vq.latent_channels = c.vq.vq_embed_dim = 48  # codes are 4x4x3 pixel patches
  c.commitment = 10.0  # the encoder's regression onto its patch's centre (pixel units: small squared errors)


def anchored_decoder(c):
  """The anchored VQ's decoder, longer and on whole pictures; its tokens unchanged."""
  c.name = "pretrain_vq_anchored_decoder"
  c.init_from = "runs/pretrain_vq_anchored/export/vqvae"
  c.train = "decoder"
  c.vq.latent_channels = c.vq.vq_embed_dim = 48
  c.crop, c.batch_size, c.steps = 64, 16, 1000  # whole pictures: the GroupNorm statistics the tokens are drawn with
  c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-3, 50


def anchored_2px(c):
  """2x2-pixel codes (2x2x3 = 12 values): one stride-2 stage, 32x32 tokens."""
  c.name = "pretrain_vq_2px"
  c.quantizer = "patch_kmeans"
  c.vq.block_out_channels = (32, 64)
  c.vq.latent_channels = c.vq.vq_embed_dim = 12
  c.commitment = 10.0


def anchored_2px_decoder(c):
  """anchored_2px's decoder on whole pictures; its tokens unchanged."""
  c.name = "pretrain_vq_2px_decoder"
  c.init_from = "runs/pretrain_vq_2px/export/vqvae"
  c.train = "decoder"
  c.vq.block_out_channels = (32, 64)
  c.vq.latent_channels = c.vq.vq_embed_dim = 12
  c.crop, c.batch_size, c.steps = 64, 16, 1000
  c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-3, 50


def runlocal(c):
  c.steps, c.steps_per_call, c.batch_size = 20, 10, 4


VARIANTS = {
  "anchored": anchored,
  "anchored_decoder": anchored_decoder,
  "anchored_2px": anchored_2px,
  "anchored_2px_decoder": anchored_2px_decoder,
  "runlocal": runlocal,
}
