r"""Pretrain the embedded base's small U-ViT (aMUSEd's architecture) on the seen styles only.

  python -m muse_styledrop.shapes.dataset --out=data/shapes_seen_60k.npz --count=60000 --styles=seen
  python -m muse_styledrop.pretrain --config=configs/pretrain_uvit.py --workdir=runs/pretrain_uvit

Needs the VQ and CLIP runs' exports. 16x16 tokens, downsampled 2x2 to an 8x8
grid for the transformer as amused-512 does; position comes from the
depthwise convolutions of the res blocks (no position embedding, so diffusers
loads it unchanged). Text dropout 10% for classifier-free guidance.
"""

import ml_collections

TWO_PIXEL_TOKENS = ("anchored_2px", "anchored_2px_warm", "anchored_2px_gpu", "sharp_2px", "sharp_2px_gpu")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pretrain_uvit"
  c.model = "uvit"
  c.data = dict(train="data/shapes_seen_60k.npz", select="all", style="")  # select "single_large", style: one style
  c.vq_dir = "runs/pretrain_vq/export/vqvae"
  c.clip_dir = "runs/pretrain_clip/export"
  c.init_from = ""  # a trained transformer directory (diffusers layout) to continue from; "" = a fresh init
  c.init_fresh = ()  # with init_from: weight-name prefixes that keep their fresh init (e.g. a new VQ's embed, head)
  c.oracle = ""  # grades the base's samples: "" = the shipped oracle
  c.eval_prompts = 200
  c.uvit = dict(
    hidden_size=128,
    use_bias=False,
    hidden_dropout=0.0,
    micro_cond_encode_dim=32,
    micro_cond_embed_dim=160,  # 5 micro-conditions x 32
    in_channels=64,
    block_out_channels=128,
    num_res_blocks=3,  # three ConvNeXt blocks on each side: their depthwise convs are the only source of position
    downsample=True,
    upsample=True,
    block_num_heads=2,
    num_hidden_layers=6,
    num_attention_heads=4,
    attention_dropout=0.0,
    intermediate_size=384,
    layer_norm_eps=1e-6,
    ln_elementwise_affine=True,
  )
  c.text_dropout = 0.1
  c.optimizer = dict(
    learning_rate=1e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01, grad_clip=1.0, warmup_steps=200, schedule="cosine"
  )
  c.batch_size = 32
  c.steps = 3600
  c.steps_per_call = 10
  c.seed = 0
  c.checkpoint = dict(every_seconds=180, use_async=True)
  c.max_seconds = 0  # > 0: stop training after this many seconds (checkpointed), then export and measure as usual
  if arg == "position":  # Muse's learned 2D position embedding on the 8x8 transformer grid (diffusers cannot load it)
    c.name = "pretrain_uvit_position"
    c.uvit.position_embedding_grid = (8, 8)
  elif arg == "continue":  # the shipped run's transformer + the position embedding, 5,000 more steps
    c.name = "pretrain_uvit_pos_continue"
    c.uvit.position_embedding_grid = (8, 8)
    c.init_from = "runs/pretrain_uvit/export/shapes_base/transformer"
    c.steps = 5000
  elif arg == "anchored":  # on the anchored VQ's local tokens (configs/pretrain_vq.py:anchored), with position
    c.name = "pretrain_uvit_anchored"
    c.vq_dir = "runs/pretrain_vq_anchored/export/vqvae"
    c.uvit.position_embedding_grid = (8, 8)
  elif arg == "anchored_long":  # the anchored recipe over many CPU sessions: 768,000 samples (about 5 h here)
    c.name = "pretrain_uvit_anchored_long"
    c.vq_dir = "runs/pretrain_vq_anchored_decoder/export/vqvae"
    c.uvit.position_embedding_grid = (8, 8)
    c.steps = 24000
  elif arg == "anchored_gpu":  # the anchored base on a lent GPU (benchmarks/gpu_pretrain_uvit.sh): 40x the samples
    c.name = "pretrain_uvit_anchored_gpu"
    c.vq_dir = (
      "runs/pretrain_vq_anchored_decoder/export/vqvae"  # the same tokens, the decoder trained on whole pictures
    )
    c.clip_dir = "runs/pretrain_clip/export"
    c.uvit.position_embedding_grid = (8, 8)
    c.batch_size, c.steps, c.steps_per_call = 256, 20000, 50
    c.optimizer.learning_rate, c.optimizer.warmup_steps = 2e-3, 1000
    c.checkpoint.every_seconds = 120
    c.max_seconds = 420  # a device command may run 10 minutes: leave room for compiling, export and grading
  elif arg in TWO_PIXEL_TOKENS:  # 2x2-pixel tokens (pretrain_vq.py:anchored_2px_decoder):
    c.name = "pretrain_uvit_2px"  # 32x32 tokens, a 16x16 transformer grid; the shipped base's CLIP (same text side)
    c.vq_dir = "runs/pretrain_vq_2px_decoder/export/vqvae"
    c.clip_dir = "muse_styledrop/assets/shapes_base"
    c.uvit.position_embedding_grid = (16, 16)
    c.steps = 24000
    if arg == "anchored_2px_warm":  # the 4x4 base's body (shipped until session 13): its codes' layers start
      c.name = "pretrain_uvit_2px_warm"  # fresh, its 8x8 position embedding is resized to 16x16
      c.init_from = "candidates/shapes_base_4px/transformer"
      c.init_fresh = ("embed.", "mlm_layer.")
      c.steps = 6000
    if arg.startswith("sharp_2px"):  # the shipped transformer moved onto the sharp VQ's tokens (pretrain_vq.py:
      c.name = "pretrain_uvit_2px_sharp"  # anchored_2px_sharp): same codebook, so every weight carries over
      c.vq_dir = "runs/pretrain_vq_2px_sharp/export/vqvae"
      c.init_from = "muse_styledrop/assets/shapes_base/transformer"
      c.optimizer.learning_rate, c.optimizer.warmup_steps = 5e-4, 50
      c.steps = 600
    if arg.endswith("_gpu"):  # on a lent GPU at batch 256 (benchmarks/gpu_pretrain_uvit.sh fits config.steps to
      c.batch_size, c.steps, c.steps_per_call = 256, 6000, 50  # the minutes left)
      c.optimizer.warmup_steps = 300
      c.checkpoint.every_seconds = 120
      c.max_seconds = 400
    if arg == "sharp_2px_gpu":  # the sharp move at the shipped run's length (docs/shapes_log.md "Session 20")
      c.name = "pretrain_uvit_2px_sharp_gpu"
      c.optimizer.learning_rate = 1e-3
    if arg == "anchored_2px_gpu":  # anchored_2px_warm's export continued
      c.name = "pretrain_uvit_2px_gpu"
      c.init_from = "runs/pretrain_uvit_2px_warm/export/shapes_base/transformer"
      c.optimizer.learning_rate = 2e-3
  elif arg == "grid16":  # amused-256's layout: the transformer on the whole 16x16 token grid, no down/upsampling
    c.name = "pretrain_uvit_grid16"
    c.uvit.downsample = c.uvit.upsample = False
    c.steps = 1000  # 2.5-3 s a step here (4x the tokens of the 8x8 grid)
  elif arg == "single_large":  # only the 27,876 pictures of one medium or large object: less background in the loss
    c.name = "pretrain_uvit_single_large"
    c.data.select = "single_large"
  elif arg == "tokens8":  # on the VQ's tokens8 variant (8x8 tokens): the grid is the transformer's, no down/upsampling
    c.name = "pretrain_uvit_tokens8"
    c.vq_dir = "runs/pretrain_vq_tokens8/export/vqvae"
    c.uvit.downsample = c.uvit.upsample = False
  elif arg == "runlocal":
    c.steps, c.steps_per_call, c.batch_size, c.eval_prompts = 20, 10, 4, 8
  elif arg:
    raise ValueError(
      f"unknown variant {arg!r}; use position, continue, anchored, anchored_long, anchored_gpu, anchored_2px, "
      "anchored_2px_warm, anchored_2px_gpu, sharp_2px, sharp_2px_gpu, grid16, single_large, tokens8, runlocal or none"
    )
  return c
