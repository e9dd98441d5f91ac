r"""Pretrain the embedded base's small U-ViT (aMUSEd's architecture) on the seen styles only.

  python -m muse_styledrop.pretrain --config=configs/pretrain_uvit.py:anchored_long
  python -m muse_styledrop.pretrain --config=configs/pretrain_uvit.py:anchored_2px_warm --config.steps=2400
  bash benchmarks/gpu_pretrain_uvit.sh   # anchored_2px_gpu, on a GPU machine (its header)

The shipped transformer is those three stages (docs/shapes.md "How it was trained"): the body learnt on 4x4-pixel
tokens (an 8x8 transformer grid), moved onto the 2x2-pixel tokens (a 16x16 grid; the token embedding and logit
layer start fresh, the position embedding is resized), then continued at batch 256 on a GPU. It needs the VQ and
CLIP runs' exports; Muse's learned 2D position embedding is on; text dropout 10% for classifier-free guidance.
Other variants tried are in docs/research/.
"""

import ml_collections

from muse_styledrop.configs import sharding_rules, with_variants


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = "pretrain_uvit"
  c.model = "uvit"
  c.data = dict(train="data/shapes_seen_60k.npz", select="all")  # select "single_large": one medium/large object
  c.vq_dir = "runs/pretrain_vq/export/vqvae"
  c.clip_dir = "runs/pretrain_clip/export"
  c.init_from = ""  # a trained transformer directory (diffusers layout) to continue from; "" = a fresh init
  c.init_fresh = ()  # with init_from: weight-name prefixes that keep their fresh init (e.g. a new VQ's embed, head)
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
    position_embedding_grid=(),  # (h, w): Muse's learned 2D position embedding on the transformer's grid
  )
  c.text_dropout = 0.1
  c.optimizer = dict(
    learning_rate=1e-3, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01, grad_clip=1.0, warmup_steps=200, schedule="cosine"
  )
  c.batch_size = 32
  c.steps = 3600
  c.steps_per_call = 10
  c.unroll = False
  c.seed = 0
  c.mesh = dict(data=-1, fsdp=1, model=1)  # device mesh axis sizes; -1: the devices left (docs/scale.md)
  c.distributed = dict(enabled=False, coordinator_address="", num_processes=0, process_id=-1)  # docs/scale.md
  c.sharding = dict(rules=sharding_rules())
  c.checkpoint = dict(every_seconds=180, use_async=True)
  c.max_seconds = 0.0  # > 0: stop training after this many seconds (checkpointed), then export and measure as usual
  c.evals = dict(shapes_base=dict(prompts=200, oracle_dir=""))
  return with_variants(c, arg, VARIANTS, "pretrain_uvit")


def anchored_long(c):
  """Stage 1, the body: the anchored 4x4-pixel tokens (pretrain_vq.py:anchored, :anchored_decoder), an 8x8 grid
  with the position embedding, 768,000 samples over many CPU sessions (about 5 h here)."""
  c.name = "pretrain_uvit_anchored_long"
  c.vq_dir = "runs/pretrain_vq_anchored_decoder/export/vqvae"
  c.uvit.position_embedding_grid = (8, 8)
  c.steps = 24000


def two_pixel_tokens(c):
  """32x32 tokens of 2x2 pixels (pretrain_vq.py:anchored_2px_decoder), a 16x16 transformer grid."""
  c.vq_dir = "runs/pretrain_vq_2px_decoder/export/vqvae"
  c.clip_dir = "muse_styledrop/assets/shapes_base"  # the shipped base's text tower
  c.uvit.position_embedding_grid = (16, 16)


def anchored_2px_warm(c):
  """Stage 2: stage 1's body on the 2x2-pixel tokens; the layers tied to the codes start fresh, the 8x8 position
  embedding is resized to 16x16."""
  two_pixel_tokens(c)
  c.name = "pretrain_uvit_2px_warm"
  c.init_from = "runs/pretrain_uvit_anchored_long/export/shapes_base/transformer"
  c.init_fresh = ("embed.", "mlm_layer.")
  c.steps = 6000


def anchored_2px_gpu(c):
  """Stage 3: stage 2's export continued at batch 256 on a GPU (benchmarks/gpu_pretrain_uvit.sh fits steps to the
  minutes left)."""
  two_pixel_tokens(c)
  c.name = "pretrain_uvit_2px_gpu"
  c.init_from = "runs/pretrain_uvit_2px_warm/export/shapes_base/transformer"
  c.batch_size, c.steps, c.steps_per_call = 256, 6000, 50
  c.optimizer.learning_rate, c.optimizer.warmup_steps = 2e-3, 300
  c.checkpoint.every_seconds = 120
  c.max_seconds = 400  # a device command may run 10 minutes: leave room for compiling, export and grading


def runlocal(c):
  c.steps, c.steps_per_call, c.batch_size = 20, 10, 4
  c.evals.shapes_base.prompts = 8


VARIANTS = {
  "anchored_long": anchored_long,
  "anchored_2px_warm": anchored_2px_warm,
  "anchored_2px_gpu": anchored_2px_gpu,
  "runlocal": runlocal,
}
