r"""Pretrain the embedded base's VQ tokenizer: 64x64 pictures -> 16x16 tokens of 512 codes, on every style.

  python -m muse_styledrop.shapes.dataset --out=data/shapes_all_24k.npz --count=24000 --first_seed=1000000 --styles=all
  python -m muse_styledrop.pretrain --config=configs/pretrain_vq.py --workdir=runs/pretrain_vq

Variant tokens8: 64x64 -> 8x8 tokens of an 8x5x5x5 FSQ grid (an experiment; see docs/shapes_log.md).
Variant anchored: the same layout, each code anchored to the k-means code of its token's 4x4 pixel patch, so a
token depends on its own patch (local tokens draw shapes 2-4x as often; docs/shapes_log.md).
Variant anchored_decoder: the anchored VQ's decoder trained on whole pictures from its encoder's own codes; the
encoder and so the tokens stay the same (a U-ViT trained on them stays valid).
Variants anchored_2px, anchored_2px_decoder: the same two stages with one stride-2 stage, 64x64 -> 32x32 tokens
of 2x2-pixel codes, so a texture with a 4-pixel period spans two tokens and the decoder can draw it
(docs/shapes_log.md, "Tokens of 2x2 pixels keep the textures").
Variant anchored_2px_sharp: the shipped 2x2 VQ continued with its code cross-entropy at temperature 0.01, so its
encoder picks each patch's nearest code far more often and keeps fine textures (watercolor's grain); the codebook
stays, the tokens change (docs/shapes_log.md, "A sharp code loss keeps the grain").

A tokenizer is a general image codec, so it sees the held-out styles too.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pretrain_vq"
  c.model = "vq"
  c.data = dict(train="data/shapes_all_24k.npz", test="data/shapes_test_4k.npz")
  c.oracle = ""  # grades reconstructions: "" = the shipped oracle
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
  c.checkpoint = dict(every_seconds=180, use_async=True)
  if arg == "tokens8":  # 8x8 tokens, finite scalar quantization; measured in docs/shapes_log.md: loses colour (15%)
    c.name = "pretrain_vq_tokens8"
    c.vq.block_out_channels = (32, 64, 64, 128)  # three stride-2 stages: 64x64 -> 8x8
    c.vq.vq_embed_dim, c.vq.num_vq_embeddings = 4, 1000
    c.quantizer, c.fsq_levels = "fsq", (8, 5, 5, 5)
    c.crop, c.batch_size, c.steps = 64, 16, 800  # whole pictures: a 32x32 crop is only 4x4 tokens, mostly border
    c.optimizer.learning_rate = 1e-3
  elif arg == "anchored":  # codes anchored to k-means codes of each 4x4 patch: local tokens (docs/shapes_log.md)
    c.name = "pretrain_vq_anchored"
    c.quantizer = "patch_kmeans"
    c.vq.latent_channels = c.vq.vq_embed_dim = 48  # codes are 4x4x3 pixel patches
    c.commitment = 10.0  # the encoder's regression onto its patch's centre (pixel units: small squared errors)
  elif arg == "anchored_decoder":  # the anchored VQ's decoder, longer and on whole pictures; its tokens unchanged
    c.name = "pretrain_vq_anchored_decoder"
    c.init_from = "runs/pretrain_vq_anchored/export/vqvae"
    c.train = "decoder"
    c.vq.latent_channels = c.vq.vq_embed_dim = 48
    c.crop, c.batch_size, c.steps = 64, 16, 1000  # whole pictures: the GroupNorm statistics the tokens are drawn with
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-3, 50
  elif arg == "anchored_2px":  # 2x2-pixel codes (2x2x3 = 12 values): one stride-2 stage, 32x32 tokens
    c.name = "pretrain_vq_2px"
    c.quantizer = "patch_kmeans"
    c.vq.block_out_channels = (32, 64)
    c.vq.latent_channels = c.vq.vq_embed_dim = 12
    c.commitment = 10.0
  elif arg == "anchored_2px_decoder":  # anchored_2px's decoder on whole pictures; its tokens unchanged
    c.name = "pretrain_vq_2px_decoder"
    c.init_from = "runs/pretrain_vq_2px/export/vqvae"
    c.train = "decoder"
    c.vq.block_out_channels = (32, 64)
    c.vq.latent_channels = c.vq.vq_embed_dim = 12
    c.crop, c.batch_size, c.steps = 64, 16, 1000
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-3, 50
  elif arg == "anchored_2px_sharp":  # the shipped 2x2 VQ continued with a sharp code cross-entropy (session 16): its
    c.name = "pretrain_vq_2px_sharp"  # encoder picks the nearest patch 2-6x as often, and keeps watercolor's grain
    c.quantizer = "patch_kmeans"
    c.init_from = "muse_styledrop/assets/shapes_base/vqvae"  # its codebook stays the anchor
    c.vq.block_out_channels = (32, 64)
    c.vq.latent_channels = c.vq.vq_embed_dim = 12
    c.commitment, c.code_temperature = 10.0, 0.01
    c.steps = 1500
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 1e-3, 20
  elif arg == "runlocal":
    c.steps, c.steps_per_call, c.batch_size = 20, 10, 4
  elif arg:
    raise ValueError(
      f"unknown variant {arg!r}; use tokens8, anchored, anchored_decoder, anchored_2px, anchored_2px_decoder, "
      "anchored_2px_sharp, runlocal or none"
    )
  return c
